"""Bad input, faults and nothing lost: every stage meets every kind of file without a traceback."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from badfiles import CASES, can_make_unreadable, write_case
from conftest import ROOT, TINY_SIZE, assert_one_line_error

import evaluate_model
import infer_onnx
import train_model
from semdefect.training.model import load_model

# --- the bad-input matrix, one test per case --------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_infer_gives_each_file_a_row(trained, tmp_path, case, capsys):
    path = write_case(tmp_path / "in", case)
    out = tmp_path / "rows.csv"
    code = infer_onnx.main(["--model", str(trained["int8"]), str(tmp_path / "in"), "--output", str(out)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["path"] == str(path)
    expected = CASES[case][2]
    assert rows[0]["status"] == expected and code == (0 if expected == "ok" else 1)
    if expected == "error":
        assert path.name in rows[0]["error"] and "\n" not in rows[0]["error"]
    else:
        assert rows[0]["label"] and 0 < float(rows[0]["confidence"]) <= 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_evaluate_skips_a_bad_file_naming_it(trained, tmp_path, case, capsys):
    data = tmp_path / "data"
    shutil.copytree(trained["data"] / "test", data / "test")
    path = write_case(data / "test" / "crack", case)
    out = tmp_path / "e"
    assert evaluate_model.main(["--model", str(trained["onnx"]), "--data", str(data), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    if CASES[case][2] == "ok":
        assert metrics["n_images"] == 21
    else:
        assert metrics["n_images"] == 20 and f"skipping {path}" in captured.err


def test_training_skips_every_bad_file_naming_each(trained, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    bad = [write_case(data / "train" / "particle", case) for case in CASES if CASES[case][2] == "error"]
    out = tmp_path / "m"
    overrides = [f"data.root={data}", f"data.image_size={TINY_SIZE}", "train.epochs=1", "train.tensorboard=false",
                 f"train.output={out / 'm.keras'}"]
    assert train_model.main(overrides) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(f"skipping {path}" in err for path in bad)
    history = json.loads((out / "m.history.json").read_text())
    # train and val, but for one image per class held out for the review bin
    assert history["train_images"] == 70 and sorted(history["skipped"]) == sorted(map(str, bad))


def test_unreadable_permissions_become_an_error_row(trained, tmp_path, capsys):
    path = write_case(tmp_path / "in", "rgba")
    if not can_make_unreadable(path):
        pytest.skip("running as root: permission bits do not stop root from reading")
    code = infer_onnx.main(["--model", str(trained["int8"]), str(path), "--output", str(tmp_path / "r.csv")])
    assert code == 1 and "permission denied" in (tmp_path / "r.csv").read_text()


def test_symlink_loop_is_reported_once_and_the_walk_ends(trained, tmp_path, capsys):
    folder = tmp_path / "in"
    write_case(folder, "rgba")
    os.symlink(folder, folder / "loop")
    code = infer_onnx.main(["--model", str(trained["int8"]), str(folder), "--output", str(tmp_path / "r.csv")])
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert code == 1 and [r["status"] for r in rows] == ["error", "ok"] and "symlink loop" in rows[0]["error"]


@pytest.mark.parametrize("content", ["nothing", "only_text"])
def test_folder_without_images_gives_no_rows_and_says_so(trained, tmp_path, content, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    if content == "only_text":
        (folder / "readme.txt").write_text("x")
    code = infer_onnx.main(["--model", str(trained["int8"]), str(folder)])
    assert code == 0 and "0 image(s) classified (0 accept, 0 review), 0 error(s)" in capsys.readouterr().err


def test_evaluate_on_a_folder_with_only_non_images_exits_2(trained, tmp_path, capsys):
    (tmp_path / "test" / "via").mkdir(parents=True)
    (tmp_path / "test" / "via" / "notes.txt").write_text("x")
    assert evaluate_model.main(["--model", str(trained["onnx"]), "--data", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "no readable image")


# --- nothing lost -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_training_leaves_a_loadable_checkpoint_and_resumes(trained, tmp_path, sig):
    out = tmp_path / "run"
    args = [f"data.root={trained['data']}", f"data.image_size={TINY_SIZE}", "train.epochs=50", "train.patience=0",
            "train.tensorboard=false", f"train.output={out / 'm.keras'}"]
    process = subprocess.Popen([sys.executable, str(ROOT / "train_model.py"), *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "checkpoints" / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(sig)
    process.wait(timeout=60)
    assert process.returncode != 0 and not (out / "m.keras").exists()
    for name in ("last.keras", "best.keras"):
        model, metadata = load_model(out / "checkpoints" / name)
        assert model.count_params() > 0 and metadata.class_names
    done = json.loads(state.read_text())["epoch"]
    assert train_model.main(args[:2] + ["train.epochs=" + str(done + 1), "train.resume=true", *args[4:]]) == 0
    history = json.loads((out / "m.history.json").read_text())["history"]
    assert len(history["loss"]) == done + 1


def test_killed_inference_leaves_the_previous_output_or_a_complete_one(trained, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    sources = sorted(trained["data"].rglob("*.png"))
    for i in range(600):
        os.symlink(sources[i % len(sources)], folder / f"{i:04d}.png")
    out = tmp_path / "rows.csv"
    out.write_text("previous results\n")
    process = subprocess.Popen([sys.executable, str(ROOT / "infer_onnx.py"), "--model", str(trained["onnx"]),
                                str(folder), "--output", str(out), "--batch-size", "8"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for _ in range(50):  # let it get well into the folder
        process.stdout.readline()
    process.kill()
    process.wait(timeout=30)
    text = out.read_text()
    assert text == "previous results\n" or len(text.splitlines()) == 601
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


# --- determinism ------------------------------------------------------------------------------------------

def test_same_seed_and_data_give_the_same_weights(trained, tmp_path):
    again = tmp_path / "again.keras"
    overrides = [o for o in trained["overrides"] if not o.startswith("train.output")] + [f"train.output={again}"]
    assert train_model.main(overrides) == 0
    first, _ = load_model(trained["keras"])
    second, _ = load_model(again)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


# --- config and model faults, through the scripts ---------------------------------------------------------

CONFIG_FAULTS = {
    "yaml_syntax": ("train:\n  epochs: [3\n", "line"),
    "not_a_mapping": ("- just\n- a list\n", "must be a mapping"),
    "wrong_type": ("train:\n  batch_size: sixteen\n", "'train.batch_size' must be int"),
    "unknown_key": ("train:\n  epohcs: 3\n", "did you mean 'train.epochs'"),
    "negative_batch": ("train:\n  batch_size: -4\n", "'train.batch_size' must be at least 1"),
    "negative_epochs": ("train:\n  epochs: -1\n", "'train.epochs' must be at least 1"),
    "ratios_not_100": ("prepare:\n  ratios: [70, 20, 20]\n", "summing to 100"),
}


@pytest.mark.parametrize("fault", sorted(CONFIG_FAULTS))
@pytest.mark.parametrize("module", [train_model, evaluate_model])
def test_config_file_faults_exit_2_in_one_line(module, fault, tmp_path, capsys):
    text, fragment = CONFIG_FAULTS[fault]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert module.main(["--config", str(config)]) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)


def test_onnx_whose_input_does_not_match_its_metadata_exits_2(trained, tmp_path, capsys):
    import onnx

    proto = onnx.load(str(trained["onnx"]))
    for prop in proto.metadata_props:
        if prop.key == "image_size":
            prop.value = "96"
        if prop.key == "preprocess":
            prop.value = prop.value.replace(f'"image_size": {TINY_SIZE}', '"image_size": 96')
    liar = tmp_path / "liar.onnx"
    onnx.save(proto, str(liar))
    assert infer_onnx.main(["--model", str(liar), str(trained["data"])]) == 2
    assert_one_line_error(capsys.readouterr().err, "liar.onnx", "does not match its metadata")


def test_onnx_given_where_keras_is_expected_exits_2(trained, capsys):
    import export_onnx

    assert export_onnx.main(["--model", str(trained["onnx"]), *trained["overrides"]]) == 2
    assert_one_line_error(capsys.readouterr().err, "expected a .keras")
