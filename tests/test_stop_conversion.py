"""A conversion that is no longer wanted is stopped within a second: its child process
ended and nothing of it left behind (no work folder, no stored model, no failure mark)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from orangecontrib.transferembed import EmbedConfig, embed
from orangecontrib.transferembed.errors import EmbeddingCancelled
from orangecontrib.transferembed.pipeline.cache import default_cache_dir
from orangecontrib.transferembed.runtimes import converted

WANTED_S = 1.0  #: the conversion is wanted this long, then cancelled
MARK = "runtimes.conversion import main"


def _converters() -> dict[int, str]:
    """This process's converter children: pid -> their command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and MARK in cmdline:
            found[int(entry.name)] = cmdline
    return found


class Watcher:
    """Records the converter children seen while a conversion runs."""

    def __init__(self):
        self.seen: dict[int, str] = {}
        self.first_seen: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self.stop.wait(0.05):
            found = _converters()
            if found and self.first_seen is None:
                self.first_seen = time.monotonic()
            self.seen.update(found)

    def cancel_after(self, seconds: float):
        """``is_cancelled`` for a conversion wanted ``seconds`` after its process started
        (however long the machine took to start it), and when that came."""
        until = {}

        def is_cancelled() -> bool:
            if self.first_seen is None:
                return False
            until.setdefault("t", self.first_seen + seconds)
            return time.monotonic() > until["t"]

        return is_cancelled, until

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def work_folders(self) -> list[Path]:
        return [Path(cmd.split("main(")[1].split("'")[1]) for cmd in self.seen.values()]


def _gone_within(seconds: float, watcher: Watcher) -> float:
    """Seconds until no converter child and none of their work folders is left
    (fails after ``seconds``)."""
    started = time.monotonic()

    def left() -> list:
        return [*_converters(), *(f for f in watcher.work_folders() if f.exists())]

    while left():
        assert time.monotonic() - started < seconds, left()
        time.sleep(0.02)
    return time.monotonic() - started


def _store_files() -> list[str]:
    folder = default_cache_dir() / "converted"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.own_store
def test_a_conversion_no_longer_wanted_is_stopped_within_a_second():
    config = EmbedConfig("ResNet50", weights=None, runtime="tflite")  # several seconds
    with Watcher() as watcher, pytest.raises(EmbeddingCancelled):
        is_cancelled, until = watcher.cancel_after(WANTED_S)
        converted.model_file(config, None, None, is_cancelled)
    stopped = time.monotonic() - until["t"]
    assert watcher.seen, "no converter process ran"
    assert _gone_within(1.0, watcher) + stopped < 1.0
    print(f"conversion stopped {stopped:.2f} s after it was cancelled")
    assert _store_files() == []  # no model, no "does not convert" mark
    assert not any(folder.exists() for folder in watcher.work_folders())


@pytest.mark.own_store
def test_a_cancelled_embedding_ends_its_conversion():
    pixels = np.zeros((2, 64, 64, 3), np.uint8)
    with Watcher() as watcher, pytest.raises(EmbeddingCancelled):
        is_cancelled, until = watcher.cancel_after(WANTED_S)
        embed(pixels, "InceptionV3", weights=None, runtime="tflite", cache=False,
              is_cancelled=is_cancelled)
    assert watcher.seen, "no converter process ran"
    assert time.monotonic() - until["t"] < 1.0  # the job gives up at once
    gone = _gone_within(1.0, watcher) + (time.monotonic() - until["t"])
    print(f"the converter ended {gone:.2f} s after the embedding was cancelled")
    assert gone < 1.0
    assert _store_files() == []
    assert not any(folder.exists() for folder in watcher.work_folders())
