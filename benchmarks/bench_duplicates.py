"""Benchmark the near-duplicate search of `prepare_dataset.py check`: recall, false pairs and time.

Quality: BASES real SEM images from ../shared/data/sem-public (one per near-duplicate group of its MANIFEST), each
with one copy of every kind (resize, crop up to 20 %, JPEG, brightness/contrast, noise, and all of them mixed),
among the other real images as distractors; recall = planted (original, copy) pairs found, false pairs = reported
pairs whose two images come from different groups of the MANIFEST.
Time: `check` end to end (decode, fingerprint, search, report) on split datasets of 2,000 and 20,000 images made
of the real images, planted copies, 2 x 2 mosaics of crops of real images and generated images.

Not a test: it writes its images to a temporary folder (the real ones are read, transformed there, and deleted).
usage: python benchmarks/bench_duplicates.py [--bases 300] [--sizes 2000 20000] [--out results.json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import semdefect.data.splits as prepare
from semdefect.board.images import read_gray
from semdefect.config import load_config

REAL = ROOT.parent / "shared" / "data" / "sem-public"
KINDS = ("resize", "crop", "jpeg", "contrast", "noise", "mixed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bases", type=int, default=300, help="real images given planted copies")
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 20000], help="dataset sizes timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")  # the search logs its stage times
    if not REAL.is_dir():
        print(f"error: real SEM images not found at {REAL}", file=sys.stderr)
        return 2
    cfg = load_config()
    real = read_manifest()
    results = {"quality": None, "timing": [], "cpus": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_duplicates_") as tmp:
        results["quality"] = quality(Path(tmp) / "quality", real, args.bases, args.seed, cfg)
        for size in args.sizes:
            results["timing"].append(timing(Path(tmp) / f"n{size}", real, size, args.seed, cfg))
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Data


def read_manifest() -> list[dict]:
    """Every real image with its near-duplicate group, sorted by file."""
    with open(REAL / "MANIFEST.csv", newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["file"])
    return [{"path": REAL / r["file"], "group": f"g{r['dup_group']}", "label": r["target"]} for r in rows]


def transform(gray: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One near-duplicate of a grey image in [0, 1], as uint8."""
    image = Image.fromarray(to_uint8(gray))
    width, height = image.size
    if kind == "resize":
        factor = rng.uniform(0.45, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 2.0)
        return np.asarray(image.resize((round(width * factor), round(height * factor)), Image.Resampling.BICUBIC))
    if kind == "crop":
        return crop(image, rng, 0.2)
    if kind == "jpeg":
        return jpeg(image, int(rng.integers(30, 76)))
    if kind == "contrast":
        return to_uint8((gray - gray.mean()) * rng.uniform(0.7, 1.3) + gray.mean() + rng.uniform(-0.12, 0.12))
    if kind == "noise":
        return to_uint8(gray + rng.normal(0.0, rng.uniform(0.02, 0.06), gray.shape))
    # mixed: a smaller crop, resized, re-exposed, re-noised and re-encoded
    part = Image.fromarray(crop(image, rng, 0.12))
    factor = rng.uniform(0.6, 1.5)
    part = part.resize((max(8, round(part.width * factor)), max(8, round(part.height * factor))),
                       Image.Resampling.BILINEAR)
    pixels = np.asarray(part, np.float32) / 255
    pixels = (pixels - pixels.mean()) * rng.uniform(0.8, 1.2) + pixels.mean() + rng.uniform(-0.1, 0.1)
    return jpeg(Image.fromarray(to_uint8(pixels + rng.normal(0.0, 0.03, pixels.shape))), int(rng.integers(50, 90)))


def crop(image: Image.Image, rng: np.random.Generator, most: float) -> np.ndarray:
    """Cut 5 % to `most` of each side in all, anywhere; half of the crops are resized back to full size."""
    width, height = image.size
    cut_x, cut_y = rng.uniform(0.05, most), rng.uniform(0.05, most)
    x0, y0 = rng.uniform(0, cut_x), rng.uniform(0, cut_y)
    box = (round(x0 * width), round(y0 * height), round((1 - cut_x + x0) * width), round((1 - cut_y + y0) * height))
    out = image.crop(box)
    if rng.random() < 0.5:
        out = out.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(out)


