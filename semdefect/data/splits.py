"""Leak-free splits and a leakage check, for datasets of class folders.

Why: public SEM defect sets hold near-duplicates of their val/test images in train (docs/data-tools.md), which
inflates accuracy by many points. `split` keeps each group of near-duplicates (semdefect.data.duplicates) inside one
split; `check` reports what a dataset someone else split gets wrong, leaks first.

A dataset root holds train/, val/, test/ (any of them), each with one folder per class. `split` also takes a
flat folder of class folders, or a split dataset whose splits it pools and redoes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from semdefect.board.errors import DatasetError, ImageError
from semdefect.board.files import IMAGE_EXTENSIONS, is_image_name, write_json_atomic
from semdefect.board.images import read_gray
from semdefect.config import Config, save_resolved
from semdefect.data.dataset import SPLITS
from semdefect.data.duplicates import DuplicateSettings, Fingerprint, Match, find_near_duplicates, fingerprint

log = logging.getLogger(__name__)

SPLIT_PAIRS = ("train-val", "train-test", "val-test")
REPORT_NAME = "split_report.json"     # written into DST by `split`
CONFIG_NAME = "split_config.yaml"     # the resolved config, beside it
RARE_FRACTION = 0.02                  # `check`: an image size or mode held by fewer than this share of images
                                      # is unusual


@dataclass
class ImageFile:
    """One image of a dataset: where it is, where it sits in the layout, and what scanning it found."""

    path: Path
    name: str                         # path as reported: relative to the dataset root, with '/'
    label: str                        # class folder
    split: str | None = None          # split folder, None in a flat folder of class folders
    md5: str = ""
    size: tuple[int, int] | None = None
    mode: str | None = None
    format: str | None = None
    error: str | None = None
    fp: Fingerprint | None = field(default=None, repr=False)


@dataclass
class Layout:
    """The images of a dataset root and whatever else was found where only class folders belong."""

    root: Path
    files: list[ImageFile]
    unexpected: list[dict[str, str]]
    split_layout: bool


# ---------------------------------------------------------------------------------------------------------
# Listing


def read_layout(root: Path, want_splits: bool | None) -> Layout:
    """List a dataset: `want_splits` True = train/val/test layout required, False = class folders required,
    None = whichever it is (split layout if any split folder exists)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    children = _listdir(root)
    split_dirs = [c for c in children if c.is_dir() and c.name in SPLITS]
    if want_splits is None:
        want_splits = bool(split_dirs)
    unexpected: list[dict[str, str]] = []
    files: list[ImageFile] = []
    if want_splits:
        if not split_dirs:
            folders = ", ".join(c.name for c in children if c.is_dir()) or "none"
            raise DatasetError(f"{root} has no split folder ({', '.join(SPLITS)}); its folders: {folders}. "
                               "Use `prepare_dataset.py split` to split a folder of class folders")
        for child in children:
            if child.is_dir() and child.name not in SPLITS:
                unexpected.append({"path": child.as_posix(),
                                   "reason": "folder is not a split (train, val, test): ignored"})
        for split_dir in split_dirs:
            files += _class_folders(root, split_dir, split_dir.name, unexpected)
    else:
        files = _class_folders(root, root, None, unexpected)
    if not files:
        raise DatasetError(f"{root}: no image files found in its class folders "
                           f"(extensions {' '.join(IMAGE_EXTENSIONS)})")
    return Layout(root, files, unexpected, bool(want_splits))


def _class_folders(root: Path, folder: Path, split: str | None, unexpected: list[dict[str, str]]) -> list[ImageFile]:
    files: list[ImageFile] = []
    for child in _listdir(folder):
        if not child.is_dir():
            if split is not None:  # documentation beside the split folders is fine; files in a split are not
                unexpected.append({"path": child.as_posix(), "reason": "file outside a class folder: ignored"})
            continue
        for entry in _listdir(child):
            if entry.is_dir():
                unexpected.append({"path": entry.as_posix(), "reason": "folder inside a class folder: ignored"})
            elif is_image_name(entry):
                files.append(ImageFile(entry, _show(root, entry), child.name, split))
            else:
                unexpected.append({"path": entry.as_posix(),
                                   "reason": f"unexpected extension '{entry.suffix}': ignored"})
    return files


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from None


