"""Static INT8 quantization with onnxruntime, calibrated on validation images, and the FP32-vs-INT8 report.

Calibration images go through `images.load_image` like everything else, via one data reader.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from .dataset import LoadedSplit
from .evaluation import predict_probabilities
from .export import compare_outputs, copy_metadata
from .files import atomic_path
from .metrics import compute_metrics

log = logging.getLogger(__name__)


class ArrayCalibrationReader:
    """Feeds preprocessed images to onnxruntime's calibrator.

    One image at a time by default: the histogram calibrators (entropy, percentile) stack the outputs of all
    runs and fail on a shorter last batch.
    """

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 1):
        self.input_name, self.images, self.batch_size = input_name, images, batch_size
        self.position = 0

    def get_next(self):
        if self.position >= len(self.images):
            return None
        batch = self.images[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        self.position = 0


def pick_calibration_images(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Up to `count` images, drawn across classes in turn so a large class cannot crowd out a small one."""
    if count == 0 or count >= len(images):
        return images
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < count:
        for members in per_class:
            if members and len(chosen) < count:
                chosen.append(members.pop())
    return images[np.sort(chosen)]


def quantize_model(fp32_path: Path, int8_path: Path, calibration: np.ndarray, qcfg: dict) -> None:
    """quant_pre_process, then quantize_static (signed 8-bit weights and activations), metadata kept.

    The final Softmax stays in float: quantized, its probabilities come in steps of 1/256, so two close classes
    tie and the reported confidence is coarse; in float it costs a few microseconds.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        softmax = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Softmax"]
        with atomic_path(int8_path) as tmp:
            quantize_static(str(prepared), str(tmp), ArrayCalibrationReader(input_name, calibration),
                            quant_format=formats[qcfg["format"]], per_channel=qcfg["per_channel"],
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[qcfg["calibrate_method"]], nodes_to_exclude=softmax)
    copy_metadata(fp32_path, int8_path)


def compare_on(fp32, int8, split: LoadedSplit, name: str) -> dict:
    """Accuracy of each model, top-1 agreement and per-class recall deltas on one split."""
    p32, p8 = predict_probabilities(fp32, split.x), predict_probabilities(int8, split.x)
    m32 = compute_metrics(split.y, p32.argmax(1), fp32.class_names)
    m8 = compute_metrics(split.y, p8.argmax(1), int8.class_names)
    agreement = compare_outputs(p32, p8)
    return {
        "split": name, "images": len(split.y),
        "fp32_accuracy": m32["accuracy"], "int8_accuracy": m8["accuracy"],
        "accuracy_drop_points": 100 * (m32["accuracy"] - m8["accuracy"]),
        "top1_agreement": agreement["top1_agreement"], "max_abs_diff": agreement["max_abs_diff"],
        "per_class_recall_delta": {c: m8["per_class"][c]["recall"] - m32["per_class"][c]["recall"]
                                   for c in fp32.class_names if m32["per_class"][c]["support"]},
    }


def format_report(report: dict) -> str:
    lines = [f"# FP32 vs INT8: `{report['fp32']}` -> `{report['int8']}`", "",
             f"Sizes: FP32 {report['fp32_mb']:.2f} MB, INT8 {report['int8_mb']:.2f} MB "
             f"({report['int8_mb'] / report['fp32_mb']:.2f}x). Calibration: {report['calibration_images']} val images, "
             f"{report['settings']}.", "",
             "| split | images | FP32 acc | INT8 acc | drop (points) | top-1 agreement |", "|---|---:|---:|---:|---:|---:|"]
    for row in report["splits"]:
        lines.append(f"| {row['split']} | {row['images']} | {row['fp32_accuracy']:.2%} | {row['int8_accuracy']:.2%} | "
                     f"{row['accuracy_drop_points']:+.2f} | {row['top1_agreement']:.2%} |")
    lines += ["", f"Budget: at most {report['budget_points']:.2f} points of drop: **{'ok' if report['ok'] else 'EXCEEDED'}**.", ""]
    for row in report["splits"]:
        changed = {c: d for c, d in row["per_class_recall_delta"].items() if abs(d) > 1e-9}
        if changed:
            lines.append(f"Per-class recall change on {row['split']}: " +
                         ", ".join(f"{c} {d:+.1%}" for c, d in changed.items()))
    return "\n".join(lines) + "\n"
