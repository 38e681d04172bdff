import csv
import json
from pathlib import Path

import numpy as np
import pytest

from semdefect.board.images import Preprocess
from semdefect.board.metadata import ModelMetadata
from semdefect.board.review import ReviewSettings
from semdefect.board.runtime import Classifier
from semdefect.data.dataset import LoadedSplit
from semdefect.evaluation.metrics import compute_metrics, format_table
from semdefect.evaluation.reports import write_reports
from semdefect.evaluation.scoring import score

CONTRACT_KEYS = {"accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
                 "f1_weighted", "n_images", "class_names", "confusion_matrix", "per_class", "model", "data"}


def test_metrics_match_a_hand_count():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    m = compute_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"][0] == [2, 1, 0, 0] and m["confusion_matrix"][2] == [1, 0, 0, 0]
    assert m["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and m["per_class"]["b"]["recall"] == 1.0
    # macro over the classes present (a, b, c), not the absent d
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["recall_weighted"] == pytest.approx(4 / 6)


class FixedClassifier(Classifier):
    """A model whose raw output is fixed probabilities, with a review bin at threshold 0.7 (temperature 1)."""

    def __init__(self, probabilities, threshold=0.7):
        self.path = Path("m.onnx")
        review = ReviewSettings(1.0, "msp", threshold, "accuracy", 0.9, 10) if threshold is not None else None
        self.metadata = ModelMetadata(["a", "b"], Preprocess(image_size=8), "test", review)
        self.probabilities = np.asarray(probabilities, dtype=np.float32)

    def run(self, batch):
        return self.probabilities[batch[:, 0, 0, 0].astype(int)], None


def scored_fixture(threshold=0.7):
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 1, 1])
    images = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1) * np.ones((1, 8, 8, 1), np.float32)
    loaded = LoadedSplit(Path("d/test"), images, labels, [Path(f"d/test/x{i}.png") for i in range(3)], [])
    return score(FixedClassifier(probabilities, threshold), loaded), loaded


def test_reports_hold_the_contract(tmp_path):
    scored, loaded = scored_fixture()
    paths = write_reports(scored, loaded.paths, loaded.y, tmp_path / "eval")
    metrics = json.loads(paths["metrics"].read_text())
    assert set(metrics) == CONTRACT_KEYS | {"ece", "ece_if_calibrated", "selective"}
    assert set(metrics["selective"]) == {"threshold", "coverage", "accuracy_accepted", "aurc", "per_class"}
    for name in ("confusion", "reliability", "risk_coverage"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| a |" in paths["report"].read_text() and "| a |" in format_table(metrics)
    with paths["predictions"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "true_label", "label", "confidence", "decision", "score"]
    assert [(r["true_label"], r["label"], r["decision"]) for r in rows] == [
        ("a", "a", "accept"), ("b", "b", "accept"), ("b", "a", "review")]


def test_selective_figures_at_the_threshold():
    selective = scored_fixture()[0].metrics["selective"]
    # scores 0.9, 0.8, 0.6 at threshold 0.7: two accepted, both right; the one sent to review was wrong
    assert selective["threshold"] == 0.7 and selective["coverage"] == pytest.approx(2 / 3)
    assert selective["accuracy_accepted"] == 1.0
    assert selective["per_class"] == {"a": {"coverage": 1.0, "accuracy_accepted": 1.0},
                                      "b": {"coverage": 0.5, "accuracy_accepted": 1.0}}
    assert selective["aurc"] == pytest.approx((0 + 0 + 1 / 3) / 3)  # risk at coverage 1/3, 2/3, 1
    nothing = scored_fixture(threshold=0.95)[0].metrics["selective"]
    assert nothing["coverage"] == 0.0 and nothing["accuracy_accepted"] is None


def test_a_model_without_review_bin_accepts_everything():
    scored = scored_fixture(threshold=None)[0]
    assert scored.metrics["selective"]["threshold"] is None and scored.metrics["selective"]["coverage"] == 1.0
    assert scored.decisions == ["accept"] * 3
