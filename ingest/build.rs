//! Generates Jaeger's api_v2 messages (`proto/jaeger/api_v2/`) with prost for the Jaeger gRPC
//! receiver. protox parses the `.proto` files, so the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a build script compiled for one
    // checkout may be reused by another.
    let proto = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto.join("jaeger").display());
    let fds = protox::compile([proto.join("jaeger/api_v2/collector.proto")], [&proto])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
