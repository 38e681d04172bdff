"""The labelled images a person gives `adapt_model.py`, and the classes the adapted model answers (workstation side).

Labels come as class folders (`--data DIR`: DIR/<class>/<image>), as a `labels.csv` with columns `path,label`
(`--labels`; what the labelling page saves; relative paths are read from the CSV's folder), or as Label Studio's JSON
export of an image-classification project (`--labels export.json`: each task's last annotation that was not
cancelled; the image is the task's `path` field, which the tasks `select_images.py --format label-studio` writes
carry, or a `/data/local-files/?d=` address). A label may name a class
the model never learnt: `--classes union` answers the model's classes plus the new ones (new ones after the model's,
sorted, so the known classes keep their output index), `--classes labelled` exactly the labelled classes, sorted
(a fab's own taxonomy). Class names are Unicode, compared in NFC form (a folder copied from a Mac arrives in NFD),
and two names that differ only in case are refused: a fab's `Particle` and the model's `particle` are one class
or a typo, never two.
"""

from __future__ import annotations

import csv
import json
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from semdefect.board.errors import DatasetError
from semdefect.board.files import is_image_name

log = logging.getLogger(__name__)

CLASS_MODES = ("union", "labelled")
CSV_COLUMNS = ("path", "label")


@dataclass
class Labels:
    """Labelled image files and each one's class name, in a stable order (by class name, then path)."""

    source: Path  # the folder or file they were read from, for messages
    paths: list[Path]
    names: list[str]

    def classes(self) -> list[str]:
        return sorted(set(self.names))


def class_name(raw: str, where: str) -> str:
    """A label as a class name: NFC, no surrounding blanks; refused when empty or unusable as a folder name."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise DatasetError(f"{where}: empty label")
    if any(ch in name for ch in "/\\") or name in (".", "..") or any(unicodedata.category(ch) == "Cc" for ch in name):
        raise DatasetError(f"{where}: label {raw!r} cannot be a class name (no slashes or control characters)")
    return name


def from_folders(folder: Path) -> Labels:
    """DIR/<class>/<image>: every class folder must hold at least one image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--data {folder}: " + ("does not exist" if not folder.exists() else "is not a folder"))
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"--data {folder}: no class folders (expected {folder}/<class>/<image>)")
    pairs: list[tuple[str, Path]] = []
    for class_dir in class_dirs:
        name = class_name(class_dir.name, f"{class_dir}")
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and is_image_name(p))
        if not files:
            raise DatasetError(f"{class_dir}: class '{name}' has no images")
        pairs += [(name, p) for p in files]
    return ordered(folder, pairs)


def read_csv(path: Path, option: str = "") -> list[list[str]]:
    """The rows of a UTF-8 CSV file (a byte-order mark allowed, as spreadsheets write it); errors name the file."""
    name = f"{option} {path}".strip()
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            return list(csv.reader(handle))
    except OSError as exc:
        raise DatasetError(f"{name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{name}: not UTF-8 text") from None


def from_csv(path: Path) -> Labels:
    """A labels.csv (UTF-8, header `path,label`); every row must name an existing image and a label."""
    path = Path(path)
    rows = read_csv(path, "--labels")
    if not rows or [c.strip() for c in rows[0][:2]] != list(CSV_COLUMNS):
        raise DatasetError(f"--labels {path}: the first line must be the header '{','.join(CSV_COLUMNS)}'")
    seen: dict[Path, tuple[str, int]] = {}
    pairs: list[tuple[str, Path]] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line, e.g. at the end
        where = f"{path}, line {line}"
        if len(row) < 2 or not row[0].strip():
            raise DatasetError(f"{where}: needs a path and a label")
        image = Path(row[0].strip())
        image = image if image.is_absolute() else path.parent / image
        name = class_name(row[1], where)
        if not image.is_file():
            raise DatasetError(f"{where}: image {image} does not exist")
        key = image.resolve()
        if key in seen:
            if seen[key][0] != name:
                raise DatasetError(f"{where}: {image} is labelled '{name}' here and '{seen[key][0]}' on line "
                                   f"{seen[key][1]}")
            continue
        seen[key] = (name, line)
        pairs.append((name, image))
    if not pairs:
        raise DatasetError(f"--labels {path}: no labelled rows")
    return ordered(path, pairs)


