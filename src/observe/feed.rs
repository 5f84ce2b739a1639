//! The diagnostic feed: one stream entry per decision, at
//! `<p>:diagnostic:feed`, capped with `XADD MAXLEN ~`.
//!
//! Fields are flat strings so `redis-cli XREAD BLOCK 0 STREAMS … $` shows them
//! readably: `event`, `ts` (RFC 3339), `query_id`, and where they apply
//! `layer`, `confidence`, `latency_ms`, `worker`, `grain`, `reason`,
//! `priority`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use redis::Value;

use crate::state::{now_rfc3339, parse_timestamp};
use crate::store::blackboard::{Blackboard, BlackboardError, Result};

macro_rules! event_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// Every event name of docs/design.md.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind { $(#[doc = $name] $variant,)* }

        impl EventKind {
            /// Every kind, in docs/design.md's order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The name written in the `event` field.
            pub fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $name,)* }
            }
        }

        impl FromStr for EventKind {
            type Err = UnknownEvent;
            fn from_str(s: &str) -> std::result::Result<Self, UnknownEvent> {
                match s { $($name => Ok(EventKind::$variant),)* _ => Err(UnknownEvent(s.to_string())) }
            }
        }
    };
}

event_kinds! {
    QueryCreated => "query_created",
    QueryStarted => "query_started",
    LayerAttempt => "layer_attempt",
    LayerHit => "layer_hit",
    LayerMiss => "layer_miss",
    LayerTimeout => "layer_timeout",
    LayerError => "layer_error",
    LayerSkipped => "layer_skipped",
    Escalation => "escalation",
    QueryCompleted => "query_completed",
    QueryFailed => "query_failed",
    QueryRecovered => "query_recovered",
    QueryDead => "query_dead",
    LateReply => "late_reply",
    WorkerHealth => "worker_health",
    GrainCrystallized => "grain_crystallized",
    GrainForgotten => "grain_forgotten",
    AnswerMarkedWrong => "answer_marked_wrong",
    LayersDisagreed => "layers_disagreed",
    QueryFenced => "query_fenced",
}

/// An event name that is not in docs/design.md.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown event {0:?}; known: query_created, query_started, layer_attempt, layer_hit, layer_miss, layer_timeout, layer_error, layer_skipped, escalation, query_completed, query_failed, query_recovered, query_dead, late_reply, worker_health, grain_crystallized, grain_forgotten, answer_marked_wrong, layers_disagreed, query_fenced"
)]
pub struct UnknownEvent(pub String);

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The query concerned, if any.
    pub query_id: Option<String>,
    /// The layer concerned, if any.
    pub layer: Option<String>,
    /// A confidence, where one applies.
    pub confidence: Option<f64>,
    /// A latency in milliseconds, where one applies.
    pub latency_ms: Option<f64>,
    /// The worker concerned, if any.
    pub worker: Option<String>,
    /// Why (skips, errors, failures, recoveries).
    pub reason: Option<String>,
    /// The grain concerned (crystallised, forgotten, marked wrong).
    pub grain: Option<String>,
    /// The query's priority lane, on `query_started` (omitted for `normal`).
    pub priority: Option<String>,
    /// When it happened (RFC 3339), taken when the event is made, so events
    /// written later in one batch keep their own times.
    pub ts: String,
}

impl Event {
    /// An event about `query_id`.
    pub fn new(kind: EventKind, query_id: impl Into<String>) -> Self {
        Self {
            kind,
            query_id: Some(query_id.into()),
            layer: None,
            confidence: None,
            latency_ms: None,
            worker: None,
            reason: None,
            grain: None,
            priority: None,
            ts: now_rfc3339(),
        }
    }

    /// An event about no query in particular (worker health, late replies).
    pub fn global(kind: EventKind) -> Self {
        Self {
            query_id: None,
            ..Self::new(kind, "")
        }
    }

    /// Sets the priority lane (a lane other than `normal`; `normal` is
    /// what an event without one means).
    pub fn priority(mut self, lane: crate::store::lanes::Lane) -> Self {
        if lane != crate::store::lanes::Lane::Normal {
            self.priority = Some(lane.as_str().to_string());
        }
        self
    }

    /// Sets the layer.
    pub fn layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = Some(layer.into());
        self
    }

    /// Sets the confidence.
    pub fn confidence(mut self, c: f64) -> Self {
        self.confidence = Some(c);
        self
    }

    /// Sets the latency.
    pub fn latency_ms(mut self, ms: f64) -> Self {
        self.latency_ms = Some(ms);
        self
    }

    /// Sets the worker.
    pub fn worker(mut self, w: impl Into<String>) -> Self {
        self.worker = Some(w.into());
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }

    /// Sets the grain.
    pub fn grain(mut self, fact_id: impl Into<String>) -> Self {
        self.grain = Some(fact_id.into());
        self
    }

    /// The flat field list written to the stream.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("event", self.kind.as_str().to_string()),
            ("ts", self.ts.clone()),
        ];
        if let Some(q) = &self.query_id {
            f.push(("query_id", q.clone()));
        }
        if let Some(l) = &self.layer {
            f.push(("layer", l.clone()));
        }
        if let Some(c) = self.confidence {
            f.push(("confidence", format!("{c:.4}")));
        }
        if let Some(ms) = self.latency_ms {
            f.push(("latency_ms", format!("{ms:.3}")));
        }
        if let Some(w) = &self.worker {
            f.push(("worker", w.clone()));
        }
        if let Some(g) = &self.grain {
            f.push(("grain", g.clone()));
        }
        if let Some(r) = &self.reason {
            f.push(("reason", r.clone()));
        }
        if let Some(p) = &self.priority {
            f.push(("priority", p.clone()));
        }
        f
    }
}

