//! Kitbash answers natural-language queries from the cheapest layer that is
//! confident enough, with Redis as the only meeting point of its processes.
//!
//! The contract (key names, value shapes, worker protocol, event names,
//! configuration precedence) is `docs/design.md`; this crate implements it.
//!
//! # Map of the modules
//!
//! The data path is take → cascade → finish: a client ([`client`]) writes a
//! query to Redis, a daemon ([`daemon`]) takes it and walks it down the
//! layers (layer0 in process, [`layer0`]; the others through workers,
//! [`worker`]), and every decision lands in Redis ([`store`]) where users
//! watch it ([`observe`]).
//!
//! - [`config`]: the one settings tree; defaults → `kitbash_config.yaml` →
//!   `.env` → environment, with the source of every value; validation, TLS
//!   files, URL redaction.
//! - [`state`]: a query's record (`queries:state:<id>`), in the Python
//!   original's field names; [`protocol`]: the worker protocol's job and
//!   reply shapes. The value shapes of the contract.
//! - [`store`]: Redis access. [`store::keys`] builds every key name (nothing
//!   else formats a key); [`store::connection`] the shared auto-reconnecting
//!   connection and dedicated ones for blocking commands;
//!   [`store::blackboard`] the typed async handle (states, the queue,
//!   health); `store::scripts` every Lua script, with its `KEYS`/`ARGV`
//!   header in `src/store/scripts/*.lua`, loaded in one place;
//!   [`store::liveness`] when a peer counts as dead; [`store::orphans`]
//!   entries of a process's own list that none of its tasks holds;
//!   [`store::outage`] one log line per Redis outage; [`store::names`]
//!   instance and worker names; [`store::acl`] least-privilege ACL users.
//! - [`layer0`]: grains ([`layer0::grains`]), the match key they are found
//!   by and its second stage ([`layer0::matching`]), grains files
//!   ([`layer0::grains_file`]) and an in-process copy for calibration
//!   ([`layer0::memory`]).
//! - [`aliases`]: other names of entities and attribute phrasings, which
//!   layer0 and the cartridge layer read; [`calibrate`]: `kitbash
//!   calibrate`, labelled questions replayed through both layers.
//! - [`observe`]: the diagnostic stream and one query's timeline
//!   ([`observe::feed`]), latency samples, counters and the maintenance that
//!   keeps every structure bounded ([`observe::metrics`]), log set-up
//!   ([`observe::telemetry`]).
//! - [`daemon`]: `kitbash serve`: taking, the cascade, dispatch to workers
//!   and their replies, finishing and the dead list, recovery, shutdown,
//!   the HTTP endpoint ([`daemon::http`]).
//! - [`worker`]: `kitbash worker <kind>`: one runtime (taking jobs,
//!   deadlines, replies, heartbeats, shutdown) and a backend per kind; the
//!   model backends (bitnet, llm) share one HTTP client.
//! - [`client`]: enqueue and wait for the outcome (`kitbash query`, the
//!   REPL), and [`client::bench`](mod@client::bench), the load generator.
//! - [`cli`]: the `kitbash` command line; one file per command.

pub mod aliases;
pub mod calibrate;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod layer0;
pub mod observe;
pub mod protocol;
pub mod state;
pub mod store;
pub mod worker;

pub use config::{LoadedConfig, Settings};
pub use layer0::grains::Grain;
pub use observe::feed::{Event, EventKind, FeedEntry};
pub use state::{Answer, LayerAttempt, Outcome, QueryState, QueryStatus};
pub use store::blackboard::{Blackboard, BlackboardError, Health, Limits};
pub use store::connection::Connector;
pub use store::keys::Keys;
