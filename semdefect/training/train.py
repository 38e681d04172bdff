"""Input pipeline and the fit loop with checkpoints (workstation side: TensorFlow).

Images are loaded once into memory through `images.load_image`; batches are cut from those arrays, so the
model trains on exactly what evaluation and the board will feed it. Augmentation happens on the batch, in
numpy, from a random generator seeded by (seed, epoch, batch): the same seed gives the same batches, also
after a resume.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from semdefect import __version__
from semdefect.board.errors import ConfigError
from semdefect.board.files import write_json_atomic
from semdefect.board.metadata import ModelMetadata
from semdefect.board.review import ReviewSettings, calibrate, review_scores
from semdefect.config import Config, save_resolved
from semdefect.data.dataset import LoadedSplit, load_split
from semdefect.evaluation.figures import pyplot, save_png
from semdefect.evaluation.selective import fit_review
from semdefect.training.augment import augment_batch
from semdefect.training.model import build_from_config, classifier_part, load_model, save_model, with_agreement

log = logging.getLogger(__name__)


class BatchSequence(keras.utils.PyDataset):  # type: ignore[misc]  # keras has no type information
    """Shuffled (and optionally augmented) batches of in-memory arrays, deterministic per (seed, epoch).

    With `groups` (one group id per image), each epoch draws as many images as there are, each group equally
    often (with replacement): a small source weighs as much as a large one."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: bool, zoom: float = 1.0,
                 groups: np.ndarray | None = None, randconv: float = 0.0):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size, self.seed = batch_size, seed
        self.augment, self.zoom, self.randconv = augment, zoom, randconv
        self.weights = None
        if groups is not None:
            _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
            self.weights = 1.0 / (counts[index] * len(counts))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.x)
        self.order = rng.permutation(n) if self.weights is None else rng.choice(n, n, p=self.weights)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        xb, yb = self.x[idx], self.y[idx]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.augment:
            xb = augment_batch(xb, rng, self.zoom, randconv=self.randconv)
        return xb, yb


@dataclass
class RunPaths:
    """Where one training run writes; everything lives beside the model file."""

    model: Path

    @property
    def stem(self) -> Path:
        return self.model.with_suffix("")

    @property
    def history(self) -> Path:
        return Path(f"{self.stem}.history.json")

    @property
    def config(self) -> Path:
        return Path(f"{self.stem}.config.yaml")

    @property
    def curves(self) -> Path:
        return Path(f"{self.stem}.curves.png")

    @property
    def checkpoints(self) -> Path:
        return self.model.parent / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.model.parent / "logs"


