"""The ONNX session on the board (onnxruntime + numpy only) and the interface every model offers.

`Classifier` is what evaluation and inference need of any model, whatever its file: its metadata, `predict`
(preprocessed images -> calibrated probabilities) and `predict_scored` (the review scores too). Each kind of model
file only says how to run it (`run`: its raw outputs); calibration and the review score are the same code for all.
`OnnxClassifier` is the board's; the workstation adds one for `.keras`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .images import Preprocess
from .metadata import ModelMetadata, check_model_file
from .review import AGREEMENT_OUTPUT, AGREEMENT_SCORE, calibrate, review_scores


def session_options(threads: int = 0, spin: bool = True) -> Any:  # an ort.SessionOptions; onnxruntime has no stubs
    """Session options: threads=0 lets onnxruntime choose (one per physical core).

    spin=False stops idle session threads from busy-waiting for the next run: right when other threads (image
    decoding) need the same cores.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class Classifier:
    """What evaluation and inference need of any model: its facts, `predict` (images -> calibrated probabilities)
    and `predict_scored` (the review scores too)."""

    path: Path
    metadata: ModelMetadata

    @property
    def class_names(self) -> list[str]:
        return self.metadata.class_names

    @property
    def prep(self) -> Preprocess:
        return self.metadata.prep

    @property
    def threshold(self) -> float | None:
        """The review threshold the model carries; None: no review bin."""
        return self.metadata.review.threshold if self.metadata.review else None

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The model's own outputs: uncalibrated probabilities (n, classes) and, for a model with a review bin, the
        neighbour agreement of each image (n,); else None."""
        raise NotImplementedError

    def predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities (n, classes) and the review score of each image (n,)."""
        probabilities, agreement = self.run(batch)
        review = self.metadata.review
        if review:
            probabilities = calibrate(probabilities, review.temperature)
        return probabilities, review_scores(probabilities, agreement)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, classes): the model's, at the temperature it carries."""
        return self.predict_scored(batch)[0]

    def describe(self) -> str:
        """What runs the model, and on what (the inference summary says it)."""
        return type(self).__name__


class OnnxClassifier(Classifier):
    """An ONNX model with its metadata: `predict` takes preprocessed images and returns probabilities."""

    def __init__(self, path: Path, threads: int = 0, spin: bool = True):
        import onnxruntime as ort

        self.path = check_model_file(path, ".onnx")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options(threads, spin),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: cannot load ONNX model: {first_line}") from None
        self.metadata = ModelMetadata.from_strings(self.session.get_modelmeta().custom_metadata_map, self.path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [output.name for output in outputs]
        has_agreement = self.metadata.review is not None and self.metadata.review.score == AGREEMENT_SCORE
        wanted = ["probabilities", AGREEMENT_OUTPUT] if has_agreement else ["probabilities"]
        if len(inputs) != 1 or len(outputs) != len(wanted) or (has_agreement and names[1] != AGREEMENT_OUTPUT):
            raise ModelError(f"{self.path}: expected one input and the outputs {', '.join(wanted)} (as its "
                             f"metadata says), found {len(inputs)} input(s) and {', '.join(names)}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        size = self.metadata.prep.image_size
        expected = (size, size, 1)
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected)):
            raise ModelError(f"{self.path}: input shape {shape} does not match its metadata ({size}x{size}x1)")
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        n_out = outputs[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.metadata.class_names):
            raise ModelError(f"{self.path}: {n_out} outputs but {len(self.metadata.class_names)} class names "
                             "in metadata")

    def describe(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}, CPU"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is None:
            outputs = self.session.run(None, {self.input_name: batch})
        else:  # a fixed-batch model (batch 1 for an NPU, say) takes the images a group at a time, the last one padded
            step = self.fixed_batch
            parts = []
            for start in range(0, len(batch), step):
                chunk = batch[start:start + step]
                padded = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], np.float32)])
                parts.append([output[: len(chunk)] for output in self.session.run(None, {self.input_name: padded})])
            outputs = [np.concatenate(part) for part in zip(*parts)]
        return outputs[0], outputs[1] if len(outputs) > 1 else None


def open_classifier(path: Path, threads: int = 0, spin: bool = True, delegate: Path | None = None) -> Classifier:
    """The board's classifier for a model file, by its suffix: .onnx (onnxruntime) or .tflite (LiteRT, optionally
    with an NPU delegate)."""
    path = Path(path)
    if path.suffix == ".tflite":
        from .tflite import TfliteClassifier

        return TfliteClassifier(path, threads, delegate)
    if delegate is not None:
        raise ModelError(f"--delegate {delegate}: delegates run .tflite models; {path} is not one")
    if path.is_file() and path.suffix != ".onnx":
        raise ModelError(f"{path}: expected a .onnx or .tflite model file")
    return OnnxClassifier(path, threads, spin)


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The k most probable classes of one image, best first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(class_names[i], float(probabilities[i])) for i in order]
