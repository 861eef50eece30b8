"""Check every registry entry against Keras itself (a one-off, slow script).

For each backbone (and each width multiplier ``alpha``) it:

- asks the Keras constructor for ``weights="imagenet"`` with ``keras.utils.get_file``
  intercepted, so it learns the file name and URL Keras would download (no network);
- builds the registry's feature model (the Keras runtime) with random weights, one at a time,
  and checks its real feature size, running it on the minimum input (and, with
  ``--full-size``, on the default input too);
- checks that one pixel less than the minimum input is refused by Keras;
- builds the random weights again from another state of Python's ``random`` (which
  Dask's event loop, say, draws from) and checks that they come out the same;
- checks the preprocessing mode against the module's own ``preprocess_input``, and the
  weights file's hash against the one Keras publishes;
- with ``--runtimes``, converts the backbone (random weights, its default input size) to
  TFLite fp32 and int8 and runs one batch, and lists the runtime and precision that
  ``--runtime auto`` gives it (Keras where it does not convert).

Usage: ``python bench/check_registry.py [--full-size] [--runtimes] [NAME ...]``; exit
status 1 on any mismatch.
Memory is freed with ``keras.backend.clear_session()`` between backbones.
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from orangecontrib.transferembed.models.registry import BACKBONES, Backbone, get_backbone  # noqa: E402


class _Intercepted(Exception):
    pass


def keras_download(keras, backbone: Backbone, alpha: float) -> tuple[str, str, str]:
    """The (file name, URL, published hash) Keras would download for ImageNet weights."""
    from keras.src.utils import file_utils

    seen: dict[str, str] = {}

    def fake_get_file(fname=None, origin=None, *args, file_hash=None, **kwargs):
        seen.update(fname=fname, origin=origin, file_hash=file_hash or "")
        raise _Intercepted

    original, file_utils.get_file = file_utils.get_file, fake_get_file
    kwargs = {"alpha": alpha} if backbone.has_alpha else {}
    side = backbone.input_size
    try:
        getattr(keras.applications, backbone.name)(
            weights="imagenet", include_top=not backbone.pooled,
            pooling="avg" if backbone.pooled else None,
            input_shape=(side, side, 3) if backbone.pooled else None, **kwargs)
    except _Intercepted:
        pass
    finally:
        file_utils.get_file = original
        keras.backend.clear_session()
    return seen.get("fname", "?"), seen.get("origin", "?"), seen.get("file_hash", "")


def preprocessing_mode(module: str) -> str:
    """Which of caffe/tf/torch/none ``preprocess_input`` of ``module`` does."""
    preprocess = importlib.import_module(f"keras.applications.{module}").preprocess_input
    x = np.array([[[[10.0, 100.0, 200.0]]]], np.float32)
    y = np.asarray(preprocess(x.copy()))
    expected = {
        "none": x,
        "tf": x / 127.5 - 1,
        "torch": (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
        "caffe": x[..., ::-1] - [103.939, 116.779, 123.68],
    }
    for mode, value in expected.items():
        if np.allclose(y, value, rtol=1e-5, atol=1e-4):
            return mode
    return f"unknown ({y.ravel().tolist()})"


def min_size_refused(keras, backbone: Backbone, alpha: float) -> bool:
    """Whether Keras refuses an input one pixel under the registry's minimum."""
    side = backbone.min_input_size - 1
    kwargs = {"alpha": alpha} if backbone.has_alpha else {}
    try:
        getattr(keras.applications, backbone.name)(
            weights=None, include_top=False, pooling="avg", input_shape=(side, side, 3),
            **kwargs)
    except ValueError:
        return True
    finally:
        keras.backend.clear_session()
    return False


def _runtime(backbone: Backbone, alpha: float, size: int | None):
    from orangecontrib.transferembed.config import NATIVE, EmbedConfig
    from orangecontrib.transferembed.runtimes.keras_runtime import KerasRuntime

    config = EmbedConfig(model=backbone.name, weights=None, alpha=alpha,
                         input_size=NATIVE if size is None else size, runtime="keras")
    return config, KerasRuntime(config, None)


def same_random_weights(config, runtime) -> bool:
    """Whether building the model again, from another state of Python's ``random``,
    gives its weights (Keras draws the seed of an unseeded initializer from it)."""
    from orangecontrib.transferembed.runtimes.keras_runtime import KerasRuntime

    random.seed(time.perf_counter_ns())
    again = KerasRuntime(config, None)
    return all(np.array_equal(a, b) for a, b in
               zip(runtime.model.get_weights(), again.model.get_weights(), strict=True))


