"""Evaluate a .keras or .onnx model on a test split (or any folder of class folders).

The command lives in `semdefect.commands.evaluate_model` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python evaluate_model.py [--model M] [--data DIR] [--split S] [--out DIR] [--config FILE] [key=value ...]
"""

import sys

from semdefect.commands.evaluate_model import main

if __name__ == "__main__":
    sys.exit(main())
