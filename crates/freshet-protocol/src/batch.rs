//! Record batch v2 (magic 2): a zero-copy view of the 61-byte header, validation, framing,
//! and in-place rewrites (base offset, LogAppendTime, CRC).
//!
//! Layout (big-endian, Kafka's `DefaultRecordBatch`):
//!
//! | off | field                | type |
//! |-----|----------------------|------|
//! | 0   | baseOffset           | i64  |
//! | 8   | batchLength          | i32  | bytes after this field (total = batchLength + 12)
//! | 12  | partitionLeaderEpoch | i32  |
//! | 16  | magic                | i8   |
//! | 17  | crc                  | u32  | CRC-32C of bytes 21..end
//! | 21  | attributes           | i16  |
//! | 23  | lastOffsetDelta      | i32  |
//! | 27  | baseTimestamp        | i64  |
//! | 35  | maxTimestamp         | i64  |
//! | 43  | producerId           | i64  |
//! | 51  | producerEpoch        | i16  |
//! | 53  | baseSequence         | i32  |
//! | 57  | recordsCount         | i32  |
//! | 61  | records...           |      |
//!
//! Invariants checked by [`validate`]: the slice is exactly one batch, magic is 2, the CRC
//! matches, `recordsCount >= 1` and `lastOffsetDelta == recordsCount - 1`. [`validate_records`]
//! (the append path) also walks every record ([`records`], as Kafka's `LogValidator`), without
//! materialising keys or values; `baseOffset`, `batchLength`,
//! `partitionLeaderEpoch` and the CRC field are outside the CRC, so a base offset rewrite does
//! not touch the CRC, while a LogAppendTime stamp (attributes, maxTimestamp) needs [`fix_crc`].

use crate::records::{self, RecordRules};
use crate::varint;
use zerocopy::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// An error in a record batch or its records: what [`validate`], [`validate_records`] and the
/// record walks of [`records`] refuse. No I/O error is ever one of these. The broker maps each
/// variant to its storage error and Kafka error code in one place (its `error` module); the
/// code each maps to is named on the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Bad CRC, bad lengths, truncated batch, malformed records: CORRUPT_MESSAGE.
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
        errors: Vec<records::RecordError>,
    },
    /// A compressed batch decompresses to more than
    /// [`records::RECORD_BATCH_DECOMPRESSED_BYTES_MAX`]: RECORD_LIST_TOO_LARGE.
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
}

/// Size of the fixed batch header in bytes.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// First byte covered by the batch CRC (`attributes`).
pub const CRC_START: usize = 21;
/// The only record batch format Freshet accepts.
pub const MAGIC_V2: i8 = 2;
/// Attributes bit: timestamps are LogAppendTime.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attributes bits: compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attributes bit: transactional batch.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attributes bit: control batch.
pub const ATTR_CONTROL: i16 = 0x20;
/// Largest compression codec id Kafka defines (zstd).
pub const COMPRESSION_MAX: i16 = 4;

/// The 61-byte record batch v2 header, viewed in place.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug)]
pub struct BatchHeader {
    /// First offset of the batch.
    pub base_offset: I64,
    /// Length of the batch after this field.
    pub batch_length: I32,
    /// Leader epoch of the partition when the batch was appended.
    pub partition_leader_epoch: I32,
    /// Format version; 2.
    pub magic: i8,
    /// CRC-32C of `attributes..end`.
    pub crc: U32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: I16,
    /// `last offset - base offset`.
    pub last_offset_delta: I32,
    /// Timestamp of the first record.
    pub base_timestamp: I64,
    /// Largest timestamp of the batch (or the LogAppendTime).
    pub max_timestamp: I64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: I64,
    /// Idempotent producer epoch.
    pub producer_epoch: I16,
    /// Sequence number of the first record.
    pub base_sequence: I32,
    /// Number of records.
    pub records_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == HEADER_LEN);

