"""The runtimes' figures (issue 9), a part of ``bench.py``.

* speed: the installed ``transferembed`` from the JPEG files, ``--no-cache``, random
  weights, per image by ``(T(398) - T(100)) / 298``, for MobileNet 1.0 and ResNet50,
  each as the default (exact fp32), ``--precision int8`` and ``--runtime keras``,
  against bare Keras ``predict_on_batch`` on pre-decoded batches of 32; interleaved,
  best of the rounds;
* the first run's conversion, fp32 and int8;
* exactness: the default against ``--runtime keras`` with real ImageNet weights
  (MobileNet 0.25), the largest difference against each row's largest value;
* int8: linear-probe accuracy against fp32 (hymenoptera train -> val), and two runs
  bit for bit;
* the distance to the physical limit: the model's fp32 FLOPs per image times images/s,
  against this CPU's measured float32 matrix-multiply rate.
"""

from __future__ import annotations

import time

import numpy as np
from common import LARGE, SMALL, Bare, ips, per_image, run_child, section

VARIANTS = {"default": [], "int8": ["--precision", "int8"], "keras": ["--runtime", "keras"]}
#: Measured and reported where the [openvino] extra is installed (no target).
OPENVINO = {"openvino-int8": ["--runtime", "openvino", "--precision", "int8"]}
#: Targets of the issue: (model, variant) -> at least this many times bare Keras.
SPEED_TARGETS = {("MobileNet", "default"): 1.3, ("MobileNet", "int8"): 3.0,
                 ("ResNet50", "default"): 1.0, ("ResNet50", "int8"): 2.5}


def model_flops(model) -> float:
    """Floating-point operations of one image through a Keras model (2 per multiply-add),
    counted over its convolutions and dense layers."""
    import keras

    total = 0.0
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        if shape is None or isinstance(shape, (list, tuple)):
            continue
        out = shape.shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * out[3] * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            channels = layer.input.shape[-1] // layer.groups
            total += 2 * out[1] * out[2] * out[3] * kh * kw * channels
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * out[-1]
    return total


