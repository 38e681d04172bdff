"""infer_onnx.py --watch: each image that lands in a folder classified exactly once, across kills and restarts."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, assert_one_line_error

import infer_onnx

pytestmark = pytest.mark.slow  # every test runs the session's model in a watching subprocess


class Watching:
    """A watching infer_onnx.py subprocess whose stderr is collected as it comes."""

    def __init__(self, model, folder, output, *extra):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "infer_onnx.py"), "--model", str(model), "--watch", str(folder), "--output",
             str(output), "--poll-seconds", "0.1", "--settle-seconds", "0.3", "--quiet", *map(str, extra)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()
        wait_for(lambda: any("watching" in line for line in self.lines) or self.process.poll() is not None)

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        return self.process.returncode, "".join(self.lines)


def start_watch(model, folder, output, *extra):
    return Watching(model, folder, output, *extra)


def read_rows(output):
    if not output.exists():
        return []
    with output.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def wait_for(condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def stop(watching):
    return watching.stop()


def images(trained, count):
    """`count` distinct image files' sources, cycling over the tiny set."""
    files = sorted((trained["data"] / "test").rglob("*.png"))
    return [files[i % len(files)] for i in range(count)]


def test_images_landing_while_it_runs_are_each_classified_once_and_sigterm_exits_0(trained, tmp_path):
    folder, output = tmp_path / "in", tmp_path / "rows.csv"
    (folder / "day1").mkdir(parents=True)
    sources = images(trained, 8)
    for i, source in enumerate(sources[:3]):
        shutil.copy(source, folder / f"before_{i}.png")
    process = start_watch(trained["int8"], folder, output)
    try:
        wait_for(lambda: len(read_rows(output)) == 3)
        for i, source in enumerate(sources[3:]):
            shutil.copy(source, folder / "day1" / f"after_{i}.png")  # a subfolder too
            time.sleep(0.1)
        wait_for(lambda: len(read_rows(output)) == 8)
        time.sleep(1.0)  # more polls: nothing is classified twice
    finally:
        code, err = stop(process)
    assert code == 0, err
    rows = read_rows(output)
    assert list(rows[0]) == ["path", "label", "confidence", "top3", "status", "error", "decision", "score"]
    assert len(rows) == len({r["path"] for r in rows}) == 8 and all(r["status"] == "ok" for r in rows)
    assert "8 image(s) classified" in err


def test_a_file_written_slowly_is_read_only_when_complete(trained, tmp_path):
    folder, output = tmp_path / "in", tmp_path / "rows.csv"
    folder.mkdir()
    process = start_watch(trained["int8"], folder, output, "--settle-seconds", "1.0")
    try:
        data = images(trained, 1)[0].read_bytes()
        chunks = [data[i:i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]
        with (folder / "slow.png").open("wb") as handle:
            for chunk in chunks:  # six chunks over about 3 seconds
                handle.write(chunk)
                handle.flush()
                time.sleep(0.5)
                assert not read_rows(output)  # never read while it grows
        wait_for(lambda: len(read_rows(output)) == 1)
    finally:
        stop(process)
    assert read_rows(output)[0]["status"] == "ok"


def test_kill_9_then_restart_classifies_every_image_exactly_once(trained, tmp_path):
    folder, output = tmp_path / "in", tmp_path / "rows.csv"
    folder.mkdir()
    for i, source in enumerate(images(trained, 500)):
        shutil.copy(source, folder / f"img_{i:03d}.png")
    process = start_watch(trained["int8"], folder, output, "--batch-size", "8")
    wait_for(lambda: len(read_rows(output)) >= 40)
    process.kill()  # kill -9: no chance to finish anything
    with output.open("a", encoding="utf-8") as handle:  # what a crash mid-write leaves: half a line
        handle.write(str(folder / "img_499.png") + ",cra")
    process = start_watch(trained["int8"], folder, output)
    try:
        wait_for(lambda: len(read_rows(output)) >= 500, seconds=120)
        time.sleep(0.5)
    finally:
        code, err = stop(process)
    assert code == 0, err
    rows = read_rows(output)
    paths = [r["path"] for r in rows]
    assert len(paths) == 500 and set(paths) == {str(p) for p in folder.iterdir()}  # each once, none missing
    assert all(r["status"] == "ok" and r["score"] for r in rows)  # the torn line was cut, not kept
    assert "cut a half-written last line" in err


def test_an_unreadable_file_gives_one_error_row_once_even_after_a_restart(trained, tmp_path):
    folder, output = tmp_path / "in", tmp_path / "rows.jsonl"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not an image")
    shutil.copy(images(trained, 1)[0], folder / "good.png")
    for _ in range(2):
        process = start_watch(trained["int8"], folder, output)
        try:
            wait_for(lambda: output.exists() and len(output.read_text().splitlines()) == 2)
            time.sleep(0.6)
        finally:
            code, _ = stop(process)
        assert code == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["status"] for r in rows) == ["error", "ok"] and len(rows) == 2
    assert next(r for r in rows if r["status"] == "error")["path"].endswith("broken.png")


