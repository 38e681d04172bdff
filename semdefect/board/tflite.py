"""A full-integer TFLite model on the board: the LiteRT interpreter, an optional NPU delegate, and the numpy part.

The .tflite file (export_tflite.py) is int8 end to end, so an i.MX NPU can run all of it: image in, `hidden` (the
input of the classifier's last layer) and `features` (what the review score compares) out. The rest runs here in
numpy, in float: the last layer (int8 logits, in steps of about 0.13, flipped the top class twice as often as this
1,280-weight layer in float), the softmax, the calibration and the neighbour search of the review score
(`review.neighbour_agreement` over the bank of training features the file carries), which is no NPU operation.
The interpreter is `ai-edge-litert` (PyPI) or, on an NXP BSP image, its own `tflite_runtime`, which is built
against its NPU delegates.

Metadata entries of the file (read with `tflite_file.read_metadata`): `semdefect`, a JSON object with the same
string pairs an ONNX file holds (metadata.py) plus `input_quantization`, `last_layer` and, with a review bin,
`review_bank`; `semdefect_last_layer`, the last layer's float32 weights (inputs x classes) then its biases;
`semdefect_bank`, the bank's float16 unit-length features followed by one uint8 class index per bank image.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .metadata import ModelMetadata, check_model_file
from .review import AGREEMENT_SCORE, neighbour_agreement
from .runtime import Classifier
from .tflite_file import TfliteFormatError, read_metadata

METADATA_ENTRY = "semdefect"
BANK_ENTRY = "semdefect_bank"
HEAD_ENTRY = "semdefect_last_layer"
INPUT_QUANTIZATION = "input_quantization"
LAST_LAYER = "last_layer"
REVIEW_BANK = "review_bank"
INPUT, HIDDEN, FEATURES = "image", "hidden", "features"


def interpreter_module() -> tuple[Any, str]:
    """The LiteRT interpreter module and its name and version: ai-edge-litert, else the BSP's tflite_runtime."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        from ai_edge_litert import interpreter

        return interpreter, f"ai-edge-litert {version('ai-edge-litert')}"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter  # NXP's BSP images ship this one, built with their delegates

        try:
            return interpreter, f"tflite_runtime {version('tflite_runtime')}"
        except PackageNotFoundError:
            return interpreter, "tflite_runtime"
    except ImportError:
        raise ModelError("no TFLite interpreter here: pip install 'ai-edge-litert' (or use the tflite_runtime of "
                         "the board's BSP) to run a .tflite model") from None


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Hold back what the interpreter's C++ code writes to stderr (an INFO line per XNNPACK delegate, a delegate's
    start-up log) and hand it over as one string in the yielded list, for an error message to quote."""
    captured: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


@dataclass(frozen=True)
class Placement:
    """Where the model's operators ran: the delegate (None: the CPU), and how many of them it took."""

    delegate: str | None
    operators: int
    delegated: int | None  # None: could not be told (the count relies on the interpreter's private op list)
    partitions: int | None

    def describe(self) -> str:
        if self.delegate is None:
            return "CPU (no delegate loaded)"
        if self.delegated is None:
            return f"delegate {self.delegate} (operators it took: unknown)"
        return (f"delegate {self.delegate}: {self.delegated} of {self.operators} operators in "
                f"{self.partitions} partition(s), the rest on the CPU")


