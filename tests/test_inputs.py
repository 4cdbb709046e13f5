"""The core's one entry point (workflows/inputs.py): what it answers for each input type, and
for what it refuses; its answer agrees with ``decode``, the judge, for any message.

A new input type gets its case here, beside its schema in ``schemas/`` and its case in
:meth:`workflows.inputs.Inputs.route`.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    at,
    envelope,
    make_topology,
    override,
    probe,
    raw,
    reconciled,
    record,
    service,
    tick,
)
from workflows.inputs import (
    INPUT_TYPES,
    MAX_EVENT_BYTES,
    Inputs,
    Refused,
    Routed,
    ServiceInput,
    Tick,
    Window,
    decode,
)
from workflows.records import Truncated
from workflows.timeutil import parse_time

TOPOLOGY = make_topology({"letters": service(["a"])}, ("a",))
INPUTS = Inputs(TOPOLOGY)


def micros(seconds: float) -> int:
    return parse_time(at(seconds))


def window(seconds: float) -> dict[str, Any]:
    data = {"action": "cancel", "actor": "Rina", "role": "on-call", "reason": "test"}
    return envelope("operator.maintenance.v1", "maintenance/w/1", seconds, "w", data)


#: One valid event of each input type, and what the entry point answers for it.
CASES: dict[str, tuple[dict[str, Any], Routed]] = {
    "link.status.v1": (
        probe("a", 5, "down", 12.5),
        ("a", "probe/a/5", micros(5), "down", 12.5, None),
    ),
    "clock.tick.v1": (tick(60), Tick(micros(60), "tick/60")),
    "operator.override.v1": (
        override("letters", 7, "force_manual"),
        ServiceInput(
            "letters", "operator.override.v1", override("letters", 7, "force_manual"), micros(7)
        ),
    ),
    "operator.maintenance.v1": (window(8), Window(window(8), micros(8))),
    "manual.record.v1": (
        record("letters", 9, "r1"),
        ServiceInput("letters", "manual.record.v1", record("letters", 9, "r1"), micros(9)),
    ),
    "reconcile.completed.v1": (
        reconciled("letters", 10, ["r1"]),
        ServiceInput(
            "letters", "reconcile.completed.v1", reconciled("letters", 10, ["r1"]), micros(10)
        ),
    ),
}


def test_every_input_type_has_a_case() -> None:
    assert set(CASES) == set(INPUT_TYPES)


def test_each_input_type_is_routed_to_its_answer() -> None:
    for type_, (event, expected) in CASES.items():
        assert INPUTS.route(raw(event), event.get("subject")) == expected, type_
        # The same answer when the caller has decoded the message already (traced replay).
        decoded = decode(raw(event))
        assert INPUTS.route(raw(event), None, decoded=decoded) == expected, type_


def test_what_the_topology_does_not_know_is_refused_with_its_subject_and_type() -> None:
    assert INPUTS.route(raw(probe("b", 1)), None) == Refused(
        "unknown-link: 'b' is not in the topology", "b", "link.status.v1"
    )
    assert INPUTS.route(raw(record("parcels", 1, "r")), None) == Refused(
        "unknown-service: 'parcels' is not in the topology", "parcels", "manual.record.v1"
    )


def test_what_does_not_decode_is_refused_with_decodes_reason() -> None:
    assert INPUTS.route(b"{not json", None) == Refused(decode(b"{not json"))  # type: ignore[arg-type]
    assert INPUTS.route(b"[]", None) == Refused(
        "unknown-type: 'NoneType' is not one of " + ", ".join(INPUT_TYPES)
    )
    too_big = b" " * (MAX_EVENT_BYTES + 1)
    assert INPUTS.route(too_big, None).reason.startswith("too-large: ")  # type: ignore[union-attr]
    cut = Truncated(b'{"type": "link.st', 100_000)
    assert INPUTS.route(cut, None) == Refused(cut.reason(MAX_EVENT_BYTES))
    # On Kafka: the key must be the subject.
    refused = INPUTS.route(raw(probe("a", 1)), "b")
    assert isinstance(refused, Refused)
    assert refused.reason.startswith("key-mismatch: ")


#: Values an event's fields may be given instead of their own.
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.sampled_from(["a", "b", "letters", "parcels", "", "2019-02-05T00:00:61Z", *INPUT_TYPES]),
    st.text(max_size=8),
)


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    """A valid message of some type, with a few of its fields (or its data's) replaced."""
    event, _ = CASES[draw(st.sampled_from(sorted(CASES)))]
    event = orjson.loads(orjson.dumps(event))  # a copy of the shared case
    for _ in range(draw(st.integers(0, 3))):
        data = event.get("data")
        where = data if isinstance(data, dict) and data and draw(st.booleans()) else event
        if not where:
            break
        name = draw(st.sampled_from(sorted(where)))
        if draw(st.booleans()):
            del where[name]
        else:
            where[name] = draw(_VALUES)
    return orjson.dumps(event)


@settings(max_examples=400, deadline=None)
@given(_messages())
def test_the_answer_agrees_with_decode(message: bytes) -> None:
    """Refused with decode's own reason when decode refuses; else the answer of the event's
    type, at its time, or refused because the topology does not know its subject."""
    answer = INPUTS.route(message, None)
    decoded = decode(message)
    if isinstance(decoded, str):
        assert answer == Refused(decoded)
        return
    event, time = decoded
    if isinstance(answer, Refused):
        assert answer.type == event["type"]
        assert answer.subject == event["subject"]
        # A link's id is no service, and a service's no link.
        known = TOPOLOGY.links if event["type"] == "link.status.v1" else TOPOLOGY.services
        assert answer.subject not in known
        return
    if isinstance(answer, tuple):
        assert (event["type"], answer[0], answer[2]) == ("link.status.v1", event["subject"], time)
        return
    assert (answer.type, answer.time) == (event["type"], time)
