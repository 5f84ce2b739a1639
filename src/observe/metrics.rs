//! Latency samples (`<p>:metrics:<name>`), per-layer counters
//! (`<p>:stats:<layer>`), and the maintenance that keeps every structure
//! bounded.
//!
//! A sample is one sorted-set member scored by its unix-ms time. The member
//! is `<value>|<writer><seq>`: unique per sample, so two samples with the
//! same value are two members (the Python original used the value as the
//! member and silently lost repeats).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;

use crate::state::Outcome;
use crate::store::blackboard::{Blackboard, BlackboardError, Result};

/// Distinguishes this process's members from other writers'.
static WRITER: LazyLock<String> =
    LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string());
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Samples this process added to each metric since it last trimmed it.
static SINCE_TRIM: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

/// One sample in this many of a metric also trims that metric (see
/// [`Blackboard::add_sample_to`]).
pub const TRIM_EVERY: u64 = 64;

/// Whether this sample of `metric` is the one in [`TRIM_EVERY`] that trims.
/// Counted per metric: a process-wide count would alias with the fixed order
/// in which a query writes its samples (layer0, then the query's own, …), so
/// that some metric never got the trimming turn and grew until maintenance.
/// `added` samples at once (one batch) count as that many turns.
fn trim_turn(metric: &str, added: u64) -> bool {
    let mut counts = SINCE_TRIM.lock().expect("trim counts lock");
    let n = match counts.get_mut(metric) {
        Some(n) => n,
        None => counts.entry(metric.to_string()).or_insert(0),
    };
    *n += added;
    if *n >= TRIM_EVERY {
        *n = 0;
        true
    } else {
        false
    }
}

/// What queries add to the counters and metrics, kept as data until their
/// finishing step writes it ([`Blackboard::add_tally_to`]). The tallies of
/// queries finished together are merged first, so a batch costs one
/// HINCRBY per counter and one ZADD per metric however many queries it
/// finishes.
#[derive(Debug, Default)]
pub struct Tally {
    /// Increments by (hash key, field), in first-seen order.
    increments: Vec<((String, &'static str), i64)>,
    /// Crystallised grains hit: their key and expiry (unix ms), which a
    /// leftover hash without one gets (`PEXPIREAT … NX`).
    expiries: Vec<(String, i64)>,
    /// Latency samples: metric, ms, unix ms.
    samples: Vec<(String, f64, i64)>,
}

impl Tally {
    /// Adds `by` to `field` of the hash `key`.
    pub fn incr(&mut self, key: &str, field: &'static str, by: i64) {
        match self
            .increments
            .iter_mut()
            .find(|((k, f), _)| *f == field && k == key)
        {
            Some((_, n)) => *n += by,
            None => self.increments.push(((key.to_string(), field), by)),
        }
    }

    /// Gives the hash `key` an expiry at `at_ms` unless it has one.
    pub fn expire_at_nx(&mut self, key: &str, at_ms: i64) {
        if !self.expiries.iter().any(|(k, _)| k == key) {
            self.expiries.push((key.to_string(), at_ms));
        }
    }

    /// Records one sample of `metric`: `value` ms, taken at `ts_ms`.
    pub fn sample(&mut self, metric: String, value: f64, ts_ms: i64) {
        self.samples.push((metric, value, ts_ms));
    }

    /// Releases the spare capacity (a query about to wait keeps only
    /// what it recorded).
    pub fn shrink_to_fit(&mut self) {
        self.increments.shrink_to_fit();
        self.expiries.shrink_to_fit();
        self.samples.shrink_to_fit();
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.increments.is_empty() && self.expiries.is_empty() && self.samples.is_empty()
    }

    /// One tally holding all of `tallies`: increments of the same counter
    /// summed, expiries once per key, every sample.
    pub fn merged<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Tally {
        let mut out = Tally::default();
        let mut at: HashMap<(&'a str, &'static str), usize> = HashMap::new();
        let mut expiring: std::collections::HashSet<&'a str> = Default::default();
        for t in tallies {
            for ((key, field), by) in &t.increments {
                match at.get(&(key.as_str(), *field)) {
                    Some(&i) => out.increments[i].1 += by,
                    None => {
                        at.insert((key.as_str(), field), out.increments.len());
                        out.increments.push(((key.clone(), field), *by));
                    }
                }
            }
            for (key, at_ms) in &t.expiries {
                if expiring.insert(key.as_str()) {
                    out.expiries.push((key.clone(), *at_ms));
                }
            }
            out.samples.extend(t.samples.iter().cloned());
        }
        out
    }
}

/// The metric holding one layer's latencies, in ms.
pub fn layer_latency_metric(layer: &str) -> String {
    format!("latency:{layer}")
}

/// The metric holding end-to-end query latencies, in ms (the latency metric
/// of the pseudo-layer `query`).
pub const QUERY_LATENCY_METRIC: &str = "latency:query";

/// What a query's metadata carries to mark it as benchmark traffic:
/// `{"bench": true}`. `kitbash bench` marks its queries so.
pub const BENCH_MARK: &str = "bench";

/// The name a benchmark query's counters and samples are kept under instead
/// of `name` (a layer, or `query` for the end-to-end latency): `bench:<name>`,
/// so `kitbash:stats:bench:layer0` and `kitbash:metrics:latency:bench:layer0`.
/// A deployment's own statistics never count benchmark traffic, and
/// `kitbash bench` deletes these keys when it ends.
pub fn bench_scoped(name: &str) -> String {
    format!("{BENCH_MARK}:{name}")
}

/// Whether a query's metadata marks it as benchmark traffic.
pub fn is_bench(metadata: &serde_json::Value) -> bool {
    metadata.get(BENCH_MARK) == Some(&serde_json::Value::Bool(true))
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When, in unix milliseconds.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
}

/// Summary of a window of samples.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Mean value.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The value at quantile `q` of sorted `values` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Summary {
    /// Summarises `values` (any order).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Self {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            max: v[v.len() - 1],
            p50: quantile(&v, 0.50),
            p95: quantile(&v, 0.95),
            p99: quantile(&v, 0.99),
        }
    }
}

