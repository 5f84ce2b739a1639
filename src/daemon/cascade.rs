//! One query's walk: intake, the cascade of layers, and finishing.
//!
//! Decisions are buffered and written in as few round trips as possible: a
//! query answered at layer0 costs one lookup and one finishing step; a
//! worker layer adds one step that writes the buffered events, the state so
//! far and the job together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::intake::{self, EntryKind, Intake};
use super::replies::{Pending, WorkerDirectory};
use super::status::DaemonStatus;
use crate::blackboard::{Blackboard, is_wrong_type};
use crate::config::{LayerKind, LayerSettings, Settings};
use crate::feed::{Event, EventKind};
use crate::metrics::{QUERY_LATENCY_METRIC, layer_latency_metric};
use crate::orphans::{Held, HeldEntry};
use crate::outage::Backoff;
use crate::protocol::{Job, ReplyOutcome};
use crate::state::{Answer, LayerAttempt, Outcome, QueryState, QueryStatus, now_rfc3339};

use crate::scripts::{ADOPT, DEAD_ENTRY, FINISH, PUSH_JOB, RETURN_ONE};

/// Most records kept in the dead list; the oldest go first.
pub const DEAD_LIST_CAP: isize = 10_000;

/// What every query task of one daemon shares.
pub(super) struct Shared {
    pub bb: Blackboard,
    pub settings: Arc<Settings>,
    pub layers: Vec<(String, LayerSettings)>,
    pub processing_key: String,
    pub reply_key: String,
    pub pending: Pending,
    pub workers: WorkerDirectory,
    pub status: Arc<DaemonStatus>,
    /// The entries of the processing list that a task of this daemon holds.
    pub held: Arc<Held>,
}

impl Shared {
    /// What the queries of the instance named by `status` share.
    pub(super) fn new(
        bb: Blackboard,
        settings: Arc<Settings>,
        status: Arc<DaemonStatus>,
    ) -> Arc<Self> {
        let instance = &status.instance;
        Arc::new(Self {
            processing_key: bb.keys().processing(instance),
            reply_key: bb.keys().replies(instance),
            pending: Pending::default(),
            workers: WorkerDirectory::default(),
            layers: settings
                .layers_in_order()
                .into_iter()
                .map(|(n, l)| (n.to_string(), l.clone()))
                .collect(),
            bb,
            settings,
            status,
            held: Held::new(),
        })
    }
}

/// A query on its way down the cascade.
struct Run {
    state: QueryState,
    entry: Vec<u8>,
    events: Vec<Event>,
    /// Counters and grain hits, written with the finishing step.
    extra: redis::Pipeline,
    /// Latency samples (metric, ms, unix ms), added to `extra` only when the
    /// finishing step is sent, so the sample that takes its metric's
    /// trimming turn is not held back while the query waits on a worker.
    samples: Vec<(String, f64, i64)>,
    started: Instant,
    /// A stored state judged unusable, which the outcome replaces even if it
    /// claims to be terminal (it was not written by a daemon).
    replaces: Option<String>,
    /// The dead-list record to add when the query is finished (recovery's
    /// `max_attempts`), written by the same step as the outcome.
    dead: Option<String>,
    /// Why this daemon stopped working on the query: a write found that it
    /// no longer holds it (see [`record_fenced`]).
    fenced: Option<String>,
}

