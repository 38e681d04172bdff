"""prepare_dataset.py split/check and semdefect.duplicates: planted near-duplicates are found, distinct images are
not, splits keep near-duplicate groups together and repeat exactly, bad usage is one `error:` line and exit 2."""

import csv
import io
import json

import numpy as np
import pytest
from conftest import REAL_DATA, assert_one_line_error, real_images, run_script
from PIL import Image, ImageDraw

import prepare_dataset
from semdefect.board.images import read_gray
from semdefect.data.duplicates import (
    DuplicateSettings,
    blur_matrix,
    detect_data_bar,
    find_near_duplicates,
    fingerprint,
    tile_agreement,
)

KINDS = ("resize", "crop", "jpeg", "contrast", "noise")


# ---------------------------------------------------------------------------------------------------------
# Image makers


def transform(gray: np.ndarray, kind: str, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate of a grey image in [0, 1] of one of the kinds the checker must see through."""
    image = Image.fromarray(to_uint8(gray))
    width, height = image.size
    if kind == "resize":
        factor = 0.6 if rng.random() < 0.5 else 1.7
        return image.resize((round(width * factor), round(height * factor)), Image.Resampling.BICUBIC)
    if kind == "crop":  # 18 % off the width and 12 % off the height, off centre
        return image.crop((round(0.13 * width), round(0.02 * height), round(0.95 * width), round(0.9 * height)))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=40)
        return Image.open(io.BytesIO(buffer.getvalue()))
    if kind == "contrast":
        return Image.fromarray(to_uint8((gray - gray.mean()) * 1.3 + gray.mean() - 0.08))
    if kind == "noise":
        return Image.fromarray(to_uint8(gray + rng.normal(0.0, 0.04, gray.shape)))
    raise ValueError(kind)


def to_uint8(gray: np.ndarray) -> np.ndarray:
    return np.clip(gray * 255 + 0.5, 0, 255).astype(np.uint8)


def random_scene(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A distinct synthetic SEM-like picture: a few lines of random pitch and angle, particles and a smudge,
    with sharp edges (what survives resizing and re-encoding in real images too) and a little noise."""
    image = Image.new("L", (size, size), int(rng.integers(70, 150)))
    draw = ImageDraw.Draw(image)
    angle, pitch = rng.uniform(0, np.pi), rng.uniform(0.12, 0.3) * size
    dx, dy = np.cos(angle) * size, np.sin(angle) * size
    for k in range(-4, 5):
        cx, cy = size / 2 - np.sin(angle) * k * pitch, size / 2 + np.cos(angle) * k * pitch
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=int(rng.integers(160, 230)),
                  width=int(rng.integers(2, max(3, int(pitch / 2)))))
    for _ in range(int(rng.integers(3, 7))):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, size / 8)
        draw.ellipse([x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r], fill=int(rng.integers(0, 255)))
    gray = np.asarray(image, np.float32) / 255
    return np.clip(gray + 0.015 * rng.standard_normal((size, size)), 0, 1)


def save(image: Image.Image | np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))).save(path)


def manifest_groups() -> dict[str, str]:
    """sem-public's near-duplicate group of each file (relative path -> group), empty without its MANIFEST."""
    manifest = REAL_DATA / "MANIFEST.csv"
    if not manifest.is_file():
        return {}
    with open(manifest, newline="", encoding="utf-8") as handle:
        return {row["file"]: row["dup_group"] for row in csv.DictReader(handle)}


def distinct_real_images(count: int) -> list:
    """Real SEM images from different near-duplicate groups of sem-public (its MANIFEST), with detail:
    a near-blank wafer has only its noise as identity, which a re-noised copy does not keep."""
    files = real_images()
    groups = manifest_groups()
    chosen, seen = [], set()
    for path in files[::7]:  # spread over classes and sources
        group = groups.get(path.relative_to(REAL_DATA).as_posix(), path.name)
        if group in seen or fingerprint(read_gray(path), DuplicateSettings()).detail < 0.02:
            continue
        seen.add(group)
        chosen.append(path)
        if len(chosen) == count:
            return chosen
    pytest.skip(f"fewer than {count} distinct detailed images in {REAL_DATA}")


