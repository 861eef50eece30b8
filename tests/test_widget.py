"""The Transfer Embedding widget, with real Orange widgets and real Keras models.

The runs use MobileNet 0.25 with its real ImageNet weights on a few photos.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from AnyQt.QtCore import QTimer
from Orange.data import ContinuousVariable, DiscreteVariable, Domain, StringVariable, Table
from Orange.widgets.evaluate.owtestandscore import OWTestAndScore
from Orange.widgets.model.owneuralnetwork import OWNNLearner
from Orange.widgets.tests import base

from orangecontrib.transferembed.widgets.owtransferembedding import OWTransferEmbedding

TIMEOUT_MS = 180_000
REAL_SETTINGS = {"model_name": "MobileNet", "alpha": 0.25, "weights": "imagenet"}


def photos(root: Path, split: str, per_class: int) -> list[tuple[str, str]]:
    """(class, path relative to root) of the first photos of each class."""
    return [(cls, f"{split}/{cls}/{name}") for cls in ("ants", "bees")
            for name in sorted(os.listdir(root / split / cls))[:per_class]]


def import_images_table(root: Path, items: list[tuple[str, str]]) -> Table:
    """A table shaped like Image Analytics' Import Images output."""
    image = StringVariable("image")
    image.attributes.update(type="image", origin=str(root))
    category = DiscreteVariable("category", values=("ants", "bees"))
    domain = Domain([], category, [StringVariable("image name"), image,
                                   ContinuousVariable("size"), ContinuousVariable("width"),
                                   ContinuousVariable("height")])
    metas = np.array([[Path(p).stem, p, 1000.0, 300.0, 200.0] for _, p in items], object)
    y = np.array([category.values.index(c) for c, _ in items], float)
    return Table.from_numpy(domain, np.empty((len(items), 0)), y, metas)


