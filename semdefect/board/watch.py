"""Inline on the board: watch a folder and classify each new image once, as it lands (board side: standard library,
numpy, Pillow and the runtime).

The output is the record of what was done: one row per image, appended and flushed as it is classified (CSV, or JSON
Lines for `.jsonl`), optionally in numbered parts of `--rotate-rows` rows (`results.000001.csv`, ...: sorted names
are the order they were written). A restart reads the parts back, cuts a torn last line a crash left, and takes every
image named there as done, so none is classified twice or never. Without an output, `--state` keeps the same record,
one path per line.

A file is read once complete: its size and modification time unchanged for `--settle-seconds` (a copy in progress
keeps changing them; a file renamed into place arrives whole). A file that cannot be read becomes one error row; a
file deleted before it was read is skipped with a notice. The folder is polled every `--poll-seconds` (a network
share has no change notification to rely on); what is held in memory is the folder's current files, the record of
those done among them, and the files waiting to settle: a path gone from the folder is forgotten.

SIGINT or SIGTERM: the images in hand are finished and written, then the watch exits 0.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import SemdefectError
from .files import is_image_name
from .inference import COLUMNS, Row, classify, console_line, csv_fields, json_record
from .runtime import Classifier

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".csv", ".jsonl")


class AppendLog:
    """A file appended to a line at a time: flushed per line, synced on demand and when closed."""

    handle: io.TextIOWrapper | None = None

    def sync(self) -> None:
        """Flushed lines survive a crash of this process; synced ones a power cut too."""
        if self.handle is not None:
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        if self.handle is not None:
            self.sync()
            self.handle.close()
            self.handle = None


class RowLog(AppendLog):
    """An append-only record of rows: one file, or numbered parts of at most `rotate_rows` rows each."""

    def __init__(self, path: Path, rotate_rows: int = 0):
        if path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise SemdefectError(f"--output {path}: watching writes a .csv or .jsonl file (appended a row at a time)")
        self.path, self.rotate_rows = Path(path), rotate_rows
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        self.number, self.rows_in_part = 1, 0  # the part being written, and its rows

    def parts(self) -> list[Path]:
        """The files written so far, in the order they were written."""
        if not self.rotate_rows:
            return [self.path] if self.path.exists() else []
        pattern = re.compile(re.escape(self.path.stem) + r"\.(\d{6})" + re.escape(self.path.suffix) + "$")
        return sorted(p for p in self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}")
                      if pattern.match(p.name))

    def part_name(self, number: int) -> Path:
        return self.path if not self.rotate_rows else self.path.with_name(
            f"{self.path.stem}.{number:06d}{self.path.suffix}")

    def recover(self) -> set[str]:
        """The paths already written; a torn last line (a crash mid-write) is cut off first."""
        done: set[str] = set()
        parts = self.parts()
        for part in parts:
            repair_torn_line(part)
            with part.open(newline="", encoding="utf-8") as handle:
                if self.jsonl:
                    done.update(json.loads(line)["path"] for line in handle if line.strip())
                else:
                    done.update(row["path"] for row in csv.DictReader(handle))
        if parts:
            last = parts[-1]
            with last.open(encoding="utf-8") as handle:
                lines = sum(1 for line in handle if line.strip())
            self.rows_in_part = max(0, lines - (0 if self.jsonl else 1))  # less the CSV header
            self.number = int(last.name.split(".")[-2]) if self.rotate_rows else 1
        return done

    def append(self, row: Row) -> None:
        if self.rotate_rows and self.rows_in_part >= self.rotate_rows:  # this part is full: the next one
            self.close()
            self.number, self.rows_in_part = self.number + 1, 0
        if self.handle is None:
            self.open_part()
        assert self.handle is not None
        self.handle.write(row_line(row, self.jsonl))
        self.handle.flush()  # another program follows the file; a crash loses at most the line being written
        self.rows_in_part += 1

    def open_part(self) -> None:
        path = self.part_name(self.number)
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or path.stat().st_size == 0
        self.handle = path.open("a", newline="", encoding="utf-8")
        if fresh and not self.jsonl:
            self.handle.write(",".join(COLUMNS) + "\n")


def row_line(row: Row, jsonl: bool) -> str:
    if jsonl:
        return json.dumps(json_record(row), ensure_ascii=False) + "\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(csv_fields(row))
    return buffer.getvalue()


def repair_torn_line(path: Path) -> None:
    """Cut what follows the last newline: a line a crash left half-written (a whole line always ends in one)."""
    with path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            handle.truncate(keep)
            log.warning("%s: cut a half-written last line (%d bytes) a crash left", path, len(data) - keep)


class PathLog(AppendLog):
    """--state: the paths done, one per line, appended and flushed."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def recover(self) -> set[str]:
        if not self.path.exists():
            return set()
        repair_torn_line(self.path)
        return {line.rstrip("\n") for line in self.path.open(encoding="utf-8") if line.strip()}

    def append(self, row: Row) -> None:
        if self.handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self.path.open("a", encoding="utf-8")
        self.handle.write(row.path + "\n")
        self.handle.flush()


