//! A real Redis Cluster for tests: six `redis-server --cluster-enabled yes`
//! on free loopback ports (three primaries, one replica each), created with
//! `redis-cli --cluster create`, killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// One node of a [`TestCluster`].
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

/// A running cluster of three primaries with one replica each.
pub struct TestCluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// Ports handed to a cluster node by this process, with their bus ports:
/// tests run in parallel, and the OS may hand a released port out again.
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A free loopback port whose cluster-bus port (port + 10000) is free too,
/// neither handed to another node of this process before.
fn free_cluster_port() -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().unwrap().port();
        let bus = port + 10_000;
        if port >= 55_000 || handed.contains(&port) || handed.contains(&bus) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            handed.extend([port, bus]);
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl TestCluster {
    /// Starts six nodes and creates the cluster; waits until every node
    /// reports `cluster_state:ok` and knows all six.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ports = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_cluster_port();
            ports.push(port);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--dir", dir.path().to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH (apt-get install redis-server)");
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let cluster = Self { nodes, _dir: dir };
        for n in &cluster.nodes {
            cluster.wait(|| cli(n.port, &["PING"]).is_some_and(|o| o.contains("PONG")));
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every node sees the cluster whole, with the roles as created, and
        // every replica is in sync with its primary (else a failover has
        // nothing to promote).
        for n in &cluster.nodes {
            cluster.wait(|| {
                cli(n.port, &["CLUSTER", "INFO"]).is_some_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_known_nodes:6")
                }) && cli(n.port, &["CLUSTER", "NODES"]).is_some_and(|nodes| {
                    let roles = |r: &str| nodes.lines().filter(|l| l.contains(r)).count();
                    roles("master") == 3 && roles("slave") == 3
                })
            });
        }
        let mut replicas = 0;
        for n in &cluster.nodes {
            let info = cli(n.port, &["INFO", "replication"]).unwrap_or_default();
            if info.contains("role:slave") {
                replicas += 1;
                cluster.wait(|| {
                    cli(n.port, &["INFO", "replication"])
                        .is_some_and(|i| i.contains("master_link_status:up"))
                });
            }
        }
        assert_eq!(replicas, 3, "three replicas");
        cluster
    }

    fn wait(&self, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the test cluster did not come up within {PATIENCE:?}");
    }

    /// `redis://` URLs of every node, for a cluster client's seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// The ports of the nodes that are primaries now, by `CLUSTER NODES`.
    pub fn primaries(&self) -> Vec<u16> {
        let nodes = self.cluster_nodes();
        let mut out: Vec<u16> = nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|a| a.split('@').next()?.rsplit(':').next()?.parse().ok())
            .collect();
        out.sort_unstable();
        out
    }

    /// `CLUSTER NODES` as a live node sees it.
    fn cluster_nodes(&self) -> String {
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        cli(live.port, &["CLUSTER", "NODES"]).unwrap_or_default()
    }

    /// The port of the primary serving `slot` now, by `CLUSTER NODES`.
    pub fn owner_of(&self, slot: u16) -> u16 {
        let nodes = self.cluster_nodes();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let serves = f[8..].iter().any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            if serves {
                let addr = f[1].split('@').next().unwrap();
                return addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        panic!("no primary serves slot {slot}: {nodes}");
    }

    /// Kills one node with SIGKILL (a crash).
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut c) = n.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
