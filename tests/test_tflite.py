"""The INT8 TFLite stage and the board's LiteRT path: export, metadata, scoring, inference, delegates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_script

import evaluate_model
import export_tflite
from semdefect.board.errors import ModelError
from semdefect.board.review import neighbour_agreement
from semdefect.board.runtime import OnnxClassifier
from semdefect.board.tflite_file import TfliteFormatError, read_metadata


@pytest.fixture(scope="module")
def tflite(trained):
    """The session's tiny model exported to INT8 TFLite (per-channel), with its report."""
    path = trained["out"] / "sem_cnn.int8.tflite"
    code = export_tflite.main(["--model", str(trained["keras"]), "--output", str(path), *trained["overrides"]])
    assert code in (0, 1)  # one epoch on 60 images: the budget may be missed; the file is written either way
    return path


def test_metadata_round_trip_through_the_flatbuffer(tflite):
    from semdefect.deploy.tflite import with_metadata

    content = tflite.read_bytes()
    entries = read_metadata(content)
    assert {"semdefect", "semdefect_bank", "CONVERSION_METADATA"} <= set(entries)  # the converter's own kept
    rewritten = read_metadata(with_metadata(content, {"extra": b"\x00\x01abc", "semdefect": b"{}"}))
    assert rewritten["extra"] == b"\x00\x01abc" and rewritten["semdefect"] == b"{}"  # an entry is replaced, not doubled


def test_reader_refuses_what_is_not_a_tflite_file(tflite):
    with pytest.raises(TfliteFormatError, match="TFL3"):
        read_metadata(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(TfliteFormatError):
        read_metadata(tflite.read_bytes()[:64])  # cut short


def test_numpy_agreement_matches_the_keras_layer():
    import keras

    from semdefect.training.model import NeighbourAgreement

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(40, 16)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 40)
    features = rng.normal(size=(25, 16)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(4), 25).astype(np.float32)
    layer = NeighbourAgreement(40, 4, 5)
    layer.build(((None, 16), (None, 4)))
    layer.set_weights([bank.astype(np.float16), np.eye(4, dtype=np.float32)[labels]])
    expected = keras.ops.convert_to_numpy(layer([features, probabilities]))
    got = neighbour_agreement(features, probabilities, bank.astype(np.float16).astype(np.float32), labels, 5)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_tflite_file_is_int8_end_to_end_and_carries_its_facts(tflite, trained):
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(tflite)).get_signature_runner()
    image = details.get_input_details()["image"]
    assert list(image["shape"]) == [1, 64, 64, 1] and image["dtype"] == np.int8
    assert all(out["dtype"] == np.int8 for out in details.get_output_details().values())
    pairs = json.loads(read_metadata(tflite.read_bytes())["semdefect"])
    onnx_model = OnnxClassifier(trained["onnx"])
    assert json.loads(pairs["class_names"]) == onnx_model.class_names
    assert pairs["preprocess"] == onnx_model.prep.to_json() and pairs["review"] == onnx_model.metadata.review.to_json()
    scale, zero_point = json.loads(pairs["input_quantization"])
    assert (scale, zero_point) == pytest.approx(image["quantization"])


def test_report_compares_with_fp32_and_int8_onnx_on_every_split(tflite):
    report = json.loads(tflite.with_name(tflite.name + ".report.json").read_text())
    assert [row["split"] for row in report["splits"]] == ["train", "val", "test"]
    for row in report["splits"]:
        for model in ("tflite", "int8_onnx"):
            assert 0 <= row[model]["top1_agreement"] <= 1 and 0 <= row[model]["decision_agreement"] <= 1
            assert row[model]["drop_points"] == pytest.approx(100 * (row["fp32_accuracy"] - row[model]["accuracy"]))
    assert report["images_all"] == 100 and report["tflite_mb"] < report["fp32_onnx_mb"]
    assert report["ok"] == all(r["tflite"]["drop_points"] <= 1.0 for r in report["splits"][1:])


def test_tflite_agrees_with_int8_onnx_on_the_tiny_model(tflite, trained):
    from semdefect.evaluation.scoring import load_classifier, load_eval_data, predict_scored

    onnx_model = load_classifier(trained["onnx"])
    images = load_eval_data(trained["data"], "test", onnx_model.class_names, onnx_model.prep).x
    (p_ref, _), (p_tfl, scores) = predict_scored(onnx_model, images), predict_scored(load_classifier(tflite), images)
    assert np.allclose(p_tfl.sum(axis=1), 1, atol=1e-5) and ((scores >= 0) & (scores <= 1)).all()
    assert np.abs(p_tfl - p_ref).max() < 0.2  # int8 rounding, not another model


