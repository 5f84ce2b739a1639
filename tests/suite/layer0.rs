//! Layer0 grain lookup against a real redis-server: the labelled evaluation
//! set (precision and recall per class), index consistency, bad data,
//! grains files and the `kitbash grains` command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kitbash::layer0::grains::{GrainMatch, IfExists, StoreStatus};
use kitbash::layer0::grains_file::{self, Format};
use kitbash::layer0::matching::normalize;
use kitbash::{BlackboardError, Grain};
use redis::Commands;

use crate::common::TestContext;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn min_confidence(ctx: &TestContext) -> f64 {
    ctx.settings.layers["layer0"].min_confidence
}

/// The question index, as Redis holds it.
fn index(ctx: &TestContext) -> BTreeMap<String, String> {
    ctx.raw()
        .hgetall(ctx.keys().grain_index("questions"))
        .unwrap()
}

fn entry_owner(raw: &str) -> String {
    serde_json::from_str::<GrainMatch>(raw).unwrap().fact_id
}

// ----- the labelled evaluation set ------------------------------------------

#[derive(serde::Deserialize)]
struct Labelled {
    query: String,
    class: String,
    expected: Option<String>,
}

#[derive(Default)]
struct Tally {
    queries: usize,
    answerable: usize,
    hits: usize,
    correct: usize,
}

impl Tally {
    fn precision(&self) -> f64 {
        if self.hits == 0 {
            1.0
        } else {
            self.correct as f64 / self.hits as f64
        }
    }

    fn recall(&self) -> Option<f64> {
        (self.answerable > 0).then(|| self.correct as f64 / self.answerable as f64)
    }
}

#[tokio::test]
async fn evaluation_set_has_no_false_hits() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let parsed = grains_file::read(&data("layer0_grains.jsonl")).unwrap();
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert!(parsed.grains.len() >= 150);
    let grains: Vec<Grain> = parsed.grains.into_iter().map(|p| p.grain).collect();
    for stored in bb.store_grains(&grains, IfExists::Replace).await.unwrap() {
        let stored = stored.unwrap();
        assert_eq!(stored.status, StoreStatus::Stored);
        assert_eq!(stored.displaced, None, "{}", stored.fact_id);
    }

    let text = std::fs::read_to_string(data("layer0_queries.jsonl")).unwrap();
    let labelled: Vec<Labelled> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(labelled.len() >= 300);
    let ids: std::collections::HashSet<&str> = grains.iter().map(|g| g.fact_id.as_str()).collect();

    let threshold = min_confidence(&ctx);
    let classes = ["exact", "paraphrase", "near_miss", "unanswerable"];
    let mut tallies: BTreeMap<&str, Tally> =
        classes.iter().map(|c| (*c, Tally::default())).collect();
    let mut false_hits = Vec::new();
    let mut misses = Vec::new();
    for q in &labelled {
        if let Some(id) = &q.expected {
            assert!(ids.contains(id.as_str()), "label names unknown fact {id}");
        }
        let t = tallies
            .get_mut(q.class.as_str())
            .unwrap_or_else(|| panic!("unknown class {}", q.class));
        t.queries += 1;
        t.answerable += usize::from(q.expected.is_some());
        let found = bb.lookup_grain(&q.query).await.unwrap();
        let hit = found.filter(|m| m.confidence >= threshold);
        match (&hit, &q.expected) {
            (Some(m), Some(id)) if &m.fact_id == id => {
                t.hits += 1;
                t.correct += 1;
            }
            (Some(m), _) => {
                t.hits += 1;
                false_hits.push(format!(
                    "{:?} ({}) answered by {} (expected {:?})",
                    q.query, q.class, m.fact_id, q.expected
                ));
            }
            (None, Some(id)) => misses.push(format!(
                "{:?} ({}) missed {id}; match key {:?}",
                q.query,
                q.class,
                normalize(&q.query).as_str()
            )),
            (None, None) => {}
        }
    }

    let mut all = Tally::default();
    println!(
        "\nlayer0 evaluation at min_confidence {threshold}: {} grains, {} queries",
        grains.len(),
        labelled.len()
    );
    println!(
        "{:<13} {:>7} {:>10} {:>5} {:>7} {:>9} {:>7}",
        "class", "queries", "answerable", "hits", "correct", "precision", "recall"
    );
    for class in classes {
        let t = &tallies[class];
        all.queries += t.queries;
        all.answerable += t.answerable;
        all.hits += t.hits;
        all.correct += t.correct;
        print_row(class, t);
    }
    print_row("all", &all);
    for m in &misses {
        println!("miss: {m}");
    }
    for f in &false_hits {
        println!("FALSE HIT: {f}");
    }

    assert!(false_hits.is_empty(), "false hits: {false_hits:#?}");
    assert_eq!(tallies["near_miss"].precision(), 1.0);
    assert_eq!(tallies["unanswerable"].precision(), 1.0);
    assert!(all.precision() >= 0.99);
    assert_eq!(
        tallies["exact"].recall(),
        Some(1.0),
        "exact misses: {misses:#?}"
    );
    assert!(tallies["near_miss"].queries > 0 && tallies["unanswerable"].queries > 0);
}