/// The O(1) counters of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LayerCounters {
    /// Attempts, skips excluded.
    pub attempts: u64,
    /// Confident answers.
    pub hits: u64,
    /// Answers below threshold.
    pub misses: u64,
    /// No reply in time.
    pub timeouts: u64,
    /// Failures.
    pub errors: u64,
    /// Not tried (disabled, no live worker).
    pub skips: u64,
    /// Sum of attempt latencies, in microseconds.
    pub latency_sum_us: u64,
}

/// What `kitbash stats` shows for one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStats {
    /// Layer name.
    pub layer: String,
    /// Counters since the stats were last reset.
    pub counters: LayerCounters,
    /// hits / attempts (0 when no attempt).
    pub hit_rate: f64,
    /// Mean attempt latency over all attempts, in ms.
    pub mean_latency_ms: f64,
    /// Latency percentiles over the metric window.
    pub window: Summary,
}

impl Blackboard {
    /// Appends the commands recording one sample of `metric` to `pipe`: a
    /// ZADD, and on one sample of that metric in [`TRIM_EVERY`] of this
    /// process also the age and count trims and a TTL. Between two trims a
    /// metric can exceed its cap by less than that many samples per writer;
    /// [`Self::maintain`] (run by every daemon every few seconds) trims every
    /// metric too.
    pub fn add_sample_to(&self, pipe: &mut redis::Pipeline, metric: &str, value: f64, ts_ms: i64) {
        self.add_samples_to(pipe, metric, &[(value, ts_ms)]);
    }

    /// [`Self::add_sample_to`] for several samples of one metric: one ZADD
    /// with all of them, and the trims when one of them takes the turn.
    pub fn add_samples_to(&self, pipe: &mut redis::Pipeline, metric: &str, samples: &[(f64, i64)]) {
        let Some(newest) = samples.iter().map(|&(_, ts)| ts).max() else {
            return;
        };
        let trim = trim_turn(metric, samples.len() as u64);
        self.add_samples(pipe, metric, samples, newest, trim);
    }

