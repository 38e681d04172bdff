"""Export a trained .keras model to ONNX (opset 17, dynamic batch, semdefect metadata) and check it.

The check runs Keras and onnxruntime on the same preprocessed images of `export.parity_split` and compares
the probabilities: exit 1 if the largest difference is over `export.parity_atol`.

usage: python export_onnx.py [--model M.keras] [--output O.onnx] [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semdefect.cli import EXIT_CHECK_FAILED, print_summary, run_stage, setup_logging
from semdefect.config import add_config_arguments, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="the .keras model (default: train.output)")
    parser.add_argument("--output", type=Path, help="the ONNX file to write (default: export.output)")
    add_config_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after options
    setup_logging()

    def body() -> int:
        cfg = load_config(args.config, args.overrides)
        from semdefect.evaluation import load_classifier, load_eval_data, predict_probabilities
        from semdefect.export import compare_outputs, export_onnx
        from semdefect.model import KerasClassifier, model_facts

        ecfg = cfg["export"]
        keras_model = KerasClassifier(args.model or Path(cfg["train"]["output"]))
        output = args.output or Path(ecfg["output"])
        export_onnx(keras_model.model, model_facts(keras_model.class_names, keras_model.prep), output, ecfg["opset"])
        onnx_model = load_classifier(output)

        images = load_eval_data(Path(cfg["data"]["root"]), ecfg["parity_split"], keras_model.class_names,
                                keras_model.prep).x
        if ecfg["parity_images"]:
            images = images[: ecfg["parity_images"]]
        parity = compare_outputs(predict_probabilities(keras_model, images), predict_probabilities(onnx_model, images))
        ok = parity["max_abs_diff"] <= ecfg["parity_atol"]
        print(f"parity on {parity['images']} {ecfg['parity_split']} images: max |keras - onnx| = "
              f"{parity['max_abs_diff']:.2e} (limit {ecfg['parity_atol']:.0e}), top-1 agreement "
              f"{parity['top1_agreement']:.2%} - {'ok' if ok else 'FAILED'}")
        print(f"ONNX size {output.stat().st_size / 1e6:.2f} MB")
        print_summary("export_onnx.py wrote", {"onnx": output})
        return 0 if ok else EXIT_CHECK_FAILED

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