fn print_row(class: &str, t: &Tally) {
    println!(
        "{:<13} {:>7} {:>10} {:>5} {:>7} {:>9.3} {:>7}",
        class,
        t.queries,
        t.answerable,
        t.hits,
        t.correct,
        t.precision(),
        t.recall()
            .map(|r| format!("{r:.3}"))
            .unwrap_or_else(|| "-".into())
    );
}

// ----- the issue's examples ----------------------------------------------------

#[tokio::test]
async fn kenya_grain_does_not_answer_uganda_or_currency() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let mut g = Grain::new("geo-ke", "What is the capital of Kenya?", "Nairobi");
    g.confidence = 0.97;
    g.source = Some("atlas".into());
    bb.store_grain(&g).await.unwrap();

    for q in [
        "What is the capital of Uganda?",
        "What is the currency of Kenya?",
        "What was the capital of Kenya?",
        "What is the capital?",
    ] {
        assert_eq!(bb.lookup_grain(q).await.unwrap(), None, "{q}");
    }
    for q in [
        "What is the capital of Kenya?",
        "what's kenya's capital",
        "  CAPITAL OF KENYA ?! ",
    ] {
        let m = bb.lookup_grain(q).await.unwrap().expect(q);
        assert_eq!(
            m,
            GrainMatch {
                fact_id: "geo-ke".into(),
                question: "What is the capital of Kenya?".into(),
                answer: "Nairobi".into(),
                confidence: 0.97,
                source: Some("atlas".into()),
                crystallized: None,
                partition: 0,
            }
        );
        assert!(m.confidence >= min_confidence(&ctx));
    }
    // A question of function words only never reaches Redis and never hits.
    assert_eq!(bb.lookup_grain("What is the?").await.unwrap(), None);
}

#[tokio::test]
async fn a_lookup_is_one_hget() {
    let ctx = TestContext::new();
    if !ctx.redis.is_private() {
        return; // commandstats are shared with other tests
    }
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("g", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut ctx.raw())
        .unwrap();
    bb.lookup_grain("Kenya's capital?").await.unwrap().unwrap();
    bb.lookup_grain("Uganda's capital?").await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut ctx.raw())
        .unwrap();
    let commands: Vec<&str> = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter(|l| !l.starts_with("cmdstat_info") && !l.starts_with("cmdstat_config"))
        .collect();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert!(
        commands[0].starts_with("cmdstat_hget:calls=2,"),
        "{commands:?}"
    );
}

// ----- index consistency -------------------------------------------------------

