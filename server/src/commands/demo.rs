//! `allegro demo`: data when there is none, a server, and what to do next.

use super::gen_cmd::{GenArgs, GenFormat, generate};
use super::open_catalog;
use super::serve::{ServeArgs, bind, serve_on};
use crate::config::Config;
use crate::tenant::SINGLE_TENANT;

/// Options of `allegro demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Spans to generate when the data directory is empty.
    #[arg(long, default_value_t = 200_000)]
    pub spans: u64,
    /// Port (overrides server.http_listen_port).
    #[arg(long)]
    pub http_listen_port: Option<u16>,
}

/// `allegro demo`.
pub async fn run(cfg: Config, args: DemoArgs) -> Result<(), String> {
    let catalog = open_catalog(&cfg)?;
    let mut blocks = catalog
        .blocks(SINGLE_TENANT)
        .await
        .map_err(|e| e.to_string())?;
    if blocks.is_empty() {
        println!(
            "no data yet: generating {} spans of a simulated online shop over the last hour…",
            args.spans
        );
        let gen_args = GenArgs {
            spans: args.spans,
            seed: 1,
            tenant: SINGLE_TENANT.into(),
            start: None,
            duration: "1h".into(),
            block_spans: 100_000,
            format: GenFormat::Blocks,
            out: None,
            file_spans: 10_000,
        };
        let s = generate(&cfg, &gen_args).await?;
        println!(
            "wrote {} spans in {} traces to {} blocks",
            s.spans,
            s.traces,
            s.blocks.len()
        );
        catalog.clear_caches();
        blocks = catalog
            .blocks(SINGLE_TENANT)
            .await
            .map_err(|e| e.to_string())?;
    }
    let listener = bind(
        &cfg,
        &ServeArgs {
            http_listen_port: args.http_listen_port,
            http_listen_address: None,
        },
    )
    .await?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let spans: u64 = blocks.iter().map(|b| b.total_spans).sum();
    let traces: u64 = blocks.iter().map(|b| b.total_objects).sum();
    let example = blocks.last().map(|b| b.max_id.clone()).unwrap_or_default();
    println!(
        "
Allegro serves {traces} traces ({spans} spans) in {} blocks.

Add it to Grafana: Connections → Data sources → Add new → Tempo
  URL: http://localhost:{port}        then “Save & test”.
First query: in Explore, pick the Tempo data source and paste this trace ID:
  {example}
or from a shell:
  curl -s http://localhost:{port}/api/v2/traces/{example} | head -c 600
Stop with Ctrl-C.
",
        blocks.len()
    );
    serve_on(&cfg, listener).await
}
