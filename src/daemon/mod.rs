//! The orchestrator daemon (`kitbash serve`).
//!
//! One daemon instance runs these tasks, all stopped by one
//! `CancellationToken` (see [`Daemon::run`]):
//!
//! - the taking loop: moves queue entries into this instance's processing
//!   list (a batch up to the free capacity in one round trip, or one
//!   blocking `BLMOVE` when the queue is empty) and starts a task per query;
//! - the reply reader (`replies.rs`): one blocking connection that hands
//!   worker replies to the queries waiting for them;
//! - the worker directory: which layers have a live worker, refreshed in the
//!   background so no query waits on a layer nobody serves;
//! - the heartbeat: `<p>:health:<instance>` with a TTL;
//! - recovery (`recovery.rs`): returns the processing lists of dead daemons
//!   to the queue;
//! - the HTTP endpoint (`http.rs`).

mod cascade;
mod consensus;
mod crystallize;
pub mod dashboard;
pub mod direct;
mod dispatch;
mod finish;
mod finisher;
pub mod http;
mod instance;
pub mod intake;
pub mod prom;
mod recovery;
mod replies;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use finish::DEAD_LIST_CAP;
use instance::Instance;
use status::DaemonStatus;

use crate::config::Settings;
use crate::store::blackboard::{Blackboard, Health, ProcessRole};
use crate::store::connection::{ConnectError, Connector};
use crate::store::outage::Backoff;

use crate::store::connection::RedisConn;
use crate::store::lanes::{self, Lane};
use crate::store::orphans::HeldEntry;
use crate::store::take::{Taken, blocking_move};

/// How long one blocking take waits before looking at shutdown and capacity again.
pub(crate) const BLOCK_FOR: Duration = Duration::from_secs(1);
/// Most entries taken in one batch.
const MAX_BATCH: usize = 512;

/// Errors that stop a daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Redis could not be reached before shutdown was requested.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP endpoint could not listen.
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A daemon instance, configured and not yet running.
pub struct Daemon {
    settings: Arc<Settings>,
    instance: String,
    status: Arc<DaemonStatus>,
}

impl Daemon {
    /// A daemon for `settings`; its instance id is `orchestrator.instance_id`
    /// or a generated one.
    pub fn new(settings: Settings) -> Self {
        let instance = settings
            .orchestrator
            .instance_id
            .clone()
            .unwrap_or_else(crate::store::names::generate_instance_id);
        Self {
            status: Arc::new(DaemonStatus::new(instance.clone())),
            settings: Arc::new(settings),
            instance,
        }
    }

    /// This daemon's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The live status (for tests and the HTTP endpoint).
    pub fn status(&self) -> Arc<DaemonStatus> {
        self.status.clone()
    }

