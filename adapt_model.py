"""Adapt a trained model to a new source with a few labelled images of it.

The command lives in `semdefect.commands.adapt_model` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python adapt_model.py --model BASE.keras [--data DIR] [--base-data ROOT] [--unlabelled DIR] --output OUT.keras
"""

import sys

from semdefect.commands.adapt_model import main

if __name__ == "__main__":
    sys.exit(main())
