"""Expected calibration error and its bins: known values on hand-made predictions."""

import numpy as np
import pytest

from semdefect.evaluation.calibration import calibrated_ece, expected_calibration_error, reliability_bins


def onehot_confidence(confidence: float, label: int, classes: int = 4) -> np.ndarray:
    """A probability row whose top label is `label` with `confidence`, the rest shared evenly."""
    row = np.full(classes, (1 - confidence) / (classes - 1))
    row[label] = confidence
    return row


def test_a_model_right_as_often_as_it_is_confident_has_no_calibration_error():
    # 10 images at confidence 0.8, 8 of them right: accuracy equals confidence in the one bin used
    probabilities = np.stack([onehot_confidence(0.8, 0)] * 10)
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0, abs=1e-12)


def test_the_error_is_the_count_weighted_gap_of_each_bin():
    # 4 images at 0.95 all wrong (gap 0.95) and 6 at 0.5 all right (gap 0.5): ECE = 0.4 * 0.95 + 0.6 * 0.5
    probabilities = np.stack([onehot_confidence(0.95, 0)] * 4 + [onehot_confidence(0.5, 2)] * 6)
    labels = np.array([1] * 4 + [2] * 6)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4 * 0.95 + 0.6 * 0.5)


def test_bins_are_equal_width_and_hold_every_image_once():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), 500)
    bins = reliability_bins(probabilities, rng.integers(0, 10, 500))
    assert len(bins) == 15 and sum(b.count for b in bins) == 500
    assert np.allclose([b.high - b.low for b in bins], 1 / 15) and bins[0].low == 0 and bins[-1].high == 1
    for b in bins:
        assert b.count == 0 or b.low < b.confidence <= b.high


def test_a_calibrated_model_on_few_images_still_shows_the_error_the_floor_predicts():
    rng = np.random.default_rng(5)
    confidence = rng.uniform(0.3, 1.0, 200)
    probabilities = np.stack([onehot_confidence(c, 0) for c in confidence])  # class 0 on top, as confident as c
    measured = [expected_calibration_error(probabilities, np.where(rng.random(200) < confidence, 0, 1))
                for _ in range(300)]  # a model exactly as right as it is confident, scored on 200 images each time
    assert calibrated_ece(confidence) == pytest.approx(np.mean(measured), abs=0.01)
    assert calibrated_ece(confidence) > 0.03  # sampling noise alone, on 200 images
