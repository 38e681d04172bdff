"""Classify image files with an ONNX model (board side: onnxruntime, numpy, Pillow).

Files are decoded and preprocessed by a small thread pool while the session runs the previous batch
(Pillow and onnxruntime both release the GIL), so the board's cores work together. An unreadable file
becomes an error row; it never stops the batch. Each row says whether the model's answer can be taken (`decision`
accept) or should go to a person (review), from its review score and the threshold (board/review.py).
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import cast

import numpy as np

from .errors import ImageError
from .files import write_json_atomic, write_text_atomic
from .images import load_image
from .review import decisions
from .runtime import Classifier, top_k

COLUMNS = ("path", "label", "confidence", "top3", "status", "error", "decision", "score")


@dataclass
class Row:
    path: str
    label: str = ""
    confidence: float | None = None
    top3: list[tuple[str, float]] | None = None
    status: str = "ok"
    error: str = ""
    decision: str = ""  # accept | review; empty on an error row
    score: float | None = None


def error_row(path: Path, reason: str) -> Row:
    return Row(str(path), status="error", error=reason)


def classify(classifier: Classifier, paths: Sequence[Path], threshold: float | None, batch_size: int = 32,
             workers: int = 2, ahead: int = 2) -> Iterator[Row]:
    """Yield one row per path, in order; an image whose review score is below `threshold` gets decision review
    (None: every image is accepted).

    The pool decodes up to `ahead` batches beyond the one the session is running, so decoding and inference
    overlap instead of taking turns.
    """
    prep = classifier.prep

    def load(path: Path) -> np.ndarray | str:
        try:
            return load_image(path, prep)
        except ImageError as exc:
            return str(exc)

    batches = (paths[start:start + batch_size] for start in range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        queued = deque((chunk, [pool.submit(load, p) for p in chunk]) for chunk in islice(batches, ahead + 1))
        while queued:
            chunk, futures = queued.popleft()
            following = next(batches, None)
            if following is not None:
                queued.append((following, [pool.submit(load, p) for p in following]))
            loaded = [future.result() for future in futures]
            good = [i for i, item in enumerate(loaded) if not isinstance(item, str)]
            probabilities, scores = (classifier.predict_scored(np.stack([loaded[i] for i in good])) if good
                                     else (np.empty((0, 0)), np.empty(0)))
            by_index = dict(zip(good, zip(probabilities, scores, decisions(scores, threshold))))
            for i, path in enumerate(chunk):
                if i not in by_index:
                    yield error_row(path, cast(str, loaded[i]))  # not predicted: its load gave the error text
                    continue
                image_probabilities, score, decision = by_index[i]
                best = top_k(image_probabilities, classifier.class_names, 3)
                yield Row(str(path), best[0][0], best[0][1], best, decision=decision, score=float(score))


def format_top3(top3: list[tuple[str, float]] | None) -> str:
    return " ".join(f"{name}:{p:.3f}" for name, p in top3 or [])


def console_line(row: Row) -> str:
    """The line printed for a row: tab-separated answer, or the error."""
    if row.status != "ok":
        return f"{row.path}\tERROR\t{row.error}"
    return f"{row.path}\t{row.label}\t{row.confidence:.3f}\t{format_top3(row.top3)}\t{row.decision}"


def json_record(r: Row) -> dict[str, object]:
    """A row as JSON (`--output F.json` and the watch's JSON Lines)."""
    return {"path": r.path, "label": r.label, "confidence": r.confidence,
            "top3": [{"label": n, "confidence": p} for n, p in r.top3 or []],
            "status": r.status, "error": r.error, "decision": r.decision, "score": r.score}


def csv_fields(r: Row) -> list[str]:
    """A row's CSV fields, in COLUMNS order."""
    return [r.path, r.label, "" if r.confidence is None else f"{r.confidence:.4f}", format_top3(r.top3), r.status,
            r.error, r.decision, "" if r.score is None else f"{r.score:.4f}"]


def write_rows(rows: Sequence[Row], path: Path) -> None:
    """CSV or JSON by the file's suffix, written atomically."""
    if path.suffix.lower() == ".json":
        write_json_atomic(path, [json_record(r) for r in rows])
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(csv_fields(r) for r in rows)
    write_text_atomic(path, buffer.getvalue())
