"""Export a trained .keras model to a full-integer INT8 TFLite file (i.MX NPUs) and check it.

The command lives in `semdefect.commands.export_tflite` (also a console command once installed);
this file runs it from the repository root with no install step.

usage: python export_tflite.py [--model models/sem_cnn.keras] [--output models/sem_cnn.int8.tflite] [key=value ...]
"""

import sys

from semdefect.commands.export_tflite import main

if __name__ == "__main__":
    sys.exit(main())
