//! Errors of every layer, mapped to Kafka error codes in this one place.
//!
//! Each layer has its own error type ([`crate::storage::StorageError`], the record batch
//! format's [`BatchError`] (from the protocol crate, which becomes a `StorageError` here),
//! [`ShardGone`], the coordinator's `MetadataError` which already carries its code, the admin
//! APIs' [`AdminError`]: every refusal an admin API makes on its own, with the message Kafka
//! 4.1 gives). Handlers never pick codes for those themselves: they call [`storage_code`] and
//! friends, so a given failure is reported the same way by every API, as Kafka would.
//!
//! This module imports only the layers below the request handlers (storage, coordinator, and
//! the protocol crate): [`AdminError`] and [`ShardGone`] live here (re-exported at
//! `api::admin` and `shard`), so nothing above imports back into it in a cycle.

use freshet_protocol::BatchError;
use kafka_protocol::error::ResponseError;

use crate::coordinator::metadata::MetadataError;
use crate::storage::StorageError;

/// Why a cross-shard call did not complete: the target shard (a `shard::ShardId`) has
/// stopped. Defined here, below the shard layer, so that this module and the layers that
/// report it need not import the shard.
#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

/// Why an admin API refused (part of) a request. Each variant's message is the one Kafka 4.1
/// sends in the same situation (quoted from its controller and broker code where Kafka has
/// one); its code comes from [`admin_code`]. Values are `Send`, so they can be
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
    /// The partition is in the metadata and another broker (or none) leads it (Kafka's
    /// `ReplicaManager.getPartitionOrException`).
    #[error("The broker does not host the partition {0}; it is not its leader.")]
    NotLeaderOrFollower(String),

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
    /// DeleteRecords whose low watermark (every live replica's log start) did not reach the
    /// offset within the request's `timeout_ms` (Kafka's expired `DelayedDeleteRecords`).
    #[error(
        "The low watermark {low_watermark} of partition {partition} did not reach {offset} in \
         time"
    )]
    DeleteRecordsTimedOut {
        offset: i64,
        partition: String,
        low_watermark: i64,
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
    /// DescribeQuorum sent to a node that does not lead the metadata quorum (Kafka's
    /// `KafkaRaftClient` answers so on any node but the active controller).
    #[error(
        "For requests intended only for the leader, this error indicates that the broker is not \
         the current leader. For requests intended for any replica, this error indicates that \
         the broker is not a replica of the topic partition."
    )]
    NotQuorumLeader,
    /// The log directory cannot be described (statvfs failed).
    #[error("Log directory {dir} is unavailable: {source}")]
    LogDir { dir: String, source: std::io::Error },
    /// The authorizer refused the operation on a resource of this type (its code from
    /// [`authorization_failed_code`]).
    #[error("Authorization failed.")]
    Unauthorized(crate::security::acl::ResourceType),
    /// A topic whose partitions would be created or deleted while the client's
    /// `controller_mutation_rate` quota is exhausted (KIP-599, `crate::quota::MutationQuota`).
    #[error("The throttling quota has been exceeded.")]
    ThrottlingQuotaExceeded,
}

impl From<MetadataError> for AdminError {
    fn from(e: MetadataError) -> Self {
        AdminError::Metadata(e)
    }
}

impl AdminError {
    /// The Kafka error code for this refusal.
    pub fn code(&self) -> i16 {
        admin_code(self).code()
    }

    /// The message for the response's `error_message`.
    pub fn message(&self) -> Option<kafka_protocol::protocol::StrBytes> {
        Some(kafka_protocol::protocol::StrBytes::from_string(
            self.to_string(),
        ))
    }
}

/// The Kafka error a client gets for a storage failure.
pub fn storage_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::Io { .. } => ResponseError::KafkaStorageError,
        // The partition is going away from this shard (deleted, or the broker is stopping):
        // clients refresh metadata and retry.
        StorageError::Closed => ResponseError::NotLeaderOrFollower,
        StorageError::CorruptMessage(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
        StorageError::InvalidRecords { .. } => ResponseError::InvalidRecord,
        StorageError::RecordListTooLarge(_) => ResponseError::RecordListTooLarge,
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        StorageError::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        StorageError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        StorageError::TransactionNotVerified(_) => ResponseError::InvalidTxnState,
    }
}

