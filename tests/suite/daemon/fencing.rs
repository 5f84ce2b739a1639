//! Exactly one outcome when a daemon stalls, stops or loses a reply:
//! fencing, shutdown, JSON adoption, dead-lettering, waiting clients and
//! the reply reader, against a real redis-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kitbash::daemon::Daemon;
use kitbash::protocol::ReplyOutcome;
use kitbash::{QueryState, QueryStatus};
use redis::Commands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::common::{PATIENCE, TestContext};
use crate::daemon::support::*;

/// Clients of the test's server blocked in `cmd`.
fn blocked_in(ctx: &TestContext, cmd: &str) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut ctx.raw())
        .unwrap();
    list.lines()
        .filter(|l| l.contains(&format!(" cmd={cmd} ")) && l.contains(" flags=b"))
        .count()
}

/// How many events of `kind` the feed holds for `id`.
async fn count_events(bb: &kitbash::Blackboard, kind: &str, id: &str) -> usize {
    event_counts(bb)
        .await
        .get(&(kind.to_string(), id.to_string()))
        .copied()
        .unwrap_or(0)
}

/// A TCP proxy to `upstream` that passes everything both ways but, when a
/// client hangs up, closes its side to Redis only `delay` later: a slow
/// network close (a lost FIN, a partition), during which Redis still serves
/// whatever that connection left blocked.
async fn slow_close_proxy(upstream: u16, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut cbuf, mut sbuf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
                loop {
                    tokio::select! {
                        n = client.read(&mut cbuf) => match n {
                            Ok(n) if n > 0 => {
                                if server.write_all(&cbuf[..n]).await.is_err() {
                                    return;
                                }
                            }
                            _ => {
                                tokio::time::sleep(delay).await;
                                return;
                            }
                        },
                        n = server.read(&mut sbuf) => match n {
                            Ok(n) if n > 0 => {
                                if client.write_all(&sbuf[..n]).await.is_err() {
                                    tokio::time::sleep(delay).await;
                                    return;
                                }
                            }
                            _ => return,
                        },
                    }
                }
            });
        }
    });
    port
}

/// A daemon told to stop while it waits in `BLMOVE` lets that command end
/// before it returns its processing list and says goodbye. Before, it
/// dropped the command: when the connection's close reached Redis late,
/// the `BLMOVE` was still waiting after the daemon had gone, and an entry
/// pushed then landed in the processing list of a daemon that no longer
/// existed (to be recovered later, at the cost of one of its attempts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_blocking_take_behind() {
    let mut ctx = TestContext::private();
    fast(&mut ctx);
    let port = slow_close_proxy(ctx.redis.port, Duration::from_secs(5)).await;
    let mut settings = ctx.settings.clone();
    settings.redis.url = Some(format!("redis://127.0.0.1:{port}/0"));
    let d = RunningDaemon::start(&settings);
    assert!(
        eventually(PATIENCE.as_secs_f64(), || async {
            blocked_in(&ctx, "blmove") == 1
        })
        .await,
        "the daemon waits in BLMOVE"
    );
    d.stop().await;
    assert_eq!(blocked_in(&ctx, "blmove"), 0, "a take outlived the daemon");
    let mut conn = ctx.raw();
    let _: () = conn.lpush(ctx.keys().queue(), "after-stop").unwrap();
    let queued: Vec<String> = conn.lrange(ctx.keys().queue(), 0, -1).unwrap();
    assert_eq!(queued, ["after-stop"]);
}

/// Settings for the stall tests: layer1 answers below its threshold after
/// a while, layer2 answers at once; layer4 off.
fn two_worker_layers(ctx: &mut TestContext) {
    let s = fast(ctx);
    s.layers.get_mut("layer4").unwrap().enabled = false;
    s.layers.get_mut("layer1").unwrap().timeout_ms = 20_000;
    s.layers.get_mut("layer2").unwrap().timeout_ms = 20_000;
}

