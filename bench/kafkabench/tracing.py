"""(t) What traces cost on the Kafka path: engine runs as in (b) with probes' trace context,
exported over OTLP/HTTP to a sink in this process (see bench/kafka.py)."""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.kafkabench.common import Bench, Inputs, note, publish_inputs
from bench.kafkabench.engine import EngineResult, engine_run
from harness.otlp import Receiver, serve
from streams.config import Settings


def span_kinds(requests: Sequence[Any]) -> Counter[str]:
    """Spans of OTLP trace export requests by kind: the first word of their names
    (process, transition, send)."""
    return Counter(
        span.name.split(" ", 1)[0]
        for request in requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    )


@dataclass
class TracingResult:
    mode: str
    environment: dict[str, str]  # the worker's OTEL_* variables
    ratio: float  # the share of link events whose traceparent is sampled, as generated
    sampled: int  # link events whose traceparent is sampled
    engine: EngineResult
    spans: Counter[str]  # received over OTLP, by kind
    requests: int
    queue_full: bool  # the SDK's batch processor said it dropped spans


async def tracing_runs(
    bench: Bench,
    data: Inputs,
    args: argparse.Namespace,
    expected: tuple[dict[tuple[str, str], list[bytes]], Counter[str]] | None,
    profile_seconds: float,
) -> list[TracingResult]:
    """(t): the inputs of (b) with probes' traceparent headers, twice (sampled at
    ``--trace-ratio``, and all sampled); one exactly_once run per mode, ``--trace-repeat``
    times in turn."""
    ratio = args.trace_ratio
    inputs: dict[float, Inputs] = {}
    for name, share in (("t-in-ratio", ratio), ("t-in-all", 1.0)):
        settings = Settings.from_env(bench.env(name, data.topology_path))
        copy = dataclasses.replace(
            data, settings=settings, messages=0, link_messages=0, bytes=0, ends={}, sampled=0
        )
        elapsed = await publish_inputs(bench, copy, traced=share)
        note(
            f"(t) input with traceparent headers, {copy.sampled:,} of {data.probes:,} sampled: "
            f"published in {elapsed:.1f} s"
        )
        inputs[share] = copy
    # The OTLP/HTTP sink the tests use too (harness/otlp.py), in this process.
    receiver = Receiver()
    results: list[TracingResult] = []
    with serve(receiver) as endpoint:
        exporting = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
        }
        modes: list[tuple[str, str, float, dict[str, str]]] = [
            ("off", "t-off", ratio, {}),
            (
                f"parent-based {ratio:.0%}",
                "t-ratio",
                ratio,
                {
                    **exporting,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}",
                },
            ),
            ("100%", "t-all", 1.0, {**exporting, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
        ]
        for repeat in range(args.trace_repeat):
            for mode, label, share, env in modes:
                with receiver.changed:
                    before = len(receiver.traces)
                engine = await engine_run(
                    bench,
                    inputs[share],
                    "exactly_once",
                    expected,
                    profile_seconds,
                    args.offsets_wait,
                    label=f"{label}{repeat or ''}",
                    extra_env=env,
                    own_otel=True,
                )
                with receiver.changed:  # the worker flushed its spans as it stopped
                    received = receiver.traces[before:]
                spans, requests = span_kinds(received), len(received)
                full = "Queue is full" in engine.log.read_text(errors="replace")
                results.append(
                    TracingResult(
                        mode, env, share, inputs[share].sampled, engine, spans, requests, full
                    )
                )
                note(
                    f"(t) {mode}: {data.probes / engine.to_outputs:,.0f} events/s, "
                    f"{sum(spans.values()):,} spans received"
                )
    return results
