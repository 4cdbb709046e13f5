"""The Kafka worker's settings, every one from the environment, with documented defaults.

=================================  ==========================  ==================================
variable                           default                     what
=================================  ==========================  ==================================
``KAFKA_BOOTSTRAP_SERVERS``        ``127.0.0.1:9092``          comma-separated ``host:port`` list
``FAILOVER_TOPOLOGY``              (none: the worker needs it) path of the topology YAML
``FAILOVER_TOPIC_PREFIX``          (none)                      put before every topic name below
                                                               and the default app id; the app id
                                                               must start with it
``FAILOVER_APP_ID``                ``failover-engine``         faust app id = consumer group id,
                                                               prefix of the internal topic, of
                                                               changelog topics and of
                                                               transactional ids
``FAILOVER_TOPIC_LINK_STATUS``     ``link-status``             input, key: link id
``FAILOVER_TOPIC_OVERRIDES``       ``operator-overrides``      input, key: service id
``FAILOVER_TOPIC_FEEDBACK``        ``service-feedback``        input, key: service id
``FAILOVER_TOPIC_COMMANDS``        ``failover-commands``       output, key: service id
``FAILOVER_TOPIC_TRANSITIONS``     ``service-transitions``     output, key: service id
``FAILOVER_TOPIC_STATE``           ``service-state``           output, compacted, key: service
                                                               id: each service's current state
                                                               (the public read model)
``FAILOVER_TOPIC_AUDIT``           ``operator-audit``          output: every operator action,
                                                               applied or refused
``FAILOVER_TOPIC_DEADLETTER``      ``failover-deadletter``     bad input, with the reason
``FAILOVER_TOPIC_CHANGES``         ``APP_ID-link-changes``     internal: link health changes,
                                                               repartitioned by service id
``FAILOVER_TOPIC_REPARTITION``     ``APP_ID-link-repartition`` internal: readings that reached
                                                               a partition their link (murmur2)
                                                               is not in, forwarded to it
``FAILOVER_TOPIC_SERVICE_          ``APP_ID-service-           internal: overrides and feedback
REPARTITION``                      repartition``               that reached a partition their
                                                               service (murmur2) is not in,
                                                               forwarded to it
``FAILOVER_PARTITIONS``            ``6``                       partitions of the inputs, of the
                                                               internal topic and of the tables
``FAILOVER_REPLICATION``           (the brokers' default)      replication factor of new topics;
                                                               unset: the brokers'
                                                               default.replication.factor
``FAILOVER_TRANSITIONS_RETENTION_  ``90``                      days the transitions topic keeps
DAYS``                                                         its records (0: for ever)
``FAILOVER_STORE``                 ``rocksdb://``              faust table store (``memory://``)
``FAILOVER_DATA_DIR``              ``./failover-data``         faust data directory (tables)
``FAILOVER_PROCESSING_GUARANTEE``  ``exactly_once``            or ``at_least_once``
``FAILOVER_TICK_INTERVAL``         ``1.0``                     seconds between ``clock.tick.v1``;
                                                               ``0``: no ticker (ticks come from
                                                               elsewhere, e.g. a replayed file)
``FAILOVER_COMMIT_INTERVAL``       ``0.5``                     longest time between commits; the
                                                               transactions of a batch that sent
                                                               records (under exactly-once,
                                                               invisible until committed) are
                                                               committed at once
``FAILOVER_FETCH_MAX_WAIT``        ``0.02``                    seconds the broker may hold a fetch
                                                               with no new record: how late an
                                                               input on an idle partition can
                                                               be seen (faust's own is 1.5 s)
``FAILOVER_TRANSACTION_TIMEOUT``   ``300``                     seconds a transaction may stay
                                                               open: the longest broker outage
                                                               exactly-once rides out (at most
                                                               the broker's
                                                               transaction.max.timeout.ms)
``FAILOVER_SESSION_TIMEOUT``       ``10``                      seconds before the group gives a
                                                               silent worker's partitions to
                                                               the others (6 to 1800)
``FAILOVER_MAX_EVENT_BYTES``       ``65536``                   larger inputs are dead-lettered
``FAILOVER_WEB_PORT``              ``0``                       faust web server port; 0: off
``FAILOVER_LOG_LEVEL``             ``info``                    debug, info, warning, error
``FAILOVER_TICK_SECRET``           (none)                      key of the ticks' HMAC-SHA256
                                                               tag, the same for every worker
                                                               (32 bytes or more)
``FAILOVER_TICK_SECRET_FILE``      (none)                      a file holding that key instead
``FAILOVER_UNSIGNED_TICKS``        ``refuse``                  ``accept``: no key, ticks are not
                                                               authenticated (development and
                                                               tests only)
``FAILOVER_FAUST_<NAME>``          (none)                      faust's setting read from
                                                               ``<NAME>`` (``PRODUCER_LINGER``...),
                                                               over what streams/app.py chose
=================================  ==========================  ==================================

How the clients connect (TLS, SASL, mutual TLS: ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``,
``KAFKA_SSL_*``) is read and checked by streams/security.py, and kept in ``Settings.security``.

faust's own variables (``PROCESSING_GUARANTEE``, ``BROKER_URL``, ``WEB_PORT``, ``TIMEZONE``...)
are not read: faust would let them override the worker's settings, so a stray
``PROCESSING_GUARANTEE=at_least_once`` in a container's environment used to turn exactly-once
off without a word. ``FAILOVER_FAUST_`` makes such an override a visible decision.

The worker refuses to start without a tick key unless ``FAILOVER_UNSIGNED_TICKS=accept``
says that unauthenticated ticks are fine (:meth:`Settings.tick_key`): a producer that can
send a tick can move the engine's clock. The key is held in a :class:`Secret`, which never
shows its value (not in ``describe()``, not in an error).

Nothing here imports faust: the settings are checked before anything heavy starts, and every
error names the variable and what is wrong with its value. No error and no log line shows the
value of a variable whose name says it holds a secret (``PASSWORD``, ``SECRET``, ``TOKEN``,
``CREDENTIALS``, ``SASL``, ``..._KEY``...: :mod:`streams.redact`); the worker also masks
every such value of the environment in everything it logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final

from streams.redact import MASK, is_secret, shown
from streams.security import KafkaSecurity, SecurityError
from workflows.inputs import INPUT_STREAMS, MAX_EVENT_BYTES
from workflows.records import AUDIT, COMMANDS, DEADLETTER, STATE, TRANSITIONS

__all__ = [
    "APP_ID",
    "INPUT_MAX_MESSAGE_BYTES",
    "INPUT_TOPIC_FIELDS",
    "Secret",
    "Settings",
    "SettingsError",
]

#: ``max.message.bytes`` of the input and dead-letter topics: a 2 MB input must reach the
#: engine whole, so that it can be refused as ``too-large`` and dead-lettered with its bytes.
INPUT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024

#: The default app id (``FAILOVER_APP_ID``), which the internal topic's default name starts with.
APP_ID: Final = "failover-engine"

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_APP_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_SERVER = re.compile(r"^[^\s:,]+:[0-9]{1,5}$")
_LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_GUARANTEES: Final = ("exactly_once", "at_least_once")
_STORES: Final = ("memory", "rocksdb")


class SettingsError(ValueError):
    """A variable of the environment is missing or invalid; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


