//! The one settings tree, and how it is assembled.
//!
//! Precedence, lowest first: built-in defaults → `kitbash_config.yaml` →
//! `.env` → process environment. Within `.env` and the environment, the
//! conventional `REDIS_URL`, `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB` and
//! `REDIS_PASSWORD` sit below the more specific `KITBASH_*` variables.
//!
//! Every value keeps the name of the source it came from (figment tags), so
//! an invalid value is reported with its key, the bad value and its source,
//! and `kitbash config` can show where each effective value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

mod load;
mod redact;
mod tls;
mod validate;

pub use load::*;
pub use redact::*;
pub use tls::*;
use validate::*;

/// Default path of the YAML configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "kitbash_config.yaml";
/// Environment variable naming the YAML configuration file.
pub const CONFIG_PATH_ENV: &str = "KITBASH_CONFIG";
/// Prefix of the environment variables that set configuration values.
pub const ENV_PREFIX: &str = "KITBASH_";

/// The conventional Redis variables and the key each one sets.
const REDIS_VARS: &[(&str, &str)] = &[
    ("REDIS_URL", "url"),
    ("REDIS_HOST", "host"),
    ("REDIS_PORT", "port"),
    ("REDIS_DB", "db"),
    ("REDIS_PASSWORD", "password"),
];

/// Variables with the `KITBASH_` prefix that are not configuration keys.
/// (The `KITBASH_ACL_*` ones are the passwords of `kitbash acl --passwords-from-env`.)
const NON_CONFIG_VARS: &[&str] = &[
    "KITBASH_CONFIG",
    "KITBASH_TEST_REDIS_URL",
    "KITBASH_LOG",
    "KITBASH_ACL_DAEMON_PASSWORD",
    "KITBASH_ACL_WORKER_PASSWORD",
    "KITBASH_ACL_CLIENT_PASSWORD",
];

/// Errors raised while assembling or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One or more values are invalid; each line names key, value and source.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The configuration file given explicitly does not exist.
    #[error(
        "configuration file {0} not found (set --config or KITBASH_CONFIG to an existing file)"
    )]
    FileNotFound(PathBuf),
    /// The `.env` file exists but cannot be parsed.
    #[error("cannot read {path}: {reason}")]
    DotEnv {
        /// Path of the `.env` file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A secret string (password, API key). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is sent to the server it is for.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How to reach Redis.
    pub redis: RedisSettings,
    /// The daemon (`kitbash serve`).
    pub orchestrator: OrchestratorSettings,
    /// The cascade's layers, by name; they are tried in the order of
    /// [`Settings::layers_in_order`] (the number in the name, so `layer10`
    /// comes after `layer2`).
    pub layers: BTreeMap<String, LayerSettings>,
    /// The worker processes behind the worker layers.
    pub workers: WorkersSettings,
    /// The diagnostic stream.
    pub feed: FeedSettings,
    /// Latency samples.
    pub metrics: MetricsSettings,
    /// The daemon's HTTP endpoint (health, Prometheus).
    pub http: HttpSettings,
    /// What layer0 and the cartridge layer know besides grains and facts.
    pub knowledge: KnowledgeSettings,
    /// Answers that become grains (the policy is per layer).
    pub crystallization: CrystallizationSettings,
    /// Log output.
    pub logging: LoggingSettings,
}

impl Settings {
    /// The layers in cascade order: by the number at the end of the name
    /// (`layer0`, `layer1`, `layer2`, `layer4`, `layer10`), then by name; a
    /// name without a number comes after all numbered ones.
    pub fn layers_in_order(&self) -> Vec<(&str, &LayerSettings)> {
        let mut layers: Vec<(&str, &LayerSettings)> =
            self.layers.iter().map(|(n, l)| (n.as_str(), l)).collect();
        layers.sort_by_key(|(name, _)| (layer_number(name), *name));
        layers
    }
}

/// The number a layer's name ends with (`u64::MAX` when none).
fn layer_number(name: &str) -> u64 {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].parse().unwrap_or(u64::MAX)
}

