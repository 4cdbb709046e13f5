"""``failover``: the command line.

- ``failover replay TOPOLOGY EVENTS [--out FILE] [--trace] [--state]``: the core over a file,
  no broker.
- ``failover demo [--trace]``: the Ambon case, bundled, through replay.
- ``failover validate TOPOLOGY``: every error of a topology; its policy and blast radius.
- ``failover what-if A [B] EVENTS [--set PATH=VALUE]``: one recording under two topologies.
- ``failover diagram``: the state machine as a Mermaid diagram, generated from the code.
- ``failover worker``: the engine on Kafka (faust), configured from the environment
  (:mod:`streams.config`); faust is imported only by this command.
- ``failover status [--site S] [--state STATE] [--json] [--board URL]``: every service's
  current state, from the read model (the ``service-state`` topic) or the status board.
- ``failover board [--port P] [--host H]``: the status board over the engine's read model
  (:mod:`streams.board`).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum, StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Final

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.text import Text

from streams.printable import printable

if TYPE_CHECKING:
    from streams.progress import Progress
from workflows.engine import MAX_EVENT_BYTES
from workflows.recording import (
    ClockBack,
    ClockJump,
    clock_jumps,
    describe_back,
    describe_jump,
    has_ticks,
    implicit_ticks,
)
from workflows.replay import encode, read_lines
from workflows.service import STATES, mermaid
from workflows.topology import Topology, TopologyError

__all__ = ["app", "main"]

app = typer.Typer(
    name="failover",
    help="Event-driven failover workflow engine: per-service state machines over link status.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"failover {version('failover-engine')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("failover (not installed: no version)")
        raise typer.Exit(0)


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Event-driven failover workflow engine: per-service state machines over link status."""