# ---------------------------------------------------------------------------------------------------------
# check


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """A split dataset of real SEM images: originals in train, one copy of each kind in val or test, and
    distinct images of the same classes in val and test that must not be flagged."""
    root = tmp_path_factory.mktemp("leaky") / "data"
    rng = np.random.default_rng(3)
    paths = distinct_real_images(2 * len(KINDS) + 4)
    planted = {}
    for i, kind in enumerate(KINDS * 2):
        label = "a" if i % 2 else "b"
        gray = read_gray(paths[i])
        original = root / "train" / label / f"orig_{i}.png"
        save(gray, original)
        split = "val" if i < len(KINDS) else "test"
        copy = root / split / label / f"copy_{i}_{kind}.{'jpg' if kind == 'jpeg' else 'png'}"
        save(transform(gray, kind, rng).convert("L"), copy)
        planted[copy.name] = (original.name, split, kind)
    for j, path in enumerate(paths[2 * len(KINDS):]):
        save(read_gray(path), root / ("val" if j % 2 else "test") / ("a" if j < 2 else "b") / f"distinct_{j}.png")
    report = root.parent / "report.json"
    code = prepare_dataset.main(["check", str(root), "--report", str(report)])
    return {"root": root, "planted": planted, "code": code, "report": json.loads(report.read_text())}


def test_check_finds_every_planted_kind_across_splits(leaky):
    found = {(e["a"].rsplit("/", 1)[1], e["b"].rsplit("/", 1)[1]): e for e in leaky["report"]["leaks"]}
    missed = []
    for copy, (original, split, kind) in leaky["planted"].items():
        entry = found.get((original, copy))
        if entry is None:
            missed.append(kind)
            continue
        assert entry["split_a"] == "train" and entry["split_b"] == split and 0.8 <= entry["score"] <= 1.0
    assert not missed, f"planted near-duplicates not found: {missed}"
    assert leaky["code"] == 1
    counts = leaky["report"]["leak_counts"]
    assert counts["train-val"] >= len(KINDS) and counts["train-test"] >= len(KINDS)


def test_check_leaves_distinct_images_alone(leaky):
    flagged = [e for e in leaky["report"]["leaks"] + leaky["report"]["near_duplicates_within_splits"]
               if "distinct_" in e["a"] + e["b"]]
    assert not flagged, flagged


