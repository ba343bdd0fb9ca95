//! `allegro serve`: the query API, the receivers and the ingester in one process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use allegro_engine::block::lifecycle::LifecycleStats;
use allegro_engine::block::pace::Pace;
use allegro_ingest::Ingester;
use allegro_ingest::generator::Generator;
use allegro_ingest::generator::remote_write::RemoteWrite;
use allegro_ingest::jaeger::thrift::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use super::open_catalog;
use crate::config::Config;
use crate::http::metrics::HttpMetrics;
use crate::http::{AppState, router};
use crate::receivers::jaeger_grpc::JaegerGrpc;
use crate::receivers::jaeger_http::{self, JaegerHttp};
use crate::receivers::jaeger_udp::JaegerUdp;
use crate::receivers::otlp_grpc::OtlpGrpc;
use crate::receivers::otlp_http::{self, OtlpHttp};
use crate::receivers::zipkin::{self, Zipkin};

/// Options of `allegro serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Port (overrides server.http_listen_port; 0 picks a free one).
    #[arg(long)]
    pub http_listen_port: Option<u16>,
    /// Address (overrides server.http_listen_address).
    #[arg(long)]
    pub http_listen_address: Option<String>,
}

/// Where a running server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// Tempo's HTTP API.
    pub http: SocketAddr,
    /// OTLP/gRPC, when enabled.
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP, when enabled.
    pub otlp_http: Option<SocketAddr>,
    /// Zipkin, when enabled.
    pub zipkin: Option<SocketAddr>,
    /// Jaeger gRPC (`PostSpans`), when enabled.
    pub jaeger_grpc: Option<SocketAddr>,
    /// Jaeger Thrift over HTTP (`POST /api/traces`), when enabled.
    pub jaeger_thrift_http: Option<SocketAddr>,
    /// Jaeger agent UDP, compact protocol, when enabled.
    pub jaeger_thrift_compact: Option<SocketAddr>,
    /// Jaeger agent UDP, binary protocol, when enabled.
    pub jaeger_thrift_binary: Option<SocketAddr>,
    /// Arrow Flight SQL, when on.
    pub flight_sql: Option<SocketAddr>,
}

/// Binds the listener from config and overrides.
pub async fn bind(cfg: &Config, args: &ServeArgs) -> Result<TcpListener, String> {
    let host = args
        .http_listen_address
        .clone()
        .unwrap_or_else(|| cfg.server.http_listen_address.clone());
    let port = args.http_listen_port.unwrap_or(cfg.server.http_listen_port);
    TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port} (server.http_listen_port): {e}"))
}

async fn bind_endpoint(key: &str, endpoint: &str) -> Result<TcpListener, String> {
    TcpListener::bind(endpoint)
        .await
        .map_err(|e| format!("cannot listen on {endpoint} ({key}): {e}"))
}

/// Serves until SIGTERM or Ctrl-C; in-flight requests finish first.
pub async fn serve_on(cfg: &Config, listener: TcpListener) -> Result<(), String> {
    serve_with(cfg, listener, |_| {}).await
}

