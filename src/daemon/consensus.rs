//! Consensus: a worker layer asked together with a partner layer, whose
//! answer must agree with its own (`layers.<name>.consensus`).
//!
//! Two answers *agree* when their normal forms are equal
//! ([`crate::layer0::crystal::answer_key`]: words, lower case, punctuation
//! and articles dropped). The partner's confidence is not compared with
//! its threshold: agreement is about what it said. When the cascade tried
//! the partner already, its answer then is used; otherwise both jobs are
//! handed off at once. In `answer` mode the layer's outcome waits for the
//! partner's reply. In `crystallize` mode a hit is the query's answer at
//! once and the partner's reply is awaited only after the outcome is
//! written, to decide whether the answer crystallises; so consensus never
//! delays an answer there. A partner's reply the cascade did not need for
//! the decision is kept for the partner's own turn, so it is never asked
//! twice.

use tokio_util::sync::CancellationToken;

use super::cascade::{Attempt, Run};
use super::dispatch::{HandOff, Handed, await_reply, hand_off};
use super::instance::Instance;
use crate::config::{ConsensusMode, LayerSettings};
use crate::layer0::crystal::answer_key;
use crate::observe::feed::{Event, EventKind};
use crate::state::Outcome;

/// A partner's reply: in hand, or still to come.
pub(super) enum Consulted {
    /// The reply, judged against the partner's own threshold.
    Replied(Box<Attempt>),
    /// The job is with the partner's workers.
    Waiting(Handed),
}

/// A consensus decided after the query's outcome (`crystallize` mode with
/// a hit): whether the answering layer's answer may crystallise.
pub(super) struct PendingAgreement {
    /// The answering layer.
    pub(super) layer: String,
    /// Its partner.
    pub(super) partner: String,
    /// The answer given.
    pub(super) answer: String,
    /// The partner's job.
    pub(super) handed: Handed,
}

/// Asks layer `name` and its consensus `partner` (see the module
/// documentation). An agreed answer is noted in `run.agreed` (what
/// crystallisation requires); a disagreement is a `layers_disagreed` event
/// with both answers. `None` when this daemon no longer holds the query.
pub(super) async fn attempt(
    sh: &Instance,
    run: &mut Run,
    name: &str,
    layer: &LayerSettings,
    partner: &str,
    abort: &CancellationToken,
) -> Option<Attempt> {
    let partner_layer = sh
        .layers
        .iter()
        .find(|(n, l)| n == partner && l.enabled)
        .map(|(_, l)| l.clone());
    let earlier = run
        .answers
        .iter()
        .rev()
        .find(|(l, _)| l == partner)
        .map(|(_, text)| text.clone());
    let tried_before = run.state.layer_attempts.iter().any(|a| a.layer == partner);
    // The partner's job goes first, so both layers work at once.
    let mut consulted = None;
    if let Some(p) = &partner_layer
        && !tried_before
    {
        consulted = match Box::pin(hand_off(sh, run, partner, p, abort)).await {
            HandOff::Waiting(h) => Some(Consulted::Waiting(h)),
            HandOff::Done(a) => Some(Consulted::Replied(a)),
            HandOff::Fenced => return None,
        };
    }
    let mut own = match Box::pin(hand_off(sh, run, name, layer, abort)).await {
        HandOff::Waiting(h) => await_reply(h, name, layer, abort).await,
        HandOff::Done(a) => *a,
        HandOff::Fenced => return None,
    };
    let own_text = own.answer.as_ref().map(|a| a.text.clone());
    let deferred = layer.consensus.mode == ConsensusMode::Crystallize
        && own.outcome == Outcome::Hit
        && earlier.is_none();
    let consulted = match (consulted, &own_text) {
        (Some(Consulted::Waiting(handed)), Some(text)) if deferred => {
            // The answer stands; agreement only decides crystallisation,
            // after the outcome is written (`crystallize::after_outcome`).
            run.pending = Some(PendingAgreement {
                layer: name.to_string(),
                partner: partner.to_string(),
                answer: text.clone(),
                handed,
            });
            note(
                &mut own,
                &format!("{partner}'s agreement is checked after the answer"),
            );
            return Some(own);
        }
        (consulted, _) => consulted,
    };
    let partner_done = match (consulted, &partner_layer) {
        (Some(Consulted::Waiting(h)), Some(p)) => Some(await_reply(h, partner, p, abort).await),
        (Some(Consulted::Replied(a)), _) => Some(*a),
        _ => None,
    };
    let partner_text = earlier.or_else(|| {
        partner_done
            .as_ref()
            .and_then(|a| a.answer.as_ref().map(|x| x.text.clone()))
    });
    let partner_state = match (&partner_layer, &partner_done) {
        (None, _) => "is disabled".to_string(),
        (_, Some(a)) if a.answer.is_none() => format!("gave no answer ({})", a.outcome.as_str()),
        _ => "gave no answer earlier".to_string(),
    };
    if let Some(mut a) = partner_done {
        note(
            &mut a,
            &format!("asked together with {name} as its consensus partner"),
        );
        run.consulted
            .push((partner.to_string(), Consulted::Replied(Box::new(a))));
    }
    let Some(own_text) = own_text else {
        return Some(own);
    };
    let agreed = match &partner_text {
        Some(theirs) => judge(run, name, &own_text, partner, theirs),
        None => false,
    };
    let verdict = match (&partner_text, agreed) {
        (_, true) => format!("{partner} agrees"),
        (Some(theirs), false) => format!("no consensus: {partner} answered {theirs:?}"),
        (None, _) => format!("no consensus: {partner} {partner_state}"),
    };
    if own.outcome == Outcome::Hit && layer.consensus.mode == ConsensusMode::Answer && !agreed {
        own.outcome = Outcome::Miss;
    }
    note(&mut own, &verdict);
    Some(own)
}

