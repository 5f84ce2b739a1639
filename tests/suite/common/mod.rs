//! Test harness: a private `redis-server` per test context, on a free port,
//! killed when the context is dropped (the redis-rs `redis-test` idea).
//!
//! Set `KITBASH_TEST_REDIS_URL` to run against an existing server instead;
//! every context still gets its own key prefix, and deletes what it wrote
//! when dropped, so tests run in parallel and leave nothing behind.

#![allow(dead_code)]

pub mod cluster;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kitbash::config::Settings;
use kitbash::{Blackboard, Connector, Health, Keys, Limits};

/// How long a test waits for something that should happen soon: generous,
/// because a loaded machine can be slow, and a wait on observable state
/// costs nothing when things are fast.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A redis-server this test owns, or the external one named by
/// `KITBASH_TEST_REDIS_URL`.
pub struct TestRedis {
    child: Option<Child>,
    /// `redis://127.0.0.1:<port>/0`
    pub url: String,
    /// Port of a private server.
    pub port: u16,
    dir: Option<tempfile::TempDir>,
    /// Extra `redis-server` arguments, kept for [`Self::restart`].
    extra: Vec<String>,
}

/// A free loopback port (free now; another process may take it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

impl TestRedis {
    /// Starts a private server (or uses the external one).
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("KITBASH_TEST_REDIS_URL") {
            return Self {
                child: None,
                url,
                port: 0,
                dir: None,
                extra: Vec::new(),
            };
        }
        Self::start_private(&[])
    }

    /// Starts a private server with extra `redis-server` arguments.
    pub fn start_private(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(redis_server_binary())
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--dir", dir.path().to_str().unwrap()])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH (apt-get install redis-server), or set KITBASH_TEST_REDIS_URL");
            let url = format!("redis://127.0.0.1:{port}/0");
            if wait_for_ping(&url, &mut child) {
                return Self {
                    child: Some(child),
                    url,
                    port,
                    dir: Some(dir),
                    extra: extra.iter().map(|s| s.to_string()).collect(),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start a private redis-server after 5 tries");
    }

    /// Whether this is a server the harness started.
    pub fn is_private(&self) -> bool {
        self.child.is_some()
    }

    /// Kills a private server (to test behaviour while Redis is down).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops a private server the way an operator does (SIGTERM: it saves
    /// and fsyncs its append-only file first), waiting up to 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            // Our own child's pid, not reaped yet.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped (or killed) private server again, on the same port
    /// and directory, with the same arguments.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.restart();
    }

    /// Starts a private server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let dir = self
            .dir
            .as_ref()
            .expect("a private server")
            .path()
            .to_owned();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut child = Command::new(redis_server_binary())
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--dir", dir.to_str().unwrap()])
                .args(&self.extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            if wait_for_ping(&self.url, &mut child) {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn wait_for_ping(url: &str, child: &mut Child) -> bool {
    let client = redis::Client::open(url).unwrap();
    // A server whose port was taken exits at once; a slow start on a loaded
    // machine is waited for.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // exited: the port was taken
        }
        if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
            match redis::cmd("PING").query::<String>(&mut c) {
                Ok(_) => return true,
                // A server that wants a password is up, too.
                Err(e) if e.code() == Some("NOAUTH") => return true,
                Err(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world: a Redis, a unique key prefix, and settings naming both.
pub struct TestContext {
    /// The server.
    pub redis: TestRedis,
    /// This test's key prefix.
    pub prefix: String,
    /// Settings pointing at the server and prefix.
    pub settings: Settings,
}

impl TestContext {
    /// A fresh context.
    pub fn new() -> Self {
        Self::with_redis(TestRedis::start())
    }

    /// A fresh context on a private server, even when `KITBASH_TEST_REDIS_URL`
    /// names a shared one (for tests that kill, proxy or reconfigure Redis).
    pub fn private() -> Self {
        Self::with_redis(TestRedis::start_private(&[]))
    }

    /// A fresh context on a server the test started itself.
    pub fn with_redis(redis: TestRedis) -> Self {
        let prefix = format!(
            "kbtest-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut settings = Settings::default();
        settings.redis.url = Some(redis.url.clone());
        settings.redis.key_prefix = prefix.clone();
        Self {
            redis,
            prefix,
            settings,
        }
    }

    /// The key schema of this context.
    pub fn keys(&self) -> Keys {
        Keys::new(self.prefix.clone())
    }

    /// A connector for this context's settings.
    pub fn connector(&self) -> Connector {
        Connector::new(&self.settings.redis).unwrap()
    }

    /// A Blackboard over a fresh shared connection.
    pub async fn blackboard(&self) -> Blackboard {
        let conn = self.connector().shared().await.unwrap();
        Blackboard::new(conn, self.keys(), Limits::from(&self.settings))
    }

    /// A plain synchronous connection, for inspecting Redis in asserts.
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.redis.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Every key under this context's prefix, sorted.
    pub fn keys_left(&self) -> Vec<String> {
        let mut conn = self.raw();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap();
        keys.sort();
        keys
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        if self.redis.is_private() {
            return; // the server dies with everything in it
        }
        // Shared server: delete what this test wrote.
        if let Ok(client) = redis::Client::open(self.redis.url.as_str())
            && let Ok(mut conn) = client.get_connection()
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<u64> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        }
    }
}

// ----- waiting on what a daemon reports -------------------------------------

/// Whether the health record `raw` (JSON) is a daemon's that lists `layer`
/// in `live_layers`: the daemon's worker directory has seen a live, healthy
/// worker for `layer` and will send it jobs.
pub fn daemon_record_sees(raw: &str, layer: &str) -> bool {
    serde_json::from_str::<Health>(raw).is_ok_and(|h| {
        h.role == kitbash::store::blackboard::ProcessRole::Daemon
            && h.live_layers.iter().any(|l| l == layer)
    })
}

/// Whether some daemon under `keys`' prefix reports a live worker for
/// `layer` (for tests that run `kitbash serve` and do not know its instance
/// id). Works on any connection: plain, TLS or with a password.
pub fn a_daemon_sees(conn: &mut redis::Connection, keys: &Keys, layer: &str) -> bool {
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, batch)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(keys.health_pattern())
            .arg("COUNT")
            .arg(1_000)
            .query(conn)
        else {
            return false;
        };
        for key in batch {
            let raw: Option<String> = redis::cmd("GET").arg(&key).query(conn).unwrap_or(None);
            if raw.is_some_and(|raw| daemon_record_sees(&raw, layer)) {
                return true;
            }
        }
        if next == 0 {
            return false;
        }
        cursor = next;
    }
}

/// Blocks until some daemon reports a live worker for `layer` (see
/// [`a_daemon_sees`]), for up to [`PATIENCE`].
pub fn wait_until_a_daemon_sees(conn: &mut redis::Connection, keys: &Keys, layer: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !a_daemon_sees(conn, keys, layer) {
        assert!(
            Instant::now() < deadline,
            "no daemon reported a live {layer} worker (health live_layers) within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the daemon `instance` reports, in its health record, a live
/// worker for `layer` (its worker directory, refreshed every 250 ms, has
/// seen it), for up to [`PATIENCE`]. An in-process daemon's instance is
/// `Daemon::instance()`.
pub async fn wait_until_daemon_sees(bb: &Blackboard, instance: &str, layer: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Some(h)) = bb.get_health(instance).await
            && h.live_layers.iter().any(|l| l == layer)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "daemon {instance} never reported a live {layer} worker (health live_layers) within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
