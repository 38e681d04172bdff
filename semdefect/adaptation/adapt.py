"""Adapt a trained model with a few labelled images of a new source or of a fab's own classes, without a full
retraining (workstation side).

The labelled images may name classes the model never learnt (`semdefect.adaptation.labels` says which classes the
adapted model answers). Its last layer is rebuilt for that class list: a known class keeps its weights, a new one
starts from the mean direction of its labelled images' features (weight imprinting), and `adapt.head_epochs` train
that layer on the model's fixed features first (a new column left untrained draws too many answers). Then the whole
network takes `adapt.epochs` short epochs over a mix of the labelled images, repeated so that they make
`adapt.new_share` of every epoch, and up to `adapt.base_per_class` images per class of the original training data, so
that the model keeps what it knew. With unlabelled images of the new source too (and `adapt.pseudo_labels`), a second
round adds the ones the adapted model is surest of, labelled with its answer. With unlabelled images only, no answer
of the base model is good enough to learn from (on the held-out source of the protocol its surest half was 20 %
right), so the weights stay and only the BatchNorm statistics are re-estimated on the new source's images. The review
head's neighbour bank is rebuilt from the images the adapted model was fitted on; temperature and threshold are
refitted on the labelled images scored out of fold where there are enough of them, else carried over. docs/new-fab.md
has the figures that chose all of this.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.adaptation.labels import Labels, target_classes
from semdefect.board.errors import DatasetError, ImageError
from semdefect.board.files import find_images
from semdefect.board.images import Preprocess, load_image
from semdefect.config import Adapt, Config
from semdefect.data.dataset import LabelledFiles, list_labelled_files, load_files, split_folder
from semdefect.evaluation.selective import fit_review, softmax

log = logging.getLogger(__name__)

HEAD_LEARNING_RATE = 1e-3  # Adam on the last layer alone, over fixed features
REVIEW_FOLDS = 5
REVIEW_MIN_PER_CLASS = 2  # a labelled class needs an image left to learn from when one is held out
REVIEW_MIN_IMAGES = 20  # fewer held-out answers than this say too little about a threshold


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


def head_input(model: Any) -> Any:
    """The model up to the features its last layer (`probabilities`) reads."""
    import keras

    return keras.Model(model.inputs, model.get_layer("probabilities").input)


def features_of(extractor: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    if not len(x):
        return np.empty((0, extractor.output.shape[-1]), np.float32)
    return np.concatenate([np.asarray(extractor.predict_on_batch(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


def starting_head(weights: np.ndarray, bias: np.ndarray, known: list[str], classes: list[str],
                  features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last layer for `classes`: a class the model answers keeps its weights; a new one starts from the mean
    direction of its labelled images' features, as long as the known classes' weights (weight imprinting, Qi et al.
    2018), so that it is answered from the first step and the head's training only refines it."""
    length = float(np.linalg.norm(weights, axis=0).mean())
    columns, biases = [], []
    for index, name in enumerate(classes):
        if name in known:
            columns.append(weights[:, known.index(name)])
            biases.append(bias[known.index(name)])
        else:
            mean = features[labels == index].mean(axis=0)
            columns.append(mean / (np.linalg.norm(mean) + 1e-12) * length)
            biases.append(float(bias.mean()))
    return np.stack(columns, axis=1).astype(np.float32), np.asarray(biases, np.float32)


