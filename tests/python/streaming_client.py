"""Calls Allegro's tempopb.StreamingQuerier with grpcio, as Grafana's Tempo data source does:
stubs are generated at run time from the project's .proto files (grpcio-tools), requests go
over h2c to the HTTP port with x-scope-orgid metadata, and every streamed message is kept.

Usage: streaming_client.py PROTO_DIR HOST:PORT REQUESTS_JSON
REQUESTS_JSON is a list of {"rpc": "Search", "request": {...}, "tenant": "a"|null}; request
fields use the proto's JSON names (ParseDict). Prints one JSON object per request:
{"rpc", "messages": [base64 protobuf, ...], "code": null | "INVALID_ARGUMENT", "details"}.
"""

import base64
import json
import sys

import grpc
from google.protobuf import json_format

import proto_stubs


def stubs(proto_dir):
    stubs_dir = proto_stubs.generate(proto_dir)
    sys.path.insert(0, stubs_dir)
    from tempopb import tempo_pb2, tempo_pb2_grpc  # noqa: E402

    return tempo_pb2, tempo_pb2_grpc


REQUEST_TYPES = {
    "Search": "SearchRequest",
    "SearchTags": "SearchTagsRequest",
    "SearchTagsV2": "SearchTagsRequest",
    "SearchTagValues": "SearchTagValuesRequest",
    "SearchTagValuesV2": "SearchTagValuesRequest",
    "MetricsQueryRange": "QueryRangeRequest",
    "MetricsQueryInstant": "QueryInstantRequest",
}


def main():
    proto_dir, addr, requests = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    pb, pb_grpc = stubs(proto_dir)
    # Grafana reads at most 4 MiB per message.
    channel = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 4 << 20)])
    client = pb_grpc.StreamingQuerierStub(channel)
    for r in requests:
        msg = json_format.ParseDict(r["request"], getattr(pb, REQUEST_TYPES[r["rpc"]])())
        metadata = [("x-scope-orgid", r["tenant"])] if r.get("tenant") else []
        out = {"rpc": r["rpc"], "messages": [], "code": None, "details": None}
        try:
            for m in getattr(client, r["rpc"])(msg, metadata=metadata, timeout=60):
                out["messages"].append(base64.b64encode(m.SerializeToString()).decode())
        except grpc.RpcError as e:
            out["code"] = e.code().name
            out["details"] = e.details()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