impl BatchHeader {
    /// First offset.
    pub fn base_offset(&self) -> i64 {
        self.base_offset.get()
    }
    /// Last offset (`base + lastOffsetDelta`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .get()
            .wrapping_add(i64::from(self.last_offset_delta.get()))
    }
    /// Whole batch size in bytes, from the length field (may be bogus on unvalidated data).
    pub fn total_len(&self) -> i64 {
        i64::from(self.batch_length.get()) + LOG_OVERHEAD as i64
    }
    /// Largest record timestamp (the append time for LogAppendTime batches).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.get()
    }
    /// Timestamp of the first record (CreateTime).
    pub fn base_timestamp(&self) -> i64 {
        self.base_timestamp.get()
    }
    /// Attributes.
    pub fn attributes(&self) -> i16 {
        self.attributes.get()
    }
    /// Compression codec id.
    pub fn compression(&self) -> i16 {
        self.attributes.get() & ATTR_COMPRESSION_MASK
    }
    /// True if timestamps are LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes.get() & ATTR_LOG_APPEND_TIME != 0
    }
    /// True for control batches (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes.get() & ATTR_CONTROL != 0
    }
    /// Number of records.
    pub fn records_count(&self) -> i32 {
        self.records_count.get()
    }
    /// The CRC stored in the header.
    pub fn crc(&self) -> u32 {
        self.crc.get()
    }
}

/// View the header at the start of `buf`, if `buf` is long enough.
pub fn header(buf: &[u8]) -> Option<&BatchHeader> {
    BatchHeader::ref_from_prefix(buf).ok().map(|(h, _)| h)
}

/// Mutable view of the header at the start of `buf`, if `buf` is long enough.
pub fn header_mut(buf: &mut [u8]) -> Option<&mut BatchHeader> {
    BatchHeader::mut_from_prefix(buf).ok().map(|(h, _)| h)
}

/// CRC-32C over `attributes..end` of one whole batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    assert!(batch.len() >= HEADER_LEN);
    crc32c::crc32c(&batch[CRC_START..])
}

/// Recompute and store the CRC of one whole batch (after changing covered fields).
pub fn fix_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    if let Some(h) = header_mut(batch) {
        h.crc.set(crc);
    }
}

/// Rewrite `baseOffset` in place. Not covered by the CRC.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(batch.len() >= HEADER_LEN);
    if let Some(h) = header_mut(batch) {
        h.base_offset.set(base_offset);
    }
}

/// Rewrite `partitionLeaderEpoch` in place. Not covered by the CRC.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert!(batch.len() >= HEADER_LEN);
    if let Some(h) = header_mut(batch) {
        h.partition_leader_epoch.set(epoch);
    }
}

/// Stamp LogAppendTime: set the timestamp-type bit and `maxTimestamp`, then fix the CRC
/// (Kafka's `setMaxTimestamp(LOG_APPEND_TIME, now)`).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    assert!(batch.len() >= HEADER_LEN);
    if let Some(h) = header_mut(batch) {
        let attrs = h.attributes.get() | ATTR_LOG_APPEND_TIME;
        h.attributes.set(attrs);
        h.max_timestamp.set(now_ms);
    }
    fix_crc(batch);
}

/// Read the total length of the batch starting at `buf[0]` from its first 12 bytes, checking
/// only that it is plausible (`>= HEADER_LEN`). `None` if fewer than 12 bytes.
pub fn framed_len(buf: &[u8]) -> Option<Result<usize, BatchError>> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len_field = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let total = i64::from(len_field) + LOG_OVERHEAD as i64;
    if total < HEADER_LEN as i64 {
        return Some(Err(BatchError::CorruptMessage(format!(
            "batch length field {len_field} is smaller than a batch header"
        ))));
    }
    Some(Ok(total as usize))
}

