//! Turning a queue entry into a query to run, or into its failure record.
//!
//! An entry is a query id whose state a client wrote, or a JSON object pushed
//! directly (`{"query_text": …}`, optional `query_id` and `metadata`). Bad
//! entries never stop the daemon: they become a `failed` state where an id is
//! known, and a record in the dead list otherwise.

use serde_json::Value;

use crate::state::{QueryState, QueryStatus};

/// Longest string taken for a query id; longer non-JSON entries are not ids.
pub const MAX_ID_BYTES: usize = 200;

/// What to do with one entry.
#[derive(Debug)]
pub enum Intake {
    /// A query to walk down the cascade. `state` is as read from Redis or
    /// built from a JSON entry; `created` says it still has to be written.
    Run {
        /// The query.
        state: QueryState,
        /// It came from a JSON entry and has no state in Redis yet.
        created: bool,
    },
    /// The query's outcome is final already: the entry is a duplicate,
    /// dropped with a trace (`query_fenced`) and its clients signalled.
    AlreadyDone {
        /// Its id.
        query_id: String,
        /// Its final status.
        status: QueryStatus,
    },
    /// An id is known: write a `failed` state with the reason.
    Fail {
        /// The failed state to write.
        state: QueryState,
        /// Why.
        reason: String,
    },
    /// No id is known: the entry goes to the dead list.
    Dead {
        /// Why.
        reason: String,
    },
}

/// How an entry looks before its state is read.
#[derive(Debug)]
pub enum EntryKind {
    /// A query id; its state must be read.
    Id(String),
    /// Decided without reading anything.
    Decided(Intake),
    /// A JSON entry that names an id which may have a state already.
    JsonWithId {
        /// The state to create when none exists.
        state: QueryState,
    },
}

/// Classifies a raw entry.
pub fn classify(entry: &[u8], max_query_bytes: usize) -> EntryKind {
    let Ok(text) = std::str::from_utf8(entry) else {
        return EntryKind::Decided(Intake::Dead {
            reason: "entry is not valid UTF-8".into(),
        });
    };
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        return classify_json(trimmed, max_query_bytes);
    }
    if trimmed.is_empty() {
        return EntryKind::Decided(Intake::Dead {
            reason: "empty entry".into(),
        });
    }
    if text.len() > MAX_ID_BYTES || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return EntryKind::Decided(Intake::Dead {
            reason: "entry is neither a query id nor a JSON object; push a query id after writing its state, or a JSON object like {\"query_text\":\"…\"}".into(),
        });
    }
    EntryKind::Id(text.to_string())
}

fn classify_json(text: &str, max_query_bytes: usize) -> EntryKind {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return EntryKind::Decided(Intake::Dead {
                reason: format!("invalid JSON: {e}"),
            });
        }
    };
    let Value::Object(mut obj) = value else {
        unreachable!("starts with '{{' and parsed");
    };
    let id = match obj.remove("query_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Some(s),
        Some(other) => {
            return EntryKind::Decided(Intake::Dead {
                reason: format!(
                    "query_id must be a non-empty string of at most {MAX_ID_BYTES} bytes, got {other}"
                ),
            });
        }
    };
    let text = match obj.remove("query_text") {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("query_text must be a string, got {other}")),
        None => Err("no query_text".to_string()),
    };
    let metadata = match obj.remove("metadata") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(m @ Value::Object(_)) => m,
        Some(other) => {
            let reason = format!("metadata must be an object, got {other}");
            return match id {
                Some(id) => EntryKind::Decided(fail(QueryState::with_id(id, ""), reason)),
                None => EntryKind::Decided(Intake::Dead { reason }),
            };
        }
    };
    let text = match text {
        Ok(t) => t,
        Err(reason) => {
            return match id {
                Some(id) => EntryKind::Decided(fail(QueryState::with_id(id, ""), reason)),
                None => EntryKind::Decided(Intake::Dead { reason }),
            };
        }
    };
    let mut state = match &id {
        Some(id) => QueryState::with_id(id.clone(), text),
        None => QueryState::new(text),
    };
    state.metadata = metadata;
    if id.is_some() {
        return EntryKind::JsonWithId { state };
    }
    // Without an id of the client's, a failed state would be one nobody can
    // find: the entry goes to the dead list instead.
    match check_text(state, true, max_query_bytes) {
        Intake::Fail { reason, .. } => EntryKind::Decided(Intake::Dead { reason }),
        other => EntryKind::Decided(other),
    }
}

fn fail(mut state: QueryState, reason: String) -> Intake {
    state.status = QueryStatus::Failed;
    state.error = Some(reason.clone());
    Intake::Fail { state, reason }
}

