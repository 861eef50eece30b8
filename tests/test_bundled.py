"""The weights that ship with the package: MobileNet 0.25 works offline from the first run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed import embed, get_backbone
from orangecontrib.transferembed.errors import WeightsUnavailableError
from orangecontrib.transferembed.models.weights import (
    BUNDLED_DIR,
    find_imagenet_file,
    resolve_weights,
    writable_by_others,
)

FILE = "mobilenet_2_5_224_tf_no_top.h5"
#: No download can succeed in the command's process: every request goes to a dead proxy.
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
              "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


def _refuse(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable (test)")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _refuse)


def _folder(root, per_class=3):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def _run(*args):
    return subprocess.run([sys.executable, "-m", "orangecontrib.transferembed", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **NO_NETWORK})


def test_the_bundled_file_its_hash_and_licence():
    backbone = get_backbone("MobileNet")
    path = BUNDLED_DIR / FILE
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == backbone.weights_digest(0.25)  # the hash Keras' file has
    assert (BUNDLED_DIR / f"{FILE}.sha256").read_text().split() == [digest, FILE]
    licence = (BUNDLED_DIR / "LICENSE-mobilenet_2_5_224_tf_no_top.txt").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
    assert not writable_by_others(path) and not writable_by_others(BUNDLED_DIR)


def test_found_with_nothing_in_keras_home(empty_keras_home, offline):
    backbone = get_backbone("MobileNet")
    assert find_imagenet_file(backbone, 0.25) == BUNDLED_DIR / FILE
    assert resolve_weights(backbone, "imagenet", 0.25) == str(BUNDLED_DIR / FILE)
    assert not list((empty_keras_home / "models").iterdir())
    assert find_imagenet_file(backbone, 0.5) is None  # only 0.25 ships


def test_a_users_own_copy_comes_first(empty_keras_home, offline):
    own = empty_keras_home / "models" / FILE
    own.write_bytes((BUNDLED_DIR / FILE).read_bytes())
    assert resolve_weights(get_backbone("MobileNet"), "imagenet", 0.25) == str(own)


def test_a_bundled_file_in_a_folder_others_can_write_is_refused(tmp_path, monkeypatch,
                                                                empty_keras_home):
    from orangecontrib.transferembed.models import weights

    shared = tmp_path / "bundled"
    shared.mkdir()
    (shared / FILE).write_bytes((BUNDLED_DIR / FILE).read_bytes())
    shared.chmod(0o777)
    monkeypatch.setattr(weights, "BUNDLED_DIR", shared)
    with pytest.raises(WeightsUnavailableError, match="other users can write"):
        resolve_weights(get_backbone("MobileNet"), "imagenet", 0.25)


def test_every_other_backbone_says_what_it_needs_and_names_the_bundled_one(
        empty_keras_home, offline):
    for name, alpha in (("VGG16", 1.0), ("MobileNet", 1.0), ("ResNet50", 1.0)):
        backbone = get_backbone(name)
        with pytest.raises(WeightsUnavailableError) as info:
            resolve_weights(backbone, "imagenet", alpha)
        message = str(info.value)
        assert backbone.weights_filename(alpha) in message
        assert backbone.weights_url(alpha) in message
        assert "start at once with the bundled weights: -tm MobileNet --alpha 0.25" in message
        assert "MobileNet at width 0.25" in info.value.gui


def test_cli_runs_offline_with_a_fresh_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "fresh"))
    folder = _folder(tmp_path / "images")
    proc = _run("--folder", str(folder), "-tm", "MobileNet", "--alpha", "0.25", "-dir",
                str(tmp_path / "out"), "-n", "first", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    data = np.load(tmp_path / "out" / "first_data.npy")
    assert data.shape == (6, 256) and data.max() > 0.1  # pretrained, not ~1e-20
    assert not (tmp_path / "fresh" / "models").exists() \
        or not list((tmp_path / "fresh" / "models").iterdir())


def test_cli_offline_features_are_those_of_the_published_file(tmp_path, monkeypatch,
                                                             shared_data):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "fresh"))
    folder = _folder(tmp_path / "images")
    common = ["--folder", str(folder), "-tm", "MobileNet", "--alpha", "0.25", "--runtime",
              "keras", "-dir", str(tmp_path / "out"), "--no-cache", "-q"]
    assert _run(*common, "-n", "bundled").returncode == 0
    published = str(shared_data / "weights" / FILE)
    proc = _run(*common, "-n", "published", "-weights", published)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "out" / "bundled_data.npy"),
                          np.load(tmp_path / "out" / "published_data.npy"))


def test_bundled_features_are_pretrained_on_real_photos(hymenoptera, empty_keras_home,
                                                       offline):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = embed(hymenoptera / "train", "MobileNet", alpha=0.25, cache=False)
    val = embed(hymenoptera / "val", "MobileNet", alpha=0.25, cache=False)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    probe.fit(train.embeddings, np.asarray(train.labels))
    accuracy = probe.score(val.embeddings, np.asarray(val.labels))
    print(f"ants/bees held-out accuracy with the bundled weights: {accuracy:.3f}")
    assert accuracy >= 0.8  # chance is 0.5
