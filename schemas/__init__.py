"""JSON Schemas (draft 2020-12) for the engine's messages and topology file.

Each message schema is self-contained (envelope and data in one file, no
cross-file ``$ref``), named after its CloudEvents ``type``:
``link.status.v1.schema.json`` is loaded by ``load_schema("link.status.v1")``.
``topology`` and ``deadletter`` are the topology file and the dead-letter
record of ``failover replay``. ``asyncapi.yaml`` describes the Kafka topics.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

__all__ = ["ASYNCAPI", "load_schema", "schema_names"]

ASYNCAPI = "asyncapi.yaml"
"""File name of the AsyncAPI 3.0 document, inside this package."""

_SUFFIX = ".schema.json"


@functools.cache
def schema_names() -> tuple[str, ...]:
    """Names of the available schemas.

    Returns:
        The sorted schema names, e.g. ``("clock.tick.v1", ..., "topology")``.
    """
    names = (
        entry.name[: -len(_SUFFIX)]
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    )
    return tuple(sorted(names))


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Load one schema by name.

    The result is cached and shared: callers must not mutate it.

    Args:
        name: A schema name, e.g. ``"link.status.v1"`` or ``"topology"``.

    Returns:
        The parsed JSON Schema.

    Raises:
        KeyError: If there is no schema of that name.
    """
    if name not in schema_names():
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(schema_names())}")
    text = resources.files(__name__).joinpath(name + _SUFFIX).read_text(encoding="utf-8")
    schema = json.loads(text)
    if not isinstance(schema, dict):  # pragma: no cover - guarded by the tests
        raise TypeError(f"schema {name!r} is not a JSON object")
    return schema
