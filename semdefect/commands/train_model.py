"""Train the SEM defect CNN on `data.root`/train and /val (`train.fit_on=train` holds val out for early stopping).

Reads config.yaml (+ --config FILE, + section.key=value overrides); writes `train.output`
(default models/sem_cnn.keras, no optimizer state) and beside it the history, the resolved config,
a training-curve PNG, checkpoints/ (for train.resume=true) and TensorBoard logs/.

usage: python train_model.py [--config FILE] [section.key=value ...]
"""

from __future__ import annotations

import argparse

from semdefect.board.cli import command_parser, print_summary
from semdefect.commands.stage import run_with_config
from semdefect.config import Config


def main(argv: list[str] | None = None) -> int:
    return run_with_config(command_parser(__doc__), argv, train_model)


def train_model(args: argparse.Namespace, cfg: Config) -> int:
    from semdefect.training.train import train  # TensorFlow loads only once the config is known to be good

    print_summary("train_model.py wrote", train(cfg))
    return 0
