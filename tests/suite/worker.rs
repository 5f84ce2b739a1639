//! The worker runtime against a real redis-server, with backends defined
//! here, the echo backend, and the daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{PATIENCE, TestContext};
use kitbash::config::{Settings, WorkerKind};
use kitbash::protocol::{Job, Reply, ReplyOutcome};
use kitbash::worker::echo::EchoBackend;
use kitbash::worker::{Backend, BackendAnswer, BackendError, Worker, WorkerOptions};
use kitbash::{Blackboard, EventKind, QueryState, QueryStatus};
use redis::Commands;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A backend whose health, speed and concurrency the test controls.
#[derive(Default)]
struct TestBackend {
    unhealthy: AtomicBool,
    calls: AtomicU64,
    delay_ms: AtomicU64,
    barrier: Option<tokio::sync::Barrier>,
}

impl Backend for TestBackend {
    async fn answer(
        &self,
        text: &str,
        _deadline: Instant,
    ) -> Result<Option<BackendAnswer>, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(b) = &self.barrier {
            b.wait().await;
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if text == "fail" {
            return Err(BackendError::BadResponse("test failure".into()));
        }
        if text == "nothing" {
            return Ok(None);
        }
        Ok(Some(BackendAnswer {
            text: format!("answer to {text}"),
            confidence: 0.9,
            source: Some("test#1".into()),
        }))
    }

    async fn check(&self) -> Result<(), String> {
        if self.unhealthy.load(Ordering::SeqCst) {
            Err("test backend down".into())
        } else {
            Ok(())
        }
    }
}

/// Short heartbeats; health TTLs far above them, so that a loaded machine
/// never makes a running worker look dead; generous layer timeouts.
fn fast(ctx: &mut TestContext) -> Settings {
    let s = &mut ctx.settings;
    s.http.enabled = false;
    s.orchestrator.heartbeat_interval_ms = 200;
    s.orchestrator.health_ttl_s = 10;
    s.workers.heartbeat_interval_ms = 100;
    s.workers.health_ttl_s = 10;
    s.workers.shutdown_grace_s = 5;
    for l in s.layers.values_mut() {
        l.timeout_ms = 10_000;
    }
    s.clone()
}

/// A Kitbash worker of layer2 running in the test's runtime.
pub(crate) struct Running {
    name: String,
    token: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kitbash::worker::WorkerError>>,
}

impl Running {
    /// Starts one answering with `backend`, `concurrency` jobs at a time.
    pub(crate) fn start<B: Backend>(settings: &Settings, backend: B, concurrency: usize) -> Self {
        let w = Worker::new(
            settings.clone(),
            backend,
            WorkerOptions {
                kind: WorkerKind::Cartridge,
                name: None,
                layer: Some("layer2".into()),
                concurrency,
            },
        )
        .unwrap();
        let name = w.name().to_string();
        let token = CancellationToken::new();
        let task = tokio::spawn(w.run(token.clone()));
        Self { name, token, task }
    }

    /// Stops it and checks it stopped cleanly.
    pub(crate) async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("worker stops")
            .unwrap()
            .unwrap();
    }
}

