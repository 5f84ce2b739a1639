//! The typed, async view of everything Kitbash keeps in Redis.
//!
//! [`Blackboard`] holds the shared connection and the key schema. Its methods
//! are grouped by area over several files: query states, the queue and
//! health here; grains in `grains.rs`; the diagnostic feed in `feed.rs`;
//! metrics and per-layer counters in `metrics.rs`; bounding in `maintain`.

use std::time::Duration;

use crate::store::connection::RedisConn;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::state::{QueryState, now_rfc3339};
use crate::store::keys::Keys;

/// Errors of Blackboard operations. Bad data in Redis is a typed error,
/// never a panic.
#[derive(Debug, thiserror::Error)]
pub enum BlackboardError {
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A key holds another type than Kitbash writes there.
    #[error(
        "key {key} holds the wrong kind of value (expected {expected}); was it written by something else?"
    )]
    WrongType {
        /// The key.
        key: String,
        /// What Kitbash expected there.
        expected: &'static str,
    },
    /// A query state is not the JSON Kitbash expects.
    #[error("query state at {key} is not valid: {reason}")]
    MalformedState {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A grain hash misses fields or holds bad values.
    #[error("grain at {key} is not valid: {reason}")]
    MalformedGrain {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A health record is not valid JSON.
    #[error("health record at {key} is not valid: {reason}")]
    MalformedHealth {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The state to update does not exist (never created, or expired).
    #[error("no query state at {key}")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Concurrent writers kept changing a state; the update gave up.
    #[error("query state at {key} kept changing under {attempts} update attempts")]
    Conflict {
        /// The key.
        key: String,
        /// How often the update was tried.
        attempts: u32,
    },
    /// An enqueue was written on the primary but fewer replicas than
    /// `redis.wait_replicas` confirmed it within `redis.wait_timeout_ms`:
    /// the query is queued, but a failover now could lose it.
    #[error(
        "the query is queued, but {acked} of {wanted} replicas confirmed it within redis.wait_timeout_ms; a failover now could lose it"
    )]
    NotReplicated {
        /// Replicas that confirmed.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
    /// The queue is at `orchestrator.max_queue_len`.
    #[error(
        "the {lane} lane holds {len} queries, at its limit of {max} (orchestrator.lanes.{lane}.max_queue_len, else orchestrator.max_queue_len); try again later or raise the limit"
    )]
    QueueFull {
        /// The lane that is full.
        lane: Lane,
        /// Current length (in cluster mode, the query's partition's length
        /// times the partition count: an estimate).
        len: u64,
        /// The configured limit.
        max: u64,
    },
}

impl BlackboardError {
    /// Maps a WRONGTYPE reply on `key` to [`BlackboardError::WrongType`].
    pub(crate) fn on_key(err: redis::RedisError, key: &str, expected: &'static str) -> Self {
        if is_wrong_type(&err) {
            BlackboardError::WrongType {
                key: key.to_string(),
                expected,
            }
        } else {
            BlackboardError::Redis(err)
        }
    }
}

/// Whether Redis answered WRONGTYPE, alone or inside a pipeline's failures.
pub(crate) fn is_wrong_type(err: &redis::RedisError) -> bool {
    err.code() == Some("WRONGTYPE") || err.to_string().contains("WRONGTYPE")
}

/// Result of Blackboard operations.
pub type Result<T, E = BlackboardError> = std::result::Result<T, E>;

use crate::store::lanes::Lane;
use crate::store::scripts::CAS_STATE;

/// The limits the Blackboard applies to what it writes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Seconds a state lives after its last write.
    pub state_ttl_s: u64,
    /// Seconds a completion signal lives.
    pub done_ttl_s: u64,
    /// Queue length past which enqueue refuses (the default of every lane).
    pub max_queue_len: u64,
    /// Each lane's own limit, in [`Lane::ALL`]'s order.
    pub lane_max_queue_len: [u64; 4],
    /// Each lane's minimum share of the takes, in [`Lane::ALL`]'s order.
    pub lane_min_share: [f64; 4],
    /// Replicas an enqueue waits for (`WAIT`; 0: none), shared by the
    /// clones of a Blackboard. Resolved from `redis.wait_replicas` by
    /// [`Blackboard::resolve_wait_replicas`].
    pub wait_replicas: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// How long an enqueue waits for them, in milliseconds.
    pub wait_timeout_ms: u64,
    /// Approximate cap of the feed.
    pub feed_max_len: u64,
    /// Clock slack around a query's life when reading its timeline.
    pub timeline_slack_ms: u64,
    /// Age past which metric samples are dropped.
    pub metric_retention_s: u64,
    /// Most samples per metric.
    pub metric_max_samples: u64,
}

