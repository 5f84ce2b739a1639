use std::time::Duration;

use kitbash::{Grain, Outcome, QueryState, QueryStatus};
use redis::Commands;

use crate::common::TestContext;
use crate::daemon::support::*;

fn kenya() -> Grain {
    let mut g = Grain::new("geo-ke", "What is the capital of Kenya?", "Nairobi");
    g.source = Some("test".into());
    g
}

#[tokio::test]
async fn layer0_answers_a_matching_grain() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&kenya()).await.unwrap();
    let d = RunningDaemon::start(&ctx.settings);

    let q = QueryState::new("what is the CAPITAL of kenya");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Answered);
    let a = s.answer.unwrap();
    assert_eq!((a.text.as_str(), a.layer.as_str()), ("Nairobi", "layer0"));
    assert_eq!(a.source.as_deref(), Some("grain:geo-ke"));
    assert_eq!(s.layer_attempts.len(), 1);
    assert_eq!(s.layer_attempts[0].outcome, Outcome::Hit);
    assert!(s.started_at.is_some() && s.completed_at.is_some());

    let ev = events_of(&bb, &q.query_id).await;
    let names: Vec<&str> = ev.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["query_started", "layer_hit", "query_completed"]);
    assert_eq!(bb.layer_counters("layer0").await.unwrap().hits, 1);
    assert_eq!(bb.get_grain("geo-ke").await.unwrap().unwrap().hits, 1);
    let w = bb
        .metric_window("latency:layer0", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(w.len(), 1);
    let w = bb
        .metric_window("latency:query", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(w.len(), 1);
    // The entry left the processing list; the done signal expires.
    let processing: u64 = ctx.raw().llen(ctx.keys().processing(&d.instance)).unwrap();
    assert_eq!(processing, 0);
    d.stop().await;
}

#[tokio::test]
async fn a_miss_escalates_to_a_worker_layer_that_answers() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&kenya()).await.unwrap();
    let worker = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("Kampala", 0.93, Duration::from_millis(5)),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;

    let q = QueryState::new("What is the capital of Uganda?");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Answered, "{s:?}");
    let a = s.answer.clone().unwrap();
    assert_eq!((a.text.as_str(), a.layer.as_str()), ("Kampala", "layer2"));
    assert_eq!(a.source.as_deref(), Some("test#1"));
    let outcomes: Vec<(&str, Outcome)> = s
        .layer_attempts
        .iter()
        .map(|a| (a.layer.as_str(), a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("layer0", Outcome::Miss),
            ("layer1", Outcome::Skipped),
            ("layer2", Outcome::Hit)
        ]
    );
    assert_eq!(
        s.layer_attempts[2].worker.as_deref(),
        Some(worker.name.as_str())
    );

    let ev = events_of(&bb, &q.query_id).await;
    let ev: Vec<(&str, Option<&str>)> =
        ev.iter().map(|(e, l)| (e.as_str(), l.as_deref())).collect();
    assert_eq!(
        ev,
        [
            ("query_started", None),
            ("layer_miss", Some("layer0")),
            ("escalation", Some("layer0")),
            ("layer_skipped", Some("layer1")),
            ("escalation", Some("layer1")),
            ("layer_attempt", Some("layer2")),
            ("layer_hit", Some("layer2")),
            ("query_completed", Some("layer2")),
        ]
    );
    let c = bb.layer_counters("layer1").await.unwrap();
    assert_eq!((c.skips, c.attempts), (1, 0));
    assert_eq!(bb.layer_counters("layer2").await.unwrap().hits, 1);
    // The job left the worker's processing list and the jobs list.
    assert!(
        eventually(60.0, || async {
            let n: u64 = ctx
                .raw()
                .llen(ctx.keys().jobs_processing("layer2", &worker.name))
                .unwrap();
            n == 0
        })
        .await
    );
    let jobs: u64 = ctx.raw().llen(ctx.keys().jobs("layer2")).unwrap();
    assert_eq!(jobs, 0);
    d.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn a_confident_but_low_reply_is_a_miss_and_the_best_answer_is_kept() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    let worker = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("maybe Kampala", 0.3, Duration::ZERO),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;
    let q = QueryState::new("What is the capital of Uganda?");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Unanswered);
    let a = s.answer.unwrap();
    assert_eq!((a.text.as_str(), a.confidence), ("maybe Kampala", 0.3));
    assert_eq!(s.layer_attempts[2].outcome, Outcome::Miss);
    assert!(
        s.layer_attempts[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("below")
    );
    assert_eq!(
        s.layer_attempts[3].outcome,
        Outcome::Skipped,
        "layer4 has no worker"
    );
    d.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn a_hit_answers_with_its_own_answer_not_a_surer_miss_before_it() {
    let mut ctx = TestContext::new();
    // layer2 sure but below its (raised) threshold; layer4 answers, less sure.
    fast(&mut ctx)
        .layers
        .get_mut("layer2")
        .unwrap()
        .min_confidence = 0.99;
    let bb = ctx.blackboard().await;
    let unsure = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("Entebbe", 0.95, Duration::ZERO),
    )
    .await;
    let sure = TestWorker::start(
        &ctx,
        "layer4",
        Behaviour::hit("Kampala", 0.8, Duration::ZERO),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;
    d.wait_until_sees(&bb, "layer4").await;
    let q = QueryState::new("What is the capital of Uganda?");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Answered);
    let a = s.answer.unwrap();
    assert_eq!(
        (a.text.as_str(), a.layer.as_str(), a.confidence),
        ("Kampala", "layer4", 0.8),
        "the layer that hit gives the answer"
    );
    d.stop().await;
    unsure.stop().await;
    sure.stop().await;
}

