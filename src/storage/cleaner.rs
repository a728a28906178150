//! Log compaction (`cleanup.policy=compact`): Kafka's log cleaner, per partition, run in the
//! background by each shard.
//!
//! # What a cleaning round does (Kafka's `Cleaner.doClean`)
//! The *cleanable* part of a log is its sealed segments below the recovery checkpoint's segment
//! (never the active segment), up to the first segment that is younger than
//! `min.compaction.lag.ms`. Within it, `[log start, first dirty)` is the part cleaned before
//! and `[first dirty, first uncleanable)` the dirty part. A round is due when the dirty share
//! of the cleanable bytes reaches `min.cleanable.dirty.ratio`, when dirty data is older than
//! `max.compaction.lag.ms`, or when a retained tombstone's delete horizon has passed.
//!
//! 1. **Offset map.** The dirty part is read batch by batch and every keyed record's latest
//!    offset is put in an [`OffsetMap`]: key hash (128 bits) -> offset, bounded by
//!    `log_cleaner_dedupe_buffer_bytes_per_shard` (Kafka's dedupe buffer). If the map fills,
//!    the round stops at the last whole batch mapped; the rest stays dirty for the next round
//!    (the dirty range is processed in chunks).
//! 2. **Filter.** Every segment below the end of the map is rewritten, grouped so that a group
//!    fits in `segment.bytes` (Kafka's `groupSegmentsBySize`; cleaned segments merge). A record
//!    is kept if it is past the map, or it is the latest offset of its key and either has a
//!    value or is a tombstone whose batch's delete horizon has not passed. Keyless records are
//!    dropped (a compacted topic has no use for them). Control batches are kept as they are.
//!    Batches keep their base offset and last offset (consumers see gaps, as with Kafka); a
//!    batch that loses every record is dropped, except that it is kept *empty* (header only,
//!    its offsets still covered) when it is the last batch of an idempotent producer in the
//!    log or the last batch of the group, so a segment never becomes empty and the offset
//!    after a segment stays known. Compressed batches are decompressed, filtered and
//!    recompressed with the same codec.
//! 3. **Tombstones** (KIP-534, as Kafka 3.1+): the first time the cleaner keeps a tombstone in
//!    a batch without a delete horizon, it rewrites the batch with attribute bit 6 set and
//!    `baseTimestamp = now + delete.retention.ms` (record timestamp deltas are re-based so
//!    every record keeps its timestamp). A later round after that time removes the tombstones.
//! 4. **Swap** (crash-safe, Kafka's order): the group is written to `<base>.log.cleaned` and
//!    fdatasync'd; then, under the log's metadata lock and only if the group's segments are
//!    still there, renamed to `<base>.log.swap` (the commit point), the old segments' files are
//!    removed, the swap file is renamed to `<base>.log`, the directory fsync'd and the indexes
//!    written; then the in-memory segment list is switched. On open,
//!    [`finish_interrupted_swaps`] deletes `.cleaned` files and completes any `.swap` (remove
//!    the segments its offsets cover, rename it into place); the indexes are then rebuilt by
//!    recovery's scan. Readers that already hold an old segment's file keep reading it (the
//!    inode lives until they drop it).
//! 5. The new first dirty offset is written to `cleaner-offset-checkpoint` in the partition
//!    directory (a crash before that only means the range is cleaned again).
//!
//! # Not blocking the shard
//! The cleaner runs as its own task on a low-priority glommio task queue, reads and writes
//! with O_DIRECT in [`CLEANER_IO_BYTES`] steps and yields between batches. Memory: the offset
//! map (bounded), one read buffer, one write buffer.
//!
//! # Known gaps
//! - Transactions are not cleaned specially: control batches and aborted data are kept.
//! - Idempotent producers: without the broker's producer state, the "last batch of a producer"
//!   rule uses the batches the cleaner has seen (the dirty range, then what earlier rounds
//!   kept); a producer's older empty batches may be kept a little longer than Kafka would.
//! - Keyless records are refused at produce time (`records::walk_batch`, as Kafka); records
//!   written before the topic became compacted may lack keys, and the cleaner drops those.
//! - `max.compaction.lag.ms` is judged by the newest timestamp of the first dirty segment
//!   (Kafka uses its first batch's timestamp), so such a round can start a little later.
//! - A compressed batch is decompressed whole into one buffer, bounded by
//!   `records::RECORD_BATCH_DECOMPRESSED_BYTES_MAX` (64 MiB; the produce path refuses more).
//!   A stored batch past it (a bomb written before that bound existed) is not mapped and is
//!   kept unchanged. Memory of one batch: that buffer, the kept records (no larger) and the
//!   recompressed batch.

use super::{lock_meta, write_indexes, Life, PartitionLog, Segment, Shared};
use crate::protocol::varint;
use crate::storage::batch::{self, BatchHeader};
use crate::storage::file_names::{
    self, segment_file_name, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT, TXN_INDEX_EXT,
};
use crate::storage::io::{self, align_down, DataFile};
use crate::storage::records;
use crate::storage::{checkpoint, StorageError};
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::Hasher;
use std::path::Path;

