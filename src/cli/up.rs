//! `kitbash up`: the whole stack on one machine, supervised.
//!
//! Uses the configured Redis when it answers; otherwise, for a loopback
//! address, starts a local `redis-server` (data under `./.kitbash/`, AOF on)
//! and says so. Loads the demo grains on first start (no grains yet). Starts
//! the daemon and one worker per enabled worker layer as child processes in
//! their own process group, restarts a child that dies (with backoff), and on
//! Ctrl-C or SIGTERM stops them all (SIGTERM, then SIGKILL after a grace),
//! then the Redis it started. Nothing is left running.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::common;
use crate::config::{LayerKind, Settings, WorkerKind};
use crate::store::blackboard::Blackboard;
use crate::store::connection::Connector;

/// Arguments of `kitbash up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Grains loaded on first start (when Redis holds no grains).
    #[arg(long, default_value = "config/grains/demo.jsonl")]
    pub demo_grains: PathBuf,
    /// Do not load demo grains.
    #[arg(long)]
    pub no_demo: bool,
    /// Where a local redis-server keeps its data.
    #[arg(long, default_value = ".kitbash")]
    pub data_dir: PathBuf,
}

/// Runs the stack until Ctrl-C or SIGTERM.
pub fn run(file: Option<PathBuf>, args: UpArgs) -> ExitCode {
    let settings = match common::settings(file.clone()) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(up(settings, file, args))
}

fn say(msg: impl AsRef<str>) {
    eprintln!("kitbash up: {}", msg.as_ref());
}

/// One process `up` starts and supervises.
struct Supervised {
    /// What it is, for messages.
    name: String,
    /// Its arguments after the binary (and `--config`).
    argv: Vec<String>,
    /// Environment it gets besides ours.
    env: Vec<(String, String)>,
}

/// Where a browser on this machine finds the dashboard of the daemon `up`
/// starts, or `None` when it serves none. An unspecified address (`0.0.0.0`)
/// is reached on loopback.
fn dashboard_address(http: &crate::config::HttpSettings) -> Option<String> {
    if !http.enabled || !http.dashboard.enabled {
        return None;
    }
    let mut addr = http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(format!("http://{addr}/"))
}