async fn eventually<F, Fut>(secs: f64, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(secs);
    while std::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn healthy(bb: &Blackboard, name: &str) -> Option<bool> {
    bb.get_health(name).await.unwrap().map(|h| h.healthy)
}

fn job(ctx: &TestContext, text: &str, deadline_in_ms: i64) -> Job {
    Job {
        job_id: uuid::Uuid::new_v4().to_string(),
        query_id: format!("q-{text}"),
        layer: "layer2".into(),
        text: text.into(),
        deadline_ms: chrono::Utc::now().timestamp_millis() + deadline_in_ms,
        reply_to: ctx.keys().replies("test-daemon"),
        priority: None,
    }
}

fn push(ctx: &TestContext, raw: &str) {
    let _: () = ctx.raw().lpush(ctx.keys().jobs("layer2"), raw).unwrap();
}

/// Pops one reply from the test daemon's reply list, waiting up to
/// [`PATIENCE`] (on a blocking thread, so the worker keeps running on the
/// test's runtime).
async fn pop_reply(ctx: &TestContext) -> Option<Reply> {
    let url = ctx.redis.url.clone();
    let key = ctx.keys().replies("test-daemon");
    tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        let r: Option<(String, String)> = conn.brpop(key, PATIENCE.as_secs_f64()).unwrap();
        r.map(|(_, v)| serde_json::from_str(&v).unwrap())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_jobs_and_reports_counters() {
    let mut ctx = TestContext::new();
    let settings = fast(&mut ctx);
    let bb = ctx.blackboard().await;
    let backend = Arc::new(TestBackend::default());
    let w = Running::start(&settings, backend.clone(), 2);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);

    for text in ["kenya", "nothing", "fail"] {
        push(
            &ctx,
            &serde_json::to_string(&job(&ctx, text, 60_000)).unwrap(),
        );
    }
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(pop_reply(&ctx).await.expect("a reply"));
    }
    replies.sort_by(|a, b| a.query_id.cmp(&b.query_id));
    assert_eq!(replies[0].query_id, "q-fail");
    assert_eq!(replies[0].outcome, ReplyOutcome::Error);
    assert!(
        replies[0]
            .error
            .as_deref()
            .unwrap()
            .contains("test failure")
    );
    assert_eq!(replies[1].outcome, ReplyOutcome::Hit);
    assert_eq!(replies[1].answer.as_deref(), Some("answer to kenya"));
    assert_eq!(replies[1].worker, w.name);
    assert_eq!(replies[2].outcome, ReplyOutcome::Miss);

    // Reply lists get a TTL; processing list is empty; counters show up.
    let ttl: i64 = ctx
        .raw()
        .pttl(ctx.keys().replies("test-daemon"))
        .unwrap_or(-2);
    assert!(ttl == -2 || ttl > 0, "reply list bounded: {ttl}");
    let processing: u64 = ctx
        .raw()
        .llen(ctx.keys().jobs_processing("layer2", &w.name))
        .unwrap();
    assert_eq!(processing, 0);
    assert!(
        eventually(60.0, || async {
            let h = bb.get_health(&w.name).await.unwrap().unwrap();
            h.counters["jobs_done"] == 2 && h.counters["jobs_failed"] == 1
        })
        .await
    );
    let h = bb.get_health(&w.name).await.unwrap().unwrap();
    assert_eq!(h.layer.as_deref(), Some("layer2"));
    assert_eq!(h.kind.as_deref(), Some("cartridge"));
    w.stop().await;
    assert!(
        bb.get_health(&h.name).await.unwrap().is_none(),
        "goodbye on stop"
    );
}

#[tokio::test]
async fn a_job_past_its_deadline_is_never_worked_on() {
    let mut ctx = TestContext::new();
    let settings = fast(&mut ctx);
    let bb = ctx.blackboard().await;
    let backend = Arc::new(TestBackend::default());
    let w = Running::start(&settings, backend.clone(), 1);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);
    push(
        &ctx,
        &serde_json::to_string(&job(&ctx, "stale", -1)).unwrap(),
    );
    push(
        &ctx,
        &serde_json::to_string(&job(&ctx, "fresh", 60_000)).unwrap(),
    );
    let r = pop_reply(&ctx).await.unwrap();
    assert_eq!(r.query_id, "q-fresh", "only the fresh job is answered");
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        1,
        "the stale job never reached the backend"
    );
    let ev = bb
        .events_by_kind(EventKind::LayerTimeout, 10, 1000)
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].get("query_id"), Some("q-stale"));
    assert!(ev[0].get("reason").unwrap().contains("deadline"));
    w.stop().await;
}

