"""``transferembed compare``: score several backbones and layers on one labelled input."""

from __future__ import annotations

import argparse
import sys

from ..cluster.connect import cluster_client
from ..comparison import DEFAULT_FOLDS, best, check_candidates, compare, parse_candidates
from .args import (
    PROG,
    add_output_arguments,
    add_run_arguments,
    add_source_arguments,
    add_weights_argument,
    check_output,
    config_options,
    source_from_args,
)
from .outputs import name_outputs, write_outputs
from .progress import Reporter
from .report import table, write_chart, write_scores


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} compare",
        description="Embed labelled images with several backbones (and layers) and score "
                    "each representation by stratified K-fold cross-validation of a "
                    "standardised logistic regression. Writes <dir>/<name>_compare.csv and "
                    "<dir>/<name>_compare.png.")
    source = parser.add_argument_group("input (as the main command)")
    add_source_arguments(source)
    options = parser.add_argument_group("candidates and scoring")
    options.add_argument("-tm", "--trained_model", required=True,
                         help="comma-separated candidates, each BACKBONE or BACKBONE:LAYER, "
                              "e.g. MobileNet,MobileNet:conv_pw_11_relu,ResNet50")
    add_weights_argument(options)
    options.add_argument("--cv", type=int, default=DEFAULT_FOLDS,
                         help=f"folds of the cross-validation (default: {DEFAULT_FOLDS})")
    options.add_argument("--save-best", action="store_true",
                         help="also write the best candidate's embeddings as <name>_data.npy "
                              "and <name>_labels.npy (or <name>.csv with -to-csv)")
    options.add_argument("-to-csv", "--save_csv", action="store_true",
                         help="with --save-best: write <name>.csv instead of the npy pair")
    options.add_argument("-to-tab", "--save_tab", action="store_true",
                         help="with --save-best: write <name>.tab (Orange's format) instead "
                              "of the npy pair")
    output = parser.add_argument_group("output and how to embed")
    add_output_arguments(output, "transferfeature")
    add_run_arguments(output)
    output.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster")
    output.add_argument("--local-cluster", type=int, metavar="N",
                        help="start a local Dask cluster of N workers")
    return parser


def run_compare(argv: list[str]) -> int:
    args = compare_parser().parse_args(argv)
    out_dir = check_output(args.save_folder_path, args.save_name)
    candidates = parse_candidates(args.trained_model)
    settings = {**config_options(args), "alpha": args.alpha}
    check_candidates(candidates, settings)
    source = source_from_args(args)
    with Reporter(args.quiet) as reporter, \
            cluster_client(args.scheduler, args.local_cluster) as client:
        scores = compare(source, candidates, settings, args.cv, reporter.hooks(), client)
    csv_path = write_scores(scores, out_dir, args.save_name)
    chart = write_chart(scores, out_dir, args.save_name) if best(scores) else None
    print(table(scores))
    print()
    name_outputs([csv_path, *([chart] if chart else [])])
    top = best(scores)
    if top is None:
        print(f"{PROG}: no candidate could be scored", file=sys.stderr)
        return 2
    if args.save_best:
        write_outputs(top.result, out_dir, args)
    else:
        print(f"Best: {top.candidate.label} (CA {top.ca:.3f}). Its embeddings are in the "
              f"cache: write them with --save-best, or with\n  {PROG} "
              + " ".join(_command(argv, top.candidate)))
    return 0


def _command(argv: list[str], candidate) -> list[str]:
    """The main command that writes ``candidate``'s embeddings with these flags."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("-tm", "--trained_model", "--cv", "--scheduler", "--local-cluster"):
            skip = True
            continue
        if arg not in ("--save-best",):
            out.append(arg if " " not in arg else repr(arg))
    layer = [] if candidate.layer == "default" else ["--layer", candidate.layer]
    return ["-tm", candidate.model, *layer, *out]