/// Decides on a state read for an id entry (`raw` = None: no state).
pub fn from_stored(id: &str, raw: Option<&str>, max_query_bytes: usize) -> Intake {
    let Some(raw) = raw else {
        return fail(
            QueryState::with_id(id, ""),
            "no state for this query id (it expired, or the id was pushed before its state was written)".into(),
        );
    };
    let state: QueryState = match serde_json::from_str(raw) {
        Ok(s) => s,
        Err(e) => {
            let mut state = QueryState::with_id(id, "");
            state.extra.insert(
                "invalid_state".into(),
                Value::String(raw.chars().take(4096).collect()),
            );
            return fail(state, format!("stored state is not valid: {e}"));
        }
    };
    if state.query_id != id {
        let mut s = state;
        let reason = format!("stored state names another query_id ({:?})", s.query_id);
        s.query_id = id.to_string();
        return fail(s, reason);
    }
    if state.status.is_terminal() {
        return Intake::AlreadyDone {
            query_id: id.to_string(),
            status: state.status.clone(),
        };
    }
    check_text(state, false, max_query_bytes)
}

/// Checks the text of a query about to run.
pub fn check_text(state: QueryState, created: bool, max_query_bytes: usize) -> Intake {
    if state.query_text.trim().is_empty() {
        return fail(state, "query_text is empty".into());
    }
    if state.query_text.len() > max_query_bytes {
        let n = state.query_text.len();
        let mut state = state;
        state.query_text = truncate(&state.query_text, 256);
        return fail(
            state,
            format!(
                "query_text is {n} bytes, over orchestrator.max_query_bytes = {max_query_bytes}"
            ),
        );
    }
    Intake::Run { state, created }
}

/// The first `max` bytes of `s` at a char boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(e: EntryKind) -> Intake {
        match e {
            EntryKind::Decided(i) => i,
            other => panic!("not decided: {other:?}"),
        }
    }

    #[test]
    fn ids_and_json() {
        assert!(matches!(classify(b"q1", 100), EntryKind::Id(id) if id == "q1"));
        assert!(matches!(
            decided(classify(br#"{"query_text":"What is AI?"}"#, 100)),
            Intake::Run { created: true, .. }
        ));
        assert!(matches!(
            classify(br#"{"query_text":"t","query_id":"x"}"#, 100),
            EntryKind::JsonWithId { .. }
        ));
    }

    #[test]
    fn bad_entries() {
        for (entry, dead) in [
            (&b"\xff\xfe"[..], true),
            (b"{not json", true),
            (b"{\"query_text\":5}", true),
            (b"{}", true),
            (b"What is AI?", true),
            (b"   ", true),
            (b"{\"query_id\":\"a\",\"query_text\":7}", false),
        ] {
            match decided(classify(entry, 100)) {
                Intake::Dead { .. } => assert!(dead, "{entry:?}"),
                Intake::Fail { state, .. } => {
                    assert!(!dead, "{entry:?}");
                    assert_eq!(state.status, QueryStatus::Failed);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            decided(classify(br#"{"query_text":"   "}"#, 100)),
            Intake::Dead { .. }
        ));
        let long = format!(r#"{{"query_text":"{}"}}"#, "x".repeat(101));
        let Intake::Dead { reason } = decided(classify(long.as_bytes(), 100)) else {
            panic!()
        };
        assert!(reason.contains("max_query_bytes"));
        let EntryKind::JsonWithId { state } = classify(
            format!(r#"{{"query_id":"l","query_text":"{}"}}"#, "x".repeat(101)).as_bytes(),
            100,
        ) else {
            panic!()
        };
        let Intake::Fail { state, .. } = check_text(state, true, 100) else {
            panic!()
        };
        assert!(state.query_text.len() < 300);
    }

    #[test]
    fn stored_states() {
        assert!(matches!(from_stored("q", None, 10), Intake::Fail { .. }));
        assert!(matches!(
            from_stored("q", Some("{oops"), 10),
            Intake::Fail { .. }
        ));
        let done = r#"{"query_id":"q","query_text":"t","status":"answered"}"#;
        assert!(matches!(
            from_stored("q", Some(done), 10),
            Intake::AlreadyDone { .. }
        ));
        let ok = r#"{"query_id":"q","query_text":"t","status":"pending"}"#;
        assert!(matches!(
            from_stored("q", Some(ok), 10),
            Intake::Run { created: false, .. }
        ));
        let other = r#"{"query_id":"z","query_text":"t","status":"pending"}"#;
        assert!(matches!(
            from_stored("q", Some(other), 10),
            Intake::Fail { .. }
        ));
    }
}
