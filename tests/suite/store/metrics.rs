use std::time::Duration;

use kitbash::Outcome;
use kitbash::observe::metrics::layer_latency_metric;
use redis::Commands;

use crate::common::TestContext;

#[tokio::test]
async fn equal_values_are_separate_samples() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    for _ in 0..5 {
        bb.record_metric("latency:test", 1.5).await.unwrap();
    }
    let card: u64 = ctx.raw().zcard(ctx.keys().metric("latency:test")).unwrap();
    assert_eq!(card, 5, "the Python original kept only one of these");
    let w = bb
        .metric_window("latency:test", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(w.len(), 5);
    assert!(w.iter().all(|s| s.value == 1.5));
}

#[tokio::test]
async fn window_percentiles() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    for v in 1..=100 {
        bb.record_metric("m", f64::from(v)).await.unwrap();
    }
    let s = bb
        .metric_summary("m", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.count, 100);
    assert_eq!(s.p50, 50.0);
    assert_eq!(s.p95, 95.0);
    assert_eq!(s.p99, 99.0);
    assert_eq!(s.max, 100.0);
    assert_eq!(s.mean, 50.5);
    // Samples older than the window are not in it.
    let key = ctx.keys().metric("m");
    let old = chrono::Utc::now().timestamp_millis() - 120_000;
    let _: () = ctx.raw().zadd(&key, "7|old", old).unwrap();
    let s = bb
        .metric_summary("m", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.count, 100);
}

#[tokio::test]
async fn metrics_are_bounded_by_count_and_age_and_expire() {
    let mut ctx = TestContext::new();
    ctx.settings.metrics.max_samples = 10;
    ctx.settings.metrics.retention_s = 60;
    let bb = ctx.blackboard().await;
    let key = ctx.keys().metric("m");
    let old = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let _: () = ctx.raw().zadd(&key, "1|ancient", old).unwrap();
    for v in 0..50 {
        bb.record_metric("m", f64::from(v)).await.unwrap();
    }
    let card: u64 = ctx.raw().zcard(&key).unwrap();
    assert_eq!(card, 10);
    let newest: Vec<String> = ctx.raw().zrange(&key, -1, -1).unwrap();
    assert!(newest[0].starts_with("49|"));
    let ancient: Option<f64> = ctx.raw().zscore(&key, "1|ancient").unwrap();
    assert!(ancient.is_none(), "too old a sample is trimmed");
    let ttl: i64 = ctx.raw().pttl(&key).unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "an idle metric expires: {ttl}");
}

#[tokio::test]
async fn layer_counters_and_stats() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    for (o, ms) in [
        (Outcome::Hit, 1.0),
        (Outcome::Hit, 3.0),
        (Outcome::Miss, 2.0),
        (Outcome::Timeout, 50.0),
        (Outcome::Error, 4.0),
        (Outcome::Skipped, 0.0),
    ] {
        bb.record_attempt("layer2", o, ms).await.unwrap();
    }
    let st = bb
        .layer_stats("layer2", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(st.counters.attempts, 5);
    assert_eq!(st.counters.hits, 2);
    assert_eq!(st.counters.misses, 1);
    assert_eq!(st.counters.timeouts, 1);
    assert_eq!(st.counters.errors, 1);
    assert_eq!(st.counters.skips, 1);
    assert!((st.hit_rate - 0.4).abs() < 1e-9);
    assert!((st.mean_latency_ms - 12.0).abs() < 1e-9);
    assert_eq!(st.window.count, 5, "skips carry no latency sample");
    assert_eq!(st.window.p50, 3.0);
    assert_eq!(st.window.max, 50.0);
    let h: std::collections::HashMap<String, String> =
        ctx.raw().hgetall(ctx.keys().stats("layer2")).unwrap();
    assert_eq!(h["attempts"], "5");
    let l: u64 = ctx
        .raw()
        .zcard(ctx.keys().metric(&layer_latency_metric("layer2")))
        .unwrap();
    assert_eq!(l, 5);

    bb.reset_layer_stats("layer2").await.unwrap();
    assert_eq!(bb.layer_counters("layer2").await.unwrap().attempts, 0);
    // An untried layer has zeros, not an error.
    let none = bb
        .layer_stats("layer9", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(none.hit_rate, 0.0);
    assert_eq!(none.window.count, 0);
}

#[tokio::test]
async fn maintenance_bounds_what_others_left_unbounded() {
    let mut ctx = TestContext::new();
    ctx.settings.feed.max_len = 100;
    ctx.settings.metrics.max_samples = 5;
    let bb = ctx.blackboard().await;
    let keys = ctx.keys();
    let mut raw = ctx.raw();
    for i in 0..1000 {
        let _: String = raw
            .xadd(
                keys.feed(),
                "*",
                &[("event", "query_created"), ("query_id", &i.to_string())],
            )
            .unwrap();
    }
    let now = chrono::Utc::now().timestamp_millis();
    for i in 0..20 {
        let _: () = raw
            .zadd(keys.metric("foreign"), format!("{i}|x{i}"), now)
            .unwrap();
    }
    let _: () = raw
        .set(
            keys.state("nottl"),
            r#"{"query_id":"nottl","query_text":"t","status":"pending"}"#,
        )
        .unwrap();
    let _: () = raw.set(keys.metric("wrongtype"), "x").unwrap();

    let report = bb.maintain().await.unwrap();
    assert!(report.feed_trimmed >= 700, "{report:?}");
    assert_eq!(report.samples_trimmed, 15);
    assert_eq!(report.states_given_ttl, 1);
    let xlen: u64 = raw.xlen(keys.feed()).unwrap();
    assert!(xlen <= 300, "{xlen}");
    let card: u64 = raw.zcard(keys.metric("foreign")).unwrap();
    assert_eq!(card, 5);
    let ttl: i64 = raw.ttl(keys.state("nottl")).unwrap();
    assert!(ttl > 0);
    // Run again: nothing left to do.
    let again = bb.maintain().await.unwrap();
    assert_eq!(again.samples_trimmed, 0);
    assert_eq!(again.states_given_ttl, 0);
}
