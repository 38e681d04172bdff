"""The adaptation rows of the protocol: a model trained on one source, adapted to the held-out one (workstation side).

For each leave-one-source-out row and seed, its trained model is the base; `adapt_model`'s code adapts it with k
labelled training images per shared class of the held-out source, chosen at random or by `select_images`' code (the
same budget: k x the shared classes), with and without the held-out source's unlabelled training images; and with
no labelled image, the unlabelled ones only. Each adapted model is scored on the held-out source's test images of
the shared classes, like its base row. `crosscheck.adapt` lists the k; the rows retrained from scratch with k
labelled images are the `crosscheck.few_shot` rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.files import write_json_atomic
from semdefect.config import Config
from semdefect.data.dataset import LabelledFiles, list_labelled_files, load_files, split_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptRow:
    """One adaptation row: the base row's model adapted to `held_out` with `k` labelled images per shared class."""

    name: str
    base_row: str
    held_out: str
    k: int
    pick: str | None  # random | picked (select_images); None with k = 0
    unlabelled: bool


def adaptation_rows(sources: list[str], ks: list[int]) -> list[AdaptRow]:
    rows = []
    for held_out in sources:
        trained_on = "+".join(s for s in sources if s != held_out)
        base = f"{trained_on} -> {held_out}"
        rows.append(AdaptRow(f"{trained_on} adapted, unlabelled {held_out} -> {held_out}", base, held_out, 0, None,
                             True))
        for k in ks:
            for pick in ("random", "picked"):
                for unlabelled in (False, True):
                    extra = f" + unlabelled {held_out}" if unlabelled else ""
                    rows.append(AdaptRow(f"{trained_on} adapted, {k} {pick} {held_out}/class{extra} -> {held_out}",
                                         base, held_out, k, pick, unlabelled))
    return rows


def link_folder(folder: Path, files: list[tuple[Path, str]]) -> Path:
    """A folder of class folders of symlinks to `files` ((path, class name)), made afresh."""
    shutil.rmtree(folder, ignore_errors=True)
    for path, name in files:
        target = folder / name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())
    return folder


def labelled_choice(row: AdaptRow, base_model: Path, pool: list[tuple[Path, int]], classes: list[str],
                    shared: set[str]) -> list[tuple[Path, str]]:
    """The row's labelled images from `pool` (the held-out source's training images of the shared classes)."""
    from semdefect.adaptation.select import describe, pick
    from semdefect.studies.crosscheck import few_shot_sample

    if row.pick == "random":
        chosen = few_shot_sample(pool, row.k)
    else:
        described, _ = describe(base_model, [p for p, _ in pool])
        label_of = dict(pool)
        chosen = [(described.paths[i], label_of[described.paths[i]]) for i in pick(described, row.k * len(shared))[0]]
    return [(path, classes[label]) for path, label in chosen]


