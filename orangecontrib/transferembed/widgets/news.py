"""What a widget's worker tells its widget, and how both widgets show it.

:class:`TaskHooks` are the engine's hooks on an Orange ``TaskState``: percent
and time left, and the stages (loading TensorFlow, converting a model),
notices and weights downloads as partial results. :class:`WorkerNewsMixin` is
the one handler of those partial results, for Transfer Embedding and Compare
Backbones alike, with the messages it shows. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import time

from AnyQt.QtCore import QTimer
from Orange.widgets.utils.concurrent import TaskState
from Orange.widgets.widget import Msg, OWWidget

from orangecontrib.transferembed.errors import check_cancelled
from orangecontrib.transferembed.pipeline.engine import Hooks

#: A stage that lasts longer than this shows its seconds, counting.
COUNT_AFTER_S = 2


def duration(seconds: float) -> str:
    """``12 s``, ``3 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class TaskHooks(Hooks):
    """The engine's hooks on an Orange ``TaskState``: percent, time left in the
    status line, and stages, notices and downloads as partial results. A stage
    ends (its message goes) when the images move again."""

    def __init__(self, state: TaskState):
        super().__init__(progress=self._progress, is_cancelled=state.is_interruption_requested,
                         download=self._download, status=self._stage,
                         notice=lambda text: state.set_partial_result(("notice", text)))
        self.state = state
        self.started: float | None = None
        self.in_stage = False

    def _stage(self, text: str) -> None:
        self.in_stage = True
        self.state.set_partial_result(("status", text))

    def _progress(self, done: int, total: int) -> None:
        self.state.set_progress_value(100 * done / max(total, 1))
        if self.in_stage and done:
            self.in_stage = False
            self.state.set_partial_result(("status", None))
        now = time.monotonic()
        if self.started is None or done == 0:
            self.started = now
            return
        left = (now - self.started) / done * (total - done)
        self.state.set_status(f"{done} of {total} images; about {duration(left)} left"
                              if done < total else "")

    def _download(self, done: int, total: int) -> None:
        check_cancelled(self.state.is_interruption_requested)
        self.state.set_partial_result(("download", done, total))


class WorkerNewsMixin:
    """The one ``on_partial_result`` of both widgets: the images found, a stage
    (its seconds counting while it lasts), a notice, a download's megabytes.

    A widget has a ``status_label`` and says what it does in :attr:`doing`
    (``"embedding"``); its ``Information`` and ``Warning`` groups derive from
    this mixin's, and it calls :meth:`end_news` when its task ends.
    """

    doing = "working"

    class Information(OWWidget.Information):
        stage = Msg("{}")
        downloading = Msg("Downloading weights... {}")

    class Warning(OWWidget.Warning):
        notices = Msg("{}")

    def on_partial_result(self, message: tuple) -> None:
        """News from the worker: the images found, a stage, a notice, a download."""
        kind, *values = message
        if kind == "found":
            self.status_label.setText(f"{values[0]}; {self.doing}...")
        elif kind == "status":
            self._show_stage(values[0])
        elif kind == "notice":
            self.Warning.notices(values[0])
        elif kind == "download":
            self._show_download(*values)

    def _show_stage(self, text: str | None) -> None:
        timer = self._stage_timer()
        timer.stop()
        self.Information.downloading.clear()
        if text is None:
            self.Information.stage.clear()
            return
        self.Information.stage(f"{text}...")
        self._stage_text, self._stage_started = text, time.monotonic()
        timer.start()

    def _stage_timer(self) -> QTimer:
        if getattr(self, "_stage_ticker", None) is None:
            self._stage_ticker = QTimer(self, interval=1000)
            self._stage_ticker.timeout.connect(self._stage_tick)
        return self._stage_ticker

    def _stage_tick(self) -> None:
        seconds = time.monotonic() - self._stage_started
        if seconds >= COUNT_AFTER_S:
            self.Information.stage(f"{self._stage_text}... {duration(seconds)}")

    def _show_download(self, done: int, total: int) -> None:
        self._stage_timer().stop()
        self.Information.stage.clear()
        mb = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        self.Information.downloading(mb)
        if total:
            self.progressBarSet(100 * done / total)

    def end_news(self) -> None:
        """The task ended (done, failed or cancelled): no stage or download is under way."""
        self._stage_timer().stop()
        self.Information.stage.clear()
        self.Information.downloading.clear()
