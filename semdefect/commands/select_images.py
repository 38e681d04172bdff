"""Choose which images of a new source a person should label first.

Given a model (.keras or .onnx, with its review bin) and a folder of unlabelled images, picks at most --budget of
them: the most typical image of each of --budget groups of look-alikes (k-means on the model's features), the
largest groups first. Writes --output (CSV, UTF-8: path,rank,similar,label,confidence,score,top3; `similar` is how
many of the folder's images the pick's group holds), beside it a contact sheet (<output>.png) and a labelling page
(<output>.html: label the picks in a browser, save labels.csv, then adapt_model.py --labels labels.csv). With
--format label-studio also Label Studio tasks with the model's guesses as predictions (<output>.label-studio.json;
images as local files relative to --images: set LOCAL_FILES_DOCUMENT_ROOT to that folder) and the labelling config
they fit (<output>.label-studio.xml); adapt_model.py --labels reads Label Studio's JSON export of them.

usage: python select_images.py --model M --images DIR --budget N --output picks.csv [--format csv|label-studio]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path

from semdefect.board.cli import command_parser, print_summary
from semdefect.board.errors import SemdefectError
from semdefect.commands.stage import run_with_config
from semdefect.config import Config

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a semdefect .keras or .onnx model")
    parser.add_argument("--images", type=Path, required=True, help="the unlabelled images (searched recursively)")
    parser.add_argument("--budget", type=int, required=True, help="how many images to pick at most")
    parser.add_argument("--output", type=Path, required=True,
                        help="the CSV to write (a .png contact sheet and an .html labelling page beside it)")
    parser.add_argument("--format", choices=("csv", "label-studio"), default="csv",
                        help="label-studio: also Label Studio tasks (JSON) and their labelling config (XML)")
    return run_with_config(parser, argv, select_images)


def select_images(args: argparse.Namespace, cfg: Config) -> int:
    if args.budget < 1:
        raise SemdefectError(f"--budget must be at least 1, got {args.budget}")
    if args.output.suffix.lower() != ".csv":
        raise SemdefectError(f"--output {args.output}: use a .csv file name")
    from semdefect.adaptation.select import describe, load_pool, pick
    from semdefect.board.files import atomic_path, write_text_atomic
    from semdefect.data.sheets import contact_sheet
    from semdefect.pages.labelling import LabelItem, build_labelling_page

    files, problems = load_pool(args.images)
    pool, skipped = describe(args.model, files)
    for path, reason in problems + skipped:
        log.warning("skipping %s: %s", path, reason)
    chosen, similar = pick(pool, args.budget)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "rank", "similar", "label", "confidence", "score", "top3"])
    captions, items = [], []
    for rank, (index, group) in enumerate(zip(chosen, similar), 1):
        probabilities = pool.probabilities[index]
        top3 = [(pool.class_names[i], float(probabilities[i])) for i in probabilities.argsort()[::-1][:3]]
        label, confidence = top3[0]
        score = float(pool.scores[index])
        writer.writerow([str(pool.paths[index]), rank, group, label, f"{confidence:.4f}", f"{score:.4f}",
                         " ".join(f"{name}:{p:.3f}" for name, p in top3)])
        captions.append((pool.paths[index], f"{rank}: {label}? {score:.2f}"))
        items.append(LabelItem(pool.paths[index].resolve(), top3, score))
    write_text_atomic(args.output, buffer.getvalue())
    written = {"picks": args.output, "sheet": args.output.with_suffix(".png"), "page": args.output.with_suffix(".html")}
    with atomic_path(written["sheet"]) as tmp:
        contact_sheet(captions).save(tmp, format="PNG")
    page = build_labelling_page(items, pool.class_names, f"Label the picks of {args.images}")
    write_text_atomic(written["page"], page)
    if args.format == "label-studio":
        from semdefect.pages.label_studio import labelling_config, tasks

        written["tasks"] = Path(f"{args.output.with_suffix('')}.label-studio.json")
        written["config"] = Path(f"{args.output.with_suffix('')}.label-studio.xml")
        write_text_atomic(written["tasks"], json.dumps(tasks(items, args.images.resolve()), indent=1,
                                                        ensure_ascii=False) + "\n")
        write_text_atomic(written["config"], labelling_config(pool.class_names))
    print(f"picked {len(chosen)} of {len(pool.paths)} images (budget {args.budget})")
    print_summary("select_images.py wrote", written)
    return 0
