"""End to end: the five stage scripts on a tiny synthetic dataset, their outputs and their exit codes."""

import csv
import json

import numpy as np
import onnx
import pytest
from conftest import SMALL_CNN, assert_one_line_error, run_script, tiny_overrides

import evaluate_model
import export_onnx
import infer_onnx
import quantize_onnx
import train_model
from semdefect import CLASS_NAMES
from semdefect.board.errors import ConfigError
from semdefect.board.images import load_image
from semdefect.board.runtime import OnnxClassifier

METADATA_KEYS = {"class_names", "image_size", "channels", "preprocess", "semdefect_version"}


def test_training_writes_the_model_and_its_records(trained):
    out = trained["out"]
    for name in ("sem_cnn.keras", "sem_cnn.history.json", "sem_cnn.config.yaml", "sem_cnn.curves.png",
                 "checkpoints/last.keras", "checkpoints/best.keras", "checkpoints/state.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "sem_cnn.history.json").read_text())
    # train and val (train.fit_on), but for one image of each class held out to fit the review bin (review.holdout)
    assert len(history["history"]["loss"]) == 1 and history["train_images"] == 70 and len(history["held_out"]) == 10
    assert not list(out.glob("**/*.tmp*"))  # nothing half-written left behind


def test_saved_model_has_no_optimizer_state_and_carries_its_metadata(trained):
    import io
    import zipfile

    import h5py

    from semdefect.training.model import load_model

    model, metadata = load_model(trained["keras"])
    with zipfile.ZipFile(trained["keras"]) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        assert "optimizer" not in weights  # deployable file: no Adam moments
    assert getattr(model, "optimizer", None) is None and metadata.class_names == list(CLASS_NAMES)


def test_reference_preset_builds_the_reference_model_exactly():
    from conftest import ROOT

    from semdefect.config import load_config
    from semdefect.training.model import build_from_config

    cfg = load_config(ROOT / "configs" / "reference.yaml")
    model = build_from_config(cfg)
    assert [layer.name for layer in model.layers] == ["image", "conv16", "pool16", "conv32", "pool32", "conv64",
                                                      "pool64", "flatten", "dense128", "probabilities"]
    assert [layer.kernel_size for layer in model.layers if hasattr(layer, "kernel_size")] == [(3, 3)] * 3
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate) == (25, 16, 0.001)
    assert not cfg.train.augment and cfg.train.lr_schedule == "constant"


def test_cnn_preset_builds_the_cnn_that_was_the_default():
    from conftest import ROOT

    from semdefect.config import load_config
    from semdefect.training.model import build_from_config

    cfg = load_config(ROOT / "configs" / "cnn.yaml")
    model = build_from_config(cfg)
    assert [layer.filters for layer in model.layers if layer.name.startswith("conv")] == [32, 64, 128, 256]
    assert model.count_params() == pytest.approx(423_000, rel=0.01)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate) == (40, 16, 0.001)


def test_the_default_is_efficientnet_lite0_from_imagenet():
    from semdefect.config import load_config
    from semdefect.training.model import build_from_config

    model = build_from_config(load_config(None, ["data.image_size=64"]))
    assert model.name == "efficientnet_lite0" and model.input_shape == (None, 64, 64, 1)
    assert model.count_params() == 3_425_258  # 4.65 M less the 1000-class ImageNet head, plus a 10-class one
    from semdefect.training.efficientnet_lite import weights_file
    from semdefect.training.torch_file import read_state_dict

    imagenet = read_state_dict(weights_file())["_conv_stem.weight"]  # (out, RGB, k, k)
    stem = model.get_layer("conv_stem").get_weights()[0]  # (k, k, grey, out): the ImageNet stem, summed over RGB
    np.testing.assert_allclose(stem[:, :, 0, :], imagenet.sum(axis=1).transpose(1, 2, 0), rtol=1e-6)


def test_reference_model_has_the_documented_size_at_128():
    from semdefect.training.model import build_model

    assert build_model(10, 128, "flatten").count_params() == 1_630_346  # 23,296 conv + 1,605,760 dense + 1,290 output
    assert build_model(10, 128, "gap").count_params() < 40_000


