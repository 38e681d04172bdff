"""Time a model on the board: load, first inference (warm-up) and steady state apart, with the runtime that ran it.

The first inference is reported on its own: on the i.MX 8M Plus the NPU delegate compiles its graph then (seconds,
unless its graph cache is warm; docs/board.md), and every runtime allocates and tunes on it. Steady state is the
median and 95th percentile of batch-1 runs of the model alone (preprocessed image in, calibrated probabilities and
review score out), then images per second. Compare a run with `--delegate` to one without on the same board: the
CPU figure is the baseline the NPU has to beat.

usage: python -m semdefect.board.bench --model M.onnx|M.tflite [--delegate SO] [--image FILE] [--runs N] [--threads N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .cli import command_parser, run_stage, setup_logging
from .errors import SemdefectError
from .images import load_image
from .runtime import open_classifier


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a semdefect .onnx or .tflite model")
    parser.add_argument("--delegate", type=Path, metavar="SO", help="a .tflite model only: an external delegate")
    parser.add_argument("--image", type=Path, help="the image to run on (default: a mid-grey image)")
    parser.add_argument("--runs", type=int, default=200, help="timed steady-state runs (default 200)")
    parser.add_argument("--threads", type=int, default=0, help="runtime threads (default 0: one per core)")
    args = parser.parse_args(argv)
    setup_logging()

    def body() -> int:
        if args.runs < 1:
            raise SemdefectError(f"--runs must be at least 1, got {args.runs}")
        start = time.perf_counter()
        classifier = open_classifier(args.model, threads=args.threads, delegate=args.delegate)
        load_ms = 1e3 * (time.perf_counter() - start)
        size = classifier.prep.image_size
        image = (load_image(args.image, classifier.prep) if args.image
                 else np.full((size, size, 1), 0.5, np.float32))[None]
        start = time.perf_counter()
        classifier.predict_scored(image)
        first_ms = 1e3 * (time.perf_counter() - start)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            classifier.predict_scored(image)
            times.append(1e3 * (time.perf_counter() - start))
        median, p95 = np.percentile(times, [50, 95])
        print(f"model {args.model} on {classifier.describe()}")
        print(f"load {load_ms:.1f} ms; first inference (warm-up) {first_ms:.2f} ms; steady state over {args.runs} "
              f"runs: median {median:.3f} ms, p95 {p95:.3f} ms, {1e3 / median:.0f} images/s (batch 1, model only: "
              "no image decoding)")
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
