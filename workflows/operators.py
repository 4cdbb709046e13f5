"""Who may steer the engine: signed overrides, verified against the topology's operators, their
keys and grants (:mod:`workflows.grants`).

An override (``operator.override.v1``) is an order to a city's service: force it to manual,
release its hold, pin or unpin it. Anyone who can write to the overrides topic could send
one, so the engine acts only on an override that an operator of the topology signed, and
only within that operator's grants. Deny by default: an override that is not signed, is
signed by a key the topology does not list, does not verify, is for an action or a service
the operator has no grant for, or is stamped too far behind the engine's clock, is refused
with its reason, and changes nothing.

The signature (Ed25519, by libsodium through PyNaCl) covers the override's canonical form,
:func:`canonical`: the bytes ``failover-override-v1`` and a newline, then a JSON array of its
``type``, ``id``, ``subject``, ``time``, ``data`` (keys sorted) and the key id, without
white space. The event carries two extension attributes (CloudEvents names):

- ``failoverkey``: the key id, ``OPERATOR/KEY`` (an operator may hold several keys: rotation);
- ``failoversig``: ``ed25519=`` and the 64-byte signature in standard base64.

An operator signs as themselves: ``data.actor`` must be the operator's id and ``data.role``
their role in the topology, so a transition caused by an override names who really sent it.

Verification is pure and deterministic (same override, topology and clock: same verdict),
so replay and the Kafka worker refuse the same overrides with the same reasons.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any, Final

import nacl.exceptions
import nacl.signing
import orjson

from workflows.grants import Operator
from workflows.records import AUDIT, Emitted, cloudevent, output_id
from workflows.timeutil import format_duration, format_time
from workflows.topology import Topology

__all__ = [
    "ACTIONS",
    "AUDIT_TYPE",
    "KEY_ATTRIBUTE",
    "MAINTENANCE",
    "RATE_WINDOW",
    "SIGNATURE_ATTRIBUTE",
    "Budget",
    "Judge",
    "audit",
    "authenticate",
    "canonical",
    "flooded",
    "judge_override",
    "override_judge",
    "rate_limited",
    "sign_override",
    "stale_reason",
    "verify_override",
]

#: The actions an override may ask for.
ACTIONS: Final = ("force_manual", "release", "pin", "unpin")
#: The action a grant names to let an operator plan maintenance windows
#: (``operator.maintenance.v1``, :mod:`workflows.maintenance`).
MAINTENANCE: Final = "maintenance"
#: The extension attribute that names the signing key, ``OPERATOR/KEY``.
KEY_ATTRIBUTE: Final = "failoverkey"
#: The extension attribute that holds the signature, ``ed25519=<base64>``.
SIGNATURE_ATTRIBUTE: Final = "failoversig"
#: The CloudEvents type of an audit record (topic ``operator-audit``).
AUDIT_TYPE: Final = "failover.audit.v1"
#: The fixed windows of event time (one minute, aligned) in which the overrides signed with one
#: key for one service are counted (policy ``max_overrides_per_minute``).
RATE_WINDOW: Final = 60_000_000
_SCHEME: Final = "ed25519="
_DOMAIN: Final = b"failover-override-v1\n"
#: What a signature covers starts with a domain per type, so that no signature of one kind
#: of order can be taken for another kind.
_DOMAINS: Final = {"operator.maintenance.v1": b"failover-maintenance-v1\n"}


def canonical(event: Mapping[str, Any], key_id: str) -> bytes:
    """What an operator's signature covers (module doc). A maintenance window's signature
    covers more: ``failover-maintenance-v1``, a newline, and the JSON array of the whole
    event (every attribute but ``failoversig`` and ``failoverkey``, keys sorted at every
    level) and the key id, so that no byte of it can change unseen."""
    type_ = event["type"]
    domain = _DOMAINS.get(type_) if isinstance(type_, str) else None
    if domain is not None:
        rest = {k: v for k, v in event.items() if k not in (KEY_ATTRIBUTE, SIGNATURE_ATTRIBUTE)}
        return domain + orjson.dumps([rest, key_id], option=orjson.OPT_SORT_KEYS)
    fields = [type_, event["id"], event["subject"], event["time"], event["data"], key_id]
    return _DOMAIN + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def sign_override(
    event: Mapping[str, Any], key_id: str, key: nacl.signing.SigningKey
) -> dict[str, Any]:
    """The override with ``failoverkey`` and ``failoversig`` set (any earlier ones replaced)."""
    unsigned = {
        name: value
        for name, value in event.items()
        if name not in (KEY_ATTRIBUTE, SIGNATURE_ATTRIBUTE)
    }
    signature = key.sign(canonical(unsigned, key_id)).signature
    return {
        **unsigned,
        KEY_ATTRIBUTE: key_id,
        SIGNATURE_ATTRIBUTE: _SCHEME + base64.b64encode(signature).decode("ascii"),
    }


def authenticate(
    event: Mapping[str, Any], operators: Mapping[str, Operator], accept_unsigned: bool = False
) -> Operator | str | None:
    """Who signed ``event`` (a schema-valid operator order: an override or a maintenance
    window): the :class:`~workflows.grants.Operator` whose listed key it verifies with and who
    signs as themselves (``data.actor`` and ``data.role`` theirs); ``None`` for an unsigned order
    taken as it is (``accept_unsigned``); else the dead-letter reason (``unauthenticated``,
    ``forbidden``). Grants are the caller's to check."""
    key_id = event.get(KEY_ATTRIBUTE)
    signature = event.get(SIGNATURE_ATTRIBUTE)
    if key_id is None and signature is None and accept_unsigned:
        return None
    if not isinstance(key_id, str) or not isinstance(signature, str):
        maintenance = event["type"] == "operator.maintenance.v1"
        kind = "a maintenance window" if maintenance else "an override"
        return (
            f"unauthenticated: not signed ({kind} needs {KEY_ATTRIBUTE} and "
            f"{SIGNATURE_ATTRIBUTE}, see the README on operators)"
        )
    operator_id, _, name = key_id.partition("/")
    operator = operators.get(operator_id)
    key = operator.keys.get(name) if operator is not None else None
    if operator is None or key is None:
        return f"unauthenticated: unknown key {key_id[:200]!r}"
    if not signature.startswith(_SCHEME):
        return f"unauthenticated: the signature is not {_SCHEME}<base64>"
    try:
        raw = base64.b64decode(signature[len(_SCHEME) :], validate=True)
        key.verify(canonical(event, key_id), raw)
    except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError):
        return f"unauthenticated: the signature does not verify with key {key_id!r}"
    data = event["data"]
    if data["actor"] != operator.id:
        return (
            f"forbidden: actor {data['actor'][:128]!r} is not the signing operator {operator.id!r}"
        )
    if data["role"] != operator.role:
        return (
            f"forbidden: role {data['role'][:64]!r} is not operator {operator.id!r}'s role "
            f"{operator.role!r}"
        )
    return operator


