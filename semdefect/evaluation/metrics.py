"""Classification metrics, the confusion matrix and the report files (no TensorFlow).

`metrics.json` keys are a contract (DESIGN.md): accuracy, precision/recall/F1 macro and weighted, n_images,
class_names, confusion_matrix (rows = true class), per_class, model, data; and `ece` (evaluation.calibration).
Macro averages are over the classes present in the evaluated data (a class with no true image and no prediction
says nothing about the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


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
