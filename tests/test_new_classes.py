"""A fab's own classes end to end: class names with spaces and accents, ten learnt and two added by adapt_model.py,
through export, INT8 quantization, TFLite and the board's inference, every file and CSV keeping the names."""

import csv
import json
import re
import shutil
import unicodedata

import pytest
import yaml
from conftest import SMALL_CNN, TINY_SIZE, run_script

import adapt_model
import evaluate_model
import export_onnx
import export_tflite
import quantize_onnx
import train_model
from semdefect.board.runtime import OnnxClassifier
from semdefect.board.tflite import TfliteClassifier
from semdefect.training.model import KerasClassifier

NAMES = {"Bridge": "pont de résine", "clean": "propre", "cmp": "rayure CMP", "contamination": "contamination",
         "crack": "fissure", "ler": "rugosité de ligne", "opens": "circuit ouvert", "other": "autre",
         "particle": "particule", "via": "via manquée"}
NEW = {"crack": "Écaille sombre", "particle": "défaut « bille »"}  # images of these make the two new classes


@pytest.fixture(scope="module")
def fab(tiny_dataset, tmp_path_factory):
    """The tiny set with the fab's class names, one folder in NFD form as a Mac copies it, and a labelled folder
    of two new classes plus two images of each known class."""
    root = tmp_path_factory.mktemp("fab")
    data = root / "data"
    for split in ("train", "val", "test"):
        for ours, theirs in NAMES.items():
            folder = unicodedata.normalize("NFD", theirs) if ours == "ler" else theirs
            shutil.copytree(tiny_dataset / split / ours, data / split / folder)
    labelled = root / "labelled"
    for ours, theirs in NEW.items():
        shutil.copytree(tiny_dataset / "train" / ours, labelled / theirs)
    for ours, theirs in NAMES.items():
        (labelled / theirs).mkdir()
        for image in sorted((tiny_dataset / "test" / ours).glob("*.png"))[:2]:
            shutil.copy(image, labelled / theirs / image.name)
    config = root / "fab.yaml"
    config.write_text(yaml.safe_dump({"data": {"classes": list(NAMES.values())}}, allow_unicode=True),
                      encoding="utf-8")
    return {"root": root, "data": data, "labelled": labelled, "config": config}


@pytest.mark.slow
def test_twelve_named_classes_survive_train_adapt_export_quantize_tflite_and_infer(fab, tmp_path, capsys):
    out, labelled = tmp_path, fab["labelled"]
    tiny = [f"data.image_size={TINY_SIZE}", "train.epochs=1", "train.tensorboard=false", *SMALL_CNN]
    base = out / "base.keras"
    assert train_model.main(["--config", str(fab["config"]), f"data.root={fab['data']}", f"train.output={base}",
                             *tiny]) == 0
    adapted = out / "adapted.keras"
    assert adapt_model.main(["--model", str(base), "--data", str(labelled), "--base-data", str(fab["data"]),
                             "--output", str(adapted), "--config", str(fab["config"]), *tiny,
                             "adapt.epochs=1", "adapt.base_per_class=2"]) == 0
    classes = list(NAMES.values()) + sorted(NEW.values())
    assert KerasClassifier(adapted).class_names == classes

    files = {"onnx": out / "a.onnx", "int8": out / "a.int8.onnx", "tflite": out / "a.int8.tflite"}
    stage = [f"data.root={labelled}", f"export.output={files['onnx']}", f"quantize.output={files['int8']}", *tiny]
    assert export_onnx.main(["--model", str(adapted), *stage]) in (0, 1)
    assert quantize_onnx.main(["--model", str(files["onnx"]), *stage]) in (0, 1)  # one epoch: the budget may miss
    report = json.loads(files["int8"].with_suffix(".report.json").read_text(encoding="utf-8"))
    assert report["calibrated_on"] == "labelled"  # no val split: calibrated on the labelled images
    assert export_tflite.main(["--model", str(adapted), "--output", str(files["tflite"]), *stage]) in (0, 1)
    assert OnnxClassifier(files["int8"]).class_names == classes
    assert TfliteClassifier(files["tflite"]).class_names == classes

    capsys.readouterr()
    assert evaluate_model.main(["--model", str(files["int8"]), "--data", str(labelled), "--out",
                                str(out / "eval"), *tiny]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["class_names"] == classes and set(metrics["per_class"]) == set(classes)

    images = out / "incoming"
    shutil.copytree(labelled / NEW["crack"], images)
    for kind in ("int8", "tflite"):
        rows_file = out / f"rows_{kind}.csv"
        result = run_script("infer_onnx.py", "--model", files[kind], images, "--output", rows_file)
        assert result.returncode == 0, result.stderr
        with rows_file.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and all(row["label"] in classes for row in rows)
        # top3 is "name:p name:p name:p"; a name may hold spaces, a probability is always 0.ddd or 1.000
        top3 = [re.findall(r"(.+?):([01]\.\d{3})(?: |$)", row["top3"]) for row in rows]
        assert all(len(t) == 3 and all(name in classes for name, _ in t) for t in top3), rows[0]
