//! `allegro gen`: a deterministic synthetic dataset as blocks or OTLP files.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use allegro_datasets::{BlockCut, GenOptions, OtlpFormat, Summary, write_blocks, write_otlp_files};
use allegro_engine::storage::open_store;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, parse_duration};
use crate::tenant::{SINGLE_TENANT, validate_tenant};

/// What `gen` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenFormat {
    /// Blocks in the configured storage (the data directory by default).
    Blocks,
    /// OTLP `ExportTraceServiceRequest` protobuf files.
    OtlpProto,
    /// OTLP JSON files.
    OtlpJson,
}

/// Options of `allegro gen`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Spans to generate (whole traces: the last one may overshoot a little).
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Seed; the same seed and options give the same data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tenant to write blocks for.
    #[arg(long, default_value = SINGLE_TENANT)]
    pub tenant: String,
    /// Start of the time window: RFC3339 (`2026-01-01T00:00:00Z`) or unix seconds; default
    /// `now - duration`.
    #[arg(long)]
    pub start: Option<String>,
    /// Length of the time window (`1h`, `30m`, `7d`).
    #[arg(long, default_value = "1h")]
    pub duration: String,
    /// Spans per block (blocks hold whole traces, cut in time order).
    #[arg(long, default_value_t = 100_000)]
    pub block_spans: u64,
    /// Split every Nth trace across two neighbouring blocks, as spans arriving after
    /// `trace_idle_period` are (the spans of its first resource in one, the rest in the next);
    /// 0 keeps every trace whole.
    #[arg(long, default_value_t = 0)]
    pub split_every: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GenFormat::Blocks)]
    pub format: GenFormat,
    /// Output directory for OTLP files.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Spans per OTLP file.
    #[arg(long, default_value_t = 10_000)]
    pub file_spans: u64,
}

/// Parses `--start`: RFC3339 or unix seconds.
pub fn parse_start(s: &str) -> Result<u64, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("--start {s:?}: expected RFC3339 or unix seconds: {e}"))?;
    u64::try_from(t.timestamp_nanos_opt().unwrap_or(0))
        .map_err(|_| format!("--start {s:?} is before 1970"))
}

/// Generation options from the arguments.
pub fn gen_options(args: &GenArgs) -> Result<GenOptions, String> {
    let duration = parse_duration(&args.duration)
        .map_err(|e| format!("--duration: {e}"))?
        .as_nanos() as u64;
    if duration == 0 {
        return Err("--duration must be positive".into());
    }
    let start = match &args.start {
        Some(s) => parse_start(s)?,
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_nanos() as u64;
            now.saturating_sub(duration)
        }
    };
    Ok(GenOptions {
        seed: args.seed,
        spans: args.spans,
        start_unix_nano: start,
        duration_nano: duration,
    })
}

fn progress_bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} spans ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

/// Generates and writes; returns the summary.
pub async fn generate(cfg: &Config, args: &GenArgs) -> Result<Summary, String> {
    validate_tenant(&args.tenant).map_err(|e| format!("--tenant: {e}"))?;
    let opts = gen_options(args)?;
    let pb = progress_bar(args.spans);
    let mut tick = |n: u64| pb.set_position(n.min(args.spans));
    let summary = match args.format {
        GenFormat::Blocks => {
            let store = open_store(&cfg.backend()).map_err(|e| e.to_string())?;
            let write = cfg.block_write_options().map_err(|e| e.to_string())?;
            write_blocks(
                &store,
                &args.tenant,
                opts,
                BlockCut {
                    spans: args.block_spans,
                    split_every: args.split_every,
                },
                &write,
                &mut tick,
            )
            .await
            .map_err(|e| e.to_string())?
        }
        GenFormat::OtlpProto | GenFormat::OtlpJson => {
            let out = args
                .out
                .clone()
                .ok_or("--out DIR is required for OTLP output")?;
            let format = if args.format == GenFormat::OtlpProto {
                OtlpFormat::Protobuf
            } else {
                OtlpFormat::Json
            };
            let spans = args.file_spans;
            tokio::task::block_in_place(|| write_otlp_files(&out, format, opts, spans, &mut tick))
                .map_err(|e| e.to_string())?
        }
    };
    pb.finish_and_clear();
    Ok(summary)
}

/// `allegro gen`.
pub async fn run(cfg: Config, args: GenArgs) -> Result<(), String> {
    let t0 = Instant::now();
    let s = generate(&cfg, &args).await?;
    let secs = t0.elapsed().as_secs_f64();
    let what = if s.blocks.is_empty() {
        format!("{} files", s.files.len())
    } else {
        format!("{} blocks", s.blocks.len())
    };
    println!(
        "generated {} spans in {} traces: {what}, {} bytes ({:.1} bytes/span) in {secs:.1}s ({:.0} spans/s)",
        s.spans,
        s.traces,
        s.bytes,
        s.bytes as f64 / s.spans.max(1) as f64,
        s.spans as f64 / secs.max(1e-9)
    );
    if let Some(b) = s.blocks.first() {
        println!(
            "first trace ID: {}   (try: {})",
            b.min_id,
            fetch_hint(&cfg, &args.tenant, &b.min_id)
        );
    }
    Ok(())
}

/// The command that fetches trace `id` from a server started with `cfg`: its port and API
/// prefix, and the tenant header when the tenant needs one.
fn fetch_hint(cfg: &Config, tenant: &str, id: &str) -> String {
    let header = if cfg.multitenancy_enabled || tenant != SINGLE_TENANT {
        format!("-H 'X-Scope-OrgID: {tenant}' ")
    } else {
        String::new()
    };
    format!(
        "curl {header}http://localhost:{}{}/api/v2/traces/{id}",
        cfg.server.http_listen_port,
        cfg.server.http_api_prefix.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_uses_the_configured_port_prefix_and_tenant() {
        let mut cfg = Config::default();
        assert_eq!(
            fetch_hint(&cfg, SINGLE_TENANT, "ab"),
            "curl http://localhost:3200/api/v2/traces/ab"
        );
        cfg.server.http_listen_port = 3300;
        cfg.server.http_api_prefix = "/tempo/".into();
        assert_eq!(
            fetch_hint(&cfg, "team-a", "ab"),
            "curl -H 'X-Scope-OrgID: team-a' http://localhost:3300/tempo/api/v2/traces/ab"
        );
    }
}
