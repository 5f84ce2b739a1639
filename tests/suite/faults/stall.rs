//! Stalls: a process frozen (SIGSTOP) past its health TTL, so that the rest
//! of the system rightly takes it for dead and takes over its work, then
//! woken (SIGCONT) with its old view of the world; and Redis away for longer
//! than the health TTL, so that every health key lapses although nobody
//! died. Whatever the woken or reconnecting process does next, no query may
//! get a second outcome, and no terminal state may be written again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use kitbash::QueryStatus;

use crate::common::{TestContext, TestRedis};
use crate::faults::support::*;

/// Events whose `reason` says the query was returned to the queue from
/// `list` (a dead daemon's processing list, recovered).
fn recovered_from<'a>(events: &'a [(String, String, String)], list: &str) -> HashSet<&'a str> {
    let reason = format!("returned to the queue from {list}");
    events
        .iter()
        .filter(|(e, _, r)| e == "query_recovered" && *r == reason)
        .map(|(_, q, _)| q.as_str())
        .collect()
}

/// The ids of `ids` whose stored state is not `before`, byte for byte.
fn rewritten(ctx: &TestContext, ids: &[String], before: &[Option<String>]) -> Vec<String> {
    ids.iter()
        .zip(before)
        .zip(raw_states(ctx, ids))
        .filter(|((_, b), a)| *b != a)
        .map(|((id, _), _)| id.clone())
        .collect()
}

/// The checks every stall scenario ends with: one fitting terminal event
/// per query, none failed, no terminal state rewritten since `before` was
/// read (`when` says when that was), nobody fenced twice or for nothing.
/// Returns (answered, unanswered, fenced).
fn assert_one_outcome(
    ctx: &TestContext,
    events: &[(String, String, String)],
    ids: &[String],
    before: &[Option<String>],
    when: &str,
) -> (usize, usize, usize) {
    let statuses = assert_one_terminal_event(ctx, events, ids);
    let (answered, unanswered) = answered_or_not(&statuses, ids.len());
    let changed = rewritten(ctx, ids, before);
    assert!(
        changed.is_empty(),
        "{} terminal states rewritten {when}, e.g. {:?}",
        changed.len(),
        &changed[..changed.len().min(10)]
    );
    (answered, unanswered, assert_fencing(events))
}

/// Asserts that no query has more than one `query_fenced` event and that
/// only a query some other process took away (`query_recovered`) is fenced;
/// returns how many were fenced.
fn assert_fencing(events: &[(String, String, String)]) -> usize {
    let fenced = per_query(events, "query_fenced");
    let twice: Vec<_> = fenced.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fenced more than once: {twice:?}");
    let recovered = per_query(events, "query_recovered");
    let never_taken: Vec<_> = fenced
        .keys()
        .filter(|q| !recovered.contains_key(*q))
        .collect();
    assert!(
        never_taken.is_empty(),
        "fenced although nobody took them away: {never_taken:?}"
    );
    fenced.len()
}