def test_evaluate_scores_a_tflite_model(tflite, trained, tmp_path):
    assert evaluate_model.main(["--model", str(tflite), "--out", str(tmp_path), *trained["overrides"]]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_images"] == 20 and metrics["selective"]["threshold"] is not None


def test_infer_runs_a_tflite_model_with_the_same_rows(tflite, trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for image in sorted((trained["data"] / "test" / "crack").glob("*.png")):
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "rows.csv"
    result = run_script("infer_onnx.py", "--model", tflite, folder, "--output", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr  # 1: the empty file is an error row
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "label", "confidence", "top3", "status", "error", "decision", "score"]
    assert [row["status"] for row in rows].count("error") == 1 and len(rows) == 3
    assert "ran on ai-edge-litert" in result.stderr and "CPU (no delegate loaded)" in result.stderr
    assert "NPU" not in result.stderr


@pytest.mark.parametrize("delegate, fragment", [("missing.so", "no such file"), ("not_a_library.so", "cannot load")])
def test_a_delegate_that_cannot_be_loaded_exits_2(tflite, trained, tmp_path, delegate, fragment):
    (tmp_path / "not_a_library.so").write_text("not a shared library")
    result = run_script("infer_onnx.py", "--model", tflite, "--delegate", tmp_path / delegate,
                        trained["data"] / "test")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "--delegate", fragment)


def test_a_delegate_with_an_onnx_model_exits_2(trained, tmp_path):
    (tmp_path / "d.so").write_text("")
    result = run_script("infer_onnx.py", "--model", trained["int8"], "--delegate", tmp_path / "d.so",
                        trained["data"] / "test")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "--delegate", "not one")


def test_tflite_without_semdefect_metadata_is_refused(tflite, tmp_path):
    from semdefect.board.tflite import TfliteClassifier
    from semdefect.deploy.tflite import with_metadata

    bare = tmp_path / "bare.tflite"
    bare.write_bytes(with_metadata(tflite.read_bytes(), {"semdefect": b"[1, 2]"}))
    with pytest.raises(ModelError, match="bad semdefect metadata"):
        TfliteClassifier(bare)
    (tmp_path / "junk.tflite").write_bytes(b"junk" * 10)
    with pytest.raises(ModelError, match="not a TFLite file"):
        TfliteClassifier(tmp_path / "junk.tflite")


@pytest.mark.parametrize("kind", ["tflite", "int8"])
def test_board_bench_reports_warm_up_apart_from_steady_state(tflite, trained, kind, capsys):
    from semdefect.board import bench

    model = tflite if kind == "tflite" else trained["int8"]
    assert bench.main(["--model", str(model), "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert "first inference (warm-up)" in out and "steady state over 3 runs" in out
    assert ("ai-edge-litert" if kind == "tflite" else "onnxruntime") in out and "NPU" not in out


def test_operator_count_follows_a_real_delegation(tflite):
    """XNNPACK, LiteRT's built-in CPU delegate, takes every operator of the int8 file in one partition: the walk
    from its partition's outputs back to its inputs must find them all."""
    from ai_edge_litert import interpreter

    from semdefect.board.tflite import placement

    content = tflite.read_bytes()
    delegated = interpreter.Interpreter(model_content=content, num_threads=1)
    delegated.allocate_tensors()
    counted = placement(interpreter, content, delegated, Path("xnnpack"))
    operators = [op["op_name"] for op in delegated._get_ops_details()]
    assert operators.count("DELEGATE") == counted.partitions == 1
    assert counted.delegated == counted.operators == len(operators) - 1


NO_OP_DELEGATE = r"""
#include <stdint.h>
#include <stdlib.h>
/* An external delegate that takes no operator: its Prepare succeeds without claiming a node. */
typedef struct {
  void* data;
  int (*prepare)(void* context, void* delegate);
  void* copy_from_buffer_handle;
  void* copy_to_buffer_handle;
  void* free_buffer_handle;
  int64_t flags;
  void* opaque_delegate_builder;
} Delegate;
static int prepare(void* context, void* delegate) { (void)context; (void)delegate; return 0; }
void* tflite_plugin_create_delegate(char** keys, char** values, size_t count, void (*report_error)(const char*)) {
  (void)keys; (void)values; (void)count; (void)report_error;
  Delegate* delegate = calloc(1, 256);  /* zeroed past the fields above, should the runtime's struct be longer */
  delegate->prepare = prepare;
  return delegate;
}
void tflite_plugin_destroy_delegate(void* delegate) { free(delegate); }
"""


def test_a_loaded_delegate_is_named_with_the_operators_it_took(tflite, trained, tmp_path):
    import shutil
    import subprocess

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the test delegate")
    (tmp_path / "nop.c").write_text(NO_OP_DELEGATE)
    library = tmp_path / "libnop_delegate.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", library, tmp_path / "nop.c"], check=True)
    result = run_script("infer_onnx.py", "--model", tflite, "--delegate", library, trained["data"] / "test")
    assert result.returncode == 0, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert f"delegate {library}: 0 of " in summary and "0 partition(s), the rest on the CPU" in summary


def test_vela_puts_the_whole_file_on_the_ethos_u65_and_keeps_its_metadata(tflite, tmp_path):
    from semdefect.deploy.vela import compile_for_ethos_u

    report = compile_for_ethos_u(tflite, tmp_path / "vela")
    compiled = Path(report["output"])
    assert report["all_on_npu"] and report["cpu_operators"] == 0 and report["npu_operators"] > 0
    assert report["latency_ms"] > 0 and 0 < report["sram_kib"] <= 384
    assert read_metadata(compiled.read_bytes())["semdefect"] == read_metadata(tflite.read_bytes())["semdefect"]
    assert not [p for p in (tmp_path / "vela").iterdir() if p.name.startswith(".")]  # no scratch folder left
