//! Kitbash's integration tests, in one binary (one compile of the harness,
//! one link): real `redis-server`s on free ports, the real `kitbash`
//! binary, real worker processes. Run one area with a filter:
//! `cargo test --test suite faults::`, `cargo test --test suite daemon::`.
//!
//! - [`common`]: the one harness: private redis-servers, test contexts
//!   (settings, key prefix), waiting on observable state.
//! - [`store`]: the Redis layer (states, queue, feed, metrics, health,
//!   grains, configuration, connections, bad data).
//! - [`daemon`]: the daemon in process with test workers; its `support`
//!   module runs daemons and workers for other areas too.
//! - [`faults`]: the fault suite, with processes killed, frozen and cut off.
//! - one file per area beside them: the CLI, HTTP, workers and their
//!   backends, layer0 and cartridge evaluation, the labelled set and
//!   `kitbash calibrate` (`eval`), bounds, ACL, TLS, secrets,
//!   the compose stack, property tests, and the Redis Cluster harness
//!   (`cluster`: six real nodes, `common::cluster`).

mod common;

mod daemon;
mod faults;
mod store;

mod acl;
mod bounded;
mod browser;
mod cartridge;
mod cli;
mod cluster;
mod compose;
mod crystal;
mod dashboard;
mod eval;
mod http;
mod lanes;
mod layer0;
mod llama;
mod llm_backends;
mod props;
mod secrets;
mod tls;
mod worker;