/// How many events of each kind `events` holds.
fn kinds(events: &[(String, String, String)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (e, _, _) in events {
        *out.entry(e.clone()).or_default() += 1;
    }
    out
}

/// A daemon frozen past its health TTL with every query it took waiting on
/// a slow layer1, declared dead and recovered by a second daemon that
/// answers them all, then woken: it writes no second outcome and rewrites
/// no terminal state (each query it lost is fenced, once), and nothing is
/// left under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_frozen_past_its_ttl_then_woken_writes_no_second_outcome() {
    const N: usize = 200;
    let ctx = TestContext::private();
    let bb = ctx.blackboard().await;
    let env = base_env(&ctx, &ctx.redis.url);
    // layer1 answers after 2 s, under its min_confidence (0.75): a miss, on
    // to layer2, which answers at once. Its timeout leaves room for a busy
    // machine.
    let mut daemon_env = env.clone();
    daemon_env.push(("KITBASH_LAYERS__LAYER1__TIMEOUT_MS".into(), "6000".into()));
    let mut l1_env = env.clone();
    l1_env.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "2000".into()));
    l1_env.push(("KITBASH_WORKERS__ECHO_CONFIDENCE".into(), "0.3".into()));
    // One slot per query, so every layer1 job is answered, none times out.
    let mut l1 = Proc::start(
        "echo-l1",
        &[
            "worker",
            "echo",
            "--layer",
            "layer1",
            "--name",
            "echo-l1",
            "--concurrency",
            &N.to_string(),
        ],
        &l1_env,
    );
    let mut l2 = Proc::echo_worker_on("echo-l2", "layer2", &env);
    let mut a = Proc::serve("daemon-a", &with_instance(&daemon_env, "daemon-a"));
    wait_reporting(&ctx, &["echo-l1", "echo-l2", "daemon-a"]).await;

    let ids = push_mixed(&bb, "fz", N, 0).await;
    // A took them all and handed each to layer1 (a state turns `processing`
    // when its first worker job is pushed).
    assert!(
        eventually(30.0, || states(&ctx, &ids).iter().all(|s| s
            .as_ref()
            .is_some_and(|s| s.status != QueryStatus::Pending)))
        .await,
        "daemon A takes the queries"
    );
    a.stop();
    let frozen = Instant::now();
    let a_list = ctx.keys().processing("daemon-a");
    let held: Vec<String> = redis::cmd("LRANGE")
        .arg(&a_list)
        .arg(0)
        .arg(-1)
        .query(&mut ctx.raw())
        .unwrap();
    assert!(
        !held.is_empty(),
        "A holds queries when frozen (layer1 takes 2 s each)"
    );
    assert!(
        eventually(10.0, || health(&ctx, "daemon-a").is_none()).await,
        "A's health key lapses while it is frozen"
    );
    let lapsed = frozen.elapsed();

    let mut b = Proc::serve("daemon-b", &with_instance(&daemon_env, "daemon-b"));
    let b_started = Instant::now();
    wait_all_terminal(&ctx, &ids, 60.0).await;
    let all_done = b_started.elapsed();
    let before = raw_states(&ctx, &ids);
    let events_before_wake = all_events(&bb).await.len();

    a.cont();
    let woken = Instant::now();
    let frozen_for = frozen.elapsed();
    wait_settled(
        &ctx,
        &["daemon-a", "daemon-b", "echo-l1", "echo-l2"],
        &["layer1", "layer2"],
        60.0,
    )
    .await;
    let settled = woken.elapsed();

    let events = all_events(&bb).await;
    let (answered, unanswered, fenced) =
        assert_one_outcome(&ctx, &events, &ids, &before, "after A woke");
    // B recovered every query A held, from A's list.
    let recovered = recovered_from(&events, &a_list);
    let missed: Vec<_> = held
        .iter()
        .filter(|q| !recovered.contains(q.as_str()))
        .collect();
    assert!(
        missed.is_empty(),
        "held by A, not recovered from its list: {missed:?}"
    );
    assert_drained(&ctx).await;
    for p in [&mut a, &mut b, &mut l1, &mut l2] {
        assert!(p.alive(), "{} is alive", p.label);
    }
    println!(
        "daemon frozen past its TTL: pushed {N}, A held {} when frozen, its health key gone {lapsed:.1?} later; \
         B recovered {} from A's list and all {N} were terminal {all_done:.1?} after B started \
         ({answered} answered, {unanswered} unanswered); A woken after {frozen_for:.1?} frozen, settled {settled:.1?} later: \
         {fenced} queries fenced, 0 terminal states rewritten, 0 second outcomes; events after the wake: {:?}",
        held.len(),
        recovered.len(),
        kinds(&events[events_before_wake.min(events.len())..]),
    );
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

