//! Prometheus metrics of one daemon process (served at `/metrics`).
//!
//! Every family is registered once, in [`PromMetrics::new`], with the prefix
//! `kitbash_`. The recording methods run on the hot path of every query, so
//! they do not allocate once a layer has been seen: the counter and histogram
//! handles of each layer are created on first use (or up front with
//! [`PromMetrics::register_layers`]) and kept in a small map looked up by
//! `&str`. prometheus-client's handles are `Arc`s over atomics, so a cached
//! handle and the one the registry encodes are the same metric.
//!
//! The exposition is OpenMetrics text ([`PromMetrics::encode`],
//! [`CONTENT_TYPE`]), which Prometheus scrapes natively.

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::state::Outcome;

/// The content type of [`PromMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histograms, in seconds: 0.1 ms to 30 s, about
/// 2.5× apart, so a layer0 lookup and a large-LLM answer both land in
/// buckets fine enough to read percentiles from.
pub const LATENCY_BUCKETS_S: [f64; 17] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Terminal statuses of a query, the values of the `status` label.
const STATUSES: [&str; 3] = ["answered", "unanswered", "failed"];

/// Every outcome, in [`outcome_index`] order.
const OUTCOMES: [Outcome; 5] = [
    Outcome::Hit,
    Outcome::Miss,
    Outcome::Timeout,
    Outcome::Error,
    Outcome::Skipped,
];

fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Hit => 0,
        Outcome::Miss => 1,
        Outcome::Timeout => 2,
        Outcome::Error => 3,
        Outcome::Skipped => 4,
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_S)
}

/// Milliseconds to the seconds Prometheus wants; `None` for a value that
/// would poison a histogram's sum (NaN, infinite).
fn seconds(latency_ms: f64) -> Option<f64> {
    latency_ms.is_finite().then(|| latency_ms.max(0.0) / 1000.0)
}

/// Clamps a count into a gauge's `i64`.
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LayerOutcomeLabels {
    layer: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LayerLabels {
    layer: String,
}

/// The handles of one layer's series.
struct LayerHandles {
    /// Attempt counters, indexed by [`outcome_index`].
    attempts: [Counter; 5],
    latency: Histogram,
}

/// The daemon's Prometheus metrics.
pub struct PromMetrics {
    registry: Registry,
    queries_finished: Family<StatusLabels, Counter>,
    /// Handles of `queries_finished` for [`STATUSES`], same order.
    finished_by_status: [Counter; 3],
    query_latency: Histogram,
    layer_attempts: Family<LayerOutcomeLabels, Counter>,
    layer_latency: Family<LayerLabels, Histogram, fn() -> Histogram>,
    /// Cached handles per layer name. A std `RwLock` is right here: it is
    /// held only for a map lookup and a few atomic updates, never across an
    /// await, and after start-up it is only ever read.
    layers: RwLock<HashMap<String, LayerHandles>>,
    late_replies: Counter,
    recovered: Counter,
    fenced: Counter,
    queue_depth: Gauge,
    in_flight: Gauge,
}

impl std::fmt::Debug for PromMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layers: Vec<String> = match self.layers.read() {
            Ok(map) => map.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        f.debug_struct("PromMetrics")
            .field("layers", &layers)
            .field("queue_depth", &self.queue_depth.get())
            .field("in_flight", &self.in_flight.get())
            .finish_non_exhaustive()
    }
}

