"""vela's latency estimate on the i.MX 93's Ethos-U65 (NXP's settings) for the default architecture and its neighbours.

Each architecture is built with the seed-0 initial weights (untrained: the estimate depends on the layers' shapes and
on how well vela compresses the weights, so a trained model can differ a little; the default's trained models gave
the same figure, docs/board.md), exported by export_tflite.py's own conversion (calibrated on random images) and
compiled by vela. A benchmark, not a test: it prints vela's figures, which are a performance model, not a board.

usage: python benchmarks/bench_vela.py [--out docs/results/vela_architectures.json]   (needs requirements-vela.txt)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (name, build_model keyword arguments): the default, then narrower, then the design's reference CNN
ARCHITECTURES = [
    ("default: width 2, 4 blocks, gmp, BatchNorm", {"head": "gmp", "width": 2.0, "blocks": 4, "batchnorm": True}),
    ("width 1.5, 4 blocks, gmp, BatchNorm", {"head": "gmp", "width": 1.5, "blocks": 4, "batchnorm": True}),
    ("width 1, 4 blocks, gmp, BatchNorm", {"head": "gmp", "width": 1.0, "blocks": 4, "batchnorm": True}),
    ("reference: width 1, 3 blocks, flatten", {"head": "flatten", "width": 1.0, "blocks": 3, "batchnorm": False}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    import keras

    from semdefect.board.files import write_json_atomic
    from semdefect.deploy.tflite import convert_int8, npu_graph
    from semdefect.deploy.vela import compile_for_ethos_u
    from semdefect.training.model import build_model

    calibration = np.random.default_rng(0).random((16, 128, 128, 1)).astype(np.float32)
    rows = []
    for name, settings in ARCHITECTURES:
        keras.utils.set_random_seed(0)
        model = build_model(10, 128, **settings)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "model.tflite"
            path.write_bytes(convert_int8(npu_graph(model), calibration, per_tensor=False))
            report = compile_for_ethos_u(path, Path(scratch) / "vela")
        rows.append({"architecture": name, "settings": settings, "parameters": model.count_params(),
                     "latency_ms": round(report["latency_ms"], 3), "all_on_npu": report["all_on_npu"],
                     "sram_kib": report["sram_kib"], "macs": report["macs"], "vela": report["vela_version"]})
        print(f"{name}: {rows[-1]['latency_ms']:.3f} ms estimated, {'all' if report['all_on_npu'] else 'not all'} "
              f"on the NPU, {report['macs'] / 1e6:.0f} M MACs, {model.count_params()} parameters", flush=True)
    if args.out:
        write_json_atomic(args.out, {"command": "python benchmarks/bench_vela.py", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
