"""``failover keygen``, ``failover override`` and ``failover maintenance``: an operator's key,
and a signed override or maintenance window action sent to a running deployment, with the
engine's verdict read back from the audit topic.

The private key is a file of one line, the key's 32-byte seed in standard base64, readable by
its owner only (``keygen`` writes it so and never prints it); ``override`` reads it from
``--key-file`` or ``FAILOVER_OPERATOR_KEY_FILE``, or from ``FAILOVER_OPERATOR_KEY`` itself
(a secret by its name: never logged).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import nacl.signing
import orjson

from workflows.maintenance import MAINTENANCE_TYPE
from workflows.operators import ACTIONS, sign_override
from workflows.timeutil import format_time, parse_event_time

__all__ = [
    "KEY_ENV",
    "KEY_FILE_ENV",
    "OperatorKeyError",
    "new_key",
    "read_key",
    "send_override",
    "signed_maintenance",
    "signed_override",
]

KEY_ENV: Final = "FAILOVER_OPERATOR_KEY"
KEY_FILE_ENV: Final = "FAILOVER_OPERATOR_KEY_FILE"


class OperatorKeyError(ValueError):
    """A private key that cannot be read or used; the message never holds the key."""


def new_key(path: Path) -> str:
    """Write a new private key to ``path`` (mode 0600; an existing file is never replaced)
    and return its public key (standard base64), for the topology's ``keys``."""
    key = nacl.signing.SigningKey.generate()
    text = base64.b64encode(bytes(key)).decode("ascii") + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        raise OperatorKeyError(f"{path}: exists; a key is never overwritten") from None
    except OSError as exc:
        raise OperatorKeyError(f"{path}: cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return base64.b64encode(bytes(key.verify_key)).decode("ascii")


def read_key(key_file: Path | None, env: Mapping[str, str]) -> nacl.signing.SigningKey:
    """The operator's private key: ``key_file``, else the environment's."""
    source: str
    if key_file is None and env.get(KEY_FILE_ENV):
        key_file = Path(env[KEY_FILE_ENV])
    if key_file is not None:
        source = str(key_file)
        try:
            mode = key_file.stat().st_mode
            text = key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else "not ASCII"
            raise OperatorKeyError(f"{source}: cannot read the key: {problem}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise OperatorKeyError(
                f"{source}: readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 {source}"
            )
    elif env.get(KEY_ENV):
        source, text = KEY_ENV, env[KEY_ENV]
    else:
        raise OperatorKeyError(f"no key: give --key-file, or set {KEY_FILE_ENV} or {KEY_ENV}")
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise OperatorKeyError(f"{source}: not a key made by failover keygen") from None
    if len(seed) != 32:
        raise OperatorKeyError(f"{source}: not a key made by failover keygen")
    return nacl.signing.SigningKey(seed)


def signed_override(
    action: str,
    service: str,
    reason: str,
    operator: str,
    role: str,
    key_name: str,
    key: nacl.signing.SigningKey,
    now: datetime | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """The override as the engine expects it, signed, stamped now (UTC, milliseconds).
    ``until`` (RFC 3339 with a zone; force_manual and pin only): when it expires, on event
    time; sent in UTC.

    Raises:
        ValueError: an unknown action; ``until`` on release or unpin, not a time with a
            zone, or not after now.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    moment = now or datetime.now(UTC)
    stamp = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data = {"action": action, "actor": operator, "role": role, "reason": reason}
    if until is not None:
        if action not in ("force_manual", "pin"):
            raise ValueError(
                f"--until is not applicable to {action}: only force_manual and pin last "
                "(and expire); release and unpin take effect once"
            )
        try:
            expires = parse_event_time(until)
        except ValueError as exc:
            raise ValueError(f"--until: {exc} (RFC 3339 with a zone, e.g. "
                             "2026-05-01T08:30:00Z)") from None  # fmt: skip
        if expires <= parse_event_time(stamp):
            raise ValueError(f"--until {until} is not after now, {stamp}")
        data["until"] = format_time(expires)
    event = {
        "specversion": "1.0",
        "id": f"override/{service}/{action}/{uuid.uuid4()}",
        "source": "/operators/failover-cli",
        "type": "operator.override.v1",
        "time": stamp,
        "subject": service,
        "datacontenttype": "application/json",
        "data": data,
    }
    return sign_override(event, f"{operator}/{key_name}", key)


#: What ``failover maintenance`` may ask.
WINDOW_ACTIONS: Final = ("announce", "extend", "cancel")


def signed_maintenance(
    action: str,
    window: str,
    reason: str,
    operator: str,
    role: str,
    key_name: str,
    key: nacl.signing.SigningKey,
    *,
    links: list[str] | None = None,
    site: str | None = None,
    provider: str | None = None,
    start: str | None = None,
    end: str | None = None,
    notice: tuple[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A maintenance window's action (``operator.maintenance.v1``), signed, stamped now.

    Raises:
        ValueError: what the action needs is missing or malformed (one of links, site or
            provider, start, end and the notice in both languages to announce; the end to
            extend; nothing else to cancel), or a time is not RFC 3339 with an offset.
    """
    if action not in WINDOW_ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(WINDOW_ACTIONS)}")
    data: dict[str, Any] = {"action": action, "actor": operator, "role": role, "reason": reason}
    for name, value in (("start", start), ("end", end)):
        if value is not None:
            try:
                parse_event_time(value)
            except ValueError as exc:
                raise ValueError(f"--{name}: {exc}") from None
    if action == "announce":
        scopes = [name for name, value in (("links", links), ("site", site),
                                           ("provider", provider)) if value]  # fmt: skip
        if len(scopes) != 1:
            raise ValueError("announce needs exactly one of --links, --site or --provider")
        if start is None or end is None or notice is None:
            raise ValueError("announce needs --start, --end, --notice-id and --notice-en")
        data |= {"links": links} if links else {"site": site} if site else {"provider": provider}
        data |= {"start": start, "end": end, "notice": {"id": notice[0], "en": notice[1]}}
    elif links or site or provider or start is not None or notice is not None:
        raise ValueError(f"{action} names the window only (and, to extend, --end)")
    elif action == "extend":
        if end is None:
            raise ValueError("extend needs --end")
        data["end"] = end
    elif end is not None:
        raise ValueError("cancel takes no --end")
    moment = now or datetime.now(UTC)
    stamp = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {
        "specversion": "1.0",
        "id": f"maintenance/{window}/{action}/{uuid.uuid4()}",
        "source": "/operators/failover-cli",
        "type": MAINTENANCE_TYPE,
        "time": stamp,
        "subject": window,
        "datacontenttype": "application/json",
        "data": data,
    }
    return sign_override(event, f"{operator}/{key_name}", key)


async def send_override(
    event: Mapping[str, Any],
    bootstrap: list[str],
    overrides_topic: str,
    audit_topic: str,
    client_options: Mapping[str, Any],
    wait: float,
) -> dict[str, Any] | None:
    """Publish ``event`` (keyed by its subject: an override to its service's partition, the
    default partitioner; a maintenance window's action to every partition, as the engine
    needs it) and return the data of its audit record once the engine has committed it, or
    ``None`` after ``wait`` seconds (the engine applies it at the next tick past its time)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, **client_options
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        **client_options,
    )
    await producer.start()
    await consumer.start()
    try:
        try:
            partitions = await producer.partitions_for(audit_topic)  # waits for metadata
        except Exception:  # aiokafka: unknown topic, or not authorised to see it
            partitions = set()
        if not partitions:
            raise OperatorKeyError(f"no topic {audit_topic!r}: is a worker running?")
        tps = [TopicPartition(audit_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # positions fixed before the override is sent
            await consumer.position(tp)
        subject = str(event["subject"]).encode("utf-8")
        value = orjson.dumps(event)
        if event["type"] == MAINTENANCE_TYPE:
            targets = sorted(await producer.partitions_for(overrides_topic))
            sent = [await producer.send(overrides_topic, value, key=subject, partition=p)
                    for p in targets]  # fmt: skip
            for future in sent:
                await future
        else:
            await producer.send_and_wait(overrides_topic, value, key=subject)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            batches = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for records in batches.values():
                for record in records:
                    try:
                        audit = orjson.loads(record.value or b"")
                    except orjson.JSONDecodeError:
                        continue
                    data = audit.get("data") if isinstance(audit, dict) else None
                    if isinstance(data, dict) and data.get("override") == event["id"]:
                        return data
        return None
    finally:
        await consumer.stop()
        await producer.stop()
