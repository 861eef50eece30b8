"""The code keeps its shape: small functions, stages the cluster plugs into, no private
reach into the engine, and no cluster-only parameters or result fields in it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

from structure_graph import ROOT, cycles, graph, imports, is_package
from structure_graph import modules as modules_by_name

PACKAGE = Path(__file__).resolve().parents[1] / "orangecontrib" / "transferembed"
MAX_LINES = 60


def modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8")))
            for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_function_longer_than_60_lines():
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} "
            f"({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert not long, long


def test_no_module_imports_the_engines_private_names():
    reaching = [f"{path.relative_to(PACKAGE)}: {alias.name}"
                for path, tree in modules() for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("engine")
                for alias in node.names if alias.name.startswith("_")]
    assert not reaching, reaching


CLUSTER_ONLY = {"client", "scheduler", "shards", "shard_dir", "tail", "new_keys", "offset",
                "state", "worker", "part_index"}


def test_the_engine_has_no_cluster_only_parameters_or_fields():
    from orangecontrib.transferembed.pipeline import engine
    from orangecontrib.transferembed.pipeline.results import EmbeddingResult

    assert not set(inspect.signature(engine.run).parameters) & CLUSTER_ONLY
    fields = {field.name for field in dataclasses.fields(EmbeddingResult)}
    assert not fields & CLUSTER_ONLY


def test_hooks_are_passed_whole():
    """A job's hooks travel as one object, never unpacked into separate arguments."""
    from orangecontrib.transferembed.jobs import run_job
    from orangecontrib.transferembed.pipeline import engine

    hook_fields = {"progress", "is_cancelled", "download_progress", "status", "notice"}
    for function in (engine.run, run_job, engine.Pipeline):
        assert "hooks" in inspect.signature(function).parameters
        assert not set(inspect.signature(function).parameters) & hook_fields


def test_one_dispatch_from_input_kind_to_source():
    """``open_source`` is the only place that picks a source by kind."""
    callers = [path.relative_to(PACKAGE).as_posix() for path, tree in modules()
               for node in ast.walk(tree)
               if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                   "folder_source", "csv_source", "npy_source")
               and path.name != "sources.py"]
    assert not callers, callers


# --- the tree shows the house -------------------------------------------------------------

def test_the_top_holds_few_modules_and_the_rest_lives_in_wings():
    top = [path.name for path in PACKAGE.glob("*.py")]
    assert len(top) <= 8, sorted(top)
    wings = {path.name for path in PACKAGE.iterdir()
             if path.is_dir() and (path / "__init__.py").exists()}
    assert {"cli", "widgets"} <= wings
    assert len(wings - {"cli", "widgets", "tutorials"}) >= 4, wings


def test_no_import_circles_counting_imports_inside_functions():
    found = cycles(graph())
    assert not found, found


def test_no_module_imports_its_own_packages_init():
    """Nor any package's above it: a name is imported from the module that holds it."""
    known = modules_by_name()
    borrowing = [f"{name}: {text}" for name, path in known.items() if not is_package(path)
                 for target, text in imports(name, path, known)
                 if is_package(known[target]) and name.startswith(target + ".")]
    assert not borrowing, borrowing


def test_subpackages_do_not_reexport():
    """A wing's ``__init__`` imports nothing, so that importing one stage never loads
    the others (and nobody is tempted to borrow from it)."""
    busy = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("__init__.py")
            if path.parent != PACKAGE and path.parent.name != "widgets"
            and any(isinstance(node, (ast.Import, ast.ImportFrom))
                    for node in ast.parse(path.read_text(encoding="utf-8")).body)]
    assert not busy, busy


def test_the_core_never_imports_a_face():
    faces = (f"{ROOT}.cli", f"{ROOT}.widgets", f"{ROOT}.api", f"{ROOT}.__main__")
    edges = graph()
    reaching = [f"{name} -> {target}" for name, targets in edges.items()
                if not name.startswith(faces) and name != ROOT
                for target in targets if target.startswith(faces)]
    assert not reaching, reaching


def test_no_module_imports_another_modules_private_names():
    reaching = [f"{path.relative_to(PACKAGE)}: {node.module}.{alias.name}"
                for path, tree in modules() for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom)
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not reaching, reaching


#: The wings from the bottom up: a module imports only its own rank or those below.
RANKS = [("errors",), ("models",), ("config",), ("runtimes",), ("pipeline",), ("writers",),
         ("cluster",), ("jobs", "comparison"),
         ("api", "cli", "widgets", "__init__", "__main__", "tutorials")]


def rank(name: str) -> int:
    wing = name[len(ROOT) + 1:].split(".")[0] if name != ROOT else "__init__"
    return next(i for i, wings in enumerate(RANKS) if wing in wings)


def test_arrows_run_down_only():
    """Faces -> jobs -> cluster -> writers -> pipeline -> runtimes -> config -> models
    -> errors, counting imports inside functions."""
    upward = [f"{name} -> {target}" for name, targets in graph().items()
              for target in targets if rank(target) > rank(name)]
    assert not upward, upward
