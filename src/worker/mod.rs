//! Workers (`kitbash worker <kind>`): one runtime for every kind.
//!
//! The runtime takes jobs from `<p>:jobs:<layer>` into the worker's own
//! processing list (a batch when there is a backlog, else one `BLMOVE` on a
//! dedicated blocking connection; in cluster mode one such loop per
//! partition), up to its concurrency, drops jobs whose deadline has passed, asks the
//! [`Backend`] for an answer, replies with `LPUSH <reply_to>` and removes the
//! job. A heartbeat writes `<p>:health:<name>` with counters, and says
//! `healthy: false` while the backend cannot answer, so the daemon skips the
//! layer instead of waiting on it.
//!
//! Kinds: [`echo`] (tests, benchmarks), and the bitnet, cartridge and llm
//! backends.

pub mod backend;
pub mod bitnet;
pub mod cartridge;
pub mod echo;
pub mod generated;
mod http_client;
pub mod llm;
pub mod logprobs;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::connection::RedisConn;
use redis::AsyncCommands;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use backend::{Backend, BackendAnswer, BackendError};

use crate::config::{Settings, WorkerKind};
use crate::observe::feed::{Event, EventKind};
use crate::protocol::{Job, Reply, ReplyOutcome};
use crate::state::now_rfc3339;
use crate::store::blackboard::{Blackboard, Health, ProcessRole};
use crate::store::connection::{ConnectError, Connector};
use crate::store::lanes::Lane;
use crate::store::liveness::{DeathWatch, HeartbeatFailures, Reading};
use crate::store::orphans::{Held, OrphanSweep};
use crate::store::outage::{Backoff, OutageLog};

/// How long a reply list lives after the last reply pushed to it. A live
/// daemon reads its replies within milliseconds; this only bounds the list of
/// a daemon that died.
pub const REPLY_TTL_MS: i64 = 60_000;
/// How long one blocking take waits before looking at shutdown and health again.
const BLOCK_FOR: Duration = Duration::from_secs(1);

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Redis could not be reached before shutdown was requested.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// No layer is served by this kind of worker.
    #[error(
        "no layer in the configuration has `worker: {0}`; set layers.<name>.worker or pass --layer"
    )]
    NoLayer(WorkerKind),
    /// The backend could not be set up.
    #[error("cannot start the {kind} backend: {reason}")]
    Backend {
        /// The worker kind.
        kind: WorkerKind,
        /// Why.
        reason: String,
    },
}

/// Choices made on the command line.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The kind (names health keys and logs).
    pub kind: WorkerKind,
    /// Worker name; default `<kind>-<host>-<8 hex>`.
    pub name: Option<String>,
    /// Layer to serve; default the first layer whose `worker` is this kind.
    pub layer: Option<String>,
    /// Jobs worked on at once.
    pub concurrency: usize,
}

/// Counters a worker reports in its health record.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    healthy: AtomicBool,
    reason: Mutex<Option<String>>,
    /// Jobs answered (hit or miss).
    pub jobs_done: AtomicU64,
    /// Jobs answered with an error.
    pub jobs_failed: AtomicU64,
    /// Jobs dropped: deadline passed, or malformed without a reply address.
    pub jobs_dropped: AtomicU64,
    /// Sum of answer latencies, in microseconds.
    pub latency_sum_us: AtomicU64,
    /// Jobs being worked on now.
    pub in_flight: AtomicU64,
    /// When this worker last could not write its health key.
    pub heartbeat_failures: HeartbeatFailures,
}

impl WorkerStatus {
    /// Whether the backend answered its last check.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn set_health(&self, result: &Result<(), String>) -> bool {
        let healthy = result.is_ok();
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        *self.reason.lock().expect("reason lock") = result.as_ref().err().cloned();
        was != healthy
    }

    fn reason(&self) -> Option<String> {
        self.reason.lock().expect("reason lock").clone()
    }

    fn counters(&self) -> serde_json::Map<String, serde_json::Value> {
        let done = self.jobs_done.load(Ordering::Relaxed);
        let failed = self.jobs_failed.load(Ordering::Relaxed);
        let answered = done + failed;
        let mean = if answered == 0 {
            0.0
        } else {
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1000.0 / answered as f64
        };
        let mut m = serde_json::Map::new();
        m.insert("jobs_done".into(), done.into());
        m.insert("jobs_failed".into(), failed.into());
        m.insert(
            "jobs_dropped".into(),
            self.jobs_dropped.load(Ordering::Relaxed).into(),
        );
        m.insert(
            "mean_latency_ms".into(),
            ((mean * 1000.0).round() / 1000.0).into(),
        );
        m.insert(
            "in_flight".into(),
            self.in_flight.load(Ordering::Relaxed).into(),
        );
        m
    }
}

