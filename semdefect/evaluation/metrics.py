"""Classification metrics, the confusion matrix and the report files (no TensorFlow).

`metrics.json` keys are a contract (DESIGN.md): accuracy, precision/recall/F1 macro and weighted, n_images,
class_names, confusion_matrix (rows = true class), per_class, model, data; and `ece` (evaluation.calibration).
Macro averages are over the classes present in the evaluated data (a class with no true image and no prediction
says nothing about the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from semdefect.board.files import atomic_path, write_json_atomic, write_text_atomic
from semdefect.evaluation.calibration import ReliabilityBin, plot_reliability


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    labels = list(range(len(class_names)))
    present = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))
    result: dict[str, Any] = {"accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average=average,
                                                     zero_division=0)
        result.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    result["n_images"] = int(len(y_true))
    result["class_names"] = list(class_names)
    result["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    result["per_class"] = {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                  "support": int(s[i])} for i, name in enumerate(class_names)}
    return result


def format_table(metrics: dict[str, Any]) -> str:
    """Per-class table and the averages, for stdout and the Markdown report."""
    lines = ["| class | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    for average in ("macro", "weighted"):
        lines.append(f"| *{average}* | {metrics[f'precision_{average}']:.3f} | {metrics[f'recall_{average}']:.3f} | "
                     f"{metrics[f'f1_{average}']:.3f} | {metrics['n_images']} |")
    return "\n".join(lines)


def write_reports(metrics: dict[str, Any], out_dir: Path, reliability: list[ReliabilityBin]) -> dict[str, Path]:
    """metrics.json, confusion_matrix.png, reliability.png and report.md in `out_dir`; returns them by role."""
    out_dir = Path(out_dir)
    paths = {"metrics": out_dir / "metrics.json", "confusion": out_dir / "confusion_matrix.png",
             "reliability": out_dir / "reliability.png", "report": out_dir / "report.md"}
    write_json_atomic(paths["metrics"], metrics)
    title = f"{Path(metrics['model']).name} on {metrics['data']}"
    plot_confusion(metrics["confusion_matrix"], metrics["class_names"], paths["confusion"], title=title)
    plot_reliability(reliability, paths["reliability"], title=f"{title}: ECE {metrics['ece']:.3f}")
    write_text_atomic(paths["report"], "\n".join([
        f"# Evaluation of `{metrics['model']}`", "",
        f"Data: `{metrics['data']}`, {metrics['n_images']} images.", "",
        f"**Accuracy {metrics['accuracy']:.2%}**, macro F1 {metrics['f1_macro']:.3f}, "
        f"weighted F1 {metrics['f1_weighted']:.3f}. Expected calibration error {metrics['ece']:.3f} "
        "(top label, 15 bins).", "",
        format_table(metrics), "",
        "![confusion matrix](confusion_matrix.png) ![reliability](reliability.png)", ""]))
    return paths


def plot_confusion(matrix: list[list[int]], class_names: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
