"""Compare candidate review scores on trained models: which one tells right from wrong answers, and known classes
from a class the model never saw, best. The figures that chose the shipped score (docs/review.md).

Input: run folders of the protocols (each with model.keras, model.history.json listing its held-out images and
model.config.yaml): in-distribution runs (all classes; `make crosscheck`'s "all sources" rows) and open-set runs
(`make openset`: one class left out, whose test images in `--data` are the unknown ones). For every candidate score
the temperature is fitted on the run's held-out images, the threshold for accuracy 0.90 on accepted as well; the
neighbour scores search the run's training images (train + val less the held-out ones).

Scores: msp (largest probability; _T: after temperature scaling), margin (top-1 minus top-2), maxlogit, energy
(log-sum-exp of the logits), mahalanobis (to the nearest class mean, shared covariance), relmaha (the same less the
distance to the mean of all training images), vim (energy less the scaled length of the dense features off their 32
main directions, ViM), react_energy (energy of the logits recomputed with the dense features clipped at their 90th
percentile, ReAct), knnK (cosine similarity to the K-th nearest training image), agreeK (share of the K nearest
training images labelled with the predicted class), and their means msp_T+agreeK, msp_T+agreeK+knnK; _g on the
pooled convolutional features, _h on the 128 of the dense layer.

usage: python benchmarks/bench_review_scores.py --data ../shared/data/sem-public RUN_DIR ... [--out scores.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semdefect.board.images import load_image
from semdefect.config import load_config
from semdefect.data.dataset import list_labelled_files
from semdefect.evaluation.calibration import expected_calibration_error
from semdefect.evaluation.selective import (
    at_threshold,
    aurc,
    auroc,
    choose_threshold,
    fit_temperature,
    softmax,
)

Features = tuple[np.ndarray, np.ndarray, np.ndarray]  # pooled features, dense features, logits


def last_layer(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of the layer that turns the dense features into logits."""
    from semdefect.training.model import classifier_part

    weights, bias = classifier_part(model).get_layer("probabilities").get_weights()
    return weights.astype(np.float64), bias.astype(np.float64)


def features(model: Any, x: np.ndarray) -> Features:
    import keras

    from semdefect.training.model import classifier_part, feature_layer

    model = classifier_part(model)
    pooled = model.get_layer(feature_layer(model)).output
    sub = keras.Model(model.inputs, [pooled, model.get_layer("dense128").output])
    parts = [sub.predict_on_batch(x[i:i + 64]) for i in range(0, len(x), 64)]
    g = np.concatenate([p[0] for p in parts]).astype(np.float64)
    h = np.concatenate([p[1] for p in parts]).astype(np.float64)
    weights, bias = last_layer(model)
    return g, h, h @ weights + bias


def unit(f: np.ndarray) -> np.ndarray:
    return f / np.linalg.norm(f, axis=1, keepdims=True).clip(1e-12)


def mahalanobis(bank: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    classes = np.unique(labels)
    means = np.stack([bank[labels == c].mean(0) for c in classes])
    centred = bank - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / len(bank)
    precision = np.linalg.inv(cov + 1e-3 * np.trace(cov) / len(cov) * np.eye(len(cov)))
    return lambda f: -np.min([np.einsum("ij,jk,ik->i", f - m, precision, f - m) for m in means], axis=0)


def energy(logits: np.ndarray) -> np.ndarray:
    top = logits.max(1)
    return top + np.log(np.exp(logits - top[:, None]).sum(1))


def vim(fit: Features, head: tuple[np.ndarray, np.ndarray], dims: int = 32) -> Callable[[Features], np.ndarray]:
    """ViM: energy less alpha times the length of the dense features (from the point the last layer maps to zero
    logits) outside their `dims` main directions; alpha evens the two out on the training images."""
    weights, bias = head
    origin = -np.linalg.pinv(weights.T) @ bias
    centred = fit[1] - origin
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(centred))
    residual_space = eigenvectors[:, np.argsort(-eigenvalues)[dims:]]
    alpha = fit[2].max(1).mean() / np.linalg.norm(centred @ residual_space, axis=1).mean()
    return lambda f: energy(f[2]) - alpha * np.linalg.norm((f[1] - origin) @ residual_space, axis=1)


