"""`cairn-py`: build a directory of Python code into a cairn plugin component.

```sh
cairn-py build DIR -o OUT.wasm [--module ENTRY] [--python-path PATH]...
```

# Strategy

1. **Analyse** (`cairn._analyze`, in a fresh interpreter): import the entry
   module, check every action, and collect the host interfaces the actions'
   dependency graphs reach.
2. **Write a world** for this plugin alone: `export plugin` plus an `import`
   for each interface found, next to a copy of `wit/plugin.wit` shipped in
   this package (and, for `Http`, the `wasi:http` 0.2.12 WIT this host
   provides). componentize-py imports everything its world names, used or
   not, so the world is the only place where "imports only what it uses"
   can be decided. A plugin that never asks for `Kv` does not import
   `cairn:plugin/kv`, and the operator's grants work as for Rust plugins.
3. **Componentize**: generate the component's main module (it imports the
   plugin and forwards `describe`/`invoke` to `cairn._component`) and run
   `componentize-py`, which bundles CPython, the SDK and the plugin's code
   and pre-initializes them: the plugin's modules are imported at build
   time, and every instance the host creates starts from that snapshot.

The entry module is `app` (`DIR/app.py`) unless `--module` or the
`[tool.cairn] entry = "..."` key of `DIR/pyproject.toml` says otherwise. The
plugin's module (the `greet` of `greet:hello`) is what the code declares with
`cairn.plugin(module="greet")`, else the `[project] name` of
`DIR/pyproject.toml`, else the directory's name.

# Failure modes

Every failure is one line on stderr, `error: FILE:LINE: what`, and exit
status 1: a syntax error, an exception while importing the plugin, an
unsupported action signature, two actions with one name, an unknown
`[tool.cairn]` key, componentize-py failing (its Python traceback reduced to
the innermost frame in the plugin's files). Nothing is written to OUT unless
the build succeeded (the component is written next to it and renamed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_WIT_DIR = os.path.join(_PACKAGE_DIR, "wit")
#: The package of the plugin contract, as `wit/plugin.wit` declares it.
_CAIRN_PACKAGE = "cairn:plugin@0.1.0"
#: The `wasi:http` version shipped in `wit/deps`: the one wasmtime 48 (the
#: host) provides.
_WASI_HTTP = "wasi:http@0.2.12"
#: Keys `[tool.cairn]` may hold. Unknown keys are errors.
_TOOL_KEYS = {"entry"}
#: The name of the generated main module inside the component; chosen not to
#: collide with a plugin's modules or the bindings (`wit_world`).
_MAIN = "cairn_component_main"


class BuildError(Exception):
    """One line: what failed, with the file and line when there is one."""


def _default_module(root: str, project: dict) -> str:
    name = project.get("name") if isinstance(project, dict) else None
    base = name if isinstance(name, str) and name else os.path.basename(os.path.abspath(root))
    return re.sub(r"[^A-Za-z0-9_]", "_", base)


def read_pyproject(root: str) -> tuple[str | None, str]:
    """(entry module from `[tool.cairn]`, default plugin module)."""
    path = os.path.join(root, "pyproject.toml")
    if not os.path.exists(path):
        return None, _default_module(root, {})
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except tomllib.TOMLDecodeError as err:
        raise BuildError(f"{path}: {err}") from None
    tool = data.get("tool", {}).get("cairn", {})
    unknown = sorted(set(tool) - _TOOL_KEYS)
    if unknown:
        raise BuildError(f"{path}: unknown key `{unknown[0]}` in [tool.cairn]; known keys: entry")
    entry = tool.get("entry")
    if entry is not None and not isinstance(entry, str):
        raise BuildError(f"{path}: [tool.cairn] entry must be a module name (a string)")
    return entry, _default_module(root, data.get("project", {}))


def _check_entry(root: str, entry: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", entry):
        raise BuildError(f"entry module {entry!r} is not a Python module name")
    base = os.path.join(root, *entry.split("."))
    if not (os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))):
        raise BuildError(f"{base}.py: no such file: the entry module (set it with --module or [tool.cairn] entry)")


def analyze(root: str, entry: str, default_module: str, python_path: list[str]) -> dict:
    """Run `cairn._analyze` in a fresh interpreter; raise `BuildError`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(_PACKAGE_DIR), *python_path])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "cairn._analyze", root, entry, default_module],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"{root}: analysing the plugin failed: {tail}") from None
    if "error" in result:
        raise BuildError(_relative(result["error"]))
    return result


