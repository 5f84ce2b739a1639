//! `kitbash bench`: a load generator and report, run against a live
//! deployment (one or more `kitbash serve`, and workers for worker mixes).
//!
//! It writes queries the way any client does (state + LPUSH), then reads
//! the outcomes back from the states. Latency is enqueue → terminal state
//! (`completed_at` minus the time the query was *meant* to be sent: in paced
//! mode a stalled sender does not hide a stall, the coordinated-omission
//! trap). Redis commands and CPU per query come from `INFO commandstats` and
//! `INFO cpu` deltas; daemon CPU and peak RSS from `/proc/<pid>` of the
//! daemons whose health records name a pid on this machine. Its queries
//! are marked as benchmark traffic (`metadata.bench: true`), so daemons keep
//! their counters and latency samples apart from the deployment's
//! statistics. Everything the bench wrote (states, completion signals, its
//! grains, those counters and samples) is deleted at the end.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::store::connection::RedisConn;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::layer0::grains::{Grain, IfExists};
use crate::observe::metrics::{BENCH_MARK, bench_scoped, layer_latency_metric, quantile};
use crate::state::{QueryState, QueryStatus, parse_timestamp};
use crate::store::blackboard::{Blackboard, BlackboardError, ProcessRole};
use crate::store::lanes::{Lane, push_entry};

/// How queries are sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Push all N at once, then drain.
    Backlog,
    /// Open loop at `rate` per second.
    Paced,
}

/// Options of one bench run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Backlog or paced.
    pub mode: Mode,
    /// Queries to send.
    pub n: usize,
    /// Queries per second (paced mode).
    pub rate: f64,
    /// Fraction of queries that a bench grain answers at layer0; the rest
    /// match no grain and escalate to the worker layers.
    pub layer0_ratio: f64,
    /// Distinct bench grains to load (and ask about).
    pub grains: usize,
    /// Longest wait for the outcomes after the last send.
    pub drain_timeout: Duration,
    /// Questions to ask instead of bench grains and escalations: query i
    /// asks one drawn from a Zipf distribution over them (see [`zipf_draws`]).
    pub questions: Vec<String>,
    /// The Zipf exponent `s`: the question of rank k is drawn with
    /// probability proportional to 1/k^s.
    pub zipf_s: f64,
    /// Report per window of this many queries (send order); 0: no windows.
    pub window: usize,
    /// The grain layers' names (the rest are worker layers, whose
    /// non-skipped attempts are the windows' worker calls).
    pub grain_layers: Vec<String>,
    /// Each lane's share of the queries ([`Lane::ALL`]'s order; all
    /// `normal` by default); query i's lane is drawn deterministically.
    pub priority_mix: [f64; 4],
}

/// The lane of each of `n` queries for `mix` (shares in [`Lane::ALL`]'s
/// order, summing to 1): query i goes to the lane whose running count is
/// furthest behind its share, so any prefix holds the mix.
pub fn lanes_for(n: usize, mix: [f64; 4]) -> Vec<Lane> {
    let mut counts = [0usize; 4];
    (0..n)
        .map(|i| {
            let lane = (0..4)
                .filter(|l| mix[*l] > 0.0)
                .max_by(|a, b| {
                    let behind = |l: usize| mix[l] * (i + 1) as f64 - counts[l] as f64;
                    behind(*a).total_cmp(&behind(*b))
                })
                .unwrap_or(Lane::Normal.index());
            counts[lane] += 1;
            Lane::ALL[lane]
        })
        .collect()
}

/// `n` question ranks in `0..m` drawn from a Zipf distribution with
/// exponent `s`, from a fixed seed (the same run every time).
pub fn zipf_draws(n: usize, m: usize, s: f64) -> Vec<usize> {
    if m == 0 {
        return Vec::new();
    }
    let mut cdf = Vec::with_capacity(m);
    let mut total = 0.0;
    for k in 1..=m {
        total += 1.0 / (k as f64).powf(s);
        cdf.push(total);
    }
    // xorshift64*: deterministic, and plenty for picking ranks.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let u = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|&c| c < u * total).min(m - 1)
        })
        .collect()
}

/// One window of queries in send order.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Index of its first query.
    pub first: usize,
    /// Queries in it that finished.
    pub completed: usize,
    /// Share of those a grain layer answered.
    pub grain_share: f64,
    /// Share answered by any layer.
    pub answered_share: f64,
    /// Jobs handed to worker layers (attempts not skipped).
    pub worker_calls: usize,
    /// End-to-end latency, ms.
    pub end_to_end_ms: Latency,
}

