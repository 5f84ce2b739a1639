//! The HTTP client every model-server backend uses (llama.cpp's server for
//! bitnet, KoboldCpp and OpenAI-compatible servers for llm): JSON requests
//! with a deadline, a bearer token, retries of a busy answer (503, 429)
//! honouring `Retry-After`, and errors that name the setting to look at.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::Secret;
use crate::worker::backend::BackendError;

/// First wait after a busy answer; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest a health check waits for the server.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a server's text an error message quotes.
const QUOTE_CHARS: usize = 120;

/// One answered HTTP request.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The whole body.
    pub body: Vec<u8>,
    retry_after: Option<Duration>,
}

impl Reply {
    /// The body as JSON, or `BadResponse` naming `what` and quoting the
    /// start of the body.
    pub fn json(&self, client: &HttpClient, what: &str) -> Result<Value, BackendError> {
        serde_json::from_slice(&self.body).map_err(|_| {
            BackendError::BadResponse(format!(
                "{what} is not JSON ({}): {}",
                self.content_type.as_deref().unwrap_or("no content type"),
                client.quote(&self.body)
            ))
        })
    }

    /// The server's own explanation of an error status, scrubbed of the
    /// secret: `error.message` (OpenAI, llama.cpp), `detail.msg`
    /// (KoboldCpp), `error` as a string, or the start of the body.
    pub fn message(&self, client: &HttpClient) -> String {
        let from_json = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.pointer("/detail/msg"))
                    .or_else(|| v.get("error").filter(|e| e.is_string()))
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        match from_json {
            Some(m) => client.quote(m.as_bytes()),
            None if self.body.is_empty() => "(empty body)".to_string(),
            None => client.quote(&self.body),
        }
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// The connection was refused or could not be made.
    Connect(String),
    /// No answer within the timeout.
    Timeout,
    /// Anything else on the way (reset, bad HTTP).
    Other(String),
}

