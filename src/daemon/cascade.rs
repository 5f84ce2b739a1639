//! One query's walk: intake and the cascade of layers. Handing a query to
//! a worker layer is `dispatch.rs`; ending it, `finish.rs`.
//!
//! Decisions are buffered and written in as few round trips as possible: a
//! query answered at layer0 costs one lookup and one finishing step; a
//! worker layer adds one step that writes the buffered events, the state so
//! far and the job together.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::consensus::{Consulted, PendingAgreement};
use super::dispatch::{await_reply, worker_attempt};
use super::finish::{dead_letter, drop_duplicate, finish, record_fenced};
use super::instance::Instance;
use super::intake::{self, EntryKind, Intake};
use super::{consensus, crystallize};
use crate::config::{LayerKind, LayerSettings};
use crate::observe::feed::{Event, EventKind};
use crate::observe::metrics::{Tally, bench_scoped, is_bench, layer_latency_metric};
use crate::state::{Answer, LayerAttempt, Outcome, QueryState, QueryStatus, now_rfc3339};
use crate::store::blackboard::is_wrong_type;
use crate::store::orphans::HeldEntry;
use crate::store::outage::Backoff;
use crate::store::scripts::{ADOPT, RETURN_ONE};

/// A query on its way down the cascade.
pub(super) struct Run {
    pub(super) state: QueryState,
    pub(super) entry: Vec<u8>,
    pub(super) events: Vec<Event>,
    /// Counters, grain hits and latency samples, written with the
    /// finishing step (merged with those of the queries finished with it).
    pub(super) tally: Tally,
    pub(super) started: Instant,
    /// Benchmark traffic (`metadata.bench: true`): its counters and samples
    /// go to the `bench:` names, and Prometheus does not count it.
    pub(super) bench: bool,
    /// A stored state judged unusable, which the outcome replaces even if it
    /// claims to be terminal (it was not written by a daemon).
    pub(super) replaces: Option<String>,
    /// The dead-list record to add when the query is finished (recovery's
    /// `max_attempts`), written by the same step as the outcome.
    pub(super) dead: Option<String>,
    /// Why this daemon stopped working on the query: a write found that it
    /// no longer holds it (see `finish::record_fenced`).
    pub(super) fenced: Option<String>,
    /// Answers of the layers tried so far that did not answer the query,
    /// by layer (a consensus partner tried earlier in the cascade is not
    /// asked again; a hit ends the cascade, so its answer is never needed).
    pub(super) answers: Vec<(String, String)>,
    /// Consensus partners asked ahead of their turn, by layer; the cascade
    /// uses their replies when it reaches that layer.
    pub(super) consulted: Vec<(String, Consulted)>,
    /// Layers whose answer their consensus partner agreed with.
    pub(super) agreed: Vec<String>,
    /// A consensus to settle after the outcome is written.
    pub(super) pending: Option<PendingAgreement>,
}

/// Handles one taken entry to its end. Every step but the wait for a
/// worker's reply runs boxed: the task's own future then holds little
/// more than that wait, which is what thousands of queries waiting on a
/// worker layer keep in memory (a task measured about 8.6 KB when every
/// step was inlined). `preloaded` is the state read for an
/// id entry in the taking batch (`None`: not read yet); `held` registers the
/// entry as this task's (see [`crate::store::orphans`]). Returns early, leaving
/// the entry in the processing list, when `abort` fires.
pub(super) async fn handle_entry(
    sh: &Instance,
    entry: Vec<u8>,
    preloaded: Option<Option<String>>,
    held: &mut HeldEntry,
    abort: &CancellationToken,
) {
    let started = Instant::now();
    // Boxed: what intake needs is not kept while the query runs, so a
    // query waiting on a worker holds little more than its `Run` and the
    // wait (the task measured 5.4 KB when intake was inlined here).
    let Some(mut run) = Box::pin(take_in(sh, entry, preloaded, held, abort, started)).await else {
        return;
    };
    cascade(sh, &mut run, abort).await;
    if let Some(reason) = run.fenced.take() {
        Box::pin(record_fenced(sh, &run.state.query_id, &reason)).await;
        return;
    }
    if abort.is_cancelled() {
        return;
    }
    let candidate = crystallize::candidate(sh, &mut run);
    if Box::pin(finish(sh, run, abort)).await
        && let Some(c) = candidate
    {
        Box::pin(crystallize::after_outcome(sh, c, abort)).await;
    }
}

