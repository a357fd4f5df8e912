"""The package's import graph has no cycle.

A cycle means two modules each need the other to be whole, which is how a concept ends up with
two homes. The graph is built from the source with `ast`, imports inside functions included
(they hide a cycle from Python's import machinery, not from the design). An edge goes from a
module to the module it names: `from .x import y` is an edge to `x.y` when that is a module,
else to `x`. A module importing from inside a package it is not part of also depends on that
package's `__init__` (Python runs it first), so that is an edge too; a module inside the
package reaching its siblings is not (its `__init__` re-exporting them is not a cycle of concepts).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trace2skill"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["trace2skill", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _targets(module: str, path: Path, tree: ast.AST, known: set[str]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            for alias in node.names:
                targets.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    for target in list(targets):
        parts = target.split(".")
        for depth in range(2, len(parts)):
            package_name = ".".join(parts[:depth])
            if package_name in known and not (module == package_name or module.startswith(package_name + ".")):
                targets.add(package_name)
    return {t for t in targets if t in known and t != module}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    modules = _modules()
    known = set(modules)
    return {name: _targets(name, path, ast.parse(path.read_text(encoding="utf-8")), known)
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_checker_finds_a_cycle():
    """A graph with a cycle is reported (so the real check can fail)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports_inside_functions():
    """pipeline imports config at the top and offline inside a function; both are edges."""
    graph = import_graph()
    assert "trace2skill.config" in graph["trace2skill.pipeline"]
    assert "trace2skill.offline" in graph["trace2skill.pipeline"]
    assert "trace2skill.skillfmt.sections" in graph["trace2skill.publish.merge"]
    assert len(graph) > 50
    assert "trace2skill.ingest" in graph["trace2skill.pipeline"]  # via trace2skill.ingest.fidelity too
    assert "trace2skill.publish" in graph["trace2skill.refresh"]


def test_importing_into_another_package_depends_on_its_init():
    """`from .ingest.base import x` in a top-level module is an edge to `ingest` as well (Python
    runs `ingest/__init__` first); inside `ingest` the same import is not."""
    known = {"trace2skill.a", "trace2skill.ingest", "trace2skill.ingest.base", "trace2skill.ingest.labels"}
    tree = ast.parse("def f():\n    from .ingest.base import x\n")
    assert _targets("trace2skill.a", PACKAGE / "a.py", tree, known) == {"trace2skill.ingest", "trace2skill.ingest.base"}
    tree = ast.parse("from .base import x\n")
    assert _targets("trace2skill.ingest.labels", PACKAGE / "ingest" / "labels.py", tree, known) == {"trace2skill.ingest.base"}


KNOWN_CYCLES: set[tuple[str, str]] = set()
"""Cycles tolerated for now (none): the gate gets `pipeline.distill` passed in instead of importing it."""


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    for source, target in KNOWN_CYCLES:
        assert target in graph[source], f"{source} -> {target} is gone: remove it from KNOWN_CYCLES"
        graph[source].discard(target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def long_functions_without_a_reason(limit: int = 60) -> list[str]:
    """Functions (methods and nested ones included) longer than `limit` lines whose docstring
    does not say why they are long ("long because ...")."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit and "long because" not in (ast.get_docstring(node) or "").lower():
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_long_without_a_stated_reason():
    assert long_functions_without_a_reason() == []


def test_the_length_check_sees_a_long_function():
    """With a limit of 10 lines, the package has long functions, so the real check can fail."""
    assert any("build_graph" in row for row in long_functions_without_a_reason(limit=10))


ANY_ALLOWED: dict[str, str] = {}
"""Modules whose public signatures may still say `Any`, each with the reason (remove an entry
as soon as its module is typed; the test says when an entry is no longer needed)."""


def _mentions_any(annotation: ast.expr | None) -> bool:
    """True when an annotation is or contains `Any` (`Any`, `dict[str, Any]`, `typing.Any`, `"Any"`)."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return False
    return any((isinstance(node, ast.Name) and node.id == "Any") or (isinstance(node, ast.Attribute) and node.attr == "Any")
               for node in ast.walk(annotation))


def _is_public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


def _signature_anys(function: ast.FunctionDef | ast.AsyncFunctionDef, owner: str) -> list[str]:
    arguments = function.args
    every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
             *(a for a in (arguments.vararg, arguments.kwarg) if a is not None)]
    found = [f"{owner}{function.name}({a.arg})" for a in every
             if a.arg not in ("self", "cls") and (a.annotation is None or _mentions_any(a.annotation))]
    if function.name != "__init__" and (function.returns is None or _mentions_any(function.returns)):
        found.append(f"{owner}{function.name} -> return")
    return found


def public_anys(tree: ast.Module) -> list[str]:
    """Where a module's public interface says `Any` or says nothing: parameters and returns of
    public functions and of public methods of public classes (unannotated counts: it is an
    implicit `Any`), annotated fields of public classes, and public module-level annotated names
    and type aliases. A leading underscore marks what stays inside the module."""
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            found += _signature_anys(node, "")
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public(item.name):
                    found += _signature_anys(item, f"{node.name}.")
                elif (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                      and not item.target.id.startswith("_") and _mentions_any(item.annotation)):
                    found.append(f"{node.name}.{item.target.id}")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not node.target.id.startswith("_"):
            if _mentions_any(node.annotation) or (node.value is not None and _mentions_any(node.value)):
                found.append(node.target.id)
        elif isinstance(node, ast.Assign) and _mentions_any(node.value):
            found += [t.id for t in node.targets if isinstance(t, ast.Name) and not t.id.startswith("_")]
    return found


def test_the_any_check_sees_any_and_missing_annotations():
    tree = ast.parse(
        "from typing import Any\n"
        "def f(a: Any, b: dict[str, Any], c, d: int) -> 'list[Any]': ...\n"
        "def _private(a: Any) -> Any: ...\n"
        "class C:\n    x: Any\n    _y: Any\n    def m(self, v: int) -> None: ...\n    def _n(self, v: Any) -> Any: ...\n"
        "class _Hidden:\n    x: Any\n"
        "Alias = Callable[..., Any]\nCONSTANT: dict[str, Any] = {}\n_private_alias = Any\n"
    )
    assert public_anys(tree) == ["f(a)", "f(b)", "f(c)", "f -> return", "C.x", "Alias", "CONSTANT"]


def test_no_public_signature_says_any():
    """A public name is used across modules, so its type is the contract between them: `Any`
    there (or no annotation) lets any value through unchecked. JSON as read is `types.JSONValue`."""
    found, used = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE))
        rows = public_anys(ast.parse(path.read_text(encoding="utf-8")))
        if name in ANY_ALLOWED:
            assert rows, f"{name} no longer says Any: remove it from ANY_ALLOWED"
            used.add(name)
            continue
        found += [f"{name}: {row}" for row in rows]
    assert set(ANY_ALLOWED) <= used, f"no such module: {set(ANY_ALLOWED) - used}"
    assert found == []
