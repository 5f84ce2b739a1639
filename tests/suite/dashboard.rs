//! The dashboard's HTTP API against a real redis-server and a real daemon
//! (in process, serving HTTP on a free port): what each page reads, the
//! live feed, and the actions with their token. The browser test of the
//! pages themselves is `browser.rs`.

use std::time::Duration;

use kitbash::config::Secret;
use kitbash::daemon::Daemon;
use kitbash::{Grain, QueryState, QueryStatus, Settings};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::TestContext;
use crate::daemon::support::*;

/// A token long enough for validation.
pub const TOKEN: &str = "dashboard-test-token-0123456789";

/// A daemon with its HTTP endpoint on a free port.
pub struct Served {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kitbash::daemon::DaemonError>>,
}

impl Served {
    pub async fn start(settings: &Settings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let mut settings = settings.clone();
        settings.http.enabled = true;
        let task =
            tokio::spawn(Daemon::new(settings).run_with_listener(Some(listener), shutdown.clone()));
        // The timeout only turns a hang into a failure; nothing asserts on time.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let served = Self {
            base,
            client,
            shutdown,
            task,
        };
        let ready = || async { served.get("/health/ready").await.0 == 200 };
        assert!(eventually(60.0, ready).await, "the daemon became ready");
        served
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the daemon stops")
            .unwrap()
            .unwrap();
    }
}

