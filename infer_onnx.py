"""Classify SEM images with an ONNX model, on the board (onnxruntime, numpy, Pillow; no config).

The command lives in `semdefect.board.infer` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python infer_onnx.py --model models/sem_cnn.int8.onnx PATH [PATH ...] [--output results.csv]
"""

import sys

from semdefect.board.infer import main

if __name__ == "__main__":
    sys.exit(main())
