"""The Compare Backbones widget: several backbones and layers scored side by side.

Each checked candidate embeds the input once (through the cache) and is scored by
cross-validation: with the learner on the ``Learner`` input (wrapped by
:mod:`.learner`), or else with a standardised logistic regression (see
:mod:`orangecontrib.transferembed.comparison`). The scores fill a table and a bar
chart; the selected row's embeddings go to the output. The work runs in a
worker thread; TensorFlow is imported there, never when the widget is created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from AnyQt.QtCore import QItemSelectionModel, QSize, Qt
from AnyQt.QtGui import QStandardItem, QStandardItemModel
from AnyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHeaderView,
    QListView,
    QSizePolicy,
    QTableView,
)
from Orange.base import Learner
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
    scorer_name,
)
from orangecontrib.transferembed.config import DEFAULT_LAYER
from orangecontrib.transferembed.errors import (
    EmbeddingCancelled,
    SourceError,
    TransferEmbedError,
)
from orangecontrib.transferembed.models.registry import BACKBONES, get_backbone
from orangecontrib.transferembed.widgets.common import (
    Choice,
    EmbeddingOptionsMixin,
    ImageSourceMixin,
    LayerLister,
    RunControlMixin,
    build_source,
    gui_message,
    weights_where,
)
from orangecontrib.transferembed.widgets.learner import (
    OrangeLearnerClassifier,
    why_not_a_classifier,
)
from orangecontrib.transferembed.widgets.news import TaskHooks, WorkerNewsMixin
from orangecontrib.transferembed.widgets.table import embeddings_table

WEIGHTS = ("imagenet", "none")
ALPHAS = get_backbone("MobileNet").alphas()  #: the widths a backbone may take
HEADERS = ("Candidate", "Features", "CA", "AUC", "F1", "Time (s)", "Note")
#: The default candidates run offline: MobileNet 0.25 (its weights ship with the
#: package) and two of its middle layers.
DEFAULT_LAYERS = ["MobileNet:conv_pw_11_relu", "MobileNet:conv_pw_7_relu"]
DEFAULT_CANDIDATES = ["MobileNet", *DEFAULT_LAYERS]
CACHED_TIP = "Its embeddings came from the cache: the seconds are only those of reading them."


@dataclass
class CompareOutcome:
    """What the worker hands back: scores (without their results), tables, who scored,
    and how many of each candidate's embeddings came from the cache."""

    scores: list[Score]
    tables: dict[str, Table]
    scorer: str
    cached: dict[str, tuple[int, int]] = field(default_factory=dict)  #: label -> (cached, n)


def run(make_source: Callable, candidates: list[Candidate], settings: dict, folds: int,
        data: Table | None, learner: Learner | None, state: TaskState) -> CompareOutcome:
    """Embed and score every candidate; runs in the worker thread."""
    source = build_source(make_source, state)
    extra = {} if learner is None else {"estimator": OrangeLearnerClassifier(learner)}
    scores = compare(source, candidates, settings, folds, TaskHooks(state), **extra)
    outcome = CompareOutcome(scores, {}, scorer_name(learner))
    for score in scores:
        label = score.candidate.label
        if score.result is not None and len(score.result):
            outcome.tables[label] = embeddings_table(score.result, data)
            outcome.cached[label] = (score.result.n_cached, len(score.result))
        score.result = None  # the tables hold what the outputs need
    return outcome


def scores_table(outcome: CompareOutcome) -> Table:
    """A row per candidate, best CA first: the scores, what the candidate is, who scored
    and how many of its embeddings came from the cache."""
    numbers = [ContinuousVariable(name) for name in ("features", "CA", "AUC", "F1", "CA sd",
                                                     "seconds", "cached")]
    metas = [StringVariable(name) for name in ("candidate", "backbone", "layer", "learner",
                                               "note")]
    rows = ranked(outcome.scores)
    X = np.array([[np.nan if v is None else v
                   for v in (s.features, s.ca, s.auc, s.f1, s.spread, s.seconds,
                             outcome.cached.get(s.candidate.label, (None,))[0])]
                  for s in rows], float).reshape(len(rows), len(numbers))
    M = np.array([[s.candidate.label, s.candidate.model, s.candidate.layer, outcome.scorer,
                   s.error or ""] for s in rows], object).reshape(len(rows), len(metas))
    table = Table.from_numpy(Domain(numbers, None, metas), X, None, M)
    table.name = "Scores"
    return table


