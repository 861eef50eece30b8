"""Transfer Embedding where a new user meets it (issue 17): the default that works offline,
the stages it tells, Cancel and Apply Automatically, a changed setting during a run, and a
reopened workflow. Real widgets and Keras models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from Orange.widgets.tests import base
from test_widget import (
    assert_run_stopped,
    cancel_then_tick_apply_automatically,
    drawn_items,
    import_images_table,
    listen,
)

from orangecontrib.transferembed.cli.demo import make_demo_images
from orangecontrib.transferembed.models.registry import get_backbone
from orangecontrib.transferembed.models.weights import find_imagenet_file
from orangecontrib.transferembed.widgets.common import SourceRequest
from orangecontrib.transferembed.widgets.owtransferembedding import OWTransferEmbedding

TIMEOUT_MS = 180_000
RANDOM = {"model_name": "MobileNet", "alpha": 0.25, "weights": "none"}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drawn_embedding")
    make_demo_images(root / "images", per_class=12, size=64)
    return root


class EmbeddingCase(base.WidgetTest):
    @pytest.fixture(autouse=True)
    def _drawn(self, drawn, tmp_path):
        self.drawn, self.tmp = drawn, tmp_path

    def setUp(self):
        self.widget = self.create_widget(OWTransferEmbedding, stored_settings=dict(RANDOM))

    def table(self, per_class=12):
        return import_images_table(self.drawn / "images", drawn_items(self.drawn, per_class))

    def wait(self, widget=None):
        widget = widget or self.widget
        self.wait_until_finished(widget=widget, timeout=TIMEOUT_MS)
        return self.get_output(widget.Outputs.embeddings, widget=widget)


class TestDefaults(EmbeddingCase):
    def test_default_is_mobilenet_at_width_025(self):
        widget = self.create_widget(OWTransferEmbedding)
        config = widget._config()
        assert (config.model, config.alpha, config.weights) == ("MobileNet", 0.25, "imagenet")
        assert widget.alpha_combo.currentText() == "0.25"
        assert widget.model_combo.currentText().startswith("MobileNet (256 features, 2.1 MB")

    def test_backbone_line_is_shown_whole(self):
        widget = self.create_widget(OWTransferEmbedding)
        widget.show()
        self.process_events()
        combo = widget.model_combo
        for text in (combo.currentText(), "MobileNet (256 features, 2.1 MB, on this machine)"):
            assert combo.fontMetrics().horizontalAdvance(text) + 24 < combo.width(), text

    def test_mobilenet_keeps_its_default_width_when_chosen_again(self):
        widget = self.create_widget(OWTransferEmbedding)
        names = [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
        for name in ("ResNet50 ", "MobileNet "):
            widget.model_index = next(i for i, t in enumerate(names) if t.startswith(name))
            widget._model_changed()
        assert widget.alpha == 0.25

    def test_saved_settings_without_a_width_keep_width_1(self):
        widget = self.create_widget(OWTransferEmbedding, stored_settings={
            "model_name": "MobileNet", "weights": "none", "__version__": 2})
        assert widget.alpha == 1.0 and widget._config().alpha == 1.0

    def test_defaults_embed_offline_with_imagenet_weights(self):
        home = self.tmp / "keras_home"
        (home / "models").mkdir(parents=True)
        os.environ["KERAS_HOME"] = str(home)
        try:
            assert find_imagenet_file(get_backbone("MobileNet"), 0.25) is not None  # bundled
            widget = self.create_widget(OWTransferEmbedding)
            self.send_signal(widget.Inputs.images, self.table(3), widget=widget)
            out = self.wait(widget)
        finally:
            del os.environ["KERAS_HOME"]
        assert not widget.Error.active, [str(m) for m in widget.Error.active]
        assert out is not None and len(out) == 6 and len(out.domain.attributes) == 256


class TestRunning(EmbeddingCase):
    def start(self):
        self.widget.batch_size = 2
        self.send_signal(self.widget.Inputs.images, self.table())
        state = self.widget.task
        assert state is not None and self.widget.cancel_button.isEnabled()
        return state

    def test_cancel_then_ticking_apply_automatically_runs(self):
        self.widget.auto_apply = True
        self.widget.apply_box.checkbox.setChecked(True)
        self.start()
        cancel_then_tick_apply_automatically(self.widget, self.widget.cancel_embedding)
        assert len(self.wait()) == 24

    def test_a_changed_setting_cancels_the_run_with_apply_automatically_off(self):
        self.widget.auto_apply = False
        self.widget.apply_box.checkbox.setChecked(False)
        state = self.start()
        names = [self.widget.model_combo.itemText(i)
                 for i in range(self.widget.model_combo.count())]
        self.widget.model_index = next(i for i, t in enumerate(names)
                                       if t.startswith("ResNet50 "))
        self.widget._model_changed()  # what the Backbone combo calls
        assert_run_stopped(self.widget, state)

    def test_a_changed_setting_restarts_with_apply_automatically_on(self):
        state = self.start()
        self.widget.pooling_index = 1
        self.widget.settings_changed()
        assert state.is_interruption_requested() and self.widget.task is not state
        self.wait()

    def test_removing_the_widget_cancels_the_run(self):
        state = self.start()
        self.widget.onDeleteWidget()
        assert state.is_interruption_requested() and state.future.done()

    def test_stages_are_told_and_end_when_the_images_move(self):
        heard = listen(self.widget)
        self.widget.batch_size = 4
        self.send_signal(self.widget.Inputs.images, self.table())
        assert len(self.wait()) == 24
        stages = [m[1] for m in heard if m[0] == "status"]
        assert stages and stages[0].startswith("Loading "), stages  # TensorFlow, the model
        assert None in stages  # the stage ended when the images moved on
        assert not self.widget.Information.stage.is_shown()


class TestSources(EmbeddingCase):
    def test_reopened_on_folder_keeps_it_when_a_table_arrives(self):
        widget = self.create_widget(OWTransferEmbedding, stored_settings={
            **RANDOM, "source": "folder", "folder_path": str(self.drawn / "images")})
        self.wait(widget)
        self.send_signal(widget.Inputs.images, self.table(1), widget=widget)
        assert widget.source == "folder" and widget.source_pages.currentIndex() == 1
        assert widget.controls.source_index.currentIndex() == 1
        assert widget.Information.input_unused.is_shown()
        assert len(self.wait(widget)) == 24

    def test_table_source_is_labelled_by_its_class(self):
        self.send_signal(self.widget.Inputs.images, self.table(2))
        request = self.widget.source_request()
        assert isinstance(request, SourceRequest) and request.data is not None
        source = request.make(lambda: False)
        assert list(source.labels) == ["circles", "circles", "squares", "squares"]
        self.wait()




class TestSwitchDuringConversion(EmbeddingCase):
    @pytest.mark.own_store
    def test_switching_backbone_ends_the_conversion_child(self):
        import time

        import psutil

        widget = self.widget
        widget.folder_path = str(self.drawn / "images")
        names = [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
        widget.model_index = next(i for i, t in enumerate(names) if t.startswith("InceptionV3"))
        widget._model_changed()
        widget.set_source_kind("folder")
        widget.commit.now()
        deadline = time.monotonic() + 120
        while "Converting InceptionV3" not in str(widget.Information.stage):
            self.process_events()
            assert time.monotonic() < deadline
        time.sleep(1)
        children = [child for child in psutil.Process().children(recursive=True)
                    if "runtimes.conversion" in " ".join(child.cmdline())]
        assert children, "no conversion child"
        widget.model_index = next(i for i, t in enumerate(names) if t.startswith("MobileNet "))
        widget._model_changed()  # the user switches: InceptionV3 is no longer wanted
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, "the conversion child still runs 5 s after the switch"
        out = self.wait()
        assert len(out.domain.attributes) == 256  # MobileNet's