/// A configured worker, not yet running.
pub struct Worker<B: Backend> {
    settings: Arc<Settings>,
    backend: Arc<B>,
    kind: WorkerKind,
    name: String,
    layer: String,
    concurrency: usize,
    status: Arc<WorkerStatus>,
}

/// What the jobs of one partition's job list share (one partition on one
/// server); every partition's runtime shares the backend and the status.
struct Runtime<B: Backend> {
    bb: Blackboard,
    kind: WorkerKind,
    backend: Arc<B>,
    name: String,
    layer: String,
    /// The layer's job lists, highest lane first (`normal` is
    /// `<p>:jobs:<layer>`).
    lanes: [String; 4],
    /// Rung with every job pushed (`<p>:jobs:<layer>:bell`).
    bell: String,
    processing_key: String,
    replies_prefix: String,
    status: Arc<WorkerStatus>,
    /// The jobs of the processing list a slot holds (see `crate::store::orphans`).
    held: Arc<Held>,
    /// One log line per Redis outage.
    outage: Arc<OutageLog>,
}

fn default_name(kind: WorkerKind) -> String {
    let id = crate::store::names::generate_instance_id();
    format!("{kind}-{id}")
}

impl<B: Backend> Worker<B> {
    /// A worker of `opts.kind` answering with `backend`.
    pub fn new(settings: Settings, backend: B, opts: WorkerOptions) -> Result<Self, WorkerError> {
        let layer = match opts.layer {
            Some(l) => l,
            None => settings
                .layers
                .iter()
                .find(|(_, l)| l.worker == Some(opts.kind))
                .map(|(n, _)| n.clone())
                .ok_or(WorkerError::NoLayer(opts.kind))?,
        };
        Ok(Self {
            name: opts.name.unwrap_or_else(|| default_name(opts.kind)),
            kind: opts.kind,
            layer,
            concurrency: opts.concurrency.max(1),
            backend: Arc::new(backend),
            settings: Arc::new(settings),
            status: Arc::new(WorkerStatus::default()),
        })
    }

    /// The worker's name (its health key's suffix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer it serves.
    pub fn layer(&self) -> &str {
        &self.layer
    }

    /// The backend, e.g. to reload it on SIGHUP.
    pub fn backend(&self) -> Arc<B> {
        self.backend.clone()
    }

    /// Live counters.
    pub fn status(&self) -> Arc<WorkerStatus> {
        self.status.clone()
    }

    /// Runs until `shutdown` fires: then stops taking, gives jobs in
    /// progress `workers.shutdown_grace_s`, returns unfinished ones to the
    /// job list and removes its health key.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let settings = self.settings.clone();
        let connector = Connector::new(&settings.redis)?;
        tracing::info!(worker = %self.name, kind = %self.kind, layer = %self.layer, redis = %connector.url(), "starting worker");
        let mut conn = connector.shared_lazy()?;
        connector.wait_until_up(&mut conn, &shutdown).await?;
        let bb = Blackboard::from_settings(conn, &settings);
        let outage = Arc::new(OutageLog::default());
        let runtimes: Vec<Arc<Runtime<B>>> = bb
            .partitions()
            .into_iter()
            .map(|bb| {
                let keys = bb.keys().clone();
                Arc::new(Runtime {
                    lanes: Lane::ALL.map(|l| keys.jobs_lane(&self.layer, l)),
                    bell: keys.jobs_bell(&self.layer),
                    processing_key: keys.jobs_processing(&self.layer, &self.name),
                    replies_prefix: keys.replies(""),
                    bb,
                    kind: self.kind,
                    backend: self.backend.clone(),
                    name: self.name.clone(),
                    layer: self.layer.clone(),
                    status: self.status.clone(),
                    held: Held::new(),
                    outage: outage.clone(),
                })
            })
            .collect();

        // Jobs a previous life of this name, or a dead worker of this layer,
        // left behind go back to the job list (expired ones are dropped
        // when taken).
        let beat = Duration::from_millis(settings.workers.heartbeat_interval_ms);
        let mut watches = Vec::with_capacity(runtimes.len());
        for sh in &runtimes {
            return_jobs(sh, &sh.processing_key).await;
            let mut watch = DeathWatch::for_peers(beat, settings.redis.retry_max_delay());
            recover_dead_workers(sh, &mut watch).await;
            watches.push(watch);
        }

