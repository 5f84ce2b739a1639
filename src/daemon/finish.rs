//! Ending a query: its outcome in one fenced step (`finish.lua`), the dead
//! list for entries that cannot become queries and for queries recovery
//! gave up on, and the record of a query this daemon found it had lost.

use std::time::{Duration, Instant};

use redis::{ErrorKind, ServerErrorKind};
use tokio_util::sync::CancellationToken;

use super::cascade::{Run, ms_since};
use super::instance::Instance;
use crate::observe::feed::{Event, EventKind};
use crate::observe::metrics::layer_latency_metric;
use crate::state::{QueryState, QueryStatus, now_rfc3339};
use crate::store::blackboard::is_wrong_type;
use crate::store::outage::Backoff;
use crate::store::scripts::{DEAD_ENTRY, FINISH, push_events};

/// Most records kept in the dead list; the oldest go first.
pub const DEAD_LIST_CAP: isize = 10_000;

/// Why a write of this daemon's was refused, from the script's code: 0 the
/// state is terminal, -1 the entry left this daemon's processing list.
pub(super) fn lost_reason(sh: &Instance, code: i64) -> String {
    if code == 0 {
        "the query is finished already (another daemon answered a duplicate delivery, or a peer \
         finished it after recovering it)"
            .to_string()
    } else {
        format!(
            "its entry is no longer in {} (a peer recovered it while this daemon was unresponsive)",
            sh.processing_key
        )
    }
}

/// Records once that this daemon stopped working on `qid` because it no
/// longer holds it: a `query_fenced` event naming the daemon, and a log line.
pub(super) async fn record_fenced(sh: &Instance, qid: &str, reason: &str) {
    tracing::warn!(query_id = %qid, "stopped working on a query this daemon no longer holds: {reason}");
    sh.status.prom.fenced();
    let e = Event::new(EventKind::QueryFenced, qid)
        .reason(format!("daemon {} stopped: {reason}", sh.status.instance));
    if let Err(err) = sh.bb.emit(&e).await {
        tracing::debug!(query_id = %qid, "cannot record query_fenced: {err}");
    }
}

/// Writes the terminal state and everything recorded, in one round trip,
/// exactly once and only while this daemon holds the query (see
/// `finish.lua`). Retries while Redis is away, until `abort` fires; the
/// entry stays in the processing list meanwhile. Returns whether this
/// outcome is the query's (written now, or by an earlier try of this call).
pub(super) async fn finish(sh: &Instance, mut run: Run, abort: &CancellationToken) -> bool {
    let qid = run.state.query_id.clone();
    let status = run.state.status.clone();
    let latency_ms = ms_since(run.started);
    match status {
        QueryStatus::Failed => {}
        _ => {
            let mut e = Event::new(EventKind::QueryCompleted, &qid)
                .latency_ms(latency_ms)
                .reason(status.as_str());
            if let Some(a) = &run.state.answer {
                e = e.layer(a.layer.as_str()).confidence(a.confidence);
            }
            run.events.push(e);
        }
    }
    if run.dead.is_none() {
        run.samples.push((
            // `QUERY_LATENCY_METRIC`, or its bench name.
            layer_latency_metric(&run.counted_as("query")),
            latency_ms,
            chrono::Utc::now().timestamp_millis(),
        ));
    }
    for (metric, value, ts_ms) in run.samples.drain(..) {
        sh.bb
            .add_sample_to(&mut run.counters, &metric, value, ts_ms);
    }
    let keys = sh.bb.keys();
    let o = &sh.settings.orchestrator;
    let script_keys = [
        keys.state(&qid),
        sh.processing_key.clone(),
        keys.done(&qid),
        keys.feed(),
        keys.dead(),
    ];
    let mut args: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&run.state).expect("state serializes"),
        run.entry.clone(),
        o.state_ttl_s.to_string().into_bytes(),
        o.done_ttl_s.to_string().into_bytes(),
        status.as_str().as_bytes().to_vec(),
        sh.bb.limits().feed_max_len.to_string().into_bytes(),
        run.replaces
            .take()
            .map(String::into_bytes)
            .unwrap_or_default(),
        run.dead.take().map(String::into_bytes).unwrap_or_default(),
        DEAD_LIST_CAP.to_string().into_bytes(),
    ];
    push_events(&mut args, &run.events);
    let mut invocation = FINISH.prepare_invoke();
    for k in &script_keys {
        invocation.key(k);
    }
    for a in &args {
        invocation.arg(a);
    }
    // One round trip: the script (EVALSHA), then the counters and samples.
    let mut pipe = redis::pipe();
    pipe.invoke_script(&invocation);
    for c in run.counters.cmd_iter() {
        pipe.add_command(c.clone()).ignore();
    }
    let mut conn = sh.bb.connection();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut counters = Counters::NotSent;
    loop {
        let written: redis::RedisResult<i64> = if counters != Counters::NotSent {
            // Only the script is left (or may be); this loads it if needed.
            invocation.invoke_async(&mut conn).await
        } else {
            pipe.query_async::<(i64,)>(&mut conn).await.map(|(w,)| w)
        };
        match written {
            Ok(1) => {
                if counters == Counters::Unknown {
                    // The script ran only now, so the earlier try (script
                    // first, counters after it) did not reach Redis.
                    if let Err(e) = run.counters.query_async::<()>(&mut conn).await {
                        tracing::debug!(query_id = %qid, "counters not written: {e}");
                    }
                }
                if !run.bench {
                    sh.status.prom.query_finished(status.as_str(), latency_ms);
                }
                tracing::debug!(query_id = %qid, status = %status, latency_ms, "finished");
                return true;
            }
            Ok(2) => {
                // An earlier try wrote exactly this outcome; its reply was lost.
                if !run.bench {
                    sh.status.prom.query_finished(status.as_str(), latency_ms);
                }
                tracing::debug!(query_id = %qid, status = %status, "finished (by an earlier try)");
                return true;
            }
            Ok(code) => {
                record_fenced(sh, &qid, &lost_reason(sh, code)).await;
                return false;
            }
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                // Redis lost its scripts (restart, SCRIPT FLUSH): the rest of
                // the pipeline ran; invoke_async loads the script and runs it.
                counters = Counters::Sent;
            }
            Err(e) if is_wrong_type(&e) => {
                tracing::error!(query_id = %qid, "cannot finish: a key has the wrong type: {e}");
                dead_letter(sh, &run.entry, &format!("cannot write the outcome: {e}")).await;
                return false;
            }
            Err(e) => {
                sh.status.redis_failed("finishing queries", &e);
                tracing::debug!(query_id = %qid, "cannot finish yet: {e}; retrying");
                // It may have run before the connection failed: from now on
                // the script alone says (it finishes a query only once).
                if counters == Counters::NotSent {
                    counters = Counters::Unknown;
                }
                tokio::select! {
                    _ = abort.cancelled() => return false,
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        }
    }
}

