"""The emulated board check (make board-check): the board package on an aarch64 Debian must classify like x86.

From a fresh clone, as root on Debian: installs qemu-user-static and mmdebstrap if missing, unpacks an aarch64 Debian
userland (nothing aarch64 runs to build it), downloads the aarch64 wheels of the board package's pins from PyPI,
installs exactly the wheel of `make board-package` into it (with its tflite extra; a dry run resolves it for Python
3.12 and 3.13 too), trains a small model on dataset_sample/ (FP32 and INT8 ONNX, INT8 TFLite), then runs the board
command on the test images plus an empty .png under qemu (Cortex-A53, the i.MX 8M Plus core) and with the workstation
venv on x86, and compares: same rows, labels, decisions, errors and exit codes, probabilities within 1e-4 (INT8
ONNX: within 0.05, see MODELS); and no workstation module loaded on the board side.

Exit 0 when all agree, 1 when a comparison fails, 2 when the set-up fails (nothing is ever skipped). Emulated
timings say nothing about a board: only the check's own time is printed. The userland and the wheels are cached
under models/board-check/, so a second run is faster.

usage: python tools/board_check.py [--package WHEEL] [--cache models/board-check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"  # Debian 12: Python 3.11, the oldest the board package supports
CPU = "cortex-a53"  # the i.MX 8M Plus core: no int8 dot product, the least the board runtime may rely on
TOLERANCE = 1e-4
# Distributions of the workstation stack that must not be installed with the board package.
WORKSTATION_DISTS = {"tensorflow", "tensorflow-cpu", "keras", "scikit-learn", "onnx", "pyyaml", "tf2onnx"}
# aarch64 wheels carry one of these tags; pip matches a manylinux_2_x tag exactly, so each one needed is named.
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
PYTHONS = ("3.11", "3.12", "3.13")  # what the board package supports (NXP's Yocto BSP ships 3.12)
# The models compared, made by make_models() in the model folder: one line each.
# How closely the board must follow x86, per file: (label, file, probability tolerance, how many of the top 3 must
# match in order). FP32 and the TFLite file (LiteRT's integer kernels give the same numbers on both) to 1e-4 with the
# same top 3. INT8 ONNX to INT8_TOLERANCE with the same top class: onnxruntime's int8 kernels round differently on
# Arm and on x86, and over the 16 blocks of the pretrained default the differences add up (0.028 at most on the 30
# test images, measured), enough to swap a close second and third place, never the answer or the decision there.
INT8_TOLERANCE = 0.05
MODELS = (
    ("FP32 ONNX", "sem_cnn.onnx", TOLERANCE, 3),
    ("INT8 ONNX", "sem_cnn.int8.onnx", INT8_TOLERANCE, 1),
    ("INT8 TFLite", "sem_cnn.int8.tflite", TOLERANCE, 3),
)


class SetupError(Exception):
    """A step before the comparison failed: the check cannot say anything, and exits 2."""


def log(message: str, start: float) -> None:
    print(f"[{time.monotonic() - start:6.1f} s] {message}", flush=True)


def run(command: Sequence[str | Path], logfile: Path, ok_codes: Sequence[int] = (0,), **kwargs: Any) -> int:
    """Run a set-up command with its output in `logfile` (shown when it fails); a code outside `ok_codes` is a
    SetupError."""
    with open(logfile, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(map(str, command))}\n")
        out.flush()
        code = subprocess.run([str(part) for part in command], stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, **kwargs).returncode
    if code not in ok_codes:
        tail = "".join(logfile.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
        raise SetupError(f"{Path(str(command[0])).name} exited {code} (log: {logfile}):\n{tail}")
    return code


def stale_files(package: Path) -> list[str]:
    """The board runtime's files whose copy in the wheel differs from the checkout's (or is missing): the x86 side
    runs the checkout, so the two must be the same code."""
    with zipfile.ZipFile(package) as wheel:
        packed = {name: wheel.read(name) for name in wheel.namelist() if name.startswith("semdefect/board/")}
    checkout = {f"semdefect/board/{path.name}": path.read_bytes()
                for path in sorted((ROOT / "semdefect" / "board").glob("*.py"))}
    return sorted(name for name in packed.keys() | checkout.keys() if packed.get(name) != checkout.get(name))


def ensure_tools(logfile: Path) -> None:
    """qemu-user-static and mmdebstrap from Debian's archive, when missing (root only)."""
    if shutil.which("qemu-aarch64-static") and shutil.which("mmdebstrap"):
        return
    if os.geteuid() != 0:
        raise SetupError("qemu-user-static and mmdebstrap are missing and installing them needs root")
    run(["apt-get", "-q", "update"], logfile)
    run(["apt-get", "-q", "install", "-y", "--no-install-recommends", "qemu-user-static", "mmdebstrap"], logfile,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def fake_cpuinfo(cpus: int) -> str:
    """An ARM /proc/cpuinfo, one Cortex-A53 entry per host CPU: bookworm's qemu passes the host's x86 one through,
    and onnxruntime's CPU detection crashes on it (trixie's qemu fakes one itself; this one wins either way)."""
    entry = ("processor\t: {i}\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd03\n"
             "CPU revision\t: 4\n\n")
    return "".join(entry.format(i=i) for i in range(cpus))


def build_rootfs(cache: Path, logfile: Path) -> Path:
    """An aarch64 Debian userland with python3, unpacked only (no chroot, no binfmt_misc), kept for the next run."""
    rootfs = cache / f"rootfs-{SUITE}-arm64"
    done = rootfs.with_suffix(".done")
    if not done.exists():
        shutil.rmtree(rootfs, ignore_errors=True)  # a half-built one from an interrupted run
        run(["mmdebstrap", "--variant=extract", "--mode=root", "--architectures=arm64",
             "--include=python3,libstdc++6,libgcc-s1", SUITE, rootfs], logfile)
        done.touch()
    # The extract variant may leave out the merged-/usr links; without /lib the dynamic loader is not found.
    for name in ("bin", "sbin", "lib"):
        if not (rootfs / name).exists():
            (rootfs / name).symlink_to(f"usr/{name}")
    # qemu looks up paths under -L first, so this file stands in for /proc/cpuinfo; the rest of /proc and /sys
    # (onnxruntime reads /sys/devices/system/cpu) fall through to the host's.
    (rootfs / "proc").mkdir(exist_ok=True)
    (rootfs / "proc" / "cpuinfo").write_text(fake_cpuinfo(os.cpu_count() or 1), encoding="utf-8")
    if not (rootfs / "usr" / "bin" / "python3").exists():
        raise SetupError(f"{rootfs}: no usr/bin/python3 after mmdebstrap")
    return rootfs


def python_version(rootfs: Path) -> str:
    """The userland's Python as major.minor, from where its python3 link points (python3 -> python3.11)."""
    target = os.readlink(rootfs / "usr" / "bin" / "python3")
    version = Path(target).name.removeprefix("python")
    if not version.replace(".", "").isdigit():
        raise SetupError(f"{rootfs}/usr/bin/python3 -> {target}: cannot tell its version")
    return version


def install_package(package: Path, python: str, cache: Path, site: Path, logfile: Path) -> None:
    """The board wheel and the aarch64 wheels of its pins (with the tflite extra), installed into `site` by the host's
    pip, as pip on the board would (same resolution, same files); the downloads are kept for the next run."""
    wheels = cache / f"wheels-cp{python.replace('.', '')}-aarch64"
    target = [f"--python-version={python}", "--implementation=cp", "--only-binary=:all:"]
    target += [f"--platform={platform}" for platform in PLATFORMS]
    requirement = f"{package}[tflite]"
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "download", "--quiet", *target, "--dest", wheels, requirement], logfile)
    shutil.rmtree(site, ignore_errors=True)
    run([*pip, "install", "--quiet", *target, "--no-index", "--find-links", wheels, "--target", site, requirement],
        logfile)
    installed = {entry.name.split("-")[0].lower().replace("_", "-") for entry in site.glob("*.dist-info")}
    workstation = sorted(installed & WORKSTATION_DISTS)
    if workstation:
        raise SetupError(f"the board package pulled in workstation packages: {', '.join(workstation)}")
    if not (site / "bin" / "semdefect-infer").is_file():
        raise SetupError(f"{site}: the board package installed no semdefect-infer command")


