//! Free loopback ports for servers the tests start as separate processes.
//!
//! A port found by binding port 0 comes from the kernel's ephemeral range, which is also where
//! every outgoing connection takes its source port: a multi-listener server such as SeaweedFS
//! (master, volume, filer and S3 gateway in one process) opens client connections to its own
//! master before its filer binds, and once took the filer's port that way ("bind: address
//! already in use", a failed CI run). Ports below the ephemeral range are never handed out as
//! source ports, so they are taken from there, starting at a point that differs per process so
//! tests running in parallel processes rarely try the same one.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out: above the well-known and common registered service ports.
const LOWEST: u32 = 10_000;

/// A loopback port below the kernel's ephemeral range that was free a moment ago (bound and
/// released).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let top = ephemeral_start().max(LOWEST + 1_000);
    let span = top - LOWEST;
    let start = process_seed() % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (start + n) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            drop(l);
            return port as u16;
        }
    }
    panic!("no free loopback port between {LOWEST} and {top}")
}

/// First port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
        .min(u32::from(u16::MAX))
}

/// A number that differs between test processes started together.
fn process_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::process::id().wrapping_mul(2_654_435_761) ^ nanos
}
