"""Export a trained .keras model to ONNX and check it against Keras.

The command lives in `semdefect.commands.export_onnx` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python export_onnx.py [--model M.keras] [--output O.onnx] [--config FILE] [key=value ...]
"""

import sys

from semdefect.commands.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
