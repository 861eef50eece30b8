"""The ``transferembed`` command line: the original ``generate_embedding.py`` flags.

``transferembed -data D.npy -labels L.npy -he 45 -w 80 -tm MobileNet -dir OUT``
writes ``OUT/transferfeature_data.npy`` and ``..._labels.npy`` (or a CSV with
``-to-csv``). ``transferembed sample`` is the original ``sample_toy_data.py``,
fixed; ``transferembed demo`` makes a small image set and embeds it.
Errors a user can fix print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import __version__
from .backbones import BACKBONES, ORIGINAL_BACKBONES, get_backbone
from .engine import NATIVE, EmbedConfig
from .errors import EmbeddingCancelled, SettingsError, SourceError, TransferEmbedError
from .images import DEFAULT_RESIZE, RESIZE_POLICIES
from .sources import csv_source, folder_source, load_npy, npy_source
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
_SHOWN_SKIPS = 10


def build_parser() -> argparse.ArgumentParser:
    """The parser: the original flags (same short and long names), then ours."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate and save image embeddings using pre-trained models "
                    "(keras.applications). Subcommands: 'transferembed sample' draws a "
                    "toy set from a npy pair; 'transferembed demo' embeds a generated "
                    "example.",
        epilog="Skipped images are named on stderr and listed in <dir>/<name>_skipped.csv. "
               "ImageNet weights are cached in $KERAS_HOME/models (default ~/.keras/models).")
    original = parser.add_argument_group("the original generate_embedding.py options")
    original.add_argument("-csv", "--csv_file", help="CSV of label,path rows (paths relative "
                          "to the CSV's folder)")
    original.add_argument("-data", "--npy_data", help="npy data file: flattened HWC image rows, "
                          "or images shaped (N,H,W[,C])")
    original.add_argument("-labels", "--npy_labels", help="npy labels file, shape (N,) or (N,1)")
    original.add_argument("-dir", "--save_folder_path", default=os.getcwd(),
                          help="folder for the output files, created if missing "
                               "(default: current working directory)")
    original.add_argument("-n", "--save_name", nargs="?", default="transferfeature",
                          help="name of the output files (default: transferfeature)")
    original.add_argument("-tm", "--trained_model", default="VGG16",
                          help="backbone, any case: " + ", ".join(ORIGINAL_BACKBONES)
                               + " or another from --list-models (default: VGG16)")
    original.add_argument("-to-csv", "--save_csv", action="store_true",
                          help="write <name>.csv (header Class,n0,...) instead of the npy pair")
    original.add_argument("-he", "--image_height", type=int, default=90,
                          help="height of the npy images (default: 90)")
    original.add_argument("-w", "--image_width", type=int, default=160,
                          help="width of the npy images (default: 160)")
    original.add_argument("-c", "--image_channels", type=int, default=3,
                          help="channels of the npy images: 1, 3 or 4 (default: 3)")
    original.add_argument("-weights", "--nn_weights", default="imagenet",
                          help="'imagenet', None for random weights, or a weights file "
                               "(default: imagenet)")
    original.add_argument("-b", "--batch_size", type=int, default=32,
                          help="images per batch (default: 32)")
    more = parser.add_argument_group("more options")
    more.add_argument("--folder", help="folder of images with one subfolder per class")
    more.add_argument("--alpha", type=float, default=1.0,
                      help="MobileNet width multiplier: 0.25, 0.5, 0.75 or 1.0 (default: 1.0)")
    more.add_argument("--input-size", default="default", metavar="{default,native,N}",
                      help="input size: the backbone's own (default), 'native' (each image "
                           "at its own size; pooled backbones only), or N pixels")
    more.add_argument("--resize", choices=RESIZE_POLICIES, default=DEFAULT_RESIZE,
                      help="fit images to the input: 'crop' the centre box of the input's "
                           "shape, then resize (default), or 'stretch' the whole image "
                           "(as the original tool)")
    more.add_argument("--no-cache", action="store_true",
                      help="do not read or write the embedding cache "
                           "($TRANSFEREMBED_CACHE_DIR)")
    more.add_argument("--list-models", action="store_true", help="list the backbones and exit")
    more.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
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


