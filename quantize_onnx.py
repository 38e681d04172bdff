"""Quantize an FP32 ONNX model to static INT8, calibrated on validation images, and compare the two.

Writes `quantize.output` (default models/sem_cnn.int8.onnx) and beside it a JSON + Markdown report of FP32 vs
INT8 on val and test (accuracy, top-1 agreement, per-class recall change, sizes). Exit 1 when INT8 loses more than
`quantize.max_accuracy_drop` points on either split; the INT8 model is still written, to be inspected.

usage: python quantize_onnx.py [--model M.onnx] [--output O.onnx] [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semdefect.cli import EXIT_CHECK_FAILED, print_summary, run_stage, setup_logging
from semdefect.config import add_config_arguments, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="the FP32 .onnx model (default: export.output)")
    parser.add_argument("--output", type=Path, help="the INT8 .onnx file to write (default: quantize.output)")
    add_config_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after options
    setup_logging()

    def body() -> int:
        cfg = load_config(args.config, args.overrides)
        from semdefect.evaluation import load_eval_data
        from semdefect.onnx_tools import OnnxClassifier
        from semdefect.files import write_json_atomic, write_text_atomic
        from semdefect.quantization import compare_on, format_report, pick_calibration_images, quantize_model

        qcfg = cfg["quantize"]
        fp32_path, int8_path = args.model or Path(cfg["export"]["output"]), args.output or Path(qcfg["output"])
        fp32 = OnnxClassifier(fp32_path)
        root = Path(cfg["data"]["root"])
        splits = {s: load_eval_data(root, s, fp32.class_names, fp32.prep) for s in ("val", "test")}
        calibration = pick_calibration_images(splits["val"].x, splits["val"].y, qcfg["calib_images"], cfg["train"]["seed"])
        quantize_model(fp32_path, int8_path, calibration, qcfg)
        int8 = OnnxClassifier(int8_path)

        rows = [compare_on(fp32, int8, split, name) for name, split in splits.items()]
        ok = all(row["accuracy_drop_points"] <= qcfg["max_accuracy_drop"] for row in rows)
        report = {"fp32": str(fp32_path), "int8": str(int8_path), "fp32_mb": fp32_path.stat().st_size / 1e6,
                  "int8_mb": int8_path.stat().st_size / 1e6, "calibration_images": len(calibration),
                  "settings": f"{qcfg['format']}, per_channel={qcfg['per_channel']}, {qcfg['calibrate_method']}",
                  "budget_points": qcfg["max_accuracy_drop"], "ok": ok, "splits": rows}
        stem = int8_path.with_suffix("")
        written = {"int8": int8_path, "report": Path(f"{stem}.report.md"), "json": Path(f"{stem}.report.json")}
        write_json_atomic(written["json"], report)
        write_text_atomic(written["report"], format_report(report))
        print(format_report(report))
        print_summary("quantize_onnx.py wrote", written)
        return 0 if ok else EXIT_CHECK_FAILED

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