class Checkpointer(keras.callbacks.Callback):  # type: ignore[misc]  # keras has no type information
    """After every epoch: keep the best weights (by val accuracy), write checkpoints, stop early.

    `last.keras` (with optimizer state) and `state.json` let `train.resume=true` continue where a killed
    run stopped; `best.keras` holds the best weights so far. Files are replaced atomically.
    """

    def __init__(self, paths: RunPaths, metadata: ModelMetadata, sequence: BatchSequence, patience: int,
                 state: dict[str, Any] | None = None):
        super().__init__()
        self.paths, self.metadata, self.sequence, self.patience = paths, metadata, sequence, patience
        state = state or {}
        self.history: dict[str, list[float]] = state.get("history", {})
        self.best_accuracy = state.get("best_val_accuracy", -1.0)
        self.best_epoch = state.get("best_epoch", -1)
        self.best_weights = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.sequence.set_epoch(epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        accuracy = (logs or {}).get("val_accuracy")
        folder = self.paths.checkpoints
        # without val images (train.fit_on=train+val) each epoch is kept over the one before: the last one stays
        if accuracy is None or float(accuracy) > self.best_accuracy:
            self.best_accuracy = -1.0 if accuracy is None else float(accuracy)
            self.best_epoch = epoch
            self.best_weights = self.model.get_weights()
            save_model(self.model, folder / "best.keras", self.metadata)
        save_model(self.model, folder / "last.keras", self.metadata, include_optimizer=True)
        write_json_atomic(folder / "state.json", {"epoch": epoch + 1, "best_val_accuracy": self.best_accuracy,
                                                  "best_epoch": self.best_epoch, "history": self.history})
        if self.patience and epoch - self.best_epoch >= self.patience:
            log.info("val accuracy has not improved for %d epochs: stopping (best %.4f at epoch %d)",
                     self.patience, self.best_accuracy, self.best_epoch + 1)
            self.model.stop_training = True


def train(cfg: Config) -> dict[str, Path]:
    """Train on `data.root` train/val as configured; returns the files written, by role."""
    data, tcfg = cfg.data, cfg.train
    keras.utils.set_random_seed(tcfg.seed)
    prep = data.preprocess()
    classes = data.classes
    train_set = load_split(Path(data.root), "train", classes, prep)
    val_set = load_split(Path(data.root), "val", classes, prep)
    warn_missing_classes(train_set, classes)
    x_train, y_train, paths_train = train_set.x, train_set.y, list(train_set.paths)
    fit_on_val = tcfg.fit_on == "train+val"
    if fit_on_val:  # more labelled images to learn from; none is left to stop early or choose an epoch by
        x_train, y_train = np.concatenate([x_train, val_set.x]), np.concatenate([y_train, val_set.y])
        paths_train += val_set.paths
    # The review bin's temperature and threshold must be fitted on images the model did not learn from
    held = holdout_indices(y_train, cfg.review.holdout, tcfg.seed)
    fit = np.setdiff1d(np.arange(len(y_train)), held)
    x_held, y_held, paths_held = x_train[held], y_train[held], [paths_train[i] for i in held]
    x_train, y_train = x_train[fit], y_train[fit]

    paths = RunPaths(Path(tcfg.output))
    metadata = ModelMetadata.create(classes, prep, __version__)
    groups = None
    if tcfg.balance == "sources":
        groups = source_groups([paths_train[i] for i in fit], cfg.crosscheck.sources)
    sequence = BatchSequence(x_train, onehot(y_train, len(classes)), tcfg.batch_size, tcfg.seed,
                             augment=tcfg.augment, zoom=tcfg.zoom, groups=groups, randconv=tcfg.randconv)
    model, state = resume_or_build(cfg, paths, metadata, steps_per_epoch=len(sequence))
    checkpointer = Checkpointer(paths, metadata, sequence, tcfg.patience, state)
    callbacks: list[keras.callbacks.Callback] = [checkpointer]
    if tcfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths.logs)))
    initial_epoch = state.get("epoch", 0) if state else 0
    if initial_epoch < tcfg.epochs:
        model.fit(sequence, validation_data=None if fit_on_val else (val_set.x, onehot(val_set.y, len(classes))),
                  epochs=tcfg.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=2)
    if checkpointer.best_weights is not None:
        model.set_weights(checkpointer.best_weights)
    elif (paths.checkpoints / "best.keras").exists():  # resumed after the best epoch: take it from disk
        model.set_weights(load_model(paths.checkpoints / "best.keras")[0].get_weights())
    if fit_on_val:
        log.info("kept the last epoch (%d): train.fit_on=train+val leaves no val images to choose by",
                 checkpointer.best_epoch + 1)
    else:
        log.info("best val accuracy %.4f at epoch %d", checkpointer.best_accuracy, checkpointer.best_epoch + 1)

    if len(y_held):  # the review head: the agreement of each image with its nearest training images
        model = with_agreement(model, x_train, y_train)
    metadata = metadata.with_review(review_bin(model, x_held, y_held, cfg))
    save_model(model, paths.model, metadata)
    write_json_atomic(paths.history, {"history": checkpointer.history, "best_epoch": checkpointer.best_epoch + 1,
                                      "best_val_accuracy": None if fit_on_val else checkpointer.best_accuracy,
                                      "fit_on": tcfg.fit_on, "train_images": len(y_train),
                                      "val_images": len(val_set.y), "held_out": [str(p) for p in paths_held],
                                      "skipped": [str(p) for p, _ in train_set.skipped + val_set.skipped]})
    save_resolved(cfg, paths.config)
    plot_curves(checkpointer.history, paths.curves)
    return {"model": paths.model, "history": paths.history, "config": paths.config, "curves": paths.curves,
            "checkpoints": paths.checkpoints, "logs": paths.logs}


def resume_or_build(cfg: Config, paths: RunPaths, metadata: ModelMetadata,
                    steps_per_epoch: int) -> tuple[keras.Model, dict[str, Any] | None]:
    """A compiled model: from the last checkpoint when resuming (and one exists), else freshly built."""
    last, state_file = paths.checkpoints / "last.keras", paths.checkpoints / "state.json"
    tcfg = cfg.train
    if tcfg.resume and last.exists() and state_file.exists():
        model, saved = load_model(last, compile=True)
        if (saved.class_names, saved.prep) != (metadata.class_names, metadata.prep):
            raise ConfigError(f"{last}: checkpoint was trained with other classes or preprocessing; "
                              "cannot resume with this config (set train.resume=false to start afresh)")
        state = json.loads(state_file.read_text())
        log.info("resuming from %s after epoch %d", last, state["epoch"])
        return model, state
    if tcfg.resume:
        log.warning("train.resume=true but no checkpoint in %s: starting afresh", paths.checkpoints)
    model = build_from_config(cfg)
    if tcfg.init_from:
        start_from(model, Path(tcfg.init_from), metadata)
    learning_rate = tcfg.learning_rate
    if tcfg.lr_schedule == "cosine":
        # decays to zero over the full run; early stopping (fit_on=train) may end it sooner
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, tcfg.epochs * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.CategoricalCrossentropy(),
                  metrics=["accuracy"])
    return model, None


