"""Benchmark the Keras, FP32 ONNX and INT8 ONNX models of one training run, side by side.

Latency at batch 1 (p50/p95) with 1 and 2 threads, batch-64 throughput, sizes, cold start, INT8/FP32 agreement and
the folder pipeline of infer_onnx.py; writes models/bench.json. Absolute times depend on the machine; compare the
INT8/FP32 ratios. A benchmark, not a test: it prints measured figures.

usage: python benchmarks/bench_models.py [--images DIR] [--test DIR] [--profile]   (make bench)
"""

from __future__ import annotations

import os
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary, run_stage, setup_logging
from semdefect.board.errors import SemdefectError
from semdefect.board.files import find_images, write_json_atomic


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--keras", type=Path, default=Path("models/sem_cnn.keras"))
    parser.add_argument("--fp32", type=Path, default=Path("models/sem_cnn.onnx"))
    parser.add_argument("--int8", type=Path, default=Path("models/sem_cnn.int8.onnx"))
    parser.add_argument("--images", type=Path, default=Path("dataset_sample/test"),
                        help="images to run on (searched recursively; INT8/FP32 agreement is measured on all of them)")
    parser.add_argument("--test", type=Path, default=None,
                        help="a dataset root or folder of class folders: FP32 and INT8 accuracy on its test images")
    parser.add_argument("--rounds", type=int, default=300, help="timed batch-1 runs per model and thread count")
    parser.add_argument("--pipeline-images", type=int, default=3000, help="files for the folder pipeline (0 = skip)")
    parser.add_argument("--profile", action="store_true", help="also print onnxruntime's per-node times")
    parser.add_argument("--json", type=Path, default=Path("models/bench.json"))
    args = parser.parse_args(argv)
    setup_logging()

    def body() -> int:
        models = {name: path for name, path in (("keras", args.keras), ("fp32", args.fp32), ("int8", args.int8))
                  if path.exists()}
        if not any(name != "keras" for name in models):
            raise SemdefectError(f"no ONNX model found ({args.fp32}, {args.int8}); run export_onnx.py first")
        files, _ = find_images([args.images])
        if not files:
            raise SemdefectError(f"no images under {args.images}")
        from semdefect.studies.bench import benchmark, format_table

        result = benchmark(models, files, args.rounds, args.pipeline_images, args.test, args.profile)
        result["cpu"] = os.cpu_count()
        write_json_atomic(args.json, result)
        print(format_table(result))
        print_summary("bench wrote", {"json": args.json})
        return 0

    return run_stage(body)