/// One entry read back from the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    /// Stream id (`<ms>-<seq>`).
    pub id: String,
    /// Its fields.
    pub fields: BTreeMap<String, String>,
}

impl FeedEntry {
    /// A field's value.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// The `event` field.
    pub fn event(&self) -> Option<&str> {
        self.get("event")
    }

    /// The `ts` field, parsed; falls back to the stream id's milliseconds.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.get("ts").and_then(parse_timestamp).or_else(|| {
            let ms: i64 = self.id.split('-').next()?.parse().ok()?;
            DateTime::from_timestamp_millis(ms)
        })
    }
}

/// Parses an XRANGE/XREVRANGE reply, skipping entries that are not flat
/// string maps (someone else's XADD) rather than failing the read.
fn parse_entries(value: Value) -> Vec<FeedEntry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut parts) = item else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let fields_v = parts.pop().expect("two parts");
        let id_v = parts.pop().expect("two parts");
        let Ok(id) = redis::from_redis_value::<String>(id_v) else {
            continue;
        };
        let Ok(pairs) = redis::from_redis_value::<Vec<String>>(fields_v) else {
            continue;
        };
        let mut fields = BTreeMap::new();
        for pair in pairs.chunks_exact(2) {
            fields.insert(pair[0].clone(), pair[1].clone());
        }
        out.push(FeedEntry { id, fields });
    }
    out
}