def stale_reason(
    event: Mapping[str, Any], time: int, watermark: int | None, max_age: int
) -> str | None:
    """``stale-signature`` and why, for a signed order stamped more than ``max_age``
    (``signature_max_age``) behind the engine's clock, ``watermark``; else ``None``."""
    signed = KEY_ATTRIBUTE in event or SIGNATURE_ATTRIBUTE in event
    if not signed or watermark is None or time >= watermark - max_age:
        return None
    return (
        f"stale-signature: stamped {format_time(time)}, more than "
        f"{format_duration(max_age)} (signature_max_age) behind the engine's clock, "
        f"{format_time(watermark)}"
    )


def verify_override(
    event: Mapping[str, Any],
    operators: Mapping[str, Operator],
    site: str,
    accept_unsigned: bool = False,
) -> str | None:
    """``None`` if ``event`` (a valid ``operator.override.v1`` for a service of ``site``) is
    signed by an operator who may do what it asks; else the dead-letter reason.

    ``accept_unsigned`` (the topology's ``unsigned_overrides: accept``, for development):
    an override with no signature at all is taken as it is; a signed one is still verified.
    """
    operator = authenticate(event, operators, accept_unsigned)
    if operator is None or isinstance(operator, str):
        return operator
    action, service = event["data"]["action"], event["subject"]
    if not operator.may(action, service, site):
        return (
            f"forbidden: operator {operator.id!r} has no grant to {action} service "
            f"{service!r} (site {site!r})"
        )
    return None


def judge_override(
    event: Mapping[str, Any],
    time: int,
    watermark: int | None,
    operators: Mapping[str, Operator],
    site: str,
    accept_unsigned: bool,
    max_age: int,
) -> str | None:
    """The verdict on an override before anything else is done with it: ``None`` to go on,
    else the dead-letter reason (:func:`verify_override`, then its age: an override stamped
    more than ``max_age`` behind the engine's clock, ``watermark``, is ``stale-signature``)."""
    reason = verify_override(event, operators, site, accept_unsigned)
    if reason is None:
        reason = stale_reason(event, time, watermark, max_age)
    return reason