#[tokio::test]
async fn malformed_jobs_get_an_error_reply_or_an_event_and_the_worker_goes_on() {
    let mut ctx = TestContext::new();
    let settings = fast(&mut ctx);
    let bb = ctx.blackboard().await;
    let backend = Arc::new(TestBackend::default());
    let w = Running::start(&settings, backend.clone(), 1);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);
    let reply_to = ctx.keys().replies("test-daemon");
    // Names a reply_to: answered with an error.
    push(
        &ctx,
        &format!(r#"{{"job_id":"j1","query_id":"q1","reply_to":"{reply_to}","text":7}}"#),
    );
    // Names none: dropped with an event.
    push(&ctx, "{not json at all");
    // Names a key that is not a reply list: never written to.
    let mut evil = job(&ctx, "evil", 60_000);
    evil.reply_to = ctx.keys().queue();
    push(&ctx, &serde_json::to_string(&evil).unwrap());
    // And a good one after them.
    push(
        &ctx,
        &serde_json::to_string(&job(&ctx, "good", 60_000)).unwrap(),
    );

    let first = pop_reply(&ctx).await.unwrap();
    assert_eq!(
        (first.job_id.as_str(), first.outcome),
        ("j1", ReplyOutcome::Error)
    );
    assert!(first.error.unwrap().contains("malformed job"));
    let second = pop_reply(&ctx).await.unwrap();
    assert_eq!(second.query_id, "q-good");
    assert_eq!(second.outcome, ReplyOutcome::Hit);
    let queue: u64 = ctx.raw().llen(ctx.keys().queue()).unwrap();
    assert_eq!(queue, 0, "a forged reply_to is never written to");
    let errors = bb
        .events_by_kind(EventKind::LayerError, 10, 1000)
        .await
        .unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    w.stop().await;
}

#[tokio::test]
async fn an_unhealthy_backend_takes_no_jobs_and_says_so() {
    let mut ctx = TestContext::new();
    let settings = fast(&mut ctx);
    let bb = ctx.blackboard().await;
    let backend = Arc::new(TestBackend::default());
    backend.unhealthy.store(true, Ordering::SeqCst);
    let w = Running::start(&settings, backend.clone(), 1);
    assert!(
        eventually(60.0, || async {
            healthy(&bb, &w.name).await == Some(false)
        })
        .await
    );
    let h = bb.get_health(&w.name).await.unwrap().unwrap();
    assert_eq!(h.reason.as_deref(), Some("test backend down"));
    push(
        &ctx,
        &serde_json::to_string(&job(&ctx, "waiting", 60_000)).unwrap(),
    );
    // The worker goes on while unhealthy: it rewrites its health record
    // (checking its backend) every 100 ms, and its slots look every 200 ms.
    // Five rewrites later, the job is still waiting.
    let mut beats = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while beats.len() <= 5 {
        let h = bb.get_health(&w.name).await.unwrap().unwrap();
        assert!(!h.healthy, "{h:?}");
        beats.insert(h.updated_at);
        assert!(
            std::time::Instant::now() < deadline,
            "the worker stopped writing its health"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        0,
        "no job taken while unhealthy"
    );
    let waiting: u64 = ctx.raw().llen(ctx.keys().jobs("layer2")).unwrap();
    assert_eq!(waiting, 1, "the job waits in the job list");

    backend.unhealthy.store(false, Ordering::SeqCst);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);
    assert_eq!(pop_reply(&ctx).await.unwrap().query_id, "q-waiting");
    let ev = bb
        .events_by_kind(EventKind::WorkerHealth, 10, 1000)
        .await
        .unwrap();
    let reasons: Vec<_> = ev
        .iter()
        .map(|e| e.get("reason").unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("healthy")),
        "{reasons:?}"
    );
    w.stop().await;
}

