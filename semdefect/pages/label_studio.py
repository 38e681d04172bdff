"""Label Studio, the labelling tool many teams already run: tasks to import, and the labelling config they fit
(workstation side).

Tasks follow Label Studio's documented import format: `data` (the image as a local file, served by Label Studio under
LOCAL_FILES_DOCUMENT_ROOT, and its path on this machine), and `predictions`, the model's guess as a pre-selected
choice with its confidence. The config is an image-classification view whose `Choices` are the model's classes; a
labeller adds a fab's own class there. `adapt_model.py --labels` reads the JSON export of such a project
(`semdefect.adaptation.labels.from_label_studio`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from semdefect import __version__
from semdefect.pages.labelling import LabelItem

FROM_NAME, TO_NAME = "class", "image"  # the control and object names the config and the tasks share


def local_file(path: Path, root: Path) -> str:
    """Label Studio's address of a local file: relative to the document root where the file lies under it."""
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        relative = path.as_posix()
    return "/data/local-files/?d=" + quote(relative)


def tasks(items: list[LabelItem], root: Path) -> list[dict[str, Any]]:
    result = []
    for item in items:
        task: dict[str, Any] = {"data": {TO_NAME: local_file(item.path, root), "path": str(item.path)}}
        if item.top3:
            label, confidence = item.top3[0]
            task["predictions"] = [{"model_version": f"semdefect {__version__}", "score": round(confidence, 4),
                                    "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                                                "value": {"choices": [label]}}]}]
        result.append(task)
    return result


def labelling_config(classes: list[str]) -> str:
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in classes)
    return (f'<View>\n  <Image name="{TO_NAME}" value="${TO_NAME}"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")
