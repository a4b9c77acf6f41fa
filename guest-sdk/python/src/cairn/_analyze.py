"""`cairn-py build`'s first phase: import the plugin in a fresh interpreter and
say what it is.

Run as `python -m cairn._analyze DIR ENTRY`; prints one JSON object on
stdout: `{"module", "actions": [{"name"}...], "imports": [...]}` (imports in
`cairn.builtin.IMPORTS` order) or `{"error":
"file:line: message"}`. A separate process so that importing the author's
code cannot disturb the builder (and a second build starts clean).

What it checks, each failure one line naming the file and line:

* the entry module imports (a syntax error, an exception at import time, a
  bad `@action(...)` option, an `@action` on a function with `*args`,
  `**kwargs` or positional-only parameters);
* there is at least one action, and no two share a name (the host's key is
  `<plugin module>:<name>`, across all of the plugin's Python modules);
* every keyword-argument annotation can be decoded into, and every
  dependency's parameters are dependencies themselves;
* the plugin module (`cairn.plugin(module=...)`, else the default) is a
  valid name.

And it computes the imports: the host interfaces reachable from the
actions' dependency graphs (`cairn.deps.builtins_used`).
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), root]) == root
    except ValueError:
        return False


def _location(exc: BaseException, root: str) -> str | None:
    """`file:line` of the innermost frame of `exc` in the plugin's directory."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno or 0}"
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if _inside(frame.filename, root):
            found = f"{frame.filename}:{frame.lineno}"
    return found


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def analyze(root: str, entry: str, default_module: str) -> dict:
    from . import binding, deps
    from .actions import PLUGIN, validate_name
    from .builtin import IMPORTS
    from .registry import registry

    sys.path.insert(0, root)
    registry.reset()
    try:
        __import__(entry)
    except deps.SignatureError as exc:
        return {"error": _one_line(str(exc))}
    except SyntaxError as exc:
        return {"error": f"{_location(exc, root)}: syntax error: {_one_line(exc.msg)}"}
    except BaseException as exc:  # the author's import-time failure, whatever it is
        where = _location(exc, root) or f"{os.path.join(root, entry)}.py"
        return {"error": f"{where}: {type(exc).__name__}: {_one_line(str(exc))}"}

    entries = registry.entries()
    if not entries:
        return {"error": f"{os.path.join(root, entry)}.py: no actions: decorate functions with @cairn.action"}
    by_name: dict = {}
    for item in entries:
        first = by_name.get(item.name)
        if first is not None:
            return {
                "error": f"{item.func.where}: action `{item.name}` is defined twice "
                f"(also at {first.func.where}): the host knows a plugin's actions by name alone"
            }
        by_name[item.name] = item
    imports: set = set()
    actions = []
    for item in entries:
        action = item.func
        try:
            params = action.params()
            for param in params:
                if param.depends is None:
                    why = binding.check_annotation(param.annotation)
                    if why:
                        return {"error": f"{action.where}: action `{action.name}`, parameter `{param.name}`: {why}"}
            deps.check_dependency_params(action.func)
            used = deps.builtins_used(action.func)
        except deps.SignatureError as exc:
            return {"error": _one_line(str(exc))}
        imports |= {IMPORTS[cls] for cls in used}
        actions.append({"name": action.name})
    module = PLUGIN.module or default_module
    try:
        validate_name(module, "module")
    except ValueError:
        return {
            "error": f"{os.path.join(root, entry)}.py: plugin module {module!r} is not a valid name: "
            'declare one with cairn.plugin(module="...")'
        }
    return {"module": module, "actions": actions, "imports": [i for i in IMPORTS.values() if i in imports]}


def main() -> None:
    root, entry, default_module = sys.argv[1], sys.argv[2], sys.argv[3]
    result = analyze(os.path.abspath(root), entry, default_module)
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
