"""Tests for semdefect.synth: determinism, layout, the CLI's refusals, and that each defect is where its mask says."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import semdefect.synth as synth
from semdefect import CLASS_NAMES
from semdefect.commands.generate_images import main
from semdefect.synth import generate_image, image_rng, split_counts
from semdefect.synth.primitives import dilate as _dilate

DEFECT_CLASSES = [c for c in CLASS_NAMES if c != "clean"]
SEEDS = range(6)


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _pair(class_name: str, i: int, difficulty: float = 0.5, size: int = 128):
    """The same image with and without its defect (same scene, same imaging noise) and the defect's mask."""
    ci = CLASS_NAMES.index(class_name)
    img, info = generate_image(class_name, image_rng(123, ci, i), size, difficulty)
    ref, _ = generate_image(class_name, image_rng(123, ci, i), size, difficulty, defect=False)
    return img.astype(float), ref.astype(float), info


# --- split arithmetic ---------------------------------------------------------------------------------


def test_split_counts_examples():
    assert split_counts(20, (70, 15, 15)) == (14, 3, 3)
    assert split_counts(10, (70, 15, 15)) == (7, 2, 1)
    assert split_counts(0, (70, 15, 15)) == (0, 0, 0)
    assert split_counts(5, (100, 0, 0)) == (5, 0, 0)


@settings(deadline=None, max_examples=200, database=None)
@given(st.integers(0, 5000), st.integers(0, 100), st.integers(0, 100))
def test_split_counts_exact_and_close_to_ratios(n, a, b):
    if a + b > 100:
        a, b = a // 2, b // 2
    ratios = (a, b, 100 - a - b)
    counts = split_counts(n, ratios)
    assert sum(counts) == n
    for c, r in zip(counts, ratios):
        assert abs(c - n * r / 100) < 1


# --- command line: layout, determinism, refusals ------------------------------------------------------


def test_cli_split_layout_and_counts(tmp_path, capsys):
    out = tmp_path / "ds"
    sheet = tmp_path / "docs" / "sheet.png"
    assert main(["--out", str(out), "--per-class", "20", "--size", "48", "--split", "70,15,15",
                 "--contact-sheet", str(sheet)]) == 0
    for split, n in zip(("train", "val", "test"), (14, 3, 3)):
        for name in CLASS_NAMES:
            files = sorted((out / split / name).iterdir())
            assert len(files) == n, (split, name)
            assert all(f.name.startswith(f"synth_{name}_") and f.suffix == ".png" for f in files)
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "val"]
    names = [p.name for p in out.rglob("*.png")]
    assert len(names) == len(set(names)) == 200  # no image index is used twice across splits
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    with Image.open(sheet) as im:
        assert im.mode == "L" and im.height > len(CLASS_NAMES) * 48
    assert "wrote 200 images" in capsys.readouterr().err  # the closing summary counts what was written


def test_cli_without_split_writes_class_folders(tmp_path):
    out = tmp_path / "flat"
    assert main(["--out", str(out), "--per-class", "3", "--size", "40"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(CLASS_NAMES)
    for name in CLASS_NAMES:
        files = sorted((out / name).iterdir())
        assert [f.name for f in files] == [f"synth_{name}_{i:05d}.png" for i in range(3)]
        for f in files:
            with Image.open(f) as im:
                assert im.mode == "L" and im.size == (40, 40)


def test_same_arguments_give_identical_files_in_any_folder(tmp_path):
    args = ["--per-class", "2", "--size", "64", "--seed", "7", "--split", "50,50,0"]
    a, b, c = tmp_path / "a", tmp_path / "elsewhere" / "b", tmp_path / "c"
    assert main(["--out", str(a), *args]) == 0
    assert main(["--out", str(b), *args]) == 0
    assert main(["--out", str(c), *args[:-3], "8", *args[-2:]]) == 0  # seed 8
    assert _files(a) == _files(b) == _files(c)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    differing = sum((a / rel).read_bytes() != (c / rel).read_bytes() for rel in _files(a))
    assert differing == len(_files(a))


def test_file_is_the_image_of_its_own_stream(tmp_path):
    """Image i depends on (seed, class, i) only: not on the split, the count or what was made before."""
    out = tmp_path / "ds"
    assert main(["--out", str(out), "--per-class", "6", "--size", "64", "--seed", "3", "--difficulty", "0.3",
                 "--split", "50,25,25"]) == 0
    ci = CLASS_NAMES.index("via")
    path = out / "test" / "via" / "synth_via_00005.png"
    expected, _ = generate_image("via", image_rng(3, ci, 5), 64, 0.3)
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), expected)


