import os

import pytest

from semdefect.board.files import atomic_path, find_images, write_text_atomic


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_are_searched_recursively_and_sorted(tmp_path):
    b = touch(tmp_path / "z" / "b.PNG")
    a = touch(tmp_path / "a.jpg")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden.png")
    images, problems = find_images([tmp_path])
    assert images == [a, b] and problems == []


def test_a_named_file_is_taken_whatever_its_extension_and_a_missing_one_is_a_problem(tmp_path):
    odd = touch(tmp_path / "scan.dat")
    images, problems = find_images([odd, tmp_path / "missing.png"])
    assert images == [odd]
    assert problems == [(tmp_path / "missing.png", "no such file or folder")]


def test_symlink_loop_ends(tmp_path):
    image = touch(tmp_path / "d" / "a.png")
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")
    images, problems = find_images([tmp_path])
    assert images == [image]
    assert len(problems) == 1 and "symlink loop" in problems[0][1]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary left behind
