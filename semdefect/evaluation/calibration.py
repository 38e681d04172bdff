"""How far a model's confidence can be trusted: expected calibration error and the reliability diagram.

A model is calibrated when, of the images it gives a confidence of about 0.8, about 80 % are right. The expected
calibration error (ECE) measures the gap: the top-label confidences are put into equal-width bins over [0, 1], and
the gap between each bin's accuracy and its mean confidence is averaged, weighted by the bin's share of the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semdefect.evaluation.figures import pyplot, save_png

ECE_BINS = 15  # the usual choice (Guo et al., 2017), so figures compare with the literature


@dataclass(frozen=True)
class ReliabilityBin:
    """The images whose top-label confidence lies in (low, high]: how many, how confident, how often right."""

    low: float
    high: float
    count: int
    confidence: float  # mean top-label confidence; 0 for an empty bin
    accuracy: float    # share right; 0 for an empty bin


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The top-label confidences of `probabilities` (n, classes) in `bins` equal-width bins, each with its accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.digitize(confidence, edges[1:-1], right=True)  # bin i holds (edges[i], edges[i + 1]]; 0 goes to bin 0
    result = []
    for i in range(bins):
        members = index == i
        count = int(members.sum())
        result.append(ReliabilityBin(float(edges[i]), float(edges[i + 1]), count,
                                     float(confidence[members].mean()) if count else 0.0,
                                     float(correct[members].mean()) if count else 0.0))
    return result


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE in [0, 1]: the count-weighted mean gap between accuracy and confidence over the bins."""
    total = len(labels)
    if total == 0:
        return 0.0
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in reliability_bins(probabilities,
                                                                                              labels, bins)))


def plot_reliability(bins: list[ReliabilityBin], path: Path, title: str) -> None:
    """Accuracy against confidence per bin, beside the diagonal of a calibrated model; bar labels are counts."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    width = bins[0].high - bins[0].low
    for b in bins:
        if b.count:
            ax.bar(b.low, b.accuracy, width=width, align="edge", color="tab:blue", edgecolor="white")
            ax.text(b.low + width / 2, b.accuracy + 0.01, str(b.count), ha="center", fontsize=7)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence (top label)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left")
    save_png(fig, path)


def calibrated_ece(confidence: np.ndarray, bins: int = ECE_BINS, draws: int = 1000, seed: int = 0) -> float:
    """The mean ECE a perfectly calibrated model with these top-label confidences would show on this many images:
    the floor that sampling noise alone puts under the measured ECE (on 194 images it is several points)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if len(confidence) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    index = np.digitize(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True)
    members = [index == i for i in range(bins)]
    weights = np.array([m.sum() for m in members]) / len(confidence)
    means = np.array([confidence[m].mean() if m.any() else 0.0 for m in members])
    right = rng.random((draws, len(confidence))) < confidence  # each image right with its stated probability
    gaps = np.stack([np.abs(right[:, m].mean(axis=1) - means[i]) if m.any() else np.zeros(draws)
                     for i, m in enumerate(members)], axis=1)
    return float((gaps * weights).sum(axis=1).mean())
