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
//! # Files
//! - [`filter`]: the pure part. Parsing records in place, the per-batch decision
//!   ([`filter_batch`]) and the rewritten batch, the offset map step for one batch,
//!   [`validate_stored`], [`compress`]. No I/O, no runtime: unit-tested on batches built in
//!   memory.
//! - [`offset_map`]: the bounded key hash -> latest offset map ([`OffsetMap`]), pure.
//! - [`swap`]: the I/O. Reading a sealed segment batch by batch, writing the cleaned segment,
//!   swapping it in crash-safely, and completing an interrupted swap on open.
//! - [`round`]: one cleaning round of a [`PartitionLog`](super::PartitionLog) (steps 1 to 5
//!   above), which drives the other three.
//!
//! This module is a child of [`super`] (the partition log) because the swap edits the log's
//! segment list under its metadata lock; it is re-exported as `storage::cleaner`.
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

pub mod filter;
pub mod offset_map;
pub mod round;
pub mod swap;

pub use filter::{compress, filter_batch, validate_stored, FilterContext, FilterStats, Filtered};
pub use offset_map::OffsetMap;
pub use round::{CleanReport, LogCleanState};
pub use swap::finish_interrupted_swaps;

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
