"""Benchmark the Keras, FP32 ONNX and INT8 ONNX models of one training run, side by side.

    python benchmarks/bench_models.py [--keras M.keras] [--fp32 M.onnx] [--int8 M.int8.onnx] [--images DIR]
                                      [--test DIR] [--json OUT]

Measures, in one process and interleaved round by round so that machine noise hits every model alike:
latency at batch 1 (p50/p95) with 1 and 2 threads, throughput at batch 64, file size, cold start (load + first
inference), INT8/FP32 top-1 agreement on every image (and the accuracy drop on a labelled test folder), and the
folder pipeline of `infer_onnx.py` against the raw session on preloaded arrays. Absolute
times depend on the machine; the INT8/FP32 ratios are what to compare.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import SemdefectError

log = logging.getLogger(__name__)


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q) * 1000)


def interleaved(runners: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 10) -> dict[str, list[float]]:
    """Time each runner once per round, in turn; returns seconds per call by name."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def onnx_runner(path: Path, threads: int, batch: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    from semdefect.board.runtime import OnnxClassifier

    classifier = OnnxClassifier(path, threads=threads)
    return lambda: classifier.predict_scored(batch)


def keras_runner(path: Path, batch: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    from semdefect.training.model import KerasClassifier

    classifier = KerasClassifier(path)
    return lambda: classifier.predict_scored(batch)


def cold_start(kind: str, path: Path, image: np.ndarray) -> float:
    """Seconds from nothing loaded to the first probabilities, in a fresh process (imports included)."""
    import subprocess

    loader = ("from semdefect.training.model import KerasClassifier as C" if kind == "keras"
              else "from semdefect.board.runtime import OnnxClassifier as C")
    code = (f"import time; t=time.perf_counter(); import numpy as np; {loader}; c=C({str(path)!r}); "
            f"c.predict(np.zeros({(1, *image.shape)}, np.float32)); print(time.perf_counter()-t)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SemdefectError(f"cold start of {path} failed: {result.stderr.strip().splitlines()[-1]}")
    return float(result.stdout.strip().splitlines()[-1])


def folder_pipeline(path: Path, images: list[Path], arrays: np.ndarray, batch_size: int) -> dict[str, float]:
    """images/s of `inference.classify` on files (as infer_onnx.py runs it) against the model's session with
    default options on the same images preloaded (`arrays`)."""
    from semdefect.board.inference import classify
    from semdefect.board.runtime import OnnxClassifier

    classifier = OnnxClassifier(path)  # the raw session: default options
    for first in range(0, min(len(arrays), 4 * batch_size), batch_size):  # warm-up
        classifier.predict_scored(arrays[first:first + batch_size])
    start = time.perf_counter()
    for i in range(0, len(arrays), batch_size):
        classifier.predict_scored(arrays[i:i + batch_size])
    raw = len(arrays) / (time.perf_counter() - start)
    pipelined = OnnxClassifier(path, spin=False)  # as infer_onnx.py makes it
    start = time.perf_counter()
    rows = list(classify(pipelined, images, pipelined.threshold, batch_size))
    pipeline = len(rows) / (time.perf_counter() - start)
    return {"images": len(images), "raw_session_img_per_s": raw, "pipeline_img_per_s": pipeline,
            "ratio": pipeline / raw}


def profile_nodes(path: Path, image: np.ndarray, runs: int = 200) -> list[dict[str, Any]]:
    """Median time per graph node at batch 1 and one thread, from onnxruntime's profiler, slowest first."""
    import onnxruntime as ort

    from semdefect.board.runtime import session_options

    options = session_options(threads=1)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as scratch:
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image[None].astype(np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = (event["name"].removesuffix("_kernel_time"), event["args"].get("op_name", ""))
            per_node.setdefault(key, []).append(event["dur"])
    rows = [{"node": name, "op": op, "median_us": float(np.median(times))} for (name, op), times in per_node.items()]
    return sorted(rows, key=lambda row: -row["median_us"])


def format_profile(name: str, rows: list[dict[str, Any]], top: int = 8) -> str:
    total = sum(row["median_us"] for row in rows)
    lines = [f"{name}: {total:.0f} us in {len(rows)} nodes (median per node, batch 1, 1 thread); slowest:"]
    lines += [f"  {row['median_us']:7.1f} us  {row['op']:<16} {row['node']}" for row in rows[:top]]
    return "\n".join(lines)


def agreement(fp32: Path, int8: Path, x: np.ndarray, test_data: Path | None) -> dict[str, Any]:
    """INT8 against FP32: top-1 agreement over every image of `x`, and both accuracies on a labelled test folder."""
    from semdefect.board.review import decisions
    from semdefect.board.runtime import OnnxClassifier
    from semdefect.evaluation.scoring import load_eval_data, predict_probabilities, predict_scored

    f, q = OnnxClassifier(fp32), OnnxClassifier(int8)
    (p32, s32), (p8, s8) = predict_scored(f, x), predict_scored(q, x)
    same = p32.argmax(1) == p8.argmax(1)
    same_decision = np.equal(decisions(s32, f.threshold), decisions(s8, q.threshold))
    result = {"images": len(x), "top1_agreement": float(same.mean()),
              "decision_agreement": float(same_decision.mean())}
    if test_data is not None:
        test = load_eval_data(test_data, "test", f.class_names, f.prep)
        accuracy = {name: float(np.mean(predict_probabilities(c, test.x).argmax(1) == test.y))
                    for name, c in (("fp32", f), ("int8", q))}
        result.update(test_images=len(test.y), fp32_test_accuracy=accuracy["fp32"],
                      int8_test_accuracy=accuracy["int8"],
                      accuracy_drop_points=100 * (accuracy["fp32"] - accuracy["int8"]))
    return result


def has_review_head(path: Path) -> bool:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.output) > 1


def without_review_head(path: Path, target: Path) -> Path:
    """A copy of an ONNX model without its review head (the second output and every node only it needs), with the
    plain score in its metadata: what the review score costs is the difference in time."""
    import onnx

    from semdefect.board.review import REVIEW_KEY

    proto = onnx.load(str(path))
    del proto.graph.output[1:]
    needed = {proto.graph.output[0].name}
    kept = []
    for node in reversed(proto.graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(kept))
    for prop in proto.metadata_props:
        if prop.key == REVIEW_KEY:
            prop.value = prop.value.replace('"msp+agreement"', '"msp"')
    onnx.save(proto, str(target))
    return target


def benchmark(models: dict[str, Path], image_files: list[Path], rounds: int, pipeline_images: int,
              test_data: Path | None = None, profile: bool = False) -> dict[str, Any]:
    from semdefect.board.images import load_image
    from semdefect.board.runtime import OnnxClassifier

    prep = OnnxClassifier(next(p for k, p in models.items() if k != "keras")).prep
    images = np.stack([load_image(p, prep) for p in image_files])  # every image, read once
    pool = images[:64]
    batch64 = np.concatenate([pool] * (64 // len(pool) + 1))[:64]
    one = pool[:1]
    result: dict[str, Any] = {"rounds": rounds, "models": {}}
    for name, path in models.items():
        result["models"][name] = {"path": str(path), "size_mb": path.stat().st_size / 1e6}
    scratch = tempfile.TemporaryDirectory()
    bare = {f"{name}_no_review": without_review_head(path, Path(scratch.name) / f"{name}.onnx")
            for name, path in models.items() if name == "int8" and has_review_head(path)}
    result["models"] |= {name: {} for name in bare}
    for threads in (1, 2):
        runners = {name: onnx_runner(path, threads, one) for name, path in (models | bare).items() if name != "keras"}
        if "keras" in models and threads == 2:
            runners["keras"] = keras_runner(models["keras"], one)  # TensorFlow picks its own thread count
        times = interleaved(runners, rounds)
        for name, samples in times.items():
            key = "tf_default" if name == "keras" else f"{threads}t"
            result["models"][name][f"batch1_p50_ms_{key}"] = percentile_ms(samples, 50)
            result["models"][name][f"batch1_p95_ms_{key}"] = percentile_ms(samples, 95)
    runners = {name: onnx_runner(path, 0, batch64) for name, path in models.items() if name != "keras"}
    if "keras" in models:
        runners["keras"] = keras_runner(models["keras"], batch64)
    for name, samples in interleaved(runners, max(5, rounds // 10), warmup=3).items():
        result["models"][name]["batch64_img_per_s"] = 64 / float(np.median(samples))
    for name, path in models.items():
        result["models"][name]["cold_start_s"] = cold_start("keras" if name == "keras" else "onnx", path, one[0])
    if "fp32" in models and "int8" in models:
        f, q = result["models"]["fp32"], result["models"]["int8"]
        result["int8_over_fp32"] = {
            "size": q["size_mb"] / f["size_mb"],
            "batch1_p50_1t": q["batch1_p50_ms_1t"] / f["batch1_p50_ms_1t"],
            "batch1_p50_2t": q["batch1_p50_ms_2t"] / f["batch1_p50_ms_2t"],
            "batch64_throughput": q["batch64_img_per_s"] / f["batch64_img_per_s"],
        }
        result["agreement"] = agreement(models["fp32"], models["int8"], images, test_data)
    for name in bare:  # what the review head costs: the same INT8 model with it and without it, interleaved
        timed = result["models"].pop(name)
        result["review_head_cost"] = {key: result["models"]["int8"][key] / timed[key] - 1
                                      for key in ("batch1_p50_ms_1t", "batch1_p50_ms_2t")}
    scratch.cleanup()
    if profile:
        result["profile"] = {name: profile_nodes(path, one[0]) for name, path in models.items() if name != "keras"}
    if pipeline_images:
        repeats = pipeline_images // len(image_files) + 1
        files = (image_files * repeats)[:pipeline_images]
        arrays = np.concatenate([images] * repeats)[:pipeline_images]
        target = models.get("int8") or models["fp32"]  # the command refuses a run with neither
        result["folder_pipeline"] = folder_pipeline(target, files, arrays, batch_size=32)
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = ["| model | size MB | b1 p50 ms 1t | b1 p95 ms 1t | b1 p50 ms 2t | b1 p95 ms 2t | b64 img/s "
             "| cold start s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in result["models"].items():
        if name == "keras":
            lat = f"| - | - | {m['batch1_p50_ms_tf_default']:.2f} | {m['batch1_p95_ms_tf_default']:.2f} |"
        else:
            lat = (f"| {m['batch1_p50_ms_1t']:.3f} | {m['batch1_p95_ms_1t']:.3f} | {m['batch1_p50_ms_2t']:.3f} | "
                   f"{m['batch1_p95_ms_2t']:.3f} |")
        lines.append(f"| {name} | {m['size_mb']:.2f} {lat} {m['batch64_img_per_s']:.0f} | {m['cold_start_s']:.2f} |")
    if "int8_over_fp32" in result:
        r = result["int8_over_fp32"]
        lines += ["", f"INT8/FP32: size {r['size']:.2f}, batch-1 latency {r['batch1_p50_1t']:.2f} (1 thread) "
                      f"{r['batch1_p50_2t']:.2f} (2 threads), batch-64 throughput {r['batch64_throughput']:.2f}x"]
    if "agreement" in result:
        a = result["agreement"]
        line = f"INT8 top-1 agreement with FP32: {100 * a['top1_agreement']:.1f} % of {a['images']} images"
        if "accuracy_drop_points" in a:
            line += (f"; test accuracy FP32 {100 * a['fp32_test_accuracy']:.1f} %, "
                     f"INT8 {100 * a['int8_test_accuracy']:.1f} %"
                     f" (drop {a['accuracy_drop_points']:.1f} points, {a['test_images']} images)")
        lines.append(line)
    if "review_head_cost" in result:
        c = result["review_head_cost"]
        lines.append(f"The review head adds {100 * c['batch1_p50_ms_1t']:+.1f} % (1 thread) and "
                     f"{100 * c['batch1_p50_ms_2t']:+.1f} % (2 threads) to the INT8 batch-1 latency, against the same "
                     "model without it, timed interleaved")
    if "agreement" in result and "decision_agreement" in result["agreement"]:
        a = result["agreement"]
        lines.append(f"INT8 makes FP32's accept/review decision on {100 * a['decision_agreement']:.2f} % of "
                     f"{a['images']} images")
    if "folder_pipeline" in result:
        p = result["folder_pipeline"]
        lines.append(f"Folder pipeline: {p['pipeline_img_per_s']:.0f} img/s over {p['images']} files vs raw session "
                     f"{p['raw_session_img_per_s']:.0f} img/s on preloaded arrays: {p['ratio']:.2f}x")
    lines.append("Keras runs with TensorFlow's own thread choice (its latency is in the 2-thread columns).")
    for name, rows in result.get("profile", {}).items():
        lines += ["", format_profile(name, rows)]
    return "\n".join(lines)
