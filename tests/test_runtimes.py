"""Runtimes: converted models against the Keras reference, int8 repeatability, the
store of converted models, fallbacks, and the choice that ``auto`` makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from orangecontrib.transferembed import embed
from orangecontrib.transferembed.config import EmbedConfig
from orangecontrib.transferembed.errors import EmbeddingCancelled, SettingsError
from orangecontrib.transferembed.runtimes import store
from orangecontrib.transferembed.runtimes.base import ConversionFailed, converted_key, has_openvino
from orangecontrib.transferembed.runtimes.choice import cancellable, resolve

SIDE = 64


def pixels(n=12, side=SIDE, seed=0) -> np.ndarray:
    """Smooth random images (upscaled noise), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    return np.clip(np.kron(small, np.ones((1, side // 4, side // 4, 1))), 0, 255
                   ).astype(np.uint8)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference of a row, against that row's largest absolute value."""
    scale = np.abs(b).max(axis=1, keepdims=True)
    assert np.all(scale > 0)
    return float((np.abs(a - b) / scale).max())


def weights_file(tmp_path) -> str:
    """MobileNet 0.25 weights of our own: random, but with a real scale (the seeded
    random weights give features near 1e-20)."""
    import keras

    model = keras.applications.MobileNet(weights=None, alpha=0.25, include_top=False,
                                         pooling="avg", input_shape=(SIDE, SIDE, 3))
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta + rng.uniform(0, 0.5, beta.shape).astype("f4"),
                               mean, var])
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    keras.backend.clear_session()
    return str(path)


@pytest.fixture(scope="module")
def own_weights(tmp_path_factory) -> str:
    return weights_file(tmp_path_factory.mktemp("weights"))


def run(runtime="auto", precision="fp32", data=None, **more):
    data = pixels() if data is None else data
    settings = dict(model="MobileNet", weights=more.pop("weights"), alpha=0.25,
                    input_size=SIDE, cache=False, runtime=runtime, precision=precision)
    return embed(data, **{**settings, **more})


def test_auto_is_tflite_on_this_cpu_and_exact(own_weights):
    auto = run(weights=own_weights)
    keras = run("keras", weights=own_weights)
    assert auto.config.runtime == "tflite" and keras.config.runtime == "keras"
    assert relative_error(auto.embeddings, keras.embeddings) <= 1e-4
    assert auto.embeddings.max() > 1e-3  # a real scale, not ~1e-20


def test_int8_is_close_and_repeats_bit_for_bit(own_weights, tmp_path):
    fast = run(precision="int8", weights=own_weights)
    again = run(precision="int8", weights=own_weights)
    exact = run("keras", weights=own_weights)
    assert np.array_equal(fast.embeddings, again.embeddings)
    cosine = np.sum(fast.embeddings * exact.embeddings, 1) / (
        np.linalg.norm(fast.embeddings, axis=1) * np.linalg.norm(exact.embeddings, axis=1))
    assert cosine.mean() > 0.9
    np.save(tmp_path / "data.npy", pixels())
    code = (f"import numpy as np; from orangecontrib.transferembed import embed; "
            f"r = embed(np.load({str(tmp_path / 'data.npy')!r}), 'MobileNet', alpha=0.25, "
            f"weights={own_weights!r}, input_size={SIDE}, cache=False, precision='int8'); "
            f"np.save({str(tmp_path / 'other.npy')!r}, r.embeddings)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   capture_output=True)
    assert np.array_equal(np.load(tmp_path / "other.npy"), fast.embeddings)


@pytest.mark.skipif(not has_openvino(), reason="the [openvino] extra is not installed")
def test_openvino_runs_the_converted_file(own_weights):
    exact = run("keras", weights=own_weights)
    fp32 = run("openvino", weights=own_weights)
    assert relative_error(fp32.embeddings, exact.embeddings) <= 1e-4
    first = run("openvino", "int8", weights=own_weights)
    assert np.array_equal(first.embeddings, run("openvino", "int8", weights=own_weights)
                          .embeddings)
    assert run(precision="int8", weights=own_weights).config.runtime == "tflite"  # faithful


@pytest.mark.own_store
def test_converted_models_are_stored_and_a_damaged_one_is_rebuilt(own_weights):
    stages = []
    first = run(weights=own_weights, status=stages.append)
    config = resolve(EmbedConfig(model="MobileNet", weights=own_weights, alpha=0.25,
                                 input_size=SIDE))[0]
    stored = store.load(converted_key(config), store.store_folder(config))
    assert stored is not None and stored.stat().st_size > 100_000
    meta = json.loads(stored.with_suffix(".json").read_text())
    assert meta["key"] == converted_key(config)
    assert any(text.startswith("Converting MobileNet to TFLite fp32") for text in stages)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    folder = store.store_folder(config)
    assert store.load(converted_key(config), folder) is None  # damaged: not used
    from orangecontrib.transferembed.runtimes import choice as runtimes

    runtimes._runtimes.clear()  # a new process would read the file
    stages.clear()
    again = run(weights=own_weights, status=stages.append)
    assert stages and np.array_equal(first.embeddings, again.embeddings)
    assert store.load(converted_key(config), store.store_folder(config)) is not None


@pytest.mark.own_store
def test_converted_models_follow_the_cache_folder_the_caller_names(tmp_path, monkeypatch):
    default = tmp_path / "default"
    monkeypatch.setenv("TRANSFEREMBED_CACHE_DIR", str(default))
    named = tmp_path / "named"
    images = np.random.default_rng(0).integers(0, 256, (3, SIDE, SIDE, 3), dtype=np.uint8)
    result = embed(images, "MobileNet", weights=None, alpha=0.25, input_size=SIDE,
                   runtime="tflite", cache=named)
    assert result.config.runtime == "tflite"
    assert list((named / "converted").glob("*.tflite"))
    assert not default.exists() or not any(default.rglob("*"))


@pytest.mark.own_store  # it leaves the backbone marked as not converting
def test_a_backbone_that_does_not_convert_runs_on_keras_with_a_notice(own_weights,
                                                                      monkeypatch):
    from orangecontrib.transferembed.runtimes import choice as runtimes
    from orangecontrib.transferembed.runtimes import converted

    def broken(config, weights_path, is_cancelled=None):
        raise ConversionFailed("RuntimeError: no such op in TFLite (test)")

    monkeypatch.setattr(converted, "convert", broken)
    runtimes._runtimes.clear()
    notices = []
    result = run(weights=own_weights, input_size=SIDE + 32, data=pixels(side=SIDE + 32),
                 notice=notices.append)
    assert result.config.runtime == "keras"
    assert len(notices) == 1 and "does not convert to tflite" in notices[0]
    assert "no such op" in notices[0] and result.notices == notices
    resolved, note = resolve(EmbedConfig(model="MobileNet", weights=own_weights, alpha=0.25,
                                         input_size=SIDE + 32))
    assert resolved.runtime == "keras" and "does not convert" in note  # remembered


def test_native_size_runs_on_keras(own_weights):
    mixed = [pixels(2, 64), pixels(2, 96)]
    from orangecontrib.transferembed.pipeline.sources import ArraySource

    for data in mixed:
        result = embed(ArraySource(data), "MobileNet", alpha=0.25, weights=own_weights,
                       input_size="native", cache=False)
        assert result.config.runtime == "keras"
    notices = []
    embed(ArraySource(mixed[0]), "MobileNet", alpha=0.25, weights=own_weights,
          input_size="native", cache=False, precision="int8", notice=notices.append)
    assert notices and "keras in fp32" in notices[0]


def test_bad_runtime_settings():
    with pytest.raises(SettingsError, match="fp32 only"):
        resolve(EmbedConfig(weights=None, runtime="keras", precision="int8"))
    with pytest.raises(SettingsError, match="runtime"):
        EmbedConfig(weights=None, runtime="onnx")
    with pytest.raises(SettingsError, match="precision"):
        EmbedConfig(weights=None, precision="bf16")


def test_runtime_and_precision_are_in_the_cache_key(own_weights):
    data = pixels()
    exact = run(weights=own_weights, cache=True)
    fast = run(precision="int8", weights=own_weights, cache=True)
    assert exact.n_cached == 0 and fast.n_cached == 0
    assert run(weights=own_weights, cache=True, data=data).n_cached == len(data)


def test_building_can_be_given_up():
    import threading

    release = threading.Event()

    def slow():
        release.wait(10)
        return "model"

    flag = threading.Timer(0.2, lambda: None)
    flag.start()
    with pytest.raises(EmbeddingCancelled):
        cancellable(slow, lambda: not flag.is_alive())
    release.set()
    assert cancellable(lambda: "model", lambda: False) == "model"


def children(pid: int) -> list[int]:
    """The processes that ``pid`` started (Linux's /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(predicate, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_the_conversion_runs_in_a_child_and_gives_this_process_s_model(own_weights):
    from orangecontrib.transferembed.runtimes import conversion
    from orangecontrib.transferembed.runtimes.tflite_runtime import TFLiteRuntime

    config = EmbedConfig(model="MobileNet", alpha=0.25, weights=own_weights,
                         input_size=SIDE, runtime="tflite", precision="int8")
    child = conversion.convert(config, own_weights)  # in a process of its own
    here = conversion.flatbuffer(config, own_weights)
    batch = pixels(4).astype(np.float32)
    assert np.array_equal(TFLiteRuntime(child, "int8", 1)(batch),
                          TFLiteRuntime(here, "int8", 1)(batch))


@LINUX
@pytest.mark.parametrize("ending, lasting", [("SIGSEGV", True), ("SIGKILL", False)])
def test_a_converter_that_dies_is_a_failed_conversion(ending, lasting):
    """A crash (the converter's own fault) is remembered; a kill (out of memory,
    a user) is not, so the next run converts again."""
    import signal
    import threading

    from orangecontrib.transferembed.runtimes import conversion

    config = EmbedConfig(model="MobileNet", alpha=0.25, weights=None, input_size=SIDE,
                         runtime="tflite", precision="int8")
    before = set(children(os.getpid()))
    outcome = {}

    def target():
        try:
            conversion.convert(config, None)
        except ConversionFailed as exc:
            outcome["failed"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    child = wait_for(lambda: set(children(os.getpid())) - before, 30)
    assert len(child) == 1
    os.kill(child.pop(), getattr(signal, ending))
    thread.join(60)
    failed = outcome["failed"]
    assert ending in str(failed) and failed.lasting is lasting


@LINUX
def test_the_converter_ends_with_the_process_that_started_it(tmp_path):
    """A killed Orange (or CLI) leaves no converter running on."""
    script = ("from orangecontrib.transferembed.config import EmbedConfig\n"
              "from orangecontrib.transferembed.runtimes import conversion\n"
              "conversion.convert(EmbedConfig(model='ResNet50', weights=None, "
              "runtime='tflite'), None)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        child = wait_for(lambda: children(parent.pid), 60)
        assert len(child) == 1
    finally:
        parent.kill()
        parent.wait()
    assert wait_for(lambda: not alive(child[0]), 10)