/// Whether the counters and samples that go with the finishing script (in
/// the same pipeline, after it) have reached Redis, across retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counters {
    /// No try has been sent yet, or none reached Redis.
    NotSent,
    /// They ran (the pipeline ran past the script).
    Sent,
    /// A try failed without saying how far it got: from now on the script
    /// alone is sent, and it says (it finishes a query only once).
    Unknown,
}

/// Drops a queue entry for a query that is finished already (a client
/// pushed its id again, or a duplicate delivery): nothing is redone, but
/// the drop leaves a trace (`query_fenced`, naming the final status) and
/// the completion signal is given again, so a client waiting on the
/// re-pushed id wakes and reads the outcome instead of timing out.
pub(super) async fn drop_duplicate(sh: &Instance, entry: &[u8], qid: &str, status: &QueryStatus) {
    tracing::info!(query_id = %qid, "a queue entry for a query that is {} already; dropped, waiting clients signalled", status.as_str());
    let keys = sh.bb.keys();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .lrem(&sh.processing_key, 1, entry)
        .ignore()
        .lpush(keys.done(qid), status.as_str())
        .ignore()
        .expire(keys.done(qid), sh.settings.orchestrator.done_ttl_s as i64)
        .ignore();
    sh.bb.add_event_to(
        &mut pipe,
        &Event::new(EventKind::QueryFenced, qid).reason(format!(
            "daemon {} dropped a duplicate entry: the query is {} already",
            sh.status.instance,
            status.as_str()
        )),
    );
    let mut conn = sh.bb.connection();
    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
        tracing::warn!(query_id = %qid, "cannot drop a duplicate entry: {e}; it stays in the processing list");
    }
}

/// Ends a query that recovery gave up on (`orchestrator.max_attempts`):
/// failed with `reason`, its record in the dead list, its clients
/// signalled, all in the one step that writes the outcome ([`finish`]), so
/// no crash leaves a failed state without its signal or its record.
pub(super) async fn finish_dead(
    sh: &Instance,
    mut state: QueryState,
    entry: Vec<u8>,
    reason: String,
    abort: &CancellationToken,
) {
    let qid = state.query_id.clone();
    state.status = QueryStatus::Failed;
    state.error = Some(reason.clone());
    state.completed_at = Some(now_rfc3339());
    let mut run = Run::new(state, entry, Instant::now());
    run.dead = Some(dead_record(&run.entry, &reason, &sh.status.instance));
    run.events
        .push(Event::new(EventKind::QueryDead, &qid).reason(reason));
    finish(sh, run, abort).await;
}

/// The JSON record a dead-list entry is: the entry (and its bytes in hex
/// when they are not UTF-8), why, which daemon, and when.
pub(super) fn dead_record(entry: &[u8], reason: &str, instance: &str) -> String {
    let mut record = serde_json::json!({
        "entry": String::from_utf8_lossy(entry),
        "reason": reason,
        "instance": instance,
        "at": now_rfc3339(),
    });
    if std::str::from_utf8(entry).is_err() {
        record["entry_hex"] =
            serde_json::Value::String(entry.iter().map(|b| format!("{b:02x}")).collect());
    }
    record.to_string()
}

/// Moves an entry that cannot become a query to the dead list, with why.
pub(super) async fn dead_letter(sh: &Instance, entry: &[u8], reason: &str) {
    tracing::warn!(entry = %String::from_utf8_lossy(&entry[..entry.len().min(120)]), "dead entry: {reason}");
    let record = dead_record(entry, reason, &sh.status.instance);
    let keys = sh.bb.keys();
    let mut script = DEAD_ENTRY.prepare_invoke();
    script
        .key(&sh.processing_key)
        .key(keys.dead())
        .key(keys.feed())
        .arg(entry)
        .arg(record)
        .arg(DEAD_LIST_CAP)
        .arg(sh.bb.limits().feed_max_len);
    let event = Event::global(EventKind::QueryFailed).reason(format!("dead entry: {reason}"));
    for (k, v) in event.fields() {
        script.arg(k).arg(v);
    }
    let mut conn = sh.bb.connection();
    match script.invoke_async::<i64>(&mut conn).await {
        Ok(1) => sh.status.prom.query_finished("failed", 0.0),
        Ok(_) => tracing::warn!(
            "a dead entry left {} before it was moved (a peer took it over); not recording it here",
            sh.processing_key
        ),
        Err(e) => tracing::warn!(
            "cannot move an entry to the dead list: {e}; it stays in the processing list"
        ),
    }
}
