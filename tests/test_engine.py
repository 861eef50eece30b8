"""The engine end to end through ``embed``: shapes, determinism, batching, progress,
cancellation, skipped items, native size, weights files and the cache.

Real MobileNet 0.25 ImageNet weights at a small input keep it fast and give
embeddings of a real scale (random MobileNet gives values near 1e-20).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed import EmbedConfig, EmbeddingCancelled, embed
from orangecontrib.transferembed.pipeline.cache import DB_NAME, EmbeddingCache
from orangecontrib.transferembed.pipeline.sources import ArraySource

SIDE = 64
REAL = {"model": "MobileNet", "weights": "imagenet", "alpha": 0.25, "input_size": SIDE}


def make_images(folder: Path, n: int, size=(80, 60), seed=0, fmt="png") -> list[Path]:
    """``n`` smooth random RGB images (upscaled noise), saved as files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        path = folder / f"img{i:02d}.{fmt}"
        Image.fromarray(small).resize(size, Image.Resampling.BILINEAR).save(path)
        paths.append(path)
    return paths


def assert_close(a: np.ndarray, b: np.ndarray, rel: float = 1e-4) -> None:
    """Equal up to ``rel`` of the embeddings' scale (never an absolute epsilon)."""
    assert a.shape == b.shape
    scale = float(np.abs(b).max())
    assert scale > 0
    np.testing.assert_allclose(a, b, rtol=rel, atol=rel * scale)


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    return make_images(tmp_path / "photos", 10)


@pytest.fixture
def real(mobilenet_keras_home):
    """Keyword arguments for real MobileNet 0.25 at 64x64, with no cache."""
    return dict(REAL, cache=False)


def test_shape_dtype_and_labels(photos, real):
    labels = [f"c{i % 3}" for i in range(len(photos))]
    result = embed(photos, labels=labels, **real)
    assert result.embeddings.shape == (10, 256)
    assert result.embeddings.dtype == np.float32
    assert result.indices.tolist() == list(range(10))
    assert result.skipped == []
    assert result.labels.tolist() == labels
    assert result.feature_names[:2] == ["n0", "n1"] and len(result.feature_names) == 256
    assert np.all(np.isfinite(result.embeddings))
    assert result.embeddings.max() > 1e-3  # real weights, real scale
    assert len(result) == 10


def test_same_input_gives_the_same_bits(photos, real):
    first = embed(photos, **real).embeddings
    second = embed(photos, **real).embeddings
    assert np.array_equal(first, second)


def test_batch_size_does_not_change_results(photos, real):
    results = [embed(photos, batch_size=b, **real).embeddings for b in (1, 7, 32)]
    assert_close(results[1], results[0])
    assert_close(results[2], results[0])


def test_random_weights_are_reproducible(photos):
    kwargs = {"model": "MobileNet", "alpha": 0.25, "input_size": 32, "cache": False}
    first = embed(photos[:3], weights=None, **kwargs).embeddings
    again = embed(photos[:3], weights="None", **kwargs).embeddings
    assert np.array_equal(first, again)


def test_progress_is_monotone_and_reaches_the_end(photos, real):
    calls = []
    embed(photos, batch_size=3, progress=lambda done, total: calls.append((done, total)),
          **real)
    assert calls[-1] == (10, 10)
    assert len(calls) >= 3
    assert all(total == 10 for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done)


def test_cancellation_between_batches(photos, real):
    calls = []
    with pytest.raises(EmbeddingCancelled):
        embed(photos, batch_size=2, progress=lambda d, t: calls.append(d),
              is_cancelled=lambda: len(calls) >= 1, **real)
    assert calls and max(calls) < 10
    with pytest.raises(EmbeddingCancelled):
        embed(photos, batch_size=2, is_cancelled=lambda: True, **real)


