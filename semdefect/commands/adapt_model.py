"""Adapt a trained model to a new source with a few labelled images of it (and optionally unlabelled ones).

Fine-tunes the model's weights on the labelled images (class folders, any subset of the model's classes, no splits),
mixed with a sample of the original training data (--base-data); with adapt.pseudo_labels=true, once more with the
unlabelled images (--unlabelled) the adapted model is surest of, labelled with its answers. With unlabelled images
only, the weights stay and the BatchNorm statistics are re-estimated on them. Writes a .keras model with the same
classes and preprocessing, ready for evaluate_model.py, export_onnx.py and quantize_onnx.py. Settings: the `adapt`
section of config.yaml.

usage: python adapt_model.py --model BASE.keras [--data LABELLED_DIR] [--base-data DATA_ROOT] [--unlabelled DIR]
                             --output OUT.keras [section.key=value ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary
from semdefect.board.errors import SemdefectError
from semdefect.commands.stage import run_with_config
from semdefect.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="the trained .keras model to start from")
    parser.add_argument("--data", type=Path, help="labelled images of the new source: one folder per class")
    parser.add_argument("--base-data", type=Path, help="the original dataset root (train/, val/): keeps what it knew")
    parser.add_argument("--unlabelled", type=Path, help="unlabelled images of the new source (may hold --data's too)")
    parser.add_argument("--output", type=Path, required=True, help="the adapted .keras model to write")
    return run_with_config(parser, argv, adapt_model)


def adapt_model(args: argparse.Namespace, cfg: Config) -> int:
    if args.data is None and args.unlabelled is None:
        raise SemdefectError("give labelled images (--data), unlabelled ones (--unlabelled) or both")
    if args.output.suffix != ".keras":
        raise SemdefectError(f"--output {args.output}: the adapted model is a .keras file")
    from semdefect.adaptation.adapt import adapt

    report = adapt(args.model, args.output, args.data, args.base_data, args.unlabelled, cfg)
    print(json.dumps(report, indent=1))
    print_summary("adapt_model.py wrote", {"model": args.output})
    return 0
