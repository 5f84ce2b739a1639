//! The bitnet (llama.cpp) and llm (KoboldCpp, OpenAI-compatible) backends
//! against small HTTP servers inside the test that speak each server's
//! documented protocol, and one query through Redis, a real daemon and a
//! real llm worker.
//!
//! The canned bodies follow the documented responses: llama.cpp's
//! `tools/server/README.md` (`/health`, `/completion` with
//! `completion_probabilities`, both the current and the pre-December-2024
//! shape), KoboldCpp's `koboldcpp.py` (`/api/v1/generate`,
//! `/api/extra/last_logprobs`, `/api/extra/version`, `/api/v1/model`, its
//! 503 and 404 bodies, Python's `json.dumps` spacing) and the OpenAI API
//! reference (chat completion with and without `logprobs`, `/v1/models`,
//! error objects).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use kitbash::config::{BitnetSettings, LlmProtocol as Protocol, LlmSettings, Secret, WorkerKind};
use kitbash::daemon::Daemon;
use kitbash::worker::bitnet::BitnetBackend;
use kitbash::worker::llm::LlmBackend;
use kitbash::worker::logprobs::TokenLogprobs;
use kitbash::worker::{Backend, BackendError, Worker, WorkerOptions};
use kitbash::{QueryState, QueryStatus};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::{PATIENCE, TestContext};

// ---------------------------------------------------------------------------
// A scripted HTTP server.

/// One canned answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    content_type: &'static str,
    body: String,
    delay: Duration,
}