    fn add_samples(
        &self,
        pipe: &mut redis::Pipeline,
        metric: &str,
        samples: &[(f64, i64)],
        newest_ms: i64,
        trim: bool,
    ) {
        let key = self.keys.metric(metric);
        let zadd = pipe.cmd("ZADD").arg(&key);
        for &(value, ts_ms) in samples {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            zadd.arg(ts_ms).arg(format!("{value}|{}{seq}", *WRITER));
        }
        zadd.ignore();
        if trim {
            let retention_ms = (self.limits.metric_retention_s * 1000) as i64;
            pipe.zrembyscore(&key, "-inf", format!("({}", newest_ms - retention_ms))
                .ignore()
                .zremrangebyrank(&key, 0, -(self.limits.metric_max_samples as isize) - 1)
                .ignore()
                .pexpire(&key, retention_ms)
                .ignore();
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Records one sample of `metric`, stamped now, and trims the metric.
    pub async fn record_metric(&self, metric: &str, value: f64) -> Result<()> {
        let mut pipe = redis::pipe();
        let now = chrono::Utc::now().timestamp_millis();
        self.add_samples(&mut pipe, metric, &[(value, now)], now, true);
        let mut conn = self.conn.clone();
        let key = self.keys.metric(metric);
        let _: () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "sorted set"))?;
        Ok(())
    }

    /// Samples of `metric` from the last `window`, oldest first. Members that
    /// are not `<value>|…` (written by something else) are skipped.
    /// In cluster mode, every partition's samples, merged in time order.
    pub async fn metric_window(&self, metric: &str, window: Duration) -> Result<Vec<Sample>> {
        let now = chrono::Utc::now().timestamp_millis();
        let from = now - window.as_millis() as i64;
        let mut out = Vec::new();
        for keys in self.keys.all_partitions() {
            let key = keys.metric(metric);
            let mut conn = self.conn.clone();
            let raw: Vec<(String, f64)> =
                conn.zrangebyscore_withscores(&key, from, "+inf")
                    .await
                    .map_err(|e| BlackboardError::on_key(e, &key, "sorted set"))?;
            out.extend(raw.into_iter().filter_map(|(member, score)| {
                let value = member.split('|').next()?.parse::<f64>().ok()?;
                Some(Sample {
                    ts_ms: score as i64,
                    value,
                })
            }));
        }
        if self.keys.partitions() > 1 {
            out.sort_by_key(|s| s.ts_ms);
        }
        Ok(out)
    }

    /// Count, mean and percentiles of `metric` over the last `window`.
    pub async fn metric_summary(&self, metric: &str, window: Duration) -> Result<Summary> {
        let samples = self.metric_window(metric, window).await?;
        Ok(Summary::of(samples.iter().map(|s| s.value)))
    }

    /// Adds the counter increments of one attempt at `layer` to `tally`.
    pub fn add_attempt_to(
        &self,
        tally: &mut Tally,
        layer: &str,
        outcome: Outcome,
        latency_ms: f64,
    ) {
        let key = self.keys.stats(layer);
        let field = match outcome {
            Outcome::Hit => "hits",
            Outcome::Miss => "misses",
            Outcome::Timeout => "timeouts",
            Outcome::Error => "errors",
            Outcome::Skipped => "skips",
        };
        if outcome != Outcome::Skipped {
            tally.incr(&key, "attempts", 1);
            tally.incr(&key, "latency_sum_us", (latency_ms * 1000.0).round() as i64);
        }
        tally.incr(&key, field, 1);
    }

    /// Appends the commands that write `tally` to `pipe`: one HINCRBY per
    /// counter, one ZADD per metric (with its trims when due), one
    /// `PEXPIREAT … NX` per crystallised grain hit.
    ///
    /// In cluster mode a pipeline's keys share a slot: only the counters
    /// and expiries of the current partition go into `pipe` (the metrics
    /// always do), and the rest (the hit counters of grains kept in other
    /// partitions) is returned, for [`Self::write_tally`]. On one server
    /// nothing is returned.
    pub fn add_tally_to(&self, pipe: &mut redis::Pipeline, tally: &Tally) -> Tally {
        let mut rest = Tally::default();
        let home = self
            .keys
            .is_partitioned()
            .then(|| crate::store::keys::slot(self.keys.base()));
        let here = |key: &str| home.is_none_or(|h| crate::store::keys::slot(key) == h);
        for ((key, field), by) in &tally.increments {
            if here(key) {
                pipe.hincr(key, *field, *by).ignore();
            } else {
                rest.increments.push(((key.clone(), field), *by));
            }
        }
        for (key, at_ms) in &tally.expiries {
            if here(key) {
                pipe.cmd("PEXPIREAT").arg(key).arg(at_ms).arg("NX").ignore();
            } else {
                rest.expiries.push((key.clone(), *at_ms));
            }
        }
        let mut metrics: Vec<(&str, Vec<(f64, i64)>)> = Vec::new();
        for (metric, value, ts_ms) in &tally.samples {
            match metrics.iter_mut().find(|(m, _)| m == metric) {
                Some((_, s)) => s.push((*value, *ts_ms)),
                None => metrics.push((metric, vec![(*value, *ts_ms)])),
            }
        }
        for (metric, samples) in metrics {
            self.add_samples_to(pipe, metric, &samples);
        }
        rest
    }