/// Percentiles of one latency population, in ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Self {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: quantile(&v, 0.5),
            p95: quantile(&v, 0.95),
            p99: quantile(&v, 0.99),
            p999: quantile(&v, 0.999),
            max: v[v.len() - 1],
        }
    }
}

/// What a bench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The mode.
    pub mode: Mode,
    /// Queries sent.
    pub sent: usize,
    /// Queries that reached a terminal state in time.
    pub completed: usize,
    /// Of those: answered, unanswered, failed.
    pub by_status: HashMap<String, usize>,
    /// Queries per second written into Redis.
    pub enqueue_rate: f64,
    /// Queries per second completed, first send to last completion.
    pub throughput: f64,
    /// Enqueue (intended send) → terminal state.
    pub end_to_end_ms: Latency,
    /// The same per priority lane, for the lanes the mix sent to (with
    /// `--priority-mix`).
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub end_to_end_ms_by_lane: HashMap<String, Latency>,
    /// Per-layer attempt latency.
    pub layer_ms: HashMap<String, Latency>,
    /// Redis commands per completed query (all clients: daemon, workers, bench).
    pub redis_commands_per_query: f64,
    /// Redis CPU microseconds per completed query (summed over a cluster's
    /// primaries).
    pub redis_cpu_us_per_query: f64,
    /// In cluster mode: each primary (address) and its share of the
    /// commands, in percent. Empty for one server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redis_command_share: Vec<(String, f64)>,
    /// Daemon CPU milliseconds per 1,000 queries (daemons on this machine).
    pub daemon_cpu_ms_per_1k: Option<f64>,
    /// Largest peak RSS among those daemons, in MB.
    pub daemon_peak_rss_mb: Option<f64>,
    /// Daemons seen (with a pid readable here).
    pub daemons: Vec<String>,
    /// Per-window figures, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// Crystallised grains the bench's queries made (removed at the end).
    pub crystallized: usize,
}

/// Errors of a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Redis failed.
    #[error(transparent)]
    Blackboard(#[from] BlackboardError),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Nothing serves the queue.
    #[error(
        "no live daemon (no kitbash:health record with role daemon); start `kitbash serve` first"
    )]
    NoDaemon,
}

struct RedisCounters {
    calls: u64,
    cpu_us: f64,
    /// In cluster mode: each primary's (address, calls).
    per_node: Vec<(String, u64)>,
}

/// Commands and CPU of the server, or summed over a cluster's primaries.
async fn redis_counters(conn: &mut RedisConn) -> Result<RedisCounters, redis::RedisError> {
    let primaries = conn.primaries().await?;
    if primaries.is_empty() {
        return node_counters(conn, None).await;
    }
    let mut total = RedisCounters {
        calls: 0,
        cpu_us: 0.0,
        per_node: Vec::new(),
    };
    for node in &primaries {
        let c = node_counters(conn, Some(node)).await?;
        total.calls += c.calls;
        total.cpu_us += c.cpu_us;
        total.per_node.push((node.to_string(), c.calls));
    }
    Ok(total)
}

/// Each primary's share (percent) of the commands between two readings.
fn command_shares(before: &RedisCounters, after: &RedisCounters) -> Vec<(String, f64)> {
    let deltas: Vec<(String, u64)> = after
        .per_node
        .iter()
        .map(|(node, calls)| {
            let was = before
                .per_node
                .iter()
                .find(|(n, _)| n == node)
                .map_or(0, |(_, c)| *c);
            (node.clone(), calls.saturating_sub(was))
        })
        .collect();
    let sum: u64 = deltas.iter().map(|(_, d)| d).sum();
    deltas
        .into_iter()
        .map(|(node, d)| (node, 100.0 * d as f64 / sum.max(1) as f64))
        .collect()
}