fn json_reply(status: u16, body: &str) -> Canned {
    Canned {
        status,
        content_type: "application/json",
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

fn html_reply(status: u16, body: &str) -> Canned {
    Canned {
        status,
        content_type: "text/html",
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Script {
    /// Per `METHOD /path`: answers in order; the last one repeats.
    routes: HashMap<String, VecDeque<Canned>>,
    seen: Vec<Seen>,
}

/// An HTTP server on 127.0.0.1 answering from a script.
struct Mock {
    url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_script(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = format!("{method} {}", uri.path());
    let canned = {
        let mut s = script.lock().unwrap();
        s.seen.push(Seen {
            method: method.to_string(),
            path: uri.path().to_string(),
            authorization: headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_string()),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        match s.routes.get_mut(&key) {
            Some(q) if q.len() > 1 => q.pop_front(),
            Some(q) => q.front().cloned(),
            None => None,
        }
    };
    // Python's http.server answers an unknown path with a 404 page.
    let canned = canned.unwrap_or_else(|| {
        html_reply(
            404,
            &format!(
                "Error: KoboldCpp HTTP Server is running, but this endpoint does not exist. Please check the URL and METHOD.<br><a href=\"/api\">[Read API documentation here]</a><br><br>Current path: {}",
                uri.path()
            ),
        )
    });
    if !canned.delay.is_zero() {
        tokio::time::sleep(canned.delay).await;
    }
    Response::builder()
        .status(StatusCode::from_u16(canned.status).unwrap())
        .header(header::CONTENT_TYPE, canned.content_type)
        .body(Body::from(canned.body))
        .unwrap()
}

impl Mock {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    /// Starts on `port` (reserved earlier with [`free_port`]).
    async fn start_on(port: u16) -> Self {
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < deadline {
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return Self::serve(l);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot bind 127.0.0.1:{port} again");
    }

    fn serve(listener: tokio::net::TcpListener) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new()
            .fallback(serve_script)
            .with_state(script.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, script, task }
    }

    /// Scripts `METHOD path`: the answers in order, the last repeating.
    fn on(&self, method: &str, path: &str, answers: Vec<Canned>) {
        self.script
            .lock()
            .unwrap()
            .routes
            .insert(format!("{method} {path}"), answers.into());
    }

    /// The requests received on `path`.
    fn seen(&self, path: &str) -> Vec<Seen> {
        let s = self.script.lock().unwrap();
        s.seen.iter().filter(|r| r.path == path).cloned().collect()
    }
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn in_ms(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// ---------------------------------------------------------------------------
// Canned bodies.

/// llama.cpp `/completion`, current shape (README: `completion_probabilities`
/// items with `id`, `token`, `bytes`, `logprob`, `top_logprobs`).
const LLAMA_CURRENT: &str = r#"{"index":0,"content":" Paris.","tokens":[],"id_slot":0,"stop":true,"model":"ggml-model-i2_s.gguf","tokens_predicted":3,"tokens_evaluated":18,"generation_settings":{"n_predict":64,"seed":4294967295,"temperature":-1.0,"dynatemp_range":0.0,"dynatemp_exponent":1.0,"top_k":40,"top_p":0.949999988079071,"min_p":0.05000000074505806,"n_probs":2,"min_keep":0,"stream":false,"samplers":["penalties","dry","top_k","typ_p","top_p","min_p","xtc","temperature"],"post_sampling_probs":false,"lora":[]},"prompt":"<|begin_of_text|>Answer in one short sentence.\nQuestion: What is the capital of France?\nAnswer:","has_new_line":false,"truncated":false,"stop_type":"eos","stopping_word":"","tokens_cached":20,"timings":{"prompt_n":18,"prompt_ms":52.113,"prompt_per_token_ms":2.895,"prompt_per_second":345.4,"predicted_n":3,"predicted_ms":61.9,"predicted_per_token_ms":20.63,"predicted_per_second":48.46},"completion_probabilities":[{"id":12366,"token":" Paris","bytes":[32,80,97,114,105,115],"logprob":-0.030459178611636162,"top_logprobs":[{"id":12366,"token":" Paris","bytes":[32,80,97,114,105,115],"logprob":-0.030459178611636162},{"id":578,"token":" The","bytes":[32,84,104,101],"logprob":-3.7206790447235107}]},{"id":13,"token":".","bytes":[46],"logprob":-0.10536054521799088,"top_logprobs":[{"id":13,"token":".","bytes":[46],"logprob":-0.10536054521799088},{"id":198,"token":"\n","bytes":[10],"logprob":-2.4079456329345703}]},{"id":128009,"token":"","bytes":[],"logprob":-0.0020020026620477438,"top_logprobs":[{"id":128009,"token":"","bytes":[],"logprob":-0.0020020026620477438},{"id":198,"token":"\n","bytes":[10],"logprob":-6.907755374908447}]}]}"#;

/// llama.cpp `/completion` before the December 2024 rewrite (the server
/// bitnet.cpp ships): items `{"content", "probs": [{"tok_str", "prob"}]}`.
const LLAMA_OLDER: &str = r#"{"content":" Paris.","id_slot":0,"stop":true,"model":"models/BitNet-b1.58-2B-4T/ggml-model-i2_s.gguf","tokens_predicted":3,"tokens_evaluated":18,"generation_settings":{"n_ctx":2048,"n_predict":-1,"model":"models/BitNet-b1.58-2B-4T/ggml-model-i2_s.gguf","seed":4294967295,"temperature":-1.0,"dynatemp_range":0.0,"dynatemp_exponent":1.0,"top_k":40,"top_p":0.949999988079071,"min_p":0.05000000074505806,"tfs_z":1.0,"typical_p":1.0,"repeat_last_n":64,"repeat_penalty":1.0,"presence_penalty":0.0,"frequency_penalty":0.0,"mirostat":0,"mirostat_tau":5.0,"mirostat_eta":0.10000000149011612,"penalize_nl":false,"stop":[],"max_tokens":64,"n_keep":0,"n_discard":0,"ignore_eos":false,"stream":false,"n_probs":2,"min_keep":0,"grammar":"","samplers":["top_k","tfs_z","typical_p","top_p","min_p","temperature"]},"prompt":"Answer in one short sentence.\nQuestion: What is the capital of France?\nAnswer:","truncated":false,"stopped_eos":true,"stopped_word":false,"stopped_limit":false,"stopping_word":"","tokens_cached":20,"timings":{"prompt_n":18,"prompt_ms":50.2,"prompt_per_token_ms":2.79,"prompt_per_second":358.6,"predicted_n":3,"predicted_ms":60.4,"predicted_per_token_ms":20.13,"predicted_per_second":49.67},"index":0,"completion_probabilities":[{"content":" Paris","probs":[{"tok_str":" Paris","prob":0.9700000286102295},{"tok_str":" The","prob":0.024000000208616257}]},{"content":".","probs":[{"tok_str":".","prob":0.8999999761581421},{"tok_str":"\n","prob":0.09000000357627869}]},{"content":"","probs":[{"tok_str":"","prob":0.9980000257492065},{"tok_str":"\n","prob":0.0010000000474974513}]}]}"#;

const LLAMA_HEALTH_OK: &str = r#"{"status":"ok"}"#;
const LLAMA_LOADING: &str =
    r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;

/// KoboldCpp `/api/v1/generate` with `"logprobs": true` (its kcpp format:
/// `results[0].logprobs` is the OpenAI-like dict of `parse_last_logprobs`).
const KOBOLD_WITH_LOGPROBS: &str = r#"{"results": [{"text": " Paris.", "tool_calls": [], "finish_reason": "stop", "logprobs": {"content": [{"token": " Paris", "logprob": -0.05129329487681389, "bytes": [32, 80, 97, 114, 105, 115], "top_logprobs": [{"logprob": -0.05129329487681389, "token": " Paris", "bytes": [32, 80, 97, 114, 105, 115]}, {"logprob": -3.2188758850097656, "token": " The", "bytes": [32, 84, 104, 101]}]}, {"token": ".", "logprob": -0.2231435477733612, "bytes": [46], "top_logprobs": [{"logprob": -0.2231435477733612, "token": ".", "bytes": [46]}, {"logprob": -1.6094379425048828, "token": ",", "bytes": [44]}]}], "tokens": [" Paris", "."], "token_logprobs": [-0.05129329487681389, -0.2231435477733612], "top_logprobs": [{" Paris": -0.05129329487681389, " The": -3.2188758850097656}, {".": -0.2231435477733612, ",": -1.6094379425048828}], "text_offset": [0, 6]}, "prompt_tokens": 18, "completion_tokens": 2}]}"#;

/// The same generation from a KoboldCpp whose answer carries no logprobs.
const KOBOLD_PLAIN: &str = r#"{"results": [{"text": " Paris.", "finish_reason": "stop"}]}"#;

/// `/api/extra/last_logprobs` for our genkey.
const KOBOLD_LAST_LOGPROBS: &str = r#"{"logprobs": {"content": [{"token": " Paris", "logprob": -0.05129329487681389, "bytes": [32, 80, 97, 114, 105, 115], "top_logprobs": [{"logprob": -0.05129329487681389, "token": " Paris", "bytes": [32, 80, 97, 114, 105, 115]}, {"logprob": -3.2188758850097656, "token": " The", "bytes": [32, 84, 104, 101]}]}, {"token": ".", "logprob": -0.2231435477733612, "bytes": [46], "top_logprobs": [{"logprob": -0.2231435477733612, "token": ".", "bytes": [46]}, {"logprob": -1.6094379425048828, "token": ",", "bytes": [44]}]}], "tokens": [" Paris", "."], "token_logprobs": [-0.05129329487681389, -0.2231435477733612], "top_logprobs": [{" Paris": -0.05129329487681389, " The": -3.2188758850097656}, {".": -0.2231435477733612, ",": -1.6094379425048828}], "text_offset": [0, 6]}}"#;

/// KoboldCpp greedy (temperature 0): one candidate at probability 1.
const KOBOLD_GREEDY: &str = r#"{"results": [{"text": " Paris.", "tool_calls": [], "finish_reason": "stop", "logprobs": {"content": [{"token": " Paris", "logprob": 0.0, "bytes": [32, 80, 97, 114, 105, 115], "top_logprobs": [{"logprob": 0.0, "token": " Paris", "bytes": [32, 80, 97, 114, 105, 115]}]}, {"token": ".", "logprob": 0.0, "bytes": [46], "top_logprobs": [{"logprob": 0.0, "token": ".", "bytes": [46]}]}], "tokens": [" Paris", "."], "token_logprobs": [0.0, 0.0], "top_logprobs": [{" Paris": 0.0}, {".": 0.0}], "text_offset": [0, 6]}, "prompt_tokens": 18, "completion_tokens": 2}]}"#;

const KOBOLD_BUSY: &str = r#"{"detail": {"msg": "Server is busy; please try again later.", "type": "service_unavailable"}}"#;
const KOBOLD_MODEL: &str = r#"{"result": "koboldcpp/Meta-Llama-3.1-8B-Instruct-Q4_K_M"}"#;

fn kobold_version(v: &str) -> String {
    format!(
        r#"{{"result": "KoboldCpp", "version": "{v}", "protected": false, "txt2img": false, "vision": false, "transcribe": false, "multiplayer": false, "websearch": false, "tts": false}}"#
    )
}

/// OpenAI API reference: chat completion with `logprobs` (abridged to the
/// first three tokens).
const OPENAI_WITH_LOGPROBS: &str = r#"{
  "id": "chatcmpl-123",
  "object": "chat.completion",
  "created": 1702685778,
  "model": "gpt-4o-mini",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How"
      },
      "logprobs": {
        "content": [
          {
            "token": "Hello",
            "logprob": -0.31725305,
            "bytes": [72, 101, 108, 108, 111],
            "top_logprobs": [
              {
                "token": "Hello",
                "logprob": -0.31725305,
                "bytes": [72, 101, 108, 108, 111]
              },
              {
                "token": "Hi",
                "logprob": -1.3190403,
                "bytes": [72, 105]
              }
            ]
          },
          {
            "token": "!",
            "logprob": -0.02380986,
            "bytes": [
              33
            ],
            "top_logprobs": [
              {
                "token": "!",
                "logprob": -0.02380986,
                "bytes": [33]
              },
              {
                "token": " there",
                "logprob": -3.787621,
                "bytes": [32, 116, 104, 101, 114, 101]
              }
            ]
          },
          {
            "token": " How",
            "logprob": -0.000054669687,
            "bytes": [32, 72, 111, 119],
            "top_logprobs": [
              {
                "token": " How",
                "logprob": -0.000054669687,
                "bytes": [32, 72, 111, 119]
              },
              {
                "token": "<|end|>",
                "logprob": -10.953937,
                "bytes": null
              }
            ]
          }
        ]
      },
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 9,
    "completion_tokens": 3,
    "total_tokens": 12,
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "system_fingerprint": null
}"#;

/// OpenAI API reference: chat completion without `logprobs`.
const OPENAI_PLAIN: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default"
}"#;

const OPENAI_MODELS: &str = r#"{
  "object": "list",
  "data": [
    {
      "id": "model-id-0",
      "object": "model",
      "created": 1686935002,
      "owned_by": "organization-owner"
    },
    {
      "id": "model-id-1",
      "object": "model",
      "created": 1686935002,
      "owned_by": "organization-owner"
    }
  ]
}"#;

const OPENAI_LOGPROBS_REJECTED: &str = r#"{
  "error": {
    "message": "This model does not support the 'logprobs' parameter.",
    "type": "invalid_request_error",
    "param": "logprobs",
    "code": "unsupported_parameter"
  }
}"#;

const OPENAI_RATE_LIMITED: &str = r#"{
  "error": {
    "message": "Rate limit reached for requests",
    "type": "requests",
    "param": null,
    "code": "rate_limit_exceeded"
  }
}"#;

const API_KEY: &str = "sk-test-0123456789abcdefSECRET";

fn bitnet_settings(url: &str) -> BitnetSettings {
    BitnetSettings {
        url: url.to_string(),
        prompt_template: "Answer in one short sentence.\nQuestion: {query}\nAnswer:".into(),
        n_predict: 64,
        n_probs: 2,
        concurrency: 1,
        request_timeout_ms: 10_000,
    }
}

fn llm_settings(url: &str, backend: Protocol) -> LlmSettings {
    LlmSettings {
        backend,
        url: url.to_string(),
        api_key: match backend {
            Protocol::Openai => Some(Secret::new(API_KEY)),
            Protocol::Kobold => None,
        },
        model: match backend {
            Protocol::Openai => Some("gpt-4o-mini".into()),
            Protocol::Kobold => None,
        },
        prompt_template: "Question: {query}\nAnswer:".into(),
        max_tokens: 32,
        fixed_confidence: 0.6,
        concurrency: 1,
        request_timeout_ms: 10_000,
    }
}

/// The confidence the logprobs module gives a canned token list.
fn expected_confidence(entries: &Value) -> f64 {
    TokenLogprobs::from_openai_content(entries.as_array().unwrap())
        .unwrap()
        .confidence()
        .unwrap()
}

// ---------------------------------------------------------------------------
// bitnet: llama.cpp

#[tokio::test]
async fn bitnet_reads_the_current_llama_cpp_probabilities() {
    let server = Mock::start().await;
    server.on("POST", "/completion", vec![json_reply(200, LLAMA_CURRENT)]);
    let backend = BitnetBackend::new(&bitnet_settings(&server.url)).unwrap();

    let a = backend
        .answer("What is the capital of France?", in_ms(10_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.text, "Paris.");
    assert_eq!(a.source.as_deref(), Some("ggml-model-i2_s.gguf"));
    let body: Value = serde_json::from_str(LLAMA_CURRENT).unwrap();
    let expected = expected_confidence(&body["completion_probabilities"]);
    assert!(
        close(a.confidence, expected),
        "{} vs {expected}",
        a.confidence
    );
    assert!(
        a.confidence > 0.5 && a.confidence < 0.95,
        "{}",
        a.confidence
    );

    let seen = server.seen("/completion");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    let req = &seen[0].body;
    assert_eq!(
        req["prompt"],
        "Answer in one short sentence.\nQuestion: What is the capital of France?\nAnswer:"
    );
    assert_eq!(req["n_predict"], 64);
    assert_eq!(req["n_probs"], 2);
    // Greedy, with the probabilities computed from the logits (README).
    assert_eq!(req["temperature"], -1);
    assert_eq!(req["stream"], false);
    assert_eq!(req["cache_prompt"], true);
    // Answers end with their first line.
    assert_eq!(req["stop"], json!(["\n"]));
    assert_eq!(seen[0].authorization, None);
}

#[tokio::test]
async fn bitnet_reads_the_older_llama_cpp_probabilities() {
    let server = Mock::start().await;
    server.on("POST", "/completion", vec![json_reply(200, LLAMA_OLDER)]);
    let backend = BitnetBackend::new(&bitnet_settings(&server.url)).unwrap();

    let a = backend
        .answer("What is the capital of France?", in_ms(10_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.text, "Paris.");
    assert_eq!(a.source.as_deref(), Some("ggml-model-i2_s.gguf"));
    // The chosen token's probability is the `probs` entry matching `content`.
    let lp = |p: f64| (p as f32 as f64).ln();
    let chosen = [lp(0.97), lp(0.9), lp(0.998)];
    let margins = [
        0.97f32 as f64 - 0.024f32 as f64,
        0.9f32 as f64 - 0.09f32 as f64,
        0.998f32 as f64 - 0.001f32 as f64,
    ];
    let expected = kitbash::worker::logprobs::confidence(&chosen, Some(&margins)).unwrap();
    assert!(
        (a.confidence - expected).abs() < 1e-6,
        "{} vs {expected}",
        a.confidence
    );
}

#[tokio::test]
async fn bitnet_empty_content_is_no_answer_and_missing_probabilities_are_an_error() {
    let server = Mock::start().await;
    let backend = BitnetBackend::new(&bitnet_settings(&server.url)).unwrap();

    server.on(
        "POST",
        "/completion",
        vec![json_reply(
            200,
            r#"{"index":0,"content":"  \n","tokens":[],"id_slot":0,"stop":true,"model":"m.gguf","tokens_predicted":1,"tokens_evaluated":18,"stop_type":"eos","stopping_word":"","completion_probabilities":[{"id":2,"token":"","bytes":[],"logprob":-0.01,"top_logprobs":[]}]}"#,
        )],
    );
    assert_eq!(backend.answer("q", in_ms(10_000)).await, Ok(None));

    server.on(
        "POST",
        "/completion",
        vec![json_reply(
            200,
            r#"{"index":0,"content":" Paris.","tokens":[],"id_slot":0,"stop":true,"model":"m.gguf"}"#,
        )],
    );
    let err = backend.answer("q", in_ms(10_000)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::BadResponse(m) if m.contains("completion_probabilities")),
        "{err:?}"
    );
}

#[tokio::test]
async fn bitnet_health_follows_the_server_and_the_worker_flips_healthy() {
    let mut ctx = TestContext::new();
    ctx.settings.workers.heartbeat_interval_ms = 200;
    ctx.settings.workers.health_ttl_s = 10;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let backend = BitnetBackend::new(&bitnet_settings(&url)).unwrap();

    // Nothing listens yet.
    let down = backend.check().await.unwrap_err();
    assert!(down.contains("server unreachable at"), "{down}");
    assert!(down.contains(&url), "{down}");

    // A real worker reports that in Redis.
    let name = format!(
        "bitnet-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let worker = Worker::new(
        ctx.settings.clone(),
        backend,
        WorkerOptions {
            kind: WorkerKind::Bitnet,
            name: Some(name.clone()),
            layer: Some("layer1".into()),
            concurrency: 1,
        },
    )
    .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let bb = ctx.blackboard().await;
    let health_is = |want: bool, reason: &'static str| {
        let bb = bb.clone();
        let name = name.clone();
        async move {
            let deadline = std::time::Instant::now() + PATIENCE;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(h)) = bb.get_health(&name).await
                    && h.healthy == want
                    && (want || h.reason.as_deref().unwrap_or("").contains(reason))
                {
                    return h;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("worker {name} never reported healthy={want} ({reason})");
        }
    };
    health_is(false, "server unreachable").await;

    // The server comes up, still loading its model.
    let server = Mock::start_on(port).await;
    server.on("GET", "/health", vec![json_reply(503, LLAMA_LOADING)]);
    assert_eq!(backend_check(&url).await, Err("model loading".to_string()));
    health_is(false, "model loading").await;

    // Loaded.
    server.on("GET", "/health", vec![json_reply(200, LLAMA_HEALTH_OK)]);
    assert_eq!(backend_check(&url).await, Ok(()));
    let h = health_is(true, "").await;
    assert_eq!(h.layer.as_deref(), Some("layer1"));
    assert_eq!(h.kind.as_deref(), Some("bitnet"));

    stop.cancel();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
}

async fn backend_check(url: &str) -> Result<(), String> {
    BitnetBackend::new(&bitnet_settings(url))
        .unwrap()
        .check()
        .await
}

#[tokio::test]
async fn bitnet_html_and_broken_json_are_bad_responses() {
    let server = Mock::start().await;
    let backend = BitnetBackend::new(&bitnet_settings(&server.url)).unwrap();
    for reply in [
        html_reply(200, "<html><body><h1>Welcome to nginx!</h1></body></html>"),
        json_reply(
            200,
            r#"{"content": " Paris.", "completion_probabilities": [{"id": 1"#,
        ),
        json_reply(200, r#"["content"]"#),
        json_reply(200, r#"{"content": 42}"#),
        json_reply(
            200,
            r#"{"content": " Paris.", "completion_probabilities": [{"id": 1, "token": " Paris"}]}"#,
        ),
    ] {
        server.on("POST", "/completion", vec![reply]);
        let err = backend.answer("q", in_ms(10_000)).await.unwrap_err();
        assert!(matches!(err, BackendError::BadResponse(_)), "{err:?}");
    }
    // Old llama.cpp at temperature 0 reports 1.0/0.0: refused, not "certain".
    server.on(
        "POST",
        "/completion",
        vec![json_reply(
            200,
            r#"{"content":" Paris.","completion_probabilities":[{"content":" Paris","probs":[{"tok_str":" Paris","prob":1.0},{"tok_str":" The","prob":0.0}]}]}"#,
        )],
    );
    let err = backend.answer("q", in_ms(10_000)).await.unwrap_err();
    assert!(matches!(err, BackendError::BadResponse(_)), "{err:?}");
}

// ---------------------------------------------------------------------------
// llm: KoboldCpp

#[tokio::test]
async fn kobold_logprobs_in_the_answer_give_the_confidence() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/api/v1/generate",
        vec![json_reply(200, KOBOLD_WITH_LOGPROBS)],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();

    let a = backend
        .answer("What is the capital of France?", in_ms(10_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.text, "Paris.");
    let body: Value = serde_json::from_str(KOBOLD_WITH_LOGPROBS).unwrap();
    let expected = expected_confidence(&body["results"][0]["logprobs"]["content"]);
    assert!(
        close(a.confidence, expected),
        "{} vs {expected}",
        a.confidence
    );
    assert!(!close(a.confidence, 0.6));

    let seen = server.seen("/api/v1/generate");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    let req = &seen[0].body;
    assert_eq!(
        req["prompt"],
        "Question: What is the capital of France?\nAnswer:"
    );
    assert_eq!(req["max_length"], 32);
    assert_eq!(req["temperature"], 0);
    assert_eq!(req["logprobs"], true);
    assert_eq!(req["stop_sequence"], json!(["\n"]));
    assert!(req["genkey"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(seen[0].authorization, None);
    assert!(server.seen("/api/extra/last_logprobs").is_empty());
}

#[tokio::test]
async fn kobold_password_goes_as_a_bearer_token() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/api/v1/generate",
        vec![json_reply(200, KOBOLD_PLAIN)],
    );
    server.on(
        "POST",
        "/api/extra/last_logprobs",
        vec![json_reply(200, r#"{"logprobs": null}"#)],
    );
    let mut s = llm_settings(&server.url, Protocol::Kobold);
    s.api_key = Some(Secret::new("kobold-password"));
    let backend = LlmBackend::new(&s).unwrap();
    backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    for r in server
        .seen("/api/v1/generate")
        .iter()
        .chain(&server.seen("/api/extra/last_logprobs"))
    {
        assert_eq!(r.authorization.as_deref(), Some("Bearer kobold-password"));
    }
    assert!(!format!("{backend:?}").contains("kobold-password"));
}

#[tokio::test]
async fn kobold_last_logprobs_endpoint_gives_the_confidence_for_our_genkey() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/api/v1/generate",
        vec![json_reply(200, KOBOLD_PLAIN)],
    );
    server.on(
        "POST",
        "/api/extra/last_logprobs",
        vec![json_reply(200, KOBOLD_LAST_LOGPROBS)],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();

    let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    let body: Value = serde_json::from_str(KOBOLD_LAST_LOGPROBS).unwrap();
    let expected = expected_confidence(&body["logprobs"]["content"]);
    assert!(
        close(a.confidence, expected),
        "{} vs {expected}",
        a.confidence
    );

    let generate = server.seen("/api/v1/generate");
    let last = server.seen("/api/extra/last_logprobs");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].method, "POST");
    assert_eq!(last[0].body["genkey"], generate[0].body["genkey"]);

    // Another generation ran in between: `{"logprobs": null}`.
    server.on(
        "POST",
        "/api/extra/last_logprobs",
        vec![json_reply(200, r#"{"logprobs": null}"#)],
    );
    let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    assert!(close(a.confidence, 0.6));
}

#[tokio::test]
async fn kobold_without_logprobs_uses_the_fixed_confidence_and_stops_asking() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/api/v1/generate",
        vec![json_reply(200, KOBOLD_PLAIN)],
    );
    // No /api/extra/last_logprobs: the server's 404 page.
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();

    for _ in 0..3 {
        let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
        assert_eq!(a.text, "Paris.");
        assert!(close(a.confidence, 0.6), "{}", a.confidence);
    }
    // Learned from the first 404.
    assert_eq!(server.seen("/api/extra/last_logprobs").len(), 1);
    assert_eq!(server.seen("/api/v1/generate").len(), 3);
}

#[tokio::test]
async fn kobold_too_old_for_logprobs_is_never_asked_for_them() {
    let server = Mock::start().await;
    server.on("GET", "/api/v1/model", vec![json_reply(200, KOBOLD_MODEL)]);
    server.on(
        "GET",
        "/api/extra/version",
        vec![json_reply(200, &kobold_version("1.60.1"))],
    );
    server.on(
        "POST",
        "/api/v1/generate",
        vec![json_reply(200, KOBOLD_PLAIN)],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();

    backend.check().await.unwrap();
    let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    assert!(close(a.confidence, 0.6));
    assert_eq!(
        a.source.as_deref(),
        Some("koboldcpp/Meta-Llama-3.1-8B-Instruct-Q4_K_M")
    );
    assert!(server.seen("/api/extra/last_logprobs").is_empty());
    assert_eq!(server.seen("/api/extra/version").len(), 1);
    // The version is read once, not at every health check.
    backend.check().await.unwrap();
    assert_eq!(server.seen("/api/extra/version").len(), 1);
}

#[tokio::test]
async fn kobold_greedy_probabilities_fall_back_to_the_fixed_confidence() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/api/v1/generate",
        vec![json_reply(200, KOBOLD_GREEDY)],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();
    let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    assert!(close(a.confidence, 0.6), "{}", a.confidence);
}

#[tokio::test]
async fn kobold_health_is_the_model_endpoint() {
    let server = Mock::start().await;
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();
    // Not there (404 page): unhealthy.
    let err = backend.check().await.unwrap_err();
    assert!(err.contains("404"), "{err}");
    server.on("GET", "/api/v1/model", vec![json_reply(200, KOBOLD_MODEL)]);
    server.on(
        "GET",
        "/api/extra/version",
        vec![json_reply(200, &kobold_version("1.102"))],
    );
    backend.check().await.unwrap();
    drop(server);
    // Gone: refused.
    let backend = LlmBackend::new(&llm_settings(
        &format!("http://127.0.0.1:{}", free_port()),
        Protocol::Kobold,
    ))
    .unwrap();
    let err = backend.check().await.unwrap_err();
    assert!(err.contains("server unreachable at"), "{err}");
}

// ---------------------------------------------------------------------------
// Both: busy, deadlines, unreachable, bad shapes

#[tokio::test]
async fn a_busy_server_is_asked_again_and_answers() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/api/v1/generate",
        vec![
            json_reply(503, KOBOLD_BUSY),
            json_reply(503, KOBOLD_BUSY),
            json_reply(200, KOBOLD_WITH_LOGPROBS),
        ],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();
    let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    assert_eq!(a.text, "Paris.");
    assert_eq!(server.seen("/api/v1/generate").len(), 3);

    // 429 from an OpenAI-compatible server is busy too.
    let server = Mock::start().await;
    server.on(
        "POST",
        "/v1/chat/completions",
        vec![
            json_reply(429, OPENAI_RATE_LIMITED),
            json_reply(200, OPENAI_WITH_LOGPROBS),
        ],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Openai)).unwrap();
    let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    assert_eq!(a.text, "Hello! How");
    assert_eq!(server.seen("/v1/chat/completions").len(), 2);
}

#[tokio::test]
async fn busy_until_the_deadline_is_busy() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/api/v1/generate",
        vec![json_reply(503, KOBOLD_BUSY)],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();
    // A deadline no request to the local server can miss, even on a loaded
    // machine (a request cut short by it would be Deadline, not Busy).
    let deadline = in_ms(2_000);
    let err = backend.answer("q", deadline).await.unwrap_err();
    match &err {
        BackendError::Busy(m) => {
            assert!(m.contains("503") && m.contains("Server is busy"), "{m}")
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // Backoff from 50 ms, doubling: at most 6 attempts in 2 s, not a hot
    // loop.
    let attempts = server.seen("/api/v1/generate").len();
    assert!((1..=6).contains(&attempts), "{attempts} attempts");

    // The bitnet backend shares the behaviour.
    server.on("POST", "/completion", vec![json_reply(503, LLAMA_LOADING)]);
    let backend = BitnetBackend::new(&bitnet_settings(&server.url)).unwrap();
    let err = backend.answer("q", in_ms(2_000)).await.unwrap_err();
    assert!(matches!(err, BackendError::Busy(_)), "{err:?}");
}

#[tokio::test]
async fn a_server_slower_than_the_deadline_meets_the_deadline() {
    let server = Mock::start().await;
    let mut slow = json_reply(200, KOBOLD_WITH_LOGPROBS);
    slow.delay = Duration::from_secs(30);
    server.on("POST", "/api/v1/generate", vec![slow.clone()]);
    server.on("POST", "/completion", vec![slow]);

    // The job's deadline comes first: Deadline (the runtime drops the job).
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();
    assert_eq!(
        backend.answer("q", in_ms(300)).await,
        Err(BackendError::Deadline)
    );
    let backend = BitnetBackend::new(&bitnet_settings(&server.url)).unwrap();
    assert_eq!(
        backend.answer("q", in_ms(300)).await,
        Err(BackendError::Deadline)
    );

    // request_timeout_ms comes first: the server did not answer.
    let mut s = llm_settings(&server.url, Protocol::Kobold);
    s.request_timeout_ms = 200;
    let backend = LlmBackend::new(&s).unwrap();
    let err = backend.answer("q", in_ms(20_000)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unreachable(m) if m.contains("within 200 ms")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_unreachable() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let backend = LlmBackend::new(&llm_settings(&url, Protocol::Kobold)).unwrap();
    let err = backend.answer("q", in_ms(5_000)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unreachable(m) if m.contains(&url)),
        "{err:?}"
    );
    let backend = BitnetBackend::new(&bitnet_settings(&url)).unwrap();
    let err = backend.answer("q", in_ms(5_000)).await.unwrap_err();
    assert!(matches!(err, BackendError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn answers_that_are_not_the_documented_shape_are_bad_responses() {
    let server = Mock::start().await;
    let kobold = LlmBackend::new(&llm_settings(&server.url, Protocol::Kobold)).unwrap();
    for reply in [
        html_reply(
            200,
            "<!DOCTYPE html><html><body>KoboldAI Lite</body></html>",
        ),
        json_reply(200, r#"{"results": []}"#),
        json_reply(200, r#"{"results": [{"txt": "Paris"}]}"#),
        json_reply(200, r#"{"results": [{"text": " Paris."#),
        json_reply(200, r#""Paris""#),
    ] {
        server.on("POST", "/api/v1/generate", vec![reply]);
        let err = kobold.answer("q", in_ms(10_000)).await.unwrap_err();
        assert!(matches!(err, BackendError::BadResponse(_)), "{err:?}");
    }

    let openai = LlmBackend::new(&llm_settings(&server.url, Protocol::Openai)).unwrap();
    for reply in [
        html_reply(200, "<html><body>502 Bad Gateway</body></html>"),
        json_reply(
            200,
            r#"{"id": "chatcmpl-1", "object": "chat.completion", "choices": []}"#,
        ),
        json_reply(
            200,
            r#"{"choices": [{"index": 0, "message": {"role": "assistant"}}]}"#,
        ),
        json_reply(
            200,
            r#"{"choices": [{"index": 0, "message": {"content": ["Paris"]}}]}"#,
        ),
        json_reply(200, ""),
    ] {
        server.on("POST", "/v1/chat/completions", vec![reply]);
        let err = openai.answer("q", in_ms(10_000)).await.unwrap_err();
        assert!(matches!(err, BackendError::BadResponse(_)), "{err:?}");
    }
    // Wrong protocol (404 page): an error naming the setting to check.
    server.on("POST", "/v1/chat/completions", vec![]);
    let err = openai.answer("q", in_ms(10_000)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Other(m) if m.contains("404") && m.contains("workers.llm.backend")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------
// llm: OpenAI-compatible

#[tokio::test]
async fn openai_logprobs_give_the_confidence() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/v1/chat/completions",
        vec![json_reply(200, OPENAI_WITH_LOGPROBS)],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Openai)).unwrap();
    let a = backend
        .answer("What is the capital of France?", in_ms(10_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.text, "Hello! How");
    assert_eq!(a.source.as_deref(), Some("gpt-4o-mini"));
    let body: Value = serde_json::from_str(OPENAI_WITH_LOGPROBS).unwrap();
    let expected = expected_confidence(&body["choices"][0]["logprobs"]["content"]);
    assert!(
        close(a.confidence, expected),
        "{} vs {expected}",
        a.confidence
    );

    let seen = server.seen("/v1/chat/completions");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let req = &seen[0].body;
    assert_eq!(req["model"], "gpt-4o-mini");
    assert_eq!(
        req["messages"],
        json!([{"role": "user", "content": "Question: What is the capital of France?\nAnswer:"}])
    );
    assert_eq!(req["max_tokens"], 32);
    assert_eq!(req["temperature"], 0);
    assert_eq!(req["logprobs"], true);
    assert_eq!(req["top_logprobs"], 2);
    assert_eq!(req["stop"], json!(["\n"]));
}

#[tokio::test]
async fn openai_without_logprobs_uses_the_fixed_confidence() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/v1/chat/completions",
        vec![json_reply(200, OPENAI_PLAIN)],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Openai)).unwrap();
    let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    assert_eq!(a.text, "Hello! How can I assist you today?");
    assert!(close(a.confidence, 0.6));
    assert_eq!(a.source.as_deref(), Some("gpt-4.1-2025-04-14"));
}

#[tokio::test]
async fn openai_rejecting_logprobs_is_asked_without_them() {
    let server = Mock::start().await;
    server.on(
        "POST",
        "/v1/chat/completions",
        vec![
            json_reply(400, OPENAI_LOGPROBS_REJECTED),
            json_reply(200, OPENAI_PLAIN),
        ],
    );
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Openai)).unwrap();
    for _ in 0..2 {
        let a = backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
        assert!(close(a.confidence, 0.6));
    }
    let seen = server.seen("/v1/chat/completions");
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].body["logprobs"], true);
    assert!(seen[1].body.get("logprobs").is_none());
    assert!(seen[2].body.get("top_logprobs").is_none());
}

#[tokio::test]
async fn openai_health_sends_the_key_and_learns_a_model() {
    let server = Mock::start().await;
    server.on("GET", "/v1/models", vec![json_reply(200, OPENAI_MODELS)]);
    server.on(
        "POST",
        "/v1/chat/completions",
        vec![json_reply(200, OPENAI_PLAIN)],
    );
    let mut s = llm_settings(&server.url, Protocol::Openai);
    s.model = None;
    let backend = LlmBackend::new(&s).unwrap();

    backend.check().await.unwrap();
    let seen = server.seen("/v1/models");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    backend.answer("q", in_ms(10_000)).await.unwrap().unwrap();
    assert_eq!(
        server.seen("/v1/chat/completions")[0].body["model"],
        "model-id-0"
    );

    // A server that is down or refuses the key is unhealthy.
    server.on(
        "GET",
        "/v1/models",
        vec![json_reply(
            401,
            r#"{"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#,
        )],
    );
    let err = backend.check().await.unwrap_err();
    assert!(err.contains("401") && err.contains("api_key"), "{err}");
}

/// A `tracing` writer into a buffer, to read what was logged.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_api_key_never_shows() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Mock::start().await;
    let backend = LlmBackend::new(&llm_settings(&server.url, Protocol::Openai)).unwrap();
    let mut shown = vec![format!("{backend:?}"), format!("{backend}")];
    assert!(shown[0].contains("***"), "{}", shown[0]);

    // A careless server that echoes the key everywhere.
    let echo = format!(
        r#"{{"error": {{"message": "Incorrect API key provided: {API_KEY}", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}}}"#
    );
    let page = format!("<html><body>Authorization: Bearer {API_KEY}</body></html>");
    for (path, method, reply) in [
        ("/v1/chat/completions", "POST", json_reply(401, &echo)),
        ("/v1/chat/completions", "POST", json_reply(503, &echo)),
        ("/v1/chat/completions", "POST", html_reply(200, &page)),
        (
            "/v1/chat/completions",
            "POST",
            json_reply(400, &echo.replace("API key", "logprobs key")),
        ),
    ] {
        server.on(method, path, vec![reply]);
        let err = backend.answer("q", in_ms(500)).await.unwrap_err();
        shown.push(format!("{err}"));
        shown.push(format!("{err:?}"));
    }
    server.on("GET", "/v1/models", vec![json_reply(401, &echo)]);
    shown.push(backend.check().await.unwrap_err());
    server.on("GET", "/v1/models", vec![html_reply(500, &page)]);
    shown.push(backend.check().await.unwrap_err());
    // And the key was sent where it belongs.
    assert!(
        server
            .seen("/v1/chat/completions")
            .iter()
            .all(|r| r.authorization.as_deref() == Some(format!("Bearer {API_KEY}").as_str()))
    );

    // Unreachable.
    let gone = LlmBackend::new(&llm_settings(
        &format!("http://127.0.0.1:{}", free_port()),
        Protocol::Openai,
    ))
    .unwrap();
    shown.push(format!(
        "{:?}",
        gone.answer("q", in_ms(2_000)).await.unwrap_err()
    ));
    shown.push(gone.check().await.unwrap_err());

    for s in &shown {
        assert!(!s.contains(API_KEY), "the key leaked: {s}");
        assert!(!s.contains("SECRET"), "part of the key leaked: {s}");
    }
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logged.is_empty(),
        "nothing was logged; is the capture working?"
    );
    assert!(!logged.contains("SECRET"), "the key was logged:\n{logged}");
}

