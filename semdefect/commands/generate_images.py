"""Generate synthetic SEM images of the ten classes: DIR/<split>/<class>/ (with --split) or DIR/<class>/.

The same arguments give byte-identical files (with the same Pillow and zlib). `dataset_sample/` was made with
`python generate_images.py --out dataset_sample --per-class 20 --size 128 --seed 42 --split 70,15,15
--contact-sheet docs/contact_sheet.png`.

usage: python generate_images.py --out DIR [--per-class N] [--size PX] [--seed S] [--split 70,15,15]
                                 [--difficulty D] [--contact-sheet PNG]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from semdefect.board.cli import setup_logging
from semdefect.synth import (
    MIN_SIZE,
    SPLITS,
    UsageError,
    check_params,
    contact_sheet,
    generate_dataset,
    write_png,
)

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parse_split(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    try:
        ratios = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--split must be three whole percentages like 70,15,15, got {text!r}") from None
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) != 100:
        raise UsageError(f"--split must be three non-negative percentages summing to 100, got {text!r}")
    return ratios


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="generate_images.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="dataset root to write into")
    p.add_argument("--per-class", type=int, default=20, help="images per class (default 20)")
    p.add_argument("--size", type=int, default=128, help=f"image side in pixels, at least {MIN_SIZE} (default 128)")
    p.add_argument("--seed", type=int, default=42, help="master seed (default 42)")
    p.add_argument("--split", help="train,val,test percentages, e.g. 70,15,15; omit to write DIR/<class>/")
    p.add_argument("--difficulty", type=float, default=0.5, help="0 = large clear defects .. 1 = small faint, noisy")
    p.add_argument("--contact-sheet", type=Path, help="also write a PNG grid of sample images per class")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        args = _parse_args(argv)
        split = _parse_split(args.split) if args.split is not None else None
        check_params(args.per_class, args.size, args.seed, split, args.difficulty)
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out} exists and is not a folder")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    log.info("generating %d images per class, %dx%d, seed %d, difficulty %s into %s",
             args.per_class, args.size, args.size, args.seed, args.difficulty, args.out)
    try:
        paths = generate_dataset(args.out, args.per_class, args.size, args.seed, split, args.difficulty)
        if args.contact_sheet is not None:
            write_png(contact_sheet(args.seed, args.size, args.difficulty), args.contact_sheet)
    except OSError as e:
        print(f"error: cannot write {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    where = ", ".join(f"{s}/ {sum(1 for p in paths if p.parent.parent.name == s)}" for s in SPLITS) if split \
        else "<class>/ folders"
    log.info("wrote %d images under %s (%s)", len(paths), args.out, where)
    if args.contact_sheet is not None:
        log.info("wrote contact sheet %s", args.contact_sheet)
    return 0

