//! `kitbash calibrate`: replays a labelled question set through the layers
//! that can run in this process (layer0 over grains files, layer2 over the
//! cartridges) and measures what their confidence is worth.
//!
//! For each question every replayable layer says what it would answer and
//! with which confidence ([`Replay`]). From that, without replaying again:
//!
//! - the cascade at given thresholds: each question answered by the first
//!   layer whose confidence reaches its threshold, or refused
//!   ([`Replay::cascade`]), scored per kind of question;
//! - per layer, precision and recall against the threshold, over the
//!   questions that reach it (those the layers before it, at their chosen
//!   thresholds, did not answer), and the lowest threshold whose error rate
//!   stays within a budget with 95% confidence ([`stats::lowest_within`]);
//! - how well confidence is calibrated: a reliability table and the
//!   expected calibration error ([`stats::reliability`]).
//!
//! Model layers (bitnet, llm) need their servers and are not replayed; the
//! report names them.

pub mod labels;
pub mod stats;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use crate::aliases::Aliases;

use crate::config::{CrystallizePolicy, LayerKind, Settings, WorkerKind};
use crate::layer0::crystal::{crystal_id, held_back};
use crate::layer0::grains::GrainMatch;
use crate::layer0::matching::normalize;
use crate::layer0::memory::MemoryGrains;
use crate::state::Crystallized;
use crate::worker::cartridge::{CartridgeBackend, CartridgeOptions};

pub use labels::Label;
use stats::{Offer, Point};

/// What one layer would answer a question with, before its threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The answer's source (`grain:<id>`, `<cartridge>#<id>`).
    pub source: String,
    /// The layer's confidence.
    pub confidence: f64,
}

/// A layer that runs in process.
pub enum ReplayLayer {
    /// Layer0 over grains read from files, with the aliases.
    Grains(MemoryGrains, Arc<Aliases>),
    /// The cartridge retrieval of layer2.
    Cartridges(CartridgeBackend),
}

impl ReplayLayer {
    fn read(&self, text: &str) -> Result<Option<Reading>, String> {
        match self {
            ReplayLayer::Grains(g, aliases) => Ok(g.lookup(text, aliases).map(|m| Reading {
                // A crystallised grain is judged by the fact it cites.
                source: match (&m.crystallized, &m.source) {
                    (Some(_), Some(cited)) => cited.clone(),
                    _ => format!("grain:{}", m.fact_id),
                },
                confidence: m.confidence,
            })),
            ReplayLayer::Cartridges(c) => c
                .search(text)
                .map(|h| {
                    h.map(|h| Reading {
                        source: h.source(),
                        confidence: h.confidence,
                    })
                })
                .map_err(|e| e.to_string()),
        }
    }
}

/// A configured layer as the replay sees it.
pub struct Layer {
    /// Its name (`layer0`).
    pub name: String,
    /// Its configured threshold.
    pub min_confidence: f64,
    /// How to run it here, or `None` for a model layer that cannot be.
    pub replay: Option<ReplayLayer>,
    /// Its crystallisation policy, when its answers may crystallise
    /// without a consensus partner (which the replay cannot ask).
    pub crystallize: Option<CrystallizePolicy>,
}

/// Builds the layers of `settings` in cascade order: layer0 from
/// `grains_files`, the cartridge layer from `workers.cartridge.paths`;
/// disabled layers are left out, model layers kept without a replay.
pub fn layers(settings: &Settings, grains_files: &[PathBuf]) -> Result<Vec<Layer>, String> {
    let mut out = Vec::new();
    let aliases = Arc::new(Aliases::load_logged(&settings.knowledge.aliases));
    for (name, layer) in settings.layers_in_order() {
        if !layer.enabled {
            continue;
        }
        let replay = match (layer.kind, layer.worker) {
            (LayerKind::Grain, _) => Some(ReplayLayer::Grains(
                MemoryGrains::read(grains_files)?,
                aliases.clone(),
            )),
            (LayerKind::Worker, Some(WorkerKind::Cartridge)) => {
                let opts = CartridgeOptions {
                    poll_interval: None,
                    aliases: aliases.clone(),
                    synonyms: Arc::new(Aliases::load_logged(&settings.knowledge.synonyms)),
                };
                let backend = CartridgeBackend::open_with(&settings.workers.cartridge.paths, opts)
                    .map_err(|e| e.to_string())?;
                Some(ReplayLayer::Cartridges(backend))
            }
            _ => None,
        };
        let policy = &layer.crystallize;
        out.push(Layer {
            name: name.to_string(),
            min_confidence: layer.min_confidence,
            replay,
            crystallize: (settings.crystallization.enabled
                && policy.enabled
                && !policy.require_agreement
                && layer.consensus.with.is_none())
            .then(|| policy.clone()),
        });
    }
    Ok(out)
}

