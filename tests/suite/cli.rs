//! The user-facing commands as a user runs them: `kitbash query`, the REPL
//! driven through stdin, `kitbash timeline`, `kitbash stats`, `kitbash up`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::TestContext;
use crate::daemon::support::{RunningDaemon, eventually, fast};
use kitbash::Grain;

async fn run(ctx: &TestContext, args: &[&str], stdin: Option<&str>) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    let (url, prefix) = (ctx.redis.url.clone(), ctx.prefix.clone());
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kitbash"))
            .args(&args)
            .env_remove("KITBASH_CONFIG")
            .env("KITBASH_REDIS__URL", &url)
            .env("KITBASH_REDIS__KEY_PREFIX", &prefix)
            .env("NO_COLOR", "1")
            // Direct mode runs the cascade in this process: a grain lookup
            // must not time out on a loaded machine.
            .env("KITBASH_LAYERS__LAYER0__TIMEOUT_MS", "10000")
            .env("HOME", std::env::temp_dir())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn setup() -> (TestContext, RunningDaemon) {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new(
        "capital-ke",
        "What is the capital of Kenya?",
        "Nairobi",
    ))
    .await
    .unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    (ctx, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_prints_answers_and_exit_codes_follow_the_outcome() {
    let (ctx, d) = setup().await;
    let o = run(&ctx, &["query", "What is the capital of Kenya?"], None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Nairobi") && out.contains("layer0") && out.contains("grain:capital-ke"),
        "{out}"
    );

    let o = run(&ctx, &["query", "Who is Zorg the Unknowable?"], None).await;
    assert_eq!(o.status.code(), Some(1), "unanswered: {}", text(&o));

    let o = run(&ctx, &["query", "   "], None).await;
    assert_eq!(o.status.code(), Some(2), "failed: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("failed"));

    let o = run(&ctx, &["query", "--json", "capital of kenya"], None).await;
    assert_eq!(o.status.code(), Some(0));
    let state: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(state["status"], "answered");
    assert_eq!(state["answer"]["text"], "Nairobi");

    // One question a line on stdin: answers in order; worst exit code.
    let o = run(
        &ctx,
        &["query", "--json"],
        Some("What is the capital of Kenya?\nWho is Zorg?\nKenya capital\n"),
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|s| {
            (
                s["query_text"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("What is the capital of Kenya?", "answered"),
            ("Who is Zorg?", "unanswered"),
            ("Kenya capital", "answered")
        ]
    );

    // timeline and stats read what the daemon recorded.
    let id = lines[0]["query_id"].as_str().unwrap();
    let o = run(&ctx, &["timeline", id], None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("query_started") && out.contains("layer_hit") && out.contains("+0.000 ms"),
        "{out}"
    );
    let o = run(&ctx, &["timeline", "--json", id], None).await;
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hit = events.iter().find(|e| e["event"] == "layer_hit").unwrap();
    assert!(hit["latency_ms"].is_number(), "{hit}");
    assert!(hit["confidence"].is_number(), "{hit}");
    let o = run(&ctx, &["stats"], None).await;
    let table = String::from_utf8_lossy(&o.stdout);
    let layer4 = table.lines().find(|l| l.starts_with("layer4")).unwrap();
    assert!(
        layer4.ends_with('-') && !layer4.contains("0.000"),
        "no percentiles for a layer never tried: {table}"
    );
    let o = run(&ctx, &["stats", "--json"], None).await;
    let stats: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stats[0]["layer"], "layer0");
    assert!(stats[0]["counters"]["hits"].as_u64().unwrap() >= 4);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_times_out_without_a_daemon_and_refuses_a_full_queue() {
    let ctx = TestContext::new();
    let o = run(&ctx, &["query", "--timeout", "0.3", "anyone there?"], None).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("kitbash serve"),
        "says what to check: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("no daemon is running"),
        "says at once that nobody will answer: {}",
        text(&o)
    );

    let o = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(["query", "--timeout", "0.1", "one more"])
        .env_remove("KITBASH_CONFIG")
        .env("KITBASH_REDIS__URL", &ctx.redis.url)
        .env("KITBASH_REDIS__KEY_PREFIX", &ctx.prefix)
        .env("KITBASH_ORCHESTRATOR__MAX_QUEUE_LEN", "1")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("max_queue_len"), "{}", text(&o));
    let bb = ctx.blackboard().await;
    assert_eq!(
        bb.queue_len().await.unwrap(),
        1,
        "nothing enqueued past the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repl_through_stdin() {
    let (ctx, d) = setup().await;
    let script = "\
What is the capital of Kenya?
:timeline
:stats
:direct
capital of Kenya
:redis
:health
:grains kenya
:frobnicate
:help
quit
What is the capital of Kenya?
";
    let o = run(&ctx, &["repl"], Some(script)).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "Ctrl-D (end of input) leaves cleanly: {}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        out.matches("Nairobi").count(),
        3,
        "two answers and one :grains line (nothing asked after `quit`): {out}"
    );
    for want in [
        "redis mode",
        "query_started",
        "layer_hit",
        "hit%",
        "layer0",
        "direct mode",
        "daemons:",
        "layer2: no live worker",
        "capital-ke",
        "unknown command :frobnicate",
        ":timeline [id]",
        "bye",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        !out.contains("\x1b["),
        "no colour when stdout is not a terminal"
    );
    // The direct-mode query was recorded like any other.
    let bb = ctx.blackboard().await;
    let completed = bb
        .events_by_kind(kitbash::EventKind::QueryCompleted, 10, 1000)
        .await
        .unwrap();
    assert_eq!(completed.len(), 2);
    // Direct mode said goodbye: only the daemon's health key is left.
    assert!(
        eventually(60.0, || async {
            bb.list_health()
                .await
                .unwrap()
                .iter()
                .all(|h| !h.name.starts_with("direct-"))
        })
        .await
    );
    d.stop().await;
}

/// `kitbash up` with no Redis at the configured loopback address starts one,
/// runs the daemon, and after Ctrl-C leaves no process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_everything_and_ctrl_c_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut up = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .arg("up")
        .env_remove("KITBASH_CONFIG")
        .env("KITBASH_REDIS__URL", format!("redis://127.0.0.1:{port}/0"))
        .env("KITBASH_HTTP__LISTEN", "127.0.0.1:0")
        .env("KITBASH_WORKERS__BITNET__URL", "http://127.0.0.1:1")
        .env("KITBASH_WORKERS__LLM__URL", "http://127.0.0.1:1")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up_pid = up.id();
    // Its messages, read as they come (the dashboard's address is one).
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let stderr = stderr.clone();
        let mut pipe = up.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    // Wait until the daemon it started has written its health key.
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let ready = eventually(60.0, || async {
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("kitbash:health:*")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        !keys.is_empty()
    })
    .await;
    let children = child_pids(up_pid);
    assert!(ready, "daemon up");
    // The start-up message names the dashboard, on the free port `up`
    // chose, and the page answers there.
    let printed = || {
        let err = stderr.lock().unwrap();
        let (_, after) = err.split_once("kitbash up: dashboard: ")?;
        after.split_whitespace().next().map(str::to_string)
    };
    assert!(
        eventually(60.0, || async { printed().is_some() }).await,
        "the dashboard's address is printed: {}",
        stderr.lock().unwrap()
    );
    let url = printed().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.starts_with("http://127.0.0.1:0/"),
        "{url}"
    );
    let page_answers = || async {
        match reqwest::get(&url).await {
            Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|t| t.contains("Kitbash")),
            _ => false,
        }
    };
    assert!(
        eventually(60.0, page_answers).await,
        "the dashboard answers at {url}"
    );
    assert!(
        children.len() >= 2,
        "redis-server and the daemon: {children:?}"
    );

    // Ctrl-C.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up_pid as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let out = tokio::task::spawn_blocking(move || up.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    reader.join().unwrap();
    let err = stderr.lock().unwrap().clone();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("started a local redis-server"), "{err}");
    assert!(
        err.contains("layer1 (bitnet) skipped"),
        "skips are reported: {err}"
    );
    assert!(
        dir.path().join(".kitbash/appendonlydir").exists(),
        "AOF under ./.kitbash"
    );
    for pid in children {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        assert!(!alive, "process {pid} still running after Ctrl-C");
    }
    assert!(
        eventually(60.0, || async { client.get_connection().is_err() }).await,
        "the local redis-server is stopped"
    );
}