def check_resolves(package: Path, python: str, logfile: Path) -> None:
    """The board package and its pins must resolve to aarch64 wheels for the supported Pythons the userland does not
    run too (a dry run: metadata only), so that a pin without a wheel for one of them fails here, not on a board."""
    for other in PYTHONS:
        if other != python:
            run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--target",
                 logfile.parent / f"dry-run-{other}", f"--python-version={other}", "--implementation=cp",
                 "--only-binary=:all:", *[f"--platform={platform}" for platform in PLATFORMS], f"{package}[tflite]"],
                logfile)


def make_models(out: Path, logfile: Path) -> None:
    """A small model trained on dataset_sample/ and exported by the project's own stages. Ten epochs without
    augmentation: what is compared is the runtime, not the accuracy, but a model that gives every image the same
    class would compare little."""
    overrides = ["train.epochs=10", "train.augment=false", "train.tensorboard=false",
                 f"train.output={out / 'sem_cnn.keras'}", f"export.output={out / 'sem_cnn.onnx'}",
                 f"quantize.output={out / 'sem_cnn.int8.onnx'}", f"tflite.output={out / 'sem_cnn.int8.tflite'}"]
    python = [sys.executable]  # from the checkout: the stage scripts import the repository's package
    run([*python, "train_model.py", *overrides], logfile, cwd=ROOT)
    run([*python, "export_onnx.py", *overrides], logfile, cwd=ROOT)
    # Exit 1 is an INT8 accuracy budget missed by a small model on 30 images; the files are written either way.
    run([*python, "quantize_onnx.py", *overrides], logfile, ok_codes=(0, 1), cwd=ROOT)
    run([*python, "export_tflite.py", *overrides], logfile, ok_codes=(0, 1), cwd=ROOT)
    for _, name, _, _ in MODELS:
        if not (out / name).is_file():
            raise SetupError(f"{out / name} was not written (log: {logfile})")


