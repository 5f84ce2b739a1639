//! Validation: what types alone cannot check, ranges and consistency.

use super::*;

/// Checks what types alone cannot: ranges and consistency.
/// Returns (key, shown value, reason) for each problem.
pub(super) fn validate(s: &Settings) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut bad =
        |key: &str, value: String, why: &str| out.push((key.to_string(), value, why.to_string()));
    let url = s.redis.effective_url();
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
    {
        bad(
            "redis.url",
            format!("{:?}", redact_url(&url)),
            "must start with redis://, rediss:// or unix://",
        );
    }
    if s.redis.cluster {
        if url.starts_with("unix://") {
            bad(
                "redis.url",
                format!("{:?}", redact_url(&url)),
                "a Redis Cluster is reached over TCP: use redis:// or rediss:// with redis.cluster",
            );
        }
        if s.redis.url.is_none() && s.redis.db != 0 {
            bad(
                "redis.db",
                s.redis.db.to_string(),
                "Redis Cluster has only database 0",
            );
        }
        if prefix_has_braces(&s.redis.key_prefix) {
            bad(
                "redis.key_prefix",
                format!("{:?}", s.redis.key_prefix),
                "in cluster mode Kitbash places keys in slots itself (redis.partitions): use a prefix without braces",
            );
        }
        if !(1..=1024).contains(&s.redis.partitions) {
            bad(
                "redis.partitions",
                s.redis.partitions.to_string(),
                "must be between 1 and 1024",
            );
        }
        let scheme = |u: &str| u.split("://").next().unwrap_or_default().to_string();
        for node in &s.redis.cluster_nodes {
            if scheme(node) != scheme(&url) {
                bad(
                    "redis.cluster_nodes",
                    format!("{:?}", redact_url(node)),
                    "every seed node must use the scheme of redis.url (redis:// or rediss://)",
                );
            }
        }
    } else if !s.redis.cluster_nodes.is_empty() {
        bad(
            "redis.cluster_nodes",
            format!("{} nodes", s.redis.cluster_nodes.len()),
            "seed nodes are for cluster mode: set redis.cluster to true, or remove them",
        );
    }
    if s.redis.wait_timeout_ms >= s.redis.response_timeout_ms {
        bad(
            "redis.wait_timeout_ms",
            s.redis.wait_timeout_ms.to_string(),
            "must be below redis.response_timeout_ms: an enqueue's WAIT must answer within the response timeout",
        );
    }
    validate_tls_files(&s.redis, &url, &mut bad);
    let prefix = &s.redis.key_prefix;
    if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c == '*') {
        bad(
            "redis.key_prefix",
            format!("{prefix:?}"),
            "must be non-empty, without spaces or `*`",
        );
    }
    for (key, v) in [
        ("redis.connect_timeout_ms", s.redis.connect_timeout_ms),
        ("redis.response_timeout_ms", s.redis.response_timeout_ms),
        ("redis.retry_max_delay_ms", s.redis.retry_max_delay_ms),
        // WAIT with a timeout of 0 would block for ever.
        ("redis.wait_timeout_ms", s.redis.wait_timeout_ms),
        ("orchestrator.state_ttl_s", s.orchestrator.state_ttl_s),
        ("orchestrator.done_ttl_s", s.orchestrator.done_ttl_s),
        ("orchestrator.max_queue_len", s.orchestrator.max_queue_len),
        (
            "orchestrator.max_jobs_per_layer",
            s.orchestrator.max_jobs_per_layer,
        ),
        (
            "orchestrator.heartbeat_interval_ms",
            s.orchestrator.heartbeat_interval_ms,
        ),
        (
            "orchestrator.recovery_interval_s",
            s.orchestrator.recovery_interval_s,
        ),
        (
            "orchestrator.max_attempts",
            s.orchestrator.max_attempts as u64,
        ),
        (
            "orchestrator.max_in_flight",
            s.orchestrator.max_in_flight as u64,
        ),
        (
            "orchestrator.max_query_bytes",
            s.orchestrator.max_query_bytes as u64,
        ),
        (
            "workers.heartbeat_interval_ms",
            s.workers.heartbeat_interval_ms,
        ),
        (
            "workers.bitnet.concurrency",
            s.workers.bitnet.concurrency as u64,
        ),
        (
            "workers.cartridge.concurrency",
            s.workers.cartridge.concurrency as u64,
        ),
        ("workers.llm.concurrency", s.workers.llm.concurrency as u64),
        ("feed.max_len", s.feed.max_len),
        ("metrics.retention_s", s.metrics.retention_s),
        ("metrics.max_samples", s.metrics.max_samples),
    ] {
        if v == 0 {
            bad(key, "0".into(), "must be greater than 0");
        }
    }
    if s.redis.url.is_none() && s.redis.db < 0 {
        bad("redis.db", s.redis.db.to_string(), "must be 0 or more");
    }
    if s.redis.url.is_none() && s.redis.port == 0 {
        bad("redis.port", "0".into(), "must be a TCP port, 1 to 65535");
    }
    if s.orchestrator.health_ttl_s.saturating_mul(1000) <= s.orchestrator.heartbeat_interval_ms {
        bad(
            "orchestrator.health_ttl_s",
            s.orchestrator.health_ttl_s.to_string(),
            "must be longer than orchestrator.heartbeat_interval_ms, or a live daemon looks dead",
        );
    }
    if s.workers.health_ttl_s.saturating_mul(1000) <= s.workers.heartbeat_interval_ms {
        bad(
            "workers.health_ttl_s",
            s.workers.health_ttl_s.to_string(),
            "must be longer than workers.heartbeat_interval_ms, or a live worker looks dead",
        );
    }
    if let Some(id) = &s.orchestrator.instance_id
        && (id.is_empty() || id.chars().any(|c| c.is_whitespace() || c == '*'))
    {
        bad(
            "orchestrator.instance_id",
            format!("{id:?}"),
            "must be non-empty, without spaces or `*`",
        );
    }
    for (name, layer) in &s.layers {
        let key = |field: &str| format!("layers.{name}.{field}");
        if name.is_empty()
            || name
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            bad(
                &format!("layers.{name}"),
                format!("{name:?}"),
                "a layer name may hold only letters, digits, `_` and `-`",
            );
        }
        if !(0.0..=1.0).contains(&layer.min_confidence) {
            bad(
                &key("min_confidence"),
                layer.min_confidence.to_string(),
                "must be between 0 and 1",
            );
        }
        if layer.timeout_ms == 0 {
            bad(&key("timeout_ms"), "0".into(), "must be greater than 0");
        }
        match (layer.kind, layer.worker) {
            (LayerKind::Worker, None) => bad(
                &key("worker"),
                "null".into(),
                "a worker layer must name its worker: bitnet, cartridge or llm",
            ),
            (LayerKind::Grain, Some(w)) => bad(
                &key("worker"),
                format!("{:?}", w.as_str()),
                "a grain layer is answered by the daemon; remove `worker`",
            ),
            _ => {}
        }
        validate_crystallize(s, name, layer, &mut bad);
    }
    for (key, v) in [
        ("crystallization.max_grains", s.crystallization.max_grains),
        ("crystallization.window_s", s.crystallization.window_s),
        ("crystallization.block_s", s.crystallization.block_s),
    ] {
        if v == 0 {
            bad(key, "0".into(), "must be greater than 0");
        }
    }
    if !(0.0..=1.0).contains(&s.workers.echo_confidence) {
        bad(
            "workers.echo_confidence",
            s.workers.echo_confidence.to_string(),
            "must be between 0 and 1",
        );
    }
    if !(0.0..=1.0).contains(&s.workers.llm.fixed_confidence) {
        bad(
            "workers.llm.fixed_confidence",
            s.workers.llm.fixed_confidence.to_string(),
            "must be between 0 and 1",
        );
    }
    if let Err(why) = check_log_filter(&s.logging.level) {
        bad("logging.level", format!("{:?}", s.logging.level), &why);
    }
    let mut shares = 0.0;
    for lane in crate::store::lanes::Lane::ALL {
        let l = s.orchestrator.lanes.of(lane);
        let key = format!("orchestrator.lanes.{lane}");
        if !(0.0..=1.0).contains(&l.min_share) {
            bad(
                &format!("{key}.min_share"),
                l.min_share.to_string(),
                "must be between 0 and 1",
            );
        }
        shares += l.min_share;
        if l.max_queue_len == Some(0) {
            bad(
                &format!("{key}.max_queue_len"),
                "0".into(),
                "must be greater than 0",
            );
        }
    }
    if let Some(r) = s.orchestrator.lanes.reserved_in_flight
        && r >= s.orchestrator.max_in_flight
    {
        bad(
            "orchestrator.lanes.reserved_in_flight",
            r.to_string(),
            &format!(
                "must be less than orchestrator.max_in_flight ({}), so lower lanes keep a slot",
                s.orchestrator.max_in_flight
            ),
        );
    }
    if shares > 1.0 + 1e-9 {
        bad(
            "orchestrator.lanes",
            format!("min_share sum {shares}"),
            "the lanes' minimum shares must sum to 1 at most",
        );
    }
    let dashboard = &s.http.dashboard;
    let token_len = dashboard
        .token
        .as_ref()
        .map_or(0, |t| t.expose().trim().len());
    if dashboard.actions && token_len < MIN_DASHBOARD_TOKEN_LEN {
        bad(
            "http.dashboard.token",
            if token_len == 0 { "(not set)" } else { "***" }.into(),
            "http.dashboard.actions needs a token of at least 16 characters \
             (KITBASH_HTTP__DASHBOARD__TOKEN=$(openssl rand -hex 16), say)",
        );
    }
    out
}

