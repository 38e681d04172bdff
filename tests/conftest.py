"""Shared fixtures: a tiny synthetic dataset and one tiny trained model per test session.

Importing TensorFlow and training cost seconds on 2 cores, so the model is trained once (a true
subprocess run of train_model.py), exported and quantized once, and shared by every test that needs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT.parent / "shared" / "data" / "sem-public"
TINY_SIZE = 64  # input side of the shared test model: the real architecture, 4x fewer pixels
# Tests of a study's bookkeeping (which runs, rows, folds, files) train many models whose backbone does not matter:
# the small CNN trains in a fraction of the pretrained backbone's time. The default itself is tested by `trained`.
SMALL_CNN = ["model.backbone=cnn", "model.pretrained=false"]

sys.path.insert(0, str(ROOT))


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a stage script as a user would, in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """A bad input is reported as one 'error:' line naming what is wrong, never a traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """10 classes x 10 synthetic images (6/2/2) at the tiny size, made by the project's own generator."""
    from semdefect.synth import generate_dataset

    root = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(root, per_class=10, size=TINY_SIZE, seed=7, split=(60, 20, 20), difficulty=0.3)
    return root


def tiny_overrides(data: Path, out: Path) -> list[str]:
    return [f"data.root={data}", f"data.image_size={TINY_SIZE}", "train.epochs=1", "train.tensorboard=false",
            f"train.output={out / 'sem_cnn.keras'}", f"export.output={out / 'sem_cnn.onnx'}",
            f"quantize.output={out / 'sem_cnn.int8.onnx'}", f"evaluate.out={out / 'eval'}"]


@pytest.fixture(scope="session")
def trained(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    """One tiny model through train (subprocess), export and quantize: paths by role."""
    import export_onnx
    import quantize_onnx

    out = tmp_path_factory.mktemp("models")
    overrides = tiny_overrides(tiny_dataset, out)
    result = run_script("train_model.py", *overrides)
    assert result.returncode == 0, result.stderr
    assert export_onnx.main(overrides) == 0
    # One epoch on 60 images: the INT8 budget may be missed (exit 1); the model is written either way.
    assert quantize_onnx.main(overrides) in (0, 1)
    return {"data": tiny_dataset, "out": out, "overrides": overrides, "keras": out / "sem_cnn.keras",
            "onnx": out / "sem_cnn.onnx", "int8": out / "sem_cnn.int8.onnx"}


def real_images(limit: int | None = None) -> list[Path]:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real SEM images not found at {REAL_DATA} (third-party data, not in the repo)")
    files = sorted(p for p in REAL_DATA.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return files[:limit] if limit else files


def pytest_collection_modifyitems(items):
    """A test that needs the session's trained model is slow (its first use trains, exports and quantizes one)."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
