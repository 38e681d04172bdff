"""Generate synthetic SEM images of the ten classes (the project's own dataset_sample/ is made this way).

The command lives in `semdefect.commands.generate_images` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python generate_images.py --out DIR [--per-class N] [--size PX] [--seed S] [--split 70,15,15]
                                 [--contact-sheet PNG]
"""

import sys

from semdefect.commands.generate_images import main

if __name__ == "__main__":
    sys.exit(main())
