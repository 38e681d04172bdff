"""Input pipeline, train-only augmentation and the fit loop with checkpoints (workstation side: TensorFlow).

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

import numpy as np
from PIL import Image

from .config import save_resolved
from .dataset import LoadedSplit, load_split
from .errors import ConfigError
from .files import atomic_path, write_json_atomic
from .images import Preprocess
from .model import build_from_config, load_model, model_facts, save_model

import keras  # noqa: E402  (imported after .model, which quiets TensorFlow's start-up logging)

log = logging.getLogger(__name__)


def augment_batch(x: np.ndarray, rng: np.random.Generator, noise_std: float, zoom: float = 1.0,
                  zoom_out: float = 1.0) -> np.ndarray:
    """Random zoom (in, and out with `zoom_out` > 1), flips, 90-degree rotations, brightness/contrast and noise;
    returns a new array.

    A top-down SEM image has no preferred orientation, its field of view differs from tool to tool and
    recipe to recipe, detector gain and offset vary, and shot noise varies with beam current: the label
    survives all of these.
    """
    n = len(x)
    x = zoom_batch(x, rng, zoom) if zoom > 1.0 else x.copy()
    if zoom_out > 1.0:
        # Half of the images (drawn again, so a zoomed one may be shrunk back) see a wider field of view instead.
        wider = rng.random(n) < 0.5
        x[wider] = shrink_batch(x[wider], rng, zoom_out)
    flip = rng.random(n) < 0.5
    x[flip] = x[flip][:, :, ::-1]
    turns = rng.integers(0, 4, n)
    for k in (1, 2, 3):
        x[turns == k] = np.rot90(x[turns == k], k, axes=(1, 2))
    contrast = rng.uniform(0.8, 1.25, (n, 1, 1, 1)).astype(np.float32)
    brightness = rng.uniform(-0.1, 0.1, (n, 1, 1, 1)).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean + brightness
    if noise_std > 0:
        sigma = (noise_std * rng.random((n, 1, 1, 1))).astype(np.float32)
        x = x + sigma * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x, 0.0, 1.0)


def zoom_batch(x: np.ndarray, rng: np.random.Generator, zoom: float) -> np.ndarray:
    """Each image magnified by a random factor in [1, zoom]: a random square crop resized back (bilinear)."""
    size = x.shape[1]
    out = np.empty_like(x)
    sides = size / rng.uniform(1.0, zoom, len(x))
    corners = rng.random((len(x), 2)) * (size - sides)[:, None]
    for i, (side, (top, left)) in enumerate(zip(sides, corners)):
        image = Image.fromarray(x[i, :, :, 0])  # float32 -> mode "F"
        box = (float(left), float(top), float(left + side), float(top + side))
        out[i, :, :, 0] = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))
    return out


def shrink_batch(x: np.ndarray, rng: np.random.Generator, zoom_out: float) -> np.ndarray:
    """Each image shrunk by a random factor in [1, zoom_out] and the field filled with its mirror images: the same
    kind of scene seen from further away (another tool's or recipe's field of view: one large particle becomes
    several small ones, a line pattern stays a finer line pattern)."""
    size = x.shape[1]
    out = np.empty_like(x)
    sides = np.maximum(np.round(size / rng.uniform(1.0, zoom_out, len(x))).astype(int), 2)
    for i, side in enumerate(sides):
        small = np.asarray(Image.fromarray(x[i, :, :, 0]).resize((side, side), Image.Resampling.BILINEAR))
        tiled = np.pad(small, 2 * size, mode="symmetric")  # mirror images repeat every 2 * side pixels
        top, left = size + rng.integers(0, 2 * side, 2)      # any placement of the scene in the field
        out[i, :, :, 0] = tiled[top:top + size, left:left + size]
    return out


def style_batch(x: np.ndarray, rng: np.random.Generator, gamma: float, blur: float) -> np.ndarray:
    """Imaging style of another tool: a random gamma in [1/(1+gamma), 1+gamma] (detector response) and a
    Gaussian blur of random sigma in [0, blur] pixels (beam spot, focus, pixel size); returns a new array.

    Per-image min-max normalisation already takes away gain and offset; these are what it leaves.
    """
    n = len(x)
    out = x
    if gamma > 0:
        exponent = np.exp(rng.uniform(-1, 1, (n, 1, 1, 1)) * np.log1p(gamma)).astype(np.float32)
        out = np.power(np.clip(out, 0.0, 1.0), exponent)
    if blur > 0:
        out = gaussian_blur(out, rng.uniform(0, blur, n))
    return out.astype(np.float32)


def gaussian_blur(x: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of each image of (n, h, w, 1) with its own sigma (0 = unchanged), edges repeated."""
    radius = max(1, int(np.ceil(3 * sigmas.max())))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets[None, :] / np.maximum(sigmas[:, None], 1e-6)) ** 2)
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    out = x
    for axis in (1, 2):
        padded = np.pad(out, [(0, 0)] + [(radius, radius) if a == axis else (0, 0) for a in (1, 2)] + [(0, 0)],
                        mode="edge")
        size = out.shape[axis]
        blurred = np.zeros_like(out)
        for k, offset in enumerate(offsets):
            window = np.take(padded, np.arange(radius + offset, radius + offset + size), axis=axis)
            blurred += weights[:, k, None, None, None] * window
        out = blurred
    return out