    /// Binds the HTTP endpoint (when enabled) and runs until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let listener = if self.settings.http.enabled {
            let addr = self.settings.http.listen;
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Listen { addr, source })?,
            )
        } else {
            None
        };
        self.run_with_listener(listener, shutdown).await
    }

    /// Runs until `shutdown` fires, serving HTTP on `listener` if given.
    ///
    /// On shutdown: stops taking, gives in-flight queries
    /// `orchestrator.shutdown_grace_s` to finish, returns what is left to the
    /// queue, removes its health key and returns.
    pub async fn run_with_listener(
        self,
        listener: Option<tokio::net::TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        let settings = self.settings.clone();
        let status = self.status.clone();
        let instance = self.instance.clone();
        let connector = Connector::new(&settings.redis)?;
        let background = CancellationToken::new();
        let background_http = background.clone();
        let tracker = TaskTracker::new();

        let layers: Vec<_> = settings
            .layers_in_order()
            .into_iter()
            .map(|(n, l)| (n.to_string(), l.clone()))
            .collect();

        tracing::info!(instance = %instance, redis = %connector.url(), "starting daemon");
        // The HTTP endpoint answers from the start: liveness at once,
        // readiness (503) until Redis answers and the loop runs.
        let mut conn = connector.shared_lazy()?;
        let bb = Blackboard::from_settings(conn.clone(), &settings);
        if let Some(listener) = listener {
            let state = http::HttpState {
                status: status.clone(),
                blackboard: bb.clone(),
                layers,
                dashboard: settings.http.dashboard.clone(),
            };
            tracker.spawn(async move {
                if let Err(e) = http::serve(listener, state, background_http).await {
                    tracing::error!("HTTP endpoint stopped: {e}");
                }
            });
        }
        if let Err(e) = connector.wait_until_up(&mut conn, &shutdown).await {
            background.cancel();
            tracker.close();
            tracker.wait().await;
            return Err(e.into());
        }
        status.set_redis_ok(true);

        // One instance per partition (one on one server): each takes from
        // its partition's queue into its own processing list and reads its
        // own reply list; all share the capacity and the status.
        let group = Instance::group(bb.clone(), settings.clone(), status.clone());

        // Load the scripts once, so the hot path's EVALSHA rarely meets NOSCRIPT.
        crate::store::scripts::load_all(&mut bb.connection()).await;
        // A previous life of this instance id may have left entries behind.
        for sh in &group {
            recovery::return_own(&sh.bb, &sh.processing_key).await;
        }

        spawn_shared_tasks(&group[0], &tracker, &background).await;
        let worker_layers: Vec<String> = settings
            .layers_in_order()
            .into_iter()
            .filter(|(_, l)| l.kind == crate::config::LayerKind::Worker)
            .map(|(n, _)| n.to_string())
            .collect();
        // Critical and high queries run on an express twin of each
        // instance, with a Redis connection of its own.
        let express_conn = connector.shared_lazy()?;
        let express: Vec<Arc<Instance>> = group
            .iter()
            .map(|sh| sh.express_twin(express_conn.clone()))
            .collect();
        let mut take_conns = Vec::with_capacity(group.len());
        for sh in &group {
            spawn_reply_reader(sh, &connector, &tracker, &background).await?;
            tracker.spawn(recovery::run(
                sh.bb.clone(),
                instance.clone(),
                settings.orchestrator.max_attempts,
                Duration::from_secs(settings.orchestrator.recovery_interval_s),
                sh.clone(),
                background.clone(),
            ));
            tracker.spawn(maintenance(
                sh.bb.clone(),
                worker_layers.clone(),
                background.clone(),
            ));
            take_conns.push((
                connector.blocking(BLOCK_FOR).await?,
                connector.blocking(BLOCK_FOR).await?,
            ));
        }

        let abort = CancellationToken::new();
        let queries = TaskTracker::new();
        let slots = Slots::new(&settings);
        status.set_loop_running(true);
        futures_util::future::join_all(group.iter().zip(&express).zip(take_conns).map(
            |((sh, express), (take, bell))| {
                take_loop(
                    sh,
                    express,
                    take,
                    bell,
                    slots.clone(),
                    &queries,
                    &abort,
                    &shutdown,
                )
            },
        ))
        .await;
        status.set_loop_running(false);

        // Drain: in-flight queries get the grace period, then are aborted
        // and their entries returned to the queue.
        queries.close();
        let grace = Duration::from_secs(settings.orchestrator.shutdown_grace_s);
        tracing::info!(
            in_flight = status.in_flight(),
            grace_s = grace.as_secs(),
            "stopping: finishing in-flight queries"
        );
        if tokio::time::timeout(grace, queries.wait()).await.is_err() {
            tracing::warn!(
                in_flight = status.in_flight(),
                "grace period over; returning unfinished queries to the queue"
            );
            abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), queries.wait()).await;
        }
        let mut returned = 0;
        for sh in &group {
            returned += recovery::return_own(&sh.bb, &sh.processing_key).await;
        }
        if returned > 0 {
            tracing::info!(returned, "returned unfinished queries to the queue");
        }
        background.cancel();
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
        if let Err(e) = bb.remove_health(&instance).await {
            tracing::debug!("cannot remove the health key: {e}");
        }
        tracing::info!(instance = %instance, "daemon stopped");
        Ok(())
    }
}