/// A stream entry id (`<ms>-<seq>`) as numbers, for ordering entries of
/// several streams.
pub fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl Blackboard {
    /// Appends the XADD for `event` to `pipe`, so callers can record many
    /// decisions in one round trip. The event goes to the feed of the
    /// current partition, with the pipeline's other keys (in cluster mode a
    /// pipeline's keys share a slot); see [`Self::emit`] for one event.
    pub fn add_event_to(&self, pipe: &mut redis::Pipeline, event: &Event) {
        self.add_event_to_feed(pipe, &self.keys.feed(), event);
    }

    fn add_event_to_feed(&self, pipe: &mut redis::Pipeline, feed: &str, event: &Event) {
        let cmd = pipe
            .cmd("XADD")
            .arg(feed)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.limits.feed_max_len)
            .arg("*");
        for (k, v) in event.fields() {
            cmd.arg(k).arg(v);
        }
        cmd.ignore();
    }

    /// Records one event: in the feed of its query's partition, or of the
    /// current partition for an event about no query.
    pub async fn emit(&self, event: &Event) -> Result<()> {
        let feed = match &event.query_id {
            Some(id) => self.keys.for_query(id).feed(),
            None => self.keys.feed(),
        };
        let mut pipe = redis::pipe();
        self.add_event_to_feed(&mut pipe, &feed, event);
        let mut conn = self.conn.clone();
        let _: () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| BlackboardError::on_key(e, &feed, "stream"))?;
        Ok(())
    }

    async fn xrange(
        &self,
        feed: &str,
        cmd: &str,
        from: &str,
        to: &str,
        count: usize,
    ) -> Result<Vec<FeedEntry>> {
        let mut conn = self.conn.clone();
        let v: Value = redis::cmd(cmd)
            .arg(feed)
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(|e| BlackboardError::on_key(e, feed, "stream"))?;
        Ok(parse_entries(v))
    }

    #[cfg(any(test, feature = "test-util"))]
    /// The `count` most recent events, oldest first. Read 1,000 at a time,
    /// so a long feed is never one reply that outlasts the response timeout.
    pub async fn recent_events(&self, count: usize) -> Result<Vec<FeedEntry>> {
        self.recent_matching(count, count, |_| true).await
    }

    /// Up to `count` of the most recent events matching `keep`, looking at
    /// no more than the `scan` most recent entries of each partition's
    /// feed; oldest first. In cluster mode the partitions' feeds are read as
    /// one, ordered by entry id (the time each node gave it).
    pub async fn recent_matching(
        &self,
        count: usize,
        scan: usize,
        keep: impl Fn(&FeedEntry) -> bool,
    ) -> Result<Vec<FeedEntry>> {
        let mut all = Vec::new();
        for keys in self.keys.all_partitions() {
            let feed = keys.feed();
            let mut out = Vec::new();
            let mut to = "+".to_string();
            let mut seen = 0;
            while seen < scan && out.len() < count {
                let page = (scan - seen).min(1000);
                let batch = self.xrange(&feed, "XREVRANGE", &to, "-", page).await?;
                if batch.is_empty() {
                    break;
                }
                seen += batch.len();
                to = format!("({}", batch.last().expect("non-empty").id);
                out.extend(batch.into_iter().filter(&keep).take(count - out.len()));
            }
            all.extend(out);
        }
        // Newest first across partitions, then the newest `count`, oldest first.
        all.sort_by_key(|e| std::cmp::Reverse(stream_id(&e.id)));
        all.truncate(count);
        all.reverse();
        Ok(all)
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Recent events of one kind (see `recent_matching` for `scan`).
    pub async fn events_by_kind(
        &self,
        kind: EventKind,
        count: usize,
        scan: usize,
    ) -> Result<Vec<FeedEntry>> {
        self.recent_matching(count, scan, |e| e.event() == Some(kind.as_str()))
            .await
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Recent events about one layer.
    pub async fn events_by_layer(
        &self,
        layer: &str,
        count: usize,
        scan: usize,
    ) -> Result<Vec<FeedEntry>> {
        self.recent_matching(count, scan, |e| e.get("layer") == Some(layer))
            .await
    }

    /// One query's events, in order. Reads only the part of the feed written
    /// during the query's life (from its state's `created_at` to its
    /// `completed_at`, or now, widened by `feed.timeline_slack_ms` for clock
    /// skew between hosts), never the whole feed. When the state has expired
    /// it looks at the most recent `fallback_scan` entries instead.
    pub async fn timeline(&self, query_id: &str, fallback_scan: usize) -> Result<Vec<FeedEntry>> {
        let state = match self.get_state(query_id).await {
            Ok(s) => s,
            Err(BlackboardError::MalformedState { .. }) => None,
            Err(e) => return Err(e),
        };
        let slack = self.limits.timeline_slack_ms as i64;
        let window = state.as_ref().and_then(|s| {
            let from = s.created()?.timestamp_millis() - slack;
            let to = s
                .completed()
                .map(|t| t.timestamp_millis() + slack)
                .unwrap_or_else(|| Utc::now().timestamp_millis() + slack);
            Some((from.max(0), to))
        });
        let Some((from, to)) = window else {
            return self
                .recent_matching(usize::MAX, fallback_scan, |e| {
                    e.get("query_id") == Some(query_id)
                })
                .await;
        };
        // Every partition's feed: the query's decisions are in its own
        // partition's, a grain crystallised from it in the grain's.
        let mut out = Vec::new();
        for keys in self.keys.all_partitions() {
            let feed = keys.feed();
            let mut start = from.to_string();
            loop {
                let batch = self
                    .xrange(&feed, "XRANGE", &start, &to.to_string(), 1000)
                    .await?;
                let n = batch.len();
                if let Some(last) = batch.last() {
                    start = format!("({}", last.id);
                }
                out.extend(
                    batch
                        .into_iter()
                        .filter(|e| e.get("query_id") == Some(query_id)),
                );
                if n < 1000 {
                    break;
                }
            }
        }
        out.sort_by_key(|e| stream_id(&e.id));
        Ok(out)
    }

    /// Where each partition's feed ends now (its last entry id, `0-0` when
    /// empty): the cursors from which [`Self::events_after`] reads what
    /// comes next.
    pub async fn feed_tails(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for keys in self.keys.all_partitions() {
            let last = self.xrange(&keys.feed(), "XREVRANGE", "+", "-", 1).await?;
            out.push(
                last.first()
                    .map_or_else(|| "0-0".to_string(), |e| e.id.clone()),
            );
        }
        Ok(out)
    }

    /// Events written after `cursors` (one entry id per partition's feed,
    /// as [`Self::feed_tails`] gives), at most `count` per feed, oldest
    /// first; each cursor moves to the last entry read from its feed. The
    /// flag says whether some feed had `count` (so maybe more) to give.
    pub async fn events_after(
        &self,
        cursors: &mut [String],
        count: usize,
    ) -> Result<(Vec<FeedEntry>, bool)> {
        let mut out = Vec::new();
        let mut full = false;
        for (keys, cursor) in self.keys.all_partitions().iter().zip(cursors.iter_mut()) {
            let batch = self
                .xrange(&keys.feed(), "XRANGE", &format!("({cursor}"), "+", count)
                .await?;
            full |= batch.len() >= count;
            if let Some(last) = batch.last() {
                cursor.clone_from(&last.id);
            }
            out.extend(batch);
        }
        out.sort_by_key(|e| stream_id(&e.id));
        Ok((out, full))
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Number of entries in the feed.
    pub async fn feed_len(&self) -> Result<u64> {
        let mut total = 0;
        for keys in self.keys.all_partitions() {
            let feed = keys.feed();
            let mut conn = self.conn.clone();
            let n: u64 = redis::cmd("XLEN")
                .arg(&feed)
                .query_async(&mut conn)
                .await
                .map_err(|e| BlackboardError::on_key(e, &feed, "stream"))?;
            total += n;
        }
        Ok(total)
    }
}
