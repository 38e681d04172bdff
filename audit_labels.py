"""Find images whose label the model disputes: out-of-fold predictions over a dataset's labelled images.

Deals the images of `audit.splits` into `audit.folds` folds (near-duplicates kept together), trains the configured
model once per fold on the others and scores the fold, then lists the *suspects*: images the model assigns to
another class with at least that class's typical confidence. Writes `audit.out`/audit.md (summary and the most
disputed), audit.csv (every image), audit.json and suspects.png (a contact sheet). Moves and relabels nothing.

usage: python audit_labels.py [--data DATASET] [--out DIR] [--folds K] [--config FILE] [section.key=value ...]
   e.g. python audit_labels.py --data ../shared/data/sem-public
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semdefect.cli import print_summary, run_stage, setup_logging
from semdefect.config import add_config_arguments, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a dataset root holding train/ val/ test/, or a folder of class "
                                                   "folders (default: data.root)")
    parser.add_argument("--out", help="folder for the report (default: audit.out)")
    parser.add_argument("--folds", type=int, help="number of folds (default: audit.folds)")
    add_config_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after options
    setup_logging()

    def body() -> int:
        overrides = list(args.overrides)
        if args.data is not None:
            overrides.append(f"data.root={args.data}")
        if args.out is not None:
            overrides.append(f"audit.out={args.out}")
        if args.folds is not None:
            overrides.append(f"audit.folds={args.folds}")
        cfg = load_config(args.config, overrides)
        from semdefect.audit import audit_dataset, format_report

        report = audit_dataset(cfg)
        print(format_report(report, rows=10))
        out = Path(cfg["audit"]["out"])
        written = {"report": out / "audit.md", "every image": out / "audit.csv", "json": out / "audit.json"}
        if report["ranked"] and cfg["audit"]["sheet"]:
            written["sheet"] = out / "suspects.png"
        print_summary("audit_labels.py wrote", written)
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