def matmul_gflops(size: int = 2048, rounds: int = 5) -> float:
    """This machine's float32 matrix-multiply rate (numpy's BLAS, all cores)."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), np.float32)
    b = rng.random((size, size), np.float32)
    a @ b
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


class RuntimeFigures:
    def __init__(self, bench):
        self.bench, self.r = bench, bench.results

    def run(self) -> None:
        self.peak = matmul_gflops()
        self.r.put("matmul_gflops", self.peak, f"float32 matrix multiply, numpy, all cores: "
                   f"{self.peak:.0f} GFLOP/s (the practical fp32 peak of this CPU)")
        for model in ("MobileNet", "ResNet50"):
            self.speed(model)
        self.conversion()
        self.quality()

    def speed(self, model: str) -> None:
        from orangecontrib.transferembed.runtimes.base import has_openvino

        bench = self.bench
        variants = {**VARIANTS, **(OPENVINO if has_openvino() else {})}
        section(f"runtimes: {model} at 224 px, random weights, from the JPEG files")
        bare = Bare(model)
        flops = model_flops(bare.model)
        for flags in variants.values():  # the first run converts: not timed
            run_child(bench.cli_args(bench.folders[SMALL], "warm", *flags, "--no-cache",
                                     model=model), bench.env())
        times = {(v, n): [] for v in variants for n in (SMALL, LARGE)}
        for _ in range(bench.rounds):
            bare.measure()
            for variant, flags in variants.items():
                for n in (SMALL, LARGE):
                    wall, _, _ = run_child(bench.cli_args(bench.folders[n], f"{variant}{n}",
                                                          *flags, "--no-cache", model=model),
                                           bench.env())
                    times[(variant, n)].append(wall)
            bare.measure()
        reference = bare.reference
        share = flops * reference / 1e9 / self.peak
        self.r.put(f"bare_{model}_ips", reference, f"bare Keras predict_on_batch: "
                   f"{reference:.1f} images/s ({flops / 1e9:.2f} GFLOP per image: "
                   f"{flops * reference / 1e9:.0f} GFLOP/s, {share:.0%} of the measured peak)")
        for variant in variants:
            value = ips(per_image(min(times[(variant, SMALL)]), min(times[(variant, LARGE)])))
            ratio = value / reference
            self.r.put(f"{model}_{variant}_ips", value,
                       f"transferembed {variant}: {value:.1f} images/s = {ratio:.2f}x bare "
                       f"Keras (best {min(times[(variant, SMALL)]):.1f} s for {SMALL}, "
                       f"{min(times[(variant, LARGE)]):.1f} s for {LARGE})"
                       + (f"; {flops * value / 1e9:.0f} GFLOP/s end to end, "
                          f"{flops * value / 1e9 / self.peak:.0%} of the measured peak"
                          if "int8" not in variant else ""))
            goal = SPEED_TARGETS.get((model, variant))
            if goal is not None:
                self.r.target(f"{model} {variant} / bare Keras", ratio, goal, "x")

    def conversion(self) -> None:
        from orangecontrib.transferembed.config import EmbedConfig
        from orangecontrib.transferembed.runtimes import conversion

        section("the first run's conversion (once per backbone, kept in the cache folder)")
        for model in ("MobileNet", "ResNet50"):
            for precision in ("fp32", "int8"):
                config = EmbedConfig(model=model, weights=None, runtime="tflite",
                                     precision=precision)
                start = time.perf_counter()
                data = conversion.convert(config, None)
                seconds = time.perf_counter() - start
                self.r.put(f"convert_{model}_{precision}_s", seconds,
                           f"{model} {precision}: {seconds:.1f} s ({len(data) / 1e6:.1f} MB)")

    def quality(self) -> None:
        from orangecontrib.transferembed import embed
        from orangecontrib.transferembed.pipeline.sources import folder_source

        bench = self.bench
        section("exactness and int8 quality: MobileNet 0.25 with its real ImageNet weights")
        root = bench.photos_root
        split = {name: folder_source(root / name) for name in ("train", "val")}
        common = {"alpha": 0.25, "cache": False}
        exact = {name: embed(source, runtime="keras", **common)
                 for name, source in split.items()}
        fast = {name: embed(source, **common) for name, source in split.items()}
        int8 = {name: embed(source, precision="int8", **common)
                for name, source in split.items()}
        again = embed(split["val"], precision="int8", **common)
        from orangecontrib.transferembed.runtimes.base import has_openvino

        if has_openvino():
            vino = {name: embed(source, runtime="openvino", precision="int8", **common)
                    for name, source in split.items()}
            self.r.put("openvino_int8_probe", _probe(vino),
                       f"openvino int8 (opt-in): probe {_probe(vino):.3f}, mean cosine "
                       f"{_cosine(vino['val'].embeddings, exact['val'].embeddings):.4f}")
        scale = np.abs(exact["val"].embeddings).max(axis=1, keepdims=True)
        worst = float((np.abs(fast["val"].embeddings - exact["val"].embeddings) / scale).max())
        self.r.put("default_vs_keras_rel", worst, f"default ({fast['val'].config.runtime}) "
                   f"against keras: largest difference {worst:.2e} of the row's largest value")
        self.r.target("default against keras, per row", worst, 1e-4, "", lower_is_better=True)
        probe = {label: _probe(result) for label, result in (("fp32", exact), ("int8", int8))}
        gap = abs(probe["fp32"] - probe["int8"])
        cosine = _cosine(int8["val"].embeddings, exact["val"].embeddings)
        self.r.put("int8_probe", probe, f"linear probe, train -> val: fp32 {probe['fp32']:.3f},"
                   f" int8 ({int8['val'].config.runtime}) {probe['int8']:.3f}; mean cosine "
                   f"int8/fp32 {cosine:.4f}")
        self.r.target("int8 probe accuracy gap to fp32", gap, 0.02, "", lower_is_better=True)
        same = bool(np.array_equal(again.embeddings, int8["val"].embeddings))
        self.r.put("int8_repeat", same, f"int8, two runs: bit for bit equal: {same}")
        self.r.target("int8 two runs equal (1 = yes)", float(same), 1, "")


def _probe(results: dict) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, val = results["train"], results["val"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    model.fit(train.embeddings, train.labels)
    return float(model.score(val.embeddings, val.labels))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1)
                                             * np.linalg.norm(b, axis=1))))

