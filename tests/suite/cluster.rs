//! The Redis Cluster test harness itself: a real cluster forms, and a
//! killed primary's replica takes over (what the cluster-mode tests of the
//! daemon build on).

use crate::common::PATIENCE;
use crate::common::cluster::TestCluster;

fn cluster_info(port: u16) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_harness_forms_three_primaries_with_a_replica_each() {
    let c = TestCluster::start();
    assert_eq!(c.primaries().len(), 3);
    let info = cluster_info(c.nodes[0].port);
    assert!(info.contains("cluster_slots_ok:16384"), "{info}");
    assert!(info.contains("cluster_size:3"), "{info}");
}

#[test]
fn a_killed_primary_is_replaced_by_its_replica() {
    let mut c = TestCluster::start();
    let before = c.primaries();
    let victim = before[0];
    c.kill(victim);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut now = c.primaries();
    while std::time::Instant::now() < deadline && (now.len() != 3 || now.contains(&victim)) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        now = c.primaries();
    }
    assert_eq!(
        now.len(),
        3,
        "three primaries again after the failover: {now:?}"
    );
    assert!(!now.contains(&victim));
    let survivor = c.nodes.iter().find(|n| n.port != victim).unwrap().port;
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline
        && !cluster_info(survivor).contains("cluster_state:ok")
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(cluster_info(survivor).contains("cluster_state:ok"));
}

// ----- Kitbash on the cluster -----------------------------------------------

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kitbash::config::Settings;
use kitbash::{Blackboard, QueryState, QueryStatus};

use crate::faults::support::{Proc, load_grains, per_query, push_mixed, with_instance};

/// A cluster and a deployment's view of it: settings in cluster mode whose
/// seed is a node that does *not* serve the deployment's slot (so every
/// command starts with a redirection the client must follow), the matching
/// environment for `kitbash` processes, and a Blackboard over a cluster
/// connection.
struct OnCluster {
    cluster: TestCluster,
    settings: Settings,
    env: Vec<(String, String)>,
    bb: Blackboard,
}