        let check = self.backend.check().await;
        if let Err(reason) = &check {
            tracing::warn!(worker = %self.name, "backend not usable yet: {reason}");
        }
        self.status.set_health(&check);

        let background = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(heartbeat(
            runtimes.clone(),
            settings.clone(),
            watches,
            background.clone(),
        ));

        let abort = CancellationToken::new();
        let slots = TaskTracker::new();
        let capacity = Arc::new(Semaphore::new(self.concurrency));
        for sh in &runtimes {
            let block = connector.blocking(BLOCK_FOR).await?;
            slots.spawn(take_loop(
                sh.clone(),
                block,
                capacity.clone(),
                slots.clone(),
                shutdown.clone(),
                abort.clone(),
            ));
        }
        shutdown.cancelled().await;
        slots.close();

        let grace = Duration::from_secs(settings.workers.shutdown_grace_s);
        tracing::info!(worker = %self.name, in_flight = self.status.in_flight.load(Ordering::Relaxed), "stopping: finishing jobs in progress");
        if tokio::time::timeout(grace, slots.wait()).await.is_err() {
            tracing::warn!(worker = %self.name, "grace period over; returning unfinished jobs");
            abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), slots.wait()).await;
        }
        for sh in &runtimes {
            return_jobs(sh, &sh.processing_key).await;
        }
        background.cancel();
        tracker.close();
        tracker.wait().await;
        if let Err(e) = bb.remove_health(&self.name).await {
            tracing::debug!("cannot remove the health key: {e}");
        }
        tracing::info!(worker = %self.name, "worker stopped");
        Ok(())
    }
}

/// Moves every job in `list` back to the tail of its lane's job list
/// (taken next).
async fn return_jobs<B: Backend>(sh: &Runtime<B>, list: &str) -> usize {
    match return_to_lanes(sh, list, &[]).await {
        Ok(v) => {
            if !v.is_empty() {
                tracing::info!(list, returned = v.len(), "returned jobs to the job lists");
            }
            v.len()
        }
        Err(e) => {
            tracing::warn!("cannot return the jobs of {list}: {e}");
            0
        }
    }
}

/// Moves `jobs` (every job when empty) of `list` that are still in it to
/// the tails of their lanes' job lists, by each job's `priority`
/// (`return_jobs.lua`). Returns the jobs moved.
async fn return_to_lanes<B: Backend>(
    sh: &Runtime<B>,
    list: &str,
    jobs: &[Vec<u8>],
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let mut script = crate::store::scripts::RETURN_JOBS.prepare_invoke();
    script.key(list);
    for lane in &sh.lanes {
        script.key(lane);
    }
    for job in jobs {
        script.arg(job);
    }
    script.invoke_async(&mut sh.bb.connection()).await
}

/// Returns the processing lists of this layer's dead workers to the job
/// list: no health key on two passes a heartbeat apart ([`DeathWatch`]).
async fn recover_dead_workers<B: Backend>(sh: &Runtime<B>, watch: &mut DeathWatch) {
    let keys = sh.bb.keys();
    let lists = match sh
        .bb
        .scan_keys(&keys.jobs_processing_pattern(&sh.layer))
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!("cannot look for dead workers: {e}");
            return;
        }
    };
    let section = format!("jobs:{}:processing", sh.layer);
    let owners: Vec<(String, String)> = lists
        .into_iter()
        .filter_map(|list| {
            let owner = keys.suffix(&list, &section)?.to_string();
            (owner != sh.name).then_some((list, owner))
        })
        .collect();
    watch.retain(|peer| owners.iter().any(|(_, o)| o == peer));
    for (list, owner) in owners {
        let reading = Reading::of(&sh.bb.get_health(&owner).await);
        let dead = watch.observe(
            &owner,
            reading,
            tokio::time::Instant::now(),
            sh.status.heartbeat_failures.last(),
        );
        if dead {
            tracing::warn!(worker = %sh.name, dead = %owner, "worker is dead (no health key on two passes); returning its jobs");
            return_jobs(sh, &list).await;
            watch.forget(&owner);
        }
    }
}

