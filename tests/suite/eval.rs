//! Answers you can trust: the labelled set `eval/labels.jsonl` replayed
//! through layer0 and layer2 (the same code the daemon and the cartridge
//! worker run), the newcomer questions, layer0's second stage over a real
//! Redis and through a running daemon, and `kitbash calibrate` as a user
//! runs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kitbash::aliases::Aliases;
use kitbash::calibrate::{self, Replay, Split, labels};
use kitbash::{Grain, QueryState, QueryStatus, Settings};

use crate::common::TestContext;
use crate::daemon::support::{RunningDaemon, fast, wait_done};

/// Floors the held-out part must meet at the default thresholds. Precision
/// and the false-positive rate are the goals; recall's floor sits a
/// little under what was measured when it was set (0.855 at the time), so a
/// change that loses recall fails here. Raise it when recall rises.
const MIN_PRECISION: f64 = 0.98;
const MAX_FALSE_POSITIVE_RATE: f64 = 0.02;
const MIN_RECALL: f64 = 0.83;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The default settings with the demo knowledge's paths made absolute.
fn demo_settings() -> Settings {
    let mut s = Settings::default();
    s.workers.cartridge.paths = vec![repo("config/cartridges")];
    s.knowledge.aliases = vec![repo("config/aliases.jsonl")];
    s.knowledge.synonyms = vec![repo("config/synonyms.jsonl")];
    s
}

fn replay(labels: Vec<labels::Label>) -> Replay {
    let settings = demo_settings();
    let layers = calibrate::layers(&settings, &[repo("config/grains/demo.jsonl")]).unwrap();
    Replay::run(labels, layers).unwrap()
}

#[test]
fn the_held_out_labelled_set_meets_its_floors_and_layer0_is_never_wrong() {
    let all = labels::read(&repo("eval/labels.jsonl")).unwrap();
    assert!(all.len() >= 2_000, "{} labelled questions", all.len());
    let heldout = all.iter().filter(|l| l.split == "heldout").count();
    assert!(heldout >= 1_000, "{heldout} held-out questions");
    let r = replay(all);
    let thresholds = calibrate::configured_thresholds(&r);
    let scores = r.cascade(&thresholds, |l| Split::Heldout.keeps(l));
    let table = calibrate::scores_table(&scores, &r);
    println!("{table}");
    let all = &scores.all;
    assert!(all.precision() >= MIN_PRECISION, "precision\n{table}");
    assert!(
        all.false_positive_rate().unwrap() <= MAX_FALSE_POSITIVE_RATE,
        "false positives\n{table}"
    );
    assert!(all.recall().unwrap() >= MIN_RECALL, "recall\n{table}");

    // Layer0 answers only what it knows, on every question of both parts.
    let layer0 = r.layers.iter().position(|l| l.name == "layer0").unwrap();
    let mut wrong = Vec::new();
    for (q, label) in r.labels.iter().enumerate() {
        if let Some(reading) = &r.readings[q][layer0]
            && !label.is_right(&reading.source)
        {
            wrong.push(format!("{:?} -> {}", label.query, reading.source));
        }
    }
    assert!(wrong.is_empty(), "layer0 answered wrongly: {wrong:#?}");
}

#[test]
fn crystallising_the_answers_keeps_the_held_out_part_within_its_floors() {
    let all = labels::read(&repo("eval/labels.jsonl")).unwrap();
    let mut r = replay(all);
    let thresholds = calibrate::configured_thresholds(&r);
    let before = r.cascade(&thresholds, |l| Split::Heldout.keeps(l)).all;
    // Crystallise from both parts: a grain made from one question may be
    // found by another's second stage.
    let made = r.crystallize(|_| true).unwrap();
    let after = r.cascade(&thresholds, |l| Split::Heldout.keeps(l));
    let table = calibrate::scores_table(&after, &r);
    println!("{made} grains made\n{table}");
    assert!(
        made > 1_000,
        "the cartridge layer's answers crystallise: {made}"
    );
    let layer0 = r.layers.iter().position(|l| l.name == "layer0").unwrap();
    let at = |t: &calibrate::Tally| t.by_layer.get(&layer0).copied().unwrap_or(0);
    assert!(
        at(&after.all) > at(&before) + 300,
        "layer0 answers more: {} -> {}",
        at(&before),
        at(&after.all)
    );
    let all = &after.all;
    assert!(all.precision() >= MIN_PRECISION, "precision\n{table}");
    assert!(
        all.false_positive_rate().unwrap() <= MAX_FALSE_POSITIVE_RATE,
        "false positives\n{table}"
    );
    assert!(
        all.false_positives <= before.false_positives,
        "no new false positive: {} -> {}\n{table}",
        before.false_positives,
        all.false_positives
    );
    assert!(all.recall().unwrap() >= MIN_RECALL, "recall\n{table}");
}

