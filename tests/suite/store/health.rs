use std::time::{Duration, Instant};

use kitbash::Health;

use crate::common::{PATIENCE, TestContext};

#[tokio::test]
async fn set_get_list_expire_remove() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let mut w = Health::new(
        "cartridge-1",
        kitbash::store::blackboard::ProcessRole::Worker,
    );
    w.kind = Some("cartridge".into());
    w.layer = Some("layer2".into());
    w.counters.insert("jobs_done".into(), serde_json::json!(3));
    bb.set_health(&w, Duration::from_secs(30)).await.unwrap();
    let d = Health::new("daemon-a", kitbash::store::blackboard::ProcessRole::Daemon);
    bb.set_health(&d, Duration::from_secs(30)).await.unwrap();

    assert_eq!(bb.get_health("cartridge-1").await.unwrap().unwrap(), w);
    let names: Vec<_> = bb
        .list_health()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["cartridge-1", "daemon-a"]);
    assert!(bb.layer_has_live_worker("layer2").await.unwrap());
    assert!(!bb.layer_has_live_worker("layer1").await.unwrap());

    // Absent = dead: written again with a short TTL, which runs out (Redis
    // keeps the time, so the test waits for the key to go).
    bb.set_health(&d, Duration::from_millis(150)).await.unwrap();
    let ttl: i64 = redis::Commands::pttl(&mut ctx.raw(), ctx.keys().health("daemon-a")).unwrap();
    assert!(ttl == -2 || (0..=150).contains(&ttl), "PTTL {ttl}");
    let deadline = Instant::now() + PATIENCE;
    while bb.get_health("daemon-a").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the health key never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bb.list_health().await.unwrap().len(), 1);

    // An unhealthy worker does not count as live.
    w.healthy = false;
    w.reason = Some("backend down".into());
    bb.set_health(&w, Duration::from_secs(30)).await.unwrap();
    assert!(!bb.layer_has_live_worker("layer2").await.unwrap());

    bb.remove_health("cartridge-1").await.unwrap();
    assert!(bb.list_health().await.unwrap().is_empty());
    assert!(ctx.keys_left().is_empty());
}
