//! [`PartitionLog`]: one partition's durable log of segments, with group commit, reads from
//! the tail cache or the disk, time lookups, retention and recovery.
//!
//! # Ownership
//! A `PartitionLog` lives on the shard that owns the partition: created by
//! [`PartitionLog::open`] on that shard, dropped after [`PartitionLog::close`] or consumed by
//! [`PartitionLog::delete`]. It is `!Send`. Methods take `&self`; state sits in a `RefCell`
//! that is never borrowed across an `.await`, so appends, reads and maintenance on the same
//! shard interleave freely.
//!
//! # Where each concern lives
//! This file holds the type, its shared state (`Inner`: segments, pending appends, offsets;
//! `Segment`: one segment's in-memory state), the per-log metadata lock, the limits and the
//! small accessors. Each concern is one child module, with its own essay:
//! - `append`: validation, offset assignment, producer checks, backpressure; an append
//!   resolves once its bytes are durable.
//! - `flush`: the group-commit flusher (pipelined O_DIRECT writes and `fdatasync`), the
//!   completion slots, and the rollback to the high watermark when a write or sync fails.
//! - `segment`: when a segment rolls, sealing the old one, creating and preallocating the new
//!   file, the index files.
//! - `recover`: [`PartitionLog::open`] (the CRC scan from the recovery checkpoint, what takes
//!   a partition offline) and [`prime_disk`].
//! - `read`: reads from the tail cache or the disk, and time lookups.
//! - `retention`: `retention.ms`/`retention.bytes`, DeleteRecords, deleting segments below the
//!   log start, deleting the partition.
//! - `close`: clean shutdown (indexes, recovery checkpoint, producer snapshot).
//! - `check`: the paired assertions: what is about to be written is checked right before the
//!   write (a violation is a bug: `assert!`), what came back from the disk right after the read
//!   (a violation is damage: [`super::StorageError::CorruptMessage`], never a panic).
//! - `txn`: the log's side of the aborted-transaction index.
//! - `epochs`: the log's side of the leader-epoch cache (the epoch stamped into appended
//!   batches, the `leader-epoch-checkpoint` file, its recovery).
//! - `truncate`: [`PartitionLog::truncate_to`], cutting the log's tail (a follower whose log
//!   diverged from its leader's).
//! - [`cleaner`]: log compaction (a child module so that it can swap segments under the lock).
//!
//! # Guarantees
//! An append resolves `Ok` only once its batches are fdatasync'd; the high watermark only moves
//! forward over durable bytes and never passes the log end; reads never pass the high
//! watermark; recovery never serves a torn batch, never drops an acknowledged one, and deletes
//! nothing it merely failed to read (the partition goes offline instead).
//!
//! # Known gaps
//! - `segment.ms` counts from the wall clock of the segment's first append; after a restart,
//!   from the active segment's first batch timestamp.
//! - Indexes of all segments stay in memory (~0.5% of the log size); no lazy loading yet.
//! - `max_timestamp` after a restart reports the offset of the *batch* holding the max
//!   timestamp (its last offset) until a newer max arrives.
//! - A produce larger than [`PENDING_BYTES_MAX`] is accepted only when nothing is pending.
//! - Damage inside a sealed segment that recovery trusts (not rescanned on open) is found only
//!   when a read reaches it: that read answers CORRUPT_MESSAGE; nothing scrubs segments in the
//!   background yet.

pub mod cleaner;

mod append;
mod check;
mod close;
mod epochs;
mod flush;
mod read;
mod recover;
mod replica;
mod retention;
mod segment;
mod truncate;
mod txn;

pub use recover::{prime_disk, PRIME_FILE_NAME};

// Used by `cleaner` through `super::`.
use segment::write_indexes;

use super::cache::TailCache;
use super::checkpoint::Checkpoint;
use super::index::{OffsetIndex, TimeIndex};
use super::io::DataFile;
use super::leader_epoch::LeaderEpochCache;
use super::producer_state::ProducerStateTable;
use super::txn_index::TxnIndexes;
use super::LogConfig;
use bytes::Bytes;
use flush::SlotRef;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Unflushed bytes per log before appends wait for the flusher.
pub const PENDING_BYTES_MAX: usize = 64 << 20;
/// Bytes written per flush round at most (one fdatasync each).
pub const FLUSH_BYTES_MAX: usize = 32 << 20;
/// Bytes per O_DIRECT write; a round issues all of its writes at once.
pub const WRITE_BYTES_MAX: usize = 1 << 20;
/// fdatasyncs in flight per log at most: round N+1 is written while round N syncs.
pub const SYNCS_IN_FLIGHT_MAX: usize = 2;
/// Preallocation step of the active segment (capped by `segment.bytes`).
pub const PREALLOCATE_STEP_BYTES: u64 = 32 << 20;
/// First preallocation of a segment file; later steps double up to [`PREALLOCATE_STEP_BYTES`].
pub const PREALLOCATE_FIRST_BYTES: u64 = 256 << 10;
/// Bytes read per step while scanning a segment in recovery.
pub const SCAN_READ_BYTES: usize = 1 << 20;
/// Largest batch recovery accepts; a length field above it is treated as garbage.
pub const SCAN_BATCH_BYTES_MAX: usize = 256 << 20;
/// Largest index file read on open.
pub const INDEX_FILE_BYTES_MAX: u64 = 64 << 20;
/// Bytes read from disk per read call at most, beyond the first batch.
pub const READ_BYTES_MAX: usize = 16 << 20;

