//! Admin APIs: topics, configs, records, cluster and log-dir descriptions.
//!
//! [`handle`] dispatches to one module per API (`create_topics`, `delete_topics`,
//! `create_partitions`, `configs`, `delete_records`, `describe_cluster`, `describe_log_dirs`).
//! This module also holds what they share: [`AdminError`], the admin layer's one error type
//! (every refusal an admin API makes on its own, with the message Kafka 4.1 gives; its codes
//! are chosen in `crate::error::admin_code`), and small helpers (duplicate detection, manual
//! replica-assignment checks, config resource types).
//!
//! Changes to cluster metadata always run on the coordinator shard through
//! `Shard::change_metadata`; descriptions read the local shard's metadata snapshot, which
//! every change has reached before it is acknowledged.

use std::collections::{BTreeSet, HashSet};
use std::rc::Rc;

use kafka_protocol::messages::ApiKey;

use super::{
    configs, create_partitions, create_topics, delete_records, delete_topics, describe_cluster,
    describe_log_dirs, Outcome,
};
use crate::coordinator::metadata::MetadataError;
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, ShardGone};
use crate::storage::StorageError;

/// Dispatches an admin request (the API key and version were checked by `api::handle`).
pub async fn handle(shard: &Rc<Shard>, api_key: ApiKey, request: ParsedRequest) -> Outcome {
    match api_key {
        ApiKey::CreateTopics => create_topics::handle(shard, request).await,
        ApiKey::DeleteTopics => delete_topics::handle(shard, request).await,
        ApiKey::CreatePartitions => create_partitions::handle(shard, request).await,
        ApiKey::DescribeConfigs => configs::handle_describe(shard, request).await,
        ApiKey::AlterConfigs => configs::handle_alter(shard, request).await,
        ApiKey::IncrementalAlterConfigs => configs::handle_incremental_alter(shard, request).await,
        ApiKey::DeleteRecords => delete_records::handle(shard, request).await,
        ApiKey::DescribeCluster => describe_cluster::handle(shard, request).await,
        ApiKey::DescribeLogDirs => describe_log_dirs::handle(shard, request).await,
        // `classify_request` only lets through what `protocol::versions` lists, and every
        // listed API has a handler; a key that gets here is a table/dispatch mismatch.
        _ => Outcome::Close(format!("{api_key:?} is not implemented")),
    }
}

