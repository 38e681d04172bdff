"""Evaluate a .keras or .onnx model on a test split (or any folder of class folders).

Writes metrics.json (with `ece` and `selective`: the review bin's coverage and accuracy on the accepted images at the
model's threshold), predictions.csv (path,true_label,label,confidence,decision,score), confusion_matrix.png,
reliability.png, risk_coverage.png and report.md to --out (default `evaluate.out`) and prints a per-class table.
The model's own metadata (classes, preprocessing, calibration, review threshold) wins over the config.

usage: python evaluate_model.py [--model M] [--data DIR] [--split S] [--out DIR] [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary
from semdefect.commands.stage import run_with_config
from semdefect.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, help="a .keras or .onnx model (default: train.output)")
    parser.add_argument("--data", type=Path, help="a dataset root or a folder of class folders (default: data.root)")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="split of a dataset root (default: evaluate.split)")
    parser.add_argument("--out", type=Path, help="folder for the reports (default: evaluate.out)")
    parser.add_argument("--cam-model", type=Path, help="the .keras model an .onnx or .tflite file was made from: "
                        "its heat maps go into report.html")
    return run_with_config(parser, argv, evaluate_model)


def evaluate_model(args: argparse.Namespace, cfg: Config) -> int:
    from semdefect.evaluation.metrics import format_table
    from semdefect.evaluation.reports import write_html_report, write_reports
    from semdefect.evaluation.scoring import load_classifier, load_eval_data, score

    classifier = load_classifier(args.model or Path(cfg.train.output))
    loaded = load_eval_data(args.data or Path(cfg.data.root), args.split or cfg.evaluate.split,
                            classifier.class_names, classifier.prep)
    scored = score(classifier, loaded, cfg.evaluate.batch_size)
    out = args.out or Path(cfg.evaluate.out)
    written = write_reports(scored, loaded.paths, loaded.y, out)
    written["html"] = write_html_report(scored, loaded, written, cfg, classifier, args.cam_model)
    metrics, selective = scored.metrics, scored.metrics["selective"]
    print(format_table(metrics))
    print(f"accuracy {metrics['accuracy']:.2%} on {metrics['n_images']} images "
          f"(macro F1 {metrics['f1_macro']:.3f}, ECE {metrics['ece']:.3f}) - {metrics['model']}")
    accepted = selective["accuracy_accepted"]
    print("no review bin in this model: every image accepted" if selective["threshold"] is None else
           f"review bin (threshold {selective['threshold']:.4f}): {selective['coverage']:.1%} accepted, "
           + ("none" if accepted is None else f"{accepted:.2%}") + " of those right")
    print_summary("evaluate_model.py wrote", written)
    return 0
