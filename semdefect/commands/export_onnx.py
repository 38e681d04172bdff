"""Export a trained .keras model to ONNX (opset 17, dynamic batch, semdefect metadata) and check it.

The check runs Keras and onnxruntime on the same preprocessed images of `export.parity_split` and compares
the probabilities: exit 1 if the largest difference is over `export.parity_atol`.

usage: python export_onnx.py [--model M.keras] [--output O.onnx] [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semdefect.board.cli import EXIT_CHECK_FAILED, command_parser, print_summary
from semdefect.commands.stage import run_with_config
from semdefect.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, help="the .keras model (default: train.output)")
    parser.add_argument("--output", type=Path, help="the ONNX file to write (default: export.output)")
    return run_with_config(parser, argv, export_model)


def export_model(args: argparse.Namespace, cfg: Config) -> int:
    from semdefect.deploy.export import export_and_check

    output = args.output or Path(cfg.export.output)
    parity = export_and_check(args.model or Path(cfg.train.output), output, cfg)
    print(f"parity on {parity['images']} {parity['split']} images: max |keras - onnx| = "
          f"{parity['max_abs_diff']:.2e} (limit {parity['limit']:.0e}), top-1 agreement "
          f"{parity['top1_agreement']:.2%} - {'ok' if parity['ok'] else 'FAILED'}")
    print(f"ONNX size {parity['onnx_mb']:.2f} MB")
    print_summary("export_onnx.py wrote", {"onnx": output})
    return 0 if parity["ok"] else EXIT_CHECK_FAILED