class TestOWTransferEmbedding(base.WidgetTest):
    @pytest.fixture(autouse=True)
    def _real_data(self, hymenoptera, mobilenet_keras_home, seed_toy, tmp_path):
        self.root, self.toy, self.tmp = hymenoptera, seed_toy, tmp_path

    def setUp(self):
        self.widget = self.create_widget(OWTransferEmbedding, stored_settings=REAL_SETTINGS)

    def run_widget(self, widget=None, **settings):
        widget = widget or self.widget
        for name, value in settings.items():
            setattr(widget, name, value)
        widget.commit.now()
        self.wait_until_finished(widget=widget, timeout=TIMEOUT_MS)
        return self.get_output(widget.Outputs.embeddings, widget=widget)

    def test_import_images_table_with_missing_files(self):
        items = photos(self.root, "val", 3) + [("ants", "val/ants/missing-1.jpg"),
                                               ("bees", "val/bees/missing-2.jpg")]
        data = import_images_table(self.root, items)
        self.send_signal(self.widget.Inputs.images, data)
        self.wait_until_finished(timeout=TIMEOUT_MS)
        out = self.get_output(self.widget.Outputs.embeddings)
        assert len(out) == 6
        assert [v.name for v in out.domain.attributes] == [f"n{i}" for i in range(256)]
        assert out.domain.class_var.name == "category"
        assert out.domain.metas == data.domain.metas
        np.testing.assert_array_equal(out.ids, data.ids[:6])
        assert np.isfinite(out.X).all() and out.X.std() > 0
        skipped = self.get_output(self.widget.Outputs.skipped_images)
        assert list(skipped.get_column("image")) == [p for _, p in items[6:]]
        assert list(skipped.get_column("reason")) == ["file not found"] * 2
        assert self.widget.Warning.images_skipped.is_shown()
        assert "missing-1.jpg: file not found" in str(self.widget.Warning.images_skipped)
        assert self.widget.status_label.text().startswith("6 embedded, 2 skipped")

    def test_folder_source(self):
        folder = self.tmp / "photos"
        for cls, rel in photos(self.root, "val", 2):
            (folder / cls).mkdir(parents=True, exist_ok=True)
            (folder / cls / Path(rel).name).symlink_to(self.root / rel)
        self.widget._set_path("folder_path", "recent_folders", str(folder))
        assert self.widget.source == "folder" and self.widget.recent_folders == [str(folder)]
        self.wait_until_finished(timeout=TIMEOUT_MS)
        out = self.get_output(self.widget.Outputs.embeddings)
        assert len(out) == 4 and len(out.domain.attributes) == 256
        assert out.domain.class_var.name == "Class"
        assert out.domain.class_var.values == ("ants", "bees")
        assert out.domain.metas[0].name == "image"
        assert out.domain.metas[0].attributes["type"] == "image"
        assert self.get_output(self.widget.Outputs.skipped_images) is None

    def test_csv_source(self):
        items = photos(self.root, "val", 1)
        csv = self.tmp / "list.csv"
        csv.write_text(f"10,{self.root / items[0][1]}\n2,{self.root / items[1][1]}\n"
                       f"2,nowhere.jpg\n")
        out = self.run_widget(source="csv", csv_path=str(csv))
        assert out.domain.class_var.values == ("2", "10")
        assert len(out) == 2
        skipped = self.get_output(self.widget.Outputs.skipped_images)
        assert list(skipped.get_column("reason")) == ["file not found"]

    def test_npy_source(self):
        data = np.load(self.toy / "toy_data.npy")[:6]
        labels = np.load(self.toy / "toy_labels.npy")[:6]
        np.save(self.tmp / "d.npy", data)
        np.save(self.tmp / "l.npy", labels)
        out = self.run_widget(source="npy", npy_data_path=str(self.tmp / "d.npy"),
                              npy_labels_path=str(self.tmp / "l.npy"), npy_height=45,
                              npy_width=80, npy_channels=3)
        assert len(out) == 6 and len(out.domain.attributes) == 256
        assert out.domain.class_var.values == tuple(str(v) for v in sorted(set(labels)))
        assert out.domain.metas[0].name == "row"

    def test_cancel(self):
        data = import_images_table(self.root, photos(self.root, "train", 30))
        self.widget.batch_size = 4
        self.send_signal(self.widget.Inputs.images, data)
        state = self.widget.task
        assert state is not None and self.widget.cancel_button.isEnabled()
        self.widget.cancel_embedding()
        assert self.widget.task is None
        assert self.widget.Information.cancelled.is_shown()
        assert self.get_output(self.widget.Outputs.embeddings) is None
        started = time.perf_counter()
        while not state.future.done():
            time.sleep(0.05)
            assert time.perf_counter() - started < 120
        assert state.future.cancelled() or isinstance(state.future.exception(),
                                                      Exception)

    def test_new_input_restarts(self):
        first = import_images_table(self.root, photos(self.root, "train", 20))
        second = import_images_table(self.root, photos(self.root, "val", 1))
        self.send_signal(self.widget.Inputs.images, first)
        task = self.widget.task
        self.send_signal(self.widget.Inputs.images, second)
        assert self.widget.task is not task
        self.wait_until_finished(timeout=TIMEOUT_MS)
        assert len(self.get_output(self.widget.Outputs.embeddings)) == 2

    def test_settings_round_trip(self):
        csv = str(self.tmp / "x.csv")
        self.widget.model_name, self.widget.alpha = "MobileNet", 0.5
        self.widget._update_model_controls()
        self.widget.source, self.widget.csv_path = "csv", csv
        self.widget.weights, self.widget.batch_size = "none", 7
        self.widget.input_size, self.widget.resize = "native", "stretch"
        settings = self.widget.settingsHandler.pack_data(self.widget)
        assert settings["model_name"] == "MobileNet" and settings["alpha"] == 0.5
        assert settings["__version__"] == 1
        json.dumps({k: v for k, v in settings.items() if k != "context_settings"})
        copy = self.create_widget(OWTransferEmbedding, stored_settings=settings)
        for name in ("model_name", "alpha", "source", "csv_path", "weights", "batch_size",
                     "input_size", "resize"):
            assert getattr(copy, name) == getattr(self.widget, name), name
        assert copy.model_combo.currentText().startswith("MobileNet ")
        assert copy.alpha_combo.currentText() == "0.5" and copy.alpha_combo.isEnabled()

    def test_model_choice_by_name(self):
        widget = self.create_widget(OWTransferEmbedding,
                                    stored_settings={"model_name": "ResNet50", "alpha": 0.25})
        assert widget.model_combo.currentText().startswith("ResNet50 ")
        assert not widget.alpha_combo.isEnabled()
        assert widget._config().alpha == 1.0
        widget.model_index = list(widget.model_combo.model().data(
            widget.model_combo.model().index(i, 0)) for i in range(widget.model_combo.count())
        ).index(widget.model_combo.itemText(6))
        assert widget.model_name == "MobileNet"

    def test_error_no_image_column(self):
        data = Table.from_numpy(Domain([ContinuousVariable("x")]), np.ones((3, 1)))
        self.send_signal(self.widget.Inputs.images, data)
        assert self.widget.Error.no_image_column.is_shown()
        assert self.get_output(self.widget.Outputs.embeddings) is None
        self.send_signal(self.widget.Inputs.images, None)
        assert not self.widget.Error.no_image_column.is_shown()

    def source_error(self, **settings) -> str:
        self.run_widget(**settings)
        assert self.widget.Error.source.is_shown()
        assert self.get_output(self.widget.Outputs.embeddings) is None
        return str(self.widget.Error.source)

    def test_error_unreadable_npy(self):
        (self.tmp / "bad.npy").write_bytes(b"not a npy file")
        msg = self.source_error(source="npy", npy_data_path=str(self.tmp / "bad.npy"))
        assert "bad.npy" in msg and "npy" in msg.replace("bad.npy", "")

    def test_error_unreadable_csv(self):
        (self.tmp / "bad.csv").write_bytes(b"ants,\xff\xfe.jpg\n")
        assert "not UTF-8" in self.source_error(source="csv", csv_path=str(self.tmp / "bad.csv"))
        assert "does not exist" in self.source_error(source="csv",
                                                     csv_path=str(self.tmp / "none.csv"))

    def test_error_row_count_mismatch(self):
        np.save(self.tmp / "d.npy", np.zeros((5, 12), np.uint8))
        np.save(self.tmp / "l.npy", np.zeros(4, np.uint8))
        assert "there are 5 images but 4 labels" in self.source_error(
            source="npy", npy_data_path=str(self.tmp / "d.npy"),
            npy_labels_path=str(self.tmp / "l.npy"), npy_height=2, npy_width=2, npy_channels=3)

    def test_error_weights_unavailable_offline(self):
        data = import_images_table(self.root, photos(self.root, "val", 1))
        self.widget.alpha = 0.5  # the 0.25 file only is in $KERAS_HOME/models
        self.send_signal(self.widget.Inputs.images, data)
        self.wait_until_finished(timeout=TIMEOUT_MS)
        msg = str(self.widget.Error.weights_unavailable)
        assert self.widget.Error.weights_unavailable.is_shown()
        assert "mobilenet_5_0_224_tf_no_top.h5" in msg
        assert "https://storage.googleapis.com/" in msg
        assert str(Path(os.environ["KERAS_HOME"]) / "models") in msg
        assert self.get_output(self.widget.Outputs.embeddings) is None

    def test_error_weights_file_missing_and_bad_settings(self):
        self.run_widget(source="csv", csv_path=__file__, weights="file",
                        weights_path=str(self.tmp / "none.h5"))
        assert "does not exist" in str(self.widget.Error.weights_unavailable)
        self.run_widget(weights="imagenet", model_name="NoSuchNet")
        assert "Unknown model 'NoSuchNet'" in str(self.widget.Error.settings)
        assert not self.widget.Error.weights_unavailable.is_shown()

    def test_information_while_downloading(self):
        self.widget.progressBarInit()
        self.widget.on_partial_result((5_000_000, 10_000_000))
        assert "5.0 of 10.0 MB" in str(self.widget.Information.downloading)

    def test_event_loop_runs_while_embedding(self):
        # The work runs off the GUI thread: Qt timers keep firing until the result
        # arrives. (How long the loop ever waits is a figure of bench/widget.py.)
        data = import_images_table(self.root, photos(self.root, "train", 16))
        ticks = []
        timer = QTimer(interval=10)
        timer.timeout.connect(lambda: ticks.append(self.widget.task is not None))
        timer.start()
        self.send_signal(self.widget.Inputs.images, data)
        assert self.widget.task is not None  # send_signal returned with the task running
        self.wait_until_finished(timeout=TIMEOUT_MS)
        timer.stop()
        assert len(self.get_output(self.widget.Outputs.embeddings)) == 32
        assert sum(ticks) >= 2, "no timer tick while the embedding ran"

    def test_end_to_end_neural_network_and_test_and_score(self):
        items = photos(self.root, "train", 30)
        data = import_images_table(self.root, items)
        self.send_signal(self.widget.Inputs.images, data)
        self.wait_until_finished(timeout=TIMEOUT_MS)
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
desc = next(d for d in registry.widgets() if d.name == "Transfer Embedding")
from orangecontrib.transferembed.widgets.owtransferembedding import OWTransferEmbedding
widget = OWTransferEmbedding()
print(desc.category, desc.qualified_name, "tensorflow" in sys.modules)
"""


def test_discovered_and_created_without_tensorflow():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", CREATE_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout.split()
    category, qualified, tf_imported = out[-3:]
    assert qualified.endswith("owtransferembedding.OWTransferEmbedding")
    assert tf_imported == "False"