def test_distinct_generated_images_of_one_class_are_clean(tmp_path):
    """Thirty different pictures of one kind of scene (same class, same generator) in all three splits."""
    rng = np.random.default_rng(11)
    try:
        from semdefect.synth import generate_image, image_rng

        images = [generate_image("Bridge", image_rng(5, 0, i), 96, 0.3)[0] for i in range(30)]
    except ImportError:  # the generator is another module's job; random scenes test the same thing
        images = [to_uint8(random_scene(rng)) for _ in range(30)]
    for i, image in enumerate(images):
        save(Image.fromarray(image), tmp_path / ("train", "val", "test")[i % 3] / "Bridge" / f"{i}.png")
    report = tmp_path / "report.json"
    assert prepare_dataset.main(["check", str(tmp_path), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["leaks"] == [] and data["near_duplicates_within_splits"] == []


def test_check_reports_corrupt_unexpected_unusual_and_exact(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(2)
    for i in range(8):
        save(random_scene(rng), tmp_path / ("train" if i < 5 else "test") / "a" / f"{i}.png")
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "train" / "a" / "notes.txt").write_text("hi")
    (tmp_path / "train" / "stray.png").write_bytes((tmp_path / "train" / "a" / "0.png").read_bytes())
    save(Image.fromarray(to_uint8(random_scene(rng))).convert("RGB"), tmp_path / "test" / "a" / "colour.png")
    (tmp_path / "test" / "a" / "same.png").write_bytes((tmp_path / "train" / "a" / "1.png").read_bytes())
    Image.fromarray(to_uint8(random_scene(rng))).save(tmp_path / "test" / "a" / "really_jpeg.png", format="JPEG")
    report = tmp_path.parent / f"{tmp_path.name}.json"
    # one colour image in eleven: rare at 20 % (the 2 % of RARE_FRACTION is for sets of hundreds)
    monkeypatch.setattr("semdefect.data.splits.RARE_FRACTION", 0.2)
    assert prepare_dataset.main(["check", str(tmp_path), "--report", str(report)]) == 1
    data = json.loads(report.read_text())
    assert [e["path"].rsplit("/", 1)[1] for e in data["unreadable"]] == ["broken.png"]
    assert {"/".join(e["path"].split("/")[-2:]) for e in data["unexpected_files"]} == {"a/notes.txt", "train/stray.png"}
    unusual = {e["path"].rsplit("/", 1)[1]: " ".join(e["reasons"]) for e in data["unusual_images"]}
    assert "mode RGB is rare" in unusual["colour.png"] and "content is JPEG" in unusual["really_jpeg.png"]
    exact = [e for e in data["leaks"] if e["kind"] == "exact"]
    assert len(exact) == 1 and exact[0]["score"] == 1.0 and exact[0]["b"].endswith("test/a/same.png")
    out = capsys.readouterr().out
    assert "leaks (near-duplicates across splits): 1 pairs" in out and "broken.png" in out


def test_check_exit_code_one_as_a_subprocess(tmp_path):
    rng = np.random.default_rng(8)
    scenes = [random_scene(rng) for _ in range(5)]
    for i, scene in enumerate(scenes):
        save(scene, tmp_path / "train" / "a" / f"{i}.png")
    save(transform(scenes[2], "jpeg", rng).convert("L"), tmp_path / "test" / "a" / "copy.png")
    result = run_script("prepare_dataset.py", "check", tmp_path, "prepare.workers=1")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "result: LEAKS" in result.stdout
    assert "train/a/2.png" in result.stdout and "test/a/copy.png" in result.stdout


# ---------------------------------------------------------------------------------------------------------
# split


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """A flat folder of two classes: 24 distinct images each, 4 of them with 3 near-duplicate copies."""
    root = tmp_path_factory.mktemp("flat") / "src"
    rng = np.random.default_rng(7)
    groups = []
    for label in ("x", "y"):
        for i in range(24):
            gray = random_scene(rng)
            save(gray, root / label / f"{label}{i:02d}.png")
            if i < 4:
                names = [f"{label}{i:02d}.png"]
                for kind in ("resize", "crop", "noise"):
                    save(transform(gray, kind, rng).convert("L"), root / label / f"{label}{i:02d}_{kind}.png")
                    names.append(f"{label}{i:02d}_{kind}.png")
                groups.append(names)
    return {"root": root, "groups": groups}


def split_of(dst) -> dict[str, str]:
    return {p.name: p.relative_to(dst).parts[0] for p in sorted(dst.rglob("*.png"))}


def test_split_keeps_groups_together_meets_ratios_and_repeats(flat, tmp_path):
    first, second, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    assert prepare_dataset.main(["split", str(flat["root"]), str(first), "--seed", "5"]) == 0
    assert prepare_dataset.main(["split", str(flat["root"]), str(second), "--seed", "5"]) == 0
    assert prepare_dataset.main(["split", str(flat["root"]), str(other), "--seed", "6"]) == 0
    placed = split_of(first)
    assert len(placed) == 2 * (24 + 4 * 3)
    for group in flat["groups"]:
        assert len({placed[name] for name in group}) == 1, group
    assert placed == split_of(second)
    assert placed != split_of(other)
    for label in ("x", "y"):
        counts = [len(list((first / s / label).glob("*.png"))) for s in ("train", "val", "test")]
        assert abs(counts[0] - 25.2) <= 3 and abs(counts[1] - 5.4) <= 3 and abs(counts[2] - 5.4) <= 3, counts
    report = json.loads((first / "split_report.json").read_text())
    assert len(report["groups"]) == len(flat["groups"]) and (first / "split_config.yaml").is_file()
    assert not (first / "train" / "x" / "x00.png").is_symlink()


def test_split_links_pools_splits_and_reports_small_classes(tmp_path, capsys):
    rng = np.random.default_rng(4)
    src = tmp_path / "src"
    for i in range(10):
        save(random_scene(rng), src / ("train" if i < 7 else "val") / "big" / f"{i}.png")
    save(random_scene(rng), src / "train" / "tiny" / "0.png")
    save(random_scene(rng), src / "test" / "tiny" / "0.png")  # same name, other split: both kept
    dst = tmp_path / "dst"
    dst.mkdir()  # an empty destination is fine
    assert prepare_dataset.main(["split", str(src), str(dst), "--link", "--ratios", "60,20,20"]) == 0
    files = sorted(p for p in dst.rglob("*.png"))
    assert len(files) == 12 and all(p.is_symlink() and p.resolve().is_file() for p in files)
    assert {p.name for p in (dst).rglob("tiny/*.png")} == {"train_0.png", "test_0.png"}
    report = json.loads((dst / "split_report.json").read_text())
    assert [c["class"] for c in report["small_classes"]] == ["tiny"]
    assert "class 'tiny' is too small to split" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# exit 2


def test_bad_usage_is_one_error_line(flat, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    cases = [
        (["split", str(flat["root"]), str(busy)], "not empty"),
        (["split", str(tmp_path / "nowhere"), str(tmp_path / "out")], "does not exist"),
        (["split", str(flat["root"]), str(flat["root"] / "inner")], "inside the source"),
        (["split", str(flat["root"]), str(tmp_path / "out"), "--ratios", "70,30"], "--ratios"),
        (["split", str(flat["root"]), str(tmp_path / "out"), "--ratios", "70,20,20"], "prepare.ratios"),
        (["check", str(tmp_path / "nowhere")], "does not exist"),
        (["check", str(flat["root"])], "no split folder"),
        (["check", str(flat["root"]), "prepare.data_bar=maybe"], "prepare.data_bar"),
        (["check", str(flat["root"]), "prepare.data_bar_row=3"], "prepare.data_bar_rows"),
    ]
    for argv, fragment in cases:
        assert prepare_dataset.main(argv) == 2, argv
        assert_one_line_error(capsys.readouterr().err, fragment)
    assert not (tmp_path / "out").exists() and not (flat["root"] / "inner").exists()
    assert (busy / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------------------
# data bar


def with_bar(gray: np.ndarray, rows: int, dark: bool, rng: np.random.Generator) -> np.ndarray:
    """An instrument data bar drawn with Pillow: flat band, acquisition text and a scale bar."""
    height, width = gray.shape
    band = Image.new("L", (width, rows), 12 if dark else 200)
    draw = ImageDraw.Draw(band)
    ink = 255 if dark else 0
    draw.text((3, rows // 2 - 5), f"{rng.integers(1, 20)}kV x{rng.integers(5, 99)}k SE", fill=ink)
    draw.rectangle([width - 40, rows - 5, width - 8, rows - 4], fill=ink)
    out = gray.copy()
    out[height - rows:] = np.asarray(band, np.float32) / 255
    return out


def test_data_bar_is_found_and_cut_so_a_copy_without_it_still_matches(tmp_path):
    rng = np.random.default_rng(9)
    for size in (128, 224):
        for dark in (True, False):
            scene = random_scene(rng, size)
            assert detect_data_bar(scene) == 0
            rows = size // 8
            assert abs(detect_data_bar(with_bar(scene, rows, dark, rng)) - rows) <= 1
    try:
        from semdefect.synth import generate_image, image_rng

        made = [generate_image(name, image_rng(1, 0, i), 128, 0.5) for i in range(40) for name in ("cmp", "via")]
        for image, info in made:
            assert abs(detect_data_bar(image / 255.0) - info["bar_rows"]) <= 2, info["bar_rows"]
    except ImportError:
        pass
    # Cut: a picture with its bar has the fingerprint of the picture alone, and two different pictures under
    # one bar are not near-duplicates; kept, the bar is part of the picture.
    scene, other = random_scene(rng, 128), random_scene(rng, 128)
    barred = [with_bar(scene, 16, True, np.random.default_rng(1)), with_bar(other, 16, True, np.random.default_rng(1))]
    settings = DuplicateSettings(data_bar="auto")
    prints = [fingerprint(p.astype(np.float32), settings) for p in barred + [scene[:112]]]
    assert [p.bar_rows for p in prints] == [16, 16, 0]
    assert np.abs(prints[0].canon.astype(np.float32) - prints[2].canon).max() < 0.01
    assert [(m.a, m.b) for m in find_near_duplicates(prints, settings)] == [(0, 2)]
    assert fingerprint(barred[0].astype(np.float32), DuplicateSettings(data_bar="none")).bar_rows == 0
    rows = DuplicateSettings(data_bar="rows", data_bar_rows=10)
    assert fingerprint(barred[0].astype(np.float32), rows).bar_rows == 10



def test_noisy_copies_of_faint_images_are_found_and_other_faint_captures_are_not(tmp_path):
    """A faint capture (detail between min_detail and low_detail) re-noised by 4 grey levels in 100 often falls
    under the band-passed threshold (the search without the fine-band score found 9 of these 12); the
    fine-band coherence finds more, and other faint captures of the same instrument stay apart."""
    settings = DuplicateSettings()
    groups = manifest_groups()
    faint, seen = [], set()
    for path in real_images()[::3]:
        group = groups.get(path.relative_to(REAL_DATA).as_posix(), path.name)
        gray = read_gray(path)
        if group in seen or not settings.min_detail <= fingerprint(gray, settings).detail < settings.low_detail:
            continue
        seen.add(group)
        faint.append(gray)
        if len(faint) == 12:
            break
    if len(faint) < 12:
        pytest.skip(f"fewer than 12 distinct faint images in {REAL_DATA}")
    rng = np.random.default_rng(0)
    copies = [to_uint8(gray + rng.normal(0.0, 0.04, gray.shape)) / np.float32(255) for gray in faint]
    prints = [fingerprint(image, settings) for image in faint + copies]
    found = {(m.a, m.b) for m in find_near_duplicates(prints, settings)}
    planted = {(i, i + len(faint)) for i in range(len(faint))}
    assert found <= planted, sorted(found - planted)
    assert len(found) >= 10, f"{len(found)} of {len(faint)} noisy copies found"


def faint_capture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A blank wafer with one particle in the same place every time; only the grain tells captures apart."""
    blur = blur_matrix(size, 1.0)
    grain = blur @ rng.normal(0.0, 1.0, (size, size)) @ blur.T
    y, x = np.mgrid[0:size, 0:size]
    distance2 = (y - 30) ** 2 + (x - 34) ** 2
    particle = -0.3 * (distance2 < 16) + 0.15 * np.exp(-distance2 / 60.0)
    return (0.5 + 0.01 * grain / grain.std() + particle).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_tile_agreement_tells_a_noisy_copy_from_another_capture_of_the_same_particle(seed):
    """The particle's edge carries most of the fine band, so both pairs have a high fine-band coherence; only
    the copy agrees in the tiles away from the particle."""
    rng = np.random.default_rng(seed)
    capture, other = faint_capture(rng), faint_capture(rng)
    copy = capture + rng.normal(0.0, 0.01, capture.shape).astype(np.float32)
    copy_score, other_score = tile_agreement(np.stack([capture, capture]), np.stack([copy, other]))
    threshold = DuplicateSettings().tile_threshold
    assert copy_score > threshold + 0.2
    assert other_score < threshold - 0.3