impl Default for Settings {
    fn default() -> Self {
        let mut layers = BTreeMap::new();
        layers.insert(
            "layer0".to_string(),
            LayerSettings {
                kind: LayerKind::Grain,
                enabled: true,
                timeout_ms: 50,
                min_confidence: 0.9,
                worker: None,
                crystallize: CrystallizePolicy::default(),
                consensus: ConsensusSettings::default(),
            },
        );
        layers.insert(
            "layer1".to_string(),
            LayerSettings {
                kind: LayerKind::Worker,
                enabled: true,
                timeout_ms: 2_000,
                min_confidence: 0.75,
                worker: Some(WorkerKind::Bitnet),
                crystallize: CrystallizePolicy {
                    enabled: true,
                    ttl_s: 86_400,
                    require_agreement: true,
                    ..CrystallizePolicy::default()
                },
                consensus: ConsensusSettings::default(),
            },
        );
        layers.insert(
            "layer2".to_string(),
            LayerSettings {
                kind: LayerKind::Worker,
                enabled: true,
                timeout_ms: 500,
                min_confidence: 0.55,
                worker: Some(WorkerKind::Cartridge),
                crystallize: CrystallizePolicy {
                    enabled: true,
                    ..CrystallizePolicy::default()
                },
                consensus: ConsensusSettings::default(),
            },
        );
        layers.insert(
            "layer4".to_string(),
            LayerSettings {
                kind: LayerKind::Worker,
                enabled: true,
                timeout_ms: 30_000,
                min_confidence: 0.5,
                worker: Some(WorkerKind::Llm),
                crystallize: CrystallizePolicy {
                    enabled: true,
                    ttl_s: 86_400,
                    require_agreement: true,
                    ..CrystallizePolicy::default()
                },
                consensus: ConsensusSettings::default(),
            },
        );
        Self {
            redis: RedisSettings::default(),
            orchestrator: OrchestratorSettings::default(),
            layers,
            workers: WorkersSettings::default(),
            feed: FeedSettings::default(),
            metrics: MetricsSettings::default(),
            http: HttpSettings::default(),
            knowledge: KnowledgeSettings::default(),
            crystallization: CrystallizationSettings::default(),
            logging: LoggingSettings::default(),
        }
    }
}

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Full URL (`redis://[user:pass@]host:port/db`, `rediss://` for TLS).
    /// When set it wins over host, port, db and tls.
    pub url: Option<String>,
    /// Host name or address, used when `url` is not set.
    pub host: String,
    /// TCP port, used when `url` is not set.
    pub port: u16,
    /// Database number, used when `url` is not set.
    pub db: i64,
    /// ACL user name (Redis 6+); overrides a user in `url`.
    pub username: Option<String>,
    /// Password; overrides a password in `url`. Never printed.
    pub password: Option<Secret>,
    /// Connect with TLS when building from parts (same as a `rediss://` URL).
    pub tls: bool,
    /// PEM file of the CA certificates that sign the server's certificate
    /// (a private CA); trusted instead of the system's roots. TLS only.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate chain, for a server with
    /// `tls-auth-clients yes`; needs `tls_key_file`. TLS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the private key of `tls_cert_file`; needs `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Time allowed to open one connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed for one ordinary (non-blocking) command, in milliseconds.
    pub response_timeout_ms: u64,
    /// Longest wait between two connection attempts while Redis is down, in milliseconds.
    pub retry_max_delay_ms: u64,
    /// Prefix of every key. In cluster mode the keys of queries and grains
    /// are `<prefix>:{<partition tag>}:...`; no braces in the prefix then.
    pub key_prefix: String,
    /// Redis Cluster mode: `url` (or host and port) is one seed node; the
    /// client learns the other nodes from it and follows failovers.
    pub cluster: bool,
    /// More seed nodes for cluster mode (URLs), tried when `url` is down.
    pub cluster_nodes: Vec<String>,
    /// Cluster mode: how many partitions queries and grains are spread
    /// over (each a hash tag, spread evenly over the slots). Change it only
    /// with the queues drained: it decides where each query's keys are.
    pub partitions: u32,
    /// Replicas an enqueue waits for (`WAIT`) before a client calls it
    /// done, so a failover cannot lose a query the client was told is
    /// queued. `null` (the default) means 1 when every primary has a
    /// replica at the client's start (cluster, or one server with a
    /// replica), else 0; 0 never waits.
    pub wait_replicas: Option<u32>,
    /// How long an enqueue waits for those replicas, in milliseconds.
    pub wait_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            host: "127.0.0.1".into(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 2_000,
            retry_max_delay_ms: 5_000,
            key_prefix: "kitbash".into(),
            cluster: false,
            cluster_nodes: Vec::new(),
            partitions: 12,
            wait_replicas: None,
            wait_timeout_ms: 500,
        }
    }
}