/// Like [`serve_on`], telling `ready` where everything listens once the WAL is replayed.
pub async fn serve_with(
    cfg: &Config,
    listener: TcpListener,
    ready: impl FnOnce(Addresses),
) -> Result<(), String> {
    let catalog = open_catalog(cfg)?;
    let icfg = cfg.ingester_config().map_err(|e| e.to_string())?;
    let mut icfg = icfg;
    if cfg.storage.trace.backend == "local" {
        let moved = crate::data_dir::migrate(&cfg.storage.trace.local.path, &icfg.wal.dir)?;
        if let Some(old) = moved.stay {
            icfg.wal.dir = old;
        }
        if let Some((from, to)) = &moved.wal {
            tracing::info!(
                from = %from.display(),
                to = %to.display(),
                tenant_wal_blocks = moved.blocks.len(),
                "moved the WAL to a directory no tenant can name"
            );
        }
    }
    let wal_dir = icfg.wal.dir.clone();
    let block_opts = icfg.block.clone();
    // Compaction and retention write and delete blocks: not on storage that takes no writes.
    let mut lifecycle = Some(Arc::new(LifecycleStats::default()));
    let (ingester, replay) = Ingester::open(icfg, catalog.clone(), Default::default())
        .await
        .map_err(|e| format!("cannot open the WAL in {}: {e}", wal_dir.display()))?;
    if ingester.read_only().is_some() {
        lifecycle = None;
    }
    if replay.records > 0 {
        tracing::info!(
            records = replay.records,
            spans = replay.replayed_spans,
            traces = replay.replayed_traces,
            damaged = replay.damage.len(),
            "replayed the WAL"
        );
    }
    // Sharded ingest: spans of traces other members own go to them, and queries ask every
    // member for its live spans (docs/scale-out.md, "Ingest across nodes").
    let distributor = match &cfg.ingester.ring {
        Some(r) => {
            let ring = r.ring().map_err(|e| format!("config: {e}"))?;
            tracing::info!(
                instance = %ring.members()[ring.me()].id,
                members = ring.members().len(),
                "ingest sharded by trace ID over the ring"
            );
            let d = Arc::new(allegro_ingest::distributor::Distributor::new(Arc::new(
                ring,
            )));
            ingester.set_distributor(d.clone());
            Some(d)
        }
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let receivers = cfg.distributor.effective_receivers();
    let mut addrs = Addresses {
        http: listener.local_addr().map_err(|e| e.to_string())?,
        otlp_grpc: None,
        otlp_http: None,
        zipkin: None,
        jaeger_grpc: None,
        jaeger_thrift_http: None,
        jaeger_thrift_compact: None,
        jaeger_thrift_binary: None,
        flight_sql: None,
    };
    let otlp = receivers.otlp.unwrap_or_default().protocols;
    if let Some(g) = otlp.grpc {
        let l = bind_endpoint(
            "distributor.receivers.otlp.protocols.grpc.endpoint",
            &g.endpoint,
        )
        .await?;
        addrs.otlp_grpc = Some(l.local_addr().map_err(|e| e.to_string())?);
        let svc = OtlpGrpc {
            ingester: ingester.clone(),
            multitenancy: cfg.multitenancy_enabled,
        }
        .service(g.max_recv_msg_size_mib << 20);
        tasks.spawn(serve_grpc(l, svc, stop_rx.clone(), "OTLP/gRPC receiver"));
    }
    if let Some(h) = otlp.http {
        let l = bind_endpoint(
            "distributor.receivers.otlp.protocols.http.endpoint",
            &h.endpoint,
        )
        .await?;
        addrs.otlp_http = Some(l.local_addr().map_err(|e| e.to_string())?);
        let app = otlp_http::router(OtlpHttp {
            ingester: ingester.clone(),
            multitenancy: cfg.multitenancy_enabled,
            max_body: h.max_request_body_size,
            here: false,
        });
        tasks.spawn(serve_axum(l, app, stop_rx.clone(), "OTLP/HTTP receiver"));
    }
    if let Some(z) = receivers.zipkin {
        let l = bind_endpoint("distributor.receivers.zipkin.endpoint", &z.endpoint).await?;
        addrs.zipkin = Some(l.local_addr().map_err(|e| e.to_string())?);
        let app = zipkin::router(Zipkin {
            ingester: ingester.clone(),
            multitenancy: cfg.multitenancy_enabled,
            max_body: z.max_request_body_size,
        });
        tasks.spawn(serve_axum(l, app, stop_rx.clone(), "Zipkin receiver"));
    }
    let jaeger = receivers.jaeger.unwrap_or_default().protocols;
    if let Some(g) = jaeger.grpc {
        let key = "distributor.receivers.jaeger.protocols.grpc.endpoint";
        let l = bind_endpoint(key, &g.endpoint).await?;
        addrs.jaeger_grpc = Some(l.local_addr().map_err(|e| e.to_string())?);
        let svc = JaegerGrpc {
            ingester: ingester.clone(),
            multitenancy: cfg.multitenancy_enabled,
        }
        .service(g.max_recv_msg_size_mib << 20);
        tasks.spawn(serve_grpc(l, svc, stop_rx.clone(), "Jaeger gRPC receiver"));
    }
    if let Some(h) = jaeger.thrift_http {
        let key = "distributor.receivers.jaeger.protocols.thrift_http.endpoint";
        let l = bind_endpoint(key, &h.endpoint).await?;
        addrs.jaeger_thrift_http = Some(l.local_addr().map_err(|e| e.to_string())?);
        let app = jaeger_http::router(JaegerHttp {
            ingester: ingester.clone(),
            multitenancy: cfg.multitenancy_enabled,
            max_body: h.max_request_body_size,
        });
        tasks.spawn(serve_axum(
            l,
            app,
            stop_rx.clone(),
            "Jaeger Thrift HTTP receiver",
        ));
    }
    for (udp, protocol, name) in [
        (jaeger.thrift_compact, Protocol::Compact, "thrift_compact"),
        (jaeger.thrift_binary, Protocol::Binary, "thrift_binary"),
    ] {
        let Some(u) = udp else { continue };
        let socket = UdpSocket::bind(&u.endpoint).await.map_err(|e| {
            format!(
                "cannot listen on {} (distributor.receivers.jaeger.protocols.{name}.endpoint): {e}",
                u.endpoint
            )
        })?;
        let addr = Some(socket.local_addr().map_err(|e| e.to_string())?);
        match protocol {
            Protocol::Compact => addrs.jaeger_thrift_compact = addr,
            Protocol::Binary => addrs.jaeger_thrift_binary = addr,
        }
        if cfg.multitenancy_enabled {
            tracing::warn!(
                "distributor.receivers.jaeger.protocols.{name}: UDP datagrams name no tenant; \
                 with multitenancy_enabled they are dropped (send over gRPC or HTTP with X-Scope-OrgID)"
            );
        }
        let receiver = JaegerUdp {
            ingester: ingester.clone(),
            multitenancy: cfg.multitenancy_enabled,
            protocol,
            max_packet: u.max_packet_size,
        };
        tasks.spawn(receiver.run(socket, stop_rx.clone()));
    }
    let generator = cfg.generator().map_err(|e| e.to_string())?;
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let mut remote_write = None;
    let gen_task = match generator {
        Some(g) => {
            let generator = Arc::new(Generator::new(g.generator));
            ingester.set_tap(generator.clone());
            if let Some(why) = ingester.read_only() {
                tracing::warn!("metrics generator: no remote write, no data comes in ({why})");
            } else if !g.remote_write.endpoints.is_empty() {
                let rw = RemoteWrite::start(&g.remote_write).map_err(|e| {
                    format!(
                        "metrics_generator.storage.path: cannot open the remote-write queue in {}: {e}",
                        g.remote_write.dir.display()
                    )
                })?;
                let urls: Vec<&str> = g
                    .remote_write
                    .endpoints
                    .iter()
                    .map(|e| e.url.as_str())
                    .collect();
                say(&format!(
                    "metrics generator: remote write to {}",
                    urls.join(", ")
                ));
                remote_write = Some(Arc::new(rw));
            } else {
                say(
                    "metrics generator: series at /api/metrics-generator/metrics (no remote_write)",
                );
            }
            Some((
                generator.clone(),
                tokio::spawn(collect_loop(generator, remote_write.clone())),
            ))
        }
        None => None,
    };
    let live: Arc<dyn allegro_engine::query::LiveSpans> = match &distributor {
        Some(d) => Arc::new(allegro_ingest::ring_live::RingLive::new(
            ingester.clone(),
            d.clone(),
        )),
        None => ingester.clone(),
    };
    let query = Arc::new(super::on_cluster(
        cfg,
        allegro_engine::query::QueryEngine::with_limits(
            catalog.clone(),
            Some(live),
            cfg.query_limits().map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("query engine: {e}"))?,
    )?);
    let state = AppState {
        catalog: catalog.clone(),
        query,
        multitenancy: cfg.multitenancy_enabled,
        metrics: Arc::new(HttpMetrics::default()),
        ingester: Some(ingester.clone()),
        traceql_metrics: Arc::new(cfg.traceql_metrics().map_err(|e| format!("config: {e}"))?),
        generator: gen_task.as_ref().map(|(g, _)| g.clone()),
        remote_write: remote_write.clone(),
        lifecycle: lifecycle.clone(),
        effective_config: Arc::new(cfg.effective().map_err(|e| format!("config: {e}"))?),
        search_limits: Arc::new(cfg.search_limits().map_err(|e| format!("config: {e}"))?),
    };
    // Flight SQL: on by default on loopback; a default port already taken (another Allegro
    // on this host) is skipped with a warning, a configured one must be free.
    let flight = match cfg.sql.flight_listen_address.as_deref() {
        Some("") => None,
        Some(a) => Some(bind_endpoint("sql.flight_listen_address", a).await?),
        None => match TcpListener::bind(crate::config::DEFAULT_FLIGHT_SQL).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(
                    "Flight SQL is off: cannot listen on {} ({e}); set sql.flight_listen_address",
                    crate::config::DEFAULT_FLIGHT_SQL
                );
                None
            }
        },
    };
    if let Some(l) = flight {
        addrs.flight_sql = Some(l.local_addr().map_err(|e| e.to_string())?);
        let svc = crate::flight_sql::AllegroFlightSql::service(
            state.query.clone(),
            cfg.multitenancy_enabled,
        );
        tasks.spawn(serve_grpc(l, svc, stop_rx.clone(), "Flight SQL server"));
    }
    let mut app = router(state.clone(), &cfg.server.http_api_prefix);
    if distributor.is_some() {
        // The other members' shares of their writes, and their questions for live spans.
        let max_body = otlp_http_limit(cfg);
        app = app
            .merge(otlp_http::shares_router(OtlpHttp {
                ingester: ingester.clone(),
                multitenancy: cfg.multitenancy_enabled,
                max_body,
                here: true,
            }))
            .merge(crate::http::ring::router(crate::http::ring::RingReads {
                ingester: ingester.clone(),
                multitenancy: cfg.multitenancy_enabled,
            }));
    }
    if cfg.stream_over_http_enabled.unwrap_or(true) {
        // Grafana's streaming API shares the port, over HTTP/2 (h2c), as in Tempo.
        app = crate::grpc::router(state).merge(app);
    }
    tasks.spawn(serve_axum(listener, app, stop_rx.clone(), "HTTP API"));
    let flusher = tokio::spawn(ingester.clone().run_flush_loop());
    if let Some(stats) = &lifecycle {
        // Merges wait while the head's blocks wait to be written (engine/src/block/pace.rs).
        let head = ingester.clone();
        let pace = Pace::yielding_to(Arc::new(move || head.flushing_behind()));
        run_lifecycle(
            cfg,
            catalog.clone(),
            block_opts,
            (stats.clone(), pace),
            stop_rx.clone(),
        );
    }
    // Installed before the server announces itself: a SIGTERM sent right after
    // `listening on` must stop it gracefully, not kill it with the default action.
    let signals = shutdown_signal()?;
    say(&format!("allegro listening on http://{}", addrs.http));
    for (name, a) in [
        ("OTLP/gRPC", addrs.otlp_grpc),
        ("OTLP/HTTP", addrs.otlp_http),
        ("Zipkin", addrs.zipkin),
        ("Jaeger gRPC", addrs.jaeger_grpc),
        ("Jaeger Thrift HTTP", addrs.jaeger_thrift_http),
        ("Jaeger Thrift compact UDP", addrs.jaeger_thrift_compact),
        ("Jaeger Thrift binary UDP", addrs.jaeger_thrift_binary),
    ] {
        if let Some(a) = a {
            say(&format!("{name} receiver on {a}"));
        }
    }
    if let Some(a) = addrs.flight_sql {
        say(&format!("Arrow Flight SQL on {a}"));
    }
    tracing::info!(addr = %addrs.http, "serving the Tempo HTTP API");
    ready(addrs);
    let grace = cfg
        .server
        .graceful_shutdown_timeout
        .unwrap_or(Duration::from_secs(30));
    // Runs until a signal or until a listener fails.
    let failed = tokio::select! {
        _ = signals => None,
        Some(r) = tasks.join_next() => Some(match r {
            Ok(Ok(())) => "a listener stopped".to_string(),
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        }),
    };
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!("graceful shutdown timed out; stopping");
    }
    flusher.abort();
    // A last collection goes to the queue; what the flush deadline cannot send stays on disk.
    if let Some((generator, task)) = gen_task {
        task.abort();
        let rw = remote_write.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(rw) = rw {
                for (tenant, series) in generator.collect_due(true) {
                    rw.enqueue(&tenant, &series);
                }
                // Bounded by the shutdown grace too: what is not sent stays queued on disk.
                rw.shutdown_within(grace);
            }
        })
        .await;
    }
    // What is still in memory goes to blocks; what cannot stays in the WAL.
    if let Err(e) = tokio::time::timeout(grace, ingester.shutdown())
        .await
        .unwrap_or_else(|_| {
            Err(allegro_ingest::error::IngestError::Internal(
                "flush timed out".into(),
            ))
        })
    {
        tracing::warn!(error = %e, "not everything was flushed at shutdown; the WAL keeps it for the next start");
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Collects due tenants every second and queues their series for remote write.
async fn collect_loop(generator: Arc<Generator>, rw: Option<Arc<RemoteWrite>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (g, rw) = (generator.clone(), rw.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for (tenant, series) in g.collect_due(false) {
                if let Some(rw) = &rw {
                    rw.enqueue(&tenant, &series);
                }
            }
        })
        .await;
    }
}

