//! Recovery: a daemon whose health key has expired is dead; a live daemon
//! returns what it held to the queue.
//!
//! Death is judged by [`DeathWatch`]: a definite absence of the health key,
//! seen on two passes at least a heartbeat interval apart, with no failed
//! heartbeat of our own in between; a failed or unparsable read never
//! counts. A daemon that was only stalled and wakes up after its list was
//! taken over finds, at its next write, that it no longer holds its queries
//! (fencing, see `finish.lua` and `push_job.lua`), and stops.
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

use super::instance::Instance;
use crate::observe::feed::{Event, EventKind};
use crate::store::blackboard::{Blackboard, BlackboardError};
use crate::store::lanes::Lane;
use crate::store::liveness::{DeathWatch, Reading};
use crate::store::orphans::OrphanSweep;
use crate::store::scripts::RETURN_ONE;

/// Returns everything in `processing` to the tails of the entries' own
/// lanes (taken next); returns how many.
pub(super) async fn return_own(bb: &Blackboard, processing: &str) -> usize {
    let mut conn = bb.connection();
    let entries: Vec<Vec<u8>> = match conn.lrange(processing, 0, -1).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(
                "cannot read {processing} to return it: {e}; another daemon will recover it"
            );
            return 0;
        }
    };
    if entries.is_empty() {
        return 0;
    }
    // Where the lanes cannot be read, the normal lane takes them: returned
    // is better than left behind.
    let lanes = match bb.lanes_of(&entries).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(
                "cannot read the returned entries' priorities ({e}); returning them to the normal lane"
            );
            vec![Lane::Normal; entries.len()]
        }
    };
    // One round trip: each entry's return is its own step (`return_one.lua`,
    // only if still in the list), pipelined.
    let mut pipe = redis::pipe();
    let invocations: Vec<_> = entries
        .iter()
        .zip(&lanes)
        .map(|(entry, lane)| {
            let mut i = RETURN_ONE.prepare_invoke();
            i.key(processing).key(bb.keys().lane(*lane)).arg(entry);
            i
        })
        .collect();
    for i in &invocations {
        pipe.invoke_script(i);
    }
    match pipe.query_async::<Vec<i64>>(&mut conn).await {
        Ok(moved) => moved.iter().sum::<i64>() as usize,
        Err(e) => {
            tracing::warn!(
                "cannot return {processing} to its lanes: {e}; another daemon will recover what is left"
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
    sh: Arc<Instance>,
    cancel: CancellationToken,
) {
    let mut sweep = OrphanSweep::default();
    let beat = Duration::from_millis(sh.settings.orchestrator.heartbeat_interval_ms);
    let mut watch = DeathWatch::for_peers(beat, sh.settings.redis.retry_max_delay());
    loop {
        match recover_dead(&bb, &instance, max_attempts, &sh, &mut watch, &cancel).await {
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
    sh: &Instance,
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

/// One pass: every processing list whose daemon is dead (see
/// [`DeathWatch`]).
pub(super) async fn recover_dead(
    bb: &Blackboard,
    instance: &str,
    max_attempts: u32,
    sh: &Instance,
    watch: &mut DeathWatch,
    cancel: &CancellationToken,
) -> Result<usize, BlackboardError> {
    let keys = bb.keys();
    let mut total = 0;
    let lists = bb.scan_keys(&keys.processing_pattern()).await?;
    let owners: Vec<(String, String)> = lists
        .into_iter()
        .filter_map(|list| {
            let owner = keys.suffix(&list, "queries:processing")?.to_string();
            (owner != instance).then_some((list, owner))
        })
        .collect();
    watch.retain(|peer| owners.iter().any(|(_, o)| o == peer));
    for (list, owner) in owners {
        let read = bb.get_health(&owner).await;
        let reading = Reading::of(&read);
        if reading == Reading::Unknown {
            tracing::debug!(peer = %owner, "cannot read a health key; not judging the peer this pass");
        }
        let dead = watch.observe(
            &owner,
            reading,
            tokio::time::Instant::now(),
            sh.status.heartbeat_failures.last(),
        );
        if !dead {
            continue;
        }
        tracing::warn!(dead = %owner, "daemon is dead (no health key on two passes); recovering its queries");
        total += recover_list(bb, &list, max_attempts, sh, cancel).await?;
        watch.forget(&owner);
        let mut conn = bb.connection();
        let _: u64 = conn.del(keys.replies(&owner)).await?;
    }
    Ok(total)
}

async fn recover_list(
    bb: &Blackboard,
    list: &str,
    max_attempts: u32,
    sh: &Instance,
    cancel: &CancellationToken,
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
        let mut lane = Lane::Normal;
        let id = match super::intake::classify(&entry, usize::MAX) {
            // An id of another partition (pushed to the wrong queue) is only
            // returned: intake sends it to the dead list saying where it
            // belongs, and its state is in another slot than this list.
            super::intake::EntryKind::Id(id) if keys.partition_of(&id) == keys.current() => {
                Some(id)
            }
            _ => None,
        };
        if let Some(id) = &id {
            // Count the recovery (one read and one compare-and-set), then
            // decide on the counted state.
            let counted = bb
                .update_state(id, |s| {
                    if !s.status.is_terminal() {
                        s.recoveries += 1;
                    }
                })
                .await;
            match counted {
                Ok(s) if s.status.is_terminal() => {
                    // Finished before its daemon died: just drop the entry.
                    let _: i64 = conn.lrem(&sh.processing_key, 1, &entry).await?;
                    continue;
                }
                Ok(s) if s.recoveries >= max_attempts => {
                    // Its last chance is used up: failed, in the dead list,
                    // clients signalled, in one step with the outcome
                    // (`finish.lua`), so no crash leaves a failed state
                    // without its completion signal or dead-list record.
                    let reason = format!(
                        "recovered {} times from daemons that died holding it (orchestrator.max_attempts = {max_attempts})",
                        s.recoveries
                    );
                    super::finish::finish_dead(sh, s, entry, reason, cancel).await;
                    continue;
                }
                Ok(s) => lane = s.lane(),
                // No state, or an unreadable one: the next daemon to take it
                // records why it fails.
                Err(e) if unusable(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let mut ev = match &id {
            Some(id) => Event::new(EventKind::QueryRecovered, id),
            None => Event::global(EventKind::QueryRecovered),
        };
        if id.is_none() {
            // A JSON entry carries its own priority.
            lane = bb.lanes_of(std::slice::from_ref(&entry)).await?[0];
        }
        ev = ev
            .reason(format!("returned to the queue from {list}"))
            .priority(lane);
        let mut requeue = RETURN_ONE.prepare_invoke();
        requeue
            .key(&sh.processing_key)
            .key(keys.lane(lane))
            .key(keys.feed())
            .arg(&entry)
            .arg(bb.limits().feed_max_len);
        for (k, v) in ev.fields() {
            requeue.arg(k).arg(v);
        }
        let moved: i64 = requeue.invoke_async(&mut conn).await?;
        sh.status.prom.recovered(moved as u64);
    }
    Ok(n)
}

/// A state that is gone or cannot be used: the daemon that takes the entry
/// next records why the query fails; recovery just returns it.
fn unusable(e: &BlackboardError) -> bool {
    matches!(
        e,
        BlackboardError::NotFound { .. }
            | BlackboardError::MalformedState { .. }
            | BlackboardError::WrongType { .. }
    )
}
