//! One log line per Redis outage, not one per query, slot or retry.
//!
//! Every loop and task that talks to Redis reports failures and successes to
//! one [`OutageLog`] per process: the first failure is logged at error level
//! with what failed and why, the rest at debug level, and the first success
//! after a logged outage is logged once at info level. Right after an outage
//! each connection of the process may find its socket dead once: failures
//! within [`QUIET`] of a logged recovery stay at debug level unless they last
//! [`PERSIST`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// After a logged recovery, a new failure is logged only if it lasts [`PERSIST`].
pub const QUIET: Duration = Duration::from_secs(10);
/// How long a failure within [`QUIET`] must last to be logged.
pub const PERSIST: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct Outage {
    /// When the current outage began.
    started: Option<Instant>,
    /// Whether its error line was written (then its end is logged).
    logged: bool,
    /// When the last logged outage ended.
    last_recovered: Option<Instant>,
}

/// The shared "is Redis failing" state of one process.
#[derive(Debug, Default)]
pub struct OutageLog {
    failing: AtomicBool,
    state: Mutex<Outage>,
}

impl OutageLog {
    /// Records that Redis failed `what`; logs at error level once per outage.
    pub fn failed(&self, who: &str, what: &str, err: &dyn std::fmt::Display) {
        self.failing.store(true, Ordering::Relaxed);
        let mut st = self.lock();
        let started = *st.started.get_or_insert_with(Instant::now);
        let flap =
            st.last_recovered.is_some_and(|t| t.elapsed() < QUIET) && started.elapsed() < PERSIST;
        if st.logged || flap {
            tracing::debug!(%who, "Redis still failing ({what}): {err}");
            return;
        }
        st.logged = true;
        tracing::error!(
            %who,
            "Redis is not answering ({what}: {err}); retrying with backoff, work waits; \
             further errors are logged at debug level until it answers"
        );
    }

    /// Records that Redis answered; logs once when a logged outage ends.
    pub fn answered(&self, who: &str) {
        if !self.failing.load(Ordering::Relaxed) || !self.failing.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut st = self.lock();
        st.started = None;
        if std::mem::take(&mut st.logged) {
            st.last_recovered = Some(Instant::now());
            tracing::info!(%who, "Redis answers again; serving");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outage> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The wait between retries of a loop while Redis (or a peer) fails: the
/// one retry policy of the program. By default 50 ms, doubling up to 1 s,
/// back to 50 ms once it answers: short at first, so service resumes soon
/// after a restart; capped, so an outage is no busy loop.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(1))
    }
}

impl Backoff {
    /// Waits from `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next try; the one after is twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The wait [`Self::next_wait`] will give, without taking it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Redis answered: start again from the shortest wait.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_outage_and_flaps_after_it_stay_quiet() {
        let log = OutageLog::default();
        assert!(!log.failing.load(Ordering::Relaxed));
        log.failed("t", "taking", &"refused");
        assert!(log.failing.load(Ordering::Relaxed));
        assert!(log.lock().logged);
        log.failed("t", "finishing", &"refused");
        log.answered("t");
        assert!(!log.failing.load(Ordering::Relaxed));
        assert!(!log.lock().logged);
        assert!(log.lock().last_recovered.is_some());
        // A flap right after: failing again, but no second error line.
        log.failed("t", "taking", &"broken pipe");
        assert!(log.failing.load(Ordering::Relaxed));
        assert!(!log.lock().logged);
        // It ends without a recovery line either.
        log.answered("t");
        assert!(!log.failing.load(Ordering::Relaxed));
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(50));
        let mut custom = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        assert_eq!(custom.peek(), Duration::from_millis(100));
        let waits: Vec<u64> = (0..4)
            .map(|_| custom.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 300, 300]);
    }
}
