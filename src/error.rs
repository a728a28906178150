//! Errors of every layer, mapped to Kafka error codes in this one place.
//!
//! Each layer has its own error type ([`crate::storage::StorageError`],
//! [`crate::shard::ShardGone`], the coordinator's `MetadataError` which already carries its
//! code). Handlers never pick codes for those themselves: they call [`storage_code`] and
//! friends, so a given failure is reported the same way by every API, as Kafka would.

use kafka_protocol::error::ResponseError;

use crate::shard::ShardGone;
use crate::storage::StorageError;

/// The Kafka error a client gets for a storage failure.
pub fn storage_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::Io { .. } | StorageError::Closed => ResponseError::KafkaStorageError,
        StorageError::CorruptMessage(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
    }
}

/// The Kafka error for a partition whose owning shard could not be reached (stopping).
pub fn shard_gone_code(_: &ShardGone) -> ResponseError {
    ResponseError::NotLeaderOrFollower
}

/// The error for a partition that exists in metadata but is not open on its shard (its log
/// failed to open, or it is being created or deleted right now).
pub fn partition_unavailable_code() -> ResponseError {
    ResponseError::KafkaStorageError
}

/// Shorthand: the wire code of an optional error (0 for none).
pub fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}
