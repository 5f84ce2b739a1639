//! The record of one query, as stored at `<p>:queries:state:<id>`.
//!
//! Field names follow the Python `RedisBlackboard.create_query` that Kitbash
//! grew out of, so states written by its clients are read as they are.
//! Fields this version does not know are kept (`extra`) and written back
//! unchanged, so two versions of a client can share one Redis.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a query is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueryStatus {
    /// Written by a client, not yet taken.
    Pending,
    /// Taken by a daemon.
    Processing,
    /// A layer was confident enough.
    Answered,
    /// No layer was confident enough; the best answer seen is kept.
    Unanswered,
    /// An error that is not the query's answer (rejected input, attempts exhausted).
    Failed,
    /// A status written by another client that this version does not know.
    Other(String),
}

impl QueryStatus {
    /// The status as stored.
    pub fn as_str(&self) -> &str {
        match self {
            QueryStatus::Pending => "pending",
            QueryStatus::Processing => "processing",
            QueryStatus::Answered => "answered",
            QueryStatus::Unanswered => "unanswered",
            QueryStatus::Failed => "failed",
            QueryStatus::Other(s) => s,
        }
    }

    /// Whether the query's outcome is final: it is never processed again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            QueryStatus::Answered | QueryStatus::Unanswered | QueryStatus::Failed
        )
    }
}

impl From<&str> for QueryStatus {
    fn from(s: &str) -> Self {
        match s {
            "pending" => QueryStatus::Pending,
            "processing" => QueryStatus::Processing,
            "answered" => QueryStatus::Answered,
            "unanswered" => QueryStatus::Unanswered,
            "failed" => QueryStatus::Failed,
            other => QueryStatus::Other(other.to_string()),
        }
    }
}

impl fmt::Display for QueryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for QueryStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QueryStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(QueryStatus::from(s.as_str()))
    }
}

/// How one layer attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Confident enough: the layer answered.
    Hit,
    /// Answered below the layer's threshold, or not at all.
    Miss,
    /// No reply within the layer's timeout.
    Timeout,
    /// The layer failed (worker error, garbage reply).
    Error,
    /// Not tried: disabled, or no live worker.
    Skipped,
}

impl Outcome {
    /// The outcome as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One layer tried for a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAttempt {
    /// Layer name (`layer0`, …).
    pub layer: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The layer's confidence, when it answered.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Time spent on the layer, in milliseconds.
    #[serde(default)]
    pub latency_ms: f64,
    /// Worker that answered, for worker layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why it was skipped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer a query ended with (or the best one seen, when unanswered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The answer text.
    pub text: String,
    /// Layer that gave it.
    pub layer: String,
    /// Its confidence in [0, 1].
    pub confidence: f64,
    /// Where it came from (`grain:<fact_id>`, `<cartridge>#<fact id>`, …).
    #[serde(default)]
    pub source: Option<String>,
    /// For an answer from a crystallised grain: where that grain came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crystallized: Option<Crystallized>,
}

/// Provenance of a crystallised grain: the worker-layer answer it was made
/// from, and when it stops answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crystallized {
    /// The layer that answered (`layer2`).
    pub layer: String,
    /// The worker that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The query whose answer it is.
    pub query_id: String,
    /// When it was made (RFC 3339).
    pub at: String,
    /// When it stops answering (RFC 3339); hits never move it.
    pub expires_at: String,
    /// The same instant, in Unix milliseconds (what lookups compare).
    pub expires_ms: i64,
}

impl Crystallized {
    /// Whether it has expired at `now_ms` (Unix milliseconds).
    pub fn expired_at(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_ms
    }
}

/// The full record of one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryState {
    /// The query's id.
    pub query_id: String,
    /// What was asked.
    pub query_text: String,
    /// Where it is in its life.
    pub status: QueryStatus,
    /// When a client created it (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When a daemon started on it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it reached its terminal status (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// One entry per layer tried.
    #[serde(default)]
    pub layer_attempts: Vec<LayerAttempt>,
    /// The answer, or the best one seen when unanswered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Times it was recovered from a daemon that died holding it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recoveries: u32,
    /// The client's metadata, kept as given.
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
    /// Fields written by other clients, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Now, as RFC 3339 with microseconds (`2026-11-21T10:00:00.123456Z`).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an RFC 3339 timestamp, or a naive ISO 8601 one (as Python's
/// `datetime.isoformat()` writes) taken as UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

impl QueryState {
    /// The lane its `priority` field asks for (`normal` when it names
    /// none: absent, a number, another word).
    pub fn lane(&self) -> crate::store::lanes::Lane {
        crate::store::lanes::Lane::of_value(self.extra.get("priority"))
    }

    /// Sets its priority (the `priority` field, as clients write it);
    /// `normal` is no field, as a client that knows no lanes writes it.
    pub fn set_priority(&mut self, lane: crate::store::lanes::Lane) {
        if lane == crate::store::lanes::Lane::Normal {
            self.extra.remove("priority");
        } else {
            self.extra.insert(
                "priority".into(),
                serde_json::Value::String(lane.as_str().into()),
            );
        }
    }

    /// A new pending query with a fresh id.
    pub fn new(text: impl Into<String>) -> Self {
        Self::with_id(uuid::Uuid::new_v4().to_string(), text)
    }

    /// A new pending query with the given id.
    pub fn with_id(id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            query_id: id.into(),
            query_text: text.into(),
            status: QueryStatus::Pending,
            created_at: Some(now_rfc3339()),
            started_at: None,
            completed_at: None,
            layer_attempts: Vec::new(),
            answer: None,
            error: None,
            recoveries: 0,
            metadata: empty_object(),
            extra: Default::default(),
        }
    }

    /// `created_at`, parsed.
    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.created_at.as_deref().and_then(parse_timestamp)
    }

    /// `completed_at`, parsed.
    pub fn completed(&self) -> Option<DateTime<Utc>> {
        self.completed_at.as_deref().and_then(parse_timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_python_shape_and_keeps_unknown_fields() {
        let json = r#"{"query_id":"q1","query_text":"What is AI?","status":"pending","created_at":"2026-11-21T10:00:00Z","layer_attempts":[],"metadata":{"user":"ann"},"priority":5}"#;
        let s: QueryState = serde_json::from_str(json).unwrap();
        assert_eq!(s.status, QueryStatus::Pending);
        assert_eq!(s.metadata["user"], "ann");
        assert_eq!(s.extra["priority"], 5);
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["priority"], 5);
        assert_eq!(back["layer_attempts"], serde_json::json!([]));
    }

    #[test]
    fn unknown_status_round_trips() {
        let s: QueryState =
            serde_json::from_str(r#"{"query_id":"q","query_text":"t","status":"completed"}"#)
                .unwrap();
        assert_eq!(s.status, QueryStatus::Other("completed".into()));
        assert!(!s.status.is_terminal());
        assert_eq!(serde_json::to_value(&s).unwrap()["status"], "completed");
    }

    #[test]
    fn parses_python_naive_timestamps() {
        assert!(parse_timestamp("2026-11-21T10:00:00.123456").is_some());
        assert!(parse_timestamp("2026-11-21T10:00:00Z").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }
}