def _relative(message: str) -> str:
    """Paths under the current directory shown relative to it, as compilers
    show them."""
    cwd = os.getcwd() + os.sep
    return message.replace(cwd, "")


def world_wit(imports: list[str]) -> str:
    """The per-build world: the plugin export plus exactly `imports`."""
    # No comment above `package`: wit-parser would take it for the package's
    # doc comment, which `plugin.wit` already has.
    lines = [
        f"package {_CAIRN_PACKAGE};",
        "",
        "// Generated by cairn-py build: this plugin's world, importing only the",
        "// dependencies its actions use.",
        "world cairn-py-plugin {",
    ]
    for name in imports:
        if name == "http":
            lines.append(f"    import {_WASI_HTTP.replace('@', '/outgoing-handler@')};")
        else:
            lines.append(f"    import {name};")
    lines += ["    export plugin;", "}", ""]
    return "\n".join(lines)


#: The WIT bindings each dependency's backend imports when it is built.
_BINDINGS = {
    "log": ["log"],
    "context": ["context"],
    "config": ["config"],
    "kv": ["kv"],
    "enqueue": ["enqueue"],
    "http": ["http_types", "outgoing_handler", "streams", "poll", "error"],
}


def main_module(entry: str, module: str, imports: list[str]) -> str:
    """The component's main module: import the plugin, forward the exports.

    Everything an invocation may import is imported here, at build time:
    componentize-py snapshots the interpreter after this module ran, and the
    host gives a plugin no filesystem, so a module first imported while an
    action runs could never be found.
    """
    bindings = sorted({b for name in imports for b in _BINDINGS[name]})
    eager = "".join(f"import wit_world.imports.{b}  # noqa: F401\n" for b in bindings)
    return f'''"""Generated by cairn-py build: the component's entry point."""
import gc
import sys

# Build-time imports must not leave __pycache__ in the plugin's directory.
sys.dont_write_bytecode = True

import cairn  # noqa: F401
import cairn.deps  # noqa: F401
import cairn.payload  # noqa: F401
import cairn._component  # noqa: F401
import cairn.binding  # noqa: F401
import cairn.builtin  # noqa: F401
import cairn.testing  # noqa: F401
{eager}
import {entry}  # the plugin: registers its actions

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import cairn_types as _types

from cairn import _component
from cairn.deps import Resolver
from cairn.registry import registry

_MODULE = {module!r}
_ACTIONS = {{entry.name: entry.func for entry in registry.entries()}}


def _retry(policy):
    if policy is None:
        return None
    return _types.RetryPolicy(policy.max_attempts, policy.initial_backoff_ms, policy.max_backoff_ms)


# Warm what every invocation needs, so that it is in the snapshot rather
# than recomputed (and its pages dirtied) in each fresh instance: the
# parameter plans of every action and dependency (inspect and typing are
# slow), and the codec's first use.
for _action in _ACTIONS.values():
    _action.params()
    _action.is_plain()
    cairn.deps.check_dependency_params(_action.func)
    cairn.deps.builtins_used(_action.func)
cairn.payload.serialize_result_payload(None)
cairn.payload.decode_arguments(b"")

_INFO = _types.PluginInfo(
    module=_MODULE,
    actions=[
        _types.ActionInfo(a["name"], a["description"], a["timeout_ms"], _retry(a["retry"]))
        for a in _component.describe(_ACTIONS)
    ],
)


class Plugin(exports.Plugin):
    def describe(self):
        return _INFO

    def invoke(self, name, args):
        try:
            return _component.invoke(_ACTIONS, _MODULE, name, args, Resolver())
        except _component.Failure as failure:
            raise Err(_types.ActionError(
                failure.type_name, failure.module, failure.message, failure.retryable, failure.details,
            )) from None


# Last: collect once and move every object the snapshot holds into the
# permanent generation, so the collector never walks (and dirties) them again
# in an instance; each instance lives for one invocation.
gc.collect()
gc.freeze()
'''


def _stage_sdk(dest: str) -> None:
    """Copy the SDK's Python files (not its WIT or caches) for bundling."""
    target = os.path.join(dest, "cairn")
    shutil.copytree(
        _PACKAGE_DIR,
        target,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wit", "build.py", "_analyze.py"),
    )