async fn node_counters(
    conn: &mut RedisConn,
    node: Option<&crate::store::connection::ClusterNode>,
) -> Result<RedisCounters, redis::RedisError> {
    let stats: String = conn
        .on_node(node, redis::cmd("INFO").arg("commandstats"))
        .await?;
    let calls = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(|l| {
            l.split(',')
                .find_map(|kv| kv.split_once("calls=").map(|(_, v)| v))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    let cpu: String = conn.on_node(node, redis::cmd("INFO").arg("cpu")).await?;
    let field = |name: &str| -> f64 {
        cpu.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(RedisCounters {
        calls,
        cpu_us: (field("used_cpu_sys:") + field("used_cpu_user:")) * 1e6,
        per_node: Vec::new(),
    })
}

/// CPU time (ms) and peak RSS (kB) of a local process.
fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let u = crate::observe::process::usage(pid)?;
    Some((
        u.cpu.as_secs_f64() * 1000.0,
        u.peak_rss_bytes as f64 / 1024.0,
    ))
}

/// The metadata of every bench query: it names the client and marks the
/// query as benchmark traffic, which daemons count apart from the
/// deployment's own statistics (see [`crate::observe::metrics::bench_scoped`]).
fn bench_metadata() -> serde_json::Value {
    serde_json::json!({"client": "kitbash bench", BENCH_MARK: true})
}

fn bench_question(i: usize) -> String {
    format!("bench question {i} alpha")
}

/// Runs one bench against the deployment behind `bb`.
pub async fn run(bb: &Blackboard, opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let health = bb.list_health().await?;
    let daemons: Vec<_> = health
        .iter()
        .filter(|h| h.role == ProcessRole::Daemon)
        .collect();
    if daemons.is_empty() {
        return Err(BenchError::NoDaemon);
    }
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let grains: Vec<Grain> = (0..opts.grains.max(1))
        .map(|i| {
            let mut g = Grain::new(
                format!("bench-{run_id}-{i}"),
                bench_question(i),
                format!("answer {i}"),
            );
            g.source = Some("kitbash bench".into());
            g
        })
        .collect();
    let own_grains = opts.layer0_ratio > 0.0 && opts.questions.is_empty();
    if own_grains {
        bb.store_grains(&grains, IfExists::Replace).await?;
    }

    let ids: Vec<String> = (0..opts.n).map(|i| format!("bench-{run_id}-{i}")).collect();
    let texts: Vec<String> = if !opts.questions.is_empty() {
        zipf_draws(opts.n, opts.questions.len(), opts.zipf_s)
            .into_iter()
            .map(|k| opts.questions[k].clone())
            .collect()
    } else {
        (0..opts.n)
            .map(|i| {
                // Deterministic mix: query i is a layer0 hit when the running
                // share of hits is below the ratio.
                let hits_before = (i as f64 * opts.layer0_ratio).floor();
                let hits_after = ((i + 1) as f64 * opts.layer0_ratio).floor();
                if hits_after > hits_before {
                    bench_question(i % grains.len())
                } else {
                    format!("bench escalation {i} {run_id} omega")
                }
            })
            .collect()
    };

    let lanes = lanes_for(opts.n, opts.priority_mix);
    let mixed = opts.priority_mix[Lane::Normal.index()] < 1.0;
    let mut conn = bb.connection();
    let pids: Vec<(String, u32)> = daemons.iter().map(|h| (h.name.clone(), h.pid)).collect();
    let proc_before: Vec<Option<(f64, f64)>> = pids.iter().map(|(_, p)| proc_usage(*p)).collect();
    let before = redis_counters(&mut conn).await?;
    let keys = bb.keys().clone();
    let ttl = bb.limits().state_ttl_s;
    let (wait_replicas, wait_ms) = (bb.wait_replicas(), bb.limits().wait_timeout_ms);

    let start = Instant::now();
    let start_wall = Utc::now();
    let mut intended: Vec<DateTime<Utc>> = Vec::with_capacity(opts.n);
    match opts.mode {
        Mode::Backlog => {
            for chunk in (0..opts.n).collect::<Vec<_>>().chunks(1000) {
                // One pipeline per partition (one on one server): a
                // cluster pipeline's keys share a slot.
                let mut pipes = vec![redis::pipe(); keys.partitions()];
                let now = Utc::now();
                for &i in chunk {
                    let mut q = QueryState::with_id(ids[i].clone(), texts[i].clone());
                    q.metadata = bench_metadata();
                    q.set_priority(lanes[i]);
                    let home = keys.for_query(&ids[i]);
                    let pipe = &mut pipes[home.current()];
                    pipe.set_ex(
                        keys.state(&ids[i]),
                        serde_json::to_string(&q).expect("state"),
                        ttl,
                    )
                    .ignore();
                    push_entry(pipe, &home, lanes[i], &ids[i]);
                    intended.push(now);
                }
                if wait_replicas > 0 {
                    for pipe in pipes.iter_mut().filter(|p| !p.is_empty()) {
                        pipe.cmd("WAIT").arg(wait_replicas).arg(wait_ms).ignore();
                    }
                }
                let sends = pipes.iter().filter(|p| !p.is_empty()).map(|p| {
                    let mut c = conn.clone();
                    async move { p.query_async::<()>(&mut c).await }
                });
                for r in futures_util::future::join_all(sends).await {
                    r?;
                }
            }
        }
        Mode::Paced => {
            let every = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
            let t0 = tokio::time::Instant::now();
            let mut inflight = tokio::task::JoinSet::new();
            for i in 0..opts.n {
                let due = t0 + every * i as u32;
                tokio::time::sleep_until(due).await;
                let when =
                    start_wall + chrono::Duration::from_std(every * i as u32).unwrap_or_default();
                intended.push(when);
                let mut q = QueryState::with_id(ids[i].clone(), texts[i].clone());
                q.metadata = bench_metadata();
                let lane = lanes[i];
                q.set_priority(lane);
                let mut c = conn.clone();
                let home = keys.for_query(&ids[i]);
                let state_key = keys.state(&ids[i]);
                inflight.spawn(async move {
                    let mut pipe = redis::pipe();
                    pipe.set_ex(state_key, serde_json::to_string(&q).expect("state"), ttl)
                        .ignore();
                    push_entry(&mut pipe, &home, lane, &q.query_id);
                    if wait_replicas > 0 {
                        pipe.cmd("WAIT").arg(wait_replicas).arg(wait_ms).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await
                });
                while let Some(r) = inflight.try_join_next() {
                    r.expect("send task")?;
                }
            }
            while let Some(r) = inflight.join_next().await {
                r.expect("send task")?;
            }
        }
    }
    let sent_s = start.elapsed().as_secs_f64();

    // Drain cheaply, so the bench's own reads barely show in the Redis
    // figures: wait for the queue to empty and the last query sent to
    // finish, then read every state once (and again only the unfinished).
    let deadline = Instant::now() + opts.drain_timeout;
    while Instant::now() < deadline {
        let len = bb.queue_len().await?;
        if len == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if let Some(last) = ids.last() {
        while Instant::now() < deadline {
            let raw: Option<String> = redis::cmd("GET")
                .arg(keys.state(last))
                .query_async(&mut conn)
                .await?;
            if raw
                .and_then(|r| serde_json::from_str::<QueryState>(&r).ok())
                .is_some_and(|s| s.status.is_terminal())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut outcomes: Vec<Option<QueryState>> = vec![None; opts.n];
    let mut pending: Vec<usize> = (0..opts.n).collect();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for chunk in pending.chunks(2000) {
            // MGET: a cluster client splits it by slot and keeps the order.
            let state_keys: Vec<String> = chunk.iter().map(|&i| keys.state(&ids[i])).collect();
            let raws: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&state_keys)
                .query_async(&mut conn)
                .await?;
            for (&i, raw) in chunk.iter().zip(raws) {
                match raw.and_then(|r| serde_json::from_str::<QueryState>(&r).ok()) {
                    Some(s) if s.status.is_terminal() => outcomes[i] = Some(s),
                    _ => still.push(i),
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let after = redis_counters(&mut conn).await?;
    let proc_after: Vec<Option<(f64, f64)>> = pids.iter().map(|(_, p)| proc_usage(*p)).collect();

    let mut e2e = Vec::with_capacity(opts.n);
    let mut e2e_by_lane: HashMap<String, Vec<f64>> = HashMap::new();
    let windows = if opts.window > 0 {
        windows_of(&outcomes, &intended, opts)
    } else {
        Vec::new()
    };
    let mut per_layer: HashMap<String, Vec<f64>> = HashMap::new();
    let mut layers_seen: BTreeSet<String> = BTreeSet::new();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    let mut last_done: Option<DateTime<Utc>> = None;
    for (i, s) in outcomes.iter().enumerate() {
        let Some(s) = s else { continue };
        *by_status.entry(s.status.to_string()).or_default() += 1;
        if let Some(done) = s.completed_at.as_deref().and_then(parse_timestamp) {
            e2e.push(ms_between(intended[i], done));
            if mixed {
                e2e_by_lane
                    .entry(lanes[i].as_str().to_string())
                    .or_default()
                    .push(ms_between(intended[i], done));
            }
            last_done = Some(last_done.map_or(done, |l: DateTime<Utc>| l.max(done)));
        }
        if s.status != QueryStatus::Failed {
            for a in &s.layer_attempts {
                layers_seen.insert(a.layer.clone());
                if a.outcome != crate::state::Outcome::Skipped {
                    per_layer
                        .entry(a.layer.clone())
                        .or_default()
                        .push(a.latency_ms);
                }
            }
        }
    }
    let completed = e2e.len();
    let span_s = last_done
        .map(|l| (l - start_wall).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .unwrap_or(f64::INFINITY);
    let per_q = |x: f64| {
        if completed == 0 {
            0.0
        } else {
            x / completed as f64
        }
    };
    let (mut cpu_ms, mut rss) = (0.0, 0.0f64);
    let mut seen = Vec::new();
    for ((name, _), (b, a)) in pids.iter().zip(proc_before.iter().zip(&proc_after)) {
        if let (Some(b), Some(a)) = (b, a) {
            cpu_ms += a.0 - b.0;
            rss = rss.max(a.1 / 1024.0);
            seen.push(name.clone());
        }
    }

    // Clean up what the bench wrote.
    // (A many-key DEL: a cluster client splits it by slot.)
    for chunk in ids.chunks(1000) {
        let doomed: Vec<String> = chunk
            .iter()
            .flat_map(|id| [keys.state(id), keys.done(id)])
            .collect();
        let _: u64 = redis::cmd("DEL")
            .arg(&doomed)
            .query_async(&mut conn)
            .await?;
    }
    // The bench's own counters and samples (daemons keep them apart), in
    // every partition.
    let mut doomed = Vec::new();
    for k in keys.all_partitions() {
        doomed.push(k.metric(&layer_latency_metric(&bench_scoped("query"))));
        for layer in &layers_seen {
            let scoped = bench_scoped(layer);
            doomed.push(k.stats(&scoped));
            doomed.push(k.metric(&layer_latency_metric(&scoped)));
        }
    }
    let _: u64 = redis::cmd("DEL")
        .arg(&doomed)
        .query_async(&mut conn)
        .await?;
    if own_grains {
        for g in &grains {
            bb.delete_grain(&g.fact_id).await?;
        }
    }
    // Grains crystallised from the bench's answers go too.
    let prefix = format!("bench-{run_id}-");
    let mut crystallized = 0;
    for g in bb.list_crystallized(usize::MAX >> 1).await? {
        if g.crystallized
            .as_ref()
            .is_some_and(|c| c.query_id.starts_with(&prefix))
        {
            bb.delete_grain(&g.fact_id).await?;
            crystallized += 1;
        }
    }

    Ok(BenchReport {
        mode: opts.mode,
        sent: opts.n,
        completed,
        by_status,
        enqueue_rate: opts.n as f64 / sent_s.max(1e-9),
        throughput: completed as f64 / span_s.max(1e-9),
        end_to_end_ms: Latency::of(e2e),
        end_to_end_ms_by_lane: e2e_by_lane
            .into_iter()
            .map(|(k, v)| (k, Latency::of(v)))
            .collect(),
        layer_ms: per_layer
            .into_iter()
            .map(|(k, v)| (k, Latency::of(v)))
            .collect(),
        redis_commands_per_query: per_q((after.calls - before.calls) as f64),
        redis_cpu_us_per_query: per_q(after.cpu_us - before.cpu_us),
        redis_command_share: command_shares(&before, &after),
        daemon_cpu_ms_per_1k: (!seen.is_empty()).then(|| per_q(cpu_ms) * 1000.0),
        daemon_peak_rss_mb: (!seen.is_empty()).then_some(rss),
        daemons: seen,
        windows,
        crystallized,
    })
}

/// Milliseconds from `from` to `to`.
fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// A finished query's end-to-end latency from its intended send time.
fn end_to_end_ms(s: &QueryState, intended: DateTime<Utc>) -> Option<f64> {
    let done = s.completed_at.as_deref().and_then(parse_timestamp)?;
    Some(ms_between(intended, done))
}

/// The per-window figures of a run.
fn windows_of(
    outcomes: &[Option<QueryState>],
    intended: &[DateTime<Utc>],
    opts: &BenchOptions,
) -> Vec<Window> {
    let mut out = Vec::new();
    for (w, chunk) in outcomes.chunks(opts.window).enumerate() {
        let first = w * opts.window;
        let (mut completed, mut grain, mut answered, mut calls) = (0, 0, 0, 0);
        let mut e2e = Vec::with_capacity(chunk.len());
        for (j, s) in chunk.iter().enumerate() {
            let Some(s) = s else { continue };
            completed += 1;
            if let Some(ms) = end_to_end_ms(s, intended[first + j]) {
                e2e.push(ms);
            }
            if s.status == QueryStatus::Answered {
                answered += 1;
                if s.answer
                    .as_ref()
                    .is_some_and(|a| opts.grain_layers.contains(&a.layer))
                {
                    grain += 1;
                }
            }
            calls += s
                .layer_attempts
                .iter()
                .filter(|a| {
                    !opts.grain_layers.contains(&a.layer)
                        && a.outcome != crate::state::Outcome::Skipped
                })
                .count();
        }
        let share = |x: usize| {
            if completed == 0 {
                0.0
            } else {
                x as f64 / completed as f64
            }
        };
        out.push(Window {
            first,
            completed,
            grain_share: share(grain),
            answered_share: share(answered),
            worker_calls: calls,
            end_to_end_ms: Latency::of(e2e),
        });
    }
    out
}

impl BenchReport {
    /// The human table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(o, "mode                 {:?}", self.mode);
        let _ = writeln!(
            o,
            "queries              {} sent, {} completed {:?}",
            self.sent, self.completed, self.by_status
        );
        let _ = writeln!(o, "enqueue rate         {:.0} /s", self.enqueue_rate);
        let _ = writeln!(o, "throughput           {:.0} /s", self.throughput);
        let l = &self.end_to_end_ms;
        let _ = writeln!(
            o,
            "end-to-end ms        p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p95, l.p99, l.p999, l.max
        );
        for lane in Lane::ALL {
            if let Some(l) = self.end_to_end_ms_by_lane.get(lane.as_str()) {
                let _ = writeln!(
                    o,
                    "  {lane:<8} ms        p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} queries)",
                    l.p50, l.p95, l.p99, l.p999, l.max, l.count
                );
            }
        }
        let mut layers: Vec<_> = self.layer_ms.iter().collect();
        layers.sort_by(|a, b| a.0.cmp(b.0));
        for (name, l) in layers {
            let _ = writeln!(
                o,
                "{name:<8} ms          p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} attempts)",
                l.p50, l.p95, l.p99, l.p999, l.max, l.count
            );
        }
        let _ = writeln!(
            o,
            "redis commands/query {:.1}",
            self.redis_commands_per_query
        );
        let _ = writeln!(o, "redis CPU µs/query   {:.1}", self.redis_cpu_us_per_query);
        if !self.redis_command_share.is_empty() {
            let shares: Vec<String> = self
                .redis_command_share
                .iter()
                .map(|(node, pct)| format!("{node} {pct:.1}%"))
                .collect();
            let _ = writeln!(o, "commands per primary {}", shares.join("  "));
        }
        match (self.daemon_cpu_ms_per_1k, self.daemon_peak_rss_mb) {
            (Some(c), Some(r)) => {
                let _ = writeln!(o, "daemon CPU           {c:.1} ms per 1,000 queries");
                let _ = writeln!(
                    o,
                    "daemon peak RSS      {r:.1} MB ({})",
                    self.daemons.join(", ")
                );
            }
            _ => {
                let _ = writeln!(
                    o,
                    "daemon CPU/RSS       (no daemon process on this machine)"
                );
            }
        }
        if !self.windows.is_empty() {
            let _ = writeln!(
                o,
                "\n{:>7} {:>7} {:>9} {:>8} {:>12} {:>10} {:>10} {:>10}",
                "queries",
                "done",
                "answered",
                "layer0",
                "worker calls",
                "mean ms",
                "p50 ms",
                "p95 ms"
            );
            for w in &self.windows {
                let _ = writeln!(
                    o,
                    "{:>7} {:>7} {:>8.1}% {:>7.1}% {:>12} {:>10.2} {:>10.2} {:>10.2}",
                    format!("{}+", w.first),
                    w.completed,
                    w.answered_share * 100.0,
                    w.grain_share * 100.0,
                    w.worker_calls,
                    w.end_to_end_ms.mean,
                    w.end_to_end_ms.p50,
                    w.end_to_end_ms.p95
                );
            }
            let _ = writeln!(
                o,
                "crystallised grains made by these queries: {} (removed)",
                self.crystallized
            );
        }
        o.trim_end().to_string()
    }
}
