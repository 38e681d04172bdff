"""Which images of a new source should a person label first (workstation side).

With a budget of N, the images are grouped into N groups of look-alikes (k-means on the model's pooled features,
unit length), and the most typical image of each group, the one nearest its centre, is picked: N labels that
together stand for everything the folder holds, the largest groups first. On the held-out source of the protocol
this beat the images the model is least sure of, and k-center greedy on the features, which both favour outliers
that say little about the rest (docs/new-fab.md has the figures).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import DatasetError, ImageError, ModelError
from semdefect.board.files import find_images
from semdefect.board.images import load_image

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """The unlabelled images, with what the model says of each."""

    class_names: list[str]
    paths: list[Path]
    features: np.ndarray       # (n, d), unit length
    probabilities: np.ndarray  # calibrated (n, classes)
    scores: np.ndarray         # review scores (n,)


def load_pool(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    if not folder.exists():
        raise DatasetError(f"--images {folder} does not exist")
    files, problems = find_images([folder])
    if not files:
        raise DatasetError(f"--images {folder}: no images found")
    return files, problems


def onnx_with_features(path: Path) -> Any:
    """An onnxruntime session over the model with its features (the review head's input) as one more output.

    The features are the tensor that enters the review head (the nodes only its output needs) from the rest of the
    graph, other than the probabilities."""
    import onnx
    import onnxruntime as ort

    from semdefect.board.runtime import session_options
    from semdefect.deploy.export import review_head

    proto = onnx.load(str(path))
    head = set(review_head(proto.graph))
    if not head:
        raise ModelError(f"{path}: has no review head, so no features to compare images by; use the .keras model")
    produced_outside = {out for node in proto.graph.node if node.name not in head for out in node.output}
    entering = {name for node in proto.graph.node if node.name in head for name in node.input
                if name in produced_outside}
    entering.discard(proto.graph.output[0].name)
    if len(entering) != 1:
        raise ModelError(f"{path}: cannot tell the features entering its review head ({sorted(entering)})")
    proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(entering.pop()))
    return ort.InferenceSession(proto.SerializeToString(), sess_options=session_options(),
                                providers=["CPUExecutionProvider"])


def describe(model_path: Path, files: list[Path], batch_size: int = 64) -> tuple[Pool, list[tuple[Path, str]]]:
    """Features, calibrated probabilities and review scores of every readable file, from one pass of the model;
    unreadable files are returned."""
    from semdefect.board.review import calibrate, review_scores
    from semdefect.evaluation.scoring import load_classifier

    classifier = load_classifier(model_path)
    arrays, kept, skipped = [], [], []
    for path in files:
        try:
            arrays.append(load_image(path, classifier.prep))
            kept.append(path)
        except ImageError as exc:
            skipped.append((path, str(exc)))
    if not arrays:
        raise DatasetError(f"none of the {len(files)} images could be read")
    x = np.stack(arrays)
    if model_path.suffix == ".keras":  # the model's outputs with its features as one more
        import keras

        from semdefect.training.model import feature_layer

        model = classifier.model  # type: ignore[attr-defined]
        with_features = keras.Model(model.inputs, [*model.outputs, model.get_layer(feature_layer(model)).output])
        run = with_features.predict_on_batch
    else:
        session = onnx_with_features(model_path)
        name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> Any:
            return session.run(None, {name: batch})
    outputs = [[np.asarray(o) for o in run(x[i:i + batch_size])] for i in range(0, len(x), batch_size)]
    raw, features = np.concatenate([o[0] for o in outputs]), np.concatenate([o[-1] for o in outputs])
    agreement = np.concatenate([o[1] for o in outputs]) if len(outputs[0]) == 3 else None
    review = classifier.metadata.review
    calibrated = calibrate(raw, review.temperature) if review else raw
    features = np.asarray(features, dtype=np.float64)
    features /= np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    return Pool(classifier.class_names, kept, features, np.asarray(calibrated),
                np.asarray(review_scores(calibrated, agreement), dtype=np.float64)), skipped


def pick(pool: Pool, budget: int) -> tuple[list[int], list[int]]:
    """Indices of at most `budget` images, in the order chosen, and how many images each one's group holds."""
    from sklearn.cluster import KMeans

    n = len(pool.paths)
    if budget <= 0 or not n:
        return [], []
    if budget >= n:  # every image is its own group
        return list(range(n)), [1] * n
    groups = KMeans(budget, n_init=3, random_state=0).fit(pool.features)
    sizes = np.bincount(groups.labels_, minlength=budget)
    chosen, held = [], []
    for group in np.argsort(-sizes, kind="stable"):
        members = np.flatnonzero(groups.labels_ == group)
        if len(members):  # identical images can leave a group empty
            # rounded, so that a tie (a group of two is one) goes to the first file whatever the model's format
            nearness = np.round(pool.features[members] @ groups.cluster_centers_[group], 4)
            chosen.append(int(members[np.argmax(nearness)]))
            held.append(len(members))
    return chosen, held
