"""How long converting a backbone holds Python's GIL, in this process and in a child.

    python bench/conversion_stall.py [MODEL ...]     (default: MobileNet ResNet50)

For each backbone and precision (random weights, 224 px), the conversion runs in a
thread while this thread ticks every 5 ms; the figure is the longest gap between two
ticks, which is how long Orange's window would freeze. "in this process" is
``conversion.flatbuffer`` (how conversion ran before), "in a child" is
``conversion.convert`` (how it runs now).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from functools import partial


def longest_stall(work) -> tuple[float, float]:
    """(seconds that ``work()`` took, the longest gap between 5 ms ticks meanwhile)."""
    done, worst = threading.Event(), 0.0

    def target():
        try:
            work()
        finally:
            done.set()

    thread = threading.Thread(target=target)
    start = last = time.perf_counter()
    thread.start()
    while not done.is_set():
        time.sleep(0.005)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    thread.join()
    return time.perf_counter() - start, worst


def main(models: list[str]) -> int:
    os.environ.setdefault("TRANSFEREMBED_CACHE_DIR", tempfile.mkdtemp())
    from orangecontrib.transferembed.config import EmbedConfig
    from orangecontrib.transferembed.models.tfimport import import_tensorflow
    from orangecontrib.transferembed.runtimes import conversion

    import_tensorflow()
    for model in models:
        for precision in ("fp32", "int8"):
            config = EmbedConfig(model=model, weights=None, runtime="tflite",
                                 precision=precision)
            here = longest_stall(partial(conversion.flatbuffer, config, None))
            child = longest_stall(partial(conversion.convert, config, None))
            print(f"{model} {precision}: in this process {here[0]:.1f} s, longest stall "
                  f"{here[1] * 1000:.0f} ms; in a child {child[0]:.1f} s, longest stall "
                  f"{child[1] * 1000:.0f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["MobileNet", "ResNet50"]))
