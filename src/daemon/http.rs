//! The daemon's HTTP endpoint: `/health`, `/health/ready`, `/health/detailed`,
//! `/metrics`.
//!
//! - `/health`: liveness. 200 while the process runs.
//! - `/health/ready`: 200 when Redis answered last time the daemon asked and
//!   the taking loop runs, 503 with the reasons otherwise. It reads only the
//!   flags in [`DaemonStatus`], never Redis, so it answers at once even while
//!   Redis hangs.
//! - `/health/detailed`: the process fields plus what Redis knows: queue
//!   depth, live workers per layer, daemons, per-layer stats. 503 with the
//!   error text when Redis fails.
//! - `/metrics`: Prometheus (OpenMetrics text) from [`PromMetrics`], with
//!   the queue-depth gauge refreshed from Redis first.
//! - `/` and `/api/*`: the web dashboard (see [`super::dashboard`]), unless
//!   `http.dashboard.enabled` is off.
//!
//! [`PromMetrics`]: super::prom::PromMetrics

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::try_join_all;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::dashboard::history::{self, CounterHistory};
use super::prom::CONTENT_TYPE;
use super::status::DaemonStatus;
use crate::config::{DashboardSettings, LayerSettings};
use crate::observe::metrics::LayerStats;
use crate::store::blackboard::{Blackboard, BlackboardError, Health, ProcessRole};
use crate::store::lanes::Lane;

/// Window of the per-layer latency percentiles in `/health/detailed`.
pub const DETAILED_STATS_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Backstop for the Redis reads of `/health/detailed` and `/metrics`. Each
/// command is already bounded by `redis.response_timeout_ms`; this bounds
/// the sequence, so a Redis that trickles answers cannot hold a request (or
/// a graceful shutdown) open indefinitely.
const REDIS_DEADLINE: Duration = Duration::from_secs(10);

/// How long `serve` waits for open requests once shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// The daemon's live status.
    pub status: Arc<DaemonStatus>,
    /// For queue depth, health records and layer stats.
    pub blackboard: Blackboard,
    /// The cascade's layers, in order.
    pub layers: Vec<(String, LayerSettings)>,
    /// The web dashboard's settings.
    pub dashboard: DashboardSettings,
}

/// The routes over `state`, for embedding or for tests that drive the
/// router without a socket. Creates the Prometheus series of every layer in
/// `state.layers`, so they show at zero before the first query.
pub fn router(state: HttpState) -> Router {
    routes(
        state,
        Arc::new(Mutex::new(CounterHistory::default())),
        CancellationToken::new(),
    )
}

/// The routes, with the dashboard's counter history and the token that
/// ends its live feeds.
fn routes(
    state: HttpState,
    history: Arc<Mutex<CounterHistory>>,
    stop: CancellationToken,
) -> Router {
    state
        .status
        .prom
        .register_layers(state.layers.iter().map(|(name, _)| name.as_str()));
    let dashboard = state.dashboard.enabled;
    // One Arc per server instead of cloning the layer list per request.
    let state = Arc::new(state);
    let health = Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/health/detailed", get(detailed))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    if dashboard {
        health.merge(super::dashboard::routes(state, history, stop))
    } else {
        health
    }
}

/// Serves until `shutdown` fires, then lets open requests finish for a
/// short grace period and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, "HTTP endpoint listening");
    let history = Arc::new(Mutex::new(CounterHistory::default()));
    if state.dashboard.enabled {
        tracing::info!(url = %format!("http://{addr}/"), "dashboard");
        tokio::spawn(history::sample(
            state.blackboard.clone(),
            state.layers.iter().map(|(name, _)| name.clone()).collect(),
            history.clone(),
            shutdown.clone(),
        ));
    }
    let server = axum::serve(listener, routes(state, history, shutdown.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        res = server => {
            tracing::info!(addr = %addr, "HTTP endpoint stopped");
            res
        }
        () = grace_over => {
            tracing::warn!(
                addr = %addr,
                grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
                "HTTP requests still open after the shutdown grace; stopping anyway"
            );
            Ok(())
        }
    }
}

type AppState = State<Arc<HttpState>>;

async fn health(State(state): AppState) -> Response {
    Json(json!({
        "status": "ok",
        "instance": state.status.instance,
        "started_at": state.status.started_at,
    }))
    .into_response()
}

async fn ready(State(state): AppState) -> Response {
    // Read each flag once so the verdict and the reasons agree.
    let redis_ok = state.status.redis_ok();
    let loop_running = state.status.loop_running();
    let mut reasons = Vec::new();
    if !redis_ok {
        reasons.push("redis unreachable");
    }
    if !loop_running {
        reasons.push("loop not running");
    }
    if reasons.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "instance": state.status.instance })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not ready",
                "instance": state.status.instance,
                "reasons": reasons,
            })),
        )
            .into_response()
    }
}

