"""The parts Transfer Embedding and Compare Backbones share. No widget lives here.

- the Images panel (:class:`ImageSourceMixin`): where the images come from, its
  settings and controls, rows of recent paths (:class:`PathRow`), and what the
  worker builds from them (:class:`SourceRequest`, labelled from a table's class);
- the Options panel (:class:`EmbeddingOptionsMixin`): batch size, resize,
  precision and the cache;
- Apply, Apply Automatically and Cancel (:class:`RunControlMixin`): a change of
  setting or Cancel stops a run whose result is no longer wanted;
- text for backbones and their weights (:func:`backbone_text`, :func:`weights_where`),
  an error in the GUI's words (:func:`gui_message`), the source's summary;
- :class:`LayerLister`, which lists a backbone's layers in the background.

The worker's news (stages, notices, downloads) are :mod:`.news`'s. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from AnyQt.QtCore import Qt
from AnyQt.QtWidgets import QComboBox, QFileDialog, QStackedWidget, QStyle
from Orange.data import Table, Variable
from Orange.widgets import gui
from Orange.widgets.settings import ContextSetting, Setting
from Orange.widgets.utils.concurrent import TaskState
from Orange.widgets.utils.itemmodels import VariableListModel
from Orange.widgets.widget import Msg, OWWidget

from orangecontrib.transferembed.models.registry import Backbone
from orangecontrib.transferembed.models.weights import find_imagenet_file
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


def weights_where(backbone: Backbone, alpha: float) -> str:
    """Whether the ImageNet weights at width ``alpha`` are on this machine:
    ``2.1 MB, on this machine`` or ``17.2 MB to download``."""
    alpha = backbone.usable_alpha(alpha)
    here = find_imagenet_file(backbone, alpha) is not None
    return f"{backbone.download_size(alpha):g} MB" + (", on this machine" if here
                                                     else " to download")


def backbone_text(backbone: Backbone, alpha: float = 1.0) -> str:
    """A backbone as the combo box shows it, at width ``alpha``; a foundation encoder
    with its family. Each says whether its weights are on this machine."""
    if backbone.foundation:
        return f"{backbone.name} · {backbone.family} foundation encoder " \
               f"({backbone.features()} features, ≈{weights_where(backbone, 1.0)})"
    return f"{backbone.name} ({backbone.features(backbone.usable_alpha(alpha))} features, " \
           f"{weights_where(backbone, alpha)})"


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


@dataclass
class SourceRequest:
    """What the Images panel asks the worker to build, or why it cannot."""

    make: Callable[[Callable[[], bool]], Source] | None = None  #: called with is_cancelled
    data: Table | None = None  #: the input table the source comes from
    missing: str | None = None  #: what to choose, in words
    no_image_column: bool = False  #: the input table has no column of image paths
    unused_input: str | None = None  #: the source used instead of the input table, in words


def labelled_table_source(data: Table, column: Variable) -> Source:
    """The images named in ``column``, labelled by the table's class (its values as
    text; ``""`` where missing), as Import Images' ``category`` is."""
    source = table_source(data, column)
    class_var = data.domain.class_var
    if class_var is not None and class_var.is_discrete:
        codes = data.get_column(class_var)
        source.labels = np.array(["" if np.isnan(code) else class_var.values[int(code)]
                                  for code in codes])
    return source


