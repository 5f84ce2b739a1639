//! Kitbash answers natural-language queries from the cheapest layer that is
//! confident enough, with Redis as the only meeting point of its processes.
//!
//! The contract (key names, value shapes, worker protocol, event names,
//! configuration precedence) is `docs/design.md`; this crate implements it.
//!
//! # Map of the modules
//!
//! - [`config`]: the one settings tree; defaults → `kitbash_config.yaml` →
//!   `.env` → environment, with the source of every value.
//! - [`keys`]: every Redis key name, built from the prefix. Nothing else
//!   formats a key.
//! - [`connection`]: the shared auto-reconnecting connection, dedicated
//!   connections for blocking commands, and start-up retry.
//! - [`state`]: a query's record (`queries:state:<id>`), in the Python
//!   original's field names.
//! - [`blackboard`]: the typed async handle on Redis: states (atomic
//!   updates), the queue, health.
//! - [`grains`]: layer0's crystallised facts.
//! - [`matching`]: layer0's question normal form (the match key), and
//!   [`grains_file`], the JSONL/YAML grains files `kitbash grains load` reads.
//! - [`feed`]: the diagnostic stream: writing events, reading them back,
//!   one query's timeline.
//! - [`metrics`]: latency samples with percentiles, per-layer counters, and
//!   the maintenance that keeps every structure bounded.
//! - [`protocol`]: the worker protocol's job and reply shapes.
//! - [`names`]: daemon instance ids and worker names.
//! - `scripts` (private): every Lua script, with its `KEYS`/`ARGV` header
//!   in `src/scripts/*.lua`, and the one place that loads them.
//! - [`outage`]: one log line per Redis outage, not one per query.
//! - [`liveness`]: when a peer counts as dead (an absent health key, seen
//!   twice a heartbeat apart, never a failed read).
//! - [`orphans`]: finding entries in a live process's own processing list
//!   that none of its tasks holds (a lost response), and returning them.
//! - [`daemon`]: `kitbash serve`: taking, the cascade, replies, recovery,
//!   shutdown.
//!   Its HTTP endpoint (health, Prometheus) is [`daemon::http`].
//! - [`worker`]: `kitbash worker <kind>`: one runtime (taking jobs,
//!   deadlines, replies, heartbeats, shutdown) and a backend per kind; the
//!   model backends (bitnet, llm) share one HTTP client.
//! - [`telemetry`]: log set-up.
//! - [`client`]: enqueue, wait for the outcome (`kitbash query`, the REPL).
//! - [`acl`]: least-privilege Redis ACL users for the daemon, a worker and a client.
//! - [`bench`]: `kitbash bench`, the load generator and report.
//! - [`cli`]: the `kitbash` command line; one file per command.

pub mod acl;
pub mod bench;
pub mod blackboard;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod feed;
pub mod grains;
pub mod grains_file;
pub mod keys;
pub mod liveness;
pub mod matching;
pub mod metrics;
pub mod names;
pub mod orphans;
pub mod outage;
pub mod protocol;
mod scripts;
pub mod state;
pub mod telemetry;
pub mod worker;

pub use blackboard::{Blackboard, BlackboardError, Health, Limits};
pub use config::{LoadedConfig, Settings};
pub use connection::Connector;
pub use feed::{Event, EventKind, FeedEntry};
pub use grains::Grain;
pub use keys::Keys;
pub use state::{Answer, LayerAttempt, Outcome, QueryState, QueryStatus};
