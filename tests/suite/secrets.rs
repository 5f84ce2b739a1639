//! Secrets stay secret: the Redis password and the LLM API key never appear
//! in what the real `kitbash` binary prints, logs (pretty and JSON, at
//! debug level), serves over HTTP or stores in Redis, on the good paths and
//! on the error paths (bad configuration, wrong password, Redis down, a
//! hostile LLM server echoing the `Authorization` header). And the HTTP
//! endpoint listens on loopback unless told otherwise.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, TestRedis, free_port};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use kitbash::config::Settings;

const PW: &str = "pw-S3CRET-redis-4711";
const WRONG_PW: &str = "pw-S3CRET-wrong-0042";
const KEY: &str = "sk-S3CRET-llm-0815";
/// Common to every secret above: no piece of any of them may show.
const MARK: &str = "S3CRET";

// ---------------------------------------------------------------------------
// Harness: child processes killed on drop, their output captured.

/// A running `kitbash`, killed (and reaped) when dropped.
struct Proc {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    /// The threads copying stdout and stderr; they end at end of file.
    pumps: Vec<std::thread::JoinHandle<()>>,
}

fn pump(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kitbash");
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let pumps = vec![
            pump(child.stdout.take().unwrap(), out.clone()),
            pump(child.stderr.take().unwrap(), err.clone()),
        ];
        Self {
            child,
            out,
            err,
            pumps,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    fn text(&self) -> String {
        format!("{}\n--- stderr ---\n{}", self.stdout(), self.stderr())
    }

    /// Waits for the exit; kills the process after `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pipes close with the process: the pumps have read
                // everything once they end.
                for p in self.pumps.drain(..) {
                    p.join().unwrap();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("kitbash did not exit within {limit:?}:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(&mut self) -> ExitStatus {
        // Our own child's pid, which is not reaped yet.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.wait(PATIENCE)
    }

    /// Waits until its output so far satisfies `ok` (the process runs on),
    /// for up to [`PATIENCE`]; fails naming `what`.
    fn wait_for_output(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ok(&self.text()) {
            assert!(
                Instant::now() < deadline,
                "never logged {what}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kitbash args…` in `dir`, with none of this process's `KITBASH_*` or
/// `REDIS_*` variables, and `env` added.
fn kitbash(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kitbash"));
    cmd.args(args).current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("KITBASH_") || name.starts_with("REDIS_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("KITBASH_CONFIG")
        .env("NO_COLOR", "1")
        .env("HOME", dir)
        .env("KITBASH_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a command to its end (bounded); returns the exit code and all output.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut p = Proc::spawn(kitbash(dir, args, env));
    let status = p.wait(PATIENCE);
    (status.code().unwrap_or(-1), p.text())
}

/// Fails naming `what` when any secret (or part of one) is in `text`.
fn assert_clean(what: &str, text: &str) {
    for secret in [PW, WRONG_PW, KEY, MARK] {
        assert!(
            !text.contains(secret),
            "{what}: a secret ({secret}) leaked:\n{text}"
        );
    }
}

/// `GET path` over plain HTTP/1.1: (status, body), or `None` when nothing
/// answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// Polls `path` until it answers `want` (or any status when `None`).
fn wait_http(port: u16, path: &str, want: Option<u16>, p: &Proc) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some((status, _)) = http_get(port, path)
            && want.is_none_or(|w| w == status)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want:?}:\n{}",
            p.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The four endpoints' bodies, each checked clean; returns them joined.
fn endpoints(port: u16) -> String {
    let mut all = String::new();
    for path in ["/health", "/health/ready", "/health/detailed", "/metrics"] {
        let (status, body) = http_get(port, path).unwrap_or_else(|| panic!("{path} answers"));
        assert_clean(&format!("GET {path} ({status})"), &body);
        all.push_str(&format!("GET {path} -> {status}\n{body}\n"));
    }
    all
}

/// Every key in the server and its value, as text.
fn dump_redis(port: u16) -> String {
    let client = redis::Client::open(format!("redis://:{PW}@127.0.0.1:{port}/0")).unwrap();
    let mut c = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut c).unwrap();
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query(&mut c),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(&mut c),
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut c),
            "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut c),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut c),
            "stream" => redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query(&mut c),
            _ => Ok(redis::Value::Nil),
        }
        .unwrap();
        out.push_str(&format!("{key} ({kind}): {}\n", value_text(&value)));
    }
    out
}

fn value_text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(value_text).collect::<Vec<_>>().join(" | ")
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{}={}", value_text(k), value_text(v)))
            .collect::<Vec<_>>()
            .join(" | "),
        other => format!("{other:?}"),
    }
}

/// Settings that make a daemon quick to start, answer and stop.
fn fast_env(port: u16, prefix: &str) -> Vec<(String, String)> {
    [
        ("KITBASH_REDIS__URL", format!("redis://127.0.0.1:{port}/0")),
        ("KITBASH_REDIS__KEY_PREFIX", prefix.to_string()),
        ("KITBASH_REDIS__RETRY_MAX_DELAY_MS", "300".into()),
        ("KITBASH_ORCHESTRATOR__HEARTBEAT_INTERVAL_MS", "200".into()),
        // Far above the beat: a loaded machine must not make a live
        // process look dead.
        ("KITBASH_ORCHESTRATOR__HEALTH_TTL_S", "10".into()),
        ("KITBASH_WORKERS__HEARTBEAT_INTERVAL_MS", "200".into()),
        ("KITBASH_WORKERS__HEALTH_TTL_S", "10".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

// ---------------------------------------------------------------------------
// kitbash config

#[test]
fn config_shows_every_secret_as_stars() {
    let dir = tempfile::tempdir().unwrap();
    let url_pw = format!("redis://:{PW}@127.0.0.1:6390/0");
    let url_user_pw = format!("redis://kb-daemon:{PW}@127.0.0.1:6390/0");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "KITBASH_ variables",
            vec![
                ("KITBASH_REDIS__PASSWORD", PW),
                ("KITBASH_WORKERS__LLM__API_KEY", KEY),
            ],
        ),
        ("REDIS_PASSWORD", vec![("REDIS_PASSWORD", PW)]),
        (
            "password in KITBASH_REDIS__URL",
            vec![("KITBASH_REDIS__URL", &url_pw)],
        ),
        (
            "user and password in REDIS_URL",
            vec![("REDIS_URL", &url_user_pw)],
        ),
    ];
    for (what, env) in &cases {
        for json in [false, true] {
            let args: &[&str] = if json {
                &["config", "--json"]
            } else {
                &["config"]
            };
            let (code, text) = run(dir.path(), args, env);
            assert_eq!(code, 0, "{what} {args:?}:\n{text}");
            assert!(
                text.contains("***"),
                "{what} {args:?}: no redaction shown:\n{text}"
            );
            assert_clean(&format!("{what} {args:?}"), &text);

            // The same next to a bad value: the error path, exit 2.
            let mut bad = env.clone();
            bad.push(("KITBASH_FEED__MAX_LEN", "0"));
            let (code, text) = run(dir.path(), args, &bad);
            assert_eq!(code, 2, "{what} {args:?} with a bad value:\n{text}");
            assert!(text.contains("feed.max_len"), "{text}");
            assert_clean(&format!("{what} {args:?} with a bad value"), &text);
        }
    }

    // The same from the YAML file and from .env.
    std::fs::write(
        dir.path().join("kitbash_config.yaml"),
        format!(
            "redis:\n  url: \"redis://:{PW}@127.0.0.1:6390/0\"\n  password: \"{PW}\"\n\
             workers:\n  llm:\n    backend: openai\n    api_key: \"{KEY}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join(".env"), format!("REDIS_PASSWORD={PW}\n")).unwrap();
    for args in [&["config"][..], &["config", "--json"][..]] {
        let (code, text) = run(dir.path(), args, &[]);
        assert_eq!(code, 0, "{args:?}:\n{text}");
        assert_clean(&format!("YAML {args:?}"), &text);
        let (code, text) = run(dir.path(), args, &[("KITBASH_REDIS__PORT", "many")]);
        assert_eq!(code, 2, "{args:?}:\n{text}");
        assert_clean(&format!("YAML {args:?} with a bad value"), &text);
    }
}

#[test]
fn config_errors_about_a_secret_do_not_quote_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad_scheme = format!("http://:{PW}@127.0.0.1:6390/0");
    // A password with a `/`, not percent-encoded: the URL is wrong, but the
    // message about it still must not show the password.
    let slash = "redis://:pw-S3CRET/redis@127.0.0.1:6390/0";
    let env_cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "URL with a bad scheme",
            vec![("KITBASH_REDIS__URL", &bad_scheme)],
        ),
        // A typo in the key name: the value is a password all the same.
        (
            "misspelt password key",
            vec![("KITBASH_REDIS__PASSWROD", PW)],
        ),
        (
            "misspelt api key",
            vec![("KITBASH_WORKERS__LLM__APIKEY", KEY)],
        ),
        (
            "password as a map",
            vec![("KITBASH_REDIS__PASSWORD__X", PW)],
        ),
    ];
    for (what, env) in &env_cases {
        let (code, text) = run(dir.path(), &["config"], env);
        assert_eq!(code, 2, "{what}:\n{text}");
        assert!(text.contains("invalid configuration"), "{what}:\n{text}");
        assert_clean(what, &text);
    }
    let unix = format!("unix:///tmp/kitbash-none.sock?db=0&pass={PW}");
    let (code, text) = run(dir.path(), &["config"], &[("KITBASH_REDIS__URL", &unix)]);
    assert_eq!(code, 0, "{text}");
    assert_clean("unix socket URL with pass=", &text);
    let (_, text) = run(dir.path(), &["config"], &[("KITBASH_REDIS__URL", slash)]);
    assert_clean("password with a slash in the URL", &text);
    let (_, text) = run(
        dir.path(),
        &["config", "--json"],
        &[("KITBASH_REDIS__URL", slash)],
    );
    assert_clean("password with a slash in the URL (--json)", &text);

    // YAML: a secret of the wrong type, misspelt, or in a broken file.
    for (what, yaml) in [
        (
            "numeric password",
            "redis:\n  password: 47114711\n".to_string(),
        ),
        ("password list", format!("redis:\n  password: [{PW}]\n")),
        (
            "misspelt key",
            format!("workers:\n  llm:\n    apikey: {KEY}\n"),
        ),
        (
            "broken YAML",
            format!("redis:\n  password: {PW}\n  bad: [\n"),
        ),
    ] {
        std::fs::write(dir.path().join("kitbash_config.yaml"), &yaml).unwrap();
        let (code, text) = run(dir.path(), &["config"], &[]);
        assert_eq!(code, 2, "{what}:\n{text}");
        assert_clean(what, &text);
        assert!(
            !text.contains("47114711"),
            "{what}: the password leaked:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------
// kitbash serve

/// Starts `kitbash serve` with HTTP on a free loopback port.
fn serve(dir: &Path, env: &[(String, String)], format: &str) -> (Proc, u16) {
    let http = free_port();
    let mut env = env.to_vec();
    env.push(("KITBASH_HTTP__LISTEN".into(), format!("127.0.0.1:{http}")));
    env.push(("KITBASH_LOGGING__FORMAT".into(), format.into()));
    (Proc::spawn(kitbash(dir, &["serve"], &refs(&env))), http)
}

#[test]
fn serve_with_the_right_password_shows_it_nowhere() {
    let redis = TestRedis::start_private(&["--requirepass", PW]);
    let dir = tempfile::tempdir().unwrap();
    for (format, how) in [
        ("pretty", "url"),
        ("json", "env"),
        ("pretty", "REDIS_PASSWORD"),
    ] {
        let mut env = fast_env(redis.port, "kbsecret");
        match how {
            "url" => env[0].1 = format!("redis://:{PW}@127.0.0.1:{}/0", redis.port),
            "env" => env.push(("KITBASH_REDIS__PASSWORD".into(), PW.into())),
            _ => env.push(("REDIS_PASSWORD".into(), PW.into())),
        }
        env.push(("KITBASH_WORKERS__LLM__API_KEY".into(), KEY.into()));
        let (mut p, http) = serve(dir.path(), &env, format);
        wait_http(http, "/health/ready", Some(200), &p);
        let bodies = endpoints(http);
        assert!(bodies.contains("GET /health/detailed -> 200"), "{bodies}");
        let status = p.terminate();
        assert!(status.success(), "{format}/{how}: {status:?}\n{}", p.text());
        let logs = p.text();
        assert!(logs.contains("starting daemon"), "{logs}");
        if format == "json" {
            assert!(logs.contains("{\""), "not JSON logs:\n{logs}");
        }
        assert_clean(&format!("serve logs ({format}, password by {how})"), &logs);
    }
    assert_clean("Redis contents", &dump_redis(redis.port));
}

#[test]
fn serve_with_a_wrong_password_says_so_without_it() {
    let redis = TestRedis::start_private(&["--requirepass", PW]);
    let dir = tempfile::tempdir().unwrap();
    for format in ["pretty", "json"] {
        let mut env = fast_env(redis.port, "kbsecret");
        env.push(("KITBASH_REDIS__PASSWORD".into(), WRONG_PW.into()));
        let (mut p, http) = serve(dir.path(), &env, format);
        wait_http(http, "/health", Some(200), &p);
        // A failed attempt, logged.
        p.wait_for_output("that the password was refused", |logs| {
            logs.contains("WRONGPASS") || logs.to_lowercase().contains("auth")
        });
        let bodies = endpoints(http);
        assert!(bodies.contains("GET /health/ready -> 503"), "{bodies}");
        p.terminate();
        let logs = p.text();
        assert_clean(&format!("serve logs, wrong password ({format})"), &logs);
    }
}

#[test]
fn serve_with_redis_down_redacts_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let down = free_port();
    for format in ["pretty", "json"] {
        let mut env = fast_env(down, "kbsecret");
        env[0].1 = format!("redis://kb-daemon:{PW}@127.0.0.1:{down}/0");
        let (mut p, http) = serve(dir.path(), &env, format);
        wait_http(http, "/health", Some(200), &p);
        // A failed attempt, logged with the (redacted) address.
        let redacted = format!("redis://kb-daemon:***@127.0.0.1:{down}/0");
        p.wait_for_output("a failed attempt naming the (redacted) address", |logs| {
            logs.contains("not reachable") && logs.contains(&redacted)
        });
        let bodies = endpoints(http);
        assert!(bodies.contains("GET /health/detailed -> 503"), "{bodies}");
        p.terminate();
        let logs = p.text();
        assert_clean(&format!("serve logs, Redis down ({format})"), &logs);
    }
}

// ---------------------------------------------------------------------------
// kitbash worker llm against a hostile server

/// An OpenAI-compatible server that refuses every completion (401, then
/// 500, alternately) and echoes the caller's `Authorization` header back.
async fn hostile_server() -> (u16, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let echo = |headers: &HeaderMap| {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        serde_json::json!({
            "error": {"message": format!("Incorrect API key provided: {auth}"),
                      "type": "invalid_request_error", "code": "invalid_api_key"},
            "authorization": auth,
        })
        .to_string()
    };
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async { axum::Json(serde_json::json!({"data": [{"id": "m"}]})) }),
        )
        .route(
            "/v1/chat/completions",
            post(move |headers: HeaderMap| {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let body = echo(&headers);
                async move {
                    if n.is_multiple_of(2) {
                        (StatusCode::UNAUTHORIZED, body).into_response()
                    } else {
                        // Not JSON: the whole page is quoted.
                        let page =
                            format!("<html><body>upstream failed; you sent {body}</body></html>");
                        (StatusCode::INTERNAL_SERVER_ERROR, page).into_response()
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_worker_never_repeats_the_api_key() {
    let (llm_port, calls) = hostile_server().await;
    let redis = TestRedis::start_private(&["--requirepass", PW]);
    let dir = tempfile::tempdir().unwrap();
    let mut env = fast_env(redis.port, "kbsecret");
    env.extend(
        [
            ("KITBASH_REDIS__PASSWORD", PW.to_string()),
            ("KITBASH_WORKERS__LLM__BACKEND", "openai".into()),
            (
                "KITBASH_WORKERS__LLM__URL",
                format!("http://127.0.0.1:{llm_port}"),
            ),
            ("KITBASH_WORKERS__LLM__API_KEY", KEY.into()),
            ("KITBASH_WORKERS__LLM__MODEL", "m".into()),
            // The server answers at once; generous timeouts only keep a
            // loaded machine from turning its refusals into timeouts.
            ("KITBASH_WORKERS__LLM__REQUEST_TIMEOUT_MS", "20000".into()),
            ("KITBASH_LAYERS__LAYER1__ENABLED", "false".into()),
            ("KITBASH_LAYERS__LAYER2__ENABLED", "false".into()),
            ("KITBASH_LAYERS__LAYER4__TIMEOUT_MS", "30000".into()),
            // Trace, not debug: the HTTP stack's own logs must not show it either.
            ("KITBASH_LOG", "trace".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let (mut daemon, http) = serve(dir.path(), &env, "json");
    let mut worker = Proc::spawn(kitbash(
        dir.path(),
        &["worker", "llm", "--name", "llm-secret"],
        &refs(&env),
    ));
    // Wait until the daemon reports the worker live on layer4 (its health
    // record's live_layers): from then on it sends layer4 jobs.
    let keys = kitbash::Keys::new("kbsecret");
    let mut conn = redis::Client::open(format!("redis://:{PW}@127.0.0.1:{}/0", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !crate::common::a_daemon_sees(&mut conn, &keys, "layer4") {
        assert!(
            Instant::now() < deadline,
            "the daemon never saw the llm worker live:\n{}\n--- worker ---\n{}",
            daemon.text(),
            worker.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Queries until one met the 401 and one the 500.
    let dir_path = dir.path().to_owned();
    let env2 = env.clone();
    let seen = calls.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let mut all = String::new();
        let deadline = Instant::now() + PATIENCE;
        while seen.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            let q = "what is the answer?";
            let (code, text) = run(
                &dir_path,
                &["query", q, "--json", "--timeout", "30"],
                &refs(&env2),
            );
            all.push_str(&format!("query {q:?} -> {code}\n{text}\n"));
            std::thread::sleep(Duration::from_millis(100));
        }
        all
    })
    .await
    .unwrap();
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the server was not asked:\n{answers}"
    );
    assert!(
        answers.contains("Bearer ***"),
        "the echo did not reach the reply, scrubbed:\n{answers}"
    );
    assert_clean("kitbash query output", &answers);
    assert_clean("HTTP endpoints", &endpoints(http));

    let stored = dump_redis(redis.port);
    assert!(
        stored.contains("HTTP 401") && stored.contains("HTTP 500"),
        "the failures were not recorded:\n{stored}"
    );
    assert_clean("Redis contents", &stored);

    worker.terminate();
    daemon.terminate();
    assert_clean("llm worker logs", &worker.text());
    assert_clean("daemon logs", &daemon.text());
}

#[test]
fn query_with_a_wrong_password_does_not_echo_it() {
    let redis = TestRedis::start_private(&["--requirepass", PW]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://:{WRONG_PW}@127.0.0.1:{}/0", redis.port);
    for env in [
        vec![("KITBASH_REDIS__URL", url.as_str())],
        vec![
            (
                "KITBASH_REDIS__URL",
                &format!("redis://127.0.0.1:{}/0", redis.port),
            ),
            ("KITBASH_REDIS__PASSWORD", WRONG_PW),
        ],
    ] {
        for args in [
            &["query", "hello?"][..],
            &["stats"][..],
            &["grains", "count"][..],
        ] {
            let (code, text) = run(dir.path(), args, &env);
            assert_ne!(code, 0, "{args:?}:\n{text}");
            assert_clean(&format!("{args:?} with a wrong password"), &text);
        }
    }
}

// ---------------------------------------------------------------------------
// kitbash acl

#[test]
fn acl_never_prints_the_configured_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://:{PW}@127.0.0.1:6390/0");
    let env = [
        ("KITBASH_REDIS__URL", url.as_str()),
        ("KITBASH_REDIS__PASSWORD", PW),
        ("KITBASH_WORKERS__LLM__API_KEY", KEY),
    ];
    for args in [&["acl"][..], &["acl", "--acl-file"][..]] {
        let (code, text) = run(dir.path(), args, &env);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains(">CHANGE-ME-"), "{text}");
        assert_clean(&format!("{args:?}"), &text);
    }
    // --passwords-from-env prints the ACL passwords it is given, by design
    // (docs/security.md), and still not redis.password.
    let mut env = env.to_vec();
    env.extend([
        ("KITBASH_ACL_DAEMON_PASSWORD", "acl-daemon-pw"),
        ("KITBASH_ACL_WORKER_PASSWORD", "acl-worker-pw"),
        ("KITBASH_ACL_CLIENT_PASSWORD", "acl-client-pw"),
    ]);
    let (code, text) = run(dir.path(), &["acl", "--passwords-from-env"], &env);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(">acl-daemon-pw"), "{text}");
    assert_clean("acl --passwords-from-env", &text);
}

// ---------------------------------------------------------------------------
// The HTTP endpoint binds to loopback

#[test]
fn the_default_http_listen_address_is_loopback() {
    let listen = Settings::default().http.listen;
    assert_eq!(listen.ip(), IpAddr::from([127, 0, 0, 1]));
    assert!(Settings::default().http.enabled);
}

/// A non-loopback IPv4 address of this machine, if it has one.
fn outside_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connect only picks the route and source address.
    s.connect("10.255.255.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Local addresses listening on `port`, from /proc/net/tcp{,6}, as hex.
fn listeners(port: u16) -> Vec<String> {
    let suffix = format!(":{port:04X}");
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // cols[1] local address, cols[3] state; 0A is LISTEN.
            if cols.len() > 3 && cols[3] == "0A" && cols[1].ends_with(&suffix) {
                out.push(cols[1].to_string());
            }
        }
    }
    out
}

#[test]
fn serve_listens_on_loopback_only() {
    let redis = TestRedis::start_private(&[]);
    let dir = tempfile::tempdir().unwrap();
    let env = fast_env(redis.port, "kbbind");
    // The default address (127.0.0.1:9464) when that port is free here;
    // otherwise the same with only the port changed, in a YAML file.
    let default_port = Settings::default().http.listen.port();
    let port = if TcpListener::bind(("0.0.0.0", default_port)).is_ok() {
        default_port
    } else {
        let port = free_port();
        std::fs::write(
            dir.path().join("kitbash_config.yaml"),
            format!("http:\n  listen: \"127.0.0.1:{port}\"\n"),
        )
        .unwrap();
        port
    };
    let mut p = Proc::spawn(kitbash(dir.path(), &["serve"], &refs(&env)));
    let deadline = Instant::now() + PATIENCE;
    while http_get(port, "/health").is_none() {
        if port == default_port && p.stderr().contains("cannot listen") {
            eprintln!("port {port} was taken meanwhile; not checking the default");
            return;
        }
        assert!(Instant::now() < deadline, "no HTTP endpoint:\n{}", p.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        p.text().contains(&format!("127.0.0.1:{port}")),
        "the listen address is not logged:\n{}",
        p.text()
    );
    let found = listeners(port);
    assert!(
        found.iter().any(|a| a == &format!("0100007F:{port:04X}")),
        "not listening on 127.0.0.1:{port}: {found:?}"
    );
    assert!(
        found.iter().all(|a| a.starts_with("0100007F")),
        "listening beyond loopback on port {port}: {found:?}"
    );
    if let Some(ip) = outside_address() {
        let reached =
            TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(1));
        assert!(reached.is_err(), "the endpoint answers on {ip}:{port}");
    }
    p.terminate();
}
