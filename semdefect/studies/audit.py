"""Find images whose label the model disputes, for a person to review (workstation side).

Noisy labels cap what any model can score: a test image labelled `other` that shows a particle is an error for
every model, and a mislabelled training image teaches the wrong thing. To find them, every audited image gets
a prediction from a model that saw neither it nor any near-duplicate of it: the images are dealt into k folds
(whole near-duplicate groups, stratified by class, as `prepare_dataset.py split` deals splits); for each fold a
model is trained on the others (the next fold is its val split: trained on with the default `train.fit_on`,
held back for early stopping with `train.fit_on=train`) and scores the fold.

An image is a *suspect* when the model picks another class with at least the confidence that class's own images
get on average (the mean out-of-fold probability of their label; the per-class threshold of confident learning,
Northcutt et al. 2021): the model is as sure it is that class as it is about the class's typical image.
Suspects are ranked by how much more probability the model gives its choice than the label. Nothing is moved or
relabelled: the report is a list to look at, and the contact sheet the first page of it. Where images carry a
source (`crosscheck.sources` prefixes or its manifest), suspects are counted per source too: two sources that call
the same scene by different names (one fab's blank wafer is `clean`, another's is `cmp`) dispute each other's
labels, and that is a question for whoever defines the classes, not a labelling slip.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import DatasetError
from semdefect.board.files import atomic_path, write_json_atomic, write_text_atomic
from semdefect.config import Config
from semdefect.data.dataset import SPLITS
from semdefect.data.duplicates import DuplicateSettings
from semdefect.data.sheets import contact_sheet
from semdefect.data.splits import (
    ImageFile,
    assign_splits,
    duplicate_groups,
    exact_groups,
    near_duplicates,
    read_layout,
    scan_files,
)
from semdefect.studies.crosscheck import source_lookup

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    """The out-of-fold prediction for one audited image."""

    name: str                   # path relative to the dataset root, with '/'
    label: str
    fold: int
    probabilities: np.ndarray   # over the config's classes
    predicted: str = ""
    suspect: bool = False
    source: str = ""            # from the file name's prefix or the manifest; "" when it has none


def audit_dataset(cfg: Config) -> dict[str, Any]:
    """Out-of-fold predictions for the images of `audit.splits` of `data.root`; writes and returns the report."""
    root, acfg, classes = Path(cfg.data.root), cfg.audit, cfg.data.classes
    files = audited_files(root, acfg.splits, classes)
    settings = DuplicateSettings.from_config(cfg.prepare)
    scan_files(files, settings, cfg.data.max_image_pixels)
    unreadable = [f for f in files if f.error]
    files = [f for f in files if not f.error]
    folds = assign_folds(files, near_duplicates(files, settings), acfg.folds, acfg.seed)
    if len(set(folds)) < acfg.folds:
        raise DatasetError(f"{root}: {len(files)} readable images (near-duplicates count as one) cannot fill "
                           f"audit.folds={acfg.folds} folds; use fewer folds")
    out = Path(acfg.out)
    verdicts = []
    for fold in range(acfg.folds):
        scored, skipped = score_fold(cfg, files, folds, fold, out / "folds" / f"fold{fold}")
        verdicts += scored
        unreadable += skipped
    thresholds = flag_suspects(verdicts, classes)
    source_of = source_lookup(cfg)
    for v in verdicts:
        v.source = source_of(root / v.name) or ""
    report = summarise(verdicts, thresholds, classes, unreadable, audited_scope(files), cfg)
    write_outputs(out, report, verdicts, root, classes, acfg.sheet)
    return report


def audited_files(root: Path, splits: list[str], classes: list[str]) -> list[ImageFile]:
    """The images of the audited splits (of all of a folder of class folders), labelled by their class folder."""
    layout = read_layout(root, want_splits=None)
    files = [f for f in layout.files if f.split in splits or not layout.split_layout]
    unknown = sorted({f.label for f in files} - set(classes))
    if unknown:
        raise DatasetError(f"{root}: class folder(s) {', '.join(unknown)} are not among data.classes")
    counts = Counter(f.label for f in files)
    if len(counts) < 2:
        raise DatasetError(f"{root}: the audited images ({', '.join(audited_scope(files)) or 'none'}) hold "
                           f"{len(counts)} class(es); an audit needs images of two or more")
    return files


def audited_scope(files: list[ImageFile]) -> list[str]:
    """The splits the files come from, in split order; ['all'] for a folder of class folders."""
    return [s for s in SPLITS if any(f.split == s for f in files)] or (["all"] if files else [])


def assign_folds(files: list[ImageFile], pairs: list[tuple[int, int, float]], k: int, seed: int) -> list[int]:
    """The fold of each file: near-duplicates and byte-identical files share one, classes spread evenly."""
    groups = duplicate_groups(len(files), pairs, exact_groups(files))
    names = [str(i) for i in range(k)]
    return [int(fold) for fold in assign_splits([f.label for f in files], groups, [100 / k] * k, seed, names)]


def score_fold(cfg: Config, files: list[ImageFile], folds: list[int], fold: int,
               folder: Path) -> tuple[list[Verdict], list[ImageFile]]:
    """Train on every fold but `fold` (the next one as the val split); score `fold`'s images. Returns the
    verdicts and the fold's images the model could not read (named in the report, not lost)."""
    import keras

    from semdefect.evaluation.scoring import load_classifier, load_eval_data, predict_probabilities
    from semdefect.training.train import train

    k = cfg.audit.folds
    role = {fold: "test", (fold + 1) % k: "val"}
    shutil.rmtree(folder / "view", ignore_errors=True)  # links of an earlier audit into the same folder
    for i, f in enumerate(files):
        # index-prefixed names: two splits may hold files of the same name
        target = folder / "view" / role.get(folds[i], "train") / f.label / f"{i:06d}_{f.path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f.path.resolve())
    run_cfg = copy.deepcopy(cfg)
    run_cfg.data.root = str(folder / "view")
    run_cfg.train = dataclasses.replace(run_cfg.train, output=str(folder / "model.keras"), resume=False,
                                        tensorboard=False)
    keras.backend.clear_session()
    log.info("audit fold %d of %d: training on %d images", fold + 1, k,
             sum(1 for f in folds if f not in role))
    train(run_cfg)
    classifier = load_classifier(folder / "model.keras")
    loaded = load_eval_data(folder / "view", "test", classifier.class_names, classifier.prep)
    probabilities = predict_probabilities(classifier, loaded.x)
    verdicts, skipped = [], []
    for path, p in zip(loaded.paths, probabilities):
        f = files[view_index(path)]
        verdicts.append(Verdict(f.name, f.label, fold, p))
    for path, why in loaded.skipped:
        f = files[view_index(path)]
        skipped.append(ImageFile(f.path, f.name, f.label, f.split, error=why.removeprefix(f"{path}: ")))
    return verdicts, skipped