def test_a_file_deleted_before_it_is_read_is_skipped_with_a_notice(trained, tmp_path):
    folder, output = tmp_path / "in", tmp_path / "rows.csv"
    folder.mkdir()
    process = start_watch(trained["int8"], folder, output, "--settle-seconds", "1.5")
    try:
        time.sleep(1.0)
        shutil.copy(images(trained, 1)[0], folder / "gone.png")
        time.sleep(0.5)
        (folder / "gone.png").unlink()
        time.sleep(2.0)
    finally:
        code, err = stop(process)
    assert code == 0 and not read_rows(output)
    assert "gone.png: deleted before it was read; skipped" in err


def test_rotation_starts_a_numbered_file_every_n_rows_and_resumes_in_the_last(trained, tmp_path):
    folder, output = tmp_path / "in", tmp_path / "rows.csv"
    folder.mkdir()
    sources = images(trained, 9)
    for i, source in enumerate(sources[:7]):
        shutil.copy(source, folder / f"a_{i}.png")
    parts = lambda: sorted(tmp_path.glob("rows.*.csv"))  # noqa: E731
    for expected in (7, 9):
        process = start_watch(trained["int8"], folder, output, "--rotate-rows", "3")
        try:
            wait_for(lambda expected=expected: sum(len(read_rows(p)) for p in parts()) == expected)
        finally:
            stop(process)
        for i, source in enumerate(sources[7:]):
            shutil.copy(source, folder / f"b_{i}.png")
    assert [p.name for p in parts()] == ["rows.000001.csv", "rows.000002.csv", "rows.000003.csv"]
    assert [len(read_rows(p)) for p in parts()] == [3, 3, 3]
    assert not output.exists()


@pytest.mark.parametrize("extra, fragment", [
    (["somefile.png"], "--watch DIR takes no other paths"),
    (["--output", "rows.json"], "watching writes a .csv or .jsonl file"),
    (["--poll-seconds", "-1"], "--poll-seconds must be a number of seconds"),
])
def test_bad_watch_usage_exits_2_in_one_line(trained, tmp_path, capsys, extra, fragment):
    folder = tmp_path / "in"
    folder.mkdir()
    args = ["--model", str(trained["int8"]), "--watch", str(folder), *extra]
    args = [str(tmp_path / a) if a.startswith("rows.") else a for a in args]
    assert infer_onnx.main(args) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)
    assert infer_onnx.main(["--model", str(trained["int8"]), "--watch", str(tmp_path / "nowhere")]) == 2
    assert_one_line_error(capsys.readouterr().err, "no such folder")


def test_the_record_paths_are_absolute(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images(trained, 1)[0], folder / "one.png")
    process = start_watch(trained["int8"], Path(os.path.relpath(folder)), tmp_path / "rows.csv")
    try:
        wait_for(lambda: len(read_rows(tmp_path / "rows.csv")) == 1)
    finally:
        stop(process)
    assert read_rows(tmp_path / "rows.csv")[0]["path"] == str(folder / "one.png")
