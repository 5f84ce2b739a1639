use std::sync::Arc;

use kitbash::{BlackboardError, QueryState, QueryStatus};
use redis::Commands;

use crate::common::TestContext;

#[tokio::test]
async fn create_get_update_delete() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let state = QueryState::with_id("q1", "What is AI?");
    assert!(bb.create_state(&state).await.unwrap());
    assert!(
        !bb.create_state(&state).await.unwrap(),
        "second create is refused"
    );

    let got = bb.get_state("q1").await.unwrap().unwrap();
    assert_eq!(got, state);

    let updated = bb
        .update_state("q1", |s| s.status = QueryStatus::Processing)
        .await
        .unwrap();
    assert_eq!(updated.status, QueryStatus::Processing);
    assert_eq!(
        bb.get_state("q1").await.unwrap().unwrap().status,
        QueryStatus::Processing
    );

    // Every write gives the state the configured TTL.
    let ttl: i64 = ctx.raw().ttl(ctx.keys().state("q1")).unwrap();
    assert!(ttl > 0 && ttl <= ctx.settings.orchestrator.state_ttl_s as i64);

    assert!(bb.delete_state("q1").await.unwrap());
    assert!(!bb.delete_state("q1").await.unwrap());
    assert!(bb.get_state("q1").await.unwrap().is_none());
    assert!(ctx.keys_left().is_empty());
}

#[tokio::test]
async fn update_of_a_missing_state_is_not_found() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let err = bb.update_state("nope", |_| {}).await.unwrap_err();
    assert!(matches!(err, BlackboardError::NotFound { .. }), "{err}");
    assert!(ctx.keys_left().is_empty(), "update must not create the key");
}

/// Many tasks each append their own attempt to one state at once: with a
/// read-modify-write some appends would be lost; compare-and-set keeps all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_lose_nothing() {
    let ctx = TestContext::new();
    let bb = Arc::new(ctx.blackboard().await);
    bb.create_state(&QueryState::with_id("q", "t"))
        .await
        .unwrap();
    let writers = 16;
    let each = 10;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let bb = bb.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                bb.update_state("q", |s| {
                    s.metadata
                        .as_object_mut()
                        .unwrap()
                        .insert(format!("w{w}-{i}"), serde_json::json!(true));
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = bb.get_state("q").await.unwrap().unwrap();
    assert_eq!(s.metadata.as_object().unwrap().len(), writers * each);
}

#[tokio::test]
async fn python_shaped_state_is_read_and_kept() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let raw = r#"{"query_id":"q1","query_text":"What is AI?","status":"pending","created_at":"2026-11-21T10:00:00Z","layer_attempts":[],"metadata":{"user":"ann"},"priority":"high"}"#;
    let _: () = ctx.raw().set(ctx.keys().state("q1"), raw).unwrap();
    let s = bb.get_state("q1").await.unwrap().unwrap();
    assert_eq!(s.query_text, "What is AI?");
    assert_eq!(s.metadata["user"], "ann");
    bb.update_state("q1", |s| s.status = QueryStatus::Processing)
        .await
        .unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&bb.get_state_raw("q1").await.unwrap().unwrap()).unwrap();
    assert_eq!(back["priority"], "high", "unknown fields survive an update");
    assert_eq!(back["status"], "processing");
    assert_eq!(back["layer_attempts"], serde_json::json!([]));
}
