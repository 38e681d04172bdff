"""Score a model on labelled images: one code path for .keras, FP32 .onnx and INT8 .onnx models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import ModelError
from semdefect.board.images import Preprocess
from semdefect.board.runtime import Classifier
from semdefect.data.dataset import LoadedSplit, load_folder, resolve_eval_folder
from semdefect.evaluation.calibration import expected_calibration_error
from semdefect.evaluation.metrics import compute_metrics


def load_classifier(path: Path) -> Classifier:
    """An OnnxClassifier or KerasClassifier by file suffix; TensorFlow is imported only for .keras."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a model file")
    if path.suffix == ".onnx":
        from semdefect.board.runtime import OnnxClassifier

        return OnnxClassifier(path)
    if path.suffix == ".keras":
        from semdefect.training.model import KerasClassifier

        return KerasClassifier(path)
    raise ModelError(f"{path}: unknown model type (expected a .keras or .onnx file)")


def predict_probabilities(classifier: Classifier, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([np.asarray(classifier.predict(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


def load_eval_data(data: Path, split: str, class_names: Sequence[str], prep: Preprocess) -> LoadedSplit:
    """Images of `data` (a dataset root's split, or a folder of class folders) preprocessed for the model."""
    return load_folder(resolve_eval_folder(data, split, class_names), class_names, prep)


def score(classifier: Classifier, loaded: LoadedSplit, batch_size: int = 64) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics (the metrics.json contract, with the expected calibration error) and the probabilities of every
    image."""
    probabilities = predict_probabilities(classifier, loaded.x, batch_size)
    metrics = compute_metrics(loaded.y, probabilities.argmax(axis=1), classifier.class_names)
    metrics["model"] = str(classifier.path)
    metrics["data"] = str(loaded.folder)
    metrics["ece"] = expected_calibration_error(probabilities, loaded.y)
    return metrics, probabilities
