//! The dashboard's JSON API. Every handler reads Redis within
//! [`REDIS_DEADLINE`] and answers 503 with the error text when it cannot,
//! so a page shows why instead of hanging.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::future::try_join_all;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::history::latency_buckets;
use super::{Dashboard, error, refusal};
use crate::config::LayerKind;
use crate::daemon::http::DETAILED_STATS_WINDOW;
use crate::observe::feed::{EventKind, FeedEntry, stream_id};
use crate::observe::metrics::layer_latency_metric;
use crate::state::{QueryState, parse_timestamp};
use crate::store::blackboard::{BlackboardError, ProcessRole};
use crate::store::dead::Requeued;
use crate::store::lanes::Lane;

/// Bounds the Redis reads of one request (each command is bounded by
/// `redis.response_timeout_ms` already; this bounds the sequence).
const REDIS_DEADLINE: Duration = Duration::from_secs(10);

/// How many of the most recent feed entries (per partition) a filtered
/// feed read or a query search looks through.
const FEED_SCAN: usize = 5_000;

/// Most queries a search by text looks through (the most recently started).
const QUERY_SCAN: usize = 2_000;

/// How often the live feed looks for new entries.
const STREAM_POLL: Duration = Duration::from_millis(300);

/// Most entries the live feed reads per feed and poll: what a page can
/// show (about 1,700 decisions a second). A feed written faster is skipped
/// ahead to its end, and the page told, so the view stays live and an
/// open page costs the deployment a bounded read.
const STREAM_BATCH: usize = 500;

/// The same with a filter: more entries are looked through for the few
/// that match (about 17,000 a second), before skipping ahead.
const STREAM_FILTERED_BATCH: usize = 5_000;

/// Most grains a search looks through.
const GRAIN_SCAN: usize = 10_000;

type S = State<Arc<Dashboard>>;

/// Runs the Redis part of a request within [`REDIS_DEADLINE`]; failures
/// become a 503 naming the cause (never the Redis URL or password).
async fn within<T>(
    what: &str,
    fut: impl Future<Output = Result<T, BlackboardError>>,
) -> Result<T, Response> {
    match tokio::time::timeout(REDIS_DEADLINE, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "dashboard: {what} failed");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what}: {e}"),
            ))
        }
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{what}: redis did not answer within {} ms",
                REDIS_DEADLINE.as_millis()
            ),
        )),
    }
}

/// Unwraps a handler's result: the value as JSON, or the error reply.
fn reply(r: Result<Value, Response>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e,
    }
}

// ----- overview -------------------------------------------------------------

pub(super) async fn overview(State(d): S) -> Response {
    let http = &d.http;
    let bb = &http.blackboard;
    let status = &http.status;
    let stats = try_join_all(
        http.layers
            .iter()
            .map(|(layer, _)| bb.layer_stats(layer, DETAILED_STATS_WINDOW)),
    );
    let read = async {
        tokio::try_join!(
            bb.queue_len_by_lane(),
            bb.dead_len(),
            bb.count_grains(),
            bb.count_crystallized(),
            bb.list_health(),
            stats
        )
    };
    let (by_lane, dead_len, grains, crystallized, health, stats) =
        match within("overview", read).await {
            Ok(v) => v,
            Err(e) => return e,
        };
    let queue_len: u64 = by_lane.iter().sum();
    let queue_by_lane = Lane::by_name(by_lane);
    // Memory is shown when Redis lets us ask (INFO may be refused by ACL).
    let (memory, memory_error) = match within("INFO memory", bb.redis_memory()).await {
        Ok(m) => (json!(m), Value::Null),
        Err(_) => (
            Value::Null,
            json!("Redis did not answer INFO memory (is `info` allowed to the daemon's ACL user?)"),
        ),
    };
    let (daemons, workers): (Vec<_>, Vec<_>) = health
        .into_iter()
        .partition(|h| h.role != ProcessRole::Worker);
    let in_flight: u64 = daemons
        .iter()
        .filter_map(|h| h.counters.get("in_flight").and_then(Value::as_u64))
        .sum();
    let layers: Vec<Value> = http
        .layers
        .iter()
        .zip(stats)
        .map(|((name, settings), stats)| {
            let live = workers
                .iter()
                .filter(|w| w.healthy && w.layer.as_deref() == Some(name.as_str()))
                .count();
            json!({
                "layer": name,
                "enabled": settings.enabled,
                "min_confidence": settings.min_confidence,
                "kind": match settings.kind { LayerKind::Grain => "grains", LayerKind::Worker => "worker" },
                "worker": settings.worker,
                "live_workers": live,
                "stats": stats,
            })
        })
        .collect();
    Json(json!({
        "instance": status.instance,
        "version": env!("CARGO_PKG_VERSION"),
        "now": crate::state::now_rfc3339(),
        "ready": status.is_ready(),
        "redis_ok": status.redis_ok(),
        "queue_len": queue_len,
        "queue_by_lane": queue_by_lane,
        "in_flight": in_flight,
        "dead_len": dead_len,
        "grains": grains,
        "crystallized": crystallized,
        "redis_memory": memory,
        "redis_memory_error": memory_error,
        "daemons": daemons,
        "workers": workers,
        "layers": layers,
        "actions": http.dashboard.actions,
    }))
    .into_response()
}

