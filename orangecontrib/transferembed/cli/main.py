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
import threading
from importlib import metadata

import numpy as np

from ..config import (
    DEFAULT_LAYER,
)
from ..errors import EmbeddingCancelled, SettingsError, SourceError, TransferEmbedError
from ..models import tfimport
from ..models.registry import BACKBONES, ORIGINAL_BACKBONES, get_backbone
from ..pipeline.sources import load_npy
from ..writers import (
    npy_paths,
    write_atomically,
)
from .args import (
    PROG,
    add_output_arguments,
    add_run_arguments,
    add_source_arguments,
    add_weights_argument,
    check_output,
    config_options,
    fail,
    source_from_args,
)
from .outputs import write_outputs
from .progress import Reporter

EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: The demo's batch: its 24 images move the bar three times.
DEMO_BATCH = 8


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl+C's KeyboardInterrupt."""


def installed_version() -> str:
    """The version of the installed distribution (the command exists only installed)."""
    try:
        return metadata.version("Orange3-TransferEmbed")
    except metadata.PackageNotFoundError:
        return "unknown"


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
    original.add_argument("-to-tab", "--save_tab", action="store_true",
                          help="write <name>.tab, Orange's own format (Class the class "
                               "variable, the features continuous, the settings in "
                               "<name>.tab.metadata), instead of the npy pair")
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
    more.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    cluster = parser.add_argument_group("cluster (pip install 'Orange3-TransferEmbed[dask]')")
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="run on an existing Dask cluster, e.g. tcp://host:8786")
    cluster.add_argument("--local-cluster", type=int, metavar="N",
                         help="start a local Dask cluster of N single-thread workers")
    cluster.add_argument("--shards", metavar="DIR",
                         help="write each task's rows to DIR/part-NNNNN files; a re-run "
                              "resumes")
    return parser


def list_models() -> None:
    print(f"{'model':<20}{'features':>9}{'input':>7}{'min':>6}{'download':>10}  feature layer")
    for backbone in BACKBONES.values():
        if backbone.foundation:
            continue
        size = f"{backbone.features():d}"
        if backbone.has_alpha:
            size += "*a"
        print(f"{backbone.name:<20}{size:>9}{backbone.input_size:>7}"
              f"{backbone.min_input_size:>6}{backbone.download_mb:>8.1f}MB  "
              f"{backbone.feature_description}")
    widths = ", ".join(f"{a:g}" for a in get_backbone("MobileNet").alphas())
    print(f"*a: times the width multiplier --alpha (MobileNet: {widths})")
    list_foundation_models()


def list_foundation_models() -> None:
    """The keras-hub encoders, by family, from the registry alone (keras-hub not imported)."""
    from ..models.weights import INSTALL_HINT, find_preset

    print(f"\nFoundation encoders (keras-hub presets; {INSTALL_HINT} if missing; "
          f"doc/foundation.md):")
    print(f"{'model':<30}{'family':<10}{'features':>9}{'input':>7}{'download':>11}  feature")
    for backbone in BACKBONES.values():
        if backbone.foundation:
            here = "  (here)" if find_preset(backbone) else ""
            print(f"{backbone.name:<30}{backbone.family:<10}{backbone.features():>9}"
                  f"{backbone.input_size:>7}{backbone.download_mb:>8.0f}MB~  "
                  f"{backbone.feature_description}{here}")
    print("~: keras-hub's parameter count at 4 bytes each (image and text towers)")


def list_layers(name: str, alpha: float) -> None:
    from ..jobs import layers

    backbone = get_backbone(name)
    found = layers(backbone.name, alpha)
    print(f"Layers of {backbone.name}" + (f" (alpha {alpha:g})" if backbone.has_alpha else "")
          + " that give features; use one with --layer NAME:")
    print(f"{'layer':<40}{'features':>9}  output")
    for layer in found:
        what = "tokens" if backbone.foundation else "map"
        kind = f"{what}, pooled by --pooling" if layer.spatial else "vector"
        print(f"{layer.name:<40}{layer.features:>9}  {kind}"
              + ("  (default)" if layer.default else ""))


def run_embedding(args) -> int:
    if args.list_models:
        list_models()
        return 0
    if args.list_layers:
        list_layers(args.list_layers, args.alpha)
        return 0
    from ..cluster.connect import cluster_client
    from ..config import EmbedConfig
    from ..jobs import check, run_job

    out_dir = check_output(args.save_folder_path, args.save_name)
    config = check(EmbedConfig(model=args.trained_model, alpha=args.alpha, layer=args.layer,
                               **config_options(args)))
    source = source_from_args(args)
    with Reporter(args.quiet) as reporter, \
            cluster_client(args.scheduler, args.local_cluster, args.shards) as client:
        result = run_job(source, config, reporter.hooks(), client=client, shards=args.shards)
    write_outputs(result, out_dir, args)
    return 0


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
    parser.add_argument("-weights", "--nn_weights", default="imagenet",
                        help="weights for the demo (default: imagenet, MobileNet 0.25's, "
                             "which come with the package, so it runs offline; None for "
                             "random weights)")
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
                 "-b", str(DEMO_BATCH), "-weights", args.nn_weights, "-dir", str(out_dir),
                 "-n", "demo", "-to-csv",
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
    from .compare import run_compare

    return run_compare(argv)


if __name__ == "__main__":
    sys.exit(main())
