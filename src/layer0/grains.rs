//! Grains: facts crystallised in Redis, answered by layer0.
//!
//! A grain is a hash at `<p>:grains:<fact_id>` with the fields `question`,
//! `answer`, `confidence`, `source`, `created_at`, `updated_at`, `hits` and
//! `match_key`. The set `<p>:grains:index:all` holds every fact id, so
//! counting is O(1) and listing is an SSCAN, never a KEYS.
//!
//! # The question index
//!
//! `<p>:grains:index:questions` is a hash from a question's match key
//! ([`crate::layer0::matching::normalize`]) to a compact JSON copy of what layer0
//! answers with: `{"fact_id","question","answer","confidence","source"}`.
//! A lookup is therefore one HGET: one round trip and about a microsecond of
//! Redis CPU, with no key built inside Redis (a lookup that read the index
//! and then the grain hash would have to derive the second key inside a
//! script, which Redis Cluster cannot route). The copy is kept consistent by
//! the only two writers, [`Blackboard::store_grain`] and
//! [`Blackboard::delete_grain`], each one Lua script over the grain hash,
//! the index and the id set. Edit grains through them (`kitbash grains
//! load --replace`), not with `HSET` in `redis-cli`, or the index goes stale.
//!
//! The grain hash remembers its own match key (`match_key`), so deleting or
//! re-storing it removes exactly its old index entry without normalising
//! the old question again, and a change of the normalisation rules cannot
//! leave entries behind.
//!
//! Two grains whose questions normalise to the same key cannot both be
//! answered: the one stored later takes the index entry. [`StoredGrain`]
//! names the grain that lost it (and `store_grain` logs a warning); that
//! grain stays stored and listed but layer0 no longer finds it until it is
//! stored again. Deleting the winner does not bring the loser back.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::aliases::Aliases;
use crate::layer0::matching::{MatchKey, normalize, second_stage_keys};
use crate::observe::metrics::Tally;
use crate::state::{Crystallized, now_rfc3339};
use crate::store::blackboard::{Blackboard, BlackboardError, Result};
use crate::store::scripts::{DELETE_GRAIN, STORE_GRAIN};

/// Fact ids starting with this would name an index key (`<p>:grains:index:*`).
const RESERVED_ID_PREFIX: &str = "index:";

/// The ids of crystallised grains, which no loaded grain may take.
pub const CRYSTAL_ID_PREFIX: &str = "crystal:";

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
    /// The fact it was made from (provenance), when a grains file gives
    /// both `id` (the grain's key) and `fact_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_fact: Option<String>,
    /// Set for a grain the cascade crystallised: where it came from and
    /// when it expires. `None` for a loaded grain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crystallized: Option<Crystallized>,
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
            from_fact: None,
            crystallized: None,
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
        let created_at = take("created_at");
        let crystallized = match take("crystallized_by") {
            None => None,
            Some(layer) => {
                let expires_ms = take("expires_ms")
                    .and_then(|ms| ms.parse::<i64>().ok())
                    .ok_or_else(|| bad("a crystallised grain without `expires_ms`".into()))?;
                Some(Crystallized {
                    layer,
                    worker: take("worker").filter(|w| !w.is_empty()),
                    query_id: take("query_id").unwrap_or_default(),
                    at: created_at.clone().unwrap_or_default(),
                    expires_at: take("expires_at").unwrap_or_default(),
                    expires_ms,
                })
            }
        };
        Ok(Self {
            fact_id: fact_id.to_string(),
            question,
            answer,
            confidence,
            source: take("source").filter(|s| !s.is_empty()),
            created_at,
            updated_at: take("updated_at"),
            hits,
            from_fact: take("from_fact").filter(|s| !s.is_empty()),
            crystallized,
        })
    }
}

/// What layer0 answers with: a copy of a grain's answer, kept in the
/// question index so that a lookup is one HGET.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrainMatch {
    /// The grain's id.
    pub fact_id: String,
    /// The grain's question (as stored, not normalised).
    pub question: String,
    /// The answer.
    pub answer: String,
    /// The grain's confidence in [0, 1]; the daemon answers at layer0 when
    /// it reaches `layers.layer0.min_confidence`.
    pub confidence: f64,
    /// Where the fact came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For a crystallised grain: its provenance and expiry, which every
    /// lookup checks (an expired grain is a miss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crystallized: Option<Crystallized>,
    /// The partition whose index held it (cluster mode; 0 on one server):
    /// where the grain's hash is. Not stored.
    #[serde(skip)]
    pub partition: usize,
}

