"""Make a labelling page of images, or copy labelled images into class folders.

The command lives in `semdefect.commands.label_images` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python label_images.py (DIR | rows.csv | picks.csv) --output labels.html [--model M]
"""

import sys

from semdefect.commands.label_images import main

if __name__ == "__main__":
    sys.exit(main())