def _load(topology: Path) -> Topology:
    try:
        return Topology.load(topology)
    except TopologyError as exc:
        Console(stderr=True).print(
            Text.assemble(("error:", "bold red"), f" {printable(exc, None)}"),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from exc


class _Jumps:
    """Jumps of a replayed file's clock: a warning on stderr as each is found, and a list at
    the end of the timeline; the first :attr:`SHOWN` of them, then a count."""

    SHOWN = 100

    def __init__(self, file: str, timeline: Any) -> None:
        self.file = file
        self.timeline = timeline
        self.count = 0
        self.stderr = Console(stderr=True, highlight=False, markup=False, emoji=False)

    def found(self, jump: ClockJump) -> None:
        self.count += 1
        if self.count <= self.SHOWN:
            text = describe_jump(jump, self.file)
            self.stderr.print(f"warning: {text}", soft_wrap=True)
            self.timeline.jumps.append(text)

    def finish(self) -> None:
        if self.count > self.SHOWN:
            more = f"and {self.count - self.SHOWN} more jumps of the clock"
            self.stderr.print(f"warning: {self.file}: {more}", soft_wrap=True)
            self.timeline.jumps.append(more)


class Clock(StrEnum):
    """Where a replayed file's clock comes from (``--clock``)."""

    auto = "auto"
    ticks = "ticks"
    events = "events"


_CLOCK_HELP = (
    "Where the clock comes from: 'ticks' (the file's clock.tick.v1 lines; nothing happens "
    "between them), 'events' (each input's event time advances the clock, as a tick before "
    "it), or 'auto': 'ticks' if the file holds a tick, else 'events'."
)


class _Back:
    """Inputs of a file replayed by event time that go back in time: the first is warned
    about on stderr at once and all are counted in the timeline."""

    def __init__(self, file: str, timeline: Any, warn: bool = True) -> None:
        self.file = file
        self.timeline = timeline
        self.warn = warn
        self.first: ClockBack | None = None
        self.count = 0

    def found(self, back: ClockBack) -> None:
        self.count += 1
        if self.first is None:
            self.first = back
            if not self.warn:
                return
            text = f"warning: {describe_back(back, self.file)}"
            Console(stderr=True, highlight=False, markup=False, emoji=False).print(
                text, soft_wrap=True
            )

    def finish(self) -> None:
        if self.first is not None and self.timeline is not None:
            self.timeline.jumps.append(describe_back(self.first, self.file, self.count - 1))


def _resolve(events: Path, clock: Clock) -> tuple[Clock, str]:
    """``auto`` decided by a first pass over the file (:func:`has_ticks`); and why."""
    if clock is not Clock.auto:
        return clock, f"--clock {clock.value}"
    if has_ticks(events, MAX_EVENT_BYTES):
        return Clock.ticks, "the file holds ticks"
    return Clock.events, "the file holds no tick"


def _clocked(
    events: Path, lines: Iterable[tuple[int, bytes]], clock: Clock, back: _Back
) -> tuple[Iterable[tuple[int, bytes]], str]:
    """The lines as the engine is to see them under ``clock``, and the timeline's header."""
    clock, why = _resolve(events, clock)
    if clock is Clock.ticks:
        return lines, f"the file's ticks (clock.tick.v1) ({why})"
    header = f"event time: each new time of an input is a tick before it ({why})"
    return implicit_ticks(lines, back.found), header


@contextmanager
def _spooled(*paths: Path) -> Iterator[list[Path]]:
    """``paths`` with ``-`` (standard input, at most one) copied to a temporary file named
    ``<stdin>``: a replay reads its file twice (``--clock auto`` looks for a tick first, and
    what-if replays it twice), which a pipe cannot give."""
    if sum(str(p) == "-" for p in paths) > 1:
        raise _fail("only one file can be - (standard input)")
    if not any(str(p) == "-" for p in paths):
        yield list(paths)
        return
    with tempfile.TemporaryDirectory(prefix="failover-stdin-") as tmp:
        spool = Path(tmp) / "<stdin>"
        with spool.open("wb") as handle:
            shutil.copyfileobj(sys.stdin.buffer, handle, 1 << 20)
        yield [spool if str(p) == "-" else p for p in paths]


def _meter(label: str, events: Path, progress: bool | None) -> Progress | None:
    """A progress line for reading ``events``: when asked, or by default when stderr is a
    terminal."""
    from streams.progress import Progress

    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    return Progress(label, events.stat().st_size)


_PROGRESS_HELP = "A progress line on stderr (default: when stderr is a terminal)."

#: The width of a piped timeline: wide enough for any row (a "why" is at most 500 characters).
_PIPED_WIDTH: Final = 4096


def _run(
    topology_path: Path,
    events: Path,
    out: Path | None,
    quiet: bool,
    trace: bool = False,
    clock: Clock = Clock.auto,
    state: bool = False,
    progress: bool | None = None,
) -> int:
    # Imported here: the timeline needs rich tables, the JSONL path does not.
    from streams.telemetry import configure
    from streams.timeline import Timeline
    from streams.tracing import Tracing, traced_replay

    topology = _load(topology_path)
    if not events.is_file():
        Console(stderr=True).print(
            Text.assemble(("error:", "bold red"), f" {printable(events)}: no such file"),
            soft_wrap=True,
        )
        return 2
    timeline = Timeline(topology)
    # JSONL on stdout leaves the terminal to the timeline on stderr, and vice versa.
    console = Console(stderr=out is None, highlight=False)
    if not console.is_terminal:
        # Piped: nothing cut or wrapped at 80 columns; each table as wide as its rows.
        console = Console(stderr=out is None, highlight=False, width=_PIPED_WIDTH)
    sink: BinaryIO = out.open("wb") if out is not None else sys.stdout.buffer
    # Spans (to stderr with --trace, or wherever OTEL_* says) never touch the JSONL.
    telemetry = configure(console=trace)
    jumps = _Jumps(events.name, timeline)
    back = _Back(events.name, timeline)
    meter = _meter(f"replay {events.name}", events, progress)
    source = read_lines(events, MAX_EVENT_BYTES)
    lines, timeline.clock = _clocked(
        events,
        clock_jumps(
            source if meter is None else meter.watch(source),
            topology.policy.max_clock_jump,
            jumps.found,
        ),
        clock,
        back,
    )
    try:
        # Streamed: each record is written as it is made, and the timeline keeps a bounded
        # summary of it (nothing at all with --quiet), so memory does not grow with the run.
        tracing = Tracing(telemetry, topology)
        on_health = None if quiet else timeline.link_changed
        for record, _ in traced_replay(
            topology, lines, events.name, tracing, state=state, on_health=on_health
        ):
            sink.write(encode(record) + b"\n")
            if not quiet:
                timeline.add(record)
    finally:
        telemetry.shutdown()
        if meter is not None:
            meter.done()
        if out is not None:
            sink.close()
        else:
            sink.flush()
    jumps.finish()
    back.finish()
    if not quiet:
        timeline.print(console)
        if out is not None:
            console.print(Text(f"output records: {printable(out)}"))
    return 0


@app.command("replay")
def replay_command(
    topology: Annotated[Path, typer.Argument(help="Topology YAML file; - for standard input.")],
    events: Annotated[
        Path, typer.Argument(help="JSONL file of input CloudEvents; - for standard input.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write output records here (JSONL).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No timeline.")] = False,
    trace: Annotated[
        bool, typer.Option("--trace", help="Print the spans to stderr, one line each.")
    ] = False,
    clock: Annotated[Clock, typer.Option("--clock", help=_CLOCK_HELP)] = Clock.auto,
    state: Annotated[
        bool,
        typer.Option(
            "--state",
            help="Also write the read model's records (topic service-state), as the worker does.",
        ),
    ] = False,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help=_PROGRESS_HELP)
    ] = None,
) -> None:
    """Run the core over EVENTS in file order: JSONL records out, a timeline on the terminal.

    Same input, same output, byte for byte. Bad input lines become records on the
    failover-deadletter topic with their reason and line number; the run goes on.
    A file with no clock.tick.v1 is replayed by its inputs' event times (see --clock).
    Spans are exported as the OTEL_* variables say (off by default); --trace prints them.
    With --state, a failover.service.state.v1 record follows each change of a service's
    state, health, links, held queue, paper records, pin or last operator action.
    """
    with _spooled(topology, events) as (topology, events):
        raise typer.Exit(_run(topology, events, out, quiet, trace, clock, state, progress))


