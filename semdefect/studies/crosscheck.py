"""The evaluation protocol: in-distribution test split next to leave-one-source-out (workstation side).

A model that scores well on its own test split can still have learned its source's imaging style instead of
the defects. So, besides training on everything and testing on the test split, train on one source only (its
train and val splits, as `train.fit_on` says) and test on the *other* source's test split, on the classes both
sources have. Sources are told apart by a file-name prefix (`crosscheck.sources`) or a manifest column.
Optional few-shot rows (`crosscheck.few_shot`) add k labelled training images per class of the held-out source:
how much a handful of labelled images from a new fab buys. With `crosscheck.leave_out=classes` the protocol is the
open-set one instead: each row leaves one class out of training and asks how well the model's review score tells
that class's test images (a defect type it was never taught) from the known classes' (AUROC), and, at the model's
review threshold, how many of them go to review while the known ones are accepted; each open-set model is also
exported to FP32 ONNX and quantized to INT8, and those files are scored the same way. Every row is trained with several
seeds; the table reports mean and spread. A finished run is kept (`crosscheck.reuse`) while its settings and images
stay the same, so a protocol stopped after an hour goes on where it stopped.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import ConfigError, DatasetError
from semdefect.board.files import write_json_atomic, write_text_atomic
from semdefect.board.runtime import Classifier
from semdefect.config import Config
from semdefect.data.dataset import SPLITS, list_labelled_files, split_folder

log = logging.getLogger(__name__)

SourceOf = Callable[[Path], str | None]  # an image's path -> its source's name, None when it has none


@dataclass(frozen=True)
class Row:
    """One line of the protocol: train on `train_sources`, test on `test_sources`' test split."""

    name: str
    train_sources: tuple[str, ...] | None  # None: every image
    test_sources: tuple[str, ...] | None
    few_shot: int = 0  # training images per shared class taken from the test sources' train split
    unknown_class: str | None = None  # open-set rows: the class left out of training, to be recognised as unknown


def source_lookup(cfg: Config) -> SourceOf:
    """A function path -> source name (or None), from the manifest if given, else from the file-name prefixes."""
    ccfg, root = cfg.crosscheck, Path(cfg.data.root)
    if ccfg.manifest:
        manifest = Path(ccfg.manifest)
        try:
            with manifest.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except OSError as exc:
            raise ConfigError(f"crosscheck.manifest {manifest}: {exc.strerror or exc}") from None
        column = ccfg.manifest_column
        if not rows or "file" not in rows[0] or column not in rows[0]:
            raise ConfigError(f"crosscheck.manifest {manifest}: needs columns 'file' and '{column}'")
        table = {os.path.normpath(root / row["file"]): row[column] for row in rows}
        return lambda path: table.get(os.path.normpath(path))
    prefixes = ccfg.sources
    return lambda path: next((p.rstrip("_-") for p in prefixes if Path(path).name.startswith(p)), None)


def protocol_rows(sources: list[str], few_shot: tuple[int, ...] | list[int] = ()) -> list[Row]:
    rows = [Row("all sources -> test split", None, None)]
    for k in [0, *few_shot]:
        for held_out in sources:
            trained_on = tuple(s for s in sources if s != held_out)
            extra = f" + {k} {held_out}/class" if k else ""
            rows.append(Row(f"{'+'.join(trained_on)}{extra} -> {held_out}", trained_on, (held_out,), k))
    return rows


def open_set_rows(classes: list[str]) -> list[Row]:
    return [Row(f"without {name}", None, None, unknown_class=name) for name in classes]