/// Serves one gRPC service on `l` until `stop`.
async fn serve_grpc<S>(
    l: TcpListener,
    svc: S,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) -> Result<(), String>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true)),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await
        .map_err(|e| format!("{what}: {e}"))
}

async fn serve_axum(
    l: TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) -> Result<(), String> {
    axum::serve(l, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// Registers SIGINT and SIGTERM now; the returned future resolves on the first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    Ok(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        tracing::info!("shutting down");
    })
}

/// `allegro serve`.
pub async fn run(mut cfg: Config, args: ServeArgs) -> Result<(), String> {
    let listener = bind(&cfg, &args).await?;
    // `--http-listen-address 127.0.0.1` keeps the receivers on that address too, unless
    // their endpoints are configured.
    if let Some(host) = &args.http_listen_address {
        cfg.distributor.receivers = Some(cfg.distributor.receivers_on(host));
    }
    serve_on(&cfg, listener).await
}

/// Prints a status line; a closed stdout (a supervisor that stopped reading) must not take the
/// server down, so write errors are ignored.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs compaction and retention every `compactor.compaction.compaction_cycle` until `stop`,
/// on a thread of its own: merging blocks is CPU work that must not hold up ingest or queries
/// on the serving threads.
fn run_lifecycle(
    cfg: &Config,
    catalog: Arc<allegro_engine::catalog::Catalog>,
    opts: allegro_engine::block::writer::BlockWriteOptions,
    (stats, pace): (Arc<LifecycleStats>, Pace),
    mut stop: watch::Receiver<bool>,
) {
    let c = &cfg.compactor.compaction;
    let (lifecycle, cycle, budget) = (cfg.lifecycle(), c.cycle(), c.per_tenant());
    let poll = catalog.poll();
    if lifecycle.compacted_block_retention < poll {
        tracing::warn!(
            compacted_block_retention = ?lifecycle.compacted_block_retention,
            blocklist_poll = ?poll,
            "merged inputs are deleted before other processes sharing this storage poll again; \
             their queries may fail on them (keep compacted_block_retention above blocklist_poll)"
        );
    }
    let spawned = std::thread::Builder::new()
        .name("compactor".into())
        .spawn(move || {
            // Below queries: a merge can wait, a dashboard should not (the threads it starts,
            // encoders and the runtime's blocking pool, inherit this).
            allegro_engine::priority::set_thread_nice(allegro_engine::priority::COMPACTION_NICE);
            let rt = match allegro_engine::block::lifecycle::compactor_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "compaction cannot start");
                    return;
                }
            };
            rt.block_on(async move {
                loop {
                    // The first pass after a cycle, not at start: a restart is not a reason
                    // to delete or rewrite anything at once.
                    tokio::select! {
                        _ = tokio::time::sleep(cycle) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    let now = allegro_engine::now_unix_nanos();
                    let pass = allegro_engine::block::lifecycle::run_cycle(
                        &catalog, &lifecycle, &opts, &stats, &pace, budget, now,
                    );
                    if let Err(e) = pass.await {
                        tracing::error!(error = %e, "compaction cycle failed");
                    }
                }
            });
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "compaction cannot start");
    }
}

/// The body limit of the shares other members send: a share is at most a request one of
/// them received, whose limit is the largest of the OTLP receivers' (20 MiB by default).
fn otlp_http_limit(cfg: &Config) -> usize {
    let otlp = cfg
        .distributor
        .effective_receivers()
        .otlp
        .unwrap_or_default()
        .protocols;
    let http = otlp.http.map_or(0, |h| h.max_request_body_size);
    let grpc = otlp.grpc.map_or(0, |g| g.max_recv_msg_size_mib << 20);
    http.max(grpc).max(20 << 20)
}