/// A worker frozen past its health TTL while it holds jobs: the other
/// worker of its layer returns them to the job list and answers them; woken,
/// the frozen one answers jobs nobody waits for any more, which changes no
/// outcome and no terminal state, and nothing is left under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_frozen_mid_job_past_its_ttl_then_woken_changes_no_outcome() {
    const N: usize = 100;
    let ctx = TestContext::private();
    let bb = ctx.blackboard().await;
    let mut env = base_env(&ctx, &ctx.redis.url);
    // Long enough for a job held by the frozen worker to be found (its
    // health key lapses after 1 s, the other worker looks every 1 s) and
    // answered by the other one.
    env.push(("KITBASH_LAYERS__LAYER2__TIMEOUT_MS".into(), "8000".into()));
    let mut slow = env.clone();
    slow.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "500".into()));
    let mut wa = Proc::echo_worker("w-a", &slow);
    let mut wb = Proc::echo_worker("w-b", &slow);
    let mut daemon = Proc::serve("daemon", &with_instance(&env, "daemon"));
    wait_reporting(&ctx, &["w-a", "w-b", "daemon"]).await;

    let ids = push_mixed(&bb, "wf", N, 0).await;
    let wa_jobs = ctx.keys().jobs_processing("layer2", "w-a");
    // Freeze w-a while it holds jobs: if it finished the ones it had just
    // then, wake it and try again.
    let t0 = Instant::now();
    let held = loop {
        assert!(
            eventually(30.0, || llen(&ctx, &wa_jobs) > 0).await,
            "w-a takes jobs"
        );
        wa.stop();
        let held = llen(&ctx, &wa_jobs);
        if held > 0 {
            break held;
        }
        wa.cont();
        assert!(t0.elapsed() < Duration::from_secs(30), "w-a frozen mid-job");
    };
    let frozen = Instant::now();
    assert!(
        eventually(10.0, || health(&ctx, "w-a").is_none()).await,
        "w-a's health key lapses while it is frozen"
    );
    let lapsed = frozen.elapsed();
    assert!(
        eventually(20.0, || llen(&ctx, &wa_jobs) == 0).await,
        "w-b returns the jobs of the frozen w-a to the job list"
    );
    let returned = frozen.elapsed();
    wait_all_terminal(&ctx, &ids, 60.0).await;
    let all_done = frozen.elapsed();
    let before = raw_states(&ctx, &ids);
    let events_before_wake = all_events(&bb).await.len();

    wa.cont();
    let woken = Instant::now();
    let frozen_for = frozen.elapsed();
    wait_settled(&ctx, &["w-a", "w-b", "daemon"], &["layer2"], 30.0).await;
    let settled = woken.elapsed();

    let events = all_events(&bb).await;
    let (answered, unanswered, fenced) =
        assert_one_outcome(&ctx, &events, &ids, &before, "after w-a woke");
    assert_drained(&ctx).await;
    for p in [&mut wa, &mut wb, &mut daemon] {
        assert!(p.alive(), "{} is alive", p.label);
    }
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for s in states(&ctx, &ids).into_iter().flatten() {
        if let Some(a) = s.layer_attempts.iter().find(|a| a.layer == "layer2") {
            *by_worker
                .entry(a.worker.clone().unwrap_or_else(|| "none".into()))
                .or_default() += 1;
        }
    }
    println!(
        "worker frozen mid-job: pushed {N}, w-a held {held} jobs when frozen, its health key gone {lapsed:.1?} later, \
         its jobs returned by w-b {returned:.1?} after the freeze, all {N} terminal {all_done:.1?} after it \
         ({answered} answered, {unanswered} unanswered; layer2 attempts by worker {by_worker:?}); \
         w-a woken after {frozen_for:.1?} frozen, settled {settled:.1?} later: {fenced} fenced, \
         0 terminal states rewritten, 0 second outcomes; events after the wake: {:?}",
        kinds(&events[events_before_wake.min(events.len())..]),
    );
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!(wa.terminate(), Some(0));
    assert_eq!(wb.terminate(), Some(0));
}

