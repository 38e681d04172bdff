"""Fine-tune a trained model on a few labelled images of a new source, without a full retraining (workstation side).

With labelled images, the classifier starts from the trained weights and takes `adapt.epochs` short epochs over a
mix of the new source's labelled images, repeated so that they make `adapt.new_share` of every epoch, and up to
`adapt.base_per_class` images per class of the original training data, so that the model keeps what it knew. With
unlabelled images of the new source too (and `adapt.pseudo_labels`), a second round of as many epochs adds the
ones the adapted model is surest of (the surest `adapt.pseudo_share` of those it gives each class), labelled with
its answer. With unlabelled images only, no answer of the base model is good enough to learn from (on the held-out
source of the protocol its surest half was 20 % right), so the weights stay and only the BatchNorm statistics are
re-estimated on the new source's images: the one thing they tell without labels is what its images look like.
The review head's neighbour bank is rebuilt from the labelled images the adapted model was fitted on; temperature
and threshold are carried over from the base model, as there are no held-out labelled images of the new source to
fit them on. docs/new-fab.md has the figures that chose all of this.
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

    def __add__(self, other: Images) -> Images:
        return Images(np.concatenate([self.x, other.x]), np.concatenate([self.y, other.y]))


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


def surest_answers(model: Any, x: np.ndarray, share: float, batch_size: int = 64) -> Images:
    """For each class the model answers, the `share` of those images it is surest of (at least one), labelled with
    its answer: per class, so that the classes it answers rarely still get some."""
    probabilities = np.concatenate([np.asarray(model.predict_on_batch(x[i:i + batch_size]))
                                    for i in range(0, len(x), batch_size)])
    answers, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    kept: list[int] = []
    for label in np.unique(answers):
        members = np.flatnonzero(answers == label)
        kept.extend(members[np.argsort(-confidence[members], kind="stable")][:max(1, round(share * len(members)))])
    chosen = np.sort(np.array(kept, dtype=np.int64))
    return Images(x[chosen], answers[chosen])


def renormalise(model: Any, x: np.ndarray, batch_size: int = 64) -> None:
    """Set every BatchNorm layer's statistics to those of its input over `x`, layer after layer (each one sees the
    earlier ones already renormalised)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            upstream = keras.Model(model.inputs, layer.input)
            values = np.concatenate([np.asarray(upstream.predict_on_batch(x[i:i + batch_size]))
                                     for i in range(0, len(x), batch_size)])
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, values.mean(axis=(0, 1, 2)), values.var(axis=(0, 1, 2))])


def with_new(fitted: Images, new: Images, share: float) -> Images:
    """`fitted` with the new source's labelled images repeated so that they make `share` of the mix."""
    if not len(new):
        return fitted
    repeats = max(1, round(share / (1 - share) * len(fitted) / len(new))) if len(fitted) else 1
    return Images(np.concatenate([fitted.x, *[new.x] * repeats]), np.concatenate([fitted.y, *[new.y] * repeats]))


def fine_tune(model: Any, mix: Images, cfg: Config, seed: int) -> None:
    import keras

    from semdefect.training.train import BatchSequence, onehot

    model.compile(optimizer=keras.optimizers.Adam(cfg.adapt.learning_rate),
                  loss=keras.losses.CategoricalCrossentropy())
    sequence = BatchSequence(mix.x, onehot(mix.y, model.output.shape[-1]), cfg.train.batch_size, seed,
                             augment=True, zoom=cfg.train.zoom)
    model.fit(sequence, epochs=cfg.adapt.epochs, verbose=2)


def adapt(base_path: Path, output: Path, labelled: Path | None, base_data: Path | None, unlabelled: Path | None,
          cfg: Config) -> dict[str, Any]:
    """Adapt the model in `base_path` and write it to `output`; returns what was used and done."""
    import keras

    from semdefect.training.model import KerasClassifier, classifier_part, feature_layer, save_model, with_agreement

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
    pool = Images.empty(prep.image_size).x
    if unlabelled is not None and (not len(new) or acfg.pseudo_labels):
        exclude = {p.resolve() for p in loaded.paths} if labelled is not None else set()
        pool = load_unlabelled(unlabelled, prep, exclude)[0]
    model = classifier_part(base.model)
    steps, pseudo = [], Images.empty(prep.image_size)
    if len(new):
        fine_tune(model, with_new(rehearsal, new, acfg.new_share), cfg, acfg.seed)
        steps.append(f"fine-tuned on {len(new)} labelled and {len(rehearsal)} base images")
        if len(pool):
            pseudo = surest_answers(model, pool, acfg.pseudo_share)
            fine_tune(model, with_new(rehearsal + pseudo, new, acfg.new_share), cfg, acfg.seed + 1)
            steps.append(f"then with {len(pseudo)} of the {len(pool)} unlabelled images, pseudo-labelled")
        elif unlabelled is not None:
            steps.append("--unlabelled not used (adapt.pseudo_labels=false: with labelled images, the unlabelled "
                         "ones helped too little for their time, docs/new-fab.md)")
    else:
        renormalise(model, pool)
        steps.append(f"BatchNorm statistics re-estimated on {len(pool)} unlabelled images (weights kept)")
    bank = rehearsal + new
    if len(bank):
        model = with_agreement(model, bank.x, bank.y)
        bank_note = f"neighbour bank rebuilt from {len(bank)} labelled images"
    elif base.metadata.review:  # nothing labelled to rebuild it from
        agreement = base.model.get_layer("agreement")([model.get_layer(feature_layer(model)).output, model.output])
        model = keras.Model(model.inputs, [model.output, agreement], name=model.name)
        bank_note = "neighbour bank kept (no labelled image to rebuild it from: give --base-data)"
    review = (f"{bank_note}; temperature and threshold carried over from the base model" if base.metadata.review
              else "no review bin (the base model has none)")
    save_model(model, output, base.metadata)
    report = {"base": str(base_path), "output": str(output), "labelled": len(new), "base_images": len(rehearsal),
              "unlabelled": len(pool), "pseudo_labelled": len(pseudo), "done": steps, "review": review,
              "seconds": round(time.perf_counter() - started, 1)}
    log.info("%s; review: %s (%.0f s)", ", ".join(steps), review, report["seconds"])
    return report
