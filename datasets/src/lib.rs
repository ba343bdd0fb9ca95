//! Deterministic synthetic traces of a realistic system, and the committed test fixtures.

#![warn(missing_docs)]

pub mod emit;
pub mod generate;
pub mod rng;
pub mod topology;

pub use emit::{
    BlockCut, DatasetError, OtlpFormat, Summary, generate_all, write_blocks, write_otlp_files,
};
pub use generate::{GenOptions, Generator};

/// Directory of the committed fixtures.
pub fn fixtures_dir() -> std::path::PathBuf {
    // Under `cargo test`/`run`, CARGO_MANIFEST_DIR names the running package, a direct child of
    // the workspace root. The compile-time path goes stale when a shared target directory
    // built in another checkout is reused (cargo hashes workspace members by relative path).
    if let Some(p) = std::env::var_os("CARGO_MANIFEST_DIR")
        .and_then(|d| {
            std::path::Path::new(&d)
                .parent()
                .map(|r| r.join("datasets/fixtures"))
        })
        .filter(|p| p.is_dir())
    {
        return p;
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Options of the committed small fixture (`fixtures/small.otlp.json`).
pub fn small_fixture_options() -> GenOptions {
    GenOptions {
        seed: 1,
        spans: 400,
        start_unix_nano: 1_767_225_600_000_000_000,
        duration_nano: 600_000_000_000,
    }
}
