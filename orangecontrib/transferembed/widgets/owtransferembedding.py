"""The Transfer Embedding widget: images in, a table of CNN features out.

The embedding runs in a worker thread through :class:`ConcurrentWidgetMixin`;
the worker, :func:`run`, gets plain data and never touches Qt or the widget.
TensorFlow is imported there, on first use, never when the widget is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from AnyQt.QtCore import Qt
from AnyQt.QtWidgets import QComboBox, QGridLayout, QLabel
from Orange.data import Table
from Orange.widgets import gui
from Orange.widgets.settings import DomainContextHandler, Setting
from Orange.widgets.utils.concurrent import ConcurrentWidgetMixin, TaskState
from Orange.widgets.utils.widgetpreview import WidgetPreview
from Orange.widgets.widget import Input, Msg, Output, OWWidget

from orangecontrib.transferembed.config import DEFAULT_LAYER, NATIVE, POOLINGS, EmbedConfig
from orangecontrib.transferembed.errors import (
    EmbeddingCancelled,
    SourceError,
    TransferEmbedError,
    WeightsUnavailableError,
)
from orangecontrib.transferembed.jobs import run_job
from orangecontrib.transferembed.models.registry import BACKBONES, get_backbone
from orangecontrib.transferembed.widgets.common import (
    Choice,
    EmbeddingOptionsMixin,
    ImageSourceMixin,
    LayerLister,
    PathRow,
    RunControlMixin,
    backbone_text,
    build_source,
    gui_message,
    weights_text,
)
from orangecontrib.transferembed.widgets.news import TaskHooks, WorkerNewsMixin
from orangecontrib.transferembed.widgets.table import embeddings_table, skipped_table

log = logging.getLogger(__name__)
WEIGHTS = ("imagenet", "none", "file")
INPUT_SIZES = ("default", "native")
#: The default backbone and width: MobileNet 0.25, whose ImageNet weights ship with
#: the package, so that the first run works offline.
DEFAULT_MODEL, DEFAULT_ALPHA = "MobileNet", 0.25
#: The Backbone combo shows this many characters: the default's whole line,
#: "MobileNet (256 features, 2.1 MB, on this machine)".
BACKBONE_TEXT_LENGTH = 40
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
    notices: list[str] = field(default_factory=list)


def run(make_source: Callable, config: EmbedConfig, data: Table | None,
        state: TaskState) -> Outcome:
    """Embed the source that ``make_source`` builds; runs in the worker thread."""
    source = build_source(make_source, state)
    result = run_job(source, config, TaskHooks(state))
    return Outcome(embeddings_table(result, data), skipped_table(result, data),
                   len(result), len(result.skipped), result.n_cached,
                   [f"{Path(s.item).name}: {s.reason}" for s in result.skipped[:SHOWN_REASONS]],
                   result.notices)


class OWTransferEmbedding(OWWidget, WorkerNewsMixin, RunControlMixin, ConcurrentWidgetMixin,
                          ImageSourceMixin, EmbeddingOptionsMixin):
    name = "Transfer Embedding"
    description = ("Embed images with a pretrained network: an ImageNet CNN from "
                   "keras.applications, or a DINOv2, SigLIP or CLIP encoder from keras-hub.")
    icon = "icons/transfer-embedding.svg"
    priority = 10
    category = "Transfer Embed"
    keywords = ("image embedding, transfer learning, cnn, deep learning, keras, imagenet, "
                "features, mobilenet, resnet, vgg, dinov2, siglip, clip, foundation model")

    want_main_area = False
    resizing_enabled = False
    settings_version = 3
    doing = "embedding"
    settingsHandler = DomainContextHandler()

    class Inputs:
        images = Input("Images", Table)

    class Outputs:
        embeddings = Output("Embeddings", Table, default=True)
        skipped_images = Output("Skipped Images", Table)

    class Error(ImageSourceMixin.Error):
        source = Msg("{}")
        weights_unavailable = Msg("{}")
        settings = Msg("{}")
        failed = Msg("Embedding failed: {}")

    class Warning(WorkerNewsMixin.Warning):
        images_skipped = Msg("{} of {} images skipped: {}")

    class Information(WorkerNewsMixin.Information, ImageSourceMixin.Information):
        cancelled = Msg("Cancelled. Press Apply to embed again.")

    model_name = Setting(DEFAULT_MODEL)
    alpha = Setting(DEFAULT_ALPHA)
    widths: dict = Setting({})  #: backbone -> the width last used with it
    layer = Setting(DEFAULT_LAYER)
    layers: dict = Setting({})  #: backbone -> the layer last used with it
    pooling = Setting("avg")
    weights = Setting("imagenet")
    weights_path = Setting("", schema_only=True)
    recent_weights: list[str] = Setting([])
    input_size = Setting("default")
    auto_apply = Setting(True)

    weights_index = Choice("weights", WEIGHTS)
    input_size_index = Choice("input_size", INPUT_SIZES)
    model_index = Choice("model_name", tuple(BACKBONES))
    pooling_index = Choice("pooling", POOLINGS)

    def __init__(self):
        OWWidget.__init__(self)
        ConcurrentWidgetMixin.__init__(self)
        if self.model_name.lower() in (name.lower() for name in BACKBONES):
            self.model_name = get_backbone(self.model_name).name  # as a script may spell it
        self._shown_model = self.model_name
        self.layer_lister = LayerLister(self._layers_listed)
        self.setup_source_box(self.settings_changed)
        self._setup_model_box()
        self.setup_options_box(self.settings_changed, self._input_size_row)
        self.status_label = gui.widgetLabel(self.controlArea, "Nothing embedded yet.")
        self.status_label.setWordWrap(True)
        self.setup_run_buttons(self.cancel_embedding)
        self._update_model_controls()
        if self.source != "table":  # a workflow's own source: embed on opening
            self.commit.now()

    # --- the GUI -------------------------------------------------------------------------

    def _setup_model_box(self):
        box = gui.vBox(self.controlArea, "Model")
        grid = QGridLayout()
        gui.widgetBox(box, orientation=grid)
        self.model_combo = gui.comboBox(
            None, self, "model_index", callback=self._model_changed,
            items=[backbone_text(b, self._width_of(b.name)) for b in BACKBONES.values()],
            sizeAdjustPolicy=QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(BACKBONE_TEXT_LENGTH)
        self.model_combo.setMaximumContentsLength(BACKBONE_TEXT_LENGTH)  # Orange caps at 25
        self.alpha_combo = QComboBox()
        self.alpha_combo.activated.connect(self._alpha_changed)
        self.layer_combo = QComboBox(minimumContentsLength=18, sizeAdjustPolicy=(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon))
        self.layer_combo.activated.connect(self._layer_chosen)
        self.list_layers_button = gui.button(None, self, "List", callback=self._list_layers,
                                             autoDefault=False, width=48)
        self.list_layers_button.setToolTip("List this backbone's layers (takes a few seconds)")
        layer_row = gui.hBox(None)
        layer_row.layout().addWidget(self.layer_combo)
        layer_row.layout().addWidget(self.list_layers_button)
        self.pooling_combo = gui.comboBox(None, self, "pooling_index", items=["Average", "Maximum"],
                                          callback=self.settings_changed)
        self.weights_combo = gui.comboBox(
            None, self, "weights_index", items=["ImageNet", "None (random)", "File…"],
            callback=self._weights_changed)
        self.weights_row = PathRow(self, None, "weights_path", "recent_weights", "Weights file",
                                   "Keras weights (*.h5 *.keras *.weights.h5);;"
                                   "keras-hub preset folder (config.json);;All files (*)",
                                   self._weights_file_chosen)
        self.model_info = QLabel(wordWrap=True)
        self.weights_info = QLabel(wordWrap=True)
        self.weights_file_label = QLabel("Weights file:")
        rows = [("Backbone:", self.model_combo), ("Width (alpha):", self.alpha_combo),
                ("Layer:", layer_row), ("Pooling:", self.pooling_combo),
                ("Weights:", self.weights_combo), (self.weights_file_label, self.weights_row.box)]
        for row, (label, control) in enumerate(rows):
            grid.addWidget(QLabel(label) if isinstance(label, str) else label, row, 0)
            grid.addWidget(control, row, 1)
        grid.addWidget(self.model_info, len(rows), 0, 1, 2)
        grid.addWidget(self.weights_info, len(rows) + 1, 0, 1, 2)

    def _width_of(self, model: str) -> float:
        """The width last used with ``model`` (MobileNet's default is 0.25)."""
        default = DEFAULT_ALPHA if model == DEFAULT_MODEL else 1.0
        return get_backbone(model).usable_alpha(self.widths.get(model, default))

    def _input_size_row(self, box):
        self.input_size_combo = gui.comboBox(
            box, self, "input_size_index", label="Input size:",
            orientation=Qt.Orientation.Horizontal,
            items=["Backbone's default", "Image's own size"], callback=self.settings_changed)

    def _update_model_controls(self):
        """The width, layer, pooling and weights controls for the chosen backbone."""
        try:
            backbone = get_backbone(self.model_name)
        except TransferEmbedError:
            self.model_info.setText("")
            self.alpha_combo.clear()
            return
        alphas, alpha = backbone.alphas(), backbone.usable_alpha(self.alpha)
        self.alpha_combo.clear()
        self.alpha_combo.addItems([f"{a:g}" for a in alphas])
        self.alpha_combo.setCurrentIndex(alphas.index(alpha))
        self.alpha_combo.setEnabled(backbone.has_alpha)
        for index, other in enumerate(BACKBONES.values()):  # the weights may be here now
            self.model_combo.setItemText(index, backbone_text(
                other, alpha if other is backbone else self._width_of(other.name)))
        self._fill_layer_combo(backbone.name, alpha)
        features = f"{backbone.features(alpha)} features ({backbone.feature_description})" \
            if self.layer == DEFAULT_LAYER else f"features of layer {self.layer}"
        self.model_info.setText(f"{features}; input {backbone.input_size}×"
                                f"{backbone.input_size} px")
        self.weights_info.setText(weights_text(backbone, alpha))
        self.weights_info.setVisible(self.weights == "imagenet")
        for widget in (self.weights_file_label, self.weights_row.box):
            widget.setVisible(self.weights == "file")
        self.input_size_combo.setEnabled(backbone.pooled and not backbone.fixed_input)

    def _fill_layer_combo(self, model: str, alpha: float):
        known = self.layer_lister.known(model, alpha) or []
        self._layer_names = [DEFAULT_LAYER] + [layer.name for layer in known]
        if self.layer not in self._layer_names:
            self._layer_names.append(self.layer)
        self.layer_combo.clear()
        self.layer_combo.addItem("Default")
        for layer in known:
            self.layer_combo.addItem(f"{layer.name} ({layer.features})")
        if len(self.layer_combo) < len(self._layer_names):
            self.layer_combo.addItem(self.layer)
        self.layer_combo.setCurrentIndex(self._layer_names.index(self.layer))
        self.list_layers_button.setEnabled(not known)

    # --- reacting to the user and the input --------------------------------------------

    def _model_changed(self):
        old = self._shown_model
        self.widths[old], self.layers[old] = float(self.alpha), self.layer
        backbone = get_backbone(self.model_name)
        self.alpha = self._width_of(backbone.name)
        self.layer = self.layers.get(backbone.name, DEFAULT_LAYER)
        self._shown_model = backbone.name
        self._update_model_controls()
        self.settings_changed()

    def _alpha_changed(self, index: int):
        self.alpha = get_backbone(self.model_name).alphas()[index]
        self._update_model_controls()
        self.settings_changed()

    def _list_layers(self):
        self.list_layers_button.setEnabled(False)
        self.Information.stage("Listing the layers...")
        self.layer_lister.request(self.model_name, float(self.alpha))

    def _layers_listed(self, model: str, alpha: float, layers, problem: str | None):
        self.Information.stage.clear()
        if problem is not None:
            self.Error.settings(problem)
        if model == self.model_name and alpha == float(self.alpha):
            self._fill_layer_combo(model, alpha)
            if layers:
                self.layer_combo.showPopup()

    def _layer_chosen(self, index: int):
        self.layer = self._layer_names[index]
        self._update_model_controls()
        self.settings_changed()

    def _weights_changed(self):
        self._update_model_controls()
        self.settings_changed()

    def _weights_file_chosen(self, _attr: str, _path: str):
        self.weights = "file"
        self._update_model_controls()
        self.settings_changed()

    @Inputs.images
    def set_data(self, data: Table | None):
        self.set_source_data(data)

    def handleNewSignals(self):
        self.commit.now()

    # --- running -------------------------------------------------------------------------

    def _config(self) -> EmbedConfig:
        """The engine's settings (raises TransferEmbedError)."""
        backbone = get_backbone(self.model_name)
        if self.weights == "file" and not self.weights_path:
            raise WeightsUnavailableError("Choose a weights file under Weights › File…, or "
                                          "use ImageNet or random weights.")
        weights = {"imagenet": "imagenet", "none": None}.get(
            self.weights, self.resolve_path(self.weights_path))
        native = self.input_size == "native" and backbone.pooled and not backbone.fixed_input
        # a foundation encoder's own feature (DINOv2's class token); Pooling: for its blocks
        own = backbone.foundation and self.layer == DEFAULT_LAYER
        return EmbedConfig(
            model=backbone.name, weights=weights,
            alpha=backbone.usable_alpha(self.alpha),
            input_size=NATIVE if native else None, resize=self.resize_policy,
            batch_size=self.batch_size, layer=self.layer,
            pooling=None if own else self.pooling, precision=self.precision,
            cache=bool(self.use_cache))

    @gui.deferred
    def commit(self):
        self.cancel()
        self.run_ended()
        self.clear_messages()
        self.apply_box.button.setText("Apply Automatically" if self.auto_apply else "Apply")
        self._show_precision_cost()
        try:
            config = self._config()
        except TransferEmbedError as exc:
            self._show_error(exc)
            config = None
        request = self.source_request()
        self.show_source_problem(request)
        if config is None or request.make is None:
            self._send(None, None)
            self.status_label.setText("Nothing embedded.")
            return
        self.status_label.setText("Embedding...")
        self.start_run(run, request.make, config, request.data)

    def cancel_embedding(self):
        """The Cancel button: stop the running embedding (within a second)."""
        self.cancel_run()
        self._send(None, None)

    def on_done(self, outcome: Outcome):
        self.run_ended()
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
        if outcome.notices:
            self.Warning.notices("\n".join(outcome.notices))
        self._update_model_controls()  # the weights may be on this machine now

    def on_exception(self, ex: Exception):
        self.run_ended()
        self._send(None, None)
        self.status_label.setText("Nothing embedded.")
        self._show_error(ex)

    def _show_error(self, ex: BaseException):
        """The message for an error of the settings, the source or the run."""
        if isinstance(ex, EmbeddingCancelled):
            self.Information.cancelled()
        elif isinstance(ex, SourceError):
            self.Error.source(gui_message(ex))
        elif isinstance(ex, WeightsUnavailableError):
            self.Error.weights_unavailable(gui_message(ex))
        elif isinstance(ex, TransferEmbedError):
            self.Error.settings(gui_message(ex))
        else:  # a bug: say so, and keep the traceback in the log
            log.error("embedding failed", exc_info=(type(ex), ex, ex.__traceback__))
            self.Error.failed(f"{type(ex).__name__}: {ex}")

    def _send(self, embeddings: Table | None, skipped: Table | None):
        self.Outputs.embeddings.send(embeddings)
        self.Outputs.skipped_images.send(skipped)

    def onDeleteWidget(self):
        self.shutdown()
        self.layer_lister.shutdown()
        super().onDeleteWidget()

    def send_report(self):
        backbone = BACKBONES.get(self.model_name)
        self.report_items((
            ("Images", self.source_description()),
            ("Backbone", self.model_name),
            ("Width (alpha)", f"{self.alpha:g}" if backbone and backbone.has_alpha else None),
            ("Layer", self.layer),
            ("Weights", self.weights_path if self.weights == "file" else self.weights),
            ("Batch size", self.batch_size),
            ("Input size", self.input_size),
            ("Resize", self.resize_policy),
            ("Precision", self.precision),
            ("Result", self.status_label.text()),
        ))

    @classmethod
    def migrate_settings(cls, settings: dict, version: int | None):
        """Version 2: the setting ``resize`` (which hid ``QWidget.resize``, breaking
        reopened workflows) is ``resize_policy``; widths are kept per backbone.
        Version 3: the default width is 0.25 (MobileNet 0.25 ships with the package);
        settings saved without a width keep the width they meant, 1."""
        if version is None or version < 3:
            settings.setdefault("alpha", 1.0)
        if version is None or version < 2:
            if "resize" in settings:
                settings["resize_policy"] = settings.pop("resize")
            model, alpha = settings.get("model_name"), settings.get("alpha")
            if isinstance(model, str) and alpha is not None:
                settings.setdefault("widths", {})[model] = alpha


if __name__ == "__main__":  # pragma: no cover
    WidgetPreview(OWTransferEmbedding).run()
