"""Filling a page template: the title, and the data the page's script reads (workstation side)."""

from __future__ import annotations

import html
import json
from typing import Any


def fill(page: str, title: str, data: Any, **blocks: str) -> str:
    """`page` with {{title}} escaped, {{data}} as JSON and each {{name}} of `blocks` as given. "</" inside a script
    element would end it early; JSON allows the escaped form."""
    text = page.replace("{{title}}", html.escape(title))
    text = text.replace("{{data}}", json.dumps(data, ensure_ascii=False).replace("</", "<\\/"))
    for name, block in blocks.items():
        text = text.replace("{{" + name + "}}", block)
    return text
