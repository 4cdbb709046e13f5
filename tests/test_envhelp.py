"""``failover worker --help`` lists every variable the worker reads, with its default, from
the tables in streams/config.py and streams/security.py (the one place each is defined)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from streams.cli import app
from streams.envhelp import table_rows, variables

STREAMS = Path(__file__).resolve().parents[1] / "streams"
#: Read by other commands than the worker (``failover override``'s key).
NOT_THE_WORKERS = {"FAILOVER_OPERATOR_KEY", "FAILOVER_OPERATOR_KEY_FILE"}


def _read_by_the_code() -> set[str]:
    """Every ``"FAILOVER_..."`` or ``"KAFKA_..."`` string in the code of streams/."""
    found: set[str] = set()
    for path in STREAMS.rglob("*.py"):
        found.update(re.findall(r"\"((?:FAILOVER|KAFKA)_[A-Z0-9_]*)\"", path.read_text()))
    return found - NOT_THE_WORKERS - {"KAFKA_ONLY"}  # a name of the code, not a variable


def test_every_variable_the_code_reads_is_listed() -> None:
    listed = {v.name for v in variables()}
    prefixes = {name.removesuffix("<NAME>") for name in listed if name.endswith("<NAME>")}
    read = _read_by_the_code()
    assert read  # the scan finds something
    missing = {n for n in read if n not in listed and n not in prefixes}
    assert not missing, f"read but not in a table of streams/config.py or security.py: {missing}"


def test_a_name_cut_across_lines_is_joined() -> None:
    names = [v.name for v in variables()]
    assert "FAILOVER_TRANSITIONS_RETENTION_DAYS" in names
    defaults = {v.name: v.default for v in variables()}
    assert defaults["FAILOVER_PARTITIONS"] == "6"
    # and a default cut inside its literal
    assert defaults["FAILOVER_TOPIC_SERVICE_REPARTITION"] == "APP_ID-service-repartition"
    assert defaults["KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"


def test_table_rows_reads_a_simple_table() -> None:
    doc = textwrap.dedent("""\
    x

    ====  =======  =====
    a     b        c
    ====  =======  =====
    ``N`` ``1``    one
                   more
    ``M_  (none)   two
    X``
    ``K`` ``a-b-   three
          c``
    ====  =======  =====
    """)
    assert table_rows(doc) == [
        ("N", "1", "one more"), ("M_X", "(none)", "two"), ("K", "a-b-c", "three")
    ]  # fmt: skip


def test_worker_help_shows_them_with_their_defaults() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for v in variables():
        assert v.name in text
    assert "FAILOVER_PARTITIONS (default: 6): partitions of the inputs" in text
    assert "KAFKA_SSL_CAFILE (default: system CAs)" in text