/// A record batch refused by the protocol crate's checks is refused by storage with the same
/// variant, so it reaches clients as the same Kafka code ([`batch_code`]).
impl From<BatchError> for StorageError {
    fn from(error: BatchError) -> Self {
        match error {
            BatchError::CorruptMessage(m) => StorageError::CorruptMessage(m),
            BatchError::InvalidRecord(m) => StorageError::InvalidRecord(m),
            BatchError::InvalidRecords { message, errors } => {
                StorageError::InvalidRecords { message, errors }
            }
            BatchError::RecordListTooLarge(m) => StorageError::RecordListTooLarge(m),
            BatchError::MessageTooLarge { size, max } => {
                StorageError::MessageTooLarge { size, max }
            }
        }
    }
}

/// The Kafka error a client gets for a record batch the format checks refuse.
pub fn batch_code(error: &BatchError) -> ResponseError {
    match error {
        BatchError::CorruptMessage(_) => ResponseError::CorruptMessage,
        BatchError::InvalidRecord(_) | BatchError::InvalidRecords { .. } => {
            ResponseError::InvalidRecord
        }
        BatchError::RecordListTooLarge(_) => ResponseError::RecordListTooLarge,
        BatchError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
    }
}

/// The Kafka error for a partition whose owning shard could not be reached (stopping).
pub fn shard_gone_code(_: &ShardGone) -> ResponseError {
    ResponseError::NotLeaderOrFollower
}

/// The Kafka error for a group or transaction request whose coordinator shard could not be
/// reached or dropped the request (the broker is stopping): clients look the coordinator up
/// again and retry, as they do when Kafka's coordinator moves.
/// A refused share acknowledgement (`coordinator::share_partition`).
pub fn share_ack_code(error: crate::coordinator::share_partition::AckError) -> ResponseError {
    use crate::coordinator::share_partition::AckError;
    match error {
        AckError::InvalidRequest => ResponseError::InvalidRequest,
        AckError::InvalidRecordState => ResponseError::InvalidRecordState,
    }
}

/// The error of a group- or transactional-id-keyed request on a node that does not coordinate
/// the key (in a cluster; see `shard::coordinators`).
pub fn not_coordinator_code() -> ResponseError {
    ResponseError::NotCoordinator
}

pub fn coordinator_gone_code() -> ResponseError {
    ResponseError::CoordinatorNotAvailable
}

/// The error for a partition that exists in metadata but is not open on its shard (its log
/// failed to open, or it is being created or deleted right now).
pub fn partition_unavailable_code() -> ResponseError {
    ResponseError::KafkaStorageError
}

/// The Kafka error for a partition the metadata knows that another broker (or none) leads:
/// Kafka's `ReplicaManager.getPartitionOrError` answers NOT_LEADER_OR_FOLLOWER for a partition
/// it does not host but the metadata has, so the client refreshes its metadata and retries.
pub fn not_leader_code() -> ResponseError {
    ResponseError::NotLeaderOrFollower
}

/// The Kafka error for a partition the metadata does not have (no such topic or index).
pub fn unknown_partition_code() -> ResponseError {
    ResponseError::UnknownTopicOrPartition
}

/// The Kafka error for a metadata command the coordinator refused (it says which itself).
pub fn metadata_code(error: &MetadataError) -> ResponseError {
    error.code
}

