"""Find images whose label the model disputes (out-of-fold predictions), for review by eye.

The command lives in `semdefect.commands.audit_labels` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python audit_labels.py [--data DATASET] [--out DIR] [--folds K] [--config FILE] [section.key=value ...]
"""

import sys

from semdefect.commands.audit_labels import main

if __name__ == "__main__":
    sys.exit(main())