/// Redis away for 3 s (three health TTLs) under load, with two daemons and
/// two workers: every health key lapses though nobody died. When Redis is
/// back, no query gets a second outcome or a rewritten terminal state,
/// nothing is left under way, everyone is alive, and afterwards no live
/// daemon is taken for dead any more.
///
/// Whether a daemon took its live peer for dead right after reconnecting
/// (recovering its list) is counted, not asserted away: a daemon cannot
/// tell a peer that is slow to reconnect from a dead one, so such a
/// recovery may happen (rarely, once absence must be seen twice); what must
/// hold is that it costs nothing but time: the peer fences what it lost and
/// every query still ends exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_away_past_the_health_ttl_two_daemons_no_second_outcome() {
    const N: usize = 1_000;
    let redis = TestRedis::start_private(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let mut ctx = TestContext::with_redis(redis);
    let bb = ctx.blackboard().await;
    load_grains(&bb, 50).await;
    let mut env = base_env(&ctx, &ctx.redis.url);
    env.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "100".into()));
    env.push(("KITBASH_LAYERS__LAYER2__TIMEOUT_MS".into(), "10000".into()));
    let daemons = ["d-0", "d-1"];
    let workers = ["e-0", "e-1"];
    let mut procs: Vec<Proc> = daemons
        .iter()
        .map(|d| Proc::serve(d, &with_instance(&env, d)))
        .chain(workers.iter().map(|w| Proc::echo_worker(w, &env)))
        .collect();
    let names: Vec<&str> = daemons.iter().chain(&workers).copied().collect();
    wait_reporting(&ctx, &names).await;

    let ids = push_mixed(&bb, "ro", N, 50).await;
    assert!(
        eventually(60.0, || terminal_count(&ctx, &ids) >= N / 4).await,
        "a quarter answered before the outage"
    );
    let in_flight_at_stop = N - terminal_count(&ctx, &ids);
    let logs_at_stop: Vec<usize> = procs.iter().map(|p| p.log().len()).collect();

    ctx.redis.stop();
    let stopped = Instant::now();
    let noticed = |procs: &[Proc]| {
        procs
            .iter()
            .zip(&logs_at_stop)
            .all(|(p, at)| p.log()[*at..].contains("Redis is not answering"))
    };
    assert!(
        eventually(20.0, || noticed(&procs)).await,
        "every process notices Redis is gone"
    );
    // The scenario: away for three health TTLs, so every health key lapses.
    let away = Duration::from_secs(3);
    if let Some(rest) = away.checked_sub(stopped.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    ctx.redis.start_again();
    let back = Instant::now();
    let downtime = back - stopped;
    // The test's own connection broke with the restart, too.
    let bb = ctx.blackboard().await;

    wait_all_terminal(&ctx, &ids, 120.0).await;
    let all_done = back.elapsed();
    let before = raw_states(&ctx, &ids);
    wait_settled(&ctx, &names, &["layer2"], 60.0).await;

    let events = all_events(&bb).await;
    let why = why_unanswered(&ctx, &ids, "layer2");
    let (answered, unanswered, fenced) =
        assert_one_outcome(&ctx, &events, &ids, &before, "after all were terminal");
    assert_drained(&ctx).await;
    for p in &mut procs {
        assert!(p.alive(), "{} is alive", p.label);
    }
    // Every daemon lived throughout: a recovery from a daemon's list took a
    // live peer for dead.
    let keys = ctx.keys();
    let from_live: BTreeMap<&str, usize> = daemons
        .iter()
        .map(|d| (*d, recovered_from(&events, &keys.processing(d)).len()))
        .collect();
    let orphans = events
        .iter()
        .filter(|(e, _, r)| e == "query_recovered" && r.starts_with("orphaned"))
        .count();
    // The same for workers: a worker returning its live peer's job list.
    let worker_returns: BTreeMap<String, usize> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let peer = keys.jobs_processing("layer2", workers[1 - i]);
            let log = procs[daemons.len() + i].log();
            let n = log
                .lines()
                .filter(|l| l.contains("returned jobs to the job list") && l.contains(&peer))
                .count();
            (format!("{w} returned {}'s", workers[1 - i]), n)
        })
        .collect();

    // Afterwards, with everyone reporting again, nobody is taken for dead.
    let after = push_mixed(&bb, "ro-after", 200, 50).await;
    wait_all_terminal(&ctx, &after, 60.0).await;
    let events_after = all_events(&bb).await;
    assert_one_terminal_event(&ctx, &events_after, &after);
    let recovered_after = per_query(&events_after, "query_recovered");
    let taken: Vec<_> = after
        .iter()
        .filter(|q| recovered_after.contains_key(*q))
        .collect();
    assert!(
        taken.is_empty(),
        "recovered once everyone reported again: {taken:?}"
    );

    println!(
        "Redis away {downtime:.1?} (health TTL 1 s), two daemons and two workers: pushed {N}, {in_flight_at_stop} not terminal at the stop, \
         all terminal {all_done:.1?} after Redis came back ({answered} answered, {unanswered} unanswered; layer2: {why:?}); \
         0 second outcomes, 0 terminal states rewritten; live daemon's list recovered: {from_live:?}, {fenced} queries fenced, \
         {orphans} orphans returned; live worker's job list returned: {worker_returns:?}; 200 of 200 served after it, none recovered"
    );
    for p in &mut procs {
        assert_eq!(p.terminate(), Some(0), "{} exits 0", p.label);
    }
}