def _validate(topology: Path, as_json: bool) -> int:
    import orjson

    from streams.validate import error_json, report, report_text
    from workflows.topology import read_document

    stdin = str(topology) == "-"
    file = "<stdin>" if stdin else str(topology)
    try:
        document = read_document(sys.stdin.buffer if stdin else topology, file)
    except TopologyError as exc:
        checked, errors = None, [exc]
    else:
        checked, errors = Topology.check(document, file)
    if errors or checked is None:
        if as_json:
            sys.stdout.buffer.write(orjson.dumps(error_json(file, errors)) + b"\n")
        for error in errors:
            sys.stderr.write(f"error: {error}\n")
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        sys.stderr.write(f"{printable(file)}: {count}\n")
        return 2
    data = report(checked, document, file)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write("".join(f"{line}\n" for line in report_text(data)))
    return 0


@app.command("validate")
def validate_command(
    topology: Annotated[
        Path, typer.Argument(help="Topology YAML (or JSON) file; - for standard input.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
) -> None:
    """Check a topology file: every error at once, or its policy and blast radius.

    Every error is listed with its path (exit 2). For a valid file: the effective policy of
    each link and service, each value marked with where it comes from (default, policy,
    link, service), and the services each link and provider carries and takes down alone.
    """
    raise typer.Exit(_validate(topology, as_json))


def _document(path: Path) -> Any:
    """A topology file's document, or the error that stops its reading."""
    from workflows.topology import read_document

    try:
        return read_document(path)
    except TopologyError as exc:
        return exc


def _checked(document: Any, file: str, settings: list[str], label: str) -> Topology | None:
    """A topology document, with ``--set`` settings applied, validated as a file is: every
    error on stderr, ``None`` if there is one."""
    from streams.whatif import apply_settings

    if isinstance(document, TopologyError):
        topology, errors = None, [document]
    else:
        try:
            if settings:
                document = apply_settings(document, settings, file)
                file = f"{file} with --set"
            topology, errors = Topology.check(document, file)
        except TopologyError as exc:
            topology, errors = None, [exc]
    for error in errors:
        sys.stderr.write(f"error: {label}: {error}\n")
    return topology


def _what_if(
    a_path: Path, b_path: Path | None, events: Path, settings: list[str], clock: Clock,
    as_json: bool, progress: bool | None = None,
) -> int:  # fmt: skip
    import orjson

    from streams.whatif import Latest, Summary, compare, text_report
    from workflows.replay import replay

    # B with --set alone is A's document changed: the file is read (and parsed) once.
    document = _document(a_path)
    a = _checked(document, str(a_path), [], "A")
    b_document = document if b_path is None else _document(b_path)
    b = _checked(b_document, str(b_path or a_path), settings, "B")
    if a is None or b is None:
        return 2
    if not events.is_file():
        sys.stderr.write(f"error: {printable(events)}: no such file\n")
        return 2
    summaries: list[Summary] = []
    clocks: list[str] = []
    resolved, why = _resolve(events, clock)  # once: both runs read the file alike
    for run, topology in enumerate((a, b)):
        latest = Latest()
        back = _Back(events.name, None, warn=run == 0)
        meter = _meter(f"what-if {'AB'[run]} {events.name}", events, progress)
        source = read_lines(events, MAX_EVENT_BYTES)
        watched = latest.watch(source if meter is None else meter.watch(source))
        lines, header = _clocked(events, watched, resolved, back)
        clocks.append(header.replace(f"--clock {resolved.value}", why))
        summary = Summary()
        for record in replay(topology, lines, events.name):
            summary.add(record)
        if meter is not None:
            meter.done()
        summary.finish(latest.time)
        summaries.append(summary)
    changes = compare(*summaries)
    b_name = str(b_path or a_path) + "".join(f" --set {s}" for s in settings)
    if as_json:
        data = {"a": str(a_path), "b": b_name, "events": str(events), "clock": clocks[0],
                "services": changes}  # fmt: skip
        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        lines_out = [f"clock: {clocks[0]}", *text_report(changes, str(a_path), b_name)]
        sys.stdout.write("".join(f"{printable(line)}\n" for line in lines_out))
    return 0


@app.command("what-if")
def what_if_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="TOPOLOGY_A [TOPOLOGY_B] EVENTS: B defaults to A with --set; one of them "
            "may be - for standard input."
        ),
    ],
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="PATH=VALUE changed in B (repeatable): policy.restore_after=30m, "
            "services.ektp.policy.manual_after=2m, links.L.policy.stale_after=5m.",
        ),
    ] = None,
    clock: Annotated[Clock, typer.Option("--clock", help=_CLOCK_HELP)] = Clock.auto,
    as_json: Annotated[bool, typer.Option("--json", help="The changes as JSON.")] = False,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help=_PROGRESS_HELP)
    ] = None,
) -> None:
    """Replay EVENTS under two topologies and say per service what changes.

    Two replays, streamed. Per service: transitions earlier, later, added or gone; commands
    added or gone; time in manual; incidents. B is TOPOLOGY_B, or A with each --set
    applied, validated as a file is.
    """
    settings = settings or []
    if len(files) == 3:
        a_path, b_path, events = files
    elif len(files) == 2 and settings:
        (a_path, events), b_path = files, None
    else:
        sys.stderr.write(
            "error: give TOPOLOGY_A TOPOLOGY_B EVENTS, or TOPOLOGY EVENTS with --set\n"
        )
        raise typer.Exit(2)
    given = [a_path, events] if b_path is None else [a_path, b_path, events]
    with _spooled(*given) as spooled:
        a_path, events = spooled[0], spooled[-1]
        b_path = spooled[1] if b_path is not None else None
        raise typer.Exit(_what_if(a_path, b_path, events, settings, clock, as_json, progress))


