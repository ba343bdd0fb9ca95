//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::config::Config;

/// Allegro: a trace analytics engine that speaks Grafana Tempo's protocols.
#[derive(Debug, Parser)]
#[command(
    name = "allegro",
    version,
    about = "Allegro: a trace analytics engine that speaks Grafana Tempo's protocols"
)]
pub struct Cli {
    /// YAML config file (Tempo-style keys).
    #[arg(long, global = true, env = "ALLEGRO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded local block store (overrides storage.trace.local.path and
    /// selects the local backend).
    #[arg(long, global = true, env = "ALLEGRO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve Tempo's HTTP API over the stored blocks.
    Serve(commands::serve::ServeArgs),
    /// Generate data when there is none, serve it, and print how to look at it in Grafana.
    Demo(commands::demo::DemoArgs),
    /// Generate a deterministic synthetic dataset (blocks or OTLP files).
    Gen(commands::gen_cmd::GenArgs),
    /// List the blocks of a tenant.
    Blocks(commands::blocks::BlocksArgs),
    /// One compaction and retention pass over the stored blocks, as `serve` runs each cycle.
    Compact(commands::compact::CompactArgs),
    /// Search with TraceQL over the stored blocks, without a server.
    Query(commands::query::QueryArgs),
    /// Run a TraceQL metrics query over the stored blocks: series with sparklines.
    Metrics(commands::metrics_cmd::MetricsArgs),
    /// Show how a TraceQL query runs: AST, per-trace program, logical and physical plans.
    Explain(commands::query::ExplainArgs),
    /// SQL over the span tables (spans, traces, events, links), without a server.
    Sql(commands::sql_cmd::SqlArgs),
    /// A Ballista scheduler for a cluster of executors over the shared block store.
    Scheduler(commands::cluster::SchedulerArgs),
    /// A Ballista executor: runs query stages, reading blocks from the shared store.
    Executor(commands::cluster::ExecutorArgs),
    /// TraceQL tools: `allegro traceql check '<query>'`.
    Traceql(commands::traceql_cmd::TraceqlArgs),
    /// Config tools: `allegro config check FILE` validates and prints the effective settings.
    Config(commands::config_cmd::ConfigArgs),
}

/// Loads the config file (if any) and applies command-line overrides.
pub fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(dir) = &cli.data_dir {
        cfg.storage.trace.backend = "local".into();
        cfg.storage.trace.local.path = dir.clone();
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Runs the CLI; the exit code is 0 on success, 1 on a runtime failure, 2 on bad usage or config.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let serves = matches!(
        cli.command,
        Command::Serve(_) | Command::Demo(_) | Command::Scheduler(_) | Command::Executor(_)
    );
    if !serves {
        // A command whose reader went away (`allegro blocks | head`) ends quietly, as Unix
        // tools do, instead of panicking in println!. Servers keep Rust's default (the signal
        // ignored, a closed socket an error on that request alone): with the default
        // disposition a peer that hung up mid-answer killed an executor (found by
        // server/tests/cluster.rs, whose readiness probe connects and closes at once).
        // SAFETY: set before any thread starts; SIG_DFL is a valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The language tools need neither config, data nor a runtime.
    let cli = match cli.command {
        Command::Traceql(args) => return commands::traceql_cmd::run(args),
        Command::Config(args) => return commands::config_cmd::run(args),
        command => Cli { command, ..cli },
    };
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // `server.log_level` as in Tempo; RUST_LOG, when set, says more precisely what to log.
    let level = cfg.server.log_level.as_deref().unwrap_or("info");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Commands that read the store never create it: a mistyped --data-dir is an error, not an
    // empty store.
    let reads = matches!(
        cli.command,
        Command::Blocks(_)
            | Command::Query(_)
            | Command::Explain(_)
            | Command::Metrics(_)
            | Command::Sql(_)
            | Command::Compact(_)
    );
    let local = &cfg.storage.trace.local.path;
    if reads && cfg.storage.trace.backend == "local" && !local.is_dir() {
        eprintln!(
            "error: the data directory {} does not exist (check --data-dir or storage.trace.local.path)",
            local.display()
        );
        return ExitCode::from(2);
    }
    // 8 MiB worker stacks: the TraceQL front end's limits are sized for them.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => commands::serve::run(cfg, a).await,
            Command::Demo(a) => commands::demo::run(cfg, a).await,
            Command::Gen(a) => commands::gen_cmd::run(cfg, a).await,
            Command::Blocks(a) => commands::blocks::run(cfg, a).await,
            Command::Compact(a) => commands::compact::run(cfg, a).await,
            Command::Query(a) => return commands::query::run(cfg, a).await,
            Command::Explain(a) => return commands::query::explain(cfg, a).await,
            Command::Metrics(a) => return commands::metrics_cmd::run(cfg, a).await,
            Command::Sql(a) => return commands::sql_cmd::run(cfg, a).await,
            Command::Scheduler(a) => commands::cluster::scheduler(cfg, a).await,
            Command::Executor(a) => commands::cluster::executor(cfg, a).await,
            Command::Traceql(_) | Command::Config(_) => Ok(()),
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
