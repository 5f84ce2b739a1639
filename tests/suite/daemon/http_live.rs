//! The HTTP endpoint of a running daemon.

use std::time::Duration;

use kitbash::daemon::Daemon;
use kitbash::{Grain, QueryState, QueryStatus};
use tokio_util::sync::CancellationToken;

use crate::common::TestContext;
use crate::daemon::support::*;

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = client.get(url).send().await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_the_daemon_and_redis() {
    let mut ctx = TestContext::new();
    // A killed Redis refuses connections at once; the response timeout
    // (the default) only bounds a command a loaded machine is slow to answer.
    fast(&mut ctx).redis.retry_max_delay_ms = 200;
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("g", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let daemon = Daemon::new(ctx.settings.clone());
    let task = tokio::spawn(daemon.run_with_listener(Some(listener), shutdown.clone()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let ready = |want: u16| {
        let client = client.clone();
        let url = format!("{base}/health/ready");
        move || {
            let client = client.clone();
            let url = url.clone();
            async move { get(&client, &url).await.is_some_and(|(c, _)| c == want) }
        }
    };
    assert!(
        eventually(60.0, ready(200)).await,
        "ready once Redis answers and the loop runs"
    );
    let q = QueryState::new("What is the capital of Kenya?");
    bb.enqueue(&q).await.unwrap();
    assert_eq!(
        wait_done(&ctx, &bb, &q.query_id, 60.0).await.status,
        QueryStatus::Answered
    );

    let (code, metrics) = get(&client, &format!("{base}/metrics")).await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("kitbash_queries_finished_total{status=\"answered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kitbash_layer_attempts_total{layer=\"layer0\",outcome=\"hit\"} 1"),
        "{metrics}"
    );
    let (code, detailed) = get(&client, &format!("{base}/health/detailed"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let detailed: serde_json::Value = serde_json::from_str(&detailed).unwrap();
    assert_eq!(detailed["queue_depth"], 0);
    assert_eq!(detailed["in_flight"], 0);

    if !ctx.redis.is_private() {
        // A shared server (KITBASH_TEST_REDIS_URL) is not ours to kill.
        shutdown.cancel();
        task.await.unwrap().unwrap();
        return;
    }
    // Redis goes away: liveness stays, readiness turns 503.
    ctx.redis.kill();
    assert!(
        eventually(60.0, ready(503)).await,
        "not ready while Redis is down"
    );
    let (code, _) = get(&client, &format!("{base}/health")).await.unwrap();
    assert_eq!(code, 200);

    // Redis is back: the daemon reconnects by itself and serves again.
    ctx.redis.restart();
    assert!(
        eventually(60.0, ready(200)).await,
        "ready again after Redis returns"
    );
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("g", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let q = QueryState::new("What is the capital of Kenya?");
    bb.enqueue(&q).await.unwrap();
    assert_eq!(
        wait_done(&ctx, &bb, &q.query_id, 60.0).await.status,
        QueryStatus::Answered
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
