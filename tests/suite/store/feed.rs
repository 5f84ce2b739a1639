use kitbash::{Event, EventKind, QueryState};
use redis::Commands;

use crate::common::TestContext;

#[tokio::test]
async fn every_event_kind_is_written_with_flat_fields() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    for kind in EventKind::ALL {
        bb.emit(
            &Event::new(*kind, "q1")
                .layer("layer2")
                .confidence(0.83)
                .latency_ms(3.1)
                .worker("cartridge-1")
                .grain("g1")
                .reason("because"),
        )
        .await
        .unwrap();
    }
    let events = bb.recent_events(100).await.unwrap();
    assert_eq!(events.len(), EventKind::ALL.len());
    for (e, kind) in events.iter().zip(EventKind::ALL) {
        assert_eq!(e.event(), Some(kind.as_str()));
        assert_eq!(e.get("query_id"), Some("q1"));
        assert_eq!(e.get("layer"), Some("layer2"));
        assert_eq!(e.get("confidence"), Some("0.8300"));
        assert_eq!(e.get("latency_ms"), Some("3.100"));
        assert_eq!(e.get("worker"), Some("cartridge-1"));
        assert_eq!(e.get("reason"), Some("because"));
        assert_eq!(e.get("grain"), Some("g1"));
        assert!(e.time().is_some(), "ts parses");
    }
    // Names are exactly DESIGN.md's.
    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "query_created",
            "query_started",
            "layer_attempt",
            "layer_hit",
            "layer_miss",
            "layer_timeout",
            "layer_error",
            "layer_skipped",
            "escalation",
            "query_completed",
            "query_failed",
            "query_recovered",
            "query_dead",
            "late_reply",
            "worker_health",
            "grain_crystallized",
            "grain_forgotten",
            "answer_marked_wrong",
            "layers_disagreed",
            "query_fenced"
        ]
    );
    assert_eq!(
        "layer_hit".parse::<EventKind>().unwrap(),
        EventKind::LayerHit
    );
    assert!("layer_party".parse::<EventKind>().is_err());
}

#[tokio::test]
async fn global_events_have_no_query_id() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    bb.emit(
        &Event::global(EventKind::WorkerHealth)
            .worker("w1")
            .reason("backend down"),
    )
    .await
    .unwrap();
    let e = &bb.recent_events(1).await.unwrap()[0];
    assert_eq!(e.get("query_id"), None);
    assert_eq!(e.get("worker"), Some("w1"));
}

#[tokio::test]
async fn feed_is_capped_approximately() {
    let mut ctx = TestContext::new();
    ctx.settings.feed.max_len = 100;
    let bb = ctx.blackboard().await;
    for i in 0..2000 {
        bb.emit(&Event::new(EventKind::QueryCreated, format!("q{i}")))
            .await
            .unwrap();
    }
    let len = bb.feed_len().await.unwrap();
    // MAXLEN ~ trims whole macro nodes (100 entries by default): the stream
    // stays within one node of its cap, far below the 2000 written.
    assert!((100..=300).contains(&len), "feed length {len}");
}

#[tokio::test]
async fn by_kind_and_by_layer_return_most_recent_matches_in_order() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    for i in 0..50 {
        let layer = if i % 2 == 0 { "layer0" } else { "layer2" };
        let kind = if i % 5 == 0 {
            EventKind::LayerHit
        } else {
            EventKind::LayerMiss
        };
        bb.emit(&Event::new(kind, format!("q{i}")).layer(layer))
            .await
            .unwrap();
    }
    let hits = bb
        .events_by_kind(EventKind::LayerHit, 3, 1000)
        .await
        .unwrap();
    let ids: Vec<_> = hits.iter().map(|e| e.get("query_id").unwrap()).collect();
    assert_eq!(ids, ["q35", "q40", "q45"]);
    let l2 = bb.events_by_layer("layer2", 100, 1000).await.unwrap();
    assert_eq!(l2.len(), 25);
    assert!(l2.iter().all(|e| e.get("layer") == Some("layer2")));
    // A scan bound limits how far back it looks.
    let near = bb.events_by_layer("layer2", 100, 10).await.unwrap();
    assert_eq!(near.len(), 5);
}

#[tokio::test]
async fn timeline_reads_one_query_without_the_rest() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let q = QueryState::with_id("target", "t");
    bb.create_state(&q).await.unwrap();
    for (i, kind) in [
        EventKind::QueryCreated,
        EventKind::QueryStarted,
        EventKind::LayerHit,
        EventKind::QueryCompleted,
    ]
    .into_iter()
    .enumerate()
    {
        bb.emit(&Event::new(EventKind::LayerMiss, format!("other{i}")))
            .await
            .unwrap();
        bb.emit(&Event::new(kind, "target")).await.unwrap();
    }
    let t = bb.timeline("target", 1000).await.unwrap();
    let kinds: Vec<_> = t.iter().map(|e| e.event().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "query_created",
            "query_started",
            "layer_hit",
            "query_completed"
        ]
    );

    // An event far older than the query's life is outside the window read.
    let old_id = "1000-0";
    let _: String = redis::cmd("XADD")
        .arg(ctx.keys().feed())
        .arg(old_id)
        .arg("event")
        .arg("query_created")
        .arg("query_id")
        .arg("target")
        .query(&mut ctx.raw())
        .unwrap_or_default();
    // (XADD with an id below the top fails; either way it is not returned.)
    assert_eq!(bb.timeline("target", 1000).await.unwrap().len(), 4);

    // Without a state it falls back to a bounded scan of recent entries.
    bb.delete_state("target").await.unwrap();
    assert_eq!(bb.timeline("target", 1000).await.unwrap().len(), 4);
    assert_eq!(bb.timeline("target", 2).await.unwrap().len(), 1);
}

#[tokio::test]
async fn foreign_entries_in_the_feed_are_read_not_fatal() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let _: String = ctx
        .raw()
        .xadd(ctx.keys().feed(), "*", &[("something", "else")])
        .unwrap();
    bb.emit(&Event::new(EventKind::QueryCreated, "q"))
        .await
        .unwrap();
    let e = bb.recent_events(10).await.unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].event(), None);
    assert_eq!(e[1].event(), Some("query_created"));
}
