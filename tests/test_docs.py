"""The docs stand on their own and cannot drift from the code.

- The state diagram in the docs is what ``failover diagram`` prints.
- The policy table of docs/topology.md is what ``scripts/policy_table.py`` generates, and
  names every policy key of the code with its default.
- No tracked file points outside the repository (another team's notes, issue numbers).
- Every relative link of README.md and docs/*.md reaches a file, and its anchor a heading.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import pytest

from workflows.service import mermaid
from workflows.timeutil import parse_duration
from workflows.topology import LinkPolicy, Policy

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("policy_table", ROOT / "scripts/policy_table.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------- the diagram


def test_the_state_machine_page_has_the_generated_diagram() -> None:
    text = (DOCS / "state-machine.md").read_text(encoding="utf-8")
    diagrams = [body for lang, body in _FENCE.findall(text) if lang == "mermaid"]
    assert diagrams == [mermaid()], "paste the output of `failover diagram` into the page"


def test_every_state_diagram_in_the_docs_is_the_generated_one() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for lang, body in _FENCE.findall(text):
            if lang == "mermaid" and body.startswith("stateDiagram"):
                assert body == mermaid(), f"{page.name}: not what `failover diagram` prints"


# ---------------------------------------------------------------------- the policy table


def _policy_rows() -> dict[str, str]:
    """``key -> default`` from the policy table of docs/topology.md."""
    script = load_script()
    text = (DOCS / "topology.md").read_text(encoding="utf-8")
    block = text[text.index(script.BEGIN) : text.index(script.END)]
    rows: dict[str, str] = {}
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            assert cells[0] not in rows, f"{cells[0]} twice"
            rows[cells[0].strip("`")] = cells[3].strip("`")
    return rows


def test_the_policy_table_is_generated_from_the_code() -> None:
    script = load_script()
    text = (DOCS / "topology.md").read_text(encoding="utf-8")
    assert script.table() in text, "run: .venv/bin/python scripts/policy_table.py --write"


def test_every_policy_key_is_documented_with_its_default() -> None:
    rows = _policy_rows()
    code: dict[str, object] = {f.name: getattr(Policy(), f.name) for f in fields(Policy)}
    del code["link"]
    code.update({f.name: getattr(LinkPolicy(), f.name) for f in fields(LinkPolicy)})
    assert sorted(rows) == sorted(code)
    for key, value in code.items():
        shown = rows[key]
        if re.fullmatch(r"[0-9]+(ms|s|m|h|d)", shown):
            assert parse_duration(shown) == value, key
        else:
            assert float(shown) == value, key


# ------------------------------------------------------------------- outside references

# Written so that this file does not match itself.
_OUTSIDE = re.compile(
    r"shared\/|/work\/|DESIGN('s)?\s§|issue\s#|(?-i:PERFORMANCE\.md)|'s\sissue\b", re.IGNORECASE
)


def _tracked() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    found = []
    files = [path for path in _tracked() if path.is_file()]
    assert len(files) > 50
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if _OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "point at docs/ instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "parts",  # in pieces, joined by the test: whole, they would be found in this file
    [
        ("see DESIGN", " §2"),
        ("DESIGN's", " §4"),
        ("/work", "/shared", "/SEED.md"),
        ("in issue", " #4"),
        ("Issue", " #4:"),
        ("see PERFORMANCE", ".md"),
        ("as the core's", " issue defines it"),
    ],
)
def test_the_outside_reference_check_catches(parts: tuple[str, ...]) -> None:
    assert _OUTSIDE.search("".join(parts))


# ---------------------------------------------------------------------------- the links

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    anchors: set[str] = set()
    for heading in _HEADING.findall(text):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def _links(page: Path) -> list[str]:
    text = _CODE.sub("", page.read_text(encoding="utf-8"))
    return [
        target
        for target in _LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_every_relative_link_reaches_a_file_and_its_anchor_a_heading() -> None:
    broken = []
    count = 0
    for page in PAGES:
        for target in _links(page):
            count += 1
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert count > 20
    assert not broken, "\n".join(broken)


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](#nope) `[d](code.md)`\n")
    assert _links(page) == ["missing.md", "#title", "#nope"]
    assert _anchors(page) == {"title"}
