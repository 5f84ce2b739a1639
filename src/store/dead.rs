//! Reading and repairing the dead list (`<p>:queries:dead`): the entries
//! that could not become a query, or that recovery gave up on. The
//! dashboard lists them and, when its actions are on, requeues or deletes
//! one. A record is named by its exact stored text, so two people acting on
//! the same record cannot both succeed.

use redis::AsyncCommands;
use serde::Serialize;

use super::blackboard::{Blackboard, BlackboardError, Result};
use super::keys::Keys;
use super::scripts::REQUEUE_DEAD;
use crate::daemon::intake::{EntryKind, classify};
use crate::state::{QueryState, QueryStatus};

/// One dead-list record, as stored and as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadRecord {
    /// The stored text (the handle for requeue and delete).
    pub record: String,
    /// The entry that could not be processed.
    pub entry: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// The daemon that moved it here.
    pub instance: Option<String>,
    /// When (RFC 3339).
    pub at: Option<String>,
    /// The query it names, if it names one.
    pub query_id: Option<String>,
}

impl DeadRecord {
    /// Reads a stored record; one that is not the JSON Kitbash writes
    /// (another program's push) keeps only its text.
    pub fn parse(record: String) -> Self {
        let json: Option<serde_json::Value> = serde_json::from_str(&record).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let entry = field("entry");
        let query_id = entry.as_deref().and_then(query_id_of);
        Self {
            entry,
            reason: field("reason"),
            instance: field("instance"),
            at: field("at"),
            query_id,
            record,
        }
    }

    /// The bytes to push back: the original entry (from `entry_hex` when
    /// it was not UTF-8).
    fn entry_bytes(&self) -> Option<Vec<u8>> {
        let json: serde_json::Value = serde_json::from_str(&self.record).ok()?;
        if let Some(hex) = json.get("entry_hex").and_then(|v| v.as_str()) {
            return (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
        }
        self.entry.as_ref().map(|e| e.clone().into_bytes())
    }
}

/// The query id an entry names: a bare id, or a JSON entry's `query_id`.
fn query_id_of(entry: &str) -> Option<String> {
    match classify(entry.as_bytes(), usize::MAX) {
        EntryKind::Id(id) => Some(id),
        EntryKind::JsonWithId { state } => Some(state.query_id),
        EntryKind::Decided(_) => None,
    }
}

/// What a requeue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeued {
    /// The entry is back on the queue (its failed state reset to pending).
    Done {
        /// The query it names, if any.
        query_id: Option<String>,
    },
    /// The record is no longer in the dead list.
    Gone,
    /// The query has an outcome that a requeue would throw away, or is
    /// being processed: nothing was done.
    Refused(String),
}

/// How many times a requeue re-reads a state that changed under it.
const REQUEUE_ATTEMPTS: usize = 8;

