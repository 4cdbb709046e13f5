"""The topology's operators: who they are, their public keys and their grants.

Plain data, read from the topology file's ``operators`` section (:mod:`workflows.topology`
builds it with :func:`decode_public_key` and :func:`grants_of`). What an operator may do with
it, verifying a signed override or a maintenance window against these keys and grants, is
:mod:`workflows.operators`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nacl.signing

__all__ = ["Grant", "Operator", "decode_public_key", "grants_of"]


@dataclass(frozen=True, slots=True)
class Grant:
    """Actions an operator may take, on every service of ``sites`` and on ``services``
    (and, for ``maintenance``, on ``links`` and every link of ``providers``)."""

    actions: frozenset[str]
    sites: frozenset[str]
    services: frozenset[str]
    links: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()

    def allows(self, action: str, service: str, site: str) -> bool:
        return action in self.actions and (site in self.sites or service in self.services)


@dataclass(frozen=True, slots=True)
class Operator:
    """A person who may steer the engine: their keys by key id, their role and grants."""

    id: str
    name: str
    role: str
    keys: Mapping[str, nacl.signing.VerifyKey]
    grants: tuple[Grant, ...]

    def may(self, action: str, service: str, site: str) -> bool:
        """Deny by default: only what a grant names."""
        return any(grant.allows(action, service, site) for grant in self.grants)


def decode_public_key(text: str) -> nacl.signing.VerifyKey:
    """An Ed25519 public key from its standard base64 (32 bytes).

    Raises:
        ValueError: not base64, or not 32 bytes.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not standard base64") from None
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes, an Ed25519 public key has 32")
    return nacl.signing.VerifyKey(raw)


def grants_of(entries: Iterable[Mapping[str, Any]]) -> tuple[Grant, ...]:
    """Grants from the topology's ``grants`` list (already checked by its schema)."""
    return tuple(
        Grant(
            frozenset(entry["actions"]),
            frozenset(entry.get("sites", ())),
            frozenset(entry.get("services", ())),
            frozenset(entry.get("links", ())),
            frozenset(entry.get("providers", ())),
        )
        for entry in entries
    )
