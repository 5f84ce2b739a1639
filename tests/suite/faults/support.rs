//! Real processes for the fault suite: `kitbash serve` and `kitbash worker`
//! binaries with their logs captured, load, and outcome accounting.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kitbash::layer0::grains::{Grain, IfExists};
use kitbash::{Blackboard, QueryState, QueryStatus};

use crate::common::TestContext;

pub use crate::common::free_port;

/// One `kitbash` process, killed (SIGKILL) on drop, stopped or not; stdout
/// and stderr go to a log file the test can read.
pub struct Proc {
    child: Option<Child>,
    /// Frozen by [`Proc::stop`] and not woken since.
    stopped: bool,
    /// What it is, for messages.
    pub label: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Environment every process of a test shares: its Redis, its prefix, fast
/// heartbeats and recovery, no HTTP, all events kept.
pub fn base_env(ctx: &TestContext, redis_url: &str) -> Vec<(String, String)> {
    [
        ("KITBASH_REDIS__URL", redis_url.to_string()),
        ("KITBASH_REDIS__KEY_PREFIX", ctx.prefix.clone()),
        ("KITBASH_REDIS__RETRY_MAX_DELAY_MS", "1000".into()),
        ("KITBASH_HTTP__ENABLED", "false".into()),
        ("KITBASH_ORCHESTRATOR__HEARTBEAT_INTERVAL_MS", "200".into()),
        ("KITBASH_ORCHESTRATOR__HEALTH_TTL_S", "1".into()),
        ("KITBASH_ORCHESTRATOR__RECOVERY_INTERVAL_S", "1".into()),
        ("KITBASH_ORCHESTRATOR__SHUTDOWN_GRACE_S", "2".into()),
        ("KITBASH_WORKERS__HEARTBEAT_INTERVAL_MS", "200".into()),
        ("KITBASH_WORKERS__HEALTH_TTL_S", "1".into()),
        ("KITBASH_WORKERS__SHUTDOWN_GRACE_S", "2".into()),
        ("KITBASH_FEED__MAX_LEN", "2000000".into()),
        ("KITBASH_LAYERS__LAYER2__TIMEOUT_MS", "2000".into()),
        ("KITBASH_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Proc {
    /// Starts `kitbash <args>` with `env` (applied in order, later wins).
    pub fn start(label: &str, args: &[&str], env: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.txt");
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kitbash"));
        cmd.args(args)
            .env_remove("KITBASH_CONFIG")
            .env_remove("REDIS_URL")
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("kitbash binary");
        Self {
            child: Some(child),
            stopped: false,
            label: label.to_string(),
            log,
            _dir: dir,
        }
    }

    /// `kitbash serve`.
    pub fn serve(label: &str, env: &[(String, String)]) -> Self {
        Self::start(label, &["serve"], env)
    }

    /// `kitbash worker echo --layer layer2 --name <name>`.
    pub fn echo_worker(name: &str, env: &[(String, String)]) -> Self {
        Self::echo_worker_on(name, "layer2", env)
    }

    /// `kitbash worker echo --layer <layer> --name <name>`.
    pub fn echo_worker_on(name: &str, layer: &str, env: &[(String, String)]) -> Self {
        Self::start(
            name,
            &["worker", "echo", "--layer", layer, "--name", name],
            env,
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`: no shutdown, no goodbye. SIGKILL ends a stopped process
    /// too, without waking it first.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// SIGSTOP: the process freezes mid-whatever, its connections open and
    /// silent, as in a long GC pause, a VM migration or a laptop lid; until
    /// [`Proc::cont`].
    pub fn stop(&mut self) {
        self.signal(Signal::SIGSTOP);
        self.stopped = true;
    }

    /// SIGCONT: a process frozen by [`Proc::stop`] runs on from where it was.
    pub fn cont(&mut self) {
        self.signal(Signal::SIGCONT);
        self.stopped = false;
    }

    fn signal(&self, sig: Signal) {
        let pid = self.pid() as i32;
        // Our own child's pid, not reaped yet (`child` is still held), so it
        // cannot name another process.
        let sent = kill(Pid::from_raw(pid), sig);
        assert!(
            sent.is_ok(),
            "{sig} to {} (pid {pid}): {sent:?}",
            self.label
        );
    }

    /// SIGTERM (and SIGCONT, if stopped), then waits up to 20 s; returns the
    /// exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.child.as_ref()?;
        self.signal(Signal::SIGTERM);
        if self.stopped {
            // A stopped process sees SIGTERM only once it runs again.
            self.cont();
        }
        let mut c = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("{} did not stop within 20 s of SIGTERM", self.label);
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        kitbash::observe::process::usage(self.pid())
            .expect("the process is alive")
            .cpu
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.label, tail(&self.log(), 60));
        }
        self.kill9();
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Stores `n` grains `fault-grain-<i>`: "What is the fault colour number <i>?"
pub async fn load_grains(bb: &Blackboard, n: usize) {
    let grains: Vec<Grain> = (0..n)
        .map(|i| {
            Grain::new(
                format!("fault-grain-{i}"),
                format!("What is the fault colour number {i}?"),
                format!("colour {i}"),
            )
        })
        .collect();
    for r in bb.store_grains(&grains, IfExists::Replace).await.unwrap() {
        r.unwrap();
    }
}

/// Pushes `n` queries, ids `<tag>-<i>`: every other one asks a grain
/// (layer0 answers), the rest go down to the echo worker on layer2.
/// Returns the ids in push order.
pub async fn push_mixed(bb: &Blackboard, tag: &str, n: usize, grains: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut batch = Vec::new();
        for &i in chunk {
            let text = if i % 2 == 0 && grains > 0 {
                format!("What is the fault colour number {}?", i % grains)
            } else {
                format!("echo question {tag} {i}")
            };
            let q = QueryState::with_id(format!("{tag}-{i}"), text);
            ids.push(q.query_id.clone());
            batch.push(q);
        }
        // Sent together over the multiplexed connection: one round trip.
        let pushes = batch.iter().map(|q| bb.enqueue(q));
        for r in futures_util::future::join_all(pushes).await {
            r.unwrap();
        }
    }
    ids
}

/// The states of `ids` (None: no state).
pub fn states(ctx: &TestContext, ids: &[String]) -> Vec<Option<QueryState>> {
    raw_states(ctx, ids)
        .into_iter()
        .map(|r| r.map(|s| serde_json::from_str::<QueryState>(&s).unwrap()))
        .collect()
}

/// How many of `ids` are terminal now.
pub fn terminal_count(ctx: &TestContext, ids: &[String]) -> usize {
    states(ctx, ids)
        .iter()
        .filter(|s| s.as_ref().is_some_and(|s| s.status.is_terminal()))
        .count()
}

/// Waits until every one of `ids` is terminal; panics after `secs` naming
/// what is left. Returns the time it took.
pub async fn wait_all_terminal(ctx: &TestContext, ids: &[String], secs: f64) -> Duration {
    let t0 = Instant::now();
    loop {
        let states = states(ctx, ids);
        let open: Vec<String> = ids
            .iter()
            .zip(&states)
            .filter(|(_, s)| !s.as_ref().is_some_and(|s| s.status.is_terminal()))
            .map(|(id, s)| format!("{id}={:?}", s.as_ref().map(|s| s.status.clone())))
            .collect();
        if open.is_empty() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed().as_secs_f64() < secs,
            "{} of {} queries not terminal after {secs} s, e.g. {:?}",
            open.len(),
            ids.len(),
            &open[..open.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event in the feed, as (event, query_id, reason).
pub async fn all_events(bb: &Blackboard) -> Vec<(String, String, String)> {
    bb.recent_events(10_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.event().unwrap_or("").to_string(),
                e.get("query_id").unwrap_or("").to_string(),
                e.get("reason").unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// How many events of `kind` each query has.
pub fn per_query(events: &[(String, String, String)], kind: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (e, q, _) in events {
        if e == kind {
            *out.entry(q.clone()).or_default() += 1;
        }
    }
    out
}

/// Asserts each of `ids` completed exactly once (one `query_completed`
/// event) and is terminal; returns the status counts.
pub async fn assert_exactly_once(
    ctx: &TestContext,
    bb: &Blackboard,
    ids: &[String],
) -> HashMap<String, usize> {
    let events = all_events(bb).await;
    let completed = per_query(&events, "query_completed");
    let twice: Vec<_> = completed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    let mut statuses = HashMap::new();
    for (id, s) in ids.iter().zip(states(ctx, ids)) {
        let s = s.unwrap_or_else(|| panic!("{id} has no state"));
        assert!(s.status.is_terminal(), "{id} is {:?}", s.status);
        if s.status != QueryStatus::Failed {
            assert_eq!(completed.get(id), Some(&1), "{id}: one query_completed");
        }
        *statuses.entry(s.status.as_str().to_string()).or_default() += 1;
    }
    statuses
}

/// Keys matching `pattern` (under this test's prefix) that hold something.
pub fn keys_matching(ctx: &TestContext, pattern: &str) -> Vec<String> {
    let mut conn = ctx.raw();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
    keys.sort();
    keys
}

/// Polls `cond` every 50 ms for up to `secs`.
pub async fn eventually<F: FnMut() -> bool>(secs: f64, mut cond: F) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// For the unanswered ones of `ids`: how their `layer` attempt ended, and why.
pub fn why_unanswered(ctx: &TestContext, ids: &[String], layer: &str) -> BTreeMap<String, usize> {
    let mut why = BTreeMap::new();
    for s in states(ctx, ids).into_iter().flatten() {
        if s.status == QueryStatus::Unanswered
            && let Some(a) = s.layer_attempts.iter().find(|a| a.layer == layer)
        {
            let reason = a.reason.clone().unwrap_or_default();
            *why.entry(format!("{:?}: {reason}", a.outcome)).or_default() += 1;
        }
    }
    why
}

/// Asserts every one of `ids` is answered or unanswered (none failed) and
/// returns (answered, unanswered).
pub fn answered_or_not(statuses: &HashMap<String, usize>, n: usize) -> (usize, usize) {
    assert_eq!(statuses.get("failed"), None, "{statuses:?}");
    let answered = statuses.get("answered").copied().unwrap_or(0);
    let unanswered = statuses.get("unanswered").copied().unwrap_or(0);
    assert_eq!(answered + unanswered, n, "{statuses:?}");
    (answered, unanswered)
}

/// The health record of `name` (`<p>:health:<name>`), as JSON; None when
/// the key is absent (never written, removed, or expired).
pub fn health(ctx: &TestContext, name: &str) -> Option<serde_json::Value> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(ctx.keys().health(name))
        .query(&mut ctx.raw())
        .unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

/// The `in_flight` counter of `name`'s health record (queries for a daemon,
/// jobs for a worker); None when it has no record.
pub fn in_flight(ctx: &TestContext, name: &str) -> Option<u64> {
    health(ctx, name).map(|h| h["counters"]["in_flight"].as_u64().unwrap_or(0))
}

/// Waits until every one of `names` has a health record and every daemon
/// among them lists in its `live_layers` each layer a healthy worker among
/// them serves: from then on those daemons hand jobs to those workers
/// instead of skipping the layer.
pub async fn wait_reporting(ctx: &TestContext, names: &[&str]) {
    let seen = || {
        names
            .iter()
            .map(|n| (*n, health(ctx, n)))
            .collect::<Vec<_>>()
    };
    let ready = || {
        let records = seen();
        if records.iter().any(|(_, h)| h.is_none()) {
            return false;
        }
        let records: Vec<serde_json::Value> = records.into_iter().filter_map(|(_, h)| h).collect();
        let served: BTreeSet<&str> = records
            .iter()
            .filter(|h| h["role"] == "worker" && h["healthy"] == true)
            .filter_map(|h| h["layer"].as_str())
            .collect();
        records.iter().filter(|h| h["role"] == "daemon").all(|h| {
            let live: BTreeSet<&str> = h["live_layers"]
                .as_array()
                .map(|a| a.iter().filter_map(|l| l.as_str()).collect())
                .unwrap_or_default();
            served.is_subset(&live)
        })
    };
    assert!(
        eventually(20.0, ready).await,
        "{names:?} report health and the daemons see the workers' layers: {:?}",
        seen()
    );
}

/// `env` plus `orchestrator.instance_id = id`.
pub fn with_instance(env: &[(String, String)], id: &str) -> Vec<(String, String)> {
    let mut e = env.to_vec();
    e.push(("KITBASH_ORCHESTRATOR__INSTANCE_ID".into(), id.into()));
    e
}

/// The `hits` counters of every layer, summed (`stats:<layer>`).
pub fn counted_hits(ctx: &TestContext) -> u64 {
    let mut conn = ctx.raw();
    ["layer0", "layer1", "layer2", "layer4"]
        .iter()
        .map(|l| {
            redis::cmd("HGET")
                .arg(ctx.keys().stats(l))
                .arg("hits")
                .query::<Option<u64>>(&mut conn)
                .unwrap()
                .unwrap_or(0)
        })
        .sum()
}

/// Asserts that within 10 s no processing list holds anything (every
/// daemon's, every worker's of every layer: orphans go back within two
/// sweeps) and the queue is empty.
pub async fn assert_drained(ctx: &TestContext) {
    let stuck = || {
        let mut keys = keys_matching(ctx, &ctx.keys().processing("*"));
        keys.extend(keys_matching(ctx, &ctx.keys().jobs_processing("*", "*")));
        keys
    };
    assert!(
        eventually(10.0, || stuck().is_empty()).await,
        "{:?}",
        stuck()
    );
    let queue: usize = redis::cmd("LLEN")
        .arg(ctx.keys().queue())
        .query(&mut ctx.raw())
        .unwrap();
    assert_eq!(queue, 0);
}

/// The stored states of `ids`, byte for byte (None: no state), to tell
/// whether anything rewrote one.
pub fn raw_states(ctx: &TestContext, ids: &[String]) -> Vec<Option<String>> {
    let mut conn = ctx.raw();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.get(ctx.keys().state(id));
        }
        out.extend(pipe.query::<Vec<Option<String>>>(&mut conn).unwrap());
    }
    out
}

/// Asserts each of `ids` has a terminal state and exactly one terminal event
/// in `events`, of the kind its status calls for (`query_completed` for
/// answered and unanswered; `query_failed`, or `query_dead` for one failed
/// by recovery, for failed). Returns the status counts.
pub fn assert_one_terminal_event(
    ctx: &TestContext,
    events: &[(String, String, String)],
    ids: &[String],
) -> HashMap<String, usize> {
    let kinds = ["query_completed", "query_failed", "query_dead"];
    let mut terminal: HashMap<&str, Vec<&str>> = HashMap::new();
    for (e, q, _) in events {
        if let Some(k) = kinds.iter().find(|k| **k == e.as_str()) {
            terminal.entry(q.as_str()).or_default().push(k);
        }
    }
    let mut statuses = HashMap::new();
    let mut wrong = Vec::new();
    for (id, s) in ids.iter().zip(states(ctx, ids)) {
        let s = s.unwrap_or_else(|| panic!("{id} has no state"));
        assert!(s.status.is_terminal(), "{id} is {:?}", s.status);
        let got = terminal.get(id.as_str()).cloned().unwrap_or_default();
        let fits = match got.as_slice() {
            [k] if s.status == QueryStatus::Failed => *k != "query_completed",
            [k] => *k == "query_completed",
            _ => false,
        };
        if !fits {
            wrong.push(format!("{id} ({}): {got:?}", s.status.as_str()));
        }
        *statuses.entry(s.status.as_str().to_string()).or_default() += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} of {} queries without exactly one fitting terminal event, e.g. {:?}",
        wrong.len(),
        ids.len(),
        &wrong[..wrong.len().min(10)]
    );
    statuses
}

/// Length of the list at `key` (0 when absent).
pub fn llen(ctx: &TestContext, key: &str) -> usize {
    redis::cmd("LLEN").arg(key).query(&mut ctx.raw()).unwrap()
}

/// Jobs of `layers` not answered yet: in the job lists and in every
/// worker's processing list.
pub fn jobs_pending(ctx: &TestContext, layers: &[&str]) -> usize {
    let keys = ctx.keys();
    layers
        .iter()
        .map(|l| {
            llen(ctx, &keys.jobs(l))
                + keys_matching(ctx, &keys.jobs_processing(l, "*"))
                    .iter()
                    .map(|k| llen(ctx, k))
                    .sum::<usize>()
        })
        .sum()
}

/// Waits (up to `secs`) until nothing is under way any more: every one of
/// `procs` has a health record saying nothing is in flight, no daemon holds
/// a query or has an unread reply, no job of `layers` waits, and the queue
/// is empty. A process with no health record has not run since it lost it
/// (a frozen one), so it has not settled. Panics naming what is not.
pub async fn wait_settled(ctx: &TestContext, procs: &[&str], layers: &[&str], secs: f64) {
    let unsettled = || {
        let keys = ctx.keys();
        let mut busy = Vec::new();
        for p in procs {
            match in_flight(ctx, p) {
                None => busy.push(format!("{p}: no health record")),
                Some(0) => {}
                Some(n) => busy.push(format!("{p}: {n} in flight")),
            }
            let replies = llen(ctx, &keys.replies(p));
            if replies > 0 {
                busy.push(format!("{p}: {replies} unread replies"));
            }
        }
        for list in keys_matching(ctx, &keys.processing("*")) {
            busy.push(format!("{list}: {}", llen(ctx, &list)));
        }
        let jobs = jobs_pending(ctx, layers);
        if jobs > 0 {
            busy.push(format!("{jobs} jobs of {layers:?} pending"));
        }
        let queued = llen(ctx, &keys.queue());
        if queued > 0 {
            busy.push(format!("{queued} queued"));
        }
        busy
    };
    assert!(
        eventually(secs, || unsettled().is_empty()).await,
        "not settled after {secs} s: {:?}",
        unsettled()
    );
}