    /// Writes the counters and expiries of `tally` wherever their keys
    /// are: one pipeline per slot (one in all on one server), sent
    /// together. Its samples are written to the current partition.
    pub async fn write_tally(&self, tally: &Tally) -> Result<()> {
        if tally.is_empty() {
            return Ok(());
        }
        let mut by_slot: std::collections::BTreeMap<u16, Tally> = Default::default();
        let slot_of = |key: &str| {
            if self.keys.is_partitioned() {
                crate::store::keys::slot(key)
            } else {
                0
            }
        };
        for ((key, field), by) in &tally.increments {
            by_slot
                .entry(slot_of(key))
                .or_default()
                .increments
                .push(((key.clone(), field), *by));
        }
        for (key, at_ms) in &tally.expiries {
            by_slot
                .entry(slot_of(key))
                .or_default()
                .expiries
                .push((key.clone(), *at_ms));
        }
        let mut pipes = Vec::new();
        if !tally.samples.is_empty() {
            let mut pipe = redis::pipe();
            let local = Tally {
                samples: tally.samples.clone(),
                ..Default::default()
            };
            let _ = self.add_tally_to(&mut pipe, &local);
            pipes.push(pipe);
        }
        for part in by_slot.into_values() {
            let mut pipe = redis::pipe();
            for ((key, field), by) in &part.increments {
                pipe.hincr(key, *field, *by).ignore();
            }
            for (key, at_ms) in &part.expiries {
                pipe.cmd("PEXPIREAT").arg(key).arg(at_ms).arg("NX").ignore();
            }
            pipes.push(pipe);
        }
        let sends = pipes.iter().map(|pipe| {
            let mut conn = self.conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        });
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(())
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Records one attempt at `layer` in its counters and latency metric.
    pub async fn record_attempt(
        &self,
        layer: &str,
        outcome: Outcome,
        latency_ms: f64,
    ) -> Result<()> {
        let mut tally = Tally::default();
        self.add_attempt_to(&mut tally, layer, outcome, latency_ms);
        let mut pipe = redis::pipe();
        let _ = self.add_tally_to(&mut pipe, &tally);
        if outcome != Outcome::Skipped {
            let now = chrono::Utc::now().timestamp_millis();
            let metric = layer_latency_metric(layer);
            self.add_samples(&mut pipe, &metric, &[(latency_ms, now)], now, true);
        }
        let mut conn = self.conn.clone();
        let key = self.keys.stats(layer);
        let _: () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "hash"))?;
        Ok(())
    }

    /// The counters of `layer` (zeros when it was never tried); in cluster
    /// mode summed over the partitions.
    pub async fn layer_counters(&self, layer: &str) -> Result<LayerCounters> {
        let mut total = LayerCounters::default();
        for keys in self.keys.all_partitions() {
            let key = keys.stats(layer);
            let mut conn = self.conn.clone();
            let h: HashMap<String, String> = conn
                .hgetall(&key)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "hash"))?;
            let get = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total.attempts += get("attempts");
            total.hits += get("hits");
            total.misses += get("misses");
            total.timeouts += get("timeouts");
            total.errors += get("errors");
            total.skips += get("skips");
            total.latency_sum_us += get("latency_sum_us");
        }
        Ok(total)
    }

    /// Counters, hit rate, mean latency and windowed percentiles of `layer`.
    pub async fn layer_stats(&self, layer: &str, window: Duration) -> Result<LayerStats> {
        let counters = self.layer_counters(layer).await?;
        let window = self
            .metric_summary(&layer_latency_metric(layer), window)
            .await?;
        let (hit_rate, mean_latency_ms) = if counters.attempts == 0 {
            (0.0, 0.0)
        } else {
            (
                counters.hits as f64 / counters.attempts as f64,
                counters.latency_sum_us as f64 / 1000.0 / counters.attempts as f64,
            )
        };
        Ok(LayerStats {
            layer: layer.to_string(),
            counters,
            hit_rate,
            mean_latency_ms,
            window,
        })
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Clears the counters of `layer`.
    pub async fn reset_layer_stats(&self, layer: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        for keys in self.keys.all_partitions() {
            let _: u64 = conn.del(keys.stats(layer)).await?;
        }
        Ok(())
    }

    /// Bounds everything Kitbash writes: trims the feed to its cap, every
    /// metric to its age and count caps, and gives states written without a
    /// TTL (by other clients) the configured one. The writers bound their
    /// own keys as they go; this catches what they could not.
    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        for bb in self.partitions() {
            let r = bb.maintain_streams_and_metrics().await?;
            report.feed_trimmed += r.feed_trimmed;
            report.samples_trimmed += r.samples_trimmed;
            report.states_given_ttl += bb.give_states_a_ttl().await?;
        }
        Ok(report)
    }

    /// The cheap part of [`Self::maintain`], run by every daemon every few
    /// seconds: the feed's cap, and every metric's age and count caps (of
    /// the current partition; a daemon runs it for each of its partitions).
    pub async fn maintain_streams_and_metrics(&self) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let mut conn = self.conn.clone();
        let feed = self.keys.feed();
        report.feed_trimmed = redis::cmd("XTRIM")
            .arg(&feed)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.limits.feed_max_len)
            .query_async(&mut conn)
            .await
            .map_err(|e| BlackboardError::on_key(e, &feed, "stream"))?;

        let now = chrono::Utc::now().timestamp_millis();
        let retention_ms = (self.limits.metric_retention_s * 1000) as i64;
        for key in self.scan_keys(&self.keys.metric_pattern()).await? {
            let res: redis::RedisResult<(u64, u64)> = redis::pipe()
                .zrembyscore(&key, "-inf", format!("({}", now - retention_ms))
                .zremrangebyrank(&key, 0, -(self.limits.metric_max_samples as isize) - 1)
                .pexpire(&key, retention_ms)
                .ignore()
                .query_async(&mut conn)
                .await;
            match res {
                Ok((by_age, by_count)) => report.samples_trimmed += by_age + by_count,
                Err(e) if crate::store::blackboard::is_wrong_type(&e) => {
                    tracing::warn!(key = %key, "not a sorted set; left alone")
                }
                Err(e) => return Err(e.into()),
            }
        }

        Ok(report)
    }

    /// Gives the configured TTL to states written without one (by other
    /// clients) in the current partition; returns how many. Scans every
    /// state: run it rarely.
    pub async fn give_states_a_ttl(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mut given = 0;
        for chunk in self
            .scan_keys(&self.keys.state_pattern())
            .await?
            .chunks(500)
        {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.ttl(key);
            }
            let ttls: Vec<i64> = pipe.query_async(&mut conn).await?;
            let mut fix = redis::pipe();
            let mut n = 0;
            for (key, ttl) in chunk.iter().zip(ttls) {
                if ttl == -1 {
                    fix.expire(key, self.limits.state_ttl_s as i64).ignore();
                    n += 1;
                }
            }
            if n > 0 {
                let _: () = fix.query_async(&mut conn).await?;
                given += n;
            }
        }
        Ok(given)
    }
}

/// What [`Blackboard::maintain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MaintenanceReport {
    /// Feed entries removed.
    pub feed_trimmed: u64,
    /// Metric samples removed (too old or over the cap).
    pub samples_trimmed: u64,
    /// States that had no TTL and got one.
    pub states_given_ttl: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.95), 95.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn summary_of_values() {
        let s = Summary::of([3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!(s.count, 3);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 3.0);
        assert_eq!(s.mean, 2.0);
        assert_eq!(s.p50, 2.0);
    }
}