/// Metadata of one pending batch, applied to the segment once durable.
#[derive(Clone, Copy, Debug)]
struct PendingBatch {
    pos_in_segment: u64,
    base_offset: i64,
    len: u64,
    last_offset: i64,
    max_timestamp: i64,
    data_start: usize,
}

/// One append's data waiting for the flusher.
struct Pending {
    segment_base: i64,
    data: Bytes,
    batches: Vec<PendingBatch>,
    end_offset: i64,
    slot: SlotRef,
}

/// One segment's in-memory state.
struct Segment {
    base_offset: i64,
    /// `None` until the flusher creates the file of a freshly rolled segment.
    file: Option<DataFile>,
    /// Bytes appended (durable or pending).
    len: u64,
    /// Bytes durable (fdatasync'd).
    durable_len: u64,
    /// Offset after the last appended batch.
    next_offset: i64,
    /// Offset after the last durable batch.
    durable_next_offset: i64,
    /// Bytes the file is preallocated to.
    preallocated_len: u64,
    /// Durable bytes of the partial last block: `[align_down(durable_len), durable_len)`.
    tail_block: Vec<u8>,
    /// Bytes written (durable or with an fdatasync in flight); `durable_len <= written_len
    /// <= len`.
    written_len: u64,
    /// Written bytes of the partial last block: `[align_down(written_len), written_len)`.
    written_tail_block: Vec<u8>,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    /// Max timestamp of durable batches and the last offset of the batch holding it.
    max_timestamp: i64,
    max_timestamp_offset: i64,
    /// Wall clock (or first timestamp, after recovery) for `segment.ms`.
    roll_time_ms: i64,
    /// Truncated to length and index files written.
    sealed: bool,
}

impl Segment {
    fn new(base_offset: i64, roll_time_ms: i64) -> Segment {
        Segment {
            base_offset,
            file: None,
            len: 0,
            durable_len: 0,
            next_offset: base_offset,
            durable_next_offset: base_offset,
            preallocated_len: 0,
            tail_block: Vec::new(),
            written_len: 0,
            written_tail_block: Vec::new(),
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            max_timestamp: -1,
            max_timestamp_offset: -1,
            roll_time_ms,
            sealed: false,
        }
    }

    fn rel(&self, offset: i64) -> u32 {
        let rel = offset - self.base_offset;
        assert!(
            (0..=i64::from(u32::MAX)).contains(&rel),
            "relative offset overflow"
        );
        rel as u32
    }

