//! Layer0 lookup benchmark: 100,000 grains in a private redis-server, then
//! 20,000 lookups (half hits, half misses) one after another, as the daemon
//! does them, and again from 32 concurrent tasks over the one shared
//! connection. Prints latency percentiles (client side, normalisation
//! included) and the Redis CPU per lookup.
//!
//! `cargo bench --bench layer0` (set `REDIS_SERVER_BIN` to use another
//! redis-server binary).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kitbash::config::Settings;
use kitbash::layer0::grains::IfExists;
use kitbash::layer0::matching::normalize;
use kitbash::{Blackboard, Connector, Grain, Keys, Limits};

const GRAINS: usize = 100_000;
const LOOKUPS: usize = 20_000;
const TASKS: usize = 32;

const ATTRIBUTES: [&str; 5] = [
    "capital",
    "currency",
    "largest city",
    "population",
    "anthem",
];

/// A private redis-server, killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", dir.path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let url = format!("redis://127.0.0.1:{port}/0");
        let client = redis::Client::open(url.as_str()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Grain `i`: the `attr` of "region i".
fn grain(i: usize) -> Grain {
    let attr = ATTRIBUTES[i % ATTRIBUTES.len()];
    let mut g = Grain::new(
        format!("bench-{i}"),
        format!("What is the {attr} of region {}?", i / ATTRIBUTES.len()),
        format!(
            "The {attr} of region {} is answer number {i}.",
            i / ATTRIBUTES.len()
        ),
    );
    g.confidence = 0.95;
    g.source = Some("bench".into());
    g
}

/// Query `n`: even ones paraphrase a stored grain, odd ones ask about a
/// region that does not exist.
fn query(n: usize) -> String {
    let i = (n.wrapping_mul(7919)) % GRAINS;
    let attr = ATTRIBUTES[i % ATTRIBUTES.len()];
    let region = i / ATTRIBUTES.len();
    if n.is_multiple_of(2) {
        format!("region {region}'s {attr}?")
    } else {
        format!("What's the {attr} of region {}?", region + GRAINS)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx].as_secs_f64() * 1e6
}

fn report(label: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort_unstable();
    println!(
        "{label:<28} p50 {:>6.1} µs  p99 {:>6.1} µs  p99.9 {:>7.1} µs  max {:>7.1} µs  ({:.0} lookups/s)",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().unwrap().as_secs_f64() * 1e6,
        lat.len() as f64 / wall.as_secs_f64()
    );
}

/// Redis's own CPU seconds (user + sys) and the HGET command stats.
fn redis_cpu(conn: &mut redis::Connection) -> f64 {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn).unwrap();
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            matches!(k, "used_cpu_user" | "used_cpu_sys").then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

fn hget_stats(conn: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find(|l| l.starts_with("cmdstat_hget:"))
        .unwrap_or("cmdstat_hget: (none)")
        .trim()
        .to_string()
}

#[tokio::main]
async fn main() {
    let server = Server::start();
    let mut settings = Settings::default();
    settings.redis.url = Some(server.url.clone());
    settings.redis.key_prefix = "kbbench".into();
    let conn = Connector::new(&settings.redis)
        .unwrap()
        .shared()
        .await
        .unwrap();
    let bb = Blackboard::new(conn, Keys::new("kbbench"), Limits::from(&settings));
    let mut raw = redis::Client::open(server.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();

    // Load.
    let t0 = Instant::now();
    let grains: Vec<Grain> = (0..GRAINS).map(grain).collect();
    for chunk in grains.chunks(5_000) {
        for r in bb.store_grains(chunk, IfExists::Replace).await.unwrap() {
            r.unwrap();
        }
    }
    let load = t0.elapsed();
    assert_eq!(bb.count_grains().await.unwrap(), GRAINS as u64);
    let mem: String = redis::cmd("INFO").arg("memory").query(&mut raw).unwrap();
    let used = mem
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_human:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    println!(
        "loaded {GRAINS} grains in {:.2} s ({:.0} grains/s, pipelined store script); redis used_memory {used}",
        load.as_secs_f64(),
        GRAINS as f64 / load.as_secs_f64()
    );

    let queries: Vec<String> = (0..LOOKUPS).map(query).collect();

    // Client-side cost of normalisation alone.
    let t0 = Instant::now();
    let mut chars = 0;
    for q in &queries {
        chars += normalize(q).as_str().len();
    }
    let per = t0.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64;
    println!("normalize: {per:.2} µs per query (client side; {chars} key bytes)");

    // Warm-up.
    for q in queries.iter().take(2_000) {
        bb.lookup_grain(q).await.unwrap();
    }

    // Sequential.
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut raw)
        .unwrap();
    let cpu0 = redis_cpu(&mut raw);
    let mut lat = Vec::with_capacity(LOOKUPS);
    let mut hits = 0;
    let t0 = Instant::now();
    for q in &queries {
        let t = Instant::now();
        let m = bb.lookup_grain(q).await.unwrap();
        lat.push(t.elapsed());
        hits += usize::from(m.is_some());
    }
    let wall = t0.elapsed();
    let cpu = redis_cpu(&mut raw) - cpu0;
    assert_eq!(hits, LOOKUPS / 2, "every even query hits, no odd one does");
    println!("{LOOKUPS} lookups, {hits} hits, {} misses", LOOKUPS - hits);
    report("sequential (1 in flight)", lat, wall);
    println!(
        "redis CPU: {:.1} µs per lookup (INFO cpu user+sys delta, includes network I/O); {}",
        cpu * 1e6 / LOOKUPS as f64,
        hget_stats(&mut raw)
    );

    // Concurrent: TASKS tasks over the one multiplexed connection.
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut raw)
        .unwrap();
    let cpu0 = redis_cpu(&mut raw);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let bb = bb.clone();
        let mine: Vec<String> = queries.iter().skip(task).step_by(TASKS).cloned().collect();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(mine.len());
            for q in &mine {
                let t = Instant::now();
                bb.lookup_grain(q).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(LOOKUPS);
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let wall = t0.elapsed();
    let cpu = redis_cpu(&mut raw) - cpu0;
    report(&format!("concurrent ({TASKS} in flight)"), lat, wall);
    println!(
        "redis CPU: {:.1} µs per lookup; {}",
        cpu * 1e6 / LOOKUPS as f64,
        hget_stats(&mut raw)
    );
}