class OWCompareBackbones(OWWidget, WorkerNewsMixin, RunControlMixin, ConcurrentWidgetMixin,
                         ImageSourceMixin, EmbeddingOptionsMixin):
    name = "Compare Backbones"
    description = ("Compare backbones and their layers as representations of labelled "
                   "images: cross-validated scores side by side.")
    icon = "icons/compare-backbones.svg"
    priority = 20
    category = "Transfer Embed"
    keywords = "compare, representation, backbone, layer, embedding, transfer learning"

    settings_version = 2
    settingsHandler = DomainContextHandler()
    doing = "comparing"

    class Inputs:
        images = Input("Images", Table)
        learner = Input("Learner", Learner)

    class Outputs:
        embeddings = Output("Embeddings", Table, default=True)
        scores = Output("Scores", Table)

    class Error(ImageSourceMixin.Error):
        source = Msg("{}")
        settings = Msg("{}")
        failed = Msg("Comparing failed: {}")
        learner = Msg("{} cannot score: {} Connect a classifier, such as Neural Network "
                      "or kNN.")

    class Warning(WorkerNewsMixin.Warning):
        failed_candidates = Msg("{}")

    class Information(WorkerNewsMixin.Information, ImageSourceMixin.Information):
        choose = Msg("{}")
        cancelled = Msg("Cancelled. Press Apply to compare again.")

    checked: list[str] = Setting(DEFAULT_CANDIDATES)
    extra: list[str] = Setting(DEFAULT_LAYERS)  #: BACKBONE:LAYER candidates the user added
    alpha = Setting(0.25)
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
        self.learner: Learner | None = None
        self.layer_lister = LayerLister(self._layers_listed)
        self.setup_source_box(self.settings_changed)
        self._setup_candidates_box()
        self.setup_options_box(self.settings_changed)
        self.status_label = gui.widgetLabel(self.controlArea, "Nothing compared yet.")
        self.status_label.setWordWrap(True)
        self.setup_run_buttons(self.cancel_comparing)
        self._setup_main_area()
        if self.source != "table":  # a workflow's own source: compare on opening
            self.commit.deferred()

    # --- the GUI -------------------------------------------------------------------------

    def sizeHint(self):
        return QSize(1100, 720)

    def _setup_candidates_box(self):
        box = gui.vBox(self.controlArea, "Candidates")
        self.controlArea.layout().setStretchFactor(box, 1)  # the list takes the height
        self.candidate_model = QStandardItemModel()
        self.candidate_view = QListView(minimumHeight=100)
        self.candidate_view.setSizePolicy(QSizePolicy.Policy.Preferred,
                                          QSizePolicy.Policy.Expanding)
        self.candidate_view.setModel(self.candidate_model)
        box.layout().addWidget(self.candidate_view)
        self._filling = False
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
        row = gui.hBox(box)
        gui.comboBox(row, self, "alpha_index", label="Width:",
                     orientation=Qt.Orientation.Horizontal, items=[f"{a:g}" for a in ALPHAS],
                     callback=self._width_changed,
                     tooltip="MobileNet's width (alpha), for the backbones that have one")
        gui.comboBox(row, self, "weights_index", label="Weights:",
                     orientation=Qt.Orientation.Horizontal,
                     items=["ImageNet", "None (random)"], callback=self.settings_changed)
        gui.spin(row, self, "folds", 2, 20, label="Folds:", callback=self.settings_changed,
                 controlWidth=48, tooltip="Cross-validation folds")

    def _candidate_text(self, label: str) -> str:
        candidate = Candidate.parse(label)
        backbone = get_backbone(candidate.model)
        alpha = backbone.usable_alpha(self.alpha)
        size = f"{backbone.features(alpha)} features" if candidate.layer == DEFAULT_LAYER \
            else "layer"  # its name is in the label
        return f"{candidate.label} ({size}; {weights_where(backbone, alpha)})"

    def _candidate_labels(self) -> list[str]:
        """Each backbone, followed by the layers of it that were added."""
        labels = []
        for model in BACKBONES:
            labels.append(model)
            labels += [label for label in self.extra if Candidate.parse(label).model == model]
        return labels + [label for label in self.extra if label not in labels]

    def _fill_candidates(self):
        """The list, anew (the view hears of every row: no signals are blocked)."""
        self._filling = True
        try:
            self.candidate_model.clear()
            for label in self._candidate_labels():
                item = QStandardItem(self._candidate_text(label))
                item.setData(label, Qt.ItemDataRole.UserRole)
                item.setCheckable(True)
                item.setEditable(False)
                item.setCheckState(Qt.CheckState.Checked if label in self.checked
                                   else Qt.CheckState.Unchecked)
                self.candidate_model.appendRow(item)
        finally:
            self._filling = False

    def _update_candidate_texts(self):
        """The rows' texts for the width now (and the weights now on this machine)."""
        self._filling = True
        try:
            for row in range(self.candidate_model.rowCount()):
                item = self.candidate_model.item(row)
                item.setText(self._candidate_text(item.data(Qt.ItemDataRole.UserRole)))
        finally:
            self._filling = False

    def _setup_main_area(self):
        self.scorer_label = gui.widgetLabel(self.mainArea, "")
        self.score_model = QStandardItemModel()
        self.score_model.setHorizontalHeaderLabels(HEADERS)
        view = QAbstractItemView
        self.score_view = QTableView(selectionBehavior=view.SelectionBehavior.SelectRows,
                                     selectionMode=view.SelectionMode.SingleSelection,
                                     editTriggers=view.EditTrigger.NoEditTriggers,
                                     wordWrap=False)
        self.score_view.setModel(self.score_model)
        self.score_view.verticalHeader().hide()
        header = self.score_view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(HEADERS) - 1, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(True)
        self.score_view.selectionModel().selectionChanged.connect(self._row_selected)
        self.mainArea.layout().addWidget(self.score_view)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumHeight(220)
        self.plot.setLabel("bottom", "classification accuracy (CA), mean ± sd over folds")
        self.plot.setXRange(0, 1.12)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.mainArea.layout().addWidget(self.plot)
        self._show_scorer()

    def _show_scorer(self):
        self.scorer_label.setText(f"Scored by {scorer_name(self.learner)}, "
                                  f"{self.folds}-fold cross-validation.")

    # --- reacting to the user and the input --------------------------------------------

    def _candidate_toggled(self, item: QStandardItem):
        if self._filling:
            return
        label = item.data(Qt.ItemDataRole.UserRole)
        checked = [c for c in self.checked if c != label]
        if item.checkState() == Qt.CheckState.Checked:
            checked.append(label)
        self.checked = checked
        self.settings_changed()

    def _width_changed(self):
        self._update_candidate_texts()
        self.settings_changed()

    def _layer_model_changed(self):
        self.layer_combo.clear()
        known = self.layer_lister.known(self.layer_model, self._width(self.layer_model))
        self._show_layers(known)

    def _width(self, model: str) -> float:
        return get_backbone(model).usable_alpha(self.alpha)

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
        row = self._candidate_labels().index(label)
        self.candidate_view.setCurrentIndex(self.candidate_model.index(row, 0))
        self.candidate_view.scrollTo(self.candidate_model.index(row, 0))
        self.settings_changed()

    @Inputs.images
    def set_data(self, data: Table | None):
        self.set_source_data(data)

    @Inputs.learner
    def set_learner(self, learner: Learner | None):
        self.learner = learner
        self._show_scorer()

    def handleNewSignals(self):
        self.commit.now()

    # --- running -------------------------------------------------------------------------

    def _settings(self) -> dict:
        return {"weights": None if self.weights == "none" else "imagenet",
                "alpha": float(self.alpha), "batch_size": self.batch_size,
                "resize": self.resize_policy, "precision": self.precision,
                "cache": bool(self.use_cache)}

    def _candidates(self) -> list[Candidate]:
        return [Candidate.parse(label) for label in self._candidate_labels()
                if label in self.checked]

    @gui.deferred
    def commit(self):
        self.cancel()
        self.run_ended()
        self.clear_messages()
        self._show_scorer()
        request = self.source_request(labelled=True)
        self.show_source_problem(request)
        candidates = self._candidates()
        if request.make is not None and not candidates:
            self.Information.choose("Check at least one candidate.")
        if request.make is None or not candidates:
            self._show(None)
            return
        learner = self.learner
        problem = None if learner is None else why_not_a_classifier(learner)
        if problem:
            self.Error.learner(scorer_name(learner), problem)
            self._show(None)
            return
        self.status_label.setText(f"Comparing {len(candidates)} candidates...")
        self.start_run(run, request.make, candidates, self._settings(), self.folds,
                       request.data, learner)

    def cancel_comparing(self):
        """The Cancel button: stop comparing (the engine stops a conversion too)."""
        self.cancel_run()

    def on_done(self, outcome: CompareOutcome):
        self.run_ended()
        self._show(outcome)
        self._update_candidate_texts()  # the weights may be on this machine now

    def on_exception(self, ex: Exception):
        self.run_ended()
        self._show(None)
        if isinstance(ex, EmbeddingCancelled):
            self.Information.cancelled()
        elif isinstance(ex, SourceError):
            self.Error.source(gui_message(ex))
        elif isinstance(ex, TransferEmbedError):
            self.Error.settings(gui_message(ex))
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
        self.scorer_label.setText(f"Scored by {outcome.scorer}, {self.folds}-fold "
                                  f"cross-validation.")
        rows = ranked(outcome.scores)
        for score in rows:
            self.score_model.appendRow(_score_items(score, outcome.cached))
        self.score_view.resizeColumnsToContents()
        failed = [f"{s.candidate.label}: {s.error}" for s in rows if s.error]
        if failed:
            self.Warning.failed_candidates("; ".join(failed))
        top = best(outcome.scores)
        self.status_label.setText(f"Best: {top.candidate.label}, CA {top.ca:.3f}."
                                  if top else "No candidate could be scored.")
        self._plot(rows)
        self.Outputs.scores.send(scores_table(outcome))
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
        """Bars of CA with their spread, the best green, each value right of its
        error bar."""
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
        for y, value, sd in zip(positions, ca, spread, strict=True):
            label = pg.TextItem(f"{value:.3f}", color="k", anchor=(0, 0.5))
            label.setPos(value + sd + 0.015, y)  # right of the error bar's end
            self.plot.addItem(label)
        self.plot.setXRange(0, max(1.0, float(np.max(ca + spread))) + 0.14)
        self.plot.getAxis("left").setTicks([[(i, s.candidate.label)
                                             for i, s in enumerate(shown)]])
        self.plot.setYRange(-0.6, len(shown) - 0.4)

    def value_labels(self) -> list[pg.TextItem]:
        """The chart's value labels (for tests and reports)."""
        return [item for item in self.plot.getPlotItem().items
                if isinstance(item, pg.TextItem)]

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
        self.shutdown()  # cancels the run (the engine stops a conversion) and waits
        self.layer_lister.shutdown()
        super().onDeleteWidget()

    def send_report(self):
        self.report_items((("Images", self.source_description()),
                           ("Candidates", ", ".join(c.label for c in self._candidates())),
                           ("Weights", self.weights), ("Folds", self.folds),
                           ("Scored by", scorer_name(self.learner)),
                           ("Result", self.status_label.text())))
        if self.outcome is not None:
            self.report_table("Scores", self.score_view)

    @classmethod
    def migrate_settings(cls, settings: dict, version: int | None):
        """Version 2: the defaults run offline (MobileNet 0.25 and two of its layers);
        settings saved before keep what they meant (ResNet50 and MobileNet at width 1),
        and ``resize`` is ``resize_policy``, as in Transfer Embedding."""
        if version is None or version < 2:
            settings.setdefault("checked", ["MobileNet", "ResNet50"])
            settings.setdefault("extra", [])
            settings.setdefault("alpha", 1.0)
            if "resize" in settings:
                settings["resize_policy"] = settings.pop("resize")


def _score_items(score: Score, cached: dict[str, tuple[int, int]]) -> list[QStandardItem]:
    def number(value, digits=3):
        return "" if value is None else f"{value:.{digits}f}"

    n_cached, n = cached.get(score.candidate.label, (0, 0))
    seconds = number(score.seconds, 1) if score.error is None or score.features else ""
    if n and n_cached == n:
        seconds += " (cached)"
    elif n_cached:
        seconds += f" ({n_cached} cached)"
    texts = [score.candidate.label, "" if score.features is None else str(score.features),
             number(score.ca), number(score.auc), number(score.f1), seconds,
             score.error or ""]
    items = [QStandardItem(text) for text in texts]
    items[0].setData(score.candidate.label, Qt.ItemDataRole.UserRole)
    for item, text in zip(items, texts, strict=True):
        item.setToolTip(text)
    if n_cached:
        items[5].setToolTip(CACHED_TIP if n_cached == n
                            else f"{n_cached} of {n} embeddings came from the cache.")
    for item in items[1:6]:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return items


if __name__ == "__main__":  # pragma: no cover
    WidgetPreview(OWCompareBackbones).run()
