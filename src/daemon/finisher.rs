//! Group commit of outcomes: one task per daemon instance writes the
//! outcomes of every query that finished while its previous write was on
//! the way, in one `finish.lua` call, with their counters and samples
//! merged into one pipeline (one HINCRBY per counter, one ZADD per metric).
//!
//! No timer: a query that finishes while nothing is being written is
//! written at once (a batch of one, as before batching), so light load
//! waits for nothing. Under load, outcomes queue behind the write on the
//! way and go together in the next one; a batch holds at most
//! [`MAX_BATCH`]. Each query is still finished exactly once and fenced on
//! its own: the script decides per query (see `finish.lua`), and each
//! query's task gets its own reply and signals its own clients.

use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};

use super::status::DaemonStatus;
use crate::observe::feed::Event;
use crate::observe::metrics::Tally;
use crate::store::blackboard::{Blackboard, is_wrong_type};
use crate::store::outage::Backoff;
use crate::store::scripts::{FINISH, event_args};

/// Most queries finished by one script call.
pub(super) const MAX_BATCH: usize = 256;

/// One query's outcome, ready to be written.
pub(super) struct Outcome {
    pub query_id: String,
    /// The terminal state, serialised.
    pub state: Vec<u8>,
    /// Its processing-list entry.
    pub entry: Vec<u8>,
    /// The terminal status (the completion signal's payload).
    pub status: String,
    /// A stored state judged unusable, which the outcome may replace.
    pub replaces: Option<String>,
    /// A dead-list record to add with the outcome.
    pub dead: Option<String>,
    pub events: Vec<Event>,
    pub tally: Tally,
}

/// What became of one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Written {
    /// Written now.
    Now,
    /// An earlier try wrote exactly this outcome; its reply was lost.
    Earlier,
    /// Refused with the script's code: 0 the state is terminal already, -1
    /// the entry left this daemon's processing list.
    Refused(i64),
    /// A key of the wrong type: the outcome could not be written.
    WrongType(String),
}

struct Job {
    outcome: Outcome,
    reply: oneshot::Sender<Written>,
}

/// The sending side: cheap to share, one per instance.
#[derive(Clone)]
pub(super) struct Finisher {
    tx: mpsc::UnboundedSender<Job>,
}

/// What the writing task needs of its instance.
pub(super) struct Target {
    pub bb: Blackboard,
    pub processing_key: String,
    pub state_ttl_s: u64,
    pub done_ttl_s: u64,
    pub status: Arc<DaemonStatus>,
}

impl Finisher {
    /// Starts the writing task; it ends when every [`Finisher`] is dropped
    /// and the outcomes sent before are written (or given up by their
    /// senders).
    pub(super) fn start(target: Target) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(target, rx));
        Self { tx }
    }

    /// Writes `outcome`; resolves when it is written or refused. Retries
    /// while Redis is away: a caller that stops waiting (drops the future)
    /// gives the outcome up, and it is written only if a try already on
    /// the way reaches Redis. `None` when the writing task is gone.
    pub(super) async fn write(&self, outcome: Outcome) -> Option<Written> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { outcome, reply }).ok()?;
        rx.await.ok()
    }
}

async fn write_loop(target: Target, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        write_batch(&target, std::mem::take(&mut jobs)).await;
    }
}

/// Whether the counters and samples that go with the script (in the same
/// pipeline, after it) have reached Redis, across retries of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counters {
    /// No try has been sent yet, or none reached Redis.
    NotSent,
    /// They ran (the pipeline ran past the script).
    Sent,
    /// A try failed without saying how far it got: from now on the script
    /// alone is sent, and its replies say per query whether it ran (a query
    /// finished now was not finished by that try, nor counted).
    Unknown,
}

