//! What a user watches: the diagnostic feed, latency metrics and counters
//! (with the maintenance that keeps them bounded), and log set-up.

pub mod feed;
pub mod metrics;
pub mod telemetry;