#[tokio::test]
async fn store_and_delete_keep_the_index_consistent() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let kenya = normalize("What is the capital of Kenya?").into_string();
    let uganda = normalize("What is the capital of Uganda?").into_string();

    let mut g = Grain::new("g1", "What is the capital of Kenya?", "Nairobi");
    let stored = bb.store_grain(&g).await.unwrap();
    assert_eq!(stored.match_key.as_str(), kenya);
    assert_eq!(stored.status, StoreStatus::Stored);
    assert_eq!(stored.displaced, None);
    let idx = index(&ctx);
    assert_eq!(idx.keys().collect::<Vec<_>>(), vec![&kenya]);
    assert_eq!(entry_owner(&idx[&kenya]), "g1");
    let field: String = ctx.raw().hget(ctx.keys().grain("g1"), "match_key").unwrap();
    assert_eq!(field, kenya);

    // Storing the same grain again changes nothing in the index.
    assert_eq!(bb.store_grain(&g).await.unwrap().displaced, None);
    assert_eq!(index(&ctx).len(), 1);

    // A new confidence reaches the index copy.
    g.confidence = 0.5;
    bb.store_grain(&g).await.unwrap();
    let m = bb.lookup_grain("Kenya capital").await.unwrap().unwrap();
    assert_eq!(m.confidence, 0.5);

    // A changed question moves the entry.
    g.question = "What is the capital of Uganda?".into();
    g.answer = "Kampala".into();
    bb.store_grain(&g).await.unwrap();
    let idx = index(&ctx);
    assert_eq!(idx.keys().collect::<Vec<_>>(), vec![&uganda]);
    assert_eq!(
        bb.lookup_grain("What is the capital of Kenya?")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        bb.lookup_grain("Uganda's capital")
            .await
            .unwrap()
            .unwrap()
            .answer,
        "Kampala"
    );

    // Delete leaves no dangling entry.
    assert!(bb.delete_grain("g1").await.unwrap());
    assert!(index(&ctx).is_empty());
    assert!(ctx.keys_left().is_empty(), "{:?}", ctx.keys_left());
    assert!(!bb.delete_grain("g1").await.unwrap());
}

#[tokio::test]
async fn colliding_questions_report_the_displaced_grain() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let a = Grain::new("a", "What is the capital of Kenya?", "Nairobi");
    let b = Grain::new("b", "Kenya's capital?", "Nairobi (b)");
    bb.store_grain(&a).await.unwrap();
    let stored = bb.store_grain(&b).await.unwrap();
    assert_eq!(stored.displaced.as_deref(), Some("a"));
    assert_eq!(
        bb.lookup_grain("capital of kenya")
            .await
            .unwrap()
            .unwrap()
            .fact_id,
        "b"
    );
    // The loser moving to another question leaves the winner's entry alone.
    let mut a2 = a.clone();
    a2.question = "What is the capital of Peru?".into();
    assert_eq!(bb.store_grain(&a2).await.unwrap().displaced, None);
    let idx = index(&ctx);
    assert_eq!(idx.len(), 2, "{idx:?}");
    assert_eq!(entry_owner(&idx["capital kenya"]), "b");
    assert_eq!(entry_owner(&idx["capital peru"]), "a");

    // Deleting a loser leaves the winner's entry alone too.
    bb.store_grain(&Grain::new("c", "capital of Peru", "Lima"))
        .await
        .unwrap();
    assert!(bb.delete_grain("a").await.unwrap());
    assert_eq!(entry_owner(&index(&ctx)["capital peru"]), "c");
    assert!(bb.delete_grain("b").await.unwrap());
    assert!(bb.delete_grain("c").await.unwrap());
    assert!(index(&ctx).is_empty());
    assert!(ctx.keys_left().is_empty(), "{:?}", ctx.keys_left());
}

#[tokio::test]
async fn keep_leaves_existing_grains_alone() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("k", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let changed = Grain::new("k", "What is the capital of Kenya?", "Mombasa");
    let fresh = Grain::new("p", "What is the capital of Peru?", "Lima");
    let results = bb
        .store_grains(&[changed.clone(), fresh], IfExists::Keep)
        .await
        .unwrap();
    let statuses: Vec<_> = results.into_iter().map(|r| r.unwrap().status).collect();
    assert_eq!(statuses, vec![StoreStatus::Kept, StoreStatus::Stored]);
    assert_eq!(bb.get_grain("k").await.unwrap().unwrap().answer, "Nairobi");
    let results = bb
        .store_grains(&[changed], IfExists::Replace)
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().status, StoreStatus::Stored);
    assert_eq!(
        bb.lookup_grain("capital of Kenya")
            .await
            .unwrap()
            .unwrap()
            .answer,
        "Mombasa"
    );
    assert_eq!(bb.count_grains().await.unwrap(), 2);
}

#[tokio::test]
async fn invalid_grains_are_refused_and_write_nothing() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let mut bad_conf = Grain::new("c", "What is the capital of Kenya?", "Nairobi");
    bad_conf.confidence = 1.5;
    let reserved = Grain::new("index:all", "What is it?", "x");
    let empty = Grain::new("", "What is it?", "x");
    for g in [&bad_conf, &reserved, &empty] {
        let err = bb.store_grain(g).await.unwrap_err();
        assert!(
            matches!(err, BlackboardError::MalformedGrain { .. }),
            "{err}"
        );
    }
    let results = bb
        .store_grains(
            &[
                bad_conf,
                Grain::new("ok", "What is the capital of Peru?", "Lima"),
            ],
            IfExists::Replace,
        )
        .await
        .unwrap();
    assert!(results[0].is_err() && results[1].is_ok());
    assert_eq!(bb.count_grains().await.unwrap(), 1);
    assert_eq!(index(&ctx).len(), 1);
}