def _show(root: Path, path: Path) -> str:
    """A path inside the dataset, relative to its root."""
    return path.relative_to(root).as_posix()


# ---------------------------------------------------------------------------------------------------------
# Scanning: bytes, header, fingerprint


def scan_files(files: Sequence[ImageFile], settings: DuplicateSettings, max_pixels: int) -> None:
    """Fill in md5, size, mode, format and fingerprint of every file (or its error), on a thread pool.

    Decoding is most of the time of a check, and Pillow and numpy release the GIL while they work.
    """
    from tqdm import tqdm

    def scan(item: ImageFile) -> None:
        try:
            item.md5 = hashlib.md5(item.path.read_bytes()).hexdigest()
            item.fp = fingerprint(read_gray(item.path, max_pixels), settings)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(item.path) as image:  # the header only: what the file is, before conversion
                    item.size, item.mode, item.format = image.size, image.mode, image.format
        except ImageError as exc:
            item.error = str(exc).removeprefix(f"{item.path}: ")
        except OSError as exc:
            item.error = f"cannot read: {exc.strerror or exc}"

    with ThreadPoolExecutor(max_workers=settings.threads) as pool:
        for _ in tqdm(pool.map(scan, files), total=len(files), desc="fingerprinting", unit="img", disable=None):
            pass


def near_duplicates(files: Sequence[ImageFile], settings: DuplicateSettings) -> list[tuple[int, int, float]]:
    """Near-duplicate pairs (i, j, score) among the readable files, as indices into `files`."""
    readable = [(i, f.fp) for i, f in enumerate(files) if f.fp is not None]
    log.info("searching %d images for near-duplicates", len(readable))
    matches: list[Match] = find_near_duplicates([fp for _, fp in readable], settings, progress=True)
    return [(readable[m.a][0], readable[m.b][0], m.score) for m in matches]


def exact_groups(files: Sequence[ImageFile]) -> list[list[int]]:
    """Groups of two or more files with the same bytes (md5), each sorted, sorted by first member."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        if f.md5:
            by_hash[f.md5].append(i)
    return sorted(g for g in by_hash.values() if len(g) > 1)


def duplicate_groups(n: int, pairs: Sequence[tuple[int, int, float]], exact: Sequence[Sequence[int]]) -> list[int]:
    """A group id for each of n files: near-duplicate pairs and byte-identical files (`exact_groups`) share one."""
    return union_groups(n, [(a, b) for a, b, _ in pairs] + [(g[0], i) for g in exact for i in g[1:]])


def union_groups(n: int, links: Sequence[tuple[int, int]]) -> list[int]:
    """Union-find: a group id (its smallest member) for each of n items linked by pairs."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(n)]


# ---------------------------------------------------------------------------------------------------------
# check


