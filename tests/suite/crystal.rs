//! Crystallisation: worker-layer answers becoming grains under each
//! layer's policy, their provenance and absolute expiry, the bound,
//! correction (`kitbash feedback`, `grains forget`) and consensus, against
//! a real Redis, the real daemon and real (or protocol-speaking) workers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kitbash::config::{ConsensusMode, Settings, WorkerKind};
use kitbash::layer0::crystal::crystal_id;
use kitbash::layer0::grains::Grain;
use kitbash::layer0::matching::normalize;
use kitbash::worker::cartridge::CartridgeBackend;
use kitbash::worker::{Worker, WorkerOptions};
use kitbash::{Blackboard, QueryState, QueryStatus};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::common::TestContext;
use crate::daemon::support::{
    Behaviour, RunningDaemon, TestWorker, eventually, fast, layer2_only, wait_done,
};

/// Asks `text` and returns the terminal state.
async fn ask(ctx: &TestContext, bb: &Blackboard, text: &str) -> QueryState {
    let q = QueryState::new(text);
    bb.enqueue(&q).await.unwrap();
    wait_done(ctx, bb, &q.query_id, 60.0).await
}

/// The crystallised grain of `question`, if there is one.
async fn crystal_of(bb: &Blackboard, question: &str) -> Option<Grain> {
    bb.get_grain(&crystal_id(&normalize(question)))
        .await
        .unwrap()
}

/// Waits until `question` has a crystallised grain (the daemon writes it
/// just after the query's outcome).
async fn wait_crystal(bb: &Blackboard, question: &str) -> Grain {
    assert!(
        eventually(30.0, || async { crystal_of(bb, question).await.is_some() }).await,
        "{question:?} never crystallised"
    );
    crystal_of(bb, question).await.unwrap()
}

/// Feed events named `event`, as (query_id, grain, reason).
async fn events(bb: &Blackboard, event: &str) -> Vec<(String, String, String)> {
    bb.recent_events(100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event() == Some(event))
        .map(|e| {
            let f = |k: &str| e.get(k).unwrap_or("").to_string();
            (f("query_id"), f("grain"), f("reason"))
        })
        .collect()
}

/// Stops `daemon` once every query task it ran has ended (a task offers its
/// answer for crystallisation after the outcome, so only then is "nothing
/// crystallised" settled), and starts another that sees layer2.
async fn drained(daemon: RunningDaemon, settings: &Settings, bb: &Blackboard) -> RunningDaemon {
    daemon.stop().await;
    let daemon = RunningDaemon::start(settings);
    daemon.wait_until_sees(bb, "layer2").await;
    daemon
}

/// Layer0 and layer2 (a test worker) only, one answer enough to crystallise.
fn one_answer_policy(ctx: &mut TestContext) -> Settings {
    let s = fast(ctx);
    layer2_only(s);
    s.layers.get_mut("layer2").unwrap().crystallize.min_answers = 1;
    s.clone()
}