#[tokio::test]
async fn a_silent_worker_times_out_and_the_query_escalates() {
    let mut ctx = TestContext::new();
    fast(&mut ctx).layers.get_mut("layer2").unwrap().timeout_ms = 300;
    let bb = ctx.blackboard().await;
    let silent = TestWorker::start(&ctx, "layer2", Behaviour::Silent).await;
    let answering = TestWorker::start(
        &ctx,
        "layer4",
        Behaviour::hit("Kampala", 0.8, Duration::ZERO),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;
    d.wait_until_sees(&bb, "layer4").await;
    let q = QueryState::new("What is the capital of Uganda?");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Answered);
    assert_eq!(s.answer.unwrap().layer, "layer4");
    let l2 = &s.layer_attempts[2];
    assert_eq!(
        (l2.layer.as_str(), l2.outcome),
        ("layer2", Outcome::Timeout)
    );
    let ev = events_of(&bb, &q.query_id).await;
    assert!(ev.contains(&("layer_timeout".into(), Some("layer2".into()))));
    assert!(ev.contains(&("escalation".into(), Some("layer2".into()))));
    assert_eq!(bb.layer_counters("layer2").await.unwrap().timeouts, 1);
    // The job stays in the list past its deadline; the silent worker takes
    // it (on a loaded machine, possibly after the timeout), once.
    let seen = || silent.jobs_seen.load(std::sync::atomic::Ordering::Relaxed);
    assert!(eventually(60.0, || async { seen() >= 1 }).await);
    assert_eq!(seen(), 1);
    d.stop().await;
    silent.stop().await;
    answering.stop().await;
}

#[tokio::test]
async fn layers_without_workers_are_skipped_at_once() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    for l in ctx.settings.layers.values_mut() {
        l.timeout_ms = 60_000; // waiting on any of them would time the test out
    }
    let bb = ctx.blackboard().await;
    let d = RunningDaemon::start(&ctx.settings);
    let q = QueryState::new("Who painted the Mona Lisa?");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Unanswered);
    assert!(s.answer.is_none());
    let skipped: Vec<_> = s.layer_attempts[1..]
        .iter()
        .map(|a| (a.outcome, a.latency_ms))
        .collect();
    assert_eq!(skipped, [(Outcome::Skipped, 0.0); 3]);
    assert!(
        s.layer_attempts[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("no live bitnet worker")
    );
    // No job was pushed for a layer nobody serves.
    for l in ["layer1", "layer2", "layer4"] {
        let n: u64 = ctx.raw().llen(ctx.keys().jobs(l)).unwrap();
        assert_eq!(n, 0);
    }
    d.stop().await;
}