/// Validate exactly one whole batch: length, magic, CRC-32C, record count.
pub fn validate(batch: &[u8]) -> Result<&BatchHeader, BatchError> {
    let Some(h) = header(batch) else {
        return Err(BatchError::CorruptMessage(format!(
            "batch of {} bytes is shorter than the {HEADER_LEN}-byte header",
            batch.len()
        )));
    };
    if h.total_len() != batch.len() as i64 {
        return Err(BatchError::CorruptMessage(format!(
            "batch length field says {} bytes, slice has {}",
            h.total_len(),
            batch.len()
        )));
    }
    if h.magic != MAGIC_V2 {
        return Err(BatchError::InvalidRecord(format!(
            "record batch magic {} is not supported (only 2)",
            h.magic
        )));
    }
    let crc = compute_crc(batch);
    if crc != h.crc() {
        return Err(BatchError::CorruptMessage(format!(
            "batch CRC-32C mismatch: stored {:#010x}, computed {crc:#010x}",
            h.crc()
        )));
    }
    let count = h.records_count();
    if count < 1 {
        return Err(BatchError::InvalidRecord(format!(
            "batch has {count} records"
        )));
    }
    if i64::from(h.last_offset_delta.get()) != i64::from(count) - 1 {
        return Err(BatchError::InvalidRecord(format!(
            "lastOffsetDelta {} does not match recordsCount {count}",
            h.last_offset_delta.get()
        )));
    }
    if h.compression() > COMPRESSION_MAX {
        return Err(BatchError::InvalidRecord(format!(
            "unknown compression codec {}",
            h.compression()
        )));
    }
    Ok(h)
}

/// Iterator over the batches of a buffer of back-to-back batches: yields `(position, batch)`
/// for each whole batch, checking framing only (use [`validate`] for the rest). A framing
/// error (bad length, truncated tail) is yielded once, then iteration stops.
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterate the batches framed back to back in `buf`.
pub fn batches(buf: &[u8]) -> Batches<'_> {
    Batches {
        buf,
        pos: 0,
        failed: false,
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(usize, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let total = match framed_len(rest) {
            None => {
                self.failed = true;
                return Some(Err(BatchError::CorruptMessage(format!(
                    "{} trailing bytes are not a whole batch",
                    rest.len()
                ))));
            }
            Some(Err(e)) => {
                self.failed = true;
                return Some(Err(e));
            }
            Some(Ok(t)) => t,
        };
        if total > rest.len() {
            self.failed = true;
            return Some(Err(BatchError::CorruptMessage(format!(
                "truncated batch: needs {total} bytes, {} present",
                rest.len()
            ))));
        }
        let pos = self.pos;
        self.pos += total;
        Some(Ok((pos, &rest[..total])))
    }
}

/// Summary of one validated batch of a record set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Position of the batch in the record set.
    pub pos: usize,
    /// Whole batch size in bytes.
    pub len: usize,
    /// Number of offsets the batch occupies (`lastOffsetDelta + 1`).
    pub offset_count: i64,
    /// The batch's `maxTimestamp`.
    pub max_timestamp: i64,
}

/// Validate a produce record set (one or more batches back to back) against a partition's
/// `max.message.bytes`. Every batch must be valid or the whole set is rejected. Also checks
/// `baseOffset == 0`, as a Kafka broker does for batches from clients, and walks every record
/// of every batch ([`records::walk_batch`], compressed batches as a bounded stream).
pub fn validate_record_set(
    records: &[u8],
    max_message_bytes: u32,
) -> Result<Vec<BatchInfo>, BatchError> {
    validate_records(records, max_message_bytes, RecordRules::default())
}

