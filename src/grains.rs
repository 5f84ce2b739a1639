//! Grains: facts crystallised in Redis, answered by layer0.
//!
//! A grain is a hash at `<p>:grains:<fact_id>` with the fields `question`,
//! `answer`, `confidence`, `source`, `created_at`, `updated_at` and `hits`.
//! The set `<p>:grains:index:all` holds every fact id, so counting is O(1)
//! and listing is an SSCAN, never a KEYS.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::blackboard::{Blackboard, BlackboardError, Result};
use crate::state::now_rfc3339;

/// One crystallised fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grain {
    /// Unique id; the key's suffix.
    pub fact_id: String,
    /// The question it answers.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// Confidence in [0, 1] of the answer itself.
    #[serde(default = "one")]
    pub confidence: f64,
    /// Where the fact came from.
    #[serde(default)]
    pub source: Option<String>,
    /// When it was first stored (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When it was last stored (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Times layer0 answered with it.
    #[serde(default)]
    pub hits: u64,
}

fn one() -> f64 {
    1.0
}

impl Grain {
    /// A grain with confidence 1 and no source.
    pub fn new(
        fact_id: impl Into<String>,
        question: impl Into<String>,
        answer: impl Into<String>,
    ) -> Self {
        Self {
            fact_id: fact_id.into(),
            question: question.into(),
            answer: answer.into(),
            confidence: 1.0,
            source: None,
            created_at: None,
            updated_at: None,
            hits: 0,
        }
    }

    /// Parses the hash fields of `key`.
    fn from_hash(key: &str, fact_id: &str, mut h: HashMap<String, String>) -> Result<Self> {
        let bad = |reason: String| BlackboardError::MalformedGrain {
            key: key.to_string(),
            reason,
        };
        let mut take = |field: &str| h.remove(field);
        let question = take("question").ok_or_else(|| bad("no `question` field".into()))?;
        let answer = take("answer").ok_or_else(|| bad("no `answer` field".into()))?;
        let confidence = match take("confidence") {
            None => 1.0,
            Some(c) => c
                .parse::<f64>()
                .ok()
                .filter(|c| (0.0..=1.0).contains(c))
                .ok_or_else(|| bad(format!("confidence {c:?} is not a number in [0, 1]")))?,
        };
        let hits = match take("hits") {
            None => 0,
            Some(n) => n
                .parse::<u64>()
                .map_err(|_| bad(format!("hits {n:?} is not a count")))?,
        };
        Ok(Self {
            fact_id: fact_id.to_string(),
            question,
            answer,
            confidence,
            source: take("source").filter(|s| !s.is_empty()),
            created_at: take("created_at"),
            updated_at: take("updated_at"),
            hits,
        })
    }
}

impl Blackboard {
    /// Stores (or replaces) a grain and indexes it. Keeps `created_at` and
    /// `hits` of a grain stored before under the same id.
    pub async fn store_grain(&self, grain: &Grain) -> Result<()> {
        let key = self.keys.grain(&grain.fact_id);
        let now = now_rfc3339();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("question", grain.question.as_str()),
                    ("answer", grain.answer.as_str()),
                    ("confidence", &grain.confidence.to_string()),
                    ("source", grain.source.as_deref().unwrap_or("")),
                    ("updated_at", &now),
                ],
            )
            .ignore()
            .hset_nx(
                &key,
                "created_at",
                grain.created_at.as_deref().unwrap_or(&now),
            )
            .ignore()
            .hset_nx(&key, "hits", grain.hits)
            .ignore()
            .sadd(self.keys.grain_ids(), &grain.fact_id)
            .ignore();
        let _: () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "hash"))?;
        Ok(())
    }

    /// Reads one grain; `None` when there is none.
    pub async fn get_grain(&self, fact_id: &str) -> Result<Option<Grain>> {
        let key = self.keys.grain(fact_id);
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = conn
            .hgetall(&key)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "hash"))?;
        if h.is_empty() {
            return Ok(None);
        }
        Grain::from_hash(&key, fact_id, h).map(Some)
    }

    /// Deletes a grain and its index entries; returns whether there was one.
    pub async fn delete_grain(&self, fact_id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let (deleted, _): (u64, u64) = redis::pipe()
            .atomic()
            .del(self.keys.grain(fact_id))
            .srem(self.keys.grain_ids(), fact_id)
            .query_async(&mut conn)
            .await?;
        Ok(deleted > 0)
    }

    /// Number of grains (O(1)).
    pub async fn count_grains(&self) -> Result<u64> {
        let key = self.keys.grain_ids();
        let mut conn = self.conn.clone();
        conn.scard(&key)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "set"))
    }

    /// Fact ids of up to `limit` grains, by SSCAN over the index, sorted.
    pub async fn list_grain_ids(&self, limit: usize) -> Result<Vec<String>> {
        let key = self.keys.grain_ids();
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "set"))?;
            out.extend(batch);
            if next == 0 || out.len() >= limit {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        out.truncate(limit);
        Ok(out)
    }

    /// Up to `limit` grains. A grain that cannot be read is skipped with a
    /// warning; an id whose hash is gone is dropped from the index.
    pub async fn list_grains(&self, limit: usize) -> Result<Vec<Grain>> {
        let ids = self.list_grain_ids(limit).await?;
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.hgetall(self.keys.grain(id));
            }
            // A wrong-typed key fails the whole pipeline; fall back to one
            // read per grain so the good ones are still listed.
            match pipe
                .query_async::<Vec<HashMap<String, String>>>(&mut conn)
                .await
            {
                Ok(hashes) => {
                    for (id, h) in chunk.iter().zip(hashes) {
                        self.push_listed(id, h, &mut out).await?;
                    }
                }
                Err(e) if crate::blackboard::is_wrong_type(&e) => {
                    for id in chunk {
                        match self.get_grain(id).await {
                            Ok(Some(g)) => out.push(g),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(fact_id = %id, "skipping grain: {e}"),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    async fn push_listed(
        &self,
        id: &str,
        h: HashMap<String, String>,
        out: &mut Vec<Grain>,
    ) -> Result<()> {
        if h.is_empty() {
            let mut conn = self.conn.clone();
            let _: u64 = conn.srem(self.keys.grain_ids(), id).await?;
            return Ok(());
        }
        match Grain::from_hash(&self.keys.grain(id), id, h) {
            Ok(g) => out.push(g),
            Err(e) => tracing::warn!(fact_id = %id, "skipping grain: {e}"),
        }
        Ok(())
    }

    /// Adds one to a grain's hit count.
    pub async fn record_grain_hit(&self, fact_id: &str) -> Result<u64> {
        let key = self.keys.grain(fact_id);
        let mut conn = self.conn.clone();
        conn.hincr(&key, "hits", 1)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "hash"))
    }
}
