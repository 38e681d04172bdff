"""Keras -> full-integer INT8 TFLite for the i.MX NPUs, our metadata inside, checked against the ONNX models.

The route is Keras -> SavedModel (keras.export.ExportArchive) -> TFLiteConverter.from_saved_model: the converter's
Keras-model entry point fails with Keras 3. The file is int8 from input to outputs, batch 1 and a fixed 128x128x1
input, with only builtin int8 operators (the conversion fails rather than leave a float operator in), so an NPU
delegate can take the whole graph. Its outputs are the last dense layer's input and the pooled features: the last
layer, the softmax, the calibration and the review score's neighbour search run on the board's CPU in numpy
(board/tflite.py says why).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semdefect.board.errors import ModelError
from semdefect.board.files import atomic_path
from semdefect.board.metadata import ModelMetadata
from semdefect.board.review import AGREEMENT_SCORE, decisions
from semdefect.board.runtime import Classifier
from semdefect.board.tflite import (
    BANK_ENTRY,
    FEATURES,
    HEAD_ENTRY,
    HIDDEN,
    INPUT,
    INPUT_QUANTIZATION,
    LAST_LAYER,
    METADATA_ENTRY,
    REVIEW_BANK,
    TfliteClassifier,
)
from semdefect.config import Config
from semdefect.data.dataset import LoadedSplit
from semdefect.deploy.export import compare_outputs
from semdefect.deploy.quantize import pick_calibration_images
from semdefect.evaluation.metrics import compute_metrics
from semdefect.evaluation.scoring import load_classifier, load_splits_or_folder, predict_scored

if TYPE_CHECKING:  # imported where used: TensorFlow takes seconds to import
    import keras

log = logging.getLogger(__name__)


def npu_graph(model: keras.Model) -> keras.Model:
    """image -> {hidden, features}: the network up to the input of its last layer (the dense layer's activations)
    and the pooled features the review score compares, without the last layer and the review head.

    The last layer (a few thousand multiply-adds) runs in float on the board's CPU, with its weights in the file:
    int8 logits come in steps of about 0.13 here, which flipped the top class of 1.4 % of the images against FP32
    (0.7 % with the float layer, seeds 1-3, docs/board.md). The review head's top-k search over a float bank is no
    NPU operation and its bank must not be rounded to int8.
    """
    import keras

    from semdefect.training.model import classifier_part, feature_layer

    classifier = classifier_part(model)
    hidden = classifier.get_layer("probabilities").input
    features = classifier.get_layer(feature_layer(classifier)).output
    return keras.Model(classifier.inputs, {HIDDEN: hidden, FEATURES: features}, name=f"{model.name}_npu")


def last_layer(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """The weights and bias of the classifier's last (softmax) layer."""
    from semdefect.training.model import classifier_part

    weights, bias = classifier_part(model).get_layer("probabilities").get_weights()
    return np.asarray(weights, np.float32), np.asarray(bias, np.float32)


def review_bank(model: keras.Model) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The review head's unit-length training features (float16), their class indices and k; None without one."""
    if len(model.outputs) < 2:
        return None
    layer = model.get_layer("agreement")
    bank, onehot = layer.get_weights()
    return np.asarray(bank, np.float16), np.asarray(onehot).argmax(axis=1).astype(np.uint8), int(layer.k)


def convert_int8(graph: keras.Model, calibration: np.ndarray, per_tensor: bool) -> bytes:
    """The full-integer INT8 flatbuffer of `graph`, calibrated on `calibration` (preprocessed images)."""
    import keras
    import tensorflow as tf

    size = graph.inputs[0].shape[1]
    with tempfile.TemporaryDirectory() as scratch:
        archive = keras.export.ExportArchive()
        archive.track(graph)
        archive.add_endpoint("serving_default", lambda image: graph(image, training=False),
                             input_signature=[tf.TensorSpec((1, size, size, 1), tf.float32, name=INPUT)])
        archive.write_out(scratch, verbose=False)

        def representative() -> Iterator[list[np.ndarray]]:
            for image in calibration:
                yield [image[None].astype(np.float32)]

        converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # fail, never fall back to float
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # private but long-standing: one scale per weight tensor (VeriSilicon NPUs run per-channel weights slowly)
        converter._experimental_disable_per_channel = per_tensor
        content: bytes = converter.convert()
    return content


def with_metadata(content: bytes, entries: dict[str, bytes]) -> bytes:
    """The flatbuffer with `entries` added to its metadata (name -> bytes), as the converter adds its own."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() not in entries]
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def input_quantization(content: bytes) -> tuple[float, int]:
    """The int8 input's scale and zero point the converter chose."""
    from ai_edge_litert.interpreter import Interpreter

    scale, zero_point = Interpreter(model_content=content).get_input_details()[0]["quantization"]
    if not 0.5 / 255 < scale < 2.0 / 255:  # images are in [0, 1]: about 1/255 unless calibration saw a narrow range
        log.warning("TFLite input scale %.3g is far from 1/255: the calibration images cover a narrow range of "
                    "grey levels, so brighter or darker pixels will clip", scale)
    return float(scale), int(zero_point)


def export_tflite(model: keras.Model, metadata: ModelMetadata, calibration: np.ndarray, path: Path,
                  per_tensor: bool = False) -> None:
    """Convert, then write the file atomically with the metadata and, with a review bin, its bank inside."""
    content = convert_int8(npu_graph(model), calibration, per_tensor)
    weights, bias = last_layer(model)
    pairs = metadata.to_strings() | {INPUT_QUANTIZATION: json.dumps(input_quantization(content)),
                                     LAST_LAYER: json.dumps({"inputs": weights.shape[0], "outputs": weights.shape[1]})}
    entries = {HEAD_ENTRY: weights.tobytes() + bias.tobytes()}
    bank = review_bank(model)
    if metadata.review is not None and metadata.review.score == AGREEMENT_SCORE:
        if bank is None:
            raise ModelError(f"{metadata.review.score} review score but the model has no review head")
        features, labels, k = bank
        pairs[REVIEW_BANK] = json.dumps({"images": len(features), "features": features.shape[1], "neighbours": k})
        entries[BANK_ENTRY] = features.tobytes() + labels.tobytes()
    entries = {METADATA_ENTRY: json.dumps(pairs).encode()} | entries
    with atomic_path(path) as tmp:
        tmp.write_bytes(with_metadata(content, entries))


def compare_on(reference: Classifier, others: dict[str, Classifier], split: LoadedSplit, name: str) -> dict[str, Any]:
    """Accuracy of the reference (FP32 ONNX) and each other model on one split, and how often each agrees with it."""
    p_ref, s_ref = predict_scored(reference, split.x)
    row: dict[str, Any] = {"split": name, "images": len(split.y),
                           "fp32_accuracy": compute_metrics(split.y, p_ref.argmax(1), reference.class_names)
                           ["accuracy"]}
    for label, model in others.items():
        probabilities, scores = predict_scored(model, split.x)
        accuracy = compute_metrics(split.y, probabilities.argmax(1), model.class_names)["accuracy"]
        agreement = compare_outputs(p_ref, probabilities)
        row[label] = {"accuracy": accuracy, "drop_points": 100 * (row["fp32_accuracy"] - accuracy),
                      "top1_agreement": agreement["top1_agreement"],
                      "decision_agreement": float(np.mean([a == b for a, b in zip(
                          decisions(scores, model.threshold), decisions(s_ref, reference.threshold))])),
                      "max_abs_diff": agreement["max_abs_diff"]}
    return row


def export_and_compare(keras_path: Path, output: Path, cfg: Config) -> dict[str, Any]:
    """Export the .keras model to INT8 TFLite calibrated on val images, then compare it with the FP32 ONNX model
    (`export.output`, the reference) and the INT8 ONNX one (`quantize.output`, when it exists) on every split: the
    report, `ok` when the TFLite model loses at most `tflite.max_accuracy_drop` points on val and on test."""
    from semdefect.training.model import KerasClassifier

    tcfg = cfg.tflite
    source = KerasClassifier(keras_path)
    fp32_path, int8_path = Path(cfg.export.output), Path(cfg.quantize.output)
    if not fp32_path.is_file():
        raise ModelError(f"{fp32_path}: the FP32 ONNX model the TFLite file is checked against does not exist; "
                         "run export_onnx.py first (or set export.output)")
    fp32 = load_classifier(fp32_path)
    if fp32.class_names != source.class_names:
        raise ModelError(f"{fp32_path} has other classes than {keras_path}: export the same model")
    root = Path(cfg.data.root)
    splits = load_splits_or_folder(root, ("train", "val", "test"), source.class_names, source.prep)
    calibrated_on = "val" if "val" in splits else "labelled"  # a fab's labelled images have no splits
    calibrate_on = splits[calibrated_on]
    calibration = pick_calibration_images(calibrate_on.x, calibrate_on.y, tcfg.calib_images, cfg.train.seed)
    export_tflite(source.model, source.metadata, calibration, output, tcfg.per_tensor)
    others: dict[str, Classifier] = {"tflite": TfliteClassifier(output)}
    if int8_path.is_file():
        others["int8_onnx"] = load_classifier(int8_path)
    else:
        log.warning("%s does not exist: the report compares the TFLite file with FP32 ONNX only", int8_path)
    rows = [compare_on(fp32, others, split, name) for name, split in splits.items() if len(split.y)]
    total = sum(row["images"] for row in rows)
    agreement = sum(row["tflite"]["top1_agreement"] * row["images"] for row in rows) / max(total, 1)
    ok = all(row["tflite"]["drop_points"] <= tcfg.max_accuracy_drop for row in rows if row["split"] != "train")
    return {"keras": str(keras_path), "tflite": str(output), "fp32_onnx": str(fp32_path),
            "int8_onnx": str(int8_path) if "int8_onnx" in others else None,
            "tflite_mb": output.stat().st_size / 1e6, "fp32_onnx_mb": fp32_path.stat().st_size / 1e6,
            "weights": "per-tensor" if tcfg.per_tensor else "per-channel",
            "calibration_images": len(calibration),
            "calibrated_on": calibrated_on, "top1_agreement_all": agreement, "images_all": total,
            "budget_points": tcfg.max_accuracy_drop, "ok": ok, "splits": rows}


def format_report(report: dict[str, Any]) -> str:
    compared = ["tflite"] + (["int8_onnx"] if report["int8_onnx"] else [])
    names = {"tflite": "INT8 TFLite", "int8_onnx": "INT8 ONNX"}
    lines = [f"# INT8 TFLite: `{report['keras']}` -> `{report['tflite']}`", "",
             f"Size {report['tflite_mb']:.2f} MB (FP32 ONNX {report['fp32_onnx_mb']:.2f} MB); {report['weights']} "
             f"weights; calibrated on {report['calibration_images']} {report['calibrated_on']} images. "
             f"Reference: `{report['fp32_onnx']}`"
             + (f"; also `{report['int8_onnx']}`." if report["int8_onnx"] else "."), "",
             "| split | images | FP32 ONNX acc | " + " | ".join(f"{names[c]} acc | top-1 agreement with FP32 | "
                                                          f"same review decision" for c in compared) + " |",
             "|---|---:|---:|" + "---:|---:|---:|" * len(compared)]
    for row in report["splits"]:
        lines.append(f"| {row['split']} | {row['images']} | {row['fp32_accuracy']:.2%} | " + " | ".join(
            f"{row[c]['accuracy']:.2%} ({0.0 - row[c]['drop_points']:+.2f}) | {row[c]['top1_agreement']:.2%} | "
            f"{row[c]['decision_agreement']:.2%}" for c in compared) + " |")
    lines += ["", f"Top-1 agreement of INT8 TFLite with FP32 ONNX over all {report['images_all']} images: "
                  f"{report['top1_agreement_all']:.2%}.",
              f"Budget: at most {report['budget_points']:.2f} points under FP32 ONNX on val and test: "
              f"**{'ok' if report['ok'] else 'EXCEEDED'}**."]
    return "\n".join(lines) + "\n"
