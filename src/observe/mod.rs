//! What a user watches: the diagnostic feed, latency metrics and counters
//! (with the maintenance that keeps them bounded), a process's CPU and
//! memory, and log set-up.

pub mod feed;
pub mod metrics;
pub mod process;
pub mod telemetry;
