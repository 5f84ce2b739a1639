//! CPU time and memory of a local process, from `/proc` through the
//! `procfs` crate (clock ticks per second from the system, not assumed).
//! `kitbash bench` reports the daemons' usage with it; the tests check
//! memory bounds and idle CPU with it.

use std::time::Duration;

/// What one process has used so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Resident set size now (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
}

/// The usage of process `pid`, or `None` when it is gone or unreadable
/// (another user's process, or not Linux).
pub fn usage(pid: u32) -> Option<Usage> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = p.stat().ok()?;
    let status = p.status().ok()?;
    let ticks = stat.utime + stat.stime;
    let per_s = procfs::ticks_per_second().max(1);
    Some(Usage {
        cpu: Duration::from_micros(ticks * 1_000_000 / per_s),
        rss_bytes: status.vmrss.unwrap_or(0) * 1024,
        peak_rss_bytes: status.vmhwm.unwrap_or(0) * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_memory_and_a_dead_one_has_no_usage() {
        let me = usage(std::process::id()).expect("our own /proc entry");
        assert!(
            me.rss_bytes > 0 && me.peak_rss_bytes >= me.rss_bytes,
            "{me:?}"
        );
        // Pids are at most 2^22 on Linux: this one cannot exist.
        assert_eq!(usage(u32::MAX - 1), None);
    }
}
