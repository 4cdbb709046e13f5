"""What a notice's text may hold: plain text that is also safe as HTML element content,
whatever an operator typed (module docstring of workflows/notices.py; the notice schema)."""

from __future__ import annotations

import html
import unicodedata

import jsonschema_rs
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import load_schema
from tests.helpers import make_topology, notices, override, run, service, tick
from workflows.notices import FRAGMENT_MAX, plain

NOTICE = jsonschema_rs.validator_for(load_schema("failover.notice.v1"))

HOSTILE = (
    '<script>alert("x")</script> <img src=x onerror=alert(1)> &amp; & AT&T'
    "\x1b[2J\x1b]8;;http://evil\x07link\x1b]8;;\x07 \u202egnp.exe\u202c \u2066x\u2069"
    "\r\n2026-12-05 INFO forged log line\x00\x85\u2028\u200b[/bold][red]x"
)


def safe(text: str) -> None:
    """The contract of every notice text (and of every fragment put into one)."""
    assert "<" not in text
    assert ">" not in text
    assert html.escape(html.unescape(text), quote=False) == text  # every & starts an entity
    for char in text:
        assert unicodedata.category(char) not in {"Cc", "Cf", "Zl", "Zp"}, repr(char)


@settings(max_examples=500)
@given(st.text(max_size=700) | st.sampled_from([HOSTILE, "a\tb", " x ", "x" * 900]))
def test_any_text_becomes_a_safe_fragment(value: str) -> None:
    fragment = plain(value)
    safe(fragment)
    shown = html.unescape(fragment)
    assert len(shown) <= FRAGMENT_MAX
    # Printable text that fits is shown as given, its runs of spaces as one, trimmed.
    if value.isprintable() and len(value) <= FRAGMENT_MAX:
        assert shown == " ".join(value.split())


def test_markup_and_controls_in_an_operators_reason_reach_no_notice_raw() -> None:
    topology = make_topology({"s": service(["a"])})
    out = run(
        topology,
        [
            tick(0),
            override(
                "s", 30, "pin", actor="<b>Rina</b>", role="on-call & <i>x</i>", reason=HOSTILE
            ),
            override(
                "s", 60, "unpin", actor="Rina\x1b[31m", role="r\u202e", reason="ok\r\nERROR x"
            ),
        ],
    )
    texts = [n["data"]["text"] for n in notices(out, "s")]
    assert len(texts) == 2
    for event in notices(out, "s"):
        NOTICE.validate(event)
    for text in texts:
        safe(text["id"])
        safe(text["en"])
    pinned = texts[0]["en"]
    assert "&lt;b&gt;Rina&lt;/b&gt;" in pinned
    assert "on-call &amp; &lt;i&gt;x&lt;/i&gt;" in pinned
    assert '&lt;script&gt;alert("x")&lt;/script&gt;' in pinned
    assert "AT&amp;T" in pinned
    assert "forged log line" in pinned  # kept, on the same line
    assert "ok ERROR x" in texts[1]["en"]


def test_a_long_reason_keeps_the_notice_within_its_schema() -> None:
    """A reason of 1,000 ampersands (the most the override schema allows) would be 5,000
    characters escaped; the notice's text may have 4,000."""
    topology = make_topology({"s": service(["a"])})
    out = run(
        topology,
        [tick(0), override("s", 30, "pin", actor="&" * 128, role="&" * 64, reason="&" * 1000)],
    )
    (event,) = notices(out, "s")
    NOTICE.validate(event)
    assert "\u2026" in event["data"]["text"]["en"]