def mixup_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Each image blended with another of the batch, its one-hot label in the same proportion.

    The weight of the image's own half is drawn from Beta(alpha, alpha) and folded above 0.5, so the image keeps
    most of itself; soft labels temper what a mislabelled image can teach.
    """
    n = len(x)
    own = rng.beta(alpha, alpha, n).astype(np.float32)
    own = np.maximum(own, 1.0 - own)
    partner = rng.permutation(n)
    mixed_x = own[:, None, None, None] * x + (1.0 - own[:, None, None, None]) * x[partner]
    mixed_y = own[:, None] * y + (1.0 - own[:, None]) * y[partner]
    return mixed_x.astype(np.float32), mixed_y.astype(np.float32)


class BatchSequence(keras.utils.PyDataset):
    """Shuffled (and optionally augmented) batches of in-memory arrays, deterministic per (seed, epoch)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: bool, noise_std: float,
                 zoom: float = 1.0, mixup: float = 0.0, gamma: float = 0.0, blur: float = 0.0, zoom_out: float = 1.0):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size, self.seed = batch_size, seed
        self.augment, self.noise_std, self.zoom, self.mixup = augment, noise_std, zoom, mixup
        self.gamma, self.blur, self.zoom_out = gamma, blur, zoom_out
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        idx = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        xb, yb = self.x[idx], self.y[idx]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.augment:
            xb = augment_batch(xb, rng, self.noise_std, self.zoom, self.zoom_out)
            if self.gamma > 0 or self.blur > 0:
                xb = style_batch(xb, rng, self.gamma, self.blur)
        if self.mixup > 0:
            xb, yb = mixup_batch(xb, yb, rng, self.mixup)
        return xb, yb


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse class frequency, normalised so that an average image weighs 1; absent classes weigh 1."""
    counts = np.bincount(labels, minlength=num_classes)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


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


class Checkpointer(keras.callbacks.Callback):
    """After every epoch: keep the best weights (by val accuracy), write checkpoints, stop early.

    `last.keras` (with optimizer state) and `state.json` let `train.resume=true` continue where a killed
    run stopped; `best.keras` holds the best weights so far. Files are replaced atomically.
    """

    def __init__(self, paths: RunPaths, facts: dict[str, str], sequence: BatchSequence, patience: int,
                 state: dict | None = None):
        super().__init__()
        self.paths, self.facts, self.sequence, self.patience = paths, facts, sequence, patience
        state = state or {}
        self.history: dict[str, list[float]] = state.get("history", {})
        self.best_accuracy = state.get("best_val_accuracy", -1.0)
        self.best_epoch = state.get("best_epoch", -1)
        self.best_weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self.sequence.set_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        accuracy = (logs or {}).get("val_accuracy")
        folder = self.paths.checkpoints
        # without val images (train.fit_on=train+val) each epoch is kept over the one before: the last one stays
        if accuracy is None or float(accuracy) > self.best_accuracy:
            self.best_accuracy = -1.0 if accuracy is None else float(accuracy)
            self.best_epoch = epoch
            self.best_weights = self.model.get_weights()
            save_model(self.model, folder / "best.keras", self.facts)
        save_model(self.model, folder / "last.keras", self.facts, include_optimizer=True)
        write_json_atomic(folder / "state.json", {"epoch": epoch + 1, "best_val_accuracy": self.best_accuracy,
                                                  "best_epoch": self.best_epoch, "history": self.history})
        if self.patience and epoch - self.best_epoch >= self.patience:
            log.info("val accuracy has not improved for %d epochs: stopping (best %.4f at epoch %d)",
                     self.patience, self.best_accuracy, self.best_epoch + 1)
            self.model.stop_training = True


def train(cfg: dict) -> dict[str, Path]:
    """Train on `data.root` train/val as configured; returns the files written, by role."""
    data, tcfg = cfg["data"], cfg["train"]
    keras.utils.set_random_seed(tcfg["seed"])
    prep = Preprocess.from_config(cfg)
    classes = data["classes"]
    train_set = load_split(Path(data["root"]), "train", classes, prep)
    val_set = load_split(Path(data["root"]), "val", classes, prep)
    warn_missing_classes(train_set, classes)
    x_train, y_train = train_set.x, train_set.y
    fit_on_val = tcfg["fit_on"] == "train+val"
    if fit_on_val:  # more labelled images to learn from; none is left to stop early or choose an epoch by
        x_train, y_train = np.concatenate([x_train, val_set.x]), np.concatenate([y_train, val_set.y])
    real_images = len(y_train)
    if tcfg["synthetic_per_class"]:
        x_synth, y_synth = load_synthetic(cfg, prep)
        x_train, y_train = np.concatenate([x_train, x_synth]), np.concatenate([y_train, y_synth])

    paths = RunPaths(Path(tcfg["output"]))
    facts = model_facts(classes, prep)
    sequence = BatchSequence(x_train, onehot(y_train, len(classes)), tcfg["batch_size"], tcfg["seed"],
                             augment=tcfg["augment"], noise_std=tcfg["noise_std"], zoom=tcfg["zoom"],
                             zoom_out=tcfg["zoom_out"], mixup=tcfg["mixup"], gamma=tcfg["gamma"], blur=tcfg["blur"])
    model, state = resume_or_build(cfg, paths, facts, steps_per_epoch=len(sequence))
    checkpointer = Checkpointer(paths, facts, sequence, tcfg["patience"], state)
    callbacks = [checkpointer]
    if tcfg["tensorboard"]:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths.logs)))
    initial_epoch = state.get("epoch", 0) if state else 0
    if initial_epoch < tcfg["epochs"]:
        model.fit(sequence, validation_data=None if fit_on_val else (val_set.x, onehot(val_set.y, len(classes))),
                  epochs=tcfg["epochs"], initial_epoch=initial_epoch, callbacks=callbacks,
                  class_weight=class_weights(y_train, len(classes)) if tcfg["class_weights"] else None,
                  verbose=2)
    if checkpointer.best_weights is not None:
        model.set_weights(checkpointer.best_weights)
    elif (paths.checkpoints / "best.keras").exists():  # resumed after the best epoch: take it from disk
        model.set_weights(load_model(paths.checkpoints / "best.keras")[0].get_weights())
    if fit_on_val:
        log.info("kept the last epoch (%d): train.fit_on=train+val leaves no val images to choose by",
                 checkpointer.best_epoch + 1)
    else:
        log.info("best val accuracy %.4f at epoch %d", checkpointer.best_accuracy, checkpointer.best_epoch + 1)

    save_model(model, paths.model, facts)
    write_json_atomic(paths.history, {"history": checkpointer.history, "best_epoch": checkpointer.best_epoch + 1,
                                      "best_val_accuracy": None if fit_on_val else checkpointer.best_accuracy,
                                      "fit_on": tcfg["fit_on"], "train_images": real_images,
                                      "synthetic_images": len(y_train) - real_images, "val_images": len(val_set.y),
                                      "skipped": [str(p) for p, _ in train_set.skipped + val_set.skipped]})
    save_resolved(cfg, paths.config)
    plot_curves(checkpointer.history, paths.curves)
    return {"model": paths.model, "history": paths.history, "config": paths.config, "curves": paths.curves,
            "checkpoints": paths.checkpoints, "logs": paths.logs}


def resume_or_build(cfg: dict, paths: RunPaths, facts: dict[str, str],
                    steps_per_epoch: int) -> tuple[keras.Model, dict | None]:
    """A compiled model: from the last checkpoint when resuming (and one exists), else freshly built."""
    last, state_file = paths.checkpoints / "last.keras", paths.checkpoints / "state.json"
    if cfg["train"]["resume"] and last.exists() and state_file.exists():
        model, saved = load_model(last, compile=True)
        if saved != facts:
            raise ConfigError(f"{last}: checkpoint was trained with other classes or preprocessing; "
                              "cannot resume with this config (set train.resume=false to start afresh)")
        state = json.loads(state_file.read_text())
        log.info("resuming from %s after epoch %d", last, state["epoch"])
        return model, state
    if cfg["train"]["resume"]:
        log.warning("train.resume=true but no checkpoint in %s: starting afresh", paths.checkpoints)
    model = build_from_config(cfg)
    tcfg = cfg["train"]
    if tcfg["init_from"]:
        start_from(model, Path(tcfg["init_from"]), facts)
    learning_rate = tcfg["learning_rate"]
    if tcfg["lr_schedule"] == "cosine":  # decays to zero over the full run; early stopping (fit_on=train) may end it sooner
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, tcfg["epochs"] * steps_per_epoch)
    # weight_decay is decoupled from the gradient (AdamW): each step shrinks the weights by learning rate x decay
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, weight_decay=tcfg["weight_decay"] or None),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=tcfg["label_smoothing"]),
                  metrics=["accuracy"])
    return model, None


def start_from(model: keras.Model, path: Path, facts: dict[str, str]) -> None:
    """Copy the weights of the model in `path` into `model` (fine-tuning); the two must agree on classes,
    preprocessing and every layer's shape, else the copied weights would mean something else."""
    source, saved = load_model(path)
    for key in ("class_names", "preprocess"):  # preprocess holds the input size too
        if saved.get(key) != facts[key]:
            raise ConfigError(f"train.init_from: {path} was trained with {key} {saved.get(key)}, "
                              f"this config has {facts[key]}")
    theirs, ours = source.get_weights(), model.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise ConfigError(f"train.init_from: {path} has other layers than this config's model "
                          f"(model.head, model.width, model.blocks, model.batchnorm must match)")
    model.set_weights(theirs)
    log.info("starting from the weights of %s", path)


