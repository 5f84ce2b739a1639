//! The bitnet backend (layer1): a small 1-bit LLM behind a llama.cpp-style
//! server. bitnet.cpp serves its models through llama.cpp's `llama-server`.
//!
//! - Answer: `POST /completion` with `{"prompt": <prompt_template with
//!   {query} replaced>, "n_predict", "n_probs", "temperature": -1,
//!   "stop": ["\n"], "stream": false, "cache_prompt": true}`. The answer
//!   is `content`, trimmed: one line, as the stop sequence ends it there.
//!   An empty one is no answer (`Ok(None)`); text that is not an answer
//!   ([`super::generated::non_answer`]) is a miss with why.
//! - Why `temperature: -1` and not 0: both decode greedily, but llama.cpp's
//!   server README documents that "for temperature < 0 the tokens are
//!   sampled greedily but token probabilities are still being calculated via
//!   a simple softmax of the logits", and servers older than the December
//!   2024 rewrite (the llama.cpp that bitnet.cpp ships is one) report
//!   probability 1.0 for every chosen token at exactly 0, which would make
//!   every answer look certain. Current servers compute the probabilities
//!   from the logits either way.
//! - Confidence: from `completion_probabilities` (see [`super::logprobs`]),
//!   in either shape llama.cpp has used:
//!   - current: `[{"id", "token", "bytes", "logprob", "top_logprobs": [{"id",
//!     "token", "bytes", "logprob"}, …]}, …]` (or `prob`/`top_probs` with
//!     `post_sampling_probs`);
//!   - older: `[{"content": "tok", "probs": [{"tok_str": "tok", "prob":
//!     0.93}, …]}, …]`, where the chosen token's probability is the entry of
//!     `probs` whose `tok_str` equals `content`, else the first.
//!
//!   A non-empty answer without them is a [`BackendError::BadResponse`]:
//!   `n_probs` is at least 1, so the server should have sent them.
//! - Health: `GET /health`: 200 `{"status":"ok"}` is healthy; 503
//!   (`{"error":{"code":503,"message":"Loading model","type":
//!   "unavailable_error"}}`) is "model loading"; a refused connection is
//!   "server unreachable at …".
//!
//! Timeouts, retries of a busy server (503, 429), and the error kinds are
//! those of the llm backend (shared [`super::llm`] plumbing).

use std::fmt;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::backend::{Backend, BackendAnswer, BackendError, check_prompt_template};
use super::generated::{STOP, non_answer};
use super::http_client::HttpClient;
use super::logprobs::TokenLogprobs;
use crate::config::BitnetSettings;

/// Client of a llama.cpp-style server.
pub struct BitnetBackend {
    http: HttpClient,
    prompt_template: String,
    n_predict: u32,
    n_probs: u32,
}

impl fmt::Debug for BitnetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitnetBackend")
            .field("url", &self.http.shown())
            .field("n_predict", &self.n_predict)
            .field("n_probs", &self.n_probs)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for BitnetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "llama.cpp server at {}", self.http.shown())
    }
}

impl BitnetBackend {
    /// A client for `settings.url`.
    pub fn new(settings: &BitnetSettings) -> Result<Self, String> {
        check_prompt_template(&settings.prompt_template, "workers.bitnet")?;
        if settings.n_predict == 0 {
            return Err("workers.bitnet.n_predict must be at least 1".into());
        }
        if settings.n_probs == 0 {
            return Err(
                "workers.bitnet.n_probs must be at least 1: the answer's confidence comes from the token probabilities"
                    .into(),
            );
        }
        let http = HttpClient::new(
            &settings.url,
            settings.request_timeout_ms,
            None,
            "workers.bitnet",
        )?;
        Ok(Self {
            http,
            prompt_template: settings.prompt_template.clone(),
            n_predict: settings.n_predict,
            n_probs: settings.n_probs,
        })
    }
}

/// The tokens of llama.cpp's `completion_probabilities`, in either shape.
fn read_probabilities(entries: &[Value]) -> Result<TokenLogprobs, String> {
    let older = entries.first().is_some_and(|e| e.get("probs").is_some());
    if !older {
        return TokenLogprobs::from_openai_content(entries);
    }
    let mut out = TokenLogprobs::default();
    for (i, entry) in entries.iter().enumerate() {
        let chosen_text = entry.get("content").and_then(Value::as_str);
        let probs = entry
            .get("probs")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("token {i} has no `probs` list"))?;
        let mut listed = Vec::with_capacity(probs.len());
        for p in probs {
            let prob = p
                .get("prob")
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("token {i}: an entry of `probs` has no `prob`"))?;
            listed.push((p.get("tok_str").and_then(Value::as_str), prob));
        }
        if listed.is_empty() {
            return Err(format!("token {i} has an empty `probs` list"));
        }
        let chosen = chosen_text
            .and_then(|c| listed.iter().position(|(t, _)| *t == Some(c)))
            .unwrap_or(0);
        let best_other = listed
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != chosen)
            .map(|(_, (_, p))| *p)
            .fold(None, |best: Option<f64>, p| {
                Some(best.map_or(p, |b| b.max(p)))
            });
        let ln = |p: f64| if p > 0.0 { p.ln() } else { f64::NEG_INFINITY };
        out.push(ln(listed[chosen].1), best_other.map(ln));
    }
    Ok(out)
}

