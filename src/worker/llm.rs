//! The llm backend (layer4): a large LLM behind KoboldCpp or any
//! OpenAI-compatible server, chosen by `workers.llm.backend`.
//!
//! # KoboldCpp (`backend: kobold`)
//!
//! - Answer: `POST /api/v1/generate` with `{"prompt", "max_length",
//!   "temperature": 0, "stop_sequence": ["\n"], "logprobs": true,
//!   "genkey"}`; the text is `results[0].text`.
//! - Log-probabilities: KoboldCpp versions that have them return them in
//!   the same answer (`results[0].logprobs.content`, OpenAI's per-token
//!   shape) when asked with `"logprobs": true`; when the answer does not
//!   carry them, `POST /api/extra/last_logprobs` with our `genkey` (so that
//!   another client's generation is never read as ours) returns
//!   `{"logprobs": {"content": […]}}`. Support is learned once: from
//!   `GET /api/extra/version` (`{"result":"KoboldCpp","version":"1.x"}`)
//!   at the first health check, and for certain from a 404 on
//!   `last_logprobs`. Without log-probabilities the answer gets
//!   `workers.llm.fixed_confidence`.
//! - KoboldCpp records probabilities *after* its samplers, and its greedy
//!   mode (temperature 0) keeps a single candidate: every token then reports
//!   probability 1, which says nothing. Such numbers are recognised
//!   ([`TokenLogprobs::is_informative`]) and `fixed_confidence` is used.
//! - Health: `GET /api/v1/model` answers 200.
//! - `workers.llm.api_key`, when set, is sent as `Authorization: Bearer`
//!   here too: it is how KoboldCpp's `--password` is given.
//!
//! # OpenAI-compatible (`backend: openai`)
//!
//! - Answer: `POST /v1/chat/completions` with `{"model", "messages":
//!   [{"role":"user","content": prompt}], "max_tokens", "temperature": 0,
//!   "stop": ["\n"], "logprobs": true, "top_logprobs": 2}`; the text is
//!   `choices[0].message.content`, the log-probabilities
//!   `choices[0].logprobs.content[i].logprob` (and `top_logprobs` for the
//!   top-2 margin). No log-probabilities (`"logprobs": null`, or a server
//!   that rejects the parameter with a 400 naming it, after which it is no
//!   longer sent) means `fixed_confidence`.
//! - `workers.llm.api_key` goes in `Authorization: Bearer <key>` and
//!   nowhere else: not in `Debug`/`Display` of the backend, not in errors
//!   (server messages are scrubbed of it), not in logs.
//! - Without `workers.llm.model`, the first model `GET /v1/models` lists is
//!   used (llama.cpp's and KoboldCpp's OpenAI endpoints ignore the field;
//!   vLLM and OpenAI need it).
//! - Health: `GET /v1/models` (with the key) answers 200.
//!
//! # Both
//!
//! Text that is not an answer ([`super::generated::non_answer`]: empty,
//! no words, a repetition, the prompt echoed) is a miss with why, whatever
//! its log-probabilities. The confidence is computed by [`super::logprobs`]. Every request's
//! timeout is the smaller of `request_timeout_ms` and the time left before
//! the job's deadline. A busy server (HTTP 503 or 429) is asked again after
//! 50 ms, 100 ms, 200 ms, … (at most 2 s, or its `Retry-After`) while the
//! deadline allows, then the job fails with [`BackendError::Busy`]. A
//! refused connection or a request timeout is [`BackendError::Unreachable`]
//! (a timeout cut short by the job's deadline is [`BackendError::Deadline`]);
//! an answer that is not the documented shape (not JSON, HTML, missing
//! fields) is [`BackendError::BadResponse`].
//!
//! The HTTP plumbing (timeouts, retries, error classification, secret
//! scrubbing) lives in the private `http` submodule, shared with the bitnet
//! backend.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::backend::{Backend, BackendAnswer, BackendError, check_prompt_template};
use super::generated::{STOP, non_answer};
use super::logprobs::TokenLogprobs;
use crate::config::{LlmProtocol as Protocol, LlmSettings};

use super::http_client::HttpClient;

/// KoboldCpp releases from this one on have `/api/extra/last_logprobs`
/// (approximately: a 404 on it is what settles the question).
const KOBOLD_LOGPROBS_SINCE: (u32, u32) = (1, 67);

