//! Consensus: a worker layer asked together with a partner layer, whose
//! answer must agree with its own (`layers.<name>.consensus`).
//!
//! Two answers *agree* when their normal forms are equal
//! ([`crate::layer0::crystal::answer_key`]: words, lower case, punctuation
//! and articles dropped). The partner's confidence is not compared with
//! its threshold: agreement is about what it said. When the cascade tried
//! the partner already, its answer then is used; otherwise both jobs are
//! handed off at once and the partner's reply is kept for when the cascade
//! reaches the partner's own turn, so it is never asked twice.

use tokio_util::sync::CancellationToken;

use super::cascade::{Attempt, Run};
use super::dispatch::{HandOff, await_reply, hand_off};
use super::instance::Instance;
use crate::config::{ConsensusMode, LayerSettings};
use crate::layer0::crystal::answer_key;
use crate::observe::feed::{Event, EventKind};
use crate::state::Outcome;

/// Asks layer `name` and its consensus `partner`, and judges the answer:
/// in `answer` mode a hit the partner does not agree with becomes a miss;
/// in either mode an agreed answer is noted in `run.agreed` (what
/// crystallisation requires) and a disagreement is a `layers_disagreed`
/// event with both answers. `None` when this daemon no longer holds the
/// query.
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
    let mut partner_handed = None;
    let mut partner_done = None;
    if let Some(p) = &partner_layer
        && !tried_before
    {
        match hand_off(sh, run, partner, p, abort).await {
            HandOff::Waiting(h) => partner_handed = Some(h),
            HandOff::Done(a) => partner_done = Some(*a),
            HandOff::Fenced => return None,
        }
    }
    let mut own = match hand_off(sh, run, name, layer, abort).await {
        HandOff::Waiting(h) => await_reply(sh, h, name, layer, abort).await,
        HandOff::Done(a) => *a,
        HandOff::Fenced => return None,
    };
    if let (Some(h), Some(p)) = (partner_handed, &partner_layer) {
        partner_done = Some(await_reply(sh, h, partner, p, abort).await);
    }
    let partner_text = earlier.or_else(|| {
        partner_done
            .as_ref()
            .and_then(|a| a.answer.as_ref().map(|x| x.text.clone()))
    });
    let partner_state = match (&partner_layer, &partner_done) {
        (None, _) => "is disabled".to_string(),
        (_, Some(a)) if a.answer.is_none() => format!("gave no answer ({})", a.outcome.as_str()),
        (_, None) if partner_text.is_none() => "gave no answer earlier".to_string(),
        _ => String::new(),
    };
    if let Some(a) = partner_done {
        let mut a = a;
        let note = format!("asked together with {name} as its consensus partner");
        a.reason = Some(match a.reason.take() {
            Some(r) => format!("{r}; {note}"),
            None => note,
        });
        run.consulted.push((partner.to_string(), a));
    }
    let Some(own_text) = own.answer.as_ref().map(|a| a.text.clone()) else {
        return Some(own);
    };
    let verdict = match &partner_text {
        Some(theirs) if answer_key(theirs) == answer_key(&own_text) => {
            run.agreed.push(name.to_string());
            Verdict::Agree
        }
        Some(theirs) => {
            run.events.push(
                Event::new(EventKind::LayersDisagreed, &run.state.query_id)
                    .layer(name)
                    .reason(format!(
                        "{name} answered {own_text:?}; {partner} answered {theirs:?}"
                    )),
            );
            Verdict::Differ(format!("{partner} answered {theirs:?}"))
        }
        None => Verdict::Differ(format!("{partner} {partner_state}")),
    };
    let note = match &verdict {
        Verdict::Agree => format!("{partner} agrees"),
        Verdict::Differ(why) => format!("no consensus: {why}"),
    };
    if own.outcome == Outcome::Hit
        && layer.consensus.mode == ConsensusMode::Answer
        && matches!(verdict, Verdict::Differ(_))
    {
        own.outcome = Outcome::Miss;
    }
    own.reason = Some(match own.reason.take() {
        Some(r) => format!("{r}; {note}"),
        None => note,
    });
    Some(own)
}

enum Verdict {
    Agree,
    Differ(String),
}
