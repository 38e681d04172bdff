"""Choose which images of a new source a person should label first.

Given a model (.keras or .onnx, with its review bin) and a folder of unlabelled images, picks at most --budget of
them: the most typical image of each of --budget groups of look-alikes (k-means on the model's features), the
largest groups first. Writes --output (CSV, UTF-8: path,rank,similar,label,confidence,score; `similar` is how many
of the folder's images the pick's group holds) and beside it a contact sheet (<output>.png) to label from: put each
picked image into a folder named after its class, then run adapt_model.py.

usage: python select_images.py --model M --images DIR --budget N --output picks.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary
from semdefect.board.errors import SemdefectError
from semdefect.commands.stage import run_with_config
from semdefect.config import Config

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a semdefect .keras or .onnx model")
    parser.add_argument("--images", type=Path, required=True, help="the unlabelled images (searched recursively)")
    parser.add_argument("--budget", type=int, required=True, help="how many images to pick at most")
    parser.add_argument("--output", type=Path, required=True, help="the CSV to write (a .png contact sheet beside it)")
    return run_with_config(parser, argv, select_images)


def select_images(args: argparse.Namespace, cfg: Config) -> int:
    if args.budget < 1:
        raise SemdefectError(f"--budget must be at least 1, got {args.budget}")
    if args.output.suffix.lower() != ".csv":
        raise SemdefectError(f"--output {args.output}: use a .csv file name")
    from semdefect.adaptation.select import describe, load_pool, pick
    from semdefect.board.files import atomic_path, write_text_atomic
    from semdefect.data.sheets import contact_sheet

    files, problems = load_pool(args.images)
    pool, skipped = describe(args.model, files)
    for path, reason in problems + skipped:
        log.warning("skipping %s: %s", path, reason)
    chosen, similar = pick(pool, args.budget)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "rank", "similar", "label", "confidence", "score"])
    captions = []
    for rank, (index, group) in enumerate(zip(chosen, similar), 1):
        best = int(pool.probabilities[index].argmax())
        label, confidence = pool.class_names[best], float(pool.probabilities[index][best])
        writer.writerow([str(pool.paths[index]), rank, group, label, f"{confidence:.4f}", f"{pool.scores[index]:.4f}"])
        captions.append((pool.paths[index], f"{rank}: {label}? {pool.scores[index]:.2f}"))
    write_text_atomic(args.output, buffer.getvalue())
    sheet_path = args.output.with_suffix(".png")
    with atomic_path(sheet_path) as tmp:
        contact_sheet(captions).save(tmp, format="PNG")
    print(f"picked {len(chosen)} of {len(pool.paths)} images (budget {args.budget})")
    print_summary("select_images.py wrote", {"picks": args.output, "sheet": sheet_path})
    return 0