    /// Index a durable batch (Kafka's `LogSegment.append` rule).
    fn index_batch(&mut self, pos: u64, len: u64, last_offset: i64, max_ts: i64, interval: u64) {
        if max_ts > self.max_timestamp {
            self.max_timestamp = max_ts;
            self.max_timestamp_offset = last_offset;
        }
        if self.bytes_since_index > interval {
            let rel = self.rel(last_offset);
            let pos32 = u32::try_from(pos).unwrap_or(u32::MAX);
            assert!(u64::from(pos32) == pos, "segment position overflow");
            self.offset_index.push(rel, pos32);
            if self.max_timestamp >= 0 {
                let rel_max = self.rel(self.max_timestamp_offset);
                self.time_index.maybe_push(self.max_timestamp, rel_max);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
    }

    /// Make the time index end with the segment's max timestamp (done when sealing).
    fn finish_time_index(&mut self) {
        if self.max_timestamp >= 0 {
            let rel_max = self.rel(self.max_timestamp_offset);
            self.time_index.maybe_push(self.max_timestamp, rel_max);
        }
    }
}

/// Open -> Closing (`close` drains the flusher) -> Closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Open,
    Closing,
    Closed,
}

/// The log's mutable state, in [`Shared::inner`]; never borrowed across an `.await`.
struct Inner {
    config: LogConfig,
    life: Life,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    segments: VecDeque<Segment>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    flushing: bool,
    /// Tasks waiting for "something changed" (backpressure, close, metadata lock).
    change_waiters: Vec<Waker>,
    /// (max timestamp, its offset) over durable data.
    max_timestamp: (i64, i64),
    checkpoint: Checkpoint,
    meta_locked: bool,
    /// Successful flush rounds (one fdatasync each).
    flush_count: u64,
    /// Idempotence and transaction state, updated where offsets are assigned.
    producers: ProducerStateTable,
    /// Producer snapshot captured when a roll was decided: (new segment base, encoded state),
    /// written once that segment is durable.
    roll_snapshot: Option<(i64, Vec<u8>)>,
    /// Aborted-transaction index: pending entries and which segments have a file.
    txn_index: TxnIndexes,
    /// A flush round has run since open: the files may differ from what the checkpoint
    /// describes, so close must write them out.
    modified: bool,
    /// The replicated high watermark (`replica`): `None` while it follows the durable end
    /// (one replica, or a leader whose ISR is itself); `Some(hw)` once the partition's
    /// replication sets it. Readers see `min(hw, durable end)`.
    replicated_hw: Option<i64>,
    /// The leader epoch stamped into batches appended from producers (`set_leader_epoch`).
    leader_epoch: i32,
    /// Where each leader epoch starts in the log (see `epochs`).
    epochs: LeaderEpochCache,
    /// `epochs` changed since its file was written.
    epochs_dirty: bool,
    /// `epochs` has an entry without data yet (`start_leader_epoch`): the file needs it only
    /// once a batch is appended in it (else the next leadership adds it again).
    epochs_soft: bool,
    /// A truncation is under way: appends wait (see `truncate`).
    truncating: bool,
}

impl Inner {
    /// What readers may see: the durable end (field `high_watermark`, the local high
    /// watermark), capped by the replicated one when replication sets it.
    fn visible_high_watermark(&self) -> i64 {
        self.replicated_hw
            .map_or(self.high_watermark, |hw| hw.min(self.high_watermark))
    }

    fn wake_all(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.change_waiters)
    }

    fn segment_index(&self, base_offset: i64) -> Option<usize> {
        self.segments
            .binary_search_by_key(&base_offset, |s| s.base_offset)
            .ok()
    }

    /// Index of the segment holding `offset` (the last one whose base is `<= offset`).
    fn segment_for(&self, offset: i64) -> Option<usize> {
        let idx = self.segments.partition_point(|s| s.base_offset <= offset);
        idx.checked_sub(1)
    }

    fn recompute_max_timestamp(&mut self) {
        let mut best = (-1i64, -1i64);
        for s in &self.segments {
            if s.max_timestamp > best.0 {
                best = (s.max_timestamp, s.max_timestamp_offset);
            }
        }
        self.max_timestamp = best;
    }
}

/// What the log, its flusher task and the cleaner share (one `Rc` each, on the owning shard).
struct Shared {
    dir: PathBuf,
    cache: Rc<TailCache>,
    cache_id: u64,
    inner: RefCell<Inner>,
}

impl Shared {
    fn wake(&self) {
        let wakers = self.inner.borrow_mut().wake_all();
        for w in wakers {
            w.wake();
        }
    }
}

/// Future that resolves the second time it is polled: "wait until woken by a change".
struct WaitChange<'a> {
    shared: &'a Shared,
    registered: bool,
}

impl Future for WaitChange<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered {
            return Poll::Ready(());
        }
        self.registered = true;
        self.shared
            .inner
            .borrow_mut()
            .change_waiters
            .push(cx.waker().clone());
        Poll::Pending
    }
}

fn wait_change(shared: &Shared) -> WaitChange<'_> {
    WaitChange {
        shared,
        registered: false,
    }
}

/// Guard of the per-log metadata lock (checkpoint writes, segment deletion, sealing).
struct MetaGuard<'a> {
    shared: &'a Shared,
}

impl Drop for MetaGuard<'_> {
    fn drop(&mut self) {
        self.shared.inner.borrow_mut().meta_locked = false;
        self.shared.wake();
    }
}

async fn lock_meta(shared: &Shared) -> MetaGuard<'_> {
    loop {
        {
            let mut inner = shared.inner.borrow_mut();
            if !inner.meta_locked {
                inner.meta_locked = true;
                return MetaGuard { shared };
            }
        }
        wait_change(shared).await;
    }
}

/// One partition's log. Owned by exactly one shard (see the module docs).
pub struct PartitionLog {
    shared: Rc<Shared>,
}