fn child_pids(parent: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &parent.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A second `kitbash up` on a machine where one runs (its HTTP address
/// taken) stops at once with one message, instead of restarting its daemon
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stops_at_once_when_its_http_address_is_taken() {
    let ctx = TestContext::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(["up", "--no-demo"])
        .env_remove("KITBASH_CONFIG")
        .env("KITBASH_REDIS__URL", &ctx.redis.url)
        .env("KITBASH_REDIS__KEY_PREFIX", &ctx.prefix)
        .env("KITBASH_HTTP__LISTEN", &addr)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&addr) && err.contains("not free"), "{err}");
    assert!(
        ctx.keys_left().iter().all(|k| !k.contains(":health:")),
        "nothing was started: {:?}",
        ctx.keys_left()
    );
}

/// `kitbash bench` traffic stays out of the deployment's statistics: its
/// queries are marked, the daemon counts them under `bench:` names, and the
/// bench deletes those when it ends. A real query before it is still
/// counted once, and the bench report accounts for every query it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_traffic_stays_out_of_the_deployments_statistics() {
    let (ctx, d) = setup().await;
    let o = run(&ctx, &["query", "What is the capital of Kenya?"], None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let keys = ctx.keys();
    let mut conn = ctx.raw();
    let counters = |conn: &mut redis::Connection| -> (u64, u64) {
        let hits: Option<u64> = redis::cmd("HGET")
            .arg(keys.stats("layer0"))
            .arg("hits")
            .query(conn)
            .unwrap();
        let samples: u64 = redis::cmd("ZCARD")
            .arg(keys.metric("latency:query"))
            .query(conn)
            .unwrap();
        (hits.unwrap_or(0), samples)
    };
    let before = counters(&mut conn);
    assert_eq!(before, (1, 1), "the real query is counted");

    let o = run(
        &ctx,
        &["bench", "-n", "300", "--grains", "20", "--json"],
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["sent"], 300, "{report}");
    assert_eq!(report["completed"], 300, "{report}");

    assert_eq!(
        counters(&mut conn),
        before,
        "bench traffic is not in the deployment's counters or samples"
    );
    let left: Vec<String> = ctx
        .keys_left()
        .into_iter()
        .filter(|k| k.contains("bench"))
        .collect();
    assert!(left.is_empty(), "the bench deletes what it wrote: {left:?}");
    d.stop().await;
}