@pytest.mark.parametrize("extra, fragment", [
    (["--split", "70,15,10"], "summing to 100"),
    (["--split", "70,30"], "summing to 100"),
    (["--split", "a,b,c"], "--split"),
    (["--per-class", "-1"], "--per-class"),
    (["--size", "31"], "--size"),
    (["--size", "big"], "--size"),
    (["--difficulty", "1.5"], "--difficulty"),
    (["--seed", "-3"], "--seed"),
    (["--bogus"], "--bogus"),
])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, extra, fragment):
    out = tmp_path / "never"
    assert main(["--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and fragment in err
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_missing_out_exits_2(capsys):
    assert main(["--per-class", "2"]) == 2
    assert "--out" in capsys.readouterr().err


def test_cli_out_is_a_file_exits_2(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["--out", str(f), "--per-class", "1"]) == 2
    assert str(f) in capsys.readouterr().err


def test_cli_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "--per-class" in capsys.readouterr().out


# --- the image API ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_generate_image_contract(class_name):
    for size in (32, 96):
        img, info = generate_image(class_name, image_rng(1, 0, size), size, 0.5)
        assert img.dtype == np.uint8 and img.shape == (size, size)
        mask = info["defect_mask"]
        assert mask.dtype == bool and mask.shape == (size, size)
        assert info["background"] in ("grating", "holes", "blank")
        assert isinstance(info["data_bar"], bool)
        assert mask.any() == (class_name != "clean")


def test_clean_has_empty_mask_and_no_defect():
    ci = CLASS_NAMES.index("clean")
    for i in SEEDS:
        img, info = generate_image("clean", image_rng(5, ci, i))
        ref, _ = generate_image("clean", image_rng(5, ci, i), defect=False)
        assert not info["defect_mask"].any()
        assert np.array_equal(img, ref)


def test_backgrounds_and_data_bar_vary():
    infos = [generate_image("clean", image_rng(2, 1, i), 48)[1] for i in range(60)]
    assert {i["background"] for i in infos} == {"grating", "holes", "blank"}
    bars = sum(i["data_bar"] for i in infos)
    assert 5 <= bars <= 35


def test_defect_mask_stays_above_the_data_bar():
    for class_name in DEFECT_CLASSES:
        ci = CLASS_NAMES.index(class_name)
        for i in range(40):
            _, info = generate_image(class_name, image_rng(11, ci, i), 64)
            if info["data_bar"]:
                assert not info["defect_mask"][-info["bar_rows"]:].any()


@pytest.mark.parametrize("bad", [
    dict(class_name="scratch"), dict(size=16), dict(difficulty=-0.1),
])
def test_generate_image_refuses_bad_parameters(bad):
    kwargs = dict(class_name="particle", rng=image_rng(0, 0, 0), size=64, difficulty=0.5) | bad
    with pytest.raises(ValueError):
        generate_image(**kwargs)


# --- each defect is where its mask says, and looks the way it should ---------------------------------------


@pytest.mark.parametrize("class_name", DEFECT_CLASSES)
def test_defect_changes_the_image_mainly_inside_its_mask(class_name):
    """The same scene with and without the defect differs inside the mask, hardly anywhere else."""
    for i in SEEDS:
        img, ref, info = _pair(class_name, i)
        mask = info["defect_mask"]
        assert 0 < mask.mean() < 0.7
        diff = np.abs(img - ref)
        outside = ~_dilate(mask, 3)
        assert diff[mask].mean() > 2 * diff[outside].mean() + 3, (class_name, i, info["variant"])


def _inside_minus_ring(img: np.ndarray, mask: np.ndarray) -> float:
    ring = _dilate(mask, 4) & ~_dilate(mask, 1)
    return float(img[mask].mean() - img[ring].mean())


def test_particle_is_brighter_than_its_surroundings():
    for i in SEEDS:
        img, _, info = _pair("particle", i)
        assert _inside_minus_ring(img, info["defect_mask"]) > 10


def test_crack_is_darker_than_its_surroundings():
    for i in SEEDS:
        img, _, info = _pair("crack", i)
        assert _inside_minus_ring(img, info["defect_mask"]) < -5


def test_bridge_fills_the_space_with_line_material_and_open_removes_it():
    bridge = [(img - ref)[info["defect_mask"]].mean() for img, ref, info in (_pair("Bridge", i) for i in SEEDS)]
    opens = [(img - ref)[info["defect_mask"]].mean() for img, ref, info in (_pair("opens", i) for i in SEEDS)]
    assert np.mean(bridge) > 10 and np.mean(opens) < -10


def test_contamination_mostly_darkens():
    change = [(img - ref)[info["defect_mask"]].mean() for img, ref, info in (_pair("contamination", i) for i in SEEDS)]
    assert np.mean(change) < -10


def test_ler_roughens_the_edges():
    """A straight grating puts its power into a few spatial frequencies (its harmonics); rough edges spread
    it out. So the strongest 1 % of Fourier bins hold less of the power than in the same grating without
    the defect. (Edge length, the gradient energy, is no measure once strong roughness pinches lines.)"""
    def concentration(a):
        p = np.sort((np.abs(np.fft.fft2(a - a.mean())) ** 2).ravel())[::-1]
        return p[: p.size // 100].sum() / p.sum()
    drops = [concentration(ref) - concentration(img) for img, ref, _ in (_pair("ler", i) for i in SEEDS)]
    assert min(drops) > 0.03


def test_via_edits_the_hole_array():
    for i in SEEDS:
        _, _, info = _pair("via", i)
        assert info["background"] == "holes"
        assert set(info["variant"].split("+")) <= {"missing", "undersized", "merged", "misshapen", "shallow"}


def test_difficulty_makes_defects_smaller_and_images_noisier():
    def area(class_name, difficulty):
        return np.mean([_pair(class_name, i, difficulty)[2]["defect_mask"].mean() for i in range(8)])

    for class_name in ("particle", "crack", "contamination"):
        assert area(class_name, 0.0) > area(class_name, 1.0)

    def residual(difficulty):
        # High-frequency energy of clean images: the same scenes, rendered at two difficulties.
        out = []
        for i in range(8):
            img, _ = generate_image("clean", image_rng(4, 1, i), 128, difficulty)
            a = img.astype(float)
            out.append(np.abs(a[:, 1:] - a[:, :-1]).mean())
        return np.mean(out)

    assert residual(1.0) > residual(0.0)


def test_images_use_the_grey_range():
    for class_name in CLASS_NAMES:
        img, _ = generate_image(class_name, image_rng(8, 0, 0))
        assert img.std() > 5 and 40 < img.mean() < 215


def test_write_png_is_atomic_and_plain(tmp_path):
    img = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    path = tmp_path / "x" / "a.png"
    synth.write_png(img, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]
    with Image.open(path) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), img)
        assert not im.info.get("dpi") and not im.text
