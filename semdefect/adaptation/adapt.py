"""Fine-tune a trained model on a few labelled images of a new source, without a full retraining (workstation side).

The classifier starts from the trained weights and takes `adapt.epochs` short epochs over a mix of: the new source's
labelled images, repeated so that they make `adapt.new_share` of every epoch; up to `adapt.base_per_class` images per
class of the original training data, so that the model keeps what it knew; and, with `adapt.pseudo_labels`, the new
source's unlabelled images that the base model's review bin accepts, labelled with its answer. BatchNorm statistics
move to the new mix as the model trains. The review head's neighbour bank is rebuilt from the images the adapted
model was fitted on (labelled ones only); its temperature and threshold are carried over from the base model, as
there are no held-out labelled images of the new source to fit them on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import DatasetError, ImageError
from semdefect.board.files import find_images
from semdefect.board.images import Preprocess, load_image
from semdefect.config import Config
from semdefect.data.dataset import LabelledFiles, list_labelled_files, load_files, load_folder, split_folder

log = logging.getLogger(__name__)


@dataclass
class Images:
    """Preprocessed images with class indices: one part of the adaptation mix."""

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def empty(cls, size: int) -> Images:
        return cls(np.empty((0, size, size, 1), np.float32), np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.y)


def base_sample(root: Path, classes: list[str], prep: Preprocess, per_class: int, seed: int) -> Images:
    """At most `per_class` images of each class of a dataset root's train and val splits, drawn with `seed`; only
    those are read."""
    listed = [list_labelled_files(split_folder(root, split), classes) for split in ("train", "val")]
    paths = [p for files in listed for p in files.paths]
    labels = np.array([y for files in listed for y in files.labels], dtype=np.int64)
    rng = np.random.default_rng([seed, 21])
    chosen = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                     for c in np.unique(labels)]))
    loaded = load_files(LabelledFiles(root, [paths[i] for i in chosen], labels[chosen].tolist()), prep)
    return Images(loaded.x, loaded.y)


def load_unlabelled(folder: Path, prep: Preprocess, exclude: set[Path]) -> tuple[np.ndarray, list[Path]]:
    """Every readable image under `folder` but those in `exclude` (already labelled); unreadable ones are skipped,
    named."""
    files, problems = find_images([folder])
    for path, reason in problems:
        log.warning("skipping %s: %s", path, reason)
    arrays, kept = [], []
    for path in files:
        if path.resolve() in exclude:
            continue
        try:
            arrays.append(load_image(path, prep))
            kept.append(path)
        except ImageError as exc:
            log.warning("skipping %s", exc)
    if not arrays:
        raise DatasetError(f"--unlabelled {folder}: no readable image" + (" that is not labelled" if exclude else ""))
    return np.stack(arrays), kept


def pseudo_labelled(base: Any, x: np.ndarray) -> Images:
    """The unlabelled images the base model's review bin accepts, labelled with its answer (all its answers when it
    has no review bin)."""
    from semdefect.board.review import decisions
    from semdefect.evaluation.scoring import predict_scored

    probabilities, scores = predict_scored(base, x)
    accepted = np.array([d == "accept" for d in decisions(scores, base.threshold)], dtype=bool)
    return Images(x[accepted], probabilities.argmax(axis=1)[accepted])


def adapt(base_path: Path, output: Path, labelled: Path | None, base_data: Path | None, unlabelled: Path | None,
          cfg: Config) -> dict[str, Any]:
    """Adapt the model in `base_path` and write it to `output`; returns what was used and done."""
    import keras

    from semdefect.training.model import KerasClassifier, classifier_part, save_model, with_agreement
    from semdefect.training.train import BatchSequence, onehot

    started = time.perf_counter()
    acfg = cfg.adapt
    keras.utils.set_random_seed(acfg.seed)
    base = KerasClassifier(base_path)
    classes, prep = base.class_names, base.prep
    new = Images.empty(prep.image_size)
    if labelled is not None:
        loaded = load_folder(labelled, classes, prep)
        new = Images(loaded.x, loaded.y)
    rehearsal = Images.empty(prep.image_size)
    if base_data is not None and acfg.base_per_class:
        rehearsal = base_sample(base_data, classes, prep, acfg.base_per_class, acfg.seed)
    pseudo = Images.empty(prep.image_size)
    if unlabelled is not None and acfg.pseudo_labels:
        exclude = {p.resolve() for p in loaded.paths} if labelled is not None else set()
        pseudo = pseudo_labelled(base, load_unlabelled(unlabelled, prep, exclude)[0])
    fitted = Images(np.concatenate([rehearsal.x, pseudo.x]), np.concatenate([rehearsal.y, pseudo.y]))
    if len(new):  # the new source's labelled images make `new_share` of each epoch
        repeats = max(1, round(acfg.new_share / (1 - acfg.new_share) * len(fitted) / len(new))) if len(fitted) else 1
        fitted = Images(np.concatenate([fitted.x, *[new.x] * repeats]), np.concatenate([fitted.y, *[new.y] * repeats]))
    if not len(fitted):
        raise DatasetError("nothing to adapt on: no labelled images, and the base model's review bin accepts none of "
                           "the unlabelled ones (give --data or --base-data)")
    model = classifier_part(base.model)
    model.compile(optimizer=keras.optimizers.Adam(acfg.learning_rate), loss=keras.losses.CategoricalCrossentropy(),
                  metrics=["accuracy"])
    sequence = BatchSequence(fitted.x, onehot(fitted.y, len(classes)), cfg.train.batch_size, acfg.seed,
                             augment=True, zoom=cfg.train.zoom)
    model.fit(sequence, epochs=acfg.epochs, verbose=2)
    bank = Images(np.concatenate([rehearsal.x, new.x]), np.concatenate([rehearsal.y, new.y]))
    if not len(bank):  # only pseudo-labelled images: they are the best guess of what the new source looks like
        bank = pseudo
    save_model(with_agreement(model, bank.x, bank.y), output, base.metadata)
    report = {"base": str(base_path), "output": str(output), "labelled": len(new), "base_images": len(rehearsal),
              "pseudo_labelled": len(pseudo), "epochs": acfg.epochs, "bank_images": len(bank),
              "review": "neighbour bank refitted; temperature and threshold carried over from the base model"
              if base.metadata.review else "no review bin (the base model has none)",
              "seconds": round(time.perf_counter() - started, 1)}
    log.info("adapted on %d labelled, %d base and %d pseudo-labelled images in %.0f s; review: %s", len(new),
             len(rehearsal), len(pseudo), report["seconds"], report["review"])
    return report
