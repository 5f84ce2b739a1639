use kitbash::Grain;
use redis::Commands;

use crate::common::TestContext;

#[tokio::test]
async fn store_get_count_list_delete() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    assert_eq!(bb.count_grains().await.unwrap(), 0);
    let mut g = Grain::new("geo-1", "What is the capital of Kenya?", "Nairobi");
    g.confidence = 0.97;
    g.source = Some("countries.csv".into());
    bb.store_grain(&g).await.unwrap();
    bb.store_grain(&Grain::new(
        "geo-2",
        "What is the capital of Uganda?",
        "Kampala",
    ))
    .await
    .unwrap();

    let got = bb.get_grain("geo-1").await.unwrap().unwrap();
    assert_eq!(got.answer, "Nairobi");
    assert_eq!(got.confidence, 0.97);
    assert_eq!(got.source.as_deref(), Some("countries.csv"));
    assert_eq!(got.hits, 0);
    assert!(got.created_at.is_some() && got.updated_at.is_some());

    assert_eq!(bb.count_grains().await.unwrap(), 2);
    let ids = bb.list_grain_ids(10).await.unwrap();
    assert_eq!(ids, vec!["geo-1", "geo-2"]);
    assert_eq!(bb.list_grain_ids(1).await.unwrap().len(), 1);
    let all = bb.list_grains(10).await.unwrap();
    assert_eq!(all.len(), 2);

    assert_eq!(bb.record_grain_hit("geo-1").await.unwrap(), 1);
    // Storing again keeps created_at and the hit count.
    bb.store_grain(&g).await.unwrap();
    let again = bb.get_grain("geo-1").await.unwrap().unwrap();
    assert_eq!(again.hits, 1);
    assert_eq!(again.created_at, got.created_at);

    assert!(bb.delete_grain("geo-1").await.unwrap());
    assert!(!bb.delete_grain("geo-1").await.unwrap());
    assert!(bb.get_grain("geo-1").await.unwrap().is_none());
    assert_eq!(bb.count_grains().await.unwrap(), 1);
}

#[tokio::test]
async fn list_grains_skips_bad_ones_and_drops_dangling_ids() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    bb.store_grain(&Grain::new("good", "q", "a")).await.unwrap();
    let keys = ctx.keys();
    let mut raw = ctx.raw();
    // A grain missing its answer, one with a bad confidence, one of the
    // wrong type, and an id whose hash is gone.
    let _: () = raw.hset(keys.grain("noanswer"), "question", "q").unwrap();
    let _: () = raw
        .hset_multiple(
            keys.grain("badconf"),
            &[("question", "q"), ("answer", "a"), ("confidence", "lots")],
        )
        .unwrap();
    let _: () = raw.set(keys.grain("string"), "oops").unwrap();
    let _: () = raw
        .sadd(keys.grain_ids(), &["noanswer", "badconf", "string", "gone"])
        .unwrap();

    let listed = bb.list_grains(100).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|g| g.fact_id.as_str())
            .collect::<Vec<_>>(),
        vec!["good"]
    );
    assert!(bb.get_grain("noanswer").await.is_err());
    assert!(bb.get_grain("badconf").await.is_err());
    let err = bb.get_grain("string").await.unwrap_err();
    assert!(err.to_string().contains("wrong kind"), "{err}");
}

#[tokio::test]
async fn listing_uses_sscan_not_keys_over_many_grains() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    for i in 0..2500 {
        bb.store_grain(&Grain::new(format!("f{i:05}"), format!("q{i}"), "a"))
            .await
            .unwrap();
    }
    assert_eq!(bb.count_grains().await.unwrap(), 2500);
    let ids = bb.list_grain_ids(usize::MAX).await.unwrap();
    assert_eq!(ids.len(), 2500);
    assert_eq!(ids[0], "f00000");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut ctx.raw())
        .unwrap();
    if ctx.redis.is_private() {
        assert!(!info.contains("cmdstat_keys:"), "KEYS must never be used");
    }
}