impl PartitionLog {
    /// Markers applied so far for `producer_id` (the verification guard).
    pub fn marker_count(&self, producer_id: i64) -> u32 {
        self.shared
            .inner
            .borrow()
            .producers
            .marker_count(producer_id)
    }

    /// The last stable offset: the first offset of the oldest open transaction, or the high
    /// watermark. read_committed fetches stop there.
    pub fn last_stable_offset(&self) -> i64 {
        let inner = self.shared.inner.borrow();
        inner
            .producers
            .first_unstable_offset()
            .map_or(inner.visible_high_watermark(), |o| {
                o.min(inner.visible_high_watermark())
            })
    }

    /// Forget producers idle longer than
    /// [`super::producer_state::PRODUCER_ID_EXPIRATION_MS`] (Kafka's `producer.id.expiration.ms`
    /// default) without an open transaction; returns how many.
    pub fn expire_producers(&self, now_ms: i64) -> usize {
        self.shared
            .inner
            .borrow_mut()
            .producers
            .expire(now_ms, super::producer_state::PRODUCER_ID_EXPIRATION_MS)
    }

    /// True if `producer_id` at `epoch` has a transaction open on this partition (its later
    /// batches need no verification with the coordinator).
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.shared
            .inner
            .borrow()
            .producers
            .get(producer_id)
            .is_some_and(|e| e.epoch == epoch && e.txn_first_offset.is_some())
    }

    /// The coordinator epoch of the last transaction marker written for `producer_id` here
    /// (0 if none): WriteTxnMarkers fences a marker from an older coordinator.
    pub fn marker_coordinator_epoch(&self, producer_id: i64) -> i32 {
        let inner = self.shared.inner.borrow();
        inner
            .producers
            .get(producer_id)
            .map_or(0, |e| e.coordinator_epoch)
    }

    /// Notes that a marker of `coordinator_epoch` was written for `producer_id` (every marker
    /// appended, replicated or replayed here notes its epoch as well, in the producer state
    /// and its snapshots).
    pub fn note_marker_coordinator_epoch(&self, producer_id: i64, coordinator_epoch: i32) {
        let mut inner = self.shared.inner.borrow_mut();
        inner
            .producers
            .note_coordinator_epoch(producer_id, coordinator_epoch);
    }

    /// Every producer of this partition with its state (DescribeProducers).
    pub fn producers(&self) -> Vec<(i64, super::producer_state::ProducerEntry)> {
        let inner = self.shared.inner.borrow();
        inner
            .producers
            .iter()
            .map(|(id, e)| (*id, e.clone()))
            .collect()
    }

    /// The first offset of the log.
    pub fn log_start_offset(&self) -> i64 {
        self.shared.inner.borrow().log_start_offset
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.shared.inner.borrow().log_end_offset
    }

    /// The high watermark readers (consumers, ListOffsets LATEST, DeleteRecords) see: the
    /// durable end with one replica, else the replicated high watermark (`replica`).
    pub fn high_watermark(&self) -> i64 {
        self.shared.inner.borrow().visible_high_watermark()
    }

    /// End of the durable (fdatasync'd) prefix on this broker; reads of followers (the
    /// leader's side of replication) stop there.
    pub fn durable_end(&self) -> i64 {
        self.shared.inner.borrow().high_watermark
    }

    /// (max timestamp, its offset) over durable data for ListOffsets MAX_TIMESTAMP; (-1, -1)
    /// if empty.
    pub fn max_timestamp(&self) -> (i64, i64) {
        self.shared.inner.borrow().max_timestamp
    }

    /// Replace the topic config (takes effect for the next appends and retention passes).
    pub fn set_config(&self, config: LogConfig) {
        self.shared.inner.borrow_mut().config = config;
    }

    /// Bytes of all segments (including appended, not yet durable data).
    pub fn size_bytes(&self) -> u64 {
        self.shared
            .inner
            .borrow()
            .segments
            .iter()
            .map(|s| s.len)
            .sum()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Flush rounds completed, each one `fdatasync` (for tests and metrics: group commit
    /// means far fewer rounds than appends).
    pub fn flush_count(&self) -> u64 {
        self.shared.inner.borrow().flush_count
    }

    /// Base offsets of the segments, oldest first (for tests and metrics).
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.shared
            .inner
            .borrow()
            .segments
            .iter()
            .map(|s| s.base_offset)
            .collect()
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.shared.inner.borrow().segments.len()
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Dropped without close: the flusher (holding its own Rc) finishes pending data;
        // the cache forgets this log.
        let inner = self.shared.inner.borrow();
        if inner.life != Life::Closed {
            drop(inner);
            self.shared.cache.unregister(self.shared.cache_id);
        }
    }
}
