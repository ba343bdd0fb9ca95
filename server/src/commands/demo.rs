//! `allegro demo`: data when there is none, a server, and what to do next.

use super::gen_cmd::{GenArgs, GenFormat, generate};
use super::open_catalog;
use std::time::Duration;

use allegro_datasets::{GenOptions, Generator};
use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use allegro_engine::otlp::trace::v1::ResourceSpans;

use super::serve::{Addresses, ServeArgs, bind, serve_with};
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
    /// Live spans per second sent through OTLP/gRPC while serving (0: none).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
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
            split_every: 0,
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
    let rate = args.rate;
    serve_with(&cfg, listener, move |a: Addresses| {
        if rate == 0 {
            return;
        }
        match a.otlp_grpc {
            Some(addr) => {
                println!("sending ~{rate} live spans/s of the simulated shop to OTLP/gRPC {addr}");
                tokio::spawn(live_traffic(format!("http://{addr}"), rate));
            }
            None => println!("no live traffic: the OTLP/gRPC receiver is off in this config"),
        }
    })
    .await
}

/// Moves a generated trace so it starts at `now` (span, event and link times alike).
fn shift_to_now(trace: &mut [ResourceSpans], now: u64) {
    let spans = || {
        trace
            .iter()
            .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
    };
    let Some(first) = spans().map(|s| s.start_time_unix_nano).min() else {
        return;
    };
    let shift = |t: &mut u64| *t = t.saturating_sub(first).saturating_add(now);
    for s in trace
        .iter_mut()
        .flat_map(|r| r.scope_spans.iter_mut().flat_map(|s| s.spans.iter_mut()))
    {
        shift(&mut s.start_time_unix_nano);
        shift(&mut s.end_time_unix_nano);
        for e in &mut s.events {
            shift(&mut e.time_unix_nano);
        }
    }
}

/// The generator's traffic through the real OTLP receiver, ~`rate` spans/s, until the process
/// stops. Export failures are logged and retried with the next batch.
async fn live_traffic(url: String, rate: u64) {
    let mut client = loop {
        match TraceServiceClient::connect(url.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "demo traffic: cannot connect yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut g = Generator::new(GenOptions {
        seed: allegro_engine::now_unix_nanos(),
        spans: u64::MAX,
        start_unix_nano: allegro_engine::now_unix_nanos(),
        duration_nano: 1,
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let per_tick = (rate / 4).max(1);
    loop {
        tick.tick().await;
        let mut batch = Vec::new();
        let mut spans = 0u64;
        while spans < per_tick {
            let Some(mut t) = g.next_trace() else { return };
            shift_to_now(&mut t, allegro_engine::now_unix_nanos());
            spans += t
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum::<u64>();
            batch.extend(t);
        }
        let req = ExportTraceServiceRequest {
            resource_spans: batch,
        };
        if let Err(e) = client.export(req).await {
            tracing::warn!(error = %e, "demo traffic: export failed");
        }
    }
}
