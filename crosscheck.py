"""Run the evaluation protocol: in-distribution test accuracy next to leave-one-source-out accuracy.

Trains the configured model once per row and seed (train on all sources / on one source only / on one source plus
`crosscheck.few_shot` labelled images per class of the other), scores each on the test split (all of it / the
held-out source's images of the classes both sources have) and writes
`crosscheck.out`/crosscheck.md and crosscheck.json. Needs two or more sources (see `crosscheck.sources`).
Run again after a stop and the runs that finished with the same settings and images are kept (`crosscheck.reuse`).

usage: python crosscheck.py [--config FILE] [section.key=value ...]
   e.g. python crosscheck.py data.root=../shared/data/sem-public crosscheck.seeds=[1,2,3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semdefect.cli import print_summary, run_stage, setup_logging
from semdefect.config import add_config_arguments, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after options
    setup_logging()

    def body() -> int:
        cfg = load_config(args.config, args.overrides)
        from semdefect.crosscheck import format_table, run_protocol

        results = run_protocol(cfg)
        print(format_table(results))
        out = Path(cfg["crosscheck"]["out"])
        print_summary("crosscheck.py wrote", {"table": out / "crosscheck.md", "json": out / "crosscheck.json",
                                              "runs": out / "runs"})
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
