"""Compile an INT8 TFLite file for the i.MX 93's Arm Ethos-U65 NPU with vela, and read what vela reports.

vela (PyPI `ethos-u-vela`, requirements-vela.txt) rewrites the graph: what the NPU can run becomes custom `ethos-u`
operators, anything else stays a TFLite operator for the Cortex-A. The settings are NXP's for the i.MX 93. vela's
latency is its own estimate from a performance model of the NPU, not a measurement on a board. Its operator
counts are of its own lowered operators (printed, not in its CSV), so the compiled file is also checked: the whole
model is on the NPU exactly when every operator left in it is `ethos-u`.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from semdefect.board.errors import ConfigError, ModelError

SYSTEM_CONFIG = "Ethos_U65_High_End"
# NXP's settings for the i.MX 93 (its Ethos-U65 with 256 MACs/cycle and 384 KB of dedicated SRAM); the three names
# are sections of the vela.ini that ships inside vela ("Arm/vela.ini")
VELA_SETTINGS = ["--config", "Arm/vela.ini", "--accelerator-config", "ethos-u65-256", "--system-config", SYSTEM_CONFIG,
                 "--memory-mode", "Dedicated_Sram_384KB"]
NPU_OPERATOR = "ethos-u"


def vela_command() -> str:
    """The vela executable of this environment (beside its Python), else on PATH."""
    beside = Path(sys.executable).parent / "vela"
    found = str(beside) if beside.is_file() else shutil.which("vela")
    if found is None:
        raise ConfigError("tflite.vela=true needs vela: pip install -r requirements-vela.txt")
    return found


def compile_for_ethos_u(model: Path, out_dir: Path) -> dict[str, Any]:
    """Run vela on `model` into `out_dir`: the compiled file, operators on the NPU and on the CPU, memory and the
    estimated latency."""
    vela = vela_command()
    out_dir.mkdir(parents=True, exist_ok=True)
    # vela writes into a scratch folder beside the output, moved into place when it has finished: never half a file
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".vela-") as scratch:
        done = subprocess.run([vela, str(model), *VELA_SETTINGS, "--output-dir", scratch],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no message"]
            raise ModelError(f"vela failed on {model} (exit {done.returncode}): {last[0]}")
        for written in Path(scratch).iterdir():
            os.replace(written, out_dir / written.name)
    counts = {kind: int(n) for kind, n in re.findall(r"^(CPU|NPU) operators = (\d+)", done.stdout, re.MULTILINE)}
    with open(out_dir / f"{model.stem}_summary_{SYSTEM_CONFIG}.csv", newline="") as handle:
        summary = next(csv.DictReader(handle))
    compiled = out_dir / f"{model.stem}_vela.tflite"
    left = operators_left(compiled)
    version = subprocess.run([vela, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"output": str(compiled), "vela_version": version, "settings": " ".join(VELA_SETTINGS[2:]),
            "npu_operators": counts.get("NPU"), "cpu_operators": counts.get("CPU"),
            "operators_left_for_cpu": sorted(set(left) - {NPU_OPERATOR}),
            "all_on_npu": bool(left) and set(left) == {NPU_OPERATOR},
            "latency_ms": 1e3 * float(summary["inference_time"]),
            "sram_kib": float(summary["sram_memory_used"]), "dram_kib": float(summary["dram_memory_used"]),
            "macs": int(float(summary["nn_macs"]))}


def operators_left(compiled: Path) -> list[str]:
    """The operator of every node of a vela output, by name (`ethos-u` for the NPU's, builtin names otherwise)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    builtin = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.read_model(str(compiled))
    names = [code.customCode.decode() if code.customCode else builtin.get(max(code.builtinCode,
                                                                              code.deprecatedBuiltinCode), "?")
             for code in model.operatorCodes]
    return [names[op.opcodeIndex] for graph in model.subgraphs for op in graph.operators]


def format_vela(report: dict[str, Any]) -> str:
    placement = ("every operator on the NPU" if report["all_on_npu"] else
                 f"operators left for the CPU: {', '.join(report['operators_left_for_cpu'])}")
    return (f"## i.MX 93 (Ethos-U65): vela {report['vela_version']}, {report['settings']}\n\n"
            f"`{report['output']}`: {placement} (vela: {report['npu_operators']} NPU, {report['cpu_operators']} CPU "
            f"operators); estimated latency {report['latency_ms']:.3f} ms (vela's performance model, not a board "
            f"measurement); SRAM {report['sram_kib']:.1f} KiB, DRAM {report['dram_kib']:.1f} KiB; "
            f"{report['macs'] / 1e6:.1f} M MACs.\n")
