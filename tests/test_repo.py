"""The repository keeps its promises: README commands match CI, code is ruff clean."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL = 'pip install ".[test]"'
TEST = "python -m pytest tests"


def test_readme_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert INSTALL in readme and TEST in readme
    assert INSTALL in ci and TEST in ci


def test_no_namespace_init():
    assert not (ROOT / "orangecontrib" / "__init__.py").exists()


LINT = "ruff check orangecontrib tests bench"


def test_ci_runs_ruff_as_a_step_of_its_own():
    """ruff is a CI step before the tests, so a missing or unclean ruff fails the run
    (``set -e``) instead of being skipped inside pytest."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "set -euo pipefail" in ci
    assert LINT in ci and ci.index(LINT) < ci.index(TEST)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert LINT in readme
