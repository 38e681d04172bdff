"""Run the board command in this process, then report what it loaded (tools/board_check.py runs this on both sides).

In-process so that `sys.modules` afterwards is exactly what the board command imported: none of the workstation
stack may be among it. With --script, the installed console script `semdefect-infer` is run (the board's own entry
point); without, `semdefect.board.infer.main`. Standard library only: it runs in the emulated aarch64 userland.

usage: python board_run.py REPORT.json [--script PATH] -- INFER_ARGS...
"""

from __future__ import annotations

import json
import runpy
import sys

WORKSTATION_MODULES = ("tensorflow", "keras", "sklearn", "onnx", "yaml", "tf2onnx")


def main(argv: list[str]) -> int:
    report, rest = argv[0], argv[1:]
    script = None
    if rest[0] == "--script":
        script, rest = rest[1], rest[2:]
    infer_args = rest[1:]  # after the "--"
    if script:
        sys.argv = [script, *infer_args]
        try:
            runpy.run_path(script, run_name="__main__")
            exit_code = 0
        except SystemExit as done:  # the console script ends with sys.exit(main())
            exit_code = done.code if isinstance(done.code, int) else 1
    else:
        from semdefect.board.infer import main as infer

        exit_code = infer(infer_args)
    import semdefect.board

    loaded = sorted(name for name in sys.modules if name.split(".")[0] in WORKSTATION_MODULES)
    with open(report, "w", encoding="utf-8") as file:
        json.dump({"exit_code": exit_code, "workstation_modules": loaded,
                   "board_file": semdefect.board.__file__, "python": sys.version.split()[0]}, file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
