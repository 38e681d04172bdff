"""Quantize an FP32 ONNX model to static INT8, calibrated on validation images, and compare the two.

The command lives in `semdefect.commands.quantize_onnx` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python quantize_onnx.py [--model M.onnx] [--output O.onnx] [--config FILE] [key=value ...]
"""

import sys

from semdefect.commands.quantize_onnx import main

if __name__ == "__main__":
    sys.exit(main())
