"""Build the board's one file (make board-package): a wheel of the board runtime, `semdefect.board`, alone.

Its dependencies are the exact pins of requirements-edge.txt, so a board installs what the emulated check
(tools/board_check.py) ran, and nothing of the workstation stack; the LiteRT interpreter is the optional extra
`tflite` (a board's BSP normally brings its own, built against its NPU delegates). Pure Python: one wheel for
CPython 3.11 to 3.13 on any architecture. The console commands `semdefect-infer` and `semdefect-board-bench` come
with it.

The wheel holds `semdefect/board/` without `semdefect/__init__.py` (the board runtime imports nothing outside itself),
so `semdefect` is a namespace package there: it does not clash with a full `pip install .` of the repository.

usage: python tools/board_package.py [--out models]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "semdefect-board"
# The LiteRT interpreter for .tflite models, for a board or an emulated userland without the BSP's own
# (requirements.txt pins the same version for the workstation; a test keeps the two equal).
TFLITE_PIN = "ai-edge-litert==2.3.0"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "semdefect's board runtime: classify SEM images with a semdefect model (no config, no training stack)"
requires-python = ">=3.11,<3.14"
dependencies = {dependencies}

[project.optional-dependencies]
tflite = ["{tflite}"]

[project.scripts]
semdefect-infer = "semdefect.board.infer:main"
semdefect-board-bench = "semdefect.board.bench:main"

[tool.setuptools]
packages = ["semdefect.board"]
"""


def read_pins(path: Path) -> list[str]:
    """The `name==version` lines of a requirements file, comments dropped; anything looser is refused, since the
    board must get exactly what was checked."""
    pins = []
    for line in path.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        if not re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", requirement):
            raise ValueError(f"{path}: {requirement!r} is not an exact pin (name==version)")
        pins.append(requirement)
    if not pins:
        raise ValueError(f"{path}: no pins")
    return pins


def read_version(init: Path) -> str:
    """semdefect's `__version__`, read from the file rather than imported (the builder needs nothing installed)."""
    found = re.search(r'^__version__ = "([^"]+)"', init.read_text(encoding="utf-8"), re.MULTILINE)
    if not found:
        raise ValueError(f"{init}: no __version__ line")
    return found.group(1)


def pyproject_text(version: str, pins: list[str]) -> str:
    dependencies = "[" + ", ".join(f'"{pin}"' for pin in pins) + "]"
    return PYPROJECT.format(name=NAME, version=version, dependencies=dependencies, tflite=TFLITE_PIN)


def build(out: Path) -> Path:
    """Stage semdefect/board/ with its own pyproject.toml in a temporary folder, let pip build the wheel there (the
    checkout stays untouched), and put it in `out` in place of any older board wheel. Returns its path."""
    version = read_version(ROOT / "semdefect" / "__init__.py")
    pins = read_pins(ROOT / "requirements-edge.txt")
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        shutil.copytree(ROOT / "semdefect" / "board", stage / "semdefect" / "board",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (stage / "pyproject.toml").write_text(pyproject_text(version, pins), encoding="utf-8")
        built = Path(tmp) / "wheel"
        # Build isolation fetches the setuptools named above: the venv's own may be older or, from 3.12, absent.
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(built),
                        str(stage)], check=True)
        (wheel,) = built.glob("*.whl")
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob(f"{NAME.replace('-', '_')}-*.whl"):
            old.unlink()  # one board wheel in the folder, so `scp models/semdefect_board-*.whl` copies one file
        target = out / wheel.name
        shutil.move(wheel, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models", help="folder for the wheel (default models/)")
    args = parser.parse_args(argv)
    try:
        wheel = build(args.out)
    except (ValueError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"board package: {wheel}\n  copy it and a model to the board, then: pip install {wheel.name}; "
          "semdefect-infer --model MODEL IMAGES...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