/// Handles one taken entry to its end. `preloaded` is the state read for an
/// id entry in the taking batch (`None`: not read yet); `held` registers the
/// entry as this task's (see [`crate::orphans`]). Returns early, leaving
/// the entry in the processing list, when `abort` fires.
pub(super) async fn handle_entry(
    sh: &Shared,
    entry: Vec<u8>,
    preloaded: Option<Option<String>>,
    held: &mut HeldEntry,
    abort: &CancellationToken,
) {
    let started = Instant::now();
    let max = sh.settings.orchestrator.max_query_bytes;
    // The stored state as read, kept for a state judged unusable: the
    // failed outcome may replace exactly that value (see `finish.lua`).
    let mut stored: Option<String> = None;
    let intake = match intake::classify(&entry, max) {
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
                        return;
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
                return;
            }
        },
    };

    match intake {
        Intake::Dead { reason } => dead_letter(sh, &entry, &reason).await,
        Intake::AlreadyDone { query_id } => {
            tracing::debug!(query_id = %query_id, "already terminal; dropping the duplicate entry");
            let mut conn = sh.bb.connection();
            let _: redis::RedisResult<i64> = conn.lrem(&sh.processing_key, 1, &entry).await;
        }
        Intake::Fail { mut state, reason } => {
            tracing::info!(query_id = %state.query_id, "query failed: {reason}");
            state.completed_at = Some(now_rfc3339());
            let mut run = Run::new(state, entry, started);
            run.replaces = stored;
            run.events
                .push(Event::new(EventKind::QueryFailed, &run.state.query_id).reason(reason));
            finish(sh, run, abort).await;
        }
        Intake::Run { state, created } => {
            let mut run = Run::new(state, entry, started);
            if created && !adopt_json_entry(sh, &mut run, held, abort).await {
                return;
            }
            cascade(sh, &mut run, abort).await;
            if let Some(reason) = run.fenced.take() {
                record_fenced(sh, &run.state.query_id, &reason).await;
                return;
            }
            if abort.is_cancelled() {
                return;
            }
            finish(sh, run, abort).await;
        }
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
    fn new(state: QueryState, entry: Vec<u8>, started: Instant) -> Self {
        Self {
            state,
            entry,
            events: Vec::with_capacity(8),
            extra: redis::pipe(),
            samples: Vec::new(),
            started,
            replaces: None,
            dead: None,
            fenced: None,
        }
    }
}

async fn read_state(sh: &Shared, id: &str) -> Result<Option<String>, crate::BlackboardError> {
    match sh.bb.get_state_raw(id).await {
        Err(crate::BlackboardError::WrongType { .. }) => Ok(Some(String::new())),
        other => other,
    }
}

/// Puts an entry that could not be read back at the queue's tail after a
/// pause, so a Redis hiccup does not lose it nor spin on it. If even that
/// fails, the entry is an orphan that the sweep returns (`crate::orphans`).
async fn retry_later(sh: &Shared, entry: &[u8]) {
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
    sh: &Shared,
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
                dead_letter(sh, &run.entry, &format!("cannot create the state: {e}")).await;
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
async fn cascade(sh: &Shared, run: &mut Run, abort: &CancellationToken) {
    run.state.status = QueryStatus::Processing;
    run.state.started_at = Some(now_rfc3339());
    run.events
        .push(Event::new(EventKind::QueryStarted, &run.state.query_id));
    let enabled: Vec<&(String, LayerSettings)> =
        sh.layers.iter().filter(|(_, l)| l.enabled).collect();
    let mut best: Option<Answer> = None;
    for (i, (name, layer)) in enabled.iter().enumerate() {
        if abort.is_cancelled() {
            return;
        }
        let attempt = match layer.kind {
            LayerKind::Grain => grain_attempt(sh, run, name, layer).await,
            LayerKind::Worker => match worker_attempt(sh, run, name, layer, abort).await {
                Some(a) => a,
                // Not ours any more (`run.fenced` says why): stop here.
                None => return,
            },
        };
        let hit = attempt.outcome == Outcome::Hit;
        if let Some(answer) = attempt.answer
            && best
                .as_ref()
                .is_none_or(|b| answer.confidence > b.confidence)
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
        sh.bb
            .add_attempt_to(&mut run.extra, name, attempt.outcome, attempt.latency_ms);
        if attempt.outcome != Outcome::Skipped {
            run.samples.push((
                layer_latency_metric(name),
                attempt.latency_ms,
                chrono::Utc::now().timestamp_millis(),
            ));
        }
        sh.status
            .prom
            .layer_attempt(name, attempt.outcome, attempt.latency_ms);
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

struct Attempt {
    outcome: Outcome,
    confidence: Option<f64>,
    latency_ms: f64,
    answer: Option<Answer>,
    worker: Option<String>,
    reason: Option<String>,
}

impl Attempt {
    fn failed(outcome: Outcome, t0: Instant, reason: impl Into<String>) -> Self {
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
    fn skipped(reason: String) -> Self {
        Self {
            outcome: Outcome::Skipped,
            latency_ms: 0.0,
            ..Self::failed(Outcome::Skipped, Instant::now(), reason)
        }
    }
}

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

async fn grain_attempt(sh: &Shared, run: &mut Run, name: &str, layer: &LayerSettings) -> Attempt {
    let t0 = Instant::now();
    let lookup = sh.bb.lookup_grain(&run.state.query_text);
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
                sh.bb.add_grain_hit_to(&mut run.extra, &m.fact_id);
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
                }),
                worker: None,
                reason: None,
            }
        }
    }
}

