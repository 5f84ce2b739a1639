//! The daemon's side of the worker protocol: jobs waiting for replies, the
//! one reply reader per daemon that hands each reply to its waiting query,
//! and the directory of live workers per layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::blackboard::Blackboard;
use crate::feed::{Event, EventKind};
use crate::protocol::Reply;

/// A job whose query waits for its reply.
struct Waiting {
    query_id: String,
    layer: String,
    tx: oneshot::Sender<Reply>,
}

/// Jobs waiting for replies, by job id. A std Mutex: it is held for a map
/// operation only, never across an await.
#[derive(Default, Clone)]
pub struct Pending {
    inner: Arc<Mutex<HashMap<String, Waiting>>>,
}

impl Pending {
    /// Registers a job; the receiver gets its reply.
    pub fn register(&self, job_id: &str, query_id: &str, layer: &str) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.inner.lock().expect("pending lock").insert(
            job_id.to_string(),
            Waiting {
                query_id: query_id.to_string(),
                layer: layer.to_string(),
                tx,
            },
        );
        rx
    }

    /// Forgets a job (its query stopped waiting).
    pub fn forget(&self, job_id: &str) {
        self.inner.lock().expect("pending lock").remove(job_id);
    }

    /// Hands `reply` to its waiting query. Returns why it was dropped
    /// otherwise: nobody waits (late, or never asked for), or it does not
    /// match the job it names (forged or confused).
    fn deliver(&self, reply: Reply) -> Result<(), Box<(Reply, String)>> {
        let mut map = self.inner.lock().expect("pending lock");
        let Some(w) = map.get(&reply.job_id) else {
            return Err(Box::new((
                reply,
                "no query waits for this job (timed out, or never asked)".into(),
            )));
        };
        if w.query_id != reply.query_id || w.layer != reply.layer {
            let why = format!(
                "reply names query {} at {}, but the job was for query {} at {}",
                reply.query_id, reply.layer, w.query_id, w.layer
            );
            return Err(Box::new((reply, why)));
        }
        let w = map.remove(&reply.job_id).expect("present");
        drop(map);
        // The receiver may have just timed out; then the reply is late.
        w.tx.send(reply)
            .map_err(|r| Box::new((r, "the query stopped waiting".to_string())))
    }
}

/// Reads this daemon's reply list until `cancel` fires, on its own
/// blocking connection, taking up to 256 replies per round trip.
pub async fn read_replies(
    bb: Blackboard,
    mut conn: ConnectionManager,
    instance: String,
    pending: Pending,
    status: Arc<super::status::DaemonStatus>,
    cancel: CancellationToken,
) {
    let key = bb.keys().replies(&instance);
    let mut backoff = crate::outage::Backoff::default();
    loop {
        let mut cmd = redis::cmd("BLMPOP");
        cmd.arg(1)
            .arg(1)
            .arg(&key)
            .arg("RIGHT")
            .arg("COUNT")
            .arg(256);
        let read = cmd.query_async::<Value>(&mut conn);
        let value = tokio::select! {
            _ = cancel.cancelled() => return,
            v = read => v,
        };
        let value = match value {
            Ok(v) => {
                backoff.reset();
                v
            }
            Err(e) => {
                status.redis_failed("reading worker replies", &e);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_wait()) => continue,
                }
            }
        };
        for raw in popped(value) {
            handle_reply(&bb, &pending, &status, &raw).await;
        }
    }
}

/// The elements of a BLMPOP reply (`nil` or `[key, [elements]]`).
fn popped(value: Value) -> Vec<Vec<u8>> {
    let Value::Array(mut parts) = value else {
        return Vec::new();
    };
    if parts.len() != 2 {
        return Vec::new();
    }
    redis::from_redis_value::<Vec<Vec<u8>>>(parts.pop().expect("two parts")).unwrap_or_default()
}

async fn handle_reply(
    bb: &Blackboard,
    pending: &Pending,
    status: &super::status::DaemonStatus,
    raw: &[u8],
) {
    let reply: Reply = match serde_json::from_slice(raw) {
        Ok(r) => r,
        Err(e) => {
            let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
            tracing::warn!(reply = %shown, "dropping a malformed reply: {e}");
            record_dropped(bb, None, None, None, format!("malformed reply: {e}")).await;
            return;
        }
    };
    if let Err(dropped) = pending.deliver(reply) {
        let (reply, why) = *dropped;
        status.prom.late_reply();
        tracing::debug!(job_id = %reply.job_id, query_id = %reply.query_id, "dropping reply: {why}");
        record_dropped(
            bb,
            Some(&reply.query_id),
            Some(&reply.layer),
            Some(&reply.worker),
            format!("job {}: {why}", reply.job_id),
        )
        .await;
    }
}

async fn record_dropped(
    bb: &Blackboard,
    query_id: Option<&str>,
    layer: Option<&str>,
    worker: Option<&str>,
    reason: String,
) {
    let mut e = match query_id {
        Some(q) => Event::new(EventKind::LateReply, q),
        None => Event::global(EventKind::LateReply),
    };
    if let Some(l) = layer {
        e = e.layer(l);
    }
    if let Some(w) = worker {
        e = e.worker(w);
    }
    if let Err(err) = bb.emit(&e.reason(reason)).await {
        tracing::warn!("cannot record a dropped reply: {err}");
    }
}

/// Healthy workers per layer, refreshed in the background so the cascade
/// never scans health keys on a query's path.
#[derive(Clone, Default)]
pub struct WorkerDirectory {
    live: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl WorkerDirectory {
    /// Whether a healthy worker serves `layer`, as of the last refresh.
    pub fn has_live(&self, layer: &str) -> bool {
        self.live
            .lock()
            .expect("directory lock")
            .get(layer)
            .is_some_and(|w| !w.is_empty())
    }

    /// Reads the health records once.
    pub async fn refresh(&self, bb: &Blackboard) -> Result<(), crate::BlackboardError> {
        let mut live: HashMap<String, Vec<String>> = HashMap::new();
        for h in bb.list_health().await? {
            if h.role == "worker"
                && h.healthy
                && let Some(layer) = h.layer
            {
                live.entry(layer).or_default().push(h.name);
            }
        }
        *self.live.lock().expect("directory lock") = live;
        Ok(())
    }

    /// Refreshes every `every` until `cancel` fires.
    pub async fn run(self, bb: Blackboard, every: Duration, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.refresh(&bb).await {
                tracing::debug!("cannot refresh worker health: {e}");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
