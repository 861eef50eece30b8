"""What the benchmarks share: figures and targets, timing, fresh processes, and the
bare Keras model that every speed is compared with."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIDE = 224
SMALL, LARGE = 100, 398
MOBILENET_025 = "mobilenet_2_5_224_tf_no_top.h5"


@dataclass
class Results:
    """Figures gathered so far, printed and saved as JSON at the end."""

    figures: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)

    def put(self, key: str, value, text: str) -> None:
        self.figures[key] = value
        print(f"  {text}", flush=True)

    def target(self, what: str, value: float | None, goal: float, unit: str,
               lower_is_better: bool = False) -> None:
        if value is None:
            verdict = "n/a"
        elif lower_is_better:
            verdict = "PASS" if value <= goal else "FAIL"
        else:
            verdict = "PASS" if value >= goal else "FAIL"
        small = value is not None and 0 < abs(value) < 0.01
        shown = "-" if value is None else f"{value:.2e}{unit}" if small else f"{value:.2f}{unit}"
        sign = "<=" if lower_is_better else ">="
        self.targets.append((what, shown, f"{sign} {goal:g}{unit}", verdict))


# ---------------------------------------------------------------- helpers

def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def per_image(t_small: float, t_large: float) -> float:
    """Seconds per image from the best times of the two sizes."""
    return max(t_large - t_small, 1e-9) / (LARGE - SMALL)


def ips(seconds_per_image: float) -> float:
    return 1.0 / seconds_per_image


def cli_exe() -> str:
    exe = Path(sys.executable).with_name("transferembed")
    found = str(exe) if exe.exists() else shutil.which("transferembed")
    if not found:
        sys.exit("the transferembed command is not installed (pip install -e .)")
    return found


#: Runs a command and writes its own child's peak RSS and CPU time to a file. A process
#: forked from the benchmark starts with the benchmark's resident memory (TensorFlow and
#: all), which ``ru_maxrss`` keeps; the launcher is small, so its child's peak is the
#: command's own.
_LAUNCHER = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "cpu": usage.ru_utime + usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss}, out)
sys.exit(code)
"""


def run_child(argv: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Run a command; return wall seconds, CPU seconds and peak RSS in MiB."""
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "usage.json"
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-c", _LAUNCHER, str(report), *argv],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        if code:
            log.seek(0)
            sys.exit(f"failed ({code}): {' '.join(argv)}\n"
                     f"{log.read().decode(errors='replace')[-3000:]}")
        usage = json.loads(report.read_text())
    return wall, usage["cpu"], usage["maxrss_kib"] / 1024


def link_subset(paths: list[Path], root: Path, folder: Path) -> Path:
    """A folder of symbolic links to ``paths``, keeping their class subfolders."""
    for path in paths:
        target = folder / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    return folder


# ---------------------------------------------------------------- the bare model

class Bare:
    """A bare Keras backbone on a pre-decoded float32 batch of 32 (the reference)."""

    def __init__(self, model: str = "MobileNet", alpha: float = 1.0,
                 weights: str | None = None, batches: int = 12):
        import importlib

        from orangecontrib.transferembed import get_backbone
        from orangecontrib.transferembed.models.tfimport import import_tensorflow

        import_tensorflow()  # quietly, as the command does
        import keras
        import tensorflow as tf

        backbone = get_backbone(model)
        kwargs = {"alpha": alpha} if backbone.has_alpha else {}
        self.model = getattr(keras.applications, backbone.name)(
            include_top=False, pooling="avg", weights=weights,
            input_shape=(SIDE, SIDE, 3), **kwargs)
        preprocess_input = importlib.import_module(
            f"keras.applications.{backbone.module}").preprocess_input
        self.preprocess = preprocess_input
        rng = np.random.default_rng(0)
        self.batch = rng.uniform(0, 255, (32, SIDE, SIDE, 3)).astype(np.float32)
        self.batches = batches
        model = self.model

        @tf.function(input_signature=[tf.TensorSpec((None, SIDE, SIDE, 3), tf.float32)])
        def step(batch):
            return model(preprocess_input(batch), training=False)

        self.step = step
        self.best = {"predict_on_batch": 0.0, "compiled step": 0.0}
        self.cpu = float("inf")  #: least CPU seconds per image of predict_on_batch
        self.measure()  # warm up both paths

    def _time(self, call) -> float:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(self.batches):
            call()
        images = self.batches * len(self.batch)
        self.last_cpu = (time.process_time() - cpu) / images
        return images / (time.perf_counter() - start)

    def measure(self) -> None:
        """One more measurement of both paths; keep the best images/s."""
        runs = {"predict_on_batch": lambda: self.model.predict_on_batch(self.batch),
                "compiled step": lambda: self.step(self.batch).numpy()}
        for name, call in runs.items():
            self.best[name] = max(self.best[name], self._time(call))
            if name == "predict_on_batch":
                self.cpu = min(self.cpu, self.last_cpu)

    @property
    def reference(self) -> float:
        """The issue's bare figure: ``predict_on_batch`` on batches of 32."""
        return self.best["predict_on_batch"]


