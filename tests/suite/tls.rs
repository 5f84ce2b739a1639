//! TLS to Redis with a private CA, end to end: a CA and certificates made at
//! test time (rcgen), a `redis-server` listening only on a TLS port, and the
//! real `kitbash serve`, `kitbash worker echo` and `kitbash query` talking to
//! it with `redis.tls_ca_file` (and, for `tls-auth-clients yes`, a client
//! certificate). Without the CA the client refuses the server's certificate.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use kitbash::config::RedisSettings;
use kitbash::{Connector, Keys};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A child process killed (and reaped) when dropped, on every path out of a test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "kitbash test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            (
                p.signed_by(&key, &issuer).unwrap().pem(),
                key.serialize_pem(),
            )
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf(vec![], "kitbash", ExtendedKeyUsagePurpose::ClientAuth);
        for (name, pem) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server_cert),
            ("server.key", server_key),
            ("client.pem", client_cert),
            ("client.key", client_key),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A `redis-server` listening on a TLS port only.
struct TlsRedis {
    _child: Killed,
    port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TlsRedis {
    /// Starts the server, or returns why this redis-server cannot do TLS.
    fn start(pki: &Pki, auth_clients: bool) -> Result<Self, String> {
        let bin = std::env::var_os("REDIS_SERVER_BIN").unwrap_or_else(|| "redis-server".into());
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let log = dir.path().join("redis.log");
            let child = Command::new(&bin)
                .args(["--port", "0", "--bind", "127.0.0.1"])
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(pki.path("server.pem"))
                .arg("--tls-key-file")
                .arg(pki.path("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(pki.path("ca.pem"))
                .args([
                    "--tls-auth-clients",
                    if auth_clients { "yes" } else { "no" },
                ])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("redis-server on PATH (apt-get install redis-server)");
            let mut child = Killed(child);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.0.try_wait() {
                    // Options a build without TLS rejects are reported on
                    // stdout/stderr before the log file is opened.
                    let mut out = String::new();
                    for pipe in [
                        child.0.stdout.take().map(|mut p| read_all(&mut p)),
                        child.0.stderr.take().map(|mut p| read_all(&mut p)),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        out.push_str(&pipe);
                    }
                    out.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
                    last = format!("redis-server exited ({status}): {out}");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Self {
                        _child: child,
                        port,
                        _dir: dir,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let lower = last.to_lowercase();
            if lower.contains("tls") && (lower.contains("not") || lower.contains("unsupported")) {
                return Err(last);
            }
        }
        panic!("could not start a TLS redis-server after 5 tries: {last}");
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }
}

fn read_all(r: &mut impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// The TLS redis-server, or `None` (with the reason printed) when the
/// installed build has no TLS.
fn tls_redis(pki: &Pki, auth_clients: bool) -> Option<TlsRedis> {
    match TlsRedis::start(pki, auth_clients) {
        Ok(r) => Some(r),
        Err(why) => {
            eprintln!("skipped: the installed redis-server does not support TLS: {why}");
            None
        }
    }
}

/// Environment variables for a `kitbash` process.
type Env<'a> = Vec<(&'a str, String)>;

/// `kitbash <args>` in an empty directory, configured only by `env`.
fn kitbash(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kitbash"));
    cmd.args(args)
        .env_remove("KITBASH_CONFIG")
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir());
    for (k, _) in std::env::vars() {
        // A developer's own Redis settings must not leak into the test.
        if k.starts_with("KITBASH_REDIS__") || k.starts_with("REDIS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn prefix() -> String {
    format!("kbtls-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Waits until `ok` holds, reading over TLS through kitbash's own
/// [`Connector`], for up to [`PATIENCE`]; fails naming `what`, or at once
/// when one of `children` exits.
fn wait_for(
    settings: &RedisSettings,
    what: &str,
    children: &mut [&mut Killed],
    mut ok: impl FnMut(&mut redis::Connection) -> bool,
) {
    let connector = Connector::new(settings).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.0.try_wait() {
                panic!("a kitbash process exited early ({status}) while waiting for {what}");
            }
        }
        if let Ok(mut conn) = connector
            .client()
            .expect("one server")
            .get_connection_with_timeout(Duration::from_secs(5))
            && ok(&mut conn)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `key` exists (see [`wait_for`]).
fn wait_for_key(settings: &RedisSettings, key: &str, children: &mut [&mut Killed]) {
    wait_for(settings, &format!("{key} to appear"), children, |conn| {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<bool>(conn)
            .unwrap_or(false)
    });
}

#[test]
fn daemon_worker_and_client_over_tls_with_a_private_ca() {
    let pki = Pki::new();
    let Some(redis) = tls_redis(&pki, false) else {
        return;
    };
    let prefix = prefix();
    let ca = pki.path("ca.pem").display().to_string();
    let env = [
        ("KITBASH_REDIS__URL", redis.url()),
        ("KITBASH_REDIS__TLS_CA_FILE", ca.clone()),
        ("KITBASH_REDIS__KEY_PREFIX", prefix.clone()),
        ("KITBASH_HTTP__ENABLED", "false".to_string()),
        ("KITBASH_LAYERS__LAYER1__ENABLED", "false".to_string()),
        ("KITBASH_LAYERS__LAYER4__ENABLED", "false".to_string()),
        ("KITBASH_LAYERS__LAYER2__TIMEOUT_MS", "30000".to_string()),
    ];
    let settings = RedisSettings {
        url: Some(redis.url()),
        tls_ca_file: Some(ca.clone().into()),
        key_prefix: prefix.clone(),
        ..Default::default()
    };
    let keys = Keys::new(prefix.clone());

    // The worker first, then the daemon, which sends layer2 jobs once it
    // reports the worker live.
    let mut worker = Killed(
        kitbash(
            &["worker", "echo", "--layer", "layer2", "--name", "tls-echo"],
            &env,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_for_key(&settings, &keys.health("tls-echo"), &mut [&mut worker]);
    let mut daemon = Killed(
        kitbash(&["serve", "--instance-id", "tls-daemon"], &env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        &settings,
        "the daemon to report the layer2 worker live",
        &mut [&mut worker, &mut daemon],
        |conn| crate::common::a_daemon_sees(conn, &keys, "layer2"),
    );

    let question = "Does kitbash speak TLS to a private CA?";
    let o = output(&mut kitbash(
        &["query", question, "--json", "--timeout", "60"],
        &env,
    ));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let state: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(state["status"], "answered", "{state}");
    assert_eq!(state["query_text"], question);
    assert_eq!(state["answer"]["layer"], "layer2", "{state}");
    assert_eq!(state["answer"]["text"], format!("echo: {question}"));
    assert_eq!(state["answer"]["source"], "echo");

    // The same server without the CA: the system roots do not know it.
    let no_ca: Env = env
        .iter()
        .filter(|(k, _)| *k != "KITBASH_REDIS__TLS_CA_FILE")
        .cloned()
        .collect();
    let o = output(&mut kitbash(
        &["query", question, "--json", "--timeout", "3"],
        &no_ca,
    ));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains("tls handshake with redis at rediss://127.0.0.1")
            && err.contains("invalid peer certificate")
            && err.contains("redis.tls_ca_file"),
        "{}",
        text(&o)
    );
    assert!(!err.contains("panicked"), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));

    // A daemon without the CA keeps retrying, and its log says what to set.
    let log_path = pki.path("lost-daemon.log");
    let mut lost = Killed(
        kitbash(&["serve", "--instance-id", "tls-no-ca"], &no_ca)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + PATIENCE;
    let mut log = String::new();
    // Two failed tries logged: it retries.
    while log.matches("TLS handshake with Redis failed").count() < 2 {
        assert!(
            lost.0.try_wait().unwrap().is_none(),
            "it exited instead of waiting for Redis:\n{log}"
        );
        assert!(
            Instant::now() < deadline,
            "no two failed tries logged:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
        log = std::fs::read_to_string(&log_path).unwrap();
    }
    assert!(lost.0.try_wait().unwrap().is_none(), "it waits for Redis");
    let _ = lost.0.kill();
    assert!(
        log.contains("TLS handshake with Redis failed")
            && log.contains("invalid peer certificate")
            && log.contains("redis.tls_ca_file"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    drop(daemon);
    drop(worker);
}

#[test]
fn client_certificate_for_tls_auth_clients_yes() {
    let pki = Pki::new();
    let Some(redis) = tls_redis(&pki, true) else {
        return;
    };
    let ca = pki.path("ca.pem").display().to_string();
    let base = [
        ("KITBASH_REDIS__URL", redis.url()),
        ("KITBASH_REDIS__TLS_CA_FILE", ca),
        ("KITBASH_REDIS__KEY_PREFIX", prefix()),
    ];
    let mut with_cert = base.to_vec();
    with_cert.push((
        "KITBASH_REDIS__TLS_CERT_FILE",
        pki.path("client.pem").display().to_string(),
    ));
    with_cert.push((
        "KITBASH_REDIS__TLS_KEY_FILE",
        pki.path("client.key").display().to_string(),
    ));

    // `kitbash stats` only reads Redis: it works with the client certificate...
    let o = output(&mut kitbash(&["stats", "--json"], &with_cert));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["layer"], "layer0", "{}", text(&o));

    // ...and the server turns a client without one away, with a message.
    let o = output(&mut kitbash(&["stats", "--json"], &base));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("TLS handshake with Redis at rediss://127.0.0.1")
            && err.contains("redis.tls_cert_file and redis.tls_key_file"),
        "{}",
        text(&o)
    );
    assert!(!err.contains("panicked"), "{}", text(&o));
}

/// Settings problems are configuration errors (exit 2) naming the key and
/// the file, found before any connection is tried.
#[test]
fn unusable_tls_files_are_configuration_errors() {
    let pki = Pki::new();
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let url = ("KITBASH_REDIS__URL", "rediss://127.0.0.1:1/0".to_string());
    let show = |p: &Path| p.display().to_string();
    let missing = pki.path("missing.pem");
    let cases: Vec<(Env, Vec<String>)> = vec![
        (
            vec![url.clone(), ("KITBASH_REDIS__TLS_CA_FILE", show(&missing))],
            vec![
                "redis.tls_ca_file".into(),
                show(&missing),
                "cannot read".into(),
                "KITBASH_REDIS__TLS_CA_FILE".into(),
            ],
        ),
        (
            vec![url.clone(), ("KITBASH_REDIS__TLS_CA_FILE", show(&garbage))],
            vec![
                "redis.tls_ca_file".into(),
                show(&garbage),
                "no PEM certificate".into(),
            ],
        ),
        (
            vec![
                url.clone(),
                (
                    "KITBASH_REDIS__TLS_CERT_FILE",
                    show(&pki.path("client.pem")),
                ),
                ("KITBASH_REDIS__TLS_KEY_FILE", show(&pki.path("client.pem"))),
            ],
            vec!["redis.tls_key_file".into(), "no PEM private key".into()],
        ),
        (
            vec![
                url.clone(),
                (
                    "KITBASH_REDIS__TLS_CERT_FILE",
                    show(&pki.path("client.pem")),
                ),
            ],
            vec![
                "redis.tls_cert_file".into(),
                "needs redis.tls_key_file".into(),
            ],
        ),
        (
            vec![
                (
                    "KITBASH_REDIS__URL",
                    "redis://user:hunter2@127.0.0.1:1/0".to_string(),
                ),
                ("KITBASH_REDIS__TLS_CA_FILE", show(&pki.path("ca.pem"))),
            ],
            vec!["redis.tls_ca_file".into(), "rediss://".into()],
        ),
    ];
    for (env, expected) in cases {
        for args in [&["config"][..], &["query", "hello", "--timeout", "1"][..]] {
            let o = output(&mut kitbash(args, &env));
            assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            for e in &expected {
                assert!(
                    err.contains(e.as_str()),
                    "{args:?} {env:?}: no {e:?} in {err}"
                );
            }
            assert!(
                !err.contains("hunter2") && !err.contains("panicked"),
                "{err}"
            );
        }
    }
}