#[tokio::test]
async fn hits_are_counted_in_the_callers_pipeline() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("h", "What is the capital of Kenya?", "Nairobi"))
        .await
        .unwrap();
    let m = bb.lookup_grain("Kenya's capital").await.unwrap().unwrap();
    // Two queries' tallies, merged as a finishing batch merges them.
    let mut one = kitbash::observe::metrics::Tally::default();
    bb.add_grain_hit_to(&mut one, &m);
    let mut two = kitbash::observe::metrics::Tally::default();
    bb.add_grain_hit_to(&mut two, &m);
    bb.add_grain_hit_to(&mut two, &m);
    let mut pipe = redis::pipe();
    bb.add_tally_to(
        &mut pipe,
        &kitbash::observe::metrics::Tally::merged([&one, &two]),
    );
    let () = pipe.query_async(&mut bb.connection()).await.unwrap();
    assert_eq!(bb.get_grain("h").await.unwrap().unwrap().hits, 3);
}

// ----- bad data ------------------------------------------------------------------

#[tokio::test]
async fn a_malformed_index_entry_is_a_typed_error() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let index_key = ctx.keys().grain_index("questions");
    let key = normalize("What is the capital of Kenya?").into_string();
    for raw in [
        "{oops",
        "[]",
        r#"{"fact_id":"x","question":"q"}"#,
        r#"{"fact_id":"x","question":"q","answer":"a","confidence":7}"#,
        r#"{"fact_id":"","question":"q","answer":"a","confidence":1}"#,
    ] {
        let _: () = ctx.raw().hset(&index_key, &key, raw).unwrap();
        let err = bb
            .lookup_grain("What is the capital of Kenya?")
            .await
            .unwrap_err();
        match &err {
            BlackboardError::MalformedGrain { key: k, reason } => {
                assert_eq!(k, &index_key);
                assert!(reason.contains("capital kenya"), "{reason}");
            }
            other => panic!("{raw}: expected MalformedGrain, got {other:?}"),
        }
    }
    // Other entries still answer.
    bb.store_grain(&Grain::new("p", "What is the capital of Peru?", "Lima"))
        .await
        .unwrap();
    assert!(bb.lookup_grain("capital of peru").await.unwrap().is_some());

    // An index of the wrong type names the key.
    let _: () = ctx.raw().del(&index_key).unwrap();
    let _: () = ctx.raw().set(&index_key, "not a hash").unwrap();
    let err = bb.lookup_grain("capital of peru").await.unwrap_err();
    assert!(
        matches!(&err, BlackboardError::WrongType { key, .. } if key == &index_key),
        "{err:?}"
    );
    let err = bb
        .store_grain(&Grain::new("q", "What is it?", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BlackboardError::WrongType { key, .. } if key == &index_key),
        "{err:?}"
    );
    assert!(
        bb.get_grain("q").await.unwrap().is_none(),
        "nothing written"
    );
    let err = bb.delete_grain("p").await.unwrap_err();
    assert!(matches!(err, BlackboardError::WrongType { .. }), "{err:?}");
    assert!(
        bb.get_grain("p").await.unwrap().is_some(),
        "nothing deleted"
    );
}

// ----- grains files -----------------------------------------------------------------

#[tokio::test]
async fn a_bad_jsonl_line_is_reported_with_its_number_and_good_lines_load() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let parsed = grains_file::read(&data("grains_with_errors.jsonl")).unwrap();
    let good: Vec<_> = parsed
        .grains
        .iter()
        .map(|g| (g.location.line.unwrap(), g.grain.fact_id.as_str()))
        .collect();
    assert_eq!(good, vec![(1, "cli-ke"), (2, "cli-pe"), (5, "cli-jp")]);
    let bad: Vec<_> = parsed
        .errors
        .iter()
        .map(|e| e.location.line.unwrap())
        .collect();
    assert_eq!(bad, vec![3, 4, 6]);
    assert!(parsed.errors[0].reason.starts_with("bad JSON"));
    assert_eq!(parsed.errors[1].to_string(), "line 4: missing field answer");
    assert!(parsed.errors[2].reason.contains("outside [0, 1]"));

    let grains: Vec<Grain> = parsed.grains.into_iter().map(|p| p.grain).collect();
    bb.store_grains(&grains, IfExists::Replace).await.unwrap();
    assert_eq!(bb.count_grains().await.unwrap(), 3);
    assert_eq!(
        bb.lookup_grain("Peru's capital?")
            .await
            .unwrap()
            .unwrap()
            .source
            .as_deref(),
        Some("atlas")
    );
}

