"""Classify SEM images with an ONNX or TFLite model, on the board: onnxruntime or LiteRT, numpy and Pillow, no config.

Class names and preprocessing come from the model's metadata. Takes files and folders (searched recursively);
prints a line per image and optionally writes every row to CSV or JSON (columns path,label,confidence,top3,
status,error,decision,score). `decision` is accept, or review when the image's review score is below the model's
review threshold (`--review-threshold` overrides it); a model without a review bin accepts every image.
A .tflite model runs on the LiteRT interpreter, on the CPU or, with `--delegate`, partly or wholly on an NPU
delegate (the summary says which and how many operators it took).
Exit 0 when every image was classified, 1 when some could not be read, 2 for bad usage, model or delegate.
With --watch DIR it keeps running: each image that lands in DIR (subfolders too) is classified once, its row
appended to --output (.csv or .jsonl) as it is done, across restarts, until SIGINT or SIGTERM (exit 0); see
semdefect/board/watch.py and docs/board.md.

usage: python infer_onnx.py --model models/sem_cnn.int8.onnx PATH [PATH ...] [--output results.csv]
       python infer_onnx.py --model models/sem_cnn.int8.tflite [--delegate /usr/lib/libvx_delegate.so] PATH ...
       python infer_onnx.py --model M --watch DIR [--output results.csv|.jsonl] [--poll-seconds 1]
                            [--settle-seconds 1] [--rotate-rows N] [--state FILE]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from .cli import EXIT_CHECK_FAILED, command_parser, run_stage, setup_logging
from .errors import SemdefectError
from .files import find_images
from .inference import Row, classify, console_line, error_row, write_rows
from .runtime import open_classifier

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a semdefect .onnx (FP32 or INT8) or .tflite model")
    parser.add_argument("paths", type=Path, nargs="*", metavar="PATH", help="image files or folders")
    parser.add_argument("--output", type=Path, help="write all rows to this .csv or .json file (with --watch: .csv "
                        "or .jsonl, appended a row at a time)")
    parser.add_argument("--watch", type=Path, metavar="DIR", help="keep running: classify each image that lands in "
                        "DIR once, until SIGINT or SIGTERM")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="--watch: seconds between looks (default 1)")
    parser.add_argument("--settle-seconds", type=float, default=1.0,
                        help="--watch: a file is read once its size and time stayed this long (default 1)")
    parser.add_argument("--rotate-rows", type=int, default=0, metavar="N",
                        help="--watch: a new output file every N rows (results.000001.csv, ...; default 0: one)")
    parser.add_argument("--state", type=Path, metavar="FILE",
                        help="--watch without --output: the record of the images done (one path per line)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per session run (default 32)")
    parser.add_argument("--threads", type=int, default=0, help="runtime threads (default 0: one per core)")
    parser.add_argument("--delegate", type=Path, metavar="SO",
                        help="a .tflite model only: an external delegate to load, e.g. an i.MX NPU's "
                             "(/usr/lib/libvx_delegate.so, libethosu_delegate.so, libneutron_delegate.so)")
    parser.add_argument("--review-threshold", type=float, metavar="X",
                        help="send images whose review score is below X to review (default: the model's threshold)")
    parser.add_argument("--quiet", action="store_true", help="no line per image: a progress bar and the summary")
    args = parser.parse_args(argv)
    setup_logging()

    def body() -> int:
        if args.batch_size < 1:
            raise SemdefectError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.review_threshold is not None and not math.isfinite(args.review_threshold):
            raise SemdefectError(f"--review-threshold must be a number, got {args.review_threshold}")
        if args.watch is not None:
            return watch(args)
        if args.output and args.output.suffix.lower() not in (".csv", ".json"):
            raise SemdefectError(f"--output {args.output}: use a .csv or .json file name")
        if not args.paths:
            raise SemdefectError("give image files or folders, or --watch DIR")
        # spin=False: image decoding shares the cores
        classifier = open_classifier(args.model, threads=args.threads, spin=False, delegate=args.delegate)
        threshold = classifier.threshold if args.review_threshold is None else args.review_threshold
        if classifier.metadata.review is None and args.review_threshold is None:
            log.info("%s has no review bin (trained before it, or with review.holdout=0): every image is "
                     "accepted; score is the uncalibrated confidence", args.model)
        images, problems = find_images(args.paths)
        rows = [error_row(path, f"{path}: {reason}") for path, reason in problems]
        rows += run_and_print(classify(classifier, images, threshold, args.batch_size), len(images), args.quiet)
        for row in rows[: len(problems)]:
            print(f"{row.path}\tERROR\t{row.error}", file=sys.stderr)
        if args.output:
            write_rows(rows, args.output)
        failed = sum(row.status == "error" for row in rows)
        review = sum(row.decision == "review" for row in rows)
        print(f"{len(rows) - failed} image(s) classified ({len(rows) - failed - review} accept, {review} review), "
              f"{failed} error(s)" + (f"; wrote {args.output}" if args.output else "") +
              f"; ran on {classifier.describe()}", file=sys.stderr)
        return EXIT_CHECK_FAILED if failed else 0

    return run_stage(body)


def watch(args: argparse.Namespace) -> int:
    """--watch DIR: classify each image that lands there once, until SIGINT or SIGTERM."""
    from .watch import PathLog, RowLog, Watcher

    stopping = threading.Event()  # set by SIGINT or SIGTERM, from now on: even while the model loads

    def request_stop(signum: int, frame: object) -> None:
        log.info("%s: finishing the images in hand, then stopping", signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    if args.paths:
        raise SemdefectError("--watch DIR takes no other paths: it classifies what lands in DIR")
    if not args.watch.is_dir():
        raise SemdefectError(f"--watch {args.watch}: " + ("no such folder" if not args.watch.exists()
                                                          else "not a folder"))
    for name in ("poll_seconds", "settle_seconds"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise SemdefectError(f"--{name.replace('_', '-')} must be a number of seconds, 0 or more, got {value}")
    if args.rotate_rows < 0:
        raise SemdefectError(f"--rotate-rows must be 0 (no rotation) or more, got {args.rotate_rows}")
    sinks: list[RowLog | PathLog] = []
    if args.output is not None:
        sinks.append(RowLog(args.output, args.rotate_rows))
    if args.state is not None:
        sinks.append(PathLog(args.state))
    if not sinks:
        log.warning("no --output or --state: nothing records what was done, so a restart classifies every image "
                    "again")
    classifier = open_classifier(args.model, threads=args.threads, spin=False, delegate=args.delegate)
    threshold = classifier.threshold if args.review_threshold is None else args.review_threshold
    # absolute paths: the record means the same files whatever folder the watch is restarted from
    watcher = Watcher(classifier, Path(os.path.abspath(args.watch)), threshold, sinks, stopping, args.poll_seconds,
                      args.settle_seconds, args.batch_size, args.quiet)
    log.info("watching %s (every %.1f s; a file is read once unchanged for %.1f s)%s; ran on %s", args.watch,
             args.poll_seconds, args.settle_seconds, f", rows to {args.output}" if args.output else "",
             classifier.describe())
    watcher.run()
    counts = watcher.counts
    print(f"{counts['ok']} image(s) classified ({counts['ok'] - counts['review']} accept, {counts['review']} review), "
          f"{counts['error']} error(s) while watching", file=sys.stderr)
    return 0


def run_and_print(results: Iterable[Row], total: int, quiet: bool) -> list[Row]:
    """Collect the rows, printing a line per image, or with `quiet` a progress bar for a large folder."""
    if quiet:
        from tqdm import tqdm

        results = tqdm(results, total=total, unit="img", disable=total < 200, file=sys.stderr)
    rows = []
    for row in results:
        rows.append(row)
        if not quiet:
            print(console_line(row), flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