def candidate_scores(fit: Features, fit_labels: np.ndarray, temperature: float,
                     head: tuple[np.ndarray, np.ndarray]) -> Callable[[Features], dict]:
    banks = {"g": unit(fit[0]), "h": unit(fit[1])}
    maha = {name: mahalanobis(fit[i], fit_labels) for i, name in enumerate(("g", "h"))}
    maha_all = mahalanobis(fit[0], np.zeros(len(fit_labels)))  # one class: the distance to the mean of them all
    vim_score = vim(fit, head)
    clip = np.percentile(fit[1], 90)

    # smaller banks: the pooled features projected on their first principal components (of the training images),
    # or at most `cap` training images per class (drawn at random)
    centre = fit[0].mean(0)
    components = np.linalg.svd(fit[0] - centre, full_matrices=False)[2]
    projected = {d: unit((fit[0] - centre) @ components[:d].T) for d in (32, 64)}
    rng = np.random.default_rng(0)
    capped = {cap: np.sort(np.concatenate([rng.permutation(np.flatnonzero(fit_labels == c))[:cap]
                                           for c in np.unique(fit_labels)])) for cap in (30, 60)}

    def scores(f: Features) -> dict[str, np.ndarray]:
        z = f[2]
        predicted = z.argmax(1)
        calibrated = np.sort(softmax(z, temperature), 1)
        out = {"msp": softmax(z).max(1), "msp_T": calibrated[:, -1], "margin": calibrated[:, -1] - calibrated[:, -2],
               "maxlogit": z.max(1), "energy": energy(z), "vim": vim_score(f),
               "react_energy": energy(np.minimum(f[1], clip) @ head[0] + head[1]),
               "relmaha_g": maha["g"](f[0]) - maha_all(f[0])}
        for i, name in enumerate(("g", "h")):
            out[f"mahalanobis_{name}"] = maha[name](f[i])
            similarity = unit(f[i]) @ banks[name].T
            nearest = np.argsort(-similarity, axis=1, kind="stable")
            for k in (1, 5, 10, 20):
                out[f"knn{k}_{name}"] = np.take_along_axis(similarity, nearest[:, k - 1:k], 1)[:, 0]
                if k > 1:
                    agree = (fit_labels[nearest[:, :k]] == predicted[:, None]).mean(1)
                    out[f"agree{k}_{name}"] = agree
                    out[f"msp_T+agree{k}_{name}"] = (out["msp_T"] + agree) / 2
                    out[f"msp_T+agree{k}+knn{k}_{name}"] = (out["msp_T"] + agree + out[f"knn{k}_{name}"]) / 3
        for d, bank in projected.items():
            similarity = unit((f[0] - centre) @ components[:d].T) @ bank.T
            nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :5]
            agree = (fit_labels[nearest] == predicted[:, None]).mean(1)
            out[f"msp_T+agree5_pca{d}"] = (out["msp_T"] + agree) / 2
        for cap, members in capped.items():
            similarity = unit(f[0]) @ banks["g"][members].T
            nearest = members[np.argsort(-similarity, axis=1, kind="stable")[:, :5]]
            agree = (fit_labels[nearest] == predicted[:, None]).mean(1)
            out[f"msp_T+agree5_g_cap{cap}"] = (out["msp_T"] + agree) / 2
        return out

    return scores


