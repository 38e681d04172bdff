"""Keras -> ONNX with tf2onnx, our metadata inside, checked against Keras (workstation side)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semdefect.board.errors import ModelError
from semdefect.board.files import atomic_path
from semdefect.board.metadata import ModelMetadata
from semdefect.config import Config

if TYPE_CHECKING:  # imported where used: TensorFlow takes seconds to import
    import keras
    import onnx

log = logging.getLogger(__name__)


def export_onnx(model: keras.Model, metadata: ModelMetadata, path: Path, opset: int = 17) -> None:
    """Convert with a named dynamic batch dimension, write the metadata, check the graph, save atomically."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its optimiser's INFO lines are for its developers
    size = metadata.prep.image_size
    spec = [tf.TensorSpec((None, size, size, 1), tf.float32, name="image")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    for value in (proto.graph.input[0], *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    set_metadata(proto, metadata.to_strings())
    proto.producer_name = "semdefect"
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def set_metadata(proto: onnx.ModelProto, pairs: dict[str, str]) -> None:
    """Replace the model's metadata_props with `pairs` (quantization and other passes may drop them)."""
    del proto.metadata_props[:]
    for key, value in pairs.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def copy_metadata(source: Path, target: Path) -> None:
    """Give `target` the metadata of `source`, rewriting the file atomically."""
    import onnx

    pairs = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    proto = onnx.load(str(target))
    set_metadata(proto, pairs)
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Largest absolute difference of probabilities and top-1 agreement between two models' outputs."""
    if reference.shape != candidate.shape:
        raise ModelError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    return {"images": int(len(reference)),
            "max_abs_diff": float(np.max(np.abs(reference - candidate))) if len(reference) else 0.0,
            "top1_agreement": float(np.mean(reference.argmax(1) == candidate.argmax(1))) if len(reference) else 1.0}


def export_and_check(keras_path: Path, onnx_path: Path, cfg: Config) -> dict[str, Any]:
    """Export the .keras model to ONNX, then run both on the same preprocessed images of `export.parity_split`:
    the parity report, with `ok` when the largest difference is within `export.parity_atol`."""
    from semdefect.evaluation.scoring import load_classifier, load_eval_data, predict_scored
    from semdefect.training.model import KerasClassifier

    ecfg = cfg.export
    keras_model = KerasClassifier(keras_path)
    export_onnx(keras_model.model, keras_model.metadata, onnx_path, ecfg.opset)
    onnx_model = load_classifier(onnx_path)
    images = load_eval_data(Path(cfg.data.root), ecfg.parity_split, keras_model.class_names, keras_model.prep).x
    if ecfg.parity_images:
        images = images[: ecfg.parity_images]
    (keras_p, keras_s), (onnx_p, onnx_s) = predict_scored(keras_model, images), predict_scored(onnx_model, images)
    parity = compare_outputs(keras_p, onnx_p)
    parity["max_score_diff"] = float(np.max(np.abs(keras_s - onnx_s))) if len(images) else 0.0
    return parity | {"split": ecfg.parity_split, "limit": ecfg.parity_atol,
                     "ok": max(parity["max_abs_diff"], parity["max_score_diff"]) <= ecfg.parity_atol,
                     "onnx_mb": onnx_path.stat().st_size / 1e6}