/// One layer of the cascade in `/health/detailed`.
#[derive(Serialize)]
struct LayerReport<'a> {
    layer: &'a str,
    enabled: bool,
    min_confidence: f64,
    live_workers: usize,
    stats: LayerStats,
}

/// What Redis contributes to `/health/detailed`.
struct RedisView {
    queue_depth: [u64; 4],
    health: Vec<Health>,
    stats: Vec<LayerStats>,
}

async fn read_redis_view(state: &HttpState) -> Result<RedisView, BlackboardError> {
    let bb = &state.blackboard;
    let stats = try_join_all(
        state
            .layers
            .iter()
            .map(|(layer, _)| bb.layer_stats(layer, DETAILED_STATS_WINDOW)),
    );
    let (queue_depth, health, stats) =
        tokio::try_join!(bb.queue_len_by_lane(), bb.list_health(), stats)?;
    Ok(RedisView {
        queue_depth,
        health,
        stats,
    })
}

async fn detailed(State(state): AppState) -> Response {
    let status = &state.status;
    let mut body = serde_json::Map::new();
    body.insert("instance".into(), json!(status.instance));
    body.insert("started_at".into(), json!(status.started_at));
    body.insert("ready".into(), json!(status.is_ready()));
    body.insert("redis_ok".into(), json!(status.redis_ok()));
    body.insert("loop_running".into(), json!(status.loop_running()));
    body.insert("in_flight".into(), json!(status.in_flight()));

    let view = match tokio::time::timeout(REDIS_DEADLINE, read_redis_view(&state)).await {
        Ok(Ok(view)) => view,
        Ok(Err(e)) => return redis_failed(body, e.to_string()),
        Err(_) => {
            return redis_failed(
                body,
                format!(
                    "redis did not answer within {} ms",
                    REDIS_DEADLINE.as_millis()
                ),
            );
        }
    };
    status.prom.set_queue_depth(view.queue_depth.iter().sum());

    // Live workers by layer ("none" for a worker record without one).
    let mut workers: BTreeMap<&str, Vec<&Health>> = BTreeMap::new();
    let mut unhealthy_workers = Vec::new();
    let mut daemons = Vec::new();
    for h in &view.health {
        match h.role {
            ProcessRole::Worker if h.healthy => workers
                .entry(h.layer.as_deref().unwrap_or("none"))
                .or_default()
                .push(h),
            ProcessRole::Worker => unhealthy_workers.push(h),
            _ => daemons.push(h),
        }
    }
    let layers: Vec<LayerReport<'_>> = state
        .layers
        .iter()
        .zip(view.stats)
        .map(|((name, settings), stats)| LayerReport {
            layer: name,
            enabled: settings.enabled,
            min_confidence: settings.min_confidence,
            live_workers: workers.get(name.as_str()).map_or(0, Vec::len),
            stats,
        })
        .collect();

    body.insert(
        "queue_depth".into(),
        json!(view.queue_depth.iter().sum::<u64>()),
    );
    body.insert(
        "queue_depth_by_lane".into(),
        Lane::by_name(view.queue_depth),
    );
    body.insert("workers".into(), json!(workers));
    body.insert("unhealthy_workers".into(), json!(unhealthy_workers));
    body.insert("daemons".into(), json!(daemons));
    body.insert("layers".into(), json!(layers));
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

/// The 503 of `/health/detailed`: the process fields and what went wrong.
/// Blackboard errors name keys and causes, never the Redis URL or password.
fn redis_failed(mut body: serde_json::Map<String, Value>, error: String) -> Response {
    // debug, not warn: a monitor polling this during an outage would repeat
    // what the daemon already logs once.
    tracing::debug!(error = %error, "/health/detailed could not read Redis");
    body.insert("error".into(), json!(error));
    (StatusCode::SERVICE_UNAVAILABLE, Json(Value::Object(body))).into_response()
}

async fn metrics(State(state): AppState) -> Response {
    match tokio::time::timeout(REDIS_DEADLINE, state.blackboard.queue_len()).await {
        Ok(Ok(n)) => state.status.prom.set_queue_depth(n),
        // Keep the last value: a scrape must not fail because Redis does.
        Ok(Err(e)) => tracing::debug!(error = %e, "queue depth not refreshed"),
        Err(_) => tracing::debug!("queue depth not refreshed: redis did not answer"),
    }
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.status.prom.encode(),
    )
        .into_response()
}
