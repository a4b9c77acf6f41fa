"""The component's generated main module, run natively: the componentize-py
bindings it imports (`wit_world`, `componentize_py_types`) are replaced by
plain stand-ins, so what the module does at build time (import the plugin,
warm the invocation path, freeze the heap) and what its exports answer can
be checked without building a component."""

import dataclasses
import gc
import os
import sys
import types

import pytest

from cairn import build, payload
import cairn._component
from conftest import REPO

EXAMPLES = os.path.join(REPO, "examples", "python")


def _bindings() -> dict[str, types.ModuleType]:
    """Stand-ins for the modules componentize-py generates for the plugin's
    world: the records of `cairn:plugin/types`, the `Plugin` export base
    class and `Err`."""
    cairn_types = types.ModuleType("wit_world.imports.cairn_types")

    @dataclasses.dataclass
    class RetryPolicy:
        max_attempts: int
        initial_backoff_ms: int
        max_backoff_ms: int

    @dataclasses.dataclass
    class ActionInfo:
        name: str
        description: str
        timeout_ms: int | None
        retry: RetryPolicy | None

    @dataclasses.dataclass
    class PluginInfo:
        module: str
        actions: list

    @dataclasses.dataclass
    class ActionError:
        type_name: str
        module: str
        message: str
        retryable: bool
        details: bytes | None

    for cls in (RetryPolicy, ActionInfo, PluginInfo, ActionError):
        setattr(cairn_types, cls.__name__, cls)
    imports = types.ModuleType("wit_world.imports")
    imports.cairn_types = cairn_types
    exports = types.ModuleType("wit_world.exports")
    exports.Plugin = type("Plugin", (), {})
    world = types.ModuleType("wit_world")
    world.imports, world.exports = imports, exports
    cpt = types.ModuleType("componentize_py_types")

    class Err(Exception):
        def __init__(self, value):
            super().__init__(value)
            self.value = value

    cpt.Err = Err
    return {
        "wit_world": world,
        "wit_world.imports": imports,
        "wit_world.imports.cairn_types": cairn_types,
        "wit_world.exports": exports,
        "componentize_py_types": cpt,
    }


@pytest.fixture
def main_of(monkeypatch):
    """Run the generated main module of an example natively; yield it and
    how many invocations it made while being imported."""
    for name, module in _bindings().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)
    calls = []
    real_invoke = cairn._component.invoke

    def counting_invoke(actions, *args, **kwargs):
        calls.append(sorted(actions))
        return real_invoke(actions, *args, **kwargs)

    monkeypatch.setattr(cairn._component, "invoke", counting_invoke)

    def run(example: str):
        root = os.path.join(EXAMPLES, example)
        entry, default_module = build.read_pyproject(root)
        monkeypatch.syspath_prepend(root)
        monkeypatch.delitem(sys.modules, entry or "app", raising=False)
        source = build.main_module(entry or "app", default_module, [])
        main = types.ModuleType(build._MAIN)
        try:
            exec(compile(source, f"{build._MAIN}.py", "exec"), main.__dict__)
        finally:
            gc.unfreeze()
        made = list(calls)
        calls.clear()
        return main, made

    yield run


def test_the_build_time_warm_up_runs_the_invocation_path_without_registering_or_answering_anything(main_of):
    main, warm_calls = main_of("noop")
    # The warm-up went through the SDK's invoke, many times, with an action
    # of its own that the plugin never lists.
    assert len(warm_calls) == main._WARM_UP_ROUNDS >= 8
    assert all(actions == ["w"] for actions in warm_calls)
    assert [entry.name for entry in cairn.registry.entries()] == ["noop"]
    assert sorted(main._ACTIONS) == ["noop"]
    assert [a.name for a in main.Plugin().describe().actions] == ["noop"]


def test_the_generated_exports_answer_as_the_sdk_does(main_of):
    main, _ = main_of("math")
    plugin = main.Plugin()
    described = plugin.describe()
    assert described.module == "math"
    assert sorted(a.name for a in described.actions) == sorted(main._ACTIONS)
    assert plugin.invoke("add", payload.encode_arguments({"a": 2, "b": 3})) == payload.serialize_result_payload(5)
    with pytest.raises(sys.modules["componentize_py_types"].Err) as err:
        plugin.invoke("w", b"")
    assert err.value.value.type_name == "UnknownAction"
