//! Helpers: a daemon running in the test, a protocol-speaking test worker,
//! and waiting for outcomes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kitbash::config::Settings;
use kitbash::daemon::Daemon;
use kitbash::protocol::{Job, Reply, ReplyOutcome};
use kitbash::{Blackboard, Health, QueryState};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::common::{PATIENCE, TestContext};

/// TTL of a [`TestWorker`]'s health key (it beats every 200 ms): far above
/// the beat, so that a loaded machine never makes a running worker look dead.
pub const WORKER_HEALTH_TTL: Duration = Duration::from_secs(10);

/// Layer timeout of [`fast`]: far above any lookup or test worker's reply,
/// so that a loaded machine changes the timing only, never the outcome. A
/// test about timeouts sets its own.
pub const LAYER_TIMEOUT_MS: u64 = 10_000;

/// Settings for fast tests: short heartbeats, no HTTP, a daemon health TTL
/// of 1 s (a dropped daemon is found dead quickly), generous layer timeouts
/// and worker health TTLs.
pub fn fast(ctx: &mut TestContext) -> &mut Settings {
    let s = &mut ctx.settings;
    s.http.enabled = false;
    s.orchestrator.heartbeat_interval_ms = 200;
    s.orchestrator.health_ttl_s = 1;
    s.orchestrator.recovery_interval_s = 1;
    s.orchestrator.shutdown_grace_s = 5;
    s.workers.heartbeat_interval_ms = 200;
    s.workers.health_ttl_s = WORKER_HEALTH_TTL.as_secs();
    for l in s.layers.values_mut() {
        l.timeout_ms = LAYER_TIMEOUT_MS;
    }
    s
}

/// The cascade of layer0 and layer2 only (layer1 and layer4 off).
pub fn layer2_only(s: &mut Settings) {
    for l in ["layer1", "layer4"] {
        s.layers.get_mut(l).unwrap().enabled = false;
    }
}

/// A daemon running in this test's runtime until the handle is stopped.
pub struct RunningDaemon {
    pub instance: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), kitbash::daemon::DaemonError>>,
}

impl RunningDaemon {
    pub fn start(settings: &Settings) -> Self {
        let daemon = Daemon::new(settings.clone());
        let instance = daemon.instance().to_string();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon.run(shutdown.clone()));
        Self {
            instance,
            shutdown,
            task,
        }
    }

    /// Waits until this daemon reports a live worker for `layer` in its
    /// health record: from then on it sends that layer jobs.
    pub async fn wait_until_sees(&self, bb: &Blackboard, layer: &str) {
        crate::common::wait_until_daemon_sees(bb, &self.instance, layer).await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("daemon stops")
            .unwrap()
            .unwrap();
    }
}

/// How a test worker answers.
#[derive(Clone)]
pub enum Behaviour {
    /// Reply with this outcome, answer and confidence after `delay`.
    Answer {
        outcome: ReplyOutcome,
        answer: String,
        confidence: f64,
        delay: Duration,
    },
    /// Take the job and never reply.
    Silent,
    /// Reply with this outcome and confidence once the test calls
    /// [`TestWorker::release`].
    AfterRelease {
        outcome: ReplyOutcome,
        confidence: f64,
    },
    /// Reply with a confident hit only once the query has its outcome: a
    /// reply that is late however slow the machine.
    AfterOutcome { answer: String },
}

