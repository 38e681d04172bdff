"""The report files of an evaluation: metrics.json, predictions.csv, report.md and the plots."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import ModelError
from semdefect.board.files import write_json_atomic, write_text_atomic
from semdefect.board.runtime import Classifier
from semdefect.config import Config
from semdefect.data.dataset import LoadedSplit
from semdefect.evaluation.calibration import plot_reliability, reliability_bins
from semdefect.evaluation.figures import pyplot, save_png
from semdefect.evaluation.metrics import format_table
from semdefect.evaluation.scoring import Scored
from semdefect.evaluation.selective import risk_coverage

PREDICTION_COLUMNS = ("path", "true_label", "label", "confidence", "decision", "score")


def write_reports(scored: Scored, paths_in: Sequence[Path], labels: np.ndarray, out_dir: Path) -> dict[str, Path]:
    """metrics.json, predictions.csv, confusion_matrix.png, reliability.png, risk_coverage.png and report.md in
    `out_dir`; returns them by role."""
    metrics = scored.metrics
    out_dir = Path(out_dir)
    paths = {"metrics": out_dir / "metrics.json", "predictions": out_dir / "predictions.csv",
             "confusion": out_dir / "confusion_matrix.png", "reliability": out_dir / "reliability.png",
             "risk_coverage": out_dir / "risk_coverage.png", "report": out_dir / "report.md"}
    write_json_atomic(paths["metrics"], metrics)
    write_predictions(scored, paths_in, labels, paths["predictions"])
    title = f"{Path(metrics['model']).name} on {metrics['data']}"
    plot_confusion(metrics["confusion_matrix"], metrics["class_names"], paths["confusion"], title=title)
    plot_reliability(reliability_bins(scored.probabilities, labels), paths["reliability"],
                     title=f"{title}: ECE {metrics['ece']:.3f}")
    correct = scored.probabilities.argmax(axis=1) == labels
    plot_risk_coverage(scored.scores, correct, metrics["selective"], paths["risk_coverage"], title)
    selective = metrics["selective"]
    accepted = selective["accuracy_accepted"]
    write_text_atomic(paths["report"], "\n".join([
        f"# Evaluation of `{metrics['model']}`", "",
        f"Data: `{metrics['data']}`, {metrics['n_images']} images.", "",
        f"**Accuracy {metrics['accuracy']:.2%}**, macro F1 {metrics['f1_macro']:.3f}, "
        f"weighted F1 {metrics['f1_weighted']:.3f}. Expected calibration error {metrics['ece']:.3f} "
        f"(top label, 15 bins; a perfectly calibrated model with these confidences would show "
        f"{metrics['ece_if_calibrated']:.3f} on this many images, from sampling noise alone).", "",
        "Review bin: " + ("none in this model (every image accepted)" if selective["threshold"] is None else
                          f"threshold {selective['threshold']:.4f}") +
        f"; {selective['coverage']:.1%} of the images accepted, "
        + ("none" if accepted is None else f"{accepted:.2%}") + " of those right; "
        f"area under the risk-coverage curve {selective['aurc']:.3f}.", "",
        format_table(metrics), "",
        "![confusion matrix](confusion_matrix.png) ![reliability](reliability.png) "
        "![risk-coverage](risk_coverage.png)", ""]))
    return paths


def write_html_report(scored: Scored, loaded: LoadedSplit, written: dict[str, Path], cfg: Config,
                      classifier: Classifier, cam_path: Path | None) -> Path:
    """report.html beside the other files; heat maps from the model itself when it is Keras, else from `cam_path`."""
    from semdefect.pages.report import build_report

    cam_model, note = None, ""
    if cam_path is not None:
        from semdefect.training.model import KerasClassifier

        cam = KerasClassifier(cam_path)
        if (cam.class_names, cam.prep) != (classifier.class_names, classifier.prep):
            raise ModelError(f"--cam-model {cam_path}: other classes or preprocessing than {classifier.path}; "
                             "give the .keras model it was made from")
        cam_model, note = cam.model, f"Heat maps: Grad-CAM of {cam_path.name}, the predicted class."
    elif Path(classifier.path).suffix == ".keras":
        cam_model, note = classifier.model, "Heat maps: Grad-CAM of the predicted class."  # type: ignore[attr-defined]
    else:
        note = ("No heat maps: this is not a Keras model; give the .keras file it was made from with --cam-model.")
    plots = {"reliability": written["reliability"], "risk-coverage": written["risk_coverage"]}
    path = Path(written["report"]).with_name("report.html")
    write_text_atomic(path, build_report(scored, loaded, plots, cfg.report, cam_model, note))
    return path


def write_predictions(scored: Scored, paths: Sequence[Path], labels: np.ndarray, out: Path) -> None:
    """One row per image: path,true_label,label,confidence,decision,score (so a user can see which went wrong)."""
    names = scored.metrics["class_names"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for path, truth, p, decision, review_score in zip(paths, labels, scored.probabilities, scored.decisions,
                                                      scored.scores):
        best = int(np.argmax(p))
        writer.writerow([str(path), names[truth], names[best], f"{p[best]:.4f}", decision, f"{review_score:.4f}"])
    write_text_atomic(out, buffer.getvalue())


def plot_risk_coverage(scores: np.ndarray, correct: np.ndarray, selective: dict[str, Any], path: Path,
                       title: str) -> None:
    """Error rate on the accepted images against the share accepted, the threshold's point marked."""
    plt = pyplot()
    coverage, risk = risk_coverage(scores, correct)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(coverage, risk, color="tab:blue", label=f"AURC {selective['aurc']:.3f}")
    if selective["threshold"] is not None and selective["accuracy_accepted"] is not None:
        ax.plot(selective["coverage"], 1 - selective["accuracy_accepted"], "o", color="tab:red",
                label=f"threshold {selective['threshold']:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, float(risk.max()) * 1.1) if len(risk) else 1)
    ax.set_xlabel("coverage (share of images accepted)")
    ax.set_ylabel("risk (error rate on accepted)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left")
    save_png(fig, path)


def plot_confusion(matrix: list[list[int]], class_names: Sequence[str], path: Path, title: str) -> None:
    plt = pyplot()
    counts = np.asarray(matrix)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 1.0 + 0.55 * n))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    top = counts.max() if counts.size else 0
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > top / 2 else "black")
    save_png(fig, path)