/// Writes the health record every `workers.heartbeat_interval_ms`, after
/// asking the backend whether it can answer.
async fn heartbeat<B: Backend>(
    runtimes: Vec<Arc<Runtime<B>>>,
    settings: Arc<Settings>,
    mut watches: Vec<DeathWatch>,
    cancel: CancellationToken,
) {
    let sh = runtimes[0].clone();
    let every = Duration::from_millis(settings.workers.heartbeat_interval_ms);
    let ttl = Duration::from_secs(settings.workers.health_ttl_s);
    let mut health = Health::new(sh.name.clone(), ProcessRole::Worker);
    health.kind = Some(sh.kind.to_string());
    health.layer = Some(sh.layer.clone());
    health.lanes = true;
    let mut sweeps: Vec<OrphanSweep> = runtimes.iter().map(|_| OrphanSweep::default()).collect();
    // An orphan goes back about as soon as a dead worker's jobs would.
    let sweep_every = Duration::from_secs(settings.workers.health_ttl_s.max(1));
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        let check =
            match tokio::time::timeout(every.max(Duration::from_millis(500)), sh.backend.check())
                .await
            {
                Ok(r) => r,
                Err(_) => Err("health check timed out".to_string()),
            };
        if sh.status.set_health(&check) {
            match &check {
                Ok(()) => tracing::info!(worker = %sh.name, "backend usable again; taking jobs"),
                Err(r) => {
                    tracing::warn!(worker = %sh.name, "backend not usable ({r}); reporting unhealthy, not taking jobs")
                }
            }
            let mut e = Event::global(EventKind::WorkerHealth)
                .worker(sh.name.as_str())
                .layer(sh.layer.as_str());
            e = e.reason(match &check {
                Ok(()) => "healthy".to_string(),
                Err(r) => format!("unhealthy: {r}"),
            });
            let _ = sh.bb.emit(&e).await;
        }
        health.healthy = sh.status.healthy();
        health.reason = sh.status.reason();
        health.updated_at = now_rfc3339();
        health.counters = sh.status.counters();
        match sh.bb.set_health(&health, ttl).await {
            Ok(()) => sh.outage.answered(&sh.name),
            Err(e) => {
                sh.status.heartbeat_failures.failed();
                sh.outage.failed(&sh.name, "writing the health key", &e)
            }
        }
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = tokio::time::Instant::now();
            for ((sh, watch), sweep) in runtimes.iter().zip(&mut watches).zip(&mut sweeps) {
                // A worker of this layer that died since we started.
                recover_dead_workers(sh, watch).await;
                match sweep_orphans(sh, sweep).await {
                    Ok(r) if !r.is_empty() => tracing::warn!(
                        worker = %sh.name,
                        returned = r.len(),
                        "returned jobs of our own processing list that no slot held (a lost response) to the job list"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(worker = %sh.name, "orphan sweep failed: {e}"),
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass of the orphan sweep over the worker's own processing list:
/// confirmed orphans go back to their lanes' job lists.
async fn sweep_orphans<B: Backend>(
    sh: &Runtime<B>,
    sweep: &mut OrphanSweep,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let listed: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(&sh.processing_key)
        .arg(0)
        .arg(-1)
        .query_async(&mut sh.bb.connection())
        .await?;
    let orphans = sweep.pass(listed, &sh.held);
    if orphans.is_empty() {
        return Ok(orphans);
    }
    return_to_lanes(sh, &sh.processing_key, &orphans).await
}

/// Most jobs taken in one round trip.
const MAX_BATCH: usize = 64;

/// Takes the jobs of one partition's job lists while the worker has
/// capacity (`capacity`, shared by the partitions), and answers each in a
/// task of its own, until `shutdown`.
///
/// A take moves a batch from the layer's lanes (`take_lanes.lua`: highest
/// lane first, each lower lane at its minimum share) into the worker's
/// processing list. When every lane is empty the loop waits on the layer's
/// bell, which the daemon rings with every job it pushes (a job pushed
/// without a ring is found within `BLOCK_FOR`).
///
/// A wait holds no capacity: with fewer slots than partitions, a loop
/// waiting on an empty list must not keep a slot from the loop whose list
/// has work. So a loop waits until a slot is free, takes, and then claims a
/// slot per job; a job it cannot claim a slot for (another partition's loop
/// took the last one meanwhile) goes straight back to the tail of its
/// lane's list, taken next, by this worker or another.
async fn take_loop<B: Backend>(
    sh: Arc<Runtime<B>>,
    mut block: RedisConn,
    capacity: Arc<Semaphore>,
    jobs: TaskTracker,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut conn = sh.bb.connection();
    let shares = sh.bb.limits().lane_min_share;
    // Each lane's credit toward its minimum share, from batch to batch.
    let mut credits = [0.0; 4];
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if !sh.status.healthy() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            }
        }
        // Wait for a free slot, without keeping it.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            p = capacity.acquire() => drop(p.expect("semaphore never closed")),
        }
        let want = capacity.available_permits().clamp(1, MAX_BATCH);
        let taken = crate::store::lanes::take(
            &mut conn,
            &sh.processing_key,
            &sh.lanes,
            want,
            want,
            &mut credits,
            shares,
        )
        .await;
        let taken = match taken {
            Ok(v) => v,
            Err(e) => {
                sh.outage.failed(&sh.name, "taking jobs", &e);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_wait()) => continue,
                }
            }
        };
        sh.outage.answered(&sh.name);
        backoff.reset();
        if taken.is_empty() {
            // Idle: wait for a ring (or BLOCK_FOR), then take again. Cut
            // short only by shutdown, when a swallowed ring no longer
            // matters.
            let mut wait = redis::cmd("BLPOP");
            wait.arg(&sh.bell).arg(BLOCK_FOR.as_secs_f64());
            let rang: redis::RedisResult<Option<(String, String)>> = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = wait.query_async(&mut block) => r,
            };
            if let Err(e) = rang {
                sh.outage.failed(&sh.name, "waiting for jobs", &e);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
            continue;
        }
        for (raw, _) in taken {
            let Ok(permit) = capacity.clone().try_acquire_owned() else {
                give_back(&sh, raw).await;
                continue;
            };
            let held = sh.held.hold(&raw);
            sh.status.in_flight.fetch_add(1, Ordering::Relaxed);
            let (sh, abort) = (sh.clone(), abort.clone());
            jobs.spawn(async move {
                tokio::select! {
                    _ = handle_job(&sh, &raw) => {}
                    // Abandoned: the job stays in the processing list and is returned.
                    _ = abort.cancelled() => {}
                }
                sh.status.in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(held);
                drop(permit);
            });
        }
    }
}

