//! What a running daemon knows about itself, shared with its HTTP endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::prom::PromMetrics;
use crate::state::now_rfc3339;
use crate::store::liveness::HeartbeatFailures;
use crate::store::outage::OutageLog;

/// Live status of one daemon instance. Cheap to read from any task.
#[derive(Debug)]
pub struct DaemonStatus {
    /// This daemon's instance id.
    pub instance: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    redis_ok: AtomicBool,
    /// An outage is one log line, not one per query and retry.
    outage: OutageLog,
    loop_running: AtomicBool,
    in_flight: AtomicU64,
    /// Prometheus metrics of this process.
    pub prom: PromMetrics,
    /// When this daemon last could not write its health key.
    pub heartbeat_failures: HeartbeatFailures,
}

impl DaemonStatus {
    /// A status for `instance`: not ready until Redis answers and the loop runs.
    pub fn new(instance: impl Into<String>) -> Self {
        Self {
            instance: instance.into(),
            started_at: now_rfc3339(),
            redis_ok: AtomicBool::new(false),
            outage: OutageLog::default(),
            loop_running: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            prom: PromMetrics::new(),
            heartbeat_failures: HeartbeatFailures::default(),
        }
    }

    /// Ready = Redis answered the last time it was asked and the taking loop runs.
    pub fn is_ready(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed) && self.loop_running.load(Ordering::Relaxed)
    }

    /// Whether Redis answered the last time it was asked.
    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
    }

    /// Records whether Redis answers.
    pub fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    /// Records that Redis failed `what`: not ready, and one error line for
    /// the whole outage (the rest at debug level).
    pub fn redis_failed(&self, what: &str, err: &dyn std::fmt::Display) {
        self.set_redis_ok(false);
        self.outage.failed(&self.instance, what, err);
    }

    /// Records that Redis answered; logs once when it comes back.
    pub fn redis_answered(&self) {
        self.set_redis_ok(true);
        self.outage.answered(&self.instance);
    }

    /// Whether the taking loop runs.
    pub fn loop_running(&self) -> bool {
        self.loop_running.load(Ordering::Relaxed)
    }

    /// Records whether the taking loop runs.
    pub fn set_loop_running(&self, running: bool) {
        self.loop_running.store(running, Ordering::Relaxed);
    }

    /// Queries being worked on now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// One more query in flight.
    pub fn begin_query(&self) {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.prom.set_in_flight(n);
    }

    /// One query fewer in flight.
    pub fn end_query(&self) {
        let n = self
            .in_flight
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        self.prom.set_in_flight(n);
    }
}
