//! O-02: `/metrics` (Prometheus text format), `/healthz` (answers while the process serves) and
//! `/readyz` (once every watch has synced, or while standing by), served over HTTP.

use crate::context::Context;
use crate::metrics::{CacheLabels, TemplateLabels};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Brings the gauges up to date from the stores and the queue, then encodes everything.
fn render(ctx: &Context) -> String {
    let m = &ctx.metrics;
    {
        let queue = ctx.queue.lock().expect("queue lock");
        m.discoveries_active.set(queue.active() as i64);
        m.discoveries_queued.set(queue.waiting() as i64);
    }
    m.templates.clear();
    for t in ctx.stores.templates.state() {
        let status = t.status.as_ref().map(|s| s.status.to_string());
        m.templates
            .get_or_create(&TemplateLabels {
                scope: "Namespace",
                status: status.unwrap_or_else(|| "Unknown".into()),
            })
            .inc();
    }
    for t in ctx.stores.cluster_templates.state() {
        let status = t.status.as_ref().map(|s| s.status.to_string());
        m.templates
            .get_or_create(&TemplateLabels {
                scope: "Cluster",
                status: status.unwrap_or_else(|| "Unknown".into()),
            })
            .inc();
    }
    m.caches.clear();
    for c in ctx.stores.caches.state() {
        let status = c.status.as_ref().map(|s| s.status.to_string());
        m.caches
            .get_or_create(&CacheLabels {
                status: status.unwrap_or_else(|| "Unknown".into()),
            })
            .inc();
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &m.registry).is_err() {
        out.clear();
    }
    out
}

/// What the HTTP server reads: the context once this replica leads and its stores exist, and whether it
/// is a standby.
#[derive(Default)]
pub struct HttpState {
    pub ctx: OnceLock<Arc<Context>>,
    pub standby: AtomicBool,
}

pub type Shared = Arc<HttpState>;

async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    match state.ctx.get() {
        Some(ctx) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            render(ctx),
        ),
        // A standby (or a replica still starting) runs no controller: it only says so.
        None => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            "# HELP aim_leader Whether this replica leads.\n# TYPE aim_leader gauge\naim_leader 0\n# EOF\n"
                .to_string(),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once leadership is settled: leading with every watch synced, or standing by.
async fn readyz(State(state): State<Shared>) -> (StatusCode, &'static str) {
    match state.ctx.get() {
        Some(ctx) if ctx.metrics.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ok\n"),
        _ if state.standby.load(Ordering::Relaxed) => (StatusCode::OK, "standby\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "watches not synced\n"),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `stop` resolves.
pub async fn serve(
    addr: SocketAddr,
    shared: Shared,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}
