//! Generates the `tempopb.StreamingQuerier` gRPC service from `proto/tempopb/tempo.proto` and
//! Jaeger's `CollectorService` from `proto/jaeger/api_v2/collector.proto` with tonic. The
//! messages are the engine's and the ingest crate's (generated there from the same files);
//! protox parses the `.proto` files, so the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a build script compiled for one
    // checkout may be reused by another.
    let proto = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile(
        [
            proto.join("tempopb/tempo.proto"),
            proto.join("jaeger/api_v2/collector.proto"),
        ],
        [&proto],
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".opentelemetry.proto", "::opentelemetry_proto::tonic")
        .extern_path(".tempopb", "::allegro_engine::tempopb")
        .extern_path(".jaeger.api_v2", "::allegro_ingest::jaeger::api_v2")
        .compile_fds(fds)?;
    Ok(())
}
