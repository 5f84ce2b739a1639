//! The web dashboard, served by the daemon's HTTP endpoint: three static
//! files built into the binary (nothing is fetched from elsewhere) and the
//! JSON API behind them (`/api/*`, documented in docs/operations.md,
//! "Dashboard").
//!
//! Reading is always allowed (the endpoint listens on loopback unless told
//! otherwise). The actions that change state (requeue or delete a dead-list
//! record, forget a grain) are refused unless `http.dashboard.actions` is on,
//! and then need `Authorization: Bearer <http.dashboard.token>`.

mod api;
pub mod history;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::http::HttpState;
use history::CounterHistory;

/// What the dashboard's handlers share.
pub(crate) struct Dashboard {
    pub(crate) http: Arc<HttpState>,
    pub(crate) history: Arc<Mutex<CounterHistory>>,
    /// Fires at shutdown: ends the live feeds, which never end by themselves.
    pub(crate) stop: CancellationToken,
}

/// The dashboard's routes: the pages at `/` and `/dashboard`, their files
/// under `/dashboard/`, and the API under `/api/`.
pub(crate) fn routes(
    http: Arc<HttpState>,
    history: Arc<Mutex<CounterHistory>>,
    stop: CancellationToken,
) -> Router {
    let state = Arc::new(Dashboard {
        http,
        history,
        stop,
    });
    Router::new()
        .route("/", get(index))
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .route("/api/overview", get(api::overview))
        .route("/api/layers/history", get(api::layer_history))
        .route("/api/events", get(api::event_kinds))
        .route("/api/feed", get(api::feed))
        .route("/api/feed/stream", get(api::feed_stream))
        .route("/api/queries", get(api::queries))
        .route("/api/queries/{id}", get(api::query))
        .route("/api/dead", get(api::dead))
        .route("/api/dead/requeue", post(api::dead_requeue))
        .route("/api/dead/delete", post(api::dead_delete))
        .route("/api/grains", get(api::grains))
        .route("/api/grains/{id}", get(api::grain))
        .route("/api/grains/{id}/forget", post(api::grain_forget))
        .with_state(state)
}

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Scripts and styles from this origin only; no frames, no referrer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A static file with its type and the headers every page gets.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Built into this binary: a new version is a new process.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// A JSON error reply.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Why an action may not run, as the reply to send (403 while actions are
/// off, 401 without the right bearer token); `None` lets it through.
pub(crate) fn refusal(http: &HttpState, headers: &HeaderMap) -> Option<Response> {
    let settings = &http.dashboard;
    if !settings.actions {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the dashboard is read-only: actions are off (set http.dashboard.actions and http.dashboard.token)",
        ));
    }
    let Some(token) = settings.token.as_ref().map(|t| t.expose().trim()) else {
        // Validation refuses actions without a token; never let one through.
        return Some(error(StatusCode::FORBIDDEN, "no token is configured"));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if same_secret(given.as_bytes(), token.as_bytes()) => None,
        Some(_) => Some(error(StatusCode::UNAUTHORIZED, "wrong token")),
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "this action needs the header Authorization: Bearer <http.dashboard.token>",
        )),
    }
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same_secret(b"", b"x"));
    }
}
