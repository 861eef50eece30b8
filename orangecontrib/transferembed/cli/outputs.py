"""What a run writes: the embeddings as a npy pair, CSV or Orange tab file, and the
skipped list; each named on the terminal by its full path."""

from __future__ import annotations

import sys
from pathlib import Path

from ..writers import (
    label_column,
    skipped_path,
    write_csv,
    write_npy_pair,
    write_skipped,
    write_tab,
)
from .args import fail

_SHOWN_SKIPS = 10


def write_outputs(result, out_dir: Path, args) -> list[Path]:
    """The embeddings, then the skipped list (last); nothing at all if none embedded.
    Returns the files written, and names each (unless ``--quiet``)."""
    name, written = args.save_name, []
    save_tab = getattr(args, "save_tab", False)
    if len(result):
        if args.save_csv:
            written.append(write_csv(result, out_dir, name))
        if save_tab:
            written += write_tab(result, out_dir, name)
        if not (args.save_csv or save_tab):
            written += write_npy_pair(result, out_dir, name)
    skipped = report_skipped(result.skipped, out_dir, name)
    written += [skipped] if skipped is not None else []
    if not len(result):
        raise fail(f"none of the {len(result.source)} images could be embedded; see "
                   f"{skipped_path(out_dir, name)}")
    if not args.quiet:
        print(f"Data shape {result.embeddings.shape}, Labels shape "
              f"{label_column(result.labels, len(result)).shape}")
        name_outputs(written)
    return written


def name_outputs(paths) -> None:
    """One line per file written, by its full path."""
    for path in paths:
        print(f"Wrote {Path(path).resolve()}")


def report_skipped(skipped, out_dir: Path, name: str) -> Path | None:
    """Name skipped images on stderr and list them all in ``<name>_skipped.csv`` (its
    path; None, and an old list removed, where none was skipped)."""
    stale = skipped_path(out_dir, name)
    if not skipped:
        stale.unlink(missing_ok=True)
        return None
    path = write_skipped(skipped, out_dir, name)
    for item in skipped[:_SHOWN_SKIPS]:
        print(f"Skipped {item.item}: {item.reason}", file=sys.stderr)
    more = f" ({len(skipped) - _SHOWN_SKIPS} more)" if len(skipped) > _SHOWN_SKIPS else ""
    print(f"Skipped {len(skipped)} image(s){more}; all are listed in {path}", file=sys.stderr)
    return path
