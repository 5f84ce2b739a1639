//! The daemon's HTTP endpoint against a real redis-server: health, readiness,
//! the detailed view, Prometheus metrics, and shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::TestContext;
use kitbash::daemon::http::{HttpState, serve};
use kitbash::daemon::status::DaemonStatus;
use kitbash::{Blackboard, Health, Outcome, QueryState};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One `serve` on a free port, with what the test needs to drive it.
struct Server {
    base: String,
    status: Arc<DaemonStatus>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

impl Server {
    async fn start(ctx: &TestContext, bb: Blackboard) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let status = Arc::new(DaemonStatus::new("daemon-test"));
        let state = HttpState {
            status: status.clone(),
            blackboard: bb,
            layers: ctx
                .settings
                .layers
                .iter()
                .map(|(name, layer)| (name.clone(), layer.clone()))
                .collect(),
            dashboard: ctx.settings.http.dashboard.clone(),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, state, shutdown.clone()));
        // The timeout only turns a hang into a failure; nothing asserts on time.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base,
            status,
            shutdown,
            task,
            client,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.get(path).await;
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

// ----- a strict reader of the exposition format ----------------------------

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// A parsed exposition: declared families (name → type) and samples.
#[derive(Debug, Default)]
struct Exposition {
    families: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// Sample-name suffixes a family of type `ty` may use.
fn suffixes(ty: &str) -> &'static [&'static str] {
    match ty {
        "counter" => &["_total", "_created", ""],
        "histogram" | "gaugehistogram" => {
            &["_bucket", "_sum", "_count", "_created", "_gsum", "_gcount"]
        }
        "summary" => &["", "_sum", "_count", "_created"],
        "info" => &["_info"],
        _ => &[""],
    }
}

/// Parses `{k="v",…}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').expect("called on a brace");
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let key = &rest[..eq];
        if !is_label_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' at {rest:?}"));
        }
    }
}