def jpeg(image: Image.Image, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))


def to_uint8(gray: np.ndarray) -> np.ndarray:
    return np.clip(gray * 255 + 0.5, 0, 255).astype(np.uint8)


def mosaic(grays: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A new picture: 2 x 2 tiles, each a 40-60 % crop of a different real image, flipped or turned at random."""
    tiles = []
    for gray in grays:
        h, w = gray.shape
        side = rng.uniform(0.4, 0.6)
        y, x = int(rng.uniform(0, 1 - side) * h), int(rng.uniform(0, 1 - side) * w)
        tile = gray[y:y + int(side * h), x:x + int(side * w)]
        tile = np.rot90(tile, int(rng.integers(4)))
        tile = tile[:, ::-1] if rng.random() < 0.5 else tile
        tiles.append(np.asarray(Image.fromarray(np.ascontiguousarray(tile, np.float32)).resize((64, 64)), np.float32))
    return to_uint8(np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]]))


def generated(index: int, rng: np.random.Generator) -> np.ndarray:
    """A generated SEM-like image (the project's generator when present)."""
    try:
        from semdefect import CLASS_NAMES
        from semdefect.synth import generate_image, image_rng

        return generate_image(CLASS_NAMES[index % 10], image_rng(77, index % 10, index), 128, 0.5)[0]
    except ImportError:
        y, x = np.mgrid[0:128, 0:128] / 128
        angle, pitch = rng.uniform(0, np.pi), rng.uniform(0.04, 0.2)
        image = 0.5 + 0.2 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / pitch)
        return to_uint8(image + 0.05 * rng.standard_normal((128, 128)))


def write(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def plant(folder: Path, real: list[dict], bases: int, rng: np.random.Generator,
          truth: dict[str, tuple[str, ...]], splits=("val", "test")) -> list[tuple[str, str, str]]:
    """Copy real images into train and one copy of each kind into val/test; returns (original, copy, kind)."""
    firsts = {}
    for item in real:
        firsts.setdefault(item["group"], item)
    chosen = [list(firsts.values())[i] for i in sorted(rng.choice(len(firsts), bases, replace=False))]
    planted = []
    for n, item in enumerate(chosen):
        gray = read_gray(item["path"])
        original = write(to_uint8(gray), folder / "train" / item["label"] / f"base{n:04d}.png")
        truth[original.as_posix()] = (item["group"], "original", item["path"].relative_to(REAL).as_posix())
        for kind in KINDS:
            split = splits[KINDS.index(kind) % len(splits)]
            copy = write(transform(gray, kind, rng), folder / split / item["label"] / f"base{n:04d}_{kind}.png")
            truth[copy.as_posix()] = (item["group"], kind, item["path"].relative_to(REAL).as_posix())
            planted.append((original.as_posix(), copy.as_posix(), kind))
    return planted


# ---------------------------------------------------------------------------------------------------------
# Measurements


def run_check(folder: Path, cfg: dict) -> tuple[dict, dict[str, float]]:
    """`check` through the library, with the time of each stage."""
    times: dict[str, float] = {}
    scan, search = prepare.scan_files, prepare.near_duplicates

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times[name] = round(time.perf_counter() - start, 1)
        return wrapper

    prepare.scan_files, prepare.near_duplicates = timed("decode+fingerprint", scan), timed("search", search)
    try:
        start = time.perf_counter()
        report = prepare.check_dataset(folder, cfg)
        times["check total"] = round(time.perf_counter() - start, 1)
    finally:
        prepare.scan_files, prepare.near_duplicates = scan, search
    return report, times


def score(report: dict, planted: list[tuple[str, str, str]], truth: dict[str, tuple[str, ...]]) -> dict:
    """Recall of planted pairs (direct, and through groups) and false pairs among everything reported."""
    pairs = report["leaks"] + report["near_duplicates_within_splits"]
    found = {frozenset((e["a"], e["b"])) for e in pairs}
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for e in pairs:
        parent[root(e["a"])] = root(e["b"])
    by_kind: dict[str, list[bool]] = defaultdict(list)
    grouped = []
    for original, copy, kind in planted:
        by_kind[kind].append(frozenset((original, copy)) in found)
        grouped.append(root(original) == root(copy))
    hits = [h for v in by_kind.values() for h in v]
    false = [e for e in pairs if truth.get(e["a"], (e["a"],))[0] != truth.get(e["b"], (e["b"],))[0]]
    false_sources = {frozenset((truth.get(e["a"], (e["a"],))[0], truth.get(e["b"], (e["b"],))[0])) for e in false}
    return {
        "planted": len(planted),
        "recall": round(float(np.mean(hits)), 4) if hits else None,
        "recall_by_kind": {k: round(float(np.mean(v)), 3) for k, v in by_kind.items()},
        "recall_through_groups": round(float(np.mean(grouped)), 4) if grouped else None,
        "reported_pairs": len(pairs),
        "false_pairs": len(false),
        "false_share": round(len(false) / max(1, len(pairs)), 4),
        "false_source_pairs": len(false_sources),
        "false_source_examples": false_sources_best(false, truth),
    }


def false_sources_best(false: list[dict], truth: dict[str, tuple[str, ...]]) -> list[dict]:
    """Each pair of source images behind the false pairs once, with its best score: the list to look at."""
    best: dict[tuple[str, str], float] = {}
    for e in false:
        key = tuple(sorted((truth.get(e["a"], (e["a"],))[-1], truth.get(e["b"], (e["b"],))[-1])))
        best[key] = max(best.get(key, -1.0), e["score"])
    return [{"a": a, "b": b, "score": s} for (a, b), s in sorted(best.items(), key=lambda kv: -kv[1])]


def quality(folder: Path, real: list[dict], bases: int, seed: int, cfg: dict) -> dict:
    rng = np.random.default_rng(seed)
    truth: dict[str, tuple[str, ...]] = {}
    planted = plant(folder, real, bases, rng, truth)
    used = {entry[0] for entry in truth.values()}
    firsts = {}
    for item in real:  # one distractor per other group, so that pairs across groups are false by construction
        if item["group"] not in used:
            firsts.setdefault(item["group"], item)
    for n, item in enumerate(firsts.values()):
        path = write(to_uint8(read_gray(item["path"])),
                     folder / ("train", "val", "test")[n % 3] / item["label"] / f"real{n:04d}.png")
        truth[path.as_posix()] = (item["group"], "original", item["path"].relative_to(REAL).as_posix())
    report, times = run_check(folder, cfg)
    out = score(report, planted, truth)
    blank = set(report["near_blank"])
    detailed = [p for p in planted if p[0] not in blank]
    out["recall_detailed_bases"] = score(report, detailed, truth)["recall"]
    out.update(images=report["images"], near_blank_bases=len({p[0] for p in planted} & blank), times=times)
    print(f"quality: {out['recall']:.1%} recall, {out['false_pairs']} false of {out['reported_pairs']} pairs",
          file=sys.stderr)
    return out


def timing(folder: Path, real: list[dict], size: int, seed: int, cfg: dict) -> dict:
    """A split dataset of `size` images: real ones, planted copies, mosaics and generated images."""
    rng = np.random.default_rng(seed + size)
    truth: dict[str, tuple[str, ...]] = {}
    bases = min(300, size // 40)
    planted = plant(folder, real, bases, rng, truth)
    count = len(truth)
    split_names = ("train", "val", "test")
    for item in real[: min(len(real), size // 10)]:
        path = write(to_uint8(read_gray(item["path"])),
                     folder / split_names[count % 3] / item["label"] / f"real_{item['path'].stem}.png")
        truth[path.as_posix()] = (item["group"], "original")
        count += 1
    grays = [read_gray(item["path"]) for item in real]
    n = 0
    while count < size:
        if n % 4 == 3:
            pixels, label = generated(n, rng), "generated"
        else:
            pixels, label = mosaic([grays[i] for i in rng.choice(len(grays), 4, replace=False)], rng), "mosaic"
        path = write(pixels, folder / split_names[count % 3] / label / f"{label}{n:06d}.png")
        truth[path.as_posix()] = (f"{label}{n}", "new")
        count += 1
        n += 1
    report, times = run_check(folder, cfg)
    out = {"images": report["images"], "times": times, **score(report, planted, truth)}
    out.pop("false_source_examples")
    print(f"{size} images: {times}", file=sys.stderr)
    return out


if __name__ == "__main__":
    sys.exit(main())
