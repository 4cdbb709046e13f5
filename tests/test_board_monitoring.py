"""The alert rules and the Grafana dashboard use only metrics the board exports (promtool is
not at hand: the rules file is loaded and every expression's metric names are checked), and
the README's runbook has a section for every alert."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.board.metrics import METRICS
from streams.board.model import Board
from streams.board.reader import Lag
from streams.board.web import BoardWeb
from tests.boardrecords import ambon_manual, encode

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "infra" / "monitoring"
NAME = re.compile(r"\bfailover_[a-z0-9_]+")
DURATION = re.compile(r"^[0-9]+[smhd]$")


def exported() -> set[str]:
    """Every sample name a board with records, a measured lag and a skipped record exports."""
    board = Board()
    for kind, key, event in ambon_manual():
        board.apply(kind, kind, key.encode(), encode(event))
    board.apply("state", "state", b"x", b"not json")
    board.heard(datetime.now(UTC))
    lag = Lag("engine", {"link-status": 3}, datetime.now(UTC))
    web = BoardWeb(board, lambda: True, lambda: lag)
    text = generate_latest(web.registry).decode()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} == set(METRICS)
    return {sample.name for family in families for sample in family.samples}


def balanced(expr: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in expr:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def test_alert_rules_name_only_exported_metrics() -> None:
    names = exported()
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 5
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
        expr = rule["expr"]
        used = set(NAME.findall(expr))
        assert used, f"{rule['alert']}: names no board metric"
        assert used <= names, f"{rule['alert']}: {used - names} not exported"
        assert balanced(expr), rule["alert"]
        assert "for" not in rule or DURATION.match(rule["for"])
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["runbook"] == f"README.md#{rule['alert'].lower()}"


def test_runbook_has_a_section_per_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"\n#### {rule['alert']}\n" in readme, rule["alert"]


def test_dashboard_names_only_exported_metrics() -> None:
    names = exported()
    dashboard = json.loads((MONITORING / "board-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    for expr in exprs:
        used = set(NAME.findall(expr))
        assert used, expr
        assert used <= names, (expr, used - names)
        assert balanced(expr), expr
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
