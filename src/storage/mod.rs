//! Storage engine: durable partition logs.
//!
//! Each partition is a [`PartitionLog`] owned by one shard: a directory of segments in Kafka's
//! own on-disk layout (`00000000000000000000.log` with record batches back to back exactly as
//! on the wire, plus sparse `.index` and `.timeindex` files), written with O_DIRECT through
//! glommio, group-committed (one `fdatasync` covers every append that gathered while the
//! previous one ran), recovered on open by CRC-scanning from a recovery checkpoint, trimmed by
//! retention and DeleteRecords. Reads of the tail come from a per-shard bounded
//! [`TailCache`]; older data is read from disk, copied once into `Bytes`.
//!
//! Modules:
//! - [`batch`], [`records`]: the record batch v2 format (header view, validation, rewrites,
//!   CRC-32C, record walks, bounded streaming decompression). Moved to the protocol crate
//!   ([`freshet_protocol::batch`], [`freshet_protocol::records`]); re-exported here for this
//!   round. Its [`freshet_protocol::BatchError`] becomes a [`StorageError`] by `From`.
//! - [`log`]: `PartitionLog`: append and group commit, reads, recovery, retention.
//! - [`cleaner`]: log compaction (`cleanup.policy=compact`), run in the background per shard.
//! - [`index`]: the sparse offset and time indexes (Kafka's formats).
//! - [`cache`]: the per-shard tail cache.
//! - [`checkpoint`]: the recovery checkpoint file.
//! - [`leader_epoch`]: the leader-epoch cache and its `leader-epoch-checkpoint` file.
//! - [`producer_state`]: idempotence/transaction state of a partition (pure).
//! - [`producer_snapshot`]: its snapshot files.
//! - [`io`]: the only code that touches glommio files and `std::fs` ([`io::real`]), or instead
//!   an in-memory simulated disk ([`io::sim::SimDisk`]) installed for the thread.
//! - [`io_sizes`]: write, flush-round and preallocation sizes, from the disk profile.
//!
//! Guarantees: an append resolves `Ok` only once its batches are fdatasync'd; reads never pass
//! the high watermark (the durable end); recovery never serves a torn batch and never drops a
//! batch that was acknowledged; a batch read back from disk is checked (framing, offsets,
//! CRC-32C) before it is served, damage is [`StorageError::CorruptMessage`]; I/O errors are
//! returned as [`StorageError::Io`], never panics.
//! Invariant violations (programmer errors) are `assert!`s that stay on in release builds.

pub mod cache;
pub mod checkpoint;
pub mod file_names;
pub mod index;
pub mod internal_log;
pub mod io;
pub mod io_sizes;
pub mod leader_epoch;
pub mod log;
pub mod producer_snapshot;
pub mod producer_state;
pub mod txn_index;

use bytes::Bytes;

pub use cache::TailCache;
pub use log::cleaner;
pub use log::{prime_disk, PartitionLog};

/// Timestamp type of a topic (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    CreateTime,
    /// Stamp every batch with the broker's clock at append.
    LogAppendTime,
}

/// Per-topic log settings, named as Kafka's topic configs; `Default` gives Kafka's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when its first batch is this old.
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older; -1 = forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is larger; -1 = unlimited.
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest accepted batch (bytes, whole batch).
    pub max_message_bytes: u32,
    /// `index.interval.bytes`: bytes of log between two sparse index entries.
    pub index_interval_bytes: u32,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `cleanup.policy` contains `delete`: retention deletes old segments.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: the cleaner keeps the latest value per key.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long the cleaner keeps a tombstone once it has seen it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: dirty share of the cleanable bytes that starts a round.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: segments with records younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty data older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1_073_741_824,
            segment_ms: 604_800_000,
            retention_ms: 604_800_000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            message_timestamp_type: TimestampType::CreateTime,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

/// Errors of the storage layer. The broker maps them to Kafka error codes.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A disk operation failed (ENOSPC, EIO...): KAFKA_STORAGE_ERROR.
    #[error("storage I/O error during {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Bad CRC, bad lengths, truncated batch: CORRUPT_MESSAGE.
    #[error("corrupt message: {0}")]
    CorruptMessage(String),
    /// Structurally wrong batch (magic != 2, record count mismatch...): INVALID_RECORD.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Records of a batch refused one by one (a keyless record on a compacted topic...):
    /// INVALID_RECORD, with the records listed in Produce's `record_errors`.
    #[error("invalid record: {message}")]
    InvalidRecords {
        /// Kafka's summary message.
        message: String,
        /// The records refused (index in their batch, why).
        errors: Vec<freshet_protocol::records::RecordError>,
    },
    /// A compressed batch decompresses to more than the broker accepts:
    /// RECORD_LIST_TOO_LARGE.
    #[error("record list too large: {0}")]
    RecordListTooLarge(String),
    /// A batch is larger than `max.message.bytes`: MESSAGE_TOO_LARGE.
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge {
        /// Size of the offending batch in bytes.
        size: usize,
        /// The configured limit.
        max: u32,
    },
    /// Requested offset is outside `[log_start, high_watermark]`: OFFSET_OUT_OF_RANGE.
    #[error("offset {offset} out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// The log start offset.
        log_start: i64,
        /// The high watermark.
        high_watermark: i64,
    },
    /// A timestamp the topic does not accept: INVALID_TIMESTAMP.
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    /// The batch's producer epoch is older than the producer's: INVALID_PRODUCER_EPOCH.
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// The batch's sequence does not continue its producer's: OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// A transactional batch's verification is stale (a marker ended the transaction while the
    /// coordinator was asked): INVALID_TXN_STATE.
    #[error("transaction verification is stale: {0}")]
    TransactionNotVerified(String),
    /// The log was closed or deleted.
    #[error("partition log is closed")]
    Closed,
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The LogAppendTime stamped, or -1 for CreateTime topics.
    pub log_append_time_ms: i64,
    /// The log start offset after the append.
    pub log_start_offset: i64,
}

/// Result of a read: whole batches, each a `Bytes` that can go to a socket as is.
#[derive(Clone, Debug, Default)]
pub struct ReadData {
    /// Whole record batches, in offset order.
    pub batches: Vec<Bytes>,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
}
