"""The skeleton of every workstation command: its own options, then `--config FILE` and `section.key=value`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from semdefect.board.cli import run_stage, setup_logging
from semdefect.config import Config, add_config_arguments, load_config


def run_with_config(parser: argparse.ArgumentParser, argv: list[str] | None,
                    body: Callable[[argparse.Namespace, Config], int],
                    options_as_keys: dict[str, str] | None = None, args: argparse.Namespace | None = None,
                    option_text: Callable[[str, Any], str] | None = None) -> int:
    """Parse `argv` (overrides may come before and after the options), set up logging, load the config and run
    `body(args, cfg)`; bad input becomes one `error:` line and exit code 2.

    `options_as_keys` maps an option to the config key it sets (`{"folds": "audit.folds"}`): given, it is one more
    override, so it is checked like any other; `option_text(option, value)` may write it as the key's YAML value.
    A command that parses its own arguments passes them as `args`.
    """
    if args is None:
        add_config_arguments(parser)
        args = parser.parse_intermixed_args(argv)
    setup_logging()
    parsed = args

    def load_and_run() -> int:
        overrides = list(parsed.overrides)
        for option, dotted in (options_as_keys or {}).items():
            value = getattr(parsed, option, None)
            if value is not None:
                overrides.append(f"{dotted}={option_text(option, value) if option_text else value}")
        return body(parsed, load_config(parsed.config, overrides))

    return run_stage(load_and_run)
