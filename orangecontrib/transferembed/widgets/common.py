"""What Transfer Embedding and Compare Backbones share: the Images panel (its
settings and controls), path rows with recent paths, the worker's hooks, and
how an error becomes a message in the GUI's words. No widget lives here.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial

from AnyQt.QtCore import Qt
from AnyQt.QtWidgets import QComboBox, QFileDialog, QStackedWidget
from Orange.data import Table
from Orange.widgets import gui
from Orange.widgets.settings import ContextSetting, Setting
from Orange.widgets.utils.concurrent import TaskState
from Orange.widgets.utils.itemmodels import VariableListModel

from orangecontrib.transferembed.errors import EmbeddingCancelled
from orangecontrib.transferembed.models.registry import Backbone
from orangecontrib.transferembed.models.weights import find_imagenet_file
from orangecontrib.transferembed.pipeline.engine import Hooks
from orangecontrib.transferembed.pipeline.sources import Source, open_source
from orangecontrib.transferembed.widgets.table import image_columns, table_source
from orangecontrib.transferembed.writers import label_texts

#: Source kinds, in the order of the "From" combo.
SOURCES = ("table", "folder", "csv", "npy")
SOURCE_NAMES = ("Input data", "Folder", "CSV file", "npy files")
SOURCE_HINTS = ("A column of image paths (Import Images' output, say).",
                "One subfolder per class.",
                "Rows of label,path; paths relative to the CSV file.",
                "Flattened images (rows of height × width × channels values), and labels.")
MAX_RECENT = 10


class Choice:
    """An index view of a text setting, for combo boxes, so that the setting
    itself is stored by name."""

    def __init__(self, setting: str, choices: tuple[str, ...]):
        self.setting, self.choices = setting, choices

    def __get__(self, widget, owner=None):
        if widget is None:
            return self
        value = getattr(widget, self.setting)
        return self.choices.index(value) if value in self.choices else -1

    def __set__(self, widget, index: int) -> None:
        setattr(widget, self.setting, self.choices[index])


def backbone_text(backbone: Backbone, alpha: float = 1.0) -> str:
    """A backbone as the combo box shows it, at width ``alpha``; a foundation encoder
    with its family, and marked where its preset is on this machine."""
    alpha = alpha if alpha in backbone.alphas() else 1.0
    if backbone.foundation:
        here = ", here" if find_imagenet_file(backbone) is not None else ""
        return f"{backbone.name} · {backbone.family} foundation encoder " \
               f"({backbone.features()} features, ≈{backbone.download_mb:.0f} MB{here})"
    return f"{backbone.name} ({backbone.features(alpha)} features, " \
           f"{backbone.download_size(alpha):g} MB)"


def weights_text(backbone: Backbone, alpha: float) -> str:
    """Where the published weights are: on this machine, or to download."""
    if backbone.foundation:
        found = find_imagenet_file(backbone)
        where = f"on this machine in {found}" if found else "downloaded once"
        return f"keras-hub preset {backbone.name} (≈{backbone.download_mb:.0f} MB, {where})"
    name = backbone.weights_filename(alpha)
    if find_imagenet_file(backbone, alpha) is not None:
        return f"ImageNet weights {name} ({backbone.download_size(alpha):g} MB, on this machine)"
    return f"ImageNet weights {name} ({backbone.download_size(alpha):g} MB, downloaded once)"


def gui_message(exc: BaseException) -> str:
    """An error as the widget says it: in the words of its controls."""
    return getattr(exc, "gui", None) or str(exc)


def source_summary(source: Source) -> str:
    """``240 images in 6 classes``."""
    count = f"{len(source)} image{'s' * (len(source) != 1)}"
    if source.labels is None:
        return count
    classes = {text for text in label_texts(source.labels) if text}
    return f"{count} in {len(classes)} class{'es' * (len(classes) != 1)}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class TaskHooks(Hooks):
    """The engine's hooks on an Orange ``TaskState``: percent, time left in the
    status line, and stages, notices and downloads as partial results."""

    def __init__(self, state: TaskState):
        super().__init__(progress=self._progress, is_cancelled=state.is_interruption_requested,
                         download=self._download,
                         status=lambda text: state.set_partial_result(("status", text)),
                         notice=lambda text: state.set_partial_result(("notice", text)))
        self.state = state
        self.started: float | None = None

    def _progress(self, done: int, total: int) -> None:
        self.state.set_progress_value(100 * done / max(total, 1))
        now = time.monotonic()
        if self.started is None or done == 0:
            self.started = now
            return
        left = (now - self.started) / done * (total - done)
        self.state.set_status(f"{done} of {total} images; about {_duration(left)} left"
                              if done < total else "")

    def _download(self, done: int, total: int) -> None:
        if self.state.is_interruption_requested():
            raise EmbeddingCancelled()
        self.state.set_partial_result(("download", done, total))


class PathRow:
    """A combo of recent paths with a "..." button, for one text setting."""

    def __init__(self, widget, parent, attr: str, recent_attr: str, caption: str,
                 file_filter: str | None, chosen: Callable[[str, str], None],
                 label: str | None = None):
        self.widget, self.attr, self.recent_attr = widget, attr, recent_attr
        self.caption, self.file_filter, self.chosen = caption, file_filter, chosen
        self.box = gui.hBox(parent)
        if label:
            gui.widgetLabel(self.box, label)
        self.combo = QComboBox(minimumContentsLength=20, sizeAdjustPolicy=(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon))
        self.combo.activated.connect(lambda index: self.use(self.combo.itemText(index)))
        self.box.layout().addWidget(self.combo)
        gui.button(self.box, widget, "...", width=32, autoDefault=False, callback=self.browse)
        self.fill()

    def fill(self) -> None:
        current = getattr(self.widget, self.attr)
        paths = [current] if current else []
        paths += [p for p in getattr(self.widget, self.recent_attr) if p != current]
        self.combo.clear()
        self.combo.addItems(paths)
        self.combo.setCurrentIndex(0 if current else -1)

    def browse(self) -> None:
        start = getattr(self.widget, self.attr) \
            or next(iter(getattr(self.widget, self.recent_attr)), "") or os.path.expanduser("~")
        if self.file_filter is None:
            path = QFileDialog.getExistingDirectory(self.widget, self.caption, start)
        else:
            path, _ = QFileDialog.getOpenFileName(self.widget, self.caption, start,
                                                  self.file_filter)
        if path:
            self.use(path)

    def use(self, path: str) -> None:
        """Take ``path``, remember it among the recent ones, and tell the widget."""
        setattr(self.widget, self.attr, path)
        recent = [path] + [p for p in getattr(self.widget, self.recent_attr) if p != path]
        setattr(self.widget, self.recent_attr, recent[:MAX_RECENT])
        self.fill()
        self.chosen(self.attr, path)


class ImageSourceMixin:
    """The Images box: where the images come from, as settings and controls.

    A widget calls :meth:`setup_source_box`, :meth:`set_source_data` from its
    input handler, and :meth:`source_maker` to get what its worker builds.
    """

    source = Setting("table")
    folder_path = Setting("", schema_only=True)
    csv_path = Setting("", schema_only=True)
    npy_data_path = Setting("", schema_only=True)
    npy_labels_path = Setting("", schema_only=True)
    npy_height = Setting(90)
    npy_width = Setting(160)
    npy_channels = Setting(3)
    recent_folders: list[str] = Setting([])
    recent_csv: list[str] = Setting([])
    recent_npy: list[str] = Setting([])
    image_column = ContextSetting(None)

    source_index = Choice("source", SOURCES)

    def setup_source_box(self, on_change: Callable[[], None]) -> None:
        self._on_source_change = on_change
        self.data: Table | None = None
        box = gui.vBox(self.controlArea, "Images")
        gui.comboBox(box, self, "source_index", label="From:", items=list(SOURCE_NAMES),
                     orientation=Qt.Orientation.Horizontal, callback=self._source_kind_changed)
        self.source_pages = QStackedWidget()
        box.layout().addWidget(self.source_pages)
        pages = [gui.vBox(None, spacing=2) for _ in SOURCES]
        for page, hint in zip(pages, SOURCE_HINTS, strict=True):
            gui.widgetLabel(page, hint).setWordWrap(True)
        self.columns_model = VariableListModel(placeholder="(none)")
        gui.comboBox(pages[0], self, "image_column", label="Image column:",
                     orientation=Qt.Orientation.Horizontal, model=self.columns_model,
                     callback=on_change)
        chosen = self._path_chosen
        npy_filter = "NumPy arrays (*.npy);;All files (*)"
        self.path_rows = {
            "folder_path": PathRow(self, pages[1], "folder_path", "recent_folders",
                                   "Image folder", None, chosen, "Folder:"),
            "csv_path": PathRow(self, pages[2], "csv_path", "recent_csv", "CSV file",
                                "CSV files (*.csv *.txt);;All files (*)", chosen, "File:"),
            "npy_data_path": PathRow(self, pages[3], "npy_data_path", "recent_npy", "Images",
                                     npy_filter, chosen, "Images:"),
            "npy_labels_path": PathRow(self, pages[3], "npy_labels_path", "recent_npy",
                                       "Labels", npy_filter, chosen, "Labels:"),
        }
        shape_box = gui.hBox(pages[3])
        for attr, label in (("npy_height", "Height:"), ("npy_width", "Width:"),
                            ("npy_channels", "Channels:")):
            gui.spin(shape_box, self, attr, 1, 100000, label=label, callback=on_change,
                     controlWidth=64)
        for page in pages:
            self.source_pages.addWidget(page)
        self._show_source_page()

    def _show_source_page(self) -> None:
        """Show the chosen page, as tall as itself (a stack keeps the tallest page's
        height otherwise: an empty gap under a one-row page)."""
        current = max(self.source_index, 0)
        self.source_pages.setCurrentIndex(current)
        self.source_pages.setFixedHeight(self.source_pages.widget(current).sizeHint().height())

    def _source_kind_changed(self) -> None:
        self._show_source_page()
        self._on_source_change()

    def _path_chosen(self, attr: str, _path: str) -> None:
        for row in self.path_rows.values():
            row.fill()  # the npy rows share one list of recent files
        self.source = {"folder_path": "folder", "csv_path": "csv"}.get(attr, "npy")
        self._show_source_page()
        self._on_source_change()

    def set_source_data(self, data: Table | None) -> None:
        """The input table: its image columns (the chosen one kept per domain), and the
        source switched to it."""
        self.closeContext()
        self.data = data
        columns = image_columns(data.domain) if data is not None else []
        self.columns_model[:] = columns
        self.image_column = columns[0] if columns else None
        if data is not None:
            self.source = "table"
            self._show_source_page()
            self.openContext(data.domain)

    def apply_again(self) -> None:
        """After a Cancel, let Apply run again, also with Apply Automatically on."""
        self.apply_box.button.setText("Apply")
        self.apply_box.button.setEnabled(True)

    def source_maker(self) -> tuple[Callable | None, Table | None, str | None]:
        """What the worker calls (with ``is_cancelled``) to build the source, the input
        table it comes from, and otherwise what is missing, in words."""
        if self.source == "table":
            if self.data is None or not len(self.data):
                return None, None, None
            if self.image_column is None:
                return None, None, "no image column"
            return (lambda is_cancelled: table_source(self.data, self.image_column)), \
                self.data, None
        paths = {"folder": (self.folder_path, "an image folder"),
                 "csv": (self.csv_path, "a CSV file of label,path rows"),
                 "npy": (self.npy_data_path, "a npy file of images")}
        path, what = paths[self.source]
        if not path:
            return None, None, f"Choose {what}."
        labels = self.resolve_path(self.npy_labels_path) if self.npy_labels_path else None
        shape = (self.npy_height, self.npy_width, self.npy_channels)
        return partial(_open, self.source, self.resolve_path(path), labels, shape), None, None

    def resolve_path(self, path: str) -> str:
        """A path as the workflow saved it: a relative one from the workflow's folder
        (so that a workflow and its images move together)."""
        base = self.workflowEnv().get("basedir")
        if base and not os.path.isabs(os.path.expanduser(path)):
            return os.path.join(base, path)
        return path

    def source_description(self) -> str:
        return {"table": "input data", "folder": self.folder_path, "csv": self.csv_path,
                "npy": self.npy_data_path}.get(self.source, "")


def _open(kind: str, path: str, labels, shape, is_cancelled) -> Source:
    return open_source(kind, path, labels, shape, is_cancelled=is_cancelled)


def build_source(make_source: Callable, state: TaskState) -> Source:
    """Build the source in the worker, and tell the widget what was found."""
    source = make_source(state.is_interruption_requested)
    state.set_partial_result(("found", source_summary(source)))
    return source


RESIZE_LABELS = {"crop": "Centre crop", "stretch": "Stretch (as the original)"}
PRECISION_LABELS = {"fp32": "Exact", "int8": "Fast (int8)"}
PRECISION_COST = {
    "fp32": "The reference features (fp32).",
    "int8": "A quantized model (converted once per backbone): features within a few percent "
            "of exact, and the same on every run. {speed}",
}
INT8_SPEED = {True: "On this CPU, 2 to 5 times faster.",
              False: "This CPU has no int8 dot-product instructions (VNNI): about as fast "
                     "as exact here.",
              None: "Faster on CPUs with int8 dot-product instructions (VNNI)."}


class EmbeddingOptionsMixin:
    """The Options box: batch size, resize policy, precision and the cache."""

    batch_size = Setting(32)
    resize_policy = Setting("crop")
    precision = Setting("fp32")
    use_cache = Setting(True)

    resize_index = Choice("resize_policy", tuple(RESIZE_LABELS))
    precision_index = Choice("precision", tuple(PRECISION_LABELS))

    def setup_options_box(self, on_change: Callable[[], None], extra=None):
        box = gui.vBox(self.controlArea, "Options")
        gui.spin(box, self, "batch_size", 1, 1024, label="Batch size:", callback=on_change,
                 controlWidth=64)
        if extra is not None:
            extra(box)
        gui.comboBox(box, self, "resize_index", label="Resize:",
                     orientation=Qt.Orientation.Horizontal, items=list(RESIZE_LABELS.values()),
                     callback=on_change)
        gui.comboBox(box, self, "precision_index", label="Precision:",
                     orientation=Qt.Orientation.Horizontal,
                     items=list(PRECISION_LABELS.values()),
                     callback=lambda: (self._show_precision_cost(), on_change()))
        self.precision_cost = gui.widgetLabel(box, "")
        self.precision_cost.setWordWrap(True)
        self._show_precision_cost()
        gui.checkBox(box, self, "use_cache", "Use cache (reuse embeddings of seen images)",
                     callback=on_change)
        return box

    def _show_precision_cost(self) -> None:
        from orangecontrib.transferembed.runtimes.base import int8_pays_off

        speed = INT8_SPEED[int8_pays_off()] if self.precision == "int8" else ""
        self.precision_cost.setText(PRECISION_COST.get(self.precision, "").format(speed=speed))


class LayerLister:
    """Lists a backbone's layers in a background thread (building the model needs
    TensorFlow), keeps them per backbone and width, and calls back in the GUI thread."""

    _known: dict[tuple[str, float], list] = {}

    def __init__(self, done: Callable[[str, float, list | None, str | None], None]):
        from concurrent.futures import ThreadPoolExecutor

        from Orange.widgets.utils.concurrent import FutureWatcher

        self._executor = ThreadPoolExecutor(1, thread_name_prefix="transferembed-layers")
        self._watcher_class = FutureWatcher
        self._watchers: list = []
        self.done = done

    def known(self, model: str, alpha: float) -> list | None:
        return self._known.get((model, alpha))

    def request(self, model: str, alpha: float) -> None:
        if (model, alpha) in self._known:
            self.done(model, alpha, self._known[(model, alpha)], None)
            return
        from orangecontrib.transferembed.api import list_layers

        watcher = self._watcher_class(self._executor.submit(list_layers, model, alpha))
        watcher.done.connect(lambda future: self._finished(model, alpha, future, watcher))
        self._watchers.append(watcher)

    def _finished(self, model: str, alpha: float, future, watcher) -> None:
        self._watchers.remove(watcher)
        try:
            layers = future.result()
        except Exception as exc:  # shown to the user, e.g. a broken TensorFlow
            self.done(model, alpha, None, gui_message(exc))
            return
        self._known[(model, alpha)] = layers
        self.done(model, alpha, layers, None)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