/// Name of the file (in the partition directory) holding the first dirty offset.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Bytes read or written per I/O by the cleaner.
pub const CLEANER_IO_BYTES: usize = 1 << 20;
/// Largest batch the cleaner reads (anything larger is treated as corruption).
pub const CLEANER_BATCH_BYTES_MAX: usize = 256 << 20;
/// Idempotent producers whose last batch the cleaner tracks per round; beyond it, every
/// emptied batch of an untracked producer is kept empty (safe, slightly larger).
pub const PRODUCERS_TRACKED_MAX: usize = 65_536;
/// Memory charged per offset map entry (hash, offset, hash table overhead and slack).
pub const OFFSET_MAP_ENTRY_BYTES: usize = 48;
/// Attributes bit (KIP-534): `baseTimestamp` is the delete horizon of the batch's tombstones.
pub const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Key hash -> latest offset over the dirty range (Kafka's `SkimpyOffsetMap`). Keys are
/// stored as a 128-bit hash (two SipHash-1-3 digests): a collision could merge two keys, as
/// Kafka's MD5-based map could; at 2^-128 per pair it is not a practical concern.
pub struct OffsetMap {
    entries: HashMap<u128, i64>,
    capacity: usize,
    latest_offset: i64,
}

impl OffsetMap {
    /// A map that holds at most `memory_bytes / OFFSET_MAP_ENTRY_BYTES` keys (at least 1024).
    pub fn with_memory(memory_bytes: usize) -> OffsetMap {
        OffsetMap {
            entries: HashMap::new(),
            capacity: (memory_bytes / OFFSET_MAP_ENTRY_BYTES).max(1024),
            latest_offset: -1,
        }
    }

    /// Keys the map holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self, latest_offset: i64) {
        self.entries.clear();
        if self.entries.capacity() > self.capacity * 2 {
            self.entries.shrink_to(self.capacity);
        }
        self.latest_offset = latest_offset;
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    fn put(&mut self, key: &[u8], offset: i64) {
        self.entries.insert(key_hash(key), offset);
    }

    fn get(&self, key: &[u8]) -> i64 {
        self.entries.get(&key_hash(key)).copied().unwrap_or(-1)
    }
}

fn key_hash(key: &[u8]) -> u128 {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    a.write(key);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    b.write_u8(0x5a);
    b.write(key);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

// ---------------------------------------------------------------------------------------------
// Records: parsing the v2 record format without copying.

/// One record of a batch, viewed in place.
struct Rec<'a> {
    offset_delta: i64,
    timestamp_delta: i64,
    attributes: u8,
    key: Option<&'a [u8]>,
    has_value: bool,
    /// Bytes of the record after its timestamp delta (offset delta .. headers).
    after_timestamp: &'a [u8],
    /// The whole record including its length prefix.
    raw: &'a [u8],
}

fn corrupt(what: &str) -> StorageError {
    StorageError::CorruptMessage(format!("malformed record: {what}"))
}

fn parse_records(data: &[u8], count: usize) -> Result<Vec<Rec<'_>>, StorageError> {
    let mut out = Vec::with_capacity(count.min(data.len() / 7 + 1));
    let mut pos = 0usize;
    for _ in 0..count {
        let start = pos;
        let len = varint::read_zigzag_at(data, &mut pos, 5).map_err(|_| corrupt("length"))?;
        let len = usize::try_from(len).map_err(|_| corrupt("negative length"))?;
        let body = pos;
        let end = body
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| corrupt("length past the batch"))?;
        let rec = &data[..end];
        let attributes = *rec.get(pos).ok_or_else(|| corrupt("attributes"))?;
        pos += 1;
        let timestamp_delta =
            varint::read_zigzag_at(rec, &mut pos, 10).map_err(|_| corrupt("timestamp"))?;
        let after_ts = pos;
        let offset_delta =
            varint::read_zigzag_at(rec, &mut pos, 5).map_err(|_| corrupt("offset delta"))?;
        let key_len =
            varint::read_zigzag_at(rec, &mut pos, 5).map_err(|_| corrupt("key length"))?;
        let key = if key_len < 0 {
            None
        } else {
            let k = pos + key_len as usize;
            if k > end {
                return Err(corrupt("key past the record"));
            }
            let key = &rec[pos..k];
            pos = k;
            Some(key)
        };
        let value_len =
            varint::read_zigzag_at(rec, &mut pos, 5).map_err(|_| corrupt("value length"))?;
        if pos > end || (value_len > 0 && pos + value_len as usize > end) {
            return Err(corrupt("value past the record"));
        }
        out.push(Rec {
            offset_delta,
            timestamp_delta,
            attributes,
            key,
            has_value: value_len >= 0,
            after_timestamp: &data[after_ts..end],
            raw: &data[start..end],
        });
        pos = end;
    }
    Ok(out)
}

fn codec_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::CorruptMessage(format!("cannot (de)compress batch: {e}"))
}

/// `data` compressed with `codec` as Kafka's producers do (0: as is).
pub fn compress(codec: i16, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let mut out = BytesMut::new();
    match codec {
        0 => return Ok(data.to_vec()),
        1 => Gzip::compress(&mut out, |t: &mut BytesMut| {
            t.extend_from_slice(data);
            Ok(())
        })
        .map_err(codec_error)?,
        2 => Snappy::compress(&mut out, |t: &mut BytesMut| {
            t.extend_from_slice(data);
            Ok(())
        })
        .map_err(codec_error)?,
        3 => Lz4::compress(&mut out, |t: &mut BytesMut| {
            t.extend_from_slice(data);
            Ok(())
        })
        .map_err(codec_error)?,
        4 => Zstd::compress(&mut out, |t: &mut BytesMut| {
            t.extend_from_slice(data);
            Ok(())
        })
        .map_err(codec_error)?,
        c => {
            return Err(StorageError::InvalidRecord(format!(
                "unknown compression codec {c}"
            )))
        }
    }
    Ok(out.to_vec())
}

// ---------------------------------------------------------------------------------------------
// The per-batch decision (pure).

/// What the filter decided for one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Keep the batch byte for byte.
    Unchanged,
    /// Keep this rewritten batch (same base and last offset).
    Rewritten(Vec<u8>),
    /// Drop the batch.
    Dropped,
}

