//! `allegro-bench`: the benchmark runner.
//!
//! ```text
//! cargo run --release -p allegro-benches -- block-write --spans 1000000
//! cargo run --release -p allegro-benches -- trace-by-id --spans 10000000 --block-spans 100000
//! cargo run --release -p allegro-benches -- ingest --protocol grpc --rate 0 --connections 8
//! cargo run --release -p allegro-benches -- search --spans 10000000 --duration 6h
//! cargo run --release -p allegro-benches -- sql --spans 10000000 --duration 6h --ranges 6h
//! cargo run --release -p allegro-benches -- generator --spans 1000000
//! cargo run --release -p allegro-benches -- cluster --spans 10000000 --duration 6h --ranges 6h
//! ```
//!
//! Datasets are generated once per (spans, seed, block size) under `--data` and reused.
//! Every suite prints a table and, with `--json FILE`, writes the same figures as JSON.

// The allocator the server uses too: span conversion allocates many small strings.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands mimalloc's freed pages back to the OS now, as `allegro serve` does after a merge.
fn release_freed_memory() {
    // SAFETY: takes no pointers; safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

mod cluster;
mod compaction;
mod dataset;
mod duckdb;
mod generator;
mod ingest;
mod metrics;
mod report;
mod search;
mod soak;
mod sql;
mod suites;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Options shared by every suite.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Spans in the dataset.
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Spans per block.
    #[arg(long, default_value_t = 100_000)]
    pub block_spans: u64,
    /// Split every Nth trace across two neighbouring blocks (0: none).
    #[arg(long, default_value_t = 0)]
    pub split_every: u64,
    /// Where generated datasets are cached.
    #[arg(long, default_value = "bench-data")]
    pub data: PathBuf,
    /// Warm-up iterations (not measured).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured repetitions.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Time the generated data covers (`24h`, `6h`).
    #[arg(long, default_value = "24h")]
    pub duration: String,
    /// Page compression of the blocks: lz4, zstd, zstd:LEVEL, snappy, none.
    #[arg(long, default_value = "lz4")]
    pub compression: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of the query suites measured against DuckDB (search, metrics).
#[derive(Debug, Clone, clap::Args)]
pub struct Versus {
    /// Ranges to query, ending at the end of the data.
    #[arg(long, value_delimiter = ',', default_value = "1h,6h")]
    pub ranges: Vec<String>,
    /// Skip the DuckDB comparison.
    #[arg(long)]
    pub no_duckdb: bool,
    /// Run only these queries (names as in the report, e.g. `sibling,tags`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// One of `--ranges`: where it starts and ends (whole seconds, ending at the first second at or
/// after the data's end) and the spans it holds.
pub struct Window {
    /// Start, unix ns.
    pub start: u64,
    /// End, unix ns.
    pub end: u64,
    /// Spans in it, pro rata.
    pub spans: f64,
}

impl Versus {
    /// The range `r` (`1h`, `6h`) over data of `c` with `spans` spans ending at `data_end`.
    pub fn window(r: &str, c: &Common, spans: u64, data_end: u64) -> Result<Window, String> {
        let len = humantime::parse_duration(r).map_err(|e| format!("--ranges {r}: {e}"))?;
        // Whole seconds, as Grafana sends them.
        let end = data_end.div_ceil(1_000_000_000) * 1_000_000_000;
        Ok(Window {
            start: end.saturating_sub(len.as_nanos() as u64),
            end,
            spans: spans as f64 * (len.as_secs_f64() / c.duration_secs()).min(1.0),
        })
    }

    /// DuckDB over the dataset in `dir`, unless `--no-duckdb`.
    pub fn duckdb(&self, dir: &std::path::Path) -> Result<Option<duckdb::DuckDb>, String> {
        match self.no_duckdb {
            true => Ok(None),
            false => duckdb::DuckDb::start(dir).map(Some),
        }
    }

    /// Whether the query called `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

#[derive(Debug, Parser)]
#[command(name = "allegro-bench", about = "Allegro benchmark runner")]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// Block encoding: spans/s on one core, bytes/span, compression versus OTLP protobuf.
    BlockWrite(Common),
    /// Trace lookup by ID over many blocks: p50/p99 with cold and warm caches, bytes read.
    TraceById {
        #[command(flatten)]
        common: Common,
        /// Lookups per measured repetition.
        #[arg(long, default_value_t = 200)]
        lookups: usize,
    },
    /// TraceQL search: Tempo's shapes and Drilldown's searches over 1h/6h/24h, against DuckDB.
    Search(search::SearchArgs),
    /// TraceQL metrics: Drilldown's queries over 1h and 6h, against DuckDB on the same files.
    Metrics(metrics::MetricsArgs),
    /// SQL analytics: ten queries over the span tables, against DuckDB on the same files.
    Sql(sql::SqlArgs),
    /// Ingest load generator: OTLP over HTTP or gRPC against a server it starts.
    Ingest(ingest::IngestArgs),
    /// Metrics generator processors alone: spans/s on one core, series and edges held.
    Generator(generator::GeneratorArgs),
    /// Compaction of a day of blocks: throughput, peak RSS, queries before and after.
    Compaction(compaction::CompactionArgs),
    /// Sustained multi-tenant ingest plus a Drilldown query mix, minute by minute.
    Soak(soak::SoakArgs),
    /// SQL in one process and on a Ballista cluster: distribution's overhead per query.
    Cluster(cluster::ClusterArgs),
}

impl Common {
    /// The generated time span in seconds.
    pub fn duration_secs(&self) -> f64 {
        humantime::parse_duration(&self.duration).map_or(86_400.0, |d| d.as_secs_f64())
    }
}

fn main() {
    allegro_engine::allocator::set_release(release_freed_memory);
    let cli = Cli::parse();
    // Logs only when asked (`RUST_LOG=ballista_scheduler=info`): the cluster suite's scheduler
    // says how long each job's planning took.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.suite {
            Suite::BlockWrite(c) => suites::block_write(&c).await,
            Suite::TraceById { common, lookups } => suites::trace_by_id(&common, lookups).await,
            Suite::Search(a) => search::run(&a).await,
            Suite::Metrics(a) => metrics::run(&a).await,
            Suite::Sql(a) => sql::run(&a).await,
            Suite::Ingest(a) => ingest::run(&a).await,
            Suite::Generator(a) => generator::run(&a).await,
            Suite::Compaction(a) => compaction::run(&a).await,
            Suite::Soak(a) => soak::run(&a).await,
            Suite::Cluster(a) => cluster::run(&a).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