async fn up(mut settings: Settings, config: Option<PathBuf>, args: UpArgs) -> ExitCode {
    // The daemon we start listens on http.listen: if that is taken (another
    // `kitbash up` or `kitbash serve` on this machine), it would fail and be
    // restarted over and over. Say so once, before starting anything.
    if settings.http.enabled
        && let Err(e) = std::net::TcpListener::bind(settings.http.listen)
    {
        say(format!(
            "{} (http.listen) is not free ({e}): is another `kitbash up` or `kitbash serve` running? \
             Stop it, or give this one another address (KITBASH_HTTP__LISTEN=127.0.0.1:0 picks a free port)",
            settings.http.listen
        ));
        return ExitCode::from(2);
    }
    // Port 0 means "any free port": choose it here, so the start-up message
    // can name the dashboard's address, and hand it to the daemon.
    let mut daemon_env = Vec::new();
    if settings.http.enabled && settings.http.listen.port() == 0 {
        match std::net::TcpListener::bind(settings.http.listen).and_then(|l| l.local_addr()) {
            Ok(addr) => {
                settings.http.listen = addr;
                daemon_env.push(("KITBASH_HTTP__LISTEN".to_string(), addr.to_string()));
            }
            Err(e) => say(format!("cannot choose a free port for http.listen: {e}")),
        }
    }
    let cancel = CancellationToken::new();
    tokio::spawn(super::signals::cancel_on_signal(cancel.clone()));

    let connector = match Connector::new(&settings.redis) {
        Ok(c) => c,
        Err(e) => {
            say(e.to_string());
            return ExitCode::from(2);
        }
    };
    let mut local_redis = None;
    let conn = match connector.shared().await {
        Ok(c) => {
            say(format!("using Redis at {}", connector.url()));
            c
        }
        Err(e) if settings.redis.cluster => {
            say(format!(
                "{e}; in cluster mode (redis.cluster) kitbash up does not start Redis: start the cluster's nodes first"
            ));
            return ExitCode::from(2);
        }
        Err(e) => {
            let Some(port) = local_port(&settings) else {
                say(format!(
                    "{e}; it is not on this machine, so kitbash up cannot start it"
                ));
                return ExitCode::from(2);
            };
            match start_redis(port, &args.data_dir).await {
                Ok(child) => {
                    say(format!(
                        "no Redis answered at {}; started a local redis-server on port {port} (data and AOF in {}/)",
                        connector.url(),
                        args.data_dir.display()
                    ));
                    local_redis = Some(child);
                }
                Err(why) => {
                    say(why);
                    return ExitCode::from(2);
                }
            }
            match connector.shared_with_retry(&cancel).await {
                Ok(c) => c,
                Err(e) => {
                    say(e.to_string());
                    stop_child("redis-server", local_redis.as_mut(), Duration::from_secs(5)).await;
                    return ExitCode::from(2);
                }
            }
        }
    };
    let bb = Blackboard::from_settings(conn, &settings);
    if !args.no_demo {
        load_demo(&bb, &args.demo_grains).await;
    }

    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            say(format!("cannot find the kitbash binary: {e}"));
            return ExitCode::from(2);
        }
    };
    let mut children = vec![Supervised {
        name: "daemon".into(),
        argv: vec!["serve".into()],
        env: daemon_env,
    }];
    for (layer, l) in settings.layers_in_order() {
        if l.kind != LayerKind::Worker || !l.enabled {
            continue;
        }
        let Some(kind) = l.worker else { continue };
        match backend_configured(&settings, kind).await {
            Ok(()) => children.push(Supervised {
                name: format!("{kind} worker ({layer})"),
                argv: vec![
                    "worker".into(),
                    kind.to_string(),
                    "--layer".into(),
                    layer.to_string(),
                ],
                env: Vec::new(),
            }),
            Err(why) => say(format!("{layer} ({kind}) skipped: {why}")),
        }
    }

    let tracker = TaskTracker::new();
    for Supervised {
        name,
        argv: cmd,
        env,
    } in children
    {
        let mut argv = Vec::new();
        if let Some(c) = &config {
            argv.push("--config".to_string());
            argv.push(c.display().to_string());
        }
        argv.extend(cmd);
        tracker.spawn(supervise(
            name,
            exe.clone(),
            argv,
            env,
            cancel.clone(),
            settings.orchestrator.shutdown_grace_s,
        ));
    }
    tracker.close();
    if let Some(url) = dashboard_address(&settings.http) {
        say(format!("dashboard: {url}"));
    }
    say("running; Ctrl-C stops everything");
    cancel.cancelled().await;
    say("stopping");
    tracker.wait().await;
    if let Some(mut r) = local_redis {
        stop_child("redis-server", Some(&mut r), Duration::from_secs(10)).await;
    }
    say("stopped");
    ExitCode::SUCCESS
}

/// The port of a loopback Redis address, which `up` may start itself.
fn local_port(s: &Settings) -> Option<u16> {
    let url = s.redis.effective_url();
    if url.starts_with("rediss://") {
        return None;
    }
    let rest = url.strip_prefix("redis://")?;
    let hostport = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let hostport = hostport.split('/').next()?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hostport, 6379),
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]").then_some(port)
}

async fn start_redis(port: u16, dir: &Path) -> Result<Child, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--dir", &dir.display().to_string()])
        .args(["--appendonly", "yes"])
        .args(["--appendfsync", "everysec"])
        .args(["--save", ""])
        .args(["--logfile", "redis.log"])
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn().map_err(|e| {
        format!("cannot start redis-server ({e}); install it (sudo apt-get install -y redis-server) or point redis.url at a running Redis")
    })
}