def audit(
    override_id: str,
    service: str,
    site: str,
    time: int,
    data: Mapping[str, Any],
    key_id: str | None,
    reason: str | None,
    verdict: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Emitted:
    """The audit record of an operator's action: ``applied`` when ``reason`` is ``None``,
    else ``refused`` with the reason (the dead letter's); or the ``verdict`` given
    (``pending``, ``lapsed``: a release waiting for a second operator, and one that waited
    in vain). ``service`` is its subject and key. ``extra`` adds fields (``until``,
    ``expires``, ``approves``, ``approved_by``; ``window``, a maintenance window's id) that are
    left out when absent, so older records read the same."""
    if verdict is None:
        verdict = "refused" if reason is not None else "applied"
    qualifier = reason.split(":")[0] if verdict == "refused" and reason else verdict
    fields: dict[str, Any] = {
        "override": override_id,
        "action": data["action"],
        "actor": data["actor"],
        "role": data["role"],
        "key": key_id,
        "verdict": verdict,
        "reason": reason,
        "operator_reason": data["reason"],
    }
    if extra:
        fields.update(extra)
    ident = output_id(override_id, "audit", qualifier)
    return Emitted(AUDIT, service, cloudevent(AUDIT_TYPE, ident, site, time, service, fields))


#: One service's count of overrides per signing key: key id -> (window start, overrides
#: verified in it, 1 once one was refused in it else 0). Tuples, replaced, never changed in
#: place (workflows/isolation.py snapshots the dict one level deep).
Budget = dict[str, tuple[int, int, int]]


def rate_limited(budget: Budget, key_id: str, time: int, limit: int) -> tuple[str, bool] | None:
    """Count an override signed with ``key_id`` (a key the topology lists) at ``time`` in
    ``budget``: ``None`` if it may be verified (at most ``limit`` a minute), else the reason
    to refuse it *before* its signature is checked, and whether to audit the refusal (the
    first in the window: a flood is audited once, every copy dead-lettered). Deterministic:
    event time and input order only."""
    window = time - time % RATE_WINDOW
    start, used, refused = budget.get(key_id, (-1, 0, 0))
    if window > start:
        budget[key_id] = (window, 1, 0)
        return None
    if used < limit:
        budget[key_id] = (start, used + 1, refused)
        return None
    budget[key_id] = (start, used, 1)
    return _limited(key_id, start, limit), refused == 0


def flooded(budget: Budget | None, key_id: str, time: int, limit: int) -> str | None:
    """:func:`rate_limited`'s reason when it would refuse the override and not audit it (so
    nothing in ``budget`` would change): the cheap check a caller makes before decoding a
    flood's copies in full. ``None`` when in doubt."""
    entry = budget.get(key_id) if budget else None
    if entry is None:
        return None
    start, used, refused = entry
    if time - time % RATE_WINDOW > start or used < limit or not refused:
        return None
    return _limited(key_id, start, limit)


def _limited(key_id: str, start: int, limit: int) -> str:
    return (
        f"rate-limited: more than {limit} overrides signed with key {key_id[:200]!r} for this "
        f"service in the minute from {format_time(start)} (max_overrides_per_minute); refused "
        "before the signature is checked, the first audited, each dead-lettered"
    )


#: ``judge(event, time, watermark, budget)``: ``None``, or a refused override's reason and
#: audit record (``None`` for the rate-limited copies of a flood after the first).
Judge = Callable[
    [Mapping[str, Any], int, "int | None", "Budget | None"], "tuple[str, Emitted | None] | None"
]


def override_judge(topology: Topology) -> Judge:
    """``judge(event, time, watermark)`` for ``topology`` (a
    :class:`~workflows.topology.Topology`), as both the replay engine and the Kafka worker
    call it on an override of one of its services: ``None`` to go on, else the dead-letter
    reason and the audit record of the refusal (:func:`judge_override`)."""
    operators = topology.operators
    services = topology.services
    accept = topology.unsigned_overrides
    max_age = topology.policy.signature_max_age

    def judge(
        event: Mapping[str, Any], time: int, watermark: int | None, budget: Budget | None = None
    ) -> tuple[str, Emitted | None] | None:
        service = event["subject"]
        svc = services[service]
        key_id = event.get(KEY_ATTRIBUTE)
        key_id = key_id if isinstance(key_id, str) else None
        if budget is not None and key_id is not None and _listed(operators, key_id):
            limited = rate_limited(budget, key_id, time, svc.policy.max_overrides_per_minute)
            if limited is not None:
                why, audited = limited
                record = audit(event["id"], service, svc.site, time, event["data"], key_id, why)
                return why, record if audited else None
        site = svc.site
        reason = judge_override(event, time, watermark, operators, site, accept, max_age)
        if reason is None:
            return None
        return reason, audit(event["id"], service, site, time, event["data"], key_id, reason)

    return judge


def _listed(operators: Mapping[str, Operator], key_id: str) -> bool:
    """Whether ``key_id`` names a key of the topology (only those are counted: bounded)."""
    operator_id, _, name = key_id.partition("/")
    operator = operators.get(operator_id)
    return operator is not None and name in operator.keys