#[tokio::test]
async fn jobs_run_concurrently_up_to_the_configured_slots() {
    let mut ctx = TestContext::new();
    let settings = fast(&mut ctx);
    let bb = ctx.blackboard().await;
    // The barrier opens only when three answers are in progress at once.
    let backend = Arc::new(TestBackend {
        barrier: Some(tokio::sync::Barrier::new(3)),
        ..Default::default()
    });
    let w = Running::start(&settings, backend.clone(), 3);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);
    for i in 0..3 {
        push(
            &ctx,
            &serde_json::to_string(&job(&ctx, &format!("c{i}"), 60_000)).unwrap(),
        );
    }
    for _ in 0..3 {
        assert_eq!(pop_reply(&ctx).await.unwrap().outcome, ReplyOutcome::Hit);
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart() {
    let mut ctx = TestContext::new();
    if !ctx.redis.is_private() {
        return; // a shared server is not ours to restart
    }
    let settings = fast(&mut ctx);
    let bb = ctx.blackboard().await;
    let w = Running::start(&settings, EchoBackend::new(0.8), 1);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);
    ctx.redis.restart();
    // The health key comes back once the worker has reconnected.
    let bb = ctx.blackboard().await;
    assert!(
        eventually(60.0, || async {
            bb.get_health(&w.name).await.ok().flatten().is_some()
        })
        .await
    );
    push(
        &ctx,
        &serde_json::to_string(&job(&ctx, "after restart", 60_000)).unwrap(),
    );
    let r = pop_reply(&ctx).await.expect("answers the next job");
    assert_eq!(r.answer.as_deref(), Some("echo: after restart"));
    w.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_job_in_progress_or_returns_it() {
    let mut ctx = TestContext::new();
    let mut settings = fast(&mut ctx);
    let bb = ctx.blackboard().await;
    let backend = Arc::new(TestBackend::default());
    backend.delay_ms.store(300, Ordering::SeqCst);
    let w = Running::start(&settings, backend.clone(), 1);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);
    push(
        &ctx,
        &serde_json::to_string(&job(&ctx, "in progress", 60_000)).unwrap(),
    );
    assert!(eventually(60.0, || async { backend.calls.load(Ordering::SeqCst) == 1 }).await);
    w.stop().await; // grace 5 s > 300 ms: finished
    assert_eq!(pop_reply(&ctx).await.unwrap().query_id, "q-in progress");

    // A grace shorter than the job: it goes back to the job list.
    settings.workers.shutdown_grace_s = 0;
    backend.delay_ms.store(5_000, Ordering::SeqCst);
    let w = Running::start(&settings, backend.clone(), 1);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);
    push(
        &ctx,
        &serde_json::to_string(&job(&ctx, "slow", 60_000)).unwrap(),
    );
    assert!(eventually(60.0, || async { backend.calls.load(Ordering::SeqCst) == 2 }).await);
    let name = w.name.clone();
    w.stop().await;
    let jobs: Vec<String> = ctx.raw().lrange(ctx.keys().jobs("layer2"), 0, -1).unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].contains("\"slow\""));
    let held: u64 = ctx
        .raw()
        .llen(ctx.keys().jobs_processing("layer2", &name))
        .unwrap();
    assert_eq!(held, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_worker_answers_through_the_daemon() {
    let mut ctx = TestContext::new();
    let mut settings = fast(&mut ctx);
    for l in ["layer1", "layer4"] {
        settings.layers.get_mut(l).unwrap().enabled = false;
    }
    let bb = ctx.blackboard().await;
    let w = Running::start(&settings, EchoBackend::new(0.95), 2);
    assert!(eventually(60.0, || async { healthy(&bb, &w.name).await == Some(true) }).await);
    let token = CancellationToken::new();
    let daemon = kitbash::daemon::Daemon::new(settings.clone());
    let instance = daemon.instance().to_string();
    let daemon = tokio::spawn(daemon.run(token.clone()));
    crate::common::wait_until_daemon_sees(&bb, &instance, "layer2").await;
    let q = QueryState::new("ping");
    bb.enqueue(&q).await.unwrap();
    let (url, key) = (ctx.redis.url.clone(), ctx.keys().done(&q.query_id));
    let done: Option<(String, String)> = tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        conn.blpop(key, PATIENCE.as_secs_f64()).unwrap()
    })
    .await
    .unwrap();
    assert!(done.is_some());
    let s = bb.get_state(&q.query_id).await.unwrap().unwrap();
    assert_eq!(s.status, QueryStatus::Answered);
    let a = s.answer.unwrap();
    assert_eq!(
        (a.text.as_str(), a.layer.as_str()),
        ("echo: ping", "layer2")
    );
    assert_eq!(s.layer_attempts[1].worker.as_deref(), Some(w.name.as_str()));
    token.cancel();
    daemon.await.unwrap().unwrap();
    w.stop().await;
}