/// A client for one server: base URL, timeout, optional bearer token.
pub(crate) struct HttpClient {
    client: reqwest::Client,
    setting: String,
    base: String,
    shown: String,
    request_timeout: Duration,
    bearer: Option<Secret>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("url", &self.shown)
            .field("request_timeout", &self.request_timeout)
            .field("bearer", &self.bearer.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The innermost cause of a transport error (`Connection refused (os
/// error 111)`), without the URL reqwest puts on the outside.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl HttpClient {
    /// A client for `url`; `setting` names the configuration section in
    /// messages (`workers.llm`).
    pub fn new(
        url: &str,
        request_timeout_ms: u64,
        bearer: Option<Secret>,
        setting: &str,
    ) -> Result<Self, String> {
        let shown = crate::config::redact_url(url.trim_end_matches('/'));
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("{setting}.url {shown:?} is not a URL: {e}"))?;
        match parsed.scheme() {
            "http" | "https" => {}
            other => {
                return Err(format!(
                    "{setting}.url {shown:?}: scheme {other:?} is not supported; use http:// or https://"
                ));
            }
        }
        if request_timeout_ms == 0 {
            return Err(format!(
                "{setting}.request_timeout_ms must be above 0 (milliseconds allowed for one request)"
            ));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("kitbash/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client for {shown}: {e}"))?;
        Ok(Self {
            client,
            setting: setting.to_string(),
            base: url.trim_end_matches('/').to_string(),
            shown,
            request_timeout: Duration::from_millis(request_timeout_ms),
            bearer: bearer.filter(|s| !s.expose().is_empty()),
        })
    }

    /// The base URL as messages show it (no credentials).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The configured timeout of one request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Replaces the secret in `text` by `***`.
    pub fn scrub(&self, text: &str) -> String {
        match &self.bearer {
            Some(secret) => text.replace(secret.expose(), "***"),
            None => text.to_string(),
        }
    }

    /// The element of an answer at `pointer` (shown as `shown`), or a
    /// `BadResponse` quoting the answer.
    pub fn element<'a>(
        &self,
        value: &'a Value,
        path: &str,
        pointer: &str,
        shown: &str,
    ) -> Result<&'a Value, BackendError> {
        value.pointer(pointer).ok_or_else(|| {
            BackendError::BadResponse(format!(
                "{path} answer has no {shown}: {}",
                self.quote(value.to_string().as_bytes())
            ))
        })
    }

    /// A short, printable, scrubbed quote of a server's text.
    pub fn quote(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = self.scrub(&text);
        let mut out: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(QUOTE_CHARS)
            .collect();
        if text.chars().count() > QUOTE_CHARS {
            out.push('…');
        }
        out
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let req = match &self.bearer {
            Some(secret) => req.bearer_auth(secret.expose()),
            None => req,
        };
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                Failure::Timeout
            } else if e.is_connect() {
                Failure::Connect(root_cause(&e))
            } else {
                Failure::Other(root_cause(&e))
            }
        };
        let resp = req.timeout(timeout).send().await.map_err(classify)?;
        let status = resp.status();
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let retry_after = header(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.map_err(classify)?.to_vec();
        Ok(Reply {
            status,
            content_type,
            body,
            retry_after,
        })
    }

    /// `GET path` once, within `timeout`.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Reply, Failure> {
        self.send(self.client.get(self.url(path)), timeout).await
    }

    /// `POST path` once with a JSON body, within `timeout`.
    pub async fn post_once(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        self.send(self.client.post(self.url(path)).json(body), timeout)
            .await
    }

    /// A `check()` reason for a request that got no answer.
    pub fn check_failure(&self, path: &str, f: &Failure, timeout: Duration) -> String {
        match f {
            Failure::Connect(cause) => {
                format!("server unreachable at {}: {cause}", self.shown)
            }
            Failure::Timeout => format!(
                "no answer from {}{path} within {} ms",
                self.shown,
                timeout.as_millis()
            ),
            Failure::Other(cause) => {
                format!("{}{path}: {}", self.shown, self.scrub(cause))
            }
        }
    }

    /// The timeout of one request started now: the configured one, or
    /// less when the deadline comes first (`true`: the deadline bounds
    /// it). `None` when the deadline has passed.
    pub fn timeout_before(&self, deadline: Instant) -> Option<(Duration, bool)> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            None
        } else if left < self.request_timeout {
            Some((left, true))
        } else {
            Some((self.request_timeout, false))
        }
    }

    /// The [`BackendError`] for a request that got no answer.
    pub fn answer_failure(&self, path: &str, f: Failure, deadline_bound: bool) -> BackendError {
        match f {
            Failure::Timeout if deadline_bound => BackendError::Deadline,
            Failure::Timeout => BackendError::Unreachable(format!(
                "no answer from {}{path} within {} ms (request_timeout_ms)",
                self.shown,
                self.request_timeout.as_millis()
            )),
            Failure::Connect(cause) => {
                BackendError::Unreachable(format!("cannot connect to {}: {cause}", self.shown))
            }
            Failure::Other(cause) => {
                BackendError::Unreachable(format!("{}{path}: {}", self.shown, self.scrub(&cause)))
            }
        }
    }

    /// `GET path` for a health check, within the request timeout and at
    /// most [`CHECK_TIMEOUT`]; a failure is the message the health record
    /// shows.
    pub async fn check_get(&self, path: &str) -> Result<Reply, String> {
        let timeout = self.request_timeout().min(CHECK_TIMEOUT);
        self.get(path, timeout)
            .await
            .map_err(|f| self.check_failure(path, &f, timeout))
    }

    /// [`Self::post_json`], then [`Self::success_json`]: the JSON body of a
    /// successful answer, or an error naming the path, status and `hint`.
    pub async fn post_for_json(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
        hint: &str,
    ) -> Result<Value, BackendError> {
        let reply = self.post_json(path, body, deadline).await?;
        self.success_json(path, reply, hint)
    }

    /// `POST path` with a JSON body before `deadline`. A busy server
    /// (503, 429) is asked again with exponential backoff from 50 ms
    /// while the deadline allows, then `Busy`. Any other status is
    /// returned for the caller to judge.
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Reply, BackendError> {
        let mut backoff = FIRST_BACKOFF;
        let mut busy: Option<(u32, String)> = None;
        loop {
            let Some((timeout, deadline_bound)) = self.timeout_before(deadline) else {
                return Err(match busy {
                    Some((n, why)) => self.busy(path, n, &why),
                    None => BackendError::Deadline,
                });
            };
            let reply = self
                .post_once(path, body, timeout)
                .await
                .map_err(|f| self.answer_failure(path, f, deadline_bound))?;
            if reply.status != StatusCode::SERVICE_UNAVAILABLE
                && reply.status != StatusCode::TOO_MANY_REQUESTS
            {
                return Ok(reply);
            }
            let why = format!("HTTP {}: {}", reply.status.as_u16(), reply.message(self));
            let attempts = busy.as_ref().map_or(1, |(n, _)| n + 1);
            let wait = reply
                .retry_after
                .map_or(backoff, |r| r.min(MAX_BACKOFF).max(backoff));
            if Instant::now() + wait >= deadline {
                return Err(self.busy(path, attempts, &why));
            }
            tracing::debug!(url = %self.shown, path, attempts, wait_ms = wait.as_millis() as u64, "server busy; asking again");
            busy = Some((attempts, why));
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn busy(&self, path: &str, attempts: u32, why: &str) -> BackendError {
        BackendError::Busy(format!(
            "{}{path} answered {why} ({attempts} attempts)",
            self.shown
        ))
    }

    /// The [`BackendError`] for an answer with an unexpected status.
    /// The JSON body of a successful reply; an error naming the path, the
    /// status and `hint` otherwise.
    pub fn success_json(
        &self,
        path: &str,
        reply: Reply,
        hint: &str,
    ) -> Result<Value, BackendError> {
        if !reply.status.is_success() {
            return Err(self.status_error(path, &reply, hint));
        }
        reply.json(self, path)
    }

    pub fn status_error(&self, path: &str, reply: &Reply, hint: &str) -> BackendError {
        let code = reply.status.as_u16();
        let hint = match code {
            401 | 403 => self.credentials_hint(),
            404 => hint.to_string(),
            _ => String::new(),
        };
        BackendError::Other(format!(
            "{}{path} answered HTTP {code}: {}{hint}",
            self.shown,
            reply.message(self)
        ))
    }

    /// What to check when the server refuses a request (401, 403).
    pub fn credentials_hint(&self) -> String {
        match &self.bearer {
            Some(_) => format!(
                " (the server refused the credentials: check {}.api_key)",
                self.setting
            ),
            None => " (the server wants credentials, and none are configured)".to_string(),
        }
    }
}