/// A wait that outlives one turn of the take loop, with the connection it
/// runs on (given back when it ends).
type Pending<T> = std::pin::Pin<Box<dyn std::future::Future<Output = (RedisConn, T)> + Send>>;

/// What the blocking take's task gives back: its connection, what it
/// took, and (with an entry) the hold it put on the entry the moment it had
/// it, so the orphan sweep never returns an entry the loop has not picked
/// up yet.
type TakeDone = (RedisConn, Taken, Option<HeldEntry>);

/// What a wait on the bell gives: the key and token, or nothing in time.
type Ring = redis::RedisResult<Option<(String, String)>>;

/// The daemon's in-flight slots, shared by its partitions' take loops:
/// every query needs one of `all` (`orchestrator.max_in_flight`); a
/// `normal` or `low` query also one of `lower` (that less
/// `orchestrator.lanes.reserved_in_flight`), so the rest stays free for
/// `critical` and `high` queries.
#[derive(Clone)]
struct Slots {
    all: Arc<Semaphore>,
    lower: Arc<Semaphore>,
}

impl Slots {
    fn new(settings: &Settings) -> Self {
        let all = settings.orchestrator.max_in_flight;
        let reserved = settings.orchestrator.lanes.reserved(all);
        Self {
            all: Arc::new(Semaphore::new(all)),
            lower: Arc::new(Semaphore::new(all - reserved)),
        }
    }
}