impl From<&Settings> for Limits {
    fn from(s: &Settings) -> Self {
        Self {
            state_ttl_s: s.orchestrator.state_ttl_s,
            done_ttl_s: s.orchestrator.done_ttl_s,
            max_queue_len: s.orchestrator.max_queue_len,
            lane_max_queue_len: Lane::ALL.map(|l| {
                s.orchestrator
                    .lanes
                    .of(l)
                    .max_queue_len
                    .unwrap_or(s.orchestrator.max_queue_len)
            }),
            lane_min_share: Lane::ALL.map(|l| s.orchestrator.lanes.of(l).min_share),
            feed_max_len: s.feed.max_len,
            timeline_slack_ms: s.feed.timeline_slack_ms,
            metric_retention_s: s.metrics.retention_s,
            metric_max_samples: s.metrics.max_samples,
            wait_replicas: std::sync::Arc::new(s.redis.wait_replicas.unwrap_or(0).into()),
            wait_timeout_ms: s.redis.wait_timeout_ms,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&Settings::default())
    }
}

/// Liveness and counters of one daemon or worker, at `<p>:health:<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Instance or worker name (the key's suffix).
    pub name: String,
    /// `daemon` or `worker`.
    pub role: ProcessRole,
    /// Worker kind (`bitnet`, `cartridge`, `llm`), for workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Layer served, for workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Whether it can do its work now (a worker whose backend is down is not).
    pub healthy: bool,
    /// Process id.
    #[serde(default)]
    pub pid: u32,
    /// When it started (RFC 3339).
    #[serde(default)]
    pub started_at: String,
    /// When it last wrote this record (RFC 3339).
    #[serde(default)]
    pub updated_at: String,
    /// Why it is unhealthy, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Counters (jobs done, failed, mean latency, in flight, …).
    #[serde(default)]
    pub counters: serde_json::Map<String, serde_json::Value>,
    /// For daemons: the layers for which this daemon last saw a live,
    /// healthy worker (its worker directory), so tests and operators can
    /// tell when a new worker is in use. Omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live_layers: Vec<String>,
    /// For workers: whether it takes from its layer's priority job lists
    /// (`<p>:jobs:<layer>:<lane>`), so daemons may push there. A worker
    /// that knows no lanes omits it and gets every job on `<p>:jobs:<layer>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lanes: bool,
}

/// What kind of process a health record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessRole {
    /// `kitbash serve` (or the REPL's direct mode).
    Daemon,
    /// `kitbash worker <kind>`.
    Worker,
    /// A role this version does not know (written by another program).
    #[serde(other)]
    Other,
}

impl Health {
    /// A healthy record for `name` in `role`, stamped now.
    pub fn new(name: impl Into<String>, role: ProcessRole) -> Self {
        let now = now_rfc3339();
        Self {
            name: name.into(),
            role,
            kind: None,
            layer: None,
            healthy: true,
            pid: std::process::id(),
            started_at: now.clone(),
            updated_at: now,
            reason: None,
            counters: Default::default(),
            live_layers: Vec::new(),
            lanes: false,
        }
    }
}

/// The handle on Kitbash's Redis data. Cheap to clone.
#[derive(Clone)]
pub struct Blackboard {
    pub(crate) conn: RedisConn,
    pub(crate) keys: Keys,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Blackboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blackboard")
            .field("prefix", &self.keys.prefix())
            .field("limits", &self.limits)
            .finish()
    }
}

/// Most attempts of one compare-and-set update before giving up.
const MAX_CAS_ATTEMPTS: u32 = 64;

impl Blackboard {
    /// A Blackboard over `conn`, naming keys with `keys`.
    pub fn new(conn: RedisConn, keys: Keys, limits: Limits) -> Self {
        Self { conn, keys, limits }
    }

    /// A Blackboard configured from `settings`.
    pub fn from_settings(conn: RedisConn, settings: &Settings) -> Self {
        Self::new(conn, settings.redis.keys(), Limits::from(settings))
    }

