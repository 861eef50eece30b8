"""Throughput, runtimes, memory and cache benchmark of Orange3-TransferEmbed (issues 5, 9).

    python bench/bench.py [--quick] [--data /work/shared/data]

MobileNet at 224 px on the CPU (and ResNet50 for the runtimes). Prints every
figure and the ratios of the targets in one run, ending with a PASS/FAIL table.
The cost per image of a run is ``(time(398 images) - time(100 images)) / 298``,
which leaves start-up (imports, building the model) out. Timed things are interleaved
with the bare model and each keeps its best time, so that load from other
processes on a shared machine cancels out as far as it can.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    LARGE,
    MOBILENET_025,
    SIDE,
    SMALL,
    Bare,
    Results,
    cli_exe,
    ips,
    link_subset,
    per_image,
    run_child,
    section,
)
from runtimes_bench import RuntimeFigures

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- the benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.rounds = args.rounds or (1 if args.quick else 3)
        self.data = Path(args.data)
        self.photos_root = self.data / "images" / "hymenoptera"
        self.tmp = Path(tempfile.mkdtemp(prefix="transferembed-bench-"))
        self.cli = cli_exe()
        self.results = Results()
        from orangecontrib.transferembed.pipeline.sources import folder_source

        self.source = folder_source(self.photos_root)
        assert len(self.source) == LARGE, f"expected {LARGE} photos, got {len(self.source)}"
        paths = [Path(p) for p in self.source.paths]
        step = LARGE / SMALL
        self.small_rows = sorted({int(i * step) for i in range(SMALL)})
        self.small_dir = link_subset([paths[i] for i in self.small_rows], self.photos_root,
                                     self.tmp / "photos100")
        self.folders = {SMALL: self.small_dir, LARGE: self.photos_root}
        self.keras_home = self.tmp / "keras_home"
        (self.keras_home / "models").mkdir(parents=True)
        (self.keras_home / "models" / MOBILENET_025).symlink_to(
            self.data / "weights" / MOBILENET_025)
        os.environ["KERAS_HOME"] = str(self.keras_home)
        os.environ["TRANSFEREMBED_CACHE_DIR"] = str(self.tmp / "default-cache")

    def env(self, **extra) -> dict:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def cli_args(self, folder: Path, name: str, *more: str,
                 model: str = "MobileNet") -> list[str]:
        return [self.cli, "--folder", str(folder), "-tm", model, "-weights", "None",
                "-dir", str(self.tmp / "out"), "-n", name, "-q", *more]

    # -------------------------------------------------------- throughput

    def throughput(self) -> None:
        from orangecontrib.transferembed import embed

        section("throughput, MobileNet alpha 1.0, 224 px, random weights (same arithmetic)")
        bare = self.bare = Bare()
        subset = {SMALL: self.source.subset(self.small_rows), LARGE: self.source}
        api_t = {SMALL: [], LARGE: []}
        cli_t = {SMALL: [], LARGE: []}
        cli_cpu = {SMALL: [], LARGE: []}
        embed(subset[SMALL], weights=None, cache=False)  # build the engine's model once
        for _ in range(self.rounds):
            bare.measure()
            for n in (SMALL, LARGE):
                start = time.perf_counter()
                result = embed(subset[n], weights=None, cache=False)
                api_t[n].append(time.perf_counter() - start)
                assert len(result) == n, result.skipped
            bare.measure()
            for n in (SMALL, LARGE):
                wall, cpu, _ = run_child(self.cli_args(self.folders[n], f"cli{n}", "--no-cache"),
                                         self.env())
                cli_t[n].append(wall)
                cli_cpu[n].append(cpu)
        bare.measure()
        r = self.results
        for name, value in bare.best.items():
            r.put(f"bare_{name}_ips", value, f"bare model, {name} (batch 32): {value:.1f} images/s")
        api = per_image(min(api_t[SMALL]), min(api_t[LARGE]))
        cli = per_image(min(cli_t[SMALL]), min(cli_t[LARGE]))
        cli_cpu_img = per_image(min(cli_cpu[SMALL]), min(cli_cpu[LARGE]))
        self.ours_ips = ips(cli)
        r.put("api_ips", ips(api), f"embed() from JPEG files: {api * 1000:.1f} ms/image = "
              f"{ips(api):.1f} images/s (best times {min(api_t[SMALL]):.2f} s for {SMALL}, "
              f"{min(api_t[LARGE]):.2f} s for {LARGE})")
        r.put("cli_ips", ips(cli), f"transferembed command from JPEG files: {cli * 1000:.1f} "
              f"ms/image = {ips(cli):.1f} images/s (best times {min(cli_t[SMALL]):.2f} s, "
              f"{min(cli_t[LARGE]):.2f} s; CPU {cli_cpu_img * 1000:.1f} ms/image)")
        for face, value in (("api", ips(api)), ("cli", ips(cli))):
            for name, ref in bare.best.items():
                r.put(f"ratio_{face}_vs_{name.replace(' ', '_')}", value / ref,
                      f"{face.upper()} / bare {name}: {value / ref:.2f}")
        r.put("ratio_cpu_cli_vs_predict_on_batch", bare.cpu / cli_cpu_img,
              f"CPU seconds per image, bare predict_on_batch {bare.cpu * 1000:.1f} ms / CLI "
              f"{cli_cpu_img * 1000:.1f} ms: {bare.cpu / cli_cpu_img:.2f} (less sensitive to "
              f"load from other processes than the wall-clock ratio)")
        r.target("end-to-end (CLI) / bare predict_on_batch", ips(cli) / bare.reference,
                 0.85, "")
        r.target("end-to-end (API) / bare predict_on_batch", ips(api) / bare.reference,
                 0.85, "")

    def real_weights(self) -> None:
        from orangecontrib.transferembed import embed

        section("MobileNet alpha 0.25 with its real ImageNet weights")
        bare = Bare(alpha=0.25, weights=str(self.data / "weights" / MOBILENET_025))
        subset = {SMALL: self.source.subset(self.small_rows), LARGE: self.source}
        embed(subset[SMALL], alpha=0.25, cache=False)
        times = {SMALL: [], LARGE: []}
        for _ in range(self.rounds):
            bare.measure()
            for n in (SMALL, LARGE):
                start = time.perf_counter()
                embed(subset[n], alpha=0.25, cache=False)
                times[n].append(time.perf_counter() - start)
        bare.measure()
        api = ips(per_image(min(times[SMALL]), min(times[LARGE])))
        r = self.results
        r.put("bare025_ips", bare.reference,
              f"bare predict_on_batch: {bare.reference:.1f} images/s, compiled step "
              f"{bare.best['compiled step']:.1f}")
        r.put("api025_ips", api, f"embed(): {api:.1f} images/s, ratio to bare "
              f"predict_on_batch {api / bare.reference:.2f}")

    # -------------------------------------------------------- comparisons

    def original(self) -> None:
        """The original tool's method: load, resize, preprocess, one predict per image."""
        import keras
        from keras.applications.mobilenet import preprocess_input

        section("the original tool's per-image method (load_img + one model.predict each)")
        model = self.bare.model
        count = 24 if self.quick else 60
        paths = self.source.paths[::max(1, LARGE // count)][:count]

        def one(path):
            img = keras.utils.load_img(path, target_size=(SIDE, SIDE))
            x = np.expand_dims(keras.utils.img_to_array(img), axis=0)
            return model.predict(preprocess_input(x), verbose=0)

        one(paths[0])
        best = float("inf")
        for _ in range(max(1, self.rounds - 1)):
            start = time.perf_counter()
            for path in paths:
                one(path)
            best = min(best, (time.perf_counter() - start) / len(paths))
        value = ips(best)
        self.results.put("original_ips", value, f"{best * 1000:.1f} ms/image = {value:.1f} "
                         f"images/s (best of {max(1, self.rounds - 1)} passes over "
                         f"{len(paths)} photos)")
        self.versus("ratio_vs_original", "original", "original per-image", value, 5)

    def versus(self, key: str, name: str, target: str, value: float | None,
               goal: float) -> None:
        """Record ours (CLI) against another method's images/s, and the target."""
        ratio = None if value is None else self.ours_ips / value
        if ratio is not None:
            self.results.put(key, ratio, f"ours (CLI) / {name}: {ratio:.1f}x")
        self.results.target(f"end-to-end (CLI) / {target}", ratio, goal, "x")

    def image_analytics(self) -> None:
        section("Orange3-ImageAnalytics' local SqueezeNet embedder")
        python = Path(self.args.ia_python)
        r = self.results
        if not python.exists():
            r.put("ia_ips", None, f"not measured: {python} does not exist (make it with "
                  f"python -m venv and pip install orange3 PyQt6 Orange3-ImageAnalytics)")
            self.versus("ratio_vs_ia", "ImageAnalytics", "ImageAnalytics SqueezeNet", None, 3)
            return
        lists = self.tmp / "ia_paths.txt"
        order = self.small_rows + [i for i in range(LARGE) if i not in set(self.small_rows)]
        lists.write_text("\n".join(self.source.paths[i] for i in order), encoding="utf-8")
        env = self.env(XDG_CACHE_HOME=self.tmp / "ia-cache", PYTHONPATH="")
        proc = subprocess.run([str(python), str(HERE / "ia_embed.py"), str(lists), str(SMALL),
                               str(LARGE), "--rounds", str(max(1, self.rounds - 1))],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            r.put("ia_ips", None, f"failed: {proc.stderr.strip()[-600:]}")
            self.versus("ratio_vs_ia", "ImageAnalytics", "ImageAnalytics SqueezeNet", None, 3)
            return
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        seconds = {int(k): v for k, v in out["seconds"].items()}
        value = ips(per_image(seconds[SMALL], seconds[LARGE]))
        r.put("ia_ips", value, f"{value:.1f} images/s ({out['features']} features; best "
              f"{seconds[SMALL]:.2f} s for {SMALL}, {seconds[LARGE]:.2f} s for {LARGE}; "
              f"works offline: its weights ship in the ndf package)")
        self.versus("ratio_vs_ia", "ImageAnalytics", "ImageAnalytics SqueezeNet", value, 3)

    # -------------------------------------------------------- cache

    def cache(self) -> None:
        from orangecontrib.transferembed import embed

        section("embedding cache: cold run against a re-run with the same cache folder")
        r = self.results
        subset = {SMALL: self.source.subset(self.small_rows), LARGE: self.source}
        cold, warm = {}, {}
        for n in (SMALL, LARGE):
            folder = self.tmp / f"api-cache{n}"
            start = time.perf_counter()
            embed(subset[n], weights=None, cache=folder)
            cold[n] = time.perf_counter() - start
            warm[n] = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                result = embed(subset[n], weights=None, cache=folder)
                warm[n] = min(warm[n], time.perf_counter() - start)
            assert result.n_cached == n
        api_cold, api_warm = per_image(cold[SMALL], cold[LARGE]), per_image(warm[SMALL],
                                                                            warm[LARGE])
        r.put("api_cached_speedup", api_cold / api_warm,
              f"embed(): cold {api_cold * 1000:.2f} ms/image, cached {api_warm * 1000:.3f} "
              f"ms/image: {api_cold / api_warm:.0f}x")
        cold, warm = {}, {}
        for n in (SMALL, LARGE):
            env = self.env(TRANSFEREMBED_CACHE_DIR=self.tmp / f"cli-cache{n}")
            cold[n] = run_child(self.cli_args(self.folders[n], f"cold{n}"), env)[0]
        for n in (SMALL, LARGE):
            env = self.env(TRANSFEREMBED_CACHE_DIR=self.tmp / f"cli-cache{n}")
            warm[n] = min(run_child(self.cli_args(self.folders[n], f"warm{n}"), env)[0]
                          for _ in range(3))
        cli_cold, cli_warm = per_image(cold[SMALL], cold[LARGE]), per_image(warm[SMALL],
                                                                            warm[LARGE])
        r.put("cli_cached_speedup", cli_cold / cli_warm,
              f"CLI: cold {cold[SMALL]:.2f} s / {cold[LARGE]:.2f} s = {cli_cold * 1000:.2f} "
              f"ms/image; cached {warm[SMALL]:.2f} s / {warm[LARGE]:.2f} s = "
              f"{cli_warm * 1000:.3f} ms/image: {cli_cold / cli_warm:.0f}x")
        r.target("cached re-run (CLI), per image", cli_cold / cli_warm, 10, "x")

    # -------------------------------------------------------- memory

    def memory(self) -> None:
        alpha = self.args.memory_alpha or (0.25 if self.quick else 1.0)
        section(f"peak RSS, transferembed command, MobileNet alpha {alpha:g} at 224 px, "
                f"64x64 generated images, each run in a fresh process")
        r = self.results
        sizes = (1000, 10000)
        folders, npys = make_small_images(self.tmp / "generated", sizes)
        common = ["-tm", "MobileNet", "--alpha", f"{alpha:g}", "-weights", "None",
                  "-dir", str(self.tmp / "out"), "-q", "--no-cache"]
        # the first run of a backbone converts it (memory once): not measured
        run_child([self.cli, "--folder", str(self.small_dir), "-n", "convert", *common],
                  self.env())
        for kind, inputs in (("folder", folders), ("npy", npys)):
            peaks = {}
            for n in sizes:
                given = (["--folder", str(inputs[n])] if kind == "folder" else
                         ["-data", str(inputs[n][0]), "-labels", str(inputs[n][1]),
                          "-he", "64", "-w", "64", "-c", "3"])
                wall, _, peaks[n] = run_child([self.cli, *given, "-n", f"mem{kind}{n}",
                                               *common], self.env())
                r.put(f"rss_{kind}_{n}_mib", peaks[n], f"{kind} of {n:>6,} images: peak RSS "
                      f"{peaks[n]:.0f} MiB ({wall:.1f} s, {n / wall:.0f} images/s)")
            growth = peaks[sizes[1]] - peaks[sizes[0]]
            r.put(f"rss_{kind}_growth_mib", growth, f"{kind}: 10,000 against 1,000: "
                  f"+{growth:.0f} MiB")
            r.target(f"peak RSS growth 1k -> 10k ({kind})", growth, 200, " MiB",
                     lower_is_better=True)

    # -------------------------------------------------------- report

    def report(self) -> int:
        section("targets")
        rows = [("target", "measured", "goal", "")] + self.results.targets
        widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
        for row in rows:
            print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(
                {"command": " ".join(sys.argv), "figures": self.results.figures,
                 "targets": self.results.targets}, indent=2), encoding="utf-8")
        return int(any(row[3] == "FAIL" for row in self.results.targets))


def make_small_images(root: Path, sizes: tuple[int, ...]) -> tuple[dict, dict]:
    """JPEG folders and npy pairs of smooth random 64x64 images, two classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    count = max(sizes)
    small = rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    pixels = np.empty((count, 64, 64, 3), np.uint8)
    for i in range(count):
        pixels[i] = np.asarray(Image.fromarray(small[i]).resize((64, 64),
                                                                Image.Resampling.BILINEAR))
    labels = (np.arange(count) % 2).astype(np.uint8)
    folders, npys = {}, {}
    for n in sizes:
        folder = root / f"jpeg{n}"
        for i in range(n):
            path = folder / f"class{labels[i]}" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i]).save(path, quality=90)
        data, lab = root / f"data{n}.npy", root / f"labels{n}.npy"
        np.save(data, pixels[:n].reshape(n, -1))
        np.save(lab, labels[:n])
        folders[n], npys[n] = folder, (data, lab)
    return folders, npys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one round, fewer photos for the original method, alpha 0.25 "
                             "for the memory runs")
    parser.add_argument("--data", default=os.environ.get("TRANSFEREMBED_TEST_DATA"),
                        help="the shared data folder (default: $TRANSFEREMBED_TEST_DATA)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--ia-python", default="/work/venv-ia/bin/python",
                        help="python of an environment with Orange3-ImageAnalytics")
    parser.add_argument("--memory-alpha", type=float,
                        help="MobileNet alpha of the memory runs (default 1.0, quick 0.25)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["throughput", "real", "original", "ia", "cache", "memory",
                                 "runtimes"],
                        help="parts to leave out")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("give --data or set $TRANSFEREMBED_TEST_DATA")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    bench = Bench(args)
    print(f"transferembed benchmark: {os.cpu_count()} CPUs, temporary folder {bench.tmp}")
    started = time.perf_counter()
    if "throughput" in args.skip:  # the comparisons need its figures
        args.skip = [*args.skip, "original", "ia"]
    try:
        if "throughput" not in args.skip:
            bench.throughput()
        parts = {"real": bench.real_weights, "original": bench.original,
                 "ia": bench.image_analytics, "cache": bench.cache, "memory": bench.memory,
                 "runtimes": RuntimeFigures(bench).run}
        for name, part in parts.items():
            if name not in args.skip:
                part()
        status = bench.report()
    finally:
        if not args.keep:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
