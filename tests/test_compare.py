"""Comparing representations: feature layers, pooling, ``transferembed compare``, the
``compare()`` API and the Compare Backbones widget."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from Orange.widgets.tests import base

from orangecontrib.transferembed import compare, embed, list_layers
from orangecontrib.transferembed.cli.demo import make_demo_images
from orangecontrib.transferembed.cli.main import main
from orangecontrib.transferembed.comparison import Candidate, cross_validate, parse_candidates
from orangecontrib.transferembed.errors import SettingsError, UnknownBackboneError
from orangecontrib.transferembed.widgets.owcomparebackbones import OWCompareBackbones

FAST = {"weights": None, "alpha": 0.25, "input_size": 96}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    make_demo_images(folder, per_class=10, size=96)
    return folder


@pytest.fixture(scope="module")
def ants_and_bees(hymenoptera, tmp_path_factory) -> Path:
    """All the photos as one folder per class (the data's own folders are train/val)."""
    root = tmp_path_factory.mktemp("ants_and_bees")
    for cls in ("ants", "bees"):
        (root / cls).mkdir()
        for split in ("train", "val"):
            for photo in sorted((hymenoptera / split / cls).iterdir()):
                (root / cls / f"{split}-{photo.name}").symlink_to(photo)
    return root


def test_candidates_parse():
    assert parse_candidates("MobileNet, MobileNet:conv_pw_11_relu,ResNet50") == [
        Candidate("MobileNet"), Candidate("MobileNet", "conv_pw_11_relu"),
        Candidate("ResNet50")]
    assert Candidate.parse("VGG16").label == "VGG16"
    with pytest.raises(SettingsError):
        parse_candidates(" , ")


def test_list_layers_names_the_default_and_feature_counts():
    layers = {layer.name: layer for layer in list_layers("MobileNet", 0.25)}
    assert layers["conv_pw_11_relu"].features == 128 and layers["conv_pw_11_relu"].spatial
    assert [name for name, layer in layers.items() if layer.default] == ["conv_pw_13_relu"]
    vgg = {layer.name: layer for layer in list_layers("VGG16")}
    assert vgg["fc2"].default and not vgg["fc2"].spatial and vgg["fc2"].features == 4096


def test_cli_lists_layers(capsys):
    assert main(["--list-layers", "mobilenet", "--alpha", "0.25"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("conv_pw_11_relu "))
    assert line.split()[1] == "128"
    assert "(default)" in next(line for line in out.splitlines()
                               if line.startswith("conv_pw_13_relu "))


def test_layer_and_pooling(shapes):
    default = embed(shapes, "MobileNet", cache=False, **FAST).embeddings
    avg = embed(shapes, "MobileNet", layer="conv_pw_11_relu", cache=False, **FAST).embeddings
    top = embed(shapes, "MobileNet", layer="conv_pw_11_relu", pooling="max", cache=False,
                **FAST).embeddings
    assert default.shape == (20, 256) and avg.shape == (20, 128) == top.shape
    assert not np.array_equal(avg, top)
    assert np.all(top >= avg)  # the maximum of a map is at least its mean


def test_layer_goes_into_the_cache_key(shapes):
    first = embed(shapes, "MobileNet", layer="conv_pw_11_relu", **FAST)
    other = embed(shapes, "MobileNet", layer="conv_pw_7_relu", **FAST)
    again = embed(shapes, "MobileNet", layer="conv_pw_11_relu", **FAST)
    assert first.n_cached == 0 and other.n_cached == 0 and again.n_cached == 20
    assert np.array_equal(first.embeddings, again.embeddings)
    maximum = embed(shapes, "MobileNet", layer="conv_pw_11_relu", pooling="max", **FAST)
    assert maximum.n_cached == 0


def test_unknown_layer_exits_2_and_points_to_list_layers(shapes, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--folder", str(shapes), "-tm", "MobileNet", "--alpha", "0.25", "-weights",
              "None", "--layer", "no_such_layer", "-dir", str(tmp_path), "-q"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no_such_layer" in err and "--list-layers MobileNet" in err
    assert not list(tmp_path.iterdir())


def test_cross_validation_scores():
    rng = np.random.default_rng(0)
    labels = ["a"] * 30 + ["b"] * 30
    separable = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(4, 1, (30, 5))])
    ca, auc, f1, folds = cross_validate(separable, labels, 5)
    assert ca > 0.95 and auc > 0.95 and f1 > 0.95 and len(folds) == 5
    three = np.vstack([separable, rng.normal(-4, 1, (30, 5))])
    ca, auc, f1, _ = cross_validate(three, labels + ["c"] * 30, 3)
    assert 0.9 < auc <= 1 and 0 <= ca <= 1
    with pytest.raises(SettingsError, match="two classes"):
        cross_validate(separable, ["a"] * 60, 5)
    assert cross_validate(separable, labels, 5) == cross_validate(separable, labels, 5)


def test_compare_command_writes_scores_and_chart(shapes, tmp_path, capsys, empty_keras_home):
    out = tmp_path / "out"
    argv = ["compare", "--folder", str(shapes), "-tm",
            "MobileNet,MobileNet:conv_pw_11_relu,MobileNet:conv_pw_7_relu,ResNet50",
            "--alpha", "0.25", "-weights", "None", "--cv", "3", "--input-size", "96",
            "-dir", str(out), "-n", "shapes", "-q"]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out / "shapes_compare.csv", encoding="utf-8")))
    assert list(rows[0])[:7] == ["backbone", "layer", "features", "CA", "AUC", "F1",
                                 "seconds"]
    assert [r["layer"] for r in rows if r["backbone"] == "MobileNet"] and len(rows) == 4
    scored = [r for r in rows if r["CA"]]
    cas = [float(r["CA"]) for r in scored]
    assert cas == sorted(cas, reverse=True) and all(0 <= v <= 1 for v in cas)
    assert all(0 <= float(r["AUC"]) <= 1 for r in scored)
    assert [r["best"] for r in rows].count("*") == 1 and rows[0]["best"] == "*"
    assert {r["features"] for r in rows if r["layer"] != "default"} == {"128"}
    assert (out / "shapes_compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "Best:" in printed and "--save-best" in printed
    assert not (out / "shapes_data.npy").exists()
    assert main([*argv, "--save-best"]) == 0
    assert np.load(out / "shapes_data.npy").shape[0] == 20


def test_missing_weights_become_a_row_and_the_rest_runs(shapes, tmp_path, empty_keras_home,
                                                         monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    scores = compare(shapes, "MobileNet,VGG16", folds=2, weights="imagenet", alpha=0.25,
                     cache=False, input_size=None)
    failed = {s.candidate.model: s for s in scores if s.error}
    assert set(failed) == {"VGG16"}  # MobileNet 0.25's weights come with the package
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in failed["VGG16"].error
    assert "-tm MobileNet --alpha 0.25" in failed["VGG16"].error
    random = compare(shapes, ["MobileNet", "MobileNet:conv_pw_7_relu"], folds=2, **FAST)
    assert [s.error for s in random] == [None, None]
    assert all(s.result is not None and len(s.result) == 20 for s in random)


def test_a_misspelt_backbone_stops_before_any_work(shapes):
    with pytest.raises(UnknownBackboneError, match="Unknown model 'MobileNot'"):
        compare(shapes, "MobileNet,MobileNot", **FAST)


def test_pretrained_beats_random_and_agrees_with_an_independent_probe(
        ants_and_bees, mobilenet_keras_home, tmp_path):
    scores = compare(ants_and_bees, "MobileNet,MobileNet:conv_pw_11_relu", alpha=0.25)
    by_label = {s.candidate.label: s for s in scores}
    pretrained = by_label["MobileNet"].ca
    assert pretrained >= 0.85
    random = compare(ants_and_bees, "MobileNet", alpha=0.25, weights=None)[0].ca
    assert pretrained - random >= 0.1
    assert main(["--folder", str(ants_and_bees), "-tm", "MobileNet", "--alpha", "0.25",
                 "-dir", str(tmp_path), "-n", "probe", "-q"]) == 0
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.load(tmp_path / "probe_data.npy")
    y = np.load(tmp_path / "probe_labels.npy")[:, 0]
    probe = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                            X, y, cv=5).mean()
    assert abs(probe - pretrained) <= 0.06


class TestCompareBackbonesWidget(base.WidgetTest):
    @pytest.fixture(autouse=True)
    def _shapes(self, shapes):
        self.shapes = shapes

    def setUp(self):
        self.widget = self.create_widget(OWCompareBackbones, stored_settings={
            "checked": ["MobileNet"], "extra": ["MobileNet:conv_pw_11_relu"], "alpha": 0.25,
            "weights": "none", "folds": 2})

    def run_widget(self):
        self.widget.path_rows["folder_path"].use(str(self.shapes))
        self.widget.commit.now()
        self.wait_until_finished(timeout=180_000)

    def test_scores_table_chart_and_outputs(self):
        self.widget.checked = ["MobileNet", "MobileNet:conv_pw_11_relu"]
        self.run_widget()
        scores = self.get_output(self.widget.Outputs.scores)
        assert len(scores) == 2
        assert sorted(scores.get_column("candidate")) == ["MobileNet",
                                                          "MobileNet:conv_pw_11_relu"]
        ca = scores.get_column("CA")
        assert np.all((ca >= 0) & (ca <= 1)) and ca[0] >= ca[1]
        assert self.widget.score_model.rowCount() == 2
        assert len(self.widget.plot.getPlotItem().items) == 4  # bars, spread, 2 values
        first = self.get_output(self.widget.Outputs.embeddings)
        other_row = 1 - [self.widget.score_model.item(r, 0).text() for r in range(2)].index(
            self.widget.selected or scores.get_column("candidate")[0])
        self.widget.score_view.selectRow(other_row)
        second = self.get_output(self.widget.Outputs.embeddings)
        assert {len(first.domain.attributes), len(second.domain.attributes)} == {256, 128}

    def test_a_workflow_with_its_own_source_compares_on_opening(self):
        widget = self.create_widget(OWCompareBackbones, stored_settings={
            "source": "folder", "folder_path": str(self.shapes), "checked": ["MobileNet"],
            "alpha": 0.25, "weights": "none", "folds": 2, "auto_apply": True})
        self.wait_until_finished(widget=widget, timeout=180_000)
        scores = self.get_output(widget.Outputs.scores, widget=widget)
        assert scores is not None and len(scores) == 1

    def test_candidates_say_where_their_weights_are(self):
        texts = [self.widget.candidate_model.item(r).text()
                 for r in range(self.widget.candidate_model.rowCount())]
        assert any(t.startswith("MobileNet (256 features;") for t in texts)
        assert any(t.startswith("VGG16 (4096 features; 553.5 MB to download)") for t in texts)
        mobilenet = next(i for i, t in enumerate(texts) if t.startswith("MobileNet ("))
        assert texts[mobilenet + 1].startswith("MobileNet:conv_pw_11_relu (layer; 2.1 MB")

    def test_nothing_checked(self):
        self.widget.checked = []
        self.run_widget()
        assert self.widget.Information.choose.is_shown()
        assert self.get_output(self.widget.Outputs.scores) is None

    def test_cancel(self):
        self.widget.path_rows["folder_path"].use(str(self.shapes))
        self.widget.commit.now()
        assert self.widget.task is not None
        self.widget.cancel_comparing()
        assert self.widget.task is None and self.widget.Information.cancelled.is_shown()
        assert self.widget.apply_box.button.isEnabled()


def test_compare_is_in_the_package_api():
    import orangecontrib.transferembed as package

    assert package.compare is compare
    assert os.path.basename(package.__file__) == "__init__.py"


# --- the estimator, cached candidates, the report ---------------------------------------

class _OnlyPredicts:
    """A classifier with neither probabilities nor decision values, and a name."""

    name = "majority"

    def get_params(self, deep=True):
        return {}

    def set_params(self, **params):
        return self

    def fit(self, X, y):
        values, counts = np.unique(y, return_counts=True)
        self.classes_, self.majority_ = values, values[counts.argmax()]
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


def test_compare_scores_with_the_estimator_given(shapes):
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(3)
    (by_knn,) = compare(shapes, "MobileNet", folds=2, estimator=knn, **FAST)
    assert by_knn.scorer == "KNeighborsClassifier" and not hasattr(knn, "classes_")
    labels = [str(v) for v in by_knn.result.labels]
    assert (by_knn.ca, by_knn.auc, by_knn.f1, by_knn.ca_folds) == cross_validate(
        by_knn.result.embeddings, labels, 2, estimator=KNeighborsClassifier(3))
    (default,) = compare(shapes, "MobileNet", folds=2, **FAST)
    assert default.scorer == "logistic regression"
    assert (default.ca, default.auc, default.f1, default.ca_folds) == cross_validate(
        default.result.embeddings, labels, 2)
    (named,) = compare(shapes, "MobileNet", folds=2, estimator=_OnlyPredicts(), **FAST)
    assert named.scorer == "majority" and named.ca == 0.5 and named.auc is None


def test_cached_candidates_are_marked(shapes, tmp_path, capsys):
    from orangecontrib.transferembed.cli.report import rows, table

    settings = {**FAST, "input_size": 64}
    (first,) = compare(shapes, "MobileNet:conv_pw_5_relu", folds=2, **settings)
    (again,) = compare(shapes, "MobileNet:conv_pw_5_relu", folds=2, **settings)
    assert not first.cached and again.cached
    row = rows([again])[0]
    assert row["note"].startswith("cached") and row["scorer"] == "logistic regression"
    printed = table([again])
    assert "Scored by cross-validation of: logistic regression" in printed
    assert printed.splitlines()[-1].split()[7] == "cached"  # the seconds column


def test_compare_csv_says_which_estimator_scored(shapes, tmp_path):
    out = tmp_path / "out"
    assert main(["compare", "--folder", str(shapes), "-tm", "MobileNet", "--alpha", "0.25",
                 "-weights", "None", "--input-size", "96", "--cv", "2", "-dir", str(out),
                 "-n", "s", "-q"]) == 0
    (row,) = csv.DictReader(open(out / "s_compare.csv", encoding="utf-8"))
    assert row["scorer"] == "logistic regression"


def test_chart_values_clear_of_the_error_bars():
    from matplotlib.collections import LineCollection

    from orangecontrib.transferembed.cli.report import chart
    from orangecontrib.transferembed.comparison import Score

    scores = [Score(Candidate("MobileNet", f"layer{i}"), features=256, ca=ca,
                    ca_folds=[ca - sd, ca + sd])
              for i, (ca, sd) in enumerate([(0.97, 0.05), (0.8, 0.15), (0.5, 0.3)])]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = chart(scores)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    (axes,) = figure.axes
    labels = [text.get_window_extent(renderer) for text in axes.texts]
    assert len(labels) == 3
    bars = [segment for collection in axes.collections
            if isinstance(collection, LineCollection)
            for segment in axes.transData.transform(np.vstack(collection.get_segments()))]
    right = max(x for x, _ in bars)
    assert all(box.x0 > right for box in labels)  # every value right of every error bar
    assert all(box.x1 <= figure.bbox.x1 for box in labels)  # and inside the picture