#[tokio::test]
async fn disabled_layers_are_not_tried() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    for l in ["layer1", "layer2", "layer4"] {
        ctx.settings.layers.get_mut(l).unwrap().enabled = false;
    }
    let bb = ctx.blackboard().await;
    let d = RunningDaemon::start(&ctx.settings);
    let q = QueryState::new("Who painted the Mona Lisa?");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Unanswered);
    assert_eq!(s.layer_attempts.len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn redis_cli_json_entries_and_python_states_are_served() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&kenya()).await.unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    let keys = ctx.keys();
    let mut raw = ctx.raw();
    // Python RedisBlackboard.create_query shape, then the id.
    let _: () = raw
        .set(
            keys.state("py1"),
            r#"{"query_id":"py1","query_text":"What is the capital of Kenya?","status":"pending","created_at":"2026-11-21T10:00:00","layer_attempts":[],"metadata":{"from":"python"}}"#,
        )
        .unwrap();
    let _: () = raw.lpush(keys.queue(), "py1").unwrap();
    // A JSON object pushed directly, with and without an id.
    let _: () = raw
        .lpush(
            keys.queue(),
            r#"{"query_text":"capital of Kenya","query_id":"cli1","metadata":{"via":"redis-cli"}}"#,
        )
        .unwrap();
    let _: () = raw
        .lpush(keys.queue(), r#"{"query_text":"Kenya capital?"}"#)
        .unwrap();

    let py = wait_done(&ctx, &bb, "py1", 60.0).await;
    assert_eq!(py.status, QueryStatus::Answered);
    assert_eq!(py.metadata["from"], "python");
    let cli = wait_done(&ctx, &bb, "cli1", 60.0).await;
    assert_eq!(cli.status, QueryStatus::Answered);
    assert_eq!(cli.metadata["via"], "redis-cli");
    // The id-less one got an id: find it by its completion event.
    assert!(
        eventually(60.0, || async {
            bb.events_by_kind(kitbash::EventKind::QueryCompleted, 10, 1000)
                .await
                .unwrap()
                .len()
                == 3
        })
        .await
    );
    let created = bb
        .events_by_kind(kitbash::EventKind::QueryCreated, 10, 1000)
        .await
        .unwrap();
    assert_eq!(created.len(), 2, "both JSON entries created a state");
    for e in created {
        let id = e.get("query_id").unwrap();
        let s = bb.get_state(id).await.unwrap().unwrap();
        assert_eq!(s.status, QueryStatus::Answered);
    }
    d.stop().await;
}

#[tokio::test]
async fn late_and_forged_replies_are_recorded_and_dropped() {
    let mut ctx = TestContext::new();
    fast(&mut ctx).layers.get_mut("layer2").unwrap().timeout_ms = 200;
    let bb = ctx.blackboard().await;
    let late = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::AfterOutcome {
            answer: "too late".into(),
        },
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;
    let q = QueryState::new("What is the capital of Uganda?");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Unanswered);
    assert_eq!(s.layer_attempts[2].outcome, Outcome::Timeout);

    // A reply forged by another process for a job nobody asked for.
    let forged = serde_json::json!({
        "job_id": "made-up", "query_id": q.query_id, "layer": "layer2", "worker": "mallory",
        "outcome": "hit", "answer": "forged", "confidence": 1.0
    });
    let _: () = ctx
        .raw()
        .lpush(ctx.keys().replies(&d.instance), forged.to_string())
        .unwrap();
    let _: () = ctx
        .raw()
        .lpush(ctx.keys().replies(&d.instance), "{garbage")
        .unwrap();

    assert!(
        eventually(60.0, || async {
            bb.events_by_kind(kitbash::EventKind::LateReply, 10, 10_000)
                .await
                .unwrap()
                .len()
                == 3
        })
        .await,
        "the late reply, the forged one and the garbage are each recorded"
    );
    let ev = bb
        .events_by_kind(kitbash::EventKind::LateReply, 10, 10_000)
        .await
        .unwrap();
    assert!(ev.iter().any(|e| e.get("worker") == Some("mallory")));
    assert!(
        ev.iter()
            .any(|e| e.get("reason").is_some_and(|r| r.contains("malformed")))
    );
    // The outcome written before stays.
    let after = bb.get_state(&q.query_id).await.unwrap().unwrap();
    assert_eq!(after.status, QueryStatus::Unanswered);
    assert_ne!(after.answer.map(|a| a.text), Some("forged".to_string()));
    d.stop().await;
    late.stop().await;
}