/// What we know about a KoboldCpp server's log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Logprobs {
    /// Not found out yet.
    Unknown = 0,
    /// They come back in the generate answer.
    Inline = 1,
    /// They come from `/api/extra/last_logprobs`.
    Endpoint = 2,
    /// The server has none.
    None = 3,
}

/// A [`Logprobs`] that concurrent jobs read and update.
struct LogprobsCell(AtomicU8);

impl LogprobsCell {
    fn new() -> Self {
        Self(AtomicU8::new(Logprobs::Unknown as u8))
    }

    fn get(&self) -> Logprobs {
        match self.0.load(Ordering::Relaxed) {
            1 => Logprobs::Inline,
            2 => Logprobs::Endpoint,
            3 => Logprobs::None,
            _ => Logprobs::Unknown,
        }
    }

    fn set(&self, value: Logprobs) {
        self.0.store(value as u8, Ordering::Relaxed);
    }
}

/// What answering one job gives: an answer, nothing, or why not.
type Answered = Result<Option<BackendAnswer>, BackendError>;

/// What both protocols' clients share: the HTTP client and the request
/// settings.
struct Common {
    http: HttpClient,
    prompt_template: String,
    max_tokens: u32,
    fixed_confidence: f64,
    /// The configured model name (`workers.llm.model`).
    model: Option<String>,
}

impl Common {
    fn prompt(&self, text: &str) -> String {
        self.prompt_template.replace("{query}", text)
    }

    /// The confidence of an answer: from its tokens when they say anything,
    /// else the configured fixed one.
    fn confidence_of(&self, tokens: Option<TokenLogprobs>) -> f64 {
        tokens
            .filter(TokenLogprobs::is_informative)
            .and_then(|t| t.confidence())
            .unwrap_or(self.fixed_confidence)
    }
}

/// Client of KoboldCpp (`/api/v1/generate`).
pub struct KoboldBackend {
    c: Common,
    /// Where its log-probabilities come from.
    logprobs: LogprobsCell,
    /// `/api/extra/version` was read (or is not there).
    version_known: AtomicBool,
    /// The model name `/api/v1/model` gave.
    served_model: Mutex<Option<String>>,
}

/// Client of an OpenAI-compatible server (`/v1/chat/completions`).
pub struct OpenAiBackend {
    c: Common,
    /// The model `/v1/models` listed first, used when none is configured.
    listed_model: Mutex<Option<String>>,
    /// The server rejected `logprobs`; they are no longer asked for.
    no_logprobs: AtomicBool,
}

/// The llm worker's backend: KoboldCpp or an OpenAI-compatible server, as
/// `workers.llm.backend` says. Its `Debug` and `Display` never show the API
/// key.
pub enum LlmBackend {
    /// KoboldCpp.
    Kobold(KoboldBackend),
    /// An OpenAI-compatible server.
    OpenAi(OpenAiBackend),
}

impl fmt::Debug for LlmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmBackend")
            .field("protocol", &self.protocol_name())
            .field("url", &self.common().http.shown())
            .field("model", &self.common().model)
            .field("max_tokens", &self.common().max_tokens)
            .field("fixed_confidence", &self.common().fixed_confidence)
            .field("http", &self.common().http)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for LlmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} server at {}",
            self.protocol_name(),
            self.common().http.shown()
        )
    }
}

fn lock<T: Clone>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn store<T>(m: &Mutex<Option<T>>, value: T) {
    *m.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
}

/// `"1.82.4.yr0-ROCm"` → `(1, 82)`.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    let major = parts.next()?.trim().parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

impl LlmBackend {
    /// A client for `settings.url` speaking `settings.backend`.
    pub fn new(settings: &LlmSettings) -> Result<Self, String> {
        check_prompt_template(&settings.prompt_template, "workers.llm")?;
        if settings.max_tokens == 0 {
            return Err("workers.llm.max_tokens must be at least 1".into());
        }
        let http = HttpClient::new(
            &settings.url,
            settings.request_timeout_ms,
            settings.api_key.clone(),
            "workers.llm",
        )?;
        let c = Common {
            http,
            prompt_template: settings.prompt_template.clone(),
            max_tokens: settings.max_tokens,
            fixed_confidence: settings.fixed_confidence.clamp(0.0, 1.0),
            model: settings.model.clone().filter(|m| !m.is_empty()),
        };
        Ok(match settings.backend {
            Protocol::Kobold => Self::Kobold(KoboldBackend {
                c,
                logprobs: LogprobsCell::new(),
                version_known: AtomicBool::new(false),
                served_model: Mutex::new(None),
            }),
            Protocol::Openai => Self::OpenAi(OpenAiBackend {
                c,
                listed_model: Mutex::new(None),
                no_logprobs: AtomicBool::new(false),
            }),
        })
    }

