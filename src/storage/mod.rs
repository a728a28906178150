//! Storage engine: durable partition logs (skeleton; being filled in).
//!
//! See the module docs once implemented.

pub mod batch;

use bytes::Bytes;
use std::path::Path;
use std::rc::Rc;

/// Timestamp type of a topic (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    CreateTime,
    /// Stamp every batch with the broker's clock at append.
    LogAppendTime,
}

/// Per-topic log settings, named as Kafka's topic configs; `Default` gives Kafka's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// Per-shard bounded cache of partition tails (Rc-shared by all logs of one shard).
pub struct TailCache {
    _budget_bytes: usize,
}

impl TailCache {
    /// A cache holding at most `budget_bytes` of batches in total.
    pub fn new(budget_bytes: usize) -> Rc<TailCache> {
        Rc::new(TailCache {
            _budget_bytes: budget_bytes,
        })
    }

    /// Bytes currently cached.
    pub fn used_bytes(&self) -> usize {
        todo!()
    }
}

/// Must run once on every shard, before any other DmaFile is opened under `data_dir`:
/// works around glommio's poll-mode misdetection (GLOMMIO.md pitfall 1).
pub async fn prime_disk(data_dir: &Path) -> Result<(), StorageError> {
    let _ = data_dir;
    todo!()
}

/// One partition's log. Owned by exactly one shard.
pub struct PartitionLog {
    _private: (),
}

impl PartitionLog {
    /// Open or create the partition directory `dir`; runs recovery.
    pub async fn open(
        dir: &Path,
        config: LogConfig,
        cache: Rc<TailCache>,
    ) -> Result<PartitionLog, StorageError> {
        let _ = (dir, config, cache);
        todo!()
    }

    /// Validate, assign offsets, append; resolves once durable (group commit).
    pub async fn append(&self, records: Bytes, now_ms: i64) -> Result<AppendInfo, StorageError> {
        let _ = (records, now_ms);
        todo!()
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        todo!()
    }

    /// Next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        todo!()
    }

    /// End of the durable prefix; reads never pass it.
    pub fn high_watermark(&self) -> i64 {
        todo!()
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes`.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadData, StorageError> {
        let _ = (offset, max_bytes, min_one_batch);
        todo!()
    }

    /// Earliest (offset, timestamp) with timestamp >= `ts`.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let _ = ts;
        todo!()
    }

    /// (max timestamp, its offset), (-1, -1) if empty.
    pub fn max_timestamp(&self) -> (i64, i64) {
        todo!()
    }

    /// Delete whole segments past retention; returns segments deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<u64, StorageError> {
        let _ = now_ms;
        todo!()
    }

    /// DeleteRecords: move the log start offset; returns the new log start.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        let _ = offset;
        todo!()
    }

    /// Replace the topic config.
    pub fn set_config(&self, config: LogConfig) {
        let _ = config;
        todo!()
    }

    /// Total bytes of the log's segments.
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }

    /// Clean shutdown.
    pub async fn close(&self) -> Result<(), StorageError> {
        todo!()
    }

    /// Close and remove all files.
    pub async fn delete(self) -> Result<(), StorageError> {
        todo!()
    }
}