impl Default for PromMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PromMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kitbash");

        let queries_finished = Family::<StatusLabels, Counter>::default();
        registry.register(
            "queries_finished",
            "Queries that reached a terminal status",
            queries_finished.clone(),
        );
        let finished_by_status = STATUSES.map(|status| {
            queries_finished.get_or_create_owned(&StatusLabels {
                status: status.to_string(),
            })
        });

        let query_latency = latency_histogram();
        registry.register_with_unit(
            "query_latency",
            "Time from taking a query to its terminal status",
            Unit::Seconds,
            query_latency.clone(),
        );

        let layer_attempts = Family::<LayerOutcomeLabels, Counter>::default();
        registry.register(
            "layer_attempts",
            "Layer attempts by layer and outcome (hit, miss, timeout, error, skipped)",
            layer_attempts.clone(),
        );

        let layer_latency =
            Family::<LayerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register_with_unit(
            "layer_latency",
            "Time spent on one layer attempt (skips excluded)",
            Unit::Seconds,
            layer_latency.clone(),
        );

        let late_replies = Counter::default();
        registry.register(
            "late_replies",
            "Worker replies that arrived after their query stopped waiting",
            late_replies.clone(),
        );

        let recovered = Counter::default();
        registry.register(
            "recovered_queries",
            "Queries returned to the queue: from a dead daemon's processing list, or orphaned in this daemon's own",
            recovered.clone(),
        );

        let fenced = Counter::default();
        registry.register(
            "fenced_queries",
            "Queries this daemon stopped working on because it no longer held them (a peer recovered or finished them)",
            fenced.clone(),
        );

        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Queries waiting in the queue (as last read from Redis)",
            queue_depth.clone(),
        );

        let in_flight = Gauge::default();
        registry.register(
            "queries_in_flight",
            "Queries this daemon is working on now",
            in_flight.clone(),
        );

        Self {
            registry,
            queries_finished,
            finished_by_status,
            query_latency,
            layer_attempts,
            layer_latency,
            layers: RwLock::new(HashMap::new()),
            late_replies,
            recovered,
            fenced,
            queue_depth,
            in_flight,
        }
    }

    /// Creates the series of `layers` now, so they show (at zero) before the
    /// first attempt. Optional: a layer is also registered on first use.
    pub fn register_layers<'a>(&self, layers: impl IntoIterator<Item = &'a str>) {
        for layer in layers {
            self.with_layer(layer, |_| ());
        }
    }

    /// A query reached `status` (answered, unanswered, failed) after `latency_ms`.
    pub fn query_finished(&self, status: &str, latency_ms: f64) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                self.finished_by_status[i].inc();
            }
            None => {
                // Not a terminal status the contract names; count it under its
                // own label rather than lose it (allocates, but never happens
                // on the normal path).
                tracing::debug!(status, "query finished with an unexpected status");
                self.queries_finished
                    .get_or_create(&StatusLabels {
                        status: status.to_string(),
                    })
                    .inc();
            }
        }
        if let Some(s) = seconds(latency_ms) {
            self.query_latency.observe(s);
        }
    }

    /// One attempt at `layer` ended with `outcome` after `latency_ms`.
    /// Skips count as attempts with outcome `skipped` but add no latency.
    pub fn layer_attempt(&self, layer: &str, outcome: Outcome, latency_ms: f64) {
        self.with_layer(layer, |h| {
            h.attempts[outcome_index(outcome)].inc();
            if outcome != Outcome::Skipped
                && let Some(s) = seconds(latency_ms)
            {
                h.latency.observe(s);
            }
        });
    }

    /// A worker reply arrived after its query stopped waiting (or was never asked for).
    pub fn late_reply(&self) {
        self.late_replies.inc();
    }

    /// Queries a recovery returned to the queue.
    pub fn recovered(&self, n: u64) {
        self.recovered.inc_by(n);
    }

    /// A query this daemon stopped working on: it no longer held it.
    pub fn fenced(&self) {
        self.fenced.inc();
    }

    /// Current queue depth.
    pub fn set_queue_depth(&self, n: u64) {
        self.queue_depth.set(gauge_value(n));
    }

    /// Current queries in flight.
    pub fn set_in_flight(&self, n: u64) {
        self.in_flight.set(gauge_value(n));
    }

    /// The text exposition format: OpenMetrics text, ending in `# EOF`
    /// (serve it as [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; an encoder refusing a value
            // would, and a scrape must still get an answer.
            tracing::error!(error = %e, "encoding the Prometheus metrics failed");
        }
        out
    }

    /// Runs `f` on `layer`'s handles, creating them on first use.
    fn with_layer(&self, layer: &str, f: impl FnOnce(&LayerHandles)) {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // map itself is always consistent (inserts are single calls).
        {
            let map = self.layers.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = map.get(layer) {
                f(h);
                return;
            }
        }
        let mut map = self.layers.write().unwrap_or_else(|e| e.into_inner());
        let h = map
            .entry(layer.to_string())
            .or_insert_with(|| self.new_layer_handles(layer));
        f(h);
    }

    fn new_layer_handles(&self, layer: &str) -> LayerHandles {
        LayerHandles {
            attempts: OUTCOMES.map(|outcome| {
                self.layer_attempts
                    .get_or_create_owned(&LayerOutcomeLabels {
                        layer: layer.to_string(),
                        outcome: outcome.as_str(),
                    })
            }),
            latency: self.layer_latency.get_or_create_owned(&LayerLabels {
                layer: layer.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_outcomes_are_preregistered() {
        let m = PromMetrics::new();
        m.register_layers(["layer0"]);
        let text = m.encode();
        for status in STATUSES {
            assert!(
                text.contains(&format!(
                    "kitbash_queries_finished_total{{status=\"{status}\"}} 0"
                )),
                "{text}"
            );
        }
        for outcome in OUTCOMES {
            assert!(
                text.contains(&format!(
                    "kitbash_layer_attempts_total{{layer=\"layer0\",outcome=\"{}\"}} 0",
                    outcome.as_str()
                )),
                "{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn recording_updates_the_exposition() {
        let m = PromMetrics::new();
        m.query_finished("answered", 1.5);
        m.query_finished("answered", 2.5);
        m.query_finished("weird", 1.0);
        m.layer_attempt("layer2", Outcome::Hit, 3.0);
        m.layer_attempt("layer2", Outcome::Skipped, 0.0);
        m.layer_attempt("layer2", Outcome::Timeout, f64::NAN);
        m.late_reply();
        m.recovered(3);
        m.fenced();
        m.set_queue_depth(7);
        m.set_in_flight(2);
        let text = m.encode();
        for line in [
            "kitbash_queries_finished_total{status=\"answered\"} 2",
            "kitbash_queries_finished_total{status=\"weird\"} 1",
            "kitbash_query_latency_seconds_count 3",
            "kitbash_layer_attempts_total{layer=\"layer2\",outcome=\"hit\"} 1",
            "kitbash_layer_attempts_total{layer=\"layer2\",outcome=\"skipped\"} 1",
            "kitbash_layer_attempts_total{layer=\"layer2\",outcome=\"timeout\"} 1",
            // The skip and the NaN add no latency sample.
            "kitbash_layer_latency_seconds_count{layer=\"layer2\"} 1",
            "kitbash_late_replies_total 1",
            "kitbash_recovered_queries_total 3",
            "kitbash_fenced_queries_total 1",
            "kitbash_queue_depth 7",
            "kitbash_queries_in_flight 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn latency_is_observed_in_seconds() {
        let m = PromMetrics::new();
        m.query_finished("answered", 250.0);
        let text = m.encode();
        assert!(
            text.lines()
                .any(|l| l == "kitbash_query_latency_seconds_sum 0.25"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "kitbash_query_latency_seconds_bucket{le=\"0.25\"} 1"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "kitbash_query_latency_seconds_bucket{le=\"0.1\"} 0"),
            "{text}"
        );
    }
}
