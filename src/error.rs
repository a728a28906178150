//! Errors of every layer, mapped to Kafka error codes in this one place.
//!
//! Each layer has its own error type ([`crate::storage::StorageError`], the record batch
//! format's [`BatchError`] (from the protocol crate, which becomes a `StorageError` here),
//! [`crate::shard::ShardGone`], the coordinator's `MetadataError` which already carries its
//! code, the admin APIs' [`AdminError`]). Handlers never pick codes for those themselves: they
//! call [`storage_code`] and friends, so a given failure is reported the same way by every
//! API, as Kafka would.

use freshet_protocol::BatchError;
use kafka_protocol::error::ResponseError;

use crate::api::admin::AdminError;
use crate::coordinator::metadata::MetadataError;
use crate::shard::ShardGone;
use crate::storage::StorageError;

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
pub fn coordinator_gone_code() -> ResponseError {
    ResponseError::CoordinatorNotAvailable
}

/// The error for a partition that exists in metadata but is not open on its shard (its log
/// failed to open, or it is being created or deleted right now).
pub fn partition_unavailable_code() -> ResponseError {
    ResponseError::KafkaStorageError
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
        A::InvalidDeleteOffset { .. } | A::DeleteOffsetAboveHighWatermark { .. } => {
            E::OffsetOutOfRange
        }
        A::UnsupportedEndpointType(_) => E::UnsupportedEndpointType,
        A::MismatchedEndpointType => E::MismatchedEndpointType,
        A::LogDir { .. } => E::KafkaStorageError,
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

/// Shorthand: the wire code of an optional error (0 for none).
pub fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
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