#[test]
fn layer0_stays_exact_with_100000_distractor_grains() {
    // Distractors: the demo's attributes asked of 100,000 made-up places and
    // elements, in the demo grains' own phrasing; no labelled question asks
    // about them, so any layer0 answer from one is wrong.
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mir", "ven", "tha", "dor", "uli", "sa", "bre", "nok", "ira", "pel", "zu",
        "qua", "ron", "fi",
    ];
    let mut grains =
        kitbash::layer0::memory::MemoryGrains::read(&[repo("config/grains/demo.jsonl")]).unwrap();
    let real = grains.len();
    let mut x: u64 = 0x6b69_7462_6173_6821;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    for i in 0..100_000 {
        let name: String = (0..4 + next() % 2)
            .map(|_| SYLLABLES[next() % SYLLABLES.len()])
            .collect();
        let question = match i % 3 {
            0 => format!("What is the capital of {name}ia?"),
            1 => format!("What is the currency of {name}land?"),
            _ => format!("What is the chemical symbol of {name}ium?"),
        };
        grains.insert(kitbash::layer0::grains::GrainMatch {
            fact_id: format!("distractor-{i}"),
            question,
            answer: "x".into(),
            confidence: 1.0,
            source: None,
            crystallized: None,
            partition: 0,
        });
    }
    assert!(grains.len() > real + 90_000, "{}", grains.len());
    let aliases = demo_aliases();
    let labels = labels::read(&repo("eval/labels.jsonl")).unwrap();
    let mut wrong = Vec::new();
    let mut right = 0;
    for l in &labels {
        if let Some(m) = grains.lookup(&l.query, &aliases) {
            if l.is_right(&format!("grain:{}", m.fact_id)) {
                right += 1;
            } else {
                wrong.push(format!("{:?} -> {}", l.query, m.fact_id));
            }
        }
    }
    assert!(wrong.is_empty(), "layer0 answered wrongly: {wrong:#?}");
    assert!(right > 1_000, "{right} right answers");
}