/// What a peer that recovered and answered the query leaves behind: the
/// entry gone from the stalled daemon's list, a terminal state of its own,
/// the completion signal and its `query_completed`.
async fn answer_as_a_peer(
    ctx: &TestContext,
    bb: &kitbash::Blackboard,
    daemon: &str,
    id: &str,
) -> String {
    let mut conn = ctx.raw();
    let removed: i64 = conn.lrem(ctx.keys().processing(daemon), 1, id).unwrap();
    assert_eq!(removed, 1, "the daemon held {id}");
    let mut s = bb.get_state(id).await.unwrap().unwrap();
    s.status = QueryStatus::Answered;
    s.answer = Some(kitbash::state::Answer {
        text: "from the peer".into(),
        layer: "layer2".into(),
        confidence: 0.99,
        source: None,
        crystallized: None,
    });
    s.completed_at = Some(kitbash::state::now_rfc3339());
    let raw = serde_json::to_string(&s).unwrap();
    let _: () = conn.set(ctx.keys().state(id), &raw).unwrap();
    bb.emit(
        &kitbash::observe::feed::Event::new(kitbash::observe::feed::EventKind::QueryCompleted, id)
            .reason("answered"),
    )
    .await
    .unwrap();
    raw
}

/// The stalled-daemon bug: a daemon waits on layer1 while a peer recovers
/// and answers its query; when layer1's reply comes, the daemon must not
/// rewrite the state, hand the query to layer2 or complete it again. It
/// records `query_fenced` once and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_lost_its_query_to_a_peer_writes_nothing_more() {
    let mut ctx = TestContext::new();
    two_worker_layers(&mut ctx);
    let bb = ctx.blackboard().await;
    let slow = TestWorker::start(
        &ctx,
        "layer1",
        Behaviour::AfterRelease {
            outcome: ReplyOutcome::Hit,
            confidence: 0.2,
        },
    )
    .await;
    let fast_worker = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("layer2 answer", 0.99, Duration::ZERO),
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    crate::common::wait_until_daemon_sees(&bb, &d.instance, "layer1").await;
    crate::common::wait_until_daemon_sees(&bb, &d.instance, "layer2").await;

    let q = QueryState::with_id("stalled-1", "a question for slow layers");
    bb.enqueue(&q).await.unwrap();
    // The daemon holds it and waits on layer1.
    assert!(
        eventually(PATIENCE.as_secs_f64(), || async {
            slow.jobs_seen.load(Ordering::Relaxed) == 1
        })
        .await
    );
    let peer_state = answer_as_a_peer(&ctx, &bb, &d.instance, &q.query_id).await;
    slow.release();

    assert!(
        eventually(PATIENCE.as_secs_f64(), || async {
            count_events(&bb, "query_fenced", &q.query_id).await > 0
        })
        .await,
        "the daemon records that it lost the query"
    );
    let stored: String = ctx.raw().get(ctx.keys().state(&q.query_id)).unwrap();
    assert_eq!(stored, peer_state, "the peer's outcome stands");
    assert_eq!(count_events(&bb, "query_completed", &q.query_id).await, 1);
    assert_eq!(count_events(&bb, "query_fenced", &q.query_id).await, 1);
    assert_eq!(
        fast_worker.jobs_seen.load(Ordering::Relaxed),
        0,
        "no job handed out for a query the daemon no longer holds"
    );
    let mine: i64 = ctx.raw().llen(ctx.keys().processing(&d.instance)).unwrap();
    assert_eq!(mine, 0);
    d.stop().await;
    slow.stop().await;
    fast_worker.stop().await;
}