impl GrainMatch {
    pub(crate) fn of(grain: &Grain) -> Self {
        Self {
            fact_id: grain.fact_id.clone(),
            question: grain.question.clone(),
            answer: grain.answer.clone(),
            confidence: grain.confidence,
            source: grain.source.clone().filter(|s| !s.is_empty()),
            crystallized: grain.crystallized.clone(),
            partition: 0,
        }
    }

    /// Whether it is a crystallised grain past its expiry at `now_ms`.
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.crystallized
            .as_ref()
            .is_some_and(|c| c.expired_at(now_ms))
    }
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Parses an entry of the question index.
fn parse_entry(index: &str, match_key: &str, raw: &str) -> Result<GrainMatch> {
    let bad = |reason: String| BlackboardError::MalformedGrain {
        key: index.to_string(),
        reason: format!(
            "the entry for match key {match_key:?} {reason}; store the grain again (kitbash grains load --replace) or delete the entry"
        ),
    };
    let m: GrainMatch =
        serde_json::from_str(raw).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
    if !(0.0..=1.0).contains(&m.confidence) {
        return Err(bad(format!(
            "has confidence {}, not a number in [0, 1]",
            m.confidence
        )));
    }
    if m.fact_id.is_empty() {
        return Err(bad("has an empty fact_id".into()));
    }
    Ok(m)
}

/// The grain the second-stage keys found, when they all found the same
/// one; `None` when none found a grain or two found different ones (the
/// question could be either, so layer0 does not guess).
pub fn agreed(found: Vec<GrainMatch>) -> Option<GrainMatch> {
    let mut found = found.into_iter();
    let first = found.next()?;
    found.all(|m| m.fact_id == first.fact_id).then_some(first)
}

/// What to do when a grain with the same fact id is stored already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfExists {
    /// Overwrite it (keeping its `created_at` and `hits`).
    #[default]
    Replace,
    /// Leave it as it is and report [`StoreStatus::Kept`].
    Keep,
}

/// Whether a store wrote the grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStatus {
    /// The grain was written and indexed.
    Stored,
    /// A grain with this id existed and [`IfExists::Keep`] left it alone.
    Kept,
}

/// The result of storing one grain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrain {
    /// The grain's id.
    pub fact_id: String,
    /// Its question's match key; empty when the question has no content
    /// word, in which case the grain is stored but layer0 never finds it.
    pub match_key: MatchKey,
    /// Whether it was written.
    pub status: StoreStatus,
    /// Another grain whose question had the same match key and which lost
    /// the index entry to this one (see the module documentation).
    pub displaced: Option<String>,
}