    /// Resolves `redis.wait_replicas` when it is unset (`null`, "auto"):
    /// 1 when every primary serving slots has a replica now (`CLUSTER
    /// NODES`), or, on one server, when it has a connected replica
    /// (`ROLE`); else 0. A set value is kept. Clients call it once
    /// when they connect.
    ///
    /// A client resolves it again when an enqueue was not confirmed (a
    /// primary lost its replica, as the replica promoted by a failover has
    /// none): enqueues then stop waiting, rather than each waiting
    /// `redis.wait_timeout_ms` for a replica that is not there.
    pub async fn resolve_wait_replicas(&self, configured: Option<u32>) -> Result<u32> {
        let n = match configured {
            Some(n) => n,
            None => {
                let mut conn = self.conn.clone();
                match crate::store::connection::every_primary_has_a_replica(&mut conn).await {
                    Ok(has) => u32::from(has),
                    Err(e)
                        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) =>
                    {
                        tracing::warn!(
                            "cannot tell whether the primaries have replicas ({e}); enqueues do not wait for one: set redis.wait_replicas"
                        );
                        0
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        self.limits
            .wait_replicas
            .store(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    /// Replicas an enqueue waits for now.
    pub fn wait_replicas(&self) -> u32 {
        self.limits
            .wait_replicas
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The same Blackboard with partition `p` as its keys' current one
    /// (see [`Keys::partition`]); the connection is shared.
    pub fn partition(&self, p: usize) -> Self {
        Self {
            conn: self.conn.clone(),
            keys: self.keys.partition(p),
            limits: self.limits.clone(),
        }
    }

    /// The same keys and limits over another connection.
    pub(crate) fn with_connection(&self, conn: RedisConn) -> Self {
        Self {
            conn,
            keys: self.keys.clone(),
            limits: self.limits.clone(),
        }
    }

    /// One Blackboard per partition (one on one server).
    pub fn partitions(&self) -> Vec<Self> {
        (0..self.keys.partitions())
            .map(|p| self.partition(p))
            .collect()
    }

    /// The key schema.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The limits applied.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A clone of the shared connection, for pipelines of callers.
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    // ----- query states ---------------------------------------------------

    fn encode(state: &QueryState) -> String {
        serde_json::to_string(state).expect("a QueryState always serializes")
    }

    fn decode(key: &str, raw: &str) -> Result<QueryState> {
        serde_json::from_str(raw).map_err(|e| BlackboardError::MalformedState {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Writes a new state; returns false (and writes nothing) when one
    /// exists already under that id.
    pub async fn create_state(&self, state: &QueryState) -> Result<bool> {
        let key = self.keys.state(&state.query_id);
        let mut conn = self.conn.clone();
        let created: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(Self::encode(state))
            .arg("NX")
            .arg("EX")
            .arg(self.limits.state_ttl_s)
            .query_async(&mut conn)
            .await?;
        Ok(created.is_some())
    }

    /// Reads a state; `None` when there is none.
    pub async fn get_state(&self, query_id: &str) -> Result<Option<QueryState>> {
        let key = self.keys.state(query_id);
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn
            .get(&key)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "string"))?;
        raw.map(|raw| Self::decode(&key, &raw)).transpose()
    }

    /// The states of `ids` in one MGET (split by slot in cluster mode), in
    /// order; `None` for one that is gone or is not valid JSON (a list
    /// shows what it can read).
    pub async fn get_states_lenient(&self, ids: &[String]) -> Result<Vec<Option<QueryState>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.state(id)).collect();
        let mut conn = self.conn.clone();
        let raw: Vec<Option<String>> = conn
            .mget(&keys)
            .await
            .map_err(|e| BlackboardError::on_key(e, &keys[0], "string"))?;
        Ok(raw
            .into_iter()
            .map(|r| r.and_then(|r| serde_json::from_str(&r).ok()))
            .collect())
    }

    /// Reads a state's raw JSON, as stored.
    pub async fn get_state_raw(&self, query_id: &str) -> Result<Option<String>> {
        let key = self.keys.state(query_id);
        let mut conn = self.conn.clone();
        conn.get(&key)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "string"))
    }

    /// Changes a state atomically: reads it, applies `change`, and writes it
    /// back only if nobody wrote it in between (compare-and-set in Lua),
    /// retrying otherwise. Concurrent updaters never lose each other's change.
    /// `change` may run several times and must not have side effects.
    pub async fn update_state<F>(&self, query_id: &str, mut change: F) -> Result<QueryState>
    where
        F: FnMut(&mut QueryState),
    {
        let key = self.keys.state(query_id);
        let mut conn = self.conn.clone();
        for attempt in 1..=MAX_CAS_ATTEMPTS {
            let raw: Option<String> = conn
                .get(&key)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "string"))?;
            let Some(raw) = raw else {
                return Err(BlackboardError::NotFound { key });
            };
            let mut state = Self::decode(&key, &raw)?;
            change(&mut state);
            let written: i64 = CAS_STATE
                .key(&key)
                .arg(&raw)
                .arg(Self::encode(&state))
                .arg(self.limits.state_ttl_s)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "string"))?;
            if written == 1 {
                return Ok(state);
            }
            // Someone wrote in between: back off a little, then re-read.
            if attempt > 4 {
                tokio::time::sleep(Duration::from_micros(50 * u64::from(attempt))).await;
            }
        }
        Err(BlackboardError::Conflict {
            key,
            attempts: MAX_CAS_ATTEMPTS,
        })
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Deletes a state; returns whether there was one.
    pub async fn delete_state(&self, query_id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let n: u64 = conn.del(self.keys.state(query_id)).await?;
        Ok(n > 0)
    }

