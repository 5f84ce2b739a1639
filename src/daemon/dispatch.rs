//! Handing a query to a worker layer: the job, pushed in one fenced step
//! with the state and the decisions so far (`push_job.lua`), then the wait
//! for its reply (delivered by `replies.rs`).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::cascade::{Attempt, Run, ms_since};
use super::finish::lost_reason;
use super::instance::Instance;
use crate::config::LayerSettings;
use crate::observe::feed::{Event, EventKind};
use crate::protocol::{Job, ReplyOutcome};
use crate::state::{Answer, Outcome};
use crate::store::blackboard::is_wrong_type;
use crate::store::lanes::Lane;
use crate::store::outage::Backoff;
use crate::store::scripts::{PUSH_JOB, push_events};

/// Hands the query to a worker layer and waits for the reply. `None` when
/// the hand-off found that this daemon no longer holds the query
/// (`run.fenced` says why): nothing was written, and the query is left to
/// whoever holds it.
pub(super) async fn worker_attempt(
    sh: &Instance,
    run: &mut Run,
    name: &str,
    layer: &LayerSettings,
    abort: &CancellationToken,
) -> Option<Attempt> {
    // Boxed: its state is not kept while the reply is awaited.
    match Box::pin(hand_off(sh, run, name, layer, abort)).await {
        HandOff::Waiting(handed) => Some(await_reply(handed, name, layer, abort).await),
        HandOff::Done(attempt) => Some(*attempt),
        HandOff::Fenced => None,
    }
}

/// A job handed to a worker layer, whose reply is awaited. Dropped
/// unawaited (a consensus partner's reply nobody needs any more), it stops
/// waiting: a reply coming later is recorded as late.
pub(super) struct Handed {
    rx: Option<tokio::sync::oneshot::Receiver<Box<crate::protocol::Reply>>>,
    job_id: String,
    pending: super::replies::Pending,
    /// When the attempt began (its latency counts from here).
    t0: Instant,
    /// When the job was in the list (the layer's timeout counts from here).
    pushed_at: tokio::time::Instant,
}

impl Drop for Handed {
    fn drop(&mut self) {
        self.pending.forget(&self.job_id);
    }
}

/// How a hand-off ended.
pub(super) enum HandOff {
    /// The job is in the layer's list; wait with [`await_reply`].
    Waiting(Handed),
    /// The layer is passed over or failed at once (no live worker, list
    /// full, Redis away).
    Done(Box<Attempt>),
    /// This daemon no longer holds the query (`run.fenced` says why).
    Fenced,
}