/// Each event carries the time of its decision, not the time its batch was
/// written: a worker that takes 300 ms puts 300 ms between the query's start
/// and the layer's hit in the timeline (before, the buffered events of a
/// query were all stamped when they were written).
#[tokio::test]
async fn events_carry_the_time_of_their_decision() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    layer2_only(&mut ctx.settings);
    let bb = ctx.blackboard().await;
    let worker = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("slowly", 0.93, Duration::from_millis(300)),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;
    let q = QueryState::new("a question for a slow worker");
    bb.enqueue(&q).await.unwrap();
    let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Answered, "{s:?}");
    let events = bb.timeline(&q.query_id, 1_000).await.unwrap();
    let at = |kind: &str| {
        events
            .iter()
            .find(|e| e.event() == Some(kind))
            .and_then(|e| e.time())
            .unwrap_or_else(|| panic!("no {kind} in {events:?}"))
    };
    let gap = at("layer_hit") - at("query_started");
    assert!(gap.num_milliseconds() >= 300, "{gap:?}");
    let miss = at("layer_miss") - at("query_started");
    assert!(miss < gap, "layer0's miss came before the worker's hit");
    d.stop().await;
    worker.stop().await;
}

/// Redis forgetting its scripts (a restart without persistence, `SCRIPT
/// FLUSH`) costs nothing: the finishing step meets NOSCRIPT, loads the
/// script and runs it, and the counters sent with it count once.
#[tokio::test]
async fn a_flushed_script_cache_still_finishes_each_query_once() {
    let mut ctx = TestContext::private();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&kenya()).await.unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    for round in 0..2 {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut ctx.raw())
            .unwrap();
        let q = QueryState::new("What is the capital of Kenya?");
        bb.enqueue(&q).await.unwrap();
        let s = wait_done(&ctx, &bb, &q.query_id, 60.0).await;
        assert_eq!(s.status, QueryStatus::Answered, "round {round}");
        let ev = events_of(&bb, &q.query_id).await;
        let completed = ev.iter().filter(|(e, _)| e == "query_completed").count();
        assert_eq!(completed, 1, "round {round}: {ev:?}");
        assert_eq!(
            bb.layer_counters("layer0").await.unwrap().hits,
            round + 1,
            "each query's counters are written once"
        );
    }
    d.stop().await;
}

/// A backlog is finished in batches (one script call for the outcomes that
/// wait behind a write on the way): whatever the batches, every query is
/// finished once, signalled once, and counted once in the merged counters
/// and samples.
#[tokio::test]
async fn a_backlog_finished_in_batches_is_counted_once_per_query() {
    const N: usize = 300;
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&kenya()).await.unwrap();
    let mut ids = Vec::with_capacity(N);
    for _ in 0..N {
        let q = QueryState::new("what is the capital of kenya");
        bb.enqueue(&q).await.unwrap();
        ids.push(q.query_id);
    }
    let d = RunningDaemon::start(&ctx.settings);
    let instance = d.instance.clone();
    for id in &ids {
        let s = wait_done(&ctx, &bb, id, 120.0).await;
        assert_eq!(s.status, QueryStatus::Answered, "{id}");
    }
    d.stop().await;

    // Each wait above took its query's signal; none was given twice.
    let mut raw = ctx.raw();
    for id in &ids {
        let left: u64 = raw.llen(ctx.keys().done(id)).unwrap();
        assert_eq!(left, 0, "a second completion signal for {id}");
    }
    let c = bb.layer_counters("layer0").await.unwrap();
    assert_eq!((c.attempts, c.hits), (N as u64, N as u64));
    assert_eq!(
        bb.get_grain("geo-ke").await.unwrap().unwrap().hits,
        N as u64
    );
    for metric in ["latency:layer0", "latency:query"] {
        let w = bb
            .metric_window(metric, Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!(w.len(), N, "{metric}: one sample per query");
    }
    let counts = event_counts(&bb).await;
    for id in &ids {
        let n = counts.get(&("query_completed".to_string(), id.clone()));
        assert_eq!(n, Some(&1), "one query_completed for {id}");
    }
    let processing: u64 = raw.llen(ctx.keys().processing(&instance)).unwrap();
    assert_eq!(processing, 0);
}