/// `"Loading model"` (current) or `"loading model"` (older `status`).
fn is_loading(value: &Value) -> bool {
    value
        .pointer("/error/message")
        .or_else(|| value.get("status"))
        .and_then(Value::as_str)
        .is_some_and(|m| m.to_ascii_lowercase().contains("loading"))
}

impl Backend for BitnetBackend {
    async fn answer(
        &self,
        text: &str,
        deadline: Instant,
    ) -> Result<Option<BackendAnswer>, BackendError> {
        let path = "/completion";
        let prompt = self.prompt_template.replace("{query}", text);
        let body = json!({
            "prompt": prompt,
            "n_predict": self.n_predict,
            "n_probs": self.n_probs,
            "temperature": -1,
            "stop": STOP,
            "stream": false,
            "cache_prompt": true,
        });
        let hint = " (not a llama.cpp server? check workers.bitnet.url)";
        let value = self.http.post_for_json(path, &body, deadline, hint).await?;
        let content = value
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                BackendError::BadResponse(format!(
                    "{path} answer has no `content` string: {}",
                    self.http.quote(value.to_string().as_bytes())
                ))
            })?;
        let answer = content.trim();
        if answer.is_empty() {
            return Ok(None);
        }
        if let Some(why) = non_answer(answer, &prompt) {
            return Err(BackendError::NotAnAnswer(why));
        }
        let entries = value
            .get("completion_probabilities")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                BackendError::BadResponse(format!(
                    "{path} answer has no completion_probabilities although n_probs is {}",
                    self.n_probs
                ))
            })?;
        let tokens = read_probabilities(entries).map_err(|e| {
            BackendError::BadResponse(format!("{path} completion_probabilities: {e}"))
        })?;
        if !tokens.is_informative() {
            return Err(BackendError::BadResponse(format!(
                "{path} reports probability 1 for every token and none for any alternative: \
                 probabilities taken after greedy sampling say nothing about the answer"
            )));
        }
        let confidence = tokens.confidence().unwrap_or(0.0);
        let source = value
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(|m| m.rsplit(['/', '\\']).next().unwrap_or(m).to_string())
            .unwrap_or_else(|| "bitnet".to_string());
        Ok(Some(BackendAnswer {
            text: answer.to_string(),
            confidence,
            source: Some(source),
        }))
    }

    async fn check(&self) -> Result<(), String> {
        let path = "/health";
        let reply = self.http.check_get(path).await?;
        let value: Option<Value> = serde_json::from_slice(&reply.body).ok();
        match reply.status.as_u16() {
            200 => match value
                .as_ref()
                .and_then(|v| v.get("status"))
                .and_then(Value::as_str)
            {
                Some("ok") | None => Ok(()),
                Some(other) => Err(format!(
                    "server not ready: {}",
                    self.http.quote(other.as_bytes())
                )),
            },
            503 if value.as_ref().is_some_and(is_loading) => Err("model loading".to_string()),
            503 => Err(format!("server unavailable: {}", reply.message(&self.http))),
            code => Err(format!(
                "{}{path} answered HTTP {code}: {}",
                self.http.shown(),
                reply.message(&self.http)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_shape_takes_the_entry_matching_content() {
        let entries: Vec<Value> = serde_json::from_str(
            r#"[{"content":" Paris","probs":[{"tok_str":" the","prob":0.3},{"tok_str":" Paris","prob":0.6}]},
                {"content":"!","probs":[{"tok_str":".","prob":0.8},{"tok_str":"\n","prob":0.1}]}]"#,
        )
        .unwrap();
        let t = read_probabilities(&entries).unwrap();
        assert!((t.chosen[0] - 0.6f64.ln()).abs() < 1e-12);
        assert!((t.margins[0] - 0.3).abs() < 1e-12);
        // "!" is not listed: the first entry stands for it.
        assert!((t.chosen[1] - 0.8f64.ln()).abs() < 1e-12);
        assert!((t.margins[1] - 0.7).abs() < 1e-12);
    }

    #[test]
    fn settings_are_checked() {
        let mut s = BitnetSettings::default();
        assert!(BitnetBackend::new(&s).is_ok());
        s.n_probs = 0;
        assert!(BitnetBackend::new(&s).unwrap_err().contains("n_probs"));
        let s = BitnetSettings {
            url: "not a url".into(),
            ..Default::default()
        };
        assert!(BitnetBackend::new(&s).is_err());
    }
}
