"""The topology file: sites, links, services and the policy that times their transitions.

Everything an operator can get wrong is caught here, before any event is read: the schema in
``schemas/topology.schema.json`` first, then what a schema cannot say (a service at a site that
does not exist, a link nobody declared, a time zone that is not one). Every error names the
file, the path inside it and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema_rs
import orjson
import yaml

from schemas import load_schema
from workflows.timeutil import parse_duration

__all__ = ["Link", "LinkPolicy", "Policy", "Service", "Site", "Topology", "TopologyError"]


class TopologyError(ValueError):
    """A topology that cannot be run: ``file: path: what is wrong``."""

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file = file
        self.path = path
        self.message = message
        super().__init__(f"{file}: {path}: {message}")


_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """How a link's health is judged. Durations in microseconds."""

    stale_after: int = 120 * _SECOND
    latency_degraded_ms: float = 800.0
    loss_degraded_pct: float = 5.0
    flap_window: int = 900 * _SECOND
    flap_threshold: int = 4
    flap_quiet: int = 300 * _SECOND


@dataclass(frozen=True, slots=True)
class Policy:
    """How long each condition must be sustained before a transition. Microseconds."""

    degrade_after: int = 60 * _SECOND
    manual_after: int = 300 * _SECOND
    degraded_max: int = 1800 * _SECOND
    recover_after: int = 300 * _SECOND
    restore_after: int = 900 * _SECOND
    relapse_after: int = 60 * _SECOND
    escalate_after: int = 4 * 3600 * _SECOND
    # How long an input event id is remembered per service to drop duplicates; an event older
    # than this behind the engine's clock is dead-lettered instead of risking a double effect.
    dedup_horizon: int = 24 * 3600 * _SECOND
    # Engine-wide (top-level policy only). On Kafka, an input stamped more than this ahead of
    # the worker's wall clock is dead-lettered (``future-time``): no producer's clock moves
    # the engine's into the future.
    max_future: int = 300 * _SECOND
    # Replay only: an input more than this ahead of the latest time before it in the file is
    # reported (a warning with its line), not refused: a file is trusted.
    max_clock_jump: int = 86400 * _SECOND
    # The most input ids remembered per service within dedup_horizon (see workflows.service).
    dedup_max_ids: int = 10_000
    link: LinkPolicy = field(default_factory=LinkPolicy)


_LINK_KEYS = frozenset(f.name for f in fields(LinkPolicy))
_SERVICE_KEYS = frozenset(f.name for f in fields(Policy)) - {"link"}
#: Keys that hold for the whole engine, not per service or link.
_ENGINE_KEYS = frozenset({"max_future", "max_clock_jump"})


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    timezone: ZoneInfo
    head: str


@dataclass(frozen=True, slots=True)
class Link:
    id: str
    provider: str
    description: str
    policy: LinkPolicy


@dataclass(frozen=True, slots=True)
class Service:
    """One service of one site. ``requires`` holds groups: a group's best link counts."""

    id: str
    site: str
    name_id: str
    name_en: str
    requires: tuple[tuple[str, ...], ...]
    offline: bool
    queue: str | None
    policy: Policy

    @property
    def links(self) -> tuple[str, ...]:
        """Every link the service depends on, in declaration order, once each."""
        return tuple(dict.fromkeys(link for group in self.requires for link in group))


@dataclass(frozen=True, slots=True)
class Topology:
    sites: Mapping[str, Site]
    links: Mapping[str, Link]
    services: Mapping[str, Service]
    services_by_link: Mapping[str, tuple[str, ...]]
    policy: Policy

    @classmethod
    def load(cls, path: str | Path) -> Topology:
        """Read and validate a topology file.

        Raises:
            TopologyError: the file cannot be read, is not YAML, or does not describe a
                runnable topology.
        """
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TopologyError(name, "$", f"cannot read the file: {exc.strerror}") from exc
        return cls.parse(text, name)

    @classmethod
    def parse(cls, text: str, file: str = "<topology>") -> Topology:
        """Validate topology YAML given as text; ``file`` is used in error messages.

        A document in JSON (which YAML includes) is read by orjson: for 100,000 services,
        0.1 s against 21 s for libyaml (measured with bench/core.py's generator), so a large
        deployment can keep its topology as JSON and start in seconds.
        """
        if text.lstrip()[:1] == "{":
            try:
                return cls.from_document(orjson.loads(text), file)
            except orjson.JSONDecodeError:
                pass  # YAML flow style, or broken: the YAML parser says which, and where
        try:
            document = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "$"
            problem = getattr(exc, "problem", None) or str(exc)
            raise TopologyError(file, where, f"not valid YAML: {problem}") from exc
        return cls.from_document(document, file)

    @classmethod
    def from_document(cls, document: Any, file: str = "<topology>") -> Topology:
        """Validate an already-parsed document."""
        _check_schema(document, file)
        return _build(document, file)


