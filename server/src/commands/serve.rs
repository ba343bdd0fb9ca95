//! `allegro serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::open_catalog;
use crate::config::Config;
use crate::http::metrics::HttpMetrics;
use crate::http::{AppState, router};

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

/// Serves until SIGTERM or Ctrl-C; in-flight requests finish first.
pub async fn serve_on(cfg: &Config, listener: TcpListener) -> Result<(), String> {
    let catalog = open_catalog(cfg)?;
    let state = AppState {
        catalog,
        multitenancy: cfg.multitenancy_enabled,
        metrics: Arc::new(HttpMetrics::default()),
    };
    let app = router(state, &cfg.server.http_api_prefix);
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("allegro listening on http://{addr}");
    tracing::info!(%addr, "serving the Tempo HTTP API");
    let grace = cfg
        .server
        .graceful_shutdown_timeout
        .unwrap_or(Duration::from_secs(30));
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    let result = server.into_future();
    tokio::pin!(result);
    tokio::select! {
        r = &mut result => r.map_err(|e| e.to_string()),
        _ = async { shutdown_signal().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("graceful shutdown timed out; stopping");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// `allegro serve`.
pub async fn run(cfg: Config, args: ServeArgs) -> Result<(), String> {
    let listener = bind(&cfg, &args).await?;
    serve_on(&cfg, listener).await
}
