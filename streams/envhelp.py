"""The worker's environment variables for ``failover worker --help``, from the one place each
is defined: the tables in the docstrings of :mod:`streams.config` (the worker's settings) and
:mod:`streams.security` (how clients connect). A variable added there is in the help; a
variable read but not in a table fails ``tests/test_envhelp.py``.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

import streams.config
import streams.security

__all__ = ["Variable", "help_text", "table_rows", "variables"]


class Variable(NamedTuple):
    name: str
    default: str
    what: str


_RULE: Final = re.compile(r"^=+(?:  +=+)+\s*$")


def table_rows(doc: str) -> list[tuple[str, ...]]:
    """The rows of the first reStructuredText simple table in ``doc``, header skipped: each
    cell's lines joined (a cell's text that goes on on the next line), ``literals`` unquoted.
    A cell cut inside a literal (``FAILOVER_X_`` then ``Y``) is joined without a space.
    """
    lines = doc.splitlines()
    rules = [i for i, line in enumerate(lines) if _RULE.match(line)]
    if len(rules) < 3:
        return []
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", lines[rules[0]])]
    rows: list[list[str]] = []
    for line in lines[rules[1] + 1 : rules[2]]:
        cells = [
            line[start : spans[i + 1][0] if i + 1 < len(spans) else None].strip()
            for i, (start, _) in enumerate(spans)
        ]
        opened = bool(rows) and rows[-1][0].count("``") % 2 == 1
        if cells[0] and not opened:
            rows.append(cells)
            continue
        if not rows:
            continue
        for i, cell in enumerate(cells):
            if cell:
                glue = "" if i == 0 or rows[-1][i].count("``") % 2 == 1 else " "
                rows[-1][i] = f"{rows[-1][i]}{glue}{cell}" if rows[-1][i] else cell
    return [tuple(cell.replace("``", "") for cell in row) for row in rows]


def variables() -> list[Variable]:
    """Every variable of the worker, its default and what it is, in the tables' order."""
    found: list[Variable] = []
    for module in (streams.config, streams.security):
        for row in table_rows(module.__doc__ or ""):
            name, default, what = (*row, "", "")[:3]
            found.append(Variable(name, default, what))
    return found


def help_text() -> str:
    """The variables for a command's help epilog: one paragraph each (typer joins the lines
    of a paragraph), as ``NAME (default: D): what``, rich markup escaped."""
    from rich.markup import escape

    paragraphs = ["Environment variables, with their defaults:"]
    for v in variables():
        default = v.default.removeprefix("(").removesuffix(")")
        paragraphs.append(escape(f"{v.name} (default: {default}): {v.what}"))
    return "\n\n".join(paragraphs)