    fn protocol_name(&self) -> &'static str {
        match self {
            Self::Kobold(_) => "KoboldCpp",
            Self::OpenAi(_) => "OpenAI-compatible",
        }
    }

    fn common(&self) -> &Common {
        match self {
            Self::Kobold(k) => &k.c,
            Self::OpenAi(o) => &o.c,
        }
    }
}

impl KoboldBackend {
    /// Reads KoboldCpp's version once; servers too old for log-probabilities
    /// are not asked for them.
    async fn probe_version(&self) {
        let (logprobs, version_known) = (&self.logprobs, &self.version_known);
        if version_known.load(Ordering::Relaxed) || logprobs.get() != Logprobs::Unknown {
            return;
        }
        let path = "/api/extra/version";
        let Ok(reply) = self.c.http.check_get(path).await else {
            return;
        };
        version_known.store(true, Ordering::Relaxed);
        let value: Option<Value> = serde_json::from_slice(&reply.body).ok();
        let version = value
            .as_ref()
            .filter(|_| reply.status.is_success())
            .and_then(|v| v.get("version"))
            .and_then(Value::as_str);
        match version.and_then(parse_version) {
            Some(v) if v < KOBOLD_LOGPROBS_SINCE => {
                tracing::info!(url = %self.c.http.shown(), version = version.unwrap_or(""), "KoboldCpp too old for log-probabilities; answers get workers.llm.fixed_confidence");
                logprobs.set(Logprobs::None);
            }
            Some(_) => {
                tracing::debug!(url = %self.c.http.shown(), version = version.unwrap_or(""), "KoboldCpp version")
            }
            None => {
                tracing::debug!(url = %self.c.http.shown(), "no KoboldCpp version at {path}; log-probability support is learned from the answers")
            }
        }
    }