/// Fencing by the processing list alone: a peer took the entry over (it
/// sits in the peer's list, not finished yet); the stalled daemon's
/// confident answer arrives and must not finish the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_does_not_finish_a_query_a_peer_holds() {
    let mut ctx = TestContext::new();
    two_worker_layers(&mut ctx);
    let bb = ctx.blackboard().await;
    let worker = TestWorker::start(
        &ctx,
        "layer1",
        Behaviour::AfterRelease {
            outcome: ReplyOutcome::Hit,
            confidence: 0.99,
        },
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    crate::common::wait_until_daemon_sees(&bb, &d.instance, "layer1").await;
    let q = QueryState::with_id("held-by-peer", "a question a peer took over");
    bb.enqueue(&q).await.unwrap();
    assert!(
        eventually(PATIENCE.as_secs_f64(), || async {
            worker.jobs_seen.load(Ordering::Relaxed) == 1
        })
        .await
    );
    // The peer's recovery moved the entry into its own list.
    let mut conn = ctx.raw();
    let moved: Option<String> = redis::cmd("LMOVE")
        .arg(ctx.keys().processing(&d.instance))
        .arg(ctx.keys().processing("peer-daemon"))
        .arg("RIGHT")
        .arg("LEFT")
        .query(&mut conn)
        .unwrap();
    assert_eq!(moved.as_deref(), Some("held-by-peer"));
    let before: String = conn.get(ctx.keys().state(&q.query_id)).unwrap();
    worker.release();

    assert!(
        eventually(PATIENCE.as_secs_f64(), || async {
            count_events(&bb, "query_fenced", &q.query_id).await > 0
        })
        .await,
        "the daemon records that it lost the query"
    );
    let after: String = conn.get(ctx.keys().state(&q.query_id)).unwrap();
    assert_eq!(after, before, "the state is the peer's to write");
    assert_eq!(count_events(&bb, "query_completed", &q.query_id).await, 0);
    let peer: Vec<String> = conn
        .lrange(ctx.keys().processing("peer-daemon"), 0, -1)
        .unwrap();
    assert_eq!(peer, ["held-by-peer"]);
    let done: bool = conn.exists(ctx.keys().done(&q.query_id)).unwrap();
    assert!(
        !done,
        "no completion signal from a daemon that lost the query"
    );
    d.stop().await;
    worker.stop().await;
}

