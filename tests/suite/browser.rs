//! The dashboard as a person uses it: Debian's headless Chromium, driven
//! over WebDriver by Debian's chromedriver, opens the pages a real daemon
//! serves, watches a query arrive in the live feed and on the overview,
//! opens its waterfall, and saves screenshots (under
//! `target/tmp/dashboard/`). Nothing is downloaded: the browser and its
//! driver are the packages `chromium` and `chromium-driver` (`.ci/run`
//! installs them; `KITBASH_CHROMIUM` and `KITBASH_CHROMEDRIVER` name others).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use kitbash::{QueryState, QueryStatus};
use serde_json::{Value, json};

use crate::common::{TestContext, free_port};
use crate::daemon::support::*;
use crate::dashboard::{Served, TOKEN, given_up, kenya};

/// How long the page may take to show something (a busy 2-core machine).
const PATIENCE: Duration = Duration::from_secs(60);

/// A program from the environment variable `var`, else `name` on PATH.
fn program(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: the dashboard's browser test needs Debian's chromium and \
                 chromium-driver (`sudo apt-get install -y chromium chromium-driver`; .ci/run does it), \
                 or {var} naming the program"
            )
        })
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new(program("KITBASH_CHROMEDRIVER", "chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let status = format!("{url}/status");
        let up = || async {
            match client.get(&status).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        };
        assert!(eventually(60.0, up).await, "chromedriver answered on {url}");
        Self { child, url }
    }

    /// A headless Chromium session.
    async fn browser(&self) -> Client {
        let chrome = json!({
            "binary": program("KITBASH_CHROMIUM", "chromium"),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1280,900",
            ],
        });
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), chrome);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` (a function body returning a value) in the page.
async fn js(page: &Client, script: &str, args: Vec<Value>) -> Value {
    page.execute(script, args).await.expect("the script runs")
}

/// Waits until `script` returns true in the page; `what` says what for.
async fn until(page: &Client, what: &str, script: &str, args: Vec<Value>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if js(page, script, args.clone()).await == Value::Bool(true) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let body = js(page, "return document.body.innerText", vec![]).await;
            panic!("the page did not show {what} within {PATIENCE:?}; it shows:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens the dashboard on `view` and waits until it has drawn its first
/// overview (every view waits for it: the header shows the instance).
async fn open(page: &Client, served: &Served, view: &str) {
    page.goto(&format!("{}/#/{view}", served.base))
        .await
        .unwrap();
    until(
        page,
        "its first overview",
        "return document.body.dataset.ready === '1'",
        vec![],
    )
    .await;
}

/// The text of the first element matching `css`.
async fn text_of(page: &Client, css: &str) -> String {
    let v = js(
        page,
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        vec![json!(css)],
    )
    .await;
    v.as_str()
        .unwrap_or_else(|| panic!("no {css} on the page"))
        .to_string()
}

/// Saves a screenshot of what the page shows now; returns its path.
async fn screenshot(page: &Client, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    let png = page.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_a_query_cross_the_cascade_in_the_dashboard() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    // layer1 has no worker here (skipped); layer2's worker answers.
    let worker = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("Canberra", 0.97, Duration::from_millis(30)),
    )
    .await;
    let served = Served::start(&ctx.settings).await;
    let bb = ctx.blackboard().await;
    let driver = Driver::start().await;
    let page = driver.browser().await;

    open(&page, &served, "feed").await;
    until(
        &page,
        "the live feed connected",
        "const s = document.getElementById('feed-status'); return !!s && s.textContent.trim() === 'live';",
        vec![],
    )
    .await;
    // The daemon must know the worker before the query, or it skips layer2.
    let daemon = bb
        .list_health()
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.role == kitbash::store::blackboard::ProcessRole::Daemon)
        .expect("the daemon's health record")
        .name;
    crate::common::wait_until_daemon_sees(&bb, &daemon, "layer2").await;

    // Someone asks; the decisions appear in the live feed as they happen.
    let q = QueryState::new("What is the capital of Australia?");
    let id = q.query_id.clone();
    bb.enqueue(&q).await.unwrap();
    let row = "const id = arguments[0], ev = arguments[1]; \
               return !!document.querySelector(`#feed-list .feed-row[data-query-id=\"${id}\"][data-event=\"${ev}\"]`);";
    until(
        &page,
        "the query's layer0 miss in the feed",
        row,
        vec![json!(id), json!("layer_miss")],
    )
    .await;
    until(
        &page,
        "the query's completion in the feed",
        row,
        vec![json!(id), json!("query_completed")],
    )
    .await;
    let state = wait_done(&ctx, &bb, &id, 60.0).await;
    assert_eq!(state.status, QueryStatus::Answered);
    let feed_png = screenshot(&page, "feed").await;

    // The overview lists it among the recent queries, and the counters.
    page.goto(&format!("{}/#/overview", served.base))
        .await
        .unwrap();
    let recent = "return !!document.querySelector(`#overview-recent tr[data-query-id=\"${arguments[0]}\"]`);";
    until(
        &page,
        "the query among the recent ones",
        recent,
        vec![json!(id)],
    )
    .await;
    until(
        &page,
        "an empty queue",
        "return document.getElementById('overview-queue-len').textContent.trim() === '0';",
        vec![],
    )
    .await;
    let layers = text_of(&page, "#overview-layers").await;
    assert!(
        layers.contains("layer0") && layers.contains("layer2"),
        "{layers}"
    );
    let processes = text_of(&page, "#overview-processes").await;
    assert!(processes.contains(&worker.name), "{processes}");
    let overview_png = screenshot(&page, "overview").await;

    // A click on it opens its path: the answer and the waterfall.
    js(
        &page,
        "document.querySelector(`#overview-recent tr[data-query-id=\"${arguments[0]}\"] a`).click(); return true;",
        vec![json!(id)],
    )
    .await;
    until(
        &page,
        "the waterfall with the layer2 hit",
        "return !!document.querySelector('#waterfall rect.bar[data-event=\"layer_hit\"]');",
        vec![],
    )
    .await;
    assert!(
        page.current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with(&format!("#/query/{id}"))
    );
    assert_eq!(text_of(&page, "#query-answer").await.trim(), "Canberra");
    let source = text_of(&page, "#query-source").await;
    assert!(source.contains("layer2"), "{source}");
    let bars = js(
        &page,
        "return Array.from(document.querySelectorAll('#waterfall rect.bar')).map(r => r.dataset.event);",
        vec![],
    )
    .await;
    let bars: Vec<&str> = bars
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    for event in [
        "query_started",
        "layer_miss",
        "layer_hit",
        "query_completed",
    ] {
        assert!(bars.contains(&event), "{event} in the waterfall: {bars:?}");
    }
    // The bars are drawn to scale: the layer2 hit's bar is wider than the
    // instant markers, since the worker took 30 ms or more.
    let width = |ev: &str| {
        let ev = ev.to_string();
        let page = &page;
        async move {
            js(
                page,
                "return Number(document.querySelector(`#waterfall rect.bar[data-event=\"${arguments[0]}\"]`).getAttribute('width'));",
                vec![json!(ev)],
            )
            .await
            .as_f64()
            .unwrap()
        }
    };
    assert!(width("layer_hit").await > width("query_started").await);
    let query_png = screenshot(&page, "query").await;

    for png in [feed_png, overview_png, query_png] {
        assert!(
            std::fs::metadata(&png).unwrap().len() > 10_000,
            "{} shows something",
            png.display()
        );
    }
    page.close().await.unwrap();
    worker.stop().await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_requeues_a_dead_letter_only_with_the_token() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    ctx.settings.http.dashboard.actions = true;
    ctx.settings.http.dashboard.token = Some(kitbash::config::Secret::new(TOKEN));
    let bb = kenya(&ctx).await;
    let (id, _) = given_up(&ctx, "What is the capital of Kenya?");
    let served = Served::start(&ctx.settings).await;
    let driver = Driver::start().await;
    let page = driver.browser().await;

    open(&page, &served, "dead").await;
    let row = "return !!document.querySelector(`#dead-list tr.dead-row[data-query-id=\"${arguments[0]}\"] button.requeue`);";
    until(
        &page,
        "the dead letter with its requeue button",
        row,
        vec![json!(id)],
    )
    .await;
    // The page asks before it acts; a person says yes.
    js(&page, "window.confirm = () => true; return true;", vec![]).await;
    let click = "document.querySelector(`#dead-list tr.dead-row[data-query-id=\"${arguments[0]}\"] button.requeue`).click(); return true;";

    // A wrong token: refused, said on the page, nothing changed.
    page.find(fantoccini::Locator::Id("token"))
        .await
        .unwrap()
        .send_keys("not-the-token-0123456789")
        .await
        .unwrap();
    js(&page, click, vec![json!(id)]).await;
    until(
        &page,
        "the refusal",
        "const m = document.getElementById('dead-message'); return !!m && !m.hidden && m.textContent.includes('401');",
        vec![],
    )
    .await;
    assert_eq!(bb.dead_len().await.unwrap(), 1, "nothing changed");
    assert_eq!(
        bb.get_state(&id).await.unwrap().unwrap().status,
        QueryStatus::Failed
    );

    // The right token: requeued, answered, gone from the list.
    let token = page.find(fantoccini::Locator::Id("token")).await.unwrap();
    token.clear().await.unwrap();
    token.send_keys(TOKEN).await.unwrap();
    js(&page, click, vec![json!(id)]).await;
    // The click's request is on its way: once the state has left `failed`,
    // the old completion signal is gone too (one step), and the next one
    // is the new outcome's.
    let requeued =
        || async { bb.get_state(&id).await.unwrap().unwrap().status != QueryStatus::Failed };
    assert!(eventually(60.0, requeued).await, "the page requeued it");
    let state = wait_done(&ctx, &bb, &id, 60.0).await;
    assert_eq!(state.status, QueryStatus::Answered);
    until(
        &page,
        "the emptied dead list",
        "return document.querySelectorAll('#dead-list tr.dead-row').length === 0;",
        vec![],
    )
    .await;
    screenshot(&page, "dead-requeued").await;
    page.close().await.unwrap();
    served.stop().await;
}
