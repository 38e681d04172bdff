"""The README stays a front page, the docs stay in sync with their JSON record, and no link points nowhere.

Stdlib only (no TensorFlow, no model): part of the fast tier.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REQUIRED = {"id": str, "area": str, "option": str, "description": str, "protocol": str, "baseline": str,
            "figures": dict, "adopted": bool, "status": str, "command": (str, type(None)), "notes": str,
            "source": str}
AREAS = {"accuracy", "edge-speed", "data-tools", "synthetic", "review", "adaptation", "pages"}
STATUSES = {"default", "kept as option", "removed"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"


def test_rendered_tables_are_in_sync():
    result = subprocess.run([sys.executable, "docs/render_tables.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout


def test_every_experiment_has_the_required_fields():
    records = json.loads((ROOT / "docs" / "experiments.json").read_text(encoding="utf-8"))
    assert isinstance(records, list) and records
    ids = [record.get("id") for record in records]
    assert len(ids) == len(set(ids)), "experiment ids must be unique"
    for record in records:
        for field, kind in REQUIRED.items():
            assert field in record, f"{record.get('id')}: no '{field}'"
            assert isinstance(record[field], kind), f"{record['id']}: '{field}' is {type(record[field]).__name__}"
        assert record["area"] in AREAS, f"{record['id']}: area {record['area']!r}"
        assert record["status"] in STATUSES, f"{record['id']}: status {record['status']!r}"
        assert record["adopted"] == (record["status"] == "default"), f"{record['id']}: adopted disagrees with status"
        for name, value in record["figures"].items():
            values = value if isinstance(value, list) else [value]
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values), \
                f"{record['id']}: figure {name} is not a number or a list of numbers"


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    headings = re.findall(r"^#+ (.+)$", strip_code(page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def strip_code(text: str) -> str:
    """The text without fenced code blocks, whose brackets are not links."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_existing_files(page):
    for target in LINK.findall(strip_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: link to {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in heading_anchors(linked), f"{page.name}: link to {target}: no such heading"
