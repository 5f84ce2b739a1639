//! Bounded resources: 200,000 queries through the real binaries (`kitbash
//! serve` and `kitbash worker echo`) on a private redis-server, with small
//! caps so that every cap is reached. The feed, the metrics and the job lists
//! stay at their caps, states expire by their TTL, nothing is left in a
//! processing or reply list, and Redis `used_memory` and the daemon's RSS
//! stay under the bound docs/memory.md states.
//!
//! `cargo test --test suite bounded:: -- --nocapture` prints the figures.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kitbash::daemon::DEAD_LIST_CAP;
use kitbash::layer0::grains::IfExists;
use kitbash::observe::process::usage;
use kitbash::{Grain, Keys, QueryState};
use redis::Commands;

use crate::common::{PATIENCE, TestContext, wait_until_a_daemon_sees};

/// The settings the bound is computed from; the test runs the daemon with them.
struct Caps {
    max_queue_len: u64,
    max_in_flight: u64,
    max_jobs_per_layer: u64,
    feed_max_len: u64,
    max_samples: u64,
    state_ttl_s: u64,
    done_ttl_s: u64,
    /// Enabled layers (each has one latency metric) and worker layers.
    layers: u64,
    worker_layers: u64,
}

// Constants of docs/memory.md: measured figures rounded up.
// `cargo test --test suite bounded:: -- --nocapture` prints the measured ones, and
// fails when one exceeds its constant here.
/// Redis bytes per query state (JSON string key with a TTL), short texts.
const STATE_BYTES: u64 = 900;
/// Redis bytes per completion signal (`done:<id>` list with a TTL).
const DONE_BYTES: u64 = 300;
/// Redis bytes per queue entry (an id in a list).
const QUEUE_ENTRY_BYTES: u64 = 64;
/// Redis bytes per feed entry.
const FEED_ENTRY_BYTES: u64 = 150;
/// Redis bytes per metric sample.
const SAMPLE_BYTES: u64 = 150;
/// Redis bytes per queued job.
const JOB_BYTES: u64 = 300;
/// Redis bytes per dead-list record.
const DEAD_BYTES: u64 = 400;
/// Feed entries `XADD MAXLEN ~` may keep past the cap (one stream node,
/// `stream-node-max-entries`, default 100).
const FEED_SLACK: u64 = 100;
/// Samples a metric may hold past its cap between two trims, per daemon:
/// one in `TRIM_EVERY` (64) samples of a metric trims it, and concurrent
/// queries' writes may cross.
const SAMPLE_SLACK: u64 = 2 * kitbash::observe::metrics::TRIM_EVERY;
/// Fraction of expired keys Redis may not have reclaimed yet (its active
/// expiry cycle aims at no more than 10% stale keys).
const STALE_FRACTION: f64 = 0.10;
/// Redis client buffers (pipelines of a few thousand commands) and slack.
const REDIS_SLACK_BYTES: u64 = 4 << 20;
/// Daemon bytes per query in flight (state, future, pending reply, buffers).
const DAEMON_BYTES_PER_IN_FLIGHT: u64 = 24 << 10;
/// Daemon slack over its idle RSS: allocator caches and batch buffers (a
/// take of up to 512 entries with their states, finishing batches of up
/// to 256 outcomes). Measured 17–25 MB over idle at 3,000–3,700 queries/s
/// on the debug build (docs/memory.md), with the RSS back at its level
/// after each of five 40,000-query runs of the release build: retained,
/// not leaked.
const DAEMON_SLACK_BYTES: u64 = 24 << 20;

impl Caps {
    /// Upper bound on Redis `used_memory` (docs/memory.md):
    /// `finished_per_state_ttl` and `finished_per_done_ttl` are the most
    /// queries finished within any `state_ttl_s` and `done_ttl_s` window (the
    /// throughput times the TTL).
    fn redis_bound(
        &self,
        baseline: u64,
        finished_per_state_ttl: u64,
        finished_per_done_ttl: u64,
    ) -> u64 {
        let live_states = self.max_queue_len + self.max_in_flight + finished_per_state_ttl;
        let states = (live_states as f64 * STATE_BYTES as f64 * (1.0 + STALE_FRACTION)) as u64;
        let done =
            (finished_per_done_ttl as f64 * DONE_BYTES as f64 * (1.0 + STALE_FRACTION)) as u64;
        baseline
            + states
            + done
            + self.max_queue_len * QUEUE_ENTRY_BYTES
            + (self.feed_max_len + FEED_SLACK) * FEED_ENTRY_BYTES
            + (self.layers + 1) * (self.max_samples + SAMPLE_SLACK) * SAMPLE_BYTES
            + self.worker_layers * self.max_jobs_per_layer * JOB_BYTES
            + DEAD_LIST_CAP as u64 * DEAD_BYTES
            + REDIS_SLACK_BYTES
    }

