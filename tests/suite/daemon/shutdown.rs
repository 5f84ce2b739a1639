use std::process::{Command, Stdio};
use std::time::Duration;

use kitbash::{QueryState, QueryStatus};
use redis::Commands;

use crate::common::TestContext;
use crate::daemon::support::*;

/// `kitbash serve` as a real process: SIGTERM with queries in flight exits 0
/// and loses nothing: each query is finished or back in the queue, and a
/// second daemon finishes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_queries_in_flight_exits_zero_and_loses_nothing() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    // A worker that takes jobs and never answers, and a layer2 timeout of a
    // minute: whatever the machine's speed, no query can finish before the
    // daemon has stopped.
    let silent = TestWorker::start(&ctx, "layer2", Behaviour::Silent).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .arg("serve")
        .env_remove("KITBASH_CONFIG")
        .env("KITBASH_REDIS__URL", &ctx.redis.url)
        .env("KITBASH_REDIS__KEY_PREFIX", &ctx.prefix)
        .env("KITBASH_HTTP__ENABLED", "false")
        .env("KITBASH_ORCHESTRATOR__SHUTDOWN_GRACE_S", "1")
        .env("KITBASH_ORCHESTRATOR__HEARTBEAT_INTERVAL_MS", "200")
        .env("KITBASH_ORCHESTRATOR__HEALTH_TTL_S", "1")
        .env("KITBASH_LAYERS__LAYER2__TIMEOUT_MS", "60000")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The daemon sends jobs once it has seen the worker.
    let keys = ctx.keys();
    assert!(
        eventually(60.0, || async {
            crate::common::a_daemon_sees(&mut ctx.raw(), &keys, "layer2")
        })
        .await,
        "the daemon never reported the layer2 worker live"
    );
    let mut ids = Vec::new();
    for i in 0..40 {
        let q = QueryState::with_id(format!("s{i}"), format!("slow question {i}"));
        bb.enqueue(&q).await.unwrap();
        ids.push(q.query_id);
    }
    // Wait until the daemon holds queries in flight.
    let in_flight = || async {
        let mut conn = ctx.raw();
        let lists: Vec<String> = redis::cmd("KEYS")
            .arg(ctx.keys().processing("*"))
            .query(&mut conn)
            .unwrap();
        !lists.is_empty()
    };
    assert!(eventually(60.0, in_flight).await, "the daemon took queries");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");

    // Nothing stuck in a processing list, nothing lost: every query is
    // terminal or back in the queue.
    let mut conn = ctx.raw();
    let lists: Vec<String> = redis::cmd("KEYS")
        .arg(ctx.keys().processing("*"))
        .query(&mut conn)
        .unwrap();
    assert!(lists.is_empty(), "{lists:?}");
    let queued: Vec<String> = conn.lrange(ctx.keys().queue(), 0, -1).unwrap();
    let mut finished = 0;
    for id in &ids {
        let s = bb.get_state(id).await.unwrap().unwrap();
        if s.status.is_terminal() {
            assert_eq!(s.status, QueryStatus::Answered);
            finished += 1;
        } else {
            assert!(queued.contains(id), "{id} neither finished nor queued");
        }
    }
    // The worker never answers and the timeout is a minute: nothing could
    // finish.
    assert_eq!(finished, 0);
    assert_eq!(queued.len(), ids.len());
    let health: Vec<String> = redis::cmd("KEYS")
        .arg(ctx.keys().health("*"))
        .query(&mut conn)
        .unwrap();
    assert!(
        health.iter().all(|h| h.contains("test-layer2")),
        "daemon said goodbye: {health:?}"
    );

    // A worker that answers, and a second daemon: every query is answered.
    silent.stop().await;
    let worker = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("an answer", 0.9, Duration::ZERO),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    for id in &ids {
        assert_eq!(
            wait_done(&ctx, &bb, id, 60.0).await.status,
            QueryStatus::Answered
        );
    }
    d.stop().await;
    worker.stop().await;
}