def _bad_and_odd_files(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """Good images, images in odd modes, and files that must be skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    good = make_images(folder, 2, seed=1)
    rgb = Image.open(good[0]).convert("RGB")
    cmyk = folder / "cmyk.jpg"
    rgb.convert("CMYK").save(cmyk, quality=90)
    deep = folder / "deep16.png"
    Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(deep)
    palette = folder / "palette.png"
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(palette, transparency=0)
    gray = folder / "gray.bmp"
    rgb.convert("L").save(gray)
    truncated = folder / "truncated.jpg"
    rgb.save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:600])
    text = folder / "notes.jpg"
    text.write_text("this is not a picture\n")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    missing = folder / "missing.png"
    bad = {str(missing): "not found", str(empty): "empty", str(truncated): "decode",
           str(text): "not an image"}
    paths = [good[0], missing, cmyk, empty, deep, truncated, palette, text, gray, good[1]]
    return paths, bad


def test_bad_images_are_skipped_with_reasons(tmp_path, real):
    paths, bad = _bad_and_odd_files(tmp_path / "mixed")
    labels = [f"l{i}" for i in range(len(paths))]
    result = embed(paths, labels=labels, batch_size=4, **real)
    skipped = {s.item: s.reason for s in result.skipped}
    assert set(skipped) == set(bad)
    for item, word in bad.items():
        assert word in skipped[item].lower(), skipped[item]
    ok = [i for i, p in enumerate(paths) if str(p) not in bad]
    assert result.indices.tolist() == ok
    assert result.labels.tolist() == [labels[i] for i in ok]
    assert result.embeddings.shape == (len(ok), 256)
    assert all(s.index == paths.index(Path(s.item)) for s in result.skipped)
    alone = embed([paths[i] for i in ok], **real).embeddings
    assert_close(result.embeddings, alone)


def test_everything_skipped_gives_an_empty_result(tmp_path, real):
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    result = embed([empty, tmp_path / "gone.png"], **real)
    assert result.embeddings.shape == (0, 256)
    assert len(result.skipped) == 2


def test_native_size_skips_images_under_the_minimum(tmp_path, real):
    small = make_images(tmp_path / "small", 2, size=(20, 24))
    big = make_images(tmp_path / "big", 3, size=(SIDE, SIDE), seed=3)
    native = dict(real, input_size="native")
    result = embed(small + big, **native)
    assert result.indices.tolist() == [2, 3, 4]
    assert len(result.skipped) == 2
    assert all("smaller than the model's minimum 32x32" in s.reason for s in result.skipped)
    fixed = embed(big, **real).embeddings  # already 64x64: the same pixels
    assert_close(result.embeddings, fixed)


def test_native_size_mixes_sizes(tmp_path, real):
    paths = make_images(tmp_path / "a", 2, size=(40, 36)) + \
        make_images(tmp_path / "b", 2, size=(70, 50), seed=5)
    order = [paths[0], paths[2], paths[1], paths[3]]
    result = embed(order, input_size="native", batch_size=4,
                   **{k: v for k, v in real.items() if k != "input_size"})
    assert result.embeddings.shape == (4, 256)
    per_image = [embed([p], input_size="native", batch_size=1,
                       **{k: v for k, v in real.items() if k != "input_size"}).embeddings[0]
                 for p in order]
    assert_close(result.embeddings, np.stack(per_image))


def test_config_is_checked_up_front():
    with pytest.raises(ValueError, match="batch size"):
        EmbedConfig(batch_size=0, weights=None)
    with pytest.raises(ValueError, match="resize"):
        EmbedConfig(resize="squash", weights=None)
    with pytest.raises(ValueError, match="at least 32"):
        EmbedConfig(input_size=16, weights=None)
    with pytest.raises(ValueError, match="224x224"):
        EmbedConfig(model="VGG16", input_size="native", weights=None)
    with pytest.raises(ValueError, match="alpha"):
        EmbedConfig(alpha=0.3, weights=None)
    assert EmbedConfig(model="mobilenet", weights="NONE").weights is None


def test_random_weights_do_not_depend_on_other_threads():
    # Keras draws an unseeded initializer's seed from Python's process-wide random.
    from orangecontrib.transferembed.models.builders import build
    from orangecontrib.transferembed.models.registry import get_backbone

    backbone = get_backbone("MobileNet")
    quiet = build(backbone, 0.25, 32, None).get_weights()
    stop = threading.Event()

    def draw():
        while not stop.is_set():
            random.random()
            time.sleep(0.0001)

    thread = threading.Thread(target=draw)
    thread.start()
    try:
        busy = build(backbone, 0.25, 32, None).get_weights()
    finally:
        stop.set()
        thread.join()
    assert all(np.array_equal(a, b) for a, b in zip(quiet, busy, strict=True))
    kernels = [w for w in quiet if w.ndim == 4]
    assert len({w.tobytes() for w in kernels}) == len(kernels)  # no two layers alike


def test_weights_from_a_file(tmp_path, shared_data):
    import keras

    from orangecontrib.transferembed.models.weights import RANDOM_SEED

    keras.utils.set_random_seed(RANDOM_SEED + 1)
    model = keras.applications.MobileNet(weights=None, alpha=0.25, include_top=False,
                                         pooling="avg", input_shape=(SIDE, SIDE, 3))
    model.load_weights(shared_data / "weights" / "mobilenet_2_5_224_tf_no_top.h5")
    first = model.layers[1]  # the first convolution: make the weights our own
    first.set_weights([w * 1.5 for w in first.get_weights()])
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)

    pixels = np.random.default_rng(7).integers(0, 256, (3, SIDE, SIDE, 3), dtype=np.uint8)
    result = embed(ArraySource(pixels), "MobileNet", weights=path, alpha=0.25,
                   input_size=SIDE, cache=False)
    preprocess = keras.applications.mobilenet.preprocess_input
    expected = np.asarray(model(preprocess(pixels.astype(np.float32)), training=False))
    assert_close(result.embeddings, expected)
    keras.backend.clear_session()


# --- the cache ---

def _db() -> Path:
    return Path(os.environ["TRANSFEREMBED_CACHE_DIR"]) / DB_NAME


def test_second_run_comes_from_the_cache(photos, mobilenet_keras_home):
    first = embed(photos, **REAL)
    assert first.n_cached == 0
    second = embed(photos, **REAL)
    assert second.n_cached == len(photos)
    assert np.array_equal(first.embeddings, second.embeddings)
    other = embed(photos, **dict(REAL, input_size=SIDE + 32))
    assert other.n_cached == 0  # another input size is another model key


def test_renamed_file_still_hits(photos, tmp_path, mobilenet_keras_home):
    embed(photos[:2], **REAL)
    moved = tmp_path / "renamed.png"
    moved.write_bytes(photos[0].read_bytes())
    assert embed([moved], **REAL).n_cached == 1


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_damaged_cache_is_rebuilt(photos, mobilenet_keras_home, damage):
    first = embed(photos, **REAL)
    db = _db()
    assert db.is_file()
    if damage == "garbage":
        db.write_bytes(b"this is no database " * 500)
    else:
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 2)
    again = embed(photos, **REAL)
    assert np.array_equal(again.embeddings, first.embeddings)
    third = embed(photos, **REAL)
    assert third.n_cached == len(photos)
    assert np.array_equal(third.embeddings, first.embeddings)


def _write_entries(folder: str, offset: int, count: int) -> None:
    cache = EmbeddingCache(folder)
    for start in range(0, count, 5):
        cache.put_many({f"key{offset + i}": np.full(64, offset + i, np.float32)
                        for i in range(start, start + 5)})
        cache.get(f"key{offset}")
    cache.close()


def test_two_processes_writing_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_entries, args=(str(tmp_path), k * 1000, 200))
               for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    cache = EmbeddingCache(tmp_path)
    assert len(cache) == 400
    for key in (0, 199, 1000, 1199):
        assert np.array_equal(cache.get(f"key{key}"), np.full(64, key, np.float32))
    cache.close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_connections_opening_a_new_cache_at_once(tmp_path):
    """SQLite refuses a WAL switch or schema race at once; opening must wait it out."""
    errors = []

    def open_and_write(folder, barrier, index):
        barrier.wait()
        try:
            cache = EmbeddingCache(folder)
            cache.put_many({f"k{index}": np.full(4, index, np.float32)})
            cache.close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(exc))

    for trial in range(60):
        folder = tmp_path / str(trial)
        barrier = threading.Barrier(6)
        threads = [threading.Thread(target=open_and_write, args=(folder, barrier, i))
                   for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        cache = EmbeddingCache(folder)
        assert len(cache) == 6
        cache.close()


def test_lru_eviction_keeps_the_file_small(tmp_path):
    limit = 256 * 1024
    cache = EmbeddingCache(tmp_path, max_bytes=limit)
    vector = np.ones(1024, np.float32)  # 4 KiB each; 200 of them would be 800 KiB
    for i in range(200):
        cache.put_many({f"k{i}": vector * i})
        if i >= 1:
            assert cache.get("k0") is not None  # used again and again: stays
    assert cache.get("k1") is None  # the least recently used went first
    assert cache.get("k199") is not None
    assert 0 < len(cache) < 200
    cache.close()
    assert (tmp_path / DB_NAME).stat().st_size <= 1.25 * limit


@pytest.mark.parametrize("settings, message", [
    ({"model": "NASNetMobile", "input_size": "native"}, "own size"),
    ({"model": "VGG16", "input_size": "native"}, "own size"),
    ({"batch_size": "many"}, "whole number"),
    ({"input_size": "big"}, "whole number"),
])
def test_bad_settings_are_settings_errors(settings, message):
    from orangecontrib.transferembed.errors import SettingsError

    with pytest.raises(SettingsError, match=message):
        EmbedConfig(**{"weights": None, **settings})


def test_cache_none_means_no_cache(tmp_path):
    result = embed(np.zeros((2, 40, 40, 3), np.uint8), "MobileNet", alpha=0.25, weights=None,
                   cache=None)
    assert result.embeddings.shape == (2, 256) and result.n_cached == 0
