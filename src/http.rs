//! The daemon's HTTP endpoint: `/health`, `/health/ready`, `/health/detailed`,
//! `/metrics`. PLACEHOLDER: helper-3 implements this file with axum.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::blackboard::Blackboard;
use crate::config::LayerSettings;
use crate::daemon::status::DaemonStatus;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// The daemon's live status.
    pub status: Arc<DaemonStatus>,
    /// For queue depth, health records and layer stats.
    pub blackboard: Blackboard,
    /// The cascade's layers, in order.
    pub layers: Vec<(String, LayerSettings)>,
}

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let _ = (listener, state);
    shutdown.cancelled().await;
    Ok(())
}
