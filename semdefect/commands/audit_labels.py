"""Find images whose label the model disputes: out-of-fold predictions over a dataset's labelled images.

Deals the images of `audit.splits` into `audit.folds` folds (near-duplicates kept together), trains the configured
model once per fold on the others and scores the fold, then lists the *suspects*: images the model assigns to
another class with at least that class's typical confidence. Writes `audit.out`/audit.md (summary and the most
disputed), audit.csv (every image), audit.json and suspects.png (a contact sheet). Moves and relabels nothing.

usage: python audit_labels.py [--data DATASET] [--out DIR] [--folds K] [--config FILE] [section.key=value ...]
   e.g. python audit_labels.py --data ../shared/data/sem-multi
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary
from semdefect.commands.stage import run_with_config
from semdefect.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--data", type=Path, help="a dataset root holding train/ val/ test/, or a folder of class "
                                                   "folders (default: data.root)")
    parser.add_argument("--out", help="folder for the report (default: audit.out)")
    parser.add_argument("--folds", type=int, help="number of folds (default: audit.folds)")
    return run_with_config(parser, argv, audit_labels,
                           options_as_keys={"data": "data.root", "out": "audit.out", "folds": "audit.folds"})


def audit_labels(args: argparse.Namespace, cfg: Config) -> int:
    from semdefect.studies.audit import audit_dataset, format_report

    report = audit_dataset(cfg)
    print(format_report(report, rows=10))
    out = Path(cfg.audit.out)
    written = {"report": out / "audit.md", "every image": out / "audit.csv", "json": out / "audit.json"}
    if report["ranked"] and cfg.audit.sheet:
        written["sheet"] = out / "suspects.png"
    print_summary("audit_labels.py wrote", written)
    return 0
