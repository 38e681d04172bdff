"""Adapt a trained model to a new source or a fab's own classes with a few labelled images (and optionally unlabelled
ones).

The labelled images (class folders with --data, or --labels: a labels.csv `path,label` or Label Studio's JSON export)
may name classes the model never learnt: --classes union (default) answers the model's classes and the new ones,
--classes labelled exactly the labelled classes (a fab's own taxonomy). A new class's last-layer weights start from
its labelled images' mean feature, then the whole network is fine-tuned on the labelled images mixed with a sample of
the original training data (--base-data); with adapt.pseudo_labels=true, once more with the unlabelled images
(--unlabelled) the adapted model is surest of. With unlabelled images only, the weights stay and the BatchNorm
statistics are re-estimated on them. Writes a .keras model with its class names, preprocessing and review bin inside,
ready for evaluate_model.py, export_onnx.py, quantize_onnx.py and export_tflite.py. Settings: the `adapt` section of
config.yaml.

usage: python adapt_model.py --model BASE.keras [--data LABELLED_DIR | --labels labels.csv] [--classes union|labelled]
                             [--base-data DATA_ROOT] [--unlabelled DIR] --output OUT.keras [section.key=value ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from semdefect.adaptation.labels import CLASS_MODES, from_folders, read_labels
from semdefect.board.cli import command_parser, print_summary
from semdefect.board.errors import SemdefectError
from semdefect.commands.stage import run_with_config
from semdefect.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="the trained .keras model to start from")
    parser.add_argument("--data", type=Path, help="labelled images of the new source: one folder per class")
    parser.add_argument("--labels", type=Path, help="labelled images as a labels.csv (path,label) or Label Studio's "
                        "JSON export, instead of --data")
    parser.add_argument("--classes", choices=CLASS_MODES, default="union",
                        help="the adapted model's classes: the model's plus the labelled ones (union, default), or "
                        "exactly the labelled ones (labelled)")
    parser.add_argument("--base-data", type=Path, help="the original dataset root (train/, val/): keeps what it knew")
    parser.add_argument("--unlabelled", type=Path, help="unlabelled images of the new source (may hold --data's too)")
    parser.add_argument("--output", type=Path, required=True, help="the adapted .keras model to write")
    return run_with_config(parser, argv, adapt_model)


def adapt_model(args: argparse.Namespace, cfg: Config) -> int:
    if args.data is not None and args.labels is not None:
        raise SemdefectError("give the labelled images once: --data (class folders) or --labels (a file), not both")
    if args.data is None and args.labels is None and args.unlabelled is None:
        raise SemdefectError("give labelled images (--data or --labels), unlabelled ones (--unlabelled) or both")
    if args.output.suffix != ".keras":
        raise SemdefectError(f"--output {args.output}: the adapted model is a .keras file")
    labels = read_labels(args.labels) if args.labels is not None else None
    labels = from_folders(args.data) if args.data is not None else labels
    if labels is None and args.classes == "labelled":
        raise SemdefectError("--classes labelled needs labelled images (--data or --labels)")
    from semdefect.adaptation.adapt import adapt

    report = adapt(args.model, args.output, labels, args.classes, args.base_data, args.unlabelled, cfg)
    print(json.dumps(report, indent=1, ensure_ascii=False))
    print_summary("adapt_model.py wrote", {"model": args.output})
    return 0
