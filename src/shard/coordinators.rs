//! Which node coordinates a group or a transactional id, as every shard sees it.
//!
//! A single node (no `controller_quorum_voters`) coordinates everything itself, as before the
//! cluster: no internal topics. In a cluster the rule is Kafka's (`coordinator::coordinator_key`):
//! the leader of the key's partition of `__consumer_offsets` / `__transaction_state`. Every
//! group-keyed and transactional-id-keyed API asks [`Shard::not_coordinator`] first and answers
//! NOT_COORDINATOR on another node; FindCoordinator asks [`Shard::prepare_coordinators`] once
//! per request, then [`Shard::coordinator_endpoint`] per key.
//!
//! The two topics are created lazily, as Kafka does: the first FindCoordinator that needs one
//! asks the active controller (through `Shard::change_metadata`, forwarded if need be) to
//! create it, once every voter has registered (`coordinator_key::ready_to_create`), and is
//! answered COORDINATOR_NOT_AVAILABLE if it is not there (and published here) by then.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;

use super::{Shard, COORDINATOR_SHARD};
use crate::coordinator::coordinator_key::{self, CoordinatorKind};
use crate::coordinator::metadata::MetadataCommand;

/// A coordinator's endpoint: node id, host, port.
pub type CoordinatorEndpoint = (i32, String, i32);

impl Shard {
    /// The node ids of the configured voters, or `None` on a single node.
    fn cluster_voters(&self) -> Option<Vec<i32>> {
        let voters = crate::cluster::parse_voters(&self.config.controller_quorum_voters).ok()?;
        (!voters.is_empty()).then(|| voters.iter().map(|v| v.node_id).collect())
    }

    /// The node coordinating `key`: this node on a single node; in a cluster the leader of
    /// the key's internal partition, or COORDINATOR_NOT_AVAILABLE (no topic yet, no leader).
    pub fn coordinator_of(&self, kind: CoordinatorKind, key: &str) -> Result<i32, ResponseError> {
        if self.cluster_voters().is_none() {
            return Ok(self.config.node_id);
        }
        coordinator_key::locate(&self.metadata(), kind, key).map(|b| b.node_id)
    }

    /// `None` when this node coordinates `key`, else the error a keyed request gets here:
    /// NOT_COORDINATOR, as Kafka answers wherever it does not own the key's partition.
    /// In a cluster, a key of a `__consumer_offsets` / `__transaction_state` partition this
    /// node leads but has not loaded yet gets COORDINATOR_LOAD_IN_PROGRESS (retriable), as in
    /// Kafka (`groups::replicated`, `txns::replicated`).
    pub fn not_coordinator(&self, kind: CoordinatorKind, key: &str) -> Option<ResponseError> {
        match self.coordinator_of(kind, key) {
            Ok(node) if node == self.config.node_id => {
                (!self.key_loaded(kind, key)).then_some(ResponseError::CoordinatorLoadInProgress)
            }
            _ => Some(crate::error::not_coordinator_code()),
        }
    }

    /// Whether the coordinator of `kind` has loaded `key`'s internal partition (always on a
    /// single node, whose coordinators keep their state in node-local logs).
    fn key_loaded(&self, kind: CoordinatorKind, key: &str) -> bool {
        if self.cluster_voters().is_none() {
            return true;
        }
        let metadata = self.metadata();
        let Some(topic) = metadata.topics.get(kind.topic()) else {
            return false;
        };
        let partition = coordinator_key::partition_for(key, topic.partitions);
        let loaded = match kind {
            CoordinatorKind::Group => self.router.loaded_offsets_partitions(),
            CoordinatorKind::Transaction => self.router.loaded_txn_partitions(),
            // Served on the coordinator shard only (`shares::replicated`), which answers
            // COORDINATOR_LOAD_IN_PROGRESS itself.
            CoordinatorKind::Share => return true,
        };
        loaded.is_loaded(partition)
    }

    /// The coordinator epoch this node stamps into the markers of `transactional_id`: 0 on a
    /// single node; in a cluster the leader epoch of the id's `__transaction_state` partition,
    /// as Kafka's (a coordinator that moved writes with a higher one, fencing the old one).
    pub fn coordinator_epoch(&self, transactional_id: &str) -> i32 {
        let metadata = self.metadata();
        let Some(topic) = metadata.topics.get(CoordinatorKind::Transaction.topic()) else {
            return super::txns::COORDINATOR_EPOCH;
        };
        let partition = coordinator_key::partition_for(transactional_id, topic.partitions);
        usize::try_from(partition)
            .ok()
            .and_then(|p| topic.assignment.get(p))
            .map_or(super::txns::COORDINATOR_EPOCH, |a| a.leader_epoch)
    }

    /// FindCoordinator's answer for `key`: the coordinator's endpoint on listener `listener`
    /// (the one the request came in on). Call
    /// [`Shard::prepare_coordinators`] once per request first.
    pub fn coordinator_endpoint(
        &self,
        kind: CoordinatorKind,
        key: &str,
        listener: &str,
    ) -> Result<CoordinatorEndpoint, ResponseError> {
        if self.cluster_voters().is_none() {
            let (host, port) = self
                .config
                .advertised_host_port()
                .unwrap_or_else(|_| ("localhost".into(), 9092));
            return Ok((self.config.node_id, host, port));
        }
        coordinator_key::locate(&self.metadata(), kind, key).map(|b| {
            let (host, port) = b.endpoint_on(listener);
            (b.node_id, host.to_string(), port)
        })
    }

    /// In a cluster whose metadata lacks the internal topic of `kind`, asks the active
    /// controller to create it, once every voter has registered (module doc); waits for the
    /// answer (bounded by the forwarding timeout). One attempt per call: FindCoordinator calls
    /// it once per request, whatever the number of keys.
    pub async fn prepare_coordinators(self: &Rc<Self>, kind: CoordinatorKind) {
        let Some(voters) = self.cluster_voters() else {
            return;
        };
        let metadata = self.metadata();
        if metadata.topics.contains_key(kind.topic())
            || !coordinator_key::ready_to_create(&metadata, &voters)
        {
            return;
        }
        let (partitions, replication_factor, min_insync_replicas) = match kind {
            CoordinatorKind::Group => (
                self.config.offsets_topic_num_partitions,
                self.config.offsets_topic_replication_factor,
                None,
            ),
            CoordinatorKind::Transaction => (
                self.config.transaction_state_log_num_partitions,
                self.config.transaction_state_log_replication_factor,
                Some(self.config.transaction_state_log_min_isr),
            ),
            CoordinatorKind::Share => (
                self.config.share_coordinator_state_topic_num_partitions,
                self.config.share_coordinator_state_topic_replication_factor,
                Some(self.config.share_coordinator_state_topic_min_isr),
            ),
        };
        let command = MetadataCommand::CreateInternalTopic {
            name: kind.topic().to_string(),
            partitions,
            replication_factor,
            min_insync_replicas,
        };
        let created = self
            .invoke_on(COORDINATOR_SHARD, move |c| async move {
                c.change_metadata(vec![command], false).await
            })
            .await;
        match created.as_deref() {
            Ok([Ok(())]) => {}
            Ok([Err(e)]) if e.code == ResponseError::TopicAlreadyExists => {}
            other => {
                tracing::info!(topic = kind.topic(), result = ?other, "creating a coordinator topic failed; asked again at the next FindCoordinator")
            }
        }
    }
}
