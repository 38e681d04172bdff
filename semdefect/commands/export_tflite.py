"""Export a trained .keras model to a full-integer INT8 TFLite file for the i.MX NPUs, and check it.

int8 input and outputs, batch 1, a fixed 128x128x1 input, calibrated on `tflite.calib_images` val images through
the one preprocessing path; class names, preprocessing, the input's scale and zero point and the review bin inside
the file. The report compares it with the FP32 ONNX model (export_onnx.py's output, which must exist) and the INT8
ONNX model on every split; exit 1 when it loses more than `tflite.max_accuracy_drop` points on val or test (the
file is still written, to be inspected). `tflite.per_tensor=true`: one scale per weight tensor (i.MX 8M Plus).
`tflite.vela=true`: also compile it for the i.MX 93's Ethos-U65 with vela and report the placement.

usage: python export_tflite.py [--model models/sem_cnn.keras] [--output models/sem_cnn.int8.tflite] [key=value ...]
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
    parser.add_argument("--output", type=Path, help="the .tflite file to write (default: tflite.output)")
    return run_with_config(parser, argv, export)


def export(args: argparse.Namespace, cfg: Config) -> int:
    from semdefect.board.errors import ConfigError
    from semdefect.board.files import write_json_atomic, write_text_atomic
    from semdefect.deploy.tflite import export_and_compare, format_report

    output = args.output or Path(cfg.tflite.output)
    if output.suffix != ".tflite":
        raise ConfigError(f"--output {output}: the file name must end in .tflite")
    report = export_and_compare(args.model or Path(cfg.train.output), output, cfg)
    written = {"tflite": output}
    text = format_report(report)
    if cfg.tflite.vela:
        from semdefect.deploy.vela import compile_for_ethos_u, format_vela

        report["vela"] = compile_for_ethos_u(output, output.parent / "vela")
        written["vela"] = Path(report["vela"]["output"])
        text += "\n" + format_vela(report["vela"])
    written |= {"report": Path(f"{output}.report.md"), "json": Path(f"{output}.report.json")}
    write_json_atomic(written["json"], report)
    write_text_atomic(written["report"], text)
    print(text)
    print_summary("export_tflite.py wrote", written)
    return 0 if report["ok"] else EXIT_CHECK_FAILED
