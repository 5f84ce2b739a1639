//! The layer charts' counts over time.
//!
//! Redis keeps each layer's counters (`<p>:stats:<layer>`) as running
//! totals, and its latency samples with their times. The latencies of the
//! last hour are read from the samples; the counts per minute (attempts,
//! hits, misses, timeouts, errors) are the differences between snapshots of
//! the totals, which the daemon serving the dashboard takes every
//! [`STEP`] and keeps for [`KEEP`] in memory (at most 370 snapshots of a
//! few counters per layer). So counts are known from the time this daemon
//! started; no key is added to Redis and nothing is added to the path of a
//! query.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::observe::metrics::{LayerCounters, Sample, Summary};
use crate::store::blackboard::Blackboard;

/// How often the counters are read.
pub const STEP: Duration = Duration::from_secs(10);

/// How long snapshots are kept: the charts' hour and a bucket more.
pub const KEEP: Duration = Duration::from_secs(61 * 60);

/// Snapshots of every layer's counters, oldest first.
#[derive(Debug, Default)]
pub struct CounterHistory {
    snapshots: VecDeque<(i64, Vec<LayerCounters>)>,
}

/// The counts of one layer in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    /// Attempts (skips excluded).
    pub attempts: u64,
    /// Confident answers.
    pub hits: u64,
    /// Answers below threshold.
    pub misses: u64,
    /// No reply in time.
    pub timeouts: u64,
    /// Failures.
    pub errors: u64,
}

impl Counts {
    /// What happened between `before` and `after`. A counter that went
    /// down (its stats were reset) counts from zero.
    fn between(before: &LayerCounters, after: &LayerCounters) -> Self {
        let d = |a: u64, b: u64| if b >= a { b - a } else { b };
        Self {
            attempts: d(before.attempts, after.attempts),
            hits: d(before.hits, after.hits),
            misses: d(before.misses, after.misses),
            timeouts: d(before.timeouts, after.timeouts),
            errors: d(before.errors, after.errors),
        }
    }
}

impl CounterHistory {
    /// Adds the counters read at `at_ms` (one entry per layer, in the
    /// cascade's order) and drops what is older than [`KEEP`].
    pub fn record(&mut self, at_ms: i64, counters: Vec<LayerCounters>) {
        self.snapshots.push_back((at_ms, counters));
        let oldest = at_ms - KEEP.as_millis() as i64;
        while self.snapshots.front().is_some_and(|(t, _)| *t < oldest) {
            self.snapshots.pop_front();
        }
    }

    /// When the first snapshot kept was taken.
    pub fn since_ms(&self) -> Option<i64> {
        self.snapshots.front().map(|(t, _)| *t)
    }

    /// The last snapshot at or before `t`, else the first one before `end`
    /// (a bucket the history began in counts from its beginning).
    fn at_or_before(&self, t: i64, end: i64) -> Option<&[LayerCounters]> {
        let later = self.snapshots.partition_point(|(s, _)| *s <= t);
        if later > 0 {
            return Some(&self.snapshots[later - 1].1);
        }
        self.snapshots
            .front()
            .filter(|(s, _)| *s < end)
            .map(|(_, c)| c.as_slice())
    }

    /// The counts of layer number `layer` in each of `n` buckets of
    /// `bucket_ms` from `from_ms`; `None` for a bucket before the history.
    pub fn buckets(
        &self,
        layer: usize,
        from_ms: i64,
        bucket_ms: i64,
        n: usize,
    ) -> Vec<Option<Counts>> {
        (0..n as i64)
            .map(|i| {
                let start = from_ms + i * bucket_ms;
                let end = start + bucket_ms;
                let before = self.at_or_before(start, end)?.get(layer)?;
                let after = self.at_or_before(end, end)?.get(layer)?;
                Some(Counts::between(before, after))
            })
            .collect()
    }
}