class ImageSourceMixin:
    """The Images box: where the images come from, as settings and controls.

    A widget calls :meth:`setup_source_box`, :meth:`set_source_data` from its
    input handler, and :meth:`source_request` to get what its worker builds
    (and :meth:`show_source_problem` to say what is missing). A table on the
    input replaces a file source only where none was chosen.
    """

    class Error(OWWidget.Error):
        no_image_column = Msg("The input data has no column with image paths "
                              "(a text or categorical column, best marked type=image).")

    class Information(OWWidget.Information):
        choose_source = Msg("{}")
        input_unused = Msg("The input data is not used: the images come from the {} "
                           "chosen under From. Choose From: Input data to use it.")

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
        self.set_source_kind({"folder_path": "folder", "csv_path": "csv"}.get(attr, "npy"))
        self._on_source_change()

    def set_source_kind(self, kind: str) -> None:
        """Take images from ``kind`` (one of :data:`SOURCES`): the From combo and the
        page below it follow."""
        self.source_index = SOURCES.index(kind)
        self._show_source_page()

    def _file_source_chosen(self) -> bool:
        return {"folder": self.folder_path, "csv": self.csv_path,
                "npy": self.npy_data_path}.get(self.source, "") != ""

    def set_source_data(self, data: Table | None) -> None:
        """The input table: its image columns (the chosen one kept per domain). The
        source switches to it unless a folder or file was chosen (as a reopened
        workflow has it): then a message says that the input is not used."""
        self.closeContext()
        self.data = data
        columns = image_columns(data.domain) if data is not None else []
        self.columns_model[:] = columns
        self.image_column = columns[0] if columns else None
        if data is not None:
            if not self._file_source_chosen():
                self.set_source_kind("table")
            self.openContext(data.domain)

    def source_request(self, labelled: bool = False) -> SourceRequest:
        """What the worker calls (with ``is_cancelled``) to build the source, or what is
        missing. ``labelled``: only a table's rows that have a class, labelled by it."""
        if self.source == "table":
            data = self.data
            if data is None or not len(data):
                return SourceRequest()
            if self.image_column is None:
                return SourceRequest(no_image_column=True)
            if labelled and data.domain.class_var is not None:
                data = data[~np.isnan(data.get_column(data.domain.class_var))]
            return SourceRequest(partial(_table_source, data, self.image_column), data)
        unused = SOURCE_NAMES[SOURCES.index(self.source)].lower() \
            if self.data is not None else None
        paths = {"folder": (self.folder_path, "an image folder"),
                 "csv": (self.csv_path, "a CSV file of label,path rows"),
                 "npy": (self.npy_data_path, "a npy file of images")}
        path, what = paths[self.source]
        if not path:
            return SourceRequest(missing=f"Choose {what}.", unused_input=unused)
        labels = self.resolve_path(self.npy_labels_path) if self.npy_labels_path else None
        shape = (self.npy_height, self.npy_width, self.npy_channels)
        return SourceRequest(partial(_open, self.source, self.resolve_path(path), labels,
                                     shape), unused_input=unused)

    def show_source_problem(self, request: SourceRequest) -> None:
        """Say what the Images panel lacks (nothing if it lacks nothing), and whether
        the input table goes unused."""
        self.Information.input_unused(request.unused_input, shown=bool(request.unused_input))
        if request.no_image_column:
            self.Error.no_image_column()
        elif request.missing:
            self.Information.choose_source(request.missing)

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


def _table_source(data: Table, column: Variable, _is_cancelled) -> Source:
    return labelled_table_source(data, column)


def _open(kind: str, path: str, labels, shape, is_cancelled) -> Source:
    return open_source(kind, path, labels, shape, is_cancelled=is_cancelled)


def build_source(make_source: Callable, state: TaskState) -> Source:
    """Build the source in the worker, and tell the widget what was found."""
    source = make_source(state.is_interruption_requested)
    state.set_partial_result(("found", source_summary(source)))
    return source


class RunControlMixin:
    """Apply, Apply Automatically and Cancel. Cancel is enabled only while a run is
    under way. A run that is no longer wanted (Cancel, a changed setting, the widget
    removed) is cancelled at once, so that the engine stops its work, a model's
    conversion included. A widget has ``auto_apply``, a deferred ``commit``,
    ``status_label`` and ``Information.cancelled``, and ends its runs with
    :meth:`run_ended`."""

    def setup_run_buttons(self, cancel: Callable[[], None]) -> None:
        """Cancel (calling ``cancel``, which calls :meth:`cancel_run`) and Apply."""
        self.cancel_button = gui.button(self.buttonsArea, self, "Cancel", callback=cancel,
                                        autoDefault=False)
        self.cancel_button.setIcon(
            self.style().standardIcon(QStyle.StandardPixmap.SP_DialogCancelButton))
        self.cancel_button.setEnabled(False)
        self.apply_box = gui.auto_apply(self.buttonsArea, self, "auto_apply")

    def start_run(self, task: Callable, *args) -> None:
        self.cancel_button.setEnabled(True)
        self.start(task, *args)

    def run_ended(self) -> None:
        """The run finished, failed or was cancelled."""
        self.cancel_button.setEnabled(False)
        self.end_news()

    def cancel_run(self) -> None:
        """The Cancel button: stop the run; Apply (or ticking Apply Automatically)
        runs it again."""
        self.cancel()
        self.run_ended()
        self.Information.cancelled()
        self.status_label.setText("Cancelled.")
        self.commit.dirty = True
        self.apply_box.button.setText("Apply")
        self.apply_box.button.setEnabled(True)

    def settings_changed(self) -> None:
        """A setting changed: a run under way would give what is no longer asked for,
        so it stops now, also when Apply Automatically is off."""
        if self.task is not None:
            self.cancel()
            self.run_ended()
            self.status_label.setText("Settings changed: press Apply.")
        self.commit.deferred()


RESIZE_LABELS = {"crop": "Centre crop", "stretch": "Stretch (as the original)"}
PRECISION_LABELS = {"fp32": "Exact", "int8": "Fast (int8)"}
PRECISION_COST = {  # exact (fp32) needs no word
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
        self.precision_cost.setVisible(self.precision in PRECISION_COST)


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
        from orangecontrib.transferembed.jobs import layers

        watcher = self._watcher_class(self._executor.submit(layers, model, alpha))
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
