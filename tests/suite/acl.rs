// `kitbash acl`: the printed users, applied to a private redis-server, let
// each role do its job and nothing the issue names as off limits.

use std::time::{Duration, Instant};

use crate::common::{PATIENCE, TestContext};
use kitbash::config::{Secret, Settings, WorkerKind};
use kitbash::store::acl::{self, Password, Role};
use kitbash::worker::echo::EchoBackend;
use kitbash::worker::{Worker, WorkerOptions};
use kitbash::{Blackboard, Connector, Grain, Keys, QueryStatus};
use redis::{Commands, RedisResult, Value};
use tokio_util::sync::CancellationToken;

fn password(role: Role) -> String {
    format!("pw-{}-s3cret", role.as_str())
}

/// Sends each printed `ACL SETUSER` line, split into its arguments.
fn apply_rules(ctx: &TestContext) {
    let mut admin = ctx.raw();
    for user in acl::users(&ctx.keys()) {
        let line = user.setuser_line(&Password::Plain(password(user.role)));
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&parts[..2], ["ACL", "SETUSER"], "{line}");
        let mut cmd = redis::cmd("ACL");
        for p in &parts[1..] {
            cmd.arg(*p);
        }
        let () = cmd
            .query(&mut admin)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let () = redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query(&mut admin)
        .unwrap();
}