/// Takes entries of one partition's priority lanes while the daemon's
/// slots allow, until `shutdown` fires. Critical and high queries run on
/// `express`, the others on `sh`.
///
/// With a backlog it takes batches (`take_lanes.lua`: highest lane first,
/// each lower lane at its minimum share, normal and low only as far as
/// their slots allow). When it has nothing to take it waits, holding no
/// slot, on two connections of its own: a blocking take from the normal
/// lane (the list clients that know no lanes push to), while normal and
/// low have a free slot, and the partition's bell, which a client pushing
/// to another lane rings. Both waits outlive a turn of the loop: a take
/// cancelled half-way could move an entry that no task holds, and a
/// cancelled wait could swallow a ring.
#[allow(clippy::too_many_arguments)]
async fn take_loop(
    sh: &Arc<Instance>,
    express: &Arc<Instance>,
    block_conn: RedisConn,
    bell_conn: RedisConn,
    slots: Slots,
    queries: &TaskTracker,
    abort: &CancellationToken,
    shutdown: &CancellationToken,
) {
    let keys = sh.bb.keys();
    let lanes = Lane::ALL.map(|l| keys.lane(l));
    let shares = sh.bb.limits().lane_min_share;
    // Each lane's credit toward its minimum share, from batch to batch.
    let mut credits = [0.0; 4];
    let mut conn = sh.bb.connection();
    let (mut block_conn, mut bell_conn) = (Some(block_conn), Some(bell_conn));
    let mut take_wait: Option<tokio::task::JoinHandle<TakeDone>> = None;
    let mut bell_wait: Option<Pending<Ring>> = None;
    // What the blocking take got (a normal entry, held), until it has slots.
    let mut early: Option<(Vec<u8>, HeldEntry)> = None;
    // After a blocking take that waited (the lanes were empty), the next
    // take blocks at once instead of first asking for a batch: at light
    // load that saves a round trip per query. A take that returned at once
    // suggests a backlog, and the batch comes first again.
    let mut idle = false;
    let mut backoff = Backoff::default();
    loop {
        // This turn's slots: all free ones (up to a batch), of which as
        // many lower ones as are free; what is not used is released when
        // the turn ends.
        let mut permits = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.all.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let more = slots.all.available_permits().min(MAX_BATCH - 1);
        if more > 0
            && let Ok(p) = slots.all.clone().try_acquire_many_owned(more as u32)
        {
            permits.merge(p);
        }
        let lower_free = slots.lower.available_permits().min(permits.num_permits());
        let mut lower_permits = (lower_free > 0)
            .then(|| {
                slots
                    .lower
                    .clone()
                    .try_acquire_many_owned(lower_free as u32)
                    .ok()
            })
            .flatten();
        let mut lower_room = lower_permits.as_ref().map_or(0, |p| p.num_permits());

        // Each taken entry is held from the moment it is ours, so the
        // orphan sweep leaves it alone.
        let mut taken: Vec<(Vec<u8>, HeldEntry, Lane)> = Vec::new();
        if early.is_none() && take_wait.as_ref().is_some_and(|t| t.is_finished()) {
            let (c, got, hold) = take_wait
                .take()
                .expect("just checked")
                .await
                .expect("the take task does not panic");
            block_conn = Some(c);
            match got {
                Taken::Entry { entry, .. } => {
                    early = Some((entry, hold.expect("a taken entry is held")));
                }
                Taken::Shutdown => break,
                Taken::Nothing => {}
                Taken::Failed(e) => sh.status.redis_failed("taking queries", &e),
            }
        }
        // The blocking take's entry goes first, when normal has a slot.
        if lower_room > 0
            && let Some((entry, hold)) = early.take()
        {
            taken.push((entry, hold, Lane::Normal));
            lower_room -= 1;
        }
        let room = permits.num_permits() - taken.len();
        if !idle && room > 0 {
            match lanes::take(
                &mut conn,
                &sh.processing_key,
                &lanes,
                room,
                lower_room,
                &mut credits,
                shares,
            )
            .await
            {
                Ok(batch) => {
                    for (entry, lane) in batch {
                        let hold = sh.held.hold(&entry);
                        if lane >= Lane::Normal {
                            lower_room -= 1;
                        }
                        taken.push((entry, hold, lane));
                    }
                }
                Err(e) => {
                    sh.status.redis_failed("taking queries", &e);
                    // An entry already taken is worked on; otherwise wait.
                    if taken.is_empty() {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff.next_wait()) => continue,
                        }
                    }
                }
            }
        }
        if taken.is_empty() {
            // Nothing to take: wait holding no slot (the other partitions'
            // loops may need them).
            let lower_blocked = lower_permits.is_none() || early.is_some();
            drop((permits, lower_permits));
            // The blocking take starts only while normal has a free slot
            // (an entry it got waiting for one blocks the lower lanes).
            if !lower_blocked && take_wait.is_none() {
                let conn = block_conn.take().expect("the take's connection is free");
                take_wait = Some(spawn_take(sh, conn, &lanes[Lane::Normal.index()], shutdown));
            }
            let bell = bell_wait.get_or_insert_with(|| {
                ring_wait(
                    bell_conn.take().expect("the bell's connection is free"),
                    keys.bell(),
                )
            });
            let take_done = async {
                match take_wait.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            let lower_freed = async {
                if lower_blocked {
                    drop(slots.lower.acquire().await);
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                done = take_done => {
                    take_wait = None;
                    let (c, got, hold) = done.expect("the take task does not panic");
                    block_conn = Some(c);
                    match got {
                        Taken::Shutdown => break,
                        Taken::Entry { entry, waited } => {
                            idle = waited;
                            early = Some((entry, hold.expect("a taken entry is held")));
                        }
                        Taken::Nothing => {
                            // A lane pushed to without a ring is found by
                            // the batch that comes next.
                            idle = false;
                            sh.status.redis_answered();
                            backoff.reset();
                        }
                        Taken::Failed(e) => {
                            sh.status.redis_failed("taking queries", &e);
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(backoff.next_wait()) => {}
                            }
                        }
                    }
                }
                (c, rang) = bell => {
                    bell_wait = None;
                    bell_conn = Some(c);
                    if let Err(e) = rang {
                        sh.status.redis_failed("waiting on the bell", &e);
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff.next_wait()) => {}
                        }
                    }
                    // Rung (or timed out): take a batch from the lanes.
                    idle = false;
                }
                () = lower_freed => {
                    // A normal or low query ended: their lanes may be taken again.
                    idle = false;
                }
            }
            continue;
        }
        sh.status.redis_answered();
        backoff.reset();
        let (entries, rest): (Vec<Vec<u8>>, Vec<(HeldEntry, Lane)>) =
            taken.into_iter().map(|(e, h, l)| (e, (h, l))).unzip();
        // Read the states of id entries for the whole batch in one round trip.
        let preloaded = preload_states(sh, &entries).await;
        for ((entry, pre), (mut held, lane)) in entries.into_iter().zip(preloaded).zip(rest) {
            let permit = permits.split(1).expect("one slot per taken entry");
            let lower = if lane >= Lane::Normal {
                lower_permits.as_mut().and_then(|p| p.split(1))
            } else {
                None
            };
            let sh = if lane <= Lane::High { express } else { sh }.clone();
            let abort = abort.clone();
            sh.status.begin_query();
            queries.spawn(async move {
                cascade::handle_entry(&sh, entry, pre, &mut held, &abort).await;
                sh.status.end_query();
                drop((permit, lower));
            });
        }
    }
    // A blocking take still waiting may yet move an entry into the
    // processing list: wait it out (it ends within BLOCK_FOR, seeing the
    // shutdown), so the list returned at shutdown holds it.
    if let Some(take) = take_wait {
        let _ = take.await;
    }
}

