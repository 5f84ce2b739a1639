//! Priority lanes against a real redis-server and real daemons: the order
//! of the takes and each lane's minimum share, a high query overtaking a
//! low backlog, backpressure per lane, foreign clients' pushes, and
//! recovery returning entries to their own lanes.

use std::collections::HashMap;

use kitbash::store::lanes::Lane;
use kitbash::{BlackboardError, QueryState, QueryStatus};

use crate::common::TestContext;
use crate::daemon::support::*;
use crate::dashboard::kenya;
use crate::worker::Running;

/// Enqueues `n` layer0 queries in `lane`; returns their ids.
async fn push(bb: &kitbash::Blackboard, lane: Lane, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let mut q = QueryState::new("What is the capital of Kenya?");
        q.set_priority(lane);
        bb.enqueue(&q).await.unwrap();
        ids.push(q.query_id);
    }
    ids
}

/// The lanes of the queries in the order the daemon started them.
async fn start_order(bb: &kitbash::Blackboard, lane_of: &HashMap<String, Lane>) -> Vec<Lane> {
    bb.recent_matching(1_000_000, 1_000_000, |e| e.event() == Some("query_started"))
        .await
        .unwrap()
        .iter()
        .filter_map(|e| lane_of.get(e.get("query_id")?).copied())
        .collect()
}