// ----- layers over time -----------------------------------------------------

#[derive(Deserialize)]
pub(super) struct HistoryParams {
    minutes: Option<u32>,
    bucket_s: Option<u32>,
}

pub(super) async fn layer_history(State(d): S, Query(p): Query<HistoryParams>) -> Response {
    let minutes = p.minutes.unwrap_or(60).clamp(1, 60) as i64;
    let bucket_ms = p.bucket_s.unwrap_or(60).clamp(10, 600) as i64 * 1000;
    let n = ((minutes * 60_000) / bucket_ms).max(1);
    let now = chrono::Utc::now().timestamp_millis();
    // Buckets end at the one now is in.
    let from_ms = (now.div_euclid(bucket_ms) - n + 1) * bucket_ms;
    let window = Duration::from_millis((now - from_ms).max(0) as u64);
    let bb = &d.http.blackboard;
    let metrics: Vec<String> = d
        .http
        .layers
        .iter()
        .map(|(layer, _)| layer_latency_metric(layer))
        .collect();
    let reads = metrics.iter().map(|m| bb.metric_window(m, window));
    let samples = match within("latency samples", try_join_all(reads)).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let history = d.history.lock().expect("counter history lock");
    let layers: Vec<Value> = d
        .http
        .layers
        .iter()
        .enumerate()
        .zip(samples)
        .map(|((i, (layer, _)), samples)| {
            let latencies = latency_buckets(&samples, from_ms, bucket_ms, n as usize);
            let counts = history.buckets(i, from_ms, bucket_ms, n as usize);
            let points: Vec<Value> = latencies
                .iter()
                .zip(counts)
                .enumerate()
                .map(|(k, (lat, c))| {
                    let some = |v: f64| {
                        if lat.count == 0 {
                            Value::Null
                        } else {
                            json!(v)
                        }
                    };
                    let count = |f: fn(&super::history::Counts) -> u64| {
                        c.as_ref().map_or(Value::Null, |c| json!(f(c)))
                    };
                    json!({
                        "t_ms": from_ms + k as i64 * bucket_ms,
                        "attempts": count(|c| c.attempts),
                        "hits": count(|c| c.hits),
                        "misses": count(|c| c.misses),
                        "timeouts": count(|c| c.timeouts),
                        "errors": count(|c| c.errors),
                        "samples": lat.count,
                        "p50": some(lat.p50),
                        "p95": some(lat.p95),
                        "p99": some(lat.p99),
                    })
                })
                .collect();
            json!({ "layer": layer, "points": points })
        })
        .collect();
    Json(json!({
        "bucket_s": bucket_ms / 1000,
        "from_ms": from_ms,
        "to_ms": from_ms + n * bucket_ms,
        "counters_since_ms": history.since_ms(),
        "layers": layers,
    }))
    .into_response()
}

// ----- the feed -------------------------------------------------------------

pub(super) async fn event_kinds() -> Response {
    let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    Json(json!({ "events": kinds })).into_response()
}

/// The feed filters of the page: every one given must match.
#[derive(Deserialize, Default, Clone)]
pub(super) struct FeedFilter {
    layer: Option<String>,
    event: Option<String>,
    query: Option<String>,
    count: Option<usize>,
    after: Option<String>,
}

impl FeedFilter {
    fn keeps(&self, e: &FeedEntry) -> bool {
        let matches = |want: &Option<String>, field: &str| {
            want.as_deref()
                .filter(|w| !w.is_empty())
                .is_none_or(|w| e.get(field) == Some(w))
        };
        matches(&self.layer, "layer")
            && matches(&self.event, "event")
            && matches(&self.query, "query_id")
    }
}