def make_view(cfg: Config, row: Row, source_of: SourceOf, folder: Path, shared: set[str]) -> tuple[Path, int]:
    """A dataset folder of symlinks holding only the row's images; returns it and its number of test images.
    The folder is rebuilt from scratch, so links left by an earlier protocol on other images go.

    Leave-one-source-out rows test on the held-out source's images of the `shared` classes. A few-shot row also
    trains on `row.few_shot` of the held-out source's training images per shared class; the held-out source's val
    images stay out, as a user with a handful of labelled images has none to spare for a val split. An open-set row
    holds every image but those of its unknown class.
    """
    root, classes = Path(cfg.data.root), cfg.data.classes
    shutil.rmtree(folder, ignore_errors=True)
    n_test = 0
    for split in SPLITS:
        listed = list_labelled_files(split_folder(root, split), classes)
        files = [(p, y) for p, y in zip(listed.paths, listed.labels) if classes[y] != row.unknown_class]
        held_out_files = [(p, y) for p, y in files if row.test_sources is not None
                          and source_of(p) in row.test_sources and classes[y] in shared]
        if split == "test":
            chosen = files if row.test_sources is None else held_out_files
        else:
            chosen = [(p, y) for p, y in files if row.train_sources is None or source_of(p) in row.train_sources]
        if split == "train" and row.few_shot:
            chosen = chosen + few_shot_sample(held_out_files, row.few_shot)
        if split == "test":
            n_test = len(chosen)
        for path, label in chosen:
            target = folder / split / classes[label] / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    return folder, n_test


def view_fingerprint(view: Path) -> str:
    """A digest of which images a view holds, under which split and class, and of each file's bytes: a run is
    reused only on the same images. Contents, not file times or paths, so a dataset copied, restored or moved
    elsewhere keeps its finished runs."""
    digest = hashlib.sha256()
    for link in sorted(view.rglob("*")):
        if link.is_symlink():
            try:
                content = hashlib.sha256(link.read_bytes()).hexdigest()
            except OSError:  # gone since the view was made: not the same images
                content = "missing"
            digest.update(f"{link.relative_to(view).as_posix()}\t{content}\n".encode())
    return digest.hexdigest()


def run_settings(run_cfg: Config, images: str) -> dict[str, Any]:
    """What decides a run's result: the sections training and scoring read, and the view's images. Not where the view
    and the model are (`images` says what the view holds), so a moved `crosscheck.out` keeps its runs. JSON-normal,
    so a saved copy compares equal."""
    sections = run_cfg.to_dict()
    decisive = ("data", "model", "train", "review")
    settings: dict[str, Any] = json.loads(json.dumps({key: sections[key] for key in decisive}
                                                     | {"images": images}))
    del settings["data"]["root"], settings["train"]["output"]
    return settings