def view_index(path: Path) -> int:
    """The index into the audited files of a link in a fold's view (named '<index>_<file name>')."""
    return int(path.name.split("_", 1)[0])


def flag_suspects(verdicts: list[Verdict], classes: list[str]) -> dict[str, float]:
    """Set `predicted` and `suspect` on every verdict; returns the per-class thresholds used."""
    index = {c: i for i, c in enumerate(classes)}
    thresholds = {}
    for c in classes:
        own = [v.probabilities[index[c]] for v in verdicts if v.label == c]
        thresholds[c] = float(np.mean(own)) if own else 1.0  # a class with no images is never suggested
    for v in verdicts:
        best = int(np.argmax(v.probabilities))
        v.predicted = classes[best]
        v.suspect = v.predicted != v.label and float(v.probabilities[best]) >= thresholds[v.predicted]
    return thresholds


def label_probability(v: Verdict, classes: list[str]) -> float:
    return float(v.probabilities[classes.index(v.label)])


def margin(v: Verdict, classes: list[str]) -> float:
    """How much more probability the model gives its choice than the label: the ranking of suspects."""
    return float(v.probabilities.max()) - label_probability(v, classes)


def summarise(verdicts: list[Verdict], thresholds: dict[str, float], classes: list[str],
              unreadable: list[ImageFile], scope: list[str], cfg: Config) -> dict[str, Any]:
    suspects = sorted((v for v in verdicts if v.suspect), key=lambda v: -margin(v, classes))
    return {
        "dataset": cfg.data.root,
        "splits": scope,
        "folds": cfg.audit.folds,
        "images": len(verdicts),
        "out_of_fold_accuracy": float(np.mean([v.predicted == v.label for v in verdicts])) if verdicts else 0.0,
        "suspects": len(suspects),
        "thresholds": thresholds,
        "suspects_per_class": {c: sum(v.label == c for v in suspects) for c in classes},
        "images_per_class": {c: sum(v.label == c for v in verdicts) for c in classes},
        "confusions": disputes(suspects),
        "by_source": by_source(verdicts, suspects),
        "ranked": [{"file": v.name, "source": v.source, "label": v.label, "predicted": v.predicted,
                    "p_predicted": round(float(v.probabilities.max()), 4),
                    "p_label": round(label_probability(v, classes), 4)} for v in suspects],
        "unreadable": [{"file": f.name, "error": f.error} for f in unreadable],
    }