/// A TCP proxy to `upstream` that forwards both ways, except once: the
/// first request chunk that contains `marker` is forwarded, and when Redis
/// has answered (so it has run it), the connection is dropped without the
/// answer: the client's command ran but its reply was lost.
async fn lose_one_reply(upstream: u16, marker: &'static str) -> (u16, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let done = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let done = done.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut cbuf, mut sbuf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
                let mut cutting = false;
                // The end of what the client sent so far, so a marker split
                // across two reads is still found.
                let mut seen: Vec<u8> = Vec::new();
                loop {
                    tokio::select! {
                        n = client.read(&mut cbuf) => {
                            let Ok(n) = n else { return };
                            if n == 0 || server.write_all(&cbuf[..n]).await.is_err() {
                                return;
                            }
                            seen.extend_from_slice(&cbuf[..n]);
                            let found = seen.windows(marker.len()).any(|w| w == marker.as_bytes());
                            let keep = seen.len().saturating_sub(marker.len());
                            seen.drain(..keep);
                            if !done.load(Ordering::SeqCst) && found {
                                done.store(true, Ordering::SeqCst);
                                cutting = true;
                            }
                        }
                        n = server.read(&mut sbuf) => {
                            let Ok(n) = n else { return };
                            // Redis answered: it has run what came before.
                            if n == 0 || cutting {
                                return;
                            }
                            if client.write_all(&sbuf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, cut)
}

/// A JSON entry whose adoption ran but whose reply was lost is adopted
/// once: retrying finds it done, and the query runs under one id (before,
/// the entry went back to the queue and ran again under a new id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_to_the_adoption_does_not_make_a_second_query() {
    let mut ctx = TestContext::private();
    fast(&mut ctx);
    const MARKER: &str = "adopt me exactly once";
    let (port, cut) = lose_one_reply(ctx.redis.port, MARKER).await;
    let mut settings = ctx.settings.clone();
    settings.redis.url = Some(format!("redis://127.0.0.1:{port}/0"));
    let daemon = Daemon::new(settings);
    let status = daemon.status();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(shutdown.clone()));

    let mut conn = ctx.raw();
    let _: () = conn
        .lpush(
            ctx.keys().queue(),
            format!(r#"{{"query_text":"{MARKER}"}}"#),
        )
        .unwrap();
    let states_with_marker = || {
        let mut conn = ctx.raw();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(ctx.keys().state("*"))
            .query(&mut conn)
            .unwrap();
        keys.iter()
            .filter_map(|k| conn.get::<_, Option<String>>(k).unwrap())
            .filter(|raw| raw.contains(MARKER))
            .map(|raw| serde_json::from_str::<QueryState>(&raw).unwrap())
            .collect::<Vec<_>>()
    };
    let settled = eventually(PATIENCE.as_secs_f64(), || async {
        let mut conn = ctx.raw();
        let queued: i64 = conn.llen(ctx.keys().queue()).unwrap();
        let processing: Vec<String> = redis::cmd("KEYS")
            .arg(ctx.keys().processing("*"))
            .query(&mut conn)
            .unwrap();
        queued == 0
            && processing.is_empty()
            && status.in_flight() == 0
            && states_with_marker().iter().any(|s| s.status.is_terminal())
    })
    .await;
    assert!(
        cut.load(Ordering::SeqCst),
        "the proxy lost the adoption's reply"
    );
    assert!(settled, "the query finished");
    let states = states_with_marker();
    assert_eq!(states.len(), 1, "one query, not two: {states:?}");
    assert_eq!(states[0].status, QueryStatus::Unanswered);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Recovery gives up on a query (`max_attempts`) in one step: even when
/// the reply to that step is lost, the query ends failed, signalled and in
/// the dead list (before, the failed state was written first and the rest
/// was lost with the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_on_a_query_is_one_step() {
    let mut ctx = TestContext::private();
    fast(&mut ctx).orchestrator.max_attempts = 3;
    let bb = ctx.blackboard().await;
    let mut q = QueryState::with_id("unlucky", "a query that kept losing its daemon");
    q.status = QueryStatus::Processing;
    q.recoveries = 2;
    let mut conn = ctx.raw();
    let _: () = conn
        .set(
            ctx.keys().state(&q.query_id),
            serde_json::to_string(&q).unwrap(),
        )
        .unwrap();
    // Held by a daemon that has no health key: dead.
    let _: () = conn
        .lpush(ctx.keys().processing("gone-daemon"), &q.query_id)
        .unwrap();
    let (port, cut) = lose_one_reply(ctx.redis.port, "recovered 3 times").await;
    let mut settings = ctx.settings.clone();
    settings.redis.url = Some(format!("redis://127.0.0.1:{port}/0"));
    let d = RunningDaemon::start(&settings);

    let dead = eventually(PATIENCE.as_secs_f64(), || async {
        let n: i64 = ctx.raw().llen(ctx.keys().dead()).unwrap();
        n > 0
    })
    .await;
    assert!(cut.load(Ordering::SeqCst), "the proxy lost the reply");
    assert!(dead, "the query is in the dead list");
    let s = bb.get_state(&q.query_id).await.unwrap().unwrap();
    assert_eq!(s.status, QueryStatus::Failed);
    assert_eq!(s.recoveries, 3);
    let signal: Vec<String> = conn.lrange(ctx.keys().done(&q.query_id), 0, -1).unwrap();
    assert_eq!(signal, ["failed"]);
    let records: Vec<String> = conn.lrange(ctx.keys().dead(), 0, -1).unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].contains("unlucky"));
    assert_eq!(count_events(&bb, "query_dead", &q.query_id).await, 1);
    d.stop().await;
}

/// A client's waits share one blocking connection: a long wait after a
/// short one is not cut short by the first wait's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wait_after_a_short_one_waits_its_full_time() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let mut client = kitbash::client::Client::connect(&ctx.settings, Duration::from_secs(60))
        .await
        .unwrap();
    let q = client
        .submit("nobody answers this yet", serde_json::json!({}))
        .await
        .unwrap();
    let short = client.wait(&q.query_id, Duration::from_millis(100)).await;
    assert!(
        matches!(short, Err(kitbash::client::ClientError::Timeout { .. })),
        "{short:?}"
    );
    // The outcome comes well after the short wait's connection would have
    // given up (its timeout plus redis.response_timeout_ms).
    let late = ctx.settings.redis.response_timeout_ms + 1_500;
    let answer = {
        let bb = bb.clone();
        let id = q.query_id.clone();
        let (state_key, done_key) = (ctx.keys().state(&id), ctx.keys().done(&id));
        let url = ctx.redis.url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(late)).await;
            let mut s = bb.get_state(&id).await.unwrap().unwrap();
            s.status = QueryStatus::Answered;
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let _: () = conn
                .set(state_key, serde_json::to_string(&s).unwrap())
                .unwrap();
            let _: () = conn.lpush(done_key, "answered").unwrap();
        })
    };
    let got = client
        .wait(&q.query_id, Duration::from_millis(late + 20_000))
        .await
        .unwrap();
    assert_eq!(got.status, QueryStatus::Answered);
    answer.await.unwrap();
}