/// Every question's reading at every replayable layer.
pub struct Replay {
    /// The questions, in file order.
    pub labels: Vec<Label>,
    /// The layers, in cascade order.
    pub layers: Vec<Layer>,
    /// `readings[q][l]`: question `q` at layer `l` (`None`: a miss, or a
    /// layer not replayed).
    pub readings: Vec<Vec<Option<Reading>>>,
}

impl Replay {
    /// Runs every question through every replayable layer.
    pub fn run(labels: Vec<Label>, layers: Vec<Layer>) -> Result<Self, String> {
        let mut readings = Vec::with_capacity(labels.len());
        for label in &labels {
            let mut row = Vec::with_capacity(layers.len());
            for layer in &layers {
                row.push(match &layer.replay {
                    Some(r) => r.read(&label.query)?,
                    None => None,
                });
            }
            readings.push(row);
        }
        Ok(Self {
            labels,
            layers,
            readings,
        })
    }

    /// One JSON line per question in `split`: the label, each replayed
    /// layer's reading, and the cascade's outcome at the configured
    /// thresholds (`right`, `wrong`, `refused`, `missed`).
    pub fn details(&self, split: Split) -> String {
        let thresholds = configured_thresholds(self);
        let mut out = String::new();
        for (q, label) in self.labels.iter().enumerate() {
            if !split.keeps(label) {
                continue;
            }
            let mut readings = serde_json::Map::new();
            for (l, layer) in self.layers.iter().enumerate() {
                if layer.replay.is_some() {
                    let v = match &self.readings[q][l] {
                        Some(r) => {
                            serde_json::json!({"source": r.source, "confidence": r.confidence})
                        }
                        None => serde_json::Value::Null,
                    };
                    readings.insert(layer.name.clone(), v);
                }
            }
            let answer = self.answer(q, &thresholds);
            let outcome = match (answer, label.answerable()) {
                (Some((_, r)), _) if label.is_right(&r.source) => "right",
                (Some(_), _) => "wrong",
                (None, true) => "missed",
                (None, false) => "refused",
            };
            let line = serde_json::json!({
                "id": label.id,
                "split": label.split,
                "kind": label.kind,
                "query": label.query,
                "expect": label.expect,
                "outcome": outcome,
                "answered_by": answer.map(|(l, _)| self.layers[l].name.clone()),
                "readings": readings,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }

    /// Names of the layers that were not replayed.
    pub fn skipped(&self) -> Vec<&str> {
        self.layers
            .iter()
            .filter(|l| l.replay.is_none())
            .map(|l| l.name.as_str())
            .collect()
    }

    /// Crystallises what the daemon would: every answer the cascade gives
    /// at the configured thresholds to a question `keep` selects, from a
    /// layer whose policy allows it, at or above the policy's confidence,
    /// to a question [`refusal`] lets through. Each question counts as
    /// asked `min_answers` times (the layers answer the same way each
    /// time), grains never expire here and no loaded grain is replaced.
    /// Layer0 then reads every question again. Returns the grains made.
    pub fn crystallize(&mut self, keep: impl Fn(&Label) -> bool) -> Result<usize, String> {
        let thresholds = configured_thresholds(self);
        let mut made = Vec::new();
        for (q, label) in self.labels.iter().enumerate() {
            if !keep(label) {
                continue;
            }
            let Some((l, r)) = self.answer(q, &thresholds) else {
                continue;
            };
            let Some(policy) = &self.layers[l].crystallize else {
                continue;
            };
            if held_back(policy, r.confidence, &label.query).is_some() {
                continue;
            }
            made.push(GrainMatch {
                fact_id: crystal_id(&normalize(&label.query)),
                question: label.query.clone(),
                answer: String::new(),
                confidence: r.confidence,
                source: Some(r.source.clone()),
                crystallized: Some(Crystallized {
                    layer: self.layers[l].name.clone(),
                    worker: None,
                    query_id: label.id.clone(),
                    at: String::new(),
                    expires_at: String::new(),
                    expires_ms: i64::MAX,
                }),
                partition: 0,
            });
        }
        let Some(g) = self
            .layers
            .iter()
            .position(|l| matches!(l.replay, Some(ReplayLayer::Grains(..))))
        else {
            return Ok(0);
        };
        let Some(ReplayLayer::Grains(grains, _)) = &mut self.layers[g].replay else {
            return Ok(0);
        };
        let added = made
            .into_iter()
            .filter(|m| grains.insert_if_absent(m.clone()))
            .count();
        let layer = self.layers[g].replay.as_ref().expect("the grain layer");
        for (q, label) in self.labels.iter().enumerate() {
            self.readings[q][g] = layer.read(&label.query)?;
        }
        Ok(added)
    }

    /// Which layer answers question `q` at `thresholds` (one per layer),
    /// and with what; `None`: refused.
    pub fn answer(&self, q: usize, thresholds: &[f64]) -> Option<(usize, &Reading)> {
        self.readings[q]
            .iter()
            .zip(thresholds)
            .enumerate()
            .find_map(|(l, (r, t))| r.as_ref().filter(|r| r.confidence >= *t).map(|r| (l, r)))
    }

    /// The cascade at `thresholds`, over the questions `keep` selects,
    /// scored per kind (and `all`).
    pub fn cascade(&self, thresholds: &[f64], keep: impl Fn(&Label) -> bool) -> Scores {
        let mut scores = Scores::default();
        for (q, label) in self.labels.iter().enumerate() {
            if !keep(label) {
                continue;
            }
            let answer = self.answer(q, thresholds);
            let tally = |t: &mut Tally| {
                t.questions += 1;
                t.answerable += usize::from(label.answerable());
                if let Some((layer, r)) = answer {
                    t.answered += 1;
                    *t.by_layer.entry(layer).or_default() += 1;
                    if label.is_right(&r.source) {
                        t.right += 1;
                    } else if !label.answerable() {
                        t.false_positives += 1;
                    }
                }
            };
            tally(scores.kinds.entry(label.kind.clone()).or_default());
            tally(&mut scores.all);
        }
        scores
    }

    /// What layer `l` offers (confidence, right) on the questions `keep`
    /// selects that no layer before it answers at `thresholds`, and how
    /// many of those some fact answers.
    pub fn offers(
        &self,
        l: usize,
        thresholds: &[f64],
        keep: impl Fn(&Label) -> bool,
    ) -> (Vec<Offer>, usize) {
        let mut offers = Vec::new();
        let mut answerable = 0;
        for (q, label) in self.labels.iter().enumerate() {
            if !keep(label) || self.answer(q, &thresholds[..l]).is_some() {
                continue;
            }
            answerable += usize::from(label.answerable());
            if let Some(r) = &self.readings[q][l] {
                offers.push(Offer {
                    confidence: r.confidence,
                    right: label.is_right(&r.source),
                });
            }
        }
        (offers, answerable)
    }
}

/// Counts of one group of questions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Questions.
    pub questions: usize,
    /// Of those, ones some fact answers.
    pub answerable: usize,
    /// Questions answered.
    pub answered: usize,
    /// Answers whose source is expected.
    pub right: usize,
    /// Answers to questions that should have been refused.
    pub false_positives: usize,
    /// Answers per layer index.
    pub by_layer: BTreeMap<usize, usize>,
}

impl Tally {
    /// right / answered (1 when nothing was answered).
    pub fn precision(&self) -> f64 {
        if self.answered == 0 {
            1.0
        } else {
            self.right as f64 / self.answered as f64
        }
    }

    /// right / answerable (`None` when nothing is answerable).
    pub fn recall(&self) -> Option<f64> {
        (self.answerable > 0).then(|| self.right as f64 / self.answerable as f64)
    }

    /// Answered among the questions that should be refused (`None` when
    /// there are none).
    pub fn false_positive_rate(&self) -> Option<f64> {
        let refusable = self.questions - self.answerable;
        (refusable > 0).then(|| self.false_positives as f64 / refusable as f64)
    }
}

/// The cascade's figures per kind of question and overall.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// Per kind.
    pub kinds: BTreeMap<String, Tally>,
    /// All the questions.
    pub all: Tally,
}

/// Which questions a run looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The part thresholds may be tuned on.
    Tune,
    /// The part nobody tunes on.
    Heldout,
    /// Both.
    All,
}