impl RedisSettings {
    /// The URL to connect to, built from `url` or from the parts.
    /// Credentials are not in it; see `username` and `password`.
    pub fn effective_url(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => {
                let scheme = if self.tls { "rediss" } else { "redis" };
                format!("{scheme}://{}:{}/{}", self.host, self.port, self.db)
            }
        }
    }

    /// Every seed node in cluster mode: the effective URL, then `cluster_nodes`.
    pub fn seed_urls(&self) -> Vec<String> {
        let mut out = vec![self.effective_url()];
        out.extend(self.cluster_nodes.iter().cloned());
        out
    }

    /// The key schema: `key_prefix` on one server; in cluster mode spread
    /// over `partitions` hash tags (docs/design.md, "Partitions").
    pub fn keys(&self) -> crate::store::keys::Keys {
        if self.cluster {
            crate::store::keys::Keys::partitioned(self.key_prefix.clone(), self.partitions as usize)
        } else {
            crate::store::keys::Keys::new(self.key_prefix.clone())
        }
    }

    /// The effective URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.effective_url())
    }

    /// Time allowed to open one connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Time allowed for one ordinary command.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// The longest wait between reconnection attempts.
    pub fn retry_max_delay(&self) -> Duration {
        Duration::from_millis(self.retry_max_delay_ms)
    }

    /// Whether any of `tls_ca_file`, `tls_cert_file`, `tls_key_file` is set.
    pub fn has_tls_files(&self) -> bool {
        self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_key_file.is_some()
    }

    /// Reads and checks the files named by `tls_ca_file`, `tls_cert_file`
    /// and `tls_key_file`; `None` when none is set.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, TlsFileError> {
        if !self.has_tls_files() {
            return Ok(None);
        }
        let read = |key: &'static str, path: &Option<PathBuf>, kind: PemKind| {
            path.as_deref()
                .map(|p| read_pem(p, kind).map_err(|reason| TlsFileError::new(key, p, reason)))
                .transpose()
        };
        let ca = read(
            "redis.tls_ca_file",
            &self.tls_ca_file,
            PemKind::Certificates,
        )?;
        let cert = read(
            "redis.tls_cert_file",
            &self.tls_cert_file,
            PemKind::Certificates,
        )?;
        let key = read(
            "redis.tls_key_file",
            &self.tls_key_file,
            PemKind::PrivateKey,
        )?;
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsFileError {
                    key: "redis.tls_key_file",
                    path: None,
                    reason: "must be set with redis.tls_cert_file".into(),
                });
            }
            (None, Some(_)) => {
                return Err(TlsFileError {
                    key: "redis.tls_cert_file",
                    path: None,
                    reason: "must be set with redis.tls_key_file".into(),
                });
            }
        };
        Ok(Some(TlsFiles { ca, client }))
    }
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorSettings {
    /// Name of this daemon instance; generated (`<host>-<random>`) when unset.
    /// Two live daemons must never share one.
    pub instance_id: Option<String>,
    /// Queries one daemon works on at once.
    pub max_in_flight: usize,
    /// Threads of the daemon's async runtime. 1 (the default) runs it on one
    /// thread, which profiles showed cheaper than waking threads for every
    /// Redis reply; more helps only when one core cannot keep up.
    pub worker_threads: usize,
    /// Times a query may be taken by daemons that die holding it: the
    /// recovery that finds it for the `max_attempts`-th time fails it.
    pub max_attempts: u32,
    /// Seconds a query's state is kept after it was last written.
    pub state_ttl_s: u64,
    /// Seconds the completion signal waits for a client to read it.
    pub done_ttl_s: u64,
    /// Seconds given to in-flight queries to finish on SIGTERM/SIGINT.
    pub shutdown_grace_s: u64,
    /// Longest accepted query text, in bytes.
    pub max_query_bytes: usize,
    /// Queue length past which clients refuse to enqueue (per lane, unless
    /// a lane sets its own in `lanes`).
    pub max_queue_len: u64,
    /// The priority lanes: each lane's minimum share of the takes while
    /// higher lanes are busy, and its own queue limit.
    pub lanes: LanesSettings,
    /// Jobs a worker layer's job list may hold; at this length the daemon
    /// skips the layer instead of pushing (a worker that reports healthy but
    /// takes nothing cannot make the list grow without bound).
    pub max_jobs_per_layer: u64,
    /// Interval between two heartbeats of the daemon's health key, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Seconds a health key lives without a heartbeat; absent means dead.
    pub health_ttl_s: u64,
    /// Seconds between two scans for dead daemons' processing lists.
    pub recovery_interval_s: u64,
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        Self {
            instance_id: None,
            max_in_flight: 256,
            worker_threads: 1,
            max_attempts: 3,
            state_ttl_s: 86_400,
            done_ttl_s: 300,
            shutdown_grace_s: 10,
            max_query_bytes: 4_096,
            max_queue_len: 100_000,
            lanes: LanesSettings::default(),
            max_jobs_per_layer: 10_000,
            heartbeat_interval_ms: 1_000,
            health_ttl_s: 5,
            recovery_interval_s: 5,
        }
    }
}

