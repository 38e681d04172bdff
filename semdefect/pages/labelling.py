"""The labelling page: one self-contained HTML file to name images in, which saves `labels.csv` (workstation side).

One image at a time, large, with what the model guessed (its top 3, review score and decision). A click or a number
key names it; a text box adds a class of the fab's own; `s` or the right arrow skips, the left arrow goes back.
Labels are kept in the browser's local storage under the page's own key, so closing and reopening the page keeps
them; "Save" downloads `labels.csv` (`path,label`, UTF-8), which `adapt_model.py --labels` reads. No server, no
network: the images are inside the page, so it works from a `file://` URL on an air-gapped workstation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from semdefect.pages.images import data_uri
from semdefect.pages.template import fill

IMAGE_SIDE = 384  # pixels of the longest side an image is stored at (shown at 512: the page stays small)


@dataclass
class LabelItem:
    """One image to label, with what the model said of it (if anything)."""

    path: Path
    top3: list[tuple[str, float]] = field(default_factory=list)
    score: float | None = None
    decision: str | None = None


def page_key(items: list[LabelItem]) -> str:
    """The local-storage key of a page: the same images give the same key, so a page rebuilt keeps its labels."""
    digest = hashlib.sha256("\n".join(str(item.path) for item in items).encode()).hexdigest()[:16]
    return f"semdefect-labels-{digest}"


def build_labelling_page(items: list[LabelItem], classes: list[str], title: str) -> str:
    """The page's HTML; `classes` are offered as buttons (the model's classes), in that order."""
    data = {"key": page_key(items), "classes": classes, "items": [
        {"path": str(item.path), "name": item.path.name,
         "top3": [[name, round(p, 4)] for name, p in item.top3], "score": item.score, "decision": item.decision}
        for item in items]}
    # each image in an element of its own, read when shown: opening the page parses no image (lazy loading)
    images = "\n".join(f'<script type="text/plain" id="image-{i}">{data_uri(item.path, IMAGE_SIDE) or ""}</script>'
                        for i, item in enumerate(items))
    return fill(PAGE, title, data, images=images)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f4; color: #222; }
header { display: flex; gap: 1em; align-items: center; padding: .6em 1em; background: #263238; color: #fff; }
header h1 { font-size: 1.1em; margin: 0; flex: 1; }
button { font: inherit; padding: .35em .8em; cursor: pointer; }
main { display: flex; gap: 1.5em; padding: 1em; }
#view { width: 512px; height: 512px; display: flex; align-items: center; justify-content: center;
        background: #000; flex: none; }
#view img { width: 512px; height: 512px; object-fit: contain; }  /* small images scaled up too */
.placeholder { color: #fff; padding: 2em; text-align: center; }
aside { flex: 1; min-width: 18em; }
#path { font-family: monospace; word-break: break-all; }
#classes button { display: block; width: 100%; text-align: left; margin: .2em 0; background: #fff;
                  border: 1px solid #bbb; }
#classes button.chosen { background: #2e7d32; color: #fff; }
#classes kbd { display: inline-block; width: 1.4em; }
.guess { color: #555; }
#current-label { font-weight: bold; }
.help { color: #666; font-size: .9em; }
</style>
</head>
<body>
<header><h1>{{title}}</h1><span id="progress"></span><button id="save">Save labels.csv</button></header>
<main>
  <div id="view"></div>
  <aside>
    <div><span id="position"></span> <span id="path"></span></div>
    <p>Label: <span id="current-label">none</span></p>
    <div id="guess" class="guess"></div>
    <div id="classes"></div>
    <p><input id="new-class" placeholder="new class name" size="24"> <button id="add-class">Add and label</button></p>
    <p><button id="back">&larr; back</button> <button id="skip">skip &rarr;</button>
       <button id="clear">clear label</button></p>
    <p class="help">Keys: 1-9 and 0 name the image with the numbered class; s or &rarr; skips; &larr; goes back.
      Labels are kept in this browser until saved.</p>
  </aside>
</main>
<script type="application/json" id="data">{{data}}</script>
{{images}}
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const items = data.items;
const stored = JSON.parse(localStorage.getItem(data.key) || "{}");
const labels = stored.labels || {};
const classes = data.classes.slice();
for (const name of stored.classes || []) if (!classes.includes(name)) classes.push(name);
let index = Math.max(0, items.findIndex(item => !(item.path in labels)));

function keep() {
  localStorage.setItem(data.key, JSON.stringify({labels: labels, classes: classes}));
}

function show() {
  const item = items[index];
  const view = document.getElementById("view");
  view.textContent = "";
  const src = document.getElementById("image-" + index).textContent;
  if (src) {
    const image = document.createElement("img");
    image.src = src;
    image.alt = item.name;
    view.appendChild(image);
  } else {
    const note = document.createElement("div");
    note.className = "placeholder";
    note.textContent = "cannot read " + item.path;
    view.appendChild(note);
  }
  document.getElementById("position").textContent = (index + 1) + " / " + items.length + ":";
  document.getElementById("path").textContent = item.path;
  document.getElementById("current-label").textContent = labels[item.path] || "none";
  const guess = item.top3.map(([name, p]) => name + " " + (100 * p).toFixed(1) + " %").join(", ");
  document.getElementById("guess").textContent = guess ? "Model: " + guess +
    (item.score === null ? "" : "; score " + item.score.toFixed(2)) + (item.decision ? " (" + item.decision + ")" : "")
    : "";
  const list = document.getElementById("classes");
  list.textContent = "";
  classes.forEach((name, i) => {
    const button = document.createElement("button");
    button.dataset.name = name;
    button.className = labels[item.path] === name ? "chosen" : "";
    const key = document.createElement("kbd");
    key.textContent = i < 10 ? String((i + 1) % 10) : "";
    button.append(key, " " + name);
    button.addEventListener("click", () => label(name));
    list.appendChild(button);
  });
  const done = items.filter(item => item.path in labels).length;
  document.getElementById("progress").textContent = done + " of " + items.length + " labelled";
}

function move(step) {
  index = Math.min(items.length - 1, Math.max(0, index + step));
  show();
}

function label(name) {
  labels[items[index].path] = name;
  if (!classes.includes(name)) classes.push(name);
  keep();
  const next = items.findIndex((item, i) => i > index && !(item.path in labels));
  if (next >= 0) index = next; else if (index < items.length - 1) index += 1;
  show();
}

function addClass() {
  const box = document.getElementById("new-class");
  const name = box.value.trim();
  if (!name) return;
  const clash = classes.find(c => c !== name && c.toLowerCase() === name.toLowerCase());
  if (clash) { alert("'" + name + "' differs from '" + clash + "' only in case: use '" + clash + "'"); return; }
  box.value = "";
  label(name);
}

function csvField(text) {
  return /[",\\r\\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}

function save() {
  const rows = ["path,label"];
  for (const item of items) if (item.path in labels) rows.push(csvField(item.path) + "," + csvField(labels[item.path]));
  const blob = new Blob([rows.join("\\n") + "\\n"], {type: "text/csv;charset=utf-8"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "labels.csv";
  document.body.appendChild(link);
  link.click();
  link.remove();
}

document.getElementById("save").addEventListener("click", save);
document.getElementById("add-class").addEventListener("click", addClass);
document.getElementById("skip").addEventListener("click", () => move(1));
document.getElementById("back").addEventListener("click", () => move(-1));
document.getElementById("clear").addEventListener("click", () => {
  delete labels[items[index].path]; keep(); show();
});
document.getElementById("new-class").addEventListener("keydown", event => {
  if (event.key === "Enter") addClass();
  event.stopPropagation();  // typing a class name is not a shortcut
});
document.addEventListener("keydown", event => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (/^[0-9]$/.test(event.key)) {
    const i = (Number(event.key) + 9) % 10;  // 1 is the first class, 0 the tenth
    if (i < classes.length) label(classes[i]);
  } else if (event.key === "s" || event.key === "ArrowRight") {
    move(1);
  } else if (event.key === "ArrowLeft") {
    move(-1);
  }
});
show();
</script>
</body>
</html>
"""
