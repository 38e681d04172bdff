import json

import crosscheck
from conftest import TINY_SIZE
from semdefect.config import load_config
from semdefect.crosscheck import protocol_rows, source_lookup


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


def test_protocol_runs_end_to_end(tiny_dataset, tmp_path, capsys):
    data = two_source_copy(tiny_dataset, tmp_path / "data")
    out = tmp_path / "cc"
    code = crosscheck.main([f"data.root={data}", f"data.image_size={TINY_SIZE}", "train.epochs=1",
                            "crosscheck.sources=[aa_, bb_]", "crosscheck.seeds=[1]", f"crosscheck.out={out}"])
    assert code == 0
    results = json.loads((out / "crosscheck.json").read_text())
    assert [r["name"] for r in results["rows"]] == ["all sources -> test split", "bb -> aa", "aa -> bb"]
    assert results["rows"][0]["test_images"] == 20 and results["rows"][1]["test_images"] == 10
    assert all(0 <= r["accuracy_mean"] <= 1 for r in results["rows"])
    assert "| bb -> aa |" in (out / "crosscheck.md").read_text() and "bb -> aa" in capsys.readouterr().out


def test_one_source_only_exits_2(tiny_dataset, tmp_path, capsys):
    code = crosscheck.main([f"data.root={tiny_dataset}", "crosscheck.sources=[zz_]", f"crosscheck.out={tmp_path}"])
    assert code == 2 and "leave-one-source-out needs two or more" in capsys.readouterr().err