/// The four priority lanes (docs/design.md, "Priority lanes").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanesSettings {
    /// Taken first; its `min_share` has no use (nothing is above it).
    pub critical: LaneSettings,
    /// After `critical`.
    pub high: LaneSettings,
    /// Entries without a priority.
    pub normal: LaneSettings,
    /// Last.
    pub low: LaneSettings,
    /// Of a daemon's `max_in_flight` slots, how many only `critical` and
    /// `high` queries may use: one of them never waits for a slot that
    /// lower queries hold (a slow worker layer can hold them for seconds),
    /// and a backlog of lower queries, capped at the rest, does not fill
    /// Redis's queue so deep that every command waits long in it. Unset:
    /// `max_in_flight / 2`.
    pub reserved_in_flight: Option<usize>,
}

impl Default for LanesSettings {
    fn default() -> Self {
        let share = |min_share| LaneSettings {
            min_share,
            max_queue_len: None,
        };
        Self {
            critical: share(0.0),
            high: share(0.2),
            normal: share(0.1),
            low: share(0.05),
            reserved_in_flight: None,
        }
    }
}

impl LanesSettings {
    /// The in-flight slots kept for `critical` and `high` queries, of
    /// `max_in_flight`: never all of them (validation refuses a setting
    /// that would keep all; settings built in code get one less).
    pub fn reserved(&self, max_in_flight: usize) -> usize {
        self.reserved_in_flight
            .unwrap_or(max_in_flight / 2)
            .min(max_in_flight.saturating_sub(1))
    }

    /// The settings of `lane`.
    pub fn of(&self, lane: crate::store::lanes::Lane) -> &LaneSettings {
        use crate::store::lanes::Lane;
        match lane {
            Lane::Critical => &self.critical,
            Lane::High => &self.high,
            Lane::Normal => &self.normal,
            Lane::Low => &self.low,
        }
    }
}

/// One priority lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaneSettings {
    /// Fraction of a daemon's takes this lane gets while it has entries
    /// and higher lanes are busy, in [0, 1]; the lanes' shares sum to 1 at
    /// most.
    #[serde(deserialize_with = "exact_f64")]
    pub min_share: f64,
    /// Queue length of this lane past which clients refuse to enqueue to
    /// it; unset: `orchestrator.max_queue_len`.
    pub max_queue_len: Option<u64>,
}

impl Default for LaneSettings {
    fn default() -> Self {
        Self {
            min_share: 0.0,
            max_queue_len: None,
        }
    }
}

/// How a layer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Grain lookup inside the daemon.
    Grain,
    /// Jobs handed to the workers named by `worker`.
    Worker,
}

/// The kinds of worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerKind {
    /// A small 1-bit LLM behind a llama.cpp-style server.
    Bitnet,
    /// Ranked retrieval over fact collections.
    Cartridge,
    /// KoboldCpp or an OpenAI-compatible server.
    Llm,
    /// Answers every job at once with its own text (for tests and for
    /// measuring the protocol's own overhead with `kitbash bench`).
    Echo,
}

