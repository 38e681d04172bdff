import csv
import json

import numpy as np
import pytest
from conftest import SMALL_CNN, TINY_SIZE, assert_one_line_error

import audit_labels
from semdefect.data.splits import ImageFile
from semdefect.studies.audit import Verdict, assign_folds, flag_suspects


def test_folds_keep_near_duplicates_and_copies_together_and_spread_each_class(tmp_path):
    files = [ImageFile(tmp_path / f"{i}.png", f"train/{label}/{i}.png", label, "train", md5=f"m{i}")
             for i, label in enumerate(["a"] * 12 + ["b"] * 12)]
    files[5].md5 = files[17].md5 = "same bytes"  # a copy filed under the other class
    folds = assign_folds(files, [(0, 1, 0.95), (1, 2, 0.93)], k=3, seed=0)
    assert folds[0] == folds[1] == folds[2] and folds[5] == folds[17]
    for label in "ab":
        counts = np.bincount([f for f, file in zip(folds, files) if file.label == label], minlength=3)
        assert counts.min() >= 3, counts  # 12 images per class over 3 folds, one group of 3


def verdict(label, probabilities):
    return Verdict(f"train/{label}/x.png", label, 0, np.array(probabilities))


def test_a_suspect_is_another_class_chosen_with_that_class_typical_confidence():
    classes = ["a", "b"]
    verdicts = [verdict("a", [0.9, 0.1]), verdict("a", [0.7, 0.3]), verdict("a", [0.85, 0.15]),
                verdict("a", [0.75, 0.25]), verdict("b", [0.4, 0.6]), verdict("b", [0.2, 0.8]),
                verdict("b", [0.9, 0.1]),    # a at 0.9, over a's mean self-confidence 0.73: a suspect
                verdict("a", [0.45, 0.55]),  # b at 0.55, over b's 0.475
                verdict("b", [0.6, 0.4])]    # a at 0.6, under 0.73: a mistake, not a suspect
    thresholds = flag_suspects(verdicts, classes)
    assert thresholds == pytest.approx({"a": np.mean([0.9, 0.7, 0.85, 0.75, 0.45]), "b": np.mean([0.6, 0.8, 0.1, 0.4])})
    assert [v.suspect for v in verdicts] == [False] * 6 + [True, True, False]
    assert flag_suspects([verdict("a", [0.5, 0.5])], classes)["b"] == 1.0  # no images of b: never suggested


@pytest.mark.slow  # trains a model
def test_audit_lists_every_image_once_with_its_out_of_fold_prediction(tiny_dataset, tmp_path, capsys):
    data = tmp_path / "data"
    for i, path in enumerate(sorted(tiny_dataset.rglob("*.png"))):
        target = data / path.relative_to(tiny_dataset)
        target = target.with_name(("aa_" if i % 2 else "") + target.name)  # every other image from source aa
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    copy = sorted((data / "train" / "crack").glob("*.png"))[0]
    (data / "val" / "particle" / "copy.png").write_bytes(copy.read_bytes())  # the same image, another label
    (data / "train" / "via" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "audit"
    code = audit_labels.main(["--data", str(data), "--out", str(out), "--folds", "3", *SMALL_CNN,
                              f"data.image_size={TINY_SIZE}",
                              "train.epochs=1", "crosscheck.sources=[aa_]"])
    assert code == 0
    with (out / "audit.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    expected = {p.relative_to(data).as_posix() for split in ("train", "val") for p in (data / split).rglob("*.png")}
    assert sorted(r["file"] for r in rows) == sorted(expected - {"train/via/broken.png"})
    fold = {r["file"]: r["fold"] for r in rows}
    assert set(fold.values()) == {"0", "1", "2"}
    assert fold["val/particle/copy.png"] == fold[copy.relative_to(data).as_posix()]
    assert all(r["label"] == r["file"].split("/")[1] for r in rows)
    suspects = [r for r in rows if r["suspect"] == "1"]
    assert rows[:len(suspects)] == suspects and all(r["predicted"] != r["label"] for r in suspects)
    report = json.loads((out / "audit.json").read_text())
    assert report["images"] == len(rows) and report["suspects"] == len(suspects)
    assert report["splits"] == ["train", "val"]
    assert report["unreadable"][0]["file"] == "train/via/broken.png"
    assert all(r["source"] == ("aa" if r["file"].split("/")[-1].startswith("aa_") else "") for r in rows)
    by_source = report["by_source"]
    assert sorted(by_source) == ["", "aa"] and sum(s["images"] for s in by_source.values()) == len(rows)
    assert sum(s["suspects"] for s in by_source.values()) == len(suspects)
    assert by_source["aa"]["suspects"] == sum(r["source"] == "aa" for r in suspects)
    assert (out / "audit.md").read_text().startswith("Label audit of")
    assert (out / "suspects.png").exists() == bool(suspects)
    assert "audit_labels.py wrote" in capsys.readouterr().out


@pytest.mark.parametrize("override, key", [("audit.folds=2", "audit.folds"),
                                           ("audit.splits=[train, tests]", "audit.splits")])
def test_bad_audit_settings_exit_2(override, key, tmp_path, capsys):
    assert audit_labels.main(["--data", str(tmp_path), override]) == 2
    assert_one_line_error(capsys.readouterr().err, key)


def test_too_few_images_for_the_folds_exit_2(tiny_dataset, capsys):
    assert audit_labels.main(["--data", str(tiny_dataset), "--folds", "20", f"data.image_size={TINY_SIZE}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "audit.folds=20")


@pytest.mark.slow  # trains a model
def test_a_folder_of_class_folders_is_audited_whole(tiny_dataset, tmp_path):
    flat = tmp_path / "flat"
    for path in sorted((tiny_dataset / "train").rglob("*.png")):
        target = flat / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    out = tmp_path / "audit"
    out.mkdir()
    (out / "suspects.png").write_bytes(b"an earlier audit's sheet")
    assert audit_labels.main(["--data", str(flat), "--out", str(out), "--folds", "3", *SMALL_CNN,
                              f"data.image_size={TINY_SIZE}",
                              "train.epochs=1", "audit.sheet=0"]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["images"] == 60 and report["splits"] == ["all"] and not (out / "suspects.png").exists()
    assert report["by_source"] == {}  # no image has a source: no per-source counts