def _pointer(path: list[str | int] | tuple[str | int, ...]) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


_VALIDATOR: jsonschema_rs.Validator | None = None
#: libyaml's safe loader when PyYAML was built with it (its wheels are): 3.5 times faster.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_schema(document: Any, file: str) -> None:
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = jsonschema_rs.validator_for(load_schema("topology"))
    errors = sorted(
        _VALIDATOR.iter_errors(document),
        key=lambda error: (len(error.instance_path), [str(p) for p in error.instance_path]),
    )
    if errors:
        # The deepest error is usually the one that names the real mistake; report it first
        # and count the rest, so a long file with one typo gives one clear line.
        error = max(errors, key=lambda e: len(e.instance_path))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise TopologyError(file, _pointer(list(error.instance_path)), error.message + more)


def _durations(
    raw: Mapping[str, Any], keys: frozenset[str], file: str, path: str
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in keys:
            raise TopologyError(file, f"{path}.{key}", "not a key that can be set here")
        if isinstance(value, str):
            try:
                values[key] = parse_duration(value)
            except ValueError as exc:
                raise TopologyError(file, f"{path}.{key}", str(exc)) from exc
            if values[key] <= 0:
                raise TopologyError(file, f"{path}.{key}", "must be longer than zero")
        else:
            values[key] = value
    return values


def _policy(
    base: Policy, raw: Mapping[str, Any] | None, file: str, path: str, *, top: bool
) -> Policy:
    if not raw:
        return base
    if not top:
        for key in raw:
            if key in _ENGINE_KEYS:
                raise TopologyError(
                    file, f"{path}.{key}", "holds for the whole engine: set it in $.policy"
                )
            if key in _LINK_KEYS:
                raise TopologyError(
                    file,
                    f"{path}.{key}",
                    "judged per link, not per service: set it in $.policy or the link's policy",
                )
    values = _durations(raw, _SERVICE_KEYS | _LINK_KEYS, file, path)
    link_values = {k: values.pop(k) for k in list(values) if k in _LINK_KEYS}
    link = replace(base.link, **link_values) if link_values else base.link
    return replace(base, link=link, **values)


def _build(document: Mapping[str, Any], file: str) -> Topology:
    policy = _policy(Policy(), document.get("policy"), file, "$.policy", top=True)

    sites: dict[str, Site] = {}
    for site_id, raw in document["sites"].items():
        try:
            zone = ZoneInfo(raw["timezone"])
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise TopologyError(
                file, f"$.sites.{site_id}.timezone", f"unknown time zone {raw['timezone']!r}"
            ) from exc
        sites[site_id] = Site(site_id, raw["name"], zone, raw.get("head", "office-head"))

    links: dict[str, Link] = {}
    for link_id, raw in document["links"].items():
        values = _durations(raw.get("policy") or {}, _LINK_KEYS, file, f"$.links.{link_id}.policy")
        links[link_id] = Link(
            link_id,
            raw["provider"],
            raw.get("description", ""),
            replace(policy.link, **values),
        )

    services: dict[str, Service] = {}
    users: dict[str, list[str]] = {link_id: [] for link_id in links}
    for service_id, raw in document["services"].items():
        path = f"$.services.{service_id}"
        if raw["site"] not in sites:
            raise TopologyError(file, f"{path}.site", f"no site {raw['site']!r} in $.sites")
        groups: list[tuple[str, ...]] = []
        for index, item in enumerate(raw["requires"]):
            group = (item,) if isinstance(item, str) else tuple(item)
            for member, link_id in enumerate(group):
                if link_id not in links:
                    where = f"{path}.requires[{index}]"
                    if not isinstance(item, str):
                        where += f"[{member}]"
                    raise TopologyError(file, where, f"no link {link_id!r} in $.links")
            groups.append(group)
        if not raw["offline"] and not raw.get("queue"):
            raise TopologyError(
                file,
                f"{path}.queue",
                "an online-only service (offline: false) needs a queue to hold while manual",
            )
        service = Service(
            id=service_id,
            site=raw["site"],
            name_id=raw["name"]["id"],
            name_en=raw["name"]["en"],
            requires=tuple(groups),
            offline=raw["offline"],
            queue=raw.get("queue"),
            policy=_policy(policy, raw.get("policy"), file, f"{path}.policy", top=False),
        )
        services[service_id] = service
        for link_id in service.links:
            users[link_id].append(service_id)

    return Topology(
        sites=sites,
        links=links,
        services=services,
        services_by_link={link: tuple(ids) for link, ids in users.items()},
        policy=policy,
    )