/// One feed entry as the pages read it: its fields, numbers as numbers,
/// and `t_ms` (unix ms, with the microseconds of `ts`).
fn event_json(e: &FeedEntry) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(e.id));
    for (k, v) in &e.fields {
        let value = match k.as_str() {
            "confidence" | "latency_ms" => v.parse::<f64>().map_or_else(|_| json!(v), |n| json!(n)),
            _ => json!(v),
        };
        out.insert(k.clone(), value);
    }
    if let Some(t) = e.time() {
        out.insert("t_ms".into(), json!(t.timestamp_micros() as f64 / 1000.0));
    }
    Value::Object(out)
}

pub(super) async fn feed(State(d): S, Query(f): Query<FeedFilter>) -> Response {
    let count = f.count.unwrap_or(100).clamp(1, 1000);
    let bb = &d.http.blackboard;
    let keep = f.clone();
    let read = bb.recent_matching(count, FEED_SCAN.max(count), move |e| keep.keeps(e));
    reply(
        within("feed", read)
            .await
            .map(|events| json!({ "events": events.iter().map(event_json).collect::<Vec<_>>() })),
    )
}

/// What the live feed keeps between polls.
struct Follow {
    dashboard: Arc<Dashboard>,
    filter: FeedFilter,
    cursors: Option<Vec<String>>,
    ready: std::collections::VecDeque<SseEvent>,
    next_poll: tokio::time::Instant,
}

impl FeedFilter {
    fn is_empty(&self) -> bool {
        [&self.layer, &self.event, &self.query]
            .iter()
            .all(|f| f.as_deref().is_none_or(str::is_empty))
    }
}

/// One decision as a server-sent event.
fn decision(e: &FeedEntry) -> SseEvent {
    SseEvent::default()
        .id(e.id.clone())
        .event("decision")
        .data(event_json(e).to_string())
}

