"""Python stubs for every .proto file under the project's proto/ directory, generated at run
time with grpcio-tools (protoc plus the well-known types it ships, such as
google/protobuf/timestamp.proto, which Jaeger's model imports)."""

import importlib.resources
import pathlib
import tempfile

from grpc_tools import protoc


def generate(proto_dir):
    """Generates the stubs into a fresh directory and returns it (put it on sys.path)."""
    out = tempfile.mkdtemp(prefix="allegro-stubs-")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    files = [str(p.relative_to(proto_dir)) for p in pathlib.Path(proto_dir).rglob("*.proto")]
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
    ]
    if protoc.main(args + files) != 0:
        raise SystemExit(f"protoc failed on {files}")
    return out