impl OnCluster {
    async fn start() -> Self {
        let cluster = TestCluster::start();
        let prefix = format!(
            "kbcluster-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut settings = Settings::default();
        settings.redis.cluster = true;
        settings.redis.key_prefix = prefix.clone();
        let keys = settings.redis.keys();
        let slot = kitbash::store::keys::slot(&keys.queue());
        let owner = cluster.owner_of(slot);
        let seed = cluster
            .primaries()
            .into_iter()
            .find(|p| *p != owner)
            .expect("another primary");
        settings.redis.url = Some(format!("redis://127.0.0.1:{seed}/"));
        settings.redis.retry_max_delay_ms = 1000;
        let conn = kitbash::store::connection::Connector::new(&settings.redis)
            .unwrap()
            .shared()
            .await
            .unwrap();
        let bb = Blackboard::from_settings(conn, &settings);
        let env = [
            ("KITBASH_REDIS__URL", format!("redis://127.0.0.1:{seed}/")),
            ("KITBASH_REDIS__CLUSTER", "true".into()),
            ("KITBASH_REDIS__KEY_PREFIX", prefix),
            ("KITBASH_REDIS__RETRY_MAX_DELAY_MS", "1000".into()),
            ("KITBASH_HTTP__ENABLED", "false".into()),
            ("KITBASH_ORCHESTRATOR__HEARTBEAT_INTERVAL_MS", "200".into()),
            ("KITBASH_ORCHESTRATOR__HEALTH_TTL_S", "1".into()),
            ("KITBASH_ORCHESTRATOR__RECOVERY_INTERVAL_S", "1".into()),
            ("KITBASH_ORCHESTRATOR__SHUTDOWN_GRACE_S", "2".into()),
            ("KITBASH_WORKERS__HEARTBEAT_INTERVAL_MS", "200".into()),
            ("KITBASH_WORKERS__HEALTH_TTL_S", "1".into()),
            ("KITBASH_WORKERS__SHUTDOWN_GRACE_S", "2".into()),
            ("KITBASH_FEED__MAX_LEN", "2000000".into()),
            ("KITBASH_LAYERS__LAYER2__TIMEOUT_MS", "5000".into()),
            ("KITBASH_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self {
            cluster,
            settings,
            env,
            bb,
        }
    }

    /// The states of `ids` (None: none, or Redis did not answer).
    async fn states(&self, ids: &[String]) -> Vec<Option<QueryState>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.bb.get_state(id).await.ok().flatten());
        }
        out
    }

    /// Waits until every one of `ids` is terminal, or panics naming some
    /// that are not.
    async fn wait_all_terminal(&self, ids: &[String], secs: f64) -> Duration {
        let t0 = Instant::now();
        loop {
            let states = self.states(ids).await;
            let open: Vec<String> = ids
                .iter()
                .zip(&states)
                .filter(|(_, s)| !s.as_ref().is_some_and(|s| s.status.is_terminal()))
                .map(|(id, s)| format!("{id}={:?}", s.as_ref().map(|s| s.status.clone())))
                .collect();
            if open.is_empty() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed().as_secs_f64() < secs,
                "{} of {} queries not terminal after {secs} s, e.g. {:?}",
                open.len(),
                ids.len(),
                &open[..open.len().min(10)]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every event of the feed as (event, query_id, reason).
    async fn events(&self) -> Vec<(String, String, String)> {
        crate::faults::support::all_events(&self.bb).await
    }

    /// Waits until the daemons' health records list `layer` as live.
    async fn wait_daemon_sees(&self, layer: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let health = self.bb.list_health().await.unwrap_or_default();
            if health.iter().any(|h| {
                h.role == kitbash::store::blackboard::ProcessRole::Daemon
                    && h.live_layers.iter().any(|l| l == layer)
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no daemon sees {layer}: {health:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Each query terminal, completed at most once; returns counts per status.
async fn exactly_once(on: &OnCluster, ids: &[String]) -> HashMap<String, usize> {
    let events = on.events().await;
    let completed = per_query(&events, "query_completed");
    let twice: Vec<_> = completed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    let mut statuses = HashMap::new();
    for (id, s) in ids.iter().zip(on.states(ids).await) {
        let s = s.unwrap_or_else(|| panic!("{id} has no state"));
        assert!(s.status.is_terminal(), "{id} is {:?}", s.status);
        if s.status != QueryStatus::Failed {
            assert_eq!(completed.get(id), Some(&1), "{id}: one query_completed");
        }
        *statuses.entry(s.status.as_str().to_string()).or_default() += 1;
    }
    statuses
}

/// The cascade on a cluster: grains answer at layer0, the rest reach a
/// worker process at layer2; a daemon killed with -9 mid-way leaves its
/// queries to the next one, and every query ends exactly once. The seed
/// node does not hold the deployment's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cascade_runs_on_a_cluster_and_survives_a_killed_daemon() {
    let on = OnCluster::start().await;
    load_grains(&on.bb, 20).await;
    let _worker = Proc::echo_worker("echo-c", &on.env);
    let mut first = Proc::serve("daemon-c1", &with_instance(&on.env, "daemon-c1"));
    on.wait_daemon_sees("layer2").await;

    let ids = push_mixed(&on.bb, "cl", 400, 20).await;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let done = on
            .states(&ids)
            .await
            .iter()
            .filter(|s| s.as_ref().is_some_and(|s| s.status.is_terminal()))
            .count();
        if done >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill9();
    let _second = Proc::serve("daemon-c2", &with_instance(&on.env, "daemon-c2"));
    on.wait_all_terminal(&ids, 120.0).await;
    let statuses = exactly_once(&on, &ids).await;
    assert_eq!(statuses.get("failed"), None, "{statuses:?}");
    let answered = statuses.get("answered").copied().unwrap_or(0);
    assert!(
        answered >= 200,
        "at least the grain half answered: {statuses:?}"
    );
    // The daemon that was killed left no processing list behind.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut left = Vec::new();
        for keys in on.bb.keys().all_partitions() {
            left.extend(on.bb.scan_keys(&keys.processing_pattern()).await.unwrap());
        }
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processing lists left: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The queries were spread over the partitions, so over every primary.
    let used: std::collections::BTreeSet<usize> =
        ids.iter().map(|id| on.bb.keys().partition_of(id)).collect();
    assert_eq!(used.len(), on.settings.redis.partitions as usize);
    drop(on.cluster);
}

/// What one failover run saw (printed; asserted where it must hold).
#[derive(Debug, Default)]
struct FailoverRun {
    acknowledged: usize,
    unconfirmed: usize,
    refused: usize,
    answered: usize,
    unanswered: usize,
    failed: usize,
    lost: usize,
    stuck: usize,
    completed_twice: usize,
    /// Kill to the first enqueue of the victim's partition 0 that Redis took.
    enqueued_again_after: Option<Duration>,
    /// Kill to that query's end (its `completed_at`).
    resumed_after: Option<Duration>,
}

/// kill -9 of a primary under load, with one replica per primary: its
/// replica is promoted, the daemon and the worker follow the new topology
/// on their own, service resumes, and every query the client's enqueue
/// acknowledged (confirmed by a replica, `WAIT`, which cluster mode does by
/// default when every primary has a replica) ends: none lost, none stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_under_load_loses_no_acknowledged_query() {
    let run = failover(None).await;
    assert_eq!(run.lost, 0, "acknowledged queries lost: {run:?}");
}

/// The same without waiting for replicas (`redis.wait_replicas: 0`): an
/// acknowledged enqueue may be lost with the primary (Redis replication is
/// asynchronous; the run prints how many), but service resumes and nothing
/// is stuck or completed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_waiting_for_replicas_a_failover_still_leaves_nothing_stuck() {
    failover(Some(0)).await;
}

/// One failover run: enqueues at about 200 per second through a client
/// (`wait_replicas` as given), kill -9 of the primary of partition 0 a
/// third of the way through; waits for every query to end; asserts that
/// service resumed and that no query is stuck or completed twice.
async fn failover(wait_replicas: Option<u32>) -> FailoverRun {
    let mut on = OnCluster::start().await;
    on.settings.redis.wait_replicas = wait_replicas;
    load_grains(&on.bb, 20).await;
    let _worker = Proc::echo_worker("echo-f", &on.env);
    let _d1 = Proc::serve("daemon-f1", &with_instance(&on.env, "daemon-f1"));
    let _d2 = Proc::serve("daemon-f2", &with_instance(&on.env, "daemon-f2"));
    on.wait_daemon_sees("layer2").await;
    let client = kitbash::client::Client::connect(&on.settings, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        client.blackboard().wait_replicas(),
        wait_replicas.unwrap_or(1),
        "every primary has a replica: by default enqueues wait for one"
    );

    // The victim: the primary serving partition 0.
    let victim = on.cluster.owner_of(kitbash::store::keys::slot(
        &on.bb.keys().partition(0).queue(),
    ));
    let mut run = FailoverRun::default();
    let mut acked = Vec::new();
    let mut after_kill = Vec::new();
    let mut unconfirmed = Vec::new();
    let mut killed_at = None;
    let mut killed_wall = None;
    const N: usize = 1500;
    for i in 0..N {
        if i == N / 3 {
            on.cluster.kill(victim);
            killed_at = Some(Instant::now());
            killed_wall = Some(chrono::Utc::now());
        }
        let text = if i % 2 == 0 {
            format!("What is the fault colour number {}?", i % 20)
        } else {
            format!("echo question fo {i}")
        };
        let q = QueryState::with_id(format!("fo-{i}"), text);
        match client.blackboard().enqueue(&q).await {
            Ok(()) => {
                acked.push(q.query_id.clone());
                if let Some(t) = killed_at {
                    after_kill.push(q.query_id.clone());
                    if run.enqueued_again_after.is_none()
                        && on.bb.keys().partition_of(&q.query_id) == 0
                    {
                        run.enqueued_again_after = Some(t.elapsed());
                    }
                }
            }
            // Queued on a primary that has no replica (the promoted one):
            // as the client does, stop waiting for replicas.
            Err(kitbash::BlackboardError::NotReplicated { .. }) => {
                run.unconfirmed += 1;
                unconfirmed.push(q.query_id.clone());
                after_kill.push(q.query_id.clone());
                if run.enqueued_again_after.is_none() && on.bb.keys().partition_of(&q.query_id) == 0
                {
                    run.enqueued_again_after = killed_at.map(|t| t.elapsed());
                }
                client
                    .blackboard()
                    .resolve_wait_replicas(None)
                    .await
                    .unwrap();
            }
            Err(e) => {
                run.refused += 1;
                if run.refused <= 5 || run.refused % 100 == 0 {
                    println!(
                        "enqueue {i} refused {:?} after the kill: {e}",
                        killed_at.map(|t: Instant| t.elapsed())
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    run.acknowledged = acked.len();
    assert_eq!(
        client.blackboard().wait_replicas(),
        0,
        "the promoted primary has no replica: enqueues stopped waiting (or never did)"
    );
    let _ = killed_at.expect("killed");

    // Service resumes: the first query acknowledged after the kill ends.
    let first_after = after_kill
        .iter()
        .find(|id| on.bb.keys().partition_of(id) == 0)
        .cloned()
        .expect("queries of the victim's partition acknowledged after the kill");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(s)) = on.bb.get_state(&first_after).await
            && s.status.is_terminal()
        {
            let done = s.completed().expect("a terminal state has completed_at");
            run.resumed_after = (done - killed_wall.expect("killed")).to_std().ok();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{first_after} never ended after the failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every acknowledged query ends (or is reported lost or stuck); the
    // unconfirmed ones too, as nothing failed after them.
    acked.extend(unconfirmed);
    let deadline = Instant::now() + Duration::from_secs(120);
    let states = loop {
        let states = on.states(&acked).await;
        let open = states
            .iter()
            .filter(|s| !s.as_ref().is_some_and(|s| s.status.is_terminal()))
            .count();
        if open == 0 || Instant::now() > deadline {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for s in &states {
        match s {
            None => run.lost += 1,
            Some(s) if !s.status.is_terminal() => run.stuck += 1,
            Some(s) if s.status == QueryStatus::Answered => run.answered += 1,
            Some(s) if s.status == QueryStatus::Failed => run.failed += 1,
            Some(_) => run.unanswered += 1,
        }
    }
    let events = on.events().await;
    run.completed_twice = per_query(&events, "query_completed")
        .values()
        .filter(|n| **n > 1)
        .count();
    println!("failover (wait_replicas {wait_replicas:?}): killed primary {victim}; {run:?}");
    assert_eq!(run.stuck, 0, "acknowledged queries stuck: {run:?}");
    assert_eq!(run.completed_twice, 0, "{run:?}");
    assert!(run.answered > 0, "{run:?}");
    run
}

/// A foreign client in cluster mode (`redis-cli -c`, as the contract shows):
/// a JSON entry pushed to any partition's queue is answered (the daemon
/// gives it an id of that partition); a state and id written under the
/// id's own partition are answered; an id pushed to another partition's
/// queue goes to that partition's dead list saying where it belongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_client_enqueues_with_redis_cli() {
    let on = OnCluster::start().await;
    load_grains(&on.bb, 5).await;
    let _daemon = Proc::serve("daemon-x", &with_instance(&on.env, "daemon-x"));
    let seed = on.cluster.primaries()[0];
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-c", "-p", &seed.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let keys = on.bb.keys().clone();
    // 1. A JSON entry without an id, on partition 3's queue.
    let p3 = keys.partition(3);
    cli(&[
        "LPUSH",
        &p3.queue(),
        r#"{"query_text":"What is the fault colour number 1?","metadata":{"client":"redis-cli"}}"#,
    ]);
    // 2. A state and its id, in the id's partition.
    let id = "foreign-1";
    let state = QueryState::with_id(id, "What is the fault colour number 2?");
    cli(&[
        "SET",
        &keys.state(id),
        &serde_json::to_string(&state).unwrap(),
        "EX",
        "600",
    ]);
    cli(&["LPUSH", &keys.for_query(id).queue(), id]);
    // 3. An id pushed to a partition that is not its own.
    let stray = "foreign-stray";
    let wrong = (keys.partition_of(stray) + 1) % keys.partitions();
    cli(&["LPUSH", &keys.partition(wrong).queue(), stray]);

    let s = {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(s)) = on.bb.get_state(id).await
                && s.status.is_terminal()
            {
                break s;
            }
            assert!(Instant::now() < deadline, "{id} never ended");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(s.status, QueryStatus::Answered);
    let deadline = Instant::now() + PATIENCE;
    let (created, dead) = loop {
        let events = on.events().await;
        let created: Vec<String> = events
            .iter()
            .filter(|(e, _, _)| e == "query_created")
            .map(|(_, q, _)| q.clone())
            .collect();
        let dead = on.bb.dead_entries(10).await.unwrap();
        if !created.is_empty() && !dead.is_empty() {
            break (created, dead);
        }
        assert!(
            Instant::now() < deadline,
            "no adoption or no dead entry: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The adopted JSON entry got an id of partition 3, and was answered.
    assert_eq!(keys.partition_of(&created[0]), 3, "{created:?}");
    let adopted = on.bb.get_state(&created[0]).await.unwrap().unwrap();
    assert_eq!(adopted.status, QueryStatus::Answered);
    // The stray id is in the dead list of the partition it was pushed to,
    // with where it belongs.
    let in_wrong: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.partition(wrong).dead())
        .arg(0)
        .arg(-1)
        .query_async(&mut on.bb.connection())
        .await
        .unwrap();
    assert!(
        in_wrong
            .iter()
            .any(|d| d.contains(stray) && d.contains(&keys.for_query(stray).queue())),
        "{dead:?}"
    );
}

/// `kitbash <args>` with the deployment's cluster environment (plus
/// `extra`); stdin closed unless `stdin` is given.
fn kb(
    on: &OnCluster,
    args: &[&str],
    extra: &[(&str, &str)],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::io::Write;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kitbash"));
    cmd.args(args)
        .env_remove("KITBASH_CONFIG")
        .env_remove("REDIS_URL")
        .env("NO_COLOR", "1")
        .env("KITBASH_LAYERS__LAYER0__TIMEOUT_MS", "10000")
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in &on.env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn shown(o: &std::process::Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every user-facing command against a cluster, as a user runs it:
/// `kitbash up` (pointed at the cluster: it loads the 436 demo grains over
/// the partitions, starts the daemon, starts no Redis), `grains count`,
/// `get`, `forget`, `query`, `timeline`, `stats`, the REPL with direct mode,
/// and the daemon's HTTP endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_against_a_cluster() {
    let on = OnCluster::start().await;
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grains/demo.jsonl");
    let port = crate::common::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_kitbash"));
    up.args(["up", "--demo-grains", demo])
        .env_remove("KITBASH_CONFIG")
        .env("KITBASH_WORKERS__BITNET__URL", "http://127.0.0.1:1")
        .env("KITBASH_WORKERS__LLM__URL", "http://127.0.0.1:1")
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in &on.env {
        up.env(k, v);
    }
    up.env("KITBASH_HTTP__ENABLED", "true")
        .env("KITBASH_HTTP__LISTEN", &listen);
    let up = up.spawn().unwrap();
    let up_pid = up.id();

    // The demo grains, spread over the partitions.
    let deadline = Instant::now() + PATIENCE;
    while on.bb.count_grains().await.unwrap_or(0) < 436 {
        assert!(Instant::now() < deadline, "the demo grains never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = kb(&on, &["grains", "count"], &[], None);
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "436",
        "{}",
        shown(&count)
    );
    let mut used = std::collections::BTreeSet::new();
    for keys in on.bb.keys().all_partitions() {
        let n: u64 = redis::cmd("SCARD")
            .arg(keys.grain_ids())
            .query_async(&mut on.bb.connection())
            .await
            .unwrap();
        if n > 0 {
            used.insert(keys.current());
        }
    }
    assert_eq!(
        used.len(),
        on.bb.keys().partitions(),
        "grains in every partition"
    );

    // The daemon up started answers.
    let health = format!("http://{listen}/health/ready");
    let deadline = Instant::now() + PATIENCE;
    while !reqwest::get(&health)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the daemon never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let q = kb(
        &on,
        &["query", "--json", "What is the capital of Kenya?"],
        &[],
        None,
    );
    assert_eq!(q.status.code(), Some(0), "{}", shown(&q));
    let state: QueryState = serde_json::from_slice(&q.stdout).expect("the final state");
    assert_eq!(state.answer.as_ref().unwrap().text, "Nairobi");
    let t = kb(&on, &["timeline", &state.query_id], &[], None);
    assert!(
        String::from_utf8_lossy(&t.stdout).contains("layer_hit"),
        "{}",
        shown(&t)
    );
    let s = kb(&on, &["stats", "--json"], &[], None);
    let stats: serde_json::Value = serde_json::from_slice(&s.stdout).expect("stats JSON");
    let layer0 = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "layer0")
        .unwrap();
    assert!(layer0["counters"]["hits"].as_u64().unwrap() >= 1, "{stats}");
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kitbash_"), "{metrics}");
    let detailed = reqwest::get(format!("http://{listen}/health/detailed"))
        .await
        .unwrap();
    assert!(detailed.status().is_success());

    // The dashboard's API merges the partitions: memory over the three
    // primaries, the query found by its words (states read across slots),
    // its decisions, the grains of every partition.
    let api = |path: String| {
        let url = format!("http://{listen}{path}");
        async move {
            let r = reqwest::get(&url).await.unwrap();
            assert!(r.status().is_success(), "{url}: {}", r.status());
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let overview = api("/api/overview".into()).await;
    assert_eq!(overview["redis_memory"]["servers"], 3, "{overview}");
    assert_eq!(overview["grains"], 436, "{overview}");
    let found = api("/api/queries?text=kenya".into()).await;
    assert!(
        found["queries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["query_id"] == state.query_id.as_str()),
        "{found}"
    );
    let one = api(format!("/api/queries/{}", state.query_id)).await;
    assert_eq!(one["state"]["answer"]["text"], "Nairobi", "{one}");
    assert!(
        one["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "layer_hit"),
        "{one}"
    );
    let grains = api("/api/grains?q=capital-&limit=500".into()).await;
    assert!(grains["matched"].as_u64().unwrap() > 12, "{grains}");
    assert_eq!(api("/api/dead".into()).await["total"], 0);

    // The REPL, in Redis mode and direct mode.
    let script = "What is the capital of France?\n:timeline\n:stats\n:direct\nWhat is the capital of Peru?\nquit\n";
    let r = kb(&on, &["repl"], &[], Some(script));
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.contains("Paris") && out.contains("Lima"),
        "{}",
        shown(&r)
    );
    assert!(
        out.contains("layer_hit") && out.contains("direct mode"),
        "{}",
        shown(&r)
    );

    // Grains by id, whatever partition keeps them.
    let g = kb(&on, &["grains", "get", "capital-ke"], &[], None);
    assert!(
        String::from_utf8_lossy(&g.stdout).contains("Nairobi"),
        "{}",
        shown(&g)
    );
    let f = kb(&on, &["grains", "forget", "capital-ke"], &[], None);
    assert_eq!(f.status.code(), Some(0), "{}", shown(&f));
    let count = kb(&on, &["grains", "count"], &[], None);
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "435",
        "{}",
        shown(&count)
    );

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up_pid as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let out = tokio::task::spawn_blocking(move || up.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("started a local redis-server"), "{err}");
}

/// `kitbash acl` in cluster mode prints rules for every partition; set on
/// every node, they let the daemon, a worker and a client each do their
/// part as their own user, and nothing more is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_printed_for_cluster_mode_serve_queries() {
    let on = OnCluster::start().await;
    load_grains(&on.bb, 5).await;
    let printed = kb(&on, &["acl"], &[], None);
    assert_eq!(printed.status.code(), Some(0), "{}", shown(&printed));
    let lines: Vec<String> = String::from_utf8_lossy(&printed.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(":{*}:") && l.contains("+cluster|slots")),
        "{lines:?}"
    );
    for node in &on.cluster.nodes {
        for line in &lines {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &node.port.to_string()])
                .args(line.split_whitespace())
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("OK"),
                "{out:?}"
            );
        }
    }
    let as_user = |role: &str| -> Vec<(String, String)> {
        let mut env = on.env.clone();
        env.push(("KITBASH_REDIS__USERNAME".into(), format!("kitbash-{role}")));
        env.push((
            "KITBASH_REDIS__PASSWORD".into(),
            format!("CHANGE-ME-{role}"),
        ));
        env
    };
    let _worker = Proc::echo_worker("echo-acl", &as_user("worker"));
    let _daemon = Proc::serve(
        "daemon-acl",
        &with_instance(&as_user("daemon"), "daemon-acl"),
    );
    on.wait_daemon_sees("layer2").await;
    let client = [
        ("KITBASH_REDIS__USERNAME", "kitbash-client"),
        ("KITBASH_REDIS__PASSWORD", "CHANGE-ME-client"),
    ];
    for (question, layer) in [
        ("What is the fault colour number 3?", "layer0"),
        ("echo question acl", "layer2"),
    ] {
        let q = kb(&on, &["query", "--json", question], &client, None);
        assert_eq!(q.status.code(), Some(0), "{}", shown(&q));
        let state: QueryState = serde_json::from_slice(&q.stdout).expect("the final state");
        assert_eq!(state.answer.unwrap().layer, layer);
    }
}
