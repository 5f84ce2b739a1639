//! Honest liveness: when a peer (daemon or worker) may be declared dead, so
//! its processing list can be taken over.
//!
//! A health key that is *absent* is the only sign of death. A read that
//! failed, or a value that cannot be parsed, says nothing about the peer:
//! it is not death. And absence must be seen twice: on one pass and again
//! on a later one at least one heartbeat interval after it, with no Redis
//! error in between. After an outage longer than the health TTL every key
//! has expired; the first pass after reconnecting only marks the peers as
//! suspects, and a live peer renews its key within its next heartbeat,
//! before the second look.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// What one read of a peer's health key said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The key exists (whatever it holds: a malformed record is a live
    /// writer with a bug, not a dead one).
    Present,
    /// Redis answered that there is no such key.
    Absent,
    /// The read failed: nothing is known.
    Unknown,
}

impl Reading {
    /// The reading of a [`crate::Blackboard::get_health`] result.
    pub fn of<T>(read: &Result<Option<T>, crate::BlackboardError>) -> Self {
        match read {
            Ok(Some(_)) => Reading::Present,
            Ok(None) => Reading::Absent,
            // A record that does not parse, or a key of another type: the
            // key is there.
            Err(crate::BlackboardError::MalformedHealth { .. })
            | Err(crate::BlackboardError::WrongType { .. }) => Reading::Present,
            Err(_) => Reading::Unknown,
        }
    }
}

/// When this process last failed to write its own health key: Redis was
/// out of its reach then, and peers' keys may have expired meanwhile
/// without them being dead. (Its own heartbeat, not every Redis error: the
/// heartbeat's `SET` fails only when Redis cannot be reached or refuses
/// writes, and it runs more often than a key lives, so no outage long
/// enough to expire keys goes unseen.)
#[derive(Debug, Default)]
pub struct HeartbeatFailures(Mutex<Option<Instant>>);

impl HeartbeatFailures {
    /// Records a failed heartbeat, now.
    pub fn failed(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// When the last heartbeat failed, if one ever did.
    pub fn last(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The peers seen without a health key, and since when. Bounded: a peer
/// leaves it when its key is seen again or it no longer owns a list
/// ([`Self::retain`]).
#[derive(Debug)]
pub struct DeathWatch {
    grace: Duration,
    after_failure: Duration,
    suspects: HashMap<String, Instant>,
}

impl DeathWatch {
    /// `grace`: the peers' heartbeat interval, the least time between the
    /// two passes that must both find a key absent.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            after_failure: grace,
            suspects: HashMap::new(),
        }
    }

    /// The watch for peers that beat every `beat` and reconnect with a
    /// backoff of at most `reconnect_max` (`redis.retry_max_delay_ms`):
    /// two looks a beat apart, and after a failed heartbeat of our own two
    /// beats plus that backoff before anyone is declared dead.
    pub fn for_peers(beat: Duration, reconnect_max: Duration) -> Self {
        Self::new(beat).after_failure(beat * 2 + reconnect_max)
    }

    /// How long after this process's last failed heartbeat no peer is
    /// declared dead (at least `grace`): a peer reconnects on its own
    /// schedule, up to its connection backoff after us, and then needs a
    /// heartbeat to renew its key.
    pub fn after_failure(mut self, quiet: Duration) -> Self {
        self.after_failure = quiet.max(self.grace);
        self
    }

    /// Records one pass's `reading` of `peer`'s key, taken at `now`;
    /// `last_error` is when this process last saw Redis fail (its
    /// [`HeartbeatFailures`]). Returns whether the peer is dead: absent
    /// now, absent on an earlier pass at least `grace` ago with no failure
    /// since, and the last failure (if any) at least the
    /// [`Self::after_failure`] time ago.
    pub fn observe(
        &mut self,
        peer: &str,
        reading: Reading,
        now: Instant,
        last_error: Option<Instant>,
    ) -> bool {
        match reading {
            Reading::Present | Reading::Unknown => {
                self.suspects.remove(peer);
                false
            }
            Reading::Absent => match self.suspects.get(peer) {
                Some(&since) if last_error.is_none_or(|e| e < since) => {
                    now.duration_since(since) >= self.grace
                        && last_error.is_none_or(|e| now.duration_since(e) >= self.after_failure)
                }
                // First seen absent, or Redis failed since: look again later.
                _ => {
                    self.suspects.insert(peer.to_string(), now);
                    false
                }
            },
        }
    }

    /// Forgets a peer (its list was taken over).
    pub fn forget(&mut self, peer: &str) {
        self.suspects.remove(peer);
    }

    /// Keeps only the suspects `keep` says yes to (those that still own a
    /// processing list), so the map stays as small as the set of lists.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.suspects.retain(|peer, _| keep(peer));
    }

