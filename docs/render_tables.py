"""Render the measured-figure tables of README.md and docs/*.md from the JSON records in docs/.

Why: every measured figure is kept once, in docs/results/*.json (in the formats the tools write: crosscheck.json,
bench.json, metrics.json, the duplicate benchmark's JSON) and in docs/experiments.json (one object per experiment
tried). The pages show those figures as tables; rendering the tables from the JSON keeps page and record from
drifting apart, and `--check` lets a test prove that they have not.

A table is the block between `<!-- table: NAME -->` and `<!-- /table -->`; NAME is a results file
(`results/crosscheck_*.json`, `results/bench_*.json`: the table the tool prints) or one of the tables in TABLES
below. Standard library only.

usage: python docs/render_tables.py [--check]     (--check: rewrite nothing, exit 1 naming every stale block)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RESULTS = DOCS / "results"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
FORMATS = {"keras": "Keras", "fp32": "FP32 ONNX", "int8": "INT8 ONNX"}
Record = dict[str, Any]  # one JSON object


def load(name: str) -> Record:
    data: Record = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def experiments(table: str | None = None) -> list[Record]:
    """The records of docs/experiments.json, in file order; only those shown in `table` if given."""
    records: list[Record] = json.loads((DOCS / "experiments.json").read_text(encoding="utf-8"))
    return [r for r in records if table is None or r.get("table") == table]


def markdown(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; a column whose cells all start with a number (or are "-") is right-aligned.
    A `|` inside a cell is escaped."""
    cells = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
    numeric = [all(re.match(r"-?\d|-?$", row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if n else "---|" for n in numeric)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def short(value: float) -> str:
    """A recorded number as written in the record: no float noise, no digits the record does not have."""
    return f"{round(value, 6):g}"


def pct(fraction: float) -> str:
    return short(100 * fraction)


def code(option: str) -> str:
    """An option in code type when it is something to type (a flag or a key=value), else as written."""
    return f"`{option}`" if re.match(r"--|[a-z_]+\.[a-z_]+=", option) else option


def seeds_text(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


# -- results files -----------------------------------------------------------------------------------------------
def crosscheck_table(data: Record) -> str:
    """The table `crosscheck.py` writes: one row per protocol row, recall per shared class."""
    # the classes any row reports a recall for (earlier protocols: one shared list)
    classes = data.get("shared_classes") or [c for c in data["rows"][0]["recall_per_class"]]
    review = any("coverage_mean" in r for r in data["rows"])  # runs made with a review bin report what it gives

    def selective(r: Record) -> list[str]:
        accepted = r.get("accuracy_accepted_mean")
        return [f"{100 * r['coverage_mean']:.1f} %", "-" if accepted is None else f"{100 * accepted:.1f} %"] \
            if review else []

    rows = [[r["name"], r["test_images"], f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} %",
             f"{r['f1_macro_mean']:.3f}", *selective(r),
             *(f"{r['recall_per_class'][c]:.2f}" if c in r["recall_per_class"] else "-" for c in classes)]
            for r in data["rows"]]
    text = markdown(["train -> test", "test images", "accuracy", "macro F1",
                     *(["coverage", "accuracy on accepted"] if review else []), *classes], rows)
    by_source = data["rows"][0].get("per_source")  # protocols from the three-sources issue on
    if by_source:
        text += "\nAll sources -> test split, by source: " + ", ".join(
            f"{name} {100 * v['accuracy_mean']:.1f} ± {100 * v['accuracy_std']:.1f} % ({v['images']} images)"
            for name, v in by_source.items()) + "."
    text += f"\nMean leave-one-source-out accuracy: {100 * data['mean_leave_one_source_out_accuracy']:.1f} %"
    text += "".join(f"; with {k} labelled images per class of the held-out source: {100 * a:.1f} %"
                    for k, a in data["mean_few_shot_accuracy"].items())
    text += ". Seeds " + ", ".join(map(str, data["seeds"])) + "; per-class columns are recall.\n"
    if data.get("adapt_rows"):  # the leave-one-source-out models adapted with adapt_model.py
        kept = any(r.get("own_source_accuracy") is not None for r in data["adapt_rows"])
        adapted = [[r["name"], r["test_images"], f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} %",
                    f"{r['f1_macro_mean']:.3f}", *selective(r),
                    *([f"{100 * r['own_source_accuracy_before']:.1f} -> {100 * r['own_source_accuracy']:.1f} %"]
                      if kept else [])]
                   for r in data["adapt_rows"]]
        text += "\n" + markdown(["adapted -> test", "test images", "accuracy", "macro F1",
                                 *(["coverage", "accuracy on accepted"] if review else []),
                                 *(["own source: before -> after"] if kept else [])], adapted)
        text += "\nMean over the held-out sources: " + ", ".join(
            f"{name}: {100 * a:.1f} %" for name, a in data["mean_adapt_accuracy"].items()) + ".\n"
    return text


def openset_table(data: Record) -> str:
    """The table `crosscheck.py crosscheck.leave_out=classes` (make openset) writes: one row per class left out, the
    .keras model's figures, then its INT8 ONNX export's."""
    rows = [[r["unknown_class"], r["unknown_images"], f"{100 * r['accuracy_mean']:.1f} %",
             f"{r['auroc_mean']:.3f} ± {r['auroc_std']:.3f}", f"{100 * r['unknown_to_review_mean']:.1f} %",
             f"{100 * r['known_accepted_mean']:.1f} %", f"{100 * r['int8_accuracy_mean']:.1f} %",
             f"{r['int8_auroc_mean']:.3f}", f"{100 * r['int8_unknown_to_review_mean']:.1f} %",
             f"{100 * r['int8_known_accepted_mean']:.1f} %"] for r in data["rows"]]
    header = ["left out", "unknown images", "known accuracy", "AUROC", "unknown to review", "known accepted"]
    text = markdown(header + [f"INT8: {h}" for h in header[2:]], rows) + "\n"
    for prefix, model in (("", ".keras"), ("fp32_", "FP32 ONNX"), ("int8_", "INT8 ONNX")):
        text += (f"Mean over the classes, {model}: AUROC {data[f'mean_{prefix}auroc']:.3f}, unknown to review "
                 f"{100 * data[f'mean_{prefix}unknown_to_review']:.1f} %, known accepted "
                 f"{100 * data[f'mean_{prefix}known_accepted']:.1f} %.\n")
    return text + "Seeds " + ", ".join(map(str, data["seeds"])) + ".\n"


def bench_table(data: Record) -> str:
    """The table `benchmarks/bench_models.py` prints, then the INT8/FP32 lines the record holds."""
    rows = []
    for name, m in data["models"].items():
        if name == "keras":
            latency = ["-", "-", f"{m['batch1_p50_ms_tf_default']:.2f}", f"{m['batch1_p95_ms_tf_default']:.2f}"]
        else:
            latency = [f"{m[f'batch1_{q}_ms_{t}']:.3f}" for t in ("1t", "2t") for q in ("p50", "p95")]
        rows.append([name, f"{m['size_mb']:.2f}", *latency, f"{m['batch64_img_per_s']:.0f}",
                     f"{m['cold_start_s']:.2f}"])
    text = markdown(["model", "size MB", "b1 p50 ms 1t", "b1 p95 ms 1t", "b1 p50 ms 2t", "b1 p95 ms 2t", "b64 img/s",
                     "cold start s"], rows)
    notes = []
    if "int8_over_fp32" in data:
        r = data["int8_over_fp32"]
        notes.append(f"INT8/FP32: size {r['size']:.2f}x; batch-1 latency {r['batch1_p50_1t']:.2f} (1 thread), "
                     f"{r['batch1_p50_2t']:.2f} (2 threads); batch-64 throughput {r['batch64_throughput']:.2f}x.")
    if "agreement" in data:
        a = data["agreement"]
        notes.append(f"INT8 top-1 agreement with FP32: {100 * a['top1_agreement']:.2f} % of {a['images']:,} images; "
                     f"test accuracy FP32 {100 * a['fp32_test_accuracy']:.1f} %, "
                     f"INT8 {100 * a['int8_test_accuracy']:.1f} % "
                     f"(drop {a['accuracy_drop_points']:.1f} points, {a['test_images']} images).")
        if "decision_agreement" in a:
            notes.append(f"INT8 makes FP32's accept/review decision on {100 * a['decision_agreement']:.2f} % of "
                         f"{a['images']:,} images.")
    if "review_head_cost" in data:
        c = data["review_head_cost"]
        notes.append(f"The review head adds {100 * c['batch1_p50_ms_1t']:.1f} % (1 thread) and "
                     f"{100 * c['batch1_p50_ms_2t']:.1f} % (2 threads) to the INT8 batch-1 latency: the same model "
                     "without it timed in the same loop.")
    if "folder_pipeline" in data:
        p = data["folder_pipeline"]
        notes.append(f"Folder pipeline: {p['pipeline_img_per_s']:,.0f} images/s over {p['images']:,} files, against "
                     f"{p['raw_session_img_per_s']:,.0f} for the raw session on preloaded arrays ({p['ratio']:.2f}x).")
    return text + ("\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else "")


def pipeline_table() -> str:
    """Every stage on sem-public with seed 42: accuracy, size and the stage's own check, per model file."""
    rows = []
    for m in load("pipeline_seed42")["models"]:
        accuracy = f"{100 * m['metrics']['accuracy']:.1f} %"
        if "f1_macro" in m["metrics"]:
            accuracy += f" (macro F1 {m['metrics']['f1_macro']:.3f})"
        rows.append([f"{m['model']}, {FORMATS[m['format']]}", accuracy, f"{m['size_mb']:.2f}", m["check"] or "-"])
    return markdown(["model", "test accuracy (194 images)", "size MB", "check"], rows)


def in_distribution_protocol(protocol: Record) -> str:
    row = next(r for r in protocol["rows"] if r["train_sources"] is None)
    return f"{100 * row['accuracy_mean']:.1f} ± {100 * row['accuracy_std']:.1f} %"


def results_summary() -> str:
    """README's one results table: each model file of the default as shipped (with its review bin), and the reference
    model. Seeds 1-3 of the default: results/review_default.json; unseen source: the protocol of make crosscheck."""
    bench = load("bench_review_bin")["models"]
    seeds = load("review_default")["runs"]
    rows = []
    for m in load("default_seed42")["models"]:
        b, s = bench[m["format"]], m["metrics"]["selective"]
        latency = (f"{b['batch1_p50_ms_tf_default']:.2f} ms (TensorFlow threads)" if m["format"] == "keras"
                   else f"{b['batch1_p50_ms_1t']:.3f} ms")
        unseen = load("crosscheck_default")["mean_leave_one_source_out_accuracy"] if m["format"] == "keras" else None
        rows.append([f"default, {FORMATS[m['format']]}", f"{100 * m['metrics']['accuracy']:.1f} %",
                     mean_sd([r["accuracy"] for r in seeds[m["format"]]]),
                     f"{100 * s['coverage']:.1f} % / {100 * s['accuracy_accepted']:.1f} %",
                     f"{100 * unseen:.1f} % *" if unseen is not None else "-", f"{m['size_mb']:.2f} MB", latency])
    reference = next(m for m in load("pipeline_seed42")["models"]
                     if m["model"] == "reference" and m["format"] == "keras")
    protocol = load("crosscheck_reference")
    rows.append(["reference, Keras", f"{100 * reference['metrics']['accuracy']:.1f} %",
                 in_distribution_protocol(protocol), "no review bin",
                 f"{100 * protocol['mean_leave_one_source_out_accuracy']:.1f} % *", f"{reference['size_mb']:.2f} MB",
                 "-"])
    return markdown(["model", "test accuracy, seed 42", "test accuracy, seeds 1-3",
                     "accepted / right of those, seed 42", "unseen source, seeds 1-3", "size", "batch-1 latency"], rows)


def results_sem_multi() -> str:
    """README's table of the default on sem-multi: each model file of one seed-1 run, and the protocol's
    leave-one-source-out mean over seeds 1-3 (results/default_sem_multi_seed1.json,
    results/crosscheck_sem_multi_seeds123.json)."""
    run = load("default_sem_multi_seed1")
    unseen = load("crosscheck_sem_multi_seeds123")["mean_leave_one_source_out_accuracy"]
    names = {**FORMATS, "tflite": "INT8 TFLite"}
    rows = []
    for m in run["models"]:
        s, sources = m["metrics"]["selective"], m["per_source_accuracy"]
        latency = run["latency_ms_1thread"].get(m["format"])
        rows.append([f"default, {names[m['format']]}", f"{100 * m['metrics']['accuracy']:.1f} %",
                     " / ".join(f"{100 * sources[k]:.1f}" for k in ("km", "av", "op")),
                     f"{100 * s['coverage']:.1f} % / {100 * s['accuracy_accepted']:.1f} %",
                     f"{100 * unseen:.1f} %" if m["format"] == "keras" else "-", f"{m['size_mb']:.2f} MB",
                     f"{latency:.2f} ms" if latency else "-"])
    return markdown(["model", "test accuracy, seed 1", "km / av / op", "accepted / right of those",
                     "unseen source, seeds 1-3", "size", "batch-1 latency"], rows)


def serving_sources() -> str:
    """The pretrained default against the two ways tried to serve every source, on the protocol (seed 1)."""
    variants = [("the default", "", "crosscheck_sem_multi_seed1"),
                ("RandConv on half the training images", "train.randconv=0.5", "crosscheck_sem_multi_randconv_seed1"),
                ("source-balanced sampling", "train.balance=sources", "crosscheck_sem_multi_balance_seed1")]
    rows = []
    for name, option, results in variants:
        data = load(results)
        first, held_out = data["rows"][0], data["rows"][1:]
        sources = first["per_source"]
        rows.append([f"{name} ({code(option)})" if option else name, f"{100 * first['accuracy_mean']:.1f} %",
                     " / ".join(f"{100 * sources[k]['accuracy_mean']:.1f}" for k in ("km", "av", "op")),
                     *(f"{100 * next(r['accuracy_mean'] for r in held_out if r['test_sources'] == [k]):.1f} %"
                       for k in ("km", "av", "op")),
                     f"{100 * data['mean_leave_one_source_out_accuracy']:.1f} %"])
    return markdown(["training", "in-distribution", "km / av / op", "-> km", "-> av", "-> op",
                     "leave-one-source-out mean"], rows)


def newclasses_seed1() -> str:
    """The new-classes protocol (make newclasses, seed 1, two draws): the shipped adaptation (last layer trained on
    fixed features, then the whole network fine-tuned) against new classes left untrained at their images' mean
    feature before the fine-tuning, and against the last layer alone."""
    rows = []
    for name, option, results in (("last layer trained, then fine-tuning (default)", "", "newclasses_seed1"),
                                  ("mean features untrained, then fine-tuning", "adapt.head_epochs=0",
                                   "newclasses_imprint_seed1"),
                                  ("last layer trained, no fine-tuning", "adapt.epochs=0",
                                   "newclasses_headonly_seed1")):
        for r in load(results)["rows"]:
            rows.append([f"{name} ({code(option)})" if option else name, ", ".join(r["left_out"]),
                         f"{100 * r['random_new_accuracy_mean']:.1f} %", f"{100 * r['picked_new_accuracy_mean']:.1f} %",
                         f"{100 * r['known_before_mean']:.1f} %",
                         f"{100 * r['random_known_accuracy_mean']:.1f} / {100 * r['picked_known_accuracy_mean']:.1f} %",
                         f"{r['random_seconds_mean']:.0f} / {r['picked_seconds_mean']:.0f} s"])
    return markdown(["adaptation", "left out (new classes)", "new, 5 random/class", "new, 50 picked",
                     "known before", "known after (random / picked)", "time (random / picked)"], rows)


def duplicates_table() -> str:
    """The duplicate benchmark's runs: recall of planted near-duplicates by kind, false pairs, time of `check`."""
    kinds = ["resize", "crop", "jpeg", "contrast", "noise", "mixed"]
    rows = []
    for name in ("duplicates_seed0", "duplicates_seed1"):
        data = load(name)
        q = data["quality"]
        false = f"{pct(q['false_share'])} %"
        if "false_pairs" in q:
            false += f" ({q['false_pairs']} of {q['reported_pairs']:,})"
        times = "; ".join(f"{t['images']:,} images in {short(t['times']['check total'])} s"
                          + (f" ({pct(t['false_share'])} % false pairs)" if "false_share" in t else "")
                          for t in data["timing"])
        rows.append([f"`{data['command'].removeprefix('nice -n 5 python ')}`", f"{100 * q['recall']:.1f} %",
                     *(f"{100 * q['recall_by_kind'][k]:.1f} %" if "recall_by_kind" in q else "-" for k in kinds),
                     f"{100 * q['recall_detailed_bases']:.1f} %" if "recall_detailed_bases" in q else "-",
                     false, times or "-"])
    return markdown(["run", "recall", "resize", "crop", "JPEG", "brightness/contrast", "noise", "all mixed",
                     "recall, bases with detail", "false pairs", "time of `check`"], rows)


def audit_table() -> str:
    """The label audit on sem-public: images, suspects and most frequent disputes, overall and per source."""
    data = load("audit_sem_public")

    def disputes(confusions: list[Record]) -> str:
        return ", ".join(f"{c['label']} -> {c['predicted']} {c['suspects']}" for c in confusions)

    rows = [[f"all (out-of-fold accuracy {100 * data['out_of_fold_accuracy']:.1f} %)", f"{data['images']:,}",
             data["suspects"], disputes(data["confusions"])]]
    rows += [[source, f"{s['images']:,}", s["suspects"], disputes(s["confusions"])]
             for source, s in data["by_source"].items()]
    per_class = ", ".join(f"{c} {n}" + (f" of {data['images_per_class'][c]}" if c in data["images_per_class"] else "")
                          for c, n in data["suspects_per_class"].items())
    return markdown(["source", "images", "suspects", "most frequent disputes"], rows) + \
        f"\nSuspects per class: {per_class}.\n"


def sim_to_real_table() -> str:
    """Per-class precision and recall on real test images of two models trained on synthetic images only."""
    ref, width1 = load("sim_to_real_reference"), load("sim_to_real_width_1")
    rows = [[c, *(f"{m['per_class'][c][k]:.3f}" for m in (ref, width1) for k in ("precision", "recall")),
             ref["per_class"][c]["support"]] for c in ref["class_names"]]
    rows.append(["accuracy", "", f"{100 * ref['accuracy']:.1f} %", "", f"{100 * width1['accuracy']:.1f} %",
                 ref["n_images"]])
    return markdown(["class", "reference precision", "reference recall", "width 1 precision", "width 1 recall",
                     "support"], rows)


# -- experiments.json ----------------------------------------------------------------------------------------------
def in_distribution(f: Record) -> str:
    if "in_distribution_std" not in f:
        return "-"
    text = f"{f['in_distribution_mean']:.1f} ± {f['in_distribution_std']:.1f} %"
    return text + (f" (macro F1 {f['in_distribution_f1_macro']:.3f})" if "in_distribution_f1_macro" in f else "")


def unseen_source(f: Record) -> str:
    if "loso_mean" not in f:
        return "-"
    text = f"{f['loso_mean']:.1f} %"
    return text + (f" (km -> av {f['km_to_av']:.1f}, av -> km {f['av_to_km']:.1f})" if "km_to_av" in f else "")


def tried_table() -> str:
    """The changes measured with the full protocol (seeds 1-3), in the order they were tried."""
    rows = [[f"{r['description']} ({code(r['option'])})", in_distribution(r["figures"]), unseen_source(r["figures"]),
             r["status"]] for r in experiments("tried")]
    return markdown(["change", "in-distribution", "unseen source (mean of both directions)", "status"], rows)


def screens_table() -> str:
    """Changes screened with fewer runs: one seed, or the in-distribution row only."""
    rows = []
    for r in experiments("screens"):
        f = r["figures"]
        if "test_accuracy" in f:
            result = f"{f['test_accuracy']:.1f} %"
        elif "in_distribution_mean" in f:
            result = f"{f['in_distribution_mean']:.1f} % ({seeds_text(f['test_accuracy_per_seed'])}), " \
                     f"macro F1 {f['in_distribution_f1_macro']:.3f}"
        else:
            result = "unseen source " + unseen_source(f)
        if "train_minutes" in f:
            result += f"; {short(f['train_minutes'])} min training"
        rows.append([f"{r['description']} ({code(r['option'])})", r["protocol"], result, r["baseline"], r["status"]])
    return markdown(["change", "protocol", "result", "against", "status"], rows)


def tta_table() -> str:
    """Test-time augmentation and ensembles: accuracy against the same models' single view."""
    rows = []
    for r in experiments("tta"):
        f = r["figures"]
        accuracy = f"{f['test_accuracy_mean']:.1f} %"
        if "test_accuracy_per_seed" in f:
            accuracy += f" ({seeds_text(f['test_accuracy_per_seed'])})"
        if "f1_macro" in f:
            accuracy += f", macro F1 {f['f1_macro']:.3f}"
        one_view = f"{f['baseline_test_accuracy_mean']:.1f} %"
        if "baseline_test_accuracy_per_seed" in f:
            one_view += f" ({seeds_text(f['baseline_test_accuracy_per_seed'])})"
        rows.append([r["description"], f"{f['cost_x']}x", accuracy, one_view])
    return markdown(["inference", "cost", "test accuracy (3 models)", "the same models, one view"], rows)


def synthetic_table() -> str:
    """Models trained on 300 synthetic images per class: synthetic test accuracy and accuracy on real images."""
    rows = [[r["description"], f"{r['figures']['synthetic_test_accuracy']:.1f} %",
             f"{r['figures']['synthetic_f1_macro']:.3f}", f"{r['figures']['sim_to_real_accuracy']:.1f} %"]
            for r in experiments("synthetic")]
    return markdown(["model", "synthetic test accuracy", "macro F1", "sim-to-real (sem-public test)"], rows)


def int8_profile_table() -> str:
    """onnxruntime's per-node times of the width-1 model: FP32, INT8 on every layer, INT8 as shipped."""
    f = next(r for r in experiments() if r["id"] == "int8-float-first-block")["figures"]
    nodes = [("conv1", "conv 1 (1 -> 16 channels, 126x126)"), ("pool1", "pool 1"), ("conv2", "conv 2"),
             ("conv3", "conv 3"), ("graph", "whole graph")]
    rows = []
    for key, label in nodes:
        shipped = f"{f[f'{key}_us_int8_shipped']} us"
        if key in ("conv1", "pool1"):
            shipped += " (FP32)"
        if key == "pool1":
            shipped += f" + {f['quantizelinear_us_int8_shipped']} us QuantizeLinear"
        rows.append([label, f"{f[f'{key}_us_fp32']} us", f"{f[f'{key}_us_int8_all']} us", shipped])
    return markdown(["node (batch 1, 1 thread)", "FP32", "INT8, every layer", "INT8 as shipped"], rows)


def calibration_table() -> str:
    """Calibration settings: on how many images INT8 and FP32 then disagree."""
    rows = [[r["description"], r["figures"]["differing_images"], r["figures"]["baseline_differing_images"]]
            for r in experiments("calibration")]
    return markdown(["calibration", "images that differ", "as shipped then"], rows)


def mean_sd(values: list[float], scale: float = 100, digits: int = 1, unit: str = " %") -> str:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}{unit}"


def review_default() -> str:
    """The default with its review bin on the test split, seeds 1-3, per model format (evaluate_model.py's
    metrics.json of each run, collected in results/review_default.json)."""
    data = load("review_default")
    rows = []
    for kind, runs in data["runs"].items():
        rows.append([FORMATS[kind], mean_sd([r["accuracy"] for r in runs]),
                     mean_sd([r["ece"] for r in runs], 1, 3, ""),
                     mean_sd([r["ece_if_calibrated"] for r in runs], 1, 3, ""),
                     mean_sd([r["coverage"] for r in runs]), mean_sd([r["accuracy_accepted"] for r in runs]),
                     mean_sd([r["aurc"] for r in runs], 1, 3, "")])
    return markdown(["model", "test accuracy", "ECE", "ECE of a calibrated model", "coverage", "accuracy on accepted",
                     "AURC"], rows)


REVIEW_SCORES_SHOWN = ("msp", "msp_T", "margin", "maxlogit", "energy", "vim", "react_energy", "mahalanobis_g",
                       "mahalanobis_h", "relmaha_g", "knn5_g", "knn1_h",
                       "agree5_g", "agree5_h", "msp_T+agree5_g", "msp_T+agree10_g", "msp_T+agree20_g",
                       "msp_T+agree5_h", "msp_T+agree5+knn5_g", "msp_T+agree5_pca64", "msp_T+agree5_pca32",
                       "msp_T+agree5_g_cap60", "msp_T+agree5_g_cap30")


def review_scores() -> str:
    """The candidate review scores (benchmarks/bench_review_scores.py), means over its in-distribution and open-set
    runs."""
    runs: list[Record] = json.loads((RESULTS / "review_scores.json").read_text(encoding="utf-8"))
    known = [r for r in runs if not r["unknown"]]
    open_set = [r for r in runs if r["unknown"]]

    def mean(group: list[Record], name: str, key: str) -> str:
        values = [r["scores"][name][key] for r in group if r["scores"][name].get(key) is not None]
        return f"{sum(values) / len(values):.3f}" if values else "-"

    rows = [[f"`{name}`" + (" (shipped)" if name == "msp_T+agree5_g" else ""), mean(known, name, "aurc"),
             mean(known, name, "accuracy_at_65"), mean(known, name, "coverage"), mean(known, name, "accuracy_accepted"),
             mean(open_set, name, "auroc_unknown"), mean(open_set, name, "unknown_to_review"),
             mean(open_set, name, "coverage")] for name in REVIEW_SCORES_SHOWN]
    return (markdown(["score", "AURC", "accuracy at 65 % coverage", "coverage at the threshold",
                      "accuracy on accepted", "open set: AUROC", "unknown to review", "known accepted"], rows)
            + f"\n{len(known)} in-distribution run(s), {len(open_set)} open-set run(s) (one class left out each).\n")


def adapt_picks() -> str:
    """The ways to choose images to label (benchmarks/bench_picks.py), per leave-one-source-out row and the mean."""
    data: Record = json.loads((RESULTS / "adapt_picks.json").read_text(encoding="utf-8"))
    rows_named = sorted({r["row"] for r in data["runs"]})

    def cell(name: str, row: str | None) -> str:
        runs = [r for r in data["runs"] if row is None or r["row"] == row]
        reached = sum(r["methods"][name]["classes_reached"] for r in runs) / len(runs)
        right = sum(r["methods"][name]["nearest_pick_right"] for r in runs) / len(runs)
        return f"{reached:.1f}, {100 * right:.1f} %"

    rows = [[name, *(cell(name, row) for row in rows_named), cell(name, None)] for name in data["mean"]]
    budget = data["runs"][0]["budget"]
    return (markdown([f"picks ({budget})", *(f"{row}: classes, nearest pick right" for row in rows_named), "mean"],
                     rows) + f"\nSeeds {', '.join(map(str, data['seeds']))} of the protocol's models; "
            f"{data['per_class']} per shared class.\n")


def experiments_table() -> str:
    """Every experiment of the record, one row each, with all its figures."""
    rows = [[f"`{r['id']}`", r["area"], r["description"], code(r["option"]), r["protocol"], r["baseline"],
             ", ".join(f"{k} {json.dumps(v)}" for k, v in r["figures"].items()) or "-", r["status"]]
            for r in experiments()]
    return markdown(["id", "area", "change", "option", "protocol", "against", "figures", "status"], rows)


TABLES: dict[str, Callable[[], str]] = {
    "results_summary": results_summary, "results_sem_multi": results_sem_multi, "pipeline_seed42": pipeline_table,
    "serving_sources": serving_sources, "newclasses_seed1": newclasses_seed1,
    "duplicates": duplicates_table,
    "audit": audit_table, "sim_to_real": sim_to_real_table, "tried": tried_table, "screens": screens_table,
    "tta": tta_table, "synthetic": synthetic_table, "int8_profile": int8_profile_table,
    "calibration": calibration_table, "experiments": experiments_table, "review_default": review_default,
    "review_scores": review_scores, "adapt_picks": adapt_picks,
}
RESULT_KINDS: dict[str, Callable[[Record], str]] = {"crosscheck": crosscheck_table, "bench": bench_table,
                                                   "openset": openset_table}


def render_table(name: str) -> str:
    """The block NAME: a table of TABLES, or a results file `crosscheck_*` / `bench_*` in its tool's layout."""
    if name in TABLES:
        return TABLES[name]()
    kind = name.split("_")[0]
    if kind in RESULT_KINDS and (RESULTS / f"{name}.json").is_file():
        return RESULT_KINDS[kind](load(name))
    raise ValueError(f"unknown table '{name}' (known: {', '.join(sorted(TABLES))}, "
                     f"or a results/crosscheck_*.json or results/bench_*.json file)")


# -- pages ---------------------------------------------------------------------------------------------------------
def render_page(text: str, page: str) -> tuple[str, list[str]]:
    """The page with every block re-rendered, and the names of the blocks that changed."""
    opened = len(re.findall(r"<!-- table: ", text))
    if opened != len(BLOCK.findall(text)):
        raise ValueError(f"{page}: a `<!-- table: NAME -->` line without its `<!-- /table -->`")
    stale: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        try:
            body = render_table(name)
        except (KeyError, OSError, ValueError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{page}: table {name}: {detail}") from None
        if match["body"] != body:
            stale.append(name)
        return match[1] + body + match[4]

    return BLOCK.sub(replace, text), stale


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: a crash leaves the old page or the new one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a table is out of date")
    args = parser.parse_args(argv)
    stale_pages = 0
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        page = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        try:
            rendered, stale = render_page(text, page)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not stale:
            continue
        stale_pages += 1
        if args.check:
            print(f"{page}: out of date: {', '.join(stale)} (run python docs/render_tables.py)", file=sys.stderr)
        else:
            write_atomic(path, rendered)
            print(f"{page}: rewrote {', '.join(stale)}")
    return 1 if args.check and stale_pages else 0


if __name__ == "__main__":
    sys.exit(main())