/// Every prefix of the takes (`order`, the lane of each take) in which a
/// lane still had entries gave it at least its default minimum share (less
/// one: a share is earned before it is spent).
fn assert_minimum_shares(order: &[Lane]) {
    let shares = [(Lane::High, 0.2), (Lane::Normal, 0.1), (Lane::Low, 0.05)];
    for (lane, share) in shares {
        let total = order.iter().filter(|l| **l == lane).count();
        let mut taken = 0;
        for (k, l) in order.iter().enumerate() {
            if taken == total {
                break; // the lane is empty from here on
            }
            let floor = (share * (k + 1) as f64).floor() as usize;
            assert!(
                taken + 1 >= floor,
                "{lane} had {taken} of the first {} takes, under its share {share}: {order:?}",
                k + 1
            );
            if *l == lane {
                taken += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_lanes_go_first_and_every_lane_keeps_its_minimum_share() {
    let mut ctx = TestContext::new();
    // One query at a time: the order of the starts is the order of the takes.
    fast(&mut ctx).orchestrator.max_in_flight = 1;
    let bb = kenya(&ctx).await;
    let mut lane_of = HashMap::new();
    for (lane, n) in [
        (Lane::Low, 150),
        (Lane::Normal, 150),
        (Lane::High, 150),
        (Lane::Critical, 150),
    ] {
        for id in push(&bb, lane, n).await {
            lane_of.insert(id, lane);
        }
    }
    let d = RunningDaemon::start(&ctx.settings);
    let ids: Vec<String> = lane_of.keys().cloned().collect();
    for id in &ids {
        wait_done(&ctx, &bb, id, 120.0).await;
    }
    d.stop().await;
    let order = start_order(&bb, &lane_of).await;
    assert_eq!(order.len(), 600, "each query started once");

    assert_minimum_shares(&order);
    // And the lanes went in priority order: on average each lane started
    // before the next one down.
    let mean = |lane: Lane| {
        let at: Vec<usize> = (0..order.len()).filter(|i| order[*i] == lane).collect();
        at.iter().sum::<usize>() as f64 / at.len() as f64
    };
    let means = Lane::ALL.map(mean);
    assert!(means.windows(2).all(|w| w[0] < w[1]), "{means:?}");
    // Critical is never held back: its 150 go in the first 150 / (1 - the
    // others' shares) takes, and a little more.
    let last_critical = order.iter().rposition(|l| *l == Lane::Critical).unwrap();
    assert!(
        last_critical < 150 * 100 / 65 + 5,
        "{last_critical}: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_query_overtakes_a_low_backlog() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = kenya(&ctx).await;
    let low = push(&bb, Lane::Low, 5000).await;
    let d = RunningDaemon::start(&ctx.settings);
    // The backlog is being worked on.
    wait_done(&ctx, &bb, &low[100], 120.0).await;
    let mut high = QueryState::new("What is the capital of Kenya?");
    high.set_priority(Lane::High);
    bb.enqueue(&high).await.unwrap();
    let done = wait_done(&ctx, &bb, &high.query_id, 120.0).await;
    assert_eq!(done.status, QueryStatus::Answered);
    // When it was answered, low queries were still waiting behind it.
    let waiting = redis::cmd("LLEN")
        .arg(ctx.keys().lane(Lane::Low))
        .query::<u64>(&mut ctx.raw())
        .unwrap();
    assert!(waiting > 0, "the low backlog was not done before it");
    let lane_of: HashMap<String, Lane> = low
        .iter()
        .map(|id| (id.clone(), Lane::Low))
        .chain([(high.query_id.clone(), Lane::High)])
        .collect();
    // (low[100]'s completion signal was read above.)
    for (i, id) in low.iter().enumerate() {
        if i != 100 {
            wait_done(&ctx, &bb, id, 120.0).await;
        }
    }
    d.stop().await;
    let order = start_order(&bb, &lane_of).await;
    let at = order.iter().position(|l| *l == Lane::High).unwrap();
    let started_after = order.len() - 1 - at;
    assert!(
        started_after as u64 >= waiting,
        "{started_after} low queries started after it, {waiting} were waiting when it was answered"
    );
    // The started event says its priority.
    let started = bb
        .recent_matching(10, 1_000_000, |e| {
            e.event() == Some("query_started") && e.get("query_id") == Some(&high.query_id)
        })
        .await
        .unwrap();
    assert_eq!(started[0].get("priority"), Some("high"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_is_per_lane() {
    let mut ctx = TestContext::new();
    fast(&mut ctx).orchestrator.max_queue_len = 3;
    ctx.settings.orchestrator.lanes.low.max_queue_len = Some(5);
    let bb = ctx.blackboard().await;
    push(&bb, Lane::Low, 5).await;
    let mut one_more = QueryState::new("What is the capital of Kenya?");
    one_more.set_priority(Lane::Low);
    let err = bb.enqueue(&one_more).await.unwrap_err();
    assert!(
        matches!(
            err,
            BlackboardError::QueueFull {
                lane: Lane::Low,
                max: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("low lane"), "{err}");
    // A flood of low does not make the others refuse.
    push(&bb, Lane::High, 3).await;
    push(&bb, Lane::Normal, 3).await;
    assert_eq!(bb.queue_len_by_lane().await.unwrap(), [0, 3, 3, 5]);
    assert_eq!(bb.queue_len().await.unwrap(), 11);
    let err = bb
        .enqueue(&QueryState::new("What is the capital of Kenya?"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlackboardError::QueueFull {
                lane: Lane::Normal,
                max: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_clients_push_to_lanes_with_or_without_the_bell() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = kenya(&ctx).await;
    let d = RunningDaemon::start(&ctx.settings);
    // Idle: the daemon waits on the normal lane and on the bell.
    let ready = || async { !bb.list_health().await.unwrap().is_empty() };
    assert!(eventually(60.0, ready).await);
    let mut raw = ctx.raw();
    let keys = ctx.keys();
    // As redis-cli would: a JSON entry on the high lane, with the bell.
    redis::pipe()
        .atomic()
        .lpush(
            keys.lane(Lane::High),
            r#"{"query_id":"rc-high","query_text":"What is the capital of Kenya?","priority":"high"}"#,
        )
        .lpush(keys.bell(), 1)
        .ltrim(keys.bell(), 0, 0)
        .exec(&mut raw)
        .unwrap();
    // And without it: found by the next batch (within the block time).
    redis::cmd("LPUSH")
        .arg(keys.lane(Lane::Low))
        .arg(r#"{"query_id":"rc-low","query_text":"What is the capital of Kenya?"}"#)
        .exec(&mut raw)
        .unwrap();
    for id in ["rc-high", "rc-low"] {
        let s = wait_done(&ctx, &bb, id, 60.0).await;
        assert_eq!(s.status, QueryStatus::Answered, "{id}");
    }
    // A number as priority (as the Python original wrote) is normal.
    let mut q = QueryState::new("What is the capital of Kenya?");
    q.extra.insert("priority".into(), serde_json::json!(5));
    assert_eq!(q.lane(), Lane::Normal);
    bb.enqueue(&q).await.unwrap();
    assert_eq!(
        wait_done(&ctx, &bb, &q.query_id, 60.0).await.status,
        QueryStatus::Answered
    );
    d.stop().await;
    // The bell holds at most one token.
    let bell: u64 = redis::cmd("LLEN").arg(keys.bell()).query(&mut raw).unwrap();
    assert!(bell <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_returns_each_entry_to_its_own_lane() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = kenya(&ctx).await;
    let keys = ctx.keys();
    let mut raw = ctx.raw();
    // A daemon died holding these: its processing list, no health key.
    let dead_list = keys.processing("daemon-gone");
    let mut lane_of = HashMap::new();
    for lane in [Lane::High, Lane::Low, Lane::Normal] {
        let mut q = QueryState::new("What is the capital of Kenya?");
        q.set_priority(lane);
        redis::cmd("SET")
            .arg(keys.state(&q.query_id))
            .arg(serde_json::to_string(&q).unwrap())
            .exec(&mut raw)
            .unwrap();
        redis::cmd("LPUSH")
            .arg(&dead_list)
            .arg(&q.query_id)
            .exec(&mut raw)
            .unwrap();
        lane_of.insert(q.query_id, lane);
    }
    redis::cmd("LPUSH")
        .arg(&dead_list)
        .arg(r#"{"query_id":"json-crit","query_text":"What is the capital of Kenya?","priority":"critical"}"#)
        .exec(&mut raw)
        .unwrap();
    lane_of.insert("json-crit".into(), Lane::Critical);

    let d = RunningDaemon::start(&ctx.settings);
    for id in lane_of.keys() {
        let s = wait_done(&ctx, &bb, id, 60.0).await;
        assert_eq!(s.status, QueryStatus::Answered, "{id}");
    }
    d.stop().await;
    let recovered = bb
        .recent_matching(100, 1_000_000, |e| e.event() == Some("query_recovered"))
        .await
        .unwrap();
    for (id, lane) in &lane_of {
        // A JSON entry is recovered before it has a state: its event names
        // no query.
        let named = if id == "json-crit" {
            None
        } else {
            Some(id.as_str())
        };
        let e = recovered
            .iter()
            .find(|e| e.get("query_id") == named)
            .unwrap_or_else(|| panic!("{id} recovered: {recovered:?}"));
        let want = (*lane != Lane::Normal).then(|| lane.as_str());
        assert_eq!(e.get("priority"), want, "{id} went back to the {lane} lane");
    }
}

/// A job as a daemon pushes it, for `lane`, answered to `reply_to`.
fn job_in(lane: Lane, n: usize, reply_to: &str) -> kitbash::protocol::Job {
    kitbash::protocol::Job {
        job_id: format!("{lane}-{n}"),
        query_id: format!("q-{lane}-{n}"),
        layer: "layer2".into(),
        text: format!("{lane} question {n}"),
        deadline_ms: chrono::Utc::now().timestamp_millis() + 120_000,
        reply_to: reply_to.into(),
        priority: (lane != Lane::Normal).then(|| lane.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_jobs_highest_lane_first_and_every_lane_keeps_its_minimum_share() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let keys = ctx.keys();
    let reply_to = keys.replies("lanes-test");
    let mut raw = ctx.raw();
    // Jobs of every lane wait before the worker starts; it answers one at
    // a time, so the order of the replies is the order of its takes.
    let mut lane_of = HashMap::new();
    for lane in [Lane::Low, Lane::Normal, Lane::High, Lane::Critical] {
        for n in 0..60 {
            let job = job_in(lane, n, &reply_to);
            redis::cmd("LPUSH")
                .arg(keys.jobs_lane("layer2", lane))
                .arg(serde_json::to_string(&job).unwrap())
                .exec(&mut raw)
                .unwrap();
            lane_of.insert(job.job_id, lane);
        }
    }
    let worker = Running::start(
        &ctx.settings,
        kitbash::worker::echo::EchoBackend::new(0.9),
        1,
    );
    let mut order = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while order.len() < lane_of.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {} replies came: {order:?}",
            order.len(),
            lane_of.len()
        );
        let popped: Option<(String, String)> = redis::cmd("BRPOP")
            .arg(&reply_to)
            .arg(1.0)
            .query(&mut raw)
            .unwrap();
        if let Some((_, reply)) = popped {
            let reply: kitbash::protocol::Reply = serde_json::from_str(&reply).unwrap();
            assert_eq!(reply.outcome, kitbash::protocol::ReplyOutcome::Hit);
            order.push(lane_of[&reply.job_id]);
        }
    }
    worker.stop().await;

    // The first takes are critical's, but each lower lane has its share of
    // every prefix of the takes while it still has jobs.
    assert_eq!(order[0], Lane::Critical, "{order:?}");
    assert_minimum_shares(&order);
    // And higher lanes are done first: critical's last job comes before
    // low's first half is done.
    let last_critical = order.iter().rposition(|l| *l == Lane::Critical).unwrap();
    let low_before = order[..last_critical]
        .iter()
        .filter(|l| **l == Lane::Low)
        .count();
    assert!(
        low_before < 30,
        "{low_before} low jobs before the last critical: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_query_overtakes_low_queries_waiting_for_a_busy_worker() {
    let mut ctx = TestContext::new();
    layer2_only(fast(&mut ctx));
    let bb = kenya(&ctx).await;
    // One slow slot: the low queries' jobs queue up in front of the worker.
    let backend = kitbash::worker::echo::EchoBackend::new(0.9)
        .with_delay(std::time::Duration::from_millis(200));
    let worker = Running::start(&ctx.settings, backend, 1);
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;
    // The daemon must know the worker takes from the lanes.
    assert!(
        eventually(30.0, || async {
            bb.list_health()
                .await
                .unwrap()
                .iter()
                .any(|h| h.layer.as_deref() == Some("layer2") && h.lanes)
        })
        .await,
        "the worker says it takes from the lanes"
    );
    let mut lows = Vec::new();
    for n in 0..30 {
        let mut q = QueryState::new(format!("low question {n} for the worker"));
        q.set_priority(Lane::Low);
        bb.enqueue(&q).await.unwrap();
        lows.push(q.query_id);
    }
    // The high query comes once most low jobs wait in their lane's list.
    let low_jobs = ctx.keys().jobs_lane("layer2", Lane::Low);
    assert!(
        eventually(60.0, || async {
            redis::cmd("LLEN")
                .arg(&low_jobs)
                .query::<u64>(&mut ctx.raw())
                .unwrap()
                >= 20
        })
        .await,
        "the low queries' jobs wait for the worker"
    );
    let mut high = QueryState::new("a high question for the worker");
    high.set_priority(Lane::High);
    bb.enqueue(&high).await.unwrap();

    let done = wait_done(&ctx, &bb, &high.query_id, 60.0).await;
    assert_eq!(done.status, QueryStatus::Answered, "{done:?}");
    assert_eq!(
        done.answer.as_ref().unwrap().text,
        "echo: a high question for the worker"
    );
    let mut answered_before = 0;
    for id in &lows {
        if bb.get_state(id).await.unwrap().unwrap().status == QueryStatus::Answered {
            answered_before += 1;
        }
    }
    // In one FIFO job list all 30 would be answered first.
    assert!(
        answered_before < 15,
        "{answered_before} of 30 low queries were answered before the high one"
    );
    for id in &lows {
        assert_eq!(
            wait_done(&ctx, &bb, id, 60.0).await.status,
            QueryStatus::Answered
        );
    }
    d.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_knows_no_lanes_gets_every_lanes_jobs() {
    let mut ctx = TestContext::new();
    layer2_only(fast(&mut ctx));
    let bb = kenya(&ctx).await;
    // A worker speaking only the protocol: BLMOVE from `<p>:jobs:layer2`.
    let w = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("from a foreign worker", 0.9, std::time::Duration::ZERO),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;
    let mut ids = Vec::new();
    for lane in Lane::ALL {
        let mut q = QueryState::new(format!("a {lane} question for a foreign worker"));
        q.set_priority(lane);
        bb.enqueue(&q).await.unwrap();
        ids.push(q.query_id);
    }
    for id in &ids {
        let s = wait_done(&ctx, &bb, id, 60.0).await;
        assert_eq!(s.status, QueryStatus::Answered, "{s:?}");
        assert_eq!(s.answer.as_ref().unwrap().text, "from a foreign worker");
    }
    d.stop().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_returns_each_job_to_its_own_lane() {
    let mut ctx = TestContext::new();
    fast(&mut ctx).workers.shutdown_grace_s = 0;
    let keys = ctx.keys();
    let reply_to = keys.replies("lanes-test");
    let mut raw = ctx.raw();
    let lanes = [Lane::Critical, Lane::High, Lane::Normal, Lane::Low];
    for lane in lanes {
        let job = job_in(lane, 0, &reply_to);
        redis::cmd("LPUSH")
            .arg(keys.jobs_lane("layer2", lane))
            .arg(serde_json::to_string(&job).unwrap())
            .exec(&mut raw)
            .unwrap();
    }
    // A backend slower than the jobs' deadlines: the worker holds all four
    // until it is stopped, then returns them.
    let backend = kitbash::worker::echo::EchoBackend::new(0.9)
        .with_delay(std::time::Duration::from_secs(600));
    let worker = Running::start(&ctx.settings, backend, 4);
    let all_taken = eventually(60.0, || {
        let mut raw = ctx.raw();
        let lists: Vec<String> = lanes.iter().map(|l| keys.jobs_lane("layer2", *l)).collect();
        async move {
            lists
                .iter()
                .all(|k| redis::cmd("LLEN").arg(k).query::<usize>(&mut raw).unwrap() == 0)
        }
    })
    .await;
    assert!(all_taken, "the worker took the four jobs");
    worker.stop().await;
    for lane in lanes {
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.jobs_lane("layer2", lane))
            .arg(0)
            .arg(-1)
            .query(&mut raw)
            .unwrap();
        assert_eq!(list.len(), 1, "{lane}: {list:?}");
        let job: kitbash::protocol::Job = serde_json::from_str(&list[0]).unwrap();
        assert_eq!(job.job_id, format!("{lane}-0"), "{lane}: {list:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_query_runs_at_once_while_low_queries_hold_every_slot_of_theirs() {
    let mut ctx = TestContext::new();
    let s = fast(&mut ctx);
    layer2_only(s);
    // Four slots, two of them kept for critical and high.
    s.orchestrator.max_in_flight = 4;
    s.orchestrator.lanes.reserved_in_flight = Some(2);
    // Long enough that no low query ends while the test looks.
    s.layers.get_mut("layer2").unwrap().timeout_ms = 60_000;
    let bb = kenya(&ctx).await;
    // A worker that answers long after the layer's timeout: each low query
    // holds its slot for the whole timeout.
    let w = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("too late", 0.9, std::time::Duration::from_secs(120)),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    d.wait_until_sees(&bb, "layer2").await;
    let mut lows = Vec::new();
    for n in 0..5 {
        let mut q = QueryState::new(format!("low question {n} nobody answers in time"));
        q.set_priority(Lane::Low);
        bb.enqueue(&q).await.unwrap();
        lows.push(q.query_id);
    }
    // Both low slots are taken (their jobs wait in the worker's list).
    let keys = ctx.keys();
    assert!(
        eventually(30.0, || async {
            redis::cmd("LLEN")
                .arg(keys.lane(Lane::Low))
                .query::<u64>(&mut ctx.raw())
                .unwrap()
                == 3
        })
        .await,
        "two low queries taken, three waiting"
    );
    let mut high = QueryState::new("What is the capital of Kenya?");
    high.set_priority(Lane::High);
    bb.enqueue(&high).await.unwrap();
    let done = wait_done(&ctx, &bb, &high.query_id, 60.0).await;
    assert_eq!(done.status, QueryStatus::Answered, "{done:?}");
    // It did not wait for a low query's slot: none has ended yet (each
    // waits for the layer's timeout), and no third one was taken.
    for id in &lows {
        let s = bb.get_state(id).await.unwrap().unwrap();
        assert!(
            !s.status.is_terminal(),
            "{id} ended before the high query: {s:?}"
        );
    }
    let started = bb
        .recent_matching(1_000, 1_000_000, |e| e.event() == Some("query_started"))
        .await
        .unwrap();
    let low_started = started
        .iter()
        .filter(|e| lows.iter().any(|id| Some(id.as_str()) == e.get("query_id")))
        .count();
    assert_eq!(low_started, 2, "low queries never pass their slots");
    d.stop().await;
    w.stop().await;
}