def open_source(args):
    given = [bool(args.csv_file), bool(args.npy_data or args.npy_labels), bool(args.folder)]
    if sum(given) != 1:
        raise SourceError("give exactly one input: -csv FILE, -data FILE -labels FILE, or "
                          "--folder DIR")
    if args.csv_file:
        return csv_source(args.csv_file)
    if args.folder:
        return folder_source(args.folder)
    if not (args.npy_data and args.npy_labels):
        raise SourceError("npy input needs both -data and -labels")
    return npy_source(args.npy_data, args.npy_labels, args.image_height, args.image_width,
                      args.image_channels)


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


class _Bars:
    """tqdm bars for the embedding and for a weights download."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = self.download = None

    def progress(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="Generating embeddings", file=sys.stderr,
                            ascii=" #", dynamic_ncols=True,
                            bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}, {rate_fmt}]")
        self.bar.update(done - self.bar.n)

    def download_progress(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.download is None:
            from tqdm import tqdm

            self.download = tqdm(total=total or None, desc="Downloading weights", unit="B",
                                 unit_scale=True, file=sys.stderr)
        self.download.update(done - self.download.n)

    def close(self) -> None:
        for bar in (self.download, self.bar):
            if bar is not None:
                bar.close()


def run_embedding(args) -> int:
    if args.list_models:
        list_models()
        return 0
    out_dir = check_output(args.save_folder_path, args.save_name)
    name = args.save_name
    config = EmbedConfig(model=get_backbone(args.trained_model).name, weights=args.nn_weights,
                         alpha=args.alpha, input_size=input_size(args.input_size),
                         resize=args.resize, batch_size=args.batch_size,
                         cache=not args.no_cache)
    source = open_source(args)
    bars = _Bars(args.quiet)
    try:
        result = _embed(source, config, args, bars)
    finally:
        bars.close()
    report_skipped(result.skipped, out_dir, name)
    if not len(result):
        raise fail(f"none of the {len(source)} images could be embedded; see "
                   f"{skipped_path(out_dir, name)}")
    if args.save_csv:
        write_csv(result, out_dir, name)
    else:
        write_npy_pair(result, out_dir, name)
    if not args.quiet:
        print(f"Data shape {result.embeddings.shape}, Labels shape "
              f"{label_column(result.labels, len(result)).shape}")
    return 0


def _embed(source, config: EmbedConfig, args, bars: _Bars):
    if args.scheduler or args.local_cluster is not None or args.shards:
        from .distributed import run_cli_job  # needs the [dask] extra

        return run_cli_job(source, config, scheduler=args.scheduler,
                           local_cluster=args.local_cluster, shards=args.shards,
                           progress=bars.progress)
    from .engine import run

    return run(source, config, progress=bars.progress, download_progress=bars.download_progress)


def report_skipped(skipped, out_dir: Path, name: str) -> None:
    """Name skipped images on stderr and list them all in ``<name>_skipped.csv``."""
    stale = skipped_path(out_dir, name)
    if not skipped:
        if stale.exists():
            stale.unlink()
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
        description="Make a small two-class image set (circles and squares) in DIR/images "
                    "and embed it with MobileNet into DIR/demo.csv.")
    parser.add_argument("-dir", "--save_folder_path", default="transferembed-demo")
    parser.add_argument("-weights", "--nn_weights", default="None",
                        help="weights for the demo (default: None, random weights, so it "
                             "runs offline; use imagenet for real features)")
    args = parser.parse_args(argv)
    from .demo import make_demo_images

    out_dir = check_output(args.save_folder_path, "demo")
    images = make_demo_images(out_dir / "images")
    print(f"Made {images} demo images in {out_dir / 'images'}")
    return main(["--folder", str(out_dir / "images"), "-tm", "MobileNet", "--alpha", "0.25",
                 "-weights", args.nn_weights, "-dir", str(out_dir), "-n", "demo", "-to-csv"])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``transferembed`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow start-up lines
    commands = {"sample": run_sample, "demo": run_demo}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return run_embedding(build_parser().parse_args(argv))
    except TransferEmbedError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # writing the outputs: disk full, folder removed, ...
        raise fail(f"cannot write {exc.filename or 'the output'}: {exc.strerror or exc}") \
            from None
    except EmbeddingCancelled:
        print(f"{PROG}: cancelled; nothing was written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
