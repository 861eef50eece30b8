"""The argument groups that the main command and ``compare`` share, and how they
become a source, a job's settings and an output folder."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from ..config import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_RESIZE,
    NATIVE,
    POOLINGS,
    PRECISIONS,
    RESIZE_POLICIES,
    RUNTIMES,
    parse_memory,
)
from ..errors import SettingsError, SourceError
from ..pipeline.sources import open_source

PROG = "transferembed"
EXIT_USAGE = 2


def add_source_arguments(group) -> None:
    """The input flags, shared by the main command and ``compare``."""
    group.add_argument("-csv", "--csv_file", help="CSV of label,path rows (paths relative "
                       "to the CSV's folder)")
    group.add_argument("-data", "--npy_data", help="npy data file: flattened HWC image rows, "
                       "or images shaped (N,H,W[,C])")
    group.add_argument("-labels", "--npy_labels", help="npy labels file, shape (N,) or (N,1)")
    group.add_argument("-he", "--image_height", type=int, default=90,
                       help="height of the npy images (default: 90)")
    group.add_argument("-w", "--image_width", type=int, default=160,
                       help="width of the npy images (default: 160)")
    group.add_argument("-c", "--image_channels", type=int, default=3,
                       help="channels of the npy images: 1, 3 or 4 (default: 3)")
    group.add_argument("--folder", help="folder of images with one subfolder per class")


def add_output_arguments(group, name: str) -> None:
    group.add_argument("-dir", "--save_folder_path", default=os.getcwd(),
                       help="folder for the output files, created if missing "
                            "(default: current working directory)")
    group.add_argument("-n", "--save_name", nargs="?", default=name,
                       help=f"name of the output files (default: {name})")


def add_weights_argument(group) -> None:
    group.add_argument("-weights", "--nn_weights", default="imagenet",
                       help="'imagenet', None for random weights, or a weights file "
                            "(default: imagenet)")
    group.add_argument("--alpha", type=float, default=1.0,
                       help="MobileNet width multiplier: 0.25, 0.5, 0.75 or 1.0 (default: 1.0)")


def add_run_arguments(group) -> None:
    """How the embedding is computed, shared by the main command and ``compare``."""
    group.add_argument("-b", "--batch_size", type=int, default=32,
                       help="images per batch (default: 32)")
    group.add_argument("--input-size", default="default", metavar="{default,native,N}",
                       help="input size: the backbone's own (default), 'native' (each image "
                            "at its own size; pooled backbones only), or N pixels")
    group.add_argument("--resize", choices=RESIZE_POLICIES, default=DEFAULT_RESIZE,
                       help="fit images to the input: 'crop' the centre box of the input's "
                            "shape, then resize (default), or 'stretch' the whole image "
                            "(as the original tool)")
    group.add_argument("--pooling", choices=POOLINGS, default=None,
                       help="how a spatial layer or a transformer's tokens become one "
                            "vector: avg, max, or cls (the class token); default: the "
                            "backbone's own (avg; DINOv2: cls)")
    group.add_argument("--runtime", choices=RUNTIMES, default="auto",
                       help="what runs the model: auto (the fastest exact one here), keras, "
                            "tflite, or openvino (the [openvino] extra)")
    group.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="fp32 (exact, the default) or int8 (faster, approximate)")
    group.add_argument("--memory-limit", default=f"{DEFAULT_MEMORY_LIMIT >> 20}M",
                       metavar="SIZE", help="decoded pixels kept in flight, e.g. 512M or 2G "
                                            f"(default: {DEFAULT_MEMORY_LIMIT >> 20}M)")
    group.add_argument("--max-image-bytes", default=f"{DEFAULT_MAX_IMAGE_BYTES >> 20}M",
                       metavar="SIZE", help="skip image files larger than this, e.g. 64M "
                                            f"(default: {DEFAULT_MAX_IMAGE_BYTES >> 20}M)")
    group.add_argument("--no-cache", action="store_true",
                       help="do not read or write the embedding cache "
                            "($TRANSFEREMBED_CACHE_DIR)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    group.add_argument("--verbose", action="store_true",
                       help="show TensorFlow's own start-up messages")


def fail(message: str) -> SystemExit:
    """Print one clear message and return the exit to raise."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return SystemExit(EXIT_USAGE)


def check_output(folder: str, name: str | None) -> Path:
    """Validate -dir and -n before any work is done; create the folder."""
    if not name or name in (".", "..") or "/" in name or os.sep in name \
            or (os.altsep and os.altsep in name):
        raise fail(f"-n must be a plain file name without a path separator, got {name!r}")
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise fail(f"-dir {folder} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise fail(f"cannot write to -dir {folder}: {exc.strerror or exc}") from None
    return path.resolve()


def input_size(text: str) -> int | str | None:
    if text == "default":
        return None
    if text == NATIVE:
        return NATIVE
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"--input-size must be 'default', 'native' or a number, "
                            f"got {text!r}") from None


def source_from_args(args, is_cancelled=None):
    """The one input the flags name, through the sources' one dispatch."""
    given = [bool(args.csv_file), bool(args.npy_data or args.npy_labels), bool(args.folder)]
    if sum(given) != 1:
        raise SourceError("give exactly one input: -csv FILE, -data FILE -labels FILE, or "
                          "--folder DIR")
    if args.npy_data or args.npy_labels:
        if not (args.npy_data and args.npy_labels):
            raise SourceError("npy input needs both -data and -labels")
        return open_source("npy", args.npy_data, args.npy_labels,
                           (args.image_height, args.image_width, args.image_channels))
    kind, path = ("csv", args.csv_file) if args.csv_file else ("folder", args.folder)
    return open_source(kind, path, is_cancelled=is_cancelled)


def config_options(args) -> dict:
    """The EmbedConfig settings the run flags give (all but model, alpha and layer)."""
    return dict(weights=args.nn_weights, input_size=input_size(args.input_size),
                resize=args.resize, batch_size=args.batch_size, pooling=args.pooling,
                runtime=args.runtime, precision=args.precision,
                memory_limit=parse_memory(args.memory_limit),
                max_image_bytes=parse_memory(args.max_image_bytes, "--max-image-bytes"),
                cache=not args.no_cache)
