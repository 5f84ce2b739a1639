//! Connections to Redis.
//!
//! Two kinds, for two kinds of command:
//!
//! - [`Connector::shared`]: one auto-reconnecting multiplexed connection
//!   (`ConnectionManager`) for every ordinary command of a process. Cheap to
//!   clone; many tasks pipeline over it.
//! - [`Connector::blocking`]: a dedicated connection for one blocking loop
//!   (BLMOVE, BLPOP, XREAD BLOCK). Its response timeout is the block time plus
//!   the ordinary response timeout: since redis 1.0 an async connection's
//!   default response timeout is 500 ms, and a blocking call on the shared
//!   connection would both time out and stall every other caller behind it.

use std::sync::Once;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Client, ClientTlsConfig, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture,
    TlsCertificates, Value,
};
use tokio_util::sync::CancellationToken;

use crate::config::{RedisSettings, TlsFileError, redact_url};
use crate::store::outage::Backoff;

/// Errors raised while opening connections.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or credentials cannot make a connection description.
    #[error("invalid Redis address {url}: {source}")]
    InvalidAddress {
        /// The URL, password redacted.
        url: String,
        /// What the driver said.
        source: redis::RedisError,
    },
    /// A TLS file setting (`redis.tls_ca_file`, `tls_cert_file`,
    /// `tls_key_file`) names a file that cannot be used.
    #[error("cannot set up TLS to Redis at {url}: {source}")]
    TlsFile {
        /// The URL, password redacted.
        url: String,
        /// The setting, the file and what is wrong with it.
        source: TlsFileError,
    },
    /// Redis did not answer.
    #[error("cannot connect to Redis at {url}: {source}")]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// What the driver said.
        source: redis::RedisError,
    },
    /// Redis answered, but the TLS handshake failed over a certificate.
    #[error("TLS handshake with Redis at {url} failed: {source}; {hint}")]
    TlsRejected {
        /// The URL, password redacted.
        url: String,
        /// What the driver said.
        source: redis::RedisError,
        /// Which setting to look at.
        hint: &'static str,
    },
    /// Shutdown was requested while waiting for Redis.
    #[error("stopped while waiting for Redis at {url}")]
    Cancelled {
        /// The URL, password redacted.
        url: String,
    },
}

/// A connection to Redis: one server (auto-reconnecting), or a Redis
/// Cluster (routed by key slot, following `MOVED` and failovers). Every
/// command and pipeline of Kitbash runs over either unchanged; in cluster
/// mode a pipeline's keys must share one slot, which the key schema
/// guarantees (`RedisSettings::keys`).
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// One cluster node as `CLUSTER NODES` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Host (as the cluster announces it).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl RedisConn {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// The primaries serving slots, from `CLUSTER NODES`: the nodes a
    /// command meant for "every node" (SCAN, INFO) goes to. Empty for one
    /// server.
    pub async fn primaries(&mut self) -> redis::RedisResult<Vec<ClusterNode>> {
        let RedisConn::Cluster(c) = self else {
            return Ok(Vec::new());
        };
        Ok(parse_primaries(&cluster_nodes(c).await?))
    }

    /// Runs `cmd` on one node (cluster) or on the server (single).
    pub async fn on_node<T: redis::FromRedisValue>(
        &mut self,
        node: Option<&ClusterNode>,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match (self, node) {
            (RedisConn::Cluster(c), Some(node)) => {
                let raw = c
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: node.host.clone(),
                            port: node.port,
                        }),
                    )
                    .await?;
                Ok(redis::from_redis_value(raw)?)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// `CLUSTER NODES` as some node sees it.
async fn cluster_nodes(c: &mut ClusterConnection) -> redis::RedisResult<String> {
    let raw = c
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    Ok(redis::from_redis_value(raw)?)
}

