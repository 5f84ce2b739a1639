//! Prometheus metrics of one daemon process (served at `/metrics`).
//! PLACEHOLDER: helper-3 implements this file with prometheus-client.

use crate::state::Outcome;

/// The daemon's Prometheus metrics.
#[derive(Debug, Default)]
pub struct PromMetrics {}

impl PromMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        Self {}
    }
    /// A query reached `status` (answered, unanswered, failed) after `latency_ms`.
    pub fn query_finished(&self, _status: &str, _latency_ms: f64) {}
    /// One attempt at `layer` ended with `outcome` after `latency_ms`.
    pub fn layer_attempt(&self, _layer: &str, _outcome: Outcome, _latency_ms: f64) {}
    /// A worker reply arrived after its query stopped waiting (or was never asked for).
    pub fn late_reply(&self) {}
    /// Queries a recovery returned to the queue.
    pub fn recovered(&self, _n: u64) {}
    /// Current queue depth.
    pub fn set_queue_depth(&self, _n: u64) {}
    /// Current queries in flight.
    pub fn set_in_flight(&self, _n: u64) {}
    /// The text exposition format.
    pub fn encode(&self) -> String {
        String::new()
    }
}