impl Blackboard {
    /// Entries in the dead list (every partition).
    pub async fn dead_len(&self) -> Result<u64> {
        let mut total = 0;
        for keys in self.keys.all_partitions() {
            let key = keys.dead();
            let mut conn = self.conn.clone();
            let n: u64 = conn
                .llen(&key)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "list"))?;
            total += n;
        }
        Ok(total)
    }

    /// `count` records from `offset`, newest first. In cluster mode the
    /// partitions' lists are merged by their `at` times.
    pub async fn dead_page(&self, offset: usize, count: usize) -> Result<Vec<DeadRecord>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut all = Vec::new();
        for keys in self.keys.all_partitions() {
            let key = keys.dead();
            let mut conn = self.conn.clone();
            let records: Vec<String> = conn
                .lrange(&key, 0, (offset + count) as isize - 1)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "list"))?;
            all.extend(records.into_iter().map(DeadRecord::parse));
        }
        if self.keys.partitions() > 1 {
            // RFC 3339 in UTC with a fixed precision sorts as text.
            all.sort_by(|a, b| b.at.cmp(&a.at));
        }
        Ok(all.into_iter().skip(offset).take(count).collect())
    }

    /// The partition whose dead list holds `record`, if one does.
    async fn dead_home(&self, record: &str) -> Result<Option<Keys>> {
        for keys in self.keys.all_partitions() {
            let key = keys.dead();
            let mut conn = self.conn.clone();
            let at: Option<u64> = redis::cmd("LPOS")
                .arg(&key)
                .arg(record)
                .query_async(&mut conn)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "list"))?;
            if at.is_some() {
                return Ok(Some(keys));
            }
        }
        Ok(None)
    }

    /// Deletes one record; false when it was not there.
    pub async fn delete_dead(&self, record: &str) -> Result<bool> {
        let Some(keys) = self.dead_home(record).await? else {
            return Ok(false);
        };
        let key = keys.dead();
        let mut conn = self.conn.clone();
        let n: u64 = conn
            .lrem(&key, 1, record)
            .await
            .map_err(|e| BlackboardError::on_key(e, &key, "list"))?;
        Ok(n == 1)
    }

    /// Takes one record out of the dead list and pushes its entry back on
    /// the queue of its query's partition, to be taken like a new entry.
    ///
    /// A query that ended `failed` (recovery gave up, or its input was
    /// refused) is reset to `pending` in the same step, its attempts and
    /// completion signal cleared, so it runs again; a query that was
    /// answered, left unanswered or is being processed is refused. An
    /// entry that names no query is pushed as it was: the daemon judges it
    /// again (and sends it back here with a reason if it is still bad).
    /// The record, the state and the push change in one script when they
    /// share a slot (always on one server); in cluster mode, where an id
    /// pushed to another partition's queue sits in that partition's dead
    /// list, the record is taken out first and the entry pushed after.
    pub async fn requeue_dead(&self, record: &str) -> Result<Requeued> {
        let Some(home) = self.dead_home(record).await? else {
            return Ok(Requeued::Gone);
        };
        let parsed = DeadRecord::parse(record.to_string());
        let Some(entry) = parsed.entry_bytes() else {
            return Ok(Requeued::Refused(
                "the record names no entry to requeue (not written by Kitbash)".into(),
            ));
        };
        let qid = parsed.query_id.clone();
        let target = match &qid {
            Some(id) => self.keys.for_query(id),
            None => home.clone(),
        };
        // Back to its own lane: the state's priority, or the JSON entry's.
        let lane = self.lanes_of(std::slice::from_ref(&entry)).await?[0];
        let same_slot = !self.keys.is_partitioned() || home.current() == target.current();
        let mut claimed = false;
        for _ in 0..REQUEUE_ATTEMPTS {
            let (old, new) = match &qid {
                Some(id) => match self.requeued_state(id).await? {
                    Ok(pair) => pair,
                    Err(why) => return Ok(Requeued::Refused(why)),
                },
                None => (String::new(), String::new()),
            };
            if !same_slot && !claimed {
                let key = home.dead();
                let mut conn = self.conn.clone();
                let n: u64 = conn
                    .lrem(&key, 1, record)
                    .await
                    .map_err(|e| BlackboardError::on_key(e, &key, "list"))?;
                if n == 0 {
                    return Ok(Requeued::Gone);
                }
                claimed = true;
            }
            let queue = target.lane(lane);
            let id = qid.as_deref().unwrap_or("-");
            let mut script = REQUEUE_DEAD.prepare_invoke();
            script
                .key(if claimed { queue.clone() } else { home.dead() })
                .key(&queue)
                .key(target.state(id))
                .key(target.done(id))
                .arg(if claimed { "" } else { record })
                .arg(&entry)
                .arg(&old)
                .arg(&new)
                .arg(self.limits.state_ttl_s);
            let mut conn = self.conn.clone();
            let done: i64 = match script.invoke_async(&mut conn).await {
                Ok(n) => n,
                Err(e) => {
                    if claimed {
                        // Taken out, not pushed: put the record back so
                        // nothing is lost, and report the failure.
                        let key = home.dead();
                        if let Err(back) = conn.lpush::<_, _, ()>(&key, record).await {
                            tracing::error!(
                                record,
                                "requeue failed and the dead record could not be put back: {back}"
                            );
                        }
                    }
                    return Err(BlackboardError::on_key(e, &queue, "list"));
                }
            };
            match done {
                1 => return Ok(Requeued::Done { query_id: qid }),
                0 => return Ok(Requeued::Gone),
                _ => continue, // the state changed under us: read it again
            }
        }
        Ok(Requeued::Refused(
            "the query's state kept changing; try again".into(),
        ))
    }

    /// The state of `query_id` as read (raw) and as it is to be written
    /// for a requeue, both empty when there is none (the entry is pushed
    /// as it was); `Err` with why when the query must not run again.
    async fn requeued_state(
        &self,
        query_id: &str,
    ) -> Result<std::result::Result<(String, String), String>> {
        let Some(raw) = self.get_state_raw(query_id).await? else {
            return Ok(Ok((String::new(), String::new())));
        };
        let Ok(mut state) = serde_json::from_str::<QueryState>(&raw) else {
            // Unreadable: the daemon fails it again with a reason.
            return Ok(Ok((String::new(), String::new())));
        };
        match state.status {
            QueryStatus::Failed => {}
            QueryStatus::Pending => return Ok(Ok((String::new(), String::new()))),
            ref other => {
                return Ok(Err(format!(
                    "query {query_id} is {}: only a failed or pending query is requeued",
                    other.as_str()
                )));
            }
        }
        state.status = QueryStatus::Pending;
        state.started_at = None;
        state.completed_at = None;
        state.layer_attempts.clear();
        state.answer = None;
        state.error = None;
        state.recoveries = 0;
        let new = serde_json::to_string(&state).expect("a QueryState always serializes");
        Ok(Ok((raw, new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_their_query_when_the_entry_does() {
        let r = DeadRecord::parse(
            r#"{"entry":"q-1","reason":"no state","instance":"d1","at":"2026-11-30T10:00:00.000000Z"}"#
                .into(),
        );
        assert_eq!(r.query_id.as_deref(), Some("q-1"));
        assert_eq!(r.reason.as_deref(), Some("no state"));
        let r = DeadRecord::parse(
            r#"{"entry":"{\"query_id\":\"q-2\",\"query_text\":\"hi\"}","reason":"x"}"#.into(),
        );
        assert_eq!(r.query_id.as_deref(), Some("q-2"));
        let r = DeadRecord::parse(r#"{"entry":"two words","reason":"x"}"#.into());
        assert_eq!(r.query_id, None);
        let r = DeadRecord::parse("not json".into());
        assert_eq!((r.entry, r.query_id), (None, None));
    }

    #[test]
    fn an_entry_that_was_not_utf8_is_pushed_back_as_its_bytes() {
        let r = DeadRecord::parse(r#"{"entry":"\ufffd","entry_hex":"ff00","reason":"x"}"#.into());
        assert_eq!(r.entry_bytes(), Some(vec![0xff, 0x00]));
    }
}