fn label(query: &str, expect: &[&str]) -> labels::Label {
    labels::Label {
        id: query.to_string(),
        split: "tune".into(),
        kind: "newcomer".into(),
        query: query.to_string(),
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn the_questions_a_newcomer_tried_behave() {
    // From the issue: each was answered wrongly or refused though present.
    let refuse = [
        "What is the population of Mars?",
        "What is the capital of Mars?",
        "What is the area of Mars?",
        "What is not the capital of Kenya?",
        "Who discovered oxygen?",
        "Which countries use the euro?",
    ];
    let answer: [(&str, &[&str]); 5] = [
        (
            "What's the capital of the UK?",
            &["grain:capital-gb", "countries#gb-capital"],
        ),
        (
            "What is the capital of the USA?",
            &["grain:capital-us", "countries#us-capital"],
        ),
        (
            "Which countries border Switzerland?",
            &["borders#ch-borders"],
        ),
        (
            "What currency is used in India?",
            &["grain:currency-in", "countries#in-currency"],
        ),
        ("Which element has the symbol Na?", &["elements#na-symbol"]),
    ];
    let mut labels: Vec<_> = refuse.iter().map(|q| label(q, &[])).collect();
    labels.extend(answer.iter().map(|(q, e)| label(q, e)));
    let r = replay(labels);
    let thresholds = calibrate::configured_thresholds(&r);
    for (q, l) in r.labels.iter().enumerate() {
        let got = r.answer(q, &thresholds);
        if l.answerable() {
            let (_, reading) = got.unwrap_or_else(|| panic!("{:?} was refused", l.query));
            assert!(l.is_right(&reading.source), "{:?} -> {reading:?}", l.query);
        } else {
            assert!(got.is_none(), "{:?} was answered: {got:?}", l.query);
        }
    }
}

fn demo_aliases() -> Aliases {
    let (aliases, report) = Aliases::read(&[repo("config/aliases.jsonl")]);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.aliases > 500, "{report:?}");
    aliases
}

#[tokio::test]
async fn layer0_second_stage_over_redis_finds_aliases_and_fillers_and_never_guesses() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let aliases = demo_aliases();
    for g in [
        Grain::new(
            "capital-us",
            "What is the capital of the United States?",
            "Washington",
        ),
        Grain::new(
            "currency-ke",
            "What is the currency of Kenya?",
            "Kenyan Shilling (KES)",
        ),
        Grain::new("element-na", "What is the chemical symbol of sodium?", "Na"),
    ] {
        bb.store_grain(&g).await.unwrap();
    }
    for (q, id) in [
        ("What is the capital of the USA?", "capital-us"),
        ("Which city is the capital of America?", "capital-us"),
        ("Which currency is used in KEN?", "currency-ke"),
        ("What money do they use in Kenya?", "currency-ke"),
        ("What is the symbol for sodium?", "element-na"),
        ("Hi! What is the capital of the US?", "capital-us"),
    ] {
        let m = bb.lookup_grain_with(q, &aliases).await.unwrap();
        assert_eq!(m.map(|m| m.fact_id).as_deref(), Some(id), "{q}");
    }
    for q in [
        // Turned round, a modifier, a code written small, another entity.
        "Which element's chemical symbol is Na?",
        "Which country's capital is the United States?",
        "What was the capital of the USA?",
        "What is not the currency of Kenya?",
        "What is the capital of the usa?",
        "What currency did Kenya use?",
        "What is the capital of Uganda?",
    ] {
        assert_eq!(
            bb.lookup_grain_with(q, &aliases).await.unwrap(),
            None,
            "{q}"
        );
    }
}

#[tokio::test]
async fn the_daemon_answers_an_alias_at_layer0_with_the_configured_aliases() {
    let mut ctx = TestContext::new();
    fast(&mut ctx);
    ctx.settings.knowledge.aliases = vec![repo("config/aliases.jsonl")];
    for l in ["layer1", "layer2", "layer4"] {
        ctx.settings.layers.get_mut(l).unwrap().enabled = false;
    }
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new(
        "capital-gb",
        "What is the capital of the United Kingdom?",
        "London",
    ))
    .await
    .unwrap();
    let d = RunningDaemon::start(&ctx.settings);
    let hit = QueryState::new("What's the capital of the UK?");
    let miss = QueryState::new("What was the capital of the UK?");
    bb.enqueue(&hit).await.unwrap();
    bb.enqueue(&miss).await.unwrap();
    let s = wait_done(&ctx, &bb, &hit.query_id, 60.0).await;
    assert_eq!(s.status, QueryStatus::Answered);
    let a = s.answer.unwrap();
    assert_eq!(
        (a.text.as_str(), a.layer.as_str(), a.source.as_deref()),
        ("London", "layer0", Some("grain:capital-gb"))
    );
    let s = wait_done(&ctx, &bb, &miss.query_id, 60.0).await;
    assert_ne!(s.status, QueryStatus::Answered, "{s:?}");
    d.stop().await;
}