/// A burst of forged or late replies does not hold up a valid reply queued
/// behind it: the reader hands replies over in memory and records the
/// dropped ones on the side (before, it waited for one `XADD` per dropped
/// reply, and the valid reply came after its query's timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_forged_replies_does_not_delay_a_valid_one() {
    let mut ctx = TestContext::private();
    fast(&mut ctx).layers.get_mut("layer2").unwrap().timeout_ms = 10_000;
    layer2_only(&mut ctx.settings);
    let bb = ctx.blackboard().await;
    let worker = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::AfterRelease {
            outcome: ReplyOutcome::Hit,
            confidence: 0.99,
        },
    )
    .await;
    let d = RunningDaemon::start(&ctx.settings);
    crate::common::wait_until_daemon_sees(&bb, &d.instance, "layer2").await;
    let q = QueryState::with_id("behind-the-burst", "a question answered after a flood");
    bb.enqueue(&q).await.unwrap();
    assert!(
        eventually(PATIENCE.as_secs_f64(), || async {
            worker.jobs_seen.load(Ordering::Relaxed) == 1
        })
        .await
    );
    // 100,000 forged replies, all in the reply list before the valid one.
    const FORGED: usize = 100_000;
    let mut conn = ctx.raw();
    for chunk in (0..FORGED).collect::<Vec<_>>().chunks(5_000) {
        let batch: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    r#"{{"job_id":"forged-{i}","query_id":"nobody","layer":"layer2","worker":"forger","outcome":"hit","answer":"forged","confidence":0.99,"source":null,"latency_ms":1.0,"error":null}}"#
                )
            })
            .collect();
        let _: () = conn.lpush(ctx.keys().replies(&d.instance), batch).unwrap();
    }
    worker.release();
    let s = wait_done(&ctx, &bb, &q.query_id, PATIENCE.as_secs_f64()).await;
    assert_eq!(
        s.status,
        QueryStatus::Answered,
        "{:?}",
        s.layer_attempts.last()
    );
    // The dropped replies left a trace: late_reply events (as many as the
    // backlog allows).
    let late_replies = || {
        let newest: redis::Value = redis::cmd("XREVRANGE")
            .arg(ctx.keys().feed())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(100)
            .query(&mut ctx.raw())
            .unwrap();
        format!("{newest:?}").matches("late_reply").count()
    };
    assert!(eventually(PATIENCE.as_secs_f64(), || async { late_replies() > 0 }).await);
    d.stop().await;
    worker.stop().await;
}

/// An id pushed again after its query finished is not redone, but it does
/// not vanish either: the feed says why it was dropped (`query_fenced`) and
/// a client waiting on it gets the completion signal (before, it was
/// dropped silently and the client timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_query_pushed_again_is_dropped_with_a_trace_and_a_signal() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&kitbash::Grain::new(
        "kenya",
        "What is the capital of Kenya?",
        "Nairobi",
    ))
    .await
    .unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    let q = QueryState::with_id("pushed-twice", "What is the capital of Kenya?");
    bb.enqueue(&q).await.unwrap();
    let first = wait_done(&ctx, &bb, &q.query_id, PATIENCE.as_secs_f64()).await;
    assert_eq!(first.status, QueryStatus::Answered);

    let _: () = ctx.raw().lpush(ctx.keys().queue(), &q.query_id).unwrap();
    let again = wait_done(&ctx, &bb, &q.query_id, PATIENCE.as_secs_f64()).await;
    assert_eq!(again, first, "the outcome is not redone");
    assert_eq!(count_events(&bb, "query_completed", &q.query_id).await, 1);
    let trace = bb.timeline(&q.query_id, 1_000).await.unwrap();
    assert!(
        trace.iter().any(|e| e.event() == Some("query_fenced")
            && e.get("reason").is_some_and(|r| r.contains("duplicate"))),
        "{trace:?}"
    );
    let held: i64 = ctx.raw().llen(ctx.keys().processing(&d.instance)).unwrap();
    assert_eq!(held, 0);
    d.stop().await;
}