    // ----- the queue ------------------------------------------------------

    /// Writes a new query's state and pushes its id to its priority's lane
    /// (the state's `priority`; `normal` without one), in one MULTI.
    /// Refuses when that lane is at its limit (a check that may overshoot
    /// by the number of clients enqueueing at the same instant); a flood of
    /// one lane never makes another refuse.
    ///
    /// In cluster mode the query goes to its partition's queue, and the
    /// limit applies to each partition's queue as its share of
    /// `max_queue_len` (rounded up): one LLEN, not one per partition.
    pub async fn enqueue(&self, state: &QueryState) -> Result<()> {
        let keys = self.keys.for_query(&state.query_id);
        let lane = state.lane();
        let queue = keys.lane(lane);
        let mut conn = self.conn.clone();
        let len: u64 = conn
            .llen(&queue)
            .await
            .map_err(|e| BlackboardError::on_key(e, &queue, "list"))?;
        let limit = self.limits.lane_max_queue_len[lane.index()];
        let max = limit.div_ceil(keys.partitions() as u64);
        if len >= max {
            return Err(BlackboardError::QueueFull {
                lane,
                len: len * keys.partitions() as u64,
                max: limit,
            });
        }
        let state_key = self.keys.state(&state.query_id);
        let encoded = Self::encode(state);
        let ttl = self.limits.state_ttl_s;
        let wanted = self.wait_replicas();
        // The state, the push and (for a lane an idle daemon does not block
        // on) one token on the bell, in one MULTI.
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI")
            .ignore()
            .set_ex(&state_key, &encoded, ttl)
            .ignore();
        crate::store::lanes::push_entry(&mut pipe, &keys, lane, &state.query_id);
        pipe.cmd("EXEC").ignore();
        if wanted == 0 {
            let _: () = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| BlackboardError::on_key(e, &queue, "list"))?;
            return Ok(());
        }
        // The same round trip: MULTI … EXEC, then WAIT on that primary.
        let (acked,): (u32,) = pipe
            .cmd("WAIT")
            .arg(wanted)
            .arg(self.limits.wait_timeout_ms)
            .query_async(&mut conn)
            .await
            .map_err(|e| BlackboardError::on_key(e, &queue, "list"))?;
        if acked < wanted {
            return Err(BlackboardError::NotReplicated { acked, wanted });
        }
        Ok(())
    }

    /// Number of queries waiting, in every lane and partition.
    pub async fn queue_len(&self) -> Result<u64> {
        Ok(self.queue_len_by_lane().await?.iter().sum())
    }

    /// Queries waiting in each lane ([`Lane::ALL`]'s order), summed over
    /// the partitions; the lists are read together.
    pub async fn queue_len_by_lane(&self) -> Result<[u64; 4]> {
        let lists: Vec<(usize, String)> = self
            .keys
            .all_partitions()
            .iter()
            .flat_map(|k| Lane::ALL.map(|l| (l.index(), k.lane(l))))
            .collect();
        let reads = lists.iter().map(|(_, list)| {
            let mut conn = self.conn.clone();
            async move {
                conn.llen::<_, u64>(list)
                    .await
                    .map_err(|e| BlackboardError::on_key(e, list, "list"))
            }
        });
        let mut total = [0; 4];
        for ((lane, _), len) in lists
            .iter()
            .zip(futures_util::future::join_all(reads).await)
        {
            total[*lane] += len?;
        }
        Ok(total)
    }

    #[cfg(any(test, feature = "test-util"))]
    /// `LRANGE start stop` of one list per partition (`list` names it),
    /// concatenated in partition order.
    async fn lrange_each(
        &self,
        list: fn(&Keys) -> String,
        start: isize,
        stop: isize,
        reverse: bool,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for keys in self.keys.all_partitions() {
            let key = list(&keys);
            let mut conn = self.conn.clone();
            let mut entries: Vec<String> = conn
                .lrange(&key, start, stop)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "list"))?;
            if reverse {
                entries.reverse();
            }
            out.extend(entries);
        }
        Ok(out)
    }

    #[cfg(any(test, feature = "test-util"))]
    /// The next `n` entries to be taken, next first (the queue is FIFO:
    /// LPUSH at the head, taken from the tail).
    pub async fn peek_queue(&self, n: usize) -> Result<Vec<String>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut out = self
            .lrange_each(Keys::queue, -(n as isize), -1, true)
            .await?;
        out.truncate(n);
        Ok(out)
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Entries in the dead-letter list, newest first.
    pub async fn dead_entries(&self, n: usize) -> Result<Vec<String>> {
        let mut out = self
            .lrange_each(Keys::dead, 0, n as isize - 1, false)
            .await?;
        out.truncate(n);
        Ok(out)
    }

    // ----- health ---------------------------------------------------------

    /// Writes a health record that expires after `ttl` unless rewritten.
    pub async fn set_health(&self, health: &Health, ttl: Duration) -> Result<()> {
        let key = self.keys.health(&health.name);
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(health).expect("Health always serializes");
        let _: () = conn
            .pset_ex(&key, json, ttl.as_millis().max(1) as u64)
            .await?;
        Ok(())
    }

    /// Reads one health record; `None` when it expired (= dead).
    pub async fn get_health(&self, name: &str) -> Result<Option<Health>> {
        let key = self.keys.health(name);
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn
            .get(&key)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "string"))?;
        raw.map(|raw| {
            serde_json::from_str(&raw).map_err(|e| BlackboardError::MalformedHealth {
                key: key.clone(),
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    /// Removes a health record (a clean shutdown says goodbye at once).
    pub async fn remove_health(&self, name: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: u64 = conn.del(self.keys.health(name)).await?;
        Ok(())
    }

    /// Every live health record. Records that cannot be read are skipped
    /// with a warning, so one bad key does not hide the others.
    pub async fn list_health(&self) -> Result<Vec<Health>> {
        let keys = self.scan_keys(&self.keys.health_pattern()).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            // MGET answers nil for a key of another type, so one bad key
            // cannot fail the whole read.
            let values: Vec<Option<String>> =
                redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
            for (key, value) in chunk.iter().zip(values) {
                let Some(raw) = value else { continue };
                match serde_json::from_str::<Health>(&raw) {
                    Ok(h) => out.push(h),
                    Err(e) => tracing::warn!(key = %key, "skipping unreadable health record: {e}"),
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Whether at least one healthy worker serves `layer`.
    pub async fn layer_has_live_worker(&self, layer: &str) -> Result<bool> {
        Ok(self.list_health().await?.iter().any(|h| {
            h.role == ProcessRole::Worker && h.healthy && h.layer.as_deref() == Some(layer)
        }))
    }

    // ----- helpers --------------------------------------------------------

    /// Every key matching `pattern`, by SCAN (never KEYS); in cluster mode
    /// on every primary in turn, since each holds only its own slots.
    pub async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        if conn.is_cluster() {
            for node in conn.primaries().await? {
                let mut cursor = 0u64;
                loop {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let (next, batch): (u64, Vec<String>) = conn.on_node(Some(&node), &cmd).await?;
                    out.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        } else {
            let opts = redis::ScanOptions::default()
                .with_pattern(pattern)
                .with_count(1000);
            let mut keys = conn.scan_options::<String>(opts).await?;
            while let Some(key) = keys.next_item().await {
                out.push(key?);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Deletes every key under the prefix (tests and `kitbash bench` clean up
    /// with this). Returns how many were deleted.
    pub async fn delete_all(&self) -> Result<u64> {
        let keys = self.scan_keys(&self.keys.all_pattern()).await?;
        let mut conn = self.conn.clone();
        let mut deleted = 0;
        for chunk in keys.chunks(500) {
            let n: u64 = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
            deleted += n;
        }
        Ok(deleted)
    }
}
