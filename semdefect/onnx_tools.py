"""ONNX sessions and the metadata every semdefect model carries (board side: onnxruntime + numpy only).

Metadata contract (all values are strings): `class_names` (JSON list), `image_size`, `channels`,
`preprocess` (JSON, see `images.Preprocess.to_metadata`), `semdefect_version`. With these the board needs
no config file to preprocess an image or name an output.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError
from .images import Preprocess

REQUIRED_KEYS = ("class_names", "image_size", "channels", "preprocess", "semdefect_version")


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself."""

    class_names: list[str]
    prep: Preprocess
    version: str


def parse_facts(facts: dict[str, str], source: Path) -> ModelInfo:
    """Validate a model's metadata; errors name the file and the key."""
    missing = [key for key in REQUIRED_KEYS if key not in facts]
    if missing:
        raise ModelError(f"{source}: model has no semdefect metadata ({', '.join(missing)} missing); "
                         "export it with export_onnx.py")
    try:
        class_names = json.loads(facts["class_names"])
        if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
            raise ValueError("class_names is not a JSON list of strings")
        prep = Preprocess.from_metadata(facts["preprocess"])
        if int(facts["image_size"]) != prep.image_size or int(facts["channels"]) != 1:
            raise ValueError("image_size/channels disagree with preprocess")
    except ValueError as exc:
        raise ModelError(f"{source}: bad semdefect metadata: {exc}") from None
    return ModelInfo(class_names, prep, facts["semdefect_version"])


def check_model_file(path: Path, suffix: str) -> Path:
    """Refuse a missing file, a folder or a file of the other kind before a library gives a cryptic error."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a model file")
    if path.suffix != suffix:
        raise ModelError(f"{path}: expected a {suffix} model file")
    if suffix == ".onnx" and zipfile.is_zipfile(path):
        raise ModelError(f"{path}: this is a zip archive (a Keras model?), not an ONNX model")
    return path


def session_options(threads: int = 0, spin: bool = True):
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
    """What evaluation and inference need of any model: its facts and `predict` (images -> probabilities)."""

    path: Path
    info: ModelInfo

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    @property
    def prep(self) -> Preprocess:
        return self.info.prep

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


TTA_VIEWS = (1, 2, 4, 8)


def dihedral_views(batch: np.ndarray, views: int) -> list[np.ndarray]:
    """The batch seen `views` ways: as it is; + turned 180 degrees; + the two other quarter turns; + each mirrored.

    A top-down SEM image has no preferred orientation, so every view shows the same defect.
    """
    turns = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3), 8: (0, 1, 2, 3)}[views]
    out = [np.rot90(batch, k, axes=(1, 2)) for k in turns]
    if views == 8:
        out += [view[:, :, ::-1] for view in out]
    return [np.ascontiguousarray(view) for view in out]


class AveragedViews(Classifier):
    """Test-time augmentation: a model's mean probabilities over several views of each image (that many times
    the inference cost)."""

    def __init__(self, model: Classifier, views: int):
        if views not in TTA_VIEWS:
            raise ValueError(f"test-time views must be one of {TTA_VIEWS}, got {views}")
        self.model, self.views = model, views
        self.path, self.info = model.path, model.info

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.mean([self.model.predict(view) for view in dihedral_views(batch, self.views)], axis=0)


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
        self.info = parse_facts(self.session.get_modelmeta().custom_metadata_map, self.path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        size = self.info.prep.image_size
        expected = (size, size, 1)
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected)):
            raise ModelError(f"{self.path}: input shape {shape} does not match its metadata ({size}x{size}x1)")
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        n_out = outputs[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.info.class_names):
            raise ModelError(f"{self.path}: {n_out} outputs but {len(self.info.class_names)} class names in metadata")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is None:
            return self.session.run(None, {self.input_name: batch})[0]
        # A fixed-batch model (batch 1 for an NPU, say) takes the images a group at a time, the last one padded.
        step = self.fixed_batch
        parts = []
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            padded = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], np.float32)])
            parts.append(self.session.run(None, {self.input_name: padded})[0][: len(chunk)])
        return np.concatenate(parts)

def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The k most probable classes of one image, best first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(class_names[i], float(probabilities[i])) for i in order]
