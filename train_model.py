"""Train the SEM defect CNN on `data.root`/train and /val.

The command lives in `semdefect.commands.train_model` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python train_model.py [--config FILE] [section.key=value ...]
"""

import sys

from semdefect.commands.train_model import main

if __name__ == "__main__":
    sys.exit(main())
