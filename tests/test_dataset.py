import logging

import numpy as np
import pytest
from PIL import Image

from semdefect.board.errors import DatasetError
from semdefect.board.images import Preprocess
from semdefect.data.dataset import list_labelled_files, load_split, resolve_eval_folder

CLASSES = ["a", "b", "c"]
PREP = Preprocess(image_size=32)


def make(root, split, cls, n, start=0):
    folder = root / split / cls
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(np.full((20, 20), 10 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_files_are_labelled_by_folder_in_class_order(tmp_path):
    make(tmp_path, "train", "b", 2)
    make(tmp_path, "train", "a", 1)
    files = list_labelled_files(tmp_path / "train", CLASSES)
    assert [p.parent.name for p in files.paths] == ["a", "b", "b"] and files.labels == [0, 1, 1]


def test_missing_and_empty_classes_warn(tmp_path, caplog):
    make(tmp_path, "train", "a", 1)
    (tmp_path / "train" / "b").mkdir()
    with caplog.at_level(logging.WARNING):
        list_labelled_files(tmp_path / "train", CLASSES)
    assert "class 'b' has no images" in caplog.text and "class 'c' has no images" in caplog.text


def test_unknown_class_folder_is_an_error_listing_the_expected_ones(tmp_path):
    make(tmp_path, "train", "a", 1)
    make(tmp_path, "train", "dog", 1)
    with pytest.raises(DatasetError, match=r"dog.*a, b, c"):
        list_labelled_files(tmp_path / "train", CLASSES)


def test_missing_root_split_and_class_folders_are_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(tmp_path / "nowhere", "train", CLASSES, PREP)
    with pytest.raises(DatasetError, match="no 'train' split"):
        load_split(tmp_path, "train", CLASSES, PREP)
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_split(tmp_path, "train", CLASSES, PREP)


def test_unreadable_image_is_skipped_and_named(tmp_path, caplog):
    folder = make(tmp_path, "train", "a", 2)
    (folder / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        loaded = load_split(tmp_path, "train", CLASSES, PREP)
    assert loaded.x.shape == (2, 32, 32, 1) and list(loaded.y) == [0, 0]
    assert [p.name for p, _ in loaded.skipped] == ["broken.png"] and "broken.png" in caplog.text


def test_split_without_a_readable_image_is_an_error(tmp_path):
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    (folder / "broken.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no readable image"):
        load_split(tmp_path, "train", CLASSES, PREP)


def test_eval_folder_is_a_split_or_a_folder_of_class_folders(tmp_path):
    make(tmp_path, "test", "a", 1)
    assert resolve_eval_folder(tmp_path, "test", CLASSES) == tmp_path / "test"
    assert resolve_eval_folder(tmp_path / "test", "test", CLASSES) == tmp_path / "test"


def test_class_folders_match_class_names_in_any_unicode_form(tmp_path):
    import unicodedata

    classes = ["défaut à bille", "rayure fine"]
    make(tmp_path, "test", unicodedata.normalize("NFD", classes[0]), 2)  # as copied from a Mac
    make(tmp_path, "test", classes[1], 1)
    assert resolve_eval_folder(tmp_path / "test", "test", classes) == tmp_path / "test"
    files = list_labelled_files(tmp_path / "test", classes)
    assert files.labels == [0, 0, 1]
