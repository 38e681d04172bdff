"""Train the SEM defect CNN on `data.root`/train and /val (`train.fit_on=train` holds val out for early stopping).

Reads config.yaml (+ --config FILE, + section.key=value overrides); writes `train.output`
(default models/sem_cnn.keras, no optimizer state) and beside it the history, the resolved config,
a training-curve PNG, checkpoints/ (for train.resume=true) and TensorBoard logs/.

usage: python train_model.py [--config FILE] [section.key=value ...]
"""

from __future__ import annotations

import argparse
import sys

from semdefect.cli import print_summary, run_stage, setup_logging
from semdefect.config import add_config_arguments, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after options
    setup_logging()

    def body() -> int:
        cfg = load_config(args.config, args.overrides)
        from semdefect.training import train  # TensorFlow loads only once the config is known to be good

        written = train(cfg)
        print_summary("train_model.py wrote", written)
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
