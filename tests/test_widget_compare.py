"""The Compare Backbones widget where users meet it (issue 17): on Import Images' table
and on each file source, reopened from a workflow, with a learner on its input, and
read at its default size. Real widgets, real Keras models (random weights unless the
shared MobileNet 0.25 file is at hand)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from AnyQt.QtCore import Qt
from Orange.classification import KNNLearner, LogisticRegressionLearner
from Orange.widgets.model.owknn import OWKNNLearner
from Orange.widgets.tests import base
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from test_widget import (
    MOBILENET_025,
    assert_run_stopped,
    cancel_then_tick_apply_automatically,
    import_images_table,
    listen,
)

from orangecontrib.transferembed.cli.demo import make_demo_images, make_demo_npy
from orangecontrib.transferembed.widgets.learner import OrangeLearnerClassifier
from orangecontrib.transferembed.widgets.owcomparebackbones import (
    DEFAULT_CANDIDATES,
    OWCompareBackbones,
)
from orangecontrib.transferembed.widgets.owtransferembedding import OWTransferEmbedding

TIMEOUT_MS = 180_000
RANDOM = {"checked": ["MobileNet"], "extra": [], "alpha": 0.25, "weights": "none", "folds": 2}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    """20 drawn images of circles and squares, one subfolder per class, a CSV and a npy pair."""
    root = tmp_path_factory.mktemp("drawn_compare")
    make_demo_images(root / "images", per_class=10, size=64)
    make_demo_npy(root / "images", root)
    lines = [f"{cls},{root / 'images' / cls / name}" for cls in ("circles", "squares")
             for name in sorted(os.listdir(root / "images" / cls))]
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return root


def items_of(root: Path) -> list[tuple[str, str]]:
    return [(cls, f"{cls}/{name}") for cls in ("circles", "squares")
            for name in sorted(os.listdir(root / "images" / cls))]


class CompareCase(base.WidgetTest):
    settings = RANDOM

    @pytest.fixture(autouse=True)
    def _drawn(self, drawn, tmp_path):
        self.drawn, self.tmp = drawn, tmp_path

    def setUp(self):
        self.widget = self.create_widget(OWCompareBackbones, stored_settings=dict(self.settings))

    def table(self):
        return import_images_table(self.drawn / "images", items_of(self.drawn))

    def wait(self, widget=None):
        self.wait_until_finished(widget=widget or self.widget, timeout=TIMEOUT_MS)
        return self.get_output((widget or self.widget).Outputs.scores, widget=widget)


class TestSources(CompareCase):
    def test_import_images_table_is_scored_against_its_class(self):
        self.send_signal(self.widget.Inputs.images, self.table())
        scores = self.wait()
        assert scores is not None and len(scores) == 1
        assert list(scores.get_column("note")) == [""]
        assert 0 <= scores.get_column("CA")[0] <= 1
        out = self.get_output(self.widget.Outputs.embeddings)
        assert out.domain.class_var.name == "category" and len(out) == 20

    def test_rows_without_a_class_are_left_out_of_scoring(self):
        data = self.table()
        with data.unlocked(data.Y):
            data.Y[:2] = np.nan
        self.send_signal(self.widget.Inputs.images, data)
        scores = self.wait()
        assert list(scores.get_column("note")) == [""]
        assert len(self.get_output(self.widget.Outputs.embeddings)) == 18

    def test_each_file_source(self):
        sources = {"folder": {"folder_path": str(self.drawn / "images")},
                   "csv": {"csv_path": str(self.drawn / "list.csv")},
                   "npy": {"npy_data_path": str(self.drawn / "demo_images.npy"),
                           "npy_labels_path": str(self.drawn / "demo_labels.npy"),
                           "npy_height": 64, "npy_width": 64, "npy_channels": 3}}
        for kind, paths in sources.items():
            widget = self.create_widget(OWCompareBackbones, stored_settings={
                **self.settings, "source": kind, **paths})
            widget.commit.now()
            scores = self.wait(widget)
            assert scores is not None, kind
            assert list(scores.get_column("note")) == [""], kind

    def test_reopened_on_folder_keeps_it_when_a_table_arrives(self):
        widget = self.create_widget(OWCompareBackbones, stored_settings={
            **self.settings, "source": "folder", "folder_path": str(self.drawn / "images")})
        assert widget.source_pages.currentIndex() == 1
        assert widget.controls.source_index.currentIndex() == 1
        self.send_signal(widget.Inputs.images, self.table(), widget=widget)
        assert widget.source == "folder"
        assert widget.source_pages.currentIndex() == 1
        assert widget.controls.source_index.currentIndex() == 1
        assert widget.Information.input_unused.is_shown()
        assert "folder" in str(widget.Information.input_unused)
        self.wait(widget)
        out = self.get_output(widget.Outputs.embeddings, widget=widget)
        assert out.domain.class_var.name == "Class"  # from the folder, not the table

    def test_a_table_is_taken_where_no_file_was_chosen(self):
        self.widget.set_source_kind("folder")
        self.send_signal(self.widget.Inputs.images, self.table())
        assert self.widget.source == "table"
        assert self.widget.controls.source_index.currentIndex() == 0
        assert self.widget.source_pages.currentIndex() == 0

    def test_no_image_column_is_a_flag_not_a_text(self):
        from Orange.data import ContinuousVariable, Domain, Table

        data = Table.from_numpy(Domain([ContinuousVariable("x")]), np.ones((3, 1)))
        self.send_signal(self.widget.Inputs.images, data)
        assert self.widget.Error.no_image_column.is_shown()
        request = self.widget.source_request()
        assert request.no_image_column and request.missing is None
        for module in ("owcomparebackbones", "owtransferembedding"):
            text = (Path(OWTransferEmbedding.__module__.replace(".", "/")).parent
                    / f"{module}.py")
            source = (Path(__file__).parents[1] / text).read_text()
            assert '"no image column"' not in source, module


class TestCandidates(CompareCase):
    def rows(self):
        model = self.widget.candidate_model
        return [model.item(r).text() for r in range(model.rowCount())]

    def test_defaults_run_offline_mobilenet_and_two_of_its_layers(self):
        widget = self.create_widget(OWCompareBackbones)
        assert widget.alpha == 0.25 and widget.weights == "imagenet"
        assert widget.checked == DEFAULT_CANDIDATES
        assert DEFAULT_CANDIDATES[0] == "MobileNet" and len(DEFAULT_CANDIDATES) == 3
        assert all(c.startswith("MobileNet:") for c in DEFAULT_CANDIDATES[1:])
        labels = [c.label for c in widget._candidates()]
        assert labels == DEFAULT_CANDIDATES

    def test_old_workflow_settings_keep_their_candidates(self):
        widget = self.create_widget(OWCompareBackbones, stored_settings={
            "weights": "none", "resize": "stretch", "__version__": 1})
        assert widget.checked == ["MobileNet", "ResNet50"] and widget.alpha == 1.0
        assert widget.extra == [] and widget.resize_policy == "stretch"

    def test_an_added_layer_is_shown_in_the_list_and_can_be_unticked(self):
        view, model = self.widget.candidate_view, self.widget.candidate_model
        self.widget.show()
        heard = []
        model.rowsInserted.connect(lambda *_: heard.append("rows"))
        model.modelReset.connect(lambda *_: heard.append("reset"))
        self.widget._show_layers([type("Layer", (), {"name": "conv_pw_7_relu",
                                                     "features": 128})()])
        self.widget._add_layer()
        assert heard, "the view heard nothing of the new row"
        row = next(r for r, t in enumerate(self.rows())
                   if t.startswith("MobileNet:conv_pw_7_relu (layer; 2.1 MB"))
        assert self.rows()[row - 1].startswith("MobileNet (")
        index = model.index(row, 0)
        self.process_events()
        assert view.viewport().rect().intersects(view.visualRect(index))  # scrolled to it
        assert "MobileNet:conv_pw_7_relu" in self.widget.checked
        model.item(row).setCheckState(Qt.CheckState.Unchecked)
        assert "MobileNet:conv_pw_7_relu" not in self.widget.checked

    def test_rows_follow_the_width_at_once(self):
        self.widget.alpha = 1.0
        self.widget._width_changed()
        changed = []
        self.widget.candidate_model.dataChanged.connect(lambda *_: changed.append(1))
        self.widget.alpha_index = 0
        self.widget._width_changed()
        assert changed, "the view heard nothing of the new texts"
        assert any(t.startswith("MobileNet (256 features; 2.1 MB") for t in self.rows())

    def test_list_marks_weights_on_this_machine(self):
        data = os.environ.get("TRANSFEREMBED_TEST_DATA")
        if not data:
            self.skipTest("$TRANSFEREMBED_TEST_DATA is not set")
        home = self.tmp / "keras_home"
        (home / "models").mkdir(parents=True)
        shutil.copy(Path(data) / "weights" / MOBILENET_025, home / "models")
        os.environ["KERAS_HOME"] = str(home)
        try:
            widget = self.create_widget(OWCompareBackbones)
            te = self.create_widget(OWTransferEmbedding)
        finally:
            del os.environ["KERAS_HOME"]
        model = widget.candidate_model
        texts = [model.item(r).text() for r in range(model.rowCount())]
        assert any(t.startswith("MobileNet (256 features; 2.1 MB, on this machine)")
                   for t in texts)
        assert te.model_combo.currentText() == \
            "MobileNet (256 features, 2.1 MB, on this machine)"
        resnet = next(te.model_combo.itemText(i) for i in range(te.model_combo.count())
                      if te.model_combo.itemText(i).startswith("ResNet50 "))
        assert resnet.endswith("to download)")


class TestRunning(CompareCase):
    def start(self):
        self.widget.batch_size = 2
        self.send_signal(self.widget.Inputs.images, self.table())
        state = self.widget.task
        assert state is not None
        return state

    def test_cancel_is_enabled_only_while_comparing(self):
        assert not self.widget.cancel_button.isEnabled()
        self.start()
        assert self.widget.cancel_button.isEnabled()
        self.wait()
        assert not self.widget.cancel_button.isEnabled()

    def test_a_changed_setting_cancels_the_run_with_apply_automatically_off(self):
        assert not self.widget.auto_apply
        state = self.start()
        self.widget.weights_index = 0
        self.widget.settings_changed()  # what the Weights combo calls
        assert_run_stopped(self.widget, state)

    def test_ticking_a_candidate_cancels_the_run(self):
        state = self.start()
        item = self.widget.candidate_model.item(0)
        item.setCheckState(Qt.CheckState.Checked)
        assert state.is_interruption_requested()

    def test_removing_the_widget_cancels_the_run(self):
        state = self.start()
        self.widget.onDeleteWidget()
        assert state.is_interruption_requested() and state.future.done()

    def test_cancel_then_apply_automatically_runs(self):
        self.widget.auto_apply = True
        self.widget.apply_box.checkbox.setChecked(True)
        self.start()
        cancel_then_tick_apply_automatically(self.widget, self.widget.cancel_comparing)
        assert self.wait() is not None

    def test_one_news_handler_shows_notices_downloads_and_stages(self):
        assert OWCompareBackbones.on_partial_result is OWTransferEmbedding.on_partial_result
        widget = self.widget
        widget.progressBarInit()
        widget.on_partial_result(("notice", "MobileNet runs on Keras fp32"))
        assert "runs on Keras" in str(widget.Warning.notices)
        widget.on_partial_result(("download", 5_000_000, 10_000_000))
        assert "5.0 of 10.0 MB" in str(widget.Information.downloading)
        widget.on_partial_result(("status", "Converting MobileNet to TFLite fp32"))
        assert "Converting MobileNet" in str(widget.Information.stage)
        assert not widget.Information.downloading.is_shown()
        widget._stage_started -= 5
        widget._stage_tick()
        assert "5 s" in str(widget.Information.stage)  # the seconds move
        widget.on_partial_result(("status", None))
        assert not widget.Information.stage.is_shown()

    def test_stages_are_told_while_comparing(self):
        heard = listen(self.widget)
        self.send_signal(self.widget.Inputs.images, self.table())
        self.wait()
        stages = [m[1] for m in heard if m[0] == "status"]
        assert any(s and s.startswith("Embedding with MobileNet") for s in stages)
        assert any(s and s.startswith("Loading ") for s in stages)  # TensorFlow, the model


class TestScores(CompareCase):
    settings = {**RANDOM, "checked": ["MobileNet", "MobileNet:conv_pw_11_relu"],
                "extra": ["MobileNet:conv_pw_11_relu"]}

    def test_readable_at_the_default_size(self):
        self.widget.show()
        self.widget.resize(self.widget.sizeHint())
        self.send_signal(self.widget.Inputs.images, self.table())
        self.wait()
        self.process_events()
        view, model = self.widget.score_view, self.widget.score_model
        metrics = view.fontMetrics()
        for row in range(model.rowCount()):
            for column in range(5):
                text = model.item(row, column).text()
                assert metrics.horizontalAdvance(text) < view.columnWidth(column), text
            for column in (2, 3, 4):
                text = model.item(row, column).text()
                assert len(text.split(".")[1]) == 3, text
        assert "Scored by logistic regression" in self.widget.scorer_label.text()

    def test_options_are_not_cut_by_a_scrollbar_at_the_default_size(self):
        from AnyQt.QtWidgets import QScrollArea

        self.widget.show()
        self.widget.resize(1066, 666)  # what Qt gives it on a 1600x1000 screen (2/3 of it)
        self.process_events()
        area = next(a for a in self.widget.findChildren(QScrollArea)
                    if a.isAncestorOf(self.widget.controlArea))
        assert not area.verticalScrollBar().isVisible()

    def test_value_labels_are_clear_of_the_error_bars(self):
        self.send_signal(self.widget.Inputs.images, self.table())
        self.wait()
        shown = [s for s in self.widget.outcome.scores if s.ca is not None]
        labels = self.widget.value_labels()
        assert len(labels) == len(shown)
        ends = sorted(s.ca + (s.spread or 0) for s in shown)
        assert all(label.pos().x() > end for label, end in
                   zip(sorted(labels, key=lambda item: item.pos().x()), ends, strict=True))

    def test_cached_candidates_are_marked_as_cached(self):
        self.send_signal(self.widget.Inputs.images, self.table())
        self.wait()
        self.widget.commit.now()
        self.wait()
        model = self.widget.score_model
        times = [model.item(r, 5) for r in range(model.rowCount())]
        assert all(item.text().endswith("(cached)") for item in times), \
            [item.text() for item in times]
        assert "from the cache" in times[0].toolTip()
        scores = self.get_output(self.widget.Outputs.scores)
        assert list(scores.get_column("cached")) == [20, 20]


class TestLearner(CompareCase):
    def test_adapter_is_a_scikit_learn_classifier(self):
        rng = np.random.default_rng(0)
        X = np.vstack([rng.normal(0, 1, (20, 3)), rng.normal(3, 1, (20, 3))])
        y = np.array(["a"] * 20 + ["b"] * 20)
        knn_widget = self.create_widget(OWKNNLearner)
        fitter = self.get_output(knn_widget.Outputs.learner, widget=knn_widget)
        for learner in (KNNLearner(), fitter):  # the kNN widget sends a fitter
            estimator = OrangeLearnerClassifier(learner)
            copy = clone(estimator)
            assert copy.learner is learner and copy is not estimator
            assert cross_val_score(copy, X, y, cv=4).mean() > 0.9
            proba = copy.fit(X, y).predict_proba(X)
            assert proba.shape == (40, 2) and np.allclose(proba.sum(axis=1), 1)
            assert list(copy.classes_) == ["a", "b"]
        assert OrangeLearnerClassifier(fitter).name == "kNN"

    def test_scores_with_the_learner_on_its_input(self):
        knn_widget = self.create_widget(OWKNNLearner)
        learner = self.get_output(knn_widget.Outputs.learner, widget=knn_widget)
        self.send_signal(self.widget.Inputs.learner, learner)
        self.send_signal(self.widget.Inputs.images, self.table())
        scores = self.wait()
        assert list(scores.get_column("learner")) == ["kNN"]
        assert "Scored by kNN" in self.widget.scorer_label.text()
        self.send_signal(self.widget.Inputs.learner, None)
        scores = self.wait()
        assert "logistic regression" in scores.get_column("learner")[0]

    def test_a_regression_learner_is_refused_in_words(self):
        from Orange.regression import LinearRegressionLearner

        self.send_signal(self.widget.Inputs.learner, LinearRegressionLearner())
        self.send_signal(self.widget.Inputs.images, self.table())
        assert self.widget.task is None
        message = str(self.widget.Error.learner)
        assert "linear regression cannot score" in message and "classifier" in message
        assert self.get_output(self.widget.Outputs.scores) is None
        self.send_signal(self.widget.Inputs.learner, None)
        assert not self.widget.Error.learner.is_shown() and self.widget.task is not None
        self.wait()

    def test_learner_input_is_named_as_in_test_and_score(self):
        assert OWCompareBackbones.Inputs.learner.name == "Learner"
        self.send_signal(self.widget.Inputs.learner, LogisticRegressionLearner())
        assert "Scored by logistic regression" in self.widget.scorer_label.text()


class TestExampleWorkflow(CompareCase):
    WORKFLOW = "140-compare-representations.ows"

    def workflow(self) -> tuple[Path, str]:
        from orangecontrib.transferembed import tutorials

        folder = Path(tutorials.__file__).parent
        return folder, (folder / self.WORKFLOW).read_text(encoding="utf-8")

    def test_links_compare_learner_and_test_and_score(self):
        import re

        _, text = self.workflow()
        nodes = dict(re.findall(r'<node id="(\d+)" name="([^"]+)"', text))
        links = {(nodes[a], channel, nodes[b]) for a, b, channel in re.findall(
            r'source_node_id="(\d+)" sink_node_id="(\d+)" source_channel="[^"]+" '
            r'sink_channel="([^"]+)"', text)}
        assert {("Neural Network", "Learner", "Compare Backbones"),
                ("Compare Backbones", "Data", "Test and Score"),
                ("Neural Network", "Learner", "Test and Score")} <= links
        assert "mobilenet_2_5_224_tf_no_top.h5" in text  # the note says it, for offline
        assert "Import Images" in text  # and how to use Import Images instead

    def test_runs_on_the_shipped_shapes(self):
        import ast
        import re

        folder, text = self.workflow()
        node = re.search(r'<node id="(\d+)" name="Compare Backbones"', text).group(1)
        stored = ast.literal_eval(re.search(
            rf'<properties node_id="{node}" format="literal">(.*?)</properties>',
            text).group(1))
        assert (stored["weights"], stored["alpha"]) == ("imagenet", 0.25)
        assert stored["checked"] == DEFAULT_CANDIDATES
        assert (stored["source"], stored["folder_path"]) == ("folder", "shapes")
        stored.update(weights="none", folds=2)  # no network here: the images are the point
        widget = self.create_widget(OWCompareBackbones, stored_settings=stored,
                                    env={"basedir": str(folder)})
        scores = self.wait(widget)  # it compares on opening
        assert len(scores) == 3 and list(scores.get_column("note")) == [""] * 3

    def test_import_images_output_is_scored(self):
        from orangecontrib.imageanalytics.widgets import owimageimport  # the test extra

        folder, _ = self.workflow()
        importer = self.create_widget(owimageimport.OWImportImages)
        importer.setCurrentPath(str(folder / "shapes"))
        importer.start()
        images = self.get_output(importer.Outputs.data, widget=importer, wait=TIMEOUT_MS)
        assert len(images) == 24
        self.send_signal(self.widget.Inputs.images, images)
        scores = self.wait()
        assert len(scores) == 1 and list(scores.get_column("note")) == [""]