/// Puts a job taken without a free slot back at the tail of its lane's
/// job list (taken next). If that fails the job stays in the processing
/// list, and the orphan sweep returns it.
async fn give_back<B: Backend>(sh: &Runtime<B>, raw: Vec<u8>) {
    if let Err(e) = return_to_lanes(sh, &sh.processing_key, &[raw]).await {
        sh.outage.failed(&sh.name, "returning a job", &e);
    }
}

async fn handle_job<B: Backend>(sh: &Runtime<B>, raw: &[u8]) {
    let job: Job = match serde_json::from_slice(raw) {
        Ok(j) => j,
        Err(e) => return malformed(sh, raw, format!("malformed job: {e}")).await,
    };
    if !job.reply_to.starts_with(&sh.replies_prefix) {
        // Never push to a key that is not a reply list, whoever asks.
        return drop_job(
            sh,
            raw,
            Some(&job.query_id),
            format!(
                "reply_to {:?} is not a reply list ({}*)",
                job.reply_to, sh.replies_prefix
            ),
        )
        .await;
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    if job.deadline_ms <= now_ms {
        return drop_job(
            sh,
            raw,
            Some(&job.query_id),
            format!(
                "deadline passed {} ms before the job was taken",
                now_ms - job.deadline_ms
            ),
        )
        .await;
    }
    let t0 = std::time::Instant::now();
    let left = Duration::from_millis((job.deadline_ms - now_ms) as u64);
    let deadline = tokio::time::Instant::now() + left;
    let result =
        match tokio::time::timeout_at(deadline, sh.backend.answer(&job.text, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Deadline),
        };
    let latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut reply = Reply {
        job_id: job.job_id.clone(),
        query_id: job.query_id.clone(),
        layer: job.layer.clone(),
        worker: sh.name.clone(),
        outcome: ReplyOutcome::Miss,
        answer: None,
        confidence: None,
        source: None,
        latency_ms: Some((latency_ms * 1000.0).round() / 1000.0),
        error: None,
        reason: None,
    };
    match result {
        Ok(Some(a)) => {
            reply.outcome = ReplyOutcome::Hit;
            reply.confidence = Some(a.confidence.clamp(0.0, 1.0));
            reply.answer = Some(a.text);
            reply.source = a.source;
        }
        Ok(None) => reply.confidence = Some(0.0),
        Err(BackendError::NotAnAnswer(why)) => {
            reply.confidence = Some(0.0);
            reply.reason = Some(why);
        }
        Err(BackendError::Deadline) => {
            // Nobody waits for this answer any more.
            return drop_job(
                sh,
                raw,
                Some(&job.query_id),
                "deadline passed while answering".into(),
            )
            .await;
        }
        Err(e) => {
            reply.outcome = ReplyOutcome::Error;
            reply.error = Some(e.to_string());
        }
    }
    sh.status
        .latency_sum_us
        .fetch_add((latency_ms * 1000.0) as u64, Ordering::Relaxed);
    if reply.outcome == ReplyOutcome::Error {
        sh.status.jobs_failed.fetch_add(1, Ordering::Relaxed);
    } else {
        sh.status.jobs_done.fetch_add(1, Ordering::Relaxed);
    }
    send_reply(sh, raw, &job.reply_to, &reply).await;
}

/// LPUSHes the reply (with a TTL on the list) and removes the job, retrying
/// while Redis is away, as long as someone may still wait for it.
async fn send_reply<B: Backend>(sh: &Runtime<B>, raw: &[u8], reply_to: &str, reply: &Reply) {
    let json = serde_json::to_string(reply).expect("a reply serializes");
    let mut conn = sh.bb.connection();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
    for attempt in 0..5 {
        let res: redis::RedisResult<()> = redis::pipe()
            .lpush(reply_to, &json)
            .ignore()
            .pexpire(reply_to, REPLY_TTL_MS)
            .ignore()
            .lrem(&sh.processing_key, 1, raw)
            .ignore()
            .query_async(&mut conn)
            .await;
        match res {
            Ok(()) => return,
            Err(e) => {
                sh.outage.failed(&sh.name, "sending a reply", &e);
                tracing::debug!(worker = %sh.name, job_id = %reply.job_id, attempt, "cannot send the reply: {e}");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// A job that cannot be parsed: an error reply when it names a usable
/// `reply_to`, else dropped; an event either way.
async fn malformed<B: Backend>(sh: &Runtime<B>, raw: &[u8], reason: String) {
    let value: Option<serde_json::Value> = serde_json::from_slice(raw).ok();
    let field =
        |name: &str| -> Option<String> { value.as_ref()?.get(name)?.as_str().map(str::to_string) };
    let reply_to = field("reply_to").filter(|r| r.starts_with(&sh.replies_prefix));
    let query_id = field("query_id");
    match reply_to {
        Some(reply_to) => {
            tracing::warn!(worker = %sh.name, "{reason}; answering with an error");
            let reply = Reply {
                job_id: field("job_id").unwrap_or_default(),
                query_id: query_id.clone().unwrap_or_default(),
                layer: field("layer").unwrap_or_else(|| sh.layer.clone()),
                worker: sh.name.clone(),
                outcome: ReplyOutcome::Error,
                answer: None,
                confidence: None,
                source: None,
                latency_ms: Some(0.0),
                error: Some(reason.clone()),
                reason: None,
            };
            sh.status.jobs_failed.fetch_add(1, Ordering::Relaxed);
            record(sh, query_id.as_deref(), EventKind::LayerError, &reason).await;
            send_reply(sh, raw, &reply_to, &reply).await;
        }
        None => drop_job(sh, raw, query_id.as_deref(), reason).await,
    }
}

/// Removes a job without replying, with an event saying why.
async fn drop_job<B: Backend>(sh: &Runtime<B>, raw: &[u8], query_id: Option<&str>, reason: String) {
    tracing::info!(worker = %sh.name, query_id = query_id.unwrap_or(""), "dropping job: {reason}");
    sh.status.jobs_dropped.fetch_add(1, Ordering::Relaxed);
    let kind = if reason.contains("deadline") {
        EventKind::LayerTimeout
    } else {
        EventKind::LayerError
    };
    record(sh, query_id, kind, &reason).await;
    let mut conn = sh.bb.connection();
    if let Err(e) = conn.lrem::<_, _, i64>(&sh.processing_key, 1, raw).await {
        tracing::warn!(worker = %sh.name, "cannot remove a dropped job: {e}");
    }
}

async fn record<B: Backend>(
    sh: &Runtime<B>,
    query_id: Option<&str>,
    kind: EventKind,
    reason: &str,
) {
    let e = match query_id {
        Some(q) if !q.is_empty() => Event::new(kind, q),
        _ => Event::global(kind),
    };
    let e = e
        .layer(sh.layer.as_str())
        .worker(sh.name.as_str())
        .reason(format!("worker: {reason}"));
    if let Err(err) = sh.bb.emit(&e).await {
        tracing::debug!("cannot record an event: {err}");
    }
}
