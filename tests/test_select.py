"""select_images.py: which images of a new source to label first."""

import csv

import numpy as np
import pytest
from conftest import assert_one_line_error

import select_images
from semdefect.adaptation.select import Pool, pick


def read_picks(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("key", ["keras", "onnx", "int8"])
def test_picks_are_written_with_a_contact_sheet(trained, tmp_path, key, capsys):
    out = tmp_path / "picks.csv"
    folder = trained["data"] / "test"
    assert select_images.main(["--model", str(trained[key]), "--images", str(folder), "--budget", "5",
                               "--output", str(out)]) == 0, capsys.readouterr().err
    rows = read_picks(out)
    assert next(iter(rows[0])) == "path" and len(rows) == 5 and len({r["path"] for r in rows}) == 5
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert all(r["path"].startswith(str(folder)) for r in rows)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [int(r["similar"]) for r in rows] == sorted((int(r["similar"]) for r in rows), reverse=True)
    assert sum(int(r["similar"]) for r in rows) <= len(list(folder.rglob("*.png")))


def test_keras_and_onnx_models_pick_the_same_images(trained, tmp_path):
    picks = {}
    for key in ("keras", "onnx"):
        out = tmp_path / f"{key}.csv"
        select_images.main(["--model", str(trained[key]), "--images", str(trained["data"] / "test"), "--budget", "8",
                            "--output", str(out)])
        picks[key] = [r["path"] for r in read_picks(out)]
    assert picks["keras"] == picks["onnx"]


def test_a_budget_larger_than_the_folder_takes_every_image(trained, tmp_path):
    out = tmp_path / "picks.csv"
    folder = trained["data"] / "test" / "via"
    assert select_images.main(["--model", str(trained["onnx"]), "--images", str(folder), "--budget", "50",
                               "--output", str(out)]) == 0
    assert len(read_picks(out)) == len(list(folder.glob("*.png")))


def test_picks_stand_for_the_groups_of_look_alikes_the_largest_first():
    # a group of four images around (1, 0) and one of two around (0, 1): one pick from each, the typical one
    features = np.array([[1, 0.3], [1, 0.1], [1, -0.1], [1, -0.3], [0.05, 1], [-0.05, 1]])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    pool = Pool(["a", "b"], [f"img{i}" for i in range(6)], features, np.full((6, 2), 0.5), np.full(6, 0.8))
    chosen, similar = pick(pool, 2)
    assert chosen[0] in (1, 2) and chosen[1] in (4, 5) and similar == [4, 2]
    assert pick(pool, 10) == (list(range(6)), [1] * 6)


@pytest.mark.parametrize("args, fragment", [
    (["--budget", "0"], "--budget must be at least 1"),
    (["--output", "picks.txt"], "use a .csv file name"),
    (["--images", "missing"], "does not exist"),
    (["--images", "empty"], "no images found"),
])
def test_bad_input_exits_2_in_one_line(trained, tmp_path, capsys, args, fragment):
    base = {"--model": str(trained["onnx"]), "--images": str(trained["data"] / "test"), "--budget": "3",
            "--output": str(tmp_path / "picks.csv")}
    (tmp_path / "empty").mkdir()
    for option, value in zip(args[::2], args[1::2]):
        base[option] = str(tmp_path / value) if option in ("--output", "--images") else value
    assert select_images.main([x for pair in base.items() for x in pair]) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)


def test_label_studio_tasks_follow_the_import_format_and_their_export_reads_back(trained, tmp_path):
    import json
    import xml.etree.ElementTree as ElementTree

    from semdefect.adaptation.labels import read_labels

    out = tmp_path / "picks.csv"
    folder = trained["data"] / "test"
    assert select_images.main(["--model", str(trained["keras"]), "--images", str(folder), "--budget", "4",
                               "--output", str(out), "--format", "label-studio"]) == 0
    rows = read_picks(out)
    assert all(len(r["top3"].split(" ")) == 3 for r in rows)  # the tiny model's class names hold no spaces
    assert "<!DOCTYPE html>" in out.with_suffix(".html").read_text(encoding="utf-8")  # the labelling page
    tasks = json.loads((tmp_path / "picks.label-studio.json").read_text(encoding="utf-8"))
    config = ElementTree.fromstring((tmp_path / "picks.label-studio.xml").read_text(encoding="utf-8"))
    choices = config.find("Choices")
    assert config.find("Image").get("name") == choices.get("toName") == "image"
    offered = [c.get("value") for c in choices.findall("Choice")]
    assert len(tasks) == 4 and len(offered) == 10
    for task, row in zip(tasks, rows):
        assert task["data"]["image"].startswith("/data/local-files/?d=") and task["data"]["path"] == row["path"]
        (prediction,) = task["predictions"]
        (result,) = prediction["result"]
        assert (result["from_name"], result["to_name"], result["type"]) == (choices.get("name"), "image", "choices")
        assert result["value"]["choices"] == [row["label"]] and row["label"] in offered
        assert 0 <= prediction["score"] <= 1
    # what Label Studio exports once a person accepted each guess (its JSON export: tasks with annotations)
    for number, task in enumerate(tasks, 1):
        task |= {"id": number, "annotations": [{"id": number, "was_cancelled": False,
                                                "result": task["predictions"][0]["result"]}]}
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks), encoding="utf-8")
    labels = read_labels(export)
    assert sorted(zip(map(str, labels.paths), labels.names)) == sorted((r["path"], r["label"]) for r in rows)
