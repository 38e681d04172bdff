import json

import numpy as np
import pytest

from semdefect.evaluation.calibration import expected_calibration_error, reliability_bins
from semdefect.evaluation.metrics import compute_metrics, format_table, write_reports

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


def test_reports_hold_the_contract(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 1, 1])
    m = compute_metrics(labels, probabilities.argmax(axis=1), ["a", "b"])
    m.update(model="m.onnx", data="d/test", ece=expected_calibration_error(probabilities, labels))
    paths = write_reports(m, tmp_path / "eval", reliability_bins(probabilities, labels))
    assert set(json.loads(paths["metrics"].read_text())) == CONTRACT_KEYS | {"ece"}
    assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["reliability"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| a |" in paths["report"].read_text() and "| a |" in format_table(m)
