"""Compare ways to choose which images of a new source to label: how well the labelled picks stand for the source.
The figures that chose select_images.py's method (docs/new-fab.md).

Input: the leave-one-source-out runs of `make crosscheck` (`<out>/runs/<trained on> -> <held out>/seedS`). For
each, a budget of `--per-class` x the shared classes is picked from the held-out source's training images of the
shared classes, by each method below, on the run's model; a pick's label is its true class (what a person would
give it). Figures: how many shared classes the picks reach, and the share of the held-out source's test images
whose nearest pick (cosine similarity of the model's pooled features) has their class.

Methods: random per class (k random images of each class: needs the labels first, so a reference), random, least
sure (the lowest review scores), k-center greedy (each pick the image farthest from those picked), k-center weighted
by uncertainty (select_images.py's first version), TypiClust (the densest image of each k-means group) and k-means
centres (the image nearest each k-means centre: select_images.py).

usage: python benchmarks/bench_picks.py --data ../shared/data/sem-public [--crosscheck models/crosscheck]
                                        [--per-class 5] [--seeds 1] [--out picks.json]
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

from semdefect.adaptation.select import Pool, describe, pick
from semdefect.board.files import write_json_atomic
from semdefect.config import load_config
from semdefect.data.dataset import list_labelled_files, split_folder
from semdefect.studies.crosscheck import few_shot_sample, slug, source_lookup


def k_center(pool: Pool, budget: int, weight: np.ndarray | None = None) -> list[int]:
    """Greedy k-center on cosine distance from the least sure image; `weight` scales each image's distance."""
    weight = np.ones(len(pool.paths)) if weight is None else weight
    chosen = [int(np.argmin(pool.scores))]
    distance = 1.0 - pool.features @ pool.features[chosen[0]]
    while len(chosen) < budget:
        gain = distance * weight
        gain[chosen] = -np.inf
        chosen.append(int(np.argmax(gain)))
        distance = np.minimum(distance, 1.0 - pool.features @ pool.features[chosen[-1]])
    return chosen


def typiclust(pool: Pool, budget: int, neighbours: int = 20) -> list[int]:
    """The densest image (highest inverse mean distance to its nearest neighbours in its group) of each of `budget`
    k-means groups."""
    from sklearn.cluster import KMeans

    groups = KMeans(budget, n_init=3, random_state=0).fit(pool.features).labels_
    chosen = []
    for group in range(budget):
        members = np.flatnonzero(groups == group)
        if len(members) < 3:
            chosen.append(int(members[0]))
            continue
        similar = np.sort(pool.features[members] @ pool.features[members].T, axis=1)[:, ::-1]
        nearest = similar[:, 1:min(neighbours, len(members) - 1) + 1]
        chosen.append(int(members[np.argmax(1.0 / (1.0 - nearest.mean(axis=1) + 1e-6))]))
    return chosen


Method = Callable[[Pool, int, np.ndarray], list[int]]
METHODS: dict[str, Method] = {
    "random per class (reference: needs the labels)": lambda pool, budget, labels: [
        pool.paths.index(p) for p, _ in few_shot_sample(list(zip(pool.paths, labels.tolist())),
                                                        budget // len(set(labels.tolist())))],
    "random": lambda pool, budget, labels: np.random.default_rng(0).permutation(len(pool.paths))[:budget].tolist(),
    "least sure": lambda pool, budget, labels: np.argsort(pool.scores, kind="stable")[:budget].tolist(),
    "k-center": lambda pool, budget, labels: k_center(pool, budget),
    "k-center weighted by uncertainty (first version)": lambda pool, budget, labels: k_center(
        pool, budget, 1.5 - pool.scores),
    "TypiClust": lambda pool, budget, labels: typiclust(pool, budget),
    "k-means centres (select_images.py)": lambda pool, budget, labels: pick(pool, budget)[0],
}


def figures(pool: Pool, labels: np.ndarray, chosen: list[int], test: Pool, test_labels: np.ndarray) -> dict[str, Any]:
    nearest = np.argmax(test.features @ pool.features[chosen].T, axis=1)
    return {"classes_reached": len(set(labels[chosen].tolist())),
            "nearest_pick_right": float(np.mean(labels[chosen][nearest] == test_labels))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the dataset root the protocol ran on")
    parser.add_argument("--crosscheck", type=Path, default=Path("models/crosscheck"), help="the protocol's folder")
    parser.add_argument("--per-class", type=int, default=5, help="budget per shared class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="the protocol's training seeds to use")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args(argv)
    cfg = load_config(None, [f"data.root={args.data}"])
    protocol = json.loads((args.crosscheck / "crosscheck.json").read_text())
    classes, sources = cfg.data.classes, protocol["sources"]
    # the classes each held-out source is tested on (protocols before three sources: one list for both)
    tested = protocol.get("test_classes") or {s: protocol["shared_classes"] for s in sources}
    source_of = source_lookup(cfg)
    train = list_labelled_files(split_folder(args.data, "train"), classes)
    runs = []
    for held_out in sources:
        row = f"{'+'.join(s for s in sources if s != held_out)} -> {held_out}"
        shared = set(tested[held_out])
        label_of = {p: y for p, y in zip(train.paths, train.labels)
                    if source_of(p) == held_out and classes[y] in shared}
        tests = list_labelled_files(args.crosscheck / "views" / slug(row) / "test", classes)
        test_label = dict(zip(tests.paths, tests.labels))
        for seed in args.seeds:
            model = args.crosscheck / "runs" / slug(row) / f"seed{seed}" / "model.keras"
            pool, _ = describe(model, sorted(label_of))
            test, _ = describe(model, tests.paths)
            labels = np.array([label_of[p] for p in pool.paths])
            test_labels = np.array([test_label[p] for p in test.paths])
            budget = args.per_class * len(shared)
            run: dict[str, Any] = {"row": row, "seed": seed, "budget": budget, "pool": len(pool.paths),
                                   "methods": {}}
            for name, method in METHODS.items():
                run["methods"][name] = figures(pool, labels, method(pool, budget, labels), test, test_labels)
                print(f"{row}, seed {seed}, {name}: {run['methods'][name]}", flush=True)
            runs.append(run)
    mean = {name: {key: float(np.mean([r["methods"][name][key] for r in runs])) for key in runs[0]["methods"][name]}
            for name in METHODS}
    result = {"per_class": args.per_class, "seeds": args.seeds, "runs": runs, "mean": mean}
    if args.out:
        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