#: Prefix of the variables passed to faust as its own (the prefix removed).
FAUST_PREFIX: Final = "FAILOVER_FAUST_"


def _faust_env(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    found = []
    for variable, value in env.items():
        if variable.startswith(FAUST_PREFIX):
            name = variable[len(FAUST_PREFIX) :]
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise SettingsError(
                    variable, "name a faust setting, e.g. FAILOVER_FAUST_PRODUCER_LINGER"
                )
            if is_secret(name):
                # faust takes its one secret, BROKER_CREDENTIALS, only as an object: as text
                # it stops the worker with the value in the traceback.
                raise SettingsError(
                    variable,
                    "faust takes no secret as text from its environment (the value is not "
                    "shown); set the broker's security with the worker's own settings",
                )
            found.append((name, value))
    return tuple(sorted(found))


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = _text(env, name, str(default))
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(name, f"{shown(name, text)} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(name, f"{value} is out of range [{low}, {high}]")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero: bool) -> float:
    text = _text(env, name, str(default))
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(name, f"{shown(name, text)} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        allowed = "0 or more" if zero else "more than 0"
        raise SettingsError(name, f"{shown(name, text)} must be {allowed} seconds")
    return value


def _session_timeout(env: Mapping[str, str]) -> float:
    name = "FAILOVER_SESSION_TIMEOUT"
    value = _seconds(env, name, 10.0, zero=False)
    # The broker's group.min/max.session.timeout.ms defaults: it refuses others at join time.
    if not 6 <= value <= 1800:
        raise SettingsError(name, f"{value:g} is out of range [6, 1800] seconds")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _text(env, name, default).lower()
    if value not in choices:
        raise SettingsError(name, f"{shown(name, value)} is not one of {', '.join(choices)}")
    return value


# --- The tick key: ticks authenticated with a secret the workers share (workflows/clock.py).

#: The shortest tick key accepted: HMAC-SHA256's own output length.
MIN_TICK_SECRET_BYTES: Final = 32
_UNSIGNED: Final = ("refuse", "accept")


class Secret:
    """A secret value that never shows itself: ``repr`` and ``str`` say only that it is set."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value).digest())


def _tick_secret(env: Mapping[str, str]) -> Secret | None:
    """``FAILOVER_TICK_SECRET``, or the content of ``FAILOVER_TICK_SECRET_FILE`` (whitespace
    at either end removed); neither may be shorter than :data:`MIN_TICK_SECRET_BYTES`."""
    text = env.get("FAILOVER_TICK_SECRET", "").strip()
    path = _text(env, "FAILOVER_TICK_SECRET_FILE", "")
    if text and path:
        raise SettingsError("FAILOVER_TICK_SECRET_FILE", "set it or FAILOVER_TICK_SECRET, not both")
    if path:
        variable = "FAILOVER_TICK_SECRET_FILE"
        try:
            value = Path(path).read_bytes().strip()
        except OSError as exc:
            raise SettingsError(variable, f"{path}: {exc.strerror or 'cannot be read'}") from None
    else:
        variable, value = "FAILOVER_TICK_SECRET", text.encode()
    if not value:
        return None
    if len(value) < MIN_TICK_SECRET_BYTES:
        raise SettingsError(
            variable,
            f"the key has {len(value)} bytes; use {MIN_TICK_SECRET_BYTES} or more "
            "(e.g. the output of openssl rand -hex 32)",
        )
    return Secret(value)


def _unsigned_ticks(env: Mapping[str, str], secret: Secret | None) -> bool:
    accept = _choice(env, "FAILOVER_UNSIGNED_TICKS", "refuse", _UNSIGNED) == "accept"
    if accept and secret is not None:
        raise SettingsError(
            "FAILOVER_UNSIGNED_TICKS", "accept, but a tick key is set: choose one of the two"
        )
    return accept


# --- end of the tick key


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker is configured with. Build it with :meth:`from_env`."""

    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    topology: Path | None = None
    app_id: str = APP_ID
    # The one set of default topic names: the outputs' are the core's logical names
    # (workflows/records.py), which the wiring maps to these fields.
    topic_link_status: str = "link-status"
    topic_overrides: str = "operator-overrides"
    topic_feedback: str = "service-feedback"
    topic_commands: str = COMMANDS
    topic_transitions: str = TRANSITIONS
    topic_state: str = STATE
    topic_audit: str = AUDIT
    topic_deadletter: str = DEADLETTER
    topic_changes: str = f"{APP_ID}-link-changes"
    topic_repartition: str = f"{APP_ID}-link-repartition"
    topic_service_repartition: str = f"{APP_ID}-service-repartition"
    partitions: int = 6
    #: ``None``: the brokers' ``default.replication.factor`` (streams/topics.py).
    replication: int | None = None
    transitions_retention_days: int = 90
    store: str = "rocksdb://"
    data_dir: Path = Path("failover-data")
    processing_guarantee: str = "exactly_once"
    tick_interval: float = 1.0
    commit_interval: float = 0.5
    fetch_max_wait: float = 0.02
    transaction_timeout: float = 300.0
    session_timeout: float = 10.0
    max_event_bytes: int = MAX_EVENT_BYTES
    web_port: int = 0
    log_level: str = "info"
    #: The ticks' HMAC key (``FAILOVER_TICK_SECRET`` or ``_FILE``); see :meth:`tick_key`.
    tick_secret: Secret | None = None
    #: ``FAILOVER_UNSIGNED_TICKS=accept``: ticks need no tag (development and tests only).
    unsigned_ticks: bool = False
    #: faust settings by their faust environment name, from ``FAILOVER_FAUST_<NAME>``.
    faust_env: tuple[tuple[str, str], ...] = ()
    #: Put before every topic name and the default app id (``FAILOVER_TOPIC_PREFIX``).
    topic_prefix: str = ""
    #: How every client connects to the brokers (streams/security.py).
    security: KafkaSecurity = dataclasses.field(default_factory=KafkaSecurity)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (``os.environ`` by default).

        Raises:
            SettingsError: a value is invalid; the message names the variable.
        """
        env = os.environ if env is None else env
        servers = tuple(
            s.strip()
            for s in _text(env, "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092").split(",")
            if s.strip()
        )
        for server in servers:
            if not _SERVER.match(server):
                raise SettingsError("KAFKA_BOOTSTRAP_SERVERS", f"{server!r} is not host:port")
        topology_text = _text(env, "FAILOVER_TOPOLOGY", "")
        prefix = _topic_prefix(env)
        app_id = _text(env, "FAILOVER_APP_ID", f"{prefix}{APP_ID}")
        if not _APP_ID.match(app_id):
            raise SettingsError("FAILOVER_APP_ID", f"{app_id!r}: use 1 to 200 of A-Z a-z 0-9 . _ -")
        if not app_id.startswith(prefix):
            raise SettingsError(
                "FAILOVER_APP_ID",
                f"{app_id!r} does not start with FAILOVER_TOPIC_PREFIX {prefix!r}: its internal "
                "topics, consumer group and transactional ids would fall outside the prefix",
            )
        topics: dict[str, str] = {}
        for field, variable in _TOPICS:
            name = prefix + _text(env, variable, _TOPIC_DEFAULTS[field])
            if field in _INTERNAL and not _text(env, variable, ""):
                name = f"{app_id}-{_INTERNAL[field]}"  # the app's own, as its changelogs
            if not _TOPIC.match(name) or name in (".", ".."):
                raise SettingsError(
                    variable, f"{name!r} is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)"
                )
            if name in topics.values():
                other = next(v for f, v in _TOPICS if topics.get(f) == name)
                raise SettingsError(variable, f"{name!r} is already the topic of {other}")
            topics[field] = name
        store = _text(env, "FAILOVER_STORE", "rocksdb://")
        scheme = store.split("://", 1)[0].lower() if "://" in store else ""
        if scheme not in _STORES:
            raise SettingsError(
                "FAILOVER_STORE", f"{store!r}: use memory:// or rocksdb:// (a faust store URL)"
            )
        max_event_bytes = _int(
            env, "FAILOVER_MAX_EVENT_BYTES", MAX_EVENT_BYTES, 1, INPUT_MAX_MESSAGE_BYTES // 2
        )
        tick_secret = _tick_secret(env)
        try:
            security = KafkaSecurity.from_env(env)
        except SecurityError as exc:
            raise SettingsError(exc.variable, exc.problem) from None
        return cls(
            bootstrap_servers=servers or ("127.0.0.1:9092",),
            topology=Path(topology_text) if topology_text else None,
            app_id=app_id,
            partitions=_int(env, "FAILOVER_PARTITIONS", 6, 1, 10_000),
            replication=(
                _int(env, "FAILOVER_REPLICATION", 1, 1, 100)
                if _text(env, "FAILOVER_REPLICATION", "")
                else None
            ),
            transitions_retention_days=_int(
                env, "FAILOVER_TRANSITIONS_RETENTION_DAYS", 90, 0, 36_500
            ),
            store=store,
            data_dir=Path(_text(env, "FAILOVER_DATA_DIR", "failover-data")),
            processing_guarantee=_choice(
                env, "FAILOVER_PROCESSING_GUARANTEE", "exactly_once", _GUARANTEES
            ),
            tick_interval=_seconds(env, "FAILOVER_TICK_INTERVAL", 1.0, zero=True),
            commit_interval=_seconds(env, "FAILOVER_COMMIT_INTERVAL", 0.5, zero=False),
            fetch_max_wait=_seconds(env, "FAILOVER_FETCH_MAX_WAIT", 0.02, zero=True),
            transaction_timeout=_seconds(env, "FAILOVER_TRANSACTION_TIMEOUT", 300.0, zero=False),
            session_timeout=_session_timeout(env),
            max_event_bytes=max_event_bytes,
            web_port=_int(env, "FAILOVER_WEB_PORT", 0, 0, 65535),
            log_level=_choice(env, "FAILOVER_LOG_LEVEL", "info", _LOG_LEVELS),
            tick_secret=tick_secret,
            unsigned_ticks=_unsigned_ticks(env, tick_secret),
            faust_env=_faust_env(env),
            topic_prefix=prefix,
            security=security,
            **topics,
        )

    def topology_path(self) -> Path:
        """The topology file, which the worker cannot run without.

        Raises:
            SettingsError: ``FAILOVER_TOPOLOGY`` is not set, or names no file.
        """
        if self.topology is None:
            raise SettingsError(
                "FAILOVER_TOPOLOGY", "not set: the worker needs the path of the topology YAML"
            )
        if not self.topology.is_file():
            raise SettingsError("FAILOVER_TOPOLOGY", f"{self.topology}: no such file")
        return self.topology

    def tick_key(self) -> bytes | None:
        """The key that signs the ticker's ticks and authenticates every tick read from Kafka;
        ``None`` when ``FAILOVER_UNSIGNED_TICKS=accept`` (ticks are then not checked).

        Raises:
            SettingsError: neither a key nor ``FAILOVER_UNSIGNED_TICKS=accept`` is set: the
                worker must not start, since any producer could move its clock.
        """
        if self.tick_secret is not None:
            return self.tick_secret.reveal()
        if self.unsigned_ticks:
            return None
        raise SettingsError(
            "FAILOVER_TICK_SECRET",
            "not set: ticks could not be authenticated, and any producer could move the "
            "engine's clock. Set FAILOVER_TICK_SECRET or FAILOVER_TICK_SECRET_FILE (the same "
            "key on every worker), or FAILOVER_UNSIGNED_TICKS=accept for development",
        )

    def input_topics(self, type_: str) -> tuple[str, ...]:
        """The topics an input of type ``type_`` is published to (docs/contracts.md,
        :data:`INPUT_TOPIC_FIELDS`): a clock tick to every input topic, any other input to
        its own; a type the engine does not know (or a message that is not an event) to the
        link-status topic, where it is dead-lettered."""
        if type_ == "clock.tick.v1":
            return (self.topic_link_status, self.topic_overrides, self.topic_feedback)
        return (getattr(self, INPUT_TOPIC_FIELDS.get(type_, "topic_link_status")),)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def broker_urls(self) -> list[str]:
        """The bootstrap servers as faust broker URLs."""
        return [f"kafka://{server}" for server in self.bootstrap_servers]

    def describe(self) -> dict[str, str]:
        """Every setting as text, for the worker's start-up log line; the value of a setting
        whose name says it holds a secret is ``***``."""
        described = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "faust_env":
                value = tuple((k, MASK if is_secret(k) else v) for k, v in value)
            described[f.name] = MASK if is_secret(f.name) else str(value)
        return described


_TOPIC_FIELDS: Final = (
    "topic_link_status",
    "topic_overrides",
    "topic_feedback",
    "topic_commands",
    "topic_transitions",
    "topic_state",
    "topic_audit",
    "topic_deadletter",
    "topic_changes",
    "topic_repartition",
    "topic_service_repartition",
)
#: (field, variable) of every topic name: ``topic_commands``, ``FAILOVER_TOPIC_COMMANDS``.
_TOPICS: Final = tuple((name, f"FAILOVER_{name.upper()}") for name in _TOPIC_FIELDS)
#: Their defaults: the fields' own (:class:`Settings`), the one place they are written.
_TOPIC_DEFAULTS: Final[Mapping[str, str]] = {
    f.name: str(f.default) for f in fields(Settings) if f.name in _TOPIC_FIELDS
}

#: The :class:`Settings` field naming the topic of each of the core's input streams
#: (:data:`workflows.inputs.INPUT_STREAMS`).
_STREAM_TOPICS: Final[Mapping[str, str]] = {
    "links": "topic_link_status",
    "overrides": "topic_overrides",
    "feedback": "topic_feedback",
}
#: The :class:`Settings` field naming the input topic of each input type but the clock's
#: (docs/contracts.md), from the stream the core puts it on; a clock tick goes to every input
#: topic (:meth:`Settings.input_topics`).
INPUT_TOPIC_FIELDS: Final[Mapping[str, str]] = {
    type_: _STREAM_TOPICS[stream] for type_, stream in INPUT_STREAMS.items() if stream is not None
}
#: The internal topics: by default named after the app id (the suffix).
_INTERNAL: Final = {
    "topic_changes": "link-changes",
    "topic_repartition": "link-repartition",
    "topic_service_repartition": "service-repartition",
}


def _topic_prefix(env: Mapping[str, str]) -> str:
    """``FAILOVER_TOPIC_PREFIX``: what every topic of the engine, and the app id, start with,
    so that two deployments on one cluster never share a topic and prefixed ACLs cover one."""
    prefix = _text(env, "FAILOVER_TOPIC_PREFIX", "")
    if prefix and (not _TOPIC.match(prefix) or len(prefix) > 100):
        raise SettingsError(
            "FAILOVER_TOPIC_PREFIX", f"{prefix!r}: use 1 to 100 of A-Z a-z 0-9 . _ -"
        )
    return prefix
