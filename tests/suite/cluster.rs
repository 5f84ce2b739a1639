//! The Redis Cluster test harness itself: a real cluster forms, and a
//! killed primary's replica takes over (what the cluster-mode tests of the
//! daemon build on).

use crate::common::PATIENCE;
use crate::common::cluster::TestCluster;

fn cluster_info(port: u16) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_harness_forms_three_primaries_with_a_replica_each() {
    let c = TestCluster::start();
    assert_eq!(c.primaries().len(), 3);
    let info = cluster_info(c.nodes[0].port);
    assert!(info.contains("cluster_slots_ok:16384"), "{info}");
    assert!(info.contains("cluster_size:3"), "{info}");
}

#[test]
fn a_killed_primary_is_replaced_by_its_replica() {
    let mut c = TestCluster::start();
    let before = c.primaries();
    let victim = before[0];
    c.kill(victim);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut now = c.primaries();
    while std::time::Instant::now() < deadline && (now.len() != 3 || now.contains(&victim)) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        now = c.primaries();
    }
    assert_eq!(
        now.len(),
        3,
        "three primaries again after the failover: {now:?}"
    );
    assert!(!now.contains(&victim));
    let survivor = c.nodes.iter().find(|n| n.port != victim).unwrap().port;
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline
        && !cluster_info(survivor).contains("cluster_state:ok")
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(cluster_info(survivor).contains("cluster_state:ok"));
}