pub async fn kenya(ctx: &TestContext) -> kitbash::Blackboard {
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new(
        "capital-ke",
        "What is the capital of Kenya?",
        "Nairobi",
    ))
    .await
    .unwrap();
    bb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_read_a_query_from_overview_to_waterfall() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = kenya(&ctx).await;
    let served = Served::start(&ctx.settings).await;

    // The page and its files, built into the binary, with a strict CSP.
    let page = served
        .client
        .get(format!("{}/", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/dashboard/app.js"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
    for (path, kind) in [
        ("/dashboard/app.js", "javascript"),
        ("/dashboard/app.css", "css"),
    ] {
        let r = served
            .client
            .get(format!("{}{path}", served.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().contains(kind));
    }

    let q = QueryState::new("What is the capital of Kenya?");
    bb.enqueue(&q).await.unwrap();
    assert_eq!(
        wait_done(&ctx, &bb, &q.query_id, 60.0).await.status,
        QueryStatus::Answered
    );

    let (code, o) = served.get("/api/overview").await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(o["queue_len"], 0);
    assert_eq!(
        o["queue_by_lane"],
        json!({"critical": 0, "high": 0, "normal": 0, "low": 0})
    );
    assert_eq!(o["dead_len"], 0);
    assert_eq!(o["grains"], 1);
    assert_eq!(o["actions"], false);
    assert!(o["redis_memory"]["used_bytes"].as_u64().unwrap() > 0, "{o}");
    assert_eq!(o["daemons"].as_array().unwrap().len(), 1, "{o}");
    let layer0 = &o["layers"][0];
    assert_eq!(layer0["layer"], "layer0");
    assert_eq!(layer0["kind"], "grains");
    assert_eq!(layer0["stats"]["counters"]["hits"], 1, "{o}");

    // Search by text finds it; by id shows its path.
    let (code, found) = served.get("/api/queries?text=KENYA").await;
    assert_eq!(code, 200);
    let ids: Vec<&str> = found["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["query_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [q.query_id.as_str()], "{found}");
    assert_eq!(found["queries"][0]["answered_by"], "layer0");
    let (_, none) = served.get("/api/queries?text=atlantis").await;
    assert_eq!(none["queries"], json!([]));

    let (code, one) = served.get(&format!("/api/queries/{}", q.query_id)).await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["state"]["status"], "answered");
    assert_eq!(one["state"]["answer"]["text"], "Nairobi");
    let events: Vec<&str> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"layer_hit") && events.contains(&"query_completed"),
        "{events:?}"
    );
    let hit = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "layer_hit")
        .unwrap();
    assert!(
        hit["latency_ms"].is_number() && hit["t_ms"].is_number(),
        "{hit}"
    );
    let (start, end) = (
        one["start_ms"].as_f64().unwrap(),
        one["end_ms"].as_f64().unwrap(),
    );
    assert!(start <= hit["t_ms"].as_f64().unwrap() - hit["latency_ms"].as_f64().unwrap() + 1e-6);
    assert!(end >= hit["t_ms"].as_f64().unwrap() && end >= start);
    let (code, _) = served.get("/api/queries/no-such-query").await;
    assert_eq!(code, 404);

    // The feed, filtered by query and by event.
    let (_, feed) = served.get(&format!("/api/feed?query={}", q.query_id)).await;
    let feed = feed["events"].as_array().unwrap().clone();
    assert!(feed.len() >= 2, "{feed:?}");
    assert!(feed.iter().all(|e| e["query_id"] == q.query_id.as_str()));
    let (_, hits) = served.get("/api/feed?event=layer_hit&layer=layer0").await;
    assert!(
        hits["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"] == "layer_hit")
    );
    let (_, kinds) = served.get("/api/events").await;
    assert!(
        kinds["events"]
            .as_array()
            .unwrap()
            .contains(&json!("query_fenced"))
    );

    // The layer charts: one point per bucket, the hit in the last one.
    let (code, h) = served
        .get("/api/layers/history?minutes=10&bucket_s=60")
        .await;
    assert_eq!(code, 200, "{h}");
    let points = h["layers"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 10);
    let samples: u64 = points.iter().map(|p| p["samples"].as_u64().unwrap()).sum();
    assert_eq!(samples, 1, "{h}");

    // Grains: search and inspect.
    let (_, g) = served.get("/api/grains?q=nairobi").await;
    assert_eq!(
        (g["total"].clone(), g["matched"].clone()),
        (json!(1), json!(1))
    );
    let (code, g) = served.get("/api/grains/capital-ke").await;
    assert_eq!(code, 200);
    assert_eq!(g["hits"], 1);
    assert_eq!(served.get("/api/grains/none-such").await.0, 404);

    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_streams_new_decisions_and_resumes_after_an_id() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = kenya(&ctx).await;
    let served = Served::start(&ctx.settings).await;

    let first = QueryState::new("What is the capital of Kenya?");
    let url = format!("{}/api/feed/stream?query={}", served.base, first.query_id);
    let r = served
        .client
        .get(&url)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Another query's decisions must not show (the filter).
    let other = QueryState::new("What is the capital of Kenya?");
    bb.enqueue(&other).await.unwrap();
    bb.enqueue(&first).await.unwrap();
    let mut body = r;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !text.contains("query_completed") {
        let chunk = tokio::time::timeout_at(deadline, body.chunk())
            .await
            .expect("the completion was streamed in time")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    let frames: Vec<&str> = text.split("\n\n").filter(|f| f.contains("data:")).collect();
    assert!(frames.len() >= 2, "{text}");
    let mut ids = Vec::new();
    for frame in &frames {
        assert!(frame.contains("event: decision"), "{frame}");
        let data = frame
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        let e: Value = serde_json::from_str(data).unwrap();
        assert_eq!(e["query_id"], first.query_id.as_str(), "filtered: {e}");
        ids.push(
            frame
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .unwrap()
                .to_string(),
        );
    }

    // Resuming after the first id sends the rest again, and nothing before.
    let r = served
        .client
        .get(&url)
        .header("Last-Event-ID", &ids[0])
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let mut body = r;
    let mut again = String::new();
    while !again.contains(ids.last().unwrap().as_str()) {
        let chunk = tokio::time::timeout_at(deadline, body.chunk())
            .await
            .expect("the resumed stream sent the rest in time")
            .unwrap()
            .expect("the stream stays open");
        again.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!again.contains(&format!("id: {}\n", ids[0])), "{again}");
    // The daemon stops with the stream open: the stream ends cleanly (its
    // end is sent) instead of holding the shutdown.
    served.stop().await;
    let mut rest = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), body.chunk()).await {
            Ok(Ok(Some(chunk))) => rest.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("the stream was cut, not ended: {e}"),
            Err(_) => panic!("the stream is still open after the daemon stopped"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_feed_written_faster_than_a_page_follows_skips_ahead_and_stays_live() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = kenya(&ctx).await;
    let served = Served::start(&ctx.settings).await;
    let r = served
        .client
        .get(format!("{}/api/feed/stream", served.base))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let mut body = r;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    let mut read_until = async |text: &mut String, what: &str| {
        while !text.contains(what) {
            let chunk = tokio::time::timeout_at(deadline, body.chunk())
                .await
                .unwrap_or_else(|_| panic!("{what} was streamed in time: {text}"))
                .unwrap()
                .expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    // The stream follows: a first query's decisions arrive.
    let first = QueryState::new("What is the capital of Kenya?");
    bb.enqueue(&first).await.unwrap();
    read_until(&mut text, "query_completed").await;

    // A burst of 3,000 decisions written at once: more than a page follows.
    let mut raw = ctx.raw();
    let mut burst = redis::pipe();
    burst.atomic();
    for i in 0..3000 {
        burst
            .cmd("XADD")
            .arg(ctx.keys().feed())
            .arg("*")
            .arg("event")
            .arg("layer_skipped")
            .arg("reason")
            .arg(format!("burst {i}"))
            .ignore();
    }
    burst.exec(&mut raw).unwrap();
    read_until(&mut text, "event: skipped").await;
    // Then live again: a new query's decisions arrive after the skip.
    let after = QueryState::new("What is the capital of Kenya?");
    bb.enqueue(&after).await.unwrap();
    read_until(&mut text, &format!("\"query_id\":\"{}\"", after.query_id)).await;
    let sent = text.matches("burst ").count();
    assert!(
        sent < 3000,
        "the burst was skipped, not all sent ({sent} of 3000)"
    );
    let (before_skip, _) = text.split_once("event: skipped").unwrap();
    assert!(before_skip.contains(&first.query_id));
    drop(body);
    served.stop().await;
}

/// A query as recovery leaves one it gave up on: failed, signalled, and
/// recorded in the dead list. Returns its id and its record.
pub fn given_up(ctx: &TestContext, text: &str) -> (String, String) {
    let mut raw = ctx.raw();
    let keys = ctx.keys();
    let mut failed = QueryState::new(text);
    failed.status = QueryStatus::Failed;
    failed.error = Some("recovered 3 times; giving up".into());
    failed.completed_at = Some(kitbash::state::now_rfc3339());
    failed.recoveries = 3;
    let id = failed.query_id.clone();
    redis::cmd("SET")
        .arg(keys.state(&id))
        .arg(serde_json::to_string(&failed).unwrap())
        .exec(&mut raw)
        .unwrap();
    redis::cmd("LPUSH")
        .arg(keys.done(&id))
        .arg("failed")
        .exec(&mut raw)
        .unwrap();
    let rec = record(&id, "recovered 3 times; giving up");
    redis::cmd("LPUSH")
        .arg(keys.dead())
        .arg(&rec)
        .exec(&mut raw)
        .unwrap();
    (id, rec)
}

/// A dead-list record for `entry`, as a daemon writes it.
fn record(entry: &str, reason: &str) -> String {
    json!({"entry": entry, "reason": reason, "instance": "gone", "at": kitbash::state::now_rfc3339()})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_off_by_default_and_then_need_the_token() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = kenya(&ctx).await;
    let mut raw = ctx.raw();
    let dead = ctx.keys().dead();
    let junk = record("two words", "entry is neither a query id nor a JSON object");
    redis::cmd("LPUSH")
        .arg(&dead)
        .arg(&junk)
        .exec(&mut raw)
        .unwrap();

    let served = Served::start(&ctx.settings).await;
    let (code, page) = served.get("/api/dead").await;
    assert_eq!(code, 200);
    assert_eq!(page["total"], 1);
    assert_eq!(page["entries"][0]["record"], junk.as_str());
    assert_eq!(
        page["entries"][0]["reason"],
        "entry is neither a query id nor a JSON object"
    );
    let (code, e) = served
        .post("/api/dead/delete", Some(TOKEN), json!({"record": junk}))
        .await;
    assert_eq!(code, 403, "{e}");
    let (code, _) = served
        .post("/api/grains/capital-ke/forget", Some(TOKEN), json!({}))
        .await;
    assert_eq!(code, 403);
    assert_eq!(bb.dead_len().await.unwrap(), 1, "nothing changed");
    assert!(bb.get_grain("capital-ke").await.unwrap().is_some());
    served.stop().await;

    ctx.settings.http.dashboard.actions = true;
    ctx.settings.http.dashboard.token = Some(Secret::new(TOKEN));
    let served = Served::start(&ctx.settings).await;
    let (code, _) = served
        .post("/api/dead/delete", None, json!({"record": junk}))
        .await;
    assert_eq!(code, 401);
    let (code, _) = served
        .post(
            "/api/dead/delete",
            Some("dashboard-test-token-0123456788"),
            json!({"record": junk}),
        )
        .await;
    assert_eq!(code, 401);
    assert_eq!(bb.dead_len().await.unwrap(), 1, "nothing changed");

    // A body that is not a record: a clear 400, in JSON like every error.
    let (code, e) = served
        .post(
            "/api/dead/requeue",
            Some(TOKEN),
            json!({"entry": "two words"}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("record"), "{e}");

    // Requeued: the daemon judges the entry again and sends it back with
    // a fresh record (it is still not a query).
    let (code, r) = served
        .post("/api/dead/requeue", Some(TOKEN), json!({"record": junk}))
        .await;
    assert_eq!((code, r["requeued"].clone()), (200, json!(true)), "{r}");
    let (code, _) = served
        .post("/api/dead/requeue", Some(TOKEN), json!({"record": junk}))
        .await;
    assert_eq!(code, 404, "a record is requeued once");
    let back = || async { bb.dead_len().await.unwrap() == 1 };
    assert!(
        eventually(60.0, back).await,
        "the daemon dead-lettered it again"
    );
    let again = bb.dead_page(0, 1).await.unwrap().remove(0);
    assert_ne!(again.record, junk);
    assert_eq!(again.entry.as_deref(), Some("two words"));
    let (code, d) = served
        .post(
            "/api/dead/delete",
            Some(TOKEN),
            json!({"record": again.record}),
        )
        .await;
    assert_eq!((code, d["deleted"].clone()), (200, json!(true)));
    assert_eq!(bb.dead_len().await.unwrap(), 0);
    assert_eq!(
        served
            .post(
                "/api/dead/delete",
                Some(TOKEN),
                json!({"record": again.record})
            )
            .await
            .0,
        404
    );

    let (code, _) = served
        .post("/api/grains/capital-ke/forget", Some(TOKEN), json!({}))
        .await;
    assert_eq!(code, 200);
    assert!(bb.get_grain("capital-ke").await.unwrap().is_none());
    assert_eq!(
        served
            .post("/api/grains/capital-ke/forget", Some(TOKEN), json!({}))
            .await
            .0,
        404
    );
    let forgotten = bb
        .recent_matching(10, 1000, |e| e.event() == Some("grain_forgotten"))
        .await
        .unwrap();
    assert_eq!(forgotten.len(), 1, "the forget is in the feed");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_failed_query_runs_again_and_an_answered_one_is_refused() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    ctx.settings.http.dashboard.actions = true;
    ctx.settings.http.dashboard.token = Some(Secret::new(TOKEN));
    let bb = kenya(&ctx).await;
    let mut raw = ctx.raw();
    let keys = ctx.keys();

    let (id, rec) = given_up(&ctx, "What is the capital of Kenya?");

    let served = Served::start(&ctx.settings).await;
    let (code, r) = served
        .post("/api/dead/requeue", Some(TOKEN), json!({"record": rec}))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["query_id"], id.as_str());
    let state = wait_done(&ctx, &bb, &id, 60.0).await;
    assert_eq!(state.status, QueryStatus::Answered, "{state:?}");
    assert_eq!(state.answer.unwrap().text, "Nairobi");
    assert_eq!(state.recoveries, 0);
    assert_eq!(bb.dead_len().await.unwrap(), 0);

    // An answered query is not run again.
    let rec = record(&id, "pushed twice");
    redis::cmd("LPUSH")
        .arg(keys.dead())
        .arg(&rec)
        .exec(&mut raw)
        .unwrap();
    let (code, r) = served
        .post("/api/dead/requeue", Some(TOKEN), json!({"record": rec}))
        .await;
    assert_eq!(code, 409, "{r}");
    assert!(r["error"].as_str().unwrap().contains("answered"), "{r}");
    assert_eq!(bb.dead_len().await.unwrap(), 1, "the record stays");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_can_be_turned_off_and_actions_need_a_real_token() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    ctx.settings.http.dashboard.enabled = false;
    let served = Served::start(&ctx.settings).await;
    assert_eq!(served.get("/").await.0, 404);
    assert_eq!(served.get("/api/overview").await.0, 404);
    assert_eq!(served.get("/health").await.0, 200);
    served.stop().await;

    // Actions without a token (or a short one) are a configuration error.
    let dir = tempfile::tempdir().unwrap();
    for (env, ok) in [
        (vec![("KITBASH_HTTP__DASHBOARD__ACTIONS", "true")], false),
        (
            vec![
                ("KITBASH_HTTP__DASHBOARD__ACTIONS", "true"),
                ("KITBASH_HTTP__DASHBOARD__TOKEN", "short"),
            ],
            false,
        ),
        (
            vec![
                ("KITBASH_HTTP__DASHBOARD__ACTIONS", "true"),
                ("KITBASH_HTTP__DASHBOARD__TOKEN", TOKEN),
            ],
            true,
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kitbash"))
            .arg("config")
            .env_remove("KITBASH_CONFIG")
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), ok, "{env:?}: {text}");
        if !ok {
            assert!(text.contains("http.dashboard.token"), "{text}");
        } else {
            assert!(!text.contains(TOKEN), "the token is redacted: {text}");
        }
    }
}
