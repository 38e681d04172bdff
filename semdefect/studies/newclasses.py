"""The new-classes protocol: how well `adapt_model.py` teaches a trained model classes it never saw (workstation side).

Each draw leaves `crosscheck.new_classes` classes out of training (drawn with a fixed seed per draw among the
classes with at least a quarter of the mean class's training images: a rare class has too few test images to measure
it on); a model is trained on the rest, per seed. It is then
adapted with `--classes union`, from `crosscheck.shots` labelled training images per class, the left-out ones
included: chosen at random per class (a person who sorted that many of each), or the same budget picked by
`select_images`' code from every training image without looking at labels (a person who labels what it picks). Each
adapted model is scored on the test images of the new classes and of the known ones; the known ones also before
adapting. Runs are kept and reused like the other protocols' (`crosscheck.reuse`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.files import write_json_atomic, write_text_atomic
from semdefect.config import Config
from semdefect.data.dataset import SPLITS, LoadedSplit, list_labelled_files, split_folder
from semdefect.studies.adaptation import digest, link_folder

log = logging.getLogger(__name__)

PICKS = ("random", "picked")


def draws(cfg: Config) -> list[list[str]]:
    """The left-out classes of each draw, in the configured class order."""
    files = list_labelled_files(split_folder(Path(cfg.data.root), "train"), cfg.data.classes)
    counts = np.bincount(files.labels, minlength=len(cfg.data.classes))
    candidates = [c for c, n in zip(cfg.data.classes, counts) if n >= counts.mean() / 4]
    k = cfg.crosscheck.new_classes
    result = []
    for draw in range(1, cfg.crosscheck.draws + 1):
        chosen = set(np.random.default_rng([draw, 30]).choice(candidates, k, replace=False).tolist())
        result.append([c for c in cfg.data.classes if c in chosen])
    return result


def make_view(root: Path, classes: list[str], left_out: list[str], folder: Path) -> Path:
    """Symlinks: train and val without the left-out classes, test with every class."""
    shutil.rmtree(folder, ignore_errors=True)
    for split in SPLITS:
        listed = list_labelled_files(split_folder(root, split), classes)
        for path, label in zip(listed.paths, listed.labels):
            if split != "test" and classes[label] in left_out:
                continue
            target = folder / split / classes[label] / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    return folder


def labelled_images(pick: str, base_model: Path, root: Path, classes: list[str], shots: int) -> list[tuple[Path, str]]:
    """`shots` labelled training images per class: at random per class, or `shots` x classes picked by
    select_images' code from all training images (then labelled with their true class, as a person would)."""
    from semdefect.adaptation.select import describe
    from semdefect.adaptation.select import pick as pick_images
    from semdefect.studies.crosscheck import few_shot_sample

    train = list_labelled_files(split_folder(root, "train"), classes)
    pool = list(zip(train.paths, train.labels))
    if pick == "random":
        chosen = few_shot_sample(pool, shots)
    else:
        described, _ = describe(base_model, [p for p, _ in pool])
        label_of = dict(pool)
        chosen = [(described.paths[i], label_of[described.paths[i]])
                  for i in pick_images(described, shots * len(classes))[0]]
    return [(path, classes[label]) for path, label in chosen]


