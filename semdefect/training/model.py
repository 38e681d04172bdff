"""Keras model builders and the .keras file with the model's metadata inside (workstation side: TensorFlow).

The reference model of the design is built exactly: Conv 16/32/64 (3x3, ReLU, 'valid') each followed by
2x2 max-pooling, then Flatten -> Dense 128 -> Dense n softmax. `head: gap` swaps Flatten for global average
pooling (33 k instead of 1.63 M parameters at width 1), `head: gmp` for global max pooling. Input is already
scaled to [0, 1] by `images.load_image`.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the user's terminal

import keras
import numpy as np

from semdefect.board.errors import ConfigError, ModelError
from semdefect.board.files import atomic_path
from semdefect.board.metadata import KERAS_MEMBER, ModelMetadata, check_model_file
from semdefect.board.review import AGREEMENT_SCORE
from semdefect.board.runtime import Classifier
from semdefect.config import Config


def build_model(num_classes: int, image_size: int, head: str = "flatten", width: float = 1.0,
                batchnorm: bool = False, blocks: int = 3) -> keras.Model:
    """The reference CNN with the defaults; `width` scales the conv filters, `batchnorm` adds BatchNorm after each
    conv, `blocks` sets the number of conv + pool blocks (filters doubling: 16, 32, 64, 128, ...)."""
    side = image_size
    for _ in range(blocks):
        side = (side - 2) // 2  # 3x3 'valid' conv, then 2x2 pooling
    if side < 1:
        raise ConfigError(f"data.image_size={image_size} is too small for model.blocks={blocks}: "
                          f"nothing is left after {blocks} conv + pool blocks")
    inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
    x = inputs
    for base in (16 * 2 ** i for i in range(blocks)):
        filters = max(1, round(base * width))
        if batchnorm:  # conv without bias, then BatchNorm, then ReLU: folds into one Conv at export
            x = keras.layers.Conv2D(filters, 3, use_bias=False, name=f"conv{filters}")(x)
            # momentum 0.9: the moving statistics settle within tens of steps, so small datasets (a few
            # hundred steps in all) are not evaluated with statistics still near their initial values
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{filters}")(x)
            x = keras.layers.ReLU(name=f"relu{filters}")(x)
        else:
            x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{filters}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{filters}")(x)
    heads = {"flatten": keras.layers.Flatten, "gap": keras.layers.GlobalAveragePooling2D,
             # A defect is often a small spot in a large field: the strongest response anywhere, not the average.
             "gmp": keras.layers.GlobalMaxPooling2D}
    x = heads[head](name=head)(x)
    x = keras.layers.Dense(128, activation="relu", name="dense128")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"sem_cnn_{head}")


NEIGHBOURS = 5  # how many nearest training images vote (docs/review.md: 5 against 10 and 20)


def feature_layer(model: keras.Model) -> str:
    """The layer whose output the neighbour agreement compares: the pooled convolutional features (gmp or gap head;
    they told right from wrong answers better than the dense layer's, docs/review.md), or the dense layer's 128 for
    the flatten head, whose flattened maps are too many numbers to store for every training image."""
    names = {layer.name for layer in model.layers}
    return next((name for name in ("gmp", "gap") if name in names), "dense128")


@keras.saving.register_keras_serializable(package="semdefect")
class NeighbourAgreement(keras.layers.Layer):  # type: ignore[misc]  # keras has no type information
    """The share of an image's `k` nearest training images (cosine similarity of their features) that are labelled
    with the class the model predicts for it: low where the image lies among other classes' images, or far from
    any. The training images' unit-length features and one-hot labels are weights of the layer, so they travel
    inside the model file and the ONNX graph computes the agreement like any other output."""

    def __init__(self, bank_size: int, num_classes: int, k: int = NEIGHBOURS, **kwargs: object):
        super().__init__(**kwargs)
        self.bank_size, self.num_classes, self.k = bank_size, num_classes, k

    def build(self, input_shape: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
        features = input_shape[0][-1]
        # float16 halves what the bank adds to each model file; onnxruntime turns it into float32 once, when it
        # loads the model, so the search runs as fast as with a float32 bank
        self.bank = self.add_weight(shape=(self.bank_size, features), initializer="zeros", trainable=False,
                                    name="bank", dtype="float16")
        self.bank_labels = self.add_weight(shape=(self.bank_size, self.num_classes), initializer="zeros",
                                           trainable=False, name="bank_labels")

    def call(self, inputs: list[Any]) -> Any:
        features, probabilities = inputs
        ops = keras.ops
        unit = features / ops.sqrt(ops.sum(features * features, axis=-1, keepdims=True) + 1e-12)
        bank = ops.cast(self.bank, "float32")
        _, nearest = ops.top_k(ops.matmul(unit, ops.transpose(bank)), k=self.k)
        votes = ops.mean(ops.take(self.bank_labels, nearest, axis=0), axis=1)  # (n, classes)
        # the predicted class as a one-hot row; not argmax, which Keras lowers to an op ONNX lacks (Bitcast)
        predicted = ops.cast(ops.equal(probabilities, ops.max(probabilities, axis=-1, keepdims=True)), "float32")
        return ops.max(votes * predicted, axis=-1)  # max, not sum: a tie for the top class counts once

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        return config | {"bank_size": self.bank_size, "num_classes": self.num_classes, "k": self.k}


def classifier_part(model: keras.Model) -> keras.Model:
    """The model without its review head (the image -> probabilities network that training fits)."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.get_layer("probabilities").output, name=model.name)


def with_agreement(model: keras.Model, bank_images: np.ndarray, bank_labels: np.ndarray,
                   batch_size: int = 64) -> keras.Model:
    """The classifier with a second output, `agreement` (NeighbourAgreement over `bank_images`, its training images
    without augmentation)."""
    model = classifier_part(model)
    features = model.get_layer(feature_layer(model)).output
    features_model = keras.Model(model.inputs, features)
    bank = np.concatenate([features_model.predict_on_batch(bank_images[i:i + batch_size])
                           for i in range(0, len(bank_images), batch_size)])
    unit = bank / np.sqrt((bank ** 2).sum(axis=1, keepdims=True) + 1e-12)
    num_classes = model.output.shape[-1]
    layer = NeighbourAgreement(len(unit), num_classes, min(NEIGHBOURS, len(unit)), name="agreement")
    agreement = layer([features, model.output])
    layer.set_weights([unit.astype(np.float32), np.eye(num_classes, dtype=np.float32)[bank_labels]])
    return keras.Model(model.inputs, [model.output, agreement], name=model.name)


def build_efficientnet(num_classes: int, image_size: int, pretrained: bool) -> keras.Model:
    """EfficientNet-Lite0 on one grey channel, its pooled 1280 features, dropout, then a softmax layer; with
    `pretrained`, the backbone starts from its ImageNet weights."""
    from semdefect.training import efficientnet_lite

    inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
    x = efficientnet_lite.features(efficientnet_lite.scale_input(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)  # the original's rate before its classifier
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0")
    if pretrained:
        efficientnet_lite.load_pretrained(model)
    return model


def build_from_config(cfg: Config) -> keras.Model:
    """The model the `model` and `data` sections of a config describe (one place that knows the key order)."""
    if cfg.model.backbone == "efficientnet_lite0":
        return build_efficientnet(len(cfg.data.classes), cfg.data.image_size, cfg.model.pretrained)
    if cfg.model.pretrained:
        raise ConfigError("model.pretrained=true needs a pretrained backbone (model.backbone=efficientnet_lite0); "
                          "the cnn family has no pretrained weights")
    return build_model(len(cfg.data.classes), cfg.data.image_size, cfg.model.head, cfg.model.width,
                       cfg.model.batchnorm, cfg.model.blocks)


def save_model(model: keras.Model, path: Path, metadata: ModelMetadata, include_optimizer: bool = False) -> None:
    """Save atomically, with the metadata inside the file; without optimizer state unless asked (checkpoints)."""
    if not include_optimizer and getattr(model, "optimizer", None) is not None:
        bare = keras.Model.from_config(model.get_config())  # clone_model would copy the optimizer too
        bare.set_weights(model.get_weights())
        model = bare
    with atomic_path(path) as tmp:
        tmp.unlink()  # Keras refuses to write over an existing path without asking
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(KERAS_MEMBER, json.dumps(metadata.to_strings(), indent=2))


def load_model(path: Path, compile: bool = False) -> tuple[keras.Model, ModelMetadata]:
    """Load a .keras file written by `save_model`, with errors that say what is wrong with it."""
    path = check_model_file(path, ".keras")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras model (not a .keras zip archive; corrupt or truncated?)")
    try:
        with zipfile.ZipFile(path) as archive:
            pairs = json.loads(archive.read(KERAS_MEMBER)) if KERAS_MEMBER in archive.namelist() else None
        model = keras.models.load_model(path, compile=compile)
    except Exception as exc:  # Keras raises many kinds for a damaged archive; all mean "cannot load"
        raise ModelError(f"{path}: cannot load Keras model: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if pairs is None:
        raise ModelError(f"{path}: no {KERAS_MEMBER} inside; not a model written by semdefect's train_model.py")
    return model, ModelMetadata.from_strings(pairs, path)


class KerasClassifier(Classifier):
    """A .keras model with its metadata: the same interface as `board.runtime.OnnxClassifier`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.model, self.metadata = load_model(self.path)
        review = self.metadata.review
        if review is not None and (review.score == AGREEMENT_SCORE) != (len(self.model.outputs) == 2):
            raise ModelError(f"{self.path}: its review metadata says score {review.score}, but the model has "
                             f"{len(self.model.outputs)} output(s)")

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.model.predict_on_batch(batch)
        if isinstance(outputs, list | tuple):
            return np.asarray(outputs[0]), np.asarray(outputs[1])
        return np.asarray(outputs), None