/// Intake of a taken entry: a query to run (`Some`), or an entry ended
/// here (dead, a duplicate of a finished query, failed at intake, put back
/// after a Redis error, or adopted by a peer).
async fn take_in(
    sh: &Instance,
    entry: Vec<u8>,
    preloaded: Option<Option<String>>,
    held: &mut HeldEntry,
    abort: &CancellationToken,
    started: Instant,
) -> Option<Run> {
    let max = sh.settings.orchestrator.max_query_bytes;
    // The stored state as read, kept for a state judged unusable: the
    // failed outcome may replace exactly that value (see `finish.lua`).
    let mut stored: Option<String> = None;
    let intake = match in_partition(sh, intake::classify(&entry, max)) {
        EntryKind::Decided(i) => i,
        EntryKind::Id(id) => {
            let raw = match preloaded {
                Some(raw) => raw,
                None => match read_state(sh, &id).await {
                    Ok(raw) => raw,
                    Err(e) => {
                        // Back to the queue's tail after a pause.
                        sh.status.redis_failed("reading query states", &e);
                        retry_later(sh, &entry).await;
                        return None;
                    }
                },
            };
            judge_stored(&id, raw, max, &mut stored)
        }
        EntryKind::JsonWithId { state } => match read_state(sh, &state.query_id).await {
            Ok(Some(raw)) => judge_stored(&state.query_id, Some(raw), max, &mut stored),
            Ok(None) => intake::check_text(state, true, max),
            Err(e) => {
                sh.status.redis_failed("reading query states", &e);
                retry_later(sh, &entry).await;
                return None;
            }
        },
    };

    match intake {
        Intake::Dead { reason } => {
            dead_letter(sh, &entry, &reason).await;
            None
        }
        Intake::AlreadyDone { query_id, status } => {
            drop_duplicate(sh, &entry, &query_id, &status).await;
            None
        }
        Intake::Fail { mut state, reason } => {
            tracing::info!(query_id = %state.query_id, "query failed: {reason}");
            state.completed_at = Some(now_rfc3339());
            let mut run = Run::new(state, entry, started);
            run.replaces = stored;
            run.events
                .push(Event::new(EventKind::QueryFailed, &run.state.query_id).reason(reason));
            Box::pin(finish(sh, run, abort)).await;
            None
        }
        Intake::Run { state, created } => {
            let mut run = Run::new(state, entry, started);
            if created && !Box::pin(adopt_json_entry(sh, &mut run, held, abort)).await {
                return None;
            }
            Some(run)
        }
    }
}

