//! Allegro past one machine, on Apache DataFusion Ballista.
//!
//! A serving process plans SQL as always and, when `query.ballista.scheduler` is configured,
//! sends the optimized plan to a Ballista scheduler ([`client::Cluster`]); the scheduler plans
//! it into stages ([`scheduler`]) and executors run them ([`executor`]), reading blocks
//! straight from the shared object store. What Allegro adds to Ballista: codecs for its tables
//! and scans ([`logical_codec`], [`physical_codec`], framed as in [`wire`]), its functions
//! ([`functions`]), and block scans that keep Allegro's reader on the executors
//! ([`block_scan`], [`sampled_scan`]), in-memory rows executors fetch from the serving
//! process instead of receiving them inside plans ([`served_rows`]), and joins that collect
//! a small side into every task instead of shuffling both ([`small_join_sides`]). See
//! docs/scale-out.md.

pub mod block_scan;
pub mod client;
pub mod error;
pub mod executor;
pub mod failure;
pub mod functions;
pub mod in_process;
pub mod logical_codec;
pub mod named_blocks;
pub mod physical_codec;
pub mod runtime;
pub mod sampled_scan;
pub mod scheduler;
pub mod served_rows;
pub mod small_join_sides;
pub mod source_limits;
pub mod wire;

pub use client::Cluster;
pub use executor::{ExecutorOptions, run_executor};
pub use scheduler::{SchedulerOptions, run_scheduler};