#[tokio::test]
async fn yaml_grains_load() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let path = data("grains_sample.yaml");
    assert_eq!(Format::of(&path), Format::Yaml);
    let parsed = grains_file::read(&path).unwrap();
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let ids: Vec<_> = parsed
        .grains
        .iter()
        .map(|g| g.grain.fact_id.as_str())
        .collect();
    assert_eq!(ids, vec!["yaml-au", "yaml-ag", "yaml-low"]);
    assert_eq!(parsed.grains[1].location.item, Some(2));
    assert_eq!(parsed.grains[1].location.line, Some(6));
    let grains: Vec<Grain> = parsed.grains.into_iter().map(|p| p.grain).collect();
    bb.store_grains(&grains, IfExists::Replace).await.unwrap();
    let au = bb
        .lookup_grain("gold's chemical symbol")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((au.answer.as_str(), au.confidence), ("Au", 1.0));
    let ag = bb
        .lookup_grain("Chemical symbol of silver")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ag.confidence, 0.95);
    // Found, but below layer0's threshold: the daemon escalates.
    let low = bb
        .lookup_grain("Kenya's population?")
        .await
        .unwrap()
        .unwrap();
    assert!(low.confidence < min_confidence(&ctx));
}

// ----- the command line ---------------------------------------------------------------

struct Cli<'a> {
    ctx: &'a TestContext,
    dir: tempfile::TempDir,
}

