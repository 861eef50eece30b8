"""The Transfer Embedding widget: images in, a table of CNN features out.

The embedding runs in a worker thread through :class:`ConcurrentWidgetMixin`;
the worker, :func:`run`, gets plain data and never touches Qt or the widget.
TensorFlow is imported there, on first use, never when the widget is created.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from AnyQt.QtCore import Qt
from AnyQt.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QStackedWidget,
    QStyle,
)
from Orange.data import Table
from Orange.widgets import gui
from Orange.widgets.settings import ContextSetting, DomainContextHandler, Setting
from Orange.widgets.utils.concurrent import ConcurrentWidgetMixin, TaskState
from Orange.widgets.utils.itemmodels import VariableListModel
from Orange.widgets.utils.widgetpreview import WidgetPreview
from Orange.widgets.widget import Input, Msg, Output, OWWidget

from orangecontrib.transferembed import engine
from orangecontrib.transferembed.backbones import BACKBONES, Backbone, get_backbone
from orangecontrib.transferembed.errors import (
    EmbeddingCancelled,
    SourceError,
    TransferEmbedError,
    WeightsUnavailableError,
)
from orangecontrib.transferembed.images import DEFAULT_RESIZE, RESIZE_POLICIES
from orangecontrib.transferembed.sources import Source, csv_source, folder_source, npy_source
from orangecontrib.transferembed.table import (
    embeddings_table,
    image_columns,
    skipped_table,
    table_source,
)

RESIZE_LABELS = {"crop": "Centre crop", "stretch": "Stretch (as the original)"}
#: Source kinds, in the order of the radio buttons.
SOURCES = ("table", "folder", "csv", "npy")
WEIGHTS = ("imagenet", "none", "file")
INPUT_SIZES = ("default", "native")
MAX_RECENT = 10
#: Skip reasons quoted in the warning.
SHOWN_REASONS = 3


@dataclass
class Outcome:
    """What the worker hands back to the widget."""

    embeddings: Table | None
    skipped: Table | None
    n_embedded: int
    n_skipped: int
    n_cached: int
    first_skipped: list[str]


def run(make_source: Callable[[], Source], config: engine.EmbedConfig, data: Table | None,
        state: TaskState) -> Outcome:
    """Embed the source that ``make_source`` builds; runs in the worker thread."""
    source = make_source()

    def download_progress(done: int, total: int) -> None:
        if state.is_interruption_requested():
            raise EmbeddingCancelled()
        state.set_partial_result((done, total))

    result = engine.run(
        source, config,
        progress=lambda done, total: state.set_progress_value(100 * done / max(total, 1)),
        is_cancelled=state.is_interruption_requested,
        download_progress=download_progress)
    return Outcome(embeddings_table(result, data), skipped_table(result, data),
                   len(result), len(result.skipped), result.n_cached,
                   [f"{Path(s.item).name}: {s.reason}" for s in result.skipped[:SHOWN_REASONS]])


class _Choice:
    """An index view of a text setting, for radio buttons and combo boxes,
    so that the setting itself is stored by name."""

    def __init__(self, setting: str, choices: tuple[str, ...]):
        self.setting, self.choices = setting, choices

    def __get__(self, widget, owner=None):
        if widget is None:
            return self
        value = getattr(widget, self.setting)
        return self.choices.index(value) if value in self.choices else -1

    def __set__(self, widget, index: int) -> None:
        setattr(widget, self.setting, self.choices[index])


def backbone_text(backbone: Backbone) -> str:
    """A backbone as the combo box shows it."""
    return (f"{backbone.name} ({backbone.feature_size} features, {backbone.input_size} px, "
            f"{backbone.download_mb:g} MB)")


class OWTransferEmbedding(OWWidget, ConcurrentWidgetMixin):
    name = "Transfer Embedding"
    description = "Embed images with an ImageNet-pretrained CNN from keras.applications."
    icon = "icons/transfer-embedding.svg"
    priority = 10
    category = "Transfer Embed"
    keywords = ("image embedding, transfer learning, cnn, deep learning, keras, imagenet, "
                "features, mobilenet, resnet, vgg")

    want_main_area = False
    resizing_enabled = False
    settings_version = 1
    settingsHandler = DomainContextHandler()

    class Inputs:
        images = Input("Images", Table)

    class Outputs:
        embeddings = Output("Embeddings", Table, default=True)
        skipped_images = Output("Skipped Images", Table)

    class Error(OWWidget.Error):
        no_image_column = Msg("The input data has no column with image paths "
                              "(a text or categorical column, best marked type=image).")
        source = Msg("{}")
        weights_unavailable = Msg("{}")
        settings = Msg("{}")
        failed = Msg("Embedding failed: {}")

    class Warning(OWWidget.Warning):
        images_skipped = Msg("{} of {} images skipped: {}")

    class Information(OWWidget.Information):
        downloading = Msg("Downloading weights... {}")
        choose_source = Msg("Choose {}.")
        cancelled = Msg("Cancelled.")

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
    model_name = Setting("MobileNet")
    alpha = Setting(1.0)
    weights = Setting("imagenet")
    weights_path = Setting("", schema_only=True)
    recent_weights: list[str] = Setting([])
    batch_size = Setting(32)
    input_size = Setting("default")
    resize = Setting(DEFAULT_RESIZE)
    use_cache = Setting(True)
    auto_apply = Setting(True)

    source_index = _Choice("source", SOURCES)
    weights_index = _Choice("weights", WEIGHTS)
    input_size_index = _Choice("input_size", INPUT_SIZES)
    resize_index = _Choice("resize", RESIZE_POLICIES)
    model_index = _Choice("model_name", tuple(BACKBONES))

    def __init__(self):
        OWWidget.__init__(self)
        ConcurrentWidgetMixin.__init__(self)
        if self.model_name.lower() in (name.lower() for name in BACKBONES):
            self.model_name = get_backbone(self.model_name).name  # as a script may spell it
        self.data: Table | None = None
        self._path_combos: dict[str, QComboBox] = {}
        self._setup_source_box()
        self._setup_model_box()
        self._setup_options_box()
        self.status_label = gui.widgetLabel(self.controlArea, "Nothing embedded yet.")
        self.cancel_button = gui.button(
            self.buttonsArea, self, "Cancel", callback=self.cancel_embedding, autoDefault=False)
        self.cancel_button.setIcon(
            self.style().standardIcon(QStyle.StandardPixmap.SP_DialogCancelButton))
        self.cancel_button.setEnabled(False)
        gui.auto_apply(self.buttonsArea, self, "auto_apply")
        self._update_model_controls()
        if self.source != "table":  # a workflow's own source: embed on opening
            self.commit.now()

    # --- the GUI -------------------------------------------------------------------------

    def _setup_source_box(self):
        box = gui.vBox(self.controlArea, "Images")
        gui.comboBox(box, self, "source_index", label="From:",
                     orientation=Qt.Orientation.Horizontal, callback=self._source_changed,
                     items=["Input data", "Image folder (one subfolder per class)",
                            "CSV file of label,path rows", "npy pair: images and labels"])
        self.source_pages = QStackedWidget()
        box.layout().addWidget(self.source_pages)
        table_page, folder_page, csv_page, npy_page = (gui.vBox(None) for _ in SOURCES)
        self.columns_model = VariableListModel(placeholder="(none)")
        gui.comboBox(table_page, self, "image_column", label="Image column:",
                     orientation=Qt.Orientation.Horizontal, model=self.columns_model,
                     callback=self._settings_changed)
        self._path_row(folder_page, "folder_path", "recent_folders", "Image folder",
                       label="Folder:")
        self._path_row(csv_page, "csv_path", "recent_csv", "CSV file",
                       "CSV files (*.csv *.txt);;All files (*)", "File:")
        npy_filter = "NumPy arrays (*.npy);;All files (*)"
        self._path_row(npy_page, "npy_data_path", "recent_npy", "Images", npy_filter, "Images:")
        self._path_row(npy_page, "npy_labels_path", "recent_npy", "Labels", npy_filter,
                       "Labels:")
        shape_box = gui.hBox(npy_page)
        for attr, label in (("npy_height", "Height:"), ("npy_width", "Width:"),
                            ("npy_channels", "Channels:")):
            gui.spin(shape_box, self, attr, 1, 100000, label=label,
                     callback=self._settings_changed, controlWidth=64)
        for page in (table_page, folder_page, csv_page, npy_page):
            page.layout().addStretch(1)
            self.source_pages.addWidget(page)
        self.source_pages.setCurrentIndex(max(self.source_index, 0))

    def _path_row(self, parent, attr: str, recent_attr: str, caption: str,
                  file_filter: str | None = None, label: str | None = None):
        """A combo of recent paths with a browse button; ``file_filter`` None: a folder."""
        row = gui.hBox(parent)
        if label:
            gui.widgetLabel(row, label)
        combo = QComboBox(minimumContentsLength=24, sizeAdjustPolicy=(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon))
        combo.activated.connect(lambda index: self._set_path(attr, recent_attr,
                                                             combo.itemText(index)))
        row.layout().addWidget(combo)
        self._path_combos[attr] = combo
        gui.button(row, self, "...", width=32, autoDefault=False,
                   callback=lambda: self._browse(attr, recent_attr, caption, file_filter))
        self._fill_path_combo(attr, recent_attr)

    def _fill_path_combo(self, attr: str, recent_attr: str):
        combo = self._path_combos[attr]
        current = getattr(self, attr)
        paths = [current] if current else []
        paths += [p for p in getattr(self, recent_attr) if p != current]
        combo.clear()
        combo.addItems(paths)
        combo.setCurrentIndex(0 if current else -1)

    def _browse(self, attr: str, recent_attr: str, caption: str, file_filter: str | None):
        start = getattr(self, attr) or next(iter(getattr(self, recent_attr)), "") \
            or os.path.expanduser("~")
        if file_filter is None:
            path = QFileDialog.getExistingDirectory(self, caption, start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, caption, start, file_filter)
        if path:
            self._set_path(attr, recent_attr, path)

    def _set_path(self, attr: str, recent_attr: str, path: str):
        """Use ``path`` for ``attr``, remember it, and embed from that source."""
        setattr(self, attr, path)
        recent = [path] + [p for p in getattr(self, recent_attr) if p != path]
        setattr(self, recent_attr, recent[:MAX_RECENT])
        for other, combo_recent in (("npy_data_path", "recent_npy"),
                                    ("npy_labels_path", "recent_npy"),
                                    (attr, recent_attr)):
            if combo_recent == recent_attr:
                self._fill_path_combo(other, combo_recent)
        if attr == "weights_path":
            self.weights_index = WEIGHTS.index("file")
            self.weights_row.setEnabled(True)
        else:
            self.source_index = SOURCES.index({"folder_path": "folder", "csv_path": "csv"}
                                              .get(attr, "npy"))
            self.source_pages.setCurrentIndex(self.source_index)
        self._settings_changed()

    def _setup_model_box(self):
        box = gui.vBox(self.controlArea, "Model")
        grid = QGridLayout()
        gui.widgetBox(box, orientation=grid)
        self.model_combo = gui.comboBox(
            None, self, "model_index", items=[backbone_text(b) for b in BACKBONES.values()],
            callback=self._model_changed)
        grid.addWidget(QLabel("Backbone:"), 0, 0)
        grid.addWidget(self.model_combo, 0, 1)
        self.model_info = QLabel(wordWrap=True)
        grid.addWidget(self.model_info, 1, 1)
        self.alpha_combo = QComboBox()
        self.alpha_combo.activated.connect(self._alpha_changed)
        grid.addWidget(QLabel("Width (alpha):"), 2, 0)
        grid.addWidget(self.alpha_combo, 2, 1)
        self.weights_combo = gui.comboBox(
            None, self, "weights_index", items=["ImageNet (downloaded once)", "None (random)",
                                                "File"], callback=self._weights_changed)
        grid.addWidget(QLabel("Weights:"), 3, 0)
        grid.addWidget(self.weights_combo, 3, 1)
        self.weights_row = gui.hBox(None)
        grid.addWidget(self.weights_row, 4, 1)
        self._path_row(self.weights_row, "weights_path", "recent_weights", "Weights file",
                       "Keras weights (*.h5 *.keras *.weights.h5);;All files (*)")
        self.weights_row.setEnabled(self.weights == "file")

    def _weights_changed(self):
        self.weights_row.setEnabled(self.weights == "file")
        self._settings_changed()

    def _setup_options_box(self):
        box = gui.vBox(self.controlArea, "Options")
        gui.spin(box, self, "batch_size", 1, 1024, label="Batch size:",
                 callback=self._settings_changed, controlWidth=64)
        self.input_size_combo = gui.comboBox(
            box, self, "input_size_index", label="Input size:",
            orientation=Qt.Orientation.Horizontal,
            items=["Backbone's default", "Image's own size"], callback=self._settings_changed)
        gui.comboBox(box, self, "resize_index", label="Resize:",
                     orientation=Qt.Orientation.Horizontal,
                     items=[RESIZE_LABELS[policy] for policy in RESIZE_POLICIES],
                     callback=self._settings_changed)
        gui.checkBox(box, self, "use_cache", "Use cache (reuse embeddings of seen images)",
                     callback=self._settings_changed)

    def _update_model_controls(self):
        """Fill the alpha combo and the description for the chosen backbone."""
        try:
            backbone = get_backbone(self.model_name)
        except TransferEmbedError:
            self.model_info.setText("")
            self.alpha_combo.clear()
            return
        alphas = backbone.alphas()
        self.alpha_combo.clear()
        self.alpha_combo.addItems([f"{a:g}" for a in alphas])
        if backbone.has_alpha and float(self.alpha) in alphas:
            self.alpha_combo.setCurrentIndex(alphas.index(float(self.alpha)))
        else:
            self.alpha_combo.setCurrentIndex(alphas.index(1.0))
        self.alpha_combo.setEnabled(backbone.has_alpha)
        alpha = float(self.alpha) if backbone.has_alpha and float(self.alpha) in alphas else 1.0
        self.model_info.setText(
            f"{backbone.features(alpha)} features ({backbone.feature_description}), "
            f"input {backbone.input_size}×{backbone.input_size} px; ImageNet weights "
            f"{backbone.weights_filename(alpha)} ({backbone.download_size(alpha):g} MB)")
        self.input_size_combo.setEnabled(backbone.pooled)

    # --- reacting to the user and the input --------------------------------------------

    def _source_changed(self):
        self.source_pages.setCurrentIndex(max(self.source_index, 0))
        self._settings_changed()

    def _model_changed(self):
        backbone = get_backbone(self.model_name)
        if float(self.alpha) not in backbone.alphas():
            self.alpha = 1.0
        self._update_model_controls()
        self._settings_changed()

    def _alpha_changed(self, index: int):
        self.alpha = get_backbone(self.model_name).alphas()[index]
        self._update_model_controls()
        self._settings_changed()

    def _settings_changed(self):
        self.commit.deferred()

    @Inputs.images
    def set_data(self, data: Table | None):
        self.closeContext()
        self.data = data
        columns = image_columns(data.domain) if data is not None else []
        self.columns_model[:] = columns
        self.image_column = columns[0] if columns else None
        if data is not None:
            self.source_index = SOURCES.index("table")
            self.source_pages.setCurrentIndex(self.source_index)
            self.openContext(data.domain)

    def handleNewSignals(self):
        self.commit.now()

    # --- running -------------------------------------------------------------------------

    def _config(self) -> engine.EmbedConfig:
        """The engine's settings (raises TransferEmbedError or ValueError)."""
        backbone = get_backbone(self.model_name)
        if self.weights == "file" and not self.weights_path:
            raise ValueError("Choose a weights file, or use ImageNet or random weights.")
        weights = {"imagenet": "imagenet", "none": None}.get(self.weights, self.weights_path)
        native = self.input_size == "native" and backbone.pooled and not backbone.fixed_input
        return engine.EmbedConfig(
            model=backbone.name, weights=weights,
            alpha=float(self.alpha) if backbone.has_alpha else 1.0,
            input_size=engine.NATIVE if native else None, resize=self.resize,
            batch_size=self.batch_size, cache=bool(self.use_cache))

    def _source_maker(self) -> tuple[Callable[[], Source] | None, Table | None]:
        """A function that builds the chosen source (in the worker), and the
        input table it comes from; None where there is nothing to embed."""
        if self.source == "table":
            if self.data is None:
                return None, None
            if self.image_column is None:
                self.Error.no_image_column()
                return None, None
            if not len(self.data):
                return None, None
            return partial(table_source, self.data, self.image_column), self.data
        if self.source == "folder":
            path, what = self.folder_path, "an image folder"
            maker = partial(folder_source, path)
        elif self.source == "csv":
            path, what = self.csv_path, "a CSV file of label,path rows"
            maker = partial(csv_source, path)
        else:
            path, what = self.npy_data_path, "a npy file of images"
            maker = partial(npy_source, path, self.npy_labels_path or None, self.npy_height,
                            self.npy_width, self.npy_channels)
        if not path:
            self.Information.choose_source(what)
            return None, None
        return maker, None

    @gui.deferred
    def commit(self):
        self.cancel()
        self.clear_messages()
        self.cancel_button.setEnabled(False)
        try:
            config = self._config()
        except (TransferEmbedError, ValueError) as exc:
            self._show_error(exc)
            config = None
        maker, data = self._source_maker()
        if config is None or maker is None:
            self._send(None, None)
            self.status_label.setText("Nothing embedded.")
            return
        self.status_label.setText("Embedding...")
        self.cancel_button.setEnabled(True)
        self.start(run, maker, config, data)

    def cancel_embedding(self):
        """The Cancel button: stop the running embedding (within one batch)."""
        self.cancel()
        self.cancel_button.setEnabled(False)
        self.Information.downloading.clear()
        self.Information.cancelled()
        self.status_label.setText("Cancelled.")
        self._send(None, None)

    def on_partial_result(self, progress: tuple[int, int]):
        """Bytes of the weights downloaded so far."""
        done, total = progress
        mb = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        self.Information.downloading(mb)
        if total:
            self.progressBarSet(100 * done / total)

    def on_done(self, outcome: Outcome):
        self.cancel_button.setEnabled(False)
        self.Information.downloading.clear()
        self._send(outcome.embeddings, outcome.skipped)
        total = outcome.n_embedded + outcome.n_skipped
        status = f"{outcome.n_embedded} embedded, {outcome.n_skipped} skipped"
        self.status_label.setText(status + (f" ({outcome.n_cached} from the cache)."
                                            if outcome.n_cached else "."))
        self.info.set_output_summary(str(outcome.n_embedded), status)
        if outcome.n_skipped:
            more = "; ..." if outcome.n_skipped > len(outcome.first_skipped) else ""
            self.Warning.images_skipped(outcome.n_skipped, total,
                                        "; ".join(outcome.first_skipped) + more)

    def on_exception(self, ex: Exception):
        self.cancel_button.setEnabled(False)
        self.Information.downloading.clear()
        self._send(None, None)
        self.status_label.setText("Nothing embedded.")
        self._show_error(ex)

    def _show_error(self, ex: Exception):
        """The message for an error of the settings, the source or the run."""
        if isinstance(ex, EmbeddingCancelled):
            self.Information.cancelled()
        elif isinstance(ex, SourceError):
            self.Error.source(str(ex))
        elif isinstance(ex, WeightsUnavailableError):
            self.Error.weights_unavailable(str(ex))
        elif isinstance(ex, (TransferEmbedError, ValueError)):
            self.Error.settings(str(ex))
        else:
            self.Error.failed(f"{type(ex).__name__}: {ex}")

    def _send(self, embeddings: Table | None, skipped: Table | None):
        self.Outputs.embeddings.send(embeddings)
        self.Outputs.skipped_images.send(skipped)

    def onDeleteWidget(self):
        self.shutdown()
        super().onDeleteWidget()

    def send_report(self):
        source = {"table": "input data", "folder": self.folder_path, "csv": self.csv_path,
                  "npy": self.npy_data_path}[self.source]
        self.report_items((
            ("Images", source),
            ("Backbone", self.model_name),
            ("Alpha", f"{self.alpha:g}" if self.model_name in BACKBONES
             and BACKBONES[self.model_name].has_alpha else None),
            ("Weights", self.weights_path if self.weights == "file" else self.weights),
            ("Batch size", self.batch_size),
            ("Input size", self.input_size),
            ("Resize", self.resize),
            ("Result", self.status_label.text()),
        ))


if __name__ == "__main__":  # pragma: no cover
    WidgetPreview(OWTransferEmbedding).run()