/// [`validate_record_set`] with the topic's record rules (keys required when compacted).
/// Record errors of every batch are gathered and refused together as
/// [`BatchError::InvalidRecords`], Kafka's `RecordValidationException`.
pub fn validate_records(
    records: &[u8],
    max_message_bytes: u32,
    rules: RecordRules,
) -> Result<Vec<BatchInfo>, BatchError> {
    let mut record_errors = Vec::new();
    let infos = validate_batches(records, max_message_bytes, rules, &mut record_errors)?;
    if !record_errors.is_empty() {
        let shown: Vec<String> = record_errors
            .iter()
            .take(3)
            .map(|e| {
                format!(
                    "RecordError(batchIndex={}, message='{}')",
                    e.batch_index, e.message
                )
            })
            .collect();
        return Err(BatchError::InvalidRecords {
            message: format!(
                "One or more records have been rejected due to {} record errors in total, and \
                 only showing the first three errors at most: [{}]",
                record_errors.len(),
                shown.join(", ")
            ),
            errors: record_errors,
        });
    }
    Ok(infos)
}

fn validate_batches(
    records: &[u8],
    max_message_bytes: u32,
    rules: RecordRules,
    record_errors: &mut Vec<records::RecordError>,
) -> Result<Vec<BatchInfo>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::CorruptMessage("empty record set".into()));
    }
    let mut out = Vec::new();
    let mut end = 0usize;
    for item in batches(records) {
        let (pos, b) = match item {
            Ok(x) => x,
            Err(e) => {
                // A truncated batch whose length field alone exceeds the limit is reported as
                // too large, as Kafka does.
                if let Some(Ok(total)) = framed_len(&records[end..]) {
                    if total > max_message_bytes as usize {
                        return Err(BatchError::MessageTooLarge {
                            size: total,
                            max: max_message_bytes,
                        });
                    }
                }
                return Err(e);
            }
        };
        end = pos + b.len();
        if b.len() > max_message_bytes as usize {
            return Err(BatchError::MessageTooLarge {
                size: b.len(),
                max: max_message_bytes,
            });
        }
        let h = validate(b)?;
        if h.base_offset() != 0 {
            return Err(BatchError::InvalidRecord(format!(
                "the baseOffset of a produced record batch should be 0, but it is {}",
                h.base_offset()
            )));
        }
        records::walk_batch(b, h, rules, record_errors)?;
        out.push(BatchInfo {
            pos,
            len: b.len(),
            offset_count: i64::from(h.last_offset_delta.get()) + 1,
            max_timestamp: h.max_timestamp(),
        });
    }
    Ok(out)
}