/// The shortest token the dashboard's actions accept.
const MIN_DASHBOARD_TOKEN_LEN: usize = 16;

/// A layer's crystallisation policy and consensus partner.
fn validate_crystallize(
    s: &Settings,
    name: &str,
    layer: &LayerSettings,
    bad: &mut impl FnMut(&str, String, &str),
) {
    let key = |field: &str| format!("layers.{name}.{field}");
    let policy = &layer.crystallize;
    if !(0.0..=1.0).contains(&policy.min_confidence) {
        bad(
            &key("crystallize.min_confidence"),
            policy.min_confidence.to_string(),
            "must be between 0 and 1",
        );
    }
    if policy.ttl_s == 0 {
        bad(
            &key("crystallize.ttl_s"),
            "0".into(),
            "must be greater than 0",
        );
    }
    if policy.min_answers == 0 {
        bad(
            &key("crystallize.min_answers"),
            "0".into(),
            "must be 1 or more",
        );
    }
    if policy.enabled && layer.kind == LayerKind::Grain {
        bad(
            &key("crystallize.enabled"),
            "true".into(),
            "a grain layer's answers are grains already; only worker layers crystallise",
        );
    }
    if let Some(partner) = &layer.consensus.with {
        let shown = format!("{partner:?}");
        match s.layers.get(partner) {
            _ if partner == name => bad(
                &key("consensus.with"),
                shown,
                "a layer cannot be its own consensus partner",
            ),
            None => bad(
                &key("consensus.with"),
                shown,
                "names no layer; name another worker layer",
            ),
            Some(p) if p.kind != LayerKind::Worker => bad(
                &key("consensus.with"),
                shown,
                "names a grain layer; a consensus partner must be a worker layer",
            ),
            Some(_) if layer.kind != LayerKind::Worker => bad(
                &key("consensus.with"),
                shown,
                "only a worker layer can ask a consensus partner",
            ),
            Some(_) => {}
        }
    }
}

/// The levels a log filter names.
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// A log filter is a level or comma-separated `target=level` directives.
/// `tracing` takes a lone word it does not know as a target to enable, so
/// `warning` or `verbose` would silently turn logging off: refuse them.
pub(super) fn check_log_filter(filter: &str) -> Result<(), String> {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
        return Err(e.to_string());
    }
    let is_level = |l: &str| {
        let l = l.trim().to_ascii_lowercase();
        LOG_LEVELS.contains(&l.as_str()) || matches!(l.as_str(), "0" | "1" | "2" | "3" | "4" | "5")
    };
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !is_level(level) {
            return Err(format!(
                "{level:?} is not a log level: use one of {} or target=level directives (kitbash=debug,warn)",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Whether a key prefix holds a brace, which would make it (part of) a hash tag.
fn prefix_has_braces(prefix: &str) -> bool {
    prefix.contains(['{', '}'])
}