/// Whether every primary has a replica: in a cluster, each primary that
/// serves slots has a connected replica in `CLUSTER NODES`; on one server,
/// `ROLE` lists a connected replica.
pub async fn every_primary_has_a_replica(conn: &mut RedisConn) -> redis::RedisResult<bool> {
    match conn {
        RedisConn::Cluster(c) => Ok(primaries_with_replicas(&cluster_nodes(c).await?)),
        RedisConn::Single(_) => {
            // ROLE: ["master", offset, [[ip, port, offset], ...]] on a primary.
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
            Ok(match role.as_slice() {
                [_, _, redis::Value::Array(replicas), ..] => !replicas.is_empty(),
                _ => false,
            })
        }
    }
}

/// Whether each slot-serving primary in `CLUSTER NODES` text has a
/// connected replica.
fn primaries_with_replicas(text: &str) -> bool {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| f.len() >= 8)
        .collect();
    let primaries: Vec<&str> = lines
        .iter()
        .filter(|f| f.len() >= 9 && f[2].contains("master") && !f[2].contains("fail"))
        .map(|f| f[0])
        .collect();
    !primaries.is_empty()
        && primaries.iter().all(|id| {
            lines.iter().any(|f| {
                f[2].contains("slave")
                    && !f[2].contains("fail")
                    && f[3] == *id
                    && f[7] == "connected"
            })
        })
}

/// The primaries that serve at least one slot, from `CLUSTER NODES` text
/// (`<id> <host:port@bus[,hostname]> <flags> <master> ... <slots...>`).
fn parse_primaries(text: &str) -> Vec<ClusterNode> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 {
            continue; // no slots
        }
        let flags = fields[2];
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        let addr = fields[1].split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse() else { continue };
        out.push(ClusterNode {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        });
    }
    out.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    out
}

/// What connections are made to.
#[derive(Clone)]
enum Target {
    Single(Client),
    /// The seed nodes, credentials set, and the TLS files when given.
    Cluster {
        seeds: Vec<ConnectionInfo>,
        tls: Option<TlsCertificates>,
    },
}

/// Opens connections described by [`RedisSettings`].
#[derive(Clone)]
pub struct Connector {
    target: Target,
    settings: RedisSettings,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.settings.redacted_url())
            .finish()
    }
}

static CRYPTO: Once = Once::new();

/// rustls needs one process-wide crypto provider before the first TLS handshake.
fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        // Fails only when another provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What to do about a TLS handshake that failed over a certificate, or
/// `None` for any other error. rustls's messages are the only trace the
/// driver keeps of the cause, so this reads them.
fn tls_hint(err: &redis::RedisError) -> Option<&'static str> {
    let text = err.to_string();
    if text.contains("invalid peer certificate") {
        Some(
            "the server's certificate is not trusted: set redis.tls_ca_file to the CA that signed it, and use a host name the certificate names",
        )
    } else if text.contains("CertificateRequired")
        || text.contains("alert: BadCertificate")
        || text.contains("alert: UnknownCA")
    {
        Some(
            "the server wants a client certificate it trusts: set redis.tls_cert_file and redis.tls_key_file",
        )
    } else {
        None
    }
}