impl Behaviour {
    /// A hit with `answer` at `confidence` after `delay`.
    pub fn hit(answer: &str, confidence: f64, delay: Duration) -> Self {
        Behaviour::Answer {
            outcome: ReplyOutcome::Hit,
            answer: answer.into(),
            confidence,
            delay,
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        // A test that fails before `stop` must not leave the loops running.
        self.cancel.cancel();
    }
}

/// A worker speaking the protocol: BLMOVE from `jobs:<layer>` into its own
/// processing list, LPUSH the reply to `reply_to`, LREM the job. It keeps
/// its health key alive while running.
pub struct TestWorker {
    pub name: String,
    pub jobs_seen: Arc<AtomicU64>,
    released: CancellationToken,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestWorker {
    pub async fn start(ctx: &TestContext, layer: &str, behaviour: Behaviour) -> Self {
        let name = format!(
            "test-{layer}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let bb = ctx.blackboard().await;
        let cancel = CancellationToken::new();
        let released = CancellationToken::new();
        let jobs_seen = Arc::new(AtomicU64::new(0));
        let mut health = Health::new(
            name.clone(),
            kitbash::store::blackboard::ProcessRole::Worker,
        );
        health.layer = Some(layer.to_string());
        health.kind = Some("test".into());
        bb.set_health(&health, WORKER_HEALTH_TTL).await.unwrap();
        let hb = {
            let bb = bb.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    let _ = bb.set_health(&health, WORKER_HEALTH_TTL).await;
                }
            })
        };
        let client = redis::Client::open(ctx.redis.url.as_str()).unwrap();
        let mut block = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(5))),
            )
            .await
            .unwrap();
        let keys = ctx.keys();
        let jobs = keys.jobs(layer);
        let mine = keys.jobs_processing(layer, &name);
        let worker = {
            let cancel = cancel.clone();
            let name = name.clone();
            let seen = jobs_seen.clone();
            let released = released.clone();
            let conn = bb.connection();
            let bb = bb.clone();
            tokio::spawn(async move {
                loop {
                    let take = redis::cmd("BLMOVE")
                        .arg(&jobs)
                        .arg(&mine)
                        .arg("RIGHT")
                        .arg("LEFT")
                        .arg(0.2)
                        .clone();
                    let got: Option<String> = tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = take.query_async(&mut block) => match r {
                            Ok(v) => v,
                            Err(_) => {
                                // Redis gone (or restarting): no busy loop.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    let Some(raw) = got else { continue };
                    seen.fetch_add(1, Ordering::Relaxed);
                    let job: Job = serde_json::from_str(&raw).unwrap();
                    let b = behaviour.clone();
                    let mut conn2 = conn.clone();
                    let name = name.clone();
                    let mine = mine.clone();
                    let bb = bb.clone();
                    let released = released.clone();
                    tokio::spawn(async move {
                        let answer = match b {
                            Behaviour::Answer {
                                outcome,
                                answer,
                                confidence,
                                delay,
                            } => {
                                tokio::time::sleep(delay).await;
                                Some((outcome, answer, confidence, delay))
                            }
                            Behaviour::Silent => None,
                            Behaviour::AfterRelease {
                                outcome,
                                confidence,
                            } => {
                                released.cancelled().await;
                                Some((outcome, "released".to_string(), confidence, Duration::ZERO))
                            }
                            Behaviour::AfterOutcome { answer } => {
                                let decided = eventually(PATIENCE.as_secs_f64(), || async {
                                    bb.get_state(&job.query_id)
                                        .await
                                        .ok()
                                        .flatten()
                                        .is_some_and(|s| s.status.is_terminal())
                                })
                                .await;
                                assert!(decided, "query {} never finished", job.query_id);
                                Some((ReplyOutcome::Hit, answer, 0.99, Duration::ZERO))
                            }
                        };
                        if let Some((outcome, answer, confidence, delay)) = answer {
                            let reply = Reply {
                                job_id: job.job_id.clone(),
                                query_id: job.query_id.clone(),
                                layer: job.layer.clone(),
                                worker: name.clone(),
                                outcome,
                                answer: Some(answer),
                                confidence: Some(confidence),
                                source: Some("test#1".into()),
                                latency_ms: Some(delay.as_secs_f64() * 1000.0),
                                error: None,
                                reason: None,
                            };
                            let _: () = redis::pipe()
                                .lpush(&job.reply_to, serde_json::to_string(&reply).unwrap())
                                .ignore()
                                .pexpire(&job.reply_to, 60_000)
                                .ignore()
                                .query_async(&mut conn2)
                                .await
                                .unwrap();
                        }
                        let _: i64 = conn2.lrem(&mine, 1, &raw).await.unwrap();
                    });
                }
            })
        };
        Self {
            name,
            jobs_seen,
            released,
            cancel,
            tasks: vec![hb, worker],
        }
    }

    /// Lets `Behaviour::AfterRelease` jobs (taken or yet to come) reply.
    pub fn release(&self) {
        self.released.cancel();
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

/// Waits for a query's completion signal; returns its terminal state.
pub async fn wait_done(ctx: &TestContext, bb: &Blackboard, id: &str, secs: f64) -> QueryState {
    let client = redis::Client::open(ctx.redis.url.as_str()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs_f64(secs + 5.0))),
        )
        .await
        .unwrap();
    let done: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(ctx.keys().done(id))
        .arg(secs)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(done.is_some(), "query {id} did not finish within {secs} s");
    bb.get_state(id).await.unwrap().unwrap()
}

/// Counts feed events per (event, query_id).
pub async fn event_counts(bb: &Blackboard) -> HashMap<(String, String), usize> {
    let mut out = HashMap::new();
    for e in bb.recent_events(1_000_000).await.unwrap() {
        let key = (
            e.event().unwrap_or("").to_string(),
            e.get("query_id").unwrap_or("").to_string(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

/// The events of one query, in order.
pub async fn events_of(bb: &Blackboard, id: &str) -> Vec<(String, Option<String>)> {
    bb.timeline(id, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.event().unwrap().to_string(),
                e.get("layer").map(str::to_string),
            )
        })
        .collect()
}

/// Polls `cond` every 20 ms for up to `secs`.
pub async fn eventually<F, Fut>(secs: f64, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
