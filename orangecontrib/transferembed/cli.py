"""The ``transferembed`` command line: the original ``generate_embedding.py`` flags.

``transferembed -data D.npy -labels L.npy -he 45 -w 80 -tm MobileNet -dir OUT``
writes ``OUT/transferfeature_data.npy`` and ``..._labels.npy`` (or a CSV with
``-to-csv``). ``transferembed compare`` scores several backbones and layers,
``transferembed sample`` is the original ``sample_toy_data.py``, fixed, and
``transferembed demo`` makes a small image set and embeds it.
Errors a user can fix print one line and exit with status 2; SIGTERM and
Ctrl+C stop the run, remove temporary files and exit with 143 and 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from . import __version__, tfimport
from .backbones import BACKBONES, ORIGINAL_BACKBONES, get_backbone
from .config import (
    DEFAULT_LAYER,
    DEFAULT_MEMORY_LIMIT,
    NATIVE,
    POOLINGS,
    PRECISIONS,
    RUNTIMES,
    parse_memory,
)
from .errors import EmbeddingCancelled, SettingsError, SourceError, TransferEmbedError
from .images import DEFAULT_RESIZE, RESIZE_POLICIES
from .progress import Reporter
from .sources import load_npy, open_source
from .writers import (
    label_column,
    npy_paths,
    skipped_path,
    write_atomically,
    write_csv,
    write_npy_pair,
    write_skipped,
)

PROG = "transferembed"
EXIT_USAGE = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT
_SHOWN_SKIPS = 10


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl+C's KeyboardInterrupt."""


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
    group.add_argument("--pooling", choices=POOLINGS, default="avg",
                       help="how a spatial layer becomes one vector (default: avg)")
    group.add_argument("--runtime", choices=RUNTIMES, default="auto",
                       help="what runs the model: auto (the fastest exact one here), keras, "
                            "tflite, or openvino (the [openvino] extra)")
    group.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="fp32 (exact, the default) or int8 (faster, approximate)")
    group.add_argument("--memory-limit", default=f"{DEFAULT_MEMORY_LIMIT >> 20}M",
                       metavar="SIZE", help="decoded pixels kept in flight, e.g. 512M or 2G "
                                            f"(default: {DEFAULT_MEMORY_LIMIT >> 20}M)")
    group.add_argument("--no-cache", action="store_true",
                       help="do not read or write the embedding cache "
                            "($TRANSFEREMBED_CACHE_DIR)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    group.add_argument("--verbose", action="store_true",
                       help="show TensorFlow's own start-up messages")