def load_synthetic(cfg: dict, prep: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """`train.synthetic_per_class` images per class from the project's generator, through the one loading path.

    They are written once as PNG files to a cache folder named by their parameters (the generator is
    deterministic), then read like any training image. Only classes in `data.classes` are used.
    """
    from . import CLASS_NAMES
    from .dataset import list_labelled_files, load_files
    from .synth import generate_dataset

    tcfg, classes = cfg["train"], cfg["data"]["classes"]
    n, seed = tcfg["synthetic_per_class"], tcfg["seed"]
    folder = Path(tcfg["synthetic_cache"]) / f"n{n}_size{prep.image_size}_seed{seed}"
    if not (folder / ".complete").exists():
        log.info("generating %d synthetic images per class in %s", n, folder)
        generate_dataset(folder, per_class=n, size=prep.image_size, seed=seed, split=None, difficulty=0.5)
        (folder / ".complete").write_text("")
    loaded = load_files(list_labelled_files(folder, CLASS_NAMES), prep)
    keep = np.array([CLASS_NAMES[label] in classes for label in loaded.y])
    labels = np.array([classes.index(CLASS_NAMES[label]) for label in loaded.y[keep]], dtype=np.int64)
    log.info("mixing %d synthetic images into training", len(labels))
    return loaded.x[keep], labels


def onehot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


def warn_missing_classes(train_set: LoadedSplit, classes: list[str]) -> None:
    counts = np.bincount(train_set.y, minlength=len(classes))
    empty = [name for name, count in zip(classes, counts) if count == 0]
    if empty:
        log.warning("no training images for %s: the model keeps an output for each but cannot learn them",
                    ", ".join(empty))


def plot_curves(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, train against val."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric, [])
            if values:  # no val curves when val was trained on
                ax.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