/// Inputs of the filter that do not change within a round.
pub struct FilterContext<'a> {
    /// Latest offset of every key of the dirty range.
    pub map: &'a OffsetMap,
    /// The cleaner's clock.
    pub now_ms: i64,
    /// `delete.retention.ms` of the topic.
    pub delete_retention_ms: i64,
    /// Last offset of the newest batch seen per idempotent producer id.
    pub producer_last: &'a HashMap<i64, i64>,
}

/// Counts of one batch's filtering.
#[derive(Debug, Default, Clone, Copy)]
pub struct FilterStats {
    /// Records read.
    pub records_read: u64,
    /// Records kept.
    pub records_kept: u64,
    /// Delete horizon of tombstones kept in the batch (when a later round can remove them).
    pub tombstone_horizon_ms: Option<i64>,
}

/// A header-only batch covering `h`'s offsets (Kafka's `writeEmptyHeader`).
fn empty_batch(h: &BatchHeader) -> Vec<u8> {
    let mut out = vec![0u8; batch::HEADER_LEN];
    out[..batch::HEADER_LEN].copy_from_slice(zerocopy::IntoBytes::as_bytes(h));
    if let Some(e) = batch::header_mut(&mut out) {
        e.batch_length
            .set((batch::HEADER_LEN - batch::LOG_OVERHEAD) as i32);
        let attrs = h.attributes() & !(batch::ATTR_COMPRESSION_MASK | ATTR_DELETE_HORIZON);
        e.attributes.set(attrs);
        e.base_timestamp.set(h.max_timestamp());
        e.records_count.set(0);
    }
    batch::fix_crc(&mut out);
    out
}

