//! Generates Tempo's protobuf messages from `proto/tempopb/tempo.proto` with prost. protox
//! parses the `.proto` files, so the build needs no `protoc`. OTLP's messages map to the
//! `opentelemetry-proto` crate's types, which the rest of the engine already uses.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a build script compiled for one
    // checkout may be reused by another.
    let proto = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([proto.join("tempopb/tempo.proto")], [&proto])?;
    prost_build::Config::new()
        .extern_path(".opentelemetry.proto", "::opentelemetry_proto::tonic")
        // Service stats keyed by service name print in a stable order.
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}