def build_parser() -> argparse.ArgumentParser:
    """The parser: the original flags (same short and long names), then ours."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate and save image embeddings using pre-trained models "
                    "(keras.applications). Subcommands: 'transferembed compare' scores "
                    "backbones and layers; 'transferembed sample' draws a toy set from a "
                    "npy pair; 'transferembed demo' embeds a generated example.",
        epilog="Skipped images are named on stderr and listed in <dir>/<name>_skipped.csv. "
               "ImageNet weights are cached in $KERAS_HOME/models (default ~/.keras/models).")
    original = parser.add_argument_group("the original generate_embedding.py options")
    add_source_arguments(original)
    add_output_arguments(original, "transferfeature")
    original.add_argument("-tm", "--trained_model", default="VGG16",
                          help="backbone, any case: " + ", ".join(ORIGINAL_BACKBONES)
                               + " or another from --list-models (default: VGG16)")
    original.add_argument("-to-csv", "--save_csv", action="store_true",
                          help="write <name>.csv (header Class,n0,...) instead of the npy pair")
    add_weights_argument(original)
    more = parser.add_argument_group("more options")
    more.add_argument("--layer", default=DEFAULT_LAYER,
                      help="the layer to take features from, by its Keras name "
                           "(see --list-layers), or 'default' (the backbone's own)")
    add_run_arguments(more)
    more.add_argument("--list-models", action="store_true", help="list the backbones and exit")
    more.add_argument("--list-layers", metavar="MODEL",
                      help="list the layers of MODEL (with --alpha) that give features, "
                           "and exit")
    more.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    cluster = parser.add_argument_group("cluster (pip install 'Orange3-TransferEmbed[dask]')")
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="run on an existing Dask cluster, e.g. tcp://host:8786")
    cluster.add_argument("--local-cluster", type=int, metavar="N",
                         help="start a local Dask cluster of N single-thread workers")
    cluster.add_argument("--shards", metavar="DIR",
                         help="write each task's rows to DIR/part-NNNNN files; a re-run "
                              "resumes")
    return parser


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
    return path


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
                memory_limit=parse_memory(args.memory_limit), cache=not args.no_cache)


def list_models() -> None:
    print(f"{'model':<20}{'features':>9}{'input':>7}{'min':>6}{'download':>10}  feature layer")
    for backbone in BACKBONES.values():
        size = f"{backbone.features():d}"
        if backbone.has_alpha:
            size += "*a"
        print(f"{backbone.name:<20}{size:>9}{backbone.input_size:>7}"
              f"{backbone.min_input_size:>6}{backbone.download_mb:>8.1f}MB  "
              f"{backbone.feature_description}")
    print("*a: times the width multiplier --alpha (MobileNet: 0.25, 0.5, 0.75, 1.0)")


def list_layers(name: str, alpha: float) -> None:
    from .models import list_layers as layers

    backbone = get_backbone(name)
    found = layers(backbone, alpha)
    print(f"Layers of {backbone.name}" + (f" (alpha {alpha:g})" if backbone.has_alpha else "")
          + " that give features; use one with --layer NAME:")
    print(f"{'layer':<40}{'features':>9}  output")
    for layer in found:
        kind = "map, pooled by --pooling" if layer.spatial else "vector"
        print(f"{layer.name:<40}{layer.features:>9}  {kind}"
              + ("  (default)" if layer.default else ""))


def run_embedding(args) -> int:
    if args.list_models:
        list_models()
        return 0
    if args.list_layers:
        list_layers(args.list_layers, args.alpha)
        return 0
    from .api import run_job
    from .cluster import cluster_client
    from .config import EmbedConfig

    out_dir = check_output(args.save_folder_path, args.save_name)
    config = EmbedConfig(model=args.trained_model, alpha=args.alpha, layer=args.layer,
                         **config_options(args))
    source = source_from_args(args)
    with Reporter(args.quiet) as reporter, \
            cluster_client(args.scheduler, args.local_cluster, args.shards) as client:
        result = run_job(source, config, reporter.hooks(), client=client, shards=args.shards)
    write_outputs(result, out_dir, args)
    return 0


def write_outputs(result, out_dir: Path, args) -> None:
    """The embeddings, then the skipped list (last); nothing at all if none embedded."""
    name = args.save_name
    if len(result):
        if args.save_csv:
            write_csv(result, out_dir, name)
        else:
            write_npy_pair(result, out_dir, name)
    report_skipped(result.skipped, out_dir, name)
    if not len(result):
        raise fail(f"none of the {len(result.source)} images could be embedded; see "
                   f"{skipped_path(out_dir, name)}")
    if not args.quiet:
        print(f"Data shape {result.embeddings.shape}, Labels shape "
              f"{label_column(result.labels, len(result)).shape}")


def report_skipped(skipped, out_dir: Path, name: str) -> None:
    """Name skipped images on stderr and list them all in ``<name>_skipped.csv``."""
    stale = skipped_path(out_dir, name)
    if not skipped:
        stale.unlink(missing_ok=True)
        return
    path = write_skipped(skipped, out_dir, name)
    for item in skipped[:_SHOWN_SKIPS]:
        print(f"Skipped {item.item}: {item.reason}", file=sys.stderr)
    more = f" ({len(skipped) - _SHOWN_SKIPS} more)" if len(skipped) > _SHOWN_SKIPS else ""
    print(f"Skipped {len(skipped)} image(s){more}; all are listed in {path}", file=sys.stderr)


def sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} sample",
        description="Draw a toy dataset from a npy pair: rows sampled without replacement "
                    "(the original sample_toy_data.py, fixed).")
    parser.add_argument("npy_data", help="npy data file")
    parser.add_argument("npy_labels", help="npy labels file")
    parser.add_argument("-s", "--num_samples", type=int, default=100,
                        help="number of samples (default: 100)")
    parser.add_argument("-n", "--name_npy", default="toy", help="name of the new files "
                        "(default: toy)")
    parser.add_argument("-dir", "--save_folder_path", default=os.getcwd(),
                        help="output folder (default: current working directory)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for a "
                        "reproducible sample")
    return parser


def run_sample(argv: list[str]) -> int:
    args = sample_parser().parse_args(argv)
    out_dir = check_output(args.save_folder_path, args.name_npy)
    data = load_npy(args.npy_data, "data")
    labels = load_npy(args.npy_labels, "labels")
    if data.ndim < 1 or labels.ndim < 1:
        raise SourceError("data and labels must be arrays of rows, not single values")
    if len(data) != len(labels):
        raise SourceError(f"there are {len(data)} data rows but {len(labels)} labels")
    if not 0 < args.num_samples <= len(data):
        raise SettingsError(f"-s must be between 1 and the {len(data)} rows, "
                            f"got {args.num_samples}")
    rows = np.random.default_rng(args.seed).choice(len(data), args.num_samples, replace=False)

    def write(data_file, labels_file):
        np.save(data_file, np.asarray(data[rows]), allow_pickle=False)
        np.save(labels_file, np.asarray(labels[rows]), allow_pickle=False)

    data_path, labels_path = npy_paths(out_dir, args.name_npy)
    write_atomically([data_path, labels_path], write)
    print(f"Data shape {data[rows].shape}, Labels shape {labels[rows].shape}")
    return 0


def run_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} demo",
        description="Make a small two-class image set (circles and squares) in DIR/images, "
                    "and the same as a npy pair (DIR/demo_images.npy, DIR/demo_labels.npy), "
                    "and embed it with MobileNet into DIR/demo.csv.")
    parser.add_argument("-dir", "--save_folder_path", default="transferembed-demo")
    parser.add_argument("-weights", "--nn_weights", default="None",
                        help="weights for the demo (default: None, random weights, so it "
                             "runs offline; use imagenet for real features)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own start-up messages")
    args = parser.parse_args(argv)
    from .demo import make_demo_images, make_demo_npy

    out_dir = check_output(args.save_folder_path, "demo")
    images = make_demo_images(out_dir / "images")
    make_demo_npy(out_dir / "images", out_dir)
    print(f"Made {images} demo images in {out_dir / 'images'}, and the npy pair "
          f"{out_dir / 'demo_images.npy'} with {out_dir / 'demo_labels.npy'}")
    return main(["--folder", str(out_dir / "images"), "-tm", "MobileNet", "--alpha", "0.25",
                 "-weights", args.nn_weights, "-dir", str(out_dir), "-n", "demo", "-to-csv",
                 *(["--verbose"] if args.verbose else [])])


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``transferembed`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    tfimport.set_verbose("--verbose" in argv)
    tfimport.quiet_environment()
    commands = {"sample": run_sample, "demo": run_demo, "compare": _run_compare}
    previous = _install(signal.SIGTERM, _terminate)
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return run_embedding(build_parser().parse_args(argv))
    except TransferEmbedError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")) \
            from None
    except EmbeddingCancelled:
        print(f"{PROG}: cancelled; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"\n{PROG}: terminated; nothing was written", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        _install(signal.SIGTERM, previous)


def _install(signum, handler):
    """Set a signal handler where Python allows it (the main thread); return the old one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


def _run_compare(argv: list[str]) -> int:
    from .compare_cli import run_compare

    return run_compare(argv)


if __name__ == "__main__":
    sys.exit(main())