@dataclass
class Pending:
    """A file seen but not yet settled: its size and modification time, and since when they have not changed."""

    size: int
    mtime_ns: int
    since: float


def list_images(folder: Path) -> set[str]:
    """Every image file under `folder` (hidden files and other extensions, e.g. a copy's `.part`, left out)."""
    found: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.update(os.path.join(root, name) for name in files if is_image_name(Path(name)))
    return found


class Watcher:
    def __init__(self, classifier: Classifier, folder: Path, threshold: float | None, sinks: Iterable[RowLog | PathLog],
                 stop: threading.Event, poll_seconds: float = 1.0, settle_seconds: float = 1.0, batch_size: int = 32,
                 quiet: bool = False):
        self.classifier, self.folder, self.threshold = classifier, Path(folder), threshold
        self.sinks = list(sinks)
        self.poll_seconds, self.settle_seconds, self.batch_size, self.quiet = (poll_seconds, settle_seconds,
                                                                                batch_size, quiet)
        self.stop = stop
        self.done: set[str] = set()
        self.pending: dict[str, Pending] = {}
        self.counts = {"ok": 0, "error": 0, "review": 0}

    def run(self) -> None:
        for sink in self.sinks:
            self.done |= sink.recover()
        if self.done:
            log.info("resuming: %d image(s) already in the record", len(self.done))
        while not self.stop.is_set():
            ready = self.poll()
            for start in range(0, len(ready), self.batch_size):
                self.classify([Path(p) for p in ready[start:start + self.batch_size]])
                if self.stop.is_set():
                    break
            for sink in self.sinks:
                sink.sync()
            if not ready:
                self.stop.wait(self.poll_seconds)
        for sink in self.sinks:
            sink.close()

    def poll(self) -> list[str]:
        """The files that are complete and not done yet, oldest first; forgets what is gone from the folder."""
        present = list_images(self.folder)
        self.done &= present  # a path gone from the folder is forgotten: memory follows the folder, not the run
        for path in set(self.pending) - present:
            del self.pending[path]
            log.warning("%s: deleted before it was read; skipped", path)
        now = time.monotonic()
        ready = []
        for path in sorted(present - self.done):
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                self.pending.pop(path, None)
                log.warning("%s: deleted before it was read; skipped", path)
                continue
            seen = self.pending.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self.pending[path] = seen = Pending(stat.st_size, stat.st_mtime_ns, now)
            if now - seen.since >= self.settle_seconds:
                ready.append((stat.st_mtime_ns, path))
        return [path for _, path in sorted(ready)]

    def classify(self, paths: list[Path]) -> None:
        for row in classify(self.classifier, paths, self.threshold, self.batch_size):
            if row.status == "error" and not os.path.exists(row.path):
                self.pending.pop(row.path, None)
                log.warning("%s: deleted before it was read; skipped", row.path)
                continue
            for sink in self.sinks:
                sink.append(row)
            self.done.add(row.path)
            self.pending.pop(row.path, None)
            self.counts["error" if row.status == "error" else "ok"] += 1
            self.counts["review"] += row.decision == "review"
            if not self.quiet:
                print(console_line(row), flush=True)
