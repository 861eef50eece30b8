"""A comparison's outputs: the table printed, ``<name>_compare.csv`` and
``<name>_compare.png`` (a bar chart of CA with its spread over the folds)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..comparison import Score, best, ranked
from ..writers import write_atomically

COLUMNS = ("backbone", "layer", "features", "CA", "AUC", "F1", "seconds", "CA_sd", "scorer",
           "best", "note")
#: The columns of the printed table (the scorer is said once, above it).
SHOWN = COLUMNS[:8]
CACHED = "cached"


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _note(score: Score) -> str:
    if score.error:
        return score.error
    return f"{CACHED}: every image came from the cache" if score.cached else ""


def rows(scores: list[Score]) -> list[dict]:
    """One row per candidate, best CA first; the best marked with ``*``; a candidate
    served from the cache noted as such (its seconds are not an embedding's)."""
    top = best(scores)
    return [{"backbone": s.candidate.model, "layer": s.candidate.layer,
             "features": "" if s.features is None else str(s.features),
             "CA": _number(s.ca), "AUC": _number(s.auc), "F1": _number(s.f1),
             "seconds": _number(s.seconds, 1), "CA_sd": _number(s.spread),
             "scorer": s.scorer, "best": "*" if s is top else "", "note": _note(s)}
            for s in ranked(scores)]


def table(scores: list[Score]) -> str:
    """The rows as aligned text, under a line that names the scorer; cached
    candidates show ``cached`` for their seconds."""
    lines = rows(scores)
    for row in lines:
        if row["note"].startswith(CACHED):
            row["seconds"], row["note"] = CACHED, ""
    widths = {c: max(len(c), *(len(r[c]) for r in lines)) for c in SHOWN}
    scorers = ", ".join(dict.fromkeys(s.scorer for s in scores))
    out = [f"Scored by cross-validation of: {scorers}",
           "  " + "  ".join(c.ljust(widths[c]) for c in SHOWN)]
    for row in lines:
        text = "  ".join(row[c].ljust(widths[c]) for c in SHOWN)
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


def chart(scores: list[Score]):
    """A horizontal bar chart of CA with its standard deviation over folds (clipped
    to 0..1), each value written right of the axis, clear of the error bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shown = [s for s in ranked(scores) if s.ca is not None][::-1]
    figure = Figure(figsize=(8, 1.3 + 0.45 * max(1, len(shown))), dpi=110)
    axes = figure.subplots()
    labels = [f"{s.candidate.label} ({s.features})" for s in shown]
    colours = ["#2E7D32" if s is best(scores) else "#90A4AE" for s in shown]
    spread = [s.spread or 0.0 for s in shown]
    below = [min(sd, s.ca) for s, sd in zip(shown, spread, strict=True)]
    above = [min(sd, 1.0 - s.ca) for s, sd in zip(shown, spread, strict=True)]
    axes.barh(labels, [s.ca for s in shown], xerr=[below, above], color=colours, capsize=3)
    axes.set_xlim(0, 1)
    for position, s in enumerate(shown):  # beyond the axis, where no bar reaches
        axes.annotate(f"{s.ca:.3f}", (1, position), xycoords=("axes fraction", "data"),
                      xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    axes.set_xlabel("classification accuracy (CA), mean and spread over folds")
    scorers = ", ".join(dict.fromkeys(s.scorer for s in scores))
    axes.set_title(f"Representations compared ({scorers})", fontsize=10)
    figure.tight_layout()
    return figure


def write_chart(scores: list[Score], folder: str | os.PathLike, name: str) -> Path:
    """:func:`chart` as ``<name>_compare.png``."""
    figure = chart(scores)
    path = Path(folder) / f"{name}_compare.png"
    write_atomically([path], lambda file: figure.savefig(file, format="png"))
    return path