fn connect_as(ctx: &TestContext, role: Role) -> redis::Connection {
    let url = format!(
        "redis://{}:{}@127.0.0.1:{}/0",
        role.user_name(),
        password(role),
        ctx.redis.port
    );
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn settings_as(ctx: &TestContext, role: Role) -> Settings {
    let mut s = ctx.settings.clone();
    s.redis.username = Some(role.user_name().to_string());
    s.redis.password = Some(Secret::new(password(role)));
    s
}

#[track_caller]
fn denied<T: std::fmt::Debug>(r: RedisResult<T>) {
    match r {
        Ok(v) => panic!("expected NOPERM, got {v:?}"),
        Err(e) => assert!(
            e.to_string().contains("NOPERM") || e.code() == Some("NOPERM"),
            "expected NOPERM, got {e}"
        ),
    }
}

/// Denials Redis recorded, except `CLIENT SETINFO` (redis-rs sends it on
/// connect and ignores the answer; Redis 7.0 does not know it at all).
fn acl_log(ctx: &TestContext) -> Vec<String> {
    let mut admin = ctx.raw();
    let entries: Vec<Value> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    entries
        .into_iter()
        .map(|e| format!("{e:?}"))
        .filter(|e| !e.to_lowercase().contains("setinfo"))
        .collect()
}

#[test]
fn printed_lines_are_accepted_by_redis() {
    let ctx = TestContext::private();
    apply_rules(&ctx);
    let mut admin = ctx.raw();
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query(&mut admin).unwrap();
    for role in Role::ALL {
        assert!(users.contains(&role.user_name().to_string()), "{users:?}");
        let mut c = connect_as(&ctx, role);
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        // Nothing outside the prefix, and no administration.
        denied(c.get::<_, Option<String>>("other:key"));
        denied(redis::cmd("FLUSHALL").query::<()>(&mut c));
        denied(
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("*")
                .query::<Value>(&mut c),
        );
        denied(redis::cmd("KEYS").arg("*").query::<Value>(&mut c));
    }
    // The log the end-to-end test checks does record denials.
    assert!(!acl_log(&ctx).is_empty());
}

#[test]
fn worker_is_fenced_out_of_states_and_queue() {
    let ctx = TestContext::private();
    apply_rules(&ctx);
    let k = ctx.keys();
    let mut admin = ctx.raw();
    let () = admin.lpush(k.jobs("layer2"), "job-1").unwrap();
    let mut w = connect_as(&ctx, Role::Worker);

    denied(w.get::<_, Option<String>>(k.state("x")));
    denied(w.set::<_, _, ()>(k.state("x"), "{}"));
    denied(w.llen::<_, u64>(k.queue()));
    denied(w.lpush::<_, _, u64>(k.queue(), "q"));
    // replies are write-only, the feed is append-only
    denied(w.lrange::<_, Vec<String>>(k.replies("d1"), 0, -1));
    denied(
        redis::cmd("XRANGE")
            .arg(k.feed())
            .arg("-")
            .arg("+")
            .query::<Value>(&mut w),
    );

    let taken: Option<String> = redis::cmd("BLMOVE")
        .arg(k.jobs("layer2"))
        .arg(k.jobs_processing("layer2", "w1"))
        .arg("RIGHT")
        .arg("LEFT")
        .arg(1)
        .query(&mut w)
        .unwrap();
    assert_eq!(taken.as_deref(), Some("job-1"));
    let () = redis::pipe()
        .lpush(k.replies("d1"), "{}")
        .ignore()
        .pexpire(k.replies("d1"), 60_000)
        .ignore()
        .lrem(k.jobs_processing("layer2", "w1"), 1, "job-1")
        .ignore()
        .query(&mut w)
        .unwrap();
    let () = w.pset_ex(k.health("w1"), "{}", 1_000).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(k.feed())
        .arg("MAXLEN")
        .arg("~")
        .arg(1000)
        .arg("*")
        .arg("event")
        .arg("worker_health")
        .query(&mut w)
        .unwrap();
    let replies: Vec<String> = admin.lrange(k.replies("d1"), 0, -1).unwrap();
    assert_eq!(replies, ["{}"]);
}

#[test]
fn client_cannot_forge_replies_health_or_jobs() {
    let ctx = TestContext::private();
    apply_rules(&ctx);
    let k = ctx.keys();
    let mut admin = ctx.raw();
    let mut c = connect_as(&ctx, Role::Client);

    denied(c.lpush::<_, _, u64>(k.replies("d1"), "{}"));
    denied(c.set::<_, _, ()>(k.health("w1"), "{}"));
    denied(c.lpush::<_, _, u64>(k.jobs("layer2"), "{}"));
    denied(c.hset::<_, _, _, u64>(k.grain("f1"), "answer", "forged"));
    denied(
        redis::cmd("XADD")
            .arg(k.feed())
            .arg("*")
            .arg("event")
            .arg("x")
            .query::<Value>(&mut c),
    );

    let () = redis::pipe()
        .atomic()
        .set_ex(k.state("q1"), "{}", 60)
        .ignore()
        .lpush(k.queue(), "q1")
        .ignore()
        .query(&mut c)
        .unwrap();
    assert_eq!(admin.llen::<_, u64>(k.queue()).unwrap(), 1);
    let () = admin.lpush(k.done("q1"), "answered").unwrap();
    let signal: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(k.done("q1"))
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(signal.map(|s| s.1).as_deref(), Some("answered"));
    let _: String = redis::cmd("XADD")
        .arg(k.feed())
        .arg("*")
        .arg("event")
        .arg("query_created")
        .query(&mut admin)
        .unwrap();
    let recent: Value = redis::cmd("XREVRANGE")
        .arg(k.feed())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert!(
        matches!(recent, Value::Array(ref v) if v.len() == 1),
        "{recent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_process_answers_with_only_its_own_user() {
    let mut ctx = TestContext::private();
    {
        let s = &mut ctx.settings;
        s.http.enabled = false;
        s.orchestrator.heartbeat_interval_ms = 200;
        s.orchestrator.health_ttl_s = 1;
        // Far above the beat, so that a loaded machine never makes the
        // worker look dead; the worker looks for dead peers' jobs every
        // health_ttl_s.
        s.workers.heartbeat_interval_ms = 200;
        s.workers.health_ttl_s = 5;
        for off in ["layer1", "layer4"] {
            s.layers.get_mut(off).unwrap().enabled = false;
        }
        // Generous: this test is about permissions, not timeouts.
        for l in s.layers.values_mut() {
            l.timeout_ms = 10_000;
        }
    }
    apply_rules(&ctx);
    let k: Keys = ctx.keys();

    // Work left by a dead daemon and a dead worker, so both recoveries run
    // under their users; and a grain, so layer0 answers one query.
    let admin_bb = ctx.blackboard().await;
    admin_bb
        .store_grain(&Grain::new(
            "f1",
            "What is the capital of Testland?",
            "Testopolis",
        ))
        .await
        .unwrap();
    let mut admin = ctx.raw();
    let ghost = r#"{"query_id":"g1","query_text":"ghost question","status":"pending","created_at":"2026-11-21T10:00:00Z","layer_attempts":[],"metadata":{}}"#;
    let () = admin.set(k.state("g1"), ghost).unwrap();
    let () = admin.lpush(k.processing("ghost-daemon"), "g1").unwrap();
    let stale_job = serde_json::json!({
        "job_id": "j0", "query_id": "gx", "layer": "layer2", "text": "late",
        "deadline_ms": 1, "reply_to": k.replies("ghost-daemon"),
    });
    let () = admin
        .lpush(
            k.jobs_processing("layer2", "ghost-worker"),
            stale_job.to_string(),
        )
        .unwrap();

    let shutdown = CancellationToken::new();
    let daemon = kitbash::daemon::Daemon::new(settings_as(&ctx, Role::Daemon));
    let instance = daemon.instance().to_string();
    let daemon = tokio::spawn(daemon.run(shutdown.clone()));
    let worker = Worker::new(
        settings_as(&ctx, Role::Worker),
        EchoBackend::new(0.9),
        WorkerOptions {
            kind: WorkerKind::Echo,
            name: None,
            layer: Some("layer2".into()),
            concurrency: 1,
        },
    )
    .unwrap();
    let worker = tokio::spawn(worker.run(shutdown.clone()));

    // The daemon skips a layer with no live worker: wait until it reports
    // the worker live.
    crate::common::wait_until_daemon_sees(&admin_bb, &instance, "layer2").await;

    let mut client = kitbash::client::Client::connect(&settings_as(&ctx, Role::Client), PATIENCE)
        .await
        .unwrap();
    let state = client.ask("ping", PATIENCE).await.unwrap();
    assert_eq!(state.status, QueryStatus::Answered, "{state:?}");
    let answer = state.answer.expect("an answer");
    assert_eq!(answer.layer, "layer2");
    let grain = client
        .ask("What is the capital of Testland?", PATIENCE)
        .await
        .unwrap();
    assert_eq!(grain.answer.expect("an answer").layer, "layer0");
    // A high-priority query: its lane and the bell are the client's and
    // the daemon's to use.
    client.set_priority(kitbash::store::lanes::Lane::High);
    let high = client
        .ask("What is the capital of Testland?", PATIENCE)
        .await
        .unwrap();
    assert_eq!(high.status, QueryStatus::Answered, "{high:?}");
    assert_eq!(high.lane(), kitbash::store::lanes::Lane::High);

    // The recovered query is finished too.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = admin_bb.get_state("g1").await.unwrap().unwrap();
        if s.status.is_terminal() {
            // Recovered at start-up, possibly before the daemon saw the
            // worker: finished either way.
            assert_eq!(s.recoveries, 1, "{s:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ghost query was never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The dead worker's job is returned by the live one, which looks for
    // dead peers every health_ttl_s.
    let deadline = Instant::now() + PATIENCE;
    while admin
        .exists::<_, bool>(k.jobs_processing("layer2", "ghost-worker"))
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "the ghost worker's job was never returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The client's read commands: timeline, stats, health, grains.
    let client_settings = settings_as(&ctx, Role::Client);
    let conn = Connector::new(&client_settings.redis)
        .unwrap()
        .shared()
        .await
        .unwrap();
    let as_client = Blackboard::from_settings(conn, &client_settings);
    assert!(
        !as_client
            .timeline(&state.query_id, 1000)
            .await
            .unwrap()
            .is_empty()
    );
    as_client.recent_events(10).await.unwrap();
    as_client
        .layer_stats("layer2", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!as_client.list_health().await.unwrap().is_empty());
    assert_eq!(as_client.count_grains().await.unwrap(), 1);
    assert_eq!(as_client.list_grains(10).await.unwrap().len(), 1);
    as_client.get_grain("f1").await.unwrap().unwrap();

    // The daemon's maintenance pass (every 10 s in a running daemon).
    let daemon_settings = settings_as(&ctx, Role::Daemon);
    let conn = Connector::new(&daemon_settings.redis)
        .unwrap()
        .shared()
        .await
        .unwrap();
    let as_daemon = Blackboard::from_settings(conn, &daemon_settings);
    as_daemon.maintain().await.unwrap();

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, daemon)
        .await
        .expect("daemon stops")
        .unwrap()
        .unwrap();
    tokio::time::timeout(PATIENCE, worker)
        .await
        .expect("worker stops")
        .unwrap()
        .unwrap();

    // Nothing any process sent was refused, even where the code only logs it.
    let log = acl_log(&ctx);
    assert!(log.is_empty(), "ACL denials: {log:#?}");
}