def by_source(verdicts: list[Verdict], suspects: list[Verdict]) -> dict[str, dict[str, Any]]:
    """Images, suspects and the most frequent disputes of each source ("" for images without one); {} when no
    image has a source."""
    if not any(v.source for v in verdicts):
        return {}
    return {source: {"images": sum(v.source == source for v in verdicts),
                     "suspects": sum(v.source == source for v in suspects),
                     "confusions": disputes([v for v in suspects if v.source == source])}
            for source in sorted({v.source for v in verdicts})}


def disputes(suspects: list[Verdict]) -> list[dict[str, Any]]:
    """How often each (label, model's choice) pair occurs among the suspects, most frequent first."""
    pairs = Counter((v.label, v.predicted) for v in suspects)
    return [{"label": a, "predicted": b, "suspects": n} for (a, b), n in pairs.most_common()]


def format_disputes(confusions: list[dict[str, Any]], top: int, sep: str = ", ") -> str:
    return sep.join(f"{c['label']} -> {c['predicted']} {c['suspects']}" for c in confusions[:top])


def write_outputs(out: Path, report: dict[str, Any], verdicts: list[Verdict], root: Path, classes: list[str],
                  sheet: int) -> None:
    write_json_atomic(out / "audit.json", report)
    write_text_atomic(out / "audit.csv", verdict_csv(verdicts, classes))
    write_text_atomic(out / "audit.md", format_report(report))
    if report["ranked"] and sheet:
        with atomic_path(out / "suspects.png") as tmp:
            contact_sheet([(root / r["file"], f"{i + 1}: {r['label']} -> {r['predicted']} {r['p_predicted']:.2f}")
                           for i, r in enumerate(report["ranked"][:sheet])]).save(tmp, format="PNG")
    else:  # an earlier audit's sheet would show images this one does not dispute
        (out / "suspects.png").unlink(missing_ok=True)


def verdict_csv(verdicts: list[Verdict], classes: list[str]) -> str:
    """Every audited image, suspects first (most disputed first), then the rest by name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "source", "label", "predicted", "p_predicted", "p_label", "suspect", "fold"])
    order = sorted(verdicts, key=lambda v: (not v.suspect, -margin(v, classes) if v.suspect else 0.0, v.name))
    for v in order:
        writer.writerow([v.name, v.source, v.label, v.predicted, f"{v.probabilities.max():.4f}",
                         f"{label_probability(v, classes):.4f}", int(v.suspect), v.fold])
    return buffer.getvalue()


def format_report(report: dict[str, Any], rows: int = 30) -> str:
    lines = [f"Label audit of {report['dataset']} ({', '.join(report['splits'])}): {report['images']} images, "
             f"{report['folds']} folds; out-of-fold accuracy {100 * report['out_of_fold_accuracy']:.1f} %.",
             f"{report['suspects']} suspects: images the model assigns to another class with at least that class's "
             "typical confidence. Review them by eye; the model is often wrong too.", "",
             "| class | images | suspects | threshold |", "|---|---:|---:|---:|"]
    for c, n in report["images_per_class"].items():
        if n:
            lines.append(f"| {c} | {n} | {report['suspects_per_class'][c]} | {report['thresholds'][c]:.2f} |")
    if report["confusions"]:
        lines += ["", f"Most frequent (label -> model's choice): {format_disputes(report['confusions'], 8)}."]
    if report["by_source"]:
        lines += ["", "By source (a dispute within one source is more likely a labelling slip):", ""]
    for source, counts in report["by_source"].items():
        top = f"; {format_disputes(counts['confusions'], 5, sep='; ')}" if counts["confusions"] else ""
        lines += [f"- {source or 'no source'}: {counts['images']} images, {counts['suspects']} suspects{top}."]
    if report["ranked"]:
        lines += ["", f"The {min(rows, len(report['ranked']))} most disputed (all in audit.csv):", "",
                  "| file | label | model's choice | its probability | the label's |", "|---|---|---|---:|---:|"]
        lines += [f"| {r['file']} | {r['label']} | {r['predicted']} | {r['p_predicted']:.2f} | {r['p_label']:.2f} |"
                  for r in report["ranked"][:rows]]
    if report["unreadable"]:
        lines += ["", f"Not audited, unreadable: {', '.join(u['file'] for u in report['unreadable'])}."]
    return "\n".join(lines) + "\n"
