use kitbash::{Grain, QueryState, QueryStatus};
use redis::Commands;

use crate::common::TestContext;
use crate::daemon::support::*;

/// Every kind of bad entry gets its record and event, and the daemon goes on
/// serving good queries pushed after them.
#[tokio::test]
async fn bad_entries_are_recorded_and_the_daemon_keeps_serving() {
    let mut ctx = TestContext::new();
    fast(&mut ctx).orchestrator.max_query_bytes = 100;
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("g", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    let keys = ctx.keys();
    let mut raw = ctx.raw();

    // No id known: these go to the dead list.
    let dead: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        br#"{"query_text": 42}"#.to_vec(),
        b"What is the capital of Kenya?".to_vec(),
        br#"{"query_text":"   "}"#.to_vec(),
    ];
    for e in &dead {
        let _: () = raw.lpush(keys.queue(), e.as_slice()).unwrap();
    }
    // An id is known: these become failed states.
    let _: () = raw.lpush(keys.queue(), "ghost").unwrap(); // no state
    let _: () = raw.set(keys.state("mangled"), "{this is not json").unwrap();
    let _: () = raw.lpush(keys.queue(), "mangled").unwrap();
    let long = QueryState::with_id("long", "x".repeat(101));
    bb.enqueue(&long).await.unwrap();
    let empty = QueryState::with_id("empty", "");
    bb.enqueue(&empty).await.unwrap();
    let _: () = raw
        .lpush(keys.queue(), r#"{"query_id":"badtext","query_text":["a"]}"#)
        .unwrap();
    // And a good one after them all.
    let good = QueryState::new("What is the capital of Kenya?");
    bb.enqueue(&good).await.unwrap();

    let s = wait_done(&ctx, &bb, &good.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Answered);

    for (id, why) in [
        ("ghost", "no state"),
        ("mangled", "not valid"),
        ("long", "max_query_bytes"),
        ("empty", "empty"),
        ("badtext", "query_text must be a string"),
    ] {
        let s = wait_done(&ctx, &bb, id, 60.0).await;
        assert_eq!(s.status, QueryStatus::Failed, "{id}");
        let err = s.error.unwrap();
        assert!(err.contains(why), "{id}: {err}");
    }
    assert!(
        eventually(60.0, || async {
            bb.dead_entries(100).await.unwrap().len() == dead.len()
        })
        .await,
        "every id-less bad entry is in the dead list"
    );
    let records: Vec<serde_json::Value> = bb
        .dead_entries(100)
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .all(|r| r["reason"].as_str().is_some_and(|s| !s.is_empty()))
    );
    assert!(
        records.iter().any(|r| r["entry_hex"] == "fffefd"),
        "bytes kept"
    );
    assert!(records.iter().any(|r| r["entry"] == "{not json"));

    // Each bad entry has its event: 5 dead + 5 failed states.
    let failed = bb
        .events_by_kind(kitbash::EventKind::QueryFailed, 100, 10_000)
        .await
        .unwrap();
    assert_eq!(failed.len(), 10, "{failed:?}");
    assert!(failed.iter().all(|e| e.get("reason").is_some()));
    // Nothing is stuck.
    let processing: u64 = raw.llen(keys.processing(&d.instance)).unwrap();
    let queued: u64 = raw.llen(keys.queue()).unwrap();
    assert_eq!((processing, queued), (0, 0));
    d.stop().await;
}

#[tokio::test]
async fn a_terminal_query_pushed_again_is_not_processed_again() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("g", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    let q = QueryState::new("What is the capital of Kenya?");
    bb.enqueue(&q).await.unwrap();
    wait_done(&ctx, &bb, &q.query_id, 60.0).await;
    let first = bb.get_state_raw(&q.query_id).await.unwrap().unwrap();
    // Pushed again (a client retry): the outcome stays the one written.
    let _: () = ctx.raw().lpush(ctx.keys().queue(), &q.query_id).unwrap();
    assert!(eventually(60.0, || async { bb.queue_len().await.unwrap() == 0 }).await);
    assert!(
        eventually(60.0, || async {
            let n: u64 = ctx.raw().llen(ctx.keys().processing(&d.instance)).unwrap();
            n == 0
        })
        .await
    );
    assert_eq!(bb.get_state_raw(&q.query_id).await.unwrap().unwrap(), first);
    let counts = event_counts(&bb).await;
    assert_eq!(
        counts[&("query_completed".to_string(), q.query_id.clone())],
        1
    );
    assert_eq!(
        counts[&("query_started".to_string(), q.query_id.clone())],
        1
    );
    d.stop().await;
}

/// States other clients wrote that only look finished: a `status` that is
/// nested, or a terminal status in a state that is not valid. The daemon
/// decides by the whole document: the first runs, the second fails with a
/// record; neither is dropped without an outcome.
#[tokio::test]
async fn states_that_only_look_terminal_are_not_dropped() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("g", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    let keys = ctx.keys();
    let mut raw = ctx.raw();
    let nested = r#"{"query_id":"nested","query_text":"What is the capital of Kenya?","metadata":{"status":"failed"},"status":"pending"}"#;
    let no_id = r#"{"query_text":"What is the capital of Kenya?","status":"answered"}"#;
    let _: () = raw.set(keys.state("nested"), nested).unwrap();
    let _: () = raw.set(keys.state("no-id"), no_id).unwrap();
    let _: () = raw.lpush(keys.queue(), "nested").unwrap();
    let _: () = raw.lpush(keys.queue(), "no-id").unwrap();

    let s = wait_done(&ctx, &bb, "nested", 60.0).await;
    assert_eq!(s.status, QueryStatus::Answered);
    let s = wait_done(&ctx, &bb, "no-id", 60.0).await;
    assert_eq!(s.status, QueryStatus::Failed);
    assert!(s.error.unwrap().contains("query_id"));
    let counts = event_counts(&bb).await;
    assert_eq!(
        counts.get(&("query_completed".into(), "nested".into())),
        Some(&1)
    );
    assert_eq!(
        counts.get(&("query_failed".into(), "no-id".into())),
        Some(&1)
    );
    d.stop().await;
}

/// Jobs left in a layer's job list after its last worker stopped do not
/// accumulate: the daemon drops those whose deadline has passed, from the
/// old end, and keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_jobs_of_a_layer_nobody_serves_are_dropped() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let job = |id: &str, deadline_ms: i64| {
        serde_json::json!({
            "job_id": id, "query_id": id, "layer": "layer2", "text": "t",
            "deadline_ms": deadline_ms,
            "reply_to": ctx.keys().replies("gone-daemon"),
        })
        .to_string()
    };
    let mut conn = ctx.raw();
    // Oldest first: three expired, then one still in time (at the head).
    for (id, deadline) in [
        ("old-1", now_ms - 60_000),
        ("old-2", now_ms - 30_000),
        ("old-3", now_ms - 1_000),
        ("fresh", now_ms + 3_600_000),
    ] {
        let _: () = conn
            .lpush(ctx.keys().jobs("layer2"), job(id, deadline))
            .unwrap();
    }
    let d = RunningDaemon::start(&ctx.settings);
    let left = || -> Vec<String> { ctx.raw().lrange(ctx.keys().jobs("layer2"), 0, -1).unwrap() };
    assert!(
        eventually(crate::common::PATIENCE.as_secs_f64(), || async {
            left().len() == 1
        })
        .await,
        "{:?}",
        left()
    );
    assert!(left()[0].contains("\"fresh\""));
    d.stop().await;
}
