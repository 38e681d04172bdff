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
    half_precision_bank(proto)  # tf2onnx stores the float16 bank as float32: store it as Keras does
    proto.producer_name = "semdefect"
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def review_head(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes only the review head's output needs (the neighbour search): they stay float, as the
    training images' features and one-hot labels they hold must not be rounded."""
    producers = {output: node for node in graph.node for output in node.output}

    def ancestors(name: str) -> set[str]:
        found: set[str] = set()
        pending = [name]
        while pending:
            node = producers.get(pending.pop())
            if node is not None and node.name not in found:
                found.add(node.name)
                pending += list(node.input)
        return found

    outputs = [output.name for output in graph.output]
    if len(outputs) < 2:
        return []
    return sorted(ancestors(outputs[1]) - ancestors(outputs[0]))


def half_precision_bank(proto: onnx.ModelProto) -> None:
    """Store the review head's bank of training-image features (the constant its MatMul multiplies by) in float16,
    as the Keras model holds it: half the bytes. A Cast node turns it back into float32, which onnxruntime computes
    once, when it loads the model."""
    from onnx import TensorProto, helper, numpy_helper

    head = set(review_head(proto.graph))
    constants = {t.name: t for t in proto.graph.initializer}
    for node in [n for n in proto.graph.node if n.name in head and n.op_type == "MatMul"]:
        for name in node.input:
            bank = constants.get(name)
            if bank is None or bank.data_type != TensorProto.FLOAT:
                continue
            half = numpy_helper.from_array(numpy_helper.to_array(bank).astype(np.float16), f"{name}_float16")
            proto.graph.initializer.remove(bank)
            proto.graph.initializer.append(half)
            proto.graph.node.insert(0, helper.make_node("Cast", [half.name], [name], to=TensorProto.FLOAT,
                                                        name=f"{name}_to_float32"))


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
