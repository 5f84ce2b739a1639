//! Ending a query: its outcome in one fenced step (`finish.lua`), the dead
//! list for entries that cannot become queries and for queries recovery
//! gave up on, and the record of a query this daemon found it had lost.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::cascade::{Run, ms_since};
use super::finisher::{Outcome, Written};
use super::instance::Instance;
use crate::observe::feed::{Event, EventKind};
use crate::observe::metrics::layer_latency_metric;
use crate::state::{QueryState, QueryStatus, now_rfc3339};
use crate::store::scripts::DEAD_ENTRY;

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

/// Writes the terminal state and everything recorded, exactly once and
/// only while this daemon holds the query (see `finish.lua`), in the
/// instance's next finishing batch (`finisher.rs`). Retries while Redis is
/// away, until `abort` fires; the entry stays in the processing list
/// meanwhile. Returns whether this outcome is the query's (written now, or
/// by an earlier try).
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
        run.tally.sample(
            // `QUERY_LATENCY_METRIC`, or its bench name.
            layer_latency_metric(&run.counted_as("query")),
            latency_ms,
            chrono::Utc::now().timestamp_millis(),
        );
    }
    let entry = run.entry.clone();
    let outcome = Outcome {
        state: serde_json::to_vec(&run.state).expect("state serializes"),
        query_id: qid.clone(),
        entry: run.entry,
        status: status.as_str().to_string(),
        replaces: run.replaces,
        dead: run.dead,
        events: run.events,
        tally: run.tally,
    };
    let written = tokio::select! {
        w = sh.finisher.write(outcome) => w,
        _ = abort.cancelled() => return false,
    };
    match written {
        Some(Written::Now | Written::Earlier) => {
            if !run.bench {
                sh.status.prom.query_finished(status.as_str(), latency_ms);
            }
            tracing::debug!(query_id = %qid, status = %status, latency_ms, "finished");
            true
        }
        Some(Written::Refused(code)) => {
            record_fenced(sh, &qid, &lost_reason(sh, code)).await;
            false
        }
        Some(Written::WrongType(e)) => {
            tracing::error!(query_id = %qid, "cannot finish: a key has the wrong type: {e}");
            dead_letter(sh, &entry, &format!("cannot write the outcome: {e}")).await;
            false
        }
        None => false,
    }
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
