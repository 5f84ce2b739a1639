//! How the CLI and the REPL show things: answers, timelines, stats, health.
//! Colour only when asked (the output is a terminal).

use std::fmt::Write as _;

use crate::client::latency_ms;
use crate::observe::feed::FeedEntry;
use crate::observe::metrics::LayerStats;
use crate::state::{QueryState, QueryStatus};
use crate::store::blackboard::{Health, ProcessRole};

/// ANSI styling that is a no-op when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    /// Whether to emit colour codes.
    pub color: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    /// Bold.
    pub fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    /// Dimmed.
    pub fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    /// Green.
    pub fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    /// Yellow.
    pub fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
    /// Red.
    pub fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }
}

/// A finished query as a user reads it: the answer, then where it came from.
/// How close to its layer's threshold a below-threshold answer must come to
/// be shown as a best guess: nearer than this fraction of the threshold, it
/// is a near miss worth seeing; further, it is noise (an unrelated fact that
/// happened to rank first).
pub const GUESS_FLOOR: f64 = 0.8;

/// A query's outcome for a person. `threshold` gives a layer's
/// `min_confidence` (to judge a best guess).
pub fn answer(s: &QueryState, p: Paint, threshold: &dyn Fn(&str) -> Option<f64>) -> String {
    let mut out = String::new();
    let lat = latency_ms(s)
        .map(|ms| format!("{ms:.1} ms"))
        .unwrap_or_else(|| "?".into());
    match (&s.status, &s.answer) {
        (QueryStatus::Answered, Some(a)) => {
            let _ = writeln!(out, "{}", p.bold(&a.text));
            let _ = writeln!(
                out,
                "  {} {} · confidence {:.2} · {} · source {}",
                p.green("answered"),
                a.layer,
                a.confidence,
                lat,
                a.source.as_deref().unwrap_or("-")
            );
            if let Some(c) = &a.crystallized {
                let _ = writeln!(
                    out,
                    "  crystallised from {}'s answer to query {} · expires {}",
                    c.layer, c.query_id, c.expires_at
                );
            }
        }
        (QueryStatus::Unanswered, best) => {
            let _ = writeln!(out, "{}", p.yellow("No layer was confident enough."));
            if let Some(a) = best {
                match threshold(&a.layer) {
                    Some(t) if a.confidence >= t * GUESS_FLOOR => {
                        let _ = writeln!(
                            out,
                            "  best guess, below {}'s threshold ({:.2} < {t:.2}): {}",
                            a.layer, a.confidence, a.text
                        );
                    }
                    Some(t) => {
                        let _ = writeln!(
                            out,
                            "  no plausible guess (the best, from {}, had confidence {:.2}, far below {t:.2})",
                            a.layer, a.confidence
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "  best guess from {} (confidence {:.2}): {}",
                            a.layer, a.confidence, a.text
                        );
                    }
                }
            }
            let tried: Vec<String> = s
                .layer_attempts
                .iter()
                .map(|a| format!("{} {}", a.layer, a.outcome.as_str()))
                .collect();
            let _ = writeln!(
                out,
                "  {} · {} · tried: {}",
                p.yellow("unanswered"),
                lat,
                tried.join(", ")
            );
        }
        (QueryStatus::Failed, _) => {
            let _ = writeln!(
                out,
                "{} {}",
                p.red("failed:"),
                s.error.as_deref().unwrap_or("(no reason given)")
            );
        }
        (status, _) => {
            let _ = writeln!(out, "{} ({status})", p.dim("no outcome yet"));
        }
    }
    let _ = write!(out, "  {}", p.dim(&format!("query {}", s.query_id)));
    out
}

