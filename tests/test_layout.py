"""The house rules of the code base, checked on its source: rooms, import direction, no cycles, sizes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "jobs", "kernels", "schemas")
# What each layer may import from the project: dependencies point one way, jobs -> engine -> kernels.
ALLOWED = {"jobs": {"jobs", "engine", "kernels", "schemas"}, "engine": {"engine", "kernels", "schemas"},
           "kernels": {"kernels", "schemas"}, "schemas": {"schemas"}}
KERNELS_FORBIDDEN = {"ray", "duckdb", "pyarrow", "av", "nvidia", "cv2", "tqdm"}
MAX_CLASS, MAX_FUNCTION = 120, 60


def modules() -> dict[str, ast.Module]:
    """Every project module by dotted name without the `aosa.` namespace, parsed."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return found


def imported(tree: ast.Module) -> set[str]:
    """Dotted project-relative names a module imports anywhere (`from aosa.a.b import c` counts as a.b and a.b.c)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name.removeprefix("aosa.") for name in names}


def test_engine_holds_only_init_and_errors_loose():
    loose = sorted(path.name for path in (ROOT / "engine").glob("*.py"))
    assert loose == ["errors.py"]
    for folder in (ROOT / "engine").iterdir():
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.rglob("*.py")):
            assert (folder / "__init__.py").is_file(), folder


def test_top_level_folders_are_no_regular_packages():
    """Installed they are aosa.engine, ...; run from the repository root, a folder without __init__.py is a
    namespace portion, which never shadows a regular package of the same name (e.g. Hugging Face's kernels)."""
    assert [package for package in PACKAGES if (ROOT / package / "__init__.py").exists()] == []


def test_imports_point_down_and_kernels_stay_pure():
    for name, tree in modules().items():
        layer = name.split(".")[0]
        for target in imported(tree):
            top = target.split(".")[0]
            if top in PACKAGES:
                assert top in ALLOWED[layer], f"{name} imports {target}"
            if layer == "kernels":
                assert top not in KERNELS_FORBIDDEN, f"{name} imports {target}"


def test_no_import_cycle_between_project_modules():
    trees = modules()
    graph = {name: {target for target in imported(tree) if target in trees and target != name}
             for name, tree in trees.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):  # a package importing its own child is fine
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_no_class_or_function_too_long_to_hold_in_mind():
    too_long = []
    for name, tree in modules().items():
        if name.startswith("schemas"):
            continue
        for node in ast.walk(tree):
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    too_long.append(f"{name}.{node.name}: {lines} lines")
    assert too_long == []