/// The Kafka error for a refusal by an admin API ([`AdminError`] documents each case).
pub fn admin_code(error: &AdminError) -> ResponseError {
    use AdminError as A;
    use ResponseError as E;
    match error {
        A::Metadata(e) => metadata_code(e),
        A::Storage(e) => storage_code(e),
        A::ShardGone(e) => shard_gone_code(e),
        A::PartitionUnavailable(_) => partition_unavailable_code(),
        A::NotLeaderOrFollower(_) => not_leader_code(),
        A::DuplicateTopicName
        | A::DuplicateTopicId
        | A::NoTopicNameOrId
        | A::TopicNameAndId
        | A::NameMapsToSuppliedId
        | A::AssignmentWithReplicationFactor
        | A::AssignmentWithPartitionCount
        | A::DuplicateResource
        | A::DefaultTopicResource
        | A::DuplicateConfigKeys
        | A::NullConfigValues(_)
        | A::UnknownConfigOperation(_)
        | A::UnknownResourceType(_)
        | A::UnsupportedResourceType(_)
        | A::BrokerIdNotInteger(_)
        | A::NodeIdNotInteger(_)
        | A::DescribeOtherBroker { .. }
        | A::AlterOtherBroker { .. }
        // Kafka turns a broker config validation failure into INVALID_REQUEST (KAFKA-13609).
        | A::BrokerConfigRefused(_) => E::InvalidRequest,
        A::UnknownTopicOrPartition | A::UnknownConfigTopic(_) => E::UnknownTopicOrPartition,
        A::UnknownTopicId => E::UnknownTopicId,
        A::TopicAlreadyExists(_) => E::TopicAlreadyExists,
        A::TopicCollision { .. } | A::InternalTopicRecords(_) => E::InvalidTopicException,
        A::NullTopicConfigs(_) | A::NotAListConfig { .. } | A::InvalidConfig(_) => {
            E::InvalidConfig
        }
        A::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment,
        A::ReplicationFactorNotPositive | A::ReplicationFactorTooLarge { .. } => {
            E::InvalidReplicationFactor
        }
        A::PartitionCountNotPositive
        | A::PartitionCountUnchanged(_)
        | A::PartitionCountDecrease { .. } => E::InvalidPartitions,
        A::DeletePolicy(_) => E::PolicyViolation,
        A::DeleteRecordsTimedOut { .. } => E::RequestTimedOut,
        A::InvalidDeleteOffset { .. } | A::DeleteOffsetAboveHighWatermark { .. } => {
            E::OffsetOutOfRange
        }
        A::UnsupportedEndpointType(_) => E::UnsupportedEndpointType,
        A::MismatchedEndpointType => E::MismatchedEndpointType,
        A::NotQuorumLeader => E::NotLeaderOrFollower,
        A::LogDir { .. } => E::KafkaStorageError,
        A::Unauthorized(resource_type) => authorization_failed_code(*resource_type),
        A::ThrottlingQuotaExceeded => E::ThrottlingQuotaExceeded,
    }
}

/// The Kafka error for an offset commit whose append to the internal offsets log failed
/// (Kafka maps `__consumer_offsets` append failures the same way).
pub fn offsets_log_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::MessageTooLarge { .. } => ResponseError::InvalidCommitOffsetSize,
        StorageError::Closed => ResponseError::NotCoordinator,
        StorageError::Io { .. } => ResponseError::CoordinatorNotAvailable,
        _ => ResponseError::UnknownServerError,
    }
}

/// The Kafka error for a group coordinator's write to its replicated `__consumer_offsets`
/// partition (a cluster) that failed with `error` (Kafka's `GroupMetadataManager.storeOffsets`
/// mapping): not enough in-sync replicas or a timeout waiting for them are
/// COORDINATOR_NOT_AVAILABLE, a lost leadership or a storage error NOT_COORDINATOR (the client
/// finds the coordinator again), a batch too large INVALID_COMMIT_OFFSET_SIZE.
pub fn replicated_offsets_code(error: ResponseError) -> ResponseError {
    match error {
        ResponseError::UnknownTopicOrPartition
        | ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => {
            ResponseError::NotCoordinator
        }
        ResponseError::MessageTooLarge
        | ResponseError::RecordListTooLarge
        | ResponseError::InvalidFetchSize => ResponseError::InvalidCommitOffsetSize,
        other => other,
    }
}

/// The Kafka error for a transaction coordinator's write to its replicated
/// `__transaction_state` partition (a cluster) that failed with `error` (Kafka's
/// `TransactionStateManager.appendTransactionToLog` mapping): not enough in-sync replicas or
/// a timeout waiting for them are COORDINATOR_NOT_AVAILABLE (the client retries), a lost
/// leadership or a storage error NOT_COORDINATOR (the client finds the coordinator again), a
/// batch too large UNKNOWN_SERVER_ERROR. The group coordinator's mapping but for that last.
pub fn replicated_txn_log_code(error: ResponseError) -> ResponseError {
    match error {
        ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => {
            ResponseError::UnknownServerError
        }
        other => replicated_offsets_code(other),
    }
}

/// Kafka's `Partition.checkCurrentLeaderEpoch`: a request naming the partition's leader epoch
/// (`current_leader_epoch`; negative: not named, no check) older than this broker's gets
/// FENCED_LEADER_EPOCH (the client's metadata is stale: it refreshes it), a newer one
/// UNKNOWN_LEADER_EPOCH (this broker has not applied that metadata yet: the client retries).
pub fn leader_epoch_code(request_epoch: i32, local_epoch: i32) -> Option<ResponseError> {
    match request_epoch {
        e if e < 0 || e == local_epoch => None,
        e if e < local_epoch => Some(ResponseError::FencedLeaderEpoch),
        _ => Some(ResponseError::UnknownLeaderEpoch),
    }
}

