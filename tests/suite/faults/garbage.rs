//! Generated garbage through the real processes: queue entries, states
//! written by other clients, forged replies and malformed jobs. Nothing
//! stops the daemon or the worker, every bad item gets its record, and good
//! queries pushed after each batch are served.

use std::collections::HashSet;

use kitbash::QueryStatus;
use kitbash::daemon::intake::{EntryKind, Intake, classify, from_stored};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use redis::Commands;
use serde_json::{Value, json};

use crate::common::TestContext;
use crate::faults::support::*;

const MAX_QUERY_BYTES: usize = 100;

fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,30}".prop_map(Value::String),
        "x{90,120}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A JSON object over `keys`, each present or not, with any value.
fn object_over(keys: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop::collection::vec(prop::option::of(any_json()), keys.len())
        .prop_map(move |vals| {
            Value::Object(
                keys.iter()
                    .zip(vals)
                    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                    .collect(),
            )
        })
        .boxed()
}

fn queue_entry() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        "\\PC{0,60}".prop_map(String::into_bytes),
        "[a-z0-9-]{1,20}".prop_map(String::into_bytes),
        object_over(&["query_text", "query_id", "metadata", "status"])
            .prop_map(|v| v.to_string().into_bytes()),
        "\\PC{0,40}".prop_map(|t| json!({ "query_text": t }).to_string().into_bytes()),
    ]
    .boxed()
}

fn stored_state() -> BoxedStrategy<String> {
    prop_oneof![
        "\\PC{0,60}",
        object_over(&[
            "query_id",
            "query_text",
            "status",
            "layer_attempts",
            "answer",
            "created_at",
            "metadata"
        ])
        .prop_map(|v| v.to_string()),
        (
            "\\PC{0,40}",
            prop_oneof![
                Just("pending"),
                Just("processing"),
                Just("answered"),
                Just("bogus")
            ]
        )
            .prop_map(|(t, s)| json!({ "query_text": t, "status": s }).to_string()),
        // Well-formed but for what the generator chose (the id is filled in
        // when the state is written).
        (
            "[a-zA-Z ?]{0,40}",
            prop_oneof![
                Just("pending"),
                Just("processing"),
                Just("answered"),
                Just("failed"),
                Just("bogus")
            ],
            any_json()
        )
            .prop_map(|(t, s, m)| json!({
                "query_id": "__ID__", "query_text": t, "status": s,
                "metadata": { "status": "failed", "m": m }
            })
            .to_string()),
    ]
    .boxed()
}

fn reply_entry() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..60),
        object_over(&[
            "job_id",
            "query_id",
            "layer",
            "worker",
            "outcome",
            "answer",
            "confidence"
        ])
        .prop_map(|v| v.to_string().into_bytes()),
        (
            "[a-f0-9-]{8,36}",
            "[a-z0-9-]{1,12}",
            prop_oneof![Just("layer2"), Just("layer9")]
        )
            .prop_map(|(job, q, layer)| json!({
                "job_id": job, "query_id": q, "layer": layer, "worker": "forger",
                "outcome": "hit", "answer": "forged", "confidence": 1.0
            })
            .to_string()
            .into_bytes()),
    ]
    .boxed()
}

fn job_entry() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..60),
        object_over(&[
            "job_id",
            "query_id",
            "layer",
            "text",
            "deadline_ms",
            "reply_to"
        ])
        .prop_map(|v| v.to_string().into_bytes()),
    ]
    .boxed()
}

fn generate<T: std::fmt::Debug>(runner: &mut TestRunner, s: &BoxedStrategy<T>, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| s.new_tree(runner).unwrap().current())
        .collect()
}

fn event_count(events: &[(String, String, String)], kind: &str) -> usize {
    events.iter().filter(|(e, _, _)| e == kind).count()
}

