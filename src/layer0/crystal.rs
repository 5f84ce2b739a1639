//! Crystallisation: a worker layer's confident answer becomes a grain, so
//! the same question is answered at layer0 next time.
//!
//! The daemon decides what only it knows (the layer's policy, the answer's
//! confidence, consensus, the question's safety: [`refusal`]); one script
//! (`crystallize.lua`) decides the rest atomically in Redis: the question is
//! not blocked by feedback, no loaded grain holds its match key, it was
//! answered the same way `min_answers` times in a row, and the number of
//! crystallised grains stays within `crystallization.max_grains` (the one
//! expiring soonest is evicted first).
//!
//! A crystallised grain is a grain hash like a loaded one, under the id
//! [`crystal_id`] of its match key, with its provenance in the fields
//! `crystallized_by` (layer), `worker`, `query_id`, `expires_at` and
//! `expires_ms`; its `source` is the citation the answer carried. Its
//! expiry is absolute: the hash has a Redis expiry at that instant, the
//! index entry carries it and every lookup checks it, and
//! `<p>:grains:index:crystallized` (match key → expiry) lets the daemons'
//! maintenance pass remove what expired. A hit never moves it.

use redis::AsyncCommands;

use crate::config::{CrystallizationSettings, CrystallizePolicy};
use crate::layer0::grains::{CRYSTAL_ID_PREFIX, Grain, GrainMatch, wrong_type_key};
use crate::layer0::matching::{MatchKey, normalize, question_words};
use crate::observe::feed::{Event, EventKind};
use crate::state::{Crystallized, now_rfc3339};
use crate::store::blackboard::{Blackboard, BlackboardError, Result};
use crate::store::scripts::{CRYSTALLIZE, SWEEP_CRYSTALS};

/// Most records kept in `<p>:feedback`; the oldest go first.
pub const FEEDBACK_CAP: isize = 10_000;

/// The id of the crystallised grain of a match key: `crystal:` and the
/// first 16 hex digits of the key's SHA-1 (`crystallize.lua` computes the
/// same), so every daemon crystallising one question writes one grain.
pub fn crystal_id(match_key: &MatchKey) -> String {
    let hex = sha1_smol::Sha1::from(match_key.as_str())
        .digest()
        .to_string();
    format!("{CRYSTAL_ID_PREFIX}{}", &hex[..16])
}