impl WorkerKind {
    /// The lowercase name used in config, commands and health keys.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Bitnet => "bitnet",
            WorkerKind::Cartridge => "cartridge",
            WorkerKind::Llm => "llm",
            WorkerKind::Echo => "echo",
        }
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One layer of the cascade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LayerSettings {
    /// `grain` (lookup in the daemon) or `worker` (jobs for a worker process).
    pub kind: LayerKind,
    /// A disabled layer is never tried.
    pub enabled: bool,
    /// How long the daemon waits for this layer's answer, in milliseconds.
    pub timeout_ms: u64,
    /// Confidence in [0, 1] at which this layer's answer is accepted.
    #[serde(deserialize_with = "exact_f64")]
    pub min_confidence: f64,
    /// Worker kind serving a `worker` layer (`bitnet`, `cartridge`, `llm`).
    pub worker: Option<WorkerKind>,
    /// When this layer's answers become grains (worker layers only).
    pub crystallize: CrystallizePolicy,
    /// Another worker layer asked at the same time, whose answer must agree.
    pub consensus: ConsensusSettings,
}

impl Default for LayerSettings {
    fn default() -> Self {
        Self {
            kind: LayerKind::Worker,
            enabled: true,
            timeout_ms: 1_000,
            min_confidence: 0.7,
            worker: None,
            crystallize: CrystallizePolicy::default(),
            consensus: ConsensusSettings::default(),
        }
    }
}

/// When a worker layer's answer becomes a grain that layer0 answers with
/// next time (see docs/design.md, "Crystallisation").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrystallizePolicy {
    /// Whether this layer's answers may crystallise at all.
    pub enabled: bool,
    /// Least confidence of an answer that crystallises. Only answers
    /// (hits) crystallise, so below the layer's `min_confidence` it has no
    /// effect. The grain answers at layer0 with the answer's confidence, so
    /// below `layers.layer0.min_confidence` such grains would never answer.
    #[serde(deserialize_with = "exact_f64")]
    pub min_confidence: f64,
    /// Times the same question (same match key) must have been answered
    /// the same way (same normalised answer), with no other answer between,
    /// within `crystallization.window_s`, before it crystallises.
    pub min_answers: u32,
    /// Seconds a crystallised grain lives; an absolute expiry that hits
    /// never extend.
    pub ttl_s: u64,
    /// Crystallise only answers the `consensus` partner agreed with; with
    /// no partner configured, this layer never crystallises.
    pub require_agreement: bool,
}

impl Default for CrystallizePolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            min_confidence: 0.9,
            min_answers: 2,
            ttl_s: 604_800,
            require_agreement: false,
        }
    }
}

/// What a consensus partner's agreement decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusMode {
    /// The layer answers only when the partner's answer agrees.
    Answer,
    /// The layer answers as usual; its answer crystallises only when the
    /// partner's agrees.
    Crystallize,
}

/// Consensus: a second worker layer asked together with this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusSettings {
    /// The partner: another worker layer, asked at the same time as this
    /// one (or its answer reused, when the cascade asked it already).
    pub with: Option<String>,
    /// `answer` or `crystallize`.
    pub mode: ConsensusMode,
}

impl Default for ConsensusSettings {
    fn default() -> Self {
        Self {
            with: None,
            mode: ConsensusMode::Crystallize,
        }
    }
}

/// Crystallisation as a whole (the policy is per layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrystallizationSettings {
    /// Master switch: `false` makes no grain from any layer's answers.
    pub enabled: bool,
    /// Most crystallised grains kept; past it, the one that expires
    /// soonest goes first.
    pub max_grains: u64,
    /// Seconds repeats of a question's answer are counted for
    /// `min_answers` (the count's key lives this long after its last
    /// answer).
    pub window_s: u64,
    /// Seconds a question marked wrong (`kitbash feedback`) is kept from
    /// crystallising again.
    pub block_s: u64,
}

impl Default for CrystallizationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_grains: 10_000,
            window_s: 86_400,
            block_s: 604_800,
        }
    }
}

