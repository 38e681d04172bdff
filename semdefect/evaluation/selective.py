"""Selective classification: fit the temperature, choose the review threshold, and measure what the review bin buys.

A model with a review bin answers only where its review score is at or above a threshold and hands the other images
to a person. What a fab reads off it: the share of images answered (coverage), the accuracy on those (accuracy on
accepted), and the area under the risk-coverage curve (AURC: the error rate on the accepted images averaged over
every coverage; lower is better, 0 when the score ranks every right answer above every wrong one). For defect types
the model was never taught, the score should separate them from known ones (AUROC: the chance that a random
known-class image scores above a random unknown-class one; 0.5 is chance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semdefect.board.review import AGREEMENT_SCORE, ReviewSettings, calibrate, review_scores
from semdefect.config import Review


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    result: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return result


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) (Guo et al., 2017): a
    coarse log-spaced grid, then golden-section search around its best point. T > 1 softens an overconfident model;
    the ranking of the classes, hence the predicted label, never changes."""
    labels = np.asarray(labels)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20.0), 121))
    losses = [negative_log_likelihood(logits, labels, t) for t in grid]
    best = int(np.argmin(losses))
    low, high = math.log(grid[max(best - 1, 0)]), math.log(grid[min(best + 1, len(grid) - 1)])
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if negative_log_likelihood(logits, labels, math.exp(a)) < negative_log_likelihood(logits, labels, math.exp(b)):
            high = b
        else:
            low = a
    return float(math.exp((low + high) / 2))


def choose_threshold(scores: np.ndarray, correct: np.ndarray, target: str, value: float) -> float:
    """The review threshold (accept when score >= threshold) fitted on held-out images.

    target "accuracy": the lowest threshold whose accepted images are right at least `value` of the time (the
    largest coverage that meets the target); when no threshold meets it, the highest score (accept almost nothing).
    target "coverage": the threshold that accepts a `value` share of the images.
    """
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    if target == "coverage":
        keep = max(1, math.ceil(value * len(ranked)))
        return float(ranked[keep - 1])
    accuracy = np.cumsum(correct[order]) / np.arange(1, len(ranked) + 1)
    # only cut between distinct scores: tied images are accepted or sent to review together
    cut_allowed = np.append(ranked[1:] < ranked[:-1], True)
    meets = np.flatnonzero((accuracy >= value) & cut_allowed)
    return float(ranked[meets[-1]]) if len(meets) else float(ranked[0])


def risk_coverage(scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and risk (error rate on the accepted) as the threshold sweeps from the highest score down."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    wrong = ~np.asarray(correct, dtype=bool)[order]
    accepted = np.arange(1, len(order) + 1)
    coverage: np.ndarray = accepted / len(order)
    risk: np.ndarray = np.cumsum(wrong) / accepted
    return coverage, risk


def aurc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean of the risk over every coverage step."""
    if len(scores) == 0:
        return 0.0
    return float(risk_coverage(scores, correct)[1].mean())


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(a known-class image scores above an unknown-class one), ties counted half (the Mann-Whitney statistic)."""
    known, unknown = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    if len(known) == 0 or len(unknown) == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.concatenate([known, unknown]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - counts + (counts + 1) / 2)[inverse]  # 1-based ranks, ties sharing their mean
    rank_sum = ranks[: len(known)].sum()
    return float((rank_sum - len(known) * (len(known) + 1) / 2) / (len(known) * len(unknown)))


@dataclass(frozen=True)
class Selective:
    """What a threshold gives on a set of images."""

    threshold: float
    coverage: float
    accuracy_accepted: float | None  # None when nothing is accepted


def at_threshold(scores: np.ndarray, correct: np.ndarray, threshold: float) -> Selective:
    accepted = np.asarray(scores) >= threshold
    count = int(accepted.sum())
    return Selective(float(threshold), count / len(accepted) if len(accepted) else 0.0,
                     float(np.asarray(correct)[accepted].mean()) if count else None)


def fit_review(raw_probabilities: np.ndarray, agreement: np.ndarray | None, labels: np.ndarray,
               rcfg: Review) -> ReviewSettings:
    """The review bin of a model from its outputs on held-out images (uncalibrated probabilities, and the neighbour
    agreement if it computes one): the temperature that calibrates the probabilities, then the threshold on the
    review score for the configured target."""
    labels = np.asarray(labels)
    log_p = np.log(np.clip(np.asarray(raw_probabilities, dtype=np.float64), 1e-300, None))  # logits + a constant
    temperature = fit_temperature(log_p, labels)
    scores = review_scores(calibrate(raw_probabilities, temperature), agreement)
    correct = np.asarray(raw_probabilities).argmax(axis=1) == labels
    value = rcfg.accuracy if rcfg.target == "accuracy" else rcfg.coverage
    threshold = choose_threshold(scores, correct, rcfg.target, value)
    return ReviewSettings(temperature, "msp" if agreement is None else AGREEMENT_SCORE, threshold, rcfg.target, value,
                          len(labels))