#[test]
fn calibrate_reports_and_writes_thresholds_into_the_yaml() {
    let dir = tempfile::tempdir().unwrap();
    // A part of the set, so the command runs quickly: about 700 questions,
    // enough for a 95% bound under 5% where no answer is wrong.
    let text = std::fs::read_to_string(repo("eval/labels.jsonl")).unwrap();
    let small: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .step_by(8)
        .collect();
    let labels = dir.path().join("labels.jsonl");
    std::fs::write(&labels, small.join("\n")).unwrap();
    let config = dir.path().join("kitbash.yaml");
    std::fs::write(
        &config,
        "# mine\nlayers:\n  layer2:\n    min_confidence: 0.3  # too low\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kitbash"))
            .arg("--config")
            .arg(&config)
            .args(["calibrate", "--split", "all", "--labels"])
            .arg(&labels)
            .args(["--grains", "config/grains/demo.jsonl"])
            .args(extra)
            .env_remove("KITBASH_CONFIG")
            .env("KITBASH_LOGGING__LEVEL", "warn")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let text = format!(
            "{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = run(&["--max-error", "0.05"]);
    assert_eq!(code, Some(0), "{out}");
    for part in [
        "Replayed",
        "The cascade at the configured thresholds",
        "layer2: precision and recall against min_confidence",
        "95% CI",
        "Reliability of layer2's confidence",
        "Expected calibration error",
        "Not replayed (model workers need their servers): layer1, layer4",
    ] {
        assert!(out.contains(part), "{part:?} missing:\n{out}");
    }
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# mine\nlayers:\n  layer2:\n    min_confidence: 0.3  # too low\n",
        "nothing written without --write"
    );
    let (code, out) = run(&["--max-error", "0.05", "--write"]);
    assert_eq!(code, Some(0), "{out}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.starts_with("# mine\n"), "{written}");
    assert!(written.contains("# too low"), "{written}");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&written).unwrap();
    let t = parsed["layers"]["layer2"]["min_confidence"]
        .as_f64()
        .unwrap();
    assert!(t > 0.3 && t <= 1.0, "{written}");
    assert!(out.contains("Wrote layers.layer2.min_confidence"), "{out}");
    // The written file is a valid configuration.
    let loaded = kitbash::config::load(Some(config.clone())).unwrap();
    assert_eq!(loaded.settings.layers["layer2"].min_confidence, t);

    // A bad labels file is a clear error, and nothing is written.
    std::fs::write(&labels, "{\"id\": 1}\n").unwrap();
    let (code, out) = run(&["--write"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not a label"), "{out}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);
}

#[test]
fn aliases_files_with_bad_lines_load_the_rest_and_say_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases.jsonl");
    std::fs::write(
        &path,
        "{\"alias\": \"UK\", \"name\": \"United Kingdom\"}\nnot json\n{\"alias\": \"GB\", \"name\": \"United Kingdom\"}\n{\"alias\": \"GB\", \"name\": \"gigabyte\"}\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.jsonl");
    let (aliases, report) = Aliases::read(&[path.clone(), missing.clone()]);
    assert_eq!(report.aliases, 1, "{report:?}");
    let problems = report.problems.join("\n");
    assert!(
        problems.contains(&format!("{}:2:", path.display())),
        "{problems}"
    );
    assert!(
        problems.contains("\"GB\" names two different things"),
        "{problems}"
    );
    assert!(
        problems.contains(&missing.display().to_string()),
        "{problems}"
    );
    assert_eq!(
        aliases.rewrite("capital of the UK").as_deref(),
        Some("capital of the United Kingdom")
    );
    // The cartridge worker searches the rewritten question.
    let cartridge = dir.path().join("places.jsonl");
    std::fs::write(
        &cartridge,
        "{\"id\": \"gb-capital\", \"text\": \"The capital city of the United Kingdom is London.\"}\n{\"id\": \"gb-domain\", \"text\": \"The internet domain of the United Kingdom is .uk.\"}\n",
    )
    .unwrap();
    let backend = kitbash::worker::cartridge::CartridgeBackend::open_with(
        &[cartridge],
        kitbash::worker::cartridge::CartridgeOptions {
            poll_interval: None,
            aliases: Arc::new(aliases),
            ..Default::default()
        },
    )
    .unwrap();
    let hit = backend
        .search("What is the capital of the UK?")
        .unwrap()
        .unwrap();
    assert_eq!(hit.source(), "places#gb-capital");
}
