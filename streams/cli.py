"""``failover``: the command line.

- ``failover replay TOPOLOGY EVENTS [--out FILE] [--trace] [--state]``: the core over a file,
  no broker.
- ``failover demo [--trace]``: the Ambon case, bundled, through replay.
- ``failover diagram``: the state machine as a Mermaid diagram, generated from the code.
- ``failover worker``: the engine on Kafka (faust), configured from the environment
  (:mod:`streams.config`); faust is imported only by this command.
- ``failover status [--site S] [--state STATE] [--json] [--board URL]``: every service's
  current state, from the read model (the ``service-state`` topic) or the status board.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.text import Text

from streams.printable import printable
from workflows.clock import ClockJump, clock_jumps, describe_jump
from workflows.engine import MAX_EVENT_BYTES
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


def _load(topology: Path) -> Topology:
    try:
        return Topology.load(topology)
    except TopologyError as exc:
        Console(stderr=True).print(
            Text.assemble(("error:", "bold red"), f" {printable(exc, None)}"), highlight=False
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


def _run(
    topology_path: Path,
    events: Path,
    out: Path | None,
    quiet: bool,
    trace: bool = False,
    state: bool = False,
) -> int:
    # Imported here: the timeline needs rich tables, the JSONL path does not.
    from streams.telemetry import configure
    from streams.timeline import Timeline
    from streams.tracing import Tracing, traced_replay

    topology = _load(topology_path)
    if not events.is_file():
        Console(stderr=True).print(
            Text.assemble(("error:", "bold red"), f" {printable(events)}: no such file")
        )
        return 2
    timeline = Timeline(topology)
    # JSONL on stdout leaves the terminal to the timeline on stderr, and vice versa.
    console = Console(stderr=out is None, highlight=False)
    sink: BinaryIO = out.open("wb") if out is not None else sys.stdout.buffer
    # Spans (to stderr with --trace, or wherever OTEL_* says) never touch the JSONL.
    telemetry = configure(console=trace)
    jumps = _Jumps(events.name, timeline)
    lines = clock_jumps(
        read_lines(events, MAX_EVENT_BYTES), topology.policy.max_clock_jump, jumps.found
    )
    try:
        # Streamed: each record is written as it is made, and the timeline keeps a bounded
        # summary of it (nothing at all with --quiet), so memory does not grow with the run.
        tracing = Tracing(telemetry, topology)
        for record, _ in traced_replay(topology, lines, events.name, tracing, state=state):
            sink.write(encode(record) + b"\n")
            if not quiet:
                timeline.add(record)
    finally:
        telemetry.shutdown()
        if out is not None:
            sink.close()
        else:
            sink.flush()
    jumps.finish()
    if not quiet:
        timeline.print(console)
        if out is not None:
            console.print(Text(f"output records: {printable(out)}"))
    return 0


@app.command("replay")
def replay_command(
    topology: Annotated[Path, typer.Argument(help="Topology YAML file.")],
    events: Annotated[Path, typer.Argument(help="JSONL file of input CloudEvents.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write output records here (JSONL).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No timeline.")] = False,
    trace: Annotated[
        bool, typer.Option("--trace", help="Print the spans to stderr, one line each.")
    ] = False,
    state: Annotated[
        bool,
        typer.Option(
            "--state",
            help="Also write the read model's records (topic service-state), as the worker does.",
        ),
    ] = False,
) -> None:
    """Run the core over EVENTS in file order: JSONL records out, a timeline on the terminal.

    Same input, same output, byte for byte. Bad input lines become records on the
    failover-deadletter topic with their reason and line number; the run goes on.
    Spans are exported as the OTEL_* variables say (off by default); --trace prints them.
    With --state, a failover.service.state.v1 record follows each change of a service's
    state, health, links, held queue, paper records, pin or last operator action.
    """
    raise typer.Exit(_run(topology, events, out, quiet, trace, state))


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


@app.command("worker")
def worker_command() -> None:
    """Run the engine on Kafka: a faust worker, configured from the environment.

    KAFKA_BOOTSTRAP_SERVERS and FAILOVER_* variables (FAILOVER_TOPOLOGY is required); see
    streams/config.py for every one and its default. SIGTERM or SIGINT stops it cleanly.
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
            Text.assemble(("error:", "bold red"), f" {printable(exc, None)}"), highlight=False
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


def main() -> None:
    """Entry point of the ``failover`` console script."""
    app()
