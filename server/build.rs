//! Generates the `tempopb.StreamingQuerier` gRPC service from `proto/tempopb/tempo.proto`
//! with tonic. The messages are the engine's (generated there from the same file); protox
//! parses the `.proto` files, so the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([proto.join("tempopb/tempo.proto")], [&proto])?;
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".opentelemetry.proto", "::opentelemetry_proto::tonic")
        .extern_path(".tempopb", "::allegro_engine::tempopb")
        .compile_fds(fds)?;
    Ok(())
}
