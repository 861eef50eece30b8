"""The command line's view of a job: tqdm bars, stage lines and notices on stderr."""

from __future__ import annotations

import sys
import time

from ..pipeline.engine import Hooks


class Reporter:
    """Bars for the embedding and a weights download, and one line per stage or notice
    (loading TensorFlow and the model among them). The bar's rate counts from the run's start."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = self.download = None
        self.started = time.time()

    def __enter__(self) -> Reporter:
        self.started = time.time()
        return self

    def __exit__(self, *exc) -> None:
        for bar in (self.download, self.bar):
            if bar is not None:
                bar.close()

    def hooks(self) -> Hooks:
        return Hooks(progress=self.progress, download=self.download_progress,
                     status=self.status, notice=self.notice)

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def status(self, text: str) -> None:
        if not self.quiet:
            self._write(f"{text} ...")

    def notice(self, text: str) -> None:
        self._write(f"transferembed: note: {text}")  # shown even with --quiet

    def progress(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="Generating embeddings", file=sys.stderr,
                            ascii=" #", dynamic_ncols=True, mininterval=0,
                            bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}, {rate_fmt}]")
            # from the run's start, not the first batch's end: no false rate
            self.bar.start_t = self.bar.last_print_t = self.started
        self.bar.update(done - self.bar.n)

    def download_progress(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.download is None:
            from tqdm import tqdm

            self.download = tqdm(total=total or None, desc="Downloading weights", unit="B",
                                 unit_scale=True, file=sys.stderr)
        self.download.update(done - self.download.n)