def from_label_studio(path: Path) -> Labels:
    """Label Studio's JSON export (a list of tasks). A task the labeller skipped (every annotation cancelled) is left
    out, with a count; a task with no chosen class is an error naming it, as its image would silently go missing."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"--labels {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DatasetError(f"--labels {path}: not JSON ({exc})") from None
    if not isinstance(tasks, list):
        raise DatasetError(f"--labels {path}: expected Label Studio's JSON export, a list of tasks")
    pairs: list[tuple[str, Path]] = []
    skipped = 0
    for number, task in enumerate(tasks, start=1):
        where = f"{path}, task {task.get('id', number) if isinstance(task, dict) else number}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DatasetError(f"{where}: not a Label Studio task (no 'data')")
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        if annotations and all(a.get("was_cancelled") for a in annotations):
            skipped += 1
            continue
        choice = task_choice(annotations, where)
        pairs.append((class_name(choice, where), task_image(task["data"], path.parent, where)))
    if skipped:
        log.warning("%s: %d task(s) skipped by the labeller left out", path, skipped)
    if not pairs:
        raise DatasetError(f"--labels {path}: no annotated task")
    return ordered(path, pairs)


def task_choice(annotations: list[dict[str, Any]], where: str) -> str:
    """The class the last annotation that was not cancelled chose."""
    kept = [a for a in annotations if not a.get("was_cancelled")]
    chosen = [c for r in (kept[-1].get("result") or [] if kept else []) if isinstance(r, dict)
              and r.get("type") == "choices" for c in (r.get("value") or {}).get("choices") or []]
    if not chosen:
        raise DatasetError(f"{where}: no class chosen (annotate it, skip it, or leave it out of the export)")
    if len(chosen) > 1:
        raise DatasetError(f"{where}: {len(chosen)} choices ({', '.join(map(str, chosen))}); one class per image")
    return str(chosen[0])


def task_image(data: dict[str, Any], folder: Path, where: str) -> Path:
    """The image file of a task: its `path` field, else the file a local-files address names (relative paths from
    the export's folder)."""
    text = data.get("path")
    if not isinstance(text, str):
        address = str(data.get("image", ""))
        files = parse_qs(urlparse(address).query).get("d")
        if not address.startswith("/data/local-files/") or not files:
            raise DatasetError(f"{where}: image {address!r} is not a local file (import the tasks "
                               "select_images.py --format label-studio writes: they carry the path)")
        text = files[0]
    image = Path(text)
    image = image if image.is_absolute() else folder / image
    if not image.is_file():
        raise DatasetError(f"{where}: image {image} does not exist")
    return image


def read_labels(path: Path) -> Labels:
    """--labels: a labels.csv, or Label Studio's JSON export (.json)."""
    return from_label_studio(path) if Path(path).suffix.lower() == ".json" else from_csv(path)


def ordered(source: Path, pairs: list[tuple[str, Path]]) -> Labels:
    pairs = sorted(pairs)
    return Labels(source, [p for _, p in pairs], [n for n, _ in pairs])


def target_classes(model_classes: Sequence[str], labelled: Sequence[str], mode: str) -> list[str]:
    """The classes the adapted model answers, in output order; errors name the clashing classes."""
    if mode not in CLASS_MODES:
        raise DatasetError(f"--classes {mode}: choose {' or '.join(CLASS_MODES)}")
    labelled = sorted(set(labelled))
    known = [unicodedata.normalize("NFC", c) for c in model_classes]
    by_fold: dict[str, str] = {}
    for name in (known if mode == "union" else []) + labelled:
        other = by_fold.setdefault(name.casefold(), name)
        if other != name:
            origin = "the model's class" if other in known and mode == "union" else "the labelled class"
            raise DatasetError(f"label '{name}' and {origin} '{other}' differ only in case: name them the same "
                               "if they are one class, else apart")
    if mode == "labelled":
        if len(labelled) < 2:
            raise DatasetError(f"--classes labelled: the labels name one class only ({labelled[0]}); a classifier "
                               "needs two or more")
        return labelled
    return known + [name for name in labelled if name not in known]
