"""Make leak-free train/val/test splits, or check a split for leakage and other problems.

The command lives in `semdefect.commands.prepare_dataset` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python prepare_dataset.py split SRC DST [--ratios 70,15,15] [--seed 42] [--copy|--link]
       python prepare_dataset.py check DATASET [--report FILE.json]
"""

import sys

from semdefect.commands.prepare_dataset import main

if __name__ == "__main__":
    sys.exit(main())
