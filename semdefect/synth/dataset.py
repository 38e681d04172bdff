"""The generator's public API: one image (`generate_image`), a dataset in split folders, a contact sheet.

Every image draws from its own random stream, derived from (seed, class index, image index), so any image
can be remade alone and the files depend neither on generation order nor on the output folder; PNGs are
written with no time or path chunks, so the same arguments give byte-identical files.

Writes DIR/{train,val,test}/<class>/synth_<class>_<index>.png (DIR/<class>/ without a split).
Made by `python generate_images.py` (semdefect.commands.generate_images).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semdefect import CLASS_NAMES
from semdefect.board.errors import SemdefectError
from semdefect.synth.defects import DEFECTS
from semdefect.synth.primitives import dilate
from semdefect.synth.render import render
from semdefect.synth.scenes import REFERENCE_SIZE, make_scene

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_SIZE = 32
SHEET_COLUMNS = 6


class UsageError(SemdefectError, ValueError):
    """A bad command-line argument or API parameter; main() prints it as one line and exits 2."""


def image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The random stream of one image, so that it does not depend on which images were made before it."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, index]))


def generate_image(class_name: str, rng: np.random.Generator, size: int = 128, difficulty: float = 0.5,
                   defect: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """One synthetic SEM image of `class_name`: a uint8 (size, size) array and an info dict.

    info: "defect_mask" (bool, True where the defect was put; all False for clean), "background"
    ("grating", "holes" or "blank"), "data_bar" (bool), "bar_rows", "variant" (the defect's sub-type).
    The scene, the defect and the imaging draw from separate child streams of `rng`, so `defect=False`
    gives the very same image without the defect: the control that tests and paired studies need.
    """
    if class_name not in CLASS_NAMES:
        raise UsageError(f"unknown class {class_name!r}; expected one of {', '.join(CLASS_NAMES)}")
    if size < MIN_SIZE:
        raise UsageError(f"size must be at least {MIN_SIZE}, got {size}")
    if not 0.0 <= difficulty <= 1.0:
        raise UsageError(f"difficulty must be between 0 and 1, got {difficulty}")
    scene_rng, defect_rng, render_rng = rng.spawn(3)
    scene = make_scene(class_name, scene_rng, size)
    mask = np.zeros((size, size), bool)
    variant = None
    if class_name in DEFECTS:
        # A draw can leave no visible trace (a sub-pixel change at a small size): draw again, a few times.
        for _ in range(3):
            target = scene.copy()
            mask, variant = DEFECTS[class_name](target, defect_rng, difficulty)
            mask[scene.usable:] = False
            if mask.any():
                break
        # Without the defect the exposure is still set from the same pixels, so the pair differs only there.
        if defect:
            scene = target
    image = render(scene, render_rng, difficulty, exclude=dilate(mask, 2))
    if not defect:
        mask = np.zeros((size, size), bool)
    info = {"defect_mask": mask, "background": scene.kind, "data_bar": scene.bar > 0, "bar_rows": scene.bar,
            "variant": variant}
    return image, info


def split_counts(per_class: int, split: tuple[int, int, int]) -> tuple[int, int, int]:
    """Images per split for one class, exact from the percentages: floors, then the remaining images to
    the largest remainders (earlier splits win ties). 20 at 70/15/15 -> 14/3/3."""
    floors = [per_class * r // 100 for r in split]
    rests = [per_class * r % 100 for r in split]
    for i in sorted(range(3), key=lambda i: (-rests[i], i))[: per_class - sum(floors)]:
        floors[i] += 1
    return floors[0], floors[1], floors[2]


def write_png(image: np.ndarray | Image.Image, path: Path) -> None:
    """Write a PNG atomically (temporary name in the same folder, then rename): a crash leaves the old
    file or the new one, never half. Pillow writes no time or path chunks, so the bytes depend on the
    pixels alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def generate_dataset(out: Path, per_class: int, size: int, seed: int, split: tuple[int, int, int] | None,
                     difficulty: float) -> list[Path]:
    """Write per_class images of every class under `out` (in split folders if `split`); return the paths.

    Image i of a class is the same picture whatever the split: the split only decides its folder
    (the first images go to train, then val, then test). Files of an earlier run that this run did not
    overwrite are left alone but reported, since they would silently change the dataset.
    """
    out = Path(out)
    check_params(per_class, size, seed, split, difficulty)
    written: list[Path] = []
    for ci, name in enumerate(CLASS_NAMES):
        counts = (per_class,) if split is None else split_counts(per_class, split)
        parents = [out] if split is None else [out / s for s in SPLITS]
        folders = [parent / name for parent, n in zip(parents, counts) for _ in range(n)]
        for i, folder in enumerate(folders):
            image, _ = generate_image(name, image_rng(seed, ci, i), size, difficulty)
            path = folder / f"synth_{name}_{i:05d}.png"
            write_png(image, path)
            written.append(path)
        detail = "" if split is None else " (" + ", ".join(f"{s} {n}" for s, n in zip(SPLITS, counts)) + ")"
        log.info("%s: %d images%s", name, per_class, detail)
    stale = sorted(set(out.rglob("synth_*.png")) - set(written)) if out.is_dir() else []
    if stale:
        log.warning("%d synth_*.png files under %s were not written by this run (left in place), e.g. %s",
                    len(stale), out, stale[0])
    return written


def contact_sheet(seed: int, size: int, difficulty: float, columns: int = SHEET_COLUMNS) -> Image.Image:
    """A grid of the first `columns` images of each class (the same pictures as the files), one labelled row each."""
    thumb = min(size, REFERENCE_SIZE)
    label_w, gap, top = 110, 2, 22
    sheet = Image.new("L", (label_w + columns * (thumb + gap), top + len(CLASS_NAMES) * (thumb + gap)), 255)
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=14)
    except (ImportError, OSError):  # Pillow built without FreeType: the small bitmap font still labels the rows
        font = ImageFont.load_default()
    draw.text((4, 3), f"semdefect.synth  seed {seed}  size {size}  difficulty {difficulty}  images 0-{columns - 1}",
              fill=0, font=font)
    for ci, name in enumerate(CLASS_NAMES):
        y = top + ci * (thumb + gap)
        draw.text((4, y + thumb // 2 - 8), name, fill=0, font=font)
        for i in range(columns):
            image, _ = generate_image(name, image_rng(seed, ci, i), size, difficulty)
            tile = Image.fromarray(image)
            if thumb != size:
                tile = tile.resize((thumb, thumb), Image.Resampling.LANCZOS)
            sheet.paste(tile, (label_w + i * (thumb + gap), y))
    return sheet


def check_params(per_class: int, size: int, seed: int, split: tuple[int, int, int] | None,
                 difficulty: float) -> None:
    """Refuse generation parameters outside their ranges, naming the option, before any file is written."""
    if per_class < 0:
        raise UsageError(f"--per-class must be 0 or more, got {per_class}")
    if size < MIN_SIZE:
        raise UsageError(f"--size must be at least {MIN_SIZE}, got {size}")
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {seed}")
    if not 0.0 <= difficulty <= 1.0:
        raise UsageError(f"--difficulty must be between 0 and 1, got {difficulty}")
    if split is not None and (len(split) != 3 or sum(split) != 100 or min(split) < 0):
        raise UsageError(f"split must be three non-negative percentages summing to 100, got {split}")
