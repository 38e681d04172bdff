"""Files in and out: image listings and atomic writes (board side: standard library only).

Every output goes to a temporary name in the same folder and is renamed into place, so a crash or a
power cut leaves the previous file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def find_images(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders (recursively, sorted) into image files.

    Returns (images, problems): a path that does not exist or a folder that cannot be listed becomes a
    problem with its reason instead of stopping the walk. Symlinked folders are followed once, so a
    symlink loop ends instead of recursing forever.
    """
    images: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            walk_folder(path, images, problems, seen=set())
        elif path.exists():
            images.append(path)  # a file named explicitly is tried whatever its extension
        else:
            problems.append((path, "no such file or folder"))
    return images, problems


def walk_folder(folder: Path, images: list[Path], problems: list[tuple[Path, str]], seen: set[str]) -> None:
    real = os.path.realpath(folder)
    if real in seen:
        problems.append((folder, "symlink loop, folder already visited"))
        return
    seen.add(real)
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        problems.append((folder, f"cannot list folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        try:
            if entry.is_dir():
                walk_folder(entry, images, problems, seen)
            elif is_image_name(entry):
                images.append(entry)
        except OSError as exc:  # e.g. a symlink loop reported by stat itself
            problems.append((entry, f"cannot read: {exc.strerror or exc}"))
