//! After a query is finished: whether its answer becomes a grain
//! (crystallisation; see [`crate::layer0::crystal`]).

use tokio_util::sync::CancellationToken;

use super::cascade::Run;
use super::consensus::{self, PendingAgreement};
use super::instance::Instance;
use crate::config::LayerKind;
use crate::layer0::crystal::{Candidate, CrystalOutcome, held_back};
use crate::state::QueryStatus;

/// What to offer once the outcome is written: the candidate, and the
/// consensus partner's reply to wait for first when it is still to come.
pub(super) struct Offer {
    candidate: Candidate,
    pending: Option<PendingAgreement>,
}

/// The crystallisation candidate of a finished run: its answer, when a
/// worker layer gave it, that layer's policy allows it (enabled, the
/// confidence, the consensus it requires, or a partner's reply still to
/// come) and the question is safe to crystallise. Redis checks the rest
/// (`crystallize.lua`). Takes the run's pending consensus.
pub(super) fn candidate(sh: &Instance, run: &mut Run) -> Option<Offer> {
    // A pending consensus not needed below is dropped, and with it the
    // wait for the partner's reply.
    let pending = run.pending.take();
    if !sh.settings.crystallization.enabled || run.state.status != QueryStatus::Answered {
        return None;
    }
    let answer = run.state.answer.as_ref()?;
    let (name, layer) = sh.layers.iter().find(|(n, _)| *n == answer.layer)?;
    let policy = &layer.crystallize;
    if layer.kind != LayerKind::Worker || !policy.enabled {
        return None;
    }
    let qid = &run.state.query_id;
    if let Some(why) = held_back(policy, answer.confidence, &run.state.query_text) {
        tracing::debug!(query_id = %qid, layer = %name, "not crystallised: {why}");
        return None;
    }
    let pending = pending.filter(|p| p.layer == *name);
    if (policy.require_agreement || layer.consensus.with.is_some())
        && pending.is_none()
        && !run.agreed.iter().any(|l| l == name)
    {
        tracing::debug!(query_id = %qid, layer = %name, "not crystallised: no consensus partner agreed");
        return None;
    }
    let worker = run
        .state
        .layer_attempts
        .iter()
        .rev()
        .find(|a| a.layer == *name)
        .and_then(|a| a.worker.clone());
    Some(Offer {
        candidate: Candidate {
            question: run.state.query_text.clone(),
            answer: answer.text.clone(),
            confidence: answer.confidence,
            source: answer.source.clone(),
            layer: name.clone(),
            worker,
            query_id: qid.clone(),
            ttl_s: policy.ttl_s,
            min_answers: policy.min_answers,
        },
        pending,
    })
}

/// After the outcome: settles a pending consensus (the partner's reply,
/// within its layer's timeout), then offers the answer to Redis.
pub(super) async fn after_outcome(sh: &Instance, offer: Offer, abort: &CancellationToken) {
    let Offer { candidate, pending } = offer;
    if let Some(p) = pending
        && !consensus::settle(sh, &candidate.query_id, p, abort).await
    {
        return;
    }
    crystallize(sh, candidate).await;
}

/// Offers `c` to Redis; the outcome is logged (the feed has
/// `grain_crystallized` when one was made). A failure costs nothing but
/// the grain: the query is finished already.
async fn crystallize(sh: &Instance, c: Candidate) {
    match sh.bb.crystallize(&c, &sh.settings.crystallization).await {
        Ok(CrystalOutcome::Stored { fact_id, evicted }) => {
            tracing::info!(query_id = %c.query_id, layer = %c.layer, grain = %fact_id, evicted = evicted.len(), "crystallised an answer into a grain");
        }
        Ok(other) => {
            tracing::debug!(query_id = %c.query_id, layer = %c.layer, "not crystallised: {other:?}")
        }
        Err(e) => {
            tracing::warn!(query_id = %c.query_id, layer = %c.layer, "cannot crystallise the answer: {e}")
        }
    }
}
