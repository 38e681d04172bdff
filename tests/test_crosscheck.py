import copy
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import SMALL_CNN, TINY_SIZE

import crosscheck
import semdefect.training.train as training
from semdefect.board.files import write_json_atomic
from semdefect.config import load_config
from semdefect.studies.crosscheck import (
    finished_run,
    make_view,
    protocol_rows,
    run_settings,
    source_lookup,
    view_fingerprint,
)
from semdefect.training.model import KerasClassifier


def two_source_copy(tiny_dataset, root):
    """The tiny dataset with every other image of each class renamed to a second source."""
    for i, path in enumerate(sorted(tiny_dataset.rglob("*.png"))):
        target = root / path.relative_to(tiny_dataset)
        target = target.with_name(("aa_" if i % 2 else "bb_") + target.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return root


def test_sources_by_prefix_and_by_manifest(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path}", "crosscheck.sources=[km_, av_]"])
    by_prefix = source_lookup(cfg)
    assert by_prefix(tmp_path / "train" / "via" / "km_1.png") == "km" and by_prefix(tmp_path / "x.png") is None
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,origin\ntrain/via/a.png,fab1\n")
    cfg = load_config(None, [f"data.root={tmp_path}", f"crosscheck.manifest={manifest}",
                             "crosscheck.manifest_column=origin"])
    assert source_lookup(cfg)(tmp_path / "train" / "via" / "a.png") == "fab1"


def test_rows_hold_every_source_out_once():
    assert [r.name for r in protocol_rows(["av", "km"])] == ["all sources -> test split", "km -> av", "av -> km"]
    few_shot = protocol_rows(["av", "km"], [5])[3:]
    assert [(r.name, r.few_shot) for r in few_shot] == [("km + 5 av/class -> av", 5), ("av + 5 km/class -> km", 5)]


def view_files(view, split):
    return sorted(p.relative_to(view / split).as_posix() for p in (view / split).rglob("*.png"))


def test_few_shot_view_adds_k_training_images_per_shared_class_of_the_held_out_source(tiny_dataset, tmp_path):
    data = two_source_copy(tiny_dataset, tmp_path / "data")
    cfg = load_config(None, [f"data.root={data}", "crosscheck.sources=[aa_, bb_]"])
    shared = {"Bridge", "via"}
    views = {k: make_view(cfg, protocol_rows(["aa", "bb"], [k])[-1], source_lookup(cfg), tmp_path / f"k{k}", shared)
             for k in (0, 1, 2)}  # the last row holds bb out
    plain, (one, n_test) = views[0][0], views[1]
    added = sorted(set(view_files(one, "train")) - set(view_files(plain, "train")))
    assert [f.split("/")[0] for f in added] == ["Bridge", "via"] and all("/bb_" in f for f in added)
    assert all("/aa_" in f for f in view_files(plain, "train"))
    assert set(added) <= set(view_files(views[2][0], "train"))  # a larger k keeps the smaller k's images
    assert len(set(view_files(views[2][0], "train")) - set(view_files(plain, "train"))) == 4
    assert view_files(one, "val") == view_files(plain, "val")  # no val image of the held-out source
    assert n_test == len(view_files(one, "test")) == 2 and all("/bb_" in f for f in view_files(one, "test"))


def counting_training(monkeypatch):
    """Count the protocol's trainings (each still trains for real)."""
    trained = []

    def train(cfg):
        trained.append(Path(cfg.train.output).parent.parent.name)
        return real_train(cfg)

    real_train = training.train
    monkeypatch.setattr(training, "train", train)
    return trained


@pytest.mark.slow  # trains a model
def test_protocol_runs_end_to_end_and_a_rerun_trains_only_what_changed(tiny_dataset, tmp_path, capsys, monkeypatch):
    data = two_source_copy(tiny_dataset, tmp_path / "data")
    out = tmp_path / "cc"
    args = [*SMALL_CNN, f"data.root={data}", f"data.image_size={TINY_SIZE}", "train.epochs=1",
            "crosscheck.sources=[aa_, bb_]", "crosscheck.seeds=[1]", f"crosscheck.out={out}"]
    trained = counting_training(monkeypatch)
    assert crosscheck.main(args) == 0 and len(trained) == 3
    first = json.loads((out / "crosscheck.json").read_text())["rows"]
    trained.clear()
    code = crosscheck.main(args + ["crosscheck.few_shot=[1]"])  # the three plain rows are kept, not retrained
    assert code == 0 and trained == ["bb___1_aa_class____aa", "aa___1_bb_class____bb"]
    results = json.loads((out / "crosscheck.json").read_text())
    assert [r["name"] for r in results["rows"]] == ["all sources -> test split", "bb -> aa", "aa -> bb",
                                                    "bb + 1 aa/class -> aa", "aa + 1 bb/class -> bb"]
    assert results["rows"][0]["test_images"] == 20 and results["rows"][1]["test_images"] == 10
    by_source = results["rows"][0]["per_source"]  # the in-distribution row, by source
    assert {name: v["images"] for name, v in by_source.items()} == {"aa": 10, "bb": 10}
    assert results["rows"][0]["accuracy_mean"] == pytest.approx(
        sum(v["accuracy_mean"] for v in by_source.values()) / 2)  # equal counts: the mean of the two
    assert all(0 <= r["accuracy_mean"] <= 1 for r in results["rows"])
    pure = [r["accuracy_mean"] for r in results["rows"][1:3]]
    assert results["mean_leave_one_source_out_accuracy"] == pytest.approx(sum(pure) / 2)  # few-shot rows kept out
    assert list(results["mean_few_shot_accuracy"]) == ["1"]
    table = (out / "crosscheck.md").read_text()
    assert "| bb -> aa |" in table and "With 1 labelled training images per class" in table
    assert "All sources -> test split, by source: aa " in table
    assert "bb -> aa" in capsys.readouterr().out
    assert results["rows"][:3] == first
    trained.clear()
    moved = out.rename(tmp_path / "moved")  # a protocol folder moved elsewhere keeps its runs
    assert crosscheck.main(args[:-1] + [f"crosscheck.out={moved}", "crosscheck.few_shot=[1]"]) == 0 and trained == []
    moved.rename(out)

    trained.clear()
    next((data / "test" / "via").glob("aa_*.png")).unlink()  # one test image fewer of source aa
    assert crosscheck.main(args) == 0 and trained == ["all_sources____test_split", "bb____aa"]
    rebuilt = [(out / "views" / row).rglob("*.png") for row in trained]
    assert all(link.exists() for links in rebuilt for link in links)  # no link left to the removed image
    trained.clear()
    assert crosscheck.main(args + ["crosscheck.reuse=false"]) == 0 and len(trained) == 3


def test_a_run_is_kept_only_with_the_same_settings(tmp_path):
    cfg = load_config(None, [])
    settings = run_settings(cfg, images="abc")
    write_json_atomic(tmp_path / "metrics.json", {"accuracy": 0.5})
    assert finished_run(tmp_path, settings) is None  # no run.json: the run did not finish
    write_json_atomic(tmp_path / "run.json", settings)
    assert finished_run(tmp_path, settings) == {"accuracy": 0.5}
    assert finished_run(tmp_path, run_settings(cfg, images="abd")) is None
    cfg.train.epochs += 1
    assert finished_run(tmp_path, run_settings(cfg, images="abc")) is None
    cfg.train.epochs -= 1
    cfg.crosscheck.few_shot = [5]  # the protocol's own keys do not change a run
    assert finished_run(tmp_path, run_settings(cfg, images="abc")) == {"accuracy": 0.5}
    cfg.data.root, cfg.train.output = "moved/view", "moved/model.keras"  # nor where its files are
    assert finished_run(tmp_path, run_settings(cfg, images="abc")) == {"accuracy": 0.5}


def test_a_run_is_kept_only_on_the_same_images(tiny_dataset, tmp_path):
    data = two_source_copy(tiny_dataset, tmp_path / "data")
    cfg = load_config(None, [f"data.root={data}", "crosscheck.sources=[aa_, bb_]"])
    row = protocol_rows(["aa", "bb"])[1]
    view, _ = make_view(cfg, row, source_lookup(cfg), tmp_path / "view", {"Bridge", "via"})
    before = view_fingerprint(view)
    assert view_fingerprint(make_view(cfg, row, source_lookup(cfg), view, {"Bridge", "via"})[0]) == before
    image = next((data / "train" / "Bridge").glob("bb_*.png"))
    os.utime(image, (0, 0))  # a copy or restore gives files new times: the same images
    assert view_fingerprint(view) == before
    moved = data.rename(tmp_path / "moved")  # and a dataset moved elsewhere keeps its runs
    moved_cfg = copy.deepcopy(cfg)
    moved_cfg.data.root = str(moved)
    assert view_fingerprint(make_view(moved_cfg, row, source_lookup(cfg), view, {"Bridge", "via"})[0]) == before
    moved.rename(data)
    make_view(cfg, row, source_lookup(cfg), view, {"Bridge", "via"})  # the view on the data again
    image.write_bytes(image.read_bytes() + b"\0")  # same name, other content
    assert view_fingerprint(view) != before
    image.unlink()
    again = view_fingerprint(make_view(cfg, row, source_lookup(cfg), view, {"Bridge", "via"})[0])
    assert again != before and not any(p.name == image.name for p in view.rglob("*"))


def test_one_source_only_exits_2(tiny_dataset, tmp_path, capsys):
    code = crosscheck.main([f"data.root={tiny_dataset}", "crosscheck.sources=[zz_]", f"crosscheck.out={tmp_path}"])
    assert code == 2 and "leave-one-source-out needs two or more" in capsys.readouterr().err


@pytest.mark.slow  # trains a model per left-out class
def test_open_set_protocol_leaves_each_class_out(tiny_dataset, tmp_path):
    data = two_source_copy(tiny_dataset, tmp_path / "data")
    out = tmp_path / "openset"
    classes = ["Bridge", "crack", "via"]
    for split in ("train", "val", "test"):  # three classes keep the protocol to three small trainings
        for folder in (data / split).iterdir():
            if folder.name not in classes:
                shutil.rmtree(folder)
    args = [*SMALL_CNN, f"data.root={data}", f"data.image_size={TINY_SIZE}", "train.epochs=1", "data.classes=[" +
            ",".join(classes) + "]", "crosscheck.leave_out=classes", "crosscheck.seeds=[1]", f"crosscheck.out={out}"]
    assert crosscheck.main(args) == 0
    results = json.loads((out / "crosscheck.json").read_text())
    assert [r["unknown_class"] for r in results["rows"]] == classes
    for row in results["rows"]:
        view = out / "views" / f"without_{row['unknown_class']}"
        assert not list(view.glob(f"*/{row['unknown_class']}/*"))  # never trained or tested on as known
        assert row["unknown_images"] == len(list((data / "test" / row["unknown_class"]).iterdir()))
        assert 0 <= row["auroc_mean"] <= 1 and 0 <= row["unknown_to_review_mean"] <= 1
        run = json.loads((out / "runs" / f"without_{row['unknown_class']}" / "seed1" / "metrics.json").read_text())
        assert run["class_names"] == [c for c in classes if c != row["unknown_class"]]
        # the board's files are scored too: exported FP32 agrees with the .keras model, INT8 is measured beside it
        exported = run["open_set_onnx"]
        assert exported["fp32"]["auroc"] == pytest.approx(run["open_set"]["auroc"], abs=1e-6)
        assert exported["fp32"]["unknown_images"] == exported["int8"]["unknown_images"] == row["unknown_images"]
        assert 0 <= row["int8_auroc_mean"] <= 1 and 0 <= row["int8_known_accepted_mean"] <= 1
    assert results["mean_auroc"] == pytest.approx(sum(r["auroc_mean"] for r in results["rows"]) / 3)
    assert results["mean_int8_auroc"] == pytest.approx(sum(r["int8_auroc_mean"] for r in results["rows"]) / 3)
    table = (out / "crosscheck.md").read_text()
    assert "| crack |" in table and "Mean over the classes, INT8 ONNX: AUROC" in table

    # a run finished before the ONNX figures existed gets them once, without training again
    metrics_file = out / "runs" / "without_crack" / "seed1" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({k: v for k, v in metrics.items() if k != "open_set_onnx"}))
    model_time = (out / "runs" / "without_crack" / "seed1" / "model.keras").stat().st_mtime_ns
    assert crosscheck.main(args) == 0
    again = json.loads(metrics_file.read_text())["open_set_onnx"]
    assert all(again[model] == pytest.approx(metrics["open_set_onnx"][model]) for model in ("fp32", "int8"))
    assert (out / "runs" / "without_crack" / "seed1" / "model.keras").stat().st_mtime_ns == model_time


