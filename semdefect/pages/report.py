"""report.html: an evaluation as one self-contained page, to look at the model's mistakes (workstation side).

The summary (model, data, accuracy, macro F1, ECE, the review bin's coverage and accuracy on accepted), the per-class
table, the confusion matrix (a click on a cell shows its images in the gallery), the reliability and risk-coverage
plots, and galleries of the misclassified images and of those sent to review: each with its true and predicted
label, confidence and decision and, for a Keras model (or with --cam-model), its Grad-CAM heat map of the predicted
class beside it. Images and plots are inside the page; at most `report.max_images` images are, misclassified first,
then those sent to review, then the rest; the others are listed by path. No network: it opens from a `file://` URL.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from semdefect.config import Report
from semdefect.data.dataset import LoadedSplit
from semdefect.evaluation.scoring import Scored
from semdefect.pages.images import JPEG_QUALITY, data_uri
from semdefect.pages.template import fill


def inline_order(correct: np.ndarray, decisions: list[str]) -> np.ndarray:
    """Image indices in the order they get thumbnails: misclassified, then sent to review, then the rest."""
    review = np.array([d == "review" for d in decisions], dtype=bool)
    rank = np.where(~correct, 0, np.where(review, 1, 2))
    return np.argsort(rank, kind="stable")


def jpeg_uri(pixels: np.ndarray, side: int) -> str:
    image = Image.fromarray(pixels)
    if max(image.size) != side:  # a heat map is at the model's input size: shown at the thumbnail's
        image = image.resize((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def build_report(scored: Scored, loaded: LoadedSplit, plots: dict[str, Path], rcfg: Report,
                 cam_model: Any | None, cam_note: str) -> str:
    """The page's HTML. `cam_model`: a Keras model whose heat maps go beside the inlined images (None: none, and
    `cam_note` says why)."""
    metrics, names = scored.metrics, scored.metrics["class_names"]
    predicted = scored.probabilities.argmax(axis=1)
    correct = predicted == loaded.y
    order = inline_order(correct, scored.decisions)
    inlined = order[:rcfg.max_images]
    heat: dict[int, str] = {}
    if cam_model is not None and len(inlined):
        from semdefect.evaluation.gradcam import heat_maps, overlay

        maps = heat_maps(cam_model, loaded.x[inlined], predicted[inlined])
        heat = {int(i): jpeg_uri(overlay(loaded.x[i, :, :, 0], m), rcfg.thumbnail) for i, m in zip(inlined, maps)}
    shown = set(int(i) for i in inlined)
    images = [{"path": str(path), "true": int(loaded.y[i]), "pred": int(predicted[i]),
               "confidence": round(float(scored.probabilities[i, predicted[i]]), 4),
               "decision": scored.decisions[i], "score": round(float(scored.scores[i]), 4),
               "src": (data_uri(path, rcfg.thumbnail) or "") if i in shown else None, "heat": heat.get(i)}
              for i, path in enumerate(loaded.paths)]
    selective = metrics["selective"]
    summary = {"model": metrics["model"], "data": metrics["data"], "images": metrics["n_images"],
               "accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"], "ece": metrics["ece"],
               "threshold": selective["threshold"], "coverage": selective["coverage"],
               "accuracy_accepted": selective["accuracy_accepted"], "inlined": len(shown),
               "max_images": rcfg.max_images, "cam_note": cam_note}
    data = {"classes": names, "summary": summary, "confusion": metrics["confusion_matrix"],
            "per_class": [[n, metrics["per_class"][n], selective["per_class"][n]] for n in names],
            "images": images, "plots": {name: png_uri(path) for name, path in plots.items()}}
    return fill(PAGE, f"Evaluation of {Path(metrics['model']).name}", data)


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 1em 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: .25em .5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
#summary td { text-align: left; }
#confusion td.cell { cursor: pointer; min-width: 2.2em; text-align: center; }
#confusion td.cell:hover { outline: 2px solid #1565c0; }
#confusion td.selected { outline: 3px solid #c62828; }
#confusion th.vertical { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
.plots img { max-width: 48%; }
.gallery { display: flex; flex-wrap: wrap; gap: .8em; }
.card { border: 1px solid #ccc; padding: .4em; font-size: .8em; width: 340px; }
.card .pair { display: flex; gap: 4px; }
.card img { width: 160px; height: 160px; object-fit: contain; background: #000; }
.card .path { font-family: monospace; word-break: break-all; color: #555; }
.wrong { color: #c62828; font-weight: bold; }
.missing { width: 160px; height: 160px; background: #eee; display: flex; align-items: center;
           justify-content: center; text-align: center; color: #900; }
.note { color: #555; }
ul.paths { font-family: monospace; font-size: .8em; }
</style>
</head>
<body>
<h1>{{title}}</h1>
<table id="summary"></table>
<h2>Per class</h2>
<table id="per-class"></table>
<h2>Confusion matrix</h2>
<p class="note">Rows: true class; columns: predicted. Click a cell to see its images in the gallery below.</p>
<table id="confusion"></table>
<h2>Calibration and the review bin</h2>
<div class="plots" id="plots"></div>
<h2 id="gallery-title">Misclassified images</h2>
<p><button id="show-wrong">all misclassified</button> <span class="note" id="cam-note"></span></p>
<div class="gallery" id="gallery"></div>
<ul class="paths" id="gallery-paths"></ul>
<h2>Sent to review</h2>
<div class="gallery" id="review"></div>
<ul class="paths" id="review-paths"></ul>
<script type="application/json" id="data">{{data}}</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const classes = data.classes;
const percent = v => v === null || v === undefined ? "-" : (100 * v).toFixed(1) + " %";

function cell(row, text, tag) {
  const element = document.createElement(tag || "td");
  element.textContent = text;
  row.appendChild(element);
  return element;
}

function summary() {
  const s = data.summary;
  const rows = [["model", s.model], ["data", s.data + " (" + s.images + " images)"],
    ["accuracy", percent(s.accuracy)], ["macro F1", s.f1_macro.toFixed(3)], ["ECE", s.ece.toFixed(3)],
    ["review bin", s.threshold === null ? "none in this model: every image accepted" :
      "threshold " + s.threshold.toFixed(4) + ": " + percent(s.coverage) + " accepted, " +
      percent(s.accuracy_accepted) + " of those right"]];
  const table = document.getElementById("summary");
  for (const [key, value] of rows) {
    const row = table.insertRow();
    cell(row, key, "th");
    cell(row, value);
  }
}

function perClass() {
  const table = document.getElementById("per-class");
  const head = table.insertRow();
  for (const name of ["class", "precision", "recall", "F1", "images", "accepted", "right of accepted"]) {
    cell(head, name, "th");
  }
  for (const [name, m, s] of data.per_class) {
    const row = table.insertRow();
    cell(row, name);
    cell(row, m.precision.toFixed(3)); cell(row, m.recall.toFixed(3)); cell(row, m.f1.toFixed(3));
    cell(row, m.support); cell(row, m.support ? percent(s.coverage) : "-"); cell(row, percent(s.accuracy_accepted));
  }
}

function confusion() {
  const table = document.getElementById("confusion");
  const head = table.insertRow();
  cell(head, "true \\\\ predicted", "th");
  for (const name of classes) cell(head, name, "th").className = "vertical";
  const top = Math.max(1, ...data.confusion.flat());
  data.confusion.forEach((counts, t) => {
    const row = table.insertRow();
    cell(row, classes[t], "th");
    counts.forEach((count, p) => {
      const td = cell(row, count || "");
      td.className = "cell";
      td.dataset.true = t;
      td.dataset.pred = p;
      const shade = count / top;
      td.style.background = "rgba(21, 101, 192, " + (0.08 + 0.7 * shade) + ")";
      td.style.color = shade > 0.5 ? "#fff" : "#000";
      td.addEventListener("click", () => showCell(t, p, td));
    });
  });
}

function card(image) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.true = image.true;
  div.dataset.pred = image.pred;
  const pair = document.createElement("div");
  pair.className = "pair";
  if (image.src) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.src = image.src;
    img.alt = image.path;
    pair.appendChild(img);
  } else {
    const missing = document.createElement("div");
    missing.className = "missing";
    missing.textContent = "cannot read " + image.path.split("/").pop();
    pair.appendChild(missing);
  }
  if (image.heat) {
    const heat = document.createElement("img");
    heat.loading = "lazy";
    heat.src = image.heat;
    heat.alt = "heat map of " + classes[image.pred];
    heat.className = "heat";
    pair.appendChild(heat);
  }
  div.appendChild(pair);
  const text = document.createElement("div");
  const verdict = document.createElement("span");
  verdict.className = image.true === image.pred ? "" : "wrong";
  verdict.textContent = "true " + classes[image.true] + ", predicted " + classes[image.pred];
  text.append(verdict, " (" + percent(image.confidence) + "), " + image.decision + ", score " + image.score.toFixed(2));
  const path = document.createElement("div");
  path.className = "path";
  path.textContent = image.path;
  div.append(text, path);
  return div;
}

function fill(gallery, list, chosen) {
  const box = document.getElementById(gallery);
  const paths = document.getElementById(list);
  box.textContent = "";
  paths.textContent = "";
  for (const image of chosen) {
    if (image.src === null) {
      const item = document.createElement("li");
      item.textContent = image.path + " (true " + classes[image.true] + ", predicted " + classes[image.pred] + ")";
      paths.appendChild(item);
    } else {
      box.appendChild(card(image));
    }
  }
  if (paths.childElementCount) {
    const note = document.createElement("li");
    note.className = "note";
    note.textContent = "not inlined (the page holds at most " + data.summary.max_images + " images):";
    paths.prepend(note);
  }
}

function showWrong() {
  document.querySelectorAll("#confusion td.selected").forEach(td => td.classList.remove("selected"));
  document.getElementById("gallery-title").textContent = "Misclassified images";
  fill("gallery", "gallery-paths", data.images.filter(image => image.true !== image.pred));
}

function showCell(t, p, td) {
  document.querySelectorAll("#confusion td.selected").forEach(other => other.classList.remove("selected"));
  td.classList.add("selected");
  document.getElementById("gallery-title").textContent =
    "True " + classes[t] + ", predicted " + classes[p];
  fill("gallery", "gallery-paths", data.images.filter(image => image.true === t && image.pred === p));
}

summary();
perClass();
confusion();
for (const [name, src] of Object.entries(data.plots)) {
  const img = document.createElement("img");
  img.src = src;
  img.alt = name;
  document.getElementById("plots").appendChild(img);
}
document.getElementById("cam-note").textContent = data.summary.cam_note;
document.getElementById("show-wrong").addEventListener("click", showWrong);
showWrong();
fill("review", "review-paths", data.images.filter(image => image.decision === "review"));
</script>
</body>
</html>
"""
