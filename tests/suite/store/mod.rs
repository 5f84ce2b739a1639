//! Integration tests of the core library against a real redis-server.

mod bad_data;
mod config;
mod connection;
mod feed;
mod grains;
mod health;
mod metrics;
mod queue;
mod states;