def run_adaptation(cfg: Config, out: Path, source_of: Any, testable: dict[str, set[str]]) -> list[dict[str, Any]]:
    """Run every adaptation row with every seed (after their base rows); returns their summaries."""
    import keras

    from semdefect.adaptation.adapt import adapt
    from semdefect.adaptation.labels import from_folders
    from semdefect.evaluation.scoring import load_classifier, load_eval_data, score
    from semdefect.studies.crosscheck import Row, finished_run, slug, sources_of_root, summarise

    root, classes = Path(cfg.data.root), cfg.data.classes
    summaries = []
    train_files = list_labelled_files(split_folder(root, "train"), classes)
    test_files = list_labelled_files(split_folder(root, "test"), classes)
    before: dict[Path, float] = {}  # a base model's own-source accuracy, shared by the rows adapted from it
    for row in adaptation_rows(sources_of_root(cfg, source_of), cfg.crosscheck.adapt):
        of_source = [(p, y) for p, y in zip(train_files.paths, train_files.labels) if source_of(p) == row.held_out]
        shared = testable[row.held_out]  # the classes its base row tests it on
        pool = [(p, y) for p, y in of_source if classes[y] in shared]
        view = out / "views" / slug(row.base_row)
        own_tests = own_source_tests(test_files, source_of, row.held_out)
        runs, n_test = [], 0
        for seed in cfg.crosscheck.seeds:
            base_dir = out / "runs" / slug(row.base_row) / f"seed{seed}"
            run_dir = out / "runs" / slug(row.name) / f"seed{seed}"
            settings = {"base": json.loads((base_dir / "run.json").read_text()),
                        "adapt": asdict(cfg.adapt) | {"pseudo_labels": row.unlabelled},
                        "row": asdict(row), "pool": digest([str(p) for p, _ in of_source])}
            metrics = finished_run(run_dir, settings) if cfg.crosscheck.reuse else None
            if metrics is None:
                (run_dir / "run.json").unlink(missing_ok=True)
                keras.backend.clear_session()
                labelled = None
                if row.k:
                    chosen = labelled_choice(row, base_dir / "model.keras", pool, classes, shared)
                    labelled = link_folder(run_dir / "labelled", chosen)
                unlabelled = (link_folder(run_dir / "unlabelled", [(p, classes[y]) for p, y in of_source])
                              if row.unlabelled else None)
                # with labels too, the unlabelled images are used by the pseudo-labelled round, whatever the default
                row_cfg = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, pseudo_labels=row.unlabelled))
                adapt(base_dir / "model.keras", run_dir / "model.keras",
                      from_folders(labelled) if labelled else None, "union", view, unlabelled, row_cfg)
                classifier = load_classifier(run_dir / "model.keras")
                metrics = score(classifier, load_eval_data(view, "test", classifier.class_names,
                                                           classifier.prep)).metrics
                # what it kept: accuracy on the test images of the source it was trained on, before and after
                own = load_files(own_tests, classifier.prep)
                metrics["own_source_accuracy"] = accuracy(classifier, own)
                if base_dir not in before:
                    before[base_dir] = accuracy(load_classifier(base_dir / "model.keras"), own)
                metrics["own_source_accuracy_before"] = before[base_dir]
                write_json_atomic(run_dir / "metrics.json", metrics)
                write_json_atomic(run_dir / "run.json", settings)
            else:
                log.info("%s, seed %d: kept the finished run in %s", row.name, seed, run_dir)
            n_test = metrics["n_images"]
            runs.append(metrics)
            log.info("%s, seed %d: accuracy %.2f%%", row.name, seed, 100 * metrics["accuracy"])
        summary = summarise(Row(row.name, None, (row.held_out,), row.k), runs, n_test)
        summary |= {key: float(np.mean([m[key] for m in runs])) if all(key in m for m in runs) else None
                    for key in ("own_source_accuracy", "own_source_accuracy_before")}
        summaries.append(summary | {"adapt": {"pick": row.pick, "unlabelled": row.unlabelled, "k": row.k}})
    return summaries


def own_source_tests(tests: LabelledFiles, source_of: Any, held_out: str) -> LabelledFiles:
    """The test images of the sources a row's base model was trained on."""
    kept = [i for i, path in enumerate(tests.paths) if source_of(path) not in (None, held_out)]
    return LabelledFiles(tests.folder, [tests.paths[i] for i in kept], [tests.labels[i] for i in kept])


def accuracy(classifier: Any, images: Any) -> float:
    from semdefect.evaluation.scoring import predict_scored

    return float(np.mean(predict_scored(classifier, images.x)[0].argmax(axis=1) == images.y))


def digest(items: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()


def mean_by_variant(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean accuracy of each variant over the held-out sources, e.g. '5 picked + unlabelled'."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        a = r["adapt"]
        name = f"{a['k']} {a['pick']}" if a["k"] else "0"
        name += " + unlabelled" if a["unlabelled"] else ""
        groups.setdefault(name, []).append(r["accuracy_mean"])
    return {name: float(np.mean(values)) for name, values in groups.items()}