def check(keras, backbone: Backbone, alpha: float, full_size: bool = False) -> list[str]:
    """The mismatches between the registry and Keras for one backbone and alpha."""
    problems = []
    fname, url, digest = keras_download(keras, backbone, alpha)
    if fname != backbone.weights_filename(alpha):
        problems.append(f"weights file {backbone.weights_filename(alpha)} != Keras' {fname}")
    if url != backbone.weights_url(alpha):
        problems.append(f"weights URL {backbone.weights_url(alpha)} != Keras' {url}")
    if digest and digest != backbone.weights_digest(alpha):
        problems.append(f"weights hash {backbone.weights_digest(alpha)!r} != Keras' {digest}")
    mode = preprocessing_mode(backbone.module)
    if mode != backbone.preprocessing:
        problems.append(f"preprocessing {backbone.preprocessing} != {mode}")

    expected = backbone.features(alpha)
    if backbone.pooled and not backbone.fixed_input:
        sizes = [backbone.min_input_size] + ([backbone.input_size] if full_size else [])
        config, runtime = _runtime(backbone, alpha, None)  # any input size
    else:
        sizes = [backbone.input_size]
        config, runtime = _runtime(backbone, alpha, backbone.input_size)
    if runtime.feature_size != expected:
        problems.append(f"feature size {expected} != built {runtime.feature_size}")
    if not same_random_weights(config, runtime):
        problems.append("random weights change when another thread uses Python's random")
    for side in sizes:
        try:
            out = runtime(np.full((1, side, side, 3), 128, np.float32))
        except Exception as exc:  # noqa: BLE001 - report whatever Keras raises
            problems.append(f"input {side}x{side} fails: {type(exc).__name__}: {exc}"[:300])
            continue
        if out.shape != (1, expected) or not np.all(np.isfinite(out)):
            problems.append(f"input {side}x{side} gives shape {out.shape}")
    del runtime
    keras.backend.clear_session()
    gc.collect()
    if backbone.pooled and not backbone.fixed_input and backbone.min_input_size > 1 \
            and not min_size_refused(keras, backbone, alpha):
        problems.append(f"Keras accepts inputs under the minimum {backbone.min_input_size}")
    return problems


def runtimes_of(keras, backbone: Backbone, alpha: float) -> tuple[str, list[str]]:
    """What ``--runtime auto`` gives the backbone in fp32 and int8, after converting it
    and running one batch; and the problems found."""
    from orangecontrib.transferembed.config import EmbedConfig
    from orangecontrib.transferembed.runtimes import converted
    from orangecontrib.transferembed.runtimes.choice import resolve

    got, problems = [], []
    for precision in ("fp32", "int8"):
        config, notice = resolve(EmbedConfig(model=backbone.name, weights=None, alpha=alpha,
                                             precision=precision))
        if config.runtime == "keras":  # a GPU, or a conversion that failed before
            got.append("keras fp32" + (f" ({notice})" if notice else ""))
            continue
        started = time.perf_counter()
        try:
            runtime = converted.converted_runtime(config, None, None)
            side = int(config.input_size)
            out = runtime(np.full((2, side, side, 3), 128, np.float32))
            if out.shape != (2, backbone.features(alpha)):
                raise ValueError(f"output shape {out.shape}")
        except Exception as exc:  # noqa: BLE001 - the runtime falls back to Keras
            got.append(f"keras fp32 (no {precision}: {type(exc).__name__})")
            problems.append(f"{precision}: {type(exc).__name__}: {exc}"[:300])
            continue
        got.append(f"{config.runtime} {precision} ({time.perf_counter() - started:.0f} s)")
        del runtime
        keras.backend.clear_session()
        gc.collect()
    return ", ".join(got), problems


def main(args: list[str]) -> int:
    from orangecontrib.transferembed.models.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    full_size, conversions = "--full-size" in args, "--runtimes" in args
    names = [a for a in args if not a.startswith("--")]
    backbones = [get_backbone(n) for n in names] if names else \
        [b for b in BACKBONES.values() if not b.foundation]  # keras-hub's: test_foundation
    failed = 0
    for backbone in backbones:
        for alpha in backbone.alphas():
            start = time.perf_counter()
            problems = check(keras, backbone, alpha, full_size)
            runtimes = ""
            if conversions:
                runtimes, more = runtimes_of(keras, backbone, alpha)
                problems += more
            label = backbone.name + (f" alpha={alpha:g}" if backbone.has_alpha else "")
            status = "OK" if not problems else "MISMATCH"
            print(f"{label:28s} {status:8s} {backbone.features(alpha):5d} features  "
                  f"min {backbone.min_input_size:3d}  {time.perf_counter() - start:6.1f} s"
                  + (f"  auto: {runtimes}" if runtimes else ""), flush=True)
            for problem in problems:
                print(f"    - {problem}", flush=True)
            failed += bool(problems)
    print(f"{failed} mismatching entries", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
