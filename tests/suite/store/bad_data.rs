//! Bad data in Redis is a typed error, never a panic.

use std::time::Duration;

use kitbash::{BlackboardError, Health, QueryState};
use redis::Commands;

use crate::common::TestContext;

#[tokio::test]
async fn malformed_state_json_is_a_typed_error() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let key = ctx.keys().state("bad");
    for raw in ["{not json", r#"{"query_id":"bad"}"#, "[]", "\u{0}"] {
        let _: () = ctx.raw().set(&key, raw).unwrap();
        let err = bb.get_state("bad").await.unwrap_err();
        assert!(
            matches!(err, BlackboardError::MalformedState { .. }),
            "{raw}: {err}"
        );
        assert!(err.to_string().contains(&key));
        let err = bb.update_state("bad", |_| {}).await.unwrap_err();
        assert!(matches!(err, BlackboardError::MalformedState { .. }));
        let still: String = ctx.raw().get(&key).unwrap();
        assert_eq!(still, raw, "a failed update writes nothing");
    }
}

#[tokio::test]
async fn wrong_types_are_typed_errors() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let keys = ctx.keys();
    let mut raw = ctx.raw();
    let _: () = raw.lpush(keys.state("q"), "x").unwrap();
    let _: () = raw.set(keys.queue(), "not a list").unwrap();
    let _: () = raw.set(keys.stats("layer0"), "not a hash").unwrap();
    let _: () = raw.set(keys.metric("m"), "not a zset").unwrap();
    let _: () = raw.set(keys.grain_ids(), "not a set").unwrap();
    let _: () = raw.set(keys.feed(), "not a stream").unwrap();

    let wrong = |r: Result<(), BlackboardError>| match r {
        Err(BlackboardError::WrongType { key, .. }) => key,
        other => panic!("expected WrongType, got {other:?}"),
    };
    assert_eq!(wrong(bb.get_state("q").await.map(|_| ())), keys.state("q"));
    assert_eq!(
        wrong(bb.update_state("q", |_| {}).await.map(|_| ())),
        keys.state("q")
    );
    assert_eq!(wrong(bb.queue_len().await.map(|_| ())), keys.queue());
    assert_eq!(wrong(bb.peek_queue(3).await.map(|_| ())), keys.queue());
    assert_eq!(wrong(bb.enqueue(&QueryState::new("t")).await), keys.queue());
    assert_eq!(
        wrong(bb.layer_counters("layer0").await.map(|_| ())),
        keys.stats("layer0")
    );
    assert_eq!(
        wrong(
            bb.metric_window("m", Duration::from_secs(5))
                .await
                .map(|_| ())
        ),
        keys.metric("m")
    );
    assert_eq!(wrong(bb.count_grains().await.map(|_| ())), keys.grain_ids());
    assert_eq!(wrong(bb.recent_events(5).await.map(|_| ())), keys.feed());
    assert!(
        bb.emit(&kitbash::Event::new(kitbash::EventKind::QueryCreated, "q"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn missing_keys_read_as_empty() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    assert!(bb.get_state("none").await.unwrap().is_none());
    assert_eq!(bb.queue_len().await.unwrap(), 0);
    assert!(bb.peek_queue(5).await.unwrap().is_empty());
    assert!(bb.get_grain("none").await.unwrap().is_none());
    assert!(bb.get_health("none").await.unwrap().is_none());
    assert!(bb.recent_events(5).await.unwrap().is_empty());
    assert!(bb.timeline("none", 100).await.unwrap().is_empty());
    assert_eq!(bb.feed_len().await.unwrap(), 0);
    assert!(bb.list_health().await.unwrap().is_empty());
    assert!(ctx.keys_left().is_empty(), "reads create nothing");
}

#[tokio::test]
async fn one_bad_health_record_does_not_hide_the_others() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    bb.set_health(
        &Health::new("good", kitbash::store::blackboard::ProcessRole::Worker),
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let _: () = ctx
        .raw()
        .set(ctx.keys().health("garbage"), "{oops")
        .unwrap();
    let _: () = ctx.raw().lpush(ctx.keys().health("list"), "x").unwrap();
    let all = bb.list_health().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "good");
    let err = bb.get_health("garbage").await.unwrap_err();
    assert!(matches!(err, BlackboardError::MalformedHealth { .. }));
}