def compare_rows(reference: list[dict[str, Any]], board: list[dict[str, Any]],
                 tolerance: float = TOLERANCE, ranks: int = 3) -> tuple[list[str], float]:
    """What differs between the workstation's rows and the board's (nothing: they agree), and the largest difference
    of a probability or score. Labels, the first `ranks` of the top 3 in order, status, error text and decision must
    be equal; numbers may differ by `tolerance` (another CPU's kernels)."""
    problems: list[str] = []
    largest = 0.0
    if len(reference) != len(board):
        return [f"{len(reference)} rows on x86, {len(board)} on the board (log: board-check.log)"], largest
    for ref, got in zip(reference, board):
        where = ref["path"]
        for key in ("path", "status", "error", "label", "decision"):
            if ref[key] != got[key]:
                problems.append(f"{where}: {key} {ref[key]!r} on x86, {got[key]!r} on the board")
        ref_top = (ref["top3"] or [])[:ranks]
        got_top = (got["top3"] or [])[:ranks]
        if [t["label"] for t in ref_top] != [t["label"] for t in got_top]:
            problems.append(f"{where}: top-{ranks} {[t['label'] for t in ref_top]} on x86, "
                            f"{[t['label'] for t in got_top]} on the board")
            continue
        pairs = [(ref["confidence"], got["confidence"]), (ref["score"], got["score"])]
        pairs += [(r["confidence"], g["confidence"]) for r, g in zip(ref_top, got_top)]
        for name, (a, b) in zip(["confidence", "score"] + ["top3"] * len(ref_top), pairs):
            if (a is None) != (b is None):
                problems.append(f"{where}: {name} {a} on x86, {b} on the board")
            elif a is not None:
                largest = max(largest, abs(a - b))
                if abs(a - b) > tolerance:
                    problems.append(f"{where}: {name} {a:.6f} on x86, {b:.6f} on the board")
    return problems, largest


def infer_command(model: Path, output: Path, images: Sequence[Path]) -> list[str]:
    return ["--model", str(model), "--output", str(output), *map(str, images)]


