use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use kitbash::QueryStatus;

use crate::common::TestContext;
use crate::faults::support::*;

/// A TCP proxy that delays every chunk by `latency` in each direction
/// (without slowing the stream down otherwise), and can cut every open
/// connection at once, mid-command.
struct Proxy {
    port: u16,
    cut: watch::Sender<u64>,
    connections: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: u16, latency: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let cut_rx = cut.subscribe();
        let count = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    cut.borrow_and_update();
                    tokio::select! {
                        _ = pipe(cr, sw, latency) => {}
                        _ = pipe(sr, cw, latency) => {}
                        _ = cut.changed() => {}
                    }
                    // Dropping both halves closes both sockets.
                });
            }
        });
        Self {
            port,
            cut,
            connections,
        }
    }

    /// Closes every connection open now.
    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

/// Copies `from` to `to`, each chunk `latency` after it was read.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((tokio::time::Instant::now() + latency, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

/// A daemon behind a slow link (15 ms each way) whose connections are cut
/// mid-command, beside a daemon with a direct link: the slow daemon is never
/// taken for dead (no query of it recovered while it lives), no query ends
/// twice, and entries whose taking response was cut off do not stay in its
/// processing list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_cut_link_no_premature_recovery_no_duplicates() {
    let ctx = TestContext::private();
    let bb = ctx.blackboard().await;
    load_grains(&bb, 50).await;
    let proxy = Proxy::start(ctx.redis.port, Duration::from_millis(15)).await;
    let proxied = format!("redis://127.0.0.1:{}/0", proxy.port);

    let mut env = base_env(&ctx, &ctx.redis.url);
    env.push(("KITBASH_ORCHESTRATOR__HEALTH_TTL_S".into(), "2".into()));
    env.push(("KITBASH_WORKERS__ECHO_DELAY_MS".into(), "5".into()));
    let mut slow_env = env.clone();
    slow_env.push(("KITBASH_REDIS__URL".into(), proxied));
    slow_env.push(("KITBASH_ORCHESTRATOR__INSTANCE_ID".into(), "slow".into()));
    let mut fast_env = env.clone();
    fast_env.push(("KITBASH_ORCHESTRATOR__INSTANCE_ID".into(), "fast".into()));

    let _worker = Proc::echo_worker("echo-s", &env);
    let mut slow = Proc::serve("daemon-slow", &slow_env);
    let mut fast = Proc::serve("daemon-fast", &fast_env);
    // The slow daemon reports through the proxy.
    wait_reporting(&ctx, &["echo-s", "slow", "fast"]).await;

    // Waves of queries, each followed by a cut while it is being worked on.
    const WAVES: usize = 8;
    const N: usize = WAVES * 400;
    let mut ids = Vec::with_capacity(N);
    let mut cuts = 0;
    let t0 = Instant::now();
    for wave in 0..WAVES {
        let wave_ids = push_mixed(&bb, &format!("sl{wave}"), N / WAVES, 50).await;
        // Cut once the daemons are at work on this wave: a quarter of it taken.
        let taken = || {
            states(&ctx, &wave_ids)
                .iter()
                .filter(|s| s.as_ref().is_some_and(|s| s.status != QueryStatus::Pending))
                .count()
        };
        assert!(
            eventually(60.0, || taken() >= wave_ids.len() / 4).await,
            "wave {wave} taken"
        );
        proxy.cut_all();
        ids.extend(wave_ids);
        cuts += 1;
    }
    let took = wait_all_terminal(&ctx, &ids, 120.0).await + t0.elapsed();
    let statuses = assert_exactly_once(&ctx, &bb, &ids).await;
    // A cut can take a worker's reply with it (popped, never delivered):
    // that query escalates after the layer timeout and ends unanswered.
    let (answered, unanswered) = answered_or_not(&statuses, N);
    let why = why_unanswered(&ctx, &ids, "layer2");
    // A finishing step retried after a cut is not counted twice (one cut
    // off after the script ran may leave a query uncounted).
    let hits = counted_hits(&ctx);
    assert!(
        hits <= answered as u64,
        "{hits} hits counted for {answered} answered"
    );
    assert!(slow.alive() && fast.alive());

    // Entries whose taking reply was cut off go back within two sweeps.
    assert_drained(&ctx).await;

    let events = all_events(&bb).await;
    let from_dead: Vec<_> = events
        .iter()
        .filter(|(e, _, r)| e == "query_recovered" && r.starts_with("returned to the queue from"))
        .collect();
    assert!(
        from_dead.is_empty(),
        "recovered from a live daemon: {from_dead:?}"
    );
    let orphans = events
        .iter()
        .filter(|(e, _, r)| e == "query_recovered" && r.starts_with("orphaned"))
        .count();
    let started = per_query(&events, "query_started");
    let restarted = started.values().filter(|n| **n > 1).count();
    println!(
        "slow link (15 ms each way), {cuts} cuts of every connection: pushed {N}, all terminal in {took:?} \
         ({answered} answered, {unanswered} unanswered; layer2: {why:?}; {hits} hits counted), lost 0, duplicated outcomes 0, recovered from a live daemon 0; \
         {orphans} entries orphaned by a cut returned by the sweep ({restarted} queries started twice), \
         {} proxied connections opened",
        proxy.connections.load(Ordering::Relaxed)
    );
    assert_eq!(slow.terminate(), Some(0));
    assert_eq!(fast.terminate(), Some(0));
}
