//! Cluster metadata: the topics, their ids, partition counts and config overrides.
//!
//! [`ClusterMetadata`] is a plain value. The coordinator shard (shard 0) owns the authoritative
//! copy; it turns a [`MetadataCommand`] into a [`MetadataRecord`] with
//! [`ClusterMetadata::record_for`] (checks, and the choices such as a new topic's id) and
//! applies it with [`ClusterMetadata::replay`] (pure, total, deterministic: replaying the
//! metadata log's records rebuilds the same value); [`ClusterMetadata::apply`] does both. The
//! caller persists the records (`shard::metadata_log`) and then publishes the result; every
//! other shard holds an
//! `Arc<ClusterMetadata>` snapshot replaced as a whole on each change. A change therefore never
//! shows half-applied to anyone.
//!
//! Dynamic broker configs (AlterConfigs on the BROKER resource) are part of it too, by
//! resource name (a node id, or `""` for the cluster default); see `broker_config`. So are the
//! ACL bindings (CreateAcls / DeleteAcls: [`MetadataCommand::CreateAcl`],
//! [`MetadataCommand::DeleteAcls`]; checked by `security::acl::AclBinding::validate`, at most
//! `security::acl::ACLS_MAX`).
//!
//! Brokers and placement (the cluster): brokers register ([`MetadataCommand::RegisterBroker`],
//! from the active controller's `cluster::liveness`), are fenced when their heartbeats stop
//! or they shut down, and unfenced when they come back. New partitions are placed by
//! [`ClusterMetadata::record_for`] over the registered unfenced brokers
//! (`coordinator::placement::place`, starting the round robin at the cluster's partition count so
//! successive topics start on different brokers), or where the client's explicit assignment
//! says (checked as Kafka's `validateManualPartitionAssignment`); the record carries the
//! decided assignment, so replay stays pure. Each partition's leader is its first unfenced
//! replica, and its ISR all its unfenced replicas (all of them when placed). Fencing a broker
//! takes it out of every ISR and the leadership of its partitions away (to the first unfenced
//! in-sync replica in preference order, or -1; leader epoch + 1; the ISR keeps its last
//! member, as Kafka's `handleBrokerFenced`), unfencing it gives leaderless partitions a leader
//! again (Kafka's `handleBrokerUnfenced`); a topic with `unclean.leader.election.enable` may
//! take an out-of-sync replica as leader then, its ISR reset to that one replica.
//!
//! Replication (Kafka's KRaft model): every assignment has a partition epoch, + 1 on each
//! change of leader, ISR or replicas, and the leader epoch, + 1 on each leader change
//! ([`PartitionAssignment::change`]). A partition's leader changes its ISR with
//! [`MetadataCommand::AlterPartition`], checked against both epochs as Kafka's controller
//! does; every per-partition change is one [`MetadataRecord::PartitionChanged`] carrying the
//! whole new assignment. [`ClusterMetadata::min_insync_replicas`] and
//! [`ClusterMetadata::unclean_leader_election_enabled`] read the topic configs the controller
//! and the leaders act on.
//!
//! The pre-quorum rule: metadata with no registered broker is a single node's from before the
//! cluster (or a node whose registration is not wired in yet). There, topics get no
//! assignment (an empty `TopicMeta::assignment` means "on this node", as before the cluster),
//! a replication factor above 1 is refused as "only 1 broker(s)", and the request handlers
//! check explicit assignments against the local node id. The first broker to register adopts
//! every such topic: its partitions are assigned to it (leader epoch 0), so metadata with
//! brokers has every topic assigned ([`ClusterMetadata::adopt_single_node`] is the same step
//! for a single-node data directory that moves into the quorum).
//!
//! Invariants: topic names are valid Kafka topic names, and topics created through
//! [`MetadataCommand::CreateTopic`] are neither Kafka internal names nor under the broker's
//! reserved prefix ([`check_creatable_topic_name`]); every topic has >= 1 partition and a
//! non-nil topic id unique in the cluster; `version` grows by one with each applied command.
//! With registered brokers, every topic has one assignment per partition, each with a
//! non-empty list of distinct registered replicas, its leader one of them (and unfenced) or
//! -1, its ISR a non-empty subset of them; leader and partition epochs never decrease, and a
//! partition that changes gets a newer partition epoch; a registration's node id is its key.
//! At most [`BROKERS_MAX`] brokers.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::invariants::{debug_check, ensure, Violation};
pub use super::reassignment::Reassignment;
use super::{broker_config, topic_config};
use crate::coordinator::placement;
use crate::security::acl::{AclBinding, ACLS_MAX};

/// The longest topic name Kafka accepts.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The most partitions one topic may have here (a guard against typos that would create
/// millions of files).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 100_000;
/// The most brokers a cluster may register.
pub const BROKERS_MAX: usize = 1024;
/// The longest broker host name (a DNS name is at most 253 bytes).
pub const BROKER_HOST_BYTES_MAX: usize = 255;
/// The longest broker rack name.
pub const BROKER_RACK_BYTES_MAX: usize = 255;

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: Uuid,
    pub partitions: i32,
    /// Config overrides set by CreateTopics / AlterConfigs; validated.
    pub configs: BTreeMap<String, String>,
    /// Internal topics are hidden from `Metadata` unless asked for by name.
    #[serde(default)]
    pub internal: bool,
    /// Where each partition lives, by partition index (`assignment[p]`). Empty only in
    /// metadata written before the cluster (single node): such topics are assigned to that
    /// node when its metadata moves into the quorum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignment: Vec<PartitionAssignment>,
}

/// Where one partition lives: its replicas (brokers, in preference order), its leader and
/// leader epoch, its in-sync replicas (Kafka's `PartitionRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    pub replicas: Vec<i32>,
    /// The broker that leads the partition, or -1 when none can (every replica fenced).
    pub leader: i32,
    /// Grows by one each time the leader changes.
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// Grows by one on every change of the leader, the ISR or the replicas (Kafka's partition
    /// epoch): an AlterPartition must name the current one, so a leader that missed a change
    /// cannot undo it. 0 in records written before replication.
    #[serde(default)]
    pub partition_epoch: i32,
    /// The reassignment in progress, if any (AlterPartitionReassignments;
    /// `coordinator::reassignment`). Absent in records written before reassignments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassignment: Option<Reassignment>,
}

impl PartitionAssignment {
    /// Sets the leader and the ISR, moving the epochs as Kafka's `PartitionChangeBuilder`
    /// does: leader epoch + 1 when the leader changes, partition epoch + 1 when anything
    /// changes. Returns whether anything changed.
    pub fn change(&mut self, leader: i32, isr: Vec<i32>) -> bool {
        if leader == self.leader && isr == self.isr {
            return false;
        }
        if leader != self.leader {
            self.leader = leader;
            self.leader_epoch = self.leader_epoch.saturating_add(1);
        }
        self.isr = isr;
        self.partition_epoch = self.partition_epoch.saturating_add(1);
        true
    }
}

/// Kafka's `PartitionChangeBuilder.bestLeader`: the first replica, in preference order, that is
/// in `isr` and `acceptable`; else, when `unclean_ok`, the first acceptable replica; else -1.
pub fn best_leader(
    replicas: &[i32],
    isr: &[i32],
    unclean_ok: bool,
    acceptable: impl Fn(i32) -> bool,
) -> i32 {
    let clean = replicas
        .iter()
        .copied()
        .find(|&r| isr.contains(&r) && acceptable(r));
    let unclean = || {
        replicas
            .iter()
            .copied()
            .find(|&r| unclean_ok && acceptable(r))
    };
    clean.or_else(unclean).unwrap_or(-1)
}

/// One broker as registered with the quorum (Kafka's `RegisterBrokerRecord` and its fencing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    /// A new id per process start: a restarted broker registers again under a new one.
    pub incarnation_id: Uuid,
    /// The Kafka listener clients are sent to.
    pub host: String,
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// A fenced broker (heartbeats stopped, or shutting down) is not given to clients.
    pub fenced: bool,
    /// Every listener's advertised address by listener name (Kafka's registration lists all
    /// endpoints): a client is sent to the address of the listener it came in on. Empty in a
    /// registration from before listeners were registered: `host`/`port` serve every name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerEndpoint>,
}

/// One listener of a registered broker: its name (`PLAINTEXT`, `SASL_SSL`, or a name of
/// `listener_security_protocol_map`) and the address it advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerEndpoint {
    pub name: String,
    pub host: String,
    pub port: i32,
}

impl BrokerRegistration {
    /// The address clients that came in on listener `name` are given for this broker: that
    /// listener's, else (an unknown name, or an old registration) the first listener's.
    pub fn endpoint_on(&self, name: &str) -> (&str, i32) {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map_or((self.host.as_str(), self.port), |l| {
                (l.host.as_str(), l.port)
            })
    }
}

/// The whole cluster's metadata as one value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// First producer id of the next block the coordinator may hand out. Ids below it may
    /// have been given to producers and are never given again.
    #[serde(default)]
    pub producer_id_block_next: i64,
    /// Dynamic broker configs by resource name (a node id, or `""` for the cluster-wide
    /// defaults); checked by `broker_config::check`. Empty sets are not kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The brokers registered with the quorum, by node id. Written as a list of
    /// registrations ([`brokers_as_list`]): JSON map keys are strings, which an integer key
    /// read through the buffered content of [`MetadataRecord`]'s tagged `Snapshot` refuses.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "brokers_as_list"
    )]
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    /// Client quotas by entity (DescribeClientQuotas / AlterClientQuotas, `crate::quota`).
    /// Empty value sets are not kept.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "crate::quota::table_as_list"
    )]
    pub client_quotas: crate::quota::QuotaTable,
    /// SCRAM credentials by user, then mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-512`):
    /// salted keys only, never a password (Kafka's `UserScramCredentialRecord`s).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram_credentials: BTreeMap<String, BTreeMap<String, StoredScramCredential>>,
    /// The ACL bindings (Kafka's `AccessControlEntryRecord`s), at most
    /// `security::acl::ACLS_MAX`, ordered so the authorizer finds a resource's by range.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acls: BTreeSet<AclBinding>,
    /// Dynamic group configs by group id (Kafka's GROUP config resource, checked by
    /// `group_config::check`), at most [`GROUP_CONFIG_SETS_MAX`] groups. Empty sets are not
    /// kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// The most groups with dynamic configs the metadata keeps (a bound on its memory; Kafka has
/// none).
pub const GROUP_CONFIG_SETS_MAX: usize = 10_000;

/// One user's SCRAM credential for one mechanism (RFC 5802's salt, StoredKey, ServerKey and
/// iteration count; `security::scram` derives them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

/// The SCRAM mechanisms a credential may be stored for.
pub const SCRAM_MECHANISMS: [&str; 2] = ["SCRAM-SHA-256", "SCRAM-SHA-512"];
/// Kafka's bounds on a SCRAM credential's iteration count.
pub const SCRAM_ITERATIONS_MIN: i32 = 4096;
/// See [`SCRAM_ITERATIONS_MIN`].
pub const SCRAM_ITERATIONS_MAX: i32 = 16384;
/// The longest SCRAM user name, salt or key stored, in bytes.
pub const SCRAM_FIELD_BYTES_MAX: usize = 1024;

/// The largest metadata record batch: one snapshot of the whole metadata must fit (the
/// metadata log's and the quorum's bound).
pub const METADATA_BATCH_BYTES_MAX: u32 = 64 << 20;

/// `ClusterMetadata::brokers` as a JSON list of registrations, keyed again by node id when
/// read (a node id listed twice: the last registration wins).
mod brokers_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::BrokerRegistration;

    pub fn serialize<S: Serializer>(
        brokers: &BTreeMap<i32, BrokerRegistration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(brokers.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<i32, BrokerRegistration>, D::Error> {
        let list = Vec::<BrokerRegistration>::deserialize(deserializer)?;
        Ok(list.into_iter().map(|b| (b.node_id, b)).collect())
    }
}

/// Producer ids are reserved durably in blocks of this many (as Kafka's AllocateProducerIds),
/// so that a restart never reuses an id and most InitProducerId calls write nothing.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A change to the metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetadataCommand {
    CreateTopic {
        name: String,
        partitions: i32,
        configs: BTreeMap<String, String>,
        /// Replicas per partition, defaults filled in (with `assignments`, their length).
        #[serde(default = "one_replica")]
        replication_factor: i16,
        /// The client's replica list for each partition, by partition index (CreateTopics'
        /// `assignments`); `None`: placed by [`ClusterMetadata::record_for`].
        #[serde(default)]
        assignments: Option<Vec<Vec<i32>>>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: i32,
        /// The client's replica list for each new partition, in order (CreatePartitions'
        /// `assignments`); `None`: placed. New partitions have as many replicas as the
        /// topic's others.
        #[serde(default)]
        assignments: Option<Vec<Vec<i32>>>,
    },
    /// Create one of the coordinators' internal topics (`__consumer_offsets`,
    /// `__transaction_state`; `coordinator::coordinator_key`), placed over the registered
    /// unfenced brokers with `replication_factor` replicas each, at most as many as those
    /// brokers (Kafka's `offsets.topic.replication.factor` is also capped by the live brokers
    /// when the topic is created), a compacted topic (`cleanup.policy=compact`). Issued by
    /// brokers only, never from a client request (clients cannot create internal names);
    /// needs registered brokers (a cluster).
    CreateInternalTopic {
        name: String,
        partitions: i32,
        #[serde(default = "one_replica")]
        replication_factor: i16,
        /// The topic's `min.insync.replicas` (`__transaction_state`: Kafka's
        /// `transaction.state.log.min.isr`), at most its replicas; `None`: the default.
        #[serde(default)]
        min_insync_replicas: Option<i16>,
    },
    /// Register a broker, or register it again (a restart, a changed listener or rack). An
    /// unchanged repeat is refused, so that heartbeats write nothing.
    RegisterBroker {
        registration: BrokerRegistration,
    },
    /// Fence a registered unfenced broker (heartbeats stopped, or shutting down).
    FenceBroker {
        node_id: i32,
    },
    /// Unfence a registered fenced broker (it heartbeats again).
    UnfenceBroker {
        node_id: i32,
    },
    /// Replace all overrides (AlterConfigs semantics).
    SetConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Reserve the next block of producer ids.
    AllocateProducerIdBlock,
    /// Replace the dynamic broker configs of `resource` (a node id, or `""`).
    SetBrokerConfigs {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    /// Kafka's AlterPartition (API 56) as a command: broker `leader_id`, leading
    /// `topic`/`partition` at `leader_epoch` and `partition_epoch` as it believes, sets the ISR
    /// to `new_isr` (ISR shrink or expand). Checked as Kafka's
    /// `ReplicationControlManager.validateAlterPartitionData`, in its order:
    /// - no such topic or partition: UNKNOWN_TOPIC_OR_PARTITION;
    /// - `leader_epoch` or `partition_epoch` above the current ones: NOT_CONTROLLER (the
    ///   asker has seen newer metadata than this controller: retriable);
    /// - `leader_epoch` below the current one: FENCED_LEADER_EPOCH;
    /// - `leader_id` is not the current leader: INVALID_REQUEST;
    /// - `partition_epoch` below the current one: INVALID_UPDATE_VERSION;
    /// - `new_isr` not distinct members of the replicas, empty, or without the leader:
    ///   INVALID_REQUEST;
    /// - a member of `new_isr` not registered or fenced: INELIGIBLE_REPLICA.
    ///
    /// Accepted, it becomes [`MetadataRecord::PartitionChanged`]: the same leader and leader
    /// epoch, ISR `new_isr`, partition epoch + 1 (also when `new_isr` equals the current ISR:
    /// a record is always written). The new assignment: `Shard::change_metadata` answers
    /// `Ok(())` only once the change is installed on the coordinator shard, so the caller reads
    /// it there with [`ClusterMetadata::partition`] on `Shard::metadata()` (it may already
    /// show a later change). Should a forwarded change's publication time out, the installed
    /// assignment still has the old `partition_epoch`: wait for the next metadata install.
    AlterPartition {
        topic: String,
        partition: i32,
        leader_id: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    },
    /// Create or replace `user`'s SCRAM credential for `mechanism` (AlterUserScramCredentials
    /// upsertion, or `freshet user create`).
    SetScramCredential {
        user: String,
        mechanism: String,
        credential: StoredScramCredential,
    },
    /// Delete `user`'s SCRAM credential for `mechanism` (AlterUserScramCredentials deletion).
    DeleteScramCredential {
        user: String,
        mechanism: String,
    },
    /// Elect a leader for `topic`/`partition` (ElectLeaders, API 43, one partition; and the
    /// controller's automatic leader balancing), as Kafka's
    /// `ReplicationControlManager.electLeader`: no such partition: UNKNOWN_TOPIC_OR_PARTITION;
    /// PREFERRED when the first replica leads already, or UNCLEAN when the partition has a
    /// leader: ELECTION_NOT_NEEDED; then [`ClusterMetadata::elected`] decides, and when it
    /// changes nothing: PREFERRED_LEADER_NOT_AVAILABLE (preferred) or
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE (unclean). Accepted, a
    /// [`MetadataRecord::PartitionChanged`].
    ElectLeader {
        topic: String,
        partition: i32,
        election: Election,
    },
    /// AlterClientQuotas for one entity: set each `Some` value, remove each `None` key.
    /// INVALID_REQUEST for an empty entity, an unknown key, a value Kafka refuses
    /// (`quota::check_value`), or past `quota::QUOTA_ENTITIES_MAX` entities.
    AlterClientQuota {
        entity: crate::quota::QuotaEntity,
        ops: Vec<(String, Option<f64>)>,
    },
    /// Add an ACL binding (CreateAcls); one already there is accepted and changes nothing.
    CreateAcl {
        acl: AclBinding,
    },
    /// Remove these ACL bindings (DeleteAcls: the bindings its filter matched); those no
    /// longer there are skipped.
    DeleteAcls {
        acls: Vec<AclBinding>,
    },
    /// AlterPartitionReassignments (API 45) for one partition, as Kafka's
    /// `ReplicationControlManager.alterPartitionReassignment`: no such topic or partition:
    /// UNKNOWN_TOPIC_OR_PARTITION; `target` `None` cancels (NO_REASSIGNMENT_IN_PROGRESS when
    /// none is, INVALID_REPLICA_ASSIGNMENT when the revert needs an unclean election the
    /// topic does not allow); `Some` must be a valid replica list (INVALID_REPLICA_ASSIGNMENT,
    /// `check_replica_list`) and, without `allow_replication_factor_change`, as long as the
    /// current replicas (INVALID_REPLICATION_FACTOR). A reassignment in progress is reverted
    /// first. Accepted, a [`MetadataRecord::PartitionChanged`] (see `coordinator::reassignment`).
    AlterReassignment {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
        #[serde(default)]
        allow_replication_factor_change: bool,
    },
    /// Replace the dynamic configs of group `group` (IncrementalAlterConfigs / AlterConfigs on
    /// a GROUP resource; empty: removed).
    SetGroupConfigs {
        group: String,
        configs: BTreeMap<String, String>,
    },
}

/// The kind of a leader election (Kafka's `ElectionType`: PREFERRED = 0, UNCLEAN = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Election {
    /// Move leadership to the first replica, if it is an unfenced ISR member (Kafka's
    /// `electPreferredLeader`).
    Preferred,
    /// Give a leaderless partition a leader: an unfenced ISR member, else any unfenced
    /// replica, whose ISR becomes it alone (Kafka's `electAnyLeader` with UNCLEAN), whatever
    /// the topic's `unclean.leader.election.enable`: an operator asked for it.
    Unclean,
}

