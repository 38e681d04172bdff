"""Run the evaluation protocol: in-distribution next to leave-one-source-out accuracy, over seeds.

The command lives in `semdefect.commands.crosscheck` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python crosscheck.py [--config FILE] [section.key=value ...]
"""

import sys

from semdefect.commands.crosscheck import main

if __name__ == "__main__":
    sys.exit(main())