async fn write_batch(t: &Target, mut jobs: Vec<Job>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut counters = Counters::NotSent;
    let mut conn = t.bb.connection();
    let mut invocation = invocation(t, &jobs);
    // Counters of other partitions' keys (grains hit), in cluster mode:
    // written once, after the batch.
    let mut elsewhere = Tally::default();
    loop {
        // A sender that stopped waiting (its daemon is aborting) gave its
        // outcome up: the entry stays in the processing list for recovery.
        let before = jobs.len();
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            return;
        }
        if jobs.len() < before {
            invocation = self::invocation(t, &jobs);
        }
        let replies: redis::RedisResult<Vec<Value>> = if counters == Counters::NotSent {
            let mut pipe = redis::pipe();
            pipe.invoke_script(&invocation);
            elsewhere = t.bb.add_tally_to(
                &mut pipe,
                &Tally::merged(jobs.iter().map(|j| &j.outcome.tally)),
            );
            pipe.query_async::<(Vec<Value>,)>(&mut conn)
                .await
                .map(|(r,)| r)
        } else {
            // Only the script is left (or may be); this loads it if needed.
            invocation.invoke_async(&mut conn).await
        };
        match replies {
            Ok(replies) => {
                t.status.redis_answered();
                let replies: Vec<Written> = replies.iter().map(written).collect();
                if counters == Counters::Unknown {
                    // Queries finished only now were not counted by the try
                    // that failed: the script ran for none of them then.
                    let now = replies
                        .iter()
                        .zip(&jobs)
                        .filter_map(|(r, j)| (*r == Written::Now).then_some(&j.outcome.tally));
                    let mut pipe = redis::pipe();
                    elsewhere = t.bb.add_tally_to(&mut pipe, &Tally::merged(now));
                    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                        tracing::debug!("counters of finished queries not written: {e}");
                    }
                }
                if let Err(e) = t.bb.write_tally(&elsewhere).await {
                    tracing::debug!("grain hit counters not written: {e}");
                }
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let _ = job.reply.send(reply);
                }
                return;
            }
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                // Redis lost its scripts (restart, SCRIPT FLUSH): the rest of
                // the pipeline ran; invoke_async loads the script and runs it.
                counters = Counters::Sent;
            }
            Err(e) if is_wrong_type(&e) => {
                // The script reports a wrong-typed key per query; this is one
                // of the keys every query shares (the processing list, the
                // feed, the dead list): no outcome can be written.
                tracing::error!("cannot finish queries: a key has the wrong type: {e}");
                for job in jobs {
                    let _ = job.reply.send(Written::WrongType(e.to_string()));
                }
                return;
            }
            Err(e) => {
                t.status.redis_failed("finishing queries", &e);
                tracing::debug!(batch = jobs.len(), "cannot finish yet: {e}; retrying");
                // It may have run before the connection failed: from now on
                // the script alone says (it finishes a query only once).
                if counters == Counters::NotSent {
                    counters = Counters::Unknown;
                    elsewhere = Tally::default();
                }
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// The script call finishing `jobs` (see `finish.lua` for the layout).
fn invocation(t: &Target, jobs: &[Job]) -> redis::ScriptInvocation<'static> {
    let keys = t.bb.keys();
    let mut inv = FINISH.prepare_invoke();
    inv.key(&t.processing_key).key(keys.feed()).key(keys.dead());
    inv.arg(t.state_ttl_s)
        .arg(t.done_ttl_s)
        .arg(t.bb.limits().feed_max_len)
        .arg(super::finish::DEAD_LIST_CAP)
        .arg(jobs.len());
    for Job { outcome: o, .. } in jobs {
        inv.key(keys.state(&o.query_id)).key(keys.done(&o.query_id));
        inv.arg(&o.state)
            .arg(&o.entry)
            .arg(&o.status)
            .arg(o.replaces.as_deref().unwrap_or(""))
            .arg(o.dead.as_deref().unwrap_or(""));
        for a in event_args(&o.events) {
            inv.arg(a);
        }
    }
    inv
}

/// One query's reply from the script.
fn written(reply: &Value) -> Written {
    match reply {
        Value::Int(1) => Written::Now,
        Value::Int(2) => Written::Earlier,
        Value::Int(code) => Written::Refused(*code),
        other => Written::WrongType(match redis::from_redis_value::<String>(other.clone()) {
            Ok(text) => text,
            Err(_) => format!("{other:?}"),
        }),
    }
}
