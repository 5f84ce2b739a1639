use redis::Commands;

use crate::common::TestContext;
use crate::faults::support::*;

async fn finished_total(port: u16) -> u64 {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .filter(|l| l.starts_with("kitbash_queries_finished_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// Two daemons and three workers on one layer: every query is started once,
/// attempted once per layer and finished once, and the work is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_three_workers_no_query_processed_twice() {
    let ctx = TestContext::private();
    let bb = ctx.blackboard().await;
    load_grains(&bb, 50).await;
    let mut env = base_env(&ctx, &ctx.redis.url);
    env.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "2".into()));
    env.push(("KITBASH_HTTP__ENABLED".into(), "true".into()));
    let ports = [free_port(), free_port()];
    let mut daemons: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let mut e = with_instance(&env, &format!("daemon-{i}"));
            e.push(("KITBASH_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
            Proc::serve(&format!("daemon-{i}"), &e)
        })
        .collect();
    let workers: Vec<Proc> = (0..3)
        .map(|i| Proc::echo_worker(&format!("echo-{i}"), &env))
        .collect();
    wait_reporting(
        &ctx,
        &["echo-0", "echo-1", "echo-2", "daemon-0", "daemon-1"],
    )
    .await;

    const N: usize = 4_000;
    let ids = push_mixed(&bb, "td", N, 50).await;
    wait_all_terminal(&ctx, &ids, 120.0).await;
    let statuses = assert_exactly_once(&ctx, &bb, &ids).await;
    assert_eq!(statuses.get("answered"), Some(&N), "{statuses:?}");

    let events = all_events(&bb).await;
    for kind in ["query_started", "layer_attempt"] {
        let twice: Vec<_> = per_query(&events, kind)
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .collect();
        assert!(twice.is_empty(), "{kind} more than once: {twice:?}");
    }
    assert!(per_query(&events, "query_recovered").is_empty());
    // Every echo query, and any grain query whose lookup timed out under
    // this load, went to a worker once.
    let attempts = per_query(&events, "layer_attempt").len();
    assert!(attempts >= N / 2, "{attempts}");

    // Each daemon finished a share, and together exactly N.
    let a = finished_total(ports[0]).await;
    let b = finished_total(ports[1]).await;
    assert_eq!(a + b, N as u64, "{a} + {b}");
    assert!(a > 0 && b > 0, "{a} / {b}");
    // Each worker answered a share, and together one job per attempt.
    let jobs_done = |w: &str| -> u64 {
        let raw: String = ctx.raw().get(ctx.keys().health(w)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        v["counters"]["jobs_done"].as_u64().unwrap_or(0)
    };
    let mut per_worker = Vec::new();
    assert!(
        eventually(5.0, || {
            per_worker = (0..3).map(|i| jobs_done(&format!("echo-{i}"))).collect();
            per_worker.iter().sum::<u64>() == attempts as u64
        })
        .await,
        "{per_worker:?}"
    );
    assert!(per_worker.iter().all(|n| *n > 0), "{per_worker:?}");
    println!(
        "two daemons, three workers: pushed {N}, daemons finished {a} + {b}, {attempts} jobs, workers answered {per_worker:?}; \
         each query started once and finished once; lost 0, duplicated 0"
    );
    for d in &mut daemons {
        assert_eq!(d.terminate(), Some(0));
    }
    drop(workers);
}
