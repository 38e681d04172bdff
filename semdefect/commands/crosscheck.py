"""Run the evaluation protocol: in-distribution test accuracy next to leave-one-source-out accuracy.

Trains the configured model once per row and seed (train on all sources / on one source only / on one source plus
`crosscheck.few_shot` labelled images per class of the other), scores each on the test split (all of it / the
held-out source's images of the classes both sources have) and writes
`crosscheck.out`/crosscheck.md and crosscheck.json. Needs two or more sources (see `crosscheck.sources`).
Run again after a stop and the runs that finished with the same settings and images are kept (`crosscheck.reuse`).
Each row also reports the review bin's coverage and accuracy on the accepted images.

With `crosscheck.leave_out=classes` it runs the open-set protocol instead (`make openset`): one row per class, trained
without that class; the row reports how well the review score separates that class's test images from the known
classes' (AUROC) and, at the model's threshold, the share of them sent to review and of known images accepted.

usage: python crosscheck.py [--config FILE] [section.key=value ...]
   e.g. python crosscheck.py data.root=../shared/data/sem-multi crosscheck.seeds=[1,2,3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary
from semdefect.commands.stage import run_with_config
from semdefect.config import Config


def main(argv: list[str] | None = None) -> int:
    return run_with_config(command_parser(__doc__), argv, crosscheck)


def crosscheck(args: argparse.Namespace, cfg: Config) -> int:
    from semdefect.studies.crosscheck import format_table, run_protocol

    results = run_protocol(cfg)
    print(format_table(results))
    out = Path(cfg.crosscheck.out)
    print_summary("crosscheck.py wrote", {"table": out / "crosscheck.md", "json": out / "crosscheck.json",
                                          "runs": out / "runs"})
    return 0