def load_paths(paths: list[Path], classes: list[str], prep: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([load_image(p, prep) for p in paths]), np.array([classes.index(p.parent.name) for p in paths])


def study(run: Path, data: Path) -> dict[str, Any]:
    from semdefect.training.model import load_model

    model_path = run / "model.keras"
    model, metadata = load_model(model_path)
    classes, prep = metadata.class_names, metadata.prep
    cfg = load_config(model_path.with_suffix(".config.yaml"))
    view = Path(cfg.data.root)
    held = set(json.loads(model_path.with_suffix(".history.json").read_text())["held_out"])
    fit_paths = [p for split in ("train", "val") for p in list_labelled_files(view / split, classes).paths
                 if str(p) not in held]
    x_fit, y_fit = load_paths(fit_paths, classes, prep)
    x_held, y_held = load_paths([Path(p) for p in sorted(held)], classes, prep)
    x_test, y_test = load_paths(list_labelled_files(view / "test", classes).paths, classes, prep)
    f_fit, f_held, f_test = features(model, x_fit), features(model, x_held), features(model, x_test)
    temperature = fit_temperature(f_held[2], y_held)
    scores = candidate_scores(f_fit, y_fit, temperature, last_layer(model))
    s_held, s_test = scores(f_held), scores(f_test)
    right_held, right_test = f_held[2].argmax(1) == y_held, f_test[2].argmax(1) == y_test
    unknown = [c for c in load_config(None, [f"data.root={data}"]).data.classes if c not in classes]
    s_unknown = None
    if unknown:
        paths = sorted(p for c in unknown for p in (data / "test" / c).iterdir())
        s_unknown = scores(features(model, np.stack([load_image(p, prep) for p in paths])))
    result: dict[str, Any] = {"run": str(run), "unknown": unknown, "temperature": temperature,
                              "accuracy": float(right_test.mean()),
                              "ece": expected_calibration_error(softmax(f_test[2]), y_test),
                              "ece_T": expected_calibration_error(softmax(f_test[2], temperature), y_test),
                              "scores": {}}
    for name, values in s_test.items():
        threshold = choose_threshold(s_held[name], right_held, "accuracy", 0.9)
        chosen = at_threshold(values, right_test, threshold)
        top65 = right_test[np.argsort(-values, kind="stable")][: int(0.65 * len(values))]
        entry = {"aurc": aurc(values, right_test), "auroc_right_wrong": auroc(values[right_test], values[~right_test]),
                 "accuracy_at_65": float(top65.mean()), "coverage": chosen.coverage,
                 "accuracy_accepted": chosen.accuracy_accepted}
        if s_unknown is not None:
            entry |= {"auroc_unknown": auroc(values, s_unknown[name]),
                      "unknown_to_review": float(np.mean(s_unknown[name] < threshold))}
        result["scores"][name] = entry
    return result


def mean_of(results: list[dict[str, Any]], name: str, key: str) -> float:
    values = [r["scores"][name][key] for r in results if r["scores"][name].get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def table(results: list[dict[str, Any]]) -> str:
    known = [r for r in results if not r["unknown"]]
    open_set = [r for r in results if r["unknown"]]
    lines = [f"In-distribution: {len(known)} run(s); open set: {len(open_set)} run(s) (one class left out each). "
             "Threshold for accuracy 0.90 on accepted, fitted on each run's held-out images.", "",
             "| score | AURC | accuracy at 65 % coverage | coverage | accuracy on accepted | open set: AURC "
             "| AUROC unknown | unknown to review | known accepted |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in results[0]["scores"]:
        lines.append(f"| {name} | {mean_of(known, name, 'aurc'):.3f} | {mean_of(known, name, 'accuracy_at_65'):.3f} "
                     f"| {mean_of(known, name, 'coverage'):.3f} | {mean_of(known, name, 'accuracy_accepted'):.3f} "
                     f"| {mean_of(open_set, name, 'aurc'):.3f} | {mean_of(open_set, name, 'auroc_unknown'):.3f} "
                     f"| {mean_of(open_set, name, 'unknown_to_review'):.3f} "
                     f"| {mean_of(open_set, name, 'coverage'):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the dataset root the runs were made from")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (model.keras with its history and config)")
    parser.add_argument("--out", type=Path, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    results = [study(run, args.data) for run in args.runs]
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