def check_dataset(root: Path, cfg: Config) -> dict[str, Any]:
    """Every finding about a split dataset, as the JSON report holds it; report["exit_code"] is 1 on leaks
    or unreadable files, else 0."""
    settings = DuplicateSettings.from_config(cfg.prepare)
    layout = read_layout(root, want_splits=True)
    files = layout.files
    scan_files(files, settings, cfg.data.max_image_pixels)
    pairs = near_duplicates(files, settings)
    exact = exact_groups(files)
    same_bytes = {(g[i], g[j]) for g in exact for i in range(len(g)) for j in range(i + 1, len(g))}
    scores = {(a, b): s for a, b, s in pairs}
    for pair in same_bytes:  # identical bytes are near-duplicates whatever the search said (even unreadable)
        scores[pair] = 1.0
    leaks, within = [], []
    for (a, b), score in sorted(scores.items()):
        fa, fb = files[a], files[b]
        entry: dict[str, Any] = {"a": _path(layout, fa), "b": _path(layout, fb), "split_a": fa.split,
                                 "split_b": fb.split, "score": round(float(score), 4), "class_a": fa.label,
                                 "class_b": fb.label, "kind": "exact" if (a, b) in same_bytes else "near"}
        if fa.split != fb.split:
            if SPLITS.index(fa.split) > SPLITS.index(fb.split):
                entry.update(a=entry["b"], b=entry["a"], split_a=fb.split, split_b=fa.split,
                             class_a=fb.label, class_b=fa.label)
            leaks.append(entry)
        else:
            within.append(entry)
    leaks.sort(key=lambda e: (SPLIT_PAIRS.index(f"{e['split_a']}-{e['split_b']}"), -e["score"], e["a"], e["b"]))
    unreadable = [{"path": _path(layout, f), "error": f.error} for f in files if f.error]
    report = {
        "dataset": str(layout.root),
        "images": len(files),
        "splits": split_counts(files),
        "leak_counts": {key: sum(1 for e in leaks if f"{e['split_a']}-{e['split_b']}" == key) for key in SPLIT_PAIRS},
        "leaked_images": leaked_images(leaks),
        "leaks": leaks,
        "near_duplicates_within_splits": within,
        "label_conflicts": [e for e in leaks + within if e["class_a"] != e["class_b"]],
        "exact_duplicates": [{"md5": files[g[0]].md5, "paths": [_path(layout, files[i]) for i in g],
                              "splits": sorted({files[i].split for i in g}, key=SPLITS.index)} for g in exact],
        "unreadable": unreadable,
        "unexpected_files": layout.unexpected,
        **unusual_images(layout, files, RARE_FRACTION),
        "near_blank": [_path(layout, f) for f in files if f.fp is not None and f.fp.detail < settings.min_detail],
        "data_bars_cut": sum(1 for f in files if f.fp is not None and f.fp.bar_rows),
        "unknown_classes": sorted({f.label for f in files} - set(cfg.data.classes)),
        "settings": dataclasses.asdict(cfg.prepare),
    }
    report["exit_code"] = 1 if leaks or unreadable else 0
    return report


def split_counts(files: Sequence[ImageFile]) -> dict[str, Any]:
    """Per split: images per class (every class of the dataset, zeros included) and the imbalance."""
    classes = sorted({f.label for f in files})
    out: dict[str, Any] = {}
    for split in SPLITS:
        members = [f for f in files if f.split == split]
        if not members:
            continue
        counts = Counter(f.label for f in members)
        per_class = {c: counts.get(c, 0) for c in classes}
        present = [n for n in per_class.values() if n]
        out[split] = {"images": len(members), "classes": per_class,
                      "missing_classes": [c for c, n in per_class.items() if not n],
                      "imbalance": round(max(present) / min(present), 2) if present else None}
    return out