class TfliteClassifier(Classifier):
    """A semdefect .tflite model (export_tflite.py), one image per invocation (its batch is fixed at 1)."""

    def __init__(self, path: Path, threads: int = 0, delegate: Path | None = None):
        self.path = check_model_file(path, ".tflite")
        content = self.path.read_bytes()
        facts = read_model_facts(content, self.path)
        self.metadata, stored_input, (self.weights, self.bias) = facts.metadata, facts.input, facts.last_layer
        self.bank, self.bank_labels, self.neighbours = facts.bank, facts.bank_labels, facts.neighbours
        interpreter, self.runtime = interpreter_module()
        delegates = [load_delegate(interpreter, delegate)] if delegate is not None else []
        resolver = interpreter.OpResolverType
        options = {"model_content": content, "num_threads": threads or os.cpu_count() or 1,
                   # with an NPU delegate, XNNPACK must not claim the operators first (NXP's advice too)
                   "experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES if delegates
                   else resolver.AUTO}
        with captured_stderr():
            try:
                self.interpreter = interpreter.Interpreter(experimental_delegates=delegates or None, **options)
                self.interpreter.allocate_tensors()
                runner = self.interpreter.get_signature_runner()
            except (ValueError, RuntimeError) as exc:
                hint = ("; a file compiled by vela runs only with the i.MX 93's Ethos-U delegate "
                        "(--delegate /usr/lib/libethosu_delegate.so)" if "ethos-u" in str(exc) else "")
                reason = first_line(str(exc)).rstrip(".")
                raise ModelError(f"{self.path}: cannot load TFLite model: {reason}{hint}") from None
        self.runner = runner
        self.check_signature(stored_input)
        self.placement = placement(interpreter, content, self.interpreter, delegate)

    def check_signature(self, stored_input: tuple[float, int]) -> None:
        inputs, outputs = self.runner.get_input_details(), self.runner.get_output_details()
        size = self.prep.image_size
        if set(inputs) != {INPUT} or set(outputs) != {HIDDEN, FEATURES}:
            raise ModelError(f"{self.path}: expected input '{INPUT}' and outputs '{HIDDEN}', '{FEATURES}' (as "
                             f"export_tflite.py writes), found {sorted(inputs)} and {sorted(outputs)}")
        image = inputs[INPUT]
        if list(image["shape"]) != [1, size, size, 1] or image["dtype"] != np.int8:
            raise ModelError(f"{self.path}: input is {list(image['shape'])} {np.dtype(image['dtype']).name}, "
                             f"expected int8 [1, {size}, {size}, 1] (its metadata says {size}x{size})")
        if outputs[HIDDEN]["shape"][-1] != self.weights.shape[0] or self.weights.shape[1] != len(self.class_names):
            raise ModelError(f"{self.path}: its last layer ({self.weights.shape[0]} x {self.weights.shape[1]}) does "
                             f"not fit its output ({outputs[HIDDEN]['shape'][-1]}) and {len(self.class_names)} classes")
        self.input_scale, self.input_zero_point = image["quantization"]
        if not np.isclose(self.input_scale, stored_input[0]) or self.input_zero_point != stored_input[1]:
            raise ModelError(f"{self.path}: input quantization {image['quantization']} differs from its metadata "
                             f"{stored_input}")
        self.output_quantization = {name: outputs[name]["quantization"] for name in (HIDDEN, FEATURES)}

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        hidden, features = [], []
        for image in np.asarray(batch, dtype=np.float32):
            quantized = np.clip(np.round(image / self.input_scale) + self.input_zero_point, -128, 127)
            outputs = self.runner(**{INPUT: quantized.astype(np.int8)[None]})
            hidden.append(dequantize(outputs[HIDDEN], self.output_quantization[HIDDEN]))
            features.append(dequantize(outputs[FEATURES], self.output_quantization[FEATURES]))
        if not hidden:
            return np.empty((0, len(self.class_names)), np.float32), None
        probabilities = softmax(np.concatenate(hidden) @ self.weights + self.bias)
        if self.bank is None:
            return probabilities, None
        return probabilities, neighbour_agreement(np.concatenate(features), probabilities, self.bank,
                                                  self.bank_labels, self.neighbours)

    def describe(self) -> str:
        return f"{self.runtime}, {self.placement.describe()}"


@dataclass(frozen=True)
class ModelFacts:
    """What a semdefect .tflite file carries besides its graph."""

    metadata: ModelMetadata
    input: tuple[float, int]                  # the int8 input's scale and zero point
    last_layer: tuple[np.ndarray, np.ndarray]  # float32 weights (inputs x classes) and biases
    bank: np.ndarray | None                   # the review bank's unit-length features; None: no neighbour score
    bank_labels: np.ndarray
    neighbours: int