@pytest.mark.slow  # trains the base rows, then adapts them
def test_adaptation_rows_adapt_each_held_out_source(tiny_dataset, tmp_path):
    data = two_source_copy(tiny_dataset, tmp_path / "data")
    out = tmp_path / "cc"
    args = [*SMALL_CNN, f"data.root={data}", f"data.image_size={TINY_SIZE}", "train.epochs=1",
            "crosscheck.sources=[aa_, bb_]", "crosscheck.seeds=[1]", f"crosscheck.out={out}", "crosscheck.adapt=[1]",
            "adapt.epochs=1", "adapt.base_per_class=1"]
    assert crosscheck.main(args) == 0
    results = json.loads((out / "crosscheck.json").read_text())
    names = [r["name"] for r in results["adapt_rows"]]
    assert len(names) == 2 * 5 and "bb adapted, 1 picked aa/class + unlabelled aa -> aa" in names
    assert "aa adapted, unlabelled bb -> bb" in names
    picked = out / "runs" / "bb_adapted__1_picked_aa_class____aa" / "seed1" / "labelled"
    labelled = sorted(picked.rglob("*.png"))
    assert labelled and all(p.name.startswith("aa_") for p in labelled)  # the held-out source's images only
    assert len(labelled) <= len(results["test_classes"]["aa"])  # the budget: 1 per tested class
    base_test = next(r for r in results["rows"] if r["name"] == "bb -> aa")["test_images"]
    assert all(r["test_images"] == base_test for r in results["adapt_rows"] if r["name"].endswith("-> aa"))
    assert set(results["mean_adapt_accuracy"]) == {"0 + unlabelled", "1 random", "1 random + unlabelled",
                                                   "1 picked", "1 picked + unlabelled"}
    assert all(0 <= r["own_source_accuracy"] <= 1 and 0 <= r["own_source_accuracy_before"] <= 1
               for r in results["adapt_rows"])
    assert "Adapted with adapt_model.py" in (out / "crosscheck.md").read_text()


