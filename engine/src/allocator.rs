//! What the engine asks of the process's allocator: to hand freed memory back now.
//!
//! The binaries use mimalloc, which keeps freed pages for a purge delay (1 s) before returning
//! them to the OS. A merge frees a few hundred MiB of input batches and encoder state and
//! takes about as long as the delay, so the next merge allocated on top of the last one's
//! leftovers: the compactor's peak RSS over a day of 287 blocks ranged 0.68–1.16 GiB over
//! fourteen runs; releasing after each merge brought it to 0.71–0.84 GiB over eight, at no
//! cost measurable through the VM's noise (docs/benchmarks.md). The engine does not choose the
//! allocator, so the binary that does registers how to release ([`set_release`]); without
//! one, [`release`] does nothing.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers how the process's allocator returns freed memory to the OS (once; later calls
/// are ignored).
pub fn set_release(f: fn()) {
    let _ = RELEASE.set(f);
}

/// Returns freed memory to the OS, if the binary said how.
pub fn release() {
    if let Some(f) = RELEASE.get() {
        f();
    }
}