/// Why an admin API refused (part of) a request. Each variant's message is the one Kafka 4.1
/// sends in the same situation (quoted from its controller and broker code where Kafka has
/// one); its code comes from [`crate::error::admin_code`]. Values are `Send`, so they can be
/// produced on the coordinator shard and answered on the connection's shard.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A metadata command refused by the coordinator's state machine (carries its code).
    #[error("{}", .0.message)]
    Metadata(MetadataError),
    /// A storage failure on the partition's owning shard.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The shard that had to do the work is stopping.
    #[error(transparent)]
    ShardGone(#[from] ShardGone),
    /// The partition is in the metadata but not open on its shard.
    #[error("The partition {0} is not available on this broker.")]
    PartitionUnavailable(String),

    // ---- topics ----
    /// The same topic name twice in one request (CreateTopics, DeleteTopics, CreatePartitions).
    #[error("Duplicate topic name.")]
    DuplicateTopicName,
    /// CreateTopics of a name that exists.
    #[error("Topic '{0}' already exists.")]
    TopicAlreadyExists(String),
    /// The same topic id twice in one DeleteTopics request.
    #[error("Duplicate topic id.")]
    DuplicateTopicId,
    /// A DeleteTopics v6 entry with neither a name nor an id.
    #[error("Neither topic name nor id were specified.")]
    NoTopicNameOrId,
    /// A DeleteTopics v6 entry with both a name and an id.
    #[error("You may not specify both topic name and topic id.")]
    TopicNameAndId,
    /// A DeleteTopics name that resolves to an id also given in the same request.
    #[error("The provided topic name maps to an ID that was already supplied.")]
    NameMapsToSuppliedId,
    /// No such topic (or partition).
    #[error("This server does not host this topic-partition.")]
    UnknownTopicOrPartition,
    /// No topic with this id.
    #[error("This server does not host this topic ID.")]
    UnknownTopicId,
    /// A config resource names a topic that does not exist.
    #[error("The topic '{0}' does not exist.")]
    UnknownConfigTopic(String),
    /// The new topic's name differs from an existing one only by '.' versus '_' (their
    /// metric names would collide in Kafka; refused the same way here).
    #[error("Topic '{name}' collides with existing topic: {existing}")]
    TopicCollision { name: String, existing: String },
    /// CreateTopics configs with null values (comma-separated names).
    #[error("Null value not supported for topic configs: {0}")]
    NullTopicConfigs(String),
    /// A manual assignment together with a replication factor other than -1.
    #[error(
        "A manual partition assignment was specified, but replication factor was not set to -1."
    )]
    AssignmentWithReplicationFactor,
    /// A manual assignment together with a partition count other than -1.
    #[error("A manual partition assignment was specified, but numPartitions was not set to -1.")]
    AssignmentWithPartitionCount,
    /// A manual replica assignment that cannot be used (the message says why).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// A replication factor of 0 or below -1.
    #[error("Replication factor must be larger than 0, or -1 to use the default value.")]
    ReplicationFactorNotPositive,
    /// More replicas than brokers (this is a single-node cluster).
    #[error(
        "Unable to replicate the partition {factor} time(s): The target replication factor of \
         {factor} cannot be reached because only {brokers} broker(s) are registered."
    )]
    ReplicationFactorTooLarge { factor: i16, brokers: usize },
    /// A partition count of 0 or below -1.
    #[error("Number of partitions was set to an invalid non-positive value.")]
    PartitionCountNotPositive,
    /// CreatePartitions to the current count.
    #[error("Topic already has {0} partition(s).")]
    PartitionCountUnchanged(i32),
    /// CreatePartitions to fewer partitions.
    #[error(
        "The topic {topic} currently has {current} partition(s); {requested} would not be an \
         increase."
    )]
    PartitionCountDecrease {
        topic: String,
        current: i32,
        requested: i32,
    },

    // ---- configs ----
    /// The same config resource twice in one Alter request.
    #[error("Each resource must appear at most once.")]
    DuplicateResource,
    /// The same config key twice in one resource.
    #[error("Error due to duplicate config keys")]
    DuplicateConfigKeys,
    /// Alter with null values (other than DELETE), comma-separated names.
    #[error("Null value not supported for : {0}")]
    NullConfigValues(String),
    /// An IncrementalAlterConfigs operation other than SET, DELETE, APPEND, SUBTRACT.
    #[error("Unknown operations type {0}")]
    UnknownConfigOperation(i8),
    /// APPEND or SUBTRACT on a config that is not a list.
    #[error("Can't {op} to key {key} because its type is not LIST.")]
    NotAListConfig { op: &'static str, key: String },
    /// A topic config resource with an empty name.
    #[error("Default topic resources are not allowed.")]
    DefaultTopicResource,
    /// A topic config name or value the table refuses.
    #[error("{0}")]
    InvalidConfig(String),
    /// A config resource type Kafka does not know.
    #[error("Unknown resource type {0}")]
    UnknownResourceType(i8),
    /// A config resource type Kafka knows but Freshet does not serve (BROKER_LOGGER,
    /// CLIENT_METRICS, GROUP).
    #[error("Unsupported resource type: {0}")]
    UnsupportedResourceType(&'static str),
    /// DescribeConfigs of a broker whose name is not a number.
    #[error("Broker id must be an integer, but it is: {0}")]
    BrokerIdNotInteger(String),
    /// Alter of a broker whose name is not a number.
    #[error("Node id must be an integer, but it is: {0}")]
    NodeIdNotInteger(String),
    /// DescribeConfigs of another broker.
    #[error("Unexpected broker id, expected {expected} or empty string, but received {received}")]
    DescribeOtherBroker { expected: i32, received: String },
    /// Alter of another broker.
    #[error("Unexpected broker id, expected {expected}, but received {received}")]
    AlterOtherBroker { expected: i32, received: String },
    /// A broker config change Kafka refuses (static configs, per-broker configs at the
    /// cluster level, `ssl.*` without a listener prefix): Kafka's whole message.
    #[error("{0}")]
    BrokerConfigRefused(String),

    // ---- records ----
    /// DeleteRecords on an internal topic.
    #[error("Cannot delete records of internal topic {0}")]
    InternalTopicRecords(String),
    /// DeleteRecords on a topic whose cleanup.policy lacks `delete`.
    #[error("Records of partition {0} can not be deleted due to the configured policy")]
    DeletePolicy(String),
    /// DeleteRecords to a negative offset (other than -1, the high watermark).
    #[error("The offset {offset} for partition {partition} is not valid")]
    InvalidDeleteOffset { offset: i64, partition: String },
    /// DeleteRecords past the high watermark.
    #[error(
        "Cannot increment the log start offset to {offset} of partition {partition} since it is \
         larger than the high watermark {high_watermark}"
    )]
    DeleteOffsetAboveHighWatermark {
        offset: i64,
        partition: String,
        high_watermark: i64,
    },

    // ---- cluster ----
    /// DescribeCluster with an endpoint type Kafka does not know.
    #[error("Unsupported endpoint type {0}")]
    UnsupportedEndpointType(i8),
    /// DescribeCluster asking a broker for controller endpoints.
    #[error(
        "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type \
         CONTROLLER"
    )]
    MismatchedEndpointType,
    /// The log directory cannot be described (statvfs failed).
    #[error("Log directory {dir} is unavailable: {source}")]
    LogDir { dir: String, source: std::io::Error },
}