/// Starts a blocking take from `from` (`BLOCK_FOR` at most) into the
/// instance's processing list as a task of its own, which holds what it
/// takes at once: it goes on while the loop serves a ring or a batch, and
/// the orphan sweep never returns an entry the loop has not picked up yet.
fn spawn_take(
    sh: &Instance,
    mut conn: RedisConn,
    from: &str,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<TakeDone> {
    let (from, to, stop, held) = (
        from.to_string(),
        sh.processing_key.clone(),
        shutdown.clone(),
        sh.held.clone(),
    );
    tokio::spawn(async move {
        let got = blocking_move(&mut conn, &from, &to, BLOCK_FOR, &stop).await;
        let hold = match &got {
            Taken::Entry { entry, .. } => Some(held.hold(entry)),
            _ => None,
        };
        (conn, got, hold)
    })
}

/// A wait on the bell `key` (`BLOCK_FOR` at most) on `conn`, which it
/// gives back with the ring.
fn ring_wait(mut conn: RedisConn, key: String) -> Pending<Ring> {
    Box::pin(async move {
        let rang = redis::cmd("BLPOP")
            .arg(&key)
            .arg(BLOCK_FOR.as_secs_f64())
            .query_async(&mut conn)
            .await;
        (conn, rang)
    })
}

/// For each entry, the state read for it when it looks like an id
/// (`Some(raw)`), or `None` to let the task decide.
async fn preload_states(sh: &Instance, entries: &[Vec<u8>]) -> Vec<Option<Option<String>>> {
    let keys = sh.bb.keys();
    let ids: Vec<(usize, String)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match intake::classify(e, usize::MAX) {
            // An id of another partition is not read here (its key is in
            // another slot); intake refuses it.
            intake::EntryKind::Id(id) if keys.partition_of(&id) == keys.current() => Some((i, id)),
            _ => None,
        })
        .collect();
    let mut out = vec![None; entries.len()];
    if ids.is_empty() {
        return out;
    }
    let mut pipe = redis::pipe();
    for (_, id) in &ids {
        pipe.cmd("GET").arg(sh.bb.keys().state(id));
    }
    let mut conn = sh.bb.connection();
    // A wrong-typed key fails the pipeline: then every task reads its own.
    if let Ok(values) = pipe.query_async::<Vec<Value>>(&mut conn).await {
        for ((i, _), v) in ids.into_iter().zip(values) {
            out[i] = match v {
                Value::Nil => Some(None),
                other => redis::from_redis_value::<String>(other).ok().map(Some),
            };
        }
    }
    out
}

