//! OS priorities of Allegro's threads: what gets a core first when both are busy.
//!
//! Four tiers, by Linux nice value (per thread): ingest and health checks at 0, so exporters
//! are never refused for want of CPU; queries, and converting the head ahead of them, at
//! [`QUERY_NICE`]; work that can wait a few seconds without anyone noticing (encoding cut
//! blocks) at [`BACKGROUND_NICE`]; work that can wait minutes (compaction) at
//! [`COMPACTION_NICE`]. CFS shares a busy core by weight (1024 at nice 0, 110 at 10, 36 at 15,
//! 15 at 19), so a running query gets three times the CPU of a block write beside it, a block
//! write more than twice that of a merge, and each gets all of it when the tiers above leave a
//! core idle. In the 60k spans/s soak, block encoding and compaction at nice 0 took the CPU
//! from queries at nice 10 and made every query's p99 under load 4–40 times its idle p99; with
//! both at 15, a window's merges held back the block writer until the heads were full
//! ([`crate::block::pace`]).

/// OS priority of query threads (0 is normal; higher yields the CPU to other threads).
pub const QUERY_NICE: i32 = 10;

/// OS priority of background work: encoding the head's cut blocks.
pub const BACKGROUND_NICE: i32 = 15;

/// OS priority of compaction, the lowest: a merge can wait for everything else.
pub const COMPACTION_NICE: i32 = 19;

/// Sets the calling thread's nice value (Linux: per thread; threads it spawns inherit it).
pub fn set_thread_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority have no memory effects; failure only leaves the priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}

/// Runs `f` on the calling thread at `nice`, then puts the thread back at 0 (for pooled
/// threads that run other work afterwards).
pub fn at_nice<T>(nice: i32, f: impl FnOnce() -> T) -> T {
    set_thread_nice(nice);
    let out = f();
    set_thread_nice(0);
    out
}