def finished_run(run_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of a run in `run_dir` that finished with these settings, else None."""
    try:
        saved = json.loads((run_dir / "run.json").read_text())
        metrics: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if saved == settings else None


def few_shot_sample(files: list[tuple[Path, int]], k: int) -> list[tuple[Path, int]]:
    """k files per label (all of a label that has fewer), drawn with a fixed seed; a larger k keeps a smaller k's."""
    rng, chosen = random.Random(0), []
    for label in sorted({y for _, y in files}):
        paths = sorted(p for p, y in files if y == label)
        rng.shuffle(paths)
        chosen += [(p, label) for p in paths[:k]]
    return chosen


def classes_by_source(cfg: Config, source_of: SourceOf, sources: list[str]) -> dict[str, set[str]]:
    """Which classes each source has any training image of."""
    root, classes = Path(cfg.data.root), cfg.data.classes
    found: dict[str, set[str]] = {s: set() for s in sources}
    for split in ("train", "val"):
        files = list_labelled_files(split_folder(root, split), classes)
        for path, label in zip(files.paths, files.labels):
            source = source_of(path)
            if source in found:
                found[source].add(classes[label])
    return found


def run_protocol(cfg: Config) -> dict[str, Any]:
    """Train and score every row with every seed; returns the results (also written as JSON and Markdown)."""
    import keras

    from semdefect.evaluation.scoring import load_classifier, load_eval_data, score
    from semdefect.training.train import train

    if cfg.crosscheck.leave_out == "new_classes":
        from semdefect.studies.newclasses import run_new_classes

        return run_new_classes(cfg)
    open_set = cfg.crosscheck.leave_out == "classes"
    source_of = source_lookup(cfg)
    out = Path(cfg.crosscheck.out)
    if open_set:
        test_images = images_by_class(cfg, "test")
        rows = open_set_rows([c for c in cfg.data.classes if c in test_images])
        testable: dict[str, set[str]] = {}  # no held-out source: every row tests every class
        results: dict[str, Any] = {"leave_out": "classes", "classes": [r.unknown_class for r in rows],
                                   "seeds": cfg.crosscheck.seeds, "rows": []}
    else:
        sources = sources_of_root(cfg, source_of)
        if len(sources) < 2:
            raise DatasetError(f"{cfg.data.root}: found {len(sources)} image source(s) by "
                               + ("manifest" if cfg.crosscheck.manifest else f"prefixes {cfg.crosscheck.sources}")
                               + "; leave-one-source-out needs two or more")
        testable = testable_classes(classes_by_source(cfg, source_of, sources))
        rows = protocol_rows(sources, cfg.crosscheck.few_shot)
        results = {"leave_out": "sources", "sources": sources,
                   "test_classes": {s: sorted(c, key=cfg.data.classes.index) for s, c in testable.items()},
                   "seeds": cfg.crosscheck.seeds, "rows": []}
    for row in rows:
        shared = testable[row.test_sources[0]] if row.test_sources else set(cfg.data.classes)
        view, n_test = make_view(cfg, row, source_of, out / "views" / slug(row.name), shared)
        images = view_fingerprint(view)
        runs = []
        for seed in cfg.crosscheck.seeds:
            run_cfg = copy.deepcopy(cfg)
            run_dir = out / "runs" / slug(row.name) / f"seed{seed}"
            run_cfg.data.root = str(view)
            if row.unknown_class:
                run_cfg.data.classes = [c for c in cfg.data.classes if c != row.unknown_class]
            run_cfg.train = dataclasses.replace(run_cfg.train, seed=seed, output=str(run_dir / "model.keras"),
                                                resume=False, tensorboard=False)
            settings = run_settings(run_cfg, images)
            metrics = finished_run(run_dir, settings) if cfg.crosscheck.reuse else None
            if metrics is not None:
                log.info("%s, seed %d: kept the finished run in %s (same settings and images)", row.name, seed, run_dir)
            else:
                (run_dir / "run.json").unlink(missing_ok=True)  # a run stopped from here on is not taken as finished
                keras.backend.clear_session()
                train(run_cfg)
                classifier = load_classifier(run_dir / "model.keras")
                test = load_eval_data(view, "test", classifier.class_names, classifier.prep)
                scored = score(classifier, test)
                metrics = scored.metrics
                if row.test_sources is None and not row.unknown_class:
                    metrics["per_source"] = accuracy_by_source(test.paths, scored.probabilities.argmax(1) == test.y,
                                                               source_of)
                if row.unknown_class:
                    metrics["open_set"] = open_set_metrics(classifier, scored.scores,
                                                           test_images[row.unknown_class])
                write_json_atomic(run_dir / "metrics.json", metrics)
                write_json_atomic(run_dir / "run.json", settings)  # last: its presence marks the run finished
            if row.unknown_class and "open_set_onnx" not in metrics:  # a new run, or one kept from before them
                metrics["open_set_onnx"] = exported_open_set(run_cfg, run_dir, test_images[row.unknown_class])
                write_json_atomic(run_dir / "metrics.json", metrics)
            runs.append(metrics)
            log.info("%s, seed %d: accuracy %.2f%%", row.name, seed, 100 * metrics["accuracy"])
        results["rows"].append(summarise(row, runs, n_test))
    if open_set:
        for prefix in ("", "fp32_", "int8_"):
            for key in ("auroc", "unknown_to_review", "known_accepted"):
                results[f"mean_{prefix}{key}"] = float(np.mean([r[f"{prefix}{key}_mean"] for r in results["rows"]]))
    else:
        held_out_rows = [r for r in results["rows"] if r["train_sources"] is not None]
        results["mean_leave_one_source_out_accuracy"] = float(np.mean(
            [r["accuracy_mean"] for r in held_out_rows if not r["few_shot"]]))
        results["mean_few_shot_accuracy"] = {str(k): float(np.mean([r["accuracy_mean"] for r in held_out_rows
                                                                    if r["few_shot"] == k]))
                                             for k in cfg.crosscheck.few_shot}
        if cfg.crosscheck.adapt:
            from semdefect.studies.adaptation import mean_by_variant, run_adaptation

            results["adapt_rows"] = run_adaptation(cfg, out, source_of, testable)
            results["mean_adapt_accuracy"] = mean_by_variant(results["adapt_rows"])
    write_json_atomic(out / "crosscheck.json", results)
    write_text_atomic(out / "crosscheck.md", format_table(results))
    return results


def testable_classes(have: dict[str, set[str]]) -> dict[str, set[str]]:
    """For each source, the classes a leave-one-source-out row tests it on: those it has that the other sources,
    together, have too (a class no training source has cannot be learnt)."""
    return {source: classes & set().union(*(c for s, c in have.items() if s != source))
            for source, classes in have.items()}


def sources_of_root(cfg: Config, source_of: SourceOf) -> list[str]:
    """The image sources found under data.root, by name."""
    return sorted({s for s in map(source_of, Path(cfg.data.root).rglob("*")) if s})


def images_by_class(cfg: Config, split: str) -> dict[str, list[Path]]:
    """The images of one split of data.root, by class name (classes without images left out)."""
    listed = list_labelled_files(split_folder(Path(cfg.data.root), split), cfg.data.classes)
    found: dict[str, list[Path]] = {}
    for path, label in zip(listed.paths, listed.labels):
        found.setdefault(cfg.data.classes[label], []).append(path)
    return found


def open_set_metrics(classifier: Classifier, known_scores: np.ndarray, unknown: list[Path]) -> dict[str, Any]:
    """How the review score of a model tells the images of a class it never learnt (`unknown`) from the known
    classes' test images: AUROC, and at the model's threshold the share of each that is sent to review/accepted."""
    from semdefect.data.dataset import LabelledFiles, load_files
    from semdefect.evaluation.scoring import predict_scored
    from semdefect.evaluation.selective import auroc

    loaded = load_files(LabelledFiles(unknown[0].parent, unknown, [0] * len(unknown)), classifier.prep)
    unknown_scores = predict_scored(classifier, loaded.x)[1]
    threshold = -np.inf if classifier.threshold is None else classifier.threshold
    return {"unknown_images": len(unknown_scores), "auroc": auroc(known_scores, unknown_scores),
            "unknown_to_review": float(np.mean(unknown_scores < threshold)),
            "known_accepted": float(np.mean(known_scores >= threshold))}


def exported_open_set(run_cfg: Config, run_dir: Path, unknown: list[Path]) -> dict[str, dict[str, Any]]:
    """The open-set figures of the run's model as the board gets it: exported to FP32 ONNX and quantized to INT8 by
    the stages' own functions and settings (INT8 calibrated on the run's val images), scored on the same images."""
    from semdefect.deploy.export import export_and_check
    from semdefect.deploy.quantize import quantize_and_compare
    from semdefect.evaluation.scoring import load_classifier, load_eval_data, score

    files = {"fp32": run_dir / "model.onnx", "int8": run_dir / "model.int8.onnx"}
    parity = export_and_check(run_dir / "model.keras", files["fp32"], run_cfg)
    if not parity["ok"]:
        log.warning("%s: the ONNX export differs from the .keras model by %.2g (limit %.2g)", run_dir,
                    parity["max_abs_diff"], parity["limit"])
    if not quantize_and_compare(files["fp32"], files["int8"], run_cfg)["ok"]:
        log.warning("%s: INT8 lost more accuracy than quantize.max_accuracy_drop allows", run_dir)
    classifiers = {name: load_classifier(path) for name, path in files.items()}
    test = load_eval_data(Path(run_cfg.data.root), "test", classifiers["fp32"].class_names, classifiers["fp32"].prep)
    figures = {}
    for name, classifier in classifiers.items():
        scored = score(classifier, test)
        figures[name] = {"accuracy": scored.metrics["accuracy"]} | open_set_metrics(classifier, scored.scores, unknown)
    return figures


def accuracy_by_source(paths: Sequence[Path], correct: np.ndarray, source_of: SourceOf) -> dict[str, dict[str, Any]]:
    """Accuracy and image count per source (test links are named as their targets, so the prefix is there)."""
    sources = np.array([source_of(p) or "" for p in paths])
    return {str(name): {"accuracy": float(correct[sources == name].mean()), "images": int(np.sum(sources == name))}
            for name in sorted(set(sources.tolist()))}


def summarise(row: Row, runs: list[dict[str, Any]], n_test: int) -> dict[str, Any]:
    accuracy = np.array([m["accuracy"] for m in runs])
    f1 = np.array([m["f1_macro"] for m in runs])
    recall = {c: float(np.mean([m["per_class"][c]["recall"] for m in runs]))
              for c, v in runs[0]["per_class"].items() if v["support"]}
    summary = {"name": row.name, "train_sources": row.train_sources, "test_sources": row.test_sources,
               "few_shot": row.few_shot, "unknown_class": row.unknown_class, "test_images": n_test,
               "accuracy_mean": float(accuracy.mean()), "accuracy_std": float(accuracy.std()),
               "accuracy_runs": accuracy.tolist(), "f1_macro_mean": float(f1.mean()), "f1_macro_std": float(f1.std()),
               "recall_per_class": recall}
    if all("per_source" in m for m in runs):
        summary["per_source"] = {name: {"accuracy_mean": float(np.mean([m["per_source"][name]["accuracy"]
                                                                        for m in runs])),
                                        "accuracy_std": float(np.std([m["per_source"][name]["accuracy"]
                                                                      for m in runs])),
                                        "images": info["images"]}
                                 for name, info in runs[0]["per_source"].items()}
    # what the review bin gives: the share accepted, and the accuracy on those (None where a run accepts nothing)
    selective = [m["selective"] for m in runs if "selective" in m]
    if selective:
        answered = [s["accuracy_accepted"] for s in selective if s["accuracy_accepted"] is not None]
        summary |= {"coverage_mean": float(np.mean([s["coverage"] for s in selective])),
                    "accuracy_accepted_mean": float(np.mean(answered)) if answered else None}
    if row.unknown_class:
        for key in ("auroc", "unknown_to_review", "known_accepted"):
            values = np.array([m["open_set"][key] for m in runs])
            summary |= {f"{key}_mean": float(values.mean()), f"{key}_std": float(values.std())}
        summary["unknown_images"] = runs[0]["open_set"]["unknown_images"]
        for model in ("fp32", "int8"):
            for key in ("accuracy", "auroc", "unknown_to_review", "known_accepted"):
                summary[f"{model}_{key}_mean"] = float(np.mean([m["open_set_onnx"][model][key] for m in runs]))
    return summary


def format_table(results: dict[str, Any]) -> str:
    if results.get("leave_out") == "classes":
        return format_open_set_table(results)
    if results.get("leave_out") == "new_classes":
        from semdefect.studies.newclasses import format_new_classes_table

        return format_new_classes_table(results)
    classes = [c for c in results["rows"][0]["recall_per_class"]]
    tested = "; ".join(f"{source}: {', '.join(names)}" for source, names in results["test_classes"].items())
    lines = [f"Seeds {results['seeds']}: mean ± standard deviation. Leave-one-source-out rows test a source on the "
             f"classes it has that the other sources have too ({tested}). Coverage: share of the test images the "
             "review bin accepts; accepted: accuracy on those.", "",
             "| train -> test | test images | accuracy | macro F1 | coverage | accepted | "
             + " | ".join(classes) + " |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(classes)]
    for r in results["rows"]:
        recalls = " | ".join(f"{r['recall_per_class'][c]:.2f}" if c in r["recall_per_class"] else "-" for c in classes)
        lines.append(f"| {r['name']} | {r['test_images']} | "
                     f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} % "
                     f"| {r['f1_macro_mean']:.3f} | {percent(r.get('coverage_mean'))} "
                     f"| {percent(r.get('accuracy_accepted_mean'))} | {recalls} |")
    per_source = results["rows"][0].get("per_source")
    if per_source:
        lines += ["", "All sources -> test split, by source: " + ", ".join(
            f"{name or 'no source'} {100 * v['accuracy_mean']:.1f} ± {100 * v['accuracy_std']:.1f} % "
            f"({v['images']} images)" for name, v in per_source.items()) + "."]
    lines += ["", f"Mean leave-one-source-out accuracy: {100 * results['mean_leave_one_source_out_accuracy']:.1f} %."]
    lines += [f"With {k} labelled training images per class of the held-out source: {100 * accuracy:.1f} % (mean)."
              for k, accuracy in results["mean_few_shot_accuracy"].items()]
    lines += ["Per-class columns are recall, averaged over seeds."]
    if results.get("adapt_rows"):
        lines += ["", "Adapted with adapt_model.py from the leave-one-source-out model above (k labelled training "
                      "images per shared class of the held-out source, chosen at random or by select_images.py; with "
                      "or without its unlabelled training images); the last column is the accuracy on the test images "
                      "of the source the model was trained on, before and after:", "",
                  "| adapted -> test | test images | accuracy | macro F1 | coverage | accepted "
                  "| own source before -> after |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['name']} | {r['test_images']} | "
                  f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} % "
                  f"| {r['f1_macro_mean']:.3f} | {percent(r.get('coverage_mean'))} "
                  f"| {percent(r.get('accuracy_accepted_mean'))} "
                  f"| {percent(r.get('own_source_accuracy_before'))} -> {percent(r.get('own_source_accuracy'))} |"
                  for r in results["adapt_rows"]]
        lines += ["", "Mean over the held-out sources: " + ", ".join(
            f"{name}: {100 * accuracy:.1f} %" for name, accuracy in results["mean_adapt_accuracy"].items()) + "."]
    return "\n".join(lines) + "\n"


