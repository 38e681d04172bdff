"""The review bin on the board: calibrated probabilities, the review score and the accept/review decision.

A model trained with a review bin carries, in its metadata key `review` (JSON), a temperature and a threshold
fitted on images held out of its training. Every runtime path (Keras, FP32 and INT8 ONNX) turns the model's
probabilities into calibrated ones here, and an image is accepted when its review score is at or above the
threshold, else sent to a person for review. A model without the key has no review bin: every image is accepted.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError

REVIEW_KEY = "review"
AGREEMENT_SCORE = "msp+agreement"
# msp: the largest calibrated probability; msp+agreement: its mean with the neighbour agreement, the share of the
# image's nearest training images (in the model's feature space) labelled with the predicted class, which the model
# computes as its second output, `agreement` (docs/review.md: how the score was chosen)
SCORES = ("msp", AGREEMENT_SCORE)
AGREEMENT_OUTPUT = "agreement"
TARGETS = ("accuracy", "coverage")


@dataclass(frozen=True)
class ReviewSettings:
    """How a model's outputs become a decision: its temperature, score and threshold, and what the threshold aimed
    at on how many held-out images."""

    temperature: float
    score: str
    threshold: float
    target: str          # accuracy | coverage
    target_value: float  # the accuracy on accepted, or the coverage, aimed at
    held_out: int        # images the temperature and threshold were fitted on

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: Path) -> ReviewSettings:
        """Validate the `review` metadata of a model file; an error names the file, the key and what is wrong."""
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            expected = set(cls.__dataclass_fields__)
            if set(fields) != expected:
                raise ValueError(f"expected keys {sorted(expected)}, found {sorted(fields)}")
            numbers = ("temperature", "threshold", "target_value")
            if not all(isinstance(fields[k], int | float) and not isinstance(fields[k], bool)
                       and math.isfinite(fields[k]) for k in numbers):
                raise ValueError(f"{', '.join(numbers)} must be finite numbers")
            if fields["temperature"] <= 0:
                raise ValueError(f"temperature must be positive, got {fields['temperature']}")
            if fields["score"] not in SCORES:
                raise ValueError(f"unknown score {fields['score']!r} (known: {', '.join(SCORES)})")
            if fields["target"] not in TARGETS or not 0 < fields["target_value"] <= 1:
                raise ValueError(f"target must be one of {', '.join(TARGETS)} with a value in (0, 1]")
            if not isinstance(fields["held_out"], int) or fields["held_out"] < 0:
                raise ValueError("held_out must be a non-negative integer")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            raise ModelError(f"{source}: bad '{REVIEW_KEY}' metadata: {exc}") from None
        return cls(float(fields["temperature"]), fields["score"], float(fields["threshold"]), fields["target"],
                   float(fields["target_value"]), fields["held_out"])


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits): p_i^(1/T), renormalised. Exact, since the logits' unknown common
    offset cancels; a probability that underflowed to 0 stays 0, where the exact value is below 1e-30 anyway."""
    if temperature == 1.0:
        return probabilities
    scaled = np.power(np.asarray(probabilities, dtype=np.float64), 1.0 / temperature)
    result: np.ndarray = (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)
    return result


def review_scores(calibrated: np.ndarray, agreement: np.ndarray | None = None) -> np.ndarray:
    """The review score of each image (higher: more trustworthy; in [0, 1]): its largest calibrated probability,
    averaged with its neighbour agreement when the model computes one."""
    confidence = np.asarray(calibrated, dtype=np.float32).max(axis=1)
    scores: np.ndarray = confidence if agreement is None else (confidence + np.asarray(agreement, np.float32)) / 2
    return scores


def neighbour_agreement(features: np.ndarray, probabilities: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray,
                        k: int) -> np.ndarray:
    """What the Keras layer `NeighbourAgreement` computes, in numpy, for a model that hands its features out (the
    TFLite model: the search is not an NPU operation). For each image: the share of its `k` nearest bank images
    (cosine similarity; `bank` holds unit-length features) labelled with its predicted class (ties for the top class
    count once)."""
    features = np.asarray(features, dtype=np.float32)
    unit = features / np.sqrt((features * features).sum(axis=1, keepdims=True) + 1e-12)
    similarity = unit @ np.asarray(bank, dtype=np.float32).T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    classes = np.arange(probabilities.shape[1])
    votes = (bank_labels[nearest][:, :, None] == classes).mean(axis=1)  # (n, classes)
    predicted = probabilities == probabilities.max(axis=1, keepdims=True)
    agreement: np.ndarray = (votes * predicted).max(axis=1).astype(np.float32)
    return agreement


def decisions(scores: np.ndarray, threshold: float | None) -> list[str]:
    """'accept' where the score reaches the threshold, else 'review'; without a threshold every image is accepted."""
    if threshold is None:
        return ["accept"] * len(scores)
    return ["accept" if s >= threshold else "review" for s in np.asarray(scores)]
