"""Make leak-free train/val/test splits, or check a split for leakage and other problems.

`split` copies (or links) a folder of class folders - or a split dataset, pooled - into DST/{train,val,test}/<class>/,
keeping near-duplicates (resized, re-cropped, re-encoded, re-exposed or re-noised copies) inside one split; it
writes DST/split_report.json and DST/split_config.yaml. `check` reports per-split class counts, leaks (near-duplicate
pairs across splits, with scores), exact duplicates, unreadable and unexpected files and unusual images; exit 1 when
it finds leaks or unreadable files.

usage: python prepare_dataset.py split SRC DST [--ratios 70,15,15] [--seed 42] [--copy|--link] [--config FILE]
           [key=value ...]
       python prepare_dataset.py check DATASET [--report FILE.json] [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary
from semdefect.board.errors import ConfigError
from semdefect.commands.stage import run_with_config
from semdefect.config import Config, add_config_arguments


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{split,check}")
    split = commands.add_parser("split", help="split a folder of class folders group-aware into DST")
    split.add_argument("src", type=Path, metavar="SRC", help="a folder of class folders (or a split dataset, pooled)")
    split.add_argument("dst", type=Path, metavar="DST", help="new (or empty) folder for train/ val/ test/")
    split.add_argument("--ratios", help="train,val,test percentages summing to 100 (default: prepare.ratios)")
    split.add_argument("--seed", type=int, help="seed of the split (default: prepare.seed)")
    how = split.add_mutually_exclusive_group()
    how.add_argument("--copy", dest="link", action="store_false", help="copy the files (default)")
    how.add_argument("--link", dest="link", action="store_true", help="make symbolic links to the files instead")
    split.set_defaults(link=False)
    add_config_arguments(split)
    check = commands.add_parser("check", help="check a split dataset for leakage and other problems")
    check.add_argument("dataset", type=Path, metavar="DATASET", help="a dataset root holding train/ val/ test/")
    check.add_argument("--report", type=Path, help="write every finding to this JSON file")
    add_config_arguments(check)
    args, extra = parser.parse_known_args(argv)
    # Overrides may also follow the options (`check DATA --report R key=value`), where argparse stops
    # looking for positionals.
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = list(args.overrides) + extra
    return run_with_config(parser, argv, prepare_dataset, args=args,
                           options_as_keys={"ratios": "prepare.ratios", "seed": "prepare.seed"},
                           option_text=lambda option, value: ratios_text(value) if option == "ratios" else str(value))


def prepare_dataset(args: argparse.Namespace, cfg: Config) -> int:
    from semdefect.data.splits import check_dataset, format_check, format_split, split_dataset

    if args.command == "split":
        report = split_dataset(args.src, args.dst, cfg, link=args.link)
        print(format_split(report))
        print_summary("prepare_dataset.py split wrote", {
            "splits": ", ".join(f"{args.dst / s}" for s in report["splits"]),
            "report": args.dst / "split_report.json", "config": args.dst / "split_config.yaml"})
        return 0
    report = check_dataset(args.dataset, cfg)
    print(format_check(report))
    if args.report:
        from semdefect.board.files import write_json_atomic

        write_json_atomic(args.report, report)
        print_summary("prepare_dataset.py check wrote", {"report": args.report})
    exit_code: int = report["exit_code"]
    return exit_code


def ratios_text(text: str) -> str:
    """'70,15,15' -> '[70, 15, 15]', refusing anything but three whole numbers (the sum is checked by the config)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--ratios must be three whole percentages like 70,15,15, got {text!r}")
    return f"[{', '.join(parts)}]"