    async fn check(&self) -> Result<(), String> {
        let model = &self.served_model;
        let path = "/api/v1/model";
        let reply = self.c.http.check_get(path).await?;
        if !reply.status.is_success() {
            return Err(format!(
                "{}{path} answered HTTP {}: {}",
                self.c.http.shown(),
                reply.status.as_u16(),
                reply.message(&self.c.http)
            ));
        }
        if let Some(name) = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("result").and_then(Value::as_str).map(str::to_string))
        {
            store(model, name);
        }
        self.probe_version().await;
        Ok(())
    }

    async fn answer(&self, text: &str, deadline: Instant) -> Answered {
        let (logprobs, model) = (&self.logprobs, &self.served_model);
        let path = "/api/v1/generate";
        let genkey = format!("KB{}", uuid::Uuid::new_v4().simple());
        let prompt = self.c.prompt(text);
        let body = json!({
            "prompt": prompt,
            "max_length": self.c.max_tokens,
            "temperature": 0,
            "stop_sequence": STOP,
            "logprobs": true,
            "genkey": genkey,
        });
        let hint = " (not a KoboldCpp server? check workers.llm.backend)";
        let value = self
            .c
            .http
            .post_for_json(path, &body, deadline, hint)
            .await?;
        let result = self
            .c
            .http
            .element(&value, path, "/results/0", "results[0]")?;
        let answer = result
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                BackendError::BadResponse(format!("{path} answer has no results[0].text string"))
            })?
            .trim()
            .to_string();
        if answer.is_empty() {
            return Ok(None);
        }
        if let Some(why) = non_answer(&answer, &prompt) {
            return Err(BackendError::NotAnAnswer(why));
        }

        let mut tokens = None;
        match result.get("logprobs") {
            Some(lp) if lp.is_object() => {
                logprobs.set(Logprobs::Inline);
                tokens = self.kobold_tokens(lp, path);
            }
            _ => {
                let state = logprobs.get();
                if state != Logprobs::None && state != Logprobs::Inline {
                    tokens = self.kobold_last_logprobs(&genkey, logprobs, deadline).await;
                }
            }
        }
        Ok(Some(BackendAnswer {
            text: answer,
            confidence: self.c.confidence_of(tokens),
            source: Some(lock(model).unwrap_or_else(|| "koboldcpp".to_string())),
        }))
    }

    /// Reads KoboldCpp's logprobs object (`{"content": […]}`; older ones
    /// only have `token_logprobs`).
    fn kobold_tokens(&self, lp: &Value, path: &str) -> Option<TokenLogprobs> {
        if let Some(content) = lp.get("content").and_then(Value::as_array) {
            return match TokenLogprobs::from_openai_content(content) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(url = %self.c.http.shown(), "{path}: unreadable log-probabilities ({e}); using workers.llm.fixed_confidence");
                    None
                }
            };
        }
        let list = lp.get("token_logprobs").and_then(Value::as_array)?;
        let mut t = TokenLogprobs::default();
        for l in list {
            t.push(l.as_f64()?, None);
        }
        Some(t)
    }

    /// Asks `/api/extra/last_logprobs` for our generation's tokens.
    async fn kobold_last_logprobs(
        &self,
        genkey: &str,
        logprobs: &LogprobsCell,
        deadline: Instant,
    ) -> Option<TokenLogprobs> {
        let path = "/api/extra/last_logprobs";
        let (timeout, _) = self.c.http.timeout_before(deadline)?;
        let reply = match self
            .c
            .http
            .post_once(path, &json!({ "genkey": genkey }), timeout)
            .await
        {
            Ok(r) => r,
            Err(f) => {
                tracing::debug!(url = %self.c.http.shown(), "{path}: {f:?}; using workers.llm.fixed_confidence");
                return None;
            }
        };
        if reply.status == reqwest::StatusCode::NOT_FOUND {
            tracing::info!(url = %self.c.http.shown(), "this KoboldCpp has no {path}; answers get workers.llm.fixed_confidence");
            logprobs.set(Logprobs::None);
            return None;
        }
        if !reply.status.is_success() {
            tracing::debug!(url = %self.c.http.shown(), status = reply.status.as_u16(), "{path} failed; using workers.llm.fixed_confidence");
            return None;
        }
        let value: Value = match serde_json::from_slice(&reply.body) {
            Ok(v) => v,
            Err(_) => {
                tracing::warn!(url = %self.c.http.shown(), "{path} did not answer JSON; using workers.llm.fixed_confidence");
                return None;
            }
        };
        // `{"logprobs": null}`: another generation ran since ours.
        let lp = value.get("logprobs").filter(|v| v.is_object())?;
        logprobs.set(Logprobs::Endpoint);
        self.kobold_tokens(lp, path)
    }
}