/// Accepts the Prometheus / OpenMetrics text format, strictly: every line is
/// `# HELP|TYPE|UNIT name …`, `# EOF` (last), or `name[{labels}] value
/// [timestamp]`; every TYPE is a known type; every sample belongs to a family
/// declared before it, with a suffix its type allows.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    const TYPES: [&str; 8] = [
        "counter",
        "gauge",
        "histogram",
        "gaugehistogram",
        "summary",
        "info",
        "stateset",
        "unknown",
    ];
    let mut out = Exposition::default();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |msg: String| format!("line {}: {msg}: {line:?}", n + 1);
        if eof {
            return Err(at("content after # EOF".into()));
        }
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(comment) = line.strip_prefix('#') {
            if comment == " EOF" {
                eof = true;
                continue;
            }
            let mut parts = comment.trim_start().splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            let name = name.ok_or_else(|| at("comment without a metric name".into()))?;
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            match kind {
                Some("TYPE") => {
                    let ty = rest.unwrap_or_default();
                    if !TYPES.contains(&ty) {
                        return Err(at(format!("unknown type {ty:?}")));
                    }
                    if out.families.insert(name.into(), ty.into()).is_some() {
                        return Err(at(format!("family {name} declared twice")));
                    }
                }
                Some("HELP") | Some("UNIT") => {}
                other => return Err(at(format!("unexpected comment {other:?}"))),
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<f64>()
                .map_err(|e| at(format!("timestamp {ts:?}: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = out
            .families
            .iter()
            .find(|(family, ty)| {
                suffixes(ty)
                    .iter()
                    .any(|sfx| name.strip_suffix(sfx) == Some(family.as_str()))
            })
            .map(|(family, ty)| (family.clone(), ty.clone()))
            .ok_or_else(|| at(format!("sample {name} belongs to no declared family")))?;
        if family.1 == "histogram"
            && name.ends_with("_bucket")
            && !labels.iter().any(|(k, _)| k == "le")
        {
            return Err(at("histogram bucket without le".into()));
        }
        out.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    Ok(out)
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1\\\"\"} 3\n# EOF\n";
    let parsed = parse_exposition(good).unwrap();
    assert_eq!(parsed.value("a_total", &[("x", "1\"")]), Some(3.0));
    for bad in [
        "# TYPE a counter\na_total{x=\"1\"} three\n",
        "# TYPE a countr\na_total 3\n",
        "b_total 3\n",
        "# TYPE a counter\na_total{x=1} 3\n",
        "# TYPE a counter\na_total{x=\"1\" 3\n",
        "# TYPE h histogram\nh_bucket 3\n",
        "# TYPE a gauge\na 1\n\na 2\n",
        "# TYPE a gauge\n# EOF\na 1\n",
        "# random words\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ----- the endpoints -------------------------------------------------------

#[tokio::test]
async fn health_answers_ok_with_the_instance() {
    let ctx = TestContext::new();
    let server = Server::start(&ctx, ctx.blackboard().await).await;
    let (code, body) = server.get_json("/health").await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["instance"], "daemon-test");
    server.stop().await;
}

#[tokio::test]
async fn ready_follows_the_daemon_flags() {
    let ctx = TestContext::new();
    let server = Server::start(&ctx, ctx.blackboard().await).await;

    let (code, body) = server.get_json("/health/ready").await;
    assert_eq!(code, 503);
    let reasons = body["reasons"].as_array().unwrap();
    assert!(reasons.contains(&"redis unreachable".into()), "{body}");
    assert!(reasons.contains(&"loop not running".into()), "{body}");

    server.status.set_redis_ok(true);
    let (code, body) = server.get_json("/health/ready").await;
    assert_eq!(code, 503);
    assert_eq!(body["reasons"], serde_json::json!(["loop not running"]));

    server.status.set_loop_running(true);
    let (code, body) = server.get_json("/health/ready").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ready");

    server.status.set_redis_ok(false);
    let (code, body) = server.get_json("/health/ready").await;
    assert_eq!(code, 503);
    assert_eq!(body["reasons"], serde_json::json!(["redis unreachable"]));
    server.stop().await;
}

#[tokio::test]
async fn detailed_shows_queue_workers_and_layer_stats() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let server = Server::start(&ctx, bb.clone()).await;

    bb.enqueue(&QueryState::new("What is AI?")).await.unwrap();
    bb.enqueue(&QueryState::new("What is Redis?"))
        .await
        .unwrap();
    let mut worker = Health::new(
        "cartridge-1",
        kitbash::store::blackboard::ProcessRole::Worker,
    );
    worker.kind = Some("cartridge".into());
    worker.layer = Some("layer2".into());
    bb.set_health(&worker, Duration::from_secs(30))
        .await
        .unwrap();
    let mut sick = Health::new("bitnet-1", kitbash::store::blackboard::ProcessRole::Worker);
    sick.layer = Some("layer1".into());
    sick.healthy = false;
    sick.reason = Some("backend down".into());
    bb.set_health(&sick, Duration::from_secs(30)).await.unwrap();
    bb.set_health(
        &Health::new(
            "daemon-test",
            kitbash::store::blackboard::ProcessRole::Daemon,
        ),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    bb.record_attempt("layer2", Outcome::Hit, 4.0)
        .await
        .unwrap();
    bb.record_attempt("layer2", Outcome::Miss, 6.0)
        .await
        .unwrap();
    server.status.begin_query();

    let (code, body) = server.get_json("/health/detailed").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["instance"], "daemon-test");
    assert!(body["started_at"].is_string());
    assert_eq!(body["ready"], false);
    assert_eq!(body["in_flight"], 1);
    assert_eq!(body["queue_depth"], 2);

    let live = body["workers"]["layer2"].as_array().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["name"], "cartridge-1");
    assert!(body["workers"].get("layer1").is_none(), "{body}");
    assert_eq!(body["unhealthy_workers"][0]["name"], "bitnet-1");
    assert_eq!(body["daemons"][0]["name"], "daemon-test");

    let layers = body["layers"].as_array().unwrap();
    let names: Vec<&str> = layers
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = ctx.settings.layers.keys().map(String::as_str).collect();
    assert_eq!(names, expected);
    let layer2 = layers.iter().find(|l| l["layer"] == "layer2").unwrap();
    assert_eq!(layer2["enabled"], true);
    assert_eq!(
        layer2["min_confidence"],
        ctx.settings.layers["layer2"].min_confidence
    );
    assert_eq!(layer2["live_workers"], 1);
    assert_eq!(layer2["stats"]["counters"]["attempts"], 2);
    assert_eq!(layer2["stats"]["counters"]["hits"], 1);
    assert_eq!(layer2["stats"]["counters"]["misses"], 1);
    assert_eq!(layer2["stats"]["hit_rate"], 0.5);
    assert_eq!(layer2["stats"]["window"]["count"], 2);
    let layer1 = layers.iter().find(|l| l["layer"] == "layer1").unwrap();
    assert_eq!(layer1["live_workers"], 0);
    assert_eq!(layer1["stats"]["counters"]["attempts"], 0);
    server.stop().await;
}

#[tokio::test]
async fn detailed_answers_503_when_redis_is_gone_and_the_rest_still_answers() {
    let mut ctx = TestContext::new();
    if !ctx.redis.is_private() {
        return; // cannot kill a shared server
    }
    // Bounds each Redis call of the endpoint: short enough that a dead
    // server shows quickly, long enough for a loaded machine's live one.
    ctx.settings.redis.response_timeout_ms = 2_000;
    let bb = ctx.blackboard().await;
    let server = Server::start(&ctx, bb.clone()).await;
    server.status.set_redis_ok(true);
    server.status.set_loop_running(true);
    bb.enqueue(&QueryState::new("before the crash"))
        .await
        .unwrap();
    let text = server.get("/metrics").await.text().await.unwrap();
    let before = parse_exposition(&text).unwrap();
    assert_eq!(before.value("kitbash_queue_depth", &[]), Some(1.0));

    ctx.redis.kill();

    let (code, body) = server.get_json("/health/detailed").await;
    assert_eq!(code, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(!error.is_empty());
    assert!(!error.contains(&ctx.redis.url), "{error}");
    assert_eq!(body["instance"], "daemon-test");
    assert_eq!(body["in_flight"], 0);
    // Again, now that the connection is reconnecting rather than broken.
    let (code, body) = server.get_json("/health/detailed").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("redis"),
        "{body}"
    );

    // Liveness and readiness never touch Redis (readiness reports the flags
    // the daemon keeps; the daemon, not the endpoint, notices Redis is gone).
    assert_eq!(server.get_json("/health").await.0, 200);
    assert_eq!(server.get_json("/health/ready").await.0, 200);

    // /metrics still answers, with the last known queue depth.
    let resp = server.get("/metrics").await;
    assert_eq!(resp.status().as_u16(), 200);
    let after = parse_exposition(&resp.text().await.unwrap()).unwrap();
    assert_eq!(after.value("kitbash_queue_depth", &[]), Some(1.0));
    server.stop().await;
}

#[tokio::test]
async fn metrics_expose_every_family_and_parse() {
    let ctx = TestContext::new();
    let bb = ctx.blackboard().await;
    let server = Server::start(&ctx, bb.clone()).await;
    bb.enqueue(&QueryState::new("a")).await.unwrap();
    bb.enqueue(&QueryState::new("b")).await.unwrap();

    let prom = &server.status.prom;
    prom.query_finished("answered", 12.0);
    prom.query_finished("answered", 30.0);
    prom.query_finished("unanswered", 900.0);
    prom.query_finished("failed", 1.0);
    prom.layer_attempt("layer0", Outcome::Miss, 0.2);
    prom.layer_attempt("layer1", Outcome::Skipped, 0.0);
    prom.layer_attempt("layer2", Outcome::Hit, 3.0);
    prom.layer_attempt("layer2", Outcome::Hit, 5.0);
    prom.layer_attempt("layer4", Outcome::Timeout, 2000.0);
    prom.late_reply();
    prom.recovered(2);
    server.status.begin_query();

    let resp = server.get("/metrics").await;
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    let m = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    for (family, ty) in [
        ("kitbash_queries_finished", "counter"),
        ("kitbash_query_latency_seconds", "histogram"),
        ("kitbash_layer_attempts", "counter"),
        ("kitbash_layer_latency_seconds", "histogram"),
        ("kitbash_late_replies", "counter"),
        ("kitbash_recovered_queries", "counter"),
        ("kitbash_queue_depth", "gauge"),
        ("kitbash_queries_in_flight", "gauge"),
    ] {
        assert_eq!(
            m.families.get(family).map(String::as_str),
            Some(ty),
            "{family}\n{text}"
        );
    }

    let finished = |status| m.value("kitbash_queries_finished_total", &[("status", status)]);
    assert_eq!(finished("answered"), Some(2.0));
    assert_eq!(finished("unanswered"), Some(1.0));
    assert_eq!(finished("failed"), Some(1.0));
    assert_eq!(
        m.value("kitbash_query_latency_seconds_count", &[]),
        Some(4.0)
    );
    assert_eq!(
        m.value("kitbash_query_latency_seconds_bucket", &[("le", "0.025")]),
        Some(2.0),
        "1 ms and 12 ms are under 25 ms"
    );
    assert_eq!(
        m.value("kitbash_query_latency_seconds_bucket", &[("le", "+Inf")]),
        Some(4.0)
    );

    let attempts = |layer, outcome| {
        m.value(
            "kitbash_layer_attempts_total",
            &[("layer", layer), ("outcome", outcome)],
        )
    };
    assert_eq!(attempts("layer2", "hit"), Some(2.0));
    assert_eq!(attempts("layer2", "miss"), Some(0.0));
    assert_eq!(attempts("layer0", "miss"), Some(1.0));
    assert_eq!(attempts("layer1", "skipped"), Some(1.0));
    assert_eq!(attempts("layer4", "timeout"), Some(1.0));
    // Every configured layer has its series from the start.
    for layer in ctx.settings.layers.keys() {
        for outcome in ["hit", "miss", "timeout", "error", "skipped"] {
            assert!(attempts(layer, outcome).is_some(), "{layer} {outcome}");
        }
    }
    let layer_count = |layer| m.value("kitbash_layer_latency_seconds_count", &[("layer", layer)]);
    assert_eq!(layer_count("layer2"), Some(2.0));
    assert_eq!(layer_count("layer1"), Some(0.0), "skips add no latency");
    assert_eq!(
        m.value("kitbash_layer_latency_seconds_sum", &[("layer", "layer4")]),
        Some(2.0)
    );

    assert_eq!(m.value("kitbash_late_replies_total", &[]), Some(1.0));
    assert_eq!(m.value("kitbash_recovered_queries_total", &[]), Some(2.0));
    assert_eq!(m.value("kitbash_queue_depth", &[]), Some(2.0));
    assert_eq!(m.value("kitbash_queries_in_flight", &[]), Some(1.0));
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let ctx = TestContext::new();
    let server = Server::start(&ctx, ctx.blackboard().await).await;
    assert_eq!(server.get("/nope").await.status().as_u16(), 404);
    server.stop().await;
}

#[tokio::test]
async fn cancelling_the_token_makes_serve_return() {
    let ctx = TestContext::new();
    let server = Server::start(&ctx, ctx.blackboard().await).await;
    // A kept-alive connection from the client pool must not hold shutdown.
    assert_eq!(server.get_json("/health").await.0, 200);
    let base = server.base.clone();
    server.stop().await;

    // The listener is closed: a fresh client cannot connect any more.
    let err = reqwest::Client::new()
        .get(format!("{base}/health"))
        .send()
        .await;
    assert!(err.is_err(), "still serving after shutdown");
}
