//! Real tools a test needs (SeaweedFS, Prometheus, clients): found, or the test skipped
//! outside CI and failed under `CI=true`. Shared with the server crate's process tests (one
//! source file for both).

/// `bin` when it runs (`bin args…` succeeds), or `None` outside CI; under `CI=true` a missing
/// tool fails the test, naming `install` (how `.ci/run` installs it).
pub fn tool(bin: &str, args: &[&str], install: &str) -> Option<String> {
    let found = std::process::Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(bin.to_string());
    }
    missing(&format!(
        "`{bin}` is not installed; .ci/run installs it ({install})"
    ))
}

/// A real client or tool a test needs is missing: under CI (`CI=true`) the test fails, as the
/// real part is part of the acceptance; elsewhere it is skipped with a note.
pub fn missing<T>(what: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true but {what}");
    }
    eprintln!("skipped: {what}");
    None
}
