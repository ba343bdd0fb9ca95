"""Sends spans to Allegro's Jaeger gRPC receiver (jaeger.api_v2.CollectorService/PostSpans) with
grpcio, stubs generated at run time from proto/jaeger (grpcio-tools), as a Jaeger agent or a
Jaeger SDK's gRPC reporter sends them.

Usage: jaeger_grpc_client.py PROTO_DIR HOST:PORT TRACE_ID_HEX START_UNIX_SECONDS
Sends a valid batch (a server span "invoice" of service "billing" and its child "render",
linked by a CHILD_OF reference, with a log), then one whose trace_id has 3 bytes. Prints one
JSON object per call: {"code": null | "INVALID_ARGUMENT", "details": ...}.
"""

import json
import sys

import grpc

import proto_stubs


def kv(pb, key, **value):
    (field, v), = value.items()
    types = {"v_str": pb.STRING, "v_bool": pb.BOOL, "v_int64": pb.INT64, "v_float64": pb.FLOAT64}
    return pb.KeyValue(key=key, v_type=types[field], **{field: v})


def main():
    proto_dir, addr, trace_hex, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sys.path.insert(0, proto_stubs.generate(proto_dir))
    from jaeger.api_v2 import collector_pb2, collector_pb2_grpc, model_pb2 as pb  # noqa: E402

    trace_id = bytes.fromhex(trace_hex)
    root, child = bytes.fromhex("00000000000000a1"), bytes.fromhex("00000000000000a2")

    def span(span_id, name, offset_ms, refs, tags, logs=()):
        s = pb.Span(trace_id=trace_id, span_id=span_id, operation_name=name, flags=1)
        s.start_time.seconds, s.start_time.nanos = start, offset_ms * 1_000_000
        s.duration.nanos = 5_000_000
        s.references.extend(refs)
        s.tags.extend(tags)
        s.logs.extend(logs)
        return s

    log = pb.Log(fields=[kv(pb, "event", v_str="rendered"), kv(pb, "pages", v_int64=3)])
    log.timestamp.seconds, log.timestamp.nanos = start, 2_000_000
    batch = pb.Batch(
        process=pb.Process(service_name="billing", tags=[kv(pb, "hostname", v_str="bill-1")]),
        spans=[
            span(root, "invoice", 0, [], [kv(pb, "span.kind", v_str="server")]),
            span(
                child,
                "render",
                1,
                [pb.SpanRef(trace_id=trace_id, span_id=root, ref_type=pb.CHILD_OF)],
                [kv(pb, "format", v_str="pdf"), kv(pb, "otel.status_code", v_str="ERROR")],
                [log],
            ),
        ],
    )
    bad = pb.Batch(spans=[pb.Span(trace_id=b"\x01\x02\x03", span_id=root)])
    client = collector_pb2_grpc.CollectorServiceStub(grpc.insecure_channel(addr))
    for b in (batch, bad):
        out = {"code": None, "details": None}
        try:
            client.PostSpans(collector_pb2.PostSpansRequest(batch=b), timeout=30)
        except grpc.RpcError as e:
            out["code"], out["details"] = e.code().name, e.details()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