/// Pushes the query's job to worker layer `name`, with the decisions so
/// far, in one fenced step; does not wait for the reply.
pub(super) async fn hand_off(
    sh: &Instance,
    run: &mut Run,
    name: &str,
    layer: &LayerSettings,
    abort: &CancellationToken,
) -> HandOff {
    let t0 = Instant::now();
    if !sh.workers.has_live(name) {
        let kind = layer.worker.map(|w| w.as_str()).unwrap_or("?");
        return HandOff::Done(Box::new(Attempt::skipped(format!("no live {kind} worker"))));
    }
    let qid = run.state.query_id.clone();
    let lane = run.state.lane();
    let job = Job {
        job_id: uuid::Uuid::new_v4().to_string(),
        query_id: qid.clone(),
        layer: name.to_string(),
        text: run.state.query_text.clone(),
        deadline_ms: chrono::Utc::now().timestamp_millis() + layer.timeout_ms as i64,
        reply_to: sh.reply_key.clone(),
        priority: (lane != Lane::Normal).then(|| lane.to_string()),
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
        // A job of another lane goes to its lane's list only when a worker
        // of the layer takes from the lanes; workers that know no lanes
        // take every job from `<p>:jobs:<layer>`.
        let list = if sh.workers.takes_lanes(name) {
            keys.jobs_lane(name, lane)
        } else {
            keys.jobs(name)
        };
        let script_keys = [
            list,
            keys.feed(),
            keys.state(&qid),
            sh.processing_key.clone(),
            keys.jobs_bell(name),
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
        push_events(&mut args, &run.events);
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
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            let mut push = PUSH_JOB.prepare_invoke();
            for k in &script_keys {
                push.key(k);
            }
            for a in &args {
                push.arg(a);
            }
            match push.invoke_async::<(i64, i64)>(&mut conn).await {
                Err(e) if t0.elapsed() + backoff.peek() < layer.timeout() && !is_wrong_type(&e) => {
                    sh.status.redis_failed("handing jobs to workers", &e);
                    tokio::select! {
                        _ = abort.cancelled() => break Err(e),
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
                other => break other,
            }
        }
    };
    // What stays allocated while the reply is awaited: only what is used.
    run.events.shrink_to_fit();
    run.state.layer_attempts.shrink_to_fit();
    run.tally.shrink_to_fit();
    match pushed {
        Err(e) => {
            sh.pending.forget(&job_id);
            HandOff::Done(Box::new(Attempt::failed(
                Outcome::Error,
                t0,
                format!("cannot hand the job to workers: {e}"),
            )))
        }
        Ok((1, _)) => HandOff::Waiting(Handed {
            rx: Some(rx),
            job_id,
            pending: sh.pending.clone(),
            t0,
            pushed_at: tokio::time::Instant::now(),
        }),
        Ok((2, len)) => {
            // Skipped like a layer without a live worker: the query moves on
            // at once instead of waiting on a list nobody drains.
            sh.pending.forget(&job_id);
            HandOff::Done(Box::new(Attempt::skipped(format!(
                "job list full ({len} jobs queued)"
            ))))
        }
        Ok((code, _)) => {
            sh.pending.forget(&job_id);
            run.fenced = Some(lost_reason(sh, code));
            HandOff::Fenced
        }
    }
}

/// Waits for the reply to a handed job until the layer's timeout (counted
/// from when the job was in the list) and judges it against the layer's
/// threshold.
pub(super) async fn await_reply(
    mut handed: Handed,
    name: &str,
    layer: &LayerSettings,
    abort: &CancellationToken,
) -> Attempt {
    // Dropping `handed` when this returns stops the wait for the reply.
    let t0 = handed.t0;
    let rx = handed.rx.take().expect("a handed job is awaited once");
    let deadline = handed.pushed_at + layer.timeout();
    let waited = tokio::select! {
        r = tokio::time::timeout_at(deadline, rx) => r,
        _ = abort.cancelled() => {
            return Attempt::failed(Outcome::Error, t0, "daemon shutting down");
        }
    };
    let reply = match waited {
        Err(_) => {
            return Attempt::failed(
                Outcome::Timeout,
                t0,
                format!("no reply within {} ms", layer.timeout_ms),
            );
        }
        Ok(Err(_)) => {
            return Attempt::failed(Outcome::Error, t0, "reply channel closed");
        }
        Ok(Ok(reply)) => *reply,
    };
    let latency_ms = ms_since(t0);
    if let Err(why) = reply.validate() {
        return Attempt {
            worker: Some(reply.worker),
            ..Attempt::failed(Outcome::Error, t0, format!("invalid reply: {why}"))
        };
    }
    let confidence = reply.confidence.unwrap_or(0.0);
    let answer = reply.answer.filter(|a| !a.is_empty()).map(|text| Answer {
        text,
        layer: name.to_string(),
        confidence,
        source: reply.source.clone(),
        crystallized: None,
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
        ReplyOutcome::Miss => (Outcome::Miss, reply.reason.clone()),
        ReplyOutcome::Error => (
            Outcome::Error,
            Some(reply.error.unwrap_or_else(|| "worker error".into())),
        ),
    };
    Attempt {
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
    }
}
