"""The registry: the seed's class, methods and errors."""

import pytest

import cairn
from cairn import ActionRegistry, action


def test_actions_register_under_their_module_and_name():
    @action
    def hello(name: str) -> str:
        return name

    @action(name="other")
    async def renamed() -> None: ...

    assert cairn.registry.names() == [f"{__name__}:hello", f"{__name__}:other"]
    assert cairn.registry.get(__name__, "hello") is hello
    assert cairn.registry.get(__name__, "renamed") is None
    assert cairn.registry.get("elsewhere", "hello") is None
    entry = cairn.registry.entries()[0]
    assert (entry.module, entry.name, entry.func) == (__name__, "hello", hello)


def test_same_name_in_different_modules_is_allowed():
    registry = ActionRegistry()
    registry.register("a", "run", _one)
    registry.register("b", "run", _two)
    assert registry.names() == ["a:run", "b:run"]


def test_same_key_with_a_different_implementation_is_a_value_error():
    registry = ActionRegistry()
    registry.register("a", "run", _one)
    registry.register("a", "run", _one)  # the same implementation again: fine
    with pytest.raises(ValueError, match="`a:run` is already registered with a different implementation"):
        registry.register("a", "run", _two)
    assert registry.get("a", "run") is _one


def test_redefining_an_action_in_one_module_is_a_value_error():
    @action(name="twice")
    def first() -> int:
        return 1

    with pytest.raises(ValueError, match="already registered"):

        @action(name="twice")
        def second() -> int:
            return 2


def test_reset_clears_everything():
    registry = ActionRegistry()
    registry.register("a", "run", _one)
    registry.reset()
    assert registry.names() == [] and registry.entries() == [] and registry.get("a", "run") is None


def test_plugin_module_is_declared_once():
    cairn.plugin(module="math")
    cairn.plugin(module="math")
    with pytest.raises(ValueError, match="plugin module declared twice"):
        cairn.plugin(module="geometry")
    with pytest.raises(ValueError, match="invalid module name"):
        cairn.plugin(module="has space")


def _one():
    return 1


def _two():
    return 2
