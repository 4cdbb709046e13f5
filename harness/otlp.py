"""An OTLP/HTTP sink for the tests and for bench/kafka.py's tracing part: an ``http.server``
on 127.0.0.1 (port 0) in a thread that decodes what exporters post to ``/v1/traces`` and
``/v1/metrics`` with ``opentelemetry-proto`` and keeps it, to look at afterwards
(:class:`Receiver`, started by :func:`serve`)."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["Receiver", "handler_for", "serve", "value", "values"]


class Receiver:
    """What the OTLP/HTTP endpoint received, decoded."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.paths: list[str] = []
        self.changed = threading.Condition()

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every span received, with its resource's attributes."""
        with self.changed:
            requests = list(self.traces)
        return [
            (values(resource.resource.attributes), span)
            for request in requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def metric_list(self) -> list[Metric]:
        """Every metric received, in the order received (one per export and metric)."""
        with self.changed:
            requests = list(self.metrics)
        return [
            metric
            for request in requests
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        ]

    def metric_names(self) -> set[str]:
        return {metric.name for metric in self.metric_list()}

    def wait(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Until ``condition()`` holds (checked whenever a request arrives); fail after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not received in {timeout}s: {self.paths}")
                self.changed.wait(min(left, 0.5))


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            response: ExportTraceServiceResponse | ExportMetricsServiceResponse
            if self.path == "/v1/traces":
                request: Any = ExportTraceServiceRequest.FromString(body)
                response = ExportTraceServiceResponse()
                store: list[Any] = receiver.traces
            elif self.path == "/v1/metrics":
                request = ExportMetricsServiceRequest.FromString(body)
                response = ExportMetricsServiceResponse()
                store = receiver.metrics
            else:
                self.send_error(404)
                return
            # Stored before the answer: an exporter's flush that returned is all here.
            with receiver.changed:
                store.append(request)
                receiver.paths.append(self.path)
                receiver.changed.notify_all()
            payload = response.SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    return Handler


@contextmanager
def serve(receiver: Receiver) -> Iterator[str]:
    """Serve OTLP/HTTP into ``receiver`` for the block; yields the endpoint
    (``OTEL_EXPORTER_OTLP_ENDPOINT``: ``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(receiver))
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="otlp-receiver", daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind is not None else None


def values(attributes: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in attributes if isinstance(kv, KeyValue)}