/// The normal form two answers must share to *agree* (consensus) or to
/// count as "answered the same way" (`min_answers`): the answer's words as
/// a question's are read (lower case, Unicode NFKC, punctuation dropped,
/// contractions expanded, number words up to twenty as digits), without
/// the articles `the`, `a`, `an`, in their order. `"The Paris."` and
/// `"paris"` agree; `"Paris, France"` and `"Paris"` do not.
pub fn answer_key(text: &str) -> String {
    question_words(text)
        .into_iter()
        .filter(|w| !matches!(w.as_str(), "the" | "a" | "an"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words that turn a question round: its answer is not the answer to the
/// question without them, and a grain keyed by content words would be
/// one word away from answering the wrong question.
const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nobody",
    "nothing",
    "neither",
    "nor",
    "without",
    "except",
    "excluding",
    "besides",
    "cannot",
];

/// Words that tie an answer to a time: it may change, or it was true only
/// then.
const TIME_WORDS: &[&str] = &[
    "now",
    "currently",
    "current",
    "today",
    "tonight",
    "tomorrow",
    "yesterday",
    "recent",
    "recently",
    "latest",
    "last",
    "next",
    "ago",
    "still",
    "yet",
    "anymore",
    "nowadays",
    "present",
    "upcoming",
    "soon",
    "former",
    "formerly",
    "previous",
    "previously",
    "originally",
    "before",
    "after",
    "until",
    "since",
    "during",
    "was",
    "were",
    "will",
    "year",
    "month",
    "week",
];

/// Words that compare or rank: the answer depends on what else there is.
const COMPARISONS: &[&str] = &[
    "more", "less", "fewer", "than", "most", "least", "compared", "compare", "versus", "vs",
    "larger", "largest", "bigger", "biggest", "smaller", "smallest", "higher", "highest", "lower",
    "lowest", "longer", "longest", "shorter", "shortest", "older", "oldest", "newer", "newest",
    "younger", "youngest", "better", "best", "worse", "worst", "greater", "greatest", "heavier",
    "heaviest", "lighter", "lightest", "faster", "fastest", "slower", "slowest", "first", "second",
    "third", "top", "rank", "ranked",
];

/// Why answers to `question` must never crystallise, or `None` when they
/// may: a negation, a time or comparison modifier (a year counts as a
/// time), or no content word at all (an empty match key).
pub fn refusal(question: &str) -> Option<String> {
    if normalize(question).is_empty() {
        return Some("the question has no content word (empty match key)".into());
    }
    for word in question_words(question) {
        let w = word.as_str();
        if NEGATIONS.contains(&w) {
            return Some(format!("the question has a negation ({w:?})"));
        }
        if TIME_WORDS.contains(&w) || is_year(w) {
            return Some(format!("the question has a time modifier ({w:?})"));
        }
        if COMPARISONS.contains(&w) {
            return Some(format!("the question has a comparison ({w:?})"));
        }
    }
    None
}

/// Why `policy` keeps an answer of `confidence` to `question` from
/// crystallising, or `None` when the policy lets it through (what the
/// daemon checks before Redis does the rest; `kitbash calibrate
/// --crystallize` replays the same). Consensus is the caller's part.
pub fn held_back(policy: &CrystallizePolicy, confidence: f64, question: &str) -> Option<String> {
    if !policy.enabled {
        return Some("crystallize.enabled is false for this layer".into());
    }
    if confidence < policy.min_confidence {
        return Some(format!(
            "confidence {confidence:.3} below crystallize.min_confidence {}",
            policy.min_confidence
        ));
    }
    refusal(question)
}

/// A number that reads as a year (1000 to 2999), or a decade (`1990s`).
fn is_year(w: &str) -> bool {
    let digits = w.strip_suffix('s').unwrap_or(w);
    digits.len() == 4
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(digits.as_bytes()[0], b'1' | b'2')
}

/// A worker layer's answer that passed the daemon's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The question as asked.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// The layer's confidence in it; the grain answers with it.
    pub confidence: f64,
    /// The citation the answer carried (`geography#fr-capital`).
    pub source: Option<String>,
    /// The layer that answered.
    pub layer: String,
    /// The worker that answered.
    pub worker: Option<String>,
    /// The query it answered.
    pub query_id: String,
    /// Seconds the grain lives.
    pub ttl_s: u64,
    /// Times the question must have been answered the same way.
    pub min_answers: u32,
}

/// What [`Blackboard::crystallize`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CrystalOutcome {
    /// The grain was written (or written again); `evicted` names the
    /// grains removed to keep the bound.
    Stored {
        /// The grain's id.
        fact_id: String,
        /// Grains evicted for it.
        evicted: Vec<String>,
    },
    /// Answered this way `answers` times in a row so far; not yet enough.
    Counting {
        /// Answers counted, this one included.
        answers: u32,
    },
    /// The question was marked wrong and is blocked for `ms_left` more.
    Blocked {
        /// Milliseconds left (-1: no expiry).
        ms_left: i64,
    },
    /// A loaded grain holds the question; it is never replaced.
    Loaded {
        /// That grain's id.
        fact_id: String,
    },
}

/// What `kitbash feedback <id> wrong` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// The query marked.
    pub query_id: String,
    /// The grain that answered it, or the one its answer made.
    pub grain: Option<String>,
    /// Whether that grain was removed.
    pub removed: bool,
    /// Whether it is a loaded grain (kept unless forced).
    pub loaded: bool,
    /// Seconds the question is kept from crystallising (0: it has no match key).
    pub blocked_s: u64,
}

impl Feedback {
    /// What happened to the grain, in words (the feed's reason and
    /// `kitbash feedback`'s answer).
    pub fn grain_outcome(&self) -> String {
        match (&self.grain, self.loaded, self.removed) {
            (Some(id), _, true) => format!("grain {id} removed"),
            (Some(id), true, false) => {
                format!("the loaded grain {id} is kept (add --force to remove it)")
            }
            _ => "no grain involved".to_string(),
        }
    }
}

