use std::time::Instant;

use crate::common::TestContext;
use crate::faults::support::*;

/// `kill -9` of the daemon with thousands of queries under way, then a new
/// daemon: every query ends exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_daemon_under_load_then_new_daemon_every_query_ends_exactly_once() {
    let ctx = TestContext::private();
    let bb = ctx.blackboard().await;
    load_grains(&bb, 50).await;
    let mut env = base_env(&ctx, &ctx.redis.url);
    // The worker takes a little while, so the daemon holds many queries.
    env.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "10".into()));
    env.push(("KITBASH_LAYERS__LAYER2__TIMEOUT_MS".into(), "5000".into()));
    let _worker = Proc::echo_worker("echo-a", &env);
    let mut first = Proc::serve("daemon-1", &with_instance(&env, "daemon-1"));
    wait_reporting(&ctx, &["echo-a", "daemon-1"]).await;

    const N: usize = 3_000;
    let ids = push_mixed(&bb, "kd", N, 50).await;
    // Kill it mid-way.
    assert!(
        eventually(60.0, || terminal_count(&ctx, &ids) >= N / 4).await,
        "the first daemon answered a quarter"
    );
    let held: usize = keys_matching(&ctx, &ctx.keys().processing("*"))
        .iter()
        .map(|k| {
            redis::cmd("LLEN")
                .arg(k)
                .query::<usize>(&mut ctx.raw())
                .unwrap()
        })
        .sum();
    let done_at_kill = terminal_count(&ctx, &ids);
    first.kill9();
    let killed = Instant::now();

    let second = Proc::serve("daemon-2", &with_instance(&env, "daemon-2"));
    wait_all_terminal(&ctx, &ids, 120.0).await;
    let ended = killed.elapsed();
    let statuses = assert_exactly_once(&ctx, &bb, &ids).await;
    // On a loaded machine some echo jobs may outwait the layer timeout and
    // end unanswered; none fails, none is lost.
    let (answered, unanswered) = answered_or_not(&statuses, N);

    let events = all_events(&bb).await;
    let recovered = per_query(&events, "query_recovered");
    assert!(
        held == 0 || !recovered.is_empty(),
        "the dead daemon held {held} entries; the new one recovered them"
    );
    // Nothing left in any processing list.
    assert!(
        eventually(5.0, || keys_matching(&ctx, &ctx.keys().processing("*"))
            .is_empty())
        .await,
        "{:?}",
        keys_matching(&ctx, &ctx.keys().processing("*"))
    );
    println!(
        "kill -9 daemon: pushed {N}, {done_at_kill} done at the kill, dead daemon held {held}, \
         {} recovered, lost 0, duplicated 0; all {N} terminal {ended:.1?} after the kill \
         ({answered} answered, {unanswered} unanswered)",
        recovered.len(),
    );
    drop(second);
}