/// A test worker on layer2 answering every job with `answer` at 0.95, and
/// a daemon that sees it.
async fn serve_layer2(
    ctx: &TestContext,
    settings: &Settings,
    answer: &str,
) -> (RunningDaemon, TestWorker) {
    let bb = ctx.blackboard().await;
    let worker =
        TestWorker::start(ctx, "layer2", Behaviour::hit(answer, 0.95, Duration::ZERO)).await;
    let daemon = RunningDaemon::start(settings);
    daemon.wait_until_sees(&bb, "layer2").await;
    (daemon, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cartridge_answers_crystallise_with_provenance_and_then_answer_at_layer0() {
    let mut ctx = TestContext::new();
    let settings = {
        let s = fast(&mut ctx);
        layer2_only(s);
        s.clone()
    };
    // The default policy of the cartridge layer: on, 0.9, two answers.
    let policy = &settings.layers["layer2"].crystallize;
    assert!(policy.enabled && policy.min_answers == 2 && policy.min_confidence == 0.9);
    let bb = ctx.blackboard().await;
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/cartridges");
    let worker = Worker::new(
        settings.clone(),
        CartridgeBackend::open(&[data]).unwrap(),
        WorkerOptions {
            kind: WorkerKind::Cartridge,
            name: None,
            layer: None,
            concurrency: 2,
        },
    )
    .unwrap();
    let worker_name = worker.name().to_string();
    let stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(stop.clone()));
    let daemon = RunningDaemon::start(&settings);
    daemon.wait_until_sees(&bb, "layer2").await;

    let q = "What is the capital of Kenya?";
    let first = ask(&ctx, &bb, q).await;
    assert_eq!(first.answer.as_ref().unwrap().layer, "layer2", "{first:?}");
    let second = ask(&ctx, &bb, q).await;
    let answer = second.answer.clone().unwrap();
    assert_eq!(answer.layer, "layer2", "{second:?}");
    assert!(answer.confidence >= 0.9, "{answer:?}");

    // Two answers the same way: a grain, with where it came from.
    let g = wait_crystal(&bb, q).await;
    let c = g.crystallized.clone().expect("provenance");
    assert_eq!(c.layer, "layer2");
    assert_eq!(c.worker.as_deref(), Some(worker_name.as_str()));
    assert_eq!(c.query_id, second.query_id, "made from the second answer");
    assert_eq!(g.answer, answer.text);
    assert_eq!(g.source.as_deref(), Some("countries#ke-capital"));
    assert_eq!(g.confidence, answer.confidence);
    let ttl_ms = c.expires_ms - chrono::Utc::now().timestamp_millis();
    assert!(
        ttl_ms > 0 && ttl_ms <= 604_800_000,
        "expires within the policy's ttl_s: {ttl_ms} ms"
    );
    let made = events(&bb, "grain_crystallized").await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].0, second.query_id);
    assert_eq!(made[0].1, g.fact_id);

    // Asked again, even worded otherwise: layer0, marked crystallised.
    let third = ask(&ctx, &bb, "Kenya's capital?").await;
    let a = third.answer.clone().unwrap();
    assert_eq!(a.layer, "layer0", "{third:?}");
    assert_eq!(a.text, answer.text);
    assert_eq!(a.source, Some(format!("grain:{}", g.fact_id)));
    assert_eq!(a.crystallized.as_ref().unwrap().query_id, second.query_id);
    assert!(
        !third.layer_attempts.iter().any(|t| t.layer == "layer2"),
        "no worker was asked: {third:?}"
    );
    let listed = bb.list_crystallized(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fact_id, g.fact_id);
    assert!(
        eventually(10.0, || async {
            crystal_of(&bb, q).await.is_some_and(|g| g.hits >= 1)
        })
        .await,
        "the layer0 hit is counted on the grain"
    );

    daemon.stop().await;
    stop.cancel();
    worker_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_questions_low_confidence_and_loaded_grains_never_crystallise() {
    let mut ctx = TestContext::new();
    let settings = one_answer_policy(&mut ctx);
    let bb = ctx.blackboard().await;
    // A loaded grain below layer0's threshold: layer0 misses, layer2 answers.
    let mut loaded = Grain::new("kenya-capital", "What is the capital of Kenya?", "Nairobi");
    loaded.confidence = 0.5;
    bb.store_grain(&loaded).await.unwrap();
    let (daemon, sure) = serve_layer2(&ctx, &settings, "Nairobi").await;

    let refused = [
        "What is not the capital of Kenya?",
        "Which city isn't the capital of Kenya?",
        "What is the current capital of Kenya?",
        "What was the capital of Kenya in 1960?",
        "Which is the largest city of Kenya?",
        "Is Nairobi bigger than Mombasa?",
        "What?",
        "What is the capital of Kenya?",
    ];
    let mut ids = Vec::new();
    for q in refused {
        let s = ask(&ctx, &bb, q).await;
        assert_eq!(s.status, QueryStatus::Answered, "{s:?}");
        assert_eq!(s.answer.as_ref().unwrap().layer, "layer2", "{s:?}");
        ids.push(s.query_id);
    }
    // A safe question that does crystallise: the policy lets answers
    // through, and it is the only one.
    let sentinel = "What is the capital of Uganda?";
    ask(&ctx, &bb, sentinel).await;
    wait_crystal(&bb, sentinel).await;
    let daemon = drained(daemon, &settings, &bb).await;
    for q in refused {
        assert!(crystal_of(&bb, q).await.is_none(), "{q:?} crystallised");
    }
    let made = events(&bb, "grain_crystallized").await;
    assert!(
        made.iter().all(|(qid, _, _)| !ids.contains(qid)),
        "{made:?}"
    );
    assert_eq!(bb.count_crystallized().await.unwrap(), 1);
    // The loaded grain is untouched.
    let kept = bb.get_grain("kenya-capital").await.unwrap().unwrap();
    assert_eq!((kept.answer.as_str(), kept.confidence), ("Nairobi", 0.5));
    assert!(kept.crystallized.is_none());
    sure.stop().await;

    // Above the layer's threshold (0.55) but below the policy's (0.9).
    let unsure = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("Kampala", 0.8, Duration::ZERO),
    )
    .await;
    let q = "What is the capital city of Rwanda?";
    for _ in 0..2 {
        let s = ask(&ctx, &bb, q).await;
        assert_eq!(s.answer.as_ref().unwrap().layer, "layer2", "{s:?}");
    }
    let sentinel = "Where is the capital of Tanzania?";
    unsure.stop().await;
    let sure = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("Dodoma", 0.95, Duration::ZERO),
    )
    .await;
    ask(&ctx, &bb, sentinel).await;
    wait_crystal(&bb, sentinel).await;
    let daemon = drained(daemon, &settings, &bb).await;
    assert!(crystal_of(&bb, q).await.is_none());

    // Switched off as a whole: nothing more crystallises.
    daemon.stop().await;
    let mut off = settings.clone();
    off.crystallization.enabled = false;
    let daemon = RunningDaemon::start(&off);
    daemon.wait_until_sees(&bb, "layer2").await;
    let q = "What is the capital of Burundi?";
    ask(&ctx, &bb, q).await;
    ask(&ctx, &bb, q).await;
    daemon.stop().await;
    assert!(crystal_of(&bb, q).await.is_none());
    sure.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_answers_counts_the_same_answer_in_a_row() {
    let mut ctx = TestContext::new();
    let settings = {
        let s = fast(&mut ctx);
        layer2_only(s);
        s.layers.get_mut("layer2").unwrap().crystallize.min_answers = 3;
        s.clone()
    };
    let bb = ctx.blackboard().await;
    let daemon = RunningDaemon::start(&settings);
    let q = "What is the capital of Peru?";
    // Lima, Lima, then another answer: the count starts again.
    let lima =
        TestWorker::start(&ctx, "layer2", Behaviour::hit("Lima", 0.95, Duration::ZERO)).await;
    daemon.wait_until_sees(&bb, "layer2").await;
    ask(&ctx, &bb, q).await;
    ask(&ctx, &bb, q).await;
    lima.stop().await;
    let other = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("Cusco", 0.95, Duration::ZERO),
    )
    .await;
    ask(&ctx, &bb, q).await;
    other.stop().await;
    let lima = TestWorker::start(
        &ctx,
        "layer2",
        Behaviour::hit("Lima.", 0.95, Duration::ZERO),
    )
    .await;
    ask(&ctx, &bb, q).await;
    ask(&ctx, &bb, q).await;
    let seen: std::collections::HashMap<String, String> = {
        let mut conn = ctx.raw();
        redis::Commands::hgetall(&mut conn, ctx.keys().crystal_seen(normalize(q).as_str())).unwrap()
    };
    assert!(
        eventually(10.0, || async {
            let mut c = ctx.raw();
            let n: Option<String> =
                redis::Commands::hget(&mut c, ctx.keys().crystal_seen(normalize(q).as_str()), "n")
                    .unwrap();
            n.as_deref() == Some("2")
        })
        .await,
        "two in a row since the other answer: {seen:?}"
    );
    assert!(crystal_of(&bb, q).await.is_none(), "not yet: 2 of 3");
    let third = ask(&ctx, &bb, q).await;
    let g = wait_crystal(&bb, q).await;
    assert_eq!(g.crystallized.unwrap().query_id, third.query_id);
    assert_eq!(g.answer, "Lima.");
    // The count's key has a TTL (crystallization.window_s) or is gone.
    let ttl: i64 = ctx
        .blackboard()
        .await
        .connection()
        .ttl(ctx.keys().crystal_seen(normalize(q).as_str()))
        .await
        .unwrap();
    assert!(ttl == -2 || ttl > 0, "ttl {ttl}");
    daemon.stop().await;
    lima.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_absolute_and_hits_never_extend_it() {
    let mut ctx = TestContext::new();
    let mut settings = one_answer_policy(&mut ctx);
    settings.layers.get_mut("layer2").unwrap().crystallize.ttl_s = 5;
    let bb = ctx.blackboard().await;
    let (daemon, worker) = serve_layer2(&ctx, &settings, "Quito").await;

    let q = "What is the capital of Ecuador?";
    let made = ask(&ctx, &bb, q).await;
    let g = wait_crystal(&bb, q).await;
    assert_eq!(g.crystallized.as_ref().unwrap().query_id, made.query_id);
    let expires = g.crystallized.as_ref().unwrap().expires_ms;
    let key = ctx.keys().grain(&g.fact_id);
    let mut conn = bb.connection();
    let expire_time = |conn: &mut kitbash::store::connection::RedisConn| {
        let key = key.clone();
        let mut conn = conn.clone();
        async move {
            redis::cmd("PEXPIRETIME")
                .arg(&key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        expire_time(&mut conn).await,
        expires,
        "the hash expires then"
    );
    // Hits until it expires: each answered at layer0, none moving the expiry.
    let mut hits = 0;
    loop {
        let s = ask(&ctx, &bb, q).await;
        let layer = s.answer.as_ref().unwrap().layer.clone();
        if layer != "layer0" {
            assert!(
                chrono::Utc::now().timestamp_millis() >= expires,
                "layer0 missed before the expiry: {s:?}"
            );
            // Answered by the worker again: a new grain, a new expiry.
            let again = wait_crystal(&bb, q).await;
            let c = again.crystallized.unwrap();
            assert_eq!(c.query_id, s.query_id);
            assert!(c.expires_ms > expires);
            break;
        }
        hits += 1;
        let t = expire_time(&mut conn).await;
        assert!(
            t == expires || t == -2,
            "a hit moved the expiry: {t} vs {expires}"
        );
        assert!(
            chrono::Utc::now().timestamp_millis() < expires + 60_000,
            "never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hits > 0, "it answered at layer0 before it expired");

    // Expired and not asked again: the sweep (the daemons' maintenance
    // pass, or this call) removes every trace of it, with an event.
    let q2 = "What is the capital of Chile?";
    ask(&ctx, &bb, q2).await;
    let g2 = wait_crystal(&bb, q2).await;
    let exp2 = g2.crystallized.as_ref().unwrap().expires_ms;
    assert!(
        eventually(30.0, || async {
            chrono::Utc::now().timestamp_millis() > exp2 + 10
        })
        .await
    );
    assert!(
        bb.lookup_grain(q2).await.unwrap().is_none(),
        "an expired grain is a miss"
    );
    bb.sweep_crystals(100).await.unwrap();
    assert!(bb.get_grain(&g2.fact_id).await.unwrap().is_none());
    let mk = normalize(q2);
    let index: Option<String> = bb
        .connection()
        .hget(ctx.keys().grain_index("questions"), mk.as_str())
        .await
        .unwrap();
    assert_eq!(index, None, "the index entry goes with the sweep");
    let member: Option<f64> = bb
        .connection()
        .zscore(ctx.keys().crystallized(), mk.as_str())
        .await
        .unwrap();
    assert_eq!(member, None);
    let ids: bool = bb
        .connection()
        .sismember(ctx.keys().grain_ids(), &g2.fact_id)
        .await
        .unwrap();
    assert!(!ids);
    let forgotten = events(&bb, "grain_forgotten").await;
    assert!(
        forgotten
            .iter()
            .any(|(_, id, why)| *id == g2.fact_id && why == "expired"),
        "{forgotten:?}"
    );
    daemon.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_evicts_the_grain_expiring_soonest() {
    let mut ctx = TestContext::new();
    let mut settings = one_answer_policy(&mut ctx);
    settings.crystallization.max_grains = 3;
    let bb = ctx.blackboard().await;
    let (daemon, worker) = serve_layer2(&ctx, &settings, "Somewhere").await;
    let questions = [
        "What is the capital of Austria?",
        "What is the capital of Belgium?",
        "What is the capital of Croatia?",
        "What is the capital of Denmark?",
        "What is the capital of Estonia?",
    ];
    let mut ids = Vec::new();
    for q in questions {
        ask(&ctx, &bb, q).await;
        ids.push(wait_crystal(&bb, q).await.fact_id);
        assert!(bb.count_crystallized().await.unwrap() <= 3);
    }
    assert_eq!(bb.count_crystallized().await.unwrap(), 3);
    for (q, id) in questions.iter().zip(&ids).take(2) {
        assert!(crystal_of(&bb, q).await.is_none(), "{q:?} evicted");
        assert!(bb.lookup_grain(q).await.unwrap().is_none());
        let forgotten = events(&bb, "grain_forgotten").await;
        assert!(
            forgotten
                .iter()
                .any(|(_, g, why)| g == id && why.contains("max_grains")),
            "{forgotten:?}"
        );
    }
    for q in &questions[2..] {
        assert!(crystal_of(&bb, q).await.is_some(), "{q:?} kept");
    }
    assert_eq!(
        bb.count_grains().await.unwrap(),
        3,
        "the id set holds the bound too"
    );
    daemon.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_a_grain_replaces_a_crystallised_one() {
    let mut ctx = TestContext::new();
    let settings = one_answer_policy(&mut ctx);
    let bb = ctx.blackboard().await;
    let (daemon, worker) = serve_layer2(&ctx, &settings, "Bern").await;
    let q = "What is the capital of Switzerland?";
    ask(&ctx, &bb, q).await;
    let crystal = wait_crystal(&bb, q).await;
    let stored = bb
        .store_grain(&Grain::new(
            "ch-capital",
            "capital of Switzerland",
            "Bern (federal city)",
        ))
        .await
        .unwrap();
    assert_eq!(
        stored.displaced, None,
        "the crystallised grain went, not displaced"
    );
    assert!(bb.get_grain(&crystal.fact_id).await.unwrap().is_none());
    assert_eq!(bb.count_crystallized().await.unwrap(), 0);
    let s = ask(&ctx, &bb, q).await;
    let a = s.answer.unwrap();
    assert_eq!(
        (a.layer.as_str(), a.text.as_str()),
        ("layer0", "Bern (federal city)")
    );
    assert!(a.crystallized.is_none());
    // A loaded grain cannot take a crystallised grain's id.
    let err = bb
        .store_grain(&Grain::new(crystal.fact_id.clone(), "x y", "z"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    daemon.stop().await;
    worker.stop().await;
}

fn feedback(ctx: &TestContext, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .arg("feedback")
        .args(args)
        .env_remove("KITBASH_CONFIG")
        .env("KITBASH_REDIS__URL", &ctx.redis.url)
        .env("KITBASH_REDIS__KEY_PREFIX", &ctx.prefix)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_wrong_removes_the_grain_and_keeps_the_question_from_crystallising() {
    let mut ctx = TestContext::new();
    let settings = one_answer_policy(&mut ctx);
    let bb = ctx.blackboard().await;
    let (daemon, worker) = serve_layer2(&ctx, &settings, "Sydney").await;

    let q = "What is the capital of Australia?";
    ask(&ctx, &bb, q).await;
    let g = wait_crystal(&bb, q).await;
    let at0 = ask(&ctx, &bb, q).await;
    assert_eq!(at0.answer.as_ref().unwrap().layer, "layer0");

    let (code, out) = feedback(&ctx, &[&at0.query_id, "wrong", "--note", "it is Canberra"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("grain {} removed", g.fact_id)),
        "{out}"
    );
    assert!(crystal_of(&bb, q).await.is_none());
    let marked = events(&bb, "answer_marked_wrong").await;
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0].0, at0.query_id);
    assert_eq!(marked[0].1, g.fact_id);
    assert!(marked[0].2.contains("it is Canberra"), "{marked:?}");
    assert!(
        events(&bb, "grain_forgotten")
            .await
            .iter()
            .any(|(_, id, why)| *id == g.fact_id && why.contains("marked wrong"))
    );
    let record: Vec<String> = bb
        .connection()
        .lrange(ctx.keys().feedback(), 0, -1)
        .await
        .unwrap();
    assert_eq!(record.len(), 1);
    assert!(record[0].contains(&at0.query_id));

    // Blocked: answered by layer2 again, but no grain comes back.
    for _ in 0..2 {
        let s = ask(&ctx, &bb, q).await;
        assert_eq!(s.answer.as_ref().unwrap().layer, "layer2");
    }
    let sentinel = "What is the capital of Fiji?";
    ask(&ctx, &bb, sentinel).await;
    wait_crystal(&bb, sentinel).await;
    let daemon = drained(daemon, &settings, &bb).await;
    assert!(
        crystal_of(&bb, q).await.is_none(),
        "blocked for crystallization.block_s"
    );
    let block_ttl: i64 = bb
        .connection()
        .ttl(ctx.keys().crystal_blocked(normalize(q).as_str()))
        .await
        .unwrap();
    assert!(block_ttl > 0 && block_ttl <= settings.crystallization.block_s as i64);

    // A loaded grain: recorded, kept; removed only with --force.
    bb.store_grain(&Grain::new(
        "nz-capital",
        "What is the capital of New Zealand?",
        "Auckland",
    ))
    .await
    .unwrap();
    let s = ask(&ctx, &bb, "What is the capital of New Zealand?").await;
    assert_eq!(s.answer.as_ref().unwrap().layer, "layer0");
    let (code, out) = feedback(&ctx, &[&s.query_id, "wrong"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("kept"), "{out}");
    assert!(bb.get_grain("nz-capital").await.unwrap().is_some());
    let (code, out) = feedback(&ctx, &[&s.query_id, "wrong", "--force"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(bb.get_grain("nz-capital").await.unwrap().is_none(), "{out}");
    assert_eq!(events(&bb, "answer_marked_wrong").await.len(), 3);

    // Unknown ids are a clear error.
    let (code, out) = feedback(&ctx, &["no-such-query", "wrong"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no query no-such-query"), "{out}");
    daemon.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grains_forget_and_list_crystallized_from_the_command_line() {
    let mut ctx = TestContext::new();
    let settings = one_answer_policy(&mut ctx);
    let bb = ctx.blackboard().await;
    let (daemon, worker) = serve_layer2(&ctx, &settings, "Oslo").await;
    let q = "What is the capital of Norway?";
    ask(&ctx, &bb, q).await;
    let g = wait_crystal(&bb, q).await;
    bb.store_grain(&Grain::new(
        "loaded-1",
        "What is the capital of Sweden?",
        "Stockholm",
    ))
    .await
    .unwrap();
    let cli = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kitbash"))
            .arg("grains")
            .args(args)
            .env_remove("KITBASH_CONFIG")
            .env("KITBASH_REDIS__URL", &ctx.redis.url)
            .env("KITBASH_REDIS__KEY_PREFIX", &ctx.prefix)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let (code, out) = cli(&["list", "--crystallized"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&g.fact_id) && out.contains("crystallised by layer2"),
        "{out}"
    );
    assert!(!out.contains("loaded-1"), "{out}");
    let (_, out) = cli(&["get", &g.fact_id]);
    assert!(
        out.contains("crystallised from an answer of layer2"),
        "{out}"
    );
    assert!(out.contains("hits do not extend it"), "{out}");
    let (code, out) = cli(&["forget", &g.fact_id]);
    assert_eq!(code, Some(0), "{out}");
    assert!(crystal_of(&bb, q).await.is_none());
    assert_eq!(bb.count_crystallized().await.unwrap(), 0);
    assert!(
        events(&bb, "grain_forgotten")
            .await
            .iter()
            .any(|(_, id, _)| *id == g.fact_id)
    );
    daemon.stop().await;
    worker.stop().await;
}

/// Layer1 and layer4 served by test workers, layer2 off.
fn consensus_settings(ctx: &mut TestContext, mode: ConsensusMode) -> Settings {
    let s = fast(ctx);
    s.layers.get_mut("layer2").unwrap().enabled = false;
    let l1 = s.layers.get_mut("layer1").unwrap();
    l1.consensus.with = Some("layer4".into());
    l1.consensus.mode = mode;
    l1.crystallize.min_answers = 1;
    s.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_answers_only_when_both_layers_agree() {
    let mut ctx = TestContext::new();
    let settings = consensus_settings(&mut ctx, ConsensusMode::Answer);
    let bb = ctx.blackboard().await;
    let l1 = TestWorker::start(
        &ctx,
        "layer1",
        Behaviour::hit("Paris", 0.95, Duration::ZERO),
    )
    .await;
    let l4 = TestWorker::start(
        &ctx,
        "layer4",
        Behaviour::hit("the Paris.", 0.9, Duration::from_millis(50)),
    )
    .await;
    let daemon = RunningDaemon::start(&settings);
    daemon.wait_until_sees(&bb, "layer1").await;
    daemon.wait_until_sees(&bb, "layer4").await;

    // Agreement ("Paris" and "the Paris." share a normal form): layer1
    // answers, and, agreed, crystallises.
    let q = "What is the capital of France?";
    let s = ask(&ctx, &bb, q).await;
    let a = s.answer.clone().unwrap();
    assert_eq!(
        (a.layer.as_str(), a.text.as_str()),
        ("layer1", "Paris"),
        "{s:?}"
    );
    let attempt = s
        .layer_attempts
        .iter()
        .find(|t| t.layer == "layer1")
        .unwrap();
    assert!(
        attempt
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("layer4 agrees"),
        "{s:?}"
    );
    assert_eq!(
        l4.jobs_seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "asked together"
    );
    let g = wait_crystal(&bb, q).await;
    assert_eq!(g.crystallized.unwrap().layer, "layer1");
    l4.stop().await;

    // Disagreement: layer1's hit becomes a miss, the cascade goes on to
    // layer4 (its reply reused, not asked twice), and the feed has both.
    let l4 = TestWorker::start(&ctx, "layer4", Behaviour::hit("Lyon", 0.9, Duration::ZERO)).await;
    daemon.wait_until_sees(&bb, "layer4").await;
    let q = "Which river flows through Paris?";
    let s = ask(&ctx, &bb, q).await;
    let a = s.answer.clone().unwrap();
    assert_eq!(
        (a.layer.as_str(), a.text.as_str()),
        ("layer4", "Lyon"),
        "{s:?}"
    );
    let attempt = s
        .layer_attempts
        .iter()
        .find(|t| t.layer == "layer1")
        .unwrap();
    assert_eq!(attempt.outcome, kitbash::state::Outcome::Miss, "{s:?}");
    assert_eq!(
        l4.jobs_seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "asked once"
    );
    let disagreed = events(&bb, "layers_disagreed").await;
    assert_eq!(disagreed.len(), 1, "{disagreed:?}");
    assert_eq!(disagreed[0].0, s.query_id);
    assert!(
        disagreed[0].2.contains("\"Paris\"") && disagreed[0].2.contains("\"Lyon\""),
        "both answers: {disagreed:?}"
    );
    // layer4 has no partner: the model layers' default policy needs one.
    let sentinel = "What is the capital of Italy?";
    let l1_hits_before = l1.jobs_seen.load(std::sync::atomic::Ordering::SeqCst);
    l4.stop().await;
    let l4 = TestWorker::start(&ctx, "layer4", Behaviour::hit("Paris", 0.9, Duration::ZERO)).await;
    daemon.wait_until_sees(&bb, "layer4").await;
    ask(&ctx, &bb, sentinel).await;
    assert!(l1.jobs_seen.load(std::sync::atomic::Ordering::SeqCst) > l1_hits_before);
    wait_crystal(&bb, sentinel).await;
    daemon.stop().await;
    assert!(
        crystal_of(&bb, q).await.is_none(),
        "layer4's answer never crystallises"
    );
    l1.stop().await;
    l4.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_for_crystallisation_never_delays_the_answer_and_crystallises_only_agreement() {
    let mut ctx = TestContext::new();
    let settings = consensus_settings(&mut ctx, ConsensusMode::Crystallize);
    let bb = ctx.blackboard().await;
    let l1 = TestWorker::start(
        &ctx,
        "layer1",
        Behaviour::hit("Madrid", 0.95, Duration::ZERO),
    )
    .await;
    // The partner replies only once the query has its outcome: the answer
    // cannot have waited for it, however slow the machine.
    let l4 = TestWorker::start(
        &ctx,
        "layer4",
        Behaviour::AfterOutcome {
            answer: "Barcelona".into(),
        },
    )
    .await;
    let daemon = RunningDaemon::start(&settings);
    daemon.wait_until_sees(&bb, "layer1").await;
    daemon.wait_until_sees(&bb, "layer4").await;
    let q = "What is the capital of Spain?";
    let s = ask(&ctx, &bb, q).await;
    assert_eq!(s.answer.as_ref().unwrap().layer, "layer1", "{s:?}");
    assert!(
        eventually(30.0, || async {
            events(&bb, "layers_disagreed")
                .await
                .iter()
                .any(|(qid, _, why)| *qid == s.query_id && why.contains("\"Barcelona\""))
        })
        .await,
        "the disagreement is recorded once the partner replies"
    );
    l4.stop().await;
    let l4 = TestWorker::start(
        &ctx,
        "layer4",
        Behaviour::AfterOutcome {
            answer: "MADRID".into(),
        },
    )
    .await;
    daemon.wait_until_sees(&bb, "layer4").await;
    let q2 = "What is the capital city of Spain?";
    let s2 = ask(&ctx, &bb, q2).await;
    assert_eq!(s2.answer.as_ref().unwrap().layer, "layer1", "{s2:?}");
    let g = wait_crystal(&bb, q2).await;
    assert_eq!(g.crystallized.unwrap().query_id, s2.query_id);
    assert!(
        crystal_of(&bb, q).await.is_none(),
        "the disagreed answer did not crystallise"
    );
    daemon.stop().await;
    l1.stop().await;
    l4.stop().await;
}

#[test]
fn a_bad_crystallisation_policy_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.yaml");
    std::fs::write(
        &file,
        "layers:\n  layer2:\n    crystallize:\n      min_confidence: 1.5\n  layer1:\n    consensus:\n      with: layer9\ncrystallization:\n  max_grains: 0\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(["config"])
        .env("KITBASH_CONFIG", &file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    for key in [
        "layers.layer2.crystallize.min_confidence",
        "layers.layer1.consensus.with",
        "crystallization.max_grains",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
}

/// `kitbash <args>` as a process with `env`; (exit code, stdout + stderr).
fn kitbash(args: &[&str], env: &[(String, String)]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(args)
        .env_remove("KITBASH_CONFIG")
        .env_remove("REDIS_URL")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_learn_an_answer_and_unlearn_it_on_feedback() {
    use crate::faults::support::{Proc, base_env, wait_reporting, with_instance};
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut env = base_env(&ctx, &ctx.redis.url);
    for (k, v) in [
        (
            "KITBASH_WORKERS__CARTRIDGE__PATHS",
            format!("[{}]", repo.join("config/cartridges").display()),
        ),
        (
            "KITBASH_KNOWLEDGE__ALIASES",
            format!("[{}]", repo.join("config/aliases.jsonl").display()),
        ),
        (
            "KITBASH_KNOWLEDGE__SYNONYMS",
            format!("[{}]", repo.join("config/synonyms.jsonl").display()),
        ),
        ("KITBASH_LAYERS__LAYER1__ENABLED", "false".into()),
        ("KITBASH_LAYERS__LAYER4__ENABLED", "false".into()),
        ("KITBASH_WORKERS__HEALTH_TTL_S", "10".into()),
        ("KITBASH_LAYERS__LAYER2__TIMEOUT_MS", "10000".into()),
    ] {
        env.push((k.to_string(), v));
    }
    let mut daemon = Proc::serve("daemon", &with_instance(&env, "d1"));
    let mut worker = Proc::start("cartridge", &["worker", "cartridge", "--name", "c1"], &env);
    wait_reporting(&ctx, &["d1", "c1"]).await;

    let q = "What is the population of Kenya?";
    let ask = |env: &[(String, String)]| {
        let (code, out, err) = kitbash(&["query", "--json", "--timeout", "60", q], env);
        assert_eq!(code, Some(0), "{out}{err}");
        serde_json::from_str::<QueryState>(out.trim()).unwrap()
    };
    for _ in 0..2 {
        let s = ask(&env);
        assert_eq!(s.answer.unwrap().layer, "layer2");
    }
    let g = wait_crystal(&bb, q).await;
    let third = ask(&env);
    let a = third.answer.clone().unwrap();
    assert_eq!(a.layer, "layer0", "{third:?}");
    assert_eq!(a.crystallized.unwrap().layer, "layer2");
    let (_, listed, _) = kitbash(&["grains", "list", "--crystallized"], &env);
    assert!(listed.contains(&g.fact_id), "{listed}");

    let (code, out, err) = kitbash(&["feedback", &third.query_id, "wrong"], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    let (_, listed, _) = kitbash(&["grains", "list", "--crystallized"], &env);
    assert!(!listed.contains(&g.fact_id), "{listed}");
    let fourth = ask(&env);
    assert_eq!(fourth.answer.unwrap().layer, "layer2", "unlearnt");

    assert_eq!(daemon.terminate(), Some(0), "{}", daemon.log());
    assert_eq!(worker.terminate(), Some(0), "{}", worker.log());
}
