//! The daemon's side of the worker protocol: jobs waiting for replies, the
//! one reply reader per daemon that hands each reply to its waiting query,
//! and the directory of live workers per layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::connection::RedisConn;
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::observe::feed::{Event, EventKind};
use crate::protocol::Reply;
use crate::store::blackboard::{Blackboard, ProcessRole};
use crate::store::outage::Backoff;

/// A job whose query waits for its reply.
struct Waiting {
    query_id: String,
    layer: String,
    /// Boxed: a waiting query's channel then holds a pointer, not a reply.
    tx: oneshot::Sender<Box<Reply>>,
}

/// Jobs waiting for replies, by job id. A std Mutex: it is held for a map
/// operation only, never across an await.
#[derive(Default, Clone)]
pub struct Pending {
    inner: Arc<Mutex<HashMap<String, Waiting>>>,
}

impl Pending {
    /// Registers a job; the receiver gets its reply.
    pub fn register(
        &self,
        job_id: &str,
        query_id: &str,
        layer: &str,
    ) -> oneshot::Receiver<Box<Reply>> {
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
        w.tx.send(Box::new(reply))
            .map_err(|r| Box::new((*r, "the query stopped waiting".to_string())))
    }
}

/// How many dropped-reply events may wait to be written; past that, a
/// burst is counted and logged instead of recorded one by one.
const DROPPED_BACKLOG: usize = 4_096;

/// Reads this daemon's reply list until `cancel` fires, on its own
/// blocking connection, taking up to 256 replies per round trip. Replies
/// are handed over in memory; the `late_reply` events of the ones dropped
/// are written by a separate task, so a burst of late or forged replies
/// never holds up the valid ones behind it.
pub async fn read_replies(
    bb: Blackboard,
    mut conn: RedisConn,
    instance: String,
    pending: Pending,
    status: Arc<super::status::DaemonStatus>,
    cancel: CancellationToken,
) {
    let key = bb.keys().replies(&instance);
    let (dropped_tx, dropped_rx) = mpsc::channel(DROPPED_BACKLOG);
    let recorder = tokio::spawn(record_dropped(bb.clone(), dropped_rx));
    let mut unrecorded = 0u64;
    let mut backoff = Backoff::default();
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
            _ = cancel.cancelled() => break,
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
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_wait()) => continue,
                }
            }
        };
        for raw in popped(value) {
            let Some(event) = handle_reply(&pending, &status, &raw) else {
                continue;
            };
            if dropped_tx.try_send(event).is_err() {
                unrecorded += 1;
                if unrecorded.is_power_of_two() {
                    tracing::warn!(
                        unrecorded,
                        "dropped worker replies arrive faster than their late_reply events can be written; these are logged here and not recorded in the feed"
                    );
                }
            }
        }
    }
    drop(dropped_tx);
    // What is queued is written within a bound; the rest is counted.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), recorder).await;
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

/// Hands one reply to its query; returns the `late_reply` event to record
/// when it was dropped instead.
fn handle_reply(
    pending: &Pending,
    status: &super::status::DaemonStatus,
    raw: &[u8],
) -> Option<Event> {
    let reply: Reply = match serde_json::from_slice(raw) {
        Ok(r) => r,
        Err(e) => {
            let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
            tracing::warn!(reply = %shown, "dropping a malformed reply: {e}");
            return Some(
                Event::global(EventKind::LateReply).reason(format!("malformed reply: {e}")),
            );
        }
    };
    let (reply, why) = *pending.deliver(reply).err()?;
    status.prom.late_reply();
    tracing::debug!(job_id = %reply.job_id, query_id = %reply.query_id, "dropping reply: {why}");
    Some(
        Event::new(EventKind::LateReply, &reply.query_id)
            .layer(reply.layer.as_str())
            .worker(reply.worker.as_str())
            .reason(format!("job {}: {why}", reply.job_id)),
    )
}

/// Writes the `late_reply` events of dropped replies, as many per round
/// trip as are waiting, until the reader stops.
async fn record_dropped(bb: Blackboard, mut rx: mpsc::Receiver<Event>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut pipe = redis::pipe();
        for e in batch.drain(..) {
            bb.add_event_to(&mut pipe, &e);
        }
        let mut conn = bb.connection();
        if let Err(err) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!("cannot record dropped replies: {err}");
        }
    }
}

/// Healthy workers per layer, refreshed in the background so the cascade
/// never scans health keys on a query's path.
#[derive(Clone, Default)]
pub struct WorkerDirectory {
    /// Each layer with a healthy worker, and whether one of them takes
    /// from the layer's priority job lists.
    live: Arc<Mutex<HashMap<String, bool>>>,
}

impl WorkerDirectory {
    /// Whether a healthy worker serves `layer`, as of the last refresh.
    pub fn has_live(&self, layer: &str) -> bool {
        self.live
            .lock()
            .expect("directory lock")
            .contains_key(layer)
    }

    /// Whether a healthy worker of `layer` takes from its priority job
    /// lists, as of the last refresh: a job of another lane than `normal`
    /// goes to its lane's list only then (a worker that knows no lanes
    /// takes only `<p>:jobs:<layer>`).
    pub fn takes_lanes(&self, layer: &str) -> bool {
        self.live.lock().expect("directory lock").get(layer) == Some(&true)
    }

    /// The layers with a healthy worker as of the last refresh, sorted.
    pub fn live_layers(&self) -> Vec<String> {
        let mut layers: Vec<String> = self
            .live
            .lock()
            .expect("directory lock")
            .keys()
            .cloned()
            .collect();
        layers.sort();
        layers
    }

    /// Reads the health records once.
    pub async fn refresh(&self, bb: &Blackboard) -> Result<(), crate::BlackboardError> {
        let mut live: HashMap<String, bool> = HashMap::new();
        for h in bb.list_health().await? {
            if h.role == ProcessRole::Worker
                && h.healthy
                && let Some(layer) = h.layer
            {
                *live.entry(layer).or_default() |= h.lanes;
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
