//! The daemon against a real redis-server, with test workers speaking the
//! worker protocol of docs/design.md.

pub mod support;

mod bad_entries;
mod cascade;
mod crash;
mod fencing;
mod http_live;
mod shutdown;
