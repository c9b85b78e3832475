"""The import rules of the layout: fer_utils never imports demo, demo imports only fer_utils and the UI
library (and the standard library), and fer_utils's modules import each other without cycles."""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
UI_LIBRARIES = {"gradio", "gradio_client", "fastapi", "starlette", "pydantic"}  # Gradio and the web stack it serves on


def imports_of(path: pathlib.Path, package: str) -> set[str]:
    """Absolute module names a file imports, anywhere in it (lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
                if node.module is None:  # from . import x
                    names |= {f"{base}.{alias.name}" for alias in node.names}
                    continue
                names.add(module)
            else:
                names.add(node.module)
    return names


def modules(folder: str) -> dict[str, pathlib.Path]:
    return {f"{folder}.{path.stem}" if path.stem != "__init__" else folder: path
            for path in sorted((ROOT / folder).glob("*.py"))}


def test_fer_utils_never_imports_demo():
    for name, path in modules("fer_utils").items():
        offending = {m for m in imports_of(path, "fer_utils") if m == "demo" or m.startswith("demo.")}
        assert not offending, f"{name} imports {offending}"


def test_demo_imports_only_fer_utils_the_ui_library_and_the_standard_library():
    allowed_roots = {"fer_utils", "demo", "__future__", *UI_LIBRARIES, *sys.stdlib_module_names}
    for name, path in modules("demo").items():
        roots = {m.split(".")[0] for m in imports_of(path, "demo")}
        assert roots <= allowed_roots, f"{name} imports {sorted(roots - allowed_roots)}"


def test_fer_utils_modules_have_no_import_cycles():
    package = modules("fer_utils")
    graph = {name: {m for m in imports_of(path, "fer_utils") if m in package and m != name}
             for name, path in package.items()}
    graph.pop("fer_utils", None)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if not state.get(target):
                visit(target)
        stack.pop()
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node)
