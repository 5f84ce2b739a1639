//! Recovery: a daemon whose health key has expired is dead; a live daemon
//! returns what it held to the queue.
//!
//! Each entry is first claimed (moved into the recovering daemon's own
//! processing list, atomically), so two daemons recovering at once never both
//! handle it and a recoverer that dies mid-way leaves it recoverable. The
//! query's `recoveries` count goes up; past `orchestrator.max_attempts` it
//! ends `failed` in the dead list instead of going round again.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::RETURN_ALL;
use super::cascade::{DEAD_LIST_CAP, Shared};
use crate::blackboard::{Blackboard, BlackboardError};
use crate::feed::{Event, EventKind};
use crate::orphans::OrphanSweep;
use crate::state::{QueryStatus, now_rfc3339};

/// Returns everything in `processing` to the queue; returns how many.
pub(super) async fn return_own(bb: &Blackboard, processing: &str) -> usize {
    let mut conn = bb.connection();
    match RETURN_ALL
        .key(processing)
        .key(bb.keys().queue())
        .invoke_async::<Vec<Vec<u8>>>(&mut conn)
        .await
    {
        Ok(v) => v.len(),
        Err(e) => {
            tracing::warn!(
                "cannot return {processing} to the queue: {e}; another daemon will recover it"
            );
            0
        }
    }
}

/// Looks for dead daemons at start and every `every`, until `cancel` fires.
pub(super) async fn run(
    bb: Blackboard,
    instance: String,
    max_attempts: u32,
    every: Duration,
    sh: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut sweep = OrphanSweep::default();
    loop {
        match recover_dead(&bb, &instance, max_attempts, &sh).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(recovered = n, "recovered queries of dead daemons"),
            Err(e) => tracing::debug!("recovery pass failed: {e}"),
        }
        if let Err(e) = return_orphans(&bb, &sh, &mut sweep).await {
            tracing::debug!("orphan sweep failed: {e}");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Returns entries of this daemon's own processing list that no task holds
/// (their taking response was lost, or the step that removes them failed)
/// to the queue, each with a `query_recovered` event.
async fn return_orphans(
    bb: &Blackboard,
    sh: &Shared,
    sweep: &mut OrphanSweep,
) -> Result<(), BlackboardError> {
    let mut conn = bb.connection();
    let returned = sweep
        .sweep(&mut conn, &sh.processing_key, &bb.keys().queue(), &sh.held)
        .await?;
    if returned.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        returned = returned.len(),
        "returned entries of our own processing list that no task held (a lost response) to the queue"
    );
    let mut pipe = redis::pipe();
    for entry in &returned {
        let ev = match super::intake::classify(entry, usize::MAX) {
            super::intake::EntryKind::Id(id) => Event::new(EventKind::QueryRecovered, &id),
            _ => Event::global(EventKind::QueryRecovered),
        };
        bb.add_event_to(
            &mut pipe,
            &ev.reason(format!(
                "orphaned in {} (no task held it); returned to the queue",
                sh.processing_key
            )),
        );
    }
    let _: () = pipe.query_async(&mut conn).await?;
    sh.status.prom.recovered(returned.len() as u64);
    Ok(())
}

/// One pass: every processing list whose daemon has no health key.
pub(super) async fn recover_dead(
    bb: &Blackboard,
    instance: &str,
    max_attempts: u32,
    sh: &Shared,
) -> Result<usize, BlackboardError> {
    let keys = bb.keys();
    let mut total = 0;
    for list in bb.scan_keys(&keys.processing_pattern()).await? {
        let Some(owner) = keys.suffix(&list, "queries:processing") else {
            continue;
        };
        if owner == instance || bb.get_health(owner).await.ok().flatten().is_some() {
            continue;
        }
        tracing::warn!(dead = %owner, "daemon is dead (no health key); recovering its queries");
        total += recover_list(bb, &list, max_attempts, sh).await?;
        let mut conn = bb.connection();
        let _: u64 = conn.del(keys.replies(owner)).await?;
    }
    Ok(total)
}

async fn recover_list(
    bb: &Blackboard,
    list: &str,
    max_attempts: u32,
    sh: &Shared,
) -> Result<usize, BlackboardError> {
    let keys = bb.keys();
    let mut conn = bb.connection();
    let mut n = 0;
    loop {
        // Claim one entry: from the dead daemon's list into ours.
        let entry: Option<Vec<u8>> = redis::cmd("LMOVE")
            .arg(list)
            .arg(&sh.processing_key)
            .arg("RIGHT")
            .arg("LEFT")
            .query_async(&mut conn)
            .await?;
        let Some(entry) = entry else { break };
        n += 1;
        let id = match super::intake::classify(&entry, usize::MAX) {
            super::intake::EntryKind::Id(id) => Some(id),
            _ => None,
        };
        let mut dead_reason = None;
        if let Some(id) = &id {
            match bb
                .update_state(id, |s| {
                    if !s.status.is_terminal() {
                        s.recoveries += 1;
                    }
                })
                .await
            {
                Ok(s) if s.status.is_terminal() => {
                    // Finished before its daemon died: just drop the entry.
                    let _: i64 = conn.lrem(&sh.processing_key, 1, &entry).await?;
                    continue;
                }
                Ok(s) if s.recoveries >= max_attempts => {
                    dead_reason = Some(format!(
                        "recovered {} times from daemons that died holding it (orchestrator.max_attempts = {max_attempts})",
                        s.recoveries
                    ));
                }
                Ok(_) => {}
                // No state, or an unreadable one: the next daemon to take it
                // records why it fails.
                Err(BlackboardError::NotFound { .. })
                | Err(BlackboardError::MalformedState { .. })
                | Err(BlackboardError::WrongType { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let (Some(id), Some(reason)) = (&id, dead_reason) {
            let state = bb
                .update_state(id, |s| {
                    s.status = QueryStatus::Failed;
                    s.error = Some(reason.clone());
                    s.completed_at = Some(now_rfc3339());
                })
                .await?;
            let record = super::cascade::dead_record(&entry, &reason, &sh.status.instance);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .lpush(keys.dead(), record)
                .ignore()
                .ltrim(keys.dead(), 0, DEAD_LIST_CAP - 1)
                .ignore()
                .lrem(&sh.processing_key, 1, &entry)
                .ignore()
                .del(keys.done(id))
                .ignore()
                .lpush(keys.done(id), state.status.as_str())
                .ignore()
                .expire(keys.done(id), sh.settings.orchestrator.done_ttl_s as i64)
                .ignore();
            bb.add_event_to(
                &mut pipe,
                &Event::new(EventKind::QueryDead, id).reason(reason),
            );
            let _: () = pipe.query_async(&mut conn).await?;
            sh.status.prom.query_finished("failed", 0.0);
            continue;
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lrem(&sh.processing_key, 1, &entry)
            .ignore()
            .rpush(keys.queue(), &entry)
            .ignore();
        let mut ev = match &id {
            Some(id) => Event::new(EventKind::QueryRecovered, id),
            None => Event::global(EventKind::QueryRecovered),
        };
        ev = ev.reason(format!("returned to the queue from {list}"));
        bb.add_event_to(&mut pipe, &ev);
        let _: () = pipe.query_async(&mut conn).await?;
        sh.status.prom.recovered(1);
    }
    Ok(n)
}