def test_a_held_out_source_is_tested_on_the_classes_the_others_can_teach():
    from semdefect.studies.crosscheck import testable_classes

    have = {"km": {"a", "b"}, "av": {"a", "b", "c", "d"}, "op": {"a", "c"}}
    assert testable_classes(have) == {"km": {"a", "b"}, "av": {"a", "b", "c"}, "op": {"a", "c"}}


@pytest.mark.slow  # trains a model per draw, then adapts it twice
def test_new_classes_protocol_teaches_the_left_out_classes(tiny_dataset, tmp_path):
    out = tmp_path / "newclasses"
    args = [*SMALL_CNN, f"data.root={tiny_dataset}", f"data.image_size={TINY_SIZE}", "train.epochs=1",
            "crosscheck.leave_out=new_classes", "crosscheck.new_classes=2", "crosscheck.draws=1",
            "crosscheck.shots=1", "crosscheck.seeds=[1]", f"crosscheck.out={out}", "adapt.epochs=1",
            "adapt.base_per_class=1"]
    assert crosscheck.main(args) == 0
    results = json.loads((out / "crosscheck.json").read_text())
    (row,) = results["rows"]
    left_out = row["left_out"]
    assert len(left_out) == 2
    view = out / "views" / ("without_" + "__".join(left_out))
    for name in left_out:  # never trained on, tested on
        assert not list(view.glob(f"train/{name}/*")) and list(view.glob(f"test/{name}/*"))
    run = out / "runs" / view.name
    for pick in ("random", "picked"):
        adapted = KerasClassifier(run / f"adapted_{pick}" / "seed1" / "model.keras")
        assert adapted.class_names[-2:] == sorted(left_out) and len(adapted.class_names) == 10
        assert 0 <= row[f"{pick}_new_accuracy_mean"] <= 1
    labelled = sorted((run / "adapted_random" / "seed1" / "labelled").iterdir())
    assert len(labelled) == 10  # one image per class, the new ones included
    assert "| " + ", ".join(left_out) + " |" in (out / "crosscheck.md").read_text()
    trained_at = (run / "seed1" / "model.keras").stat().st_mtime_ns
    assert crosscheck.main(args) == 0  # again: every run kept
    assert (run / "seed1" / "model.keras").stat().st_mtime_ns == trained_at