impl LayerSettings {
    /// The layer's timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Settings shared by all workers and per worker kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSettings {
    /// Interval between two heartbeats of a worker's health key, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Seconds a worker's health key lives without a heartbeat.
    pub health_ttl_s: u64,
    /// Seconds given to jobs in progress on SIGTERM/SIGINT; unfinished jobs
    /// go back to the layer's job list.
    pub shutdown_grace_s: u64,
    /// Confidence the echo worker reports.
    #[serde(deserialize_with = "exact_f64")]
    pub echo_confidence: f64,
    /// Milliseconds the echo worker takes per job (bounded by the job's
    /// deadline): stands in for a slow model in fault tests and demos.
    pub echo_delay_ms: u64,
    /// The bitnet worker (layer1).
    pub bitnet: BitnetSettings,
    /// The cartridge worker (layer2).
    pub cartridge: CartridgeSettings,
    /// The llm worker (layer4).
    pub llm: LlmSettings,
}

impl Default for WorkersSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1_000,
            health_ttl_s: 5,
            shutdown_grace_s: 10,
            echo_confidence: 1.0,
            echo_delay_ms: 0,
            bitnet: BitnetSettings::default(),
            cartridge: CartridgeSettings::default(),
            llm: LlmSettings::default(),
        }
    }
}

/// The bitnet worker: a client of a llama.cpp-style `llama-server`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BitnetSettings {
    /// Base URL of the server (`POST /completion`, `GET /health`).
    pub url: String,
    /// Prompt sent to the model; `{query}` is replaced by the query text.
    pub prompt_template: String,
    /// Most tokens to generate.
    pub n_predict: u32,
    /// Top log-probabilities requested per token.
    pub n_probs: u32,
    /// Jobs one worker process works on at once.
    pub concurrency: usize,
    /// Time allowed for one HTTP request, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for BitnetSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081".into(),
            prompt_template: "Answer in one short sentence.\nQuestion: {query}\nAnswer:".into(),
            n_predict: 64,
            n_probs: 5,
            concurrency: 2,
            request_timeout_ms: 10_000,
        }
    }
}

/// The cartridge worker: retrieval over JSONL fact collections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartridgeSettings {
    /// Cartridge files or directories of them.
    pub paths: Vec<PathBuf>,
    /// Jobs one worker process works on at once.
    pub concurrency: usize,
}

impl Default for CartridgeSettings {
    fn default() -> Self {
        Self {
            paths: vec![PathBuf::from("config/cartridges")],
            concurrency: 4,
        }
    }
}

/// Which protocol the llm worker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProtocol {
    /// KoboldCpp (`POST /api/v1/generate`).
    Kobold,
    /// Any OpenAI-compatible server (`POST /v1/chat/completions`).
    Openai,
}

/// The llm worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// `kobold` or `openai`.
    pub backend: LlmProtocol,
    /// Base URL of the server.
    pub url: String,
    /// API key sent as a bearer token (openai backend). Never printed.
    pub api_key: Option<Secret>,
    /// Model name sent to an OpenAI-compatible server.
    pub model: Option<String>,
    /// Prompt sent to the model; `{query}` is replaced by the query text.
    pub prompt_template: String,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Confidence reported when the server gives no log-probabilities.
    #[serde(deserialize_with = "exact_f64")]
    pub fixed_confidence: f64,
    /// Jobs one worker process works on at once.
    pub concurrency: usize,
    /// Time allowed for one HTTP request, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            backend: LlmProtocol::Kobold,
            url: "http://127.0.0.1:5001".into(),
            api_key: None,
            model: None,
            prompt_template: "Answer in one short sentence.\nQuestion: {query}\nAnswer:".into(),
            max_tokens: 128,
            fixed_confidence: 0.6,
            concurrency: 2,
            request_timeout_ms: 30_000,
        }
    }
}

/// The diagnostic stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSettings {
    /// Approximate cap on the stream's length (`XADD MAXLEN ~`).
    pub max_len: u64,
    /// Clock slack allowed around a query's life when reading its timeline, in milliseconds.
    pub timeline_slack_ms: u64,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            max_len: 100_000,
            timeline_slack_ms: 2_000,
        }
    }
}

/// Latency samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Samples older than this many seconds are dropped.
    pub retention_s: u64,
    /// Most samples kept per metric; the oldest go first.
    pub max_samples: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            retention_s: 3_600,
            max_samples: 10_000,
        }
    }
}