async fn good_ones_are_served(ctx: &TestContext, tag: &str) {
    let bb = ctx.blackboard().await;
    let ids = push_mixed(&bb, tag, 10, 10).await;
    wait_all_terminal(ctx, &ids, 30.0).await;
    for s in states(ctx, &ids) {
        assert_eq!(s.unwrap().status, QueryStatus::Answered, "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_garbage_is_recorded_and_good_queries_are_served_after_it() {
    let ctx = TestContext::private();
    let bb = ctx.blackboard().await;
    load_grains(&bb, 10).await;
    let mut env = base_env(&ctx, &ctx.redis.url);
    env.push((
        "KITBASH_ORCHESTRATOR__MAX_QUERY_BYTES".into(),
        MAX_QUERY_BYTES.to_string(),
    ));
    let mut worker = Proc::echo_worker("echo-g", &env);
    let mut daemon = Proc::serve("daemon", &with_instance(&env, "gd"));
    wait_reporting(&ctx, &["echo-g", "gd"]).await;
    let mut runner = TestRunner::deterministic();
    let keys = ctx.keys();
    let mut raw = ctx.raw();

    // 1. Queue entries and states written by other clients.
    let entries = generate(&mut runner, &queue_entry(), 300);
    let garbage_states = generate(&mut runner, &stored_state(), 100);
    let mut expect_terminal: HashSet<String> = HashSet::new();
    let mut created_without_id = 0;
    // States that were terminal (as the daemon reads them) before it ran.
    let mut done_before: HashSet<String> = HashSet::new();
    for (i, s) in garbage_states.iter().enumerate() {
        let id = format!("gs-{i}");
        let s = s.replace("__ID__", &id);
        if matches!(
            from_stored(&id, Some(&s), MAX_QUERY_BYTES),
            Intake::AlreadyDone { .. }
        ) {
            done_before.insert(id.clone());
        }
        let _: () = raw.set(keys.state(&id), &s).unwrap();
        let _: () = raw.lpush(keys.queue(), &id).unwrap();
        expect_terminal.insert(id);
    }
    // A state key of the wrong type: the outcome cannot be written there, so
    // the entry goes to the dead list (the key is not the daemon's to delete).
    let _: () = raw.hset(keys.state("wrong-type"), "f", "v").unwrap();
    let _: () = raw.lpush(keys.queue(), "wrong-type").unwrap();
    let mut expect_dead = vec![b"wrong-type".to_vec()];
    for e in &entries {
        match classify(e, MAX_QUERY_BYTES) {
            EntryKind::Decided(Intake::Dead { .. }) => expect_dead.push(e.clone()),
            EntryKind::Decided(Intake::Fail { state, .. }) => {
                expect_terminal.insert(state.query_id);
            }
            EntryKind::Decided(Intake::Run { created: true, .. }) => created_without_id += 1,
            EntryKind::Decided(other) => panic!("unexpected for a fresh entry: {other:?}"),
            EntryKind::Id(id) => {
                expect_terminal.insert(id);
            }
            EntryKind::JsonWithId { state } => {
                expect_terminal.insert(state.query_id);
            }
        }
        let _: () = raw.lpush(keys.queue(), e.as_slice()).unwrap();
    }
    let processing = keys.processing("gd");
    assert!(
        eventually(60.0, || {
            let mut c = ctx.raw();
            c.llen::<_, usize>(keys.queue()).unwrap() == 0
                && c.llen::<_, usize>(&processing).unwrap() == 0
        })
        .await,
        "the daemon took and finished every entry"
    );
    let ids: Vec<String> = expect_terminal.iter().cloned().collect();
    // Terminal as the daemon reads a state: taking the id again would only
    // drop the entry. (A state another client wrote terminal, in a shape of
    // its own, stays as it was.)
    let open = |ctx: &TestContext| -> Vec<String> {
        let mut c = ctx.raw();
        ids.iter()
            .filter(|id| {
                let raw: Option<String> = c.get(ctx.keys().state(id)).unwrap();
                !matches!(
                    from_stored(id, raw.as_deref(), MAX_QUERY_BYTES),
                    Intake::AlreadyDone { .. }
                )
            })
            .cloned()
            .collect()
    };
    if !eventually(30.0, || open(&ctx).is_empty()).await {
        let mut c = ctx.raw();
        for id in open(&ctx) {
            let raw: Option<String> = c.get(keys.state(&id)).unwrap();
            let now = from_stored(&id, raw.as_deref(), MAX_QUERY_BYTES);
            eprintln!("{id}: {raw:?} -> {now:?}");
        }
        panic!("states not terminal");
    }
    let dead: Vec<String> = raw.lrange(keys.dead(), 0, -1).unwrap();
    assert_eq!(
        dead.len(),
        expect_dead.len(),
        "one dead record per id-less bad entry"
    );
    let mut recorded: Vec<String> = dead
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r).unwrap();
            assert!(v["reason"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
            v["entry"].as_str().unwrap().to_string()
        })
        .collect();
    let mut wanted: Vec<String> = expect_dead
        .iter()
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    recorded.sort();
    wanted.sort();
    assert_eq!(recorded, wanted);
    let events = all_events(&bb).await;
    assert_eq!(
        event_count(&events, "query_created"),
        created_without_id
            + entries
                .iter()
                .filter(|e| matches!(classify(e, MAX_QUERY_BYTES), EntryKind::JsonWithId { .. }))
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect::<HashSet<_>>()
                .len(),
        "each JSON entry that ran created its state once"
    );
    let answered = ids
        .iter()
        .filter(|id| {
            let raw: Option<String> = ctx.raw().get(keys.state(id)).unwrap();
            raw.and_then(|r| serde_json::from_str::<Value>(&r).ok())
                .is_some_and(|v| v["status"] == "answered")
        })
        .count();
    let failed = ids
        .iter()
        .filter(|id| {
            let raw: Option<String> = ctx.raw().get(keys.state(id)).unwrap();
            raw.and_then(|r| serde_json::from_str::<Value>(&r).ok())
                .is_some_and(|v| v["status"] == "failed")
        })
        .count();
    // Every id the daemon ran or failed has its own record of how it ended.
    let failed_events = per_query(&events, "query_failed");
    let completed_events = per_query(&events, "query_completed");
    for id in ids.iter().filter(|id| !done_before.contains(*id)) {
        let raw: String = ctx.raw().get(keys.state(id)).unwrap();
        let v: Value = serde_json::from_str(&raw).unwrap();
        let (kind, n) = if v["status"] == "failed" {
            ("query_failed", failed_events.get(id))
        } else {
            ("query_completed", completed_events.get(id))
        };
        assert_eq!(n, Some(&1), "{id} ({raw}): one {kind}");
    }
    assert!(daemon.alive(), "the daemon survived the entries");
    good_ones_are_served(&ctx, "good-1").await;

    // 2. Replies forged by another process: jobs nobody asked for, wrong
    // layers, garbage. Each is dropped and recorded, none accepted.
    let late_before = event_count(&all_events(&bb).await, "late_reply");
    let replies = generate(&mut runner, &reply_entry(), 100);
    for r in &replies {
        let _: () = raw.lpush(keys.replies("gd"), r.as_slice()).unwrap();
    }
    let mut late = late_before;
    for _ in 0..200 {
        late = event_count(&all_events(&bb).await, "late_reply");
        if late >= late_before + replies.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        late,
        late_before + replies.len(),
        "one record per forged reply"
    );
    assert!(daemon.alive());
    good_ones_are_served(&ctx, "good-2").await;

    // 3. Malformed jobs for the worker: each recorded (an error reply when it
    // names a usable reply list, else dropped with an event).
    let jobs: Vec<Vec<u8>> = generate(&mut runner, &job_entry(), 100)
        .into_iter()
        .filter(|j| serde_json::from_slice::<kitbash::protocol::Job>(j).is_err())
        .collect();
    let worker_events = |events: &[(String, String, String)]| {
        events
            .iter()
            .filter(|(e, _, r)| {
                (e == "layer_error" || e == "layer_timeout") && r.starts_with("worker:")
            })
            .count()
    };
    let before = worker_events(&all_events(&bb).await);
    for j in &jobs {
        let _: () = raw.lpush(keys.jobs("layer2"), j.as_slice()).unwrap();
    }
    let mut seen = before;
    for _ in 0..200 {
        seen = worker_events(&all_events(&bb).await);
        if seen >= before + jobs.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, before + jobs.len(), "one record per malformed job");
    let left: usize = raw.llen(keys.jobs("layer2")).unwrap();
    let held: usize = raw.llen(keys.jobs_processing("layer2", "echo-g")).unwrap();
    assert_eq!((left, held), (0, 0));
    assert!(worker.alive(), "the worker survived the jobs");
    good_ones_are_served(&ctx, "good-3").await;

    println!(
        "garbage: {} queue entries ({} dead-listed, {} ids ended terminal: {answered} answered, {failed} failed, {} terminal before), \
         100 states written by other clients, {} forged replies recorded as late, \
         {} malformed jobs recorded by the worker; daemon and worker alive; 30 of 30 good queries answered",
        entries.len(),
        expect_dead.len(),
        ids.len(),
        done_before.len(),
        replies.len(),
        jobs.len()
    );
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!(worker.terminate(), Some(0));
}