impl Connector {
    /// Describes the connection; does not connect.
    pub fn new(settings: &RedisSettings) -> Result<Self, ConnectError> {
        let url = settings.effective_url();
        let urls = if settings.cluster {
            settings.seed_urls()
        } else {
            vec![url.clone()]
        };
        let mut seeds = Vec::with_capacity(urls.len());
        for url in &urls {
            if url.starts_with("rediss://") {
                install_crypto_provider();
            }
            let mut info = url.as_str().into_connection_info().map_err(|source| {
                ConnectError::InvalidAddress {
                    url: redact_url(url),
                    source,
                }
            })?;
            let mut redis_info = info.redis_settings().clone();
            if let Some(user) = &settings.username {
                redis_info = redis_info.set_username(user);
            }
            if let Some(password) = &settings.password {
                redis_info = redis_info.set_password(password.expose());
            }
            info = info.set_redis_settings(redis_info);
            seeds.push(info);
        }
        let invalid = |source| ConnectError::InvalidAddress {
            url: redact_url(&url),
            source,
        };
        let tls = settings
            .tls_files()
            .map_err(|source| ConnectError::TlsFile {
                url: redact_url(&url),
                source,
            })?
            .map(|files| TlsCertificates {
                client_tls: files
                    .client
                    .map(|(client_cert, client_key)| ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                root_cert: files.ca,
            });
        let target = if settings.cluster {
            // Checked here so a bad seed fails at start-up, not on first use.
            cluster_builder(&seeds, &tls, settings, settings.response_timeout())
                .build()
                .map_err(invalid)?;
            Target::Cluster { seeds, tls }
        } else {
            let info = seeds.pop().expect("one URL");
            let client = match tls {
                // A private CA and/or a client certificate; `build_with_tls`
                // refuses a URL that is not `rediss://`.
                Some(certs) => Client::build_with_tls(info, certs),
                None => Client::open(info),
            }
            .map_err(invalid)?;
            Target::Single(client)
        };
        Ok(Self {
            target,
            settings: settings.clone(),
        })
    }

    /// Whether connections go to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// The URL, password redacted, for messages.
    pub fn url(&self) -> String {
        self.settings.redacted_url()
    }

    /// [`ConnectError::TlsRejected`] for a certificate problem, else
    /// [`ConnectError::Unreachable`].
    fn unreachable(&self, source: redis::RedisError) -> ConnectError {
        match tls_hint(&source) {
            Some(hint) => ConnectError::TlsRejected {
                url: self.url(),
                source,
                hint,
            },
            None => ConnectError::Unreachable {
                url: self.url(),
                source,
            },
        }
    }

    /// The client of one server, for one-off (synchronous) connections;
    /// `None` in cluster mode.
    pub fn client(&self) -> Option<&Client> {
        match &self.target {
            Target::Single(client) => Some(client),
            Target::Cluster { .. } => None,
        }
    }

    fn manager_config(&self, response_timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout()))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(self.settings.retry_max_delay_ms))
    }

    /// A connection whose commands wait at most `response_timeout` (plus
    /// connecting), made now: fails at once when Redis does not answer.
    async fn open(&self, response_timeout: Duration) -> Result<RedisConn, ConnectError> {
        match &self.target {
            Target::Single(client) => {
                let config = self.manager_config(response_timeout);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(RedisConn::Single)
                    .map_err(|source| self.unreachable(source))
            }
            Target::Cluster { seeds, tls } => {
                let client = self.cluster_client(seeds, tls, response_timeout)?;
                client
                    .get_async_connection_with_config(self.cluster_config(response_timeout))
                    .await
                    .map(RedisConn::Cluster)
                    .map_err(|source| self.unreachable(source))
            }
        }
    }

    fn cluster_client(
        &self,
        seeds: &[ConnectionInfo],
        tls: &Option<TlsCertificates>,
        response_timeout: Duration,
    ) -> Result<ClusterClient, ConnectError> {
        cluster_builder(seeds, tls, &self.settings, response_timeout)
            .build()
            .map_err(|source| ConnectError::InvalidAddress {
                url: self.url(),
                source,
            })
    }

    fn cluster_config(&self, response_timeout: Duration) -> ClusterConfig {
        ClusterConfig::new()
            .set_connection_timeout(self.settings.connect_timeout())
            .set_response_timeout(response_timeout)
    }

    /// The shared auto-reconnecting connection for ordinary commands.
    /// Fails at once when Redis does not answer; see [`Self::shared_with_retry`].
    pub async fn shared(&self) -> Result<RedisConn, ConnectError> {
        self.open(self.settings.response_timeout()).await
    }

    /// The shared connection, created without connecting: the first command
    /// connects. Lets a process serve its health endpoint before Redis is up.
    pub fn shared_lazy(&self) -> Result<RedisConn, ConnectError> {
        let timeout = self.settings.response_timeout();
        match &self.target {
            Target::Single(client) => ConnectionManager::new_lazy_with_config(
                client.clone(),
                self.manager_config(timeout),
            )
            .map(RedisConn::Single)
            .map_err(|source| ConnectError::InvalidAddress {
                url: self.url(),
                source,
            }),
            Target::Cluster { seeds, tls } => Ok(RedisConn::Cluster(
                self.cluster_client(seeds, tls, timeout)?
                    .get_pending_async_connection_with_config(self.cluster_config(timeout)),
            )),
        }
    }

    /// PINGs over `conn` until Redis answers, with the same backoff and log
    /// lines as [`Self::shared_with_retry`], or until `cancel` fires.
    pub async fn wait_until_up(
        &self,
        conn: &mut RedisConn,
        cancel: &CancellationToken,
    ) -> Result<(), ConnectError> {
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(self.settings.retry_max_delay_ms),
        );
        loop {
            match redis::cmd("PING").query_async::<String>(conn).await {
                Ok(_) => return Ok(()),
                Err(err) => match tls_hint(&err) {
                    Some(hint) => tracing::warn!(
                        url = %self.url(),
                        retry_in_ms = backoff.peek().as_millis() as u64,
                        "TLS handshake with Redis failed ({err}); {hint}; retrying"
                    ),
                    None => tracing::warn!(
                        url = %self.url(),
                        retry_in_ms = backoff.peek().as_millis() as u64,
                        "Redis is not reachable ({err}); is redis-server running and is redis.url right? retrying"
                    ),
                },
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(ConnectError::Cancelled { url: self.url() }),
                _ = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }

    /// A dedicated auto-reconnecting connection for blocking commands that
    /// block for at most `block`.
    pub async fn blocking(&self, block: Duration) -> Result<RedisConn, ConnectError> {
        self.open(block + self.settings.response_timeout()).await
    }

    /// [`Self::shared`], retried with exponential backoff (capped at
    /// `redis.retry_max_delay_ms`) until Redis answers or `cancel` fires.
    /// Logs one line per failed attempt naming the address and the cause.
    pub async fn shared_with_retry(
        &self,
        cancel: &CancellationToken,
    ) -> Result<RedisConn, ConnectError> {
        let mut conn = self.shared_lazy()?;
        self.wait_until_up(&mut conn, cancel).await?;
        Ok(conn)
    }
}

