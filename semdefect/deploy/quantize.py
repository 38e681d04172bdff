"""Static INT8 quantization with onnxruntime, calibrated on validation images, and the FP32-vs-INT8 report.

Calibration images go through `images.load_image` like everything else, via one data reader.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semdefect.board.files import atomic_path
from semdefect.board.review import decisions
from semdefect.board.runtime import OnnxClassifier
from semdefect.config import Config, Quantize
from semdefect.data.dataset import LoadedSplit
from semdefect.deploy.export import compare_outputs, copy_metadata, half_precision_bank, review_head
from semdefect.evaluation.metrics import compute_metrics
from semdefect.evaluation.scoring import load_splits_or_folder, predict_scored

if TYPE_CHECKING:  # imported where used, like onnxruntime
    import onnx

log = logging.getLogger(__name__)


class ArrayCalibrationReader:
    """Feeds preprocessed images to onnxruntime's calibrator.

    One image at a time by default: the histogram calibrators (entropy, percentile) stack the outputs of all
    runs and fail on a shorter last batch.
    """

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 1):
        self.input_name, self.images, self.batch_size = input_name, images, batch_size
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
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
    picked: np.ndarray = images[np.sort(chosen)]
    return picked


def quantize_model(fp32_path: Path, int8_path: Path, calibration: np.ndarray, qcfg: Quantize) -> None:
    """quant_pre_process, then quantize_static (QDQ, signed 8-bit weights and activations, per-channel weights,
    percentile calibration), metadata kept. Each of these measured best (docs/edge-speed.md).

    Some layers stay in float, where INT8 costs more than it gives:
    - the final Softmax: quantized, its probabilities come in steps of 1/256, so two close classes tie and the
      reported confidence is coarse; in float it costs a few microseconds;
    - with `quantize.float_first_block`, the first Conv -> Relu -> MaxPool: onnxruntime's INT8 convolution over
      one input channel is several times slower than its FP32 one (see `guard_float_pool`);
    - with `quantize.float_head`, the dense layers after the last convolution: a few thousand multiply-adds
      whose rounding decides between close classes (it raised the top-1 agreement with FP32: docs/edge-speed.md);
    - the review head (`review_head`).
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        graph = onnx.load(str(prepared)).graph
        keep_float = [node.name for node in graph.node if node.op_type == "Softmax"]
        if qcfg.float_head:
            keep_float += dense_head(graph)
        keep_float += review_head(graph)
        first_block = first_conv_block(graph) if qcfg.float_first_block else []
        quantized = Path(scratch) / "quantized.onnx"
        quantize_static(str(prepared), str(quantized), ArrayCalibrationReader(input_name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=keep_float + first_block)
        proto = onnx.load(str(quantized))
        if first_block:
            guard_float_pool(proto, first_block[-1])
        half_precision_bank(proto)  # the pre-processing folded the export's Cast away
        onnx.checker.check_model(proto)
        with atomic_path(int8_path) as tmp:
            onnx.save(proto, str(tmp))
    copy_metadata(fp32_path, int8_path)


def first_conv_block(graph: onnx.GraphProto) -> list[str]:
    """Names of the graph's first Conv, Relu and MaxPool when it starts that way (every model here does), else []."""
    nodes = [node for node in graph.node if node.op_type in ("Conv", "Relu", "MaxPool")][:3]
    if [node.op_type for node in nodes] != ["Conv", "Relu", "MaxPool"]:
        return []
    conv, relu, pool = nodes
    if relu.input[0] != conv.output[0] or pool.input[0] != relu.output[0]:
        return []
    return [conv.name, relu.name, pool.name]


def dense_head(graph: onnx.GraphProto) -> list[str]:
    """Names of the Gemm/MatMul nodes after the graph's last Conv."""
    last_conv = max((i for i, node in enumerate(graph.node) if node.op_type == "Conv"), default=-1)
    return [node.name for node in graph.node[last_conv + 1:] if node.op_type in ("Gemm", "MatMul")]


def guard_float_pool(proto: onnx.ModelProto, pool_name: str) -> None:
    """Put a Relu between the float first MaxPool and the QuantizeLinear that follows it.

    The Relu changes nothing (the pool's input has just been through a Relu), but onnxruntime cannot move the
    quantization above it: without it, its QDQ propagation puts the QuantizeLinear before the MaxPool, which then
    runs on int8 in NCHW layout, the slowest path it has (about 1 ms here for a 0.02 ms pool).
    """
    from onnx import helper

    pool = next(node for node in proto.graph.node if node.name == pool_name)
    consumers = [node for node in proto.graph.node if pool.output[0] in node.input]
    if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
        log.warning("first MaxPool %s is not followed by one QuantizeLinear: no guard placed (INT8 may run slower)",
                    pool_name)
        return
    guard = pool.output[0] + "_float_guard"
    consumers[0].input[0] = guard
    position = list(proto.graph.node).index(consumers[0])
    proto.graph.node.insert(position, helper.make_node("Relu", [pool.output[0]], [guard], name=pool_name + "_guard"))


def compare_on(fp32: OnnxClassifier, int8: OnnxClassifier, split: LoadedSplit, name: str) -> dict[str, Any]:
    """Accuracy of each model, top-1 agreement and per-class recall deltas on one split."""
    (p32, s32), (p8, s8) = predict_scored(fp32, split.x), predict_scored(int8, split.x)
    m32 = compute_metrics(split.y, p32.argmax(1), fp32.class_names)
    m8 = compute_metrics(split.y, p8.argmax(1), int8.class_names)
    agreement = compare_outputs(p32, p8)
    decided32, decided8 = decisions(s32, fp32.threshold), decisions(s8, int8.threshold)
    return {
        "split": name, "images": len(split.y),
        "fp32_accuracy": m32["accuracy"], "int8_accuracy": m8["accuracy"],
        "accuracy_drop_points": 100 * (m32["accuracy"] - m8["accuracy"]),
        "top1_agreement": agreement["top1_agreement"], "max_abs_diff": agreement["max_abs_diff"],
        "decision_agreement": float(np.mean([a == b for a, b in zip(decided32, decided8)])),
        "per_class_recall_delta": {c: m8["per_class"][c]["recall"] - m32["per_class"][c]["recall"]
                                   for c in fp32.class_names if m32["per_class"][c]["support"]},
    }


def quantize_and_compare(fp32_path: Path, int8_path: Path, cfg: Config) -> dict[str, Any]:
    """Quantize `fp32_path` calibrated on val images, then compare FP32 and INT8 on val and test: the report
    (also what `format_report` prints); `ok` says whether INT8 stayed within `quantize.max_accuracy_drop`."""
    qcfg = cfg.quantize
    fp32 = OnnxClassifier(fp32_path)
    root = Path(cfg.data.root)
    splits = load_splits_or_folder(root, ("val", "test"), fp32.class_names, fp32.prep)
    calibrated_on = "val" if "val" in splits else "labelled"  # a fab's labelled images have no splits
    calibrate_on = splits[calibrated_on]
    calibration = pick_calibration_images(calibrate_on.x, calibrate_on.y, qcfg.calib_images, cfg.train.seed)
    quantize_model(fp32_path, int8_path, calibration, qcfg)
    int8 = OnnxClassifier(int8_path)
    rows = [compare_on(fp32, int8, split, name) for name, split in splits.items()]
    ok = all(row["accuracy_drop_points"] <= qcfg.max_accuracy_drop for row in rows)
    return {"fp32": str(fp32_path), "int8": str(int8_path), "fp32_mb": fp32_path.stat().st_size / 1e6,
            "int8_mb": int8_path.stat().st_size / 1e6, "calibration_images": len(calibration),
            "calibrated_on": calibrated_on,
            "settings": f"qdq, per-channel, percentile, float_first_block={qcfg.float_first_block}, "
                        f"float_head={qcfg.float_head}",
            "budget_points": qcfg.max_accuracy_drop, "ok": ok, "splits": rows}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"# FP32 vs INT8: `{report['fp32']}` -> `{report['int8']}`", "",
             f"Sizes: FP32 {report['fp32_mb']:.2f} MB, INT8 {report['int8_mb']:.2f} MB "
             f"({report['int8_mb'] / report['fp32_mb']:.2f}x). Calibration: {report['calibration_images']} "
             f"{report['calibrated_on']} images, {report['settings']}.", "",
             "| split | images | FP32 acc | INT8 acc | drop (points) | top-1 agreement | same review decision |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in report["splits"]:
        lines.append(f"| {row['split']} | {row['images']} | {row['fp32_accuracy']:.2%} | {row['int8_accuracy']:.2%} | "
                     f"{row['accuracy_drop_points']:+.2f} | {row['top1_agreement']:.2%} | "
                     f"{row['decision_agreement']:.2%} |")
    lines += ["", f"Budget: at most {report['budget_points']:.2f} points of drop: "
                  f"**{'ok' if report['ok'] else 'EXCEEDED'}**.", ""]
    for row in report["splits"]:
        changed = {c: d for c, d in row["per_class_recall_delta"].items() if abs(d) > 1e-9}
        if changed:
            lines.append(f"Per-class recall change on {row['split']}: " +
                         ", ".join(f"{c} {d:+.1%}" for c, d in changed.items()))
    return "\n".join(lines) + "\n"
