//! The client side: enqueue a query, wait for its outcome, show it.
//! Used by `kitbash query` and the REPL. [`bench`](mod@bench) is the load generator,
//! a client that sends many.

pub mod bench;

use std::time::Duration;

use crate::store::connection::RedisConn;

use crate::config::Settings;
use crate::state::QueryState;
use crate::store::blackboard::{Blackboard, BlackboardError};
use crate::store::connection::{ConnectError, Connector};

/// Errors of client operations.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Redis could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A Blackboard operation failed (including a full queue).
    #[error(transparent)]
    Blackboard(#[from] BlackboardError),
    /// The outcome did not arrive in time.
    #[error(
        "no outcome for query {query_id} within {waited_s:.1} s; is `kitbash serve` running? (its state stays readable: kitbash timeline {query_id})"
    )]
    Timeout {
        /// The query.
        query_id: String,
        /// How long we waited.
        waited_s: f64,
    },
    /// The completion signal came but the state is gone.
    #[error("query {0} finished but its state has expired")]
    StateGone(String),
}

/// A connection to Kitbash through Redis.
#[derive(Clone)]
pub struct Client {
    bb: Blackboard,
    connector: Connector,
    blocking: Option<RedisConn>,
    max_wait: Duration,
    /// `redis.wait_replicas` as configured (`None`: decided from the topology).
    wait_replicas: Option<u32>,
    /// The priority lane of the queries it submits.
    priority: crate::store::lanes::Lane,
}

impl Client {
    /// Connects (once: a client reports an unreachable Redis at once rather
    /// than waiting). `max_wait` bounds one wait for an outcome.
    pub async fn connect(settings: &Settings, max_wait: Duration) -> Result<Self, ClientError> {
        let connector = Connector::new(&settings.redis)?;
        let conn = connector.shared().await?;
        let bb = Blackboard::from_settings(conn, settings);
        bb.resolve_wait_replicas(settings.redis.wait_replicas)
            .await?;
        Ok(Self {
            wait_replicas: settings.redis.wait_replicas,
            bb,
            connector,
            blocking: None,
            max_wait,
            priority: Default::default(),
        })
    }

    /// The Blackboard under this client.
    pub fn blackboard(&self) -> &Blackboard {
        &self.bb
    }

    /// How many daemons have a live health key now (0: nobody takes queries).
    pub async fn live_daemons(&self) -> Result<usize, ClientError> {
        Ok(self
            .bb
            .list_health()
            .await?
            .iter()
            .filter(|h| h.role == crate::store::blackboard::ProcessRole::Daemon)
            .count())
    }

    /// Submits later queries with this priority (`normal` by default).
    pub fn set_priority(&mut self, lane: crate::store::lanes::Lane) {
        self.priority = lane;
    }

    /// The priority queries are submitted with.
    pub fn priority(&self) -> crate::store::lanes::Lane {
        self.priority
    }

    /// Enqueues `text` in the client's priority lane; refuses when that
    /// lane is at its limit.
    pub async fn submit(
        &self,
        text: &str,
        metadata: serde_json::Value,
    ) -> Result<QueryState, ClientError> {
        let mut q = QueryState::new(text);
        q.metadata = metadata;
        q.set_priority(self.priority);
        match self.bb.enqueue(&q).await {
            Ok(()) => {}
            // Queued on the primary: it runs unless a failover loses it.
            Err(e @ BlackboardError::NotReplicated { .. }) => {
                tracing::warn!(query_id = %q.query_id, "{e}");
                if self.wait_replicas.is_none()
                    && let Ok(0) = self.bb.resolve_wait_replicas(None).await
                {
                    tracing::warn!(
                        "a primary has no replica now (after a failover?): enqueues stop waiting for one until the client reconnects"
                    );
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(q)
    }

    /// Waits for the outcome of `query_id` (BLPOP on its completion signal,
    /// on a dedicated connection) and returns its final state.
    pub async fn wait(
        &mut self,
        query_id: &str,
        timeout: Duration,
    ) -> Result<QueryState, ClientError> {
        let timeout = timeout.min(self.max_wait);
        if self.blocking.is_none() {
            // Sized for the longest wait this client allows, not for this
            // one: the connection is reused, and a later, longer wait must
            // not be cut short by its response timeout.
            self.blocking = Some(self.connector.blocking(self.max_wait).await?);
        }
        let conn = self.blocking.as_mut().expect("just set");
        let started = std::time::Instant::now();
        let signal: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(self.bb.keys().done(query_id))
            .arg(timeout.as_secs_f64().max(0.01))
            .query_async(conn)
            .await
            .map_err(BlackboardError::from)?;
        if signal.is_none() {
            // The signal may have been read by someone else: the state says.
            if let Some(s) = self.bb.get_state(query_id).await?
                && s.status.is_terminal()
            {
                return Ok(s);
            }
            return Err(ClientError::Timeout {
                query_id: query_id.to_string(),
                waited_s: started.elapsed().as_secs_f64(),
            });
        }
        self.bb
            .get_state(query_id)
            .await?
            .ok_or_else(|| ClientError::StateGone(query_id.to_string()))
    }

    /// Enqueues and waits.
    pub async fn ask(&mut self, text: &str, timeout: Duration) -> Result<QueryState, ClientError> {
        let q = self.submit(text, serde_json::json!({})).await?;
        self.wait(&q.query_id, timeout).await
    }
}

/// End-to-end latency of a finished query, in ms, from its timestamps.
pub fn latency_ms(state: &QueryState) -> Option<f64> {
    let created = state.created()?;
    let done = state.completed()?;
    Some((done - created).num_microseconds()? as f64 / 1000.0)
}