def format_open_set_table(results: dict[str, Any]) -> str:
    lines = [f"Seeds {results['seeds']}: mean ± standard deviation. Each row trains without one class and tests on "
             "the test split: the known classes' images, and the left-out class's as unknown. AUROC: how well the "
             "review score ranks known above unknown (0.5 = chance); at the model's review threshold, the share of "
             "unknown images sent to review and of known images accepted. First the .keras model, then the same "
             "model exported and quantized to INT8 ONNX.", "",
             "| left out | unknown images | known accuracy | AUROC | unknown to review | known accepted "
             "| INT8: known accuracy | INT8: AUROC | INT8: unknown to review | INT8: known accepted |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['unknown_class']} | {r['unknown_images']} | {100 * r['accuracy_mean']:.1f} % "
                     f"| {r['auroc_mean']:.3f} ± {r['auroc_std']:.3f} | {percent(r['unknown_to_review_mean'])} "
                     f"| {percent(r['known_accepted_mean'])} | {percent(r['int8_accuracy_mean'])} "
                     f"| {r['int8_auroc_mean']:.3f} | {percent(r['int8_unknown_to_review_mean'])} "
                     f"| {percent(r['int8_known_accepted_mean'])} |")
    lines.append("")
    for prefix, model in (("", ".keras"), ("fp32_", "FP32 ONNX"), ("int8_", "INT8 ONNX")):
        lines.append(f"Mean over the classes, {model}: AUROC {results[f'mean_{prefix}auroc']:.3f}, unknown to review "
                     f"{percent(results[f'mean_{prefix}unknown_to_review'])}, "
                     f"known accepted {percent(results[f'mean_{prefix}known_accepted'])}.")
    return "\n".join(lines) + "\n"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")