def _componentize_error(output: str, roots: list[str]) -> str:
    """componentize-py's failure in one line: the innermost frame of the
    plugin's code (its `/N/` paths mapped back to the Python path) and the
    exception."""
    frames = re.findall(r'File "/(\d+)/([^"]+)", line (\d+)', output)
    where = None
    for index, rel, line in frames:
        i = int(index)
        if i < len(roots):
            where = f"{os.path.join(roots[i], rel)}:{line}"
    message = None
    for line in output.splitlines():
        stripped = line.strip()
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*:", stripped) and not stripped.startswith("Caused"):
            message = stripped
    if message is None:
        message = next((l.strip() for l in output.splitlines() if l.strip()), "componentize-py failed")
    return _relative(f"{where}: {message}" if where else f"componentize-py: {message}")


def componentize(root: str, entry: str, module: str, imports: list[str], python_path: list[str], out: str) -> None:
    """Write the world and main module, run componentize-py; raise
    `BuildError`."""
    exe = shutil.which("componentize-py") or os.path.join(os.path.dirname(sys.executable), "componentize-py")
    if not os.path.exists(exe):
        raise BuildError("componentize-py not found: install the SDK with `pip install ./guest-sdk/python`")
    with tempfile.TemporaryDirectory(prefix="cairn-py-") as tmp:
        wit = os.path.join(tmp, "wit")
        os.makedirs(wit)
        shutil.copy(os.path.join(_WIT_DIR, "plugin.wit"), wit)
        if "http" in imports:
            shutil.copytree(os.path.join(_WIT_DIR, "deps"), os.path.join(wit, "deps"))
        with open(os.path.join(wit, "world.wit"), "w") as file:
            file.write(world_wit(imports))
        app = os.path.join(tmp, "app")
        os.makedirs(app)
        with open(os.path.join(app, f"{_MAIN}.py"), "w") as file:
            file.write(main_module(entry, module, imports))
        sdk = os.path.join(tmp, "sdk")
        _stage_sdk(sdk)
        roots = [app, sdk, root, *python_path]
        partial = out + ".partial"
        cmd = [exe, "-d", wit, "-w", "cairn-py-plugin",
               "--import-interface-name", f"{_CAIRN_PACKAGE.replace('@', '/types@')}=cairn_types"]
        if "http" in imports:
            cmd += ["--import-interface-name", f"{_WASI_HTTP.replace('@', '/types@')}=http_types"]
        cmd += ["componentize"]
        for path in roots:
            cmd += ["-p", path]
        cmd += [_MAIN, "-o", partial]
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["RUST_BACKTRACE"] = "0"
        # Its CPython would otherwise write __pycache__ into the plugin directory.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        if proc.returncode != 0:
            if os.path.exists(partial):
                os.unlink(partial)
            raise BuildError(_componentize_error(proc.stderr + proc.stdout, roots))
        os.replace(partial, out)


def build(directory: str, out: str, entry: str | None = None, python_path: list[str] | None = None) -> dict:
    """Build the plugin in `directory` into the component `out`; returns what
    the analysis found (`module`, `actions`, `imports`). Raises `BuildError`."""
    root = os.path.abspath(directory)
    if not os.path.isdir(root):
        raise BuildError(f"{directory}: not a directory")
    configured, default_module = read_pyproject(root)
    entry = entry or configured or "app"
    _check_entry(root, entry)
    python_path = [os.path.abspath(p) for p in (python_path or [])]
    result = analyze(root, entry, default_module, python_path)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise BuildError(f"{out}: the output directory does not exist")
    componentize(root, entry, result["module"], result["imports"], python_path, os.path.abspath(out))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cairn-py", description="Build Python cairn plugins.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build DIR into a plugin component")
    b.add_argument("dir", help="the plugin's directory")
    b.add_argument("-o", "--output", required=True, help="the component to write (OUT.wasm)")
    b.add_argument("--module", "--entry", dest="entry", help="the entry module (default: app, or [tool.cairn] entry)")
    b.add_argument("-p", "--python-path", action="append", default=[],
                   help="another directory of pure-Python modules to bundle (repeatable)")
    args = parser.parse_args(argv)
    try:
        result = build(args.dir, args.output, args.entry, args.python_path)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    names = ", ".join(f"{result['module']}:{a['name']}" for a in result["actions"])
    imports = ", ".join(result["imports"]) or "none"
    print(f"built {args.output}: {names} (imports: {imports})")


if __name__ == "__main__":
    main()