/// The tasks a daemon or direct runner runs once, whatever its partitions:
/// its heartbeat and the worker directory.
async fn spawn_shared_tasks(
    sh: &Arc<Instance>,
    tracker: &TaskTracker,
    background: &CancellationToken,
) {
    let bb = &sh.bb;
    let _ = sh.workers.refresh(bb).await;
    tracker.spawn(heartbeat(
        bb.clone(),
        sh.settings.clone(),
        sh.status.clone(),
        sh.workers.clone(),
        background.clone(),
    ));
    tracker.spawn(sh.workers.clone().run(
        bb.clone(),
        Duration::from_millis(250),
        background.clone(),
    ));
}

/// The reader of one instance's reply list, on its own blocking connection.
async fn spawn_reply_reader(
    sh: &Arc<Instance>,
    connector: &Connector,
    tracker: &TaskTracker,
    background: &CancellationToken,
) -> Result<(), DaemonError> {
    let bb = &sh.bb;
    let reply_conn = connector.blocking(BLOCK_FOR).await?;
    tracker.spawn(replies::read_replies(
        bb.clone(),
        reply_conn,
        sh.status.instance.clone(),
        sh.pending.clone(),
        sh.status.clone(),
        background.clone(),
    ));
    Ok(())
}

/// Keeps the feed and the metrics at their caps, every 10 s (the writers
/// trim as they go, on a fraction of their writes; this catches the rest),
/// drops expired jobs and removes expired crystallised grains.
async fn maintenance(bb: Blackboard, worker_layers: Vec<String>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if let Err(e) = bb.maintain_streams_and_metrics().await {
            tracing::debug!("maintenance pass failed: {e}");
        }
        drop_expired_jobs(&bb, &worker_layers).await;
        match bb.sweep_crystals(1_000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed crystallised grains past their expiry"),
            Err(e) => tracing::debug!("cannot sweep expired crystallised grains: {e}"),
        }
    }
}

/// Removes jobs whose deadline has passed from the old end of each worker
/// layer's job list (a layer whose workers all stopped keeps nothing its
/// queries no longer wait for). Each daemon's query already recorded the
/// layer's timeout; this says how many jobs went, in one log line.
async fn drop_expired_jobs(bb: &Blackboard, layers: &[String]) {
    let mut conn = bb.connection();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for layer in layers {
        let mut script = crate::store::scripts::DROP_EXPIRED_JOBS.prepare_invoke();
        for lane in Lane::ALL {
            script.key(bb.keys().jobs_lane(layer, lane));
        }
        let dropped: redis::RedisResult<i64> =
            script.arg(now_ms).arg(10_000).invoke_async(&mut conn).await;
        match dropped {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(layer = %layer, dropped = n, "dropped jobs whose deadline passed before any worker took them")
            }
            Err(e) => tracing::debug!(layer = %layer, "cannot drop expired jobs: {e}"),
        }
    }
}

/// Writes this daemon's health key every `heartbeat_interval_ms`.
async fn heartbeat(
    bb: Blackboard,
    settings: Arc<Settings>,
    status: Arc<DaemonStatus>,
    workers: replies::WorkerDirectory,
    cancel: CancellationToken,
) {
    let every = Duration::from_millis(settings.orchestrator.heartbeat_interval_ms);
    let ttl = Duration::from_secs(settings.orchestrator.health_ttl_s);
    let mut health = Health::new(status.instance.clone(), ProcessRole::Daemon);
    health.started_at = status.started_at.clone();
    loop {
        health.updated_at = crate::state::now_rfc3339();
        health
            .counters
            .insert("in_flight".into(), status.in_flight().into());
        health.live_layers = workers.live_layers();
        match bb.set_health(&health, ttl).await {
            Ok(()) => status.redis_answered(),
            Err(e) => {
                status.heartbeat_failures.failed();
                status.redis_failed("writing the health key", &e)
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
