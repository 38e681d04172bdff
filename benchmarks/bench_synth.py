"""Throughput of the synthetic SEM generator on one core: images/s per class and overall, in memory and
with PNG writing (encode + atomic write to a temporary folder). Not a test: timing belongs here.

Usage: python benchmarks/bench_synth.py [--images 2000] [--size 128] [--difficulty 0.5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semdefect import CLASS_NAMES
from semdefect.synth import generate_image, image_rng, write_png


def pin_one_core() -> str:
    """Run on one CPU, so the figure is per core whatever the machine."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity on this platform)"


def bench(per_class: int, size: int, difficulty: float, folder: Path | None) -> dict[str, float]:
    """Seconds per class for per_class images; written under `folder` when given."""
    seconds = {}
    for ci, name in enumerate(CLASS_NAMES):
        start = time.perf_counter()
        for i in range(per_class):
            image, _ = generate_image(name, image_rng(0, ci, i), size, difficulty)
            if folder is not None:
                write_png(image, folder / name / f"synth_{name}_{i:05d}.png")
        seconds[name] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000, help="images per run, spread over the ten classes")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--difficulty", type=float, default=0.5)
    args = p.parse_args(argv)
    per_class = max(1, args.images // len(CLASS_NAMES))
    print(f"semdefect.synth: {per_class * len(CLASS_NAMES)} images {args.size}x{args.size}, "
          f"difficulty {args.difficulty}, {pin_one_core()}")
    bench(2, args.size, args.difficulty, None)  # warm caches (coordinate grids, font)
    in_memory = bench(per_class, args.size, args.difficulty, None)
    with tempfile.TemporaryDirectory() as tmp:
        with_png = bench(per_class, args.size, args.difficulty, Path(tmp))
    print(f"{'class':<14} {'in memory':>12} {'with PNG':>12}")
    for name in CLASS_NAMES:
        print(f"{name:<14} {per_class / in_memory[name]:>8.0f} /s {per_class / with_png[name]:>8.0f} /s")
    n = per_class * len(CLASS_NAMES)
    print(f"{'overall':<14} {n / sum(in_memory.values()):>8.0f} /s {n / sum(with_png.values()):>8.0f} /s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