impl Split {
    /// Whether `label` is in this split.
    pub fn keeps(self, label: &Label) -> bool {
        match self {
            Split::All => true,
            Split::Tune => label.split == "tune",
            Split::Heldout => label.split == "heldout",
        }
    }
}

/// The per-layer result of a calibration.
#[derive(Debug, Clone)]
pub struct LayerCalibration {
    /// The layer's name.
    pub name: String,
    /// Its configured threshold.
    pub configured: f64,
    /// The layer at its configured threshold.
    pub at_configured: Point,
    /// The lowest threshold within the budget, if any.
    pub chosen: Option<Point>,
    /// A sweep of thresholds 0.05 … 1.00.
    pub sweep: Vec<Point>,
    /// Reliability bins and the expected calibration error.
    pub reliability: (Vec<stats::Bin>, f64),
}

/// Calibrates each replayed layer in cascade order: layer `l` is measured
/// on the questions the layers before it leave unanswered at *their chosen*
/// thresholds (their configured ones where no threshold met the budget).
pub fn calibrate(replay: &Replay, split: Split, budget: f64) -> Vec<LayerCalibration> {
    let mut thresholds: Vec<f64> = replay.layers.iter().map(|l| l.min_confidence).collect();
    let mut out = Vec::new();
    for (l, layer) in replay.layers.iter().enumerate() {
        if layer.replay.is_none() {
            // Not replayed: it never answers here, so it must not hide the
            // questions from the layers after it.
            thresholds[l] = f64::INFINITY;
            continue;
        }
        let (offers, answerable) = replay.offers(l, &thresholds, |q| split.keeps(q));
        let at_configured = stats::at(&offers, answerable, layer.min_confidence);
        // The lowest threshold within the budget; the configured one when it
        // is within too and answers exactly the same (layer0's grains all say
        // 1.0, so any threshold up to 1.0 would do: keep what is set).
        let chosen = stats::lowest_within(&offers, answerable, budget).map(|p| {
            let same = at_configured.answered == p.answered && at_configured.right == p.right;
            if same && at_configured.error().1.1 <= budget {
                at_configured
            } else {
                p
            }
        });
        let sweep = (1..=20)
            .map(|i| stats::at(&offers, answerable, i as f64 / 20.0))
            .collect();
        out.push(LayerCalibration {
            name: layer.name.clone(),
            configured: layer.min_confidence,
            at_configured,
            chosen,
            sweep,
            reliability: stats::reliability(&offers),
        });
        if let Some(p) = chosen {
            thresholds[l] = p.threshold;
        }
    }
    out
}