/// Filter one stored batch `b` (already CRC-checked). `last_of_group`: the batch ends the
/// group being cleaned and must be kept, if only empty.
pub fn filter_batch(
    b: &[u8],
    ctx: &FilterContext<'_>,
    last_of_group: bool,
) -> Result<(Filtered, FilterStats), StorageError> {
    let h = batch::header(b).ok_or_else(|| corrupt("short batch"))?;
    let mut stats = FilterStats::default();
    if h.is_control() {
        return Ok((Filtered::Unchanged, stats));
    }
    let pid = h.producer_id.get();
    let last_of_producer = pid >= 0
        && ctx
            .producer_last
            .get(&pid)
            .is_none_or(|&l| l == h.last_offset());
    let retain_empty = last_of_group || last_of_producer;
    let count = usize::try_from(h.records_count()).unwrap_or(0);
    if count == 0 {
        // An empty batch kept by an earlier round.
        return Ok(if retain_empty {
            (Filtered::Unchanged, stats)
        } else {
            (Filtered::Dropped, stats)
        });
    }
    // Bounded decompression; a batch past the bound (a bomb written before the bound existed)
    // is kept as it is: never delete data merely because it could not be read.
    let data = match records::decompress_bounded(b, h) {
        Ok(data) => data,
        Err(batch::BatchError::RecordListTooLarge(e)) => {
            tracing::warn!(error = %e, "batch too large to clean, kept as it is");
            return Ok((Filtered::Unchanged, stats));
        }
        Err(e) => return Err(e.into()),
    };
    let records = parse_records(&data, count)?;
    stats.records_read = records.len() as u64;
    let horizon = (h.attributes() & ATTR_DELETE_HORIZON != 0).then(|| h.base_timestamp());
    let retain_deletes = horizon.is_none_or(|t| ctx.now_ms < t);
    let base = h.base_offset();
    let kept: Vec<&Rec<'_>> = records
        .iter()
        .filter(|r| {
            let offset = base + r.offset_delta;
            if offset > ctx.map.latest_offset {
                return true;
            }
            let Some(key) = r.key else {
                return false;
            };
            offset >= ctx.map.get(key) && (r.has_value || retain_deletes)
        })
        .collect();
    stats.records_kept = kept.len() as u64;
    let has_tombstones = kept.iter().any(|r| !r.has_value);
    let set_horizon = has_tombstones && horizon.is_none();
    let new_horizon = if set_horizon {
        Some(ctx.now_ms.saturating_add(ctx.delete_retention_ms))
    } else {
        horizon
    };
    if has_tombstones {
        stats.tombstone_horizon_ms = new_horizon;
    }
    if kept.len() == records.len() && !set_horizon {
        return Ok((Filtered::Unchanged, stats));
    }
    if kept.is_empty() {
        return Ok(if retain_empty {
            (Filtered::Rewritten(empty_batch(h)), stats)
        } else {
            (Filtered::Dropped, stats)
        });
    }
    let old_base_ts = h.base_timestamp();
    let new_base_ts = if set_horizon {
        new_horizon.unwrap_or(old_base_ts)
    } else {
        old_base_ts
    };
    let mut body = Vec::with_capacity(data.len());
    let mut max_ts = i64::MIN;
    for r in &kept {
        let ts = old_base_ts.wrapping_add(r.timestamp_delta);
        max_ts = max_ts.max(ts);
        if new_base_ts == old_base_ts {
            body.extend_from_slice(r.raw);
        } else {
            let mut rec = Vec::with_capacity(r.raw.len() + 8);
            rec.push(r.attributes);
            varint::put_varlong(&mut rec, ts.wrapping_sub(new_base_ts));
            rec.extend_from_slice(r.after_timestamp);
            varint::put_varlong(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
    }
    let body = compress(h.compression(), &body)?;
    let mut out = Vec::with_capacity(batch::HEADER_LEN + body.len());
    out.extend_from_slice(&b[..batch::HEADER_LEN]);
    out.extend_from_slice(&body);
    let total = out.len();
    if let Some(e) = batch::header_mut(&mut out) {
        e.batch_length.set((total - batch::LOG_OVERHEAD) as i32);
        if set_horizon {
            e.attributes.set(h.attributes() | ATTR_DELETE_HORIZON);
        }
        e.base_timestamp.set(new_base_ts);
        if !h.is_log_append_time() {
            e.max_timestamp.set(max_ts);
        }
        e.records_count.set(kept.len() as i32);
    }
    batch::fix_crc(&mut out);
    Ok((Filtered::Rewritten(out), stats))
}

/// Check a stored batch: framing, magic, CRC-32C, and a record count that fits its offsets
/// (a cleaned batch may hold fewer records than offsets, or none).
pub fn validate_stored(b: &[u8]) -> Result<&BatchHeader, StorageError> {
    let h = batch::header(b).ok_or_else(|| corrupt("short batch"))?;
    if h.total_len() != b.len() as i64 || h.magic != batch::MAGIC_V2 {
        return Err(StorageError::CorruptMessage("bad batch framing".into()));
    }
    if batch::compute_crc(b) != h.crc() {
        return Err(StorageError::CorruptMessage(
            "batch CRC-32C mismatch".into(),
        ));
    }
    let count = i64::from(h.records_count());
    let delta = i64::from(h.last_offset_delta.get());
    if count < 0 || delta < 0 || count > delta + 1 {
        return Err(StorageError::InvalidRecord(format!(
            "batch has {count} records for {} offsets",
            delta + 1
        )));
    }
    Ok(h)
}

// ---------------------------------------------------------------------------------------------
// Reading a segment batch by batch.

struct SegmentReader {
    file: DataFile,
    len: u64,
    pos: u64,
    buf: Bytes,
    buf_pos: u64,
}

impl SegmentReader {
    fn new(file: DataFile, len: u64) -> SegmentReader {
        SegmentReader {
            file,
            len,
            pos: 0,
            buf: Bytes::new(),
            buf_pos: 0,
        }
    }

    /// The next whole batch, CRC-checked; `None` at the end of the segment.
    async fn next_batch(&mut self) -> Result<Option<Bytes>, StorageError> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let mut off = (self.pos - self.buf_pos) as usize;
        if self.pos < self.buf_pos || off + batch::LOG_OVERHEAD > self.buf.len() {
            self.fill(CLEANER_IO_BYTES).await?;
            off = 0;
        }
        let total = match batch::framed_len(&self.buf[off..]) {
            Some(Ok(t)) if t <= CLEANER_BATCH_BYTES_MAX => t,
            _ => {
                return Err(StorageError::CorruptMessage(format!(
                    "bad batch framing at position {} of a sealed segment",
                    self.pos
                )))
            }
        };
        if self.pos + total as u64 > self.len {
            return Err(StorageError::CorruptMessage(format!(
                "batch at position {} runs past the segment end",
                self.pos
            )));
        }
        if off + total > self.buf.len() {
            self.fill(total.max(CLEANER_IO_BYTES)).await?;
            off = 0;
            if self.buf.len() < total {
                return Err(StorageError::CorruptMessage("short read of a batch".into()));
            }
        }
        let b = self.buf.slice(off..off + total);
        validate_stored(&b)?;
        self.pos += total as u64;
        Ok(Some(b))
    }

    async fn fill(&mut self, want: usize) -> Result<(), StorageError> {
        let n = want.min((self.len - self.pos) as usize);
        self.buf = self.file.read(self.pos, n).await?;
        self.buf_pos = self.pos;
        if self.buf.len() < batch::LOG_OVERHEAD.min(n) {
            return Err(StorageError::CorruptMessage(
                "short read of a segment".into(),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Writing a cleaned segment.

struct CleanedWriter {
    file: DataFile,
    /// Bytes not yet written (everything past `written`).
    buf: Vec<u8>,
    /// Aligned bytes already written.
    written: u64,
    seg: Segment,
    interval: u64,
}

impl CleanedWriter {
    async fn append(&mut self, b: &[u8]) -> Result<(), StorageError> {
        let h = batch::header(b).ok_or_else(|| corrupt("short batch"))?;
        let pos = self.written + self.buf.len() as u64;
        let max_ts = h.max_timestamp();
        let last = h.last_offset();
        self.seg
            .index_batch(pos, b.len() as u64, last, max_ts, self.interval);
        self.seg.len = pos + b.len() as u64;
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CLEANER_IO_BYTES {
            let n = align_down(self.buf.len() as u64) as usize;
            self.file
                .write_padded(self.written, &[&self.buf[..n]], CLEANER_IO_BYTES)
                .await?;
            self.written += n as u64;
            self.buf.drain(..n);
        }
        Ok(())
    }

    async fn finish(self, next_offset: i64) -> Result<Segment, StorageError> {
        if !self.buf.is_empty() {
            self.file
                .write_padded(self.written, &[&self.buf], CLEANER_IO_BYTES)
                .await?;
        }
        self.file.truncate(self.seg.len).await?;
        self.file.sync().await?;
        let mut seg = self.seg;
        seg.finish_time_index();
        seg.file = Some(self.file);
        seg.durable_len = seg.len;
        seg.written_len = seg.len;
        seg.preallocated_len = seg.len;
        seg.next_offset = next_offset;
        seg.durable_next_offset = next_offset;
        seg.sealed = true;
        Ok(seg)
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery of an interrupted swap.

/// Last offset of the batches in a (committed, fully written) swap file.
fn swap_last_offset(path: &Path) -> std::io::Result<Option<i64>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut pos = 0u64;
    let mut last = None;
    let mut head = [0u8; batch::HEADER_LEN];
    while pos + batch::HEADER_LEN as u64 <= len {
        f.read_exact_at(&mut head, pos)?;
        let Some(h) = batch::header(&head) else {
            break;
        };
        let total = h.total_len();
        if total < batch::HEADER_LEN as i64 || pos + total as u64 > len {
            break;
        }
        last = Some(h.last_offset());
        pos += total as u64;
    }
    Ok(last)
}

/// Called by [`PartitionLog::open`] before recovery: delete half-written `.cleaned` segments
/// and complete every committed `.swap` (remove the segments it replaces, rename it into
/// place). Index files of the replaced segments are removed; recovery rebuilds them.
pub async fn finish_interrupted_swaps(dir: &Path) -> Result<(), StorageError> {
    let names = io::list_dir(dir).await?;
    let cleaned: Vec<String> = names
        .iter()
        .filter(|n| file_names::is_cleaned_file_name(n))
        .cloned()
        .collect();
    if !cleaned.is_empty() {
        io::remove_files(dir, cleaned).await?;
    }
    let mut swaps: Vec<i64> = names
        .iter()
        .filter_map(|n| file_names::parse_swap_file_name(n))
        .collect();
    swaps.sort_unstable();
    for base in swaps {
        let swap_name = file_names::swap_file_name(base);
        let swap_path = dir.join(&swap_name);
        let p = swap_path.clone();
        let last = io::blocking(move || swap_last_offset(&p))
            .await
            .map_err(io::io_err("scan swap segment"))?;
        let Some(last) = last else {
            tracing::warn!(dir = %dir.display(), base, "empty swap segment discarded");
            io::remove_files(dir, vec![swap_name]).await?;
            continue;
        };
        let mut doomed = Vec::new();
        for n in &names {
            let Some((b, ext)) = file_names::parse_segment_member(n) else {
                continue;
            };
            // The base's `.txnindex` already holds the merged entries of the group.
            if b >= base && b <= last && !(b == base && (ext == LOG_EXT || ext == TXN_INDEX_EXT)) {
                doomed.push(n.clone());
            }
        }
        tracing::warn!(dir = %dir.display(), base, last, replaced = ?doomed, "completing an interrupted cleaner swap");
        io::remove_files(dir, doomed).await?;
        io::rename_file(&swap_path, &dir.join(segment_file_name(base, LOG_EXT))).await?;
        io::sync_dir(dir).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The cleaning round.

/// What the shard's cleaner remembers about one log between rounds.
#[derive(Debug, Default, Clone)]
pub struct LogCleanState {
    /// First offset not yet cleaned; `None` until read from the checkpoint file.
    pub first_dirty: Option<i64>,
    /// Earliest delete horizon of tombstones kept by the last round.
    pub next_horizon_ms: Option<i64>,
}

/// What a round did.
#[derive(Debug, Default, Clone)]
pub struct CleanReport {
    /// Segments rewritten.
    pub segments_cleaned: usize,
    /// Segments they became.
    pub segments_written: usize,
    /// Bytes before and after.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Records read and kept.
    pub records_read: u64,
    /// Records kept.
    pub records_kept: u64,
    /// The new first dirty offset.
    pub first_dirty: i64,
    /// Groups not swapped in because the log changed meanwhile (retention, close).
    pub groups_abandoned: usize,
}

/// One sealed segment as the round saw it.
#[derive(Clone)]
struct SegSnap {
    base: i64,
    next_base: i64,
    file: DataFile,
    len: u64,
    max_timestamp: i64,
}

impl PartitionLog {
    /// Run one cleaning round if compaction is on and one is due (see the module docs).
    /// `Ok(None)`: nothing to do. `force`: clean even below `min.cleanable.dirty.ratio`.
    pub async fn clean(
        &self,
        state: &mut LogCleanState,
        map: &mut OffsetMap,
        now_ms: i64,
        force: bool,
    ) -> Result<Option<CleanReport>, StorageError> {
        let shared = &*self.shared;
        if !self.is_compacted() {
            return Ok(None);
        }
        let first_dirty = match state.first_dirty {
            Some(o) => o,
            None => {
                let data = io::read_small_file(
                    &shared.dir.join(CLEANER_CHECKPOINT_FILE),
                    checkpoint::FILE_BYTES_MAX,
                )
                .await?;
                data.and_then(|d| String::from_utf8(d).ok())
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .unwrap_or(0)
            }
        };
        let (config, segs, log_start) = {
            let inner = shared.inner.borrow();
            if inner.life != Life::Open || !inner.config.cleanup_compact {
                return Ok(None);
            }
            let cfg = inner.config.clone();
            let mut segs = Vec::new();
            let n = inner.segments.len();
            for i in 0..n.saturating_sub(1) {
                let s = &inner.segments[i];
                if !s.sealed || s.base_offset >= inner.checkpoint.recovery_segment {
                    break;
                }
                if cfg.min_compaction_lag_ms > 0
                    && s.max_timestamp > now_ms.saturating_sub(cfg.min_compaction_lag_ms)
                {
                    break;
                }
                let Some(file) = s.file.clone() else {
                    break;
                };
                segs.push(SegSnap {
                    base: s.base_offset,
                    next_base: inner.segments[i + 1].base_offset,
                    file,
                    len: s.durable_len,
                    max_timestamp: s.max_timestamp,
                });
            }
            (cfg, segs, inner.log_start_offset)
        };
        let Some(first_uncleanable) = segs.last().map(|s| s.next_base) else {
            return Ok(None);
        };
        let first_dirty = first_dirty.clamp(log_start, first_uncleanable);
        state.first_dirty = Some(first_dirty);
        let dirty: Vec<&SegSnap> = segs.iter().filter(|s| s.next_base > first_dirty).collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.len).sum();
        let total_bytes: u64 = segs.iter().map(|s| s.len).sum();
        let ratio = if total_bytes == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total_bytes as f64
        };
        let horizon_due = state.next_horizon_ms.is_some_and(|t| t <= now_ms);
        let lag_due = dirty.first().is_some_and(|s| {
            s.max_timestamp >= 0
                && now_ms.saturating_sub(s.max_timestamp) > config.max_compaction_lag_ms
        });
        let due = (dirty_bytes > 0
            && (force || ratio >= config.min_cleanable_dirty_ratio || lag_due))
            || horizon_due;
        if !due {
            return Ok(None);
        }

        // 1. The offset map over the dirty range (stops at a batch boundary when full).
        map.clear(first_dirty - 1);
        let mut producer_last: HashMap<i64, i64> = HashMap::new();
        'segments: for s in &dirty {
            let mut reader = SegmentReader::new(s.file.clone(), s.len);
            while let Some(b) = reader.next_batch().await? {
                let Some(h) = batch::header(&b) else {
                    break;
                };
                if h.last_offset() < first_dirty {
                    continue;
                }
                if map.is_full() {
                    break 'segments;
                }
                let pid = h.producer_id.get();
                if pid >= 0
                    && (producer_last.len() < PRODUCERS_TRACKED_MAX
                        || producer_last.contains_key(&pid))
                {
                    producer_last.insert(pid, h.last_offset());
                }
                if !h.is_control() && h.records_count() > 0 {
                    // A batch too large to decompress is left unmapped (and kept by the filter).
                    let data = match records::decompress_bounded(&b, h) {
                        Ok(data) => data,
                        Err(batch::BatchError::RecordListTooLarge(_)) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let count = usize::try_from(h.records_count()).unwrap_or(0);
                    for r in parse_records(&data, count)? {
                        let offset = h.base_offset() + r.offset_delta;
                        if let Some(key) = r.key {
                            if offset >= first_dirty {
                                map.put(key, offset);
                            }
                        }
                    }
                }
                map.latest_offset = map.latest_offset.max(h.last_offset());
                glommio::yield_if_needed().await;
            }
            map.latest_offset = map.latest_offset.max(s.next_base - 1);
        }
        let end = map.latest_offset + 1;

        // 2. Group the segments below `end` and clean each group.
        let to_clean: Vec<&SegSnap> = segs.iter().filter(|s| s.base < end).collect();
        let mut groups: Vec<Vec<&SegSnap>> = Vec::new();
        for s in to_clean {
            match groups.last_mut() {
                Some(g)
                    if g.iter().map(|x| x.len).sum::<u64>() + s.len <= config.segment_bytes
                        && s.next_base - 1 - g[0].base <= i64::from(i32::MAX) =>
                {
                    g.push(s)
                }
                _ => groups.push(vec![s]),
            }
        }
        let ctx = FilterContext {
            map,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
            producer_last: &producer_last,
        };
        let mut report = CleanReport {
            first_dirty: end,
            ..CleanReport::default()
        };
        let mut next_horizon: Option<i64> = None;
        let interval = u64::from(config.index_interval_bytes);
        for g in groups {
            let base = g[0].base;
            let group_end = g.last().map_or(base, |s| s.next_base);
            let cleaned_path = shared.dir.join(file_names::cleaned_file_name(base));
            let file = DataFile::open_rw(&cleaned_path).await?;
            file.truncate(0).await?;
            let mut w = CleanedWriter {
                file,
                buf: Vec::new(),
                written: 0,
                seg: Segment::new(base, -1),
                interval,
            };
            for s in &g {
                let mut reader = SegmentReader::new(s.file.clone(), s.len);
                while let Some(b) = reader.next_batch().await? {
                    let h = batch::header(&b).ok_or_else(|| corrupt("short batch"))?;
                    let last_of_group = h.last_offset() == group_end - 1;
                    let (f, st) = filter_batch(&b, &ctx, last_of_group)?;
                    report.records_read += st.records_read;
                    report.records_kept += st.records_kept;
                    if let Some(t) = st.tombstone_horizon_ms {
                        next_horizon = Some(next_horizon.map_or(t, |n| n.min(t)));
                    }
                    match f {
                        Filtered::Unchanged => w.append(&b).await?,
                        Filtered::Rewritten(v) => w.append(&v).await?,
                        Filtered::Dropped => {}
                    }
                    glommio::yield_if_needed().await;
                }
            }
            let new_seg = w.finish(group_end).await?;
            let before: u64 = g.iter().map(|s| s.len).sum();
            let after = new_seg.len;
            let bases: Vec<(i64, u64)> = g.iter().map(|s| (s.base, s.len)).collect();
            if swap_in(shared, &bases, group_end, new_seg).await? {
                report.segments_cleaned += g.len();
                report.segments_written += 1;
                report.bytes_before += before;
                report.bytes_after += after;
            } else {
                report.groups_abandoned += 1;
            }
        }

        // 3. Remember where the dirty part starts now.
        if report.groups_abandoned == 0 {
            io::write_file_atomic(
                &shared.dir.join(CLEANER_CHECKPOINT_FILE),
                format!("{end}\n").into_bytes(),
            )
            .await?;
            state.first_dirty = Some(end);
        }
        state.next_horizon_ms = next_horizon;
        Ok(Some(report))
    }

    /// The first dirty offset the cleaner has recorded (for tests and metrics).
    pub async fn cleaner_checkpoint(&self) -> Result<Option<i64>, StorageError> {
        let data = io::read_small_file(
            &self.shared.dir.join(CLEANER_CHECKPOINT_FILE),
            checkpoint::FILE_BYTES_MAX,
        )
        .await?;
        Ok(data
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|s| s.trim().parse().ok()))
    }
}

impl PartitionLog {
    /// True if the topic's `cleanup.policy` includes `compact`.
    pub fn is_compacted(&self) -> bool {
        self.shared.inner.borrow().config.cleanup_compact
    }
}

/// Replace the segments `group` (base, length) by `new_seg` if they are still there: the
/// crash-safe swap of the module docs. `Ok(false)`: the log changed, nothing replaced.
async fn swap_in(
    shared: &Shared,
    group: &[(i64, u64)],
    group_end: i64,
    new_seg: Segment,
) -> Result<bool, StorageError> {
    let base = new_seg.base_offset;
    let dir = &shared.dir;
    let log_name = segment_file_name(base, LOG_EXT);
    let cleaned_name = file_names::cleaned_file_name(base);
    let swap_name = file_names::swap_file_name(base);
    let _guard = lock_meta(shared).await;
    let still_there = {
        let inner = shared.inner.borrow();
        inner.life == Life::Open
            && inner.segment_index(base).is_some_and(|i| {
                group.iter().enumerate().all(|(k, &(b, len))| {
                    inner
                        .segments
                        .get(i + k)
                        .is_some_and(|s| s.base_offset == b && s.sealed && s.durable_len == len)
                }) && inner
                    .segments
                    .get(i + group.len())
                    .is_some_and(|s| s.base_offset == group_end)
            })
    };
    if !still_there {
        if let Err(e) = io::remove_files(dir, vec![cleaned_name]).await {
            tracing::warn!(dir = %dir.display(), error = %e, "removing an abandoned cleaned segment failed");
        }
        return Ok(false);
    }
    let oi = new_seg.offset_index.encode();
    let ti = new_seg.time_index.encode();
    // The aborted-transaction entries of the group go to the new segment's index first (a
    // superset until the swap: duplicates are ignored on read).
    let bases: Vec<i64> = group.iter().map(|&(b, _)| b).collect();
    let old_txn_indexes = super::log_txn::merge_for_swap(shared, &bases).await?;
    // Commit point: from here a crash completes the swap on open.
    io::rename_file(&dir.join(&cleaned_name), &dir.join(&swap_name)).await?;
    io::sync_dir(dir).await?;
    let mut old = old_txn_indexes;
    for &(b, _) in group {
        old.push(segment_file_name(b, INDEX_EXT));
        old.push(segment_file_name(b, TIME_INDEX_EXT));
        if b != base {
            old.push(segment_file_name(b, LOG_EXT));
        }
    }
    io::remove_files(dir, old).await?;
    io::rename_file(&dir.join(&swap_name), &dir.join(&log_name)).await?;
    if let Some(file) = &new_seg.file {
        // Its descriptor may be closed by the shard's file pool and reopened by name.
        file.renamed(&dir.join(&log_name));
    }
    io::sync_dir(dir).await?;
    write_indexes(dir, base, oi, ti).await?;
    let mut inner = shared.inner.borrow_mut();
    let i = inner
        .segment_index(base)
        .expect("segments cannot change while the metadata lock is held");
    for _ in 0..group.len() {
        inner.segments.remove(i);
    }
    inner.segments.insert(i, new_seg);
    inner.recompute_max_timestamp();
    drop(inner);
    shared.cache.evict_below(shared.cache_id, group_end);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{encode_batch, Compression, NewRecord};

    fn rec(key: &str, value: Option<&str>, ts: i64) -> NewRecord {
        (
            Some(Bytes::copy_from_slice(key.as_bytes())),
            value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            ts,
        )
    }

    fn batch_at(base: i64, records: &[NewRecord], c: Compression) -> Vec<u8> {
        let mut b = encode_batch(records, c).expect("encode").to_vec();
        batch::set_base_offset(&mut b, base);
        b
    }

    fn decode(b: &[u8]) -> Vec<(i64, i64, Option<Bytes>, Option<Bytes>)> {
        let mut bytes = Bytes::copy_from_slice(b);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).expect("decode");
        set.records
            .into_iter()
            .map(|r| (r.offset, r.timestamp, r.key, r.value))
            .collect()
    }

    #[test]
    fn filter_keeps_latest_per_key_and_preserves_offsets() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch_at(
                100,
                &[
                    rec("a", Some("1"), 10),
                    rec("b", Some("1"), 11),
                    rec("a", Some("2"), 12),
                    rec("c", Some("1"), 13),
                ],
                c,
            );
            let mut map = OffsetMap::with_memory(1 << 20);
            map.clear(99);
            map.put(b"a", 102);
            map.put(b"b", 105); // overwritten later
            map.put(b"c", 103);
            map.latest_offset = 105;
            let producers = HashMap::new();
            let ctx = FilterContext {
                map: &map,
                now_ms: 1000,
                delete_retention_ms: 50,
                producer_last: &producers,
            };
            let (f, st) = filter_batch(&b, &ctx, false).expect("filter");
            let Filtered::Rewritten(out) = f else {
                panic!("expected a rewrite, got {f:?}");
            };
            assert_eq!((st.records_read, st.records_kept), (4, 2));
            let h = validate_stored(&out).expect("valid cleaned batch");
            assert_eq!((h.base_offset(), h.last_offset()), (100, 103));
            assert_eq!(h.compression(), c as i16, "same codec");
            assert_eq!(h.max_timestamp(), 13);
            let recs = decode(&out);
            assert_eq!(
                recs.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
                vec![(102, 12), (103, 13)]
            );
            assert_eq!(recs[0].3.as_deref(), Some(&b"2"[..]));
        }
    }

    #[test]
    fn tombstones_get_a_horizon_then_go() {
        let b = batch_at(
            0,
            &[
                rec("a", Some("1"), 10),
                rec("a", None, 20),
                rec("b", Some("x"), 30),
            ],
            Compression::None,
        );
        let mut map = OffsetMap::with_memory(1 << 20);
        map.clear(-1);
        map.put(b"a", 1);
        map.put(b"b", 2);
        map.latest_offset = 2;
        let producers = HashMap::new();
        let mut ctx = FilterContext {
            map: &map,
            now_ms: 1000,
            delete_retention_ms: 500,
            producer_last: &producers,
        };
        let (f, st) = filter_batch(&b, &ctx, false).expect("filter");
        let Filtered::Rewritten(once) = f else {
            panic!("expected a rewrite");
        };
        assert_eq!(st.tombstone_horizon_ms, Some(1500));
        let h = validate_stored(&once).expect("valid");
        assert_ne!(h.attributes() & ATTR_DELETE_HORIZON, 0);
        assert_eq!(h.base_timestamp(), 1500);
        let recs = decode(&once);
        assert_eq!(
            recs.iter()
                .map(|r| (r.0, r.1, r.3.is_none()))
                .collect::<Vec<_>>(),
            vec![(1, 20, true), (2, 30, false)],
            "timestamps survive the re-basing"
        );
        // Before the horizon: unchanged. After: the tombstone goes.
        ctx.now_ms = 1499;
        assert_eq!(
            filter_batch(&once, &ctx, false).expect("filter").0,
            Filtered::Unchanged
        );
        ctx.now_ms = 1500;
        let (f, st) = filter_batch(&once, &ctx, false).expect("filter");
        let Filtered::Rewritten(twice) = f else {
            panic!("expected a rewrite");
        };
        assert_eq!(st.tombstone_horizon_ms, None);
        let recs = decode(&twice);
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(validate_stored(&twice).expect("valid").last_offset(), 2);
    }

    #[test]
    fn emptied_batches_are_dropped_or_kept_empty() {
        let b = batch_at(
            10,
            &[rec("a", Some("1"), 5), rec("a", Some("2"), 6)],
            Compression::Gzip,
        );
        let mut map = OffsetMap::with_memory(1 << 20);
        map.clear(9);
        map.put(b"a", 50);
        map.latest_offset = 60;
        let producers = HashMap::new();
        let ctx = FilterContext {
            map: &map,
            now_ms: 0,
            delete_retention_ms: 0,
            producer_last: &producers,
        };
        assert_eq!(
            filter_batch(&b, &ctx, false).expect("filter").0,
            Filtered::Dropped
        );
        let (f, _) = filter_batch(&b, &ctx, true).expect("filter");
        let Filtered::Rewritten(e) = f else {
            panic!("expected an empty batch");
        };
        let h = validate_stored(&e).expect("valid empty batch");
        assert_eq!(
            (
                h.base_offset(),
                h.last_offset(),
                h.records_count(),
                h.compression()
            ),
            (10, 11, 0, 0)
        );
        assert!(
            batch::validate(&e).is_err(),
            "produce validation refuses empty batches"
        );
        // Records past the map are always kept.
        let mut map2 = OffsetMap::with_memory(1 << 20);
        map2.clear(9);
        map2.put(b"a", 50);
        map2.latest_offset = 10;
        let ctx2 = FilterContext { map: &map2, ..ctx };
        let (f, st) = filter_batch(&b, &ctx2, false).expect("filter");
        assert!(matches!(f, Filtered::Rewritten(_)));
        assert_eq!(st.records_kept, 1);
    }

    #[test]
    fn last_batch_of_an_idempotent_producer_is_kept_empty() {
        let mut b = batch_at(20, &[rec("a", Some("1"), 5)], Compression::None);
        if let Some(h) = batch::header_mut(&mut b) {
            h.producer_id.set(7);
            h.producer_epoch.set(0);
            h.base_sequence.set(3);
        }
        batch::fix_crc(&mut b);
        let mut map = OffsetMap::with_memory(1 << 20);
        map.clear(19);
        map.put(b"a", 90);
        map.latest_offset = 99;
        let mut producers = HashMap::new();
        producers.insert(7i64, 20i64);
        let producers = producers;
        let ctx = FilterContext {
            map: &map,
            now_ms: 0,
            delete_retention_ms: 0,
            producer_last: &producers,
        };
        let (f, _) = filter_batch(&b, &ctx, false).expect("filter");
        let Filtered::Rewritten(e) = f else {
            panic!("the producer's last batch must stay, empty");
        };
        let h = validate_stored(&e).expect("valid");
        assert_eq!(
            (
                h.records_count(),
                h.producer_id.get(),
                h.base_sequence.get()
            ),
            (0, 7, 3)
        );
        // A later batch of the same producer exists: this one can go.
        let mut later = HashMap::new();
        later.insert(7i64, 50i64);
        let ctx = FilterContext {
            producer_last: &later,
            ..ctx
        };
        assert_eq!(
            filter_batch(&b, &ctx, false).expect("filter").0,
            Filtered::Dropped
        );
    }

    #[test]
    fn keyless_records_are_refused_for_compacted_topics() {
        for c in [Compression::None, Compression::Zstd] {
            let keyed = batch_at(0, &[rec("a", Some("1"), 1), rec("b", None, 2)], c);
            let compacted = records::RecordRules { require_keys: true };
            assert!(batch::validate_records(&keyed, 1 << 20, compacted).is_ok());
            let keyless = batch_at(
                0,
                &[rec("a", Some("1"), 1), (None, Some(Bytes::from("v")), 3)],
                c,
            );
            let mut set = keyed.clone();
            set.extend_from_slice(&keyless);
            match batch::validate_records(&set, 1 << 20, compacted) {
                Err(batch::BatchError::InvalidRecords { errors, .. }) => {
                    assert_eq!(errors.len(), 1);
                    assert_eq!(errors[0].batch_index, 1);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn offset_map_is_bounded() {
        let map = OffsetMap::with_memory(0);
        assert_eq!(map.capacity(), 1024);
        let mut map = OffsetMap::with_memory(48 * 2000);
        assert_eq!(map.capacity(), 2000);
        for i in 0..2000u32 {
            map.put(&i.to_be_bytes(), i64::from(i));
        }
        assert!(map.is_full());
        assert_eq!(map.get(&7u32.to_be_bytes()), 7);
        assert_eq!(map.get(b"missing"), -1);
    }
}