    /// Upper bound on the daemon's RSS (docs/memory.md).
    fn daemon_bound(&self, idle_rss: u64) -> u64 {
        idle_rss + self.max_in_flight * DAEMON_BYTES_PER_IN_FLIGHT + DAEMON_SLACK_BYTES
    }
}

/// Redis bytes per item, measured on this server.
#[derive(Debug)]
#[allow(dead_code)] // printed
struct PerItem {
    state: f64,
    done: f64,
    queue_entry: f64,
    feed_entry: f64,
    sample: f64,
    job: f64,
    dead: f64,
}

/// Bytes `used_memory` grows by per item when `write` adds `n` of them (in
/// pipelines of 1,000); the items are deleted again.
fn used_per_item(
    conn: &mut redis::Connection,
    n: usize,
    scratch: &[String],
    mut write: impl FnMut(&mut redis::Pipeline, usize),
) -> f64 {
    let before = used_memory(conn);
    for start in (0..n).step_by(1_000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 1_000).min(n) {
            write(&mut pipe, i);
        }
        let _: () = pipe.query(conn).unwrap();
    }
    let after = used_memory(conn);
    for chunk in scratch.chunks(1_000) {
        let _: () = conn.del(chunk).unwrap();
    }
    after.saturating_sub(before) as f64 / n as f64
}

fn memory_usage_per(conn: &mut redis::Connection, key: &str, count: u64) -> f64 {
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query(conn)
        .unwrap();
    bytes as f64 / count.max(1) as f64
}

