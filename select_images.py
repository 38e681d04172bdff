"""Choose which images of a new source a person should label first.

The command lives in `semdefect.commands.select_images` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python select_images.py --model M --images DIR --budget N --output picks.csv
"""

import sys

from semdefect.commands.select_images import main

if __name__ == "__main__":
    sys.exit(main())