/// One query's events with times relative to the first.
pub fn timeline(entries: &[FeedEntry], p: Paint) -> String {
    let Some(t0) = entries.first().and_then(|e| e.time()) else {
        return "no events (unknown id, or the feed has moved past them)".into();
    };
    let mut out = String::new();
    for e in entries {
        let rel = e
            .time()
            .map(|t| (t - t0).num_microseconds().unwrap_or(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        let ev = e.event().unwrap_or("?");
        // Padded before it is coloured: the colour codes take no column.
        let padded = format!("{ev:<16}");
        let name = match ev {
            "layer_hit" | "query_completed" => p.green(&padded),
            "layer_timeout" | "layer_error" | "query_failed" | "query_dead" => p.red(&padded),
            "layer_miss" | "layer_skipped" | "escalation" => p.yellow(&padded),
            _ => padded,
        };
        let mut line = format!("{:>+10.3} ms  {name}", rel);
        for field in ["layer", "confidence", "latency_ms", "worker", "reason"] {
            if let Some(v) = e.get(field) {
                let _ = write!(line, " {}={v}", p.dim(field));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out.trim_end().to_string()
}

/// Per-layer stats as a table.
pub fn stats(rows: &[LayerStats], p: Paint) -> String {
    let mut out = format!(
        "{}\n",
        p.bold(&format!(
            "{:<8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9}",
            "layer",
            "attempts",
            "hits",
            "hit%",
            "misses",
            "timeouts",
            "errors",
            "skips",
            "p50 ms",
            "p95 ms",
            "p99 ms"
        ))
    );
    for r in rows {
        let c = &r.counters;
        // No sample in the window: no percentile to show, not a zero.
        let ms = |v: f64| {
            if r.window.count == 0 {
                "-".to_string()
            } else {
                format!("{v:.3}")
            }
        };
        let _ = writeln!(
            out,
            "{:<8} {:>8} {:>8} {:>6.1}% {:>7} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9}",
            r.layer,
            c.attempts,
            c.hits,
            r.hit_rate * 100.0,
            c.misses,
            c.timeouts,
            c.errors,
            c.skips,
            ms(r.window.p50),
            ms(r.window.p95),
            ms(r.window.p99)
        );
    }
    out.trim_end().to_string()
}

/// Live daemons and workers, workers grouped by layer.
pub fn health(records: &[Health], layers: &[String], p: Paint) -> String {
    let mut out = String::new();
    let daemons: Vec<&Health> = records
        .iter()
        .filter(|h| h.role == ProcessRole::Daemon)
        .collect();
    let _ = writeln!(out, "{} {}", p.bold("daemons:"), daemons.len());
    for d in daemons {
        let in_flight = d.counters.get("in_flight").cloned().unwrap_or_default();
        let _ = writeln!(out, "  {} (in flight {in_flight})", d.name);
    }
    for layer in layers {
        let workers: Vec<&Health> = records
            .iter()
            .filter(|h| h.role == ProcessRole::Worker && h.layer.as_deref() == Some(layer.as_str()))
            .collect();
        let live = workers.iter().filter(|h| h.healthy).count();
        let label = if live > 0 {
            p.green(&format!("{live} live"))
        } else {
            p.yellow("no live worker")
        };
        let _ = writeln!(out, "{} {label}", p.bold(&format!("{layer}:")));
        for w in workers {
            let state = if w.healthy {
                "healthy".to_string()
            } else {
                format!("unhealthy: {}", w.reason.as_deref().unwrap_or("?"))
            };
            let done = w.counters.get("jobs_done").cloned().unwrap_or_default();
            let _ = writeln!(out, "  {} ({state}; jobs done {done})", w.name);
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Answer;

    fn unanswered(confidence: f64) -> QueryState {
        let mut s = QueryState::new("What is the capital of Atlantis?");
        s.status = QueryStatus::Unanswered;
        s.answer = Some(Answer {
            text: "Jerusalem".into(),
            layer: "layer2".into(),
            confidence,
            source: None,
            crystallized: None,
        });
        s
    }

    #[test]
    fn coloured_timeline_columns_line_up() {
        let entry = |id: &str, event: &str| FeedEntry {
            id: id.into(),
            fields: [
                ("event".to_string(), event.to_string()),
                ("ts".to_string(), "2026-11-30T10:00:00.000000Z".to_string()),
                ("layer".to_string(), "layer0".to_string()),
            ]
            .into_iter()
            .collect(),
        };
        let out = timeline(
            &[entry("1-0", "query_started"), entry("1-1", "layer_hit")],
            Paint { color: true },
        );
        // Where `layer=` starts once the colour codes are taken out.
        let column = |line: &str| {
            let mut plain = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                } else {
                    plain.push(c);
                }
            }
            plain.find("layer=").unwrap()
        };
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].contains('\x1b'), "coloured: {out:?}");
        assert_eq!(column(lines[0]), column(lines[1]), "{out:?}");
    }

    #[test]
    fn a_best_guess_shows_only_near_its_threshold_and_says_so() {
        let threshold = |l: &str| (l == "layer2").then_some(0.55);
        let p = Paint { color: false };
        let near = answer(&unanswered(0.5), p, &threshold);
        assert!(
            near.contains("below layer2's threshold (0.50 < 0.55): Jerusalem"),
            "{near}"
        );
        let far = answer(&unanswered(0.2), p, &threshold);
        assert!(far.contains("no plausible guess"), "{far}");
        assert!(!far.contains("Jerusalem"), "{far}");
    }
}