def check_model(label: str, model: Path, images: Sequence[Path], expected_rows: int, rootfs: Path, site: Path,
                work: Path, logfile: Path, tolerance: float = TOLERANCE,
                ranks: int = 3) -> tuple[list[str], float, list[dict[str, Any]]]:
    """One model on both sides: the workstation venv on x86, the installed board package under qemu."""
    driver = ROOT / "tools" / "board_run.py"
    stem = model.name.replace(".", "_")
    x86_rows, arm_rows = work / f"{stem}.x86.json", work / f"{stem}.arm64.json"
    x86_report, arm_report = work / f"{stem}.x86.report.json", work / f"{stem}.arm64.report.json"
    # -P and a working folder outside the checkout: the board side must import the installed package, not the
    # repository's copy.
    run([sys.executable, "-P", driver, x86_report, "--", *infer_command(model, x86_rows, images)], logfile,
        ok_codes=(0, 1), cwd=work, env={**os.environ, "PYTHONPATH": str(ROOT)})
    # The guest gets a clean environment: the host's (OPENBLAS_CORETYPE for an x86 core, say) means nothing there.
    guest_env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "PYTHONPATH": str(site),
                 "PYTHONNOUSERSITE": "1"}
    run(["qemu-aarch64-static", "-cpu", CPU, "-L", rootfs, rootfs / "usr" / "bin" / "python3", "-P", driver,
         arm_report, "--script", site / "bin" / "semdefect-infer", "--",
         *infer_command(model, arm_rows, images)], logfile, ok_codes=(0, 1), cwd=work, env=guest_env)
    for path in (x86_report, arm_report):  # board_run.py writes its report whatever the command did
        if not path.is_file():
            raise SetupError(f"{label}: {path} was not written (log: {logfile})")
    x86_run = json.loads(x86_report.read_text(encoding="utf-8"))
    arm_run = json.loads(arm_report.read_text(encoding="utf-8"))
    # No rows at all (a model the board command refuses, exit 2) compares as no rows, with the exit codes below.
    reference = json.loads(x86_rows.read_text(encoding="utf-8")) if x86_rows.is_file() else []
    board = json.loads(arm_rows.read_text(encoding="utf-8")) if arm_rows.is_file() else []

    problems, largest = compare_rows(reference, board, tolerance, ranks)
    # The check means something only if x86 saw every image, classified some and failed on the bad file.
    errors = [row for row in reference if row["status"] == "error"]
    if len(reference) != expected_rows or len(errors) != 1 or x86_run["exit_code"] != 1:
        problems.append(f"x86: {len(reference)} rows ({expected_rows} expected), {len(errors)} error row(s) "
                        f"(1 expected), exit {x86_run['exit_code']} (1 expected)")
    if len({row["label"] for row in reference if row["status"] == "ok"}) < 2:
        problems.append("x86: every image got the same class: too weak a model to compare labels with")
    if arm_run["exit_code"] != x86_run["exit_code"]:
        problems.append(f"exit code {x86_run['exit_code']} on x86, {arm_run['exit_code']} on the board")
    if arm_run["workstation_modules"]:
        problems.append(f"the board command loaded {', '.join(arm_run['workstation_modules'])}")
    if not arm_run["board_file"].startswith(str(site)):
        problems.append(f"the board side ran {arm_run['board_file']}, not the installed package in {site}")
    return [f"{label}: {problem}" for problem in problems], largest, reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, help="the board wheel (default: the one in models/, from "
                        "make board-package)")
    parser.add_argument("--cache", type=Path, default=ROOT / "models" / "board-check",
                        help="folder for the userland, the wheels and this run's files (default models/board-check)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    cache = args.cache.resolve()
    work = cache / "run"  # this run's model, installed package, outputs and log: made afresh each time
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logfile = work / "board-check.log"
    try:
        packages = [args.package] if args.package else sorted((ROOT / "models").glob("semdefect_board-*.whl"))
        if len(packages) != 1 or not packages[0].is_file():
            raise SetupError(f"need exactly one board wheel (make board-package), found {len(packages)}")
        package = packages[0].resolve()
        stale = stale_files(package)
        if stale:
            raise SetupError(f"{package.name} is not the checkout's board runtime ({', '.join(stale)} differ): "
                             "make board-package")
        ensure_tools(logfile)
        log("qemu-user-static and mmdebstrap present", start)
        rootfs = build_rootfs(cache, logfile)
        python = python_version(rootfs)
        log(f"aarch64 Debian {SUITE} userland with Python {python}: {rootfs}", start)
        site = work / "site"
        install_package(package, python, cache, site, logfile)
        log(f"installed {package.name} [tflite] with its pinned aarch64 wheels into {site}", start)
        check_resolves(package, python, logfile)
        log(f"its pins have aarch64 wheels for Python {', '.join(PYTHONS)}", start)
        model_dir = work / "model"
        make_models(model_dir, logfile)
        log(f"trained and exported a small model: {model_dir}", start)
        bad = work / "bad" / "empty.png"
        bad.parent.mkdir()
        bad.touch()
        test = ROOT / "dataset_sample" / "test"
        expected_rows = sum(1 for path in test.rglob("*") if path.is_file()) + 1
        failures: list[str] = []
        failed_models = 0
        for label, name, tolerance, ranks in MODELS:
            problems, largest, rows = check_model(label, model_dir / name, [test, bad], expected_rows, rootfs, site,
                                                  work, logfile, tolerance, ranks)
            failures += problems
            failed_models += bool(problems)
            classes = len({row["label"] for row in rows if row["status"] == "ok"})
            accepted = sum(row["decision"] == "accept" for row in rows)
            log(f"{label}: {len(rows)} rows ({classes} classes, {accepted} accepted, "
                f"{sum(row['status'] == 'error' for row in rows)} error): "
                f"{'the same on both' if not problems else f'{len(problems)} difference(s)'}; largest probability "
                f"difference {largest:.2e} (limit {tolerance:g})", start)
    except SetupError as exc:
        print(f"board check: set-up failed after {time.monotonic() - start:.0f} s: {exc}", file=sys.stderr)
        return 2
    for problem in failures:
        print(f"  {problem}", file=sys.stderr)
    verdict = "FAILED" if failures else "passed"
    print(f"board check {verdict} in {time.monotonic() - start:.0f} s (x86 vs emulated {CPU}, Python {python}; "
          f"files in {work})")
    # The models compared, in the plain "N passed, N failed" form that CI logs are read for.
    print(f"board-check: {len(MODELS) - failed_models} passed, {failed_models} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
