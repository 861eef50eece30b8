"""The Compare Backbones widget: several backbones and layers scored side by side.

Each checked candidate embeds the input once (through the cache) and is scored by
cross-validation of a standardised logistic regression (see
:mod:`orangecontrib.transferembed.comparison`). The scores fill a table and a bar
chart; the selected row's embeddings go to the output. The work runs in a
worker thread; TensorFlow is imported there, never when the widget is created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from AnyQt.QtCore import QItemSelectionModel, QSize, Qt
from AnyQt.QtGui import QStandardItem, QStandardItemModel
from AnyQt.QtWidgets import QAbstractItemView, QComboBox, QHeaderView, QListView, QTableView
from Orange.data import ContinuousVariable, Domain, StringVariable, Table
from Orange.widgets import gui
from Orange.widgets.settings import DomainContextHandler, Setting
from Orange.widgets.utils.concurrent import ConcurrentWidgetMixin, TaskState
from Orange.widgets.utils.widgetpreview import WidgetPreview
from Orange.widgets.widget import Input, Msg, Output, OWWidget

from orangecontrib.transferembed.comparison import (
    DEFAULT_FOLDS,
    Candidate,
    Score,
    best,
    compare,
    ranked,
)
from orangecontrib.transferembed.config import DEFAULT_LAYER
from orangecontrib.transferembed.errors import EmbeddingCancelled, TransferEmbedError
from orangecontrib.transferembed.models.registry import BACKBONES, get_backbone
from orangecontrib.transferembed.models.weights import find_imagenet_file
from orangecontrib.transferembed.widgets.common import (
    Choice,
    EmbeddingOptionsMixin,
    ImageSourceMixin,
    LayerLister,
    TaskHooks,
    build_source,
    gui_message,
)
from orangecontrib.transferembed.widgets.table import embeddings_table

WEIGHTS = ("imagenet", "none")
ALPHAS = (0.25, 0.5, 0.75, 1.0)
HEADERS = ("Candidate", "Features", "CA", "AUC", "F1", "Time (s)", "Note")


@dataclass
class CompareOutcome:
    """What the worker hands back: scores (without their results), and tables."""

    scores: list[Score]
    tables: dict[str, Table]


def run(make_source: Callable, candidates: list[Candidate], settings: dict, folds: int,
        data: Table | None, state: TaskState) -> CompareOutcome:
    """Embed and score every candidate; runs in the worker thread."""
    source = build_source(make_source, state)
    scores = compare(source, candidates, settings, folds, TaskHooks(state))
    tables = {}
    for score in scores:
        if score.result is not None and len(score.result):
            tables[score.candidate.label] = embeddings_table(score.result, data)
        score.result = None  # the tables hold what the outputs need
    return CompareOutcome(scores, tables)


def scores_table(scores: list[Score]) -> Table:
    """A row per candidate, best CA first: the scores, and what the candidate is."""
    numbers = [ContinuousVariable(name) for name in ("features", "CA", "AUC", "F1", "CA sd",
                                                     "seconds")]
    metas = [StringVariable(name) for name in ("candidate", "backbone", "layer", "note")]
    rows = ranked(scores)
    X = np.array([[np.nan if v is None else v
                   for v in (s.features, s.ca, s.auc, s.f1, s.spread, s.seconds)]
                  for s in rows], float).reshape(len(rows), len(numbers))
    M = np.array([[s.candidate.label, s.candidate.model, s.candidate.layer, s.error or ""]
                  for s in rows], object).reshape(len(rows), len(metas))
    table = Table.from_numpy(Domain(numbers, None, metas), X, None, M)
    table.name = "Scores"
    return table


class OWCompareBackbones(OWWidget, ConcurrentWidgetMixin, ImageSourceMixin,
                         EmbeddingOptionsMixin):
    name = "Compare Backbones"
    description = ("Compare backbones and their layers as representations of labelled "
                   "images: cross-validated scores side by side.")
    icon = "icons/compare-backbones.svg"
    priority = 20
    category = "Transfer Embed"
    keywords = "compare, representation, backbone, layer, embedding, transfer learning"

    settings_version = 1
    settingsHandler = DomainContextHandler()

    class Inputs:
        images = Input("Images", Table)

    class Outputs:
        embeddings = Output("Embeddings", Table, default=True)
        scores = Output("Scores", Table)

    class Error(OWWidget.Error):
        no_image_column = Msg("The input data has no column with image paths.")
        source = Msg("{}")
        settings = Msg("{}")
        failed = Msg("Comparing failed: {}")

    class Warning(OWWidget.Warning):
        failed_candidates = Msg("{}")

    class Information(OWWidget.Information):
        stage = Msg("{}")
        choose = Msg("{}")
        cancelled = Msg("Cancelled. Press Apply to compare again.")

    checked: list[str] = Setting(["MobileNet", "ResNet50"])
    extra: list[str] = Setting([])  #: BACKBONE:LAYER candidates the user added
    alpha = Setting(1.0)
    weights = Setting("imagenet")
    folds = Setting(DEFAULT_FOLDS)
    selected = Setting("", schema_only=True)  #: the label of the candidate sent out
    layer_model = Setting("MobileNet")
    auto_apply = Setting(False)

    weights_index = Choice("weights", WEIGHTS)
    alpha_index = Choice("alpha", ALPHAS)
    layer_model_index = Choice("layer_model", tuple(BACKBONES))

    def __init__(self):
        OWWidget.__init__(self)
        ConcurrentWidgetMixin.__init__(self)
        self.outcome: CompareOutcome | None = None
        self.layer_lister = LayerLister(self._layers_listed)
        self.setup_source_box(self._settings_changed)
        self._setup_candidates_box()
        self.setup_options_box(self._settings_changed)
        self.status_label = gui.widgetLabel(self.controlArea, "Nothing compared yet.")
        self.status_label.setWordWrap(True)
        gui.button(self.buttonsArea, self, "Cancel", callback=self.cancel_comparing,
                   autoDefault=False)
        self.apply_box = gui.auto_apply(self.buttonsArea, self, "auto_apply")
        self._setup_main_area()
        if self.source != "table":  # a workflow's own source: compare on opening
            self.commit.deferred()

    # --- the GUI -------------------------------------------------------------------------

    def sizeHint(self):
        return QSize(1100, 700)

    def _setup_candidates_box(self):
        box = gui.vBox(self.controlArea, "Candidates")
        self.candidate_model = QStandardItemModel()
        self.candidate_view = QListView(minimumHeight=180)
        self.candidate_view.setModel(self.candidate_model)
        box.layout().addWidget(self.candidate_view)
        self._fill_candidates()
        self.candidate_model.itemChanged.connect(self._candidate_toggled)
        row = gui.hBox(box)
        gui.comboBox(row, self, "layer_model_index", items=list(BACKBONES),
                     callback=self._layer_model_changed)
        self.layer_combo = QComboBox(minimumContentsLength=14, sizeAdjustPolicy=(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon))
        row.layout().addWidget(self.layer_combo)
        self.list_button = gui.button(row, self, "List", callback=self._list_layers,
                                      autoDefault=False, width=44)
        gui.button(row, self, "Add", callback=self._add_layer, autoDefault=False, width=44)
        self.layer_combo.addItem("(List the layers)")
        gui.comboBox(box, self, "alpha_index", label="MobileNet width (alpha):",
                     orientation=Qt.Orientation.Horizontal, items=[f"{a:g}" for a in ALPHAS],
                     callback=self._width_changed)
        gui.comboBox(box, self, "weights_index", label="Weights:",
                     orientation=Qt.Orientation.Horizontal,
                     items=["ImageNet", "None (random)"], callback=self._settings_changed)
        gui.spin(box, self, "folds", 2, 20, label="Cross-validation folds:",
                 callback=self._settings_changed, controlWidth=64)

    def _candidate_text(self, label: str) -> str:
        candidate = Candidate.parse(label)
        backbone = get_backbone(candidate.model)
        alpha = self.alpha if self.alpha in backbone.alphas() else 1.0
        size = f"{backbone.features(alpha)} features" if candidate.layer == DEFAULT_LAYER \
            else f"layer {candidate.layer}"
        here = find_imagenet_file(backbone, alpha) is not None
        where = "weights here" if here else f"{backbone.download_size(alpha):g} MB to download"
        return f"{candidate.label} ({size}; {where})"

    def _fill_candidates(self):
        self.candidate_model.blockSignals(True)
        self.candidate_model.clear()
        for label in [*BACKBONES, *self.extra]:
            item = QStandardItem(self._candidate_text(label))
            item.setData(label, Qt.ItemDataRole.UserRole)
            item.setCheckable(True)
            item.setEditable(False)
            item.setCheckState(Qt.CheckState.Checked if label in self.checked
                               else Qt.CheckState.Unchecked)
            self.candidate_model.appendRow(item)
        self.candidate_model.blockSignals(False)

    def _setup_main_area(self):
        self.score_model = QStandardItemModel()
        self.score_model.setHorizontalHeaderLabels(HEADERS)
        view = QAbstractItemView
        self.score_view = QTableView(selectionBehavior=view.SelectionBehavior.SelectRows,
                                     selectionMode=view.SelectionMode.SingleSelection,
                                     editTriggers=view.EditTrigger.NoEditTriggers)
        self.score_view.setModel(self.score_model)
        self.score_view.verticalHeader().hide()
        self.score_view.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.score_view.selectionModel().selectionChanged.connect(self._row_selected)
        self.mainArea.layout().addWidget(self.score_view)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumHeight(220)
        self.plot.setLabel("bottom", "classification accuracy (CA), mean ± sd over folds")
        self.plot.setXRange(0, 1)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.mainArea.layout().addWidget(self.plot)

    # --- reacting to the user and the input --------------------------------------------

    def _candidate_toggled(self, item: QStandardItem):
        label = item.data(Qt.ItemDataRole.UserRole)
        checked = [c for c in self.checked if c != label]
        if item.checkState() == Qt.CheckState.Checked:
            checked.append(label)
        self.checked = checked
        self._settings_changed()

    def _width_changed(self):
        self._fill_candidates()
        self._settings_changed()

    def _layer_model_changed(self):
        self.layer_combo.clear()
        known = self.layer_lister.known(self.layer_model, self._width(self.layer_model))
        self._show_layers(known)

    def _width(self, model: str) -> float:
        return self.alpha if self.alpha in get_backbone(model).alphas() else 1.0

    def _list_layers(self):
        self.list_button.setEnabled(False)
        self.Information.stage("Listing the layers...")
        self.layer_lister.request(self.layer_model, self._width(self.layer_model))

    def _layers_listed(self, model: str, alpha: float, layers, problem: str | None):
        self.Information.stage.clear()
        self.list_button.setEnabled(True)
        if problem is not None:
            self.Error.settings(problem)
        elif model == self.layer_model:
            self._show_layers(layers)
            self.layer_combo.showPopup()

    def _show_layers(self, layers):
        self.layer_combo.clear()
        if not layers:
            self.layer_combo.addItem("(List the layers)")
            return
        for layer in layers:
            self.layer_combo.addItem(f"{layer.name} ({layer.features})", layer.name)

    def _add_layer(self):
        layer = self.layer_combo.currentData()
        if not layer:
            return
        label = Candidate(self.layer_model, layer).label
        if label not in self.extra and label not in BACKBONES:
            self.extra = [*self.extra, label]
        if label not in self.checked:
            self.checked = [*self.checked, label]
        self._fill_candidates()
        self._settings_changed()

    def _settings_changed(self):
        self.commit.deferred()

    @Inputs.images
    def set_data(self, data: Table | None):
        self.set_source_data(data)

    def handleNewSignals(self):
        self.commit.now()

    # --- running -------------------------------------------------------------------------

    def _settings(self) -> dict:
        return {"weights": None if self.weights == "none" else "imagenet",
                "alpha": float(self.alpha), "batch_size": self.batch_size,
                "resize": self.resize_policy, "precision": self.precision,
                "cache": bool(self.use_cache)}

    def _candidates(self) -> list[Candidate]:
        order = [*BACKBONES, *self.extra]
        return [Candidate.parse(label) for label in order if label in self.checked]

    @gui.deferred
    def commit(self):
        self.cancel()
        self.clear_messages()
        maker, data, missing = self.source_maker()
        candidates = self._candidates()
        if missing == "no image column":
            self.Error.no_image_column()
        elif missing:
            self.Information.choose(missing)
        elif maker is not None and not candidates:
            self.Information.choose("Check at least one candidate.")
        if maker is None or not candidates:
            self._show(None)
            return
        self.status_label.setText(f"Comparing {len(candidates)} candidates...")
        self.start(run, maker, candidates, self._settings(), self.folds, data)

    def cancel_comparing(self):
        self.cancel()
        self.Information.stage.clear()
        self.Information.cancelled()
        self.status_label.setText("Cancelled.")
        self.apply_again()

    def on_partial_result(self, message: tuple):
        kind, *values = message
        if kind == "found":
            self.status_label.setText(f"{values[0]}; comparing...")
        elif kind == "status":
            self.Information.stage(values[0])

    def on_done(self, outcome: CompareOutcome):
        self.Information.stage.clear()
        self._show(outcome)

    def on_exception(self, ex: Exception):
        self.Information.stage.clear()
        self._show(None)
        if isinstance(ex, EmbeddingCancelled):
            self.Information.cancelled()
        elif isinstance(ex, TransferEmbedError):
            (self.Error.source if "source" in type(ex).__name__.lower()
             else self.Error.settings)(gui_message(ex))
        else:
            self.Error.failed(f"{type(ex).__name__}: {ex}")

    # --- showing the scores --------------------------------------------------------------

    def _show(self, outcome: CompareOutcome | None):
        self.outcome = outcome
        self.score_model.removeRows(0, self.score_model.rowCount())
        self.plot.clear()
        if outcome is None:
            self.status_label.setText("Nothing compared.")
            self.Outputs.scores.send(None)
            self.Outputs.embeddings.send(None)
            return
        rows = ranked(outcome.scores)
        for score in rows:
            self.score_model.appendRow(_score_items(score))
        failed = [f"{s.candidate.label}: {s.error}" for s in rows if s.error]
        if failed:
            self.Warning.failed_candidates("; ".join(failed))
        top = best(outcome.scores)
        self.status_label.setText(f"Best: {top.candidate.label}, CA {top.ca:.3f}."
                                  if top else "No candidate could be scored.")
        self._plot(rows)
        self.Outputs.scores.send(scores_table(outcome.scores))
        labels = [s.candidate.label for s in rows]
        chosen = self.selected if self.selected in outcome.tables else \
            (top.candidate.label if top else None)
        if chosen in labels:
            self.score_view.selectionModel().select(
                self.score_model.index(labels.index(chosen), 0),
                QItemSelectionModel.SelectionFlag.ClearAndSelect
                | QItemSelectionModel.SelectionFlag.Rows)
        self._send_selected(chosen)

    def _plot(self, rows: list[Score]):
        shown = [s for s in rows if s.ca is not None][::-1]
        if not shown:
            return
        positions = np.arange(len(shown))
        ca = np.array([s.ca for s in shown])
        spread = np.array([s.spread or 0.0 for s in shown])
        top = best(rows)
        brushes = [pg.mkBrush("#2E7D32" if s is top else "#90A4AE") for s in shown]
        self.plot.addItem(pg.BarGraphItem(x0=0, y=positions, height=0.6, width=ca,
                                          brushes=brushes, pen=pg.mkPen(None)))
        self.plot.addItem(pg.ErrorBarItem(x=ca, y=positions, left=spread, right=spread,
                                          beam=0.2, pen=pg.mkPen("k")))
        self.plot.getAxis("left").setTicks([[(i, s.candidate.label)
                                             for i, s in enumerate(shown)]])
        self.plot.setYRange(-0.6, len(shown) - 0.4)

    def _row_selected(self, *_):
        rows = self.score_view.selectionModel().selectedRows()
        if not rows or self.outcome is None:
            return
        label = self.score_model.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        self.selected = label
        self._send_selected(label)

    def _send_selected(self, label: str | None):
        tables = self.outcome.tables if self.outcome else {}
        self.Outputs.embeddings.send(tables.get(label))

    def onDeleteWidget(self):
        self.shutdown()
        self.layer_lister.shutdown()
        super().onDeleteWidget()

    def send_report(self):
        self.report_items((("Images", self.source_description()),
                           ("Candidates", ", ".join(c.label for c in self._candidates())),
                           ("Weights", self.weights), ("Folds", self.folds),
                           ("Result", self.status_label.text())))
        if self.outcome is not None:
            self.report_table("Scores", self.score_view)


def _score_items(score: Score) -> list[QStandardItem]:
    def number(value, digits=3):
        return "" if value is None else f"{value:.{digits}f}"

    texts = [score.candidate.label, "" if score.features is None else str(score.features),
             number(score.ca), number(score.auc), number(score.f1), number(score.seconds, 1),
             score.error or ""]
    items = [QStandardItem(text) for text in texts]
    items[0].setData(score.candidate.label, Qt.ItemDataRole.UserRole)
    for item in items[1:6]:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return items


if __name__ == "__main__":  # pragma: no cover
    WidgetPreview(OWCompareBackbones).run()