impl OpenAiBackend {
    async fn check(&self) -> Result<(), String> {
        let listed_model = &self.listed_model;
        let path = "/v1/models";
        let reply = self.c.http.check_get(path).await?;
        if !reply.status.is_success() {
            let hint = match reply.status.as_u16() {
                401 | 403 => self.c.http.credentials_hint(),
                _ => String::new(),
            };
            return Err(format!(
                "{}{path} answered HTTP {}: {}{hint}",
                self.c.http.shown(),
                reply.status.as_u16(),
                reply.message(&self.c.http)
            ));
        }
        if self.c.model.is_none()
            && let Some(id) = serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|v| {
                    v.pointer("/data/0/id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
        {
            store(listed_model, id);
        }
        Ok(())
    }

    async fn answer(&self, text: &str, deadline: Instant) -> Answered {
        let (listed_model, no_logprobs) = (&self.listed_model, &self.no_logprobs);
        let path = "/v1/chat/completions";
        let model = self.c.model.clone().or_else(|| lock(listed_model));
        let prompt = self.c.prompt(text);
        let mut body = json!({
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.c.max_tokens,
            "temperature": 0,
            "stop": STOP,
        });
        if let Some(m) = &model {
            body["model"] = json!(m);
        }
        let mut asked_logprobs = !no_logprobs.load(Ordering::Relaxed);
        if asked_logprobs {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(2);
        }
        let mut reply = self.c.http.post_json(path, &body, deadline).await?;
        if asked_logprobs
            && reply.status == reqwest::StatusCode::BAD_REQUEST
            && reply.message(&self.c.http).contains("logprobs")
        {
            tracing::info!(url = %self.c.http.shown(), "the server does not take logprobs; asking without them (answers get workers.llm.fixed_confidence)");
            no_logprobs.store(true, Ordering::Relaxed);
            asked_logprobs = false;
            if let Some(obj) = body.as_object_mut() {
                obj.remove("logprobs");
                obj.remove("top_logprobs");
            }
            reply = self.c.http.post_json(path, &body, deadline).await?;
        }
        let value = self.c.http.success_json(
            path,
            reply,
            " (not an OpenAI-compatible server? check workers.llm.url and workers.llm.backend)",
        )?;
        let choice = self
            .c
            .http
            .element(&value, path, "/choices/0", "choices[0]")?;
        let content = choice.pointer("/message/content").ok_or_else(|| {
            BackendError::BadResponse(format!("{path} answer has no choices[0].message.content"))
        })?;
        let answer = match content {
            Value::Null => return Ok(None), // a refusal or a tool call
            Value::String(s) => s.trim().to_string(),
            _ => {
                return Err(BackendError::BadResponse(format!(
                    "{path}: choices[0].message.content is not a string"
                )));
            }
        };
        if answer.is_empty() {
            return Ok(None);
        }
        if let Some(why) = non_answer(&answer, &prompt) {
            return Err(BackendError::NotAnAnswer(why));
        }
        let tokens = if asked_logprobs {
            match choice
                .pointer("/logprobs/content")
                .and_then(Value::as_array)
            {
                Some(content) => match TokenLogprobs::from_openai_content(content) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!(url = %self.c.http.shown(), "{path}: unreadable log-probabilities ({e}); using workers.llm.fixed_confidence");
                        None
                    }
                },
                None => None,
            }
        } else {
            None
        };
        // llama-server names the model by its file path; the file's name
        // is enough (and does not show the server's directories).
        let source = value
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .or(model)
            .map(|m| match m.rsplit(['/', '\\']).next() {
                Some(name) if m.ends_with(".gguf") => name.to_string(),
                _ => m,
            })
            .unwrap_or_else(|| "openai".to_string());
        Ok(Some(BackendAnswer {
            text: answer,
            confidence: self.c.confidence_of(tokens),
            source: Some(source),
        }))
    }
}

impl Backend for LlmBackend {
    async fn answer(
        &self,
        text: &str,
        deadline: Instant,
    ) -> Result<Option<BackendAnswer>, BackendError> {
        match self {
            Self::Kobold(k) => k.answer(text, deadline).await,
            Self::OpenAi(o) => o.answer(text, deadline).await,
        }
    }

    async fn check(&self) -> Result<(), String> {
        match self {
            Self::Kobold(k) => k.check().await,
            Self::OpenAi(o) => o.check().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redact_url;

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.102"), Some((1, 102)));
        assert_eq!(parse_version("1.82.4.yr0-ROCm"), Some((1, 82)));
        assert_eq!(parse_version("1.66"), Some((1, 66)));
        assert_eq!(parse_version("banana"), None);
        assert!(parse_version("1.66").unwrap() < KOBOLD_LOGPROBS_SINCE);
    }

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        // One redaction for every URL the program prints (config::redact_url).
        assert_eq!(
            redact_url("http://user:pw@host:1/x"),
            "http://user:***@host:1/x"
        );
        // A password holding an unencoded `/` does not leak its tail.
        assert_eq!(
            redact_url("http://user:pa/ss@host:1/x"),
            "http://user:***@host:1/x"
        );
        assert_eq!(redact_url("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
    }

    #[test]
    fn settings_are_checked() {
        let mut s = LlmSettings::default();
        assert!(LlmBackend::new(&s).is_ok());
        s.prompt_template = "no placeholder".into();
        assert!(LlmBackend::new(&s).unwrap_err().contains("{query}"));
        let s = LlmSettings {
            url: "ftp://x".into(),
            ..Default::default()
        };
        assert!(LlmBackend::new(&s).unwrap_err().contains("http"));
        let s = LlmSettings {
            request_timeout_ms: 0,
            ..Default::default()
        };
        assert!(LlmBackend::new(&s).is_err());
    }
}