impl From<MetadataError> for AdminError {
    fn from(e: MetadataError) -> Self {
        AdminError::Metadata(e)
    }
}

impl AdminError {
    /// The Kafka error code for this refusal.
    pub fn code(&self) -> i16 {
        crate::error::admin_code(self).code()
    }

    /// The message for the response's `error_message`.
    pub fn message(&self) -> Option<kafka_protocol::protocol::StrBytes> {
        Some(super::str_bytes(self.to_string()))
    }
}

/// The names that occur more than once, in order of their first occurrence.
pub fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    let mut dup = Vec::new();
    for name in names {
        if !seen.insert(name) && !dup.contains(&name) {
            dup.push(name);
        }
    }
    dup
}

/// Checks one partition's manual replica list on this single-node cluster, as Kafka's
/// `validateManualPartitionAssignment` does: not empty, only registered brokers (this node),
/// no broker twice, and as many replicas as `replicas_expected` when given.
pub fn check_replica_list(
    brokers: &[i32],
    node_id: i32,
    replicas_expected: Option<usize>,
) -> Result<(), AdminError> {
    let bad = |why: String| Err(AdminError::InvalidReplicaAssignment(why));
    if brokers.is_empty() {
        return bad("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted: Vec<i32> = brokers.to_vec();
    sorted.sort_unstable();
    let mut seen = BTreeSet::new();
    for &broker in &sorted {
        if broker != node_id {
            return bad(format!(
                "The manual partition assignment includes broker {broker}, but no such broker \
                 is registered."
            ));
        }
        if !seen.insert(broker) {
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

/// Config resource types (Kafka's `ConfigResource.Type` ids).
pub mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
    pub const BROKER_LOGGER: i8 = 8;
    pub const CLIENT_METRICS: i8 = 16;
    pub const GROUP: i8 = 32;

    /// Kafka's name for a known type other than TOPIC and BROKER, `None` for unknown ids.
    pub fn unsupported_name(id: i8) -> Option<&'static str> {
        match id {
            BROKER_LOGGER => Some("BROKER_LOGGER"),
            CLIENT_METRICS => Some("CLIENT_METRICS"),
            GROUP => Some("GROUP"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_reported_once_in_first_occurrence_order() {
        assert_eq!(duplicates(["a", "b", "a", "c", "b", "a"]), vec!["a", "b"]);
        assert!(duplicates(["a", "b"]).is_empty());
    }

    #[test]
    fn replica_lists_must_name_only_this_node_once() {
        assert!(check_replica_list(&[3], 3, None).is_ok());
        assert!(check_replica_list(&[3], 3, Some(1)).is_ok());
        let message = |r: Result<(), AdminError>| r.unwrap_err().to_string();
        assert_eq!(
            message(check_replica_list(&[], 3, None)),
            "The manual partition assignment includes an empty replica list."
        );
        assert_eq!(
            message(check_replica_list(&[3, 7], 3, None)),
            "The manual partition assignment includes broker 7, but no such broker is registered."
        );
        assert_eq!(
            message(check_replica_list(&[3, 3], 3, None)),
            "The manual partition assignment includes the broker 3 more than once."
        );
        assert!(matches!(
            check_replica_list(&[3], 3, Some(2)),
            Err(AdminError::InvalidReplicaAssignment(_))
        ));
    }

    #[test]
    fn refusals_carry_kafkas_codes() {
        use kafka_protocol::error::ResponseError as E;
        let cases: Vec<(AdminError, E)> = vec![
            (AdminError::DuplicateTopicName, E::InvalidRequest),
            (
                AdminError::ReplicationFactorTooLarge {
                    factor: 3,
                    brokers: 1,
                },
                E::InvalidReplicationFactor,
            ),
            (AdminError::PartitionCountUnchanged(2), E::InvalidPartitions),
            (
                AdminError::InvalidReplicaAssignment(String::new()),
                E::InvalidReplicaAssignment,
            ),
            (
                AdminError::NotAListConfig {
                    op: "APPEND",
                    key: "retention.ms".into(),
                },
                E::InvalidConfig,
            ),
            (AdminError::DeletePolicy("t-0".into()), E::PolicyViolation),
            (AdminError::UnknownTopicId, E::UnknownTopicId),
            (
                AdminError::MismatchedEndpointType,
                E::MismatchedEndpointType,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(crate::error::admin_code(&error), code, "{error:?}");
        }
    }
}
