"""Score a model on labelled images: one code path for .keras, FP32 .onnx, INT8 .onnx and INT8 .tflite models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import ModelError
from semdefect.board.images import Preprocess
from semdefect.board.review import decisions
from semdefect.board.runtime import Classifier
from semdefect.data.dataset import LoadedSplit, load_folder, resolve_eval_folder
from semdefect.evaluation.calibration import calibrated_ece, expected_calibration_error
from semdefect.evaluation.metrics import compute_metrics
from semdefect.evaluation.selective import at_threshold, aurc


def load_classifier(path: Path) -> Classifier:
    """A KerasClassifier, OnnxClassifier or TfliteClassifier by file suffix; TensorFlow is imported only for .keras."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a model file")
    if path.suffix in (".onnx", ".tflite"):
        from semdefect.board.runtime import open_classifier

        return open_classifier(path)
    if path.suffix == ".keras":
        from semdefect.training.model import KerasClassifier

        return KerasClassifier(path)
    raise ModelError(f"{path}: unknown model type (expected a .keras, .onnx or .tflite file)")


def predict_probabilities(classifier: Classifier, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return predict_scored(classifier, x, batch_size)[0]


def predict_scored(classifier: Classifier, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and review scores of every image, a batch at a time."""
    parts = [classifier.predict_scored(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    if not parts:
        return np.empty((0, len(classifier.class_names)), np.float32), np.empty(0, np.float32)
    return np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])


def load_eval_data(data: Path, split: str, class_names: Sequence[str], prep: Preprocess) -> LoadedSplit:
    """Images of `data` (a dataset root's split, or a folder of class folders) preprocessed for the model."""
    return load_folder(resolve_eval_folder(data, split, class_names), class_names, prep)


def load_splits_or_folder(data: Path, splits: Sequence[str], class_names: Sequence[str],
                          prep: Preprocess) -> dict[str, LoadedSplit]:
    """The named splits of a dataset root or, for one folder of class folders without splits (a fab's labelled
    images, which an adapted model has no val split besides), that folder once, named `labelled`."""
    data = Path(data)
    if resolve_eval_folder(data, splits[0], class_names) == data:
        return {"labelled": load_folder(data, class_names, prep)}
    return {split: load_eval_data(data, split, class_names, prep) for split in splits}


@dataclass
class Scored:
    """A model's answers on labelled images: the metrics.json contract, and per image the calibrated probabilities,
    the review score and the decision."""

    metrics: dict[str, Any]
    probabilities: np.ndarray
    scores: np.ndarray
    decisions: list[str]


def score(classifier: Classifier, loaded: LoadedSplit, batch_size: int = 64) -> Scored:
    """Metrics (the metrics.json contract, with the expected calibration error and the review bin's figures at the
    model's threshold) and the answer on every image."""
    probabilities, scores = predict_scored(classifier, loaded.x, batch_size)
    predicted = probabilities.argmax(axis=1)
    metrics = compute_metrics(loaded.y, predicted, classifier.class_names)
    metrics["model"] = str(classifier.path)
    metrics["data"] = str(loaded.folder)
    metrics["ece"] = expected_calibration_error(probabilities, loaded.y)
    metrics["ece_if_calibrated"] = calibrated_ece(probabilities.max(axis=1)) if len(probabilities) else 0.0
    metrics["selective"] = selective_metrics(scores, predicted == loaded.y, loaded.y, classifier.threshold,
                                             classifier.class_names)
    return Scored(metrics, probabilities, scores, decisions(scores, classifier.threshold))


def selective_metrics(scores: np.ndarray, correct: np.ndarray, labels: np.ndarray, threshold: float | None,
                      class_names: Sequence[str]) -> dict[str, Any]:
    """Coverage and accuracy on the accepted images at `threshold` (None, no review bin: all accepted), overall
    and per true class, and the area under the risk-coverage curve."""
    cut = -np.inf if threshold is None else threshold
    overall = at_threshold(scores, correct, cut)
    per_class = {}
    for index, name in enumerate(class_names):
        members = np.asarray(labels) == index  # a class without images: coverage 0, accuracy_accepted None
        result = at_threshold(scores[members], correct[members], cut)
        per_class[name] = {"coverage": result.coverage, "accuracy_accepted": result.accuracy_accepted}
    return {"threshold": threshold, "coverage": overall.coverage, "accuracy_accepted": overall.accuracy_accepted,
            "aurc": aurc(scores, correct), "per_class": per_class}
