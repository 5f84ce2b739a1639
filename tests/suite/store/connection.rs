use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kitbash::config::RedisSettings;
use kitbash::{Connector, store::connection::ConnectError};
use tokio_util::sync::CancellationToken;

use crate::common::{PATIENCE, TestContext, TestRedis};

/// A "Redis" on `listener` that accepts every connection and closes it at
/// once, so no command is ever answered; counts the connections, which are
/// the connector's tries. Aborting the task frees the port.
fn refuse_on(listener: tokio::net::TcpListener) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let tries = Arc::new(AtomicUsize::new(0));
    let counted = tries.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        }
    });
    (tries, task)
}

/// Waits until `tries` reaches `n`, failing after [`PATIENCE`].
async fn wait_for_tries(tries: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while tries.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the connector stopped trying");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A blocking call longer than the response timeout works on a dedicated
/// blocking connection and fails on the shared one: that is why they differ.
#[tokio::test]
async fn blocking_connection_outlives_the_response_timeout() {
    let mut ctx = TestContext::new();
    ctx.settings.redis.response_timeout_ms = 200;
    let connector = ctx.connector();
    let key = ctx.keys().queue();

    // Blocks for 0.6 s, three times the response timeout; the dedicated
    // connection allows far more, so a slow machine cannot fail it.
    let mut blocking = connector.blocking(Duration::from_secs(10)).await.unwrap();
    let got: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(&key)
        .arg(0.6)
        .query_async(&mut blocking)
        .await
        .unwrap();
    assert!(got.is_none());

    let mut shared = connector.shared().await.unwrap();
    let err = redis::cmd("BLPOP")
        .arg(&key)
        .arg(0.6)
        .query_async::<Option<(String, String)>>(&mut shared)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn waits_for_redis_that_is_down_at_start() {
    let mut server = TestRedis::start_private(&[]);
    if !server.is_private() {
        return;
    }
    let port = server.port;
    server.kill();
    let settings = RedisSettings {
        url: Some(format!("redis://127.0.0.1:{port}/0")),
        retry_max_delay_ms: 200,
        connect_timeout_ms: 200,
        ..Default::default()
    };
    let connector = Connector::new(&settings).unwrap();
    assert!(matches!(
        connector.shared().await,
        Err(ConnectError::Unreachable { .. })
    ));

    // While Redis is away, something on its port that never answers lets
    // the test count the tries.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port of the killed redis-server is free again");
    let (tries, refuser) = refuse_on(listener);
    let cancel = CancellationToken::new();
    let waiting = tokio::spawn({
        let connector = connector.clone();
        let cancel = cancel.clone();
        async move { connector.shared_with_retry(&cancel).await }
    });
    wait_for_tries(&tries, 3).await;
    assert!(!waiting.is_finished(), "keeps retrying while Redis is down");
    refuser.abort();
    let _ = refuser.await; // the listener is closed
    server.restart();
    let mut conn = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("connects once Redis is up")
        .unwrap()
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    // The shared connection reconnects by itself after a restart.
    server.restart();
    let deadline = Instant::now() + PATIENCE;
    while redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "never reconnected after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cancelling_the_wait_returns_cancelled() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tries, refuser) = refuse_on(listener);
    let settings = RedisSettings {
        url: Some(format!("redis://127.0.0.1:{port}/0")),
        retry_max_delay_ms: 100,
        connect_timeout_ms: 100,
        ..Default::default()
    };
    let connector = Connector::new(&settings).unwrap();
    let cancel = CancellationToken::new();
    let waiting = tokio::spawn({
        let cancel = cancel.clone();
        async move { connector.shared_with_retry(&cancel).await }
    });
    // Cancelled while it retries.
    wait_for_tries(&tries, 2).await;
    cancel.cancel();
    let r = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("returns once cancelled")
        .unwrap();
    assert!(matches!(r, Err(ConnectError::Cancelled { .. })), "{r:?}");
    refuser.abort();
}

#[tokio::test]
async fn credentials_from_settings_are_used_and_never_shown() {
    let server = TestRedis::start_private(&["--requirepass", "s3cret-pw"]);
    let mut settings = RedisSettings {
        url: Some(server.url.clone()),
        ..Default::default()
    };
    let msg = match Connector::new(&settings).unwrap().shared().await {
        Err(e) => e.to_string(),
        Ok(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .unwrap_err()
            .to_string(),
    };
    assert!(msg.contains("NOAUTH") || msg.contains("auth"), "{msg}");
    assert!(!msg.contains("s3cret-pw"));
    settings.password = Some(kitbash::config::Secret::new("s3cret-pw"));
    let connector = Connector::new(&settings).unwrap();
    assert!(!format!("{connector:?}").contains("s3cret-pw"));
    let mut conn = connector.shared().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    // A password in the URL works too, and is redacted in messages.
    let with_url = RedisSettings {
        url: Some(format!("redis://:s3cret-pw@127.0.0.1:{}/0", server.port)),
        ..Default::default()
    };
    let c = Connector::new(&with_url).unwrap();
    assert!(!c.url().contains("s3cret-pw"));
    let mut conn = c.shared().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// `redis.wait_replicas: null` on one server: enqueues wait for a replica
/// when the server has one connected (`ROLE`), not when it has none; and an
/// enqueue then really waits for it: with the replica gone the next enqueue
/// reports `NotReplicated` (queued, unconfirmed).
#[tokio::test]
async fn enqueues_wait_for_a_replica_when_the_server_has_one() {
    let mut ctx = TestContext::private();
    // Generous, within the response timeout: a busy machine may take a
    // while to confirm.
    ctx.settings.redis.response_timeout_ms = 10_000;
    ctx.settings.redis.wait_timeout_ms = 5_000;
    let bb = ctx.blackboard().await;
    assert_eq!(
        bb.resolve_wait_replicas(None).await.unwrap(),
        0,
        "no replica"
    );
    let q = kitbash::QueryState::new("lone");
    bb.enqueue(&q).await.unwrap();

    let port = ctx.redis.port.to_string();
    let mut replica = TestRedis::start_private(&["--replicaof", "127.0.0.1", &port]);
    let deadline = Instant::now() + PATIENCE;
    while bb.resolve_wait_replicas(None).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the replica never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bb.wait_replicas(), 1);
    // Listed from the start of its first sync; it confirms writes once
    // that is done (`state=online`).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut ctx.raw())
            .unwrap();
        if info.contains("state=online") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never came online: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q = kitbash::QueryState::new("replicated");
    bb.enqueue(&q).await.unwrap();

    // A replica gone confirms nothing: the enqueue is queued, unconfirmed.
    replica.stop();
    let q = kitbash::QueryState::new("unconfirmed");
    match bb.enqueue(&q).await {
        Err(kitbash::BlackboardError::NotReplicated {
            acked: 0,
            wanted: 1,
        }) => {}
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    assert!(
        bb.get_state(&q.query_id).await.unwrap().is_some(),
        "queued all the same"
    );
    assert_eq!(bb.queue_len().await.unwrap(), 3);
}
