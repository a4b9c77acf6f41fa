"""`cairn-py build`'s analysis (which imports the plugin and decides the
component's imports) and its one-line errors. Building real components and
running them in a real host is the job of tests/all/python.rs."""

import filecmp
import os

import pytest

from cairn import build
from conftest import REPO

EXAMPLES = os.path.join(REPO, "examples", "python")


def test_the_shipped_wit_is_the_repository_contract_byte_for_byte():
    shipped = os.path.join(os.path.dirname(build.__file__), "wit", "plugin.wit")
    assert filecmp.cmp(shipped, os.path.join(REPO, "wit", "plugin.wit"), shallow=False)


@pytest.mark.parametrize(
    "example,imports",
    [("greet", []), ("math", []), ("deps_cache", []), ("visits", ["config", "kv"]), ("noop", [])],
)
def test_examples_import_exactly_what_their_dependency_graphs_reach(example, imports):
    root = os.path.join(EXAMPLES, example)
    entry, default_module = build.read_pyproject(root)
    result = build.analyze(root, entry or "app", default_module, [])
    assert result["module"] == example
    assert result["imports"] == imports


def test_the_world_imports_only_what_is_listed():
    world = build.world_wit(["kv", "http"])
    assert "import kv;" in world and "import wasi:http/outgoing-handler@0.2.12;" in world
    assert "import config;" not in world and "export plugin;" in world


def write(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize(
    "files,expected",
    [
        ({"app.py": "import cairn\n\n@cairn.action\ndef f(x: int) -> int\n    return x\n"},
         "app.py:4: syntax error: expected ':'"),
        ({"app.py": "import cairn\n\n@cairn.action\ndef f(*args):\n    return 1\n"},
         "app.py:3: action `f` takes `*args`"),
        ({"app.py": "import cairn\nimport other\n\n@cairn.action(name='g')\ndef f():\n    return 1\n",
          "other.py": "import cairn\n\n@cairn.action\ndef g():\n    return 2\n"},
         "action `g` is defined twice"),
        ({"app.py": "import cairn\n\nraise RuntimeError('boom')\n"}, "app.py:3: RuntimeError: boom"),
        ({"app.py": "import cairn\n\n@cairn.action\ndef f(when: complex):\n    return 1\n"},
         "app.py:3: action `f`, parameter `when`: cannot decode an argument into complex"),
        ({"app.py": "x = 1\n"}, "app.py: no actions"),
        ({"app.py": "import cairn\n@cairn.action\ndef f(): ...\n", "pyproject.toml": "[tool.cairn]\nentyr = 'app'\n"},
         "pyproject.toml: unknown key `entyr` in [tool.cairn]"),
        ({"main.py": "x = 1\n"}, "app.py: no such file: the entry module"),
    ],
)
def test_build_errors_are_one_line_naming_file_and_line(tmp_path, files, expected):
    root = write(tmp_path, files)
    with pytest.raises(build.BuildError) as err:
        build.build(root, str(tmp_path / "out.wasm"))
    message = str(err.value)
    assert "\n" not in message
    assert expected in message
    assert not (tmp_path / "out.wasm").exists()


def test_entry_module_and_plugin_module_come_from_pyproject(tmp_path):
    root = write(tmp_path, {
        "main.py": "import cairn\n@cairn.action\ndef f() -> int:\n    return 1\n",
        "pyproject.toml": "[project]\nname = 'my-tools'\n[tool.cairn]\nentry = 'main'\n",
    })
    entry, default_module = build.read_pyproject(root)
    assert (entry, default_module) == ("main", "my_tools")
    assert build.analyze(root, entry, default_module, [])["module"] == "my_tools"