impl Blackboard {
    /// Stores (or replaces) a grain and indexes its question, in one Lua
    /// script: the grain hash, the question index entry (the old one goes
    /// when the question changed) and the id set change together. Keeps
    /// `created_at` and `hits` of a grain stored before under the same id.
    ///
    /// When another grain's question has the same match key, this grain
    /// takes the index entry; the result names the displaced grain and a
    /// warning is logged. Fails with [`BlackboardError::MalformedGrain`] for
    /// an empty or reserved (`index:…`) fact id or a confidence outside
    /// [0, 1], and writes nothing then.
    pub async fn store_grain(&self, grain: &Grain) -> Result<StoredGrain> {
        let grain = self
            .relocated(std::slice::from_ref(grain))
            .await?
            .pop()
            .expect("one grain");
        let grain = &grain;
        let home = self.grain_home(&normalize(&grain.question));
        let mut conn = self.conn.clone();
        let (invocation, match_key) = home.store_invocation(grain, IfExists::Replace)?;
        let reply: (String, String) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| home.script_error(e, &grain.fact_id))?;
        let stored = stored_grain(grain, match_key, reply);
        if let Some(other) = &stored.displaced {
            tracing::warn!(
                fact_id = %stored.fact_id,
                displaced = %other,
                match_key = %stored.match_key,
                "grain took over the layer0 index entry of another grain with the same normalised question"
            );
        }
        Ok(stored)
    }

    /// Stores many grains, pipelined in batches (one round trip per 500
    /// grains), each one atomically as in [`Self::store_grain`]. Returns one
    /// result per grain, in order; the outer error is a failed connection.
    /// Collisions are reported in the results, not logged.
    ///
    /// In cluster mode each grain goes to the partition of its match key
    /// (one pipeline per partition); a grain stored before in another
    /// partition (its question changed) is moved, keeping its `created_at`
    /// and `hits`.
    pub async fn store_grains(
        &self,
        grains: &[Grain],
        if_exists: IfExists,
    ) -> Result<Vec<Result<StoredGrain>>> {
        if !self.keys.is_partitioned() {
            return self.store_grains_here(grains, if_exists).await;
        }
        let mut out: Vec<Option<Result<StoredGrain>>> = (0..grains.len()).map(|_| None).collect();
        for (chunk_at, chunk) in grains.chunks(500).enumerate() {
            let chunk = self.relocated(chunk).await?;
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.keys.partitions()];
            for (i, g) in chunk.iter().enumerate() {
                groups[self.keys.partition_of(normalize(&g.question).as_str())].push(i);
            }
            for (p, members) in groups.into_iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                let part: Vec<Grain> = members.iter().map(|&i| chunk[i].clone()).collect();
                let stored = self
                    .partition(p)
                    .store_grains_here(&part, if_exists)
                    .await?;
                for (i, r) in members.into_iter().zip(stored) {
                    out[chunk_at * 500 + i] = Some(r);
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every grain answered"))
            .collect())
    }

    /// The Blackboard of the partition that keeps the grains of match key
    /// `match_key` (the current one on one server).
    pub(crate) fn grain_home(&self, match_key: &MatchKey) -> Blackboard {
        self.partition(self.keys.partition_of(match_key.as_str()))
    }

    /// `grains`, each with the `created_at` and `hits` of its earlier self
    /// when that lives in another partition than the grain's own (cluster
    /// mode, its question changed), which is deleted there first. One
    /// SMISMEMBER per partition finds them.
    async fn relocated(&self, grains: &[Grain]) -> Result<Vec<Grain>> {
        let mut out = grains.to_vec();
        if !self.keys.is_partitioned() || grains.is_empty() {
            return Ok(out);
        }
        let ids: Vec<&str> = grains.iter().map(|g| g.fact_id.as_str()).collect();
        for here in self.partitions() {
            let key = here.keys.grain_ids();
            let mut conn = self.conn.clone();
            let member: Vec<bool> = redis::cmd("SMISMEMBER")
                .arg(&key)
                .arg(&ids)
                .query_async(&mut conn)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "set"))?;
            for (grain, member) in out.iter_mut().zip(member) {
                let home = self.keys.partition_of(normalize(&grain.question).as_str());
                if !member || home == here.keys.current() {
                    continue;
                }
                if let Ok(Some(old)) = here.get_grain_here(&grain.fact_id).await {
                    grain.created_at = grain.created_at.take().or(old.created_at);
                    grain.hits = grain.hits.max(old.hits);
                }
                here.delete_grain_here(&grain.fact_id).await?;
            }
        }
        Ok(out)
    }

    /// [`Self::store_grains`] in the current partition.
    async fn store_grains_here(
        &self,
        grains: &[Grain],
        if_exists: IfExists,
    ) -> Result<Vec<Result<StoredGrain>>> {
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(grains.len());
        for chunk in grains.chunks(500) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            pipe.load_script(&STORE_GRAIN).ignore();
            // Grains refused before sending keep their error here.
            let mut prepared = Vec::with_capacity(chunk.len());
            for grain in chunk {
                match self.store_invocation(grain, if_exists) {
                    Ok((invocation, key)) => {
                        pipe.invoke_script(&invocation);
                        prepared.push(Ok(key));
                    }
                    Err(e) => prepared.push(Err(e)),
                }
            }
            let mut replies = if pipe.len() > 1 {
                pipe.query_async::<Vec<redis::RedisResult<(String, String)>>>(&mut conn)
                    .await?
                    .into_iter()
            } else {
                Vec::new().into_iter()
            };
            for (grain, prepared) in chunk.iter().zip(prepared) {
                out.push(prepared.and_then(|key| {
                    let reply = replies.next().ok_or_else(|| {
                        BlackboardError::Redis(redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "pipeline answered fewer replies than commands",
                        )))
                    })?;
                    reply
                        .map(|reply| stored_grain(grain, key, reply))
                        .map_err(|e| self.script_error(e, &grain.fact_id))
                }));
            }
        }
        Ok(out)
    }

    fn store_invocation(
        &self,
        grain: &Grain,
        if_exists: IfExists,
    ) -> Result<(redis::ScriptInvocation<'static>, MatchKey)> {
        let key = self.keys.grain(&grain.fact_id);
        let bad = |reason: String| BlackboardError::MalformedGrain {
            key: key.clone(),
            reason,
        };
        if grain.fact_id.is_empty() {
            return Err(bad("the fact id is empty; give the grain an id".into()));
        }
        if grain.fact_id.starts_with(RESERVED_ID_PREFIX) {
            return Err(bad(format!(
                "fact id {:?} starts with {RESERVED_ID_PREFIX:?}, which is reserved for the grain indexes; choose another id",
                grain.fact_id
            )));
        }
        if grain.fact_id.starts_with(CRYSTAL_ID_PREFIX) {
            return Err(bad(format!(
                "fact id {:?} starts with {CRYSTAL_ID_PREFIX:?}, which is reserved for crystallised grains; choose another id",
                grain.fact_id
            )));
        }
        if !(0.0..=1.0).contains(&grain.confidence) {
            return Err(bad(format!(
                "confidence {} is not a number in [0, 1]",
                grain.confidence
            )));
        }
        let match_key = normalize(&grain.question);
        let entry =
            serde_json::to_string(&GrainMatch::of(grain)).expect("a GrainMatch always serializes");
        let now = now_rfc3339();
        let mut invocation = STORE_GRAIN.prepare_invoke();
        invocation
            .key(&key)
            .key(self.keys.question_index())
            .key(self.keys.grain_ids())
            .key(self.keys.crystallized())
            .key(self.keys.feed())
            .arg(&grain.fact_id)
            .arg(match_key.as_str())
            .arg(entry)
            .arg(&grain.question)
            .arg(&grain.answer)
            .arg(grain.confidence.to_string())
            .arg(grain.source.as_deref().unwrap_or(""))
            .arg(&now)
            .arg(grain.created_at.as_deref().unwrap_or(&now))
            .arg(grain.hits)
            .arg(match if_exists {
                IfExists::Replace => "replace",
                IfExists::Keep => "keep",
            })
            .arg(grain.from_fact.as_deref().unwrap_or(""))
            .arg(self.keys.grain_prefix())
            .arg(self.limits().feed_max_len);
        Ok((invocation, match_key))
    }

    /// Maps a grain script's error: a wrong-typed key names the key.
    fn script_error(&self, err: redis::RedisError, fact_id: &str) -> BlackboardError {
        wrong_type_key(
            err,
            &[
                (self.keys.grain(fact_id), "hash"),
                (self.keys.question_index(), "hash"),
                (self.keys.grain_ids(), "set"),
                (self.keys.crystallized(), "sorted set"),
                (self.keys.feed(), "stream"),
            ],
        )
    }

    /// Finds the grain layer0 would answer `text` with, without aliases:
    /// [`Self::lookup_grain_with`] and no alias. `None` is a miss
    /// (confidence 0); a hit carries the grain's own confidence, which the
    /// caller compares with its threshold. No round trip at all when `text`
    /// has no content word.
    ///
    /// An index entry that is not the JSON Kitbash writes is
    /// [`BlackboardError::MalformedGrain`] naming the index and the match key.
    pub async fn lookup_grain(&self, text: &str) -> Result<Option<GrainMatch>> {
        self.lookup_grain_with(text, &Aliases::default()).await
    }

    /// [`Self::lookup_grain`] for a match key computed already.
    pub async fn lookup_match_key(&self, match_key: &MatchKey) -> Result<Option<GrainMatch>> {
        if match_key.is_empty() {
            return Ok(None);
        }
        let partition = self.keys.partition_of(match_key.as_str());
        let index = self.keys.question_index_of(match_key.as_str());
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn
            .hget(&index, match_key.as_str())
            .await
            .map_err(|e| BlackboardError::on_key(e, &index, "hash"))?;
        let found = raw
            .map(|raw| parse_entry(&index, match_key.as_str(), &raw))
            .transpose()?;
        Ok(found
            .filter(|m| !m.expired_at(now_ms()))
            .map(|m| GrainMatch { partition, ..m }))
    }

    /// What layer0 answers `text` with: the grain of its match key, or,
    /// when there is none, the one grain that the second-stage keys
    /// ([`second_stage_keys`]: aliases replaced, attribute fillers dropped)
    /// agree on. One HGET for a question whose key is a grain's; one HMGET
    /// more when it misses and a second-stage key differs from it.
    pub async fn lookup_grain_with(
        &self,
        text: &str,
        aliases: &Aliases,
    ) -> Result<Option<GrainMatch>> {
        let exact = normalize(text);
        if exact.is_empty() {
            return Ok(None);
        }
        if let Some(m) = self.lookup_match_key(&exact).await? {
            return Ok(Some(m));
        }
        let keys = second_stage_keys(text, &exact, aliases);
        if keys.is_empty() {
            return Ok(None);
        }
        // One HMGET per partition the keys fall in (one on one server).
        let mut groups: Vec<(usize, Vec<&str>)> = Vec::new();
        for key in &keys {
            let p = self.keys.partition_of(key.as_str());
            match groups.iter_mut().find(|(q, _)| *q == p) {
                Some((_, fields)) => fields.push(key.as_str()),
                None => groups.push((p, vec![key.as_str()])),
            }
        }
        let mut found = Vec::new();
        let now = now_ms();
        for (p, fields) in groups {
            let index = self.keys.partition(p).question_index();
            let mut conn = self.conn.clone();
            let raw: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&index)
                .arg(&fields)
                .query_async(&mut conn)
                .await
                .map_err(|e| BlackboardError::on_key(e, &index, "hash"))?;
            for (key, raw) in fields.iter().zip(raw) {
                if let Some(raw) = raw {
                    let m = parse_entry(&index, key, &raw)?;
                    if !m.expired_at(now) {
                        found.push(GrainMatch { partition: p, ..m });
                    }
                }
            }
        }
        Ok(agreed(found))
    }

    /// Adds "one more hit" for a grain to `tally` (an HINCRBY when it is
    /// written), so the daemon counts layer0 hits in its finishing
    /// pipeline instead of a round trip of its own. Should the grain be
    /// deleted between the lookup and the pipeline, this leaves a hash with
    /// only `hits` under its key; it is in no index, so nothing reads it, and
    /// a later store of the same id keeps that count. For a crystallised
    /// grain the expiry is set on a hash that has none (`PEXPIREAT … NX`,
    /// Redis 7), so such a leftover expires when the grain would have.
    pub fn add_grain_hit_to(&self, tally: &mut Tally, m: &GrainMatch) {
        let key = self.keys.grain_in(m.partition, &m.fact_id);
        tally.incr(&key, "hits", 1);
        if let Some(c) = &m.crystallized {
            tally.expire_at_nx(&key, c.expires_ms);
        }
    }

    /// Reads one grain; `None` when there is none. In cluster mode the id
    /// alone does not say which partition keeps it: every one is asked, at
    /// once.
    pub async fn get_grain(&self, fact_id: &str) -> Result<Option<Grain>> {
        let parts = self.partitions();
        let reads = parts.iter().map(|here| here.get_grain_here(fact_id));
        for found in futures_util::future::join_all(reads).await {
            if let Some(g) = found? {
                return Ok(Some(g));
            }
        }
        Ok(None)
    }

    async fn get_grain_here(&self, fact_id: &str) -> Result<Option<Grain>> {
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

    /// Deletes a grain and its question index entry (unless another grain
    /// took that entry over), in one Lua script; returns whether there was
    /// a grain. A key of another type under the grain's name is deleted too.
    /// In cluster mode it is deleted from every partition that has it.
    pub async fn delete_grain(&self, fact_id: &str) -> Result<bool> {
        let parts = self.partitions();
        let deletes = parts.iter().map(|here| here.delete_grain_here(fact_id));
        let mut deleted = false;
        for d in futures_util::future::join_all(deletes).await {
            deleted |= d?;
        }
        Ok(deleted)
    }

    async fn delete_grain_here(&self, fact_id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let deleted: u64 = DELETE_GRAIN
            .key(self.keys.grain(fact_id))
            .key(self.keys.question_index())
            .key(self.keys.grain_ids())
            .key(self.keys.crystallized())
            .arg(fact_id)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.script_error(e, fact_id))?;
        Ok(deleted > 0)
    }

    /// Number of grains (O(1) per partition).
    pub async fn count_grains(&self) -> Result<u64> {
        let mut total = 0;
        for here in self.partitions() {
            let key = here.keys.grain_ids();
            let mut conn = self.conn.clone();
            let n: u64 = conn
                .scard(&key)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "set"))?;
            total += n;
        }
        Ok(total)
    }

    /// Fact ids of up to `limit` grains, by SSCAN over the index, sorted.
    pub async fn list_grain_ids(&self, limit: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for here in self.partitions() {
            out.extend(here.list_grain_ids_here(limit).await?);
        }
        out.sort();
        out.dedup();
        out.truncate(limit);
        Ok(out)
    }

    async fn list_grain_ids_here(&self, limit: usize) -> Result<Vec<String>> {
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
        let mut out = Vec::new();
        for here in self.partitions() {
            let ids = here.list_grain_ids_here(limit).await?;
            out.extend(here.get_grains(&ids).await?);
        }
        out.sort_by(|a, b| a.fact_id.cmp(&b.fact_id));
        out.truncate(limit);
        Ok(out)
    }

    /// The grains of `ids` that exist in the current partition, read
    /// pipelined (one round trip per 200). A grain that cannot be read is
    /// skipped with a warning; an id whose hash is gone is dropped from the
    /// index.
    pub(crate) async fn get_grains(&self, ids: &[String]) -> Result<Vec<Grain>> {
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
                Err(e) if crate::store::blackboard::is_wrong_type(&e) => {
                    for id in chunk {
                        match self.get_grain_here(id).await {
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

    #[cfg(any(test, feature = "test-util"))]
    /// Adds one to a grain's hit count.
    pub async fn record_grain_hit(&self, fact_id: &str) -> Result<u64> {
        let mut home = self.clone();
        for here in self.partitions() {
            if here.get_grain_here(fact_id).await?.is_some() {
                home = here;
                break;
            }
        }
        let key = home.keys.grain(fact_id);
        let mut conn = self.conn.clone();
        conn.hincr(&key, "hits", 1)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "hash"))
    }
}

/// A script's error: for a wrong-typed key (`check_types` in
/// `grain_helpers.lua` names it `key N`), the key and what it should hold,
/// from `keys` (`KEYS` in order); any other error as it is.
pub(crate) fn wrong_type_key(
    err: redis::RedisError,
    keys: &[(String, &'static str)],
) -> BlackboardError {
    if !crate::store::blackboard::is_wrong_type(&err) {
        return BlackboardError::Redis(err);
    }
    let text = err.to_string();
    let (key, expected) = keys
        .iter()
        .enumerate()
        .find(|(i, _)| text.contains(&format!("key {} holds", i + 1)))
        .or_else(|| keys.first().map(|k| (0, k)))
        .map(|(_, (k, e))| (k.clone(), *e))
        .unwrap_or_default();
    BlackboardError::WrongType { key, expected }
}

fn stored_grain(grain: &Grain, match_key: MatchKey, reply: (String, String)) -> StoredGrain {
    let (status, displaced) = reply;
    StoredGrain {
        fact_id: grain.fact_id.clone(),
        match_key,
        status: if status == "kept" {
            StoreStatus::Kept
        } else {
            StoreStatus::Stored
        },
        displaced: Some(displaced).filter(|d| !d.is_empty()),
    }
}