def start_from(model: keras.Model, path: Path, metadata: ModelMetadata) -> None:
    """Copy the weights of the model in `path` into `model` (fine-tuning); the two must agree on classes,
    preprocessing and every layer's shape, else the copied weights would mean something else."""
    source, saved = load_model(path)
    source = classifier_part(source)  # a trained model's review head is refitted, not copied
    theirs_pairs, ours_pairs = saved.to_strings(), metadata.to_strings()
    for name in ("class_names", "preprocess"):  # preprocess holds the input size too
        if theirs_pairs[name] != ours_pairs[name]:
            raise ConfigError(f"train.init_from: {path} was trained with {name} {theirs_pairs[name]}, "
                              f"this config has {ours_pairs[name]}")
    theirs, ours = source.get_weights(), model.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise ConfigError(f"train.init_from: {path} has other layers than this config's model "
                          f"(model.backbone, model.head, model.width, model.blocks, model.batchnorm must match)")
    model.set_weights(theirs)
    log.info("starting from the weights of %s", path)


def review_bin(model: keras.Model, x_held: np.ndarray, y_held: np.ndarray, cfg: Config) -> ReviewSettings | None:
    """The review bin fitted on the held-out images, or None (with a warning) when there are none to fit on."""
    if len(y_held) == 0:
        log.warning("no images held out (review.holdout=%s): the model has no review bin; every image it sees will "
                    "be accepted", cfg.review.holdout)
        return None
    outputs = [model.predict_on_batch(x_held[i:i + 64]) for i in range(0, len(x_held), 64)]
    raw = np.concatenate([np.asarray(probabilities) for probabilities, _ in outputs])
    agreement = np.concatenate([np.asarray(agreed) for _, agreed in outputs])
    review = fit_review(raw, agreement, y_held, cfg.review)
    accepted = review_scores(calibrate(raw, review.temperature), agreement) >= review.threshold
    correct = raw.argmax(axis=1) == y_held
    log.info("review bin fitted on %d held-out images: temperature %.3f, threshold %.4f; there it accepts %.1f%% "
             "and %.1f%% of those are right (target: %s %.2f)", len(y_held), review.temperature, review.threshold,
             100 * accepted.mean(), 100 * correct[accepted].mean() if accepted.any() else 0.0, review.target,
             review.target_value)
    return review


def holdout_indices(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Indices of a share of each class's images, drawn with `seed`, to keep out of fitting (sorted). A class keeps
    at least one image for fitting, so a class with a single image is never held out entirely."""
    rng = np.random.default_rng([seed, 20])  # a stream of its own, apart from shuffling and augmentation
    chosen: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(round(share * len(members)), len(members) - 1)
        chosen += rng.choice(members, count, replace=False).tolist() if count > 0 else []
    return np.sort(np.asarray(chosen, dtype=np.int64))


def source_groups(paths: list[Path], prefixes: list[str]) -> np.ndarray | None:
    """Each image's source, by the first of `prefixes` its file name starts with ("" for none): what
    `train.balance=sources` weighs equally; None (plain shuffling) when the images hold fewer than two sources."""
    groups = np.array([next((p for p in prefixes if Path(path).name.startswith(p)), "") for path in paths])
    found = sorted(set(groups.tolist()))
    counts = ", ".join(f"{g or 'no prefix'} {np.sum(groups == g)}" for g in found)
    if len(found) < 2:
        log.warning("train.balance=sources: one source only (%s; crosscheck.sources %s): nothing to balance",
                    counts, prefixes)
        return None
    log.info("train.balance=sources: %s", counts)
    return groups


def onehot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    encoded: np.ndarray = np.eye(num_classes, dtype=np.float32)[labels]
    return encoded


def warn_missing_classes(train_set: LoadedSplit, classes: list[str]) -> None:
    counts = np.bincount(train_set.y, minlength=len(classes))
    empty = [name for name, count in zip(classes, counts) if count == 0]
    if empty:
        log.warning("no training images for %s: the model keeps an output for each but cannot learn them",
                    ", ".join(empty))


def plot_curves(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, train against val."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric, [])
            if values:  # no val curves when val was trained on
                ax.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    save_png(fig, path)