impl<'a> Cli<'a> {
    fn new(ctx: &'a TestContext) -> Self {
        Self {
            ctx,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kitbash"))
            .args(args)
            // An empty directory: no kitbash_config.yaml or .env from the repo.
            .current_dir(self.dir.path())
            .env_remove("KITBASH_CONFIG")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_HOST")
            .env_remove("REDIS_PORT")
            .env_remove("REDIS_DB")
            .env_remove("REDIS_PASSWORD")
            .env("KITBASH_REDIS__URL", &self.ctx.redis.url)
            .env("KITBASH_REDIS__KEY_PREFIX", &self.ctx.prefix)
            .env("KITBASH_LOG", "warn")
            .output()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn cli_load_count_get_match_rm() {
    let ctx = TestContext::new();
    let cli = Cli::new(&ctx);
    let bad_file = data("grains_with_errors.jsonl");
    let bad_file = bad_file.to_str().unwrap();

    let out = cli.run(&["grains", "load", bad_file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{bad_file}:3: bad JSON")), "{err}");
    assert!(
        err.contains(&format!("{bad_file}:4: missing field answer")),
        "{err}"
    );
    assert!(err.contains(&format!("{bad_file}:6: confidence")), "{err}");
    assert!(stdout(&out).contains("loaded 3 grains"), "{}", stdout(&out));

    let out = cli.run(&["grains", "count"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "3");

    let out = cli.run(&["grains", "get", "cli-pe"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("answer:     Lima"), "{text}");
    assert!(text.contains("match key:  capital peru"), "{text}");
    let out = cli.run(&["grains", "get", "cli-pe", "--json"]);
    let g: Grain = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(g.source.as_deref(), Some("atlas"));
    let out = cli.run(&["grains", "get", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no grain \"nope\""));

    let out = cli.run(&["grains", "match", "what's KENYA's capital??"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("match key: capital kenya"), "{text}");
    assert!(text.contains("hit cli-ke (confidence 0.99"), "{text}");
    assert!(text.contains("Nairobi"), "{text}");
    let out = cli.run(&["grains", "match", "What is the capital of Uganda?"]);
    assert!(stdout(&out).contains("miss"), "{}", stdout(&out));
    let out = cli.run(&["grains", "match", "--json", "Capital of Peru"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hit"], true);
    assert_eq!(v["grain"]["fact_id"], "cli-pe");
    assert_eq!(v["match_key"], "capital peru");

    // Loading again keeps what is there unless --replace.
    let out = cli.run(&["grains", "load", bad_file]);
    assert!(stdout(&out).contains("kept 3 existing"), "{}", stdout(&out));
    let out = cli.run(&["grains", "load", "--replace", bad_file]);
    assert!(stdout(&out).contains("loaded 3 grains"), "{}", stdout(&out));

    let out = cli.run(&["grains", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let listed: Vec<Grain> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    let out = cli.run(&["grains", "list", "--limit", "1"]);
    assert_eq!(stdout(&out).lines().count(), 1);

    let out = cli.run(&["grains", "rm", "cli-ke", "cli-gone"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("removed 1 grains"));
    assert!(stderr(&out).contains("no grain \"cli-gone\""));
    let out = cli.run(&["grains", "rm", "cli-pe"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&cli.run(&["grains", "count"])).trim(), "1");
    let out = cli.run(&["grains", "match", "capital of kenya"]);
    assert!(
        stdout(&out).contains("miss"),
        "removed grains stop answering"
    );
    let idx = index(&ctx);
    assert_eq!(idx.len(), 1, "{idx:?}");
}

#[test]
fn cli_load_yaml_and_unreadable_files() {
    let ctx = TestContext::new();
    let cli = Cli::new(&ctx);
    let yaml = data("grains_sample.yaml");
    let out = cli.run(&["grains", "load", yaml.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("loaded 3 grains"));
    let out = cli.run(&["grains", "match", "Kenya's population"]);
    assert!(
        stdout(&out).contains("below layers.layer0.min_confidence"),
        "{}",
        stdout(&out)
    );

    let missing = cli.dir.path().join("missing.jsonl");
    let out = cli.run(&["grains", "load", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read grains file"),
        "{}",
        stderr(&out)
    );

    let bad_yaml = cli.dir.path().join("bad.yml");
    std::fs::write(
        &bad_yaml,
        "- fact_id: y1\n  question: What is the capital of Chad?\n  answer: N'Djamena\n- fact_id: y2\n  question: What is the capital of Mali?\n",
    )
    .unwrap();
    let out = cli.run(&["grains", "load", bad_yaml.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:4: item 2: missing field answer",
            bad_yaml.display()
        )),
        "{err}"
    );
    assert_eq!(stdout(&cli.run(&["grains", "count"])).trim(), "4");
}

#[test]
fn cli_reports_an_unreachable_redis() {
    let ctx = TestContext::new();
    let cli = Cli::new(&ctx);
    let out = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(["grains", "count"])
        .current_dir(cli.dir.path())
        .env_remove("KITBASH_CONFIG")
        .env_remove("REDIS_URL")
        .env("KITBASH_REDIS__URL", "redis://127.0.0.1:1/0")
        .env("KITBASH_REDIS__CONNECT_TIMEOUT_MS", "200")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is redis-server running"),
        "{}",
        stderr(&out)
    );
}

/// A server that refuses every write (here a read-only replica) is one
/// error naming the server's answer, not one bad entry per line.
#[test]
fn cli_load_stops_at_once_when_the_server_refuses_writes() {
    // A replica of a primary that does not exist: it answers, read-only.
    let ctx = TestContext::with_redis(crate::common::TestRedis::start_private(&[
        "--replicaof",
        "127.0.0.1",
        "1",
    ]));
    let cli = Cli::new(&ctx);
    let file = data("layer0_grains.jsonl");
    let out = cli.run(&["grains", "load", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("read only replica"),
        "names the server's answer: {err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "one message, not one per line: {err}"
    );
}

/// A grain keeps the fact it was made from, and loses it when stored again
/// without one.
#[tokio::test]
async fn a_grain_keeps_the_fact_it_was_made_from() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let mut g = Grain::new("g-ke", "What is the capital of Kenya?", "Nairobi");
    g.from_fact = Some("geo-00012".into());
    for r in bb
        .store_grains(&[g.clone()], IfExists::Replace)
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let stored = bb.get_grain("g-ke").await.unwrap().unwrap();
    assert_eq!(stored.from_fact.as_deref(), Some("geo-00012"));
    g.from_fact = None;
    for r in bb.store_grains(&[g], IfExists::Replace).await.unwrap() {
        r.unwrap();
    }
    let stored = bb.get_grain("g-ke").await.unwrap().unwrap();
    assert_eq!(stored.from_fact, None);
}
