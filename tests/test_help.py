"""The widgets' help, rendered by setup.py: its link to the offline-weights page stays on
this machine (the page comes with the help), where other links go to the online docs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_offline_weights_link_is_local(tmp_path):
    pytest.importorskip("markdown")
    spec = importlib.util.spec_from_file_location("project_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    written = setup.render_help(tmp_path)
    page = tmp_path / "widgets" / "transfer-embedding.html"
    assert page in written and tmp_path / "offline-weights.html" in written
    links = re.findall(r'href="([^"]+)"', page.read_text(encoding="utf-8"))
    offline = [link for link in links if "offline-weights" in link]
    assert offline == ["../offline-weights.html"]
    assert (page.parent / offline[0]).resolve() == (tmp_path / "offline-weights.html")
    other = re.findall(r'href="([^"]+)"', (tmp_path / "offline-weights.html").read_text())
    assert all(link.startswith(("https://", "#", "mailto:")) for link in other), other
