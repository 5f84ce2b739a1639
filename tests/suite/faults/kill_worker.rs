use std::time::Instant;

use kitbash::{Outcome, QueryStatus};
use redis::Commands;

use crate::common::TestContext;
use crate::faults::support::*;

/// `kill -9` of a worker holding jobs: its queries escalate after the layer
/// timeout, and a restarted worker serves the next jobs (and clears the dead
/// one's processing list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_worker_mid_job_queries_escalate_and_a_new_worker_serves() {
    let ctx = TestContext::private();
    let bb = ctx.blackboard().await;
    let env = base_env(&ctx, &ctx.redis.url);
    let mut slow = env.clone();
    slow.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "1500".into()));
    let mut w1 = Proc::echo_worker("w1", &slow);
    let _daemon = Proc::serve("daemon", &with_instance(&env, "daemon"));
    wait_reporting(&ctx, &["w1", "daemon"]).await;

    let ids = push_mixed(&bb, "kw", 20, 0).await;
    let w1_jobs = ctx.keys().jobs_processing("layer2", "w1");
    assert!(
        eventually(10.0, || ctx.raw().llen::<_, usize>(&w1_jobs).unwrap() >= 10).await,
        "w1 holds jobs"
    );
    let held: usize = ctx.raw().llen(&w1_jobs).unwrap();
    w1.kill9();
    let killed = Instant::now();

    wait_all_terminal(&ctx, &ids, 15.0).await;
    let ended = killed.elapsed();
    let mut timed_out = 0;
    for s in states(&ctx, &ids) {
        let s = s.unwrap();
        assert_eq!(s.status, QueryStatus::Unanswered, "{s:?}");
        let l2 = s
            .layer_attempts
            .iter()
            .find(|a| a.layer == "layer2")
            .expect("a layer2 attempt");
        assert!(
            matches!(l2.outcome, Outcome::Timeout | Outcome::Skipped),
            "{l2:?}"
        );
        if l2.outcome == Outcome::Timeout {
            timed_out += 1;
            // Escalated past layer2 after its timeout.
            assert!(s.layer_attempts.last().unwrap().layer != "layer2");
        }
    }
    assert!(timed_out >= held, "{timed_out} timed out, w1 held {held}");
    assert_exactly_once(&ctx, &bb, &ids).await;

    // A restarted worker serves the next jobs.
    let _w2 = Proc::echo_worker("w2", &env);
    wait_reporting(&ctx, &["w2", "daemon"]).await;
    let next = push_mixed(&bb, "kw-next", 10, 0).await;
    wait_all_terminal(&ctx, &next, 15.0).await;
    for s in states(&ctx, &next) {
        let s = s.unwrap();
        assert_eq!(s.status, QueryStatus::Answered, "{s:?}");
        let l2 = s.layer_attempts.last().unwrap();
        assert_eq!(
            (l2.layer.as_str(), l2.worker.as_deref()),
            ("layer2", Some("w2"))
        );
    }
    // w1's jobs went back to the job list and, expired, were dropped.
    assert!(
        eventually(10.0, || {
            let mut c = ctx.raw();
            !c.exists::<_, bool>(&w1_jobs).unwrap()
                && c.llen::<_, usize>(ctx.keys().jobs("layer2")).unwrap() == 0
        })
        .await,
        "the dead worker's processing list is cleared"
    );
    println!(
        "kill -9 worker: pushed 20, worker held {held}, {timed_out} escalated after the 2 s layer timeout, \
         all 20 terminal {ended:.1?} after the kill, lost 0, duplicated 0; \
         a new worker answered 10 of 10"
    );
}