@app.command("demo")
def demo_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the output records (JSONL).")
    ] = Path("failover-demo.jsonl"),
    trace: Annotated[
        bool, typer.Option("--trace", help="Print the spans to stderr, one line each.")
    ] = False,
) -> None:
    """The Ambon exchange fire of 5 February 2019, replayed: no broker needed."""
    demo = resources.files("streams") / "demo"
    with (
        resources.as_file(demo / "ambon.yaml") as topology,
        resources.as_file(demo / "ambon-events.jsonl") as events,
    ):
        raise typer.Exit(_run(topology, events, out, quiet=False, trace=trace))


@app.command("diagram")
def diagram_command() -> None:
    """Print the service state machine as a Mermaid diagram (generated from the code)."""
    typer.echo(mermaid(), nl=False)


def _environment_help() -> str:
    from streams.envhelp import help_text

    return help_text()


@app.command("worker", epilog=_environment_help())
def worker_command() -> None:
    """Run the engine on Kafka: a faust worker, configured from the environment.

    KAFKA_BOOTSTRAP_SERVERS and FAILOVER_* variables (FAILOVER_TOPOLOGY is required), every
    one listed below with its default. SIGTERM or SIGINT stops it cleanly.
    """
    from streams.config import Settings, SettingsError

    try:
        settings = Settings.from_env()
        path = settings.topology_path()
        from streams.app import faust_environment

        faust_environment(settings)  # FAILOVER_FAUST_* names faust knows
        settings.tick_key()  # no key and no FAILOVER_UNSIGNED_TICKS=accept: refuse to start
    except SettingsError as exc:
        Console(stderr=True).print(
            Text.assemble(("error:", "bold red"), f" {printable(exc, None)}"),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from exc
    topology = _load(path)
    # Imported here: replay and demo must not pay for (or depend on) faust.
    from streams.worker import run

    raise typer.Exit(run(settings, topology))


#: The states ``--state`` accepts: the machine's (workflows.service.STATES).
StateName = Enum("StateName", {name: name for name in STATES}, type=str)  # type: ignore[misc]


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True).print(
        Text.assemble(("error:", "bold red"), f" {printable(message, None)}"),
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(code)


@app.command("status")
def status_command(
    site: Annotated[str | None, typer.Option("--site", help="Only this site's services.")] = None,
    state: Annotated[
        StateName | None, typer.Option("--state", help="Only services in this state.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the records' data as a JSON array.")
    ] = False,
    board: Annotated[
        str | None,
        typer.Option(
            "--board",
            help="Ask the status board at this URL (GET URL/api/services) instead of Kafka.",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds.", min=0.1)
    ] = 30.0,
) -> None:
    """Every service's current state: one line each (site, service, state, since when, how
    long, incident, held queue, open paper records, last reason).

    Reads the compacted read-model topic (FAILOVER_TOPIC_STATE, default service-state) on
    KAFKA_BOOTSTRAP_SERVERS to its end, read_committed, without joining a consumer group;
    with --board, the status board's API instead. With FAILOVER_TOPOLOGY set, --site is
    checked against the topology. Exit code 2 when the read model cannot be read or the
    site is unknown.
    """
    import orjson

    from streams.config import Settings, SettingsError
    from streams.status import StatusError, matching, read_board, read_topic, table

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise _fail(str(exc)) from exc
    wanted = state.value if state is not None else None
    sites: set[str] | None = None
    if settings.topology is not None and site is not None:
        sites = set(_load(settings.topology).sites)
    try:
        if board is not None:
            services = read_board(board, site, wanted, timeout)
            if site is not None and sites is None and not services:
                sites = {str(s.get("site")) for s in read_board(board, None, None, timeout)}
        else:
            services = read_topic(
                settings.bootstrap_servers, settings.topic_state, timeout, settings.security
            )
            if site is not None and sites is None:
                sites = {str(s.get("site")) for s in services}
    except StatusError as exc:
        raise _fail(str(exc)) from exc
    if site is not None and sites is not None and site not in sites:
        known = ", ".join(sorted(sites)) or "none"
        raise _fail(f"unknown site {site!r} (sites: {known})")
    chosen = matching(services, site, wanted)
    if as_json:
        typer.echo(orjson.dumps(chosen, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console(highlight=False, markup=False, emoji=False)
    if not chosen:
        console.print("no service matches" if site or state else "no service in the read model")
        return
    grid = table(chosen, datetime.now(UTC))
    if not console.is_terminal:
        # Piped: one whole line per service, as wide as rich measures the table unwrapped.
        wide = Measurement.get(console, console.options.update_width(100_000), grid).maximum
        console = Console(highlight=False, markup=False, emoji=False, width=max(wide, 80))
    console.print(grid)


@app.command("board")
def board_command(
    port: Annotated[int, typer.Option(help="TCP port to serve on.", min=0, max=65535)] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve the status board: every service's state from the service-state topic, incident
    timelines, a JSON API, server-sent events, /metrics, /healthz and /readyz.

    Reads KAFKA_BOOTSTRAP_SERVERS, FAILOVER_APP_ID (the worker's group, for its lag), the
    FAILOVER_TOPIC_* names and FAILOVER_TOPOLOGY (optional: site time zones and names) as the
    worker does. SIGTERM or SIGINT stops it.
    """
    import asyncio
    import logging

    from streams.config import Settings, SettingsError

    try:
        settings = Settings.from_env()
        if settings.topology is not None:
            settings.topology_path()
    except SettingsError as exc:
        raise _fail(str(exc)) from exc
    if settings.topology is not None:
        _load(settings.topology)  # a bad file: its error, exit 2
    from streams.board import serve

    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
    raise typer.Exit(asyncio.run(serve(settings, host, port)))


@app.command("keygen")
def keygen_command(
    out: Annotated[Path, typer.Argument(help="Where to write the new private key (mode 0600).")],
    operator: Annotated[
        str | None, typer.Option(help="The operator id, for the topology snippet printed.")
    ] = None,
    key_name: Annotated[str, typer.Option(help="The key's name, e.g. the month made.")] = ("k1"),
) -> None:
    """Make an operator's Ed25519 key: the private key to OUT (never printed, never
    overwritten), the public key to stdout, as the topology's operators section wants it."""
    from streams.operator_cli import OperatorKeyError, new_key

    try:
        public = new_key(out)
    except OperatorKeyError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    who = operator if operator is not None else "OPERATOR"
    print(f"# {printable(out)}: the private key; keep it to yourself (chmod 600).")
    print("# In the topology, under operators:")
    print(f"#   {printable(who)}:")
    print(f"#     keys: {{{printable(key_name)}: {public}}}")
    print(public)


# The options every signed operator order takes (``failover override``, ``maintenance``).
_Operator = Annotated[str, typer.Option("--operator", help="Your operator id.")]
_Role = Annotated[str, typer.Option("--role", help="Your role, as the topology says.")]
_Reason = Annotated[str, typer.Option("--reason", help="Why, in your words (audited).")]
_KeyName = Annotated[str, typer.Option(help="The name of your key in the topology.")]
_KeyFile = Annotated[
    Path | None, typer.Option(help="Your private key (else FAILOVER_OPERATOR_KEY_FILE or _KEY).")
]
_Wait = Annotated[
    float, typer.Option(help="Seconds to wait for the engine's verdict (at the next tick).")
]


@app.command("override")
def override_command(
    action: Annotated[str, typer.Argument(help="force_manual, release, pin or unpin.")],
    service: Annotated[str, typer.Argument(help="The service id.")],
    reason: _Reason,
    operator: _Operator,
    role: _Role,
    key_name: _KeyName = "k1",
    key_file: _KeyFile = None,
    wait: _Wait = 30.0,
    until: Annotated[
        str | None,
        typer.Option(
            help="force_manual and pin: when it expires (RFC 3339 with a zone), on event time."
        ),
    ] = None,
) -> None:
    """Sign an override with your key, send it to the deployment the KAFKA_* and FAILOVER_*
    variables name, and print what the engine decided (its audit record). Exit 0 if it was
    applied, 1 if refused, 2 if it could not be sent, 3 if no verdict came within --wait, 4 if
    it is pending (a release that waits for a second operator's release)."""
    from streams.operator_cli import signed_override

    _sign_and_send(
        lambda key: signed_override(
            action, service, reason, operator, role, key_name, key, until=until
        ),
        key_file,
        wait,
    )


maintenance_app = typer.Typer(
    help="Plan, extend or cancel a maintenance window (signed, like an override).",
    no_args_is_help=True,
)
app.add_typer(maintenance_app, name="maintenance")

_Window = Annotated[str, typer.Argument(help="The window's id, e.g. sto-pattimura-2026-12.")]


@maintenance_app.command("announce")
def maintenance_announce(
    window: _Window,
    start: Annotated[str, typer.Option(help="When it starts, RFC 3339 with an offset.")],
    end: Annotated[str, typer.Option(help="When it ends, RFC 3339 with an offset.")],
    notice_id: Annotated[str, typer.Option(help="Your words to the public, in Indonesian.")],
    notice_en: Annotated[str, typer.Option(help="Your words to the public, in English.")],
    reason: _Reason,
    operator: _Operator,
    role: _Role,
    links: Annotated[
        str | None, typer.Option(help="The links it takes down, comma-separated.")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Or a whole site.")] = None,
    provider: Annotated[str | None, typer.Option(help="Or every link of a provider.")] = None,
    key_name: _KeyName = "k1",
    key_file: _KeyFile = None,
    wait: _Wait = 30.0,
) -> None:
    """Announce a planned outage of links, a provider or a site: the public is told
    announce_before ahead, its services go to manual (planned) at --start, nobody is
    escalated to until --end. Prints the engine's verdict (exit 0 applied, 1 refused, 3
    none within --wait)."""
    _send_window(
        "announce", window, reason, operator, role, key_name, key_file, wait,
        links=[link.strip() for link in links.split(",") if link.strip()] if links else None,
        site=site, provider=provider, start=start, end=end, notice=(notice_id, notice_en),
    )  # fmt: skip


@maintenance_app.command("extend")
def maintenance_extend(
    window: _Window,
    end: Annotated[str, typer.Option(help="The new end, RFC 3339 with an offset.")],
    reason: _Reason,
    operator: _Operator,
    role: _Role,
    key_name: _KeyName = "k1",
    key_file: _KeyFile = None,
    wait: _Wait = 30.0,
) -> None:
    """Move a window's end later (the public is told). Exit codes as announce."""
    _send_window("extend", window, reason, operator, role, key_name, key_file, wait, end=end)


@maintenance_app.command("cancel")
def maintenance_cancel(
    window: _Window,
    reason: _Reason,
    operator: _Operator,
    role: _Role,
    key_name: _KeyName = "k1",
    key_file: _KeyFile = None,
    wait: _Wait = 30.0,
) -> None:
    """Call a window off (before it starts: the public is told; during it: it ends now, and
    its services restore as usual once healthy). Exit codes as announce."""
    _send_window("cancel", window, reason, operator, role, key_name, key_file, wait)


def _send_window(
    action: str,
    window: str,
    reason: str,
    operator: str,
    role: str,
    key_name: str,
    key_file: Path | None,
    wait: float,
    **fields: Any,
) -> None:
    from streams.operator_cli import signed_maintenance

    _sign_and_send(
        lambda key: signed_maintenance(
            action, window, reason, operator, role, key_name, key, **fields
        ),
        key_file,
        wait,
    )


def _sign_and_send(
    sign: Callable[[Any], dict[str, Any]], key_file: Path | None, wait: float
) -> None:
    """Sign an operator order with the key of ``key_file`` (else FAILOVER_OPERATOR_KEY_FILE
    or _KEY), send it, print the engine's verdict and exit with its code; exit 2 if the
    settings, the key or the order are wrong."""
    import os

    from streams.config import Settings, SettingsError
    from streams.operator_cli import OperatorKeyError, read_key

    try:
        settings = Settings.from_env()
        event = sign(read_key(key_file, os.environ))
    except (SettingsError, OperatorKeyError, ValueError) as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    _publish_and_judge(event, settings, wait)


def _publish_and_judge(event: dict[str, Any], settings: Any, wait: float) -> None:
    """Send a signed operator order, print the engine's verdict, exit with its code."""
    import asyncio

    from streams.operator_cli import send_override

    try:
        verdict = asyncio.run(
            send_override(
                event,
                list(settings.bootstrap_servers),
                settings.topic_overrides,
                settings.topic_audit,
                settings.security.client_options(),
                wait,
            )
        )
    except Exception as exc:  # the broker's refusal (ACLs), no broker, no such topic
        _error(f"{type(exc).__name__}: {exc}")
        raise typer.Exit(2) from exc
    out = Console(highlight=False, markup=False, emoji=False, soft_wrap=True)
    out.print(f"sent {printable(event['id'])} as {printable(event['failoverkey'])}")
    if verdict is None:
        out.print(f"no verdict within {wait:g} s (the engine applies it at the next tick)")
        raise typer.Exit(3)
    out.print(f"{verdict['verdict']}", end="")
    out.print(f": {printable(verdict['reason'])}" if verdict["reason"] else "")
    raise typer.Exit(_VERDICT_EXIT.get(verdict["verdict"], 1))


#: ``failover override``'s exit code for each verdict of the audit record (refused: 1).
_VERDICT_EXIT: Final = {"applied": 0, "pending": 4}


def _instant(value: str | None, option: str) -> int | None:
    """An RFC 3339 instant of an option (``--since``), in µs; exit 2 if it is none."""
    from workflows.timeutil import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except (ValueError, OverflowError) as exc:
        raise _fail(f"{option} {value!r}: not an RFC 3339 time (2019-02-05T00:00:00Z)") from exc


@app.command("export")
def export_command(
    out: Annotated[
        str, typer.Option("--out", "-o", help="Where to write the replay file; - for stdout.")
    ] = "-",
    since: Annotated[
        str | None,
        typer.Option("--since", help="Start at the last tick at or before this RFC 3339 time."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="End at the last tick at or before this RFC 3339 time."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds.", min=0.1)
    ] = 60.0,
) -> None:
    """Write the inputs of a running deployment as a replay file, ticks included.

    Reads the input topics (FAILOVER_TOPIC_LINK_STATUS, _OVERRIDES, _FEEDBACK) and the
    dead-letter topic on KAFKA_BOOTSTRAP_SERVERS to their end, read_committed, without a
    consumer group. Replayed with the deployment's topology, the file gives exactly the
    outputs the engine committed up to its last tick (from the start of the log; with
    --since, from a fresh engine at that tick). What it holds and leaves out goes to stderr.
    """
    from streams.config import Settings, SettingsError
    from streams.export import ExportError, describe, lines, merge, read_inputs

    start, end = _instant(since, "--since"), _instant(until, "--until")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise _fail(str(exc)) from exc
    inputs = (settings.topic_link_status, settings.topic_overrides, settings.topic_feedback)
    try:
        records, refused = read_inputs(
            settings.bootstrap_servers,
            inputs,
            settings.topic_deadletter,
            timeout,
            settings.security,
        )
    except ExportError as exc:
        raise _fail(str(exc)) from exc
    merged = merge(records, refused, start, end)
    if out == "-":
        sys.stdout.buffer.writelines(lines(merged))
        sys.stdout.buffer.flush()
    else:
        with Path(out).open("wb") as handle:
            handle.writelines(lines(merged))
    for line in describe(merged):
        sys.stderr.write(f"{printable(line)}\n")


def _error(message: str) -> None:
    Console(stderr=True).print(
        Text.assemble(("error:", "bold red"), f" {printable(message, None)}"),
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:
    """Entry point of the ``failover`` console script."""
    if not sys.stderr.isatty():
        # Piped: click's plain usage errors, one line each, not a box cut at 80 columns.
        app.rich_markup_mode = None
    app()