/// Server-sent events: every feed entry written from now on (or after the
/// `Last-Event-ID` header or `after` parameter) that passes the filters,
/// until the client goes or the daemon stops.
pub(super) async fn feed_stream(
    State(d): S,
    headers: HeaderMap,
    Query(f): Query<FeedFilter>,
) -> Response {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| f.after.clone())
        .filter(|id| is_stream_id(id));
    let partitions = d.http.blackboard.keys().partitions();
    let follow = Follow {
        cursors: resume.map(|id| vec![id; partitions]),
        dashboard: d,
        filter: f,
        ready: Default::default(),
        next_poll: tokio::time::Instant::now(),
    };
    let stream = futures_util::stream::unfold(follow, |mut s| async move {
        loop {
            if let Some(event) = s.ready.pop_front() {
                return Some((Ok::<_, Infallible>(event), s));
            }
            // At most one read per STREAM_POLL, however much there is.
            tokio::select! {
                () = tokio::time::sleep_until(s.next_poll) => {}
                () = s.dashboard.stop.cancelled() => return None,
            }
            s.next_poll = tokio::time::Instant::now() + STREAM_POLL;
            if let Err(e) = s.poll().await {
                tracing::debug!("dashboard live feed: {e}");
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

impl Follow {
    /// Reads what is new into `ready`: the decisions that pass the filter
    /// and, when the feeds grow faster than a page can follow, a `skipped`
    /// event after which the cursors stand at the feeds' ends.
    async fn poll(&mut self) -> Result<(), BlackboardError> {
        let bb = &self.dashboard.http.blackboard;
        let Some(cursors) = self.cursors.as_mut() else {
            self.cursors = Some(bb.feed_tails().await?);
            return Ok(());
        };
        let batch = if self.filter.is_empty() {
            STREAM_BATCH
        } else {
            STREAM_FILTERED_BATCH
        };
        let (entries, full) = bb.events_after(cursors, batch).await?;
        self.ready.extend(
            entries
                .iter()
                .filter(|e| self.filter.keeps(e))
                .map(decision),
        );
        if full {
            let tails = bb.feed_tails().await?;
            let newest = tails.iter().max_by_key(|id| stream_id(id)).cloned();
            let mut skipped = SseEvent::default().event("skipped").data(
                json!({
                    "reason": format!(
                        "the feed grows faster than this page can follow (more than {batch} entries in {} ms): skipped to its end",
                        STREAM_POLL.as_millis()
                    )
                })
                .to_string(),
            );
            if let Some(id) = newest {
                skipped = skipped.id(id);
            }
            self.ready.push_back(skipped);
            self.cursors = Some(tails);
        }
        Ok(())
    }
}

/// Whether `id` looks like a stream entry id (`<ms>-<seq>`).
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

// ----- queries --------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct QuerySearch {
    text: Option<String>,
    limit: Option<usize>,
}

/// One line of a query list.
fn query_summary(s: &QueryState) -> Value {
    let answer = s.answer.as_ref();
    json!({
        "query_id": s.query_id,
        "query_text": s.query_text,
        "status": s.status.as_str(),
        "created_at": s.created_at,
        "completed_at": s.completed_at,
        "answered_by": answer.map(|a| a.layer.clone()),
        "confidence": answer.map(|a| a.confidence),
        "answer": answer.map(|a| a.text.clone()),
    })
}

/// Recent queries, newest first, whose text contains `text` (any case):
/// among the [`QUERY_SCAN`] most recently started that the last
/// [`FEED_SCAN`] entries of each partition's feed name.
pub(super) async fn queries(State(d): S, Query(p): Query<QuerySearch>) -> Response {
    let limit = p.limit.unwrap_or(20).clamp(1, 200);
    let needle = p.text.unwrap_or_default().trim().to_lowercase();
    let bb = d.http.blackboard.clone();
    let read = async move {
        // Newest first, one `query_started` per query (more after a
        // recovery); look further back only while too few match.
        let started = |e: &FeedEntry| e.event() == Some(EventKind::QueryStarted.as_str());
        let mut count = if needle.is_empty() { limit } else { limit * 20 }.min(QUERY_SCAN);
        loop {
            let events = bb.recent_matching(count, FEED_SCAN, started).await?;
            let mut seen = HashSet::new();
            let ids: Vec<String> = events
                .iter()
                .rev()
                .filter_map(|e| e.get("query_id"))
                .filter(|id| seen.insert(id.to_string()))
                .map(str::to_string)
                .collect();
            let mut found = Vec::new();
            for chunk in ids.chunks(200) {
                for state in bb.get_states_lenient(chunk).await?.into_iter().flatten() {
                    if needle.is_empty() || state.query_text.to_lowercase().contains(&needle) {
                        found.push(query_summary(&state));
                    }
                }
                if found.len() >= limit {
                    break;
                }
            }
            if found.len() >= limit || events.len() < count || count == QUERY_SCAN {
                found.truncate(limit);
                return Ok(json!({ "queries": found, "scanned": ids.len() }));
            }
            count = (count * 5).min(QUERY_SCAN);
        }
    };
    reply(within("query search", read).await)
}

/// One query: its state, its decisions, and the span they cover.
pub(super) async fn query(State(d): S, Path(id): Path<String>) -> Response {
    let bb = &d.http.blackboard;
    let read = async {
        let state = match bb.get_state(&id).await {
            Ok(s) => s,
            // Show its decisions even when the state is broken.
            Err(BlackboardError::MalformedState { .. }) => None,
            Err(e) => return Err(e),
        };
        let events = bb.timeline(&id, FEED_SCAN).await?;
        Ok((state, events))
    };
    let (state, events) = match within("query", read).await {
        Ok(v) => v,
        Err(e) => return e,
    };
    if state.is_none() && events.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no query {id}: never created, or its state and events have expired"),
        );
    }
    let events: Vec<Value> = events.iter().map(event_json).collect();
    let ms = |t: Option<&String>| {
        t.and_then(|t| parse_timestamp(t))
            .map(|t| t.timestamp_micros() as f64 / 1000.0)
    };
    // The span: from the earliest of its creation and the start of its
    // first timed attempt, to the latest of its end and its last event.
    let mut start = state.as_ref().and_then(|s| ms(s.created_at.as_ref()));
    let mut end = state.as_ref().and_then(|s| ms(s.completed_at.as_ref()));
    for e in &events {
        let Some(t) = e.get("t_ms").and_then(Value::as_f64) else {
            continue;
        };
        let began = t - e.get("latency_ms").and_then(Value::as_f64).unwrap_or(0.0);
        start = Some(start.map_or(began, |s: f64| s.min(began)));
        end = Some(end.map_or(t, |x: f64| x.max(t)));
    }
    Json(json!({
        "state": state,
        "events": events,
        "start_ms": start,
        "end_ms": end,
    }))
    .into_response()
}

// ----- the dead list ----------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct Page {
    offset: Option<usize>,
    count: Option<usize>,
}

