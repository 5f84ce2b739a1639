use kitbash::{BlackboardError, QueryState};
use redis::Commands;

use crate::common::TestContext;

#[tokio::test]
async fn enqueue_writes_state_and_pushes_id_fifo() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    for i in 0..3 {
        bb.enqueue(&QueryState::with_id(
            format!("q{i}"),
            format!("question {i}"),
        ))
        .await
        .unwrap();
    }
    assert_eq!(bb.queue_len().await.unwrap(), 3);
    assert_eq!(bb.peek_queue(2).await.unwrap(), vec!["q0", "q1"]);
    assert_eq!(bb.peek_queue(10).await.unwrap(), vec!["q0", "q1", "q2"]);
    assert!(bb.peek_queue(0).await.unwrap().is_empty());
    // The consumer side takes from the tail: the first enqueued comes first.
    let first: String = ctx.raw().rpop(ctx.keys().queue(), None).unwrap();
    assert_eq!(first, "q0");
    for i in 0..3 {
        let s = bb.get_state(&format!("q{i}")).await.unwrap().unwrap();
        assert_eq!(s.query_text, format!("question {i}"));
    }
}

#[tokio::test]
async fn enqueue_refuses_past_max_queue_len() {
    let mut ctx = TestContext::new();
    ctx.settings.orchestrator.max_queue_len = 2;
    let bb = ctx.blackboard().await;
    bb.enqueue(&QueryState::new("a")).await.unwrap();
    bb.enqueue(&QueryState::new("b")).await.unwrap();
    let refused = QueryState::new("c");
    let err = bb.enqueue(&refused).await.unwrap_err();
    assert!(
        matches!(
            err,
            BlackboardError::QueueFull {
                len: 2,
                max: 2,
                lane: kitbash::store::lanes::Lane::Normal
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_queue_len"));
    assert!(bb.get_state(&refused.query_id).await.unwrap().is_none());
    assert_eq!(bb.queue_len().await.unwrap(), 2);
}
