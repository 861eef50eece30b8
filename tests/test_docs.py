"""The documentation builds with ``sphinx -W`` and stays in step with the code."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "doc"


def _gen_backbones():
    spec = importlib.util.spec_from_file_location("gen_backbones", DOC / "gen_backbones.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("myst_parser")
    out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                          "html", "-d", str(tmp_path / "doctrees"), str(DOC),
                          str(tmp_path / "html")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    html = tmp_path / "html"
    widget = (html / "widgets" / "transfer-embedding.html").read_text(encoding="utf-8")
    assert "Inputs" in widget and "Outputs" in widget
    for page in ("install", "cli", "api", "offline-weights", "backbones", "cluster"):
        assert (html / f"{page}.html").is_file(), page


def test_backbones_page_matches_registry():
    """``doc/backbones.md`` is what ``doc/gen_backbones.py`` makes of the registry."""
    gen = _gen_backbones()
    speed = json.loads(gen.SPEED_FILE.read_text()) if gen.SPEED_FILE.exists() else {}
    assert (DOC / "backbones.md").read_text(encoding="utf-8") == gen.render(speed), \
        "doc/backbones.md is stale: run python doc/gen_backbones.py"
    measured = speed.get("results", {})
    assert set(gen.MEASURED) <= set(measured), "every listed backbone has a speed"


def test_cli_page_documents_every_flag():
    from orangecontrib.transferembed.cli.main import build_parser, sample_parser

    text = (DOC / "cli.md").read_text(encoding="utf-8")
    for parser in (build_parser(), sample_parser()):
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text, f"{flag} is not in doc/cli.md"
    for name in ("-csv", "-data", "-labels", "-dir", "-n", "-tm", "-to-csv", "-he", "-w",
                 "-c", "-weights", "-b"):
        assert f"| `{name}` |" in text


def test_offline_recipe_names_real_files():
    from orangecontrib.transferembed import get_backbone

    text = (DOC / "offline-weights.md").read_text(encoding="utf-8")
    mobilenet = get_backbone("MobileNet")
    assert mobilenet.weights_filename() in text
    assert mobilenet.weights_url() in text
    assert mobilenet.weights_filename(0.25) in text


def test_api_page_shows_embed_signature():
    import inspect

    from orangecontrib.transferembed import embed

    text = (DOC / "api.md").read_text(encoding="utf-8").replace('"', "'")
    for name, param in inspect.signature(embed).parameters.items():
        shown = name if param.default is inspect.Parameter.empty \
            else f"{name}={param.default!r}"
        assert shown in text, f"doc/api.md does not show {shown}"


def test_the_layout_page_names_every_module():
    """``doc/layout.md`` draws the whole tree: a new module is placed on it too."""
    layout = (DOC / "layout.md").read_text(encoding="utf-8")
    package = ROOT / "orangecontrib" / "transferembed"
    missing = [path.relative_to(package).as_posix() for path in package.rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py")
               and path.parent.name != "tutorials" and path.name not in layout]
    assert not missing, missing