async fn load_demo(bb: &Blackboard, path: &Path) {
    match bb.count_grains().await {
        Ok(0) => {}
        Ok(n) => {
            say(format!("{n} grains loaded already; not loading the demo"));
            return;
        }
        Err(e) => {
            say(format!("cannot count grains: {e}"));
            return;
        }
    }
    if !path.exists() {
        say(format!(
            "no demo grains at {} (run from the project directory, or pass --demo-grains)",
            path.display()
        ));
        return;
    }
    match crate::layer0::grains_file::read(path) {
        Ok(parsed) => {
            for e in &parsed.errors {
                say(format!("{}: {e}", path.display()));
            }
            let grains: Vec<_> = parsed.grains.into_iter().map(|p| p.grain).collect();
            match bb
                .store_grains(&grains, crate::layer0::grains::IfExists::Keep)
                .await
            {
                Ok(_) => say(format!(
                    "first start: loaded {} demo grains from {}",
                    grains.len(),
                    path.display()
                )),
                Err(e) => say(format!("cannot load demo grains: {e}")),
            }
        }
        Err(e) => say(format!("cannot read {}: {e}", path.display())),
    }
}

/// Whether a worker kind has something to talk to.
async fn backend_configured(s: &Settings, kind: WorkerKind) -> Result<(), String> {
    match kind {
        WorkerKind::Echo => Ok(()),
        WorkerKind::Cartridge => {
            if s.workers.cartridge.paths.iter().any(|p| p.exists()) {
                Ok(())
            } else {
                Err(format!(
                    "no cartridges at {:?}; set workers.cartridge.paths",
                    s.workers.cartridge.paths
                ))
            }
        }
        WorkerKind::Bitnet => reachable(&s.workers.bitnet.url).await.map_err(|e| {
            format!(
                "no llama-server at {} ({e}); start one or set KITBASH_WORKERS__BITNET__URL",
                s.workers.bitnet.url
            )
        }),
        WorkerKind::Llm => reachable(&s.workers.llm.url).await.map_err(|e| {
            format!(
                "no LLM server at {} ({e}); start KoboldCpp or set KITBASH_WORKERS__LLM__URL",
                s.workers.llm.url
            )
        }),
    }
}

async fn reachable(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else if url.starts_with("https") {
        format!("{hostport}:443")
    } else {
        format!("{hostport}:80")
    };
    match tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// Runs one child, restarting it with backoff when it dies, until `cancel`.
async fn supervise(
    name: String,
    exe: PathBuf,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cancel: CancellationToken,
    grace_s: u64,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut cmd = Command::new(&exe);
        cmd.args(&argv)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            // Its own process group: the terminal's Ctrl-C reaches only us,
            // and we stop the children in order.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                say(format!("cannot start {name}: {e}"));
                return;
            }
        };
        say(format!("started {name} (pid {})", child.id().unwrap_or(0)));
        let started = tokio::time::Instant::now();
        tokio::select! {
            status = child.wait() => {
                if cancel.is_cancelled() {
                    return;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                say(format!("{name} exited ({status}); restarting in {} s", backoff.as_secs()));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ = cancel.cancelled() => {
                stop_child(&name, Some(&mut child), Duration::from_secs(grace_s + 5)).await;
                return;
            }
        }
    }
}

/// SIGTERM, then SIGKILL when it has not exited within `grace`.
async fn stop_child(name: &str, child: Option<&mut Child>, grace: Duration) {
    let Some(child) = child else { return };
    if let Some(pid) = child.id() {
        // A pid we spawned and have not reaped; if it exited meanwhile the
        // signal fails harmlessly and the wait below returns at once.
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(_) => say(format!("{name} stopped")),
        Err(_) => {
            say(format!(
                "{name} did not stop within {} s; killing it",
                grace.as_secs()
            ));
            let _ = child.kill().await;
        }
    }
}