/// Why feedback could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// No state under that id (never created, or expired).
    #[error("no query {0}; its state may have expired (orchestrator.state_ttl_s)")]
    NoQuery(String),
    /// The query has no answer to judge.
    #[error("query {0} has no answer to mark (status {1})")]
    NoAnswer(String, String),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] BlackboardError),
}

impl Blackboard {
    /// Writes `c` as a crystallised grain if Redis's side of the policy
    /// agrees (see the module documentation). The caller has checked the
    /// layer's policy and [`refusal`].
    pub async fn crystallize(
        &self,
        c: &Candidate,
        s: &CrystallizationSettings,
    ) -> Result<CrystalOutcome> {
        let match_key = normalize(&c.question);
        // In cluster mode: the partition of the match key, where the
        // question's grains, index entry and counts are.
        self.grain_home(&match_key)
            .crystallize_here(c, s, match_key)
            .await
    }

    async fn crystallize_here(
        &self,
        c: &Candidate,
        s: &CrystallizationSettings,
        match_key: MatchKey,
    ) -> Result<CrystalOutcome> {
        let fact_id = crystal_id(&match_key);
        let now = chrono::Utc::now();
        let expires = now + chrono::Duration::seconds(c.ttl_s.min(i64::MAX as u64 / 1000) as i64);
        let at = now_rfc3339();
        let expires_at = expires.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let crystallized = Crystallized {
            layer: c.layer.clone(),
            worker: c.worker.clone(),
            query_id: c.query_id.clone(),
            at: at.clone(),
            expires_at: expires_at.clone(),
            expires_ms: expires.timestamp_millis(),
        };
        let grain = Grain {
            source: c.source.clone(),
            confidence: c.confidence,
            crystallized: Some(crystallized),
            ..Grain::new(&fact_id, &c.question, &c.answer)
        };
        let entry = serde_json::to_string(&GrainMatch::of(&grain)).expect("an entry serializes");
        let mut conn = self.conn.clone();
        let reply: Vec<String> = CRYSTALLIZE
            .key(self.keys.grain(&fact_id))
            .key(self.keys.question_index())
            .key(self.keys.grain_ids())
            .key(self.keys.crystallized())
            .key(self.keys.crystal_seen(match_key.as_str()))
            .key(self.keys.crystal_blocked(match_key.as_str()))
            .key(self.keys.feed())
            .arg(&fact_id)
            .arg(match_key.as_str())
            .arg(entry)
            .arg(&c.question)
            .arg(&c.answer)
            .arg(c.confidence.to_string())
            .arg(c.source.as_deref().unwrap_or(""))
            .arg(&at)
            .arg(expires.timestamp_millis())
            .arg(&expires_at)
            .arg(&c.layer)
            .arg(c.worker.as_deref().unwrap_or(""))
            .arg(&c.query_id)
            .arg(answer_key(&c.answer))
            .arg(c.min_answers)
            .arg(s.window_s)
            .arg(s.max_grains)
            .arg(now.timestamp_millis())
            .arg(self.limits().feed_max_len)
            .arg(self.keys.grain_prefix())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.crystal_error(e, &match_key))?;
        let mut reply = reply.into_iter();
        let status = reply.next().unwrap_or_default();
        let detail = reply.next().unwrap_or_default();
        Ok(match status.as_str() {
            "stored" => CrystalOutcome::Stored {
                fact_id,
                evicted: reply.collect(),
            },
            "counting" => CrystalOutcome::Counting {
                answers: detail.parse().unwrap_or(0),
            },
            "blocked" => CrystalOutcome::Blocked {
                ms_left: detail.parse().unwrap_or(-1),
            },
            _ => CrystalOutcome::Loaded { fact_id: detail },
        })
    }

    /// Maps `crystallize.lua`'s error: a wrong-typed key names the key.
    fn crystal_error(&self, err: redis::RedisError, match_key: &MatchKey) -> BlackboardError {
        let (fact_id, mk) = (crystal_id(match_key), match_key.as_str());
        wrong_type_key(
            err,
            &[
                (self.keys.grain(&fact_id), "hash"),
                (self.keys.question_index(), "hash"),
                (self.keys.grain_ids(), "set"),
                (self.keys.crystallized(), "sorted set"),
                (self.keys.crystal_seen(mk), "hash"),
                (self.keys.crystal_blocked(mk), "string"),
                (self.keys.feed(), "stream"),
            ],
        )
    }

    /// Removes up to `limit` crystallised grains of the current partition
    /// whose expiry has passed, each with a `grain_forgotten` event;
    /// returns how many went. (A daemon runs it for each partition.)
    pub async fn sweep_crystals(&self, limit: u64) -> Result<u64> {
        let mut conn = self.conn.clone();
        let n: u64 = SWEEP_CRYSTALS
            .key(self.keys.question_index())
            .key(self.keys.grain_ids())
            .key(self.keys.crystallized())
            .key(self.keys.feed())
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(limit)
            .arg(self.keys.grain_prefix())
            .arg(self.limits().feed_max_len)
            .arg(now_rfc3339())
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }

    /// Number of crystallised grains (O(1) per partition).
    pub async fn count_crystallized(&self) -> Result<u64> {
        let mut total = 0;
        for here in self.partitions() {
            let key = here.keys.crystallized();
            let mut conn = self.conn.clone();
            let n: u64 = conn
                .zcard(&key)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "sorted set"))?;
            total += n;
        }
        Ok(total)
    }

    /// Up to `limit` crystallised grains, the one expiring soonest first
    /// (the eviction order). Ids whose hash is gone are skipped.
    pub async fn list_crystallized(&self, limit: usize) -> Result<Vec<Grain>> {
        let mut out = Vec::new();
        for here in self.partitions() {
            let key = here.keys.crystallized();
            let mut conn = self.conn.clone();
            let keys: Vec<String> = conn
                .zrange(&key, 0, limit.max(1) as isize - 1)
                .await
                .map_err(|e| BlackboardError::on_key(e, &key, "sorted set"))?;
            let ids: Vec<String> = keys
                .into_iter()
                .map(|mk| crystal_id(&MatchKey::from_stored(mk)))
                .collect();
            out.extend(here.get_grains(&ids).await?);
        }
        if self.keys.partitions() > 1 {
            out.sort_by_key(|g| g.crystallized.as_ref().map_or(i64::MAX, |c| c.expires_ms));
        }
        out.truncate(limit.max(1));
        Ok(out)
    }

    /// Deletes a grain (loaded or crystallised) with a `grain_forgotten`
    /// event giving `reason`; returns whether there was one.
    pub async fn forget_grain(&self, fact_id: &str, reason: &str) -> Result<bool> {
        let deleted = self.delete_grain(fact_id).await?;
        if deleted {
            self.emit(
                &Event::global(EventKind::GrainForgotten)
                    .grain(fact_id)
                    .reason(reason),
            )
            .await?;
        }
        Ok(deleted)
    }

    /// Marks query `query_id`'s answer wrong: the grain that answered it
    /// (or the crystallised grain its answer made) is removed, unless it is
    /// a loaded grain and `force` is false; the question is kept from
    /// crystallising for `block_s` seconds; the verdict is an
    /// `answer_marked_wrong` event and a record in `<p>:feedback`.
    pub async fn mark_wrong(
        &self,
        query_id: &str,
        force: bool,
        block_s: u64,
        note: Option<&str>,
    ) -> std::result::Result<Feedback, FeedbackError> {
        let state = self
            .get_state(query_id)
            .await?
            .ok_or_else(|| FeedbackError::NoQuery(query_id.to_string()))?;
        let Some(answer) = &state.answer else {
            return Err(FeedbackError::NoAnswer(
                query_id.to_string(),
                state.status.as_str().to_string(),
            ));
        };
        let match_key = normalize(&state.query_text);
        let grain_id = match answer
            .source
            .as_deref()
            .and_then(|s| s.strip_prefix("grain:"))
        {
            Some(id) => Some(id.to_string()),
            _ if match_key.is_empty() => None,
            _ => Some(crystal_id(&match_key)),
        };
        let grain = match &grain_id {
            Some(id) => self.get_grain(id).await?,
            None => None,
        };
        let loaded = grain.as_ref().is_some_and(|g| g.crystallized.is_none());
        let mut removed = false;
        if let Some(g) = &grain
            && (!loaded || force)
        {
            removed = self
                .forget_grain(
                    &g.fact_id,
                    &format!("its answer to query {query_id} was marked wrong"),
                )
                .await?;
        }
        let blocked_s = if match_key.is_empty() { 0 } else { block_s };
        let feedback = Feedback {
            query_id: query_id.to_string(),
            grain: grain.as_ref().map(|g| g.fact_id.clone()),
            removed,
            loaded,
            blocked_s,
        };
        if blocked_s > 0 {
            // In the question's partition (a pipeline of its own in cluster mode).
            let home = self.grain_home(&match_key);
            let mut block = redis::pipe();
            block
                .set_ex(
                    home.keys.crystal_blocked(match_key.as_str()),
                    query_id,
                    blocked_s,
                )
                .ignore()
                .del(home.keys.crystal_seen(match_key.as_str()))
                .ignore();
            let mut conn = self.conn.clone();
            block
                .query_async::<()>(&mut conn)
                .await
                .map_err(BlackboardError::from)?;
        }
        let mut pipe = redis::pipe();
        let mut reason = format!(
            "answer {:?} from {} marked wrong; {}; the question is kept from crystallising for {blocked_s} s",
            answer.text,
            answer.layer,
            feedback.grain_outcome()
        );
        if let Some(note) = note.filter(|n| !n.is_empty()) {
            reason.push_str(&format!("; note: {note}"));
        }
        let mut event = Event::new(EventKind::AnswerMarkedWrong, query_id)
            .layer(answer.layer.as_str())
            .reason(reason.as_str());
        if let Some(id) = &feedback.grain {
            event = event.grain(id.as_str());
        }
        self.add_event_to(&mut pipe, &event);
        let record = serde_json::json!({
            "query_id": query_id,
            "verdict": "wrong",
            "question": state.query_text,
            "answer": answer.text,
            "layer": answer.layer,
            "grain": feedback.grain,
            "removed": removed,
            "note": note,
            "at": now_rfc3339(),
        });
        pipe.lpush(self.keys.feedback(), record.to_string())
            .ignore()
            .ltrim(self.keys.feedback(), 0, FEEDBACK_CAP - 1)
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(BlackboardError::from)?;
        Ok(feedback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_agree_on_their_normal_form() {
        assert_eq!(answer_key("The Paris."), answer_key("paris"));
        assert_eq!(answer_key("Eight"), answer_key("8"));
        assert_ne!(answer_key("Paris, France"), answer_key("Paris"));
        assert_ne!(answer_key("Lyon"), answer_key("Paris"));
    }

    #[test]
    fn unsafe_questions_are_refused() {
        for q in [
            "What is not the capital of France?",
            "Which country isn't in Europe?",
            "Who is the current president of France?",
            "What was the capital of Germany in 1980?",
            "What is the population of Kenya in 2020?",
            "Which is the largest country?",
            "Is Kenya bigger than Uganda?",
            "What did people eat in the 1990s?",
            "What?",
            "",
        ] {
            assert!(refusal(q).is_some(), "{q}");
        }
        for q in [
            "What is the capital of France?",
            "What is the chemical symbol of sodium?",
            "Which currency does Japan use?",
            "How many moons does Mars have?",
        ] {
            assert_eq!(refusal(q), None, "{q}");
        }
    }

    #[test]
    fn crystal_ids_follow_the_match_key() {
        let a = crystal_id(&normalize("What is the capital of Kenya?"));
        assert_eq!(a, crystal_id(&normalize("kenya's capital")));
        assert_ne!(a, crystal_id(&normalize("What is the capital of Uganda?")));
        assert!(a.starts_with(CRYSTAL_ID_PREFIX) && a.len() == CRYSTAL_ID_PREFIX.len() + 16);
    }
}
