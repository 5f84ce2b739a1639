use std::time::{Duration, Instant};

use kitbash::QueryStatus;
use redis::Commands;

use crate::common::{TestContext, TestRedis};
use crate::faults::support::*;

async fn status_of(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Redis away for 10 s with queries in flight: `/health/ready` turns 503,
/// daemon and worker say why once (not per query), burn no CPU while
/// waiting, and serve again when Redis is back, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_for_10_s_ready_503_one_log_line_no_busy_loop_then_resumes() {
    let redis = TestRedis::start_private(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let mut ctx = TestContext::with_redis(redis);
    let bb = ctx.blackboard().await;
    load_grains(&bb, 20).await;
    let port = free_port();
    let mut env = base_env(&ctx, &ctx.redis.url);
    env.push(("KITBASH_HTTP__ENABLED".into(), "true".into()));
    env.push(("KITBASH_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
    let mut slow = env.clone();
    slow.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "1000".into()));
    let mut worker = Proc::echo_worker("echo-o", &slow);
    let mut daemon = Proc::serve("daemon", &with_instance(&env, "daemon-o"));
    let ready = format!("http://127.0.0.1:{port}/health/ready");
    let live = format!("http://127.0.0.1:{port}/health");
    let t = Instant::now();
    while status_of(&ready).await != Some(200) {
        assert!(t.elapsed() < Duration::from_secs(15), "daemon ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_reporting(&ctx, &["echo-o", "daemon-o"]).await;

    // 40 queries: half answered by layer0 at once, half held by the slow worker.
    let ids = push_mixed(&bb, "out", 40, 20).await;
    let jobs = ctx.keys().jobs_processing("layer2", "echo-o");
    assert!(
        eventually(10.0, || ctx.raw().llen::<_, usize>(&jobs).unwrap() > 0).await,
        "the worker holds jobs"
    );
    let in_flight_at_stop = 40 - terminal_count(&ctx, &ids);
    let (daemon_log0, worker_log0) = (daemon.log().len(), worker.log().len());
    let (daemon_cpu0, worker_cpu0) = (daemon.cpu_time(), worker.cpu_time());

    ctx.redis.stop();
    let stopped = Instant::now();
    let mut went_503 = None;
    while stopped.elapsed() < Duration::from_secs(10) {
        if went_503.is_none() && status_of(&ready).await == Some(503) {
            went_503 = Some(stopped.elapsed());
        }
        assert_eq!(status_of(&live).await, Some(200), "liveness holds");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let went_503 = went_503.expect("/health/ready turned 503 while Redis was away");
    let daemon_cpu = daemon.cpu_time() - daemon_cpu0;
    let worker_cpu = worker.cpu_time() - worker_cpu0;
    let daemon_out = daemon.log()[daemon_log0..].to_string();
    let worker_out = worker.log()[worker_log0..].to_string();

    ctx.redis.start_again();
    let back = Instant::now();
    while status_of(&ready).await != Some(200) {
        assert!(back.elapsed() < Duration::from_secs(20), "ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_after = back.elapsed();
    wait_all_terminal(&ctx, &ids, 30.0).await;
    let bb = ctx.blackboard().await;
    assert_exactly_once(&ctx, &bb, &ids).await;
    let next = push_mixed(&bb, "out-next", 4, 20).await;
    wait_all_terminal(&ctx, &next, 20.0).await;
    let served_after = back.elapsed();
    for s in states(&ctx, &next) {
        assert_eq!(s.unwrap().status, QueryStatus::Answered);
    }

    // One error line each for the whole outage, naming the cause.
    assert_eq!(
        count(&daemon_out, "Redis is not answering"),
        1,
        "daemon log during the outage:\n{daemon_out}"
    );
    assert_eq!(
        count(&worker_out, "Redis is not answering"),
        1,
        "worker log during the outage:\n{worker_out}"
    );
    let daemon_lines = daemon_out.lines().count();
    let worker_lines = worker_out.lines().count();
    assert!(daemon_lines <= 5, "{daemon_out}");
    assert!(worker_lines <= 5, "{worker_out}");
    let daemon_after = daemon.log()[daemon_log0..].to_string();
    assert_eq!(
        count(&daemon_after, "Redis answers again"),
        1,
        "{daemon_after}"
    );
    // No busy loop: a spinning process would use most of a core for 10 s.
    assert!(
        daemon_cpu < Duration::from_secs(2),
        "daemon used {daemon_cpu:?}"
    );
    assert!(
        worker_cpu < Duration::from_secs(2),
        "worker used {worker_cpu:?}"
    );
    println!(
        "Redis away 10 s: {in_flight_at_stop} of 40 queries in flight; /health/ready 503 after {went_503:?}; \
         daemon log {daemon_lines} lines, worker log {worker_lines} lines during the outage; \
         CPU during the outage: daemon {daemon_cpu:?}, worker {worker_cpu:?}; \
         ready {ready_after:?} after Redis came back, 4 new queries answered {served_after:?} after it \
         (behind the worker's 1 s per job); \
         40 of 40 ended exactly once"
    );
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!(worker.terminate(), Some(0));
}