def leaked_images(leaks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many val/test images have a near-duplicate in an earlier split, the number that inflates accuracy."""
    out: dict[str, Any] = {}
    for split in SPLITS[1:]:
        out[split] = len({e["b"] for e in leaks if e["split_b"] == split})
    return out


def unusual_images(layout: Layout, files: Sequence[ImageFile], rare: float) -> dict[str, Any]:
    """Sizes and modes held by few images, and files whose content is not what their extension says."""
    readable = [(f, f.size) for f in files if f.size is not None]
    sizes = Counter(f"{width}x{height}" for _, (width, height) in readable)
    modes = Counter(f.mode for f, _ in readable)
    expected_format = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
    unusual = []
    for f, (width, height) in readable:
        reasons = []
        size = f"{width}x{height}"
        if sizes[size] < rare * len(readable):
            reasons.append(f"size {size} is rare ({sizes[size]} of {len(readable)} images)")
        if modes[f.mode] < rare * len(readable):
            reasons.append(f"mode {f.mode} is rare ({modes[f.mode]} of {len(readable)} images)")
        wanted = expected_format.get(f.path.suffix.lower())
        if wanted and f.format and f.format != wanted:
            reasons.append(f"content is {f.format}, extension says {wanted}")
        if reasons:
            unusual.append({"path": _path(layout, f), "size": [width, height], "mode": f.mode, "reasons": reasons})
    return {"image_sizes": dict(sizes.most_common()), "image_modes": dict(modes.most_common()),
            "unusual_images": unusual}


def _path(layout: Layout, f: ImageFile) -> str:
    """A file as the user can open it: the dataset root as given, then the path inside it."""
    return (layout.root / f.name).as_posix()


# ---------------------------------------------------------------------------------------------------------
# split


def split_dataset(src: Path, dst: Path, cfg: Config, link: bool) -> dict[str, Any]:
    """Split `src` into `dst`/{train,val,test}/<class>/ group-aware; returns the report (also written)."""
    src, dst = Path(src), Path(dst)
    refuse_destination(dst)
    if dst.resolve().is_relative_to(src.resolve()):
        raise DatasetError(f"destination {dst} is inside the source {src}; choose a folder outside it")
    settings = DuplicateSettings.from_config(cfg.prepare)
    layout = read_layout(src, want_splits=None)
    if layout.split_layout:
        log.info("%s already has split folders: pooling them and splitting again", src)
    files = layout.files
    scan_files(files, settings, cfg.data.max_image_pixels)
    pairs = near_duplicates(files, settings)
    exact = exact_groups(files)
    readable = [i for i, f in enumerate(files) if f.error is None]
    if not readable:
        raise DatasetError(f"{src}: none of its {len(files)} image files can be read")
    group_of = duplicate_groups(len(files), pairs, exact)
    ratios = cfg.prepare.ratios
    assignment = assign_splits([files[i].label for i in readable], [group_of[i] for i in readable],
                               ratios, cfg.prepare.seed)
    targets = destination_names(files, readable)
    written = write_split(dst, [(files[i], assignment[k], targets[i]) for k, i in enumerate(readable)], link)
    groups = defaultdict(list)
    for i in readable:
        groups[group_of[i]].append(i)
    multi = sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])
    split_of = {i: assignment[k] for k, i in enumerate(readable)}
    report = {
        "source": str(src),
        "destination": str(dst),
        "mode": "link" if link else "copy",
        "ratios": ratios,
        "seed": cfg.prepare.seed,
        "images": len(readable),
        "splits": split_counts([ImageFile(f.path, f.name, f.label, split_of[i]) for i, f in enumerate(files)
                                if i in split_of]),
        "small_classes": small_classes(files, split_of, group_of, ratios),
        "groups": [{"split": split_of[g[0]], "paths": [_path(layout, files[i]) for i in g]} for g in multi],
        "label_conflicts": [{"classes": sorted({files[i].label for i in g}),
                             "paths": [_path(layout, files[i]) for i in g]}
                            for g in multi if len({files[i].label for i in g}) > 1],
        "near_duplicates": [{"a": _path(layout, files[a]), "b": _path(layout, files[b]), "score": round(s, 4)}
                            for a, b, s in pairs],
        "exact_duplicates": [[_path(layout, files[i]) for i in g] for g in exact],
        "unreadable": [{"path": _path(layout, f), "error": f.error} for f in files if f.error],
        "unexpected_files": layout.unexpected,
        "files": [{"source": _path(layout, files[i]), "split": split_of[i], "class": files[i].label,
                   "file": f"{split_of[i]}/{files[i].label}/{targets[i]}", "group": group_of[i]} for i in readable],
        "settings": dataclasses.asdict(cfg.prepare),
    }
    try:
        write_json_atomic(written / REPORT_NAME, report)
        save_resolved(cfg, written / CONFIG_NAME)
    except OSError as exc:
        shutil.rmtree(written, ignore_errors=True)
        raise DatasetError(f"cannot write the split report into {dst.parent}: {exc.strerror or exc}") from None
    publish(written, dst)
    return report


def refuse_destination(dst: Path) -> None:
    """A destination that exists must be an empty folder: a split is never mixed into older files."""
    if dst.exists() or dst.is_symlink():
        if not dst.is_dir():
            raise DatasetError(f"destination {dst} exists and is not a folder")
        if any(dst.iterdir()):
            raise DatasetError(f"destination {dst} exists and is not empty; choose a new folder")


def assign_splits(labels: Sequence[str], groups: Sequence[int], ratios: Sequence[float], seed: int,
                  names: Sequence[str] = SPLITS) -> list[str]:
    """The split (one of `names`) of each image: whole groups, per class as close to `ratios` (percent) as the
    groups allow.

    Groups go largest first (ties in a seeded random order), each to the split where it reduces the squared
    distance between counts and per-class targets the most; a group with several classes (a label
    conflict) counts for each of them. Splits with a zero ratio get nothing.
    """
    totals = Counter(labels)
    classes = sorted(totals)
    open_splits = [s for s, r in zip(names, ratios) if r > 0]
    target = {c: {s: totals[c] * r / 100 for s, r in zip(names, ratios)} for c in classes}
    count = {c: dict.fromkeys(names, 0) for c in classes}
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    order = sorted(members)
    rng = np.random.default_rng(seed)
    shuffled = [order[i] for i in rng.permutation(len(order))]
    shuffled.sort(key=lambda g: -len(members[g]))  # stable: size first, the seeded order within a size
    out = [""] * len(labels)

    def cost(split: str, composition: Counter[str]) -> float:
        return sum(n * (2 * (count[c][split] - target[c][split]) + n) for c, n in composition.items())

    for g in shuffled:
        composition = Counter(labels[i] for i in members[g])
        best = min(open_splits, key=lambda s: (cost(s, composition), -ratios[names.index(s)], names.index(s)))
        for c, n in composition.items():
            count[c][best] += n
        for i in members[g]:
            out[i] = best
    return out


def small_classes(files: Sequence[ImageFile], split_of: dict[int, str], group_of: Sequence[int],
                  ratios: Sequence[int]) -> list[dict[str, Any]]:
    """Classes missing from a split that should have some: too few images (or groups) to split."""
    out = []
    wanted = [s for s, r in zip(SPLITS, ratios) if r > 0]
    for label in sorted({f.label for f in files}):
        idx = [i for i in split_of if files[i].label == label]
        got = Counter(split_of[i] for i in idx)
        missing = [s for s in wanted if not got.get(s)]
        if missing:
            out.append({"class": label, "images": len(idx), "groups": len({group_of[i] for i in idx}),
                        "counts": {s: got.get(s, 0) for s in wanted}, "missing_from": missing})
    return out


def destination_names(files: Sequence[ImageFile], readable: Sequence[int]) -> dict[int, str]:
    """File names in the destination; pooled splits can hold one name twice in a class, so those get their
    source split as a prefix."""
    seen = Counter((files[i].label, files[i].path.name) for i in readable)
    return {i: (f"{files[i].split}_{files[i].path.name}" if seen[(files[i].label, files[i].path.name)] > 1
                and files[i].split else files[i].path.name) for i in readable}


def write_split(dst: Path, plan: Sequence[tuple[ImageFile, str, str]], link: bool) -> Path:
    """Copy or link every file into a temporary folder beside `dst`; `publish` renames it into place."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        for item, split, name in plan:
            target = tmp / split / item.label / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if link:
                os.symlink(item.path.resolve(), target)
            else:
                shutil.copy2(item.path, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"cannot write the split into {dst.parent}: {exc.strerror or exc}") from None
    return tmp


def publish(tmp: Path, dst: Path) -> None:
    """Rename the finished split into place: a crash leaves no half-written destination."""
    try:
        if dst.is_dir():
            dst.rmdir()  # empty (checked at the start); rename cannot replace a folder on every system
        os.replace(tmp, dst)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"cannot move the split into {dst}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------------------
# Summaries


def format_check(report: dict[str, Any], examples: int = 5) -> str:
    """The readable summary of a check, for stdout."""
    lines = [f"dataset {report['dataset']}: {report['images']} image files"]
    lines += _class_table(report["splits"])
    counts = report["leak_counts"]
    leaked = report["leaked_images"]
    lines.append(f"leaks (near-duplicates across splits): {len(report['leaks'])} pairs - "
                 + ", ".join(f"{k} {v}" for k, v in counts.items())
                 + "; images with a copy in an earlier split: "
                 + ", ".join(f"{s} {n} of {report['splits'].get(s, {}).get('images', 0)}" for s, n in leaked.items()))
    for entry in report["leaks"][:examples]:
        lines.append(f"  {entry['score']:.3f} {entry['kind']:<5} {entry['a']}  <->  {entry['b']}")
    if len(report["leaks"]) > examples:
        lines.append(f"  ... {len(report['leaks']) - examples} more in the JSON report")
    lines.append(f"near-duplicate pairs within one split: {len(report['near_duplicates_within_splits'])}")
    if report["label_conflicts"]:
        lines.append(f"near-duplicate pairs with different classes (label conflicts): {len(report['label_conflicts'])}")
    lines.append(f"exact duplicates (same bytes): {len(report['exact_duplicates'])} groups"
                 + (f", {sum(len(g['splits']) > 1 for g in report['exact_duplicates'])} across splits"
                    if report["exact_duplicates"] else ""))
    for title, key, field_name in (("unreadable or corrupt files", "unreadable", "error"),
                                   ("unexpected files", "unexpected_files", "reason")):
        lines.append(f"{title}: {len(report[key])}")
        for entry in report[key][:examples]:
            lines.append(f"  {entry['path']}: {entry[field_name]}")
    lines.append("image sizes: " + ", ".join(f"{k} ({v})" for k, v in list(report["image_sizes"].items())[:6])
                 + "; modes: " + ", ".join(f"{k} ({v})" for k, v in report["image_modes"].items()))
    lines.append(f"unusual images (rare size or mode, content not matching extension): {len(report['unusual_images'])}")
    for entry in report["unusual_images"][:examples]:
        lines.append(f"  {entry['path']}: {'; '.join(entry['reasons'])}")
    if report["near_blank"]:
        lines.append(f"near-blank images (copies of these are hard to recognise): {len(report['near_blank'])}")
    if report["data_bars_cut"]:
        lines.append(f"instrument data bars found and cut before comparing: {report['data_bars_cut']} images")
    if report["unknown_classes"]:
        lines.append(f"class folders not in data.classes: {', '.join(report['unknown_classes'])}")
    lines.append("result: " + ("LEAKS or unreadable files found" if report["exit_code"] else "clean"))
    return "\n".join(lines)


def format_split(report: dict[str, Any]) -> str:
    """The readable summary of a split, for stdout."""
    lines = [f"split {report['source']} -> {report['destination']} ({report['mode']}, ratios "
             f"{'/'.join(map(str, report['ratios']))}, seed {report['seed']}): {report['images']} images"]
    lines += _class_table(report["splits"])
    grouped = sum(len(g["paths"]) for g in report["groups"])
    lines.append(f"near-duplicate groups kept within one split: {len(report['groups'])} ({grouped} images)")
    lines.append(f"exact duplicates (same bytes): {len(report['exact_duplicates'])} groups")
    if report["label_conflicts"]:
        lines.append("near-duplicate groups with more than one class (label conflicts): "
                     f"{len(report['label_conflicts'])}")
    for entry in report["small_classes"]:
        lines.append(f"class '{entry['class']}' is too small to split ({entry['images']} images in "
                     f"{entry['groups']} groups): none in {', '.join(entry['missing_from'])}")
    if report["unreadable"]:
        lines.append(f"unreadable files left out: {len(report['unreadable'])}")
        lines += [f"  {e['path']}: {e['error']}" for e in report["unreadable"][:5]]
    if report["unexpected_files"]:
        lines.append(f"unexpected files ignored: {len(report['unexpected_files'])}")
    return "\n".join(lines)


def _class_table(splits: dict[str, Any]) -> list[str]:
    names = list(splits)
    classes = sorted({c for s in splits.values() for c in s["classes"]})
    width = max([len(c) for c in classes] + [5])
    lines = [f"  {'class':<{width}} " + " ".join(f"{s:>6}" for s in names)]
    for c in classes:
        lines.append(f"  {c:<{width}} " + " ".join(f"{splits[s]['classes'].get(c, 0):>6}" for s in names))
    lines.append(f"  {'total':<{width}} " + " ".join(f"{splits[s]['images']:>6}" for s in names))
    lines.append(f"  {'max/min':<{width}} "
                 + " ".join(f"{splits[s]['imbalance'] or 0:>6}" for s in names))
    return lines