pub(super) async fn dead(State(d): S, Query(p): Query<Page>) -> Response {
    let bb = &d.http.blackboard;
    let offset = p.offset.unwrap_or(0).min(1_000_000);
    let count = p.count.unwrap_or(50).clamp(1, 200);
    let read = async { tokio::try_join!(bb.dead_len(), bb.dead_page(offset, count)) };
    reply(
        within("dead list", read).await.map(
            |(total, entries)| json!({ "total": total, "offset": offset, "entries": entries }),
        ),
    )
}

/// Why an action on a dead-list record found nothing to act on.
const GONE: &str = "that record is no longer in the dead list (requeued or deleted meanwhile)";

#[derive(Deserialize)]
pub(super) struct RecordBody {
    record: String,
}

/// The 400 for a dead-list action's body that is not a record.
fn bad_body(e: &JsonRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!(
            "the body must be JSON {{\"record\": \"<the record as /api/dead lists it>\"}}: {}",
            e.body_text()
        ),
    )
}

pub(super) async fn dead_requeue(
    State(d): S,
    headers: HeaderMap,
    body: Result<Json<RecordBody>, JsonRejection>,
) -> Response {
    if let Some(denied) = refusal(&d.http, &headers) {
        return denied;
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return bad_body(&e),
    };
    match within("requeue", d.http.blackboard.requeue_dead(&body.record)).await {
        Ok(Requeued::Done { query_id }) => {
            tracing::info!(query_id = ?query_id, "dead-list entry requeued from the dashboard");
            Json(json!({ "requeued": true, "query_id": query_id })).into_response()
        }
        Ok(Requeued::Gone) => error(StatusCode::NOT_FOUND, GONE),
        Ok(Requeued::Refused(why)) => error(StatusCode::CONFLICT, why),
        Err(e) => e,
    }
}

pub(super) async fn dead_delete(
    State(d): S,
    headers: HeaderMap,
    body: Result<Json<RecordBody>, JsonRejection>,
) -> Response {
    if let Some(denied) = refusal(&d.http, &headers) {
        return denied;
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return bad_body(&e),
    };
    match within("delete", d.http.blackboard.delete_dead(&body.record)).await {
        Ok(true) => {
            tracing::info!(record = %body.record, "dead-list entry deleted from the dashboard");
            Json(json!({ "deleted": true })).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, GONE),
        Err(e) => e,
    }
}

// ----- grains ---------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct GrainSearch {
    q: Option<String>,
    crystallized: Option<bool>,
    limit: Option<usize>,
}

pub(super) async fn grains(State(d): S, Query(p): Query<GrainSearch>) -> Response {
    let bb = &d.http.blackboard;
    let limit = p.limit.unwrap_or(50).clamp(1, 500);
    let needle = p.q.unwrap_or_default().trim().to_lowercase();
    let crystallized = p.crystallized.unwrap_or(false);
    let read = async {
        let total = bb.count_grains().await?;
        let listed = if crystallized {
            bb.list_crystallized(GRAIN_SCAN).await?
        } else {
            bb.list_grains(GRAIN_SCAN).await?
        };
        Ok((total, listed))
    };
    let (total, listed) = match within("grains", read).await {
        Ok(v) => v,
        Err(e) => return e,
    };
    let matching: Vec<_> = listed
        .into_iter()
        .filter(|g| {
            needle.is_empty()
                || g.fact_id.to_lowercase().contains(&needle)
                || g.question.to_lowercase().contains(&needle)
                || g.answer.to_lowercase().contains(&needle)
        })
        .collect();
    let matched = matching.len();
    let shown: Vec<_> = matching.into_iter().take(limit).collect();
    Json(json!({ "total": total, "matched": matched, "grains": shown })).into_response()
}

pub(super) async fn grain(State(d): S, Path(id): Path<String>) -> Response {
    match within("grain", d.http.blackboard.get_grain(&id)).await {
        Ok(Some(g)) => Json(json!(g)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no grain {id}")),
        Err(e) => e,
    }
}

pub(super) async fn grain_forget(
    State(d): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(denied) = refusal(&d.http, &headers) {
        return denied;
    }
    let forget = d
        .http
        .blackboard
        .forget_grain(&id, "forgotten from the dashboard");
    match within("forget", forget).await {
        Ok(true) => {
            tracing::info!(fact_id = %id, "grain forgotten from the dashboard");
            Json(json!({ "forgotten": true })).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no grain {id}")),
        Err(e) => e,
    }
}
