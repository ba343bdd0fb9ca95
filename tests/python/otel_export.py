"""Exports traces with the OpenTelemetry Python SDK to Allegro over OTLP/gRPC and OTLP/HTTP,
then fetches each trace by ID and reports how long after the acknowledgement it was readable.

Usage: otel_export.py GRPC_ENDPOINT HTTP_ENDPOINT API_BASE
Prints one JSON object per trace: protocol, trace_id, spans, visible_after_ms, fetched_spans.
"""

import json
import sys
import time
import urllib.error
import urllib.request

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode


def fetch_spans(api, trace_id):
    try:
        with urllib.request.urlopen(f"{api}/api/v2/traces/{trace_id}", timeout=5) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return 0
        raise
    return sum(
        len(ss.get("spans", []))
        for rs in body["trace"]["resourceSpans"]
        for ss in rs.get("scopeSpans", [])
    )


def run(protocol, exporter, api, traces=5):
    provider = TracerProvider(resource=Resource.create({"service.name": f"python-{protocol}"}))
    # The simple processor exports as each span ends and returns once the server acknowledged.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("allegro-acceptance", "1.0")
    for i in range(traces):
        with tracer.start_as_current_span("checkout", attributes={"order.id": i}) as root:
            with tracer.start_as_current_span("charge card") as child:
                child.set_attribute("amount", 12.5 * (i + 1))
                child.add_event("authorised", {"code": "A1"})
            with tracer.start_as_current_span("send email") as child:
                child.set_status(Status(StatusCode.ERROR, "smtp down"))
            trace_id = format(root.get_span_context().trace_id, "032x")
        acked = time.monotonic()
        fetched = fetch_spans(api, trace_id)
        while fetched < 3 and time.monotonic() - acked < 5:
            time.sleep(0.01)
            fetched = fetch_spans(api, trace_id)
        print(json.dumps({
            "protocol": protocol,
            "trace_id": trace_id,
            "spans": 3,
            "fetched_spans": fetched,
            "visible_after_ms": round((time.monotonic() - acked) * 1000, 1),
        }), flush=True)
    provider.shutdown()


def main():
    grpc_endpoint, http_endpoint, api = sys.argv[1:4]
    run("grpc", GrpcExporter(endpoint=grpc_endpoint, insecure=True), api)
    run("http", HttpExporter(endpoint=f"{http_endpoint}/v1/traces"), api)


if __name__ == "__main__":
    main()
