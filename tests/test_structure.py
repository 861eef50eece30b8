"""The code keeps its shape: small functions, stages the cluster plugs into, no private
reach into the engine, and no cluster-only parameters or result fields in it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

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


def test_the_engine_has_no_cluster_only_parameters_or_fields():
    from orangecontrib.transferembed.pipeline import engine
    from orangecontrib.transferembed.pipeline.results import EmbeddingResult

    parameters = set(inspect.signature(engine.run).parameters)
    assert parameters == {"source", "config", "progress", "is_cancelled",
                          "download_progress", "status", "notice"}
    fields = {field.name for field in dataclasses.fields(EmbeddingResult)}
    assert not fields & {"tail", "new_keys", "offset", "state"}
    pipeline = set(inspect.signature(engine.Pipeline).parameters)
    assert pipeline == {"source", "config", "sink", "cache", "hooks", "part"}


def test_one_dispatch_from_input_kind_to_source():
    """``open_source`` is the only place that picks a source by kind."""
    callers = [path.relative_to(PACKAGE).as_posix() for path, tree in modules()
               for node in ast.walk(tree)
               if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                   "folder_source", "csv_source", "npy_source")
               and path.name != "sources.py"]
    assert not callers, callers