/// Reads every layer's counters every [`STEP`] into `history` until
/// `stop`. A failed read is skipped (the chart shows a gap's counts in the
/// next bucket).
pub async fn sample(
    bb: Blackboard,
    layers: Vec<String>,
    history: Arc<Mutex<CounterHistory>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let reads = layers.iter().map(|l| bb.layer_counters(l));
        match futures_util::future::try_join_all(reads).await {
            Ok(counters) => {
                let now = chrono::Utc::now().timestamp_millis();
                history
                    .lock()
                    .expect("counter history lock")
                    .record(now, counters);
            }
            Err(e) => tracing::debug!("dashboard counters not read: {e}"),
        }
    }
}

/// Latency summaries of `samples` in each of `n` buckets of `bucket_ms`
/// from `from_ms` (samples outside are ignored).
pub fn latency_buckets(samples: &[Sample], from_ms: i64, bucket_ms: i64, n: usize) -> Vec<Summary> {
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); n];
    for s in samples {
        let i = (s.ts_ms - from_ms).div_euclid(bucket_ms);
        if (0..n as i64).contains(&i) {
            values[i as usize].push(s.value);
        }
    }
    values.into_iter().map(Summary::of).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(attempts: u64, hits: u64) -> LayerCounters {
        LayerCounters {
            attempts,
            hits,
            misses: attempts - hits,
            ..Default::default()
        }
    }

    #[test]
    fn counts_per_bucket_are_differences_of_the_snapshots() {
        let mut h = CounterHistory::default();
        // Snapshots every 10 s from t = 100 s; 6 attempts (4 hits) a snapshot.
        for i in 0..13 {
            h.record(
                100_000 + i * 10_000,
                vec![counters(6 * i as u64, 4 * i as u64)],
            );
        }
        let b = h.buckets(0, 40_000, 60_000, 3);
        // [40, 100) s: before the history.
        assert_eq!(b[0], None);
        // [100, 160) s: snapshots at 100 … 160 s.
        assert_eq!(
            b[1].map(|c| (c.attempts, c.hits, c.misses)),
            Some((36, 24, 12))
        );
        // [160, 220) s: from the snapshot at 160 s to the last (220 s).
        assert_eq!(b[2].map(|c| c.attempts), Some(36));
        assert_eq!(h.since_ms(), Some(100_000));
    }

    #[test]
    fn a_bucket_the_history_began_in_counts_from_its_first_snapshot() {
        let mut h = CounterHistory::default();
        h.record(130_000, vec![counters(10, 5)]);
        h.record(150_000, vec![counters(16, 8)]);
        assert_eq!(
            h.buckets(0, 120_000, 60_000, 1)[0].map(|c| c.attempts),
            Some(6)
        );
    }

    #[test]
    fn a_reset_counts_from_zero_and_old_snapshots_go() {
        let mut h = CounterHistory::default();
        h.record(0, vec![counters(100, 50)]);
        h.record(10_000, vec![counters(3, 1)]);
        assert_eq!(h.buckets(0, 0, 60_000, 1)[0].map(|c| c.attempts), Some(3));
        h.record(KEEP.as_millis() as i64 + 20_000, vec![counters(5, 2)]);
        assert_eq!(h.since_ms(), Some(KEEP.as_millis() as i64 + 20_000));
        assert_eq!(h.snapshots.len(), 1);
    }

    #[test]
    fn latencies_fall_in_their_buckets() {
        let s = |ts_ms, value| Sample { ts_ms, value };
        let samples = [
            s(999, 9.0),
            s(1_000, 1.0),
            s(1_500, 3.0),
            s(2_000, 5.0),
            s(3_000, 7.0),
        ];
        let b = latency_buckets(&samples, 1_000, 1_000, 2);
        assert_eq!((b[0].count, b[0].max), (2, 3.0));
        assert_eq!((b[1].count, b[1].p50), (1, 5.0));
    }
}