def fit_head(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, start: tuple[np.ndarray, np.ndarray],
             epochs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression on fixed features from `start`: Adam, full passes over the cached features, each sample
    weighted."""
    import keras

    from semdefect.training.train import onehot

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features.shape[1],))
    layer = keras.layers.Dense(start[0].shape[1], activation="softmax")
    head = keras.Model(inputs, layer(inputs))
    layer.set_weights(list(start))
    head.compile(optimizer=keras.optimizers.Adam(HEAD_LEARNING_RATE), loss=keras.losses.CategoricalCrossentropy())
    head.fit(features, onehot(labels, start[0].shape[1]), sample_weight=weights, batch_size=64, epochs=epochs,
             shuffle=True, verbose=0)
    fitted, bias = layer.get_weights()
    return fitted, bias


@dataclass
class HeadData:
    """Fixed features of the labelled (`new`) and base images, `views` copies of each (the first as it is): what
    the last layer is fitted on."""

    new: np.ndarray   # (views, n_new, features)
    new_y: np.ndarray
    base: np.ndarray  # (views, n_base, features)
    base_y: np.ndarray

    def subset(self, keep: np.ndarray) -> HeadData:
        return HeadData(self.new[:, keep], self.new_y[keep], self.base, self.base_y)

    def training_set(self, share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every view of every image, weighted so that the labelled images make `share` of the loss (as the
        fine-tuning's mix repeats them to)."""
        views, n_new, n_base = self.new.shape[0], len(self.new_y), len(self.base_y)
        w_new, w_base = (share / n_new, (1 - share) / n_base) if n_base else (1 / n_new, 0.0)
        x = np.concatenate([self.new.reshape(-1, self.new.shape[-1]), self.base.reshape(-1, self.new.shape[-1])])
        y = np.concatenate([np.tile(self.new_y, views), np.tile(self.base_y, views)])
        w = np.concatenate([np.full(views * n_new, w_new), np.full(views * n_base, w_base)])
        return x, y, (w * len(w) / w.sum()).astype(np.float32)

    def fitted_head(self, weights: np.ndarray, bias: np.ndarray, known: list[str], classes: list[str],
                    acfg: Adapt) -> tuple[np.ndarray, np.ndarray]:
        head = starting_head(weights, bias, known, classes, self.new[0], self.new_y)
        if not acfg.head_epochs:
            return head
        x, y, w = self.training_set(acfg.new_share)
        return fit_head(x, y, w, head, acfg.head_epochs, acfg.seed)


def cross_fitted(data: HeadData, weights: np.ndarray, bias: np.ndarray, known: list[str], classes: list[str],
                 acfg: Adapt) -> tuple[np.ndarray, np.ndarray]:
    """Each labelled image's probabilities and neighbour agreement from a last layer and a neighbour bank that did
    not see it (k-fold over the labelled images, each class dealt evenly over the folds): held-out outputs to fit
    the review bin on, where the adapted model has no held-out image of the new source."""
    from semdefect.board.review import neighbour_agreement
    from semdefect.training.model import NEIGHBOURS

    folds = np.empty(len(data.new_y), np.int64)
    rng = np.random.default_rng([acfg.seed, 41])
    for label in np.unique(data.new_y):
        members = rng.permutation(np.flatnonzero(data.new_y == label))
        folds[members] = np.arange(len(members)) % REVIEW_FOLDS
    probabilities = np.zeros((len(data.new_y), len(classes)), np.float32)
    agreement = np.zeros(len(data.new_y), np.float32)
    for fold in range(REVIEW_FOLDS):
        held, kept = folds == fold, folds != fold
        if not held.any():
            continue
        rest = data.subset(kept)
        w, b = rest.fitted_head(weights, bias, known, classes, acfg)
        logits = data.new[0, held] @ w + b
        probabilities[held] = softmax(logits)
        bank = np.concatenate([rest.new[0], rest.base[0]])
        unit = bank / np.sqrt((bank ** 2).sum(axis=1, keepdims=True) + 1e-12)
        bank_y = np.concatenate([rest.new_y, rest.base_y])
        agreement[held] = neighbour_agreement(data.new[0, held], probabilities[held], unit, bank_y,
                                              min(NEIGHBOURS, len(bank)))
    return probabilities, agreement


def with_head(model: Any, head: tuple[np.ndarray, np.ndarray]) -> Any:
    """`model` with a new last layer (same name, `probabilities`) holding `head`'s weights."""
    import keras

    features = model.get_layer("probabilities").input
    layer = keras.layers.Dense(head[0].shape[1], activation="softmax", name="probabilities")
    adapted = keras.Model(model.inputs, layer(features), name=model.name)
    layer.set_weights(list(head))
    return adapted


def view_features(extractor: Any, x: np.ndarray, count: int, zoom: float, seed: int) -> np.ndarray:
    """Features of `x` as it is, then of `count - 1` augmented copies (the training augmentation): (count, n, d)."""
    from semdefect.training.augment import augment_batch

    rng = np.random.default_rng([seed, 31])
    return np.stack([features_of(extractor, x if i == 0 else augment_batch(x, rng, zoom)) for i in range(count)])


def adapt(base_path: Path, output: Path, labels: Labels | None, classes_mode: str, base_data: Path | None,
          unlabelled: Path | None, cfg: Config) -> dict[str, Any]:
    """Adapt the model in `base_path` and write it to `output`; returns what was used and done."""
    import keras

    from semdefect.training.model import KerasClassifier, classifier_part, feature_layer, save_model, with_agreement

    started = time.perf_counter()
    acfg = cfg.adapt
    keras.utils.set_random_seed(acfg.seed)
    base = KerasClassifier(base_path)
    known, prep = base.class_names, base.prep
    classes = target_classes(known, labels.classes(), classes_mode) if labels is not None else known
    new = Images.empty(prep.image_size)
    if labels is not None:
        loaded = load_files(LabelledFiles(labels.source, labels.paths, [classes.index(n) for n in labels.names]), prep)
        new = Images(loaded.x, loaded.y)
    rehearsal = Images.empty(prep.image_size)
    if base_data is not None and acfg.base_per_class:
        rehearsal = base_sample(base_data, known, prep, acfg.base_per_class, acfg.seed)
        rehearsal = renumbered(rehearsal, known, classes)
    if labels is not None and len(np.unique(np.concatenate([new.y, rehearsal.y]))) < 2:
        raise DatasetError(f"{labels.source}: the labelled images name one class only and no --base-data is given; "
                           "the model would learn to answer it always")
    pool = Images.empty(prep.image_size).x
    if unlabelled is not None and (not len(new) or acfg.pseudo_labels):
        exclude = {p.resolve() for p in loaded.paths} if labels is not None else set()
        pool = load_unlabelled(unlabelled, prep, exclude)[0]
    model = classifier_part(base.model)
    steps, pseudo = [], Images.empty(prep.image_size)
    review, review_note = base.metadata.review, "no review bin (the base model has none)"
    if review is not None:
        review_note = "temperature and threshold carried over from the base model"
    if len(new):
        extractor = head_input(model)
        weights, bias = model.get_layer("probabilities").get_weights()
        views = acfg.views if acfg.head_epochs else 1
        data = HeadData(view_features(extractor, new.x, views, cfg.train.zoom, acfg.seed), new.y,
                        view_features(extractor, rehearsal.x, views, cfg.train.zoom, acfg.seed + 1), rehearsal.y)
        model = with_head(model, data.fitted_head(weights, bias, known, classes, acfg))
        if review is not None and len(new) >= REVIEW_MIN_IMAGES and \
                np.bincount(new.y)[np.unique(new.y)].min() >= REVIEW_MIN_PER_CLASS:
            probabilities, agreement = cross_fitted(data, weights, bias, known, classes, acfg)
            review = fit_review(probabilities, agreement, new.y, cfg.review)
            review_note = (f"temperature and threshold refitted on the {len(new)} labelled images, each scored by a "
                           f"last layer fitted without it ({REVIEW_FOLDS}-fold)")
        elif review is not None:
            review_note += (f" (too few labelled images to refit them: it takes {REVIEW_MIN_IMAGES}, and "
                            f"{REVIEW_MIN_PER_CLASS} of each class)")
        added = [c for c in classes if c not in known]
        steps.append(f"last layer for {len(classes)} classes" + (f" ({len(added)} new: {', '.join(added)})"
                                                                  if added else "")
                     + (f" fitted on the features of {len(new)} labelled and {len(rehearsal)} base images"
                        if acfg.head_epochs else ""))
        if acfg.epochs:
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
    if base.metadata.review is not None:
        review_note = f"{bank_note}; {review_note}"
    save_model(model, output, replace(base.metadata, class_names=classes, review=review))
    report = {"base": str(base_path), "output": str(output), "classes": classes, "labelled": len(new),
              "base_images": len(rehearsal), "unlabelled": len(pool), "pseudo_labelled": len(pseudo), "done": steps,
              "review": review_note, "seconds": round(time.perf_counter() - started, 1)}
    log.info("%s; review: %s (%.0f s)", ", ".join(steps), review_note, report["seconds"])
    return report


def renumbered(images: Images, known: list[str], classes: list[str]) -> Images:
    """Base images with their class indices in `classes`; those of classes not in it are left out."""
    index = np.array([classes.index(name) if name in classes else -1 for name in known])
    y = index[images.y]
    return Images(images.x[y >= 0], y[y >= 0])
