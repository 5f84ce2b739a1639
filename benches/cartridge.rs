//! Cartridge (layer2) benchmark: 100,000 synthetic but varied facts written
//! to a temporary JSONL file and loaded through `CartridgeBackend::open`,
//! then 20,000 queries one after another (half about a loaded fact, in
//! several wordings; half unanswerable: unknown entities, unknown
//! attributes, unrelated text). Prints the load and reload times, latency
//! percentiles of one search (analysis, BM25, confidence: all of what
//! `Backend::answer` does), and right/wrong answers at a few thresholds.
//!
//! `cargo bench --bench cartridge`

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kitbash::worker::cartridge::{CartridgeBackend, CartridgeOptions};

const FACTS: usize = 100_000;
const QUERIES: usize = 20_000;
/// The threshold `tests/suite/cartridge.rs` recommends.
const THRESHOLD: f64 = 0.55;

const ATTRIBUTES: [&str; 40] = [
    "capital",
    "currency",
    "founder",
    "largest river",
    "highest mountain",
    "anthem",
    "airport",
    "university",
    "motto",
    "national bird",
    "national flower",
    "main export",
    "patron saint",
    "chief engineer",
    "head librarian",
    "harbour master",
    "oldest bridge",
    "tallest tower",
    "famous dish",
    "traditional dance",
    "rival town",
    "sister city",
    "main festival",
    "mining product",
    "lighthouse",
    "football club",
    "orchestra",
    "cathedral",
    "observatory",
    "railway station",
    "museum",
    "market square",
    "dialect",
    "newspaper",
    "radio station",
    "botanical garden",
    "castle",
    "vineyard",
    "brewery",
    "zoo",
];
const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mir", "ven", "tha", "dor", "uli", "sa", "bre", "nok", "ira", "pel", "zu", "qua",
    "ron", "fi", "gal", "esh", "tor", "wyn", "dra", "kel", "ossa", "mun", "yer", "bal", "cin",
    "hal", "jor", "lix", "pra", "vet",
];

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn name(rng: &mut Rng) -> String {
    let n = 2 + rng.below(2);
    let mut s: String = (0..n)
        .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
        .collect();
    s[..1].make_ascii_uppercase();
    s
}

struct Fact {
    id: String,
    entity: String,
    attribute: &'static str,
}

fn facts(rng: &mut Rng) -> (Vec<Fact>, Vec<String>) {
    let entities: Vec<String> = {
        let mut seen = std::collections::HashSet::new();
        let mut v = Vec::new();
        while v.len() < FACTS / 10 {
            let e = name(rng);
            if seen.insert(e.clone()) {
                v.push(e);
            }
        }
        v
    };
    let mut out = Vec::with_capacity(FACTS);
    let mut lines = Vec::with_capacity(FACTS);
    for (e, entity) in entities.iter().enumerate() {
        // Ten distinct attributes per entity.
        let start = rng.below(ATTRIBUTES.len());
        for k in 0..10 {
            let attribute = ATTRIBUTES[(start + k * 3) % ATTRIBUTES.len()];
            let value = format!("{} {}", name(rng), name(rng));
            let text = match rng.below(4) {
                0 => format!("The {attribute} of {entity} is {value}."),
                1 => format!(
                    "{entity}'s {attribute} is {value}, known since {}.",
                    1500 + rng.below(500)
                ),
                2 => format!("{value} is the {attribute} of {entity}."),
                _ => format!("In {entity}, the {attribute} is called {value}."),
            };
            let id = format!("e{e}-{k}");
            lines.push(serde_json::json!({"id": id, "text": text}).to_string());
            out.push(Fact {
                id,
                entity: entity.clone(),
                attribute,
            });
        }
    }
    (out, lines)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let mut rng = Rng(0x6b69_7462_6173_6821);
    let (facts, lines) = facts(&mut rng);
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("synthetic.jsonl");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for l in &lines {
            writeln!(f, "{l}").unwrap();
        }
    }
    let t0 = Instant::now();
    let backend = CartridgeBackend::open_with(
        std::slice::from_ref(&path),
        CartridgeOptions {
            poll_interval: None,
            ..Default::default()
        },
    )
    .expect("load");
    let load = t0.elapsed();
    assert_eq!(backend.fact_count(), FACTS);
    let t0 = Instant::now();
    backend.reload_blocking().expect("reload");
    let reload = t0.elapsed();

    let unrelated = [
        "How do I bake sourdough bread?",
        "What is the meaning of life?",
        "Who won the football world cup in 1998?",
        "reset my router password please",
        "What is the boiling point of water at sea level?",
    ];
    let mut queries: Vec<(String, Option<String>)> = Vec::with_capacity(QUERIES);
    for i in 0..QUERIES {
        let q = if i % 2 == 0 {
            let f = &facts[rng.below(facts.len())];
            let q = match rng.below(3) {
                0 => format!("What is the {} of {}?", f.attribute, f.entity),
                1 => format!("{} {}", f.entity, f.attribute),
                _ => format!("Tell me the {} of {}", f.attribute, f.entity),
            };
            (q, Some(f.id.clone()))
        } else {
            let q = match rng.below(3) {
                0 => format!(
                    "What is the {} of {}?",
                    ATTRIBUTES[rng.below(ATTRIBUTES.len())],
                    name(&mut rng) + "zq"
                ),
                1 => format!(
                    "What is the population of {}?",
                    facts[rng.below(facts.len())].entity
                ),
                _ => unrelated[rng.below(unrelated.len())].to_string(),
            };
            (q, None)
        };
        queries.push(q);
    }

    // Warm up caches, then measure.
    for (q, _) in queries.iter().take(500) {
        let _ = backend.search(q).unwrap();
    }
    let mut lat = Vec::with_capacity(QUERIES);
    let mut outcomes: Vec<(bool, Option<(bool, f64)>)> = Vec::with_capacity(QUERIES);
    let t_all = Instant::now();
    for (q, expected) in &queries {
        let t = Instant::now();
        let hit = backend.search(q).unwrap();
        lat.push(t.elapsed());
        outcomes.push((
            expected.is_some(),
            hit.map(|h| {
                (
                    expected.as_deref() == Some(h.fact_id.as_str()),
                    h.confidence,
                )
            }),
        ));
    }
    let total = t_all.elapsed();
    lat.sort();
    println!("cartridge benchmark: {FACTS} facts, {QUERIES} queries (half answerable)");
    println!(
        "  load (open): {:.0} ms   reload: {:.0} ms",
        load.as_secs_f64() * 1e3,
        reload.as_secs_f64() * 1e3
    );
    println!(
        "  latency µs: p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}   ({:.0} queries/s on one thread)",
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().unwrap().as_secs_f64() * 1e6,
        QUERIES as f64 / total.as_secs_f64()
    );
    for t in [0.35, 0.45, 0.5, THRESHOLD, 0.65] {
        let answered = |o: &&(bool, Option<(bool, f64)>)| o.1.is_some_and(|(_, c)| c >= t);
        let right = outcomes
            .iter()
            .filter(answered)
            .filter(|o| o.1.is_some_and(|(r, _)| r))
            .count();
        let wrong = outcomes.iter().filter(answered).filter(|o| o.0).count() - right;
        let false_pos = outcomes.iter().filter(answered).filter(|o| !o.0).count();
        println!(
            "  at confidence >= {t:.2}: {right} of {} answerable right, {wrong} answerable wrong, {false_pos} of {} unanswerable answered",
            QUERIES / 2,
            QUERIES / 2
        );
    }
}
