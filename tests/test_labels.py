"""semdefect.adaptation.labels: labelled images from class folders, labels.csv or Label Studio's export, and the
class list an adapted model answers."""

import json
import unicodedata

import pytest
from PIL import Image

from semdefect.adaptation.labels import from_csv, from_folders, read_labels, target_classes
from semdefect.board.errors import DatasetError

MODEL = ["Bridge", "clean", "crack", "via"]


def image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 128).save(path)
    return path


def test_folders_give_each_image_its_folder_name_in_nfc(tmp_path):
    decomposed = unicodedata.normalize("NFD", "résidu sombre")  # as a Mac writes folder names
    image(tmp_path / decomposed / "a.png")
    image(tmp_path / "crack" / "b.png")
    (tmp_path / "crack" / "notes.txt").write_text("not an image")
    labels = from_folders(tmp_path)
    assert labels.names == ["crack", "résidu sombre"]
    assert labels.classes() == ["crack", "résidu sombre"]


def test_a_class_folder_without_images_is_refused(tmp_path):
    image(tmp_path / "crack" / "b.png")
    (tmp_path / "flake").mkdir()
    with pytest.raises(DatasetError, match="class 'flake' has no images"):
        from_folders(tmp_path)


def test_csv_paths_are_read_from_its_folder_and_labels_keep_spaces_and_accents(tmp_path):
    image(tmp_path / "imgs" / "a.png")
    absolute = image(tmp_path / "elsewhere" / "b.png")
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(f"path,label\nimgs/a.png,Défaut à bille\n{absolute},crack\n\nimgs/a.png,Défaut à bille\n",
                        encoding="utf-8")
    labels = from_csv(csv_file)
    assert list(zip(labels.names, labels.paths)) == [("Défaut à bille", tmp_path / "imgs" / "a.png"),
                                                     ("crack", absolute)]  # the repeated row counted once


@pytest.mark.parametrize("rows, message", [
    ("path,label\nmissing.png,crack\n", "line 2: image .*missing.png does not exist"),
    ("path,label\na.png,\n", "line 2: empty label"),
    ("path,label\na.png,  \n", "line 2: empty label"),
    ("path,label\na.png\n", "line 2: needs a path and a label"),
    ("file,class\na.png,crack\n", "first line must be the header 'path,label'"),
    ("path,label\na.png,crack\na.png,via\n", "line 3: .*a.png is labelled 'via' here and 'crack' on line 2"),
    ("path,label\na.png,cr/ack\n", "line 2: label 'cr/ack' cannot be a class name"),
    ("path,label\n", "no labelled rows"),
])
def test_bad_csv_rows_are_named(tmp_path, rows, message):
    image(tmp_path / "a.png")
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(rows, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        from_csv(csv_file)


def label_studio_task(task_id, data, *choices_per_annotation, cancelled=False):
    return {"id": task_id, "data": data,
            "annotations": [{"id": 10 * task_id + i, "was_cancelled": cancelled,
                             "result": [{"from_name": "class", "to_name": "image", "type": "choices",
                                         "value": {"choices": choices}}]}
                            for i, choices in enumerate(choices_per_annotation)]}


def test_label_studio_export_takes_the_last_annotation_and_local_file_addresses(tmp_path):
    a, b = image(tmp_path / "pool" / "a.png"), image(tmp_path / "pool" / "b b.png")
    image(tmp_path / "pool" / "c.png")
    export = [
        label_studio_task(1, {"image": "/data/local-files/?d=pool/a.png", "path": str(a)}, ["via"], ["Flocon"]),
        label_studio_task(2, {"image": "/data/local-files/?d=pool/b%20b.png"}, ["crack"]),
        label_studio_task(3, {"image": "/data/local-files/?d=pool/c.png"}, ["crack"], cancelled=True),  # skipped
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    labels = read_labels(path)
    assert list(zip(labels.names, labels.paths)) == [("Flocon", a), ("crack", b)]


@pytest.mark.parametrize("task, message", [
    (label_studio_task(7, {"image": "/data/upload/3/5d1f-a.png"}, ["via"]), "task 7: image .* is not a local file"),
    (label_studio_task(8, {"image": "/data/local-files/?d=a.png"}, ["via", "crack"]), "task 8: 2 choices"),
    (label_studio_task(9, {"image": "/data/local-files/?d=gone.png"}, ["via"]), "task 9: image .*gone.png does not"),
    ({"id": 10, "data": {"image": "/data/local-files/?d=a.png"}, "annotations": []}, "task 10: no class chosen"),
    (label_studio_task(11, {"image": "/data/local-files/?d=a.png"}, []), "task 11: no class chosen"),
])
def test_bad_label_studio_tasks_are_named(tmp_path, task, message):
    image(tmp_path / "a.png")
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]), encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        read_labels(path)


def test_union_keeps_the_model_order_and_appends_new_classes_sorted():
    assert target_classes(MODEL, ["via", "Écaille", "flake"], "union") == MODEL + ["flake", "Écaille"]
    assert target_classes(MODEL, ["via", "crack"], "union") == MODEL


def test_labelled_answers_exactly_the_labelled_classes_sorted():
    assert target_classes(MODEL, ["via", "flake", "Bridge"], "labelled") == ["Bridge", "flake", "via"]


@pytest.mark.parametrize("labelled, mode, message", [
    (["bridge", "flake"], "union", "'bridge' and the model's class 'Bridge' differ only in case"),
    (["Flake", "flake"], "labelled", "differ only in case"),
    (["flake"], "labelled", "one class only"),
])
def test_class_name_clashes_are_refused(labelled, mode, message):
    with pytest.raises(DatasetError, match=message):
        target_classes(MODEL, labelled, mode)
