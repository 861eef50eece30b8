"""The Transfer Embedding widget, with real Orange widgets and real Keras models.

Most tests run on images they draw (as ``transferembed demo`` does) with random
weights, so that a fresh clone tests the widget; the few that need real photos
and ImageNet weights read them from ``$TRANSFEREMBED_TEST_DATA``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from AnyQt.QtCore import QTimer
from AnyQt.QtWidgets import QWidget
from Orange.data import ContinuousVariable, DiscreteVariable, Domain, StringVariable, Table
from Orange.widgets.evaluate.owtestandscore import OWTestAndScore
from Orange.widgets.model.owneuralnetwork import OWNNLearner
from Orange.widgets.tests import base
from Orange.widgets.utils.concurrent import ConcurrentWidgetMixin
from Orange.widgets.widget import OWWidget
from orangewidget.widget import OWBaseWidget

from orangecontrib.transferembed.cli.demo import make_demo_images, make_demo_npy
from orangecontrib.transferembed.widgets.owtransferembedding import OWTransferEmbedding

TIMEOUT_MS = 180_000
#: Random weights: no download, no shared data.
RANDOM = {"model_name": "MobileNet", "alpha": 0.25, "weights": "none"}
DATA_ENV = "TRANSFEREMBED_TEST_DATA"
MOBILENET_025 = "mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    """24 drawn images of circles and squares, one subfolder per class, and their npy pair."""
    root = tmp_path_factory.mktemp("drawn")
    make_demo_images(root / "images", per_class=12, size=64)
    make_demo_npy(root / "images", root)
    return root


def import_images_table(root: Path, items: list[tuple[str, str]]) -> Table:
    """A table shaped like Image Analytics' Import Images output."""
    image = StringVariable("image")
    image.attributes.update(type="image", origin=str(root))
    classes = sorted({c for c, _ in items})
    category = DiscreteVariable("category", values=classes)
    domain = Domain([], category, [StringVariable("image name"), image,
                                   ContinuousVariable("size")])
    metas = np.array([[Path(p).stem, p, 1000.0] for _, p in items], object)
    y = np.array([classes.index(c) for c, _ in items], float)
    return Table.from_numpy(domain, np.empty((len(items), 0)), y, metas)


def drawn_items(drawn: Path, per_class: int) -> list[tuple[str, str]]:
    return [(cls, f"{cls}/{name}") for cls in ("circles", "squares")
            for name in sorted(os.listdir(drawn / "images" / cls))[:per_class]]


def listen(widget) -> list[tuple]:
    """The partial results that the widget's next task sends (its handler is connected
    when the task starts), collected as the widget handles them."""
    heard = []
    original = widget.on_partial_result

    def seen(message):
        heard.append(message)
        original(message)

    widget.on_partial_result = seen
    return heard


def assert_run_stopped(widget, state) -> None:
    """The run of ``state`` was told to stop, and the widget waits for Apply."""
    assert state.is_interruption_requested()
    assert widget.task is None and not widget.cancel_button.isEnabled()
    assert widget.apply_box.button.isEnabled()


def cancel_then_tick_apply_automatically(widget, cancel) -> None:
    """Cancel a run with Apply Automatically on, untick it (Apply stays usable, as the
    message says) and tick it again: a run starts."""
    cancel()
    assert widget.Information.cancelled.is_shown()
    checkbox, button = widget.apply_box.checkbox, widget.apply_box.button
    checkbox.click()
    assert not widget.auto_apply and button.isEnabled()
    checkbox.click()
    assert widget.task is not None


class WidgetCase(base.WidgetTest):
    settings = RANDOM

    def setUp(self):
        self.widget = self.create_widget(OWTransferEmbedding, stored_settings=dict(self.settings))

    def run_widget(self, widget=None, **settings):
        widget = widget or self.widget
        for name, value in settings.items():
            setattr(widget, name, value)
        widget.commit.now()
        self.wait_until_finished(widget=widget, timeout=TIMEOUT_MS)
        return self.get_output(widget.Outputs.embeddings, widget=widget)


