"""The command-line skeleton every command shares: its parser, logging, and the project's errors as exit code 2.

Board side (standard library only), so that the board's command and the workstation's commands stand on one skeleton.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping

from .errors import SemdefectError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def command_parser(doc: str) -> argparse.ArgumentParser:
    """A command's parser, described by the first paragraph of the command module's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0])


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s",
                        stream=sys.stderr, force=True)


def run_stage(body: Callable[[], int]) -> int:
    """Run a stage; a SemdefectError becomes one line on stderr and exit 2, Ctrl-C exit 130."""
    try:
        return body()
    except SemdefectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the reader of our output went away (`| head`): not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- it must stay open: it is stdout from now on
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def print_summary(title: str, written: Mapping[str, object]) -> None:
    """The closing summary: every file the stage wrote, by role."""
    print(f"{title}:")
    for role, path in written.items():
        print(f"  {role:<12} {path}")