/// Encodes a transaction marker as Kafka writes it: one control record in a transactional
/// control batch, key `(version 0, type)` (0 abort, 1 commit), value `(version 0,
/// coordinator epoch)`, base sequence -1.
pub fn encode_control_batch(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Result<bytes::Bytes, String> {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(bytes::Bytes::from(key)),
        value: Some(bytes::Bytes::from(value)),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [&record], &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// The type of a control batch's marker: `Some(true)` commit, `Some(false)` abort; `None` if
/// the batch is not an uncompressed control batch with a readable marker key (Kafka's
/// `EndTransactionMarker` key: version int16, type int16).
pub fn control_type(batch: &[u8]) -> Option<bool> {
    let h = header(batch)?;
    if !h.is_control() || h.compression() != 0 || h.records_count() < 1 {
        return None;
    }
    let mut pos = HEADER_LEN;
    let _len = varint::read_zigzag_at(batch, &mut pos, 5).ok()?;
    pos += 1; // attributes
    let _ts_delta = varint::read_zigzag_at(batch, &mut pos, 10).ok()?;
    let _offset_delta = varint::read_zigzag_at(batch, &mut pos, 5).ok()?;
    let key_len = varint::read_zigzag_at(batch, &mut pos, 5).ok()?;
    if key_len < 4 {
        return None;
    }
    let key = batch.get(pos..pos + 4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// A control batch's marker: its type (`true` commit, `false` abort) and the coordinator epoch
/// of its value (Kafka's `EndTransactionMarker` value: version int16, coordinator epoch int32;
/// 0 when the value is missing or short); `None` as [`control_type`].
pub fn control_marker(batch: &[u8]) -> Option<(bool, i32)> {
    let commit = control_type(batch)?;
    let mut pos = HEADER_LEN;
    let _len = varint::read_zigzag_at(batch, &mut pos, 5).ok()?;
    pos += 1; // attributes
    let _ts_delta = varint::read_zigzag_at(batch, &mut pos, 10).ok()?;
    let _offset_delta = varint::read_zigzag_at(batch, &mut pos, 5).ok()?;
    let key_len = varint::read_zigzag_at(batch, &mut pos, 5).ok()?;
    pos = pos.checked_add(usize::try_from(key_len).ok()?)?;
    let epoch = varint::read_zigzag_at(batch, &mut pos, 5)
        .ok()
        .filter(|&len| len >= 6)
        .and_then(|_| batch.get(pos + 2..pos + 6))
        .map_or(0, |v| i32::from_be_bytes([v[0], v[1], v[2], v[3]]));
    Some((commit, epoch))
}

/// `(offset, timestamp)` of every record of one validated, *uncompressed* batch, read from the
/// record headers without decoding keys, values or headers. For a LogAppendTime batch every
/// record's timestamp is the batch's `maxTimestamp`. `None` if the batch is compressed;
/// `Err` if a record header is malformed.
pub fn record_times(batch: &[u8]) -> Option<Result<Vec<(i64, i64)>, BatchError>> {
    let h = header(batch)?;
    if h.compression() != 0 {
        return None;
    }
    let base = h.base_offset();
    let count = h.records_count().max(0) as usize;
    let mut out = Vec::with_capacity(count.min(batch.len() / 7 + 1));
    let mut pos = HEADER_LEN;
    let bad = |what: &str| BatchError::CorruptMessage(format!("malformed record header: {what}"));
    for _ in 0..count {
        let Ok(len) = varint::read_zigzag_at(batch, &mut pos, 5) else {
            return Some(Err(bad("length")));
        };
        let start = pos;
        let Ok(len) = usize::try_from(len) else {
            return Some(Err(bad("negative length")));
        };
        if start + len > batch.len() {
            return Some(Err(bad("length past the batch")));
        }
        pos += 1; // attributes
        let Ok(ts_delta) = varint::read_zigzag_at(batch, &mut pos, 10) else {
            return Some(Err(bad("timestamp delta")));
        };
        let Ok(off_delta) = varint::read_zigzag_at(batch, &mut pos, 5) else {
            return Some(Err(bad("offset delta")));
        };
        if pos > start + len {
            return Some(Err(bad("record shorter than its header")));
        }
        let ts = if h.is_log_append_time() {
            h.max_timestamp()
        } else {
            h.base_timestamp().wrapping_add(ts_delta)
        };
        out.push((base.wrapping_add(off_delta), ts));
        pos = start + len;
    }
    Some(Ok(out))
}

/// Offset of the first record of a validated batch whose timestamp equals the batch's
/// `maxTimestamp` (Kafka's `offsetOfMaxTimestamp`). Exact for uncompressed and LogAppendTime
/// batches; for compressed CreateTime batches (which would need decompression) it returns the
/// batch's last offset, where producers put their newest record.
pub fn offset_of_max_timestamp(batch: &[u8]) -> i64 {
    let Some(h) = header(batch) else {
        return -1;
    };
    if h.is_log_append_time() {
        return h.base_offset();
    }
    match record_times(batch) {
        Some(Ok(times)) => times
            .iter()
            .find(|&&(_, ts)| ts == h.max_timestamp())
            .map_or(h.last_offset(), |&(o, _)| o),
        _ => h.last_offset(),
    }
}

/// A record for [`encode_batch`]: key, value and timestamp in milliseconds.
pub type NewRecord = (Option<bytes::Bytes>, Option<bytes::Bytes>, i64);

pub use kafka_protocol::records::Compression;

/// Encodes `records` as one magic-v2 record batch the way a producer sends it: base offset 0,
/// no producer id or sequence, CreateTime timestamps, the given compression. The broker itself
/// uses it for its internal logs (committed offsets); tests and benchmarks use it to make
/// batches. The broker's `PartitionLog::append` assigns the real offsets.
pub fn encode_batch(
    records: &[NewRecord],
    compression: Compression,
) -> Result<bytes::Bytes, String> {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    assert!(!records.is_empty(), "a batch holds at least one record");
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value, timestamp))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever `offset - sequence` changes; keeping it
            // constant gives one batch, with base sequence -1 (no idempotence).
            sequence: i as i32 - 1,
            timestamp: *timestamp,
            key: key.clone(),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(n: usize, compression: Compression) -> Vec<u8> {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| {
                (
                    None,
                    Some(bytes::Bytes::from(vec![i as u8; 30])),
                    [50, 90, 70][i % 3],
                )
            })
            .collect();
        encode_batch(&records, compression)
            .expect("encode")
            .to_vec()
    }

    #[test]
    fn control_batches_round_trip_their_marker_type() {
        for commit in [true, false] {
            let b = encode_control_batch(42, 3, commit, 7, 1000).expect("encode");
            let h = validate(&b).expect("valid");
            assert!(h.is_control());
            assert_ne!(h.attributes() & ATTR_TRANSACTIONAL, 0);
            assert_eq!((h.producer_id.get(), h.producer_epoch.get()), (42, 3));
            assert_eq!(h.base_sequence.get(), -1);
            assert_eq!(control_type(&b), Some(commit));
            assert_eq!(control_marker(&b), Some((commit, 7)));
        }
        assert_eq!(control_type(&encode(1, Compression::None)), None);
    }

    #[test]
    fn header_view_validation_and_rewrites() {
        let mut b = encode(5, Compression::None);
        let h = validate(&b).expect("valid");
        assert_eq!(
            (h.base_offset(), h.last_offset(), h.records_count()),
            (0, 4, 5)
        );
        assert_eq!(h.max_timestamp(), 90);
        set_base_offset(&mut b, 1000);
        set_partition_leader_epoch(&mut b, 0);
        let h = validate(&b).expect("base offset and epoch are outside the CRC");
        assert_eq!(h.last_offset(), 1004);
        let times = record_times(&b)
            .expect("uncompressed")
            .expect("well formed");
        assert_eq!(times[1], (1001, 90));
        assert_eq!(offset_of_max_timestamp(&b), 1001);
        set_log_append_time(&mut b, 12345);
        let h = validate(&b).expect("CRC fixed after stamping");
        assert!(h.is_log_append_time());
        assert_eq!(offset_of_max_timestamp(&b), 1000);
        b[HEADER_LEN + 3] ^= 0x40;
        assert!(matches!(validate(&b), Err(BatchError::CorruptMessage(_))));
    }

    #[test]
    fn compressed_batches_are_not_walked() {
        let b = encode(4, Compression::Gzip);
        validate(&b).expect("valid");
        assert!(record_times(&b).is_none());
        assert_eq!(offset_of_max_timestamp(&b), 3);
    }

    #[test]
    fn framing_of_record_sets() {
        let a = encode(2, Compression::None);
        let c = encode(3, Compression::None);
        let mut set = a.clone();
        set.extend_from_slice(&c);
        let infos = validate_record_set(&set, 1 << 20).expect("valid set");
        assert_eq!(infos.len(), 2);
        assert_eq!((infos[1].pos, infos[1].offset_count), (a.len(), 3));
        let framed: Vec<_> = batches(&set[..set.len() - 1]).collect();
        assert!(framed[0].is_ok() && framed[1].is_err());
        assert!(matches!(
            validate_record_set(&set, 50),
            Err(BatchError::MessageTooLarge { max: 50, .. })
        ));
        assert!(matches!(
            validate_record_set(&set[..20], 1 << 20),
            Err(BatchError::CorruptMessage(_))
        ));
    }
}