/// The thresholds the cascade uses: the configured ones, with a model layer
/// (not replayed) never answering.
pub fn configured_thresholds(replay: &Replay) -> Vec<f64> {
    replay
        .layers
        .iter()
        .map(|l| {
            if l.replay.is_some() {
                l.min_confidence
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.3}", x)
}

fn opt(x: Option<f64>) -> String {
    x.map(pct).unwrap_or_else(|| "-".into())
}

/// The cascade's scores as a table, one row per kind and a total.
pub fn scores_table(scores: &Scores, replay: &Replay) -> String {
    let mut s = String::new();
    let names: Vec<&str> = replay
        .layers
        .iter()
        .filter(|l| l.replay.is_some())
        .map(|l| l.name.as_str())
        .collect();
    let _ = write!(
        s,
        "{:<24} {:>5} {:>8} {:>6} {:>9} {:>6} {:>7}",
        "kind", "n", "answered", "right", "precision", "recall", "fp-rate"
    );
    for n in &names {
        let _ = write!(s, " {:>7}", n);
    }
    s.push('\n');
    let row = |s: &mut String, name: &str, t: &Tally| {
        let _ = write!(
            s,
            "{:<24} {:>5} {:>8} {:>6} {:>9} {:>6} {:>7}",
            name,
            t.questions,
            t.answered,
            t.right,
            pct(t.precision()),
            opt(t.recall()),
            opt(t.false_positive_rate())
        );
        for (l, layer) in replay.layers.iter().enumerate() {
            if layer.replay.is_some() {
                let _ = write!(s, " {:>7}", t.by_layer.get(&l).copied().unwrap_or(0));
            }
        }
        s.push('\n');
    };
    for (kind, t) in &scores.kinds {
        row(&mut s, kind, t);
    }
    row(&mut s, "all", &scores.all);
    s
}

/// The whole report `kitbash calibrate` prints.
pub fn report(replay: &Replay, split: Split, budget: f64) -> (String, Vec<LayerCalibration>) {
    let mut s = String::new();
    let kept = replay.labels.iter().filter(|l| split.keeps(l)).count();
    let _ = writeln!(
        s,
        "Replayed {kept} labelled questions (split: {}) through {}.",
        match split {
            Split::Tune => "tune",
            Split::Heldout => "heldout",
            Split::All => "all",
        },
        replay
            .layers
            .iter()
            .filter(|l| l.replay.is_some())
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let skipped = replay.skipped();
    if !skipped.is_empty() {
        let _ = writeln!(
            s,
            "Not replayed (model workers need their servers): {}; here they never answer.",
            skipped.join(", ")
        );
    }
    let thresholds = configured_thresholds(replay);
    let _ = writeln!(
        s,
        "\nThe cascade at the configured thresholds ({}):",
        replay
            .layers
            .iter()
            .filter(|l| l.replay.is_some())
            .map(|l| format!("{} {:.2}", l.name, l.min_confidence))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let scores = replay.cascade(&thresholds, |l| split.keeps(l));
    s.push_str(&scores_table(&scores, replay));
    let cal = calibrate(replay, split, budget);
    for c in &cal {
        let _ = writeln!(
            s,
            "\n{}: precision and recall against min_confidence, on the questions that reach it",
            c.name
        );
        let _ = writeln!(
            s,
            "{:>9} {:>8} {:>6} {:>6} {:>9} {:>6} {:>7} {:>17}",
            "threshold",
            "answered",
            "right",
            "wrong",
            "precision",
            "recall",
            "error",
            "error 95% CI"
        );
        let mut rows: Vec<Point> = c.sweep.clone();
        rows.push(c.at_configured);
        if let Some(p) = c.chosen {
            rows.push(p);
        }
        rows.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
        rows.dedup_by(|a, b| a.threshold == b.threshold);
        for p in rows {
            let (err, (lo, hi)) = p.error();
            let mark = match (
                p.threshold == c.configured,
                c.chosen.map(|x| x.threshold) == Some(p.threshold),
            ) {
                (true, true) => "  <- configured, chosen",
                (true, false) => "  <- configured",
                (false, true) => "  <- chosen",
                _ => "",
            };
            let _ = writeln!(
                s,
                "{:>9.3} {:>8} {:>6} {:>6} {:>9} {:>6} {:>7} {:>17}{mark}",
                p.threshold,
                p.answered,
                p.right,
                p.wrong(),
                pct(p.precision()),
                pct(p.recall()),
                pct(err),
                format!("{:.3}-{:.3}", lo, hi)
            );
        }
        match c.chosen {
            Some(p) => {
                let (err, (lo, hi)) = p.error();
                let _ = writeln!(
                    s,
                    "Lowest threshold whose error stays within {budget} (95% upper bound): {:.3} \
                     (error {:.3}, 95% CI {:.3}-{:.3}; precision {:.3}, recall {:.3}); configured {:.3}.",
                    p.threshold,
                    err,
                    lo,
                    hi,
                    p.precision(),
                    p.recall(),
                    c.configured
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "No threshold keeps the error within {budget} with 95% confidence on these \
                     questions; the configured {:.3} stays.",
                    c.configured
                );
            }
        }
        let (bins, ece) = &c.reliability;
        let _ = writeln!(
            s,
            "Reliability of {}'s confidence (every answer it offered, before its threshold):",
            c.name
        );
        let _ = writeln!(
            s,
            "{:>11} {:>6} {:>10} {:>9}",
            "confidence", "n", "mean conf", "accuracy"
        );
        for b in bins {
            let _ = writeln!(
                s,
                "{:>4.1}-{:<6.1} {:>6} {:>10.3} {:>9.3}",
                b.lower,
                b.lower + 0.1,
                b.count,
                b.mean_confidence,
                b.accuracy
            );
        }
        let _ = writeln!(s, "Expected calibration error: {ece:.3}");
    }
    (s, cal)
}