class TestOnDrawnImages(WidgetCase):
    @pytest.fixture(autouse=True)
    def _drawn(self, drawn, tmp_path):
        self.drawn, self.tmp = drawn, tmp_path

    def test_folder_source(self):
        self.widget.path_rows["folder_path"].use(str(self.drawn / "images"))
        assert self.widget.source == "folder"
        assert self.widget.recent_folders == [str(self.drawn / "images")]
        self.wait_until_finished(timeout=TIMEOUT_MS)
        out = self.get_output(self.widget.Outputs.embeddings)
        assert len(out) == 24 and len(out.domain.attributes) == 256
        assert out.domain.class_var.name == "Class"
        assert out.domain.class_var.values == ("circles", "squares")
        assert out.domain.metas[0].name == "image"
        assert out.domain.metas[0].attributes["type"] == "image"
        assert self.get_output(self.widget.Outputs.skipped_images) is None
        assert self.widget.status_label.text().startswith("24 embedded, 0 skipped")

    def test_count_of_images_is_shown_before_the_embedding(self):
        found = listen(self.widget)
        self.widget.folder_path, self.widget.source = str(self.drawn / "images"), "folder"
        self.widget.commit.now()
        self.wait_until_finished(timeout=TIMEOUT_MS)
        assert ("found", "24 images in 2 classes") in found

    def test_import_images_table_with_missing_files(self):
        items = drawn_items(self.drawn, 3) + [("circles", "circles/missing-1.png"),
                                               ("squares", "squares/missing-2.png")]
        data = import_images_table(self.drawn / "images", items)
        self.send_signal(self.widget.Inputs.images, data)
        self.wait_until_finished(timeout=TIMEOUT_MS)
        out = self.get_output(self.widget.Outputs.embeddings)
        assert len(out) == 6
        assert [v.name for v in out.domain.attributes] == [f"n{i}" for i in range(256)]
        assert out.domain.class_var.name == "category"
        assert out.domain.metas == data.domain.metas
        np.testing.assert_array_equal(out.ids, data.ids[:6])
        skipped = self.get_output(self.widget.Outputs.skipped_images)
        assert list(skipped.get_column("image")) == [p for _, p in items[6:]]
        assert list(skipped.get_column("reason")) == ["file not found"] * 2
        assert self.widget.Warning.images_skipped.is_shown()
        assert "missing-1.png: file not found" in str(self.widget.Warning.images_skipped)

    def test_csv_with_a_blank_path_cell_skips_that_row(self):
        items = drawn_items(self.drawn, 2)
        csv = self.tmp / "list.csv"
        lines = [f"{c},{self.drawn / 'images' / p}" for c, p in items]
        lines.insert(2, "scratches,")
        csv.write_text("\n".join(lines) + "\n")
        out = self.run_widget(source="csv", csv_path=str(csv))
        assert len(out) == 4
        skipped = self.get_output(self.widget.Outputs.skipped_images)
        assert list(skipped.get_column("reason")) == ["no image path in this row"]
        assert not self.widget.Error.source.is_shown()

    def test_npy_source(self):
        out = self.run_widget(source="npy", npy_data_path=str(self.drawn / "demo_images.npy"),
                              npy_labels_path=str(self.drawn / "demo_labels.npy"),
                              npy_height=64, npy_width=64, npy_channels=3)
        assert len(out) == 24 and len(out.domain.attributes) == 256
        assert out.domain.class_var.values == ("circles", "squares")
        assert out.domain.metas[0].name == "row"

    def test_feature_layer_and_pooling(self):
        base_out = self.run_widget(source="folder", folder_path=str(self.drawn / "images"))
        layer = self.run_widget(layer="conv_pw_11_relu")
        assert len(layer.domain.attributes) == 128 and len(base_out.domain.attributes) == 256
        maximum = self.run_widget(pooling="max")
        assert not np.array_equal(layer.X, maximum.X)
        assert "layer conv_pw_11_relu" in self.widget.model_info.text()

    def test_layers_are_listed_in_the_background(self):
        assert self.widget.layer_combo.count() == 1  # "Default": nothing built yet
        self.widget._list_layers()
        deadline = time.monotonic() + 120
        while self.widget.layer_combo.count() == 1:
            self.process_events()
            assert time.monotonic() < deadline
        texts = [self.widget.layer_combo.itemText(i)
                 for i in range(self.widget.layer_combo.count())]
        assert "conv_pw_11_relu (128)" in texts

    def test_fast_precision(self):
        exact = self.run_widget(source="folder", folder_path=str(self.drawn / "images"))
        fast = self.run_widget(precision="int8")
        assert fast.X.shape == exact.X.shape
        from orangecontrib.transferembed.runtimes.base import int8_pays_off

        text = self.widget.precision_cost.text()
        assert "within a few percent" in text
        assert ("2 to 5 times faster" in text) == bool(int8_pays_off())

    def test_cancel_and_apply_again_with_apply_automatically_on(self):
        self.widget.auto_apply = True
        self.widget.batch_size = 2
        data = import_images_table(self.drawn / "images", drawn_items(self.drawn, 12))
        self.send_signal(self.widget.Inputs.images, data)
        state = self.widget.task
        assert state is not None and self.widget.cancel_button.isEnabled()
        self.widget.cancel_embedding()
        assert self.widget.task is None
        assert self.widget.Information.cancelled.is_shown()
        assert self.get_output(self.widget.Outputs.embeddings) is None
        button = self.widget.apply_box.button
        assert button.isEnabled() and button.text() == "Apply"
        button.click()
        self.wait_until_finished(timeout=TIMEOUT_MS)
        assert len(self.get_output(self.widget.Outputs.embeddings)) == 24
        started = time.perf_counter()
        while not state.future.done():
            time.sleep(0.05)
            assert time.perf_counter() - started < 30

    def test_new_input_restarts(self):
        first = import_images_table(self.drawn / "images", drawn_items(self.drawn, 12))
        second = import_images_table(self.drawn / "images", drawn_items(self.drawn, 1))
        self.send_signal(self.widget.Inputs.images, first)
        task = self.widget.task
        self.send_signal(self.widget.Inputs.images, second)
        assert self.widget.task is not task
        self.wait_until_finished(timeout=TIMEOUT_MS)
        assert len(self.get_output(self.widget.Outputs.embeddings)) == 2

    def test_event_loop_runs_while_embedding(self):
        # The work runs off the GUI thread: Qt timers keep firing until the result
        # arrives. (How long the loop ever waits is a figure of bench/widget.py.)
        data = import_images_table(self.drawn / "images", drawn_items(self.drawn, 12))
        ticks = []
        timer = QTimer(interval=10)
        timer.timeout.connect(lambda: ticks.append(self.widget.task is not None))
        timer.start()
        self.send_signal(self.widget.Inputs.images, data)
        assert self.widget.task is not None  # send_signal returned with the task running
        self.wait_until_finished(timeout=TIMEOUT_MS)
        timer.stop()
        assert len(self.get_output(self.widget.Outputs.embeddings)) == 24
        assert sum(ticks) >= 2, "no timer tick while the embedding ran"

    def test_end_to_end_on_real_photos_with_neural_network_and_test_and_score(self):
        data = os.environ.get(DATA_ENV)
        if not data:
            self.skipTest(f"${DATA_ENV} is not set")
        root = Path(data) / "images" / "hymenoptera"
        home = self.tmp / "keras_home"
        (home / "models").mkdir(parents=True)
        shutil.copy(Path(data) / "weights" / MOBILENET_025, home / "models")
        os.environ["KERAS_HOME"] = str(home)
        try:
            items = [(cls, f"train/{cls}/{name}") for cls in ("ants", "bees")
                     for name in sorted(os.listdir(root / "train" / cls))[:30]]
            self.widget.weights = "imagenet"
            self.send_signal(self.widget.Inputs.images, import_images_table(root, items))
            self.wait_until_finished(timeout=TIMEOUT_MS)
        finally:
            del os.environ["KERAS_HOME"]
        embeddings = self.get_output(self.widget.Outputs.embeddings)
        assert len(embeddings) == 60
        learner_widget = self.create_widget(OWNNLearner)
        learner = self.get_output(learner_widget.Outputs.learner, widget=learner_widget)
        scorer = self.create_widget(OWTestAndScore)
        scorer.n_folds = 1  # 5 folds
        self.send_signal(scorer.Inputs.train_data, embeddings, widget=scorer)
        self.send_signal(scorer.Inputs.learner, learner, 0, widget=scorer)
        self.wait_until_finished(widget=scorer, timeout=TIMEOUT_MS)
        results = self.get_output(scorer.Outputs.evaluations_results, widget=scorer)
        ca = float(np.mean(results.predicted[0] == results.actual))
        assert ca >= 0.8, ca

    def test_cancel_while_the_source_is_built(self):
        folder = self.tmp / "many" / "a"
        folder.mkdir(parents=True)
        for i in range(20000):
            (folder / f"{i:05d}.png").touch()
        self.widget.batch_size = 2
        self.widget.folder_path, self.widget.source = str(folder.parent), "folder"
        self.widget.commit.now()
        state = self.widget.task
        started = time.perf_counter()
        self.widget.cancel_embedding()
        while not state.future.done():  # the figure (under 1 s) is bench/faults.py's
            time.sleep(0.01)
            assert time.perf_counter() - started < 30