/// The per-item figures of docs/memory.md, on realistic items:
/// a terminal state the daemon wrote, a job, a dead record, and the feed and
/// metrics as the run left them.
fn measure_per_item(conn: &mut redis::Connection, keys: &Keys, state: &str) -> PerItem {
    const M: usize = 10_000;
    let ids: Vec<String> = (0..M).map(|i| format!("m{:06}", 190_000 + i)).collect();
    let states: Vec<String> = ids.iter().map(|id| keys.state(id)).collect();
    let state_bytes = used_per_item(conn, M, &states, |p, i| {
        p.set_ex(&states[i], state, 8).ignore();
    });
    let dones: Vec<String> = ids.iter().map(|id| keys.done(id)).collect();
    let done_bytes = used_per_item(conn, M, &dones, |p, i| {
        p.lpush(&dones[i], "answered")
            .ignore()
            .expire(&dones[i], 4)
            .ignore();
    });
    // Lists: pushed to a scratch list (the daemon would take from the real
    // queue), measured with MEMORY USAGE.
    let scratch = keys.jobs("measure");
    let mut list_bytes = |item: &dyn Fn(usize) -> String| -> f64 {
        for start in (0..M).step_by(1_000) {
            let mut pipe = redis::pipe();
            for i in start..start + 1_000 {
                pipe.lpush(&scratch, item(i)).ignore();
            }
            let _: () = pipe.query(conn).unwrap();
        }
        let per = memory_usage_per(conn, &scratch, M as u64);
        let _: () = conn.del(&scratch).unwrap();
        per
    };
    let queue_bytes = list_bytes(&|i| format!("b{}", 190_000 + i));
    let job_bytes = list_bytes(&|i| {
        serde_json::json!({
            "job_id": uuid::Uuid::new_v4().to_string(),
            "query_id": format!("b{}", 190_000 + i),
            "layer": "layer2",
            "text": format!("bounded escalation {} omega", 190_000 + i),
            "deadline_ms": 1_732_230_000_500_i64,
            "reply_to": keys.replies("host-0123456789abcdef"),
        })
        .to_string()
    });
    let dead_bytes = list_bytes(&|i| {
        serde_json::json!({
            "entry": format!("{{\"query_text\":\"\",\"n\":{i}}}"),
            "reason": "empty query text",
            "instance": "host-0123456789abcdef",
            "at": "2026-11-22T03:00:00.000000Z",
        })
        .to_string()
    });
    let feed_len: u64 = redis::cmd("XLEN").arg(keys.feed()).query(conn).unwrap();
    let feed_entry = memory_usage_per(conn, &keys.feed(), feed_len);
    let metric = keys.metric("latency:query");
    let samples: u64 = conn.zcard(&metric).unwrap();
    let sample = memory_usage_per(conn, &metric, samples);
    PerItem {
        state: state_bytes,
        done: done_bytes,
        queue_entry: queue_bytes,
        feed_entry,
        sample,
        job: job_bytes,
        dead: dead_bytes,
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kitbash(ctx: &TestContext, args: &[&str], env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kitbash"));
    cmd.args(args)
        .env_remove("KITBASH_CONFIG")
        .env_remove("KITBASH_LOG")
        .env("KITBASH_REDIS__URL", &ctx.redis.url)
        .env("KITBASH_REDIS__KEY_PREFIX", &ctx.prefix)
        .env("KITBASH_HTTP__ENABLED", "false")
        .env("KITBASH_LOGGING__LEVEL", "warn")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("start kitbash"))
}

fn used_memory(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

/// VmRSS and VmHWM of a process, in bytes (0 when it is gone).
fn rss(pid: u32) -> (u64, u64) {
    usage(pid).map_or((0, 0), |u| (u.rss_bytes, u.peak_rss_bytes))
}

fn keys_matching(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let opts = redis::ScanOptions::default()
        .with_pattern(pattern)
        .with_count(10_000);
    conn.scan_options::<String>(opts)
        .unwrap()
        .map(|k| k.unwrap())
        .collect()
}

/// Polls `ok` every 50 ms until it holds; fails after `limit`.
fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn healthy(conn: &mut redis::Connection, keys: &Keys, role: &str) -> bool {
    keys_matching(conn, &keys.health_pattern()).iter().any(|k| {
        conn.get::<_, Option<String>>(k)
            .ok()
            .flatten()
            .is_some_and(|v| v.contains(&format!("\"role\":\"{role}\"")))
    })
}

fn completed(conn: &mut redis::Connection, keys: &Keys) -> u64 {
    // Every query attempts layer0 once, and the counters are written with
    // the finishing step: layer0 attempts = queries finished.
    conn.hget::<_, _, Option<u64>>(keys.stats("layer0"), "attempts")
        .unwrap()
        .unwrap_or(0)
}

/// What the sampler saw, every 250 ms.
#[derive(Default)]
struct Peaks {
    used_memory: u64,
    rss: u64,
    hwm: u64,
    feed_len: u64,
    jobs_len: u64,
    samples: HashMap<String, u64>,
    /// (seconds since start, queries finished so far)
    completions: Vec<(f64, u64)>,
}

impl Peaks {
    /// Most queries finished within any window of `secs` (sampled, so the
    /// window is widened by one sampling period).
    fn finished_within(&self, secs: f64) -> u64 {
        let c = &self.completions;
        let mut best = 0;
        let mut j = 0;
        for i in 0..c.len() {
            while c[i].0 - c[j].0 > secs + 0.25 {
                j += 1;
            }
            let before = if j > 0 { c[j - 1].1 } else { 0 };
            best = best.max(c[i].1 - before);
        }
        best
    }
}

/// Queries sent; `BOUNDED_QUERIES` overrides (quicker runs while measuring).
fn n_queries() -> usize {
    std::env::var("BOUNDED_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}
/// One query in this many has no grain and goes to the echo worker (layer2).
const WORKER_EVERY: usize = 10;
const GRAINS: usize = 100;
const CHUNK: usize = 1_000;
/// The pushing client's `state_ttl_s`: far above any wait in the queue.
const CLIENT_STATE_TTL_S: u64 = 600;

/// CPU seconds (user + system) a process has used.
fn cpu_s(pid: u32) -> f64 {
    usage(pid).map_or(0.0, |u| u.cpu.as_secs_f64())
}

#[test]
fn two_hundred_thousand_queries_stay_within_the_stated_bounds() {
    let caps = Caps {
        max_queue_len: 5_000,
        max_in_flight: 256,
        max_jobs_per_layer: 1_000,
        feed_max_len: 5_000,
        max_samples: 1_000,
        state_ttl_s: 8,
        done_ttl_s: 4,
        layers: 2,
        worker_layers: 1,
    };
    #[allow(non_snake_case)]
    let N = n_queries();
    let ctx = TestContext::private();
    let keys = ctx.keys();
    let mut conn = ctx.raw();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bb = ctx.blackboard().await;
        let grains: Vec<Grain> = (0..GRAINS)
            .map(|i| {
                Grain::new(
                    format!("bounded-{i}"),
                    format!("bounded question {i} alpha"),
                    format!("answer {i}"),
                )
            })
            .collect();
        bb.store_grains(&grains, IfExists::Replace).await.unwrap();
    });
    let baseline = used_memory(&mut conn);

    let env = vec![
        (
            "KITBASH_ORCHESTRATOR__MAX_QUEUE_LEN",
            caps.max_queue_len.to_string(),
        ),
        (
            "KITBASH_ORCHESTRATOR__MAX_IN_FLIGHT",
            caps.max_in_flight.to_string(),
        ),
        (
            "KITBASH_ORCHESTRATOR__MAX_JOBS_PER_LAYER",
            caps.max_jobs_per_layer.to_string(),
        ),
        (
            "KITBASH_ORCHESTRATOR__STATE_TTL_S",
            caps.state_ttl_s.to_string(),
        ),
        (
            "KITBASH_ORCHESTRATOR__DONE_TTL_S",
            caps.done_ttl_s.to_string(),
        ),
        ("KITBASH_FEED__MAX_LEN", caps.feed_max_len.to_string()),
        ("KITBASH_METRICS__MAX_SAMPLES", caps.max_samples.to_string()),
        ("KITBASH_LAYERS__LAYER1__ENABLED", "false".to_string()),
        ("KITBASH_LAYERS__LAYER4__ENABLED", "false".to_string()),
        // This test is about bounds, not timeouts: timeouts far above any
        // lookup or echo, so that a loaded machine changes the timing only.
        ("KITBASH_LAYERS__LAYER0__TIMEOUT_MS", "10000".to_string()),
        ("KITBASH_LAYERS__LAYER2__TIMEOUT_MS", "30000".to_string()),
    ];
    let daemon = kitbash(&ctx, &["serve"], &env);
    let _worker = kitbash(
        &ctx,
        &["worker", "echo", "--layer", "layer2", "--concurrency", "16"],
        &env,
    );
    wait_until("a live daemon", PATIENCE, || {
        healthy(&mut conn, &keys, "daemon")
    });
    wait_until("a live worker", PATIENCE, || {
        healthy(&mut conn, &keys, "worker")
    });
    // The daemon sends layer2 jobs only once its worker directory has the
    // worker; it says so in its health record.
    wait_until_a_daemon_sees(&mut conn, &keys, "layer2");
    let pid = daemon.0.id();
    let (idle_rss, _) = rss(pid);

    // Sample memory and lengths every 250 ms while the queries run.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let sampler = {
        let stop = stop.clone();
        let mut conn = ctx.raw();
        let keys = keys.clone();
        thread::spawn(move || {
            let mut p = Peaks::default();
            let metrics = ["latency:layer0", "latency:layer2", "latency:query"];
            while !stop.load(Ordering::Relaxed) {
                p.used_memory = p.used_memory.max(used_memory(&mut conn));
                let (r, h) = rss(pid);
                p.rss = p.rss.max(r);
                p.hwm = p.hwm.max(h);
                let feed: u64 = redis::cmd("XLEN")
                    .arg(keys.feed())
                    .query(&mut conn)
                    .unwrap();
                p.feed_len = p.feed_len.max(feed);
                let jobs: u64 = conn.llen(keys.jobs("layer2")).unwrap();
                p.jobs_len = p.jobs_len.max(jobs);
                for m in metrics {
                    let n: u64 = conn.zcard(keys.metric(m)).unwrap();
                    let e = p.samples.entry(m.to_string()).or_default();
                    *e = (*e).max(n);
                }
                p.completions
                    .push((t0.elapsed().as_secs_f64(), completed(&mut conn, &keys)));
                thread::sleep(Duration::from_millis(250));
            }
            p
        })
    };

    // Push like a client: a state and an id per query, pipelined, never
    // past max_queue_len. The client's own state_ttl_s must exceed the
    // longest wait in the queue (docs/memory.md), which a
    // loaded machine can stretch past the daemon's 8 s: a client with a
    // longer one. The daemon writes every state it takes with its own.
    let queue = keys.queue();
    let mut pushed = 0;
    while pushed < N {
        let n = CHUNK.min(N - pushed);
        wait_until("room in the queue", PATIENCE, || {
            conn.llen::<_, u64>(&queue).unwrap() + n as u64 <= caps.max_queue_len
        });
        let mut pipe = redis::pipe();
        for i in pushed..pushed + n {
            let id = format!("b{i}");
            let text = if i % WORKER_EVERY == 0 {
                format!("bounded escalation {i} omega")
            } else {
                format!("bounded question {} alpha", i % GRAINS)
            };
            let q = QueryState::with_id(id.clone(), text);
            pipe.set_ex(
                keys.state(&id),
                serde_json::to_string(&q).unwrap(),
                CLIENT_STATE_TTL_S,
            )
            .ignore()
            .lpush(&queue, id)
            .ignore();
        }
        let _: () = pipe.query(&mut conn).unwrap();
        pushed += n;
    }
    let pushed_s = t0.elapsed().as_secs_f64();
    println!("bounded: pushed {N} in {pushed_s:.1} s");
    // A terminal state as the daemon wrote it, for the per-item figures: one
    // of the last worker queries answered at layer2, read while it lives
    // (its TTL is state_ttl_s).
    let last_worker_ids: Vec<String> = (N.saturating_sub(10 * WORKER_EVERY)..N)
        .filter(|i| i % WORKER_EVERY == 0)
        .map(|i| keys.state(&format!("b{i}")))
        .collect();
    let mut worker_state: Option<String> = None;
    let mut look_for_worker_state = |conn: &mut redis::Connection| {
        if worker_state.is_some() {
            return;
        }
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&last_worker_ids)
            .query(conn)
            .unwrap();
        worker_state = values.into_iter().flatten().find(|raw| {
            serde_json::from_str::<QueryState>(raw).is_ok_and(|s| {
                s.status == kitbash::QueryStatus::Answered
                    && s.answer.is_some_and(|a| a.layer == "layer2")
            })
        });
    };
    // The tail: at most a full queue, what is in flight and the jobs.
    let deadline = Instant::now() + Duration::from_secs(300);
    while completed(&mut conn, &keys) < N as u64 {
        look_for_worker_state(&mut conn);
        if Instant::now() > deadline {
            let l2: HashMap<String, u64> = conn.hgetall(keys.stats("layer2")).unwrap();
            let processing: Vec<(String, u64)> =
                keys_matching(&mut conn, &keys.processing_pattern())
                    .into_iter()
                    .map(|k| {
                        let n = conn.llen(&k).unwrap();
                        (k, n)
                    })
                    .collect();
            // States the daemon never rewrote still have the client's TTL.
            let mut unfinished = Vec::new();
            for k in keys_matching(&mut conn, &keys.state_pattern()) {
                let ttl: i64 = conn.pttl(&k).unwrap();
                if ttl > caps.state_ttl_s as i64 * 1000 && unfinished.len() < 5 {
                    unfinished.push(conn.get::<_, Option<String>>(&k).unwrap());
                }
            }
            panic!(
                "only {} of {N} finished; queue {}, processing {processing:?}, jobs {}, \
                 layer2 {l2:?}, dead {}; states not rewritten by the daemon: {unfinished:#?}",
                completed(&mut conn, &keys),
                conn.llen::<_, u64>(&queue).unwrap(),
                conn.llen::<_, u64>(keys.jobs("layer2")).unwrap(),
                conn.llen::<_, u64>(keys.dead()).unwrap(),
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    look_for_worker_state(&mut conn);
    let wall_s = t0.elapsed().as_secs_f64();
    let redis_pid: u32 = {
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    println!(
        "bounded: CPU s: daemon {:.1}, worker {:.1}, redis {:.1}, test {:.1}",
        cpu_s(pid),
        cpu_s(_worker.0.id()),
        cpu_s(redis_pid),
        cpu_s(std::process::id()),
    );

    let worker_state = worker_state.expect(
        "none of the last 10 worker queries was seen answered at layer2 (echo worker, 30 s timeout)",
    );

    // Right now, every state still in Redis expires within state_ttl_s.
    let states = keys_matching(&mut conn, &keys.state_pattern());
    let mut pipe = redis::pipe();
    for k in &states {
        pipe.pttl(k);
    }
    let ttls: Vec<i64> = pipe.query(&mut conn).unwrap();
    let live_states = ttls.iter().filter(|&&t| t != -2).count();
    for (k, t) in states.iter().zip(&ttls) {
        assert!(
            *t == -2 || (0..=caps.state_ttl_s as i64 * 1000).contains(t),
            "{k} has PTTL {t} ms, not in 0..={} s",
            caps.state_ttl_s
        );
    }

    // The TTLs run out (every state's was checked above) and the daemon's
    // maintenance (every 10 s) trims every metric to its cap: wait for what
    // Redis shows, with the sampler still running.
    let mut left = (0, 0, 0);
    let expired = |conn: &mut redis::Connection, left: &mut (usize, usize, usize)| {
        let states = keys_matching(conn, &keys.state_pattern()).len();
        let done = keys_matching(conn, &keys.done("*")).len();
        let over_cap = keys_matching(conn, &keys.metric_pattern())
            .iter()
            .filter(|k| conn.zcard::<_, u64>(*k).unwrap() > caps.max_samples)
            .count();
        *left = (states, done, over_cap);
        *left == (0, 0, 0)
    };
    let limit = Duration::from_secs(caps.state_ttl_s.max(10)) + PATIENCE;
    let deadline = Instant::now() + limit;
    while !expired(&mut conn, &mut left) {
        let (states, done, over_cap) = left;
        assert!(
            Instant::now() < deadline,
            "after {limit:?}: {states} states outlived state_ttl_s, {done} completion \
             signals outlived done_ttl_s, {over_cap} metrics over max_samples"
        );
        thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let peaks = sampler.join().unwrap();

    // Every query finished exactly once, each where it could. The layer0
    // counters are written with the finishing step, so attempts = queries
    // finished (none twice); which layer answered depends on timing only
    // through timeouts, so the counts are checked as invariants.
    let stats = |conn: &mut redis::Connection, layer: &str| -> HashMap<String, u64> {
        conn.hgetall(keys.stats(layer)).unwrap()
    };
    let l0 = stats(&mut conn, "layer0");
    let l2 = stats(&mut conn, "layer2");
    let field = |m: &HashMap<String, u64>, f: &str| m.get(f).copied().unwrap_or(0);
    println!("bounded: layer0 {l0:?}; layer2 {l2:?}");
    let to_worker = N.div_ceil(WORKER_EVERY) as u64;
    let n = N as u64;
    assert_eq!(
        field(&l0, "attempts"),
        n,
        "every query finished once: {l0:?}"
    );
    assert_eq!(
        field(&l0, "hits") + field(&l0, "misses") + field(&l0, "timeouts") + field(&l0, "errors"),
        n,
        "one layer0 outcome per query: {l0:?}"
    );
    assert!(
        field(&l0, "hits") <= n - to_worker,
        "layer0 answered a question no grain matches: {l0:?}"
    );
    assert!(
        field(&l0, "misses") <= to_worker,
        "layer0 missed a question a grain matches: {l0:?}"
    );
    assert!(field(&l0, "hits") > 0, "layer0 answered nothing: {l0:?}");
    // Layer1 and layer4 are off: what layer0 did not answer went to layer2,
    // tried or skipped (when its job list was full), once each.
    assert_eq!(
        field(&l2, "attempts") + field(&l2, "skips"),
        n - field(&l0, "hits"),
        "every query layer0 did not answer went to layer2 once: {l2:?}"
    );
    assert_eq!(
        field(&l2, "hits") + field(&l2, "misses") + field(&l2, "timeouts") + field(&l2, "errors"),
        field(&l2, "attempts"),
        "{l2:?}"
    );
    assert!(
        field(&l2, "hits") > 0,
        "the worker answered nothing: {l2:?}"
    );
    let dead: u64 = conn.llen(keys.dead()).unwrap();
    assert_eq!(dead, 0, "nothing in the dead list");

    // Lists end empty.
    assert_eq!(conn.llen::<_, u64>(&queue).unwrap(), 0);
    for pattern in [keys.processing_pattern(), keys.replies("*"), keys.jobs("*")] {
        for k in keys_matching(&mut conn, &pattern) {
            let len: u64 = conn.llen(&k).unwrap();
            assert_eq!(len, 0, "{k} holds {len} entries");
        }
    }

    // Memory: under the bound docs/memory.md states.
    let per_state_ttl = peaks.finished_within(caps.state_ttl_s as f64);
    let per_done_ttl = peaks.finished_within(caps.done_ttl_s as f64);
    let redis_bound = caps.redis_bound(baseline, per_state_ttl, per_done_ttl);
    let most_states = caps.max_queue_len + caps.max_in_flight + per_state_ttl;
    assert!(
        live_states as u64 <= most_states,
        "{live_states} states alive at the end, over {most_states}: states do not expire"
    );
    let daemon_bound = caps.daemon_bound(idle_rss);
    let mb = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "bounded: {N} queries in {wall_s:.1} s (pushed in {pushed_s:.1} s, {:.0}/s); \
         peak used_memory {:.1} MB (baseline {:.1} MB, bound {:.1} MB); \
         daemon RSS peak {:.1} MB, VmHWM {:.1} MB (idle {:.1} MB, bound {:.1} MB); \
         most finished per state_ttl_s {per_state_ttl}, per done_ttl_s {per_done_ttl}; \
         feed peak {}, samples peak {:?}, jobs peak {}, states alive at the end {live_states}",
        N as f64 / wall_s,
        mb(peaks.used_memory),
        mb(baseline),
        mb(redis_bound),
        mb(peaks.rss),
        mb(peaks.hwm),
        mb(idle_rss),
        mb(daemon_bound),
        peaks.feed_len,
        peaks.samples,
        peaks.jobs_len,
    );
    let per_item = measure_per_item(&mut conn, &keys, &worker_state);
    println!(
        "bounded: Redis bytes per item (used_memory deltas, MEMORY USAGE for the feed and metrics): {per_item:?}"
    );
    for (what, measured, stated) in [
        ("state", per_item.state, STATE_BYTES),
        ("done", per_item.done, DONE_BYTES),
        ("queue entry", per_item.queue_entry, QUEUE_ENTRY_BYTES),
        ("feed entry", per_item.feed_entry, FEED_ENTRY_BYTES),
        ("sample", per_item.sample, SAMPLE_BYTES),
        ("job", per_item.job, JOB_BYTES),
        ("dead record", per_item.dead, DEAD_BYTES),
    ] {
        assert!(
            measured <= stated as f64,
            "{what}: {measured:.0} bytes measured, docs/memory.md states {stated}"
        );
    }

    // Caps: the feed within one stream node of its cap at every sample,
    // every metric at its cap after maintenance.
    let feed_len: u64 = redis::cmd("XLEN")
        .arg(keys.feed())
        .query(&mut conn)
        .unwrap();
    assert!(
        feed_len <= caps.feed_max_len + FEED_SLACK,
        "feed {feed_len}"
    );
    assert!(
        peaks.feed_len <= caps.feed_max_len + FEED_SLACK,
        "feed peaked at {}",
        peaks.feed_len
    );
    for (m, n) in &peaks.samples {
        assert!(
            *n <= caps.max_samples + SAMPLE_SLACK,
            "metric {m} peaked at {n} samples"
        );
    }
    assert!(peaks.jobs_len <= caps.max_jobs_per_layer);

    assert!(
        peaks.used_memory <= redis_bound,
        "Redis used_memory peaked at {} bytes, over the stated bound {redis_bound}",
        peaks.used_memory
    );
    assert!(
        peaks.hwm <= daemon_bound,
        "daemon VmHWM {} bytes, over the stated bound {daemon_bound}",
        peaks.hwm
    );
}

/// A worker that reports healthy for layer2 but never takes a job: the job
/// list stops at `orchestrator.max_jobs_per_layer`, the queries past it skip
/// the layer at once (`job list full`), the ones that got in time out, and
/// every query finishes. Also measures the daemon's RSS per query waiting on
/// a worker (docs/memory.md).
#[test]
fn a_worker_that_takes_nothing_cannot_grow_its_job_list() {
    const CAP: u64 = 1_000;
    const QUERIES: usize = 3_000;
    let ctx = TestContext::private();
    let keys = ctx.keys();
    let mut conn = ctx.raw();
    let env = vec![
        ("KITBASH_ORCHESTRATOR__MAX_IN_FLIGHT", CAP.to_string()),
        // Every slot for the normal lane these queries are in.
        (
            "KITBASH_ORCHESTRATOR__LANES__RESERVED_IN_FLIGHT",
            "0".to_string(),
        ),
        ("KITBASH_ORCHESTRATOR__MAX_JOBS_PER_LAYER", CAP.to_string()),
        ("KITBASH_LAYERS__LAYER1__ENABLED", "false".to_string()),
        ("KITBASH_LAYERS__LAYER4__ENABLED", "false".to_string()),
        ("KITBASH_LAYERS__LAYER2__TIMEOUT_MS", "6000".to_string()),
        // A lookup that times out escalates like a miss; a generous timeout
        // keeps the outcomes of layer0 the same on a loaded machine.
        ("KITBASH_LAYERS__LAYER0__TIMEOUT_MS", "10000".to_string()),
    ];

    // The fake worker: a healthy heartbeat, and nothing else.
    let stop = Arc::new(AtomicBool::new(false));
    let heart = {
        let stop = stop.clone();
        let mut conn = ctx.raw();
        let mut h = kitbash::Health::new(
            "idle-worker",
            kitbash::store::blackboard::ProcessRole::Worker,
        );
        h.kind = Some("echo".into());
        h.layer = Some("layer2".into());
        let key = keys.health(&h.name);
        let json = serde_json::to_string(&h).unwrap();
        thread::spawn(move || {
            // A TTL far above the beat: a stalled test thread must not
            // make the worker look dead to the daemon.
            while !stop.load(Ordering::Relaxed) {
                let _: () = conn.pset_ex(&key, &json, 30_000).unwrap();
                thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let daemon = kitbash(&ctx, &["serve"], &env);
    wait_until("a live daemon", PATIENCE, || {
        healthy(&mut conn, &keys, "daemon")
    });
    wait_until_a_daemon_sees(&mut conn, &keys, "layer2");
    let pid = daemon.0.id();
    let (idle_rss, _) = rss(pid);

    let mut pipe = redis::pipe();
    for i in 0..QUERIES {
        let id = format!("j{i}");
        let q = QueryState::with_id(id.clone(), format!("nothing matches {i} omega"));
        pipe.set_ex(keys.state(&id), serde_json::to_string(&q).unwrap(), 600)
            .ignore()
            .lpush(keys.queue(), id)
            .ignore();
    }
    let _: () = pipe.query(&mut conn).unwrap();

    // The first CAP queries to reach layer2 fill the job list (max_in_flight
    // is CAP too) and wait for replies that never come; once they time out
    // the rest find the list full and skip the layer, except those that
    // come after the daemon dropped expired jobs (every 10 s). The list
    // never passes the cap.
    let jobs = keys.jobs("layer2");
    let mut peak_jobs = 0;
    let mut sample = |conn: &mut redis::Connection| -> u64 {
        let n = conn.llen::<_, u64>(&jobs).unwrap();
        peak_jobs = peak_jobs.max(n);
        n
    };
    // The daemon's RSS while CAP queries wait: from the moment the job list
    // is full until the first of them times out.
    let timeouts = |conn: &mut redis::Connection| -> u64 {
        conn.hget::<_, _, Option<u64>>(keys.stats("layer2"), "timeouts")
            .unwrap()
            .unwrap_or(0)
    };
    wait_until("CAP queries waiting on layer2", PATIENCE, || {
        sample(&mut conn) == CAP
    });
    let mut waiting_rss = rss(pid).0;
    wait_until("the first layer2 timeout", PATIENCE, || {
        waiting_rss = waiting_rss.max(rss(pid).0);
        timeouts(&mut conn) > 0
    });
    wait_until(
        "every query finished",
        Duration::from_secs(6) + PATIENCE,
        || {
            sample(&mut conn);
            completed(&mut conn, &keys) >= QUERIES as u64
        },
    );
    sample(&mut conn);
    let (_, hwm) = rss(pid);
    stop.store(true, Ordering::Relaxed);
    heart.join().unwrap();

    assert_eq!(
        completed(&mut conn, &keys),
        QUERIES as u64,
        "none finished twice"
    );
    assert_eq!(peak_jobs, CAP, "the job list stops at the cap");
    // Nobody takes them; once their deadline passes, the daemon's
    // maintenance (every 10 s) may already have dropped some.
    assert!(conn.llen::<_, u64>(&jobs).unwrap() <= CAP);
    // How many jobs were pushed depends on timing: at least the cap, and
    // more when pushing outlasted the layer's timeout and the daemon dropped
    // expired jobs meanwhile. The invariants: every query was either pushed
    // (and timed out, nobody answers) or skipped because the list was full.
    let l2: HashMap<String, u64> = conn.hgetall(keys.stats("layer2")).unwrap();
    let pushed = l2.get("attempts").copied().unwrap_or(0);
    let skipped = l2.get("skips").copied().unwrap_or(0);
    assert!(pushed >= CAP, "{l2:?}");
    assert_eq!(pushed + skipped, QUERIES as u64, "{l2:?}");
    assert_eq!(l2.get("timeouts").copied(), Some(pushed), "{l2:?}");
    let mut full = 0;
    for i in 0..QUERIES {
        let raw: String = conn.get(keys.state(&format!("j{i}"))).unwrap();
        let s: QueryState = serde_json::from_str(&raw).unwrap();
        assert_eq!(s.status, kitbash::QueryStatus::Unanswered, "{raw}");
        let a = s
            .layer_attempts
            .iter()
            .find(|a| a.layer == "layer2")
            .unwrap();
        if a.outcome == kitbash::Outcome::Skipped {
            let why = a.reason.as_deref().unwrap_or_default();
            assert_eq!(why, format!("job list full ({CAP} jobs queued)"));
            full += 1;
        }
    }
    assert_eq!(full, skipped);

    // The feed records a layer_attempt only for the jobs pushed.
    let feed: Vec<HashMap<String, String>> = {
        let reply: redis::streams::StreamRangeReply = conn.xrange_all(keys.feed()).unwrap();
        reply
            .ids
            .into_iter()
            .map(|e| {
                e.map
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value(v).unwrap()))
                    .collect()
            })
            .collect()
    };
    let count = |event: &str| {
        feed.iter()
            .filter(|e| {
                e.get("event").map(String::as_str) == Some(event)
                    && e.get("layer").map(String::as_str) == Some("layer2")
            })
            .count() as u64
    };
    assert_eq!(count("layer_attempt"), pushed);
    assert_eq!(count("layer_skipped"), skipped);
    assert_eq!(count("layer_timeout"), pushed);

    let per_waiting = waiting_rss.saturating_sub(idle_rss) / CAP;
    println!(
        "job cap: list stopped at {peak_jobs} of {CAP}; daemon RSS idle {:.1} MB, \
         with {CAP} queries waiting {:.1} MB (VmHWM {:.1} MB): {:.1} KB per waiting query",
        idle_rss as f64 / 1_048_576.0,
        waiting_rss as f64 / 1_048_576.0,
        hwm as f64 / 1_048_576.0,
        per_waiting as f64 / 1024.0,
    );
    // The stated bound (docs/memory.md), slack included: the
    // allocator grows the heap in steps of megabytes, so the per-query
    // figure alone swings with where a step falls (15 to 23 KB seen).
    let bound = idle_rss + CAP * DAEMON_BYTES_PER_IN_FLIGHT + DAEMON_SLACK_BYTES;
    assert!(
        waiting_rss <= bound,
        "daemon RSS {waiting_rss} with {CAP} queries waiting, over the stated bound {bound} \
         (idle {idle_rss} + {CAP} x {DAEMON_BYTES_PER_IN_FLIGHT} + {DAEMON_SLACK_BYTES})"
    );
}
