"""Quantize an FP32 ONNX model to static INT8, calibrated on validation images, and compare the two.

Writes `quantize.output` (default models/sem_cnn.int8.onnx) and beside it a JSON + Markdown report of FP32 vs
INT8 on val and test (accuracy, top-1 agreement, per-class recall change, sizes). Exit 1 when INT8 loses more than
`quantize.max_accuracy_drop` points on either split; the INT8 model is still written, to be inspected.

usage: python quantize_onnx.py [--model M.onnx] [--output O.onnx] [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semdefect.board.cli import EXIT_CHECK_FAILED, command_parser, print_summary
from semdefect.commands.stage import run_with_config
from semdefect.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, help="the FP32 .onnx model (default: export.output)")
    parser.add_argument("--output", type=Path, help="the INT8 .onnx file to write (default: quantize.output)")
    return run_with_config(parser, argv, quantize)


def quantize(args: argparse.Namespace, cfg: Config) -> int:
    from semdefect.board.files import write_json_atomic, write_text_atomic
    from semdefect.deploy.quantize import format_report, quantize_and_compare

    int8_path = args.output or Path(cfg.quantize.output)
    report = quantize_and_compare(args.model or Path(cfg.export.output), int8_path, cfg)
    stem = int8_path.with_suffix("")
    written = {"int8": int8_path, "report": Path(f"{stem}.report.md"), "json": Path(f"{stem}.report.json")}
    write_json_atomic(written["json"], report)
    write_text_atomic(written["report"], format_report(report))
    print(format_report(report))
    print_summary("quantize_onnx.py wrote", written)
    return 0 if report["ok"] else EXIT_CHECK_FAILED
