"""Weights: the offline message, Keras' cache, random weights, weights files."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from orangecontrib.transferembed import embed, get_backbone
from orangecontrib.transferembed.errors import TransferEmbedError, WeightsUnavailableError
from orangecontrib.transferembed.models.weights import (
    keras_models_dir,
    normalize_weights,
    resolve_weights,
    weights_identity,
)

VGG16_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
VGG16_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
             + VGG16_FILE)


def _refuse(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable (test)")


@pytest.fixture
def offline(monkeypatch):
    """No network at all, whatever this machine has: any download attempt fails."""
    monkeypatch.setattr(urllib.request, "urlopen", _refuse)


def _pixels(n=2, side=32):
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _online() -> bool:
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
    except OSError:
        return False
    return True


def test_offline_vgg16_message_is_actionable(empty_keras_home, monkeypatch):
    # The real download path where there is no network (as in CI); on a machine
    # with network, refuse the connection rather than download 553 MB.
    if _online():
        monkeypatch.setattr(urllib.request, "urlopen", _refuse)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights(get_backbone("VGG16"), "imagenet")
    assert time.perf_counter() - start < 60
    message = str(info.value)
    assert VGG16_FILE in message
    assert VGG16_URL in message
    assert str(empty_keras_home / "models") in message
    assert "$KERAS_HOME/models" in message
    assert "-weights" in message
    assert "VGG16" in message
    assert isinstance(info.value, TransferEmbedError)
    assert not list((empty_keras_home / "models").iterdir())  # no partial download left


def test_offline_through_embed(empty_keras_home, offline, tmp_path):
    with pytest.raises(WeightsUnavailableError, match=VGG16_FILE):
        embed(_pixels(1, 224), "VGG16", cache=False)


def test_imagenet_file_in_keras_home_is_used_offline(mobilenet_keras_home, offline):
    assert keras_models_dir() == mobilenet_keras_home / "models"
    path = resolve_weights(get_backbone("MobileNet"), "imagenet", alpha=0.25)
    assert path == str(mobilenet_keras_home / "models" / "mobilenet_2_5_224_tf_no_top.h5")
    result = embed(_pixels(), "MobileNet", alpha=0.25, input_size=32, cache=False)
    assert result.embeddings.shape == (2, 256)
    assert result.embeddings.max() > 1e-3  # real weights, not random ones


@pytest.mark.parametrize("spelling", [None, "None", "none", "NONE", "random", " None "])
def test_none_means_random(spelling):
    assert normalize_weights(spelling) is None


def test_random_weights_need_no_file(empty_keras_home, offline):
    result = embed(_pixels(), "MobileNet", weights="None", alpha=0.25, input_size=32,
                   cache=False)
    assert result.embeddings.shape == (2, 256)
    assert not list((empty_keras_home / "models").iterdir())


def test_imagenet_spelling():
    assert normalize_weights("ImageNet") == "imagenet"


def test_missing_weights_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(WeightsUnavailableError, match="nope.h5 does not exist"):
        normalize_weights(missing)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        embed(_pixels(), "MobileNet", weights=missing, alpha=0.25, cache=False)


def test_wrong_weights_file_is_a_weights_error(shared_data):
    mobilenet = shared_data / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
    with pytest.raises(WeightsUnavailableError, match="ResNet50") as info:
        embed(_pixels(1), "ResNet50", weights=mobilenet, input_size=32, cache=False)
    assert "Traceback" not in str(info.value)


def test_wrong_alpha_for_a_weights_file(shared_data):
    mobilenet = shared_data / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
    with pytest.raises(WeightsUnavailableError, match="MobileNet"):
        embed(_pixels(1), "MobileNet", weights=mobilenet, alpha=0.5, input_size=32,
              cache=False)


def test_a_file_that_is_not_weights(tmp_path):
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("not hdf5")
    with pytest.raises(WeightsUnavailableError, match="bogus.h5"):
        embed(_pixels(1), "MobileNet", weights=bogus, alpha=0.25, input_size=32, cache=False)


def test_weights_identity(tmp_path):
    mobilenet = get_backbone("MobileNet")
    assert weights_identity(mobilenet, None) != weights_identity(mobilenet, "imagenet")
    assert weights_identity(mobilenet, "imagenet", 0.25) != \
        weights_identity(mobilenet, "imagenet", 0.5)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    a.write_bytes(b"one")
    b.write_bytes(b"one")
    assert weights_identity(mobilenet, str(a)) == weights_identity(mobilenet, str(b))
    b.write_bytes(b"two")
    assert weights_identity(mobilenet, str(a)) != weights_identity(mobilenet, str(b))