def test_more_blocks_double_the_filters_and_halve_the_map():
    from semdefect.training.model import build_model

    model = build_model(10, 128, "gmp", width=2.0, batchnorm=True, blocks=4)
    convs = [layer for layer in model.layers if layer.name.startswith("conv")]
    assert [layer.filters for layer in convs] == [32, 64, 128, 256]
    assert model.get_layer("pool256").output.shape[1:3] == (6, 6)  # 128 -> 126 -> 63 -> ... -> 12 -> 6
    with pytest.raises(ConfigError, match=r"data\.image_size=32 is too small for model\.blocks=5"):
        build_model(10, 32, "gmp", blocks=5)


def test_onnx_models_carry_their_metadata(trained):
    for key in ("onnx", "int8"):
        proto = onnx.load(str(trained[key]))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert set(meta) >= METADATA_KEYS and json.loads(meta["class_names"]) == list(CLASS_NAMES)
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {n.op_type for n in onnx.load(str(trained["int8"])).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    assert trained["int8"].stat().st_size < 0.6 * trained["onnx"].stat().st_size  # float first block and head: 0.55x


def int8_structure(path):
    """For an INT8 file: whether each Conv reads quantized input, and its nodes and producers."""
    nodes = onnx.load(str(path)).graph.node
    producer = {output: node for node in nodes for output in node.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    quantized = [producer.get(c.input[0]) is not None and producer[c.input[0]].op_type == "DequantizeLinear"
                 for c in convs]
    return nodes, producer, quantized


def assert_float_head(nodes, producer):
    """Softmax and the dense layers after the last conv stay float (the review bank's float16 is Cast)."""
    def consumers(name):
        return [n for n in nodes if name in n.input]

    assert [n.op_type for n in nodes if n.op_type in ("Gemm", "MatMul")] and all(
        producer.get(n.input[1]) is None or producer[n.input[1]].op_type == "Cast"
        for n in nodes if n.op_type in ("Gemm", "MatMul"))
    softmax = [n for n in nodes if n.op_type == "Softmax"]
    assert len(softmax) == 1 and not any(n.op_type == "QuantizeLinear" for n in consumers(softmax[0].output[0]))


def test_int8_quantizes_every_conv_of_the_default_and_keeps_the_head_in_float(trained):
    # the pretrained default starts with a strided conv, no Conv -> Relu -> MaxPool block: every conv is INT8
    nodes, producer, quantized = int8_structure(trained["int8"])
    assert len(quantized) > 40 and all(quantized)
    assert_float_head(nodes, producer)


@pytest.fixture(scope="module")
def cnn_files(tiny_dataset, tmp_path_factory):
    """The small CNN, one epoch, exported and quantized with the default INT8 settings."""
    out = tmp_path_factory.mktemp("cnn")
    overrides = [*SMALL_CNN, *tiny_overrides(tiny_dataset, out), "train.tensorboard=false"]
    assert train_model.main(overrides) == 0 and export_onnx.main(overrides) == 0
    assert quantize_onnx.main(overrides) in (0, 1)  # one epoch on 60 images may miss the INT8 budget
    return {"overrides": overrides, "onnx": out / "sem_cnn.onnx", "int8": out / "sem_cnn.int8.onnx"}


def test_int8_of_the_cnn_keeps_its_first_block_in_float(cnn_files):
    # The CNN's first conv block stays float (quantize.float_first_block); every later conv is INT8.
    nodes, producer, quantized = int8_structure(cnn_files["int8"])
    assert len(quantized) >= 3 and quantized == [False] + [True] * (len(quantized) - 1)
    assert_float_head(nodes, producer)
    pool = next(n for n in nodes if n.op_type == "MaxPool")
    guard = [n for n in nodes if pool.output[0] in n.input]
    assert [n.op_type for n in guard] == ["Relu"]
    assert next(n for n in nodes if guard[0].output[0] in n.input).op_type == "QuantizeLinear"


def test_float_first_block_can_be_switched_off(cnn_files, tmp_path):
    out = tmp_path / "all.int8.onnx"
    assert quantize_onnx.main(["--model", str(cnn_files["onnx"]), "--output", str(out),
                               "quantize.float_first_block=false", "quantize.float_head=false",
                               "quantize.max_accuracy_drop=100", *cnn_files["overrides"]]) == 0
    _, _, quantized = int8_structure(out)
    assert all(quantized)


def test_training_and_board_paths_feed_identical_arrays(trained):
    """The array Keras trains on and the array the board's session gets for the same file are equal."""
    from semdefect.board.inference import classify
    from semdefect.config import load_config
    from semdefect.data.dataset import load_split

    cfg = load_config(None, trained["overrides"])
    train_set = load_split(trained["data"], "train", cfg.data.classes, cfg.data.preprocess())
    board = OnnxClassifier(trained["onnx"])
    seen = []
    original = board.run
    board.run = lambda batch: (seen.append(batch.copy()), original(batch))[1]
    list(classify(board, train_set.paths[:5], None, batch_size=5))
    assert board.prep == cfg.data.preprocess()
    np.testing.assert_array_equal(seen[0], train_set.x[:5])


@pytest.mark.parametrize("key", ["keras", "onnx", "int8"])
def test_evaluate_any_model_through_the_same_code(trained, key, tmp_path, capsys):
    first, *rest = trained["overrides"]  # overrides may come before and after the options
    assert evaluate_model.main([first, "--model", str(trained[key]), "--out", str(tmp_path), *rest]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_images"] == 20 and np.array(metrics["confusion_matrix"]).sum() == 20
    assert (tmp_path / "confusion_matrix.png").is_file() and (tmp_path / "report.md").is_file()
    assert (tmp_path / "reliability.png").is_file() and 0 <= metrics["ece"] <= 1
    assert "accuracy" in capsys.readouterr().out


def test_keras_and_onnx_give_the_same_metrics(trained, tmp_path):
    results = {}
    for key in ("keras", "onnx"):
        evaluate_model.main(["--model", str(trained[key]), "--out", str(tmp_path / key), *trained["overrides"]])
        results[key] = json.loads((tmp_path / key / "metrics.json").read_text())
    assert results["keras"]["confusion_matrix"] == results["onnx"]["confusion_matrix"]


def test_quantize_report_compares_fp32_and_int8(trained):
    report = json.loads((trained["out"] / "sem_cnn.int8.report.json").read_text())
    assert [row["split"] for row in report["splits"]] == ["val", "test"]
    for row in report["splits"]:
        assert 0 <= row["top1_agreement"] <= 1 and row["images"] == 20
        assert row["accuracy_drop_points"] == pytest.approx(100 * (row["fp32_accuracy"] - row["int8_accuracy"]))
    assert report["int8_mb"] < report["fp32_mb"]


def test_quantize_budget_failure_exits_1_and_keeps_the_model(trained, tmp_path):
    out = tmp_path / "strict.int8.onnx"
    # With a budget of 0 points, any accuracy lost to INT8 must fail the stage and still leave the model.
    code = quantize_onnx.main(["--model", str(trained["onnx"]), "--output", str(out), *trained["overrides"],
                               "quantize.max_accuracy_drop=0", "quantize.calib_images=4"])
    report = json.loads((tmp_path / "strict.int8.report.json").read_text())
    expected = 0 if all(r["accuracy_drop_points"] <= 0 for r in report["splits"]) else 1
    assert code == expected and out.is_file() and report["calibration_images"] == 4


def test_infer_writes_a_row_per_image_with_error_rows(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    images = sorted((trained["data"] / "test" / "particle").glob("*.png"))
    for image in images:
        (folder / f"ok {image.name}").write_bytes(image.read_bytes())  # a space in the name
    (folder / "broken.png").write_bytes(b"garbage")
    out = tmp_path / "rows.csv"
    result = run_script("infer_onnx.py", "--model", trained["int8"], folder, tmp_path / "missing.png",
                        "--output", out)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "label", "confidence", "top3", "status", "error", "decision", "score"]
    assert len(rows) == len(images) + 2
    by_name = {row["path"].split("/")[-1]: row for row in rows}
    assert by_name["broken.png"]["status"] == "error" and "broken.png" in by_name["broken.png"]["error"]
    assert by_name["missing.png"]["status"] == "error"
    ok = [row for row in rows if row["status"] == "ok"]
    assert len(ok) == len(images) and all(row["label"] in CLASS_NAMES for row in ok)
    assert all(len(row["top3"].split()) == 3 and 0 < float(row["confidence"]) <= 1 for row in ok)
    threshold = OnnxClassifier(trained["int8"]).threshold
    assert threshold is not None
    assert all(row["decision"] == ("accept" if float(row["score"]) >= threshold - 1e-4 else "review") for row in ok)
    assert all(row["decision"] == row["score"] == "" for row in rows if row["status"] == "error")


def test_infer_json_output_and_exit_0_when_all_succeed(trained, tmp_path, capsys):
    out = tmp_path / "rows.json"
    code = infer_onnx.main(["--model", str(trained["onnx"]), str(trained["data"] / "test"), "--output", str(out)])
    rows = json.loads(out.read_text())
    assert code == 0 and len(rows) == 20 and all(r["status"] == "ok" and len(r["top3"]) == 3 for r in rows)
    model = OnnxClassifier(trained["onnx"])
    direct = model.predict(load_image(rows[0]["path"], model.prep)[None])
    assert rows[0]["confidence"] == pytest.approx(float(direct.max()), abs=1e-6)


def test_infer_imports_no_training_stack(trained):
    code = ("import sys, runpy; sys.argv=['infer_onnx.py', '--model', sys.argv[1], sys.argv[2], '--quiet'];"
            "\ntry: runpy.run_path('infer_onnx.py', run_name='__main__')\nexcept SystemExit: pass\n"
            "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'sklearn', 'onnx', 'yaml') if m in sys.modules]\n"
            "print('LOADED', bad)")
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, "-c", code, str(trained["int8"]), str(trained["data"] / "test")],
                            capture_output=True, text=True, cwd=ROOT)
    assert "LOADED []" in result.stdout, result.stdout + result.stderr


# --- bad input: one line on stderr, exit 2, no traceback ---------------------------------------------------

def test_train_on_missing_dataset_exits_2(tmp_path, capsys):
    assert train_model.main([f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "nowhere", "does not exist")


def test_train_with_unknown_class_folder_exits_2(tmp_path, capsys):
    (tmp_path / "train" / "Bridge").mkdir(parents=True)
    (tmp_path / "train" / "scratches").mkdir()
    assert train_model.main([f"data.root={tmp_path}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "scratches", "Bridge, clean")


def test_train_on_split_with_no_readable_image_exits_2(tmp_path, capsys):
    (tmp_path / "train" / "crack").mkdir(parents=True)
    (tmp_path / "train" / "crack" / "a.png").write_bytes(b"not an image")
    assert train_model.main([f"data.root={tmp_path}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "no readable image")


@pytest.mark.parametrize("module", [train_model, evaluate_model, export_onnx, quantize_onnx])
def test_bad_config_key_exits_2_naming_it(module, capsys):
    assert module.main(["train.epoch=3"]) == 2
    assert_one_line_error(capsys.readouterr().err, "train.epoch", "train.epochs")


@pytest.mark.parametrize("make_model, fragment", [
    (lambda d: d / "missing.onnx", "does not exist"),
    (lambda d: d, "is a folder"),
    (lambda d: (d / "junk.onnx").write_bytes(b"\x00garbage") and d / "junk.onnx", "cannot load ONNX model"),
    (lambda d: (d / "text.keras").write_text("hello") and d / "text.keras", "not a Keras model"),
    (lambda d: (d / "model.txt").write_text("hello") and d / "model.txt", "unknown model type"),
])
def test_evaluate_with_a_bad_model_exits_2(tmp_path, capsys, make_model, fragment):
    assert evaluate_model.main(["--model", str(make_model(tmp_path))]) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)


def test_keras_model_given_to_infer_exits_2(trained, capsys):
    renamed = trained["out"] / "copy_of_keras.onnx"
    renamed.write_bytes(trained["keras"].read_bytes())
    assert infer_onnx.main(["--model", str(renamed), str(trained["data"])]) == 2
    assert_one_line_error(capsys.readouterr().err, "zip archive")
    assert infer_onnx.main(["--model", str(trained["keras"]), str(trained["data"])]) == 2
    assert_one_line_error(capsys.readouterr().err, "expected a .onnx")


def test_onnx_without_metadata_exits_2(trained, tmp_path, capsys):
    proto = onnx.load(str(trained["onnx"]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    assert infer_onnx.main(["--model", str(bare), str(trained["data"])]) == 2
    assert_one_line_error(capsys.readouterr().err, "no semdefect metadata")


def test_dataset_with_classes_unknown_to_the_model_exits_2(trained, tmp_path, capsys):
    (tmp_path / "test" / "scratch").mkdir(parents=True)
    assert evaluate_model.main(["--model", str(trained["onnx"]), "--data", str(tmp_path), "--out",
                                str(tmp_path / "eval")]) == 2
    assert_one_line_error(capsys.readouterr().err, "scratch", "not among the model's classes")


def test_truncated_onnx_model_exits_2_in_a_subprocess(trained, tmp_path):
    cut = tmp_path / "cut.onnx"
    data = trained["onnx"].read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    result = run_script("infer_onnx.py", "--model", cut, trained["data"])
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "cut.onnx")
