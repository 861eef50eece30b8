"""A comparison's outputs: the table printed, ``<name>_compare.csv`` and
``<name>_compare.png`` (a bar chart of CA with its spread over the folds)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..comparison import Score, best, ranked
from ..writers import write_atomically

COLUMNS = ("backbone", "layer", "features", "CA", "AUC", "F1", "seconds", "CA_sd", "best",
           "note")


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def rows(scores: list[Score]) -> list[dict]:
    """One row per candidate, best CA first; the best marked with ``*``."""
    top = best(scores)
    return [{"backbone": s.candidate.model, "layer": s.candidate.layer,
             "features": "" if s.features is None else str(s.features),
             "CA": _number(s.ca), "AUC": _number(s.auc), "F1": _number(s.f1),
             "seconds": _number(s.seconds, 1), "CA_sd": _number(s.spread),
             "best": "*" if s is top else "", "note": s.error or ""}
            for s in ranked(scores)]


def table(scores: list[Score]) -> str:
    """The rows as aligned text."""
    lines = rows(scores)
    shown = COLUMNS[:-2]
    widths = {c: max(len(c), *(len(r[c]) for r in lines)) for c in shown}
    out = ["  " + "  ".join(c.ljust(widths[c]) for c in shown)]
    for row in lines:
        text = "  ".join(row[c].ljust(widths[c]) for c in shown)
        out.append(("* " if row["best"] else "  ") + text + (f"  {row['note']}"
                                                            if row["note"] else ""))
    return "\n".join(out)


def write_scores(scores: list[Score], folder: str | os.PathLike, name: str) -> Path:
    path = Path(folder) / f"{name}_compare.csv"

    def write(file):
        writer = csv.DictWriter(file, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows(scores))

    write_atomically([path], write, mode="w")
    return path


def write_chart(scores: list[Score], folder: str | os.PathLike, name: str) -> Path:
    """A horizontal bar chart of CA, with the standard deviation over folds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shown = [s for s in ranked(scores) if s.ca is not None][::-1]
    figure = Figure(figsize=(8, 1.3 + 0.45 * max(1, len(shown))), dpi=110)
    axes = figure.subplots()
    labels = [f"{s.candidate.label} ({s.features})" for s in shown]
    colours = ["#2E7D32" if s is best(scores) else "#90A4AE" for s in shown]
    axes.barh(labels, [s.ca for s in shown], xerr=[s.spread for s in shown],
              color=colours, capsize=3)
    for position, s in enumerate(shown):
        axes.text(min(s.ca + (s.spread or 0) + 0.01, 1.0), position, f"{s.ca:.3f}",
                  va="center", fontsize=8)
    axes.set_xlim(0, 1.08)
    axes.set_xlabel("classification accuracy (CA), mean and spread over folds")
    axes.set_title("Representations compared (logistic regression)", fontsize=10)
    figure.tight_layout()
    path = Path(folder) / f"{name}_compare.png"
    write_atomically([path], lambda file: figure.savefig(file, format="png"))
    return path
