"""The topology file: sites, links, services and the policy that times their transitions.

Everything an operator can get wrong is caught here, before any event is read: the schema in
``schemas/topology.schema.json`` first, then what a schema cannot say (a service at a site that
does not exist, a link nobody declared, a time zone that is not one). Every error names the
file, the path inside it and what is wrong, and shows at most a short, escaped excerpt of any
value: an error line never repeats a huge scalar, a control character or a terminal escape.

The file itself is read defensively, because a topology can come from anyone who can write to
the worker's configuration: at most ``MAX_FILE_BYTES``, strict UTF-8; YAML is composed into
nodes and checked before any object is built, so that an alias that refers to itself, aliases
that would expand the document past ``MAX_ALIAS_NODES`` nodes (an "alias bomb"), nesting
deeper than ``MAX_DEPTH``, a duplicate key at any level, a tag beyond plain mappings, lists
and scalars, or an integer too long to be one, is refused with its path and line. A JSON
document is read with duplicate keys refused too. Policy durations are at most
``MAX_DURATION`` and counts are whole numbers.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO, Final, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import jsonschema_rs
import yaml

from schemas import load_schema
from workflows.grants import Operator, decode_public_key, grants_of
from workflows.timeutil import parse_duration

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_DURATION",
    "MAX_FILE_BYTES",
    "Link",
    "LinkPolicy",
    "Policy",
    "Service",
    "Site",
    "Topology",
    "TopologyError",
    "parse_document",
    "read_document",
]

_SECOND = 1_000_000

#: The largest topology file read, in bytes: about four times the largest deployment measured
#: (100,000 services: 18 MB as JSON, 18 MB as YAML).
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
#: How many nodes YAML aliases (``*name``) may add to the document once expanded. Anchors and
#: aliases are allowed (sharing a policy block or a list of redundant links is what they are
#: for), but each alias stands for a copy of what it names: a few hundred bytes of nested
#: aliases stand for billions of nodes, which every later step would walk. 100,000 added
#: nodes is a shared policy block in thousands of services, and milliseconds of work.
MAX_ALIAS_NODES: Final = 100_000
#: Deepest nesting of mappings and lists: a topology is 6 levels deep.
MAX_DEPTH: Final = 32
#: The longest duration of any policy key: 366 days. Every policy duration is a wait of an
#: outage's scale (minutes to days; the longest default is a day); a year is more than any of
#: them needs and keeps every sum of an event time and a duration far inside the range the
#: engine computes and formats in (a 64-bit count of microseconds, the years 1 to 9999).
MAX_DURATION: Final = 366 * 86_400 * _SECOND
_WHOLE_DURATION: Final = re.compile(r"[0-9]+(?:ms|s|m|h|d)")
#: Longest excerpt of a value an error message shows, and longest message or path.
_SHOWN: Final = 60
_LONGEST: Final = 1000


def _escape(text: str) -> str:
    """``text`` with every character that is not printable (controls, format characters such
    as bidi overrides, separators other than the space) as a ``\\uXXXX`` escape, and at most
    ``_LONGEST`` characters: shortened in the middle, so that both its start and its end
    (often the "what is wrong") stay."""
    text = _shorten(text)
    if text.isprintable():
        return text
    return _shorten("".join(c if c.isprintable() else _code(c) for c in text))


def _shorten(text: str) -> str:
    if len(text) <= _LONGEST:
        return text
    half = (_LONGEST - 40) // 2
    return f"{text[:half]}...[{len(text) - 2 * half:,} characters]...{text[-half:]}"


def _code(char: str) -> str:
    point = ord(char)
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def _show(value: Any) -> str:
    """A short, escaped excerpt of a value for an error message."""
    if isinstance(value, str):
        if len(value) > _SHOWN:
            return f"{value[:_SHOWN]!r}... ({len(value):,} characters)"
        return repr(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return (
            str(value) if value.bit_length() < 128 else f"an integer of {value.bit_length()} bits"
        )
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return f"a mapping of {len(value):,} keys"
    if isinstance(value, list | tuple):
        return f"a list of {len(value):,} items"
    return f"a {type(value).__name__}"


class TopologyError(ValueError):
    """A topology that cannot be run: ``file: path: what is wrong``.

    The path and the message are escaped (no control or bidi character) and at most a
    thousand characters each, whatever the file held.
    """

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file = _escape(file)
        self.path = _escape(path)
        self.message = _escape(message)
        super().__init__(f"{self.file}: {self.path}: {self.message}")


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
    # Engine-wide. An override stamped more than this behind the engine's clock is refused
    # (``stale-signature``): a signed order is not kept to be used later.
    signature_max_age: int = 900 * _SECOND
    # How long before a planned maintenance window starts the public is told about it
    # (workflows/maintenance.py).
    announce_before: int = 86400 * _SECOND
    # Releasing the hold of an online-only service while its links are not healthy waits for
    # a second, different operator's release within this long (the two-person rule).
    release_approval_window: int = 900 * _SECOND
    # At most this many overrides signed with one key are verified per service and minute of
    # event time; the rest are refused before their signature is checked (a flood of forged
    # ones costs little: workflows/operators.py).
    max_overrides_per_minute: int = 60
    link: LinkPolicy = field(default_factory=LinkPolicy)


_LINK_KEYS = frozenset(f.name for f in fields(LinkPolicy))
_SERVICE_KEYS = frozenset(f.name for f in fields(Policy)) - {"link"}
#: Keys that hold for the whole engine, not per service or link.
_ENGINE_KEYS = frozenset({"max_future", "max_clock_jump", "signature_max_age"})


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
    #: Each provider's links, in id order (a maintenance window of a provider, its grants).
    links_by_provider: Mapping[str, tuple[str, ...]]
    policy: Policy
    #: Who may send overrides (workflows/grants.py; workflows/operators.py checks them); none:
    #: every signed override refused.
    operators: Mapping[str, Operator] = field(default_factory=dict)
    #: ``unsigned_overrides: accept``: an override without a signature is taken (development).
    unsigned_overrides: bool = False

    @classmethod
    def load(cls, path: str | Path) -> Topology:
        """Read and validate a topology file.

        Raises:
            TopologyError: the file cannot be read, is larger than ``MAX_FILE_BYTES``, is not
                UTF-8, is not YAML, or does not describe a runnable topology.
        """
        name = str(path)
        return cls.from_document(read_document(path), name)

    @classmethod
    def parse(cls, text: str, file: str = "<topology>") -> Topology:
        """Validate topology YAML given as text; ``file`` is used in error messages.

        A document in JSON (which YAML includes) is read by the JSON parser: for 100,000
        services, 0.4 s against 21 s for libyaml (measured with bench/core.py's generator),
        so a large deployment can keep its topology as JSON and start in seconds.
        """
        return cls.from_document(parse_document(text, file), file)

    @classmethod
    def from_document(cls, document: Any, file: str = "<topology>") -> Topology:
        """Validate an already-parsed document (mappings with text keys, lists, scalars)."""
        if document is None:
            raise TopologyError(
                file, "$", "empty: a topology is a mapping of sites, links, services"
            )
        if not isinstance(document, Mapping):
            raise TopologyError(
                file, "$", f"not a mapping of sites, links and services but {_show(document)}"
            )
        _check_schema(document, file)
        return _build(document, file)

    @classmethod
    def check(
        cls, document: Any, file: str = "<topology>"
    ) -> tuple[Topology | None, list[TopologyError]]:
        """Validate a parsed document and report **every** error, each with its path: all
        the schema's, then all of what the schema cannot say (an unknown site or link, a
        bad duration, a key set where it does not hold), in the order of the file. The
        topology when there is none, else ``None``. (:meth:`load` stops at the first.)"""
        if document is None or not isinstance(document, Mapping):
            try:
                cls.from_document(document, file)
            except TopologyError as exc:
                return None, [exc]
        errors = _schema_errors(document, file)
        found: list[TopologyError] = []
        topology = _build(document, file, found)
        errors.extend(e for e in found if not _said(e, errors))
        positions: dict[int, dict[str, int]] = {}
        errors.sort(key=lambda error: _order(document, error.path, positions))
        return (topology if not errors else None), errors


def read_document(path: str | Path | BinaryIO, name: str | None = None) -> Any:
    """A topology file (or an open binary stream: standard input) read defensively (size,
    UTF-8, YAML's aliases, depth, tags, duplicate keys: see the module's docstring) into
    plain mappings, lists and scalars, not yet validated as a topology. ``name`` is the
    file's name in errors (the path by default).

    Raises:
        TopologyError: the file cannot be read or is not a document a topology can be.
    """
    if name is None:
        name = str(path)
    try:
        if isinstance(path, str | Path):
            with Path(path).open("rb") as handle:
                # One byte more than allowed tells "too large" without reading all of it;
                # the size on disk is not trusted (a pipe or a device has none).
                data = handle.read(MAX_FILE_BYTES + 1)
        else:
            data = path.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
        raise TopologyError(name, "$", f"cannot read the file: {problem}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise TopologyError(name, "$", f"larger than {MAX_FILE_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TopologyError(
            name, f"line {line}", f"not UTF-8 text (byte {exc.start + 1} of the file)"
        ) from None
    return parse_document(text, name)


def parse_document(text: str, file: str = "<topology>") -> Any:
    """Topology text (YAML, or JSON read by the JSON parser) into a document, checked as
    :func:`read_document` says; not yet validated as a topology."""
    if len(text) > MAX_FILE_BYTES:
        raise TopologyError(file, "$", f"larger than {MAX_FILE_BYTES:,} characters")
    if text.lstrip()[:1] == "{":
        document = _load_json(text, file)
        if document is not _NOT_JSON:
            return document
        # YAML flow style, or broken: the YAML parser says which, and where
    return _load_yaml(text, file)


# ------------------------------------------------------------------------------ reading

_NOT_JSON: Final = object()


class _DuplicateKeys(dict[str, Any]):
    """A JSON object in which a key appeared twice: ``duplicate`` is that key."""

    duplicate: str = ""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) == len(pairs):
        return document
    marked = _DuplicateKeys(document)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _load_json(text: str, file: str) -> Any:
    """The JSON document, or ``_NOT_JSON`` when the text is not JSON (then it is YAML in
    flow style, or broken, and the YAML parser says which). A duplicate key is refused with
    its path: orjson and the standard parser both keep the last value without a word."""
    duplicates: list[_DuplicateKeys] = []

    def mapping(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        document = _json_object(pairs)
        if isinstance(document, _DuplicateKeys):
            duplicates.append(document)
        return document

    try:
        document = json.loads(
            text,
            object_pairs_hook=mapping,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise TopologyError(file, "$", f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # not JSON; or an integer too long to convert: YAML reports it
        return _NOT_JSON
    found = _find_duplicate(document) if duplicates else None  # a walk only to name the path
    if found is not None:
        path, key = found
        raise TopologyError(file, _pointer([*path, key]), "a key given twice in the same mapping")
    return document


def _find_duplicate(document: Any) -> tuple[list[str | int], str] | None:
    stack: list[tuple[Any, list[str | int]]] = [(document, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _DuplicateKeys):
            return path, value.duplicate
        if isinstance(value, dict):
            stack.extend((v, [*path, k]) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, [*path, i]) for i, v in enumerate(value))
    return None


_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS: Final = frozenset(f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null"))
_MERGE: Final = f"{_TAG}merge"
#: An integer of more digits than this cannot be any count or threshold of a topology.
_INT_DIGITS: Final = 20


def _where(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_error(exc: yaml.YAMLError, file: str) -> TopologyError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "$"
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context:
        problem = f"{context}, {problem}"
    return TopologyError(file, where, f"not valid YAML: {problem}")


def _load_yaml(text: str, file: str) -> Any:
    """Compose the YAML into nodes, check them (``_check_nodes``), then build the objects."""
    loader = _LOADER(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, file) from exc
        if root is None:
            return None
        _check_nodes(root, file)
        try:
            return loader.construct_document(root)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, file) from exc
        except (ValueError, TypeError, OverflowError) as exc:  # a scalar its type refuses
            raise TopologyError(file, "$", f"not valid YAML: {type(exc).__name__}") from exc
    finally:
        loader.dispose()


#: A path into the document, built only for an error: (the parent's trail, the step).
_Trail = tuple[Any, str | int] | None
_STR: Final = f"{_TAG}str"
_INT: Final = f"{_TAG}int"
_FLOAT: Final = f"{_TAG}float"
_SEQ: Final = f"{_TAG}seq"
_MAP: Final = f"{_TAG}map"


def _steps(trail: _Trail) -> list[str | int]:
    steps: list[str | int] = []
    while trail is not None:
        trail, step = trail
        steps.append(step)
    return steps[::-1]


def _check_nodes(root: yaml.Node, file: str) -> None:
    """Refuse, before any object is built, what YAML can say and a topology never needs:
    an alias that contains itself, aliases that expand the document by more than
    ``MAX_ALIAS_NODES`` nodes, nesting deeper than ``MAX_DEPTH``, a key given twice in one
    mapping (YAML keeps the last without a word), a key that is not text, a tag other than a
    plain mapping, list or scalar (``!!binary``, ``!!set``, dates...), an integer too long.

    One pass over the composed nodes, each mapping and list visited once: an aliased node is
    one node shared by every place that names it, so its expanded size is summed, not walked
    again. Scalars are checked where they stand, without a visit of their own.
    """
    if isinstance(root, yaml.ScalarNode):
        _check_scalar(root, None, file)
        return
    size: dict[int, int] = {}  # id(collection): nodes in its expansion, itself included
    height: dict[int, int] = {}  # id(collection): levels of nesting in it, itself included
    active: set[int] = set()  # collections whose children are being walked: a cycle if seen
    distinct = 0  # nodes as written (a collection once, with its scalars)
    # Post-order walk with an explicit stack: (node, trail, depth, None before its children
    # are pushed, else (its collection children, its count of scalar children)).
    Entry = tuple[yaml.Node, _Trail, int, tuple[list[yaml.Node], int] | None]
    stack: list[Entry] = [(root, None, 0, None)]
    scalar = yaml.ScalarNode
    while stack:
        node, trail, depth, walked = stack.pop()
        key = id(node)
        if walked is not None:
            active.discard(key)
            below, scalars = walked
            total = 1 + scalars
            tallest = 1 if scalars else 0
            for child in below:
                total += size[id(child)]
                tallest = max(tallest, height[id(child)])
            size[key] = total
            height[key] = tallest + 1
            distinct += 1 + scalars
            if depth + tallest > MAX_DEPTH:
                raise TopologyError(file, _pointer(_steps(trail)), _TOO_DEEP)
            continue
        if key in active:
            where = f"an alias that contains itself ({_where(node)})"
            raise TopologyError(file, _pointer(_steps(trail)), where)
        if key in size:  # an alias of a collection already checked: counted by its parent
            if depth + height[key] - 1 > MAX_DEPTH:
                raise TopologyError(file, _pointer(_steps(trail)), _TOO_DEEP)
            continue
        if depth >= MAX_DEPTH:
            raise TopologyError(file, _pointer(_steps(trail)), _TOO_DEEP)
        children: list[tuple[str | int, yaml.Node]]
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                _refuse_tag(node, trail, file)
            children = list(enumerate(node.value))
        elif isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            children = _mapping_children(node, trail, file)
        else:
            _refuse_tag(node, trail, file)
        collections: list[yaml.Node] = []
        scalars = 0
        for step, child in children:
            if isinstance(child, scalar):
                if child.tag != _STR:
                    _check_scalar(child, (trail, step), file)
                scalars += 1
            else:
                collections.append(child)
        active.add(key)
        stack.append((node, trail, depth, (collections, scalars)))
        stack.extend(
            (child, (trail, step), depth + 1, None)
            for step, child in children
            if not isinstance(child, scalar)
        )
    if size[id(root)] - distinct > MAX_ALIAS_NODES:
        raise TopologyError(
            file,
            "$",
            f"aliases (*name) expand the document by more than {MAX_ALIAS_NODES:,} nodes",
        )


_TOO_DEEP: Final = f"nested deeper than {MAX_DEPTH} levels"


def _mapping_children(
    node: yaml.MappingNode, trail: _Trail, file: str
) -> list[tuple[str | int, yaml.Node]]:
    """The values of a mapping with their keys; refuses a key that is not text or is given
    twice. A merge (``<<: *defaults``) is allowed: explicit keys override merged ones."""
    children: list[tuple[str | int, yaml.Node]] = []
    lines: dict[str, int] = {}
    for key, value in node.value:
        if key.tag == _MERGE:
            children.append(("<<", value))
            continue
        if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
            shown = _show(key.value) if isinstance(key, yaml.ScalarNode) else "a mapping or list"
            where = _pointer(_steps(trail))
            raise TopologyError(
                file, where, f"the key {shown} is not text: quote it ({_where(key)})"
            )
        text = key.value
        if text in lines:
            raise TopologyError(
                file,
                _pointer([*_steps(trail), text]),
                f"a key given twice in the same mapping (lines {lines[text]} and "
                f"{key.start_mark.line + 1})",
            )
        lines[text] = key.start_mark.line + 1
        children.append((text, value))
    return children


def _check_scalar(node: yaml.ScalarNode, trail: _Trail, file: str) -> None:
    tag = node.tag
    if tag not in _SCALAR_TAGS:
        _refuse_tag(node, trail, file)
    if tag == _INT and len(node.value) > _INT_DIGITS:
        where = f"an integer of {len(node.value):,} digits ({_where(node)})"
        raise TopologyError(file, _pointer(_steps(trail)), where)
    if tag == _FLOAT and not _finite(node.value):
        where = f"{_show(node.value)} is not a finite number ({_where(node)})"
        raise TopologyError(file, _pointer(_steps(trail)), where)


def _refuse_tag(node: yaml.Node, trail: _Trail, file: str) -> NoReturn:
    raise TopologyError(file, _pointer(_steps(trail)), f"{_tag_problem(node.tag)} ({_where(node)})")


def _finite(text: str) -> bool:
    """Whether a YAML float is finite: not ``.inf`` or ``.nan``, nor too large (``1e400``)."""
    try:
        return math.isfinite(float(text.replace("_", "")))
    except ValueError:  # ``.inf``, ``.nan`` and the like; or base 60 (``1:30.5``): finite
        return not text.lstrip("+-").startswith(".")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _tag_problem(tag: str) -> str:
    if tag == f"{_TAG}timestamp":
        return "a date or time where text is meant: quote it"
    if tag.startswith(_TAG):
        return f"a YAML !!{tag[len(_TAG) :]}: only mappings, lists, text, numbers, booleans"
    return f"the YAML tag {_show(tag)} is not one a topology uses"


_PLAIN_STEP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:/-]{0,127}$")


def _pointer(path: list[str | int] | tuple[str | int, ...]) -> str:
    """``$.services.ektp.requires[0]``; a key that is not a plain identifier is shown quoted
    and shortened, ``$.sites['a b']``."""
    text = "$"
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_STEP.match(part):
            text += f".{part}"
        else:
            text += f"[{_show(part)}]"
    return text


_VALIDATOR: jsonschema_rs.Validator | None = None
#: libyaml's safe loader when PyYAML was built with it (its wheels are): 3.5 times faster.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: What the schema's messages say instead of the value they are about: the loader puts a
#: short, escaped excerpt (``_show``) in its place, never the whole value.
_MASK: Final = "\x00value\x00"


def _validator() -> jsonschema_rs.Validator:
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = jsonschema_rs.validator_for(load_schema("topology"), mask=_MASK)
    return _VALIDATOR


def _schema_errors(document: Any, file: str) -> list[TopologyError]:
    """Every error the schema finds, each with its path, in the order of their paths (a
    file's order, for the mappings YAML and JSON build); one error repeated at one path
    (a list item that is neither of two forms) is given once."""
    try:
        errors = list(_validator().iter_errors(document))
    except ValueError as exc:  # a key that is not text, a value JSON has no type for
        return [TopologyError(file, "$", f"not a JSON document: {exc}")]
    out: dict[tuple[str, str], TopologyError] = {}
    for error in errors:
        message = error.message.replace(_MASK, _show(error.instance))
        where = _pointer(list(error.instance_path))
        out.setdefault((where, message), TopologyError(file, where, message))
    return list(out.values())


def _said(error: TopologyError, schema: list[TopologyError]) -> bool:
    """Whether the schema said it already: an error at the same path, or a key the schema
    refused in its mapping (``'stale_afer' was unexpected``)."""
    for said in schema:
        if error.path == said.path:
            return True
        if error.path.startswith(f"{said.path}.") and (
            f"'{error.path[len(said.path) + 1 :]}'" in said.message
        ):
            return True
    return False


def _order(document: Any, pointer: str, positions: dict[int, dict[str, int]]) -> tuple[int, ...]:
    """Where a path (``$.services.ektp.requires[1]``) is in the document, as the positions
    of its keys and items: errors sorted by it come in the order of the file. A step that
    cannot be followed ends it (a missing key comes after the mapping's keys). ``positions``
    keeps each mapping's key positions, made once."""
    rest, value, place = pointer[1:], document, []
    while rest:
        if isinstance(value, list) and (match := re.match(r"\[(\d+)\]", rest)):
            index = int(match.group(1))
            if index >= len(value):
                break
            place.append(index)
            value, rest = value[index], rest[match.end() :]
        elif isinstance(value, Mapping) and rest.startswith("."):
            step = re.match(r"\.([^.\[]*)", rest)
            # a key may hold dots: try the step, then the step with what follows it
            keys = [k for k in _candidates(rest[1:], step.group(1) if step else "") if k in value]
            if not keys:  # a key that is missing: after the keys there are
                place.append(len(value))
                break
            key = max(keys, key=len)
            where = positions.get(id(value))
            if where is None:
                where = positions[id(value)] = {k: i for i, k in enumerate(value)}
            place.append(where[key])
            value, rest = value[key], rest[1 + len(key) :]
        else:
            break
    return tuple(place)


def _candidates(rest: str, first: str) -> list[str]:
    """The keys a pointer's next step may be: ``a``, ``a.b``, ``a.b.c``... (ids may hold
    dots), each ending where a step ends."""
    out = [first]
    end = len(first)
    while end < len(rest) and rest[end] == ".":
        step = re.match(r"[^.\[]*", rest[end + 1 :])
        end += 1 + (step.end() if step else 0)
        out.append(rest[:end])
    return out


def _check_schema(document: Any, file: str) -> None:
    try:
        errors = list(_validator().iter_errors(document))
    except ValueError as exc:  # a key that is not text, a value JSON has no type for
        raise TopologyError(file, "$", f"not a JSON document: {exc}") from None
    if errors:
        # The deepest error is usually the one that names the real mistake; report it first
        # and count the rest, so a long file with one typo gives one clear line.
        error = max(errors, key=lambda e: len(e.instance_path))
        more = (
            f" (and {len(errors) - 1} more: `failover validate` lists them all)"
            if len(errors) > 1
            else ""
        )
        message = error.message.replace(_MASK, _show(error.instance))
        raise TopologyError(file, _pointer(list(error.instance_path)), message + more)


@functools.cache
def _count_keys() -> frozenset[str]:
    """Policy keys the schema types as integers: counts, which must be whole numbers. (JSON
    Schema counts ``2.0`` as an integer; the engine would count with a float.)"""
    defs = load_schema("topology")["$defs"]
    return frozenset(
        key
        for section in ("policy", "linkPolicy")
        for key, value in defs[section]["properties"].items()
        if value.get("type") == "integer"
    )


#: Digits a duration may have: more cannot be under ``MAX_DURATION`` in any unit.
_DURATION_DIGITS: Final = 16


class _Collect:
    """One part of the topology checked in a ``with`` block. With ``errors`` None, the
    first error goes up (``Topology.load``). Otherwise each error is kept and the check goes
    on to the next part; and with ``lenient``, a part the schema already refused (a key
    missing, a value of the wrong type) is skipped without a second word."""

    __slots__ = ("errors", "lenient")

    def __init__(self, errors: list[TopologyError] | None, lenient: bool = False) -> None:
        self.errors = errors
        self.lenient = lenient

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, trace: object) -> bool:
        if exc is None or self.errors is None:
            return False
        if isinstance(exc, TopologyError):
            self.errors.append(exc)
            return True
        return self.lenient and isinstance(
            exc, KeyError | TypeError | AttributeError | IndexError | ValueError
        )


def _durations(
    raw: Mapping[str, Any],
    keys: frozenset[str],
    file: str,
    path: str,
    errors: list[TopologyError] | None = None,
) -> dict[str, Any]:
    """The policy keys of one mapping as the engine uses them: durations in microseconds
    (longer than zero, at most ``MAX_DURATION``), counts as integers, thresholds as finite
    floats. With ``errors``, a key in error is reported there and left out."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            values[key] = _policy_value(key, value, keys, file, f"{path}.{key}")
        except TopologyError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return values


def _policy_value(key: str, value: Any, keys: frozenset[str], file: str, where: str) -> Any:
    if key not in keys:
        raise TopologyError(file, where, "not a key that can be set here")
    if isinstance(value, str):
        digits = len(value) - len(value.lstrip("0123456789"))
        if digits > _DURATION_DIGITS:
            raise TopologyError(file, where, f"{_show(value)} is longer than 366d")
        try:
            micros = parse_duration(value)
        except ValueError:
            if _WHOLE_DURATION.fullmatch(value):  # well formed, past the core's maximum
                message = f"{_show(value)} is longer than 366d"
                raise TopologyError(file, where, message) from None
            raise TopologyError(
                file,
                where,
                f"{_show(value)} is not a duration (a whole number and one of ms, s, m, h, d)",
            ) from None
        if micros <= 0:
            raise TopologyError(file, where, "must be longer than zero")
        if micros > MAX_DURATION:
            raise TopologyError(file, where, f"{_show(value)} is longer than 366d")
        return micros
    if key in _count_keys():
        if type(value) is not int:
            raise TopologyError(file, where, f"{_show(value)} is not a whole number")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TopologyError(file, where, f"{_show(value)} is not a number")
    if not math.isfinite(value):
        raise TopologyError(file, where, f"{_show(value)} is not a finite number")
    return float(value)


def _policy(
    base: Policy,
    raw: Mapping[str, Any] | None,
    file: str,
    path: str,
    *,
    top: bool,
    errors: list[TopologyError] | None = None,
) -> Policy:
    if not raw:
        return base
    keys = _SERVICE_KEYS | _LINK_KEYS
    if not top:
        misplaced: set[str] = set()
        for key in raw:
            with _Collect(errors):
                if key in _ENGINE_KEYS:
                    misplaced.add(key)
                    raise TopologyError(
                        file, f"{path}.{key}", "holds for the whole engine: set it in $.policy"
                    )
                if key in _LINK_KEYS:
                    misplaced.add(key)
                    raise TopologyError(
                        file,
                        f"{path}.{key}",
                        "judged per link, not per service: set it in $.policy or the link's policy",
                    )
        if misplaced:  # reported above (only when errors are collected)
            raw = {key: value for key, value in raw.items() if key not in misplaced}
    values = _durations(raw, keys, file, path, errors)
    link_values = {k: values.pop(k) for k in list(values) if k in _LINK_KEYS}
    link = replace(base.link, **link_values) if link_values else base.link
    return replace(base, link=link, **values)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _zone(name: str, file: str, path: str) -> ZoneInfo:
    """The zone of an IANA name. Checked against the zones the database lists first: a
    region such as ``Asia`` is a directory of the database, not a zone, and opening it
    raises what no caller expects."""
    problem = f"unknown time zone {_show(name)} (an IANA zone such as Asia/Jayapura)"
    if name not in _zones():
        raise TopologyError(file, path, problem)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TopologyError(file, path, problem) from None


def _build(
    document: Mapping[str, Any], file: str, errors: list[TopologyError] | None = None
) -> Topology:
    """The topology of a document the schema accepted; with ``errors``, every error of the
    document is added there (it may also hold what the schema refused: the parts it names
    are skipped) and what can be built is built."""
    check = _Collect(errors, lenient=errors is not None)
    policy = Policy()
    with check:
        policy = _policy(Policy(), document.get("policy"), file, "$.policy", top=True,
                         errors=errors)  # fmt: skip

    sites: dict[str, Site] = {}
    with check:
        for site_id, raw in document["sites"].items():
            with check:
                zone = _zone(raw["timezone"], file, f"$.sites.{site_id}.timezone")
                sites[site_id] = Site(site_id, raw["name"], zone, raw.get("head", "office-head"))

    links: dict[str, Link] = {}
    with check:
        for link_id, raw in document["links"].items():
            with check:
                values = _durations(raw.get("policy") or {}, _LINK_KEYS, file,
                                    f"$.links.{link_id}.policy", errors)  # fmt: skip
                links[link_id] = Link(
                    link_id,
                    raw["provider"],
                    raw.get("description", ""),
                    replace(policy.link, **values),
                )

    services: dict[str, Service] = {}
    users: dict[str, list[str]] = {link_id: [] for link_id in links}
    with check:
        for service_id, raw in document["services"].items():
            with check:
                service = _service(service_id, raw, sites, links, policy, file, errors, check)
                if service is not None:
                    services[service_id] = service
                    for link_id in service.links:
                        users[link_id].append(service_id)

    by_provider: dict[str, list[str]] = {}
    for link_id, link in links.items():
        # A provider or an id of another type than text is an error of the schema, which a
        # lenient check collects and goes on.
        if isinstance(link.provider, str) and isinstance(link_id, str):
            by_provider.setdefault(link.provider, []).append(link_id)
    links_by_provider = {provider: tuple(sorted(ids)) for provider, ids in by_provider.items()}

    operators: dict[str, Operator] = {}
    with check:
        # Collecting, a grant may name a service in error (it is in the file all the same).
        named = services if errors is None else document["services"]
        operators = _operators(
            document.get("operators") or {}, sites, named, file, check, links, links_by_provider
        )
    return Topology(
        sites=sites,
        links=links,
        services=services,
        services_by_link={link: tuple(ids) for link, ids in users.items()},
        links_by_provider=links_by_provider,
        policy=policy,
        operators=operators,
        unsigned_overrides=document.get("unsigned_overrides", "refuse") == "accept",
    )


def _service(
    service_id: str,
    raw: Mapping[str, Any],
    sites: Mapping[str, Site],
    links: Mapping[str, Link],
    policy: Policy,
    file: str,
    errors: list[TopologyError] | None,
    check: _Collect,
) -> Service | None:
    """One service; ``None`` when errors are collected and it has one (each reported)."""
    path = f"$.services.{service_id}"
    before = len(errors) if errors is not None else 0
    with check:
        if raw["site"] not in sites and (errors is None or raw["site"] not in _bad_sites(errors)):
            raise TopologyError(file, f"{path}.site", f"no site {_show(raw['site'])} in $.sites")
    groups: list[tuple[str, ...]] = []
    with check:
        for index, item in enumerate(raw["requires"]):
            group = (item,) if isinstance(item, str) else tuple(item)
            for member, link_id in enumerate(group):
                if link_id not in links:
                    with check:
                        where = f"{path}.requires[{index}]"
                        if not isinstance(item, str):
                            where += f"[{member}]"
                        raise TopologyError(file, where, f"no link {_show(link_id)} in $.links")
            groups.append(group)
    with check:
        if not raw["offline"] and not raw.get("queue"):
            raise TopologyError(
                file,
                f"{path}.queue",
                "an online-only service (offline: false) needs a queue to hold while manual",
            )
    own = _policy(policy, raw.get("policy"), file, f"{path}.policy", top=False, errors=errors)
    if errors is not None and len(errors) > before:
        return None
    return Service(
        id=service_id,
        site=raw["site"],
        name_id=raw["name"]["id"],
        name_en=raw["name"]["en"],
        requires=tuple(groups),
        offline=raw["offline"],
        queue=raw.get("queue"),
        policy=own,
    )


def _bad_sites(errors: list[TopologyError]) -> frozenset[str]:
    """Sites reported in error already (their time zone): a service at one is not told
    again that its site does not exist."""
    return frozenset(
        e.path.split(".")[2] for e in errors if e.path.startswith("$.sites.") and
        e.path.endswith(".timezone")
    )  # fmt: skip


def _operators(
    raw: Mapping[str, Any],
    sites: Mapping[str, Site],
    services: Mapping[str, Any],
    file: str,
    check: _Collect | None = None,
    links: Mapping[str, Link] | None = None,
    providers: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Operator]:
    """The operators section (its shape checked by the schema): keys decoded, and every
    site, service, link and provider (``providers``: each one's links) a grant names known.
    With ``check`` collecting, every error is kept (``services`` then names every service of
    the file, those in error too)."""
    check = check or _Collect(None)
    links = links or {}
    providers = providers or {}
    operators: dict[str, Operator] = {}
    for operator_id, entry in raw.items():
        with check:
            keys = {}
            failed = False
            for name, text in entry["keys"].items():
                with check:
                    try:
                        keys[name] = decode_public_key(text)
                    except ValueError as exc:
                        failed = True
                        where = _pointer(["operators", operator_id, "keys", name])
                        raise TopologyError(
                            file, where, f"not an Ed25519 public key: {exc}"
                        ) from None
            for index, grant in enumerate(entry["grants"]):
                named: tuple[tuple[str, Mapping[str, Any]], ...] = (
                    ("sites", sites), ("services", services), ("links", links),
                    ("providers", providers),
                )  # fmt: skip
                for kind, known in named:
                    for member, name in enumerate(grant.get(kind, ())):
                        if name not in known:
                            failed = True
                            with check:
                                raise TopologyError(
                                    file,
                                    _pointer(
                                        ["operators", operator_id, "grants", index, kind, member]
                                    ),
                                    f"no {kind[:-1]} {_show(name)} in $.{kind}"
                                    if kind != "providers"
                                    else f"no link of provider {_show(name)} in $.links",
                                )
            if not failed:
                operators[operator_id] = Operator(
                    operator_id, entry["name"], entry["role"], keys, grants_of(entry["grants"])
                )
    return operators
