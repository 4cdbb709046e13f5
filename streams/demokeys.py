"""The demo's operators and their keys: for the bundled Ambon case and the tests, never for
production.

The private keys are derived from a public text (``failover demo key: <operator>``), so anyone
can sign as a demo operator: a real deployment lists its operators' own public keys, made
with ``failover keygen`` (README, "Operators and signed overrides").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import nacl.signing

from workflows.operators import sign_override

__all__ = ["DEMO_KEY", "DEMO_OPERATORS", "demo_key", "sign_as"]

#: The demo operators: id (the actor of their overrides) and role.
DEMO_OPERATORS: Final = {"Plt. Kepala Dinas": "acting-head", "Kepala Dinas": "office-head"}
#: The key name of each demo operator's one key (key id ``OPERATOR/demo``).
DEMO_KEY: Final = "demo"


def demo_key(operator: str) -> nacl.signing.SigningKey:
    """The demo operator's signing key (public, see the module doc)."""
    seed = hashlib.sha256(f"failover demo key: {operator}".encode()).digest()
    return nacl.signing.SigningKey(seed)


def sign_as(event: Mapping[str, Any], operator: str | None = None) -> dict[str, Any]:
    """``event`` signed by a demo operator's key (by default, its ``data.actor``)."""
    who = operator if operator is not None else event["data"]["actor"]
    return sign_override(event, f"{who}/{DEMO_KEY}", demo_key(who))