/// One record of the cluster metadata log: a change as it was decided (ids chosen, blocks
/// counted), or the whole metadata. [`ClusterMetadata::replay`] applies it, purely and
/// deterministically, so replaying the log rebuilds exactly the metadata that was published.
/// A [`MetadataCommand`] becomes a record through [`ClusterMetadata::record_for`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// The whole metadata, version included: the first record of a new log, a migrated
    /// `cluster-metadata.json`, or a compaction.
    Snapshot {
        metadata: ClusterMetadata,
    },
    TopicCreated {
        name: String,
        topic: TopicMeta,
    },
    TopicDeleted {
        name: String,
    },
    PartitionsCreated {
        name: String,
        total: i32,
        /// The new partitions' assignments, in order (empty for a topic without assignments,
        /// and in records written before the cluster).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        assignments: Vec<PartitionAssignment>,
    },
    /// All overrides of a topic replaced (AlterConfigs semantics).
    TopicConfigsSet {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `next` are reserved (the new `producer_id_block_next`).
    ProducerIdBlockAllocated {
        next: i64,
    },
    /// The dynamic broker configs of `resource` replaced (empty: removed).
    BrokerConfigsSet {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    /// A broker registered (first start, or a restart under a new incarnation id); replaces
    /// any earlier registration of that node id.
    BrokerRegistered {
        registration: BrokerRegistration,
    },
    /// A broker's heartbeats stopped, or it is shutting down.
    BrokerFenced {
        node_id: i32,
    },
    /// A fenced broker heartbeats again.
    BrokerUnfenced {
        node_id: i32,
    },
    /// One partition's new assignment, whole (Kafka's `PartitionChangeRecord`): the record of
    /// every per-partition change (AlterPartition's ISR changes, leader elections). Its
    /// `partition_epoch` is the previous one + 1. Replayed on a topic or partition that is not
    /// there, it changes nothing but the version.
    PartitionChanged {
        topic: String,
        partition: i32,
        assignment: PartitionAssignment,
    },
    /// The quotas of one entity replaced (empty: removed).
    ClientQuotaSet {
        entity: crate::quota::QuotaEntity,
        values: BTreeMap<String, crate::quota::QuotaValue>,
    },
    /// `user`'s SCRAM credential for `mechanism` set (Kafka's `UserScramCredentialRecord`).
    UserScramCredentialSet {
        user: String,
        mechanism: String,
        credential: StoredScramCredential,
    },
    /// `user`'s SCRAM credential for `mechanism` removed (Kafka's
    /// `RemoveUserScramCredentialRecord`).
    UserScramCredentialRemoved {
        user: String,
        mechanism: String,
    },
    /// An ACL binding added.
    AclCreated {
        acl: AclBinding,
    },
    /// ACL bindings removed.
    AclsDeleted {
        acls: Vec<AclBinding>,
    },
    /// The dynamic configs of a group replaced (empty: removed).
    GroupConfigsSet {
        group: String,
        configs: BTreeMap<String, String>,
    },
}

fn one_replica() -> i16 {
    1
}

/// Why a command was refused, as the Kafka error and message the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError {
    pub code: ResponseError,
    pub message: String,
}

impl MetadataError {
    fn new(code: ResponseError, message: impl Into<String>) -> Self {
        MetadataError {
            code,
            message: message.into(),
        }
    }
}

/// Checks a SCRAM credential change as Kafka's `ScramControlManager` does: a user name, a
/// SCRAM mechanism (UNSUPPORTED_SASL_MECHANISM), and for a credential iterations within
/// Kafka's bounds and bounded fields (UNACCEPTABLE_CREDENTIAL).
fn check_scram_credential(
    user: &str,
    mechanism: &str,
    credential: Option<&StoredScramCredential>,
) -> Result<(), MetadataError> {
    if user.is_empty() || user.len() > SCRAM_FIELD_BYTES_MAX {
        return Err(MetadataError::new(
            ResponseError::UnacceptableCredential,
            "Username must not be empty",
        ));
    }
    if !SCRAM_MECHANISMS.contains(&mechanism) {
        return Err(MetadataError::new(
            ResponseError::UnsupportedSaslMechanism,
            "Unknown SCRAM mechanism",
        ));
    }
    if let Some(c) = credential {
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&c.iterations) {
            return Err(MetadataError::new(
                ResponseError::UnacceptableCredential,
                format!(
                    "Iterations must be between {SCRAM_ITERATIONS_MIN} and {SCRAM_ITERATIONS_MAX}"
                ),
            ));
        }
        let fields = [&c.salt, &c.stored_key, &c.server_key];
        if fields
            .iter()
            .any(|f| f.is_empty() || f.len() > SCRAM_FIELD_BYTES_MAX)
        {
            return Err(MetadataError::new(
                ResponseError::UnacceptableCredential,
                "Salt and keys must be non-empty and at most 1024 bytes",
            ));
        }
    }
    Ok(())
}