    /// How many peers are suspected now.
    pub fn suspects(&self) -> usize {
        self.suspects.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_millis(1_000);

    #[tokio::test(start_paused = true)]
    async fn absent_twice_a_heartbeat_apart_is_death() {
        let mut w = DeathWatch::new(BEAT);
        assert!(!w.observe("a", Reading::Absent, Instant::now(), None));
        tokio::time::advance(Duration::from_millis(400)).await;
        // Seen again, but too soon: the peer may be about to renew.
        assert!(!w.observe("a", Reading::Absent, Instant::now(), None));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(w.observe("a", Reading::Absent, Instant::now(), None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_malformed_read_is_never_death() {
        let mut w = DeathWatch::new(BEAT);
        for _ in 0..5 {
            assert!(!w.observe("a", Reading::Unknown, Instant::now(), None));
            tokio::time::advance(BEAT * 2).await;
        }
        // An unknown reading between two absences clears the suspicion.
        assert!(!w.observe("a", Reading::Absent, Instant::now(), None));
        tokio::time::advance(BEAT * 2).await;
        assert!(!w.observe("a", Reading::Unknown, Instant::now(), None));
        tokio::time::advance(BEAT * 2).await;
        assert!(!w.observe("a", Reading::Absent, Instant::now(), None));
        assert_eq!(w.suspects(), 1);
        let parse_error: Result<Option<()>, _> = Err(crate::BlackboardError::MalformedHealth {
            key: "k".into(),
            reason: "not JSON".into(),
        });
        assert_eq!(Reading::of(&parse_error), Reading::Present);
        assert_eq!(Reading::of::<()>(&Ok(None)), Reading::Absent);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_redis_error_a_peer_gets_a_full_heartbeat() {
        let mut w = DeathWatch::new(BEAT);
        // Absent on a pass, then Redis fails (an outage: every key expired).
        assert!(!w.observe("a", Reading::Absent, Instant::now(), None));
        tokio::time::advance(BEAT * 3).await;
        let outage_ended = Instant::now();
        // The first pass after reconnecting: absent, but the error restarts
        // the clock.
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!w.observe("a", Reading::Absent, Instant::now(), Some(outage_ended)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!w.observe("a", Reading::Absent, Instant::now(), Some(outage_ended)));
        // The peer renewed its key in time: alive.
        assert!(!w.observe("a", Reading::Present, Instant::now(), Some(outage_ended)));
        assert_eq!(w.suspects(), 0);
        // A peer that really died is declared dead a heartbeat later.
        assert!(!w.observe("b", Reading::Absent, Instant::now(), Some(outage_ended)));
        tokio::time::advance(BEAT).await;
        assert!(w.observe("b", Reading::Absent, Instant::now(), Some(outage_ended)));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_peers_get_the_quiet_time_too() {
        let quiet = Duration::from_secs(5);
        let mut w = DeathWatch::new(BEAT).after_failure(quiet);
        let failed = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!w.observe("a", Reading::Absent, Instant::now(), Some(failed)));
        // Two looks a heartbeat apart are not enough this soon after a
        // failure: the peer may still be reconnecting.
        tokio::time::advance(BEAT * 2).await;
        assert!(!w.observe("a", Reading::Absent, Instant::now(), Some(failed)));
        tokio::time::advance(quiet).await;
        assert!(w.observe("a", Reading::Absent, Instant::now(), Some(failed)));
    }

    #[test]
    fn retain_bounds_the_suspects() {
        let mut w = DeathWatch::new(BEAT);
        let now = Instant::now();
        for p in ["a", "b", "c"] {
            w.observe(p, Reading::Absent, now, None);
        }
        w.retain(|p| p == "b");
        assert_eq!(w.suspects(), 1);
        w.forget("b");
        assert_eq!(w.suspects(), 0);
    }
}