/// The error Kafka answers when the authorizer refuses an operation on a resource of this
/// type (`TOPIC_AUTHORIZATION_FAILED`, `GROUP_...`, `CLUSTER_...`, `TRANSACTIONAL_ID_...`).
pub fn authorization_failed_code(
    resource_type: crate::security::acl::ResourceType,
) -> ResponseError {
    use crate::security::acl::ResourceType as R;
    match resource_type {
        R::Topic => ResponseError::TopicAuthorizationFailed,
        R::Group => ResponseError::GroupAuthorizationFailed,
        R::TransactionalId => ResponseError::TransactionalIdAuthorizationFailed,
        R::DelegationToken => ResponseError::DelegationTokenAuthorizationFailed,
        R::Cluster | R::User | R::Any | R::Unknown => ResponseError::ClusterAuthorizationFailed,
    }
}

/// Shorthand: the wire code of an optional error (0 for none).
pub fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

/// What a request waiting on another broker (a transaction marker, a verification) is told
/// when that broker gives no answer (down, unreachable, a bad frame): retriable, as Kafka's
/// `AddPartitionsToTxnManager` answers a produce whose verification failed to reach the
/// transaction coordinator (NOT_ENOUGH_REPLICAS).
pub fn broker_unreachable_code() -> ResponseError {
    ResponseError::NotEnoughReplicas
}

/// An error code another broker answered, as an error (`None` for 0; a code this crate does
/// not know is UNKNOWN_SERVER_ERROR).
pub fn answered_code(code: i16) -> Option<ResponseError> {
    if code == 0 {
        return None;
    }
    Some(ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError))
}

/// Why an incremental fetch is refused (`shard::fetch_sessions`); defined here, below the shard
/// layer, as [`ShardGone`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchSessionError {
    /// FETCH_SESSION_ID_NOT_FOUND.
    NotFound,
    /// INVALID_FETCH_SESSION_EPOCH.
    InvalidEpoch,
    /// FETCH_SESSION_TOPIC_ID_ERROR: a session with topic ids used below v13, or without above.
    TopicIdError,
    /// The request forgot every partition: the session is closed, the request sessionless.
    Emptied,
}

/// The Fetch error of a fetch session refused, as Kafka's `FetchManager.newContext` /
/// `IncrementalFetchContext` answer it.
pub fn fetch_session_code(error: FetchSessionError) -> ResponseError {
    match error {
        FetchSessionError::NotFound | FetchSessionError::Emptied => {
            ResponseError::FetchSessionIdNotFound
        }
        FetchSessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
        FetchSessionError::TopicIdError => ResponseError::FetchSessionTopicIdError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record batch refusal keeps its Kafka code on its way through storage.
    #[test]
    fn batch_errors_map_to_the_same_code_directly_and_through_storage() {
        let record_error = freshet_protocol::records::RecordError {
            batch_index: 3,
            message: freshet_protocol::records::MISSING_KEY,
        };
        let cases = [
            (BatchError::CorruptMessage("crc".into()), 2),
            (BatchError::InvalidRecord("magic".into()), 87),
            (
                BatchError::InvalidRecords {
                    message: "keyless".into(),
                    errors: vec![record_error.clone()],
                },
                87,
            ),
            (BatchError::RecordListTooLarge("bomb".into()), 18),
            (BatchError::MessageTooLarge { size: 9, max: 8 }, 10),
        ];
        for (error, code) in cases {
            assert_eq!(batch_code(&error).code(), code, "{error:?}");
            let storage = StorageError::from(error.clone());
            assert_eq!(storage_code(&storage).code(), code, "{storage:?}");
            assert_eq!(storage.to_string(), error.to_string());
        }
        let StorageError::InvalidRecords { errors, .. } =
            StorageError::from(BatchError::InvalidRecords {
                message: String::new(),
                errors: vec![record_error.clone()],
            })
        else {
            panic!("InvalidRecords stays InvalidRecords");
        };
        assert_eq!(errors, vec![record_error]);
    }
}
