"""Find splits and class folders, list their images and load them through the one preprocessing path.

A dataset root holds `train/`, `val/` and `test/`, each with one folder per class. Any folder of class folders
can also be evaluated on its own. Missing or empty class folders are allowed (with a warning: the model still has
an output per class); a folder whose name is not a class is an error, since its images would be silently ignored.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semdefect.board.errors import DatasetError, ImageError
from semdefect.board.files import IMAGE_EXTENSIONS, is_image_name
from semdefect.board.images import Preprocess, load_image

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class LabelledFiles:
    """The image files of one split (or folder of class folders), with their class indices."""

    folder: Path
    paths: list[Path]
    labels: list[int]


@dataclass
class LoadedSplit:
    """Preprocessed images in memory: x is float32 (n, size, size, 1), y holds class indices."""

    folder: Path
    x: np.ndarray
    y: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]]


def split_folder(root: Path, split: str) -> Path:
    """The folder of one split of a dataset root, or an error that names what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    folder = root / split
    if not folder.is_dir():
        raise DatasetError(f"dataset {root} has no '{split}' split folder (expected {root}/{split}/<class>/)")
    return folder


def resolve_eval_folder(data: Path, split: str, class_names: Sequence[str]) -> Path:
    """`data` is a dataset root (use its `split`) or itself a folder of class folders."""
    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"dataset folder {data} does not exist" if not data.exists() else f"{data} is not a folder")
    if (data / split).is_dir():
        return data / split
    names = {unicodedata.normalize("NFC", name) for name in class_names}
    if any(child.is_dir() and unicodedata.normalize("NFC", child.name) in names for child in data.iterdir()):
        return data
    return split_folder(data, split)


def list_labelled_files(folder: Path, class_names: Sequence[str]) -> LabelledFiles:
    """List the images of a folder of class folders, sorted, labelled by the folder name."""
    folder = Path(folder)
    try:
        subfolders = sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from None
    if not subfolders:
        raise DatasetError(f"{folder} has no class folders (expected {folder}/<class>/ for: {', '.join(class_names)})")
    # a folder copied from a Mac has its name in NFD form; a class name is compared in NFC
    by_name = {unicodedata.normalize("NFC", child.name): child for child in subfolders}
    names = [unicodedata.normalize("NFC", name) for name in class_names]
    unknown = [name for name in by_name if name not in names]
    if unknown:
        raise DatasetError(f"{folder}: class folder(s) {', '.join(unknown)} are not among the model's classes "
                           f"({', '.join(class_names)})")
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(names):
        class_dir = by_name.get(name, folder / name)
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and is_image_name(p)) if class_dir.is_dir() else []
        if not files:
            log.warning("%s: class '%s' has no images", folder, name)
        others = [p.name for p in class_dir.iterdir() if p.is_file() and not is_image_name(p)
                  and not p.name.startswith(".")] if class_dir.is_dir() else []
        if others:
            log.warning("%s: ignoring %d file(s) without an image extension (%s), e.g. %s",
                        class_dir, len(others), " ".join(IMAGE_EXTENSIONS), others[0])
        paths += files
        labels += [index] * len(files)
    return LabelledFiles(folder, paths, labels)


def load_files(files: LabelledFiles, prep: Preprocess) -> LoadedSplit:
    """Preprocess every listed image; an unreadable one is skipped with a warning naming it."""
    arrays, labels, kept, skipped = [], [], [], []
    for path, label in zip(files.paths, files.labels):
        try:
            arrays.append(load_image(path, prep))
        except ImageError as exc:
            log.warning("skipping %s", exc)
            skipped.append((path, str(exc)))
            continue
        labels.append(label)
        kept.append(path)
    if not arrays:
        raise DatasetError(f"{files.folder}: no readable image" + (f" ({len(skipped)} unreadable)" if skipped else ""))
    x = np.stack(arrays)
    return LoadedSplit(files.folder, x, np.asarray(labels, dtype=np.int64), kept, skipped)


def load_folder(folder: Path, class_names: Sequence[str], prep: Preprocess) -> LoadedSplit:
    """List and load a folder of class folders, logging how many images were read and skipped."""
    loaded = load_files(list_labelled_files(folder, class_names), prep)
    log.info("%s: %d images%s", folder, len(loaded.y),
             f", {len(loaded.skipped)} skipped" if loaded.skipped else "")
    return loaded


def load_split(root: Path, split: str, class_names: Sequence[str], prep: Preprocess) -> LoadedSplit:
    return load_folder(split_folder(root, split), class_names, prep)
