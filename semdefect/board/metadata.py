"""Model metadata: what every semdefect model file says about itself, so the board needs no config.

Contract (DESIGN.md; all values strings): `class_names` (JSON list), `image_size`, `channels`, `preprocess`
(JSON, see `images.Preprocess.to_json`), `semdefect_version`, and optionally `review` (JSON, see
`review.ReviewSettings`; a model without it has no review bin). ONNX files hold them as metadata_props, `.keras`
files as one more member of their zip (`KERAS_MEMBER`).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ModelError
from .images import Preprocess
from .review import REVIEW_KEY, ReviewSettings

METADATA_KEYS = ("class_names", "image_size", "channels", "preprocess", "semdefect_version")
KERAS_MEMBER = "semdefect.json"  # the metadata inside a .keras zip


@dataclass(frozen=True)
class ModelMetadata:
    """What a model file says about itself: its output classes, its preprocessing, the version that wrote it and,
    when it has a review bin, its calibration and review threshold."""

    class_names: list[str]
    prep: Preprocess
    version: str
    review: ReviewSettings | None = None

    @classmethod
    def create(cls, class_names: Sequence[str], prep: Preprocess, version: str) -> ModelMetadata:
        return cls(list(class_names), prep, version)

    def with_review(self, review: ReviewSettings | None) -> ModelMetadata:
        return replace(self, review=review)

    def to_strings(self) -> dict[str, str]:
        """The metadata as the string pairs a model file stores."""
        return {
            "class_names": json.dumps(self.class_names),
            "image_size": str(self.prep.image_size),
            "channels": "1",
            "preprocess": self.prep.to_json(),
            "semdefect_version": self.version,
        } | ({REVIEW_KEY: self.review.to_json()} if self.review else {})

    @classmethod
    def from_strings(cls, pairs: dict[str, str], source: Path) -> ModelMetadata:
        """Validate a model file's metadata; errors name the file and the key."""
        missing = [key for key in METADATA_KEYS if key not in pairs]
        if missing:
            raise ModelError(f"{source}: model has no semdefect metadata ({', '.join(missing)} missing); "
                             "export it with export_onnx.py")
        try:
            class_names = json.loads(pairs["class_names"])
            if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
                raise ValueError("class_names is not a JSON list of strings")
            prep = Preprocess.from_json(pairs["preprocess"])
            if int(pairs["image_size"]) != prep.image_size or int(pairs["channels"]) != 1:
                raise ValueError("image_size/channels disagree with preprocess")
        except ValueError as exc:
            raise ModelError(f"{source}: bad semdefect metadata: {exc}") from None
        review = ReviewSettings.from_json(pairs[REVIEW_KEY], source) if REVIEW_KEY in pairs else None
        return cls(class_names, prep, pairs["semdefect_version"], review)


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
