"""``failover validate``: a topology file checked whole, and what it means once it runs.

Every error of the file at once, each with its path (:meth:`Topology.check`); for a valid
file, the effective policy of every link and service, each value marked with where it comes
from (the built-in default, the file's ``$.policy``, or the link's or service's own), and
the blast radius of each link and each provider: the services it carries, and those it takes
down alone (a requirement none of whose links is left).

Everything shown that comes from the file goes through :func:`~streams.printable.printable`:
no control character or escape reaches the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Final

from streams.printable import printable
from workflows.timeutil import format_duration
from workflows.topology import LinkPolicy, Policy, Topology, TopologyError

__all__ = ["ENGINE_KEYS", "blast_radius", "error_json", "report", "report_text"]

#: Keys that hold for the whole engine: shown once, not per service.
ENGINE_KEYS: Final = ("max_future", "max_clock_jump")
_LINK_KEYS: Final = tuple(f.name for f in fields(LinkPolicy))
_SERVICE_KEYS: Final = tuple(
    f.name for f in fields(Policy) if f.name != "link" and f.name not in ENGINE_KEYS
)
_DEFAULT_POLICY: Final = Policy()
_COUNT_KEYS: Final = frozenset({"flap_threshold", "dedup_max_ids"})
_NUMBER_KEYS: Final = frozenset({"latency_degraded_ms", "loss_degraded_pct"})


def _value(key: str, value: Any) -> str | int | float:
    """A policy value as the file would write it: durations as ``5m``, numbers as numbers."""
    if key in _COUNT_KEYS:
        return int(value)
    if key in _NUMBER_KEYS:
        number = float(value)
        return int(number) if number.is_integer() else number
    return format_duration(int(value))


def _keys(raw: Any) -> frozenset[str]:
    if isinstance(raw, Mapping):
        policy = raw.get("policy")
        if isinstance(policy, Mapping):
            return frozenset(k for k in policy if isinstance(k, str))
    return frozenset()


def _policy(
    values: Any, keys: tuple[str, ...], own: frozenset[str], top: frozenset[str], where: str
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        origin = where if key in own else "policy" if key in top else "default"
        out[key] = {"value": _value(key, getattr(values, key)), "from": origin}
    return out


def blast_radius(topology: Topology) -> dict[str, dict[str, Any]]:
    """Per link and per provider: ``carries`` (services requiring any of its links) and
    ``takes_down`` (services with a requirement all of whose links are its own: losing them
    leaves that requirement, so the service, down)."""
    out: dict[str, dict[str, Any]] = {"links": {}, "providers": {}}
    order = {service: i for i, service in enumerate(topology.services)}
    for link_id in topology.links:
        out["links"][link_id] = _radius(topology, {link_id}, order)
    for provider, links in sorted(topology.links_by_provider.items()):
        entry = _radius(topology, set(links), order)
        out["providers"][provider] = {"links": list(links), **entry}
    return out


def _radius(topology: Topology, links: set[str], order: dict[str, int]) -> dict[str, list[str]]:
    """Only the services of these links are looked at (``services_by_link``): the cost is
    theirs, not that of every service for every link. Services in the topology's order."""
    found = {service for link in links for service in topology.services_by_link[link]}
    carries = sorted(found, key=order.__getitem__)
    down = [
        service_id
        for service_id in carries
        if any(
            all(link in links for link in group) for group in topology.services[service_id].requires
        )
    ]
    return {"carries": carries, "takes_down": down}


def report(topology: Topology, document: Mapping[str, Any], file: str) -> dict[str, Any]:
    """The ``--json`` report of a valid topology."""
    top = _keys(document)
    raw_links = document.get("links") or {}
    raw_services = document.get("services") or {}
    radius = blast_radius(topology)
    links = {
        link.id: {
            "provider": link.provider,
            "policy": _policy(link.policy, _LINK_KEYS, _keys(raw_links.get(link.id)), top, "link"),
            **radius["links"][link.id],
        }
        for link in topology.links.values()
    }
    services = {
        service.id: {
            "site": service.site,
            "offline": service.offline,
            "queue": service.queue,
            "requires": [list(group) for group in service.requires],
            "policy": _policy(
                service.policy,
                _SERVICE_KEYS,
                _keys(raw_services.get(service.id)),
                top,
                "service",
            ),
        }
        for service in topology.services.values()
    }
    return {
        "file": file,
        "valid": True,
        "errors": [],
        "counts": {
            "sites": len(topology.sites),
            "links": len(topology.links),
            "services": len(topology.services),
        },
        "engine": _policy(topology.policy, ENGINE_KEYS, frozenset(), top, "policy"),
        "links": links,
        "services": services,
        "providers": radius["providers"],
    }


def error_json(file: str, errors: list[TopologyError]) -> dict[str, Any]:
    """The ``--json`` report of a file in error."""
    return {
        "file": file,
        "valid": False,
        "errors": [{"path": e.path, "message": e.message} for e in errors],
    }


def _setting(key: str, entry: Mapping[str, Any]) -> str:
    return f"{key}={entry['value']} ({entry['from']})"


def _names(ids: list[str], limit: int = 20) -> str:
    shown = ", ".join(printable(i, 200) for i in ids[:limit])
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"{len(ids)}" + (f": {shown}{more}" if ids else "")


def report_text(data: Mapping[str, Any]) -> list[str]:
    """The report for people, a line each (no line is cut: long ones wrap)."""
    counts = data["counts"]
    lines = [
        f"{printable(data['file'])}: valid: {counts['sites']} sites, {counts['links']} links, "
        f"{counts['services']} services",
        "each value says where it comes from: (default) built in, (policy) the file's "
        "$.policy, (link) or (service) the item's own policy",
        "",
        "engine: " + ", ".join(_setting(k, v) for k, v in data["engine"].items()),
        "",
        "links:",
    ]
    for link_id, link in data["links"].items():
        lines.append(f"  {printable(link_id, 200)} (provider {printable(link['provider'], 200)})")
        lines.append("    " + ", ".join(_setting(k, v) for k, v in link["policy"].items()))
        lines.append(f"    carries {_names(link['carries'])}")
        lines.append(f"    takes down alone {_names(link['takes_down'])}")
    lines += ["", "providers:"]
    for provider, entry in data["providers"].items():
        lines.append(f"  {printable(provider, 200)}: links {_names(entry['links'])}")
        lines.append(f"    carries {_names(entry['carries'])}")
        lines.append(f"    takes down {_names(entry['takes_down'])}")
    lines += ["", "services:"]
    for service_id, service in data["services"].items():
        kind = "offline-capable" if service["offline"] else f"online-only, queue {service['queue']}"
        requires = ", ".join(" or ".join(group) for group in service["requires"])
        lines.append(
            printable(f"  {service_id} (site {service['site']}; {kind}; requires {requires})")
        )
        lines.append("    " + ", ".join(_setting(k, v) for k, v in service["policy"].items()))
    return lines