def run_new_classes(cfg: Config) -> dict[str, Any]:
    """Train each draw's model per seed, adapt it both ways, score; returns the results (also JSON and Markdown)."""
    import keras

    from semdefect.adaptation.adapt import adapt
    from semdefect.adaptation.labels import from_folders
    from semdefect.evaluation.scoring import load_classifier, load_eval_data
    from semdefect.studies.crosscheck import finished_run, run_settings, slug, view_fingerprint
    from semdefect.training.train import train

    ccfg, root, classes = cfg.crosscheck, Path(cfg.data.root), cfg.data.classes
    out = Path(ccfg.out)
    results: dict[str, Any] = {"leave_out": "new_classes", "new_classes": ccfg.new_classes, "shots": ccfg.shots,
                               "seeds": ccfg.seeds, "rows": []}
    for left_out in draws(cfg):
        name = "without " + ", ".join(left_out)
        view = make_view(root, classes, left_out, out / "views" / slug(name))
        known = [c for c in classes if c not in left_out]
        runs: dict[str, list[dict[str, Any]]] = {pick: [] for pick in PICKS}
        before = []
        for seed in ccfg.seeds:
            run_cfg = copy.deepcopy(cfg)
            run_dir = out / "runs" / slug(name) / f"seed{seed}"
            run_cfg.data.root, run_cfg.data.classes = str(view), known
            run_cfg.train = dataclasses.replace(run_cfg.train, seed=seed, output=str(run_dir / "model.keras"),
                                                resume=False, tensorboard=False)
            settings = run_settings(run_cfg, view_fingerprint(view))
            base_metrics = finished_run(run_dir, settings) if ccfg.reuse else None
            if base_metrics is None:
                (run_dir / "run.json").unlink(missing_ok=True)
                keras.backend.clear_session()
                train(run_cfg)
                base = load_classifier(run_dir / "model.keras")
                test = load_eval_data(view, "test", classes, base.prep)
                is_new = np.isin(np.asarray(classes)[test.y], left_out)
                base_metrics = {"known_accuracy": accuracy_by_name(base, test, classes, ~is_new)}
                write_json_atomic(run_dir / "metrics.json", base_metrics)
                write_json_atomic(run_dir / "run.json", settings)
            before.append(base_metrics["known_accuracy"])
            for pick in PICKS:
                adapt_dir = out / "runs" / slug(name) / f"adapted_{pick}" / f"seed{seed}"
                adapt_settings = {"base": settings, "adapt": asdict(cfg.adapt), "pick": pick, "shots": ccfg.shots}
                metrics = finished_run(adapt_dir, adapt_settings) if ccfg.reuse else None
                if metrics is None:
                    (adapt_dir / "run.json").unlink(missing_ok=True)
                    keras.backend.clear_session()
                    chosen = labelled_images(pick, run_dir / "model.keras", root, classes, ccfg.shots)
                    labelled = link_folder(adapt_dir / "labelled", chosen)
                    report = adapt(run_dir / "model.keras", adapt_dir / "model.keras", from_folders(labelled),
                                   "union", view, None, cfg)
                    adapted = load_classifier(adapt_dir / "model.keras")
                    test = load_eval_data(view, "test", classes, adapted.prep)
                    is_new = np.isin(np.asarray(classes)[test.y], left_out)
                    metrics = {"new_accuracy": accuracy_by_name(adapted, test, classes, is_new),
                               "known_accuracy": accuracy_by_name(adapted, test, classes, ~is_new),
                               "labelled": len(chosen), "labelled_new": sum(c in left_out for _, c in chosen),
                               "labelled_digest": digest([str(p) for p, _ in chosen]),
                               "seconds": report["seconds"]}
                    write_json_atomic(adapt_dir / "metrics.json", metrics)
                    write_json_atomic(adapt_dir / "run.json", adapt_settings)
                runs[pick].append(metrics)
                log.info("%s, seed %d, %s: new classes %.1f%%, known %.1f%% (before %.1f%%)", name, seed, pick,
                         100 * metrics["new_accuracy"], 100 * metrics["known_accuracy"], 100 * before[-1])
        row: dict[str, Any] = {"name": name, "left_out": left_out, "known_before_mean": float(np.mean(before))}
        for pick in PICKS:
            for key in ("new_accuracy", "known_accuracy", "seconds", "labelled_new"):
                values = [m[key] for m in runs[pick]]
                row[f"{pick}_{key}_mean"] = float(np.mean(values))
                row[f"{pick}_{key}_std"] = float(np.std(values))
        results["rows"].append(row)
    for pick in PICKS:
        for key in ("new_accuracy", "known_accuracy"):
            results[f"mean_{pick}_{key}"] = float(np.mean([r[f"{pick}_{key}_mean"] for r in results["rows"]]))
    results["mean_known_before"] = float(np.mean([r["known_before_mean"] for r in results["rows"]]))
    write_json_atomic(out / "crosscheck.json", results)
    write_text_atomic(out / "crosscheck.md", format_new_classes_table(results))
    return results


def accuracy_by_name(classifier: Any, images: LoadedSplit, classes: list[str], mask: np.ndarray) -> float:
    """The share of the masked images whose predicted class name is their class name (`images.y` indexes
    `classes`; the model may answer other classes, in another order)."""
    from semdefect.evaluation.scoring import predict_scored

    if not mask.any():
        return float("nan")
    predicted = np.asarray(classifier.class_names)[predict_scored(classifier, images.x[mask])[0].argmax(axis=1)]
    return float(np.mean(predicted == np.asarray(classes)[images.y[mask]]))


def format_new_classes_table(results: dict[str, Any]) -> str:
    shots = results["shots"]
    lines = [f"New classes: each row trains without {results['new_classes']} classes, then adapt_model.py "
             f"(--classes union) teaches them from {shots} labelled training images per class, every class included: "
             f"chosen at random per class, or the same budget picked by select_images.py without labels. Accuracy "
             f"on the new classes' and the known classes' test images; known before = the model before adapting. "
             f"Mean ± spread over seeds {results['seeds']}.", "",
             "| left out | known before | random: new | random: known | picked: new | picked: known "
             "| picked: labelled of new classes | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {', '.join(r['left_out'])} | {100 * r['known_before_mean']:.1f} % "
                     f"| {100 * r['random_new_accuracy_mean']:.1f} ± {100 * r['random_new_accuracy_std']:.1f} % "
                     f"| {100 * r['random_known_accuracy_mean']:.1f} % "
                     f"| {100 * r['picked_new_accuracy_mean']:.1f} ± {100 * r['picked_new_accuracy_std']:.1f} % "
                     f"| {100 * r['picked_known_accuracy_mean']:.1f} % | {r['picked_labelled_new_mean']:.1f} "
                     f"| {r['random_seconds_mean']:.0f} / {r['picked_seconds_mean']:.0f} |")
    lines += ["", f"Mean over the draws: new classes {100 * results['mean_random_new_accuracy']:.1f} % (random), "
                  f"{100 * results['mean_picked_new_accuracy']:.1f} % (picked); known classes "
                  f"{100 * results['mean_known_before']:.1f} % before, "
                  f"{100 * results['mean_random_known_accuracy']:.1f} % / "
                  f"{100 * results['mean_picked_known_accuracy']:.1f} % after.", ""]
    return "\n".join(lines)
