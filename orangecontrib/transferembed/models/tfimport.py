"""Importing TensorFlow: once, under a lock, without stalling a GUI, and quietly.

TensorFlow and Keras print start-up lines on the process's standard error
from C++ (``I0000 ... oneDNN custom operations are on``, ``E0000 ... failed
call to cuInit``, ``WARNING: All log messages before absl::InitializeLog()``).
They are not errors, but they read like ones. While TensorFlow loads (and
while a TFLite interpreter starts), file descriptor 2 goes to a temporary
file; afterwards every line that is not known chatter is written back, so
real errors stay visible. The same goes for a model's conversion.
:func:`set_verbose` turns the filter off.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path

_lock = threading.Lock()
_imported = False
_verbose = False

#: Lines of TensorFlow's start-up that say nothing wrong.
CHATTER = re.compile("|".join([
    r"^WARNING: All log messages before absl::InitializeLog\(\)",
    r"^[IW]\d{4} ",  # absl INFO and WARNING lines
    r"^E\d{4} .*(cuInit|cuda|CUDA|TensorRT|cuDNN|cuFFT|cuBLAS|GPU will not be used)",
    r"^To enable the following instructions",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate",
    r"^INFO: Initialized TensorFlow Lite runtime",
    r"oneDNN custom operations are on",
    r"^fully_quantize: \d",  # the TFLite converter's quantization summary
    r"^Estimated count of arithmetic ops",
    r"rebuild TensorFlow with the appropriate compiler flags",
]))


def set_verbose(verbose: bool) -> None:
    """Show TensorFlow's own messages unfiltered (the command line's ``--verbose``)."""
    global _verbose
    _verbose = verbose
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def verbose() -> bool:
    """Whether TensorFlow's own messages are shown unfiltered."""
    return _verbose


def quiet_environment() -> None:
    """Ask TensorFlow for fewer start-up lines; call before it is imported."""
    if not _verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def filtered_stderr():
    """Send file descriptor 2 to a temporary file, then write back all but the chatter."""
    if _verbose:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedded interpreter)
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            write_back(captured.read())


def write_back(output: bytes) -> None:
    """Write captured standard error to ours, all but TensorFlow's chatter."""
    lines = output.decode(errors="replace").splitlines()
    kept = [line for line in lines if line.strip() and (_verbose or not CHATTER.search(line))]
    if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)


def import_tensorflow() -> None:
    """Import TensorFlow and Keras once, without stalling the GUI thread.

    Importing holds the GIL: loading TensorFlow's big shared libraries, and
    the garbage collector's full passes over the millions of objects the
    import creates, would each freeze the GUI for up to a second. The
    libraries are therefore loaded first through ``dlopen`` called via
    ctypes (which releases the GIL), and the collector rests during the
    import; the imported objects are then frozen out of later collections.
    Two threads importing TensorFlow at once break it, hence the lock.
    """
    global _imported
    with _lock:
        if _imported:
            return
        quiet_environment()
        with filtered_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _preload_shared_libraries()
            enabled = gc.isenabled()
            gc.disable()
            try:
                import keras  # noqa: F401
                import tensorflow as tf
            finally:
                gc.freeze()
                if enabled:
                    gc.enable()
            tf.config.list_physical_devices()  # device set-up prints its lines now
            if not _verbose:
                tf.get_logger().setLevel(logging.ERROR)
                logging.getLogger("absl").setLevel(logging.ERROR)
        _imported = True


def _preload_shared_libraries() -> None:
    spec = importlib.util.find_spec("tensorflow")
    if sys.platform != "linux" or spec is None or spec.origin is None:
        return
    folder = Path(spec.origin).parent
    try:
        dlopen = ctypes.CDLL(None).dlopen
    except (OSError, AttributeError):
        return
    dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    for name in ("libtensorflow_framework.so.2", "libtensorflow_cc.so.2"):
        if (folder / name).is_file():
            dlopen(os.fsencode(folder / name), os.RTLD_NOW)
