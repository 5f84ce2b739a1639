//! What every query task of one daemon instance shares.

use std::sync::Arc;

use super::finisher::{Finisher, Target};
use super::replies::{Pending, WorkerDirectory};
use super::status::DaemonStatus;
use crate::aliases::Aliases;
use crate::config::{LayerSettings, Settings};
use crate::store::blackboard::Blackboard;
use crate::store::orphans::Held;

/// One daemon instance: what every query task of it shares.
pub(super) struct Instance {
    pub bb: Blackboard,
    pub settings: Arc<Settings>,
    pub layers: Vec<(String, LayerSettings)>,
    pub processing_key: String,
    pub reply_key: String,
    pub pending: Pending,
    pub workers: WorkerDirectory,
    pub status: Arc<DaemonStatus>,
    /// The entries of the processing list that a task of this daemon holds.
    pub held: Arc<Held>,
    /// Other names of entities, for layer0's second stage.
    pub aliases: Arc<Aliases>,
    /// Writes the outcomes of the instance's queries, batched.
    pub finisher: Finisher,
}

impl Instance {
    /// What the queries of the instance named by `status` share, for the
    /// current partition of `bb` alone (one server has only that one).
    pub(super) fn new(
        bb: Blackboard,
        settings: Arc<Settings>,
        status: Arc<DaemonStatus>,
    ) -> Arc<Self> {
        let aliases = Arc::new(Aliases::load_logged(&settings.knowledge.aliases));
        Self::build(bb, settings, status, WorkerDirectory::default(), aliases)
    }

    /// One instance per partition of `bb`'s keys (one on one server), all
    /// sharing the daemon's status, worker directory and aliases; each with
    /// its own processing list, reply list and finisher in its partition.
    pub(super) fn group(
        bb: Blackboard,
        settings: Arc<Settings>,
        status: Arc<DaemonStatus>,
    ) -> Vec<Arc<Self>> {
        let aliases = Arc::new(Aliases::load_logged(&settings.knowledge.aliases));
        let workers = WorkerDirectory::default();
        (0..bb.keys().partitions())
            .map(|p| {
                Self::build(
                    bb.partition(p),
                    settings.clone(),
                    status.clone(),
                    workers.clone(),
                    aliases.clone(),
                )
            })
            .collect()
    }

    /// The instance's express twin, for its critical and high queries: the
    /// same processing list, reply routing, holds and status, but its own
    /// Redis connection (`conn`) and its own finisher, so a priority
    /// query's commands and outcome never wait in line behind the
    /// pipelined commands and finishing batches of hundreds of lower
    /// queries in flight.
    pub(super) fn express_twin(
        self: &Arc<Self>,
        conn: crate::store::connection::RedisConn,
    ) -> Arc<Self> {
        let bb = self.bb.with_connection(conn);
        let finisher = Finisher::start(Target {
            bb: bb.clone(),
            processing_key: self.processing_key.clone(),
            state_ttl_s: self.settings.orchestrator.state_ttl_s,
            done_ttl_s: self.settings.orchestrator.done_ttl_s,
            status: self.status.clone(),
        });
        Arc::new(Self {
            bb,
            finisher,
            settings: self.settings.clone(),
            layers: self.layers.clone(),
            processing_key: self.processing_key.clone(),
            reply_key: self.reply_key.clone(),
            pending: self.pending.clone(),
            workers: self.workers.clone(),
            status: self.status.clone(),
            held: self.held.clone(),
            aliases: self.aliases.clone(),
        })
    }

    fn build(
        bb: Blackboard,
        settings: Arc<Settings>,
        status: Arc<DaemonStatus>,
        workers: WorkerDirectory,
        aliases: Arc<Aliases>,
    ) -> Arc<Self> {
        let instance = &status.instance;
        let processing_key = bb.keys().processing(instance);
        let finisher = Finisher::start(Target {
            bb: bb.clone(),
            processing_key: processing_key.clone(),
            state_ttl_s: settings.orchestrator.state_ttl_s,
            done_ttl_s: settings.orchestrator.done_ttl_s,
            status: status.clone(),
        });
        Arc::new(Self {
            finisher,
            processing_key,
            reply_key: bb.keys().replies(instance),
            pending: Pending::default(),
            workers,
            layers: settings
                .layers_in_order()
                .into_iter()
                .map(|(n, l)| (n.to_string(), l.clone()))
                .collect(),
            aliases,
            bb,
            settings,
            status,
            held: Held::new(),
        })
    }
}