class TestSettingsAndLayout(WidgetCase):
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path):
        self.tmp = tmp_path

    def test_settings_round_trip(self):
        csv = str(self.tmp / "x.csv")
        self.widget.model_name, self.widget.alpha = "MobileNet", 0.5
        self.widget._update_model_controls()
        self.widget.source, self.widget.csv_path = "csv", csv
        self.widget.weights, self.widget.batch_size = "none", 7
        self.widget.input_size, self.widget.resize_policy = "native", "stretch"
        self.widget.layer, self.widget.pooling, self.widget.precision = "conv1", "max", "int8"
        settings = self.widget.settingsHandler.pack_data(self.widget)
        assert settings["model_name"] == "MobileNet" and settings["alpha"] == 0.5
        assert settings["__version__"] == 3
        copy = self.create_widget(OWTransferEmbedding, stored_settings=settings)
        for name in ("model_name", "alpha", "source", "csv_path", "weights", "batch_size",
                     "input_size", "resize_policy", "layer", "pooling", "precision"):
            assert getattr(copy, name) == getattr(self.widget, name), name
        assert copy.model_combo.currentText().startswith("MobileNet ")
        assert copy.alpha_combo.currentText() == "0.5" and copy.alpha_combo.isEnabled()

    def test_reopened_with_saved_geometry(self):
        # A saved workflow stores the window's geometry; restoring it calls
        # QWidget.resize, which a setting named "resize" used to hide.
        self.widget.show()
        self.widget.resize_policy = "stretch"
        settings = self.widget.settingsHandler.pack_data(self.widget)
        settings["savedWidgetGeometry"] = bytes(self.widget.saveGeometry())
        copy = self.create_widget(OWTransferEmbedding, stored_settings=settings)
        copy.show()
        copy.showNormal()
        self.process_events()
        assert copy.isVisible() and copy.resize_policy == "stretch"

    def test_old_workflow_settings_migrate(self):
        old = {"model_name": "MobileNet", "alpha": 0.25, "resize": "stretch",
               "weights": "none", "savedWidgetGeometry": None, "__version__": 1}
        widget = self.create_widget(OWTransferEmbedding, stored_settings=old)
        widget.show()
        assert widget.resize_policy == "stretch"
        assert callable(widget.resize)
        assert widget.widths.get("MobileNet") == 0.25

    def test_no_setting_or_attribute_hides_a_widget_member(self):
        class Bare(OWWidget, ConcurrentWidgetMixin):
            name = "Bare"

            def __init__(self):
                OWWidget.__init__(self)
                ConcurrentWidgetMixin.__init__(self)

        members = set(dir(QWidget)) | set(dir(OWBaseWidget)) | set(dir(OWWidget))
        ours = set(vars(self.widget)) - set(vars(self.create_widget(Bare)))
        for cls in OWTransferEmbedding.__mro__:
            if cls.__module__.startswith("orangecontrib."):
                ours |= {n for n in vars(cls) if not n.startswith("__")}
        meant = {"name", "description", "icon", "priority", "category", "keywords",
                 "want_main_area", "resizing_enabled", "settings_version",
                 "settingsHandler", "Inputs", "Outputs", "Error", "Warning", "Information",
                 "commit", "send_report", "onDeleteWidget", "handleNewSignals",
                 "migrate_settings", "on_done", "on_exception", "on_partial_result"}
        hidden = sorted((ours & members) - meant)
        assert not hidden, hidden

    def test_backbone_list_follows_the_width(self):
        widget = self.widget
        assert widget.alpha == 0.25
        text = widget.model_combo.currentText()
        assert "256 features" in text and "2.1 MB" in text, text
        widget.alpha_combo.setCurrentIndex(3)
        widget._alpha_changed(3)
        assert "1024 features" in widget.model_combo.currentText()

    def test_width_is_kept_per_backbone(self):
        widget = self.widget
        names = list(widget.model_combo.itemText(i) for i in range(widget.model_combo.count()))
        resnet = next(i for i, t in enumerate(names) if t.startswith("ResNet50 "))
        mobilenet = next(i for i, t in enumerate(names) if t.startswith("MobileNet "))
        for index in (resnet, mobilenet):
            widget.model_index = index
            widget._model_changed()
        assert widget.model_name == "MobileNet" and widget.alpha == 0.25
        assert widget._config().alpha == 0.25
        assert widget.alpha_combo.currentText() == "0.25"

    def test_weights_file_row_and_info_line(self):
        widget = self.widget
        assert not widget.weights_info.isVisibleTo(widget)  # random weights: no file named
        widget.weights_index = 0
        widget._weights_changed()
        assert widget.weights_info.isVisibleTo(widget)
        assert "mobilenet_2_5_224_tf_no_top.h5" in widget.weights_info.text()
        assert not widget.weights_row.box.isVisibleTo(widget)
        widget.weights_index = 2
        widget._weights_changed()
        assert widget.weights_row.box.isVisibleTo(widget)
        assert widget.weights_file_label.text() == "Weights file:"
        self.run_widget(source="csv", csv_path=__file__)
        message = str(widget.Error.weights_unavailable)
        assert "Weights › File…" in message and "-weights" not in message

    def test_messages_use_the_gui_words(self):
        np.save(self.tmp / "d.npy", np.zeros((5, 12), np.uint8))
        np.save(self.tmp / "l.npy", np.zeros(5, np.uint8))
        self.run_widget(source="npy", npy_data_path=str(self.tmp / "d.npy"),
                        npy_labels_path=str(self.tmp / "l.npy"), npy_height=3, npy_width=3,
                        npy_channels=3)
        message = str(self.widget.Error.source)
        assert "Height, Width and Channels" in message and "-he" not in message

    def test_offline_weights_message_in_gui_words(self):
        os.environ["KERAS_HOME"] = str(self.tmp / "empty-home")
        try:
            folder = self.tmp / "img" / "a"
            make_demo_images(folder.parent, per_class=1, size=40)
            self.run_widget(source="folder", folder_path=str(folder.parent),
                            weights="imagenet", alpha=0.5)
        finally:
            del os.environ["KERAS_HOME"]
        message = str(self.widget.Error.weights_unavailable)
        assert "mobilenet_5_0_224_tf_no_top.h5" in message
        assert "Weights › File…" in message and "-weights" not in message

    def test_errors_no_image_column_and_unknown_model(self):
        data = Table.from_numpy(Domain([ContinuousVariable("x")]), np.ones((3, 1)))
        self.send_signal(self.widget.Inputs.images, data)
        assert self.widget.Error.no_image_column.is_shown()
        assert self.get_output(self.widget.Outputs.embeddings) is None
        self.send_signal(self.widget.Inputs.images, None)
        assert not self.widget.Error.no_image_column.is_shown()
        self.run_widget(source="csv", csv_path=__file__, model_name="NoSuchNet")
        assert "Unknown model 'NoSuchNet'" in str(self.widget.Error.settings)

    def test_example_workflows_open_their_shipped_shapes(self):
        import ast
        import re

        from orangecontrib.transferembed import tutorials

        folder = Path(tutorials.__file__).parent
        for workflow in sorted(folder.glob("*.ows")):
            text = workflow.read_text(encoding="utf-8")
            node = re.search(r'<node id="(\d+)" name="Transfer Embedding"', text)
            if node is None:
                continue  # a workflow of Compare Backbones: test_widget_compare.py's
            stored = ast.literal_eval(re.search(
                rf'<properties node_id="{node.group(1)}" format="literal">(.*?)</properties>',
                text).group(1))
            assert (stored["weights"], stored["alpha"]) == ("imagenet", 0.25), workflow.name
            assert "mobilenet_2_5_224_tf_no_top.h5" in text  # the note says it, for offline
            stored["weights"] = "none"  # no network here: the shipped images are the point
            widget = self.create_widget(OWTransferEmbedding, stored_settings=stored,
                                        env={"basedir": str(folder)})
            self.wait_until_finished(widget=widget, timeout=TIMEOUT_MS)
            out = self.get_output(widget.Outputs.embeddings, widget=widget)
            assert out is not None and len(out) == 24, workflow.name
            assert out.domain.class_var.values == ("circles", "squares")

    def test_information_while_downloading(self):
        self.widget.progressBarInit()
        self.widget.on_partial_result(("download", 5_000_000, 10_000_000))
        assert "5.0 of 10.0 MB" in str(self.widget.Information.downloading)


CREATE_SCRIPT = """
import sys
from AnyQt.QtWidgets import QApplication
app = QApplication([])
import Orange.widgets.widget
from orangewidget.workflow.discovery import WidgetDiscovery
from orangecanvas.registry import WidgetRegistry
from Orange.canvas.config import Config
points = [p for p in Config.widgets_entry_points() if p.name == "Transfer Embed"]
registry = WidgetRegistry()
WidgetDiscovery(registry).run(points)
names = sorted(d.name for d in registry.widgets() if d.category == "Transfer Embed")
from orangecontrib.transferembed.widgets.owtransferembedding import OWTransferEmbedding
from orangecontrib.transferembed.widgets.owcomparebackbones import OWCompareBackbones
OWTransferEmbedding(), OWCompareBackbones()
print(names)
print("tensorflow" in sys.modules)
"""


def test_discovered_and_created_without_tensorflow():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", CREATE_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout.splitlines()
    names, tf_imported = out[-2:]
    assert names == "['Compare Backbones', 'Transfer Embedding']"
    assert tf_imported == "False"