/// The daemon's HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Serve `/health*` and `/metrics`.
    pub enabled: bool,
    /// Address to listen on; loopback unless you mean to expose it.
    pub listen: SocketAddr,
    /// The web dashboard served on the same address (`/`, `/api/*`).
    pub dashboard: DashboardSettings,
}

/// The web dashboard (docs/operations.md, "Dashboard").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    /// Serve the pages and their API (read-only unless `actions`).
    pub enabled: bool,
    /// Allow the actions that change state: requeue or delete a dead-list
    /// entry, forget a grain. Each then needs `token`.
    pub actions: bool,
    /// The bearer token the actions need (at least 16 characters); required
    /// when `actions` is on.
    pub token: Option<Secret>,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            actions: false,
            token: None,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            dashboard: DashboardSettings::default(),
        }
    }
}

/// What layer0 and the cartridge layer know besides grains and facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeSettings {
    /// Aliases files (JSONL, `{"alias": "USA", "name": "United States"}` a
    /// line): other names of entities, read by the daemon's layer0 and the
    /// cartridge worker at start. A file that cannot be read is logged and
    /// skipped.
    pub aliases: Vec<PathBuf>,
    /// Attribute synonyms files, in the same format (`{"alias": "how many
    /// people", "name": "population"}`): phrases of questions read as the
    /// words the facts use. Only the cartridge worker reads them: layer2
    /// checks that a fact covers every word of the question, layer0 does
    /// not, so a synonym that drops a word is safe only there.
    pub synonyms: Vec<PathBuf>,
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        Self {
            aliases: vec![PathBuf::from("config/aliases.jsonl")],
            synonyms: vec![PathBuf::from("config/synonyms.jsonl")],
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    /// `tracing` filter: a level (`info`) or directives (`kitbash=debug,warn`).
    pub level: String,
    /// `pretty` or `json`.
    pub format: LogFormat,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

/// Reads an f64 from a number or a string at full precision. figment's lossy
/// mode would turn the string "0.9" into an f32 first (0.8999999761…).
fn exact_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_f32<E: serde::de::Error>(self, v: f32) -> Result<f64, E> {
            // Shortest decimal that reads back as this f32, then as f64.
            v.to_string().parse().map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f64, E> {
            v.trim()
                .parse()
                .map_err(|_| E::invalid_type(serde::de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {

    #[test]
    fn log_filters_must_name_levels() {
        use super::validate::check_log_filter;
        for ok in [
            "info",
            "WARN",
            "kitbash=debug,warn",
            "off",
            "kitbash::daemon=trace",
        ] {
            assert!(check_log_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["warning", "verbose", "info,chatty"] {
            let why = check_log_filter(bad).unwrap_err();
            assert!(why.contains("not a log level"), "{bad}: {why}");
        }
        assert!(check_log_filter("kitbash=loud").is_err());
    }

    #[test]
    fn layers_run_in_the_order_of_their_numbers() {
        let mut s = Settings::default();
        for name in ["layer10", "layer3", "extra"] {
            s.layers
                .insert(name.to_string(), s.layers["layer2"].clone());
        }
        let order: Vec<&str> = s.layers_in_order().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            order,
            [
                "layer0", "layer1", "layer2", "layer3", "layer4", "layer10", "extra"
            ]
        );
    }
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("redis://user:hunter2@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://:pw@h/1"), "rediss://:***@h/1");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("redis://secret@h"), "redis://***@h");
        // An unencoded `/` in the password does not end the credentials.
        assert_eq!(redact_url("redis://u:a/b@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(
            redact_url("unix:///run/r.sock?db=1&pass=hunter2"),
            "unix:///run/r.sock?db=1&pass=***"
        );
    }

    #[test]
    fn builds_url_from_parts() {
        let r = RedisSettings {
            host: "example".into(),
            port: 7000,
            db: 3,
            tls: true,
            ..Default::default()
        };
        assert_eq!(r.effective_url(), "rediss://example:7000/3");
    }

    #[test]
    fn nested_paths_insert_into_dicts() {
        let mut d = Dict::new();
        insert_path(&mut d, &["a".into(), "b".into()], Value::from(1));
        insert_path(&mut d, &["a".into(), "c".into()], Value::from(2));
        let Value::Dict(_, inner) = &d["a"] else {
            panic!("not a dict")
        };
        assert_eq!(inner.len(), 2);
    }
}
