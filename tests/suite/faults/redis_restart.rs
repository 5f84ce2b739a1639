use std::time::Instant;

use kitbash::QueryStatus;

use crate::common::{TestContext, TestRedis};
use crate::faults::support::*;

/// Redis restarted under load, with its append-only file on
/// (`appendfsync everysec`): daemon and worker reconnect by themselves, every
/// query pushed before the restart ends exactly once, and no processing list
/// keeps anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_load_with_aof_loses_nothing() {
    let redis = TestRedis::start_private(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let ctx = TestContext::with_redis(redis);
    let aof: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut ctx.raw())
        .unwrap();
    assert_eq!(aof[1], "yes");
    let bb = ctx.blackboard().await;
    load_grains(&bb, 50).await;
    let mut env = base_env(&ctx, &ctx.redis.url);
    env.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "10".into()));
    // The default health TTL: a worker stays known through a short restart.
    env.push(("KITBASH_WORKERS__HEALTH_TTL_S".into(), "5".into()));
    let mut worker = Proc::echo_worker("echo-r", &env);
    let mut daemon = Proc::serve("daemon", &with_instance(&env, "daemon"));
    wait_reporting(&ctx, &["echo-r", "daemon"]).await;

    const N: usize = 3_000;
    let ids = push_mixed(&bb, "rr", N, 50).await;
    assert!(
        eventually(60.0, || terminal_count(&ctx, &ids) >= N / 4).await,
        "a quarter answered before the restart"
    );
    let done_before = terminal_count(&ctx, &ids);
    let (daemon_log0, worker_log0) = (daemon.log().len(), worker.log().len());
    let mut ctx = ctx;
    ctx.redis.stop();
    let stopped = Instant::now();
    // Back once both have found it gone.
    assert!(
        eventually(20.0, || {
            daemon.log()[daemon_log0..].contains("Redis is not answering")
                && worker.log()[worker_log0..].contains("Redis is not answering")
        })
        .await,
        "daemon and worker notice Redis is gone"
    );
    ctx.redis.start_again();
    let restarted = Instant::now();
    let downtime = restarted - stopped;
    // The test's own connection broke with the restart, too.
    let bb = ctx.blackboard().await;

    wait_all_terminal(&ctx, &ids, 120.0).await;
    let ended = restarted.elapsed();
    let statuses = assert_exactly_once(&ctx, &bb, &ids).await;
    // Queries whose worker reply was lost with the restart, or whose worker
    // was not known to be alive just then, end unanswered: not failed, not lost.
    let (answered, unanswered) = answered_or_not(&statuses, N);
    let why = why_unanswered(&ctx, &ids, "layer2");
    assert!(
        daemon.alive() && worker.alive(),
        "both reconnected by themselves"
    );

    // A query pushed now is served.
    let after = push_mixed(&bb, "rr-after", 10, 50).await;
    wait_all_terminal(&ctx, &after, 30.0).await;
    for s in states(&ctx, &after) {
        assert_eq!(s.unwrap().status, QueryStatus::Answered);
    }
    // Nothing stays in a processing list: the daemon's or the worker's.
    assert_drained(&ctx).await;
    let recovered = per_query(&all_events(&bb).await, "query_recovered").len();
    println!(
        "Redis restart (AOF everysec): pushed {N}, {done_before} done before the restart, \
         Redis down {downtime:.1?}, all {N} terminal {ended:.1?} after it came back, \
         {answered} answered, {unanswered} unanswered (layer2: {why:?}), \
         {recovered} orphaned entries returned by the sweep, lost 0, duplicated 0"
    );
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!(worker.terminate(), Some(0));
}
