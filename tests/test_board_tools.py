"""The board package's builder and the emulated board check's own logic (tools/); the check itself needs qemu and
runs as `make board-check`, not here."""

import copy
import re

import pytest
from conftest import ROOT

from tools.board_check import INT8_TOLERANCE, TOLERANCE, compare_rows, python_version, stale_files
from tools.board_package import TFLITE_PIN, pyproject_text, read_pins


def rows() -> list[dict]:
    """Two classified images and an unreadable one, as `semdefect-infer --output x.json` writes them."""
    return [
        {"path": "a.png", "label": "via", "confidence": 0.8, "top3": [{"label": "via", "confidence": 0.8},
                                                                   {"label": "cmp", "confidence": 0.15},
                                                                   {"label": "ler", "confidence": 0.05}],
         "status": "ok", "error": "", "decision": "accept", "score": 0.7},
        {"path": "b.png", "label": "cmp", "confidence": 0.5, "top3": [{"label": "cmp", "confidence": 0.5},
                                                                   {"label": "via", "confidence": 0.3},
                                                                   {"label": "ler", "confidence": 0.2}],
         "status": "ok", "error": "", "decision": "review", "score": 0.2},
        {"path": "bad.png", "label": "", "confidence": None, "top3": [], "status": "error",
         "error": "bad.png: empty file (0 bytes)", "decision": "", "score": None},
    ]


def test_identical_rows_agree():
    assert compare_rows(rows(), rows()) == ([], 0.0)


def test_probabilities_within_the_tolerance_agree_and_the_largest_difference_is_reported():
    board = rows()
    board[0]["top3"][1]["confidence"] += TOLERANCE / 2
    problems, largest = compare_rows(rows(), board)
    assert problems == [] and largest == pytest.approx(TOLERANCE / 2)


def test_int8_onnx_is_held_to_its_answer_and_a_wider_tolerance():
    board = copy.deepcopy(rows())
    board[0]["top3"][1:] = board[0]["top3"][2:0:-1]  # second and third place swapped
    board[0]["top3"][0]["confidence"] += 0.02
    assert compare_rows(rows(), board, INT8_TOLERANCE, ranks=1)[0] == []
    assert compare_rows(rows(), board)[0]  # the FP32 rule sees both changes
    board[0]["label"] = "cmp"
    assert any("a.png: label" in p for p in compare_rows(rows(), board, INT8_TOLERANCE, ranks=1)[0])


@pytest.mark.parametrize("change, expected", [
    (lambda r: r[0].update(label="cmp"), "a.png: label"),
    (lambda r: r[1].update(decision="accept"), "b.png: decision"),
    (lambda r: r[1].update(score=0.2 + 3 * TOLERANCE), "b.png: score"),
    (lambda r: r[0]["top3"][2].update(confidence=0.05 + 2 * TOLERANCE), "a.png: top3"),
    (lambda r: r[0]["top3"].reverse(), "a.png: top-3"),
    (lambda r: r[2].update(error="bad.png: cannot identify image file"), "bad.png: error"),
    (lambda r: r[2].update(status="ok", label="via", confidence=0.9, score=0.9), "bad.png: status"),
    (lambda r: r.pop(), "3 rows on x86, 2 on the board"),
])
def test_any_difference_is_reported(change, expected):
    board = copy.deepcopy(rows())
    change(board)
    problems, _ = compare_rows(rows(), board)
    assert any(expected in problem for problem in problems), problems


def test_requirement_pins_are_read_exactly_and_loose_ones_refused(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("# board\nnumpy==2.4.6\n\ntqdm==4.70.1  # progress bar\n")
    assert read_pins(good) == ["numpy==2.4.6", "tqdm==4.70.1"]
    loose = tmp_path / "loose.txt"
    loose.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        read_pins(loose)


def test_the_board_package_depends_on_exactly_the_board_pins():
    import tomllib

    pins = read_pins(ROOT / "requirements-edge.txt")
    project = tomllib.loads(pyproject_text("1.0", pins))["project"]
    assert project["dependencies"] == pins
    assert project["optional-dependencies"] == {"tflite": [TFLITE_PIN]}
    assert project["scripts"] == {"semdefect-infer": "semdefect.board.infer:main",
                                  "semdefect-board-bench": "semdefect.board.bench:main"}


def test_the_tflite_extra_pins_the_workstation_s_litert():
    workstation = (ROOT / "requirements.txt").read_text()
    pinned = re.search(r"^ai-edge-litert==\S+", workstation, re.MULTILINE)
    # requirements.txt pins LiteRT once the workstation scores .tflite models; from then on the two must be equal.
    assert pinned is None or pinned.group(0) == TFLITE_PIN


def test_the_userland_python_version_is_read_from_its_python3_link(tmp_path):
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "python3").symlink_to("python3.11")
    assert python_version(tmp_path) == "3.11"


def test_a_wheel_whose_board_runtime_differs_from_the_checkout_is_named_stale(tmp_path):
    import zipfile

    board = sorted((ROOT / "semdefect" / "board").glob("*.py"))
    fresh, stale = tmp_path / "fresh.whl", tmp_path / "stale.whl"
    for wheel, changed in ((fresh, None), (stale, board[0].name)):
        with zipfile.ZipFile(wheel, "w") as archive:
            for path in board:
                text = path.read_bytes() + (b"# old\n" if path.name == changed else b"")
                archive.writestr(f"semdefect/board/{path.name}", text)
    assert stale_files(fresh) == []
    assert stale_files(stale) == [f"semdefect/board/{board[0].name}"]