/// Checks a topic name the way Kafka's `Topic.validate` does.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |why: &str| MetadataError::new(ResponseError::InvalidTopicException, why);
    if name.is_empty() {
        return Err(invalid("Topic name is illegal, it can't be empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("Topic name cannot be \".\" or \"..\""));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(invalid(
            "Topic name is illegal, it can't be longer than 249 characters",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(&format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Kafka's internal topics (`Topic.isInternal`, plus KRaft's metadata log): clients may not
/// create them. Freshet keeps its own under `<data_dir>/internal/`, outside the topics.
pub const INTERNAL_TOPIC_NAMES: [&str; 4] = [
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
    "__cluster_metadata",
];

/// Names starting with this are the broker's own files in the data directory (e.g. the disk
/// probe `.freshet-disk-probe-<n>`): no topic may start with it.
pub const RESERVED_TOPIC_PREFIX: &str = ".freshet";

/// Checks that a (valid) name may be created by a client: not one of Kafka's internal topics
/// (INVALID_REQUEST, as Kafka's `ControllerApis.createTopics` answers), not under the
/// broker's reserved prefix (INVALID_TOPIC_EXCEPTION).
pub fn check_creatable_topic_name(name: &str) -> Result<(), MetadataError> {
    if INTERNAL_TOPIC_NAMES.contains(&name) {
        return Err(MetadataError::new(
            ResponseError::InvalidRequest,
            format!("Creation of internal topic {name} is prohibited."),
        ));
    }
    if name.starts_with(RESERVED_TOPIC_PREFIX) {
        return Err(MetadataError::new(
            ResponseError::InvalidTopicException,
            format!(
                "Topic name \"{name}\" is reserved: names starting with \"{RESERVED_TOPIC_PREFIX}\" are the broker's own files."
            ),
        ));
    }
    Ok(())
}

fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), MetadataError> {
    for (name, value) in configs {
        topic_config::validate(name, value)
            .map_err(|e| MetadataError::new(ResponseError::InvalidConfig, e.0))?;
    }
    Ok(())
}

/// Checks one manual replica list as Kafka's `validateManualPartitionAssignment` does: not
/// empty, only registered brokers, no broker twice, and `replicas_expected` replicas when
/// given (INVALID_REPLICA_ASSIGNMENT, with Kafka's messages).
pub fn check_replica_list(
    replicas: &[i32],
    is_registered: impl Fn(i32) -> bool,
    replicas_expected: Option<usize>,
) -> Result<(), MetadataError> {
    let bad = |why: String| {
        Err(MetadataError::new(
            ResponseError::InvalidReplicaAssignment,
            why,
        ))
    };
    if replicas.is_empty() {
        return bad("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (i, &broker) in sorted.iter().enumerate() {
        if !is_registered(broker) {
            return bad(format!(
                "The manual partition assignment includes broker {broker}, but no such broker \
                 is registered."
            ));
        }
        if i > 0 && sorted[i - 1] == broker {
            return bad(format!(
                "The manual partition assignment includes the broker {broker} more than once."
            ));
        }
    }
    if let Some(expected) = replicas_expected {
        if sorted.len() != expected {
            return bad(format!(
                "The manual partition assignment includes a partition with {} replica(s), but \
                 this is not consistent with previous partitions, which have {expected} \
                 replica(s).",
                sorted.len()
            ));
        }
    }
    Ok(())
}

/// Checks a registration's fields (INVALID_REQUEST): a node id not negative, a host of
/// 1..=[`BROKER_HOST_BYTES_MAX`] bytes, a TCP port, a rack of 1..=[`BROKER_RACK_BYTES_MAX`]
/// bytes when set.
fn check_registration(registration: &BrokerRegistration) -> Result<(), MetadataError> {
    let bad = |why: String| Err(MetadataError::new(ResponseError::InvalidRequest, why));
    let node_id = registration.node_id;
    if node_id < 0 {
        return bad(format!(
            "Invalid broker id {node_id}: node ids are not negative."
        ));
    }
    if registration.host.is_empty() || registration.host.len() > BROKER_HOST_BYTES_MAX {
        return bad(format!(
            "Broker {node_id}: the listener host must have 1 to {BROKER_HOST_BYTES_MAX} bytes."
        ));
    }
    if !(1..=i32::from(u16::MAX)).contains(&registration.port) {
        return bad(format!(
            "Broker {node_id}: invalid listener port {}.",
            registration.port
        ));
    }
    if let Some(rack) = &registration.rack {
        if rack.is_empty() || rack.len() > BROKER_RACK_BYTES_MAX {
            return bad(format!(
                "Broker {node_id}: the rack must have 1 to {BROKER_RACK_BYTES_MAX} bytes."
            ));
        }
    }
    Ok(())
}

/// New partitions to check: of a new topic, or added to an existing one.
struct NewPartitions<'a> {
    /// The index of the first new partition.
    first: i32,
    count: i32,
    replication_factor: i16,
    /// The client's replica lists, one per new partition.
    assignments: Option<&'a [Vec<i32>]>,
    /// CreateTopics prefixes placement errors with "Unable to replicate the partition ...";
    /// CreatePartitions gives the placer's message as it is (as Kafka does).
    creating_topic: bool,
}

impl TopicMeta {
    /// Replicas per partition (1 for a topic without assignments).
    pub fn replication_factor(&self) -> i16 {
        self.assignment
            .first()
            .map_or(1, |a| i16::try_from(a.replicas.len()).unwrap_or(i16::MAX))
    }
}

impl ClusterMetadata {
    /// Checks `command` against the current state without changing anything: what
    /// `validate_only` requests and the first step of [`Self::apply`] use.
    pub fn check(&self, command: &MetadataCommand) -> Result<(), MetadataError> {
        match command {
            MetadataCommand::CreateTopic {
                name,
                partitions,
                configs,
                replication_factor,
                assignments,
            } => {
                validate_topic_name(name)?;
                check_creatable_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(MetadataError::new(
                        ResponseError::TopicAlreadyExists,
                        format!("Topic '{name}' already exists."),
                    ));
                }
                if *partitions < 1 || *partitions > PARTITIONS_PER_TOPIC_MAX {
                    return Err(MetadataError::new(
                        ResponseError::InvalidPartitions,
                        format!("Number of partitions must be in [1, {PARTITIONS_PER_TOPIC_MAX}], got {partitions}."),
                    ));
                }
                validate_configs(configs)?;
                let layout = NewPartitions {
                    first: 0,
                    count: *partitions,
                    replication_factor: *replication_factor,
                    assignments: assignments.as_deref(),
                    creating_topic: true,
                };
                self.check_new_partitions(&layout)
            }
            MetadataCommand::CreateInternalTopic {
                name, partitions, ..
            } => self.check_internal_topic(name, *partitions),
            MetadataCommand::DeleteTopic { name } => self.topic(name).map(|_| ()),
            MetadataCommand::CreatePartitions {
                name,
                total,
                assignments,
            } => self.check_growth(name, *total, assignments.as_deref()),
            MetadataCommand::RegisterBroker { .. }
            | MetadataCommand::FenceBroker { .. }
            | MetadataCommand::UnfenceBroker { .. } => self.check_broker_change(command),
            MetadataCommand::SetConfigs { name, configs } => {
                self.topic(name)?;
                validate_configs(configs)
            }
            MetadataCommand::SetBrokerConfigs { resource, configs } => {
                if resource != broker_config::DEFAULT_RESOURCE && resource.parse::<i32>().is_err() {
                    return Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        format!("Node id must be an integer, but it is: {resource}"),
                    ));
                }
                broker_config::check(resource, configs)
                    .map_err(|why| MetadataError::new(ResponseError::InvalidRequest, why))
            }
            MetadataCommand::SetScramCredential {
                user,
                mechanism,
                credential,
            } => check_scram_credential(user, mechanism, Some(credential)),
            MetadataCommand::DeleteScramCredential { user, mechanism } => {
                check_scram_credential(user, mechanism, None)?;
                let exists = self
                    .scram_credentials
                    .get(user)
                    .is_some_and(|m| m.contains_key(mechanism));
                if !exists {
                    return Err(MetadataError::new(
                        ResponseError::ResourceNotFound,
                        "Attempt to delete a user credential that does not exist",
                    ));
                }
                Ok(())
            }
            MetadataCommand::AllocateProducerIdBlock => {
                if self.producer_id_block_next > i64::MAX - PRODUCER_ID_BLOCK_SIZE {
                    return Err(MetadataError::new(
                        ResponseError::UnknownServerError,
                        "producer ids exhausted",
                    ));
                }
                Ok(())
            }
            MetadataCommand::AlterPartition { .. } => self.check_alter_partition(command),
            MetadataCommand::ElectLeader {
                topic,
                partition,
                election,
            } => self.elected(topic, *partition, *election).map(|_| ()),
            MetadataCommand::AlterClientQuota { entity, ops } => {
                self.client_quota_after(entity, ops).map(|_| ())
            }
            MetadataCommand::CreateAcl { acl } => {
                acl.validate()
                    .map_err(|e| MetadataError::new(ResponseError::InvalidRequest, e.0))?;
                if self.acls.len() >= ACLS_MAX && !self.acls.contains(acl) {
                    return Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        format!("The cluster already holds {ACLS_MAX} ACLs, the most it keeps."),
                    ));
                }
                Ok(())
            }
            MetadataCommand::DeleteAcls { .. } => Ok(()),
            MetadataCommand::AlterReassignment { .. } => self.reassigned(command).map(|_| ()),
            MetadataCommand::SetGroupConfigs { group, configs } => {
                if group.is_empty() {
                    return Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        "Group id must not be empty".to_string(),
                    ));
                }
                if !configs.is_empty()
                    && !self.group_configs.contains_key(group)
                    && self.group_configs.len() >= GROUP_CONFIG_SETS_MAX
                {
                    return Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        format!(
                            "{GROUP_CONFIG_SETS_MAX} groups already have configs, the most kept"
                        ),
                    ));
                }
                super::group_config::check(configs)
                    .map_err(|why| MetadataError::new(ResponseError::InvalidConfig, why))
            }
        }
    }

    /// The assignment a [`MetadataCommand::AlterReassignment`] gives its partition, or why
    /// there is none (see the variant and `coordinator::reassignment`). Pure.
    pub fn reassigned(
        &self,
        command: &MetadataCommand,
    ) -> Result<PartitionAssignment, MetadataError> {
        let MetadataCommand::AlterReassignment {
            topic,
            partition,
            target,
            allow_replication_factor_change,
        } = command
        else {
            unreachable!("called for AlterReassignment only");
        };
        let Some(current) = self.partition(topic, *partition) else {
            let why = if self.topics.contains_key(topic) {
                format!("Unable to find partition {topic}:{partition}.")
            } else {
                format!("Unable to find a topic named {topic}.")
            };
            return Err(MetadataError::new(
                ResponseError::UnknownTopicOrPartition,
                why,
            ));
        };
        let live = |b: i32| self.brokers.get(&b).is_some_and(|r| !r.fenced);
        if target.is_none() && current.reassignment.is_none() {
            return Err(MetadataError::new(
                ResponseError::NoReassignmentInProgress,
                "No partition reassignment is in progress.",
            ));
        }
        let unclean_ok = self.unclean_leader_election_enabled(topic);
        let base = super::reassignment::revert(current, unclean_ok, live).map_err(|why| {
            MetadataError::new(
                ResponseError::InvalidReplicaAssignment,
                format!("{topic}-{partition}: {why}"),
            )
        })?;
        let Some(target) = target else {
            return Ok(base);
        };
        if target.len() > BROKERS_MAX {
            return Err(MetadataError::new(
                ResponseError::InvalidReplicaAssignment,
                format!("A replica list has at most {BROKERS_MAX} brokers."),
            ));
        }
        check_replica_list(target, |b| self.brokers.contains_key(&b), None)?;
        if !allow_replication_factor_change && target.len() != base.replicas.len() {
            return Err(MetadataError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "The replication factor is changed from {} to {}",
                    base.replicas.len(),
                    target.len()
                ),
            ));
        }
        Ok(super::reassignment::start(&base, target, live))
    }

    /// The quotas of `entity` after `ops` (AlterClientQuota), or why they are refused.
    fn client_quota_after(
        &self,
        entity: &crate::quota::QuotaEntity,
        ops: &[(String, Option<f64>)],
    ) -> Result<BTreeMap<String, crate::quota::QuotaValue>, MetadataError> {
        let invalid = |why: String| MetadataError::new(ResponseError::InvalidRequest, why);
        crate::quota::check_entity(entity).map_err(invalid)?;
        let mut values = self.client_quotas.get(entity).cloned().unwrap_or_default();
        for (key, value) in ops {
            match value {
                Some(v) => {
                    crate::quota::check_value(entity, key, *v).map_err(invalid)?;
                    values.insert(key.clone(), crate::quota::QuotaValue(*v));
                }
                None => {
                    if !crate::quota::keys_of(entity).iter().any(|(k, _)| k == key) {
                        return Err(invalid(format!("Invalid configuration key {key}")));
                    }
                    values.remove(key);
                }
            }
        }
        if !values.is_empty()
            && !self.client_quotas.contains_key(entity)
            && self.client_quotas.len() >= crate::quota::QUOTA_ENTITIES_MAX
        {
            return Err(invalid(format!(
                "At most {} client quota entities may be configured.",
                crate::quota::QUOTA_ENTITIES_MAX
            )));
        }
        Ok(values)
    }

    /// The assignment an election of `election` kind gives `topic`/`partition`, or why there is
    /// none (see [`MetadataCommand::ElectLeader`]). Pure.
    pub fn elected(
        &self,
        topic: &str,
        partition: i32,
        election: Election,
    ) -> Result<PartitionAssignment, MetadataError> {
        if !self.topics.contains_key(topic) {
            return Err(MetadataError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("No such topic as {topic}"),
            ));
        }
        let Some(current) = self.partition(topic, partition) else {
            return Err(MetadataError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("No such partition as {topic}-{partition}"),
            ));
        };
        let preferred = current.replicas.first().copied().unwrap_or(-1);
        let not_needed = match election {
            Election::Preferred => current.leader == preferred,
            Election::Unclean => current.leader != -1,
        };
        if not_needed {
            return Err(MetadataError::new(
                ResponseError::ElectionNotNeeded,
                format!("Leader election not needed for topic partition {topic}-{partition}."),
            ));
        }
        let live = |b: i32| self.brokers.get(&b).is_some_and(|r| !r.fenced);
        let valid = |b: i32| current.isr.contains(&b) && live(b);
        let leader = match election {
            Election::Preferred if valid(preferred) => preferred,
            // The current leader is still good: nothing changes (Kafka keeps it too).
            _ if current.leader != -1 && valid(current.leader) => current.leader,
            election => best_leader(
                &current.replicas,
                &current.isr,
                election == Election::Unclean,
                live,
            ),
        };
        let isr = if leader != -1 && !current.isr.contains(&leader) {
            vec![leader]
        } else {
            current.isr.clone()
        };
        let mut next = current.clone();
        if !next.change(leader, isr) {
            let (code, why) = match election {
                Election::Preferred => (
                    ResponseError::PreferredLeaderNotAvailable,
                    "The preferred leader was not available.",
                ),
                Election::Unclean => (
                    ResponseError::EligibleLeadersNotAvailable,
                    "Eligible topic partition leaders are not available.",
                ),
            };
            return Err(MetadataError::new(
                code,
                format!("{topic}-{partition}: {why}"),
            ));
        }
        Ok(next)
    }

    /// The leaderless partitions of topics with `unclean.leader.election.enable` that an
    /// unclean election can give a leader now (a live replica), at most `max`, in topic and
    /// partition order (Kafka's `maybeElectUncleanLeaders`, run by the active controller every
    /// `unclean.leader.election.interval.ms`: the config may have been turned on after the
    /// partition went leaderless). Pure.
    pub fn unclean_elections_due(&self, max: usize) -> Vec<(String, i32)> {
        let mut due = Vec::new();
        if max == 0 {
            return due;
        }
        for (name, topic) in &self.topics {
            if !topic.assignment.iter().any(|a| a.leader == -1)
                || !self.unclean_leader_election_enabled(name)
            {
                continue;
            }
            for (index, a) in topic.assignment.iter().enumerate() {
                let index = i32::try_from(index).unwrap_or(i32::MAX);
                if a.leader == -1 && self.elected(name, index, Election::Unclean).is_ok() {
                    due.push((name.clone(), index));
                    if due.len() >= max {
                        return due;
                    }
                }
            }
        }
        due
    }

    /// The partitions whose preferred leader the controller's automatic leader balancing
    /// should elect now (Kafka's `checkAndTriggerAutoLeaderRebalance`): for each broker, the
    /// partitions whose first replica it is; when more than `imbalance_percentage` % of them
    /// are led by another broker (or by none), those whose preferred replica is an unfenced
    /// ISR member (an election that can succeed). At most `max` of them, in topic and
    /// partition order. Pure.
    pub fn preferred_elections_due(
        &self,
        imbalance_percentage: u32,
        max: usize,
    ) -> Vec<(String, i32)> {
        let live = |b: i32| self.brokers.get(&b).is_some_and(|r| !r.fenced);
        // Per preferred broker: (partitions preferring it, those led elsewhere and electable).
        let mut per_broker: BTreeMap<i32, (u64, Vec<(String, i32)>)> = BTreeMap::new();
        let mut not_preferred: BTreeMap<i32, u64> = BTreeMap::new();
        for (name, topic) in &self.topics {
            for (index, a) in topic.assignment.iter().enumerate() {
                let Some(&preferred) = a.replicas.first() else {
                    continue;
                };
                let entry = per_broker.entry(preferred).or_default();
                entry.0 += 1;
                if a.leader != preferred {
                    *not_preferred.entry(preferred).or_default() += 1;
                    if live(preferred) && a.isr.contains(&preferred) {
                        let index = i32::try_from(index).unwrap_or(i32::MAX);
                        entry.1.push((name.clone(), index));
                    }
                }
            }
        }
        let mut due = Vec::new();
        for (broker, (total, electable)) in per_broker {
            let off = not_preferred.get(&broker).copied().unwrap_or(0);
            // off / total > percentage / 100, in integers.
            if off * 100 > u64::from(imbalance_percentage) * total {
                due.extend(electable);
            }
        }
        due.sort();
        due.truncate(max);
        due
    }

    /// The checks of [`MetadataCommand::AlterPartition`], in Kafka's order (see the variant).
    fn check_alter_partition(&self, command: &MetadataCommand) -> Result<(), MetadataError> {
        let MetadataCommand::AlterPartition {
            topic,
            partition,
            leader_id,
            leader_epoch,
            partition_epoch,
            new_isr,
        } = command
        else {
            unreachable!("called for AlterPartition only");
        };
        let refuse = |code, why: String| {
            Err(MetadataError::new(
                code,
                format!("AlterPartition from node {leader_id} for {topic}-{partition}: {why}"),
            ))
        };
        let Some(current) = self.partition(topic, *partition) else {
            return refuse(
                ResponseError::UnknownTopicOrPartition,
                "no such partition.".into(),
            );
        };
        if *leader_epoch > current.leader_epoch || *partition_epoch > current.partition_epoch {
            return refuse(
                ResponseError::NotController,
                format!(
                    "epochs ({leader_epoch}, {partition_epoch}) are newer than this \
                     controller's ({}, {}).",
                    current.leader_epoch, current.partition_epoch
                ),
            );
        }
        if *leader_epoch < current.leader_epoch {
            return refuse(
                ResponseError::FencedLeaderEpoch,
                format!(
                    "the current leader epoch is {}, not {leader_epoch}.",
                    current.leader_epoch
                ),
            );
        }
        if *leader_id != current.leader {
            return refuse(
                ResponseError::InvalidRequest,
                format!("the current leader is {}.", current.leader),
            );
        }
        if *partition_epoch < current.partition_epoch {
            return refuse(
                ResponseError::InvalidUpdateVersion,
                format!(
                    "the current partition epoch is {}, not {partition_epoch}.",
                    current.partition_epoch
                ),
            );
        }
        let mut distinct = new_isr.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != new_isr.len() || !new_isr.iter().all(|r| current.replicas.contains(r))
        {
            return refuse(
                ResponseError::InvalidRequest,
                format!(
                    "the ISR {new_isr:?} is not a set of the replicas {:?}.",
                    current.replicas
                ),
            );
        }
        if !new_isr.contains(&current.leader) {
            return refuse(
                ResponseError::InvalidRequest,
                format!("the ISR {new_isr:?} does not include the leader."),
            );
        }
        let ineligible: Vec<i32> = new_isr
            .iter()
            .copied()
            .filter(|r| self.brokers.get(r).is_none_or(|b| b.fenced))
            .collect();
        if !ineligible.is_empty() {
            return refuse(
                ResponseError::IneligibleReplica,
                format!(
                    "replicas {ineligible:?} of the ISR {new_isr:?} are fenced or not registered."
                ),
            );
        }
        Ok(())
    }

    /// The checks of [`MetadataCommand::CreateInternalTopic`]: a coordinators' topic, not
    /// there yet, a valid partition count, a registered unfenced broker to place it on
    /// (COORDINATOR_NOT_AVAILABLE without: the caller keeps answering that).
    fn check_internal_topic(&self, name: &str, partitions: i32) -> Result<(), MetadataError> {
        if !crate::coordinator::coordinator_key::is_coordinator_topic(name) {
            return Err(MetadataError::new(
                ResponseError::InvalidRequest,
                format!("{name} is not a coordinator topic."),
            ));
        }
        if self.topics.contains_key(name) {
            return Err(MetadataError::new(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(MetadataError::new(
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be in [1, {PARTITIONS_PER_TOPIC_MAX}], got {partitions}."),
            ));
        }
        if !self.brokers.values().any(|b| !b.fenced) {
            return Err(MetadataError::new(
                ResponseError::CoordinatorNotAvailable,
                "No registered unfenced broker to place the coordinators on.",
            ));
        }
        Ok(())
    }

    /// The checks of [`MetadataCommand::CreatePartitions`]: the topic exists, the count
    /// grows within [`PARTITIONS_PER_TOPIC_MAX`], the client's lists (one per new partition)
    /// and the placement pass [`Self::check_new_partitions`].
    fn check_growth(
        &self,
        name: &str,
        total: i32,
        assignments: Option<&[Vec<i32>]>,
    ) -> Result<(), MetadataError> {
        let topic = self.topic(name)?;
        if total <= topic.partitions {
            return Err(MetadataError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "Topic currently has {} partitions, which is higher than or equal to the requested {total}.",
                    topic.partitions
                ),
            ));
        }
        if total > PARTITIONS_PER_TOPIC_MAX {
            return Err(MetadataError::new(
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be at most {PARTITIONS_PER_TOPIC_MAX}."),
            ));
        }
        let added = total - topic.partitions;
        if let Some(lists) = assignments {
            if lists.len() != added as usize {
                return Err(MetadataError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "Attempted to add {added} additional partition(s), but only {} \
                         assignment(s) were specified.",
                        lists.len()
                    ),
                ));
            }
        }
        let layout = NewPartitions {
            first: topic.partitions,
            count: added,
            replication_factor: topic.replication_factor(),
            assignments,
            creating_topic: false,
        };
        self.check_new_partitions(&layout)
    }

    /// The checks of the broker commands: a registration's fields and the brokers' bound; an
    /// unchanged registration, fencing a fenced broker or unfencing an unfenced one is
    /// refused (so that nothing is written for it).
    fn check_broker_change(&self, command: &MetadataCommand) -> Result<(), MetadataError> {
        match command {
            MetadataCommand::RegisterBroker { registration } => {
                check_registration(registration)?;
                match self.brokers.get(&registration.node_id) {
                    Some(current) if current == registration => Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        format!(
                            "Broker {} is already registered as given: nothing to change.",
                            registration.node_id
                        ),
                    )),
                    None if self.brokers.len() >= BROKERS_MAX => Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        format!("A cluster has at most {BROKERS_MAX} brokers."),
                    )),
                    _ => Ok(()),
                }
            }
            MetadataCommand::FenceBroker { node_id } => {
                if self.registered(*node_id)?.fenced {
                    return Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        format!("Broker {node_id} is already fenced."),
                    ));
                }
                Ok(())
            }
            MetadataCommand::UnfenceBroker { node_id } => {
                if !self.registered(*node_id)?.fenced {
                    return Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        format!("Broker {node_id} is not fenced."),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Applies `command`, returning the new metadata; `self` is unchanged on error.
    /// In debug builds the result is checked against [`Self::check_transition_from`] (commands
    /// only: records read back from disk are input, replayed without the check).
    pub fn apply(&self, command: &MetadataCommand) -> Result<ClusterMetadata, MetadataError> {
        let next = self.replay(&self.record_for(command)?);
        debug_check(|| next.check_transition_from(self));
        Ok(next)
    }

    /// Checks `command` and decides it: the record that [`Self::replay`] applies (a new
    /// topic's id is chosen here).
    pub fn record_for(&self, command: &MetadataCommand) -> Result<MetadataRecord, MetadataError> {
        self.check(command)?;
        Ok(match command {
            MetadataCommand::CreateTopic {
                name,
                partitions,
                configs,
                replication_factor,
                assignments,
            } => MetadataRecord::TopicCreated {
                name: name.clone(),
                topic: TopicMeta {
                    id: self.fresh_topic_id(),
                    partitions: *partitions,
                    configs: configs.clone(),
                    internal: name.starts_with("__"),
                    assignment: if self.brokers.is_empty() {
                        Vec::new()
                    } else {
                        self.decide_assignment(
                            *partitions,
                            *replication_factor,
                            assignments.as_deref(),
                        )?
                    },
                },
            },
            MetadataCommand::CreateInternalTopic {
                name,
                partitions,
                replication_factor,
                min_insync_replicas,
            } => {
                let live = self.brokers.values().filter(|b| !b.fenced).count();
                let replicas = i16::try_from(live)
                    .unwrap_or(i16::MAX)
                    .min(*replication_factor)
                    .max(1);
                // Kafka's `offsets.topic.segment.bytes` / `transaction.state.log.segment.bytes`
                // (100 MiB): segments small enough for the cleaner to compact soon.
                let mut configs = BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("segment.bytes".to_string(), "104857600".to_string()),
                ]);
                // Capped by the replicas (a smaller cluster): a higher minimum would refuse
                // every write of the coordinator.
                if let Some(min) = min_insync_replicas {
                    let min = (*min).clamp(1, replicas);
                    configs.insert("min.insync.replicas".to_string(), min.to_string());
                }
                MetadataRecord::TopicCreated {
                    name: name.clone(),
                    topic: TopicMeta {
                        id: self.fresh_topic_id(),
                        partitions: *partitions,
                        configs,
                        internal: true,
                        assignment: self.decide_assignment(*partitions, replicas, None)?,
                    },
                }
            }
            MetadataCommand::DeleteTopic { name } => {
                MetadataRecord::TopicDeleted { name: name.clone() }
            }
            MetadataCommand::CreatePartitions {
                name,
                total,
                assignments,
            } => MetadataRecord::PartitionsCreated {
                name: name.clone(),
                total: *total,
                assignments: self.new_partitions_assignment(
                    name,
                    *total,
                    assignments.as_deref(),
                )?,
            },
            MetadataCommand::RegisterBroker { registration } => MetadataRecord::BrokerRegistered {
                registration: registration.clone(),
            },
            MetadataCommand::FenceBroker { node_id } => {
                MetadataRecord::BrokerFenced { node_id: *node_id }
            }
            MetadataCommand::UnfenceBroker { node_id } => {
                MetadataRecord::BrokerUnfenced { node_id: *node_id }
            }
            MetadataCommand::SetConfigs { name, configs } => MetadataRecord::TopicConfigsSet {
                name: name.clone(),
                configs: configs.clone(),
            },
            MetadataCommand::AllocateProducerIdBlock => MetadataRecord::ProducerIdBlockAllocated {
                next: self.producer_id_block_next + PRODUCER_ID_BLOCK_SIZE,
            },
            MetadataCommand::SetBrokerConfigs { resource, configs } => {
                MetadataRecord::BrokerConfigsSet {
                    resource: resource.clone(),
                    configs: configs.clone(),
                }
            }
            MetadataCommand::AlterPartition {
                topic,
                partition,
                new_isr,
                ..
            } => {
                let mut assignment = self
                    .partition(topic, *partition)
                    .cloned()
                    .expect("checked: the partition exists");
                assignment.isr = new_isr.clone();
                assignment.partition_epoch = assignment.partition_epoch.saturating_add(1);
                // The last adding replica in sync completes a reassignment, in the same record.
                let live = |b: i32| self.brokers.get(&b).is_some_and(|r| !r.fenced);
                let mut completed = assignment.clone();
                if super::reassignment::complete_if_ready(&mut completed, live) {
                    // One change: the epochs move once from the current assignment.
                    completed.partition_epoch = assignment.partition_epoch;
                    assignment = completed;
                }
                MetadataRecord::PartitionChanged {
                    topic: topic.clone(),
                    partition: *partition,
                    assignment,
                }
            }
            MetadataCommand::SetScramCredential {
                user,
                mechanism,
                credential,
            } => MetadataRecord::UserScramCredentialSet {
                user: user.clone(),
                mechanism: mechanism.clone(),
                credential: credential.clone(),
            },
            MetadataCommand::DeleteScramCredential { user, mechanism } => {
                MetadataRecord::UserScramCredentialRemoved {
                    user: user.clone(),
                    mechanism: mechanism.clone(),
                }
            }
            MetadataCommand::ElectLeader {
                topic,
                partition,
                election,
            } => MetadataRecord::PartitionChanged {
                topic: topic.clone(),
                partition: *partition,
                assignment: self.elected(topic, *partition, *election)?,
            },
            MetadataCommand::AlterClientQuota { entity, ops } => MetadataRecord::ClientQuotaSet {
                entity: entity.clone(),
                values: self.client_quota_after(entity, ops)?,
            },
            MetadataCommand::CreateAcl { acl } => MetadataRecord::AclCreated { acl: acl.clone() },
            MetadataCommand::DeleteAcls { acls } => MetadataRecord::AclsDeleted {
                acls: acls
                    .iter()
                    .filter(|a| self.acls.contains(*a))
                    .cloned()
                    .collect(),
            },
            MetadataCommand::AlterReassignment {
                topic, partition, ..
            } => MetadataRecord::PartitionChanged {
                topic: topic.clone(),
                partition: *partition,
                assignment: self.reassigned(command)?,
            },
            MetadataCommand::SetGroupConfigs { group, configs } => {
                MetadataRecord::GroupConfigsSet {
                    group: group.clone(),
                    configs: configs.clone(),
                }
            }
        })
    }

    /// The metadata after `record`: pure and total (a record read back from the log never
    /// fails to apply; one about a topic that is not there changes nothing but the version).
    /// A snapshot replaces everything; any other record adds one to the version.
    pub fn replay(&self, record: &MetadataRecord) -> ClusterMetadata {
        let mut next = self.clone();
        next.replay_in_place(record);
        next
    }

    /// [`Self::replay`] on `self` itself, without copying the metadata (a change of many
    /// records, such as an ElectLeaders of many partitions, applies each one in place).
    pub fn replay_in_place(&mut self, record: &MetadataRecord) {
        let version_before = self.version;
        let next = self;
        next.version += 1;
        match record {
            MetadataRecord::Snapshot { metadata } => {
                next.clone_from(metadata);
                return;
            }
            MetadataRecord::TopicCreated { name, topic } => {
                next.topics.insert(name.clone(), topic.clone());
            }
            MetadataRecord::TopicDeleted { name } => {
                next.topics.remove(name);
            }
            MetadataRecord::PartitionsCreated {
                name,
                total,
                assignments,
            } => {
                if let Some(topic) = next.topics.get_mut(name) {
                    let fits = topic.assignment.len() == topic.partitions as usize
                        && topic.partitions as usize + assignments.len() == *total as usize;
                    if !assignments.is_empty() && fits {
                        topic.assignment.extend(assignments.iter().cloned());
                    }
                    topic.partitions = *total;
                }
            }
            MetadataRecord::TopicConfigsSet { name, configs } => {
                if let Some(topic) = next.topics.get_mut(name) {
                    topic.configs = configs.clone();
                }
            }
            MetadataRecord::ProducerIdBlockAllocated { next: block_next } => {
                next.producer_id_block_next = next.producer_id_block_next.max(*block_next);
            }
            MetadataRecord::BrokerConfigsSet { resource, configs } => {
                if configs.is_empty() {
                    next.broker_configs.remove(resource);
                } else {
                    next.broker_configs
                        .insert(resource.clone(), configs.clone());
                }
            }
            MetadataRecord::BrokerRegistered { registration } => {
                next.brokers
                    .insert(registration.node_id, registration.clone());
                next.adopt_unassigned_topics(registration);
                next.set_leaderships(registration.node_id, registration.fenced);
            }
            MetadataRecord::BrokerFenced { node_id } => {
                if let Some(b) = next.brokers.get_mut(node_id) {
                    b.fenced = true;
                    next.set_leaderships(*node_id, true);
                }
            }
            MetadataRecord::BrokerUnfenced { node_id } => {
                if let Some(b) = next.brokers.get_mut(node_id) {
                    b.fenced = false;
                    next.set_leaderships(*node_id, false);
                }
            }
            MetadataRecord::PartitionChanged {
                topic,
                partition,
                assignment,
            } => {
                let slot = next
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.assignment.get_mut(usize::try_from(*partition).ok()?));
                if let Some(slot) = slot {
                    *slot = assignment.clone();
                }
            }
            MetadataRecord::ClientQuotaSet { entity, values } => {
                if values.is_empty() {
                    next.client_quotas.remove(entity);
                } else {
                    next.client_quotas.insert(entity.clone(), values.clone());
                }
            }
            MetadataRecord::UserScramCredentialSet {
                user,
                mechanism,
                credential,
            } => {
                next.scram_credentials
                    .entry(user.clone())
                    .or_default()
                    .insert(mechanism.clone(), credential.clone());
            }
            MetadataRecord::UserScramCredentialRemoved { user, mechanism } => {
                if let Some(m) = next.scram_credentials.get_mut(user) {
                    m.remove(mechanism);
                    if m.is_empty() {
                        next.scram_credentials.remove(user);
                    }
                }
            }
            MetadataRecord::AclCreated { acl } => {
                next.acls.insert(acl.clone());
            }
            MetadataRecord::AclsDeleted { acls } => {
                for acl in acls {
                    next.acls.remove(acl);
                }
            }
            MetadataRecord::GroupConfigsSet { group, configs } => {
                if configs.is_empty() {
                    next.group_configs.remove(group);
                } else {
                    next.group_configs.insert(group.clone(), configs.clone());
                }
            }
        }
        assert_eq!(next.version, version_before + 1);
    }

    /// The invariants of the module essay, as code: topic names are valid Kafka names; every
    /// topic has 1..=[`PARTITIONS_PER_TOPIC_MAX`] partitions and a non-nil id unique in the
    /// cluster; the producer id block is not negative; no empty broker config set is kept;
    /// the brokers and assignments are consistent ([`Self::check_assignments`]).
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let mut ids = std::collections::BTreeSet::new();
        for (name, t) in &self.topics {
            if let Err(e) = validate_topic_name(name) {
                return Err(Violation(format!("topic {name:?}: {}", e.message)));
            }
            ensure!(
                (1..=PARTITIONS_PER_TOPIC_MAX).contains(&t.partitions),
                "topic {name}: {} partitions",
                t.partitions
            );
            ensure!(!t.id.is_nil(), "topic {name}: nil topic id");
            ensure!(ids.insert(t.id), "topic {name}: id {} used twice", t.id);
        }
        ensure!(
            self.producer_id_block_next >= 0,
            "producer id block {}",
            self.producer_id_block_next
        );
        for (resource, configs) in &self.broker_configs {
            ensure!(
                !configs.is_empty(),
                "empty broker config set for {resource:?}"
            );
        }
        for (group, configs) in &self.group_configs {
            ensure!(!configs.is_empty(), "empty group config set for {group:?}");
        }
        for (user, mechanisms) in &self.scram_credentials {
            ensure!(!mechanisms.is_empty(), "user {user:?} without credentials");
            for mechanism in mechanisms.keys() {
                ensure!(
                    SCRAM_MECHANISMS.contains(&mechanism.as_str()),
                    "user {user:?}: unknown SCRAM mechanism {mechanism:?}"
                );
            }
        }
        self.check_assignments()
    }

    /// Brokers and assignments: at most [`BROKERS_MAX`] brokers, each under its own node id;
    /// with brokers, every topic has one assignment per partition (without, none or one per
    /// partition); each assignment's replicas are non-empty, distinct and registered, its ISR
    /// a non-empty subset of them, its leader -1 or an unfenced ISR member, its epochs >= 0.
    fn check_assignments(&self) -> Result<(), Violation> {
        ensure!(
            self.brokers.len() <= BROKERS_MAX,
            "{} brokers",
            self.brokers.len()
        );
        for (id, b) in &self.brokers {
            ensure!(
                *id == b.node_id && *id >= 0,
                "broker {id} registered as {}",
                b.node_id
            );
        }
        let with_brokers = !self.brokers.is_empty();
        for (name, t) in &self.topics {
            let assigned = t.assignment.len();
            ensure!(
                assigned == t.partitions as usize || (!with_brokers && assigned == 0),
                "topic {name}: {assigned} assignments for {} partitions",
                t.partitions
            );
            for (index, p) in t.assignment.iter().enumerate() {
                let mut distinct = p.replicas.clone();
                distinct.sort_unstable();
                distinct.dedup();
                ensure!(
                    !p.replicas.is_empty() && distinct.len() == p.replicas.len(),
                    "{name}-{index}: replicas {:?}",
                    p.replicas
                );
                ensure!(
                    !with_brokers || p.replicas.iter().all(|r| self.brokers.contains_key(r)),
                    "{name}-{index}: replicas {:?} not all registered",
                    p.replicas
                );
                ensure!(
                    !p.isr.is_empty() && p.isr.iter().all(|r| p.replicas.contains(r)),
                    "{name}-{index}: isr {:?} of replicas {:?}",
                    p.isr,
                    p.replicas
                );
                let leader_live =
                    self.brokers.get(&p.leader).is_some_and(|b| !b.fenced) || !with_brokers;
                ensure!(
                    p.leader == -1 || (p.isr.contains(&p.leader) && leader_live),
                    "{name}-{index}: leader {} (isr {:?})",
                    p.leader,
                    p.isr
                );
                if let Some(r) = &p.reassignment {
                    let within = |l: &[i32]| l.iter().all(|b| p.replicas.contains(b));
                    ensure!(
                        (!r.adding.is_empty() || !r.removing.is_empty())
                            && within(&r.adding)
                            && within(&r.removing)
                            && !r.adding.iter().any(|b| r.removing.contains(b))
                            && r.removing.len() < p.replicas.len(),
                        "{name}-{index}: reassignment {r:?} of replicas {:?}",
                        p.replicas
                    );
                }
                ensure!(
                    p.leader_epoch >= 0 && p.partition_epoch >= 0,
                    "{name}-{index}: leader epoch {}, partition epoch {}",
                    p.leader_epoch,
                    p.partition_epoch
                );
            }
        }
        Ok(())
    }

    /// [`Self::check_invariants`] of `self`, the result of one command applied to `before`:
    /// the version grew by one, a topic that stays keeps its id and never loses partitions,
    /// the producer id block never moves back (an id handed out is never handed out again),
    /// and a partition that changes (leader, ISR, replicas) has a newer partition epoch, and a
    /// newer leader epoch when its leader changed.
    pub fn check_transition_from(&self, before: &ClusterMetadata) -> Result<(), Violation> {
        ensure!(
            self.version == before.version + 1,
            "version {} after {}",
            self.version,
            before.version
        );
        for (name, t) in &self.topics {
            if let Some(old) = before.topics.get(name) {
                ensure!(
                    t.id == old.id && t.partitions >= old.partitions,
                    "topic {name}: ({}, {} partitions) became ({}, {})",
                    old.id,
                    old.partitions,
                    t.id,
                    t.partitions
                );
            }
        }
        ensure!(
            self.producer_id_block_next >= before.producer_id_block_next,
            "producer id block moved back from {} to {}",
            before.producer_id_block_next,
            self.producer_id_block_next
        );
        for id in before.brokers.keys() {
            ensure!(
                self.brokers.contains_key(id),
                "broker {id} is no longer registered"
            );
        }
        for (name, t) in &self.topics {
            let Some(old) = before.topics.get(name) else {
                continue;
            };
            if t.id != old.id {
                continue;
            }
            ensure!(
                t.assignment.len() >= old.assignment.len(),
                "topic {name}: assignments went from {} to {}",
                old.assignment.len(),
                t.assignment.len()
            );
            for (index, (p, q)) in old.assignment.iter().zip(&t.assignment).enumerate() {
                // Replicas change only through a reassignment, with a new partition epoch
                // (checked below).
                ensure!(
                    q.leader_epoch >= p.leader_epoch,
                    "{name}-{index}: replicas {:?} epoch {} became {:?} epoch {}",
                    p.replicas,
                    p.leader_epoch,
                    q.replicas,
                    q.leader_epoch
                );
                ensure!(
                    q.leader == p.leader || q.leader_epoch > p.leader_epoch,
                    "{name}-{index}: leader {} became {} in the same epoch {}",
                    p.leader,
                    q.leader,
                    q.leader_epoch
                );
                ensure!(
                    q.partition_epoch >= p.partition_epoch
                        && (q == p || q.partition_epoch > p.partition_epoch),
                    "{name}-{index}: {p:?} became {q:?} without a newer partition epoch"
                );
            }
        }
        self.check_invariants()
    }

    /// Checks where new partitions may go (after the name, count and config checks): the
    /// client's replica lists name registered brokers, each list has an unfenced one and as
    /// many replicas as the others (INVALID_REPLICA_ASSIGNMENT); placement is possible over
    /// the registered unfenced brokers (INVALID_REPLICATION_FACTOR, Kafka's messages).
    /// Without registered brokers (the pre-quorum rule of the module essay) the local node
    /// is the one broker, and the request handler has checked the lists against its id.
    fn check_new_partitions(&self, new: &NewPartitions<'_>) -> Result<(), MetadataError> {
        let rf = new.replication_factor;
        let refuse_rf = |why: &str| {
            let message = if new.creating_topic {
                format!("Unable to replicate the partition {rf} time(s): {why}")
            } else {
                why.to_string()
            };
            Err(MetadataError::new(
                ResponseError::InvalidReplicationFactor,
                message,
            ))
        };
        if rf < 1 {
            return refuse_rf(&format!(
                "Invalid replication factor {rf}: the replication factor must be positive."
            ));
        }
        let pre_quorum = self.brokers.is_empty();
        let unfenced = |b: &i32| self.brokers.get(b).is_some_and(|r| !r.fenced);
        if let Some(lists) = new.assignments {
            if lists.len() != new.count as usize {
                return Err(MetadataError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "The manual partition assignment gives {} partition(s), but {} are to \
                         be created.",
                        lists.len(),
                        new.count
                    ),
                ));
            }
            for (i, replicas) in lists.iter().enumerate() {
                check_replica_list(
                    replicas,
                    |b| pre_quorum || self.brokers.contains_key(&b),
                    Some(rf as usize),
                )?;
                if !pre_quorum && !replicas.iter().any(unfenced) {
                    return Err(MetadataError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "All brokers specified in the manual partition assignment for \
                             partition {} are fenced or in controlled shutdown.",
                            i64::from(new.first) + i as i64
                        ),
                    ));
                }
            }
        } else {
            let registered = if pre_quorum { 1 } else { self.brokers.len() };
            if !pre_quorum && !self.brokers.keys().any(unfenced) {
                return refuse_rf("All brokers are currently fenced.");
            }
            if rf as usize > registered {
                return refuse_rf(&format!(
                    "The target replication factor of {rf} cannot be reached because only \
                     {registered} broker(s) are registered."
                ));
            }
            // Placement uses the unfenced brokers only (`coordinator::placement`).
            let unfenced_count = self.brokers.keys().filter(|b| unfenced(b)).count();
            if !pre_quorum && rf as usize > unfenced_count {
                return refuse_rf(&format!(
                    "The target replication factor of {rf} cannot be reached because only \
                     {unfenced_count} broker(s) are unfenced."
                ));
            }
        }
        Ok(())
    }

    /// The assignments of `count` new partitions: the client's lists, or placed over the
    /// registered unfenced brokers starting at the cluster's partition count (see
    /// `coordinator::placement`). Leader = the first unfenced replica, epoch 0, ISR = the
    /// unfenced replicas. Only after [`Self::check_new_partitions`] passed, with brokers.
    fn decide_assignment(
        &self,
        count: i32,
        replication_factor: i16,
        lists: Option<&[Vec<i32>]>,
    ) -> Result<Vec<PartitionAssignment>, MetadataError> {
        let replicas: Vec<Vec<i32>> = match lists {
            Some(lists) => lists.to_vec(),
            None => {
                let usable: Vec<(i32, Option<&str>)> = self
                    .brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .map(|b| (b.node_id, b.rack.as_deref()))
                    .collect();
                let start = usize::try_from(self.partition_count()).unwrap_or(0);
                placement::place(
                    &usable,
                    usize::try_from(count).unwrap_or(0),
                    usize::try_from(replication_factor).unwrap_or(0),
                    start,
                )
                .map_err(|e| MetadataError::new(ResponseError::InvalidReplicationFactor, e.0))?
            }
        };
        Ok(replicas
            .into_iter()
            .map(|replicas| {
                let isr: Vec<i32> = replicas
                    .iter()
                    .copied()
                    .filter(|b| self.brokers.get(b).is_some_and(|r| !r.fenced))
                    .collect();
                assert!(
                    !isr.is_empty(),
                    "checked: every new partition has a live replica"
                );
                PartitionAssignment {
                    leader: isr[0],
                    leader_epoch: 0,
                    isr,
                    replicas,
                    partition_epoch: 0,
                    reassignment: None,
                }
            })
            .collect())
    }

    /// The assignments of the partitions CreatePartitions adds to `name` (up to `total`):
    /// none for a topic without assignments (pre-quorum: it stays without).
    fn new_partitions_assignment(
        &self,
        name: &str,
        total: i32,
        lists: Option<&[Vec<i32>]>,
    ) -> Result<Vec<PartitionAssignment>, MetadataError> {
        let topic = self.topic(name)?;
        if topic.assignment.is_empty() {
            return Ok(Vec::new());
        }
        self.decide_assignment(total - topic.partitions, topic.replication_factor(), lists)
    }

    /// The registration of broker `node_id`, or BROKER_ID_NOT_REGISTERED.
    fn registered(&self, node_id: i32) -> Result<&BrokerRegistration, MetadataError> {
        self.brokers.get(&node_id).ok_or_else(|| {
            MetadataError::new(
                ResponseError::BrokerIdNotRegistered,
                format!("Broker ID {node_id} is not currently registered"),
            )
        })
    }

    /// Gives every topic without assignments (pre-quorum topics) to `registration`'s
    /// broker: one replica each, leader it (or -1 if it registers fenced), epoch 0.
    fn adopt_unassigned_topics(&mut self, registration: &BrokerRegistration) {
        let id = registration.node_id;
        let leader = if registration.fenced { -1 } else { id };
        for topic in self.topics.values_mut() {
            if topic.assignment.is_empty() {
                topic.assignment = (0..topic.partitions)
                    .map(|_| PartitionAssignment {
                        replicas: vec![id],
                        leader,
                        leader_epoch: 0,
                        isr: vec![id],
                        partition_epoch: 0,
                        reassignment: None,
                    })
                    .collect();
            }
        }
    }

    /// Moves partition leadership after broker `node_id` was fenced or unfenced (Kafka's
    /// `handleBrokerFenced` / `handleBrokerUnfenced` through `generateLeaderAndIsrUpdates`):
    /// fenced, it leaves every ISR it is not the last member of, and each partition it led
    /// goes to the first replica (in preference order) that is an unfenced ISR member;
    /// unfenced, every leaderless partition gets such a leader (it, when it is in the ISR).
    /// With none, a topic with `unclean.leader.election.enable` takes the first unfenced
    /// replica and resets the ISR to it alone (an unclean election), else the partition stays
    /// leaderless (-1). A leader change adds one to the leader epoch; every change of leader
    /// or ISR adds one to the partition epoch.
    fn set_leaderships(&mut self, node_id: i32, fenced: bool) {
        let unclean: BTreeMap<String, bool> = self
            .topics
            .keys()
            .map(|t| (t.clone(), self.unclean_leader_election_enabled(t)))
            .collect();
        let ClusterMetadata {
            topics, brokers, ..
        } = self;
        let acceptable = |b: i32| {
            if fenced {
                b != node_id && brokers.get(&b).is_some_and(|r| !r.fenced)
            } else {
                b == node_id || brokers.get(&b).is_some_and(|r| !r.fenced)
            }
        };
        for (name, topic) in topics.iter_mut() {
            let unclean_ok = unclean.get(name).copied().unwrap_or(false);
            for p in &mut topic.assignment {
                let touched = if fenced {
                    p.isr.contains(&node_id) || p.leader == node_id
                } else {
                    p.leader == -1
                };
                if !touched {
                    continue;
                }
                let mut isr: Vec<i32> = p
                    .isr
                    .iter()
                    .copied()
                    .filter(|&r| !fenced || r != node_id)
                    .collect();
                let leader = if p.leader != -1 && isr.contains(&p.leader) {
                    p.leader
                } else {
                    best_leader(&p.replicas, &isr, unclean_ok, acceptable)
                };
                if leader != -1 && !isr.contains(&leader) {
                    // Unclean: the new leader may miss records the ISR had.
                    isr = vec![leader];
                } else if isr.is_empty() {
                    // The ISR never shrinks to nothing: its last member stays.
                    isr.clone_from(&p.isr);
                }
                p.change(leader, isr);
            }
        }
    }

    /// The metadata of a single node from before the cluster, moved into the quorum: node
    /// `registration.node_id` registered, and every topic without assignments assigned to it
    /// (leader it, epoch 0, ISR [it]). Pure; the same step as replaying its registration.
    pub fn adopt_single_node(&self, registration: BrokerRegistration) -> ClusterMetadata {
        self.replay(&MetadataRecord::BrokerRegistered { registration })
    }

    /// Partitions of all topics.
    pub fn partition_count(&self) -> u64 {
        self.topics
            .values()
            .map(|t| u64::try_from(t.partitions).unwrap_or(0))
            .sum()
    }

    /// The topic called `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn topic(&self, name: &str) -> Result<&TopicMeta, MetadataError> {
        self.topics.get(name).ok_or_else(|| {
            MetadataError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("This server does not host this topic: {name}"),
            )
        })
    }

    /// The assignment of `topic`/`partition`, if the topic has one for it (a topic from
    /// before the cluster has none).
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionAssignment> {
        self.topics
            .get(topic)?
            .assignment
            .get(usize::try_from(partition).ok()?)
    }

    /// The value of topic config `name` for `topic` as the controller sees it: the topic's
    /// override, else the cluster-wide dynamic broker default (AlterConfigs on the default
    /// BROKER resource), else `None` (the caller takes Kafka's default). Per-broker dynamic
    /// and static broker configs are not in the metadata and not seen here.
    fn topic_config_in_force(&self, topic: &str, name: &str) -> Option<&str> {
        if let Some(v) = self.topics.get(topic).and_then(|t| t.configs.get(name)) {
            return Some(v);
        }
        let synonym = broker_config::TOPIC_SYNONYMS
            .iter()
            .find(|(topic_name, _, _)| *topic_name == name)
            .map_or(name, |(_, broker_name, _)| *broker_name);
        self.broker_configs
            .get(broker_config::DEFAULT_RESOURCE)
            .and_then(|c| c.get(synonym))
            .map(String::as_str)
    }

    /// `min.insync.replicas` of `topic`: its override, else the cluster-wide dynamic default,
    /// else 1 (Kafka's default). At least 1.
    pub fn min_insync_replicas(&self, topic: &str) -> i32 {
        self.topic_config_in_force(topic, "min.insync.replicas")
            .and_then(|v| v.trim().parse::<i32>().ok())
            .unwrap_or(1)
            .max(1)
    }

    /// `unclean.leader.election.enable` of `topic`: its override, else the cluster-wide
    /// dynamic default, else false (Kafka's default).
    pub fn unclean_leader_election_enabled(&self, topic: &str) -> bool {
        self.topic_config_in_force(topic, "unclean.leader.election.enable")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// The topic with id `id`, with its name.
    pub fn topic_by_id(&self, id: Uuid) -> Option<(&str, &TopicMeta)> {
        self.topics
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(n, t)| (n.as_str(), t))
    }

    fn fresh_topic_id(&self) -> Uuid {
        loop {
            let id = Uuid::new_v4();
            if !id.is_nil() && !self.topics.values().any(|t| t.id == id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: i32) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            partitions,
            configs: BTreeMap::new(),
            replication_factor: 1,
            assignments: None,
        }
    }

    /// AlterClientQuota: set, merge and remove keys, an entity without values is dropped,
    /// Kafka's refusals change nothing, and a snapshot with quotas survives JSON.
    #[test]
    fn client_quotas_are_set_merged_removed_and_survive_a_snapshot() {
        use crate::quota::{EntityName, QuotaEntity, QuotaValue};
        let alice = QuotaEntity::new(Some(EntityName::Named("alice".into())), None);
        let set = |ops: &[(&str, Option<f64>)]| MetadataCommand::AlterClientQuota {
            entity: alice.clone(),
            ops: ops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let m = ClusterMetadata::default()
            .apply(&set(&[("producer_byte_rate", Some(1024.0))]))
            .unwrap()
            .apply(&set(&[("request_percentage", Some(12.5))]))
            .unwrap();
        assert_eq!(m.client_quotas[&alice].len(), 2);
        assert_eq!(
            m.client_quotas[&alice]["request_percentage"],
            QuotaValue(12.5)
        );
        for bad in [
            set(&[("producer_byte_rate", Some(1.5))]),
            set(&[("producer_byte_rate", Some(0.0))]),
            set(&[("nope", Some(1.0))]),
            set(&[("nope", None)]),
            MetadataCommand::AlterClientQuota {
                entity: QuotaEntity::new(None, None),
                ops: vec![("producer_byte_rate".into(), Some(1.0))],
            },
        ] {
            assert_eq!(
                m.check(&bad).unwrap_err().code,
                ResponseError::InvalidRequest
            );
        }
        let json = serde_json::to_vec(&MetadataRecord::Snapshot {
            metadata: m.clone(),
        })
        .unwrap();
        let back: MetadataRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            back,
            MetadataRecord::Snapshot {
                metadata: m.clone()
            }
        );
        let m = m
            .apply(&set(&[
                ("producer_byte_rate", None),
                ("request_percentage", None),
            ]))
            .unwrap();
        assert!(m.client_quotas.is_empty());
    }

    /// SCRAM credentials: set, replaced, deleted (the user goes with its last one); deleting
    /// a missing one is RESOURCE_NOT_FOUND; bad mechanisms and iterations are refused as Kafka
    /// refuses them; a snapshot round trip keeps them.
    #[test]
    fn scram_credentials_are_set_replaced_and_deleted_as_kafka() {
        let cred = |iterations| StoredScramCredential {
            salt: vec![1; 32],
            stored_key: vec![2; 64],
            server_key: vec![3; 64],
            iterations,
        };
        let set = |user: &str, mechanism: &str, iterations| MetadataCommand::SetScramCredential {
            user: user.into(),
            mechanism: mechanism.into(),
            credential: cred(iterations),
        };
        let delete = |user: &str, mechanism: &str| MetadataCommand::DeleteScramCredential {
            user: user.into(),
            mechanism: mechanism.into(),
        };
        let m = ClusterMetadata::default()
            .apply(&set("alice", "SCRAM-SHA-512", 4096))
            .unwrap()
            .apply(&set("alice", "SCRAM-SHA-512", 8192))
            .unwrap()
            .apply(&set("alice", "SCRAM-SHA-256", 4096))
            .unwrap();
        assert_eq!(
            m.scram_credentials["alice"]["SCRAM-SHA-512"].iterations,
            8192
        );
        m.check_invariants().unwrap();
        let json = serde_json::to_string(&MetadataRecord::Snapshot {
            metadata: m.clone(),
        })
        .unwrap();
        let back: MetadataRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back,
            MetadataRecord::Snapshot {
                metadata: m.clone()
            }
        );
        let m = m
            .apply(&delete("alice", "SCRAM-SHA-512"))
            .unwrap()
            .apply(&delete("alice", "SCRAM-SHA-256"))
            .unwrap();
        assert!(m.scram_credentials.is_empty());
        let code = |c: &MetadataCommand| m.apply(c).unwrap_err().code;
        assert_eq!(
            code(&delete("alice", "SCRAM-SHA-256")),
            ResponseError::ResourceNotFound
        );
        assert_eq!(
            code(&set("a", "SCRAM-SHA-1", 4096)),
            ResponseError::UnsupportedSaslMechanism
        );
        assert_eq!(
            code(&set("a", "SCRAM-SHA-256", 100)),
            ResponseError::UnacceptableCredential
        );
        assert_eq!(
            code(&set("", "SCRAM-SHA-256", 4096)),
            ResponseError::UnacceptableCredential
        );
    }

    fn acl(name: &str) -> AclBinding {
        use crate::security::acl::{AclOperation, AclPermission, PatternType, ResourceType};
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    /// ACLs are metadata: created (twice is once), refused when invalid or over the bound,
    /// deleted (absent ones skipped), and a snapshot's JSON keeps them.
    #[test]
    fn acls_are_created_deleted_and_survive_a_snapshot() {
        let m0 = ClusterMetadata::default();
        let m1 = m0
            .apply(&MetadataCommand::CreateAcl { acl: acl("a") })
            .unwrap();
        let m2 = m1
            .apply(&MetadataCommand::CreateAcl { acl: acl("a") })
            .unwrap();
        assert_eq!(m2.acls.len(), 1);
        let m3 = m2
            .apply(&MetadataCommand::CreateAcl { acl: acl("b") })
            .unwrap();
        let refused = m3
            .apply(&MetadataCommand::CreateAcl { acl: acl("") })
            .unwrap_err();
        assert_eq!(refused.code, ResponseError::InvalidRequest);
        let json = serde_json::to_string(&MetadataRecord::Snapshot {
            metadata: m3.clone(),
        })
        .unwrap();
        let back: MetadataRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back,
            MetadataRecord::Snapshot {
                metadata: m3.clone()
            }
        );
        let record = m3
            .record_for(&MetadataCommand::DeleteAcls {
                acls: vec![acl("a"), acl("zz")],
            })
            .unwrap();
        assert_eq!(
            record,
            MetadataRecord::AclsDeleted {
                acls: vec![acl("a")]
            }
        );
        let m4 = m3.replay(&record);
        assert_eq!(m4.acls.iter().cloned().collect::<Vec<_>>(), vec![acl("b")]);
        let mut full = ClusterMetadata::default();
        for i in 0..ACLS_MAX {
            full.acls.insert(acl(&format!("t{i}")));
        }
        assert!(full
            .check(&MetadataCommand::CreateAcl { acl: acl("new") })
            .is_err());
        assert!(full
            .check(&MetadataCommand::CreateAcl { acl: acl("t1") })
            .is_ok());
    }

    #[test]
    fn create_then_delete_topic_bumps_version_and_assigns_distinct_ids() {
        let m0 = ClusterMetadata::default();
        let m1 = m0.apply(&create("a", 3)).unwrap();
        let m2 = m1.apply(&create("b", 1)).unwrap();
        assert_eq!(m2.version, 2);
        assert_ne!(m2.topics["a"].id, m2.topics["b"].id);
        assert_eq!(
            m1.apply(&create("a", 1)).unwrap_err().code,
            ResponseError::TopicAlreadyExists
        );
        let m3 = m2
            .apply(&MetadataCommand::DeleteTopic { name: "a".into() })
            .unwrap();
        assert!(!m3.topics.contains_key("a"));
        assert_eq!(
            m3.apply(&MetadataCommand::DeleteTopic { name: "a".into() })
                .unwrap_err()
                .code,
            ResponseError::UnknownTopicOrPartition
        );
    }

    #[test]
    fn group_configs_are_kept_replaced_removed_and_bounded() {
        let set = |m: &ClusterMetadata, group: &str, pairs: &[(&str, &str)]| {
            m.apply(&MetadataCommand::SetGroupConfigs {
                group: group.to_string(),
                configs: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
        };
        let m = ClusterMetadata::default();
        let earliest = set(&m, "g", &[("share.auto.offset.reset", "earliest")]).unwrap();
        assert_eq!(
            earliest.group_configs["g"]["share.auto.offset.reset"],
            "earliest"
        );
        earliest.check_invariants().unwrap();
        // Kept across a snapshot (what a restart reads back).
        let json = serde_json::to_string(&earliest).unwrap();
        let back: ClusterMetadata = serde_json::from_str(&json).unwrap();
        assert_eq!(back.group_configs, earliest.group_configs);
        // An empty set removes the group's entry.
        assert!(set(&earliest, "g", &[]).unwrap().group_configs.is_empty());
        assert_eq!(
            set(&m, "g", &[("nope", "1")]).unwrap_err().code,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            set(&m, "", &[]).unwrap_err().code,
            ResponseError::InvalidRequest
        );
        let mut full = ClusterMetadata::default();
        for i in 0..GROUP_CONFIG_SETS_MAX {
            full.group_configs.insert(
                format!("g{i}"),
                [("share.auto.offset.reset".to_string(), "latest".to_string())].into(),
            );
        }
        let one = [("share.auto.offset.reset", "earliest")];
        assert_eq!(
            set(&full, "new", &one).unwrap_err().code,
            ResponseError::InvalidRequest
        );
        // A group that has configs may still change them.
        assert!(set(&full, "g1", &one).is_ok());
    }

    #[test]
    fn bad_names_partitions_and_configs_are_refused_with_kafka_errors() {
        let m = ClusterMetadata::default();
        for name in ["", ".", "..", "a b", "x/y", &"t".repeat(250)] {
            assert_eq!(
                m.check(&create(name, 1)).unwrap_err().code,
                ResponseError::InvalidTopicException
            );
        }
        assert_eq!(
            m.check(&create("t", 0)).unwrap_err().code,
            ResponseError::InvalidPartitions
        );
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "never".to_string());
        let cmd = MetadataCommand::CreateTopic {
            name: "t".into(),
            partitions: 1,
            configs,
            replication_factor: 1,
            assignments: None,
        };
        assert_eq!(
            m.check(&cmd).unwrap_err().code,
            ResponseError::InvalidConfig
        );
    }

    /// The records of a sequence of commands, through their JSON and replayed from a
    /// snapshot of the start, give exactly the metadata that applying the commands gave.
    #[test]
    fn records_replay_to_the_applied_metadata() {
        let start = ClusterMetadata {
            cluster_id: "c".into(),
            ..ClusterMetadata::default()
        };
        let commands = [
            create("a", 2),
            create("b", 1),
            MetadataCommand::CreatePartitions {
                name: "a".into(),
                total: 4,
                assignments: None,
            },
            MetadataCommand::SetConfigs {
                name: "b".into(),
                configs: [("retention.ms".to_string(), "5".to_string())].into(),
            },
            MetadataCommand::AllocateProducerIdBlock,
            MetadataCommand::DeleteTopic { name: "a".into() },
        ];
        let mut applied = start.clone();
        let mut log = vec![MetadataRecord::Snapshot {
            metadata: start.clone(),
        }];
        for command in &commands {
            let record = applied.record_for(command).unwrap();
            applied = applied.replay(&record);
            log.push(record);
        }
        assert_eq!(applied.version, 6);
        assert_eq!(applied.producer_id_block_next, PRODUCER_ID_BLOCK_SIZE);
        let mut replayed = ClusterMetadata::default();
        for record in &log {
            let json = serde_json::to_vec(record).unwrap();
            let back: MetadataRecord = serde_json::from_slice(&json).unwrap();
            assert_eq!(&back, record);
            replayed = replayed.replay(&back);
        }
        assert_eq!(replayed, applied);
    }

    #[test]
    fn partitions_only_grow() {
        let m = ClusterMetadata::default().apply(&create("t", 2)).unwrap();
        let grow = |total| MetadataCommand::CreatePartitions {
            name: "t".into(),
            total,
            assignments: None,
        };
        assert_eq!(
            m.check(&grow(2)).unwrap_err().code,
            ResponseError::InvalidPartitions
        );
        assert_eq!(m.apply(&grow(5)).unwrap().topics["t"].partitions, 5);
    }

    fn broker(node_id: i32, rack: Option<&str>) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            incarnation_id: Uuid::from_u128(node_id as u128 + 1),
            host: "127.0.0.1".into(),
            port: 9092 + node_id,
            rack: rack.map(str::to_string),
            fenced: false,
            listeners: Vec::new(),
        }
    }

    /// Metadata with brokers `ids` registered (unfenced, no racks).
    fn cluster(ids: &[i32]) -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        for &id in ids {
            m = m
                .apply(&MetadataCommand::RegisterBroker {
                    registration: broker(id, None),
                })
                .unwrap();
        }
        m
    }

    fn create_with(
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            partitions,
            configs: BTreeMap::new(),
            replication_factor,
            assignments,
        }
    }

    fn leaders(m: &ClusterMetadata, topic: &str) -> Vec<i32> {
        m.topics[topic]
            .assignment
            .iter()
            .map(|a| a.leader)
            .collect()
    }

    fn refusal(m: &ClusterMetadata, command: &MetadataCommand) -> (ResponseError, String) {
        let e = m.apply(command).unwrap_err();
        assert_eq!(m.check(command).unwrap_err(), e, "check and apply agree");
        (e.code, e.message)
    }

    /// A topic of 12 partitions over 3 brokers: each leads 4; the next small topics start
    /// where the cluster's partition count points, not all on the first broker.
    #[test]
    fn topics_spread_over_the_registered_brokers_with_balanced_leaders() {
        let m = cluster(&[0, 1, 2]).apply(&create("big", 12)).unwrap();
        let mut counts = BTreeMap::new();
        for (p, a) in m.topics["big"].assignment.iter().enumerate() {
            assert_eq!(a.replicas, vec![a.leader], "partition {p}");
            assert_eq!(a.isr, vec![a.leader]);
            assert_eq!(a.leader_epoch, 0);
            *counts.entry(a.leader).or_insert(0) += 1;
        }
        assert_eq!(counts, BTreeMap::from([(0, 4), (1, 4), (2, 4)]));
        let m = m.apply(&create("s1", 1)).unwrap();
        let m = m.apply(&create("s2", 1)).unwrap();
        let m = m.apply(&create("s3", 1)).unwrap();
        let mut firsts = [
            leaders(&m, "s1")[0],
            leaders(&m, "s2")[0],
            leaders(&m, "s3")[0],
        ];
        firsts.sort_unstable();
        assert_eq!(firsts, [0, 1, 2]);
        m.check_invariants().unwrap();
    }

    /// Fenced brokers get no new partitions.
    #[test]
    fn placement_skips_fenced_brokers() {
        let m = cluster(&[0, 1, 2])
            .apply(&MetadataCommand::FenceBroker { node_id: 1 })
            .unwrap()
            .apply(&create("t", 10))
            .unwrap();
        assert!(leaders(&m, "t").iter().all(|&l| l == 0 || l == 2));
    }

    #[test]
    fn explicit_assignments_are_honoured_and_checked_as_kafka_does() {
        let m = cluster(&[0, 1, 2]);
        let ok = m
            .apply(&create_with(
                "t",
                3,
                1,
                Some(vec![vec![2], vec![2], vec![0]]),
            ))
            .unwrap();
        assert_eq!(leaders(&ok, "t"), vec![2, 2, 0]);
        assert_eq!(
            refusal(&m, &create_with("t", 1, 1, Some(vec![vec![7]]))),
            (
                ResponseError::InvalidReplicaAssignment,
                "The manual partition assignment includes broker 7, but no such broker is \
                 registered."
                    .into()
            )
        );
        assert_eq!(
            refusal(&m, &create_with("t", 1, 1, Some(vec![vec![]]))).0,
            ResponseError::InvalidReplicaAssignment
        );
        let fenced = m
            .apply(&MetadataCommand::FenceBroker { node_id: 1 })
            .unwrap();
        assert_eq!(
            refusal(
                &fenced,
                &create_with("t", 2, 1, Some(vec![vec![0], vec![1]]))
            ),
            (
                ResponseError::InvalidReplicaAssignment,
                "All brokers specified in the manual partition assignment for partition 1 are \
                 fenced or in controlled shutdown."
                    .into()
            )
        );
        let grow = |total, assignments| MetadataCommand::CreatePartitions {
            name: "t".into(),
            total,
            assignments,
        };
        let grown = ok.apply(&grow(5, Some(vec![vec![1], vec![1]]))).unwrap();
        assert_eq!(leaders(&grown, "t"), vec![2, 2, 0, 1, 1]);
        assert_eq!(
            refusal(&ok, &grow(5, Some(vec![vec![1]]))),
            (
                ResponseError::InvalidReplicaAssignment,
                "Attempted to add 2 additional partition(s), but only 1 assignment(s) were \
                 specified."
                    .into()
            )
        );
        assert_eq!(
            refusal(&ok, &grow(4, Some(vec![vec![9]]))).0,
            ResponseError::InvalidReplicaAssignment
        );
        let placed = ok.apply(&grow(6, None)).unwrap();
        assert_eq!(placed.topics["t"].assignment.len(), 6);
        placed.check_invariants().unwrap();
    }

    #[test]
    fn replication_factor_refusals_use_kafkas_messages() {
        let unable = |rf: i16, why: &str| {
            (
                ResponseError::InvalidReplicationFactor,
                format!("Unable to replicate the partition {rf} time(s): {why}"),
            )
        };
        let m = cluster(&[0, 1, 2]);
        assert_eq!(
            refusal(&m, &create_with("t", 1, 4, None)),
            unable(
                4,
                "The target replication factor of 4 cannot be reached because only 3 broker(s) \
                 are registered."
            )
        );
        assert_eq!(
            refusal(&m, &create_with("t", 1, 0, None)),
            unable(
                0,
                "Invalid replication factor 0: the replication factor must be positive."
            )
        );
        let all_fenced = [0, 1, 2].iter().fold(m, |m, &node_id| {
            m.apply(&MetadataCommand::FenceBroker { node_id }).unwrap()
        });
        assert_eq!(
            refusal(&all_fenced, &create("t", 1)),
            unable(1, "All brokers are currently fenced.")
        );
        assert_eq!(
            refusal(
                &all_fenced,
                &MetadataCommand::CreatePartitions {
                    name: "x".into(),
                    total: 2,
                    assignments: None
                }
            )
            .0,
            ResponseError::UnknownTopicOrPartition
        );
        // Pre-quorum: the local node is the one broker.
        assert_eq!(
            refusal(&ClusterMetadata::default(), &create_with("t", 1, 3, None)),
            unable(
                3,
                "The target replication factor of 3 cannot be reached because only 1 broker(s) \
                 are registered."
            )
        );
    }

    /// Without registered brokers topics get no assignment, as before the cluster; the first
    /// broker to register (or `adopt_single_node`) adopts them all.
    #[test]
    fn pre_quorum_topics_are_adopted_by_the_first_broker() {
        let legacy = ClusterMetadata::default()
            .apply(&create("a", 3))
            .unwrap()
            .apply(&MetadataCommand::CreatePartitions {
                name: "a".into(),
                total: 4,
                assignments: None,
            })
            .unwrap()
            .apply(&create_with("b", 1, 1, Some(vec![vec![0]])))
            .unwrap();
        assert!(legacy.topics.values().all(|t| t.assignment.is_empty()));
        let adopted = legacy.adopt_single_node(broker(0, None));
        adopted.check_transition_from(&legacy).unwrap();
        assert_eq!(adopted.brokers.len(), 1);
        assert_eq!(leaders(&adopted, "a"), vec![0, 0, 0, 0]);
        assert_eq!(adopted.topics["b"].assignment[0].isr, vec![0]);
        assert_eq!(adopted.topics["b"].assignment[0].leader_epoch, 0);
        let registered = legacy
            .apply(&MetadataCommand::RegisterBroker {
                registration: broker(0, None),
            })
            .unwrap();
        assert_eq!(registered, adopted);
        // From then on new topics are placed.
        let next = adopted.apply(&create("c", 2)).unwrap();
        assert_eq!(leaders(&next, "c"), vec![0, 0]);
    }

    /// Fencing takes leadership away (leader -1, epoch + 1, ISR kept); unfencing gives it
    /// back (epoch + 1); registrations and fencing are refused when they change nothing.
    #[test]
    fn fencing_moves_leadership_and_repeats_are_refused() {
        let m = cluster(&[0, 1]).apply(&create("t", 4)).unwrap();
        let before = leaders(&m, "t");
        assert_eq!(
            refusal(
                &m,
                &MetadataCommand::RegisterBroker {
                    registration: broker(1, None)
                }
            )
            .0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            refusal(&m, &MetadataCommand::FenceBroker { node_id: 5 }),
            (
                ResponseError::BrokerIdNotRegistered,
                "Broker ID 5 is not currently registered".into()
            )
        );
        assert_eq!(
            refusal(&m, &MetadataCommand::UnfenceBroker { node_id: 1 }).0,
            ResponseError::InvalidRequest
        );
        let fenced = m
            .apply(&MetadataCommand::FenceBroker { node_id: 1 })
            .unwrap();
        fenced.check_transition_from(&m).unwrap();
        for (p, (a, b)) in m.topics["t"]
            .assignment
            .iter()
            .zip(&fenced.topics["t"].assignment)
            .enumerate()
        {
            if a.leader == 1 {
                assert_eq!((b.leader, b.leader_epoch, &b.isr), (-1, 1, &vec![1]), "{p}");
            } else {
                assert_eq!(a, b);
            }
        }
        assert_eq!(
            refusal(&fenced, &MetadataCommand::FenceBroker { node_id: 1 }).0,
            ResponseError::InvalidRequest
        );
        let back = fenced
            .apply(&MetadataCommand::UnfenceBroker { node_id: 1 })
            .unwrap();
        assert_eq!(leaders(&back, "t"), before);
        assert!(back.topics["t"]
            .assignment
            .iter()
            .all(|a| a.leader_epoch == if a.leader == 1 { 2 } else { 0 }));
        // A restart (new incarnation) of a fenced broker registers it unfenced: it leads again.
        let mut restarted = broker(1, Some("r1"));
        restarted.incarnation_id = Uuid::from_u128(99);
        let again = fenced
            .apply(&MetadataCommand::RegisterBroker {
                registration: restarted,
            })
            .unwrap();
        assert_eq!(leaders(&again, "t"), before);
        assert_eq!(again.brokers[&1].rack.as_deref(), Some("r1"));
    }

    #[test]
    fn registrations_are_checked() {
        let m = ClusterMetadata::default();
        let mut bad = Vec::new();
        let mut r = broker(0, None);
        r.node_id = -1;
        bad.push(r);
        let mut r = broker(0, None);
        r.host = String::new();
        bad.push(r);
        let mut r = broker(0, None);
        r.host = "h".repeat(BROKER_HOST_BYTES_MAX + 1);
        bad.push(r);
        let mut r = broker(0, None);
        r.port = 70_000;
        bad.push(r);
        bad.push(broker(0, Some("")));
        for registration in bad {
            assert_eq!(
                m.check(&MetadataCommand::RegisterBroker { registration })
                    .unwrap_err()
                    .code,
                ResponseError::InvalidRequest
            );
        }
        let full = cluster(&(0..BROKERS_MAX as i32).collect::<Vec<_>>());
        assert_eq!(
            full.check(&MetadataCommand::RegisterBroker {
                registration: broker(BROKERS_MAX as i32, None)
            })
            .unwrap_err()
            .code,
            ResponseError::InvalidRequest
        );
    }

    /// Records written before the cluster (no assignments, no replication factor) still read,
    /// and commands from before the cluster too.
    #[test]
    fn records_and_commands_without_the_cluster_fields_still_read() {
        let record: MetadataRecord =
            serde_json::from_str(r#"{"type":"PartitionsCreated","name":"t","total":3}"#).unwrap();
        assert_eq!(
            record,
            MetadataRecord::PartitionsCreated {
                name: "t".into(),
                total: 3,
                assignments: Vec::new()
            }
        );
        let command: MetadataCommand =
            serde_json::from_str(r#"{"CreateTopic":{"name":"t","partitions":2,"configs":{}}}"#)
                .unwrap();
        assert!(matches!(
            command,
            MetadataCommand::CreateTopic {
                replication_factor: 1,
                assignments: None,
                ..
            }
        ));
    }

    /// A snapshot record of metadata with brokers reads back (the metadata log's records are
    /// an internally tagged enum, whose buffered map keys must be strings: the brokers are
    /// written as a list).
    #[test]
    fn a_snapshot_with_brokers_reads_back() {
        let metadata = cluster(&[0, 2]).apply(&create("t", 3)).unwrap();
        let record = MetadataRecord::Snapshot {
            metadata: metadata.clone(),
        };
        let json = serde_json::to_vec(&record).unwrap();
        let back: MetadataRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, record);
        let json = serde_json::to_vec(&metadata).unwrap();
        let back: ClusterMetadata = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, metadata);
    }

    /// A cluster's records (registrations, placements, fencing) replay to the same metadata.
    #[test]
    fn cluster_records_replay_to_the_applied_metadata() {
        let commands = [
            MetadataCommand::RegisterBroker {
                registration: broker(0, Some("a")),
            },
            MetadataCommand::RegisterBroker {
                registration: broker(1, Some("b")),
            },
            create("t", 5),
            MetadataCommand::FenceBroker { node_id: 0 },
            MetadataCommand::CreatePartitions {
                name: "t".into(),
                total: 7,
                assignments: None,
            },
            MetadataCommand::UnfenceBroker { node_id: 0 },
        ];
        let mut applied = ClusterMetadata::default();
        let mut replayed = ClusterMetadata::default();
        for command in &commands {
            let record = applied.record_for(command).unwrap();
            let next = applied.replay(&record);
            next.check_transition_from(&applied).unwrap();
            applied = next;
            let json = serde_json::to_vec(&record).unwrap();
            replayed = replayed.replay(&serde_json::from_slice(&json).unwrap());
        }
        assert_eq!(replayed, applied);
        assert_eq!(applied.topics["t"].assignment.len(), 7);
        // The two partitions added while broker 0 was fenced went to broker 1.
        assert_eq!(leaders(&applied, "t")[5..], [1, 1]);
    }

    /// A topic "t" of `partitions` partitions with replication factor 3 over brokers 0-2.
    fn rf3(partitions: i32) -> ClusterMetadata {
        cluster(&[0, 1, 2])
            .apply(&create_with("t", partitions, 3, None))
            .unwrap()
    }

    fn alter(
        leader_id: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[i32],
    ) -> MetadataCommand {
        MetadataCommand::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader_id,
            leader_epoch,
            partition_epoch,
            new_isr: new_isr.to_vec(),
        }
    }

    /// Replication factors above 1 are placed over distinct brokers, balanced and rack-aware,
    /// each partition's ISR all its replicas, its leader the first one, both epochs 0; with
    /// manual lists, the ISR holds the unfenced replicas only (Kafka's `isActive` filter).
    #[test]
    fn replication_factor_3_gives_three_replicas_all_in_sync() {
        let m = rf3(6);
        m.check_invariants().unwrap();
        let mut led = BTreeMap::new();
        for a in &m.topics["t"].assignment {
            let mut distinct = a.replicas.clone();
            distinct.sort_unstable();
            assert_eq!(distinct, vec![0, 1, 2]);
            assert_eq!(a.isr, a.replicas);
            assert_eq!(a.leader, a.replicas[0]);
            assert_eq!((a.leader_epoch, a.partition_epoch), (0, 0));
            *led.entry(a.leader).or_insert(0) += 1;
        }
        assert_eq!(led, BTreeMap::from([(0, 2), (1, 2), (2, 2)]));
        assert_eq!(m.topics["t"].replication_factor(), 3);
        let grown = m
            .apply(&MetadataCommand::CreatePartitions {
                name: "t".into(),
                total: 8,
                assignments: None,
            })
            .unwrap();
        assert!(grown.topics["t"].assignment[6..]
            .iter()
            .all(|a| a.replicas.len() == 3 && a.isr == a.replicas));
        let fenced = cluster(&[0, 1, 2])
            .apply(&MetadataCommand::FenceBroker { node_id: 0 })
            .unwrap();
        let manual = fenced
            .apply(&create_with("m", 1, 3, Some(vec![vec![0, 1, 2]])))
            .unwrap();
        let a = &manual.topics["m"].assignment[0];
        assert_eq!((a.leader, a.isr.clone()), (1, vec![1, 2]));
        assert_eq!(
            refusal(&fenced, &create_with("x", 1, 3, None)).0,
            ResponseError::InvalidReplicationFactor,
            "two unfenced brokers cannot hold three replicas"
        );
    }

    /// AlterPartition's checks, one by one, in Kafka's order, each with Kafka's error.
    #[test]
    fn alter_partition_checks_follow_kafkas_order_and_errors() {
        let m = rf3(1);
        let a = m.topics["t"].assignment[0].clone();
        let (l, others) = (a.leader, a.replicas[1..].to_vec());
        let code = |c: &MetadataCommand| refusal(&m, c).0;
        let mut unknown = alter(l, 0, 0, &[l]);
        if let MetadataCommand::AlterPartition { partition, .. } = &mut unknown {
            *partition = 1;
        }
        assert_eq!(code(&unknown), ResponseError::UnknownTopicOrPartition);
        let mut no_topic = alter(l, 0, 0, &[l]);
        if let MetadataCommand::AlterPartition { topic, .. } = &mut no_topic {
            *topic = "nope".into();
        }
        assert_eq!(code(&no_topic), ResponseError::UnknownTopicOrPartition);
        // Newer epochs than the controller's: it may not be the controller any more.
        assert_eq!(code(&alter(l, 1, 0, &[l])), ResponseError::NotController);
        assert_eq!(code(&alter(l, 0, 1, &[l])), ResponseError::NotController);
        // The epochs come before the sender: a stale leader is fenced, whoever it is.
        let moved = m
            .apply(&MetadataCommand::FenceBroker { node_id: l })
            .unwrap();
        let now = moved.topics["t"].assignment[0].clone();
        assert_eq!((now.leader_epoch, now.partition_epoch), (1, 1));
        assert_eq!(
            refusal(&moved, &alter(l, 0, 0, &[l])).0,
            ResponseError::FencedLeaderEpoch
        );
        assert_eq!(
            refusal(&moved, &alter(l, 1, 1, &[now.leader])).0,
            ResponseError::InvalidRequest,
            "only the leader may alter the ISR"
        );
        // A leader that missed an ISR change (same leader epoch, older partition epoch).
        let shrunk = m.apply(&alter(l, 0, 0, &[l, others[0]])).unwrap();
        assert_eq!(
            refusal(&shrunk, &alter(l, 0, 0, &[l])).0,
            ResponseError::InvalidUpdateVersion
        );
        // The new ISR: members of the replicas, distinct, non-empty, with the leader.
        assert_eq!(
            code(&alter(l, 0, 0, &[l, 7])),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            code(&alter(l, 0, 0, &[l, l])),
            ResponseError::InvalidRequest
        );
        assert_eq!(code(&alter(l, 0, 0, &[])), ResponseError::InvalidRequest);
        assert_eq!(
            code(&alter(l, 0, 0, &others)),
            ResponseError::InvalidRequest
        );
        // A fenced member cannot join.
        let follower_fenced = shrunk
            .apply(&MetadataCommand::FenceBroker { node_id: others[1] })
            .unwrap();
        let f = follower_fenced.topics["t"].assignment[0].clone();
        assert_eq!((f.leader, f.leader_epoch, f.partition_epoch), (l, 0, 1));
        assert_eq!(
            refusal(
                &follower_fenced,
                &alter(l, 0, 1, &[l, others[0], others[1]])
            )
            .0,
            ResponseError::IneligibleReplica
        );
        m.check(&alter(l, 0, 0, &[l])).unwrap();
    }

    /// An accepted AlterPartition is one PartitionChanged record with the whole new
    /// assignment: same leader and leader epoch, the new ISR, partition epoch + 1; it replays
    /// to the same metadata through its JSON.
    #[test]
    fn alter_partition_shrinks_and_expands_the_isr_with_a_new_partition_epoch() {
        let m = rf3(2);
        let a = m.topics["t"].assignment[0].clone();
        let l = a.leader;
        let shrink = alter(l, 0, 0, &[l]);
        let record = m.record_for(&shrink).unwrap();
        let mut expected = a.clone();
        expected.isr = vec![l];
        expected.partition_epoch = 1;
        assert_eq!(
            record,
            MetadataRecord::PartitionChanged {
                topic: "t".into(),
                partition: 0,
                assignment: expected.clone(),
            }
        );
        let shrunk = m.apply(&shrink).unwrap();
        shrunk.check_transition_from(&m).unwrap();
        assert_eq!(shrunk.partition("t", 0), Some(&expected));
        assert_eq!(shrunk.partition("t", 1), m.partition("t", 1));
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(m.replay(&serde_json::from_slice(&json).unwrap()), shrunk);
        let expanded = shrunk.apply(&alter(l, 0, 1, &a.replicas)).unwrap();
        let b = expanded.partition("t", 0).unwrap();
        assert_eq!(
            (b.isr.clone(), b.partition_epoch, b.leader_epoch),
            (a.replicas.clone(), 2, 0)
        );
        // A record for a partition that is not there changes nothing but the version.
        let stray = MetadataRecord::PartitionChanged {
            topic: "t".into(),
            partition: 9,
            assignment: expected,
        };
        let after = expanded.replay(&stray);
        assert_eq!(after.topics, expanded.topics);
        assert_eq!(after.version, expanded.version + 1);
    }

    /// An assignment written before replication (no partition_epoch) reads as epoch 0.
    #[test]
    fn an_assignment_without_partition_epoch_reads_as_zero() {
        let a: PartitionAssignment =
            serde_json::from_str(r#"{"replicas":[1],"leader":1,"leader_epoch":4,"isr":[1]}"#)
                .unwrap();
        assert_eq!((a.leader_epoch, a.partition_epoch), (4, 0));
    }

    /// Fencing a follower shrinks the ISR (partition epoch + 1, leader epoch kept); fencing
    /// the leader elects the first in-sync replica in preference order (both epochs + 1);
    /// the last ISR member stays when nobody is left; unfencing gives leadership back.
    #[test]
    fn fencing_with_replicas_elects_from_the_isr_in_preference_order() {
        let m = rf3(1);
        let a = m.partition("t", 0).unwrap().clone();
        let (first, second, third) = (a.replicas[0], a.replicas[1], a.replicas[2]);
        let m1 = m
            .apply(&MetadataCommand::FenceBroker { node_id: third })
            .unwrap();
        let b = m1.partition("t", 0).unwrap();
        assert_eq!(
            (b.leader, b.leader_epoch, b.partition_epoch, b.isr.clone()),
            (first, 0, 1, vec![first, second])
        );
        let m2 = m1
            .apply(&MetadataCommand::FenceBroker { node_id: first })
            .unwrap();
        let c = m2.partition("t", 0).unwrap();
        assert_eq!(
            (c.leader, c.leader_epoch, c.partition_epoch, c.isr.clone()),
            (second, 1, 2, vec![second])
        );
        let m3 = m2
            .apply(&MetadataCommand::FenceBroker { node_id: second })
            .unwrap();
        let d = m3.partition("t", 0).unwrap();
        assert_eq!(
            (d.leader, d.leader_epoch, d.partition_epoch, d.isr.clone()),
            (-1, 2, 3, vec![second])
        );
        // Clean: only the last ISR member may lead again; the others coming back do not.
        let m4 = m3
            .apply(&MetadataCommand::UnfenceBroker { node_id: first })
            .unwrap();
        assert_eq!(m4.partition("t", 0), m3.partition("t", 0));
        let m5 = m4
            .apply(&MetadataCommand::UnfenceBroker { node_id: second })
            .unwrap();
        let e = m5.partition("t", 0).unwrap();
        assert_eq!(
            (e.leader, e.leader_epoch, e.partition_epoch, e.isr.clone()),
            (second, 3, 4, vec![second])
        );
        for (before, after) in [(&m, &m1), (&m1, &m2), (&m2, &m3), (&m3, &m4), (&m4, &m5)] {
            after.check_transition_from(before).unwrap();
        }
    }

    /// With `unclean.leader.election.enable` (the topic's, or the cluster default), a
    /// partition whose ISR is all fenced takes the first live replica as leader, its ISR
    /// reset to it; without, it stays leaderless.
    #[test]
    fn unclean_election_follows_the_topic_config() {
        let fence = |m: &ClusterMetadata, node_id| {
            m.apply(&MetadataCommand::FenceBroker { node_id }).unwrap()
        };
        let unfence = |m: &ClusterMetadata, node_id| {
            m.apply(&MetadataCommand::UnfenceBroker { node_id })
                .unwrap()
        };
        let base = rf3(1);
        let a = base.partition("t", 0).unwrap().clone();
        let r = a.replicas.clone();
        // ISR [r0] only, then r0 fenced with r1 and r2 live.
        let narrowed = base.apply(&alter(r[0], 0, 0, &[r[0]])).unwrap();
        let clean = fence(&narrowed, r[0]);
        assert_eq!(clean.partition("t", 0).unwrap().leader, -1);
        assert!(!clean.unclean_leader_election_enabled("t"));
        let set = |m: &ClusterMetadata, on: &str| {
            m.apply(&MetadataCommand::SetConfigs {
                name: "t".into(),
                configs: [("unclean.leader.election.enable".to_string(), on.to_string())].into(),
            })
            .unwrap()
        };
        let unclean = fence(&set(&narrowed, "true"), r[0]);
        let b = unclean.partition("t", 0).unwrap();
        assert_eq!(
            (b.leader, b.isr.clone(), b.leader_epoch, b.partition_epoch),
            (r[1], vec![r[1]], 1, 2)
        );
        unclean.check_invariants().unwrap();
        // The cluster-wide default counts too, the topic's override first.
        let default_on = narrowed
            .apply(&MetadataCommand::SetBrokerConfigs {
                resource: String::new(),
                configs: [(
                    "unclean.leader.election.enable".to_string(),
                    "true".to_string(),
                )]
                .into(),
            })
            .unwrap();
        assert!(default_on.unclean_leader_election_enabled("t"));
        assert_eq!(
            fence(&default_on, r[0]).partition("t", 0).unwrap().leader,
            r[1]
        );
        assert_eq!(
            fence(&set(&default_on, "false"), r[0])
                .partition("t", 0)
                .unwrap()
                .leader,
            -1
        );
        // A replica coming back to a leaderless partition leads it uncleanly when allowed.
        let all_down = fence(&fence(&fence(&set(&narrowed, "true"), r[1]), r[2]), r[0]);
        assert_eq!(all_down.partition("t", 0).unwrap().leader, -1);
        let back = unfence(&all_down, r[2]);
        let c = back.partition("t", 0).unwrap();
        assert_eq!((c.leader, c.isr.clone()), (r[2], vec![r[2]]));
        back.check_transition_from(&all_down).unwrap();
    }

    /// The controller's periodic unclean elections: only leaderless partitions of topics that
    /// allow them, and only when a replica is live.
    #[test]
    fn unclean_elections_are_due_for_leaderless_partitions_of_topics_that_allow_them() {
        let m = rf3(2);
        let r = m.partition("t", 0).unwrap().replicas.clone();
        let narrowed = m.apply(&alter(r[0], 0, 0, &[r[0]])).unwrap();
        let offline = narrowed
            .apply(&MetadataCommand::FenceBroker { node_id: r[0] })
            .unwrap();
        assert_eq!(offline.partition("t", 0).unwrap().leader, -1);
        assert!(offline.unclean_elections_due(10).is_empty(), "not allowed");
        let allowed = offline
            .apply(&MetadataCommand::SetConfigs {
                name: "t".into(),
                configs: [(
                    "unclean.leader.election.enable".to_string(),
                    "true".to_string(),
                )]
                .into(),
            })
            .unwrap();
        assert_eq!(
            allowed.unclean_elections_due(10),
            vec![("t".to_string(), 0)]
        );
        assert!(allowed.unclean_elections_due(0).is_empty());
        let all_down = [r[1], r[2]].iter().fold(allowed, |m, &node_id| {
            m.apply(&MetadataCommand::FenceBroker { node_id }).unwrap()
        });
        assert!(
            all_down.unclean_elections_due(10).is_empty(),
            "no live replica"
        );
    }

    /// `min.insync.replicas`: the topic's override, else the cluster default, else 1.
    #[test]
    fn min_insync_replicas_reads_the_topic_then_the_cluster_default() {
        let m = rf3(1);
        assert_eq!(m.min_insync_replicas("t"), 1);
        assert_eq!(m.min_insync_replicas("missing"), 1);
        let m = m
            .apply(&MetadataCommand::SetBrokerConfigs {
                resource: String::new(),
                configs: [("min.insync.replicas".to_string(), "2".to_string())].into(),
            })
            .unwrap();
        assert_eq!(m.min_insync_replicas("t"), 2);
        let m = m
            .apply(&MetadataCommand::SetConfigs {
                name: "t".into(),
                configs: [("min.insync.replicas".to_string(), "3".to_string())].into(),
            })
            .unwrap();
        assert_eq!(m.min_insync_replicas("t"), 3);
    }

    fn elect(topic: &str, partition: i32, election: Election) -> MetadataCommand {
        MetadataCommand::ElectLeader {
            topic: topic.into(),
            partition,
            election,
        }
    }

    /// ElectLeader PREFERRED, as Kafka's `electLeader`: not needed while the first replica
    /// leads; moves leadership back to it once it is an unfenced ISR member again (leader
    /// epoch + 1); refused with PREFERRED_LEADER_NOT_AVAILABLE while it is fenced or out of
    /// the ISR; unknown partitions are UNKNOWN_TOPIC_OR_PARTITION.
    #[test]
    fn preferred_election_moves_leadership_back_to_the_first_replica() {
        let m = rf3(1);
        let a = m.partition("t", 0).unwrap().clone();
        let first = a.replicas[0];
        assert_eq!(
            refusal(&m, &elect("t", 0, Election::Preferred)).0,
            ResponseError::ElectionNotNeeded
        );
        assert_eq!(
            refusal(&m, &elect("t", 5, Election::Preferred)),
            (
                ResponseError::UnknownTopicOrPartition,
                "No such partition as t-5".into()
            )
        );
        assert_eq!(
            refusal(&m, &elect("u", 0, Election::Preferred)),
            (
                ResponseError::UnknownTopicOrPartition,
                "No such topic as u".into()
            )
        );
        let failed_over = m
            .apply(&MetadataCommand::FenceBroker { node_id: first })
            .unwrap();
        assert_eq!(
            refusal(&failed_over, &elect("t", 0, Election::Preferred)).0,
            ResponseError::PreferredLeaderNotAvailable
        );
        let back = failed_over
            .apply(&MetadataCommand::UnfenceBroker { node_id: first })
            .unwrap();
        // Unfenced but not in the ISR yet (its leader has not let it back in).
        assert_eq!(
            refusal(&back, &elect("t", 0, Election::Preferred)).0,
            ResponseError::PreferredLeaderNotAvailable
        );
        let b = back.partition("t", 0).unwrap().clone();
        let mut isr = b.isr.clone();
        isr.push(first);
        let in_sync = back
            .apply(&alter(b.leader, b.leader_epoch, b.partition_epoch, &isr))
            .unwrap();
        let elected = in_sync.apply(&elect("t", 0, Election::Preferred)).unwrap();
        elected.check_transition_from(&in_sync).unwrap();
        let c = elected.partition("t", 0).unwrap();
        assert_eq!(c.leader, first);
        assert_eq!(c.leader_epoch, b.leader_epoch + 1);
        assert_eq!(c.partition_epoch, b.partition_epoch + 2);
        assert_eq!(c.isr, isr);
    }

    /// ElectLeader UNCLEAN: not needed while there is a leader; a leaderless partition gets
    /// an ISR member if one is live, else any live replica with the ISR reset to it (even
    /// with the topic's unclean election off: an operator asked), else
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE.
    #[test]
    fn unclean_election_on_request_takes_any_live_replica() {
        let m = rf3(1);
        let r = m.partition("t", 0).unwrap().replicas.clone();
        assert_eq!(
            refusal(&m, &elect("t", 0, Election::Unclean)).0,
            ResponseError::ElectionNotNeeded
        );
        let narrowed = m.apply(&alter(r[0], 0, 0, &[r[0]])).unwrap();
        let offline = narrowed
            .apply(&MetadataCommand::FenceBroker { node_id: r[0] })
            .unwrap();
        assert_eq!(offline.partition("t", 0).unwrap().leader, -1);
        assert_eq!(
            refusal(&offline, &elect("t", 0, Election::Preferred)).0,
            ResponseError::PreferredLeaderNotAvailable
        );
        let elected = offline.apply(&elect("t", 0, Election::Unclean)).unwrap();
        let a = elected.partition("t", 0).unwrap();
        assert_eq!((a.leader, a.isr.clone()), (r[1], vec![r[1]]));
        elected.check_transition_from(&offline).unwrap();
        let all_down = [r[1], r[2]].iter().fold(offline, |m, &node_id| {
            m.apply(&MetadataCommand::FenceBroker { node_id }).unwrap()
        });
        assert_eq!(
            refusal(&all_down, &elect("t", 0, Election::Unclean)).0,
            ResponseError::EligibleLeadersNotAvailable
        );
    }

    /// Automatic leader balancing picks a broker's partitions once more than the imbalance
    /// percentage of those it prefers are led elsewhere, and only those it can lead now.
    #[test]
    fn preferred_elections_are_due_past_the_imbalance_percentage() {
        let m = rf3(12);
        assert!(m.preferred_elections_due(10, 100).is_empty());
        // Broker 0 fenced and back: its 4 preferred partitions are led by others.
        let m = m
            .apply(&MetadataCommand::FenceBroker { node_id: 0 })
            .unwrap()
            .apply(&MetadataCommand::UnfenceBroker { node_id: 0 })
            .unwrap();
        let preferring_0: Vec<i32> = (0..12)
            .filter(|&p| m.partition("t", p).unwrap().replicas[0] == 0)
            .collect();
        assert_eq!(preferring_0.len(), 4);
        // Out of the ISR: nothing electable yet.
        assert!(m.preferred_elections_due(10, 100).is_empty());
        let mut m = m;
        for &p in &preferring_0 {
            let a = m.partition("t", p).unwrap().clone();
            let mut isr = a.isr.clone();
            isr.push(0);
            let cmd = MetadataCommand::AlterPartition {
                topic: "t".into(),
                partition: p,
                leader_id: a.leader,
                leader_epoch: a.leader_epoch,
                partition_epoch: a.partition_epoch,
                new_isr: isr,
            };
            m = m.apply(&cmd).unwrap();
        }
        let due = m.preferred_elections_due(10, 100);
        let expected: Vec<(String, i32)> =
            preferring_0.iter().map(|&p| ("t".to_string(), p)).collect();
        assert_eq!(due, expected);
        assert_eq!(m.preferred_elections_due(10, 2), expected[..2].to_vec());
        // 4 of 4 led elsewhere is 100 %: not above 100.
        assert!(m.preferred_elections_due(100, 100).is_empty());
        let mut balanced = m.clone();
        for (topic, p) in &due {
            balanced = balanced
                .apply(&elect(topic, *p, Election::Preferred))
                .unwrap();
        }
        assert!(balanced.preferred_elections_due(0, 100).is_empty());
        assert!((0..12).all(|p| {
            let a = balanced.partition("t", p).unwrap();
            a.leader == a.replicas[0]
        }));
    }

    fn reassign(partition: i32, target: Option<&[i32]>) -> MetadataCommand {
        MetadataCommand::AlterReassignment {
            topic: "t".into(),
            partition,
            target: target.map(<[i32]>::to_vec),
            allow_replication_factor_change: true,
        }
    }

    /// rf 1 -> 3 through AlterReassignment: the replicas grow at once with both new ones
    /// adding; the leader's AlterPartition that brings the last one in sync completes it in
    /// the same record.
    #[test]
    fn a_reassignment_grows_and_completes_with_the_isr() {
        let m = cluster(&[0, 1, 2])
            .apply(&create_with("t", 1, 1, Some(vec![vec![0]])))
            .unwrap();
        let grown = m.apply(&reassign(0, Some(&[0, 1, 2]))).unwrap();
        let a = grown.partition("t", 0).unwrap().clone();
        assert_eq!(a.replicas, vec![0, 1, 2]);
        assert_eq!(a.isr, vec![0]);
        assert_eq!(a.reassignment.as_ref().unwrap().adding, vec![1, 2]);
        let half = grown
            .apply(&MetadataCommand::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader_id: 0,
                leader_epoch: a.leader_epoch,
                partition_epoch: a.partition_epoch,
                new_isr: vec![0, 1],
            })
            .unwrap();
        let b = half.partition("t", 0).unwrap().clone();
        assert!(b.reassignment.is_some(), "2 is not in sync yet");
        let done = half
            .apply(&MetadataCommand::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader_id: 0,
                leader_epoch: b.leader_epoch,
                partition_epoch: b.partition_epoch,
                new_isr: vec![0, 1, 2],
            })
            .unwrap();
        let c = done.partition("t", 0).unwrap();
        assert_eq!(c.reassignment, None);
        assert_eq!(
            (c.replicas.clone(), c.isr.clone()),
            (vec![0, 1, 2], vec![0, 1, 2])
        );
        assert_eq!(
            c.partition_epoch,
            b.partition_epoch + 1,
            "one change, one epoch"
        );
        assert_eq!(c.leader_epoch, a.leader_epoch);
        assert_eq!(done.topics["t"].replication_factor(), 3);
    }

    /// Kafka's errors: unknown topic or partition, cancel with nothing in progress, bad
    /// lists, a replication factor change not allowed; a cancel restores the replicas.
    #[test]
    fn reassignment_refusals_and_cancel_follow_kafka() {
        let m = rf3(2);
        let code = |m: &ClusterMetadata, c: &MetadataCommand| m.apply(c).unwrap_err().code;
        let mut unknown = reassign(0, Some(&[0]));
        if let MetadataCommand::AlterReassignment { topic, .. } = &mut unknown {
            *topic = "nope".into();
        }
        assert_eq!(code(&m, &unknown), ResponseError::UnknownTopicOrPartition);
        assert_eq!(
            code(&m, &reassign(5, Some(&[0]))),
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(
            code(&m, &reassign(0, None)),
            ResponseError::NoReassignmentInProgress
        );
        let huge: Vec<i32> = (0..(BROKERS_MAX as i32 + 1)).collect();
        for bad in [&[][..], &[0, 0][..], &[0, 9][..], &huge[..]] {
            assert_eq!(
                code(&m, &reassign(0, Some(bad))),
                ResponseError::InvalidReplicaAssignment
            );
        }
        let fixed_rf = MetadataCommand::AlterReassignment {
            topic: "t".into(),
            partition: 0,
            target: Some(vec![0]),
            allow_replication_factor_change: false,
        };
        assert_eq!(code(&m, &fixed_rf), ResponseError::InvalidReplicationFactor);
        let m = cluster(&[0, 1, 2, 3])
            .apply(&create_with("t", 1, 2, Some(vec![vec![0, 1]])))
            .unwrap();
        let before = m.partition("t", 0).unwrap().clone();
        let moving = m.apply(&reassign(0, Some(&[2, 3]))).unwrap();
        assert_eq!(moving.partition("t", 0).unwrap().replicas, vec![2, 3, 0, 1]);
        let cancelled = moving.apply(&reassign(0, None)).unwrap();
        let after = cancelled.partition("t", 0).unwrap();
        assert_eq!(
            (after.replicas.clone(), after.isr.clone()),
            (before.replicas, before.isr)
        );
        assert_eq!(after.reassignment, None);
        cancelled.check_transition_from(&moving).unwrap();
        // A new target over one in progress starts from the reverted assignment.
        let again = moving.apply(&reassign(0, Some(&[1, 3]))).unwrap();
        let a = again.partition("t", 0).unwrap();
        assert_eq!(a.replicas, vec![1, 3, 0]);
        assert_eq!(
            a.reassignment,
            Some(Reassignment {
                adding: vec![3],
                removing: vec![0]
            })
        );
    }

    /// Random commands of every kind. Longer than most functions: one strategy per command
    /// kind, kept together so that the mix is visible in one place.
    fn command() -> impl proptest::strategy::Strategy<Value = MetadataCommand> {
        use proptest::prelude::*;
        // A few names, some invalid or reserved, so that refusals are exercised too.
        let name = prop_oneof![
            Just("a".to_string()),
            Just("b.c".to_string()),
            Just("d_e-1".to_string()),
            Just("bad name".to_string()),
            Just("__consumer_offsets".to_string()),
            Just(".freshet-x".to_string()),
        ];
        // Replica lists over brokers 0..5 (4 is never registered), sometimes two long.
        let lists = proptest::option::of(proptest::collection::vec(
            proptest::collection::vec(0..5i32, 1..3),
            1..5,
        ));
        let registration = (
            0..4i32,
            0..3u128,
            proptest::option::of(0..2u8),
            proptest::bool::ANY,
        )
            .prop_map(|(node_id, incarnation, rack, fenced)| BrokerRegistration {
                node_id,
                incarnation_id: Uuid::from_u128(incarnation),
                host: "127.0.0.1".into(),
                port: 9092 + node_id,
                rack: rack.map(|r| format!("rack-{r}")),
                fenced,
                listeners: Vec::new(),
            });
        prop_oneof![
            (name.clone(), -1..5i32, 0..4i16, lists.clone()).prop_map(
                |(name, partitions, replication_factor, assignments)| {
                    // Mostly consistent layouts (as the request handler makes them), so
                    // that lists get accepted too.
                    let partitions = assignments.as_ref().map_or(partitions, |l| l.len() as i32);
                    let replication_factor = assignments
                        .as_ref()
                        .map_or(replication_factor, |l| l[0].len() as i16);
                    MetadataCommand::CreateTopic {
                        name,
                        partitions,
                        configs: BTreeMap::new(),
                        replication_factor,
                        assignments,
                    }
                }
            ),
            name.clone()
                .prop_map(|name| MetadataCommand::DeleteTopic { name }),
            (name.clone(), 0..8i32, lists).prop_map(|(name, total, assignments)| {
                MetadataCommand::CreatePartitions {
                    name,
                    total,
                    assignments,
                }
            }),
            registration.prop_map(|registration| MetadataCommand::RegisterBroker { registration }),
            (0..5i32).prop_map(|node_id| MetadataCommand::FenceBroker { node_id }),
            (0..5i32).prop_map(|node_id| MetadataCommand::UnfenceBroker { node_id }),
            (name, proptest::option::of(0..3u8)).prop_map(|(name, ms)| {
                MetadataCommand::SetConfigs {
                    name,
                    configs: ms
                        .map(|ms| ("retention.ms".to_string(), format!("{}", i32::from(ms) - 1)))
                        .into_iter()
                        .collect(),
                }
            }),
            Just(MetadataCommand::AllocateProducerIdBlock),
            (
                0..2i32,
                0..4i32,
                0..3i32,
                0..4i32,
                proptest::collection::vec(0..5i32, 0..4)
            )
                .prop_map(
                    |(partition, leader_id, leader_epoch, partition_epoch, new_isr)| {
                        // Small epochs, so that some requests name the current ones.
                        MetadataCommand::AlterPartition {
                            topic: "a".into(),
                            partition,
                            leader_id,
                            leader_epoch,
                            partition_epoch,
                            new_isr,
                        }
                    }
                ),
            (0..2i32, proptest::bool::ANY).prop_map(|(partition, preferred)| {
                MetadataCommand::ElectLeader {
                    topic: "a".into(),
                    partition,
                    election: if preferred {
                        Election::Preferred
                    } else {
                        Election::Unclean
                    },
                }
            }),
            (
                0..2i32,
                proptest::option::of(proptest::collection::vec(0..5i32, 0..4)),
                proptest::bool::ANY
            )
                .prop_map(|(partition, target, allow_replication_factor_change)| {
                    MetadataCommand::AlterReassignment {
                        topic: "a".into(),
                        partition,
                        target,
                        allow_replication_factor_change,
                    }
                }),
            proptest::bool::ANY.prop_map(|on| MetadataCommand::SetConfigs {
                name: "a".into(),
                configs: [("unclean.leader.election.enable".to_string(), on.to_string())].into(),
            }),
            (proptest::bool::ANY, proptest::bool::ANY).prop_map(|(node, set)| {
                MetadataCommand::SetBrokerConfigs {
                    resource: if node { "1".into() } else { String::new() },
                    configs: set
                        .then(|| ("log.retention.ms".to_string(), "1000".to_string()))
                        .into_iter()
                        .collect(),
                }
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random commands, accepted or refused, keep every invariant; an accepted one moves
        /// the version by exactly one and keeps ids and partition counts of the topics that
        /// stay; a refused one leaves the metadata as it was.
        #[test]
        fn random_commands_keep_the_invariants(
            commands in proptest::collection::vec(command(), 1..60)
        ) {
            let mut m = ClusterMetadata::default();
            for c in commands {
                match m.apply(&c) {
                    Ok(next) => {
                        if let Err(v) = next.check_transition_from(&m) {
                            proptest::prop_assert!(false, "{c:?}: {v}");
                        }
                        m = next;
                    }
                    Err(_) => {
                        proptest::prop_assert!(m.check(&c).is_err());
                    }
                }
                if let Err(v) = m.check_invariants() {
                    proptest::prop_assert!(false, "{v}");
                }
            }
        }
    }
}