/// Compares two answers: an agreement is noted in `run.agreed`, a
/// difference is a `layers_disagreed` event. Returns whether they agree.
fn judge(run: &mut Run, name: &str, own: &str, partner: &str, theirs: &str) -> bool {
    if agree(own, theirs) {
        run.agreed.push(name.to_string());
        return true;
    }
    run.events.push(disagreement(
        &run.state.query_id,
        name,
        own,
        partner,
        theirs,
    ));
    false
}

/// Whether two answers agree: their normal forms are equal.
fn agree(a: &str, b: &str) -> bool {
    answer_key(a) == answer_key(b)
}

/// The `layers_disagreed` event naming both answers.
pub(super) fn disagreement(qid: &str, name: &str, own: &str, partner: &str, theirs: &str) -> Event {
    Event::new(EventKind::LayersDisagreed, qid)
        .layer(name)
        .reason(format!(
            "{name} answered {own:?}; {partner} answered {theirs:?}"
        ))
}

/// Appends `text` to an attempt's reason.
fn note(a: &mut Attempt, text: &str) {
    a.reason = Some(match a.reason.take() {
        Some(r) => format!("{r}; {text}"),
        None => text.to_string(),
    });
}

/// Waits for a deferred partner's reply (`crystallize` mode) and says
/// whether it agrees with the answer given; a difference is a
/// `layers_disagreed` event, written here since the outcome is written
/// already.
pub(super) async fn settle(
    sh: &Instance,
    qid: &str,
    pending: PendingAgreement,
    abort: &CancellationToken,
) -> bool {
    let Some((_, partner_layer)) = sh.layers.iter().find(|(n, _)| *n == pending.partner) else {
        return false;
    };
    let reply = await_reply(pending.handed, &pending.partner, partner_layer, abort).await;
    let Some(theirs) = reply.answer.map(|a| a.text) else {
        tracing::debug!(query_id = %qid, layer = %pending.layer, "not crystallised: {} gave no answer ({})", pending.partner, reply.outcome.as_str());
        return false;
    };
    if agree(&pending.answer, &theirs) {
        return true;
    }
    let e = disagreement(
        qid,
        &pending.layer,
        &pending.answer,
        &pending.partner,
        &theirs,
    );
    if let Err(err) = sh.bb.emit(&e).await {
        tracing::debug!(query_id = %qid, "cannot record layers_disagreed: {err}");
    }
    false
}
