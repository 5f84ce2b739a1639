use std::collections::HashMap;
use std::time::Duration;

use kitbash::{Grain, QueryState};
use redis::Commands;

use crate::common::TestContext;
use crate::daemon::support::*;

/// 1,000 queries; the first daemon is dropped mid-run without any shutdown
/// (its runtime is torn down, its health key left to expire); a second
/// daemon recovers: every query reaches exactly one terminal state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_dropped_mid_run_loses_nothing_and_answers_nothing_twice() {
    let mut ctx = TestContext::new();
    let s = fast(&mut ctx);
    // Slow enough that the first daemon is still busy when it is dropped,
    // however fast the machine: 500 worker queries, 16 at a time, 100 ms each.
    s.orchestrator.max_in_flight = 16;
    layer2_only(s);
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("g", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let worker = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("from the worker", 0.95, Duration::from_millis(100)),
    )
    .await;

    // The first daemon, on a runtime of its own that we can drop.
    let first = kitbash::daemon::Daemon::new(ctx.settings.clone());
    let first_instance = first.instance().to_string();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let first = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(first.run(tokio_util::sync::CancellationToken::new()));
        let _ = rx.recv();
        rt.shutdown_background(); // dropped, no shutdown path
    });
    crate::common::wait_until_daemon_sees(&bb, &first_instance, "layer2").await;

    // All at once (one pipeline, as `enqueue` writes them), so that the
    // worker queries are all still ahead of the first daemon: at least
    // 500 / 16 × 100 ms of work.
    let n = 1_000;
    let mut ids = Vec::with_capacity(n);
    let mut pipe = redis::pipe();
    for i in 0..n {
        // Half answered at layer0, half by the worker (slow enough that the
        // first daemon holds many in flight when it dies).
        let text = if i % 2 == 0 {
            "What is the capital of Kenya?".to_string()
        } else {
            format!("worker question number {i}")
        };
        let q = QueryState::with_id(format!("q{i:04}"), text);
        pipe.set_ex(
            ctx.keys().state(&q.query_id),
            serde_json::to_string(&q).unwrap(),
            ctx.settings.orchestrator.state_ttl_s,
        )
        .ignore()
        .lpush(ctx.keys().queue(), &q.query_id)
        .ignore();
        ids.push(q.query_id);
    }
    let () = pipe.query(&mut ctx.raw()).unwrap();

    let done_count = || {
        let mut conn = ctx.raw();
        let mut done = 0;
        for id in &ids {
            let s: Option<String> = conn.get(ctx.keys().state(id)).unwrap();
            if s.is_some_and(|s| s.contains("\"status\":\"answered\"")) {
                done += 1;
            }
        }
        done
    };
    assert!(
        eventually(60.0, || async { done_count() >= 200 }).await,
        "first daemon made progress"
    );
    tx.send(()).unwrap();
    first.join().unwrap();
    let held: u64 = ctx
        .raw()
        .llen(ctx.keys().processing(&first_instance))
        .unwrap();
    let done_before = done_count();
    assert!(
        done_before < n,
        "the first daemon died before finishing everything"
    );

    let second = RunningDaemon::start(&ctx.settings);
    for id in &ids {
        wait_done(&ctx, &bb, id, 60.0).await;
    }
    // Exactly one terminal outcome per query, and one completion event.
    // Answered, unless the worker's reply missed the (generous) layer2
    // timeout: nothing is skipped, nothing fails.
    let counts = event_counts(&bb).await;
    let mut statuses = HashMap::<String, usize>::new();
    for id in &ids {
        let s = bb.get_state(id).await.unwrap().unwrap();
        *statuses.entry(s.status.to_string()).or_default() += 1;
        assert!(s.status.is_terminal(), "{id}: {s:?}");
        if s.status != kitbash::QueryStatus::Answered {
            assert_eq!(s.status, kitbash::QueryStatus::Unanswered, "{id}: {s:?}");
            assert!(
                s.layer_attempts
                    .iter()
                    .any(|a| a.layer == "layer2" && a.outcome == kitbash::Outcome::Timeout),
                "{id} unanswered without a layer2 timeout: {s:?}"
            );
        }
        let completed = counts
            .get(&("query_completed".to_string(), id.clone()))
            .copied()
            .unwrap_or(0);
        assert_eq!(completed, 1, "{id} completed {completed} times");
    }
    assert!(
        statuses.get("answered").is_some_and(|&a| a > 0),
        "{statuses:?}"
    );
    let recovered = bb
        .events_by_kind(kitbash::EventKind::QueryRecovered, 10_000, 1_000_000)
        .await
        .unwrap()
        .len() as u64;
    // (`held` was read while the dropped daemon's last commands could still
    // be landing, so it is only approximately what recovery found.)
    assert!(recovered > 0, "the dead daemon's queries were recovered");
    let left: u64 = ctx
        .raw()
        .llen(ctx.keys().processing(&first_instance))
        .unwrap();
    assert_eq!(left, 0);
    println!(
        "dropped daemon held {held} queries with {done_before}/{n} done; {recovered} recovered; {statuses:?}"
    );
    second.stop().await;
    worker.stop().await;
}

/// A query whose daemons keep dying is failed after max_attempts.
#[tokio::test]
async fn a_query_recovered_too_often_goes_to_the_dead_list() {
    let mut ctx = TestContext::new();
    fast(&mut ctx).orchestrator.max_attempts = 2;
    let bb = ctx.blackboard().await;
    let keys = ctx.keys();
    let mut q = QueryState::with_id("unlucky", "What is love?");
    q.recoveries = 1;
    bb.create_state(&q).await.unwrap();
    // A dead daemon (no health key) held it.
    let _: () = ctx
        .raw()
        .lpush(keys.processing("ghost-daemon"), "unlucky")
        .unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    let s = wait_done(&ctx, &bb, "unlucky", 60.0).await;
    assert_eq!(s.status, kitbash::QueryStatus::Failed);
    assert!(s.error.unwrap().contains("max_attempts"));
    assert_eq!(s.recoveries, 2);
    let dead = bb.dead_entries(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains("unlucky"));
    let ev = bb
        .events_by_kind(kitbash::EventKind::QueryDead, 10, 1000)
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    let left: u64 = ctx.raw().llen(keys.processing("ghost-daemon")).unwrap();
    assert_eq!(left, 0);
    d.stop().await;
}