/// In cluster mode a query's keys are all in its own partition (its id's),
/// and a daemon's instance works on the queries of its partition only: an
/// entry naming an id of another partition goes to the dead list saying
/// where it belongs (its state and the steps that finish it are in another
/// slot), and a JSON entry without an id gets an id of this partition.
fn in_partition(sh: &Instance, kind: EntryKind) -> EntryKind {
    let keys = sh.bb.keys();
    if !keys.is_partitioned() {
        return kind;
    }
    let misplaced = |id: &str| {
        let home = keys.partition_of(id);
        (home != keys.current()).then(|| {
            EntryKind::Decided(Intake::Dead {
                reason: format!(
                    "query id {id:?} belongs to partition {home} (CRC16 of the id mod {}), but was pushed to {}; push it to {} with its state at {}",
                    keys.partitions(),
                    keys.queue(),
                    keys.for_query(id).queue(),
                    keys.state(id)
                ),
            })
        })
    };
    match kind {
        EntryKind::Id(id) => misplaced(&id).unwrap_or(EntryKind::Id(id)),
        EntryKind::JsonWithId { state } => {
            misplaced(&state.query_id).unwrap_or(EntryKind::JsonWithId { state })
        }
        EntryKind::Decided(Intake::Fail { state, reason }) => {
            misplaced(&state.query_id).unwrap_or(EntryKind::Decided(Intake::Fail { state, reason }))
        }
        EntryKind::Decided(Intake::Run {
            mut state,
            created: true,
        }) => {
            // A JSON entry without an id: the id was drawn at random.
            if keys.partition_of(&state.query_id) != keys.current() {
                state.query_id = keys.new_query_id();
            }
            EntryKind::Decided(Intake::Run {
                state,
                created: true,
            })
        }
        other => other,
    }
}

/// [`intake::from_stored`], keeping in `stored` the state it judged unusable.
fn judge_stored(id: &str, raw: Option<String>, max: usize, stored: &mut Option<String>) -> Intake {
    let intake = intake::from_stored(id, raw.as_deref(), max);
    if matches!(intake, Intake::Fail { .. }) {
        *stored = raw;
    }
    intake
}

impl Run {
    pub(super) fn new(state: QueryState, entry: Vec<u8>, started: Instant) -> Self {
        Self {
            bench: is_bench(&state.metadata),
            state,
            entry,
            events: Vec::with_capacity(8),
            tally: Tally::default(),
            started,
            replaces: None,
            dead: None,
            fenced: None,
            answers: Vec::new(),
            consulted: Vec::new(),
            agreed: Vec::new(),
            pending: None,
        }
    }

    /// The name this query's counters and samples for `name` (a layer, or
    /// `query`) are kept under: `name` itself, or its `bench:` name.
    pub(super) fn counted_as<'a>(&self, name: &'a str) -> Cow<'a, str> {
        if self.bench {
            Cow::Owned(bench_scoped(name))
        } else {
            Cow::Borrowed(name)
        }
    }
}

async fn read_state(sh: &Instance, id: &str) -> Result<Option<String>, crate::BlackboardError> {
    match sh.bb.get_state_raw(id).await {
        Err(crate::BlackboardError::WrongType { .. }) => Ok(Some(String::new())),
        other => other,
    }
}

/// Puts an entry that could not be read back at the queue's tail after a
/// pause, so a Redis hiccup does not lose it nor spin on it. If even that
/// fails, the entry is an orphan that the sweep returns (`crate::store::orphans`).
async fn retry_later(sh: &Instance, entry: &[u8]) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = sh.bb.connection();
    // Only while still ours: an entry a peer took over is not pushed twice.
    let res: redis::RedisResult<i64> = RETURN_ONE
        .key(&sh.processing_key)
        .key(sh.bb.keys().queue())
        .arg(entry)
        .invoke_async(&mut conn)
        .await;
    if let Err(e) = res {
        sh.status
            .redis_failed("returning an entry to the queue", &e);
    }
}

