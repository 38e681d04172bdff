"""Make a labelling page of images, or copy labelled images into class folders.

From a folder of images (with --model, the model's guesses beside each), an infer_onnx.py CSV (its `review` rows
first) or select_images.py's picks.csv (in pick order), writes one self-contained HTML page (--output) to label them
in a browser, offline: a click or a number key gives an image a class, a text box adds a class of the fab's own, and
"Save" downloads labels.csv (path,label), which adapt_model.py --labels reads. `apply` copies the images a labels.csv
(or Label Studio's JSON export) names into one folder per class, for those who want class folders.

usage: python label_images.py (DIR | rows.csv | picks.csv) --output labels.html [--model M]
       python label_images.py apply labels.csv --output DIR
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import re
import shutil
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary
from semdefect.board.errors import DatasetError, SemdefectError
from semdefect.commands.stage import run_with_config
from semdefect.config import Config, add_config_arguments
from semdefect.pages.labelling import LabelItem

log = logging.getLogger(__name__)

OVERRIDE = re.compile(r"^[a-z_]+\.[a-z_0-9]+=")
TOP3 = re.compile(r"(.+?):([01]\.\d+)(?: |$)")  # "name:p name:p name:p"; a name may hold spaces


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("inputs", nargs="+", metavar="SOURCE",
                        help="a folder of images, an infer_onnx.py CSV or a picks.csv; or: apply labels.csv")
    parser.add_argument("--output", type=Path, required=True, help="the page to write (.html), or with apply the "
                        "folder to copy the images into")
    parser.add_argument("--model", type=Path, help="with a folder: show this model's guesses beside each image")
    add_config_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    # overrides are positional too: tell them from the sources by their `section.key=` form
    args.overrides = [*args.overrides, *[i for i in args.inputs if OVERRIDE.match(i) and not Path(i).exists()]]
    args.inputs = [i for i in args.inputs if i not in args.overrides]
    return run_with_config(parser, argv, label_images, args=args)


def label_images(args: argparse.Namespace, cfg: Config) -> int:
    if args.inputs and args.inputs[0] == "apply":
        if len(args.inputs) != 2:
            raise SemdefectError("usage: label_images.py apply labels.csv --output DIR")
        copied = apply_labels(Path(args.inputs[1]), args.output)
        print(f"copied {copied} labelled images into class folders")
        print_summary("label_images.py apply wrote", {"classes": args.output})
        return 0
    if len(args.inputs) != 1:
        raise SemdefectError(f"give one folder or CSV to label, got {len(args.inputs)}: {' '.join(args.inputs)}")
    if args.output.suffix.lower() not in (".html", ".htm"):
        raise SemdefectError(f"--output {args.output}: the labelling page is an .html file")
    from semdefect.board.files import write_text_atomic
    from semdefect.pages.labelling import build_labelling_page

    source = Path(args.inputs[0])
    items, classes = read_source(source, args.model)
    write_text_atomic(args.output, build_labelling_page(items, classes, f"Label {source.name}"))
    print(f"{len(items)} images to label, {len(classes)} classes offered")
    print_summary("label_images.py wrote", {"page": args.output})
    return 0


def read_source(source: Path, model: Path | None) -> tuple[list[LabelItem], list[str]]:
    """The images to label and the classes to offer, from a folder, an infer_onnx.py CSV or a picks.csv."""
    if source.is_dir():
        return folder_items(source, model)
    if model is not None:
        log.warning("--model is used with a folder only; a CSV already holds the model's guesses")
    rows = read_rows(source)
    columns = set(rows[0])
    if "status" in columns:  # infer_onnx.py: the images sent to review first, then the accepted, then errors
        order = {"review": 0, "accept": 1}
        rows.sort(key=lambda r: (r["status"] != "ok", order.get(r.get("decision", "accept"), 1)))
    elif "rank" in columns:  # select_images.py
        rows.sort(key=lambda r: int(r["rank"]) if r["rank"].isdigit() else 0)
    items, classes = [], []
    for row in rows:
        try:
            guesses = parse_top3(row.get("top3", "")) or ([(row["label"], float(row["confidence"]))]
                                                          if row.get("label") and row.get("confidence") else [])
            score = float(row["score"]) if row.get("score") else None
        except ValueError as exc:
            raise DatasetError(f"{source}: row of {row['path']}: not a number ({exc})") from None
        for name, _ in guesses:
            if name not in classes:
                classes.append(name)
        items.append(LabelItem(image_path(row["path"], source), guesses, score, row.get("decision") or None))
    return items, sorted(classes)


def folder_items(folder: Path, model: Path | None) -> tuple[list[LabelItem], list[str]]:
    from semdefect.board.files import find_images

    found, problems = find_images([folder])
    for path, reason in problems:
        log.warning("skipping %s: %s", path, reason)
    files = [path.resolve() for path in found]  # labels.csv is read elsewhere: its paths must not depend on here
    if not files:
        raise DatasetError(f"{folder}: no images found")
    if model is None:
        return [LabelItem(path) for path in files], []
    from semdefect.board.errors import ImageError
    from semdefect.board.images import load_image
    from semdefect.board.review import decisions
    from semdefect.evaluation.scoring import load_classifier

    classifier = load_classifier(model)
    threshold = classifier.metadata.review.threshold if classifier.metadata.review else None
    items = []
    for path in files:
        try:
            probabilities, scores = classifier.predict_scored(load_image(path, classifier.prep)[None])
        except ImageError:
            items.append(LabelItem(path))  # shown as a named placeholder
            continue
        ranked = probabilities[0].argsort()[::-1][:3]
        items.append(LabelItem(path, [(classifier.class_names[i], float(probabilities[0][i])) for i in ranked],
                               float(scores[0]), decisions(scores, threshold)[0]))
    return items, list(classifier.class_names)


def read_rows(path: Path) -> list[dict[str, str]]:
    from semdefect.adaptation.labels import read_csv

    header, *rows = read_csv(path) or [[]]
    if "path" not in header or not rows:
        raise DatasetError(f"{path}: expected an infer_onnx.py CSV or a picks.csv (a 'path' column and rows)")
    return [dict(zip(header, row)) for row in rows if any(row)]


def parse_top3(text: str) -> list[tuple[str, float]]:
    return [(name, float(p)) for name, p in TOP3.findall(text or "")]


def image_path(text: str, csv_file: Path) -> Path:
    """A path from a CSV: as written (absolute, or relative to where the command ran), else from the CSV's folder."""
    path = Path(text)
    if path.is_absolute() or path.exists():
        return path.resolve() if path.exists() else path
    beside = csv_file.parent / path
    return beside.resolve() if beside.exists() else path


def apply_labels(labels_file: Path, output: Path) -> int:
    """Copy every labelled image into output/<label>/; a file of the same name and other content gets a suffix."""
    from semdefect.adaptation.labels import read_labels
    from semdefect.board.files import atomic_path

    labels = read_labels(labels_file)
    copied = 0
    for path, name in zip(labels.paths, labels.names):
        folder = output / name
        folder.mkdir(parents=True, exist_ok=True)
        target, n = folder / path.name, 1
        while target.exists() and not filecmp.cmp(target, path, shallow=False):
            target, n = folder / f"{path.stem}-{n}{path.suffix}", n + 1
        if not target.exists():
            with atomic_path(target) as tmp:  # a stop mid-copy leaves no half image in a class folder
                shutil.copy2(path, tmp)
            copied += 1
    return copied
