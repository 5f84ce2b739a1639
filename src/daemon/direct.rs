//! Direct mode: the cascade run in the caller's process, against the same
//! Redis and workers, without a daemon (the REPL's `:direct`).
//!
//! A direct runner is a small daemon instance that never takes from the
//! queue: it has its own instance id, heartbeat, reply list and reply
//! reader, so workers answer it and a live daemon recovers what it held if
//! the process dies.

use std::sync::Arc;

use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::DaemonError;
use super::cascade;
use super::instance::Instance;
use super::status::DaemonStatus;
use crate::config::Settings;
use crate::state::QueryState;
use crate::store::blackboard::{Blackboard, BlackboardError};
use crate::store::connection::Connector;

/// Runs queries through the cascade in this process.
pub struct DirectRunner {
    sh: Arc<Instance>,
    background: CancellationToken,
    tracker: TaskTracker,
    never: CancellationToken,
}

impl DirectRunner {
    /// Connects and starts the reply reader, worker directory and heartbeat.
    pub async fn start(settings: Settings) -> Result<Self, DaemonError> {
        let settings = Arc::new(settings);
        let instance = format!("direct-{}", crate::store::names::generate_instance_id());
        let status = Arc::new(DaemonStatus::new(instance.clone()));
        let connector = Connector::new(&settings.redis)?;
        let conn = connector.shared().await?;
        // Its queries' ids are chosen in partition 0 (see `ask`), so one
        // instance, one processing list and one reply reader serve them all.
        let bb = Blackboard::from_settings(conn, &settings).partition(0);
        status.set_redis_ok(true);
        let sh = Instance::new(bb, settings, status);
        let background = CancellationToken::new();
        let tracker = TaskTracker::new();
        super::spawn_shared_tasks(&sh, &tracker, &background).await;
        super::spawn_reply_reader(&sh, &connector, &tracker, &background).await?;
        Ok(Self {
            sh,
            background,
            tracker,
            never: CancellationToken::new(),
        })
    }

    /// The Blackboard it uses.
    pub fn blackboard(&self) -> &Blackboard {
        &self.sh.bb
    }

    /// Runs `text` through the cascade; the outcome is recorded exactly as
    /// a daemon records it (state, feed, counters, completion signal).
    pub async fn ask(&self, text: &str) -> Result<QueryState, BlackboardError> {
        let keys = self.sh.bb.keys();
        let mut q = QueryState::with_id(keys.new_query_id(), text);
        q.metadata = serde_json::json!({"client": "repl", "mode": "direct"});
        let raw = serde_json::to_string(&q).expect("state serializes");
        let mut conn = self.sh.bb.connection();
        let _: () = redis::pipe()
            .atomic()
            .set_ex(
                self.sh.bb.keys().state(&q.query_id),
                &raw,
                self.sh.settings.orchestrator.state_ttl_s,
            )
            .ignore()
            .lpush(&self.sh.processing_key, &q.query_id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        self.sh.status.begin_query();
        let mut held = self.sh.held.hold(q.query_id.as_bytes());
        cascade::handle_entry(
            &self.sh,
            q.query_id.clone().into_bytes(),
            Some(Some(raw)),
            &mut held,
            &self.never,
        )
        .await;
        drop(held);
        self.sh.status.end_query();
        let _: redis::RedisResult<i64> = conn.del(self.sh.bb.keys().done(&q.query_id)).await;
        Ok(self.sh.bb.get_state(&q.query_id).await?.unwrap_or(q))
    }

    /// Stops the background tasks and says goodbye.
    pub async fn stop(self) {
        self.background.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        let _ = self.sh.bb.remove_health(&self.sh.status.instance).await;
    }
}