def read_model_facts(content: bytes, path: Path) -> ModelFacts:
    """The metadata, input quantization, last layer and review bank of a file; errors name the file."""
    try:
        entries = read_metadata(content)
        if METADATA_ENTRY not in entries:
            raise ModelError(f"{path}: model has no semdefect metadata; export it with export_tflite.py")
        pairs = json.loads(entries[METADATA_ENTRY])
        if not isinstance(pairs, dict) or not all(isinstance(v, str) for v in pairs.values()):
            raise ValueError(f"'{METADATA_ENTRY}' is not a JSON object of strings")
        metadata = ModelMetadata.from_strings(pairs, path)
        scale, zero_point = json.loads(pairs[INPUT_QUANTIZATION])
        shape = json.loads(pairs[LAST_LAYER])
        inputs, classes = int(shape["inputs"]), int(shape["outputs"])
        raw = entries.get(HEAD_ENTRY, b"")
        if len(raw) != 4 * (inputs * classes + classes):
            raise ValueError(f"'{HEAD_ENTRY}' holds {len(raw)} bytes, not a {inputs}x{classes} layer")
        values = np.frombuffer(raw, np.float32)
        last_layer = (values[: inputs * classes].reshape(inputs, classes), values[inputs * classes:])
        facts = ModelFacts(metadata, (float(scale), int(zero_point)), last_layer, None, np.empty(0, np.uint8), 0)
        if metadata.review is None or metadata.review.score != AGREEMENT_SCORE:
            return facts
        shape = json.loads(pairs[REVIEW_BANK])
        images, width, neighbours = int(shape["images"]), int(shape["features"]), int(shape["neighbours"])
        raw = entries.get(BANK_ENTRY, b"")
        if len(raw) != images * width * 2 + images or not 0 < neighbours <= images:
            raise ValueError(f"'{BANK_ENTRY}' holds {len(raw)} bytes, not a bank of {images}x{width}")
        bank = np.frombuffer(raw[: images * width * 2], np.float16).reshape(images, width).astype(np.float32)
        labels = np.frombuffer(raw[images * width * 2:], np.uint8)
        if labels.max(initial=0) >= len(metadata.class_names):
            raise ValueError(f"'{BANK_ENTRY}' has class indices beyond the {len(metadata.class_names)} classes")
    except TfliteFormatError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:  # json errors are ValueErrors
        raise ModelError(f"{path}: bad semdefect metadata in the TFLite file: {exc}") from None
    return replace(facts, bank=bank, bank_labels=labels, neighbours=neighbours)


def load_delegate(interpreter: Any, path: Path) -> Any:
    """An external delegate (an NPU's .so); one clear line when it cannot be loaded."""
    if not Path(path).is_file():
        raise ModelError(f"--delegate {path}: no such file (the i.MX BSP installs its delegates in /usr/lib)")
    with captured_stderr() as log:
        try:
            return interpreter.load_delegate(str(path))
        except (OSError, ValueError, RuntimeError) as exc:
            message = first_line(str(exc)) or first_line(log[0] if log else "")
    raise ModelError(f"--delegate {path}: cannot load it: {message}")


def placement(interpreter: Any, content: bytes, running: Any, delegate: Path | None) -> Placement:
    """How many of the model's operators the delegate took. The Python API has no placement report: after
    delegation the interpreter lists the model's own nodes, then one DELEGATE node per partition it handed to the
    delegate; a node belongs to a partition when it lies between that partition's inputs and outputs."""
    if delegate is None:
        return Placement(None, 0, 0, 0)
    try:
        with captured_stderr():
            plain = interpreter.Interpreter(model_content=content, experimental_op_resolver_type=interpreter.
                                            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        count = len(plain._get_ops_details())
        ops = running._get_ops_details()
        producer = {tensor: op["index"] for op in ops[:count] for tensor in op["outputs"]}
        taken: set[int] = set()
        partitions = ops[count:]
        for partition in partitions:
            inputs, pending = set(partition["inputs"]), list(partition["outputs"])
            while pending:
                tensor = pending.pop()
                if tensor in inputs or tensor not in producer or producer[tensor] in taken:
                    continue
                taken.add(producer[tensor])
                pending += list(ops[producer[tensor]]["inputs"])
        return Placement(str(delegate), count, len(taken), len(partitions))
    except Exception:  # a private API: an interpreter without it still runs; the count is then unknown
        return Placement(str(delegate), 0, None, None)


def dequantize(values: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    scale, zero_point = quantization
    result: np.ndarray = (np.asarray(values, np.float32) - zero_point) * np.float32(scale)
    return result


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: np.ndarray = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    return result


def first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""
