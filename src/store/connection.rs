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

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ClientTlsConfig, IntoConnectionInfo, TlsCertificates};
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

/// Opens connections described by [`RedisSettings`].
#[derive(Clone)]
pub struct Connector {
    client: Client,
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
        let invalid = |source| ConnectError::InvalidAddress {
            url: redact_url(&url),
            source,
        };
        if url.starts_with("rediss://") {
            install_crypto_provider();
        }
        let mut info = url.as_str().into_connection_info().map_err(invalid)?;
        let mut redis_info = info.redis_settings().clone();
        if let Some(user) = &settings.username {
            redis_info = redis_info.set_username(user);
        }
        if let Some(password) = &settings.password {
            redis_info = redis_info.set_password(password.expose());
        }
        info = info.set_redis_settings(redis_info);
        let tls = settings
            .tls_files()
            .map_err(|source| ConnectError::TlsFile {
                url: redact_url(&url),
                source,
            })?;
        let client = match tls {
            // A private CA and/or a client certificate; `build_with_tls`
            // refuses a URL that is not `rediss://`.
            Some(files) => Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: files
                        .client
                        .map(|(client_cert, client_key)| ClientTlsConfig {
                            client_cert,
                            client_key,
                        }),
                    root_cert: files.ca,
                },
            ),
            None => Client::open(info),
        }
        .map_err(invalid)?;
        Ok(Self {
            client,
            settings: settings.clone(),
        })
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

    /// The underlying client, for one-off connections.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn manager_config(&self, response_timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout()))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(self.settings.retry_max_delay_ms))
    }

    /// The shared auto-reconnecting connection for ordinary commands.
    /// Fails at once when Redis does not answer; see [`Self::shared_with_retry`].
    pub async fn shared(&self) -> Result<ConnectionManager, ConnectError> {
        let config = self.manager_config(self.settings.response_timeout());
        ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|source| self.unreachable(source))
    }

    /// The shared connection, created without connecting: the first command
    /// connects. Lets a process serve its health endpoint before Redis is up.
    pub fn shared_lazy(&self) -> Result<ConnectionManager, ConnectError> {
        let config = self.manager_config(self.settings.response_timeout());
        ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(|source| {
            ConnectError::InvalidAddress {
                url: self.url(),
                source,
            }
        })
    }

    /// PINGs over `conn` until Redis answers, with the same backoff and log
    /// lines as [`Self::shared_with_retry`], or until `cancel` fires.
    pub async fn wait_until_up(
        &self,
        conn: &mut ConnectionManager,
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
    pub async fn blocking(&self, block: Duration) -> Result<ConnectionManager, ConnectError> {
        let config = self.manager_config(block + self.settings.response_timeout());
        ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|source| self.unreachable(source))
    }

    /// [`Self::shared`], retried with exponential backoff (capped at
    /// `redis.retry_max_delay_ms`) until Redis answers or `cancel` fires.
    /// Logs one line per failed attempt naming the address and the cause.
    pub async fn shared_with_retry(
        &self,
        cancel: &CancellationToken,
    ) -> Result<ConnectionManager, ConnectError> {
        let mut conn = self.shared_lazy()?;
        self.wait_until_up(&mut conn, cancel).await?;
        Ok(conn)
    }
}
