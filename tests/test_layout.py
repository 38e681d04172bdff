"""The layout's promises: the board runtime stands alone, and the package installs and runs from any folder."""

import ast
import sys
from pathlib import Path

from conftest import ROOT

BOARD = ROOT / "semdefect" / "board"
BOARD_THIRD_PARTY = {"numpy", "PIL", "onnxruntime", "tqdm",  # requirements-edge.txt
                     "ai_edge_litert", "tflite_runtime"}  # a .tflite model's interpreter, PyPI's or the BSP's: optional


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(relative level, module) of every import statement in a file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def test_the_board_runtime_imports_nothing_outside_itself():
    outside = []
    for path in sorted(BOARD.glob("*.py")):
        for level, module in imported_modules(path):
            top = module.split(".")[0]
            if level > 1 or (level == 0 and top == "semdefect"):
                outside.append(f"{path.name}: {'.' * level}{module}")
            elif level == 0 and top not in sys.stdlib_module_names and top not in BOARD_THIRD_PARTY:
                outside.append(f"{path.name}: {module}")
    assert not outside


def test_the_board_requirements_are_the_packages_base_dependencies():
    import tomllib

    pins = {line.split("==")[0].lower() for line in (ROOT / "requirements-edge.txt").read_text().splitlines()
            if line and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {dep.split(">")[0].split("=")[0].split("<")[0].lower() for dep in project["dependencies"]}
    assert pins == base == {"onnxruntime", "numpy", "pillow", "tqdm"}


def test_every_command_script_is_a_thin_wrapper_of_a_package_command():
    for script in sorted(ROOT.glob("*.py")):
        tree = ast.parse(script.read_text(encoding="utf-8"))
        functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
        imports = [module for level, module in imported_modules(script) if module.startswith("semdefect.")]
        assert not functions and len(imports) == 1, script.name


def test_the_package_installs_and_classifies_with_the_board_runtime_alone(trained, tmp_path):
    """`pip install <repo>` in a clean environment outside the repository: the base install is the board runtime,
    with none of the workstation stack, and its command classifies images from any folder."""
    import shutil
    import subprocess

    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "models", "build", "*.egg-info",
                                                                "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(source)], capture_output=True,
                             text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    for workstation in ("tensorflow", "keras", "scikit-learn", "onnx==", "pyyaml"):
        assert workstation not in listed
    result = subprocess.run([str(venv / "bin" / "semdefect-infer"), "--model", str(trained["int8"]),
                             str(trained["data"] / "test"), "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "20 image(s) classified (" in result.stderr, result.stderr