/// Hands the query to a worker layer and waits for the reply. `None` when
/// the hand-off found that this daemon no longer holds the query
/// (`run.fenced` says why): nothing was written, and the query is left to
/// whoever holds it.
async fn worker_attempt(
    sh: &Shared,
    run: &mut Run,
    name: &str,
    layer: &LayerSettings,
    abort: &CancellationToken,
) -> Option<Attempt> {
    let t0 = Instant::now();
    if !sh.workers.has_live(name) {
        let kind = layer.worker.map(|w| w.as_str()).unwrap_or("?");
        return Some(Attempt::skipped(format!("no live {kind} worker")));
    }
    let qid = run.state.query_id.clone();
    let job = Job {
        job_id: uuid::Uuid::new_v4().to_string(),
        query_id: qid.clone(),
        layer: name.to_string(),
        text: run.state.query_text.clone(),
        deadline_ms: chrono::Utc::now().timestamp_millis() + layer.timeout_ms as i64,
        reply_to: sh.reply_key.clone(),
    };
    let job_id = job.job_id.clone();
    let rx = sh.pending.register(&job_id, &qid, name);

    // One step (`push_job.lua`), only while this daemon holds the query:
    // the decisions so far, the state so far (a client reading it sees
    // `processing`), and the job unless the layer's job list is full. Built
    // in a block so that none of it stays in this future's state while it
    // waits for the reply (with thousands of queries in flight, that is the
    // daemon's memory).
    let pushed = {
        let keys = sh.bb.keys();
        let script_keys = [
            keys.jobs(name),
            keys.feed(),
            keys.state(&qid),
            sh.processing_key.clone(),
        ];
        let mut args: Vec<Vec<u8>> = vec![
            serde_json::to_vec(&job).expect("job serializes"),
            sh.settings
                .orchestrator
                .max_jobs_per_layer
                .to_string()
                .into_bytes(),
            sh.bb.limits().feed_max_len.to_string().into_bytes(),
            run.entry.clone(),
            serde_json::to_vec(&run.state).expect("state serializes"),
            sh.settings
                .orchestrator
                .state_ttl_s
                .to_string()
                .into_bytes(),
        ];
        drop(job);
        encode_events(&mut args, &run.events);
        run.events.clear();
        for (k, v) in Event::new(EventKind::LayerAttempt, &qid)
            .layer(name)
            .fields()
        {
            args.push(k.as_bytes().to_vec());
            args.push(v.into_bytes());
        }
        let mut conn = sh.bb.connection();
        // While Redis is away, keep trying within the layer's time: a Redis
        // blip should not cost the query its worker layers.
        let mut delay = Duration::from_millis(50);
        loop {
            let mut push = PUSH_JOB.prepare_invoke();
            for k in &script_keys {
                push.key(k);
            }
            for a in &args {
                push.arg(a);
            }
            match push.invoke_async::<(i64, i64)>(&mut conn).await {
                Err(e) if t0.elapsed() + delay < layer.timeout() && !is_wrong_type(&e) => {
                    sh.status.redis_failed("handing jobs to workers", &e);
                    tokio::select! {
                        _ = abort.cancelled() => break Err(e),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                other => break other,
            }
        }
    };
    run.events.shrink_to_fit();
    match pushed {
        Err(e) => {
            sh.pending.forget(&job_id);
            return Some(Attempt::failed(
                Outcome::Error,
                t0,
                format!("cannot hand the job to workers: {e}"),
            ));
        }
        Ok((1, _)) => {}
        Ok((2, len)) => {
            // Skipped like a layer without a live worker: the query moves on
            // at once instead of waiting on a list nobody drains.
            sh.pending.forget(&job_id);
            return Some(Attempt::skipped(format!(
                "job list full ({len} jobs queued)"
            )));
        }
        Ok((code, _)) => {
            sh.pending.forget(&job_id);
            run.fenced = Some(lost_reason(sh, code));
            return None;
        }
    }

    let waited = tokio::select! {
        r = tokio::time::timeout(layer.timeout(), rx) => r,
        _ = abort.cancelled() => {
            sh.pending.forget(&job_id);
            return Some(Attempt::failed(Outcome::Error, t0, "daemon shutting down"));
        }
    };
    let reply = match waited {
        Err(_) => {
            sh.pending.forget(&job_id);
            return Some(Attempt::failed(
                Outcome::Timeout,
                t0,
                format!("no reply within {} ms", layer.timeout_ms),
            ));
        }
        Ok(Err(_)) => {
            return Some(Attempt::failed(Outcome::Error, t0, "reply channel closed"));
        }
        Ok(Ok(reply)) => reply,
    };
    let latency_ms = ms_since(t0);
    if let Err(why) = reply.validate() {
        return Some(Attempt {
            worker: Some(reply.worker),
            ..Attempt::failed(Outcome::Error, t0, format!("invalid reply: {why}"))
        });
    }
    let confidence = reply.confidence.unwrap_or(0.0);
    let answer = reply.answer.filter(|a| !a.is_empty()).map(|text| Answer {
        text,
        layer: name.to_string(),
        confidence,
        source: reply.source.clone(),
    });
    let (outcome, reason) = match reply.outcome {
        ReplyOutcome::Hit if confidence >= layer.min_confidence => (Outcome::Hit, None),
        ReplyOutcome::Hit => (
            Outcome::Miss,
            Some(format!(
                "confidence {confidence:.3} below {}",
                layer.min_confidence
            )),
        ),
        ReplyOutcome::Miss => (Outcome::Miss, None),
        ReplyOutcome::Error => (
            Outcome::Error,
            Some(reply.error.unwrap_or_else(|| "worker error".into())),
        ),
    };
    Some(Attempt {
        outcome,
        confidence: reply.confidence,
        latency_ms,
        answer: if outcome == Outcome::Error {
            None
        } else {
            answer
        },
        worker: Some(reply.worker),
        reason,
    })
}

/// Why a write of this daemon's was refused, from the script's code: 0 the
/// state is terminal, -1 the entry left this daemon's processing list.
fn lost_reason(sh: &Shared, code: i64) -> String {
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
async fn record_fenced(sh: &Shared, qid: &str, reason: &str) {
    tracing::warn!(query_id = %qid, "stopped working on a query this daemon no longer holds: {reason}");
    sh.status.prom.fenced();
    let e = Event::new(EventKind::QueryFenced, qid)
        .reason(format!("daemon {} stopped: {reason}", sh.status.instance));
    if let Err(err) = sh.bb.emit(&e).await {
        tracing::debug!(query_id = %qid, "cannot record query_fenced: {err}");
    }
}

/// Appends `events` to script arguments: their count, then for each its
/// field count and field/value pairs (the layout `xadd_events` reads).
fn encode_events(args: &mut Vec<Vec<u8>>, events: &[Event]) {
    args.push(events.len().to_string().into_bytes());
    for e in events {
        let fields = e.fields();
        args.push(fields.len().to_string().into_bytes());
        for (k, v) in fields {
            args.push(k.as_bytes().to_vec());
            args.push(v.into_bytes());
        }
    }
}

/// Writes the terminal state and everything recorded, in one round trip,
/// exactly once and only while this daemon holds the query (see
/// `finish.lua`). Retries while Redis is away, until `abort` fires; the
/// entry stays in the processing list meanwhile.
async fn finish(sh: &Shared, mut run: Run, abort: &CancellationToken) {
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
            QUERY_LATENCY_METRIC.to_string(),
            latency_ms,
            chrono::Utc::now().timestamp_millis(),
        ));
    }
    for (metric, value, ts_ms) in run.samples.drain(..) {
        sh.bb.add_sample_to(&mut run.extra, &metric, value, ts_ms);
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
    encode_events(&mut args, &run.events);
    // One round trip: the script (EVALSHA), then the counters and samples.
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha.arg(FINISH.get_hash()).arg(script_keys.len());
    for k in &script_keys {
        evalsha.arg(k);
    }
    for a in &args {
        evalsha.arg(a);
    }
    let mut pipe = redis::pipe();
    pipe.add_command(evalsha);
    for c in run.extra.cmd_iter() {
        pipe.add_command(c.clone()).ignore();
    }
    let mut conn = sh.bb.connection();
    let mut delay = Duration::from_millis(100);
    // Whether the counters went with an earlier try: `None` when a try
    // failed without saying how far it got.
    let mut counted = Some(false);
    loop {
        let written: redis::RedisResult<i64> = if counted != Some(false) {
            // Only the script is left (or may be).
            let mut inv = FINISH.prepare_invoke();
            for k in &script_keys {
                inv.key(k);
            }
            for a in &args {
                inv.arg(a);
            }
            inv.invoke_async(&mut conn).await
        } else {
            pipe.query_async::<(i64,)>(&mut conn).await.map(|(w,)| w)
        };
        match written {
            Ok(1) => {
                if counted.is_none() {
                    // The script ran only now, so the earlier try (script
                    // first, counters after it) did not reach Redis.
                    if let Err(e) = run.extra.query_async::<()>(&mut conn).await {
                        tracing::debug!(query_id = %qid, "counters not written: {e}");
                    }
                }
                sh.status.prom.query_finished(status.as_str(), latency_ms);
                tracing::debug!(query_id = %qid, status = %status, latency_ms, "finished");
                return;
            }
            Ok(2) => {
                // An earlier try wrote exactly this outcome; its reply was lost.
                sh.status.prom.query_finished(status.as_str(), latency_ms);
                tracing::debug!(query_id = %qid, status = %status, "finished (by an earlier try)");
                return;
            }
            Ok(code) => {
                record_fenced(sh, &qid, &lost_reason(sh, code)).await;
                return;
            }
            Err(e)
                if e.code() == Some("NOSCRIPT")
                    || e.to_string().to_ascii_uppercase().contains("NOSCRIPT") =>
            {
                // Redis lost its scripts (restart, SCRIPT FLUSH): the rest of
                // the pipeline ran; invoke_async loads the script and runs it.
                counted = Some(true);
            }
            Err(e) if is_wrong_type(&e) => {
                tracing::error!(query_id = %qid, "cannot finish: a key has the wrong type: {e}");
                dead_letter(sh, &run.entry, &format!("cannot write the outcome: {e}")).await;
                return;
            }
            Err(e) => {
                sh.status.redis_failed("finishing queries", &e);
                tracing::debug!(query_id = %qid, "cannot finish yet: {e}; retrying");
                // It may have run before the connection failed: from now on
                // the script alone says (it finishes a query only once).
                if counted == Some(false) {
                    counted = None;
                }
                tokio::select! {
                    _ = abort.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Ends a query that recovery gave up on (`orchestrator.max_attempts`):
/// failed with `reason`, its record in the dead list, its clients
/// signalled, all in the one step that writes the outcome ([`finish`]), so
/// no crash leaves a failed state without its signal or its record.
pub(super) async fn finish_dead(
    sh: &Shared,
    mut state: QueryState,
    entry: Vec<u8>,
    reason: String,
    abort: &CancellationToken,
) {
    let qid = state.query_id.clone();
    state.recoveries += 1;
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
async fn dead_letter(sh: &Shared, entry: &[u8], reason: &str) {
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