/// A JSON entry becomes a state plus an id entry, atomically, so a daemon
/// that dies now leaves a recoverable id, not a second query. Retried while
/// Redis fails (until `abort`): `adopt.lua` tells an earlier try that ran
/// from one that did not, so a lost reply never makes the same JSON entry
/// a second query under another id.
async fn adopt_json_entry(
    sh: &Instance,
    run: &mut Run,
    held: &mut HeldEntry,
    abort: &CancellationToken,
) -> bool {
    let id = run.state.query_id.clone();
    let json = serde_json::to_string(&run.state).expect("state serializes");
    let state_key = sh.bb.keys().state(&id);
    let mut conn = sh.bb.connection();
    let mut backoff = Backoff::default();
    loop {
        let res: redis::RedisResult<i64> = ADOPT
            .key(&sh.processing_key)
            .key(&state_key)
            .arg(&run.entry)
            .arg(&id)
            .arg(&json)
            .arg(sh.settings.orchestrator.state_ttl_s)
            .invoke_async(&mut conn)
            .await;
        match res {
            Ok(1) | Ok(2) => {
                held.replace(id.as_bytes());
                run.entry = id.into_bytes();
                run.events
                    .push(Event::new(EventKind::QueryCreated, &run.state.query_id));
                return true;
            }
            Ok(_) => {
                // Not ours any more: a peer returned it to the queue, and
                // whoever takes it next adopts it.
                tracing::warn!(
                    query_id = %id,
                    "a JSON entry left {} before it was adopted (recovered by a peer); not adopting it here",
                    sh.processing_key
                );
                return false;
            }
            Err(e) if is_wrong_type(&e) => {
                Box::pin(dead_letter(
                    sh,
                    &run.entry,
                    &format!("cannot create the state: {e}"),
                ))
                .await;
                return false;
            }
            Err(e) => {
                sh.status
                    .redis_failed("creating the state of a JSON entry", &e);
                tokio::select! {
                    _ = abort.cancelled() => return false,
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        }
    }
}

/// Walks the layers until one is confident enough.
async fn cascade(sh: &Instance, run: &mut Run, abort: &CancellationToken) {
    run.state.status = QueryStatus::Processing;
    run.state.started_at = Some(now_rfc3339());
    run.events
        .push(Event::new(EventKind::QueryStarted, &run.state.query_id).priority(run.state.lane()));
    let enabled: Vec<&(String, LayerSettings)> =
        sh.layers.iter().filter(|(_, l)| l.enabled).collect();
    let mut best: Option<Answer> = None;
    for (i, (name, layer)) in enabled.iter().enumerate() {
        if abort.is_cancelled() {
            return;
        }
        let asked = match layer.kind {
            LayerKind::Grain => Some(Box::pin(grain_attempt(sh, run, name, layer)).await),
            LayerKind::Worker => match run.consulted.iter().position(|(l, _)| l == name) {
                Some(i) => match run.consulted.swap_remove(i).1 {
                    Consulted::Replied(a) => Some(*a),
                    Consulted::Waiting(h) => Some(await_reply(h, name, layer, abort).await),
                },
                None => match &layer.consensus.with {
                    Some(partner) => {
                        Box::pin(consensus::attempt(sh, run, name, layer, partner, abort)).await
                    }
                    None => worker_attempt(sh, run, name, layer, abort).await,
                },
            },
        };
        // None: not ours any more (`run.fenced` says why): stop here.
        let Some(attempt) = asked else { return };
        // Kept for a later layer's consensus; a hit ends the cascade.
        if let Some(a) = attempt
            .answer
            .as_ref()
            .filter(|_| attempt.outcome != Outcome::Hit)
        {
            run.answers.push((name.clone(), a.text.clone()));
        }
        let hit = attempt.outcome == Outcome::Hit;
        // A hit answers with its own answer; the best of the misses is
        // only what an unanswered query reports.
        if let Some(answer) = attempt.answer
            && (hit
                || best
                    .as_ref()
                    .is_none_or(|b| answer.confidence > b.confidence))
        {
            best = Some(answer);
        }
        let qid = run.state.query_id.clone();
        let mut ev = Event::new(outcome_event(attempt.outcome), &qid).layer(name.as_str());
        if attempt.outcome != Outcome::Skipped {
            ev = ev.latency_ms(attempt.latency_ms);
        }
        if let Some(c) = attempt.confidence {
            ev = ev.confidence(c);
        }
        if let Some(w) = &attempt.worker {
            ev = ev.worker(w.as_str());
        }
        if let Some(r) = &attempt.reason {
            ev = ev.reason(r.as_str());
        }
        run.events.push(ev);
        let counted_as = run.counted_as(name);
        sh.bb.add_attempt_to(
            &mut run.tally,
            &counted_as,
            attempt.outcome,
            attempt.latency_ms,
        );
        if attempt.outcome != Outcome::Skipped {
            run.tally.sample(
                layer_latency_metric(&counted_as),
                attempt.latency_ms,
                chrono::Utc::now().timestamp_millis(),
            );
        }
        if !run.bench {
            sh.status
                .prom
                .layer_attempt(name, attempt.outcome, attempt.latency_ms);
        }
        run.state.layer_attempts.push(LayerAttempt {
            layer: name.clone(),
            outcome: attempt.outcome,
            confidence: attempt.confidence,
            latency_ms: round3(attempt.latency_ms),
            worker: attempt.worker,
            reason: attempt.reason,
        });
        if hit {
            run.state.status = QueryStatus::Answered;
            run.state.answer = best;
            run.state.completed_at = Some(now_rfc3339());
            return;
        }
        if let Some((next, _)) = enabled.get(i + 1) {
            run.events.push(
                Event::new(EventKind::Escalation, &qid)
                    .layer(name.as_str())
                    .reason(format!("{} → {next}", attempt.outcome.as_str())),
            );
        }
    }
    run.state.status = QueryStatus::Unanswered;
    run.state.answer = best;
    run.state.completed_at = Some(now_rfc3339());
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn outcome_event(o: Outcome) -> EventKind {
    match o {
        Outcome::Hit => EventKind::LayerHit,
        Outcome::Miss => EventKind::LayerMiss,
        Outcome::Timeout => EventKind::LayerTimeout,
        Outcome::Error => EventKind::LayerError,
        Outcome::Skipped => EventKind::LayerSkipped,
    }
}

pub(super) struct Attempt {
    pub(super) outcome: Outcome,
    pub(super) confidence: Option<f64>,
    pub(super) latency_ms: f64,
    pub(super) answer: Option<Answer>,
    pub(super) worker: Option<String>,
    pub(super) reason: Option<String>,
}

impl Attempt {
    pub(super) fn failed(outcome: Outcome, t0: Instant, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            confidence: None,
            latency_ms: ms_since(t0),
            answer: None,
            worker: None,
            reason: Some(reason.into()),
        }
    }

    /// A layer passed over at once (no time spent, no sample).
    pub(super) fn skipped(reason: String) -> Self {
        Self {
            outcome: Outcome::Skipped,
            latency_ms: 0.0,
            ..Self::failed(Outcome::Skipped, Instant::now(), reason)
        }
    }
}

pub(super) fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

async fn grain_attempt(sh: &Instance, run: &mut Run, name: &str, layer: &LayerSettings) -> Attempt {
    let t0 = Instant::now();
    let lookup = sh.bb.lookup_grain_with(&run.state.query_text, &sh.aliases);
    match tokio::time::timeout(layer.timeout(), lookup).await {
        Err(_) => Attempt::failed(
            Outcome::Timeout,
            t0,
            format!("no answer within {} ms", layer.timeout_ms),
        ),
        Ok(Err(e)) => Attempt::failed(Outcome::Error, t0, e.to_string()),
        Ok(Ok(None)) => Attempt {
            outcome: Outcome::Miss,
            confidence: Some(0.0),
            latency_ms: ms_since(t0),
            answer: None,
            worker: None,
            reason: None,
        },
        Ok(Ok(Some(m))) => {
            let hit = m.confidence >= layer.min_confidence;
            if hit {
                sh.bb.add_grain_hit_to(&mut run.tally, &m);
            }
            Attempt {
                outcome: if hit { Outcome::Hit } else { Outcome::Miss },
                confidence: Some(m.confidence),
                latency_ms: ms_since(t0),
                answer: Some(Answer {
                    text: m.answer,
                    layer: name.to_string(),
                    confidence: m.confidence,
                    source: Some(format!("grain:{}", m.fact_id)),
                    crystallized: m.crystallized,
                }),
                worker: None,
                reason: None,
            }
        }
    }
}
