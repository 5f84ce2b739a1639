//! The fault suite: real `kitbash serve` and `kitbash worker` processes and a
//! real `redis-server`, with faults injected: processes killed with SIGKILL,
//! processes frozen (SIGSTOP) past their health TTL and woken, Redis
//! restarted and taken away, a slow and flaky link, several daemons and
//! workers at once. Each test counts what it pushed, what ended, and what
//! ended twice; figures print with `--nocapture`.

pub mod support;

mod garbage;
mod kill_daemon;
mod kill_worker;
mod outage;
mod redis_restart;
mod slow_link;
mod stall;
mod two_daemons;
