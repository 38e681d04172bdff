"""Benchmark the Keras, FP32 ONNX and INT8 ONNX models of one training run, side by side (make bench).

The command lives in `semdefect.commands.bench_models`; this file runs it from the repository.

usage: python benchmarks/bench_models.py [--images DIR] [--test DIR] [--profile] [--json OUT]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's package, with no install step

from semdefect.commands.bench_models import main

if __name__ == "__main__":
    sys.exit(main())