// ---------------------------------------------------------------------------
// End to end: Redis, a daemon, an llm worker, a KoboldCpp server.

#[tokio::test]
async fn an_llm_worker_answers_a_query_through_the_daemon() {
    let server = Mock::start().await;
    server.on("GET", "/api/v1/model", vec![json_reply(200, KOBOLD_MODEL)]);
    server.on(
        "GET",
        "/api/extra/version",
        vec![json_reply(200, &kobold_version("1.102"))],
    );
    server.on(
        "POST",
        "/api/v1/generate",
        vec![json_reply(200, KOBOLD_WITH_LOGPROBS)],
    );

    let mut ctx = TestContext::new();
    let s = &mut ctx.settings;
    s.http.enabled = false;
    s.orchestrator.heartbeat_interval_ms = 200;
    s.orchestrator.health_ttl_s = 10;
    s.workers.heartbeat_interval_ms = 200;
    s.workers.health_ttl_s = 10;
    s.layers.get_mut("layer0").unwrap().timeout_ms = 10_000;
    s.layers.get_mut("layer1").unwrap().enabled = false;
    s.layers.get_mut("layer2").unwrap().enabled = false;
    let layer4 = s.layers.get_mut("layer4").unwrap();
    layer4.min_confidence = 0.2;
    layer4.timeout_ms = 10_000;
    s.workers.llm = llm_settings(&server.url, Protocol::Kobold);
    let settings = ctx.settings.clone();

    let stop = CancellationToken::new();
    let name = format!(
        "llm-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let worker = Worker::new(
        settings.clone(),
        LlmBackend::new(&settings.workers.llm).unwrap(),
        WorkerOptions {
            kind: WorkerKind::Llm,
            name: Some(name.clone()),
            layer: None,
            concurrency: 1,
        },
    )
    .unwrap();
    assert_eq!(worker.layer(), "layer4");
    let worker_task = tokio::spawn(worker.run(stop.clone()));

    let bb = ctx.blackboard().await;
    let daemon = Daemon::new(settings.clone());
    let instance = daemon.instance().to_string();
    let daemon_task = tokio::spawn(daemon.run(stop.clone()));
    // The daemon sends layer4 jobs once it reports the worker live (which
    // needs the worker healthy: its backend answered the check).
    crate::common::wait_until_daemon_sees(&bb, &instance, "layer4").await;
    assert!(
        bb.list_health()
            .await
            .unwrap()
            .iter()
            .any(|h| h.name == name && h.healthy)
    );

    let q = QueryState::new("What is the capital of France?");
    bb.enqueue(&q).await.unwrap();
    let client = redis::Client::open(ctx.redis.url.as_str()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(PATIENCE + Duration::from_secs(10))),
        )
        .await
        .unwrap();
    let done: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(ctx.keys().done(&q.query_id))
        .arg(PATIENCE.as_secs())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        done.is_some(),
        "the query did not finish within {PATIENCE:?}"
    );
    let state = bb.get_state(&q.query_id).await.unwrap().unwrap();
    assert_eq!(state.status, QueryStatus::Answered, "{state:?}");
    let answer = state.answer.clone().unwrap();
    assert_eq!(answer.layer, "layer4");
    assert_eq!(answer.text, "Paris.");
    let body: Value = serde_json::from_str(KOBOLD_WITH_LOGPROBS).unwrap();
    let expected = expected_confidence(&body["results"][0]["logprobs"]["content"]);
    assert!((answer.confidence - expected).abs() < 1e-6, "{state:?}");
    assert_eq!(
        answer.source.as_deref(),
        Some("koboldcpp/Meta-Llama-3.1-8B-Instruct-Q4_K_M")
    );
    let generate = server.seen("/api/v1/generate");
    assert_eq!(generate.len(), 1);
    assert_eq!(
        generate[0].body["prompt"],
        "Question: What is the capital of France?\nAnswer:"
    );

    stop.cancel();
    tokio::time::timeout(PATIENCE, async {
        worker_task.await.unwrap().unwrap();
        daemon_task.await.unwrap().unwrap();
    })
    .await
    .expect("the worker and the daemon stop");
}
