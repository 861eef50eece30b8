"""What a run writes: the embeddings as a npy pair or CSV, and the skipped list."""

from __future__ import annotations

import sys
from pathlib import Path

from ..writers import (
    label_column,
    skipped_path,
    write_csv,
    write_npy_pair,
    write_skipped,
)
from .args import fail

_SHOWN_SKIPS = 10


def write_outputs(result, out_dir: Path, args) -> None:
    """The embeddings, then the skipped list (last); nothing at all if none embedded."""
    name = args.save_name
    if len(result):
        if args.save_csv:
            write_csv(result, out_dir, name)
        else:
            write_npy_pair(result, out_dir, name)
    report_skipped(result.skipped, out_dir, name)
    if not len(result):
        raise fail(f"none of the {len(result.source)} images could be embedded; see "
                   f"{skipped_path(out_dir, name)}")
    if not args.quiet:
        print(f"Data shape {result.embeddings.shape}, Labels shape "
              f"{label_column(result.labels, len(result)).shape}")


def report_skipped(skipped, out_dir: Path, name: str) -> None:
    """Name skipped images on stderr and list them all in ``<name>_skipped.csv``."""
    stale = skipped_path(out_dir, name)
    if not skipped:
        stale.unlink(missing_ok=True)
        return
    path = write_skipped(skipped, out_dir, name)
    for item in skipped[:_SHOWN_SKIPS]:
        print(f"Skipped {item.item}: {item.reason}", file=sys.stderr)
    more = f" ({len(skipped) - _SHOWN_SKIPS} more)" if len(skipped) > _SHOWN_SKIPS else ""
    print(f"Skipped {len(skipped)} image(s){more}; all are listed in {path}", file=sys.stderr)