/// A cluster client for `seeds`: credentials are in the seeds; TLS files,
/// timeouts and the retry cap come from the settings.
fn cluster_builder(
    seeds: &[ConnectionInfo],
    tls: &Option<TlsCertificates>,
    settings: &RedisSettings,
    response_timeout: Duration,
) -> ClusterClientBuilder {
    let mut builder = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(settings.connect_timeout())
        .response_timeout(response_timeout)
        // A failover takes the cluster a few seconds (cluster-node-timeout
        // plus the election); a command waits through it, within its own
        // timeout, rather than failing at the first refused try.
        .overall_response_timeout(Some(response_timeout))
        .retries(16)
        .min_retry_wait(50)
        .max_retry_wait(settings.retry_max_delay_ms);
    if let Some(certs) = tls {
        builder = builder.certs(certs.clone());
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,host-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 1 3 disconnected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 1 1 connected
e5 127.0.0.1:7005@17005 master - 0 1 5 connected 10923-16383
f6 127.0.0.1:7006@17006 master - 0 1 6 connected
";
        let ports: Vec<u16> = parse_primaries(text).iter().map(|n| n.port).collect();
        assert_eq!(ports, vec![7001, 7002, 7005]);
    }

    #[test]
    fn replicas_are_counted_per_primary() {
        let both = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-8191
b2 127.0.0.1:7002@17002 master - 0 1 2 connected 8192-16383
c3 127.0.0.1:7003@17003 slave a1 0 1 1 connected
d4 127.0.0.1:7004@17004 slave b2 0 1 2 connected
";
        assert!(primaries_with_replicas(both));
        let one = both.replace("slave b2 0 1 2 connected", "slave,fail b2 0 1 2 connected");
        assert!(!primaries_with_replicas(&one));
        let none = "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-16383\n";
        assert!(!primaries_with_replicas(none));
    }
}
