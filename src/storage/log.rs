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
//! # Write path and group commit
//! `append` validates every batch of the record set ([`batch::validate_record_set`]), copies
//! the set once into a new buffer, rewrites each `baseOffset` (and the leader epoch, and the
//! LogAppendTime with a CRC fix when the topic asks), assigns offsets at once, queues the
//! buffer as *pending*, caches its batches in the [`TailCache`], and waits for its own
//! completion slot. One flusher task per log (spawned when pending data appears, exits when
//! there is none) loops: take everything pending for one segment, write it with O_DIRECT
//! starting at the aligned block that holds the durable end (the partial tail block is kept in
//! memory and rewritten, zero padded, as it grows), several 1 MiB writes in flight, then one
//! `fdatasync`, then advance the high watermark and complete every slot it covered. Appends
//! that arrive meanwhile gather for the next round, so one `fdatasync` covers many appends.
//! Rounds are pipelined: while round N's `fdatasync` runs, round N+1 is already written (at
//! most [`SYNCS_IN_FLIGHT_MAX`] syncs in flight); rounds complete strictly in order, so the
//! high watermark only moves forward over durable bytes. Rewriting the tail block of round N
//! while its sync runs is safe: the rewrite carries the same bytes for round N's part.
//! Pending bytes are bounded by [`PENDING_BYTES_MAX`]: appends beyond it wait.
//!
//! Appended batches get `partitionLeaderEpoch` = [`LEADER_EPOCH`] (one node, epoch 0).
//!
//! Idempotence: a record set with a producer id must be one batch; it is judged by the log's
//! [`ProducerStateTable`] right before offsets are assigned, with no await in between, so
//! appends are judged in offset order. A duplicate writes nothing and is answered with the
//! original offsets once they are durable. A failed flush forgets producer state above the
//! high watermark. The table is written as a snapshot at each roll and at close, and rebuilt on
//! open (see [`producer_snapshot`]). Abort markers feed the per-segment aborted-transaction
//! index (see [`super::txn_index`]; its I/O is in the child module `log_txn`).
//!
//! If a write or sync fails (ENOSPC, EIO...), every pending append fails with
//! [`StorageError::Io`], the log end offset falls back to the high watermark, cached batches
//! above it are dropped, and the next append rewrites from the durable end. On a full disk a
//! preallocation step shrinks to what the round needs, and to nothing (the write grows the
//! file) if even that does not fit, so appends succeed again as soon as their own bytes fit. Indexes only ever
//! receive entries for durable batches, so nothing half-written is ever indexed or served.
//!
//! # Segments
//! A segment is `<base offset, 20 digits>.log` (batches back to back, wire format) plus
//! `.index` and `.timeindex` (see [`super::index`]). The active segment is preallocated in
//! steps growing from [`PREALLOCATE_FIRST_BYTES`] to [`PREALLOCATE_STEP_BYTES`] (less when the
//! disk is full, see above). A segment rolls when the next record set would pass
//! `segment.bytes`, when it is `segment.ms` old, or when relative offsets would overflow.
//! At roll the flusher *seals* the old segment (truncate to its length, fdatasync, write its
//! index files atomically), creates and preallocates the new file, fsyncs the directory and
//! then writes the recovery checkpoint; only then does data go into the new segment.
//!
//! # Recovery
//! See [`super::checkpoint`] for the recovery point. On open, segments below the recovery
//! segment are trusted and not rescanned (after a clean close that is every segment but the
//! active one, whose recovery point is its end): their index files are checked entry by entry
//! (and rebuilt by a CRC scan if missing or damaged), and only the tail from the last index
//! entry (at most `index.interval.bytes` plus one batch) is read, to check that the file still
//! ends exactly where a whole batch does. From the recovery point on, every batch is read back
//! and checked: framing, magic, CRC-32C, record count, and that its base offset continues the
//! previous batch. Only the *last* segment may end in a failure (a torn write, zero padding,
//! preallocated space): it is truncated there. Damage anywhere else (a sealed segment whose
//! batches do not reach its end, a segment shorter than the recovery point, an empty or
//! overlapping sealed segment) takes the partition *offline*: `open` fails with
//! [`StorageError::Io`] (KAFKA_STORAGE_ERROR for clients), the reason is logged with the
//! segment's name, and nothing is truncated or deleted, so no acknowledged record is lost and no
//! offset is ever given out twice; the operator decides. Offsets missing *between* segments (a
//! segment file removed by hand) are not damage: reads in the gap answer with the next
//! segment's batches, as Kafka does. A sealed segment cut exactly at a batch boundary looks the
//! same as such a gap and is served the same way. Sealed segments may have been rewritten by
//! the [`cleaner`] (offset gaps between batches, batches with fewer records than offsets): the
//! scan accepts forward gaps except in the last segment, and an interrupted cleaner swap is
//! completed before anything else ([`cleaner::finish_interrupted_swaps`]). The active segment
//! is then fdatasync'd and the high watermark set to the log end.
//!
//! # Reads
//! Reads never pass the high watermark. Offsets covered by the tail cache are answered with
//! `Bytes` clones; others go to disk: the offset index gives a position at most
//! `index.interval.bytes` before the batch, and one read (copied once into `Bytes`, sliced per
//! batch) returns whole batches up to `max_bytes`, from one segment per call (as Kafka).
//!
//! # Known gaps
//! - `segment.ms` counts from the wall clock of the segment's first append; after a restart,
//!   from the active segment's first batch timestamp.
//! - Indexes of all segments stay in memory (~0.5% of the log size); no lazy loading yet.
//! - `max_timestamp` after a restart reports the offset of the *batch* holding the max
//!   timestamp (its last offset) until a newer max arrives.
//! - A produce larger than [`PENDING_BYTES_MAX`] is accepted only when nothing is pending.

pub mod cleaner;
#[path = "log_txn.rs"]
mod log_txn;

use super::batch;
use super::cache::TailCache;
use super::checkpoint::{self, Checkpoint};
use super::file_names::{
    self, segment_file_name, INDEX_EXT, LOG_EXT, SEGMENT_EXTS, TIME_INDEX_EXT,
};
use super::index::{OffsetIndex, TimeIndex};
use super::io::{self, align_down, DataFile, DIRECT_IO_ALIGN};
use super::producer_snapshot;
use super::producer_state::{BatchFacts, Check, ProducerError, ProducerStateTable};
use super::txn_index::{AbortedTxn, TxnIndexes};
use super::{AppendInfo, LogConfig, ReadData, StorageError, TimestampType};
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
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
/// Leader epoch stamped into appended batches (one node, epoch 0).
pub const LEADER_EPOCH: i32 = 0;
/// Bytes read from disk per read call at most, beyond the first batch.
pub const READ_BYTES_MAX: usize = 16 << 20;

/// A cloneable description of an I/O failure, given to every append of a failed flush.
#[derive(Clone, Debug)]
struct Failure {
    op: &'static str,
    raw_os_error: Option<i32>,
    kind: std::io::ErrorKind,
    message: String,
}

impl Failure {
    fn from_error(e: &StorageError) -> Failure {
        match e {
            StorageError::Io { op, source } => Failure {
                op,
                raw_os_error: source.raw_os_error(),
                kind: source.kind(),
                message: source.to_string(),
            },
            other => Failure {
                op: "flush",
                raw_os_error: None,
                kind: std::io::ErrorKind::Other,
                message: other.to_string(),
            },
        }
    }

    fn to_error(&self) -> StorageError {
        let source = match self.raw_os_error {
            Some(raw) => std::io::Error::from_raw_os_error(raw),
            None => std::io::Error::new(self.kind, self.message.clone()),
        };
        StorageError::Io {
            op: self.op,
            source,
        }
    }
}

/// Completion slot of one append.
#[derive(Default)]
struct Slot {
    result: Option<Result<(), Failure>>,
    waker: Option<Waker>,
}

type SlotRef = Rc<RefCell<Slot>>;

fn complete(slot: &SlotRef, result: Result<(), Failure>) {
    let waker = {
        let mut s = slot.borrow_mut();
        s.result = Some(result);
        s.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Open,
    Closing,
    Closed,
}

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
}

impl Inner {
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

/// Future of an append's completion slot.
struct WaitSlot {
    slot: SlotRef,
}

impl Future for WaitSlot {
    type Output = Result<(), Failure>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.borrow_mut();
        match &s.result {
            Some(r) => Poll::Ready(r.clone()),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
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

thread_local! {
    static DISK_PRIMED: Cell<bool> = const { Cell::new(false) };
}

/// Name of the probe file [`prime_disk`] writes.
pub const PRIME_FILE_NAME: &str = ".freshet-disk-probe";

/// Must run once on every shard, before any other DmaFile is opened under `data_dir`:
/// works around glommio's poll-mode misdetection (GLOMMIO.md pitfall 1) by making the first
/// O_DIRECT file glommio opens a non-empty one, then checks that O_DIRECT reads work. Writes
/// nothing when the probe file of an earlier run is intact, and on a full disk probes with an
/// existing file, so that a broker starts (and serves reads) on a 100% full disk.
pub async fn prime_disk(data_dir: &Path) -> Result<(), StorageError> {
    io::create_dir_all(data_dir).await?;
    // One probe file per shard: shards prime concurrently, and a shard opening a file another
    // shard is just rewriting (empty for a moment) would hit the very misdetection this avoids.
    static PRIME_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = PRIME_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = data_dir.join(format!("{PRIME_FILE_NAME}-{seq}"));
    const PROBE: [u8; 4096] = [0x5a; 4096];
    // A probe file left by an earlier run is used as it is: on a 100% full disk, rewriting it
    // could fail (ENOSPC), and the broker must still start and serve reads.
    let existing = io::read_small_file(&path, PROBE.len() as u64 + 1).await?;
    let mut path = path;
    let mut expect_probe = true;
    if existing.as_deref() != Some(&PROBE[..]) {
        if let Err(e) = io::write_plain_file(&path, PROBE.to_vec()).await {
            // No room for the probe file: any non-empty file of the data directory will do
            // (the point is that the first O_DIRECT file glommio opens is not empty).
            match (
                io::is_disk_full(&e),
                io::find_non_empty_file(data_dir, 512).await?,
            ) {
                (true, Some(other)) => {
                    tracing::warn!(error = %e, probe = %other.display(), "disk full: cannot write the disk probe file; probing with an existing file");
                    path = other;
                    expect_probe = false;
                }
                _ => return Err(e),
            }
        }
    }
    let file = DataFile::open_read(&path).await?;
    let data = file.read(0, 512).await.map_err(|e| match e {
        StorageError::Io { source, .. } => StorageError::Io {
            op: "probe O_DIRECT reads (glommio poll-mode misdetection? see GLOMMIO.md)",
            source,
        },
        other => other,
    })?;
    if data.len() != 512 || (expect_probe && data.iter().any(|&b| b != 0x5a)) {
        return Err(StorageError::Io {
            op: "probe O_DIRECT reads",
            source: std::io::Error::other("probe file read back wrong bytes"),
        });
    }
    DISK_PRIMED.with(|p| p.set(true));
    Ok(())
}

/// The error that keeps a partition offline: recovery found damage it must not repair by
/// deleting data (see the module docs). Logged here, with the segment and what to do.
fn offline(dir: &Path, segment: &str, why: String) -> StorageError {
    tracing::error!(
        dir = %dir.display(),
        segment,
        "partition offline: segment {segment} is damaged ({why}); nothing was deleted or \
         truncated. Restore the file, or move the damaged segment and every later one out of \
         the directory to keep the log up to it, then restart"
    );
    StorageError::Io {
        op: "recover partition log (partition offline)",
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("segment {segment} in {} is damaged: {why}", dir.display()),
        ),
    }
}

/// [`offline`] for a segment whose whole batches end at `valid_len` of `expected_len` bytes.
fn damaged(dir: &Path, segment: &str, valid_len: u64, expected_len: u64) -> StorageError {
    offline(
        dir,
        segment,
        format!("its whole batches end at byte {valid_len}, it should hold {expected_len} bytes"),
    )
}

/// One partition's log. Owned by exactly one shard (see the module docs).
pub struct PartitionLog {
    shared: Rc<Shared>,
}

/// What recovery learned about one segment.
struct ScanOutcome {
    valid_len: u64,
    next_offset: i64,
    first_max_timestamp: Option<i64>,
    tail_block: Vec<u8>,
    log_max: (i64, i64),
}

/// CRC-scan `file` from `start` (where the batch `expected` must begin), indexing each good
/// batch into `seg`; stops at the first bad, torn or discontinuous batch or at the end.
/// `allow_gaps`: offsets may jump forward between batches (a sealed segment the cleaner
/// rewrote); the active segment must be contiguous.
async fn scan_segment(
    file: &DataFile,
    seg: &mut Segment,
    start: u64,
    expected: i64,
    file_len: u64,
    interval: u64,
    allow_gaps: bool,
) -> Result<ScanOutcome, StorageError> {
    let mut pos = start;
    let mut expected = expected;
    let mut first_max_timestamp = None;
    let mut log_max = (-1i64, -1i64);
    let mut buf = Bytes::new();
    let mut buf_pos = pos;
    'scan: loop {
        // Make sure the header of the batch at `pos` is buffered.
        let mut off = (pos - buf_pos) as usize;
        if off + batch::LOG_OVERHEAD > buf.len() {
            if pos + batch::LOG_OVERHEAD as u64 > file_len {
                break;
            }
            let want = SCAN_READ_BYTES.min((file_len - pos) as usize);
            buf = file.read(pos, want).await?;
            buf_pos = pos;
            off = 0;
            if buf.len() < batch::LOG_OVERHEAD {
                break;
            }
        }
        let total = match batch::framed_len(&buf[off..]) {
            Some(Ok(t)) if t <= SCAN_BATCH_BYTES_MAX => t,
            _ => break,
        };
        if pos + total as u64 > file_len {
            break;
        }
        if off + total > buf.len() {
            buf = file
                .read(
                    pos,
                    total.max(SCAN_READ_BYTES.min((file_len - pos) as usize)),
                )
                .await?;
            buf_pos = pos;
            off = 0;
            if buf.len() < total {
                break 'scan;
            }
        }
        let b = &buf[off..off + total];
        let Ok(h) = cleaner::validate_stored(b) else {
            break;
        };
        if h.base_offset() < expected || (!allow_gaps && h.base_offset() != expected) {
            break;
        }
        let last = h.last_offset();
        if last - seg.base_offset > i64::from(i32::MAX) {
            break;
        }
        let max_ts = h.max_timestamp();
        if first_max_timestamp.is_none() {
            first_max_timestamp = Some(max_ts);
        }
        if max_ts > log_max.0 {
            log_max = (max_ts, batch::offset_of_max_timestamp(b));
        }
        seg.index_batch(pos, total as u64, last, max_ts, interval);
        expected = last + 1;
        pos += total as u64;
    }
    // The durable bytes of the partial last block, for the next O_DIRECT rewrite.
    let block_start = align_down(pos);
    let tail_block = if pos > block_start {
        let t = file.read(block_start, (pos - block_start) as usize).await?;
        if t.len() as u64 != pos - block_start {
            return Err(StorageError::Io {
                op: "read segment tail block",
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
            });
        }
        t.to_vec()
    } else {
        Vec::new()
    };
    Ok(ScanOutcome {
        valid_len: pos,
        next_offset: expected,
        first_max_timestamp,
        tail_block,
        log_max,
    })
}

/// Load and check a segment's index files; `None` if missing or damaged.
async fn load_indexes(
    dir: &Path,
    base: i64,
    len: u64,
    rel_last: i64,
) -> Result<Option<(OffsetIndex, TimeIndex)>, StorageError> {
    let oi = io::read_small_file(
        &dir.join(segment_file_name(base, INDEX_EXT)),
        INDEX_FILE_BYTES_MAX,
    )
    .await?;
    let ti = io::read_small_file(
        &dir.join(segment_file_name(base, TIME_INDEX_EXT)),
        INDEX_FILE_BYTES_MAX,
    )
    .await?;
    let (Some(oi), Some(ti)) = (oi, ti) else {
        return Ok(None);
    };
    let Ok(oi) = OffsetIndex::decode(&oi, len, rel_last) else {
        return Ok(None);
    };
    let Ok(ti) = TimeIndex::decode(&ti, rel_last) else {
        return Ok(None);
    };
    Ok(Some((oi, ti)))
}

async fn write_indexes(
    dir: &Path,
    seg_base: i64,
    oi: Vec<u8>,
    ti: Vec<u8>,
) -> Result<(), StorageError> {
    io::write_file_atomic(&dir.join(segment_file_name(seg_base, INDEX_EXT)), oi).await?;
    io::write_file_atomic(&dir.join(segment_file_name(seg_base, TIME_INDEX_EXT)), ti).await
}

impl PartitionLog {
    /// Open or create the partition directory `dir` (e.g. `data/<topic>-<partition>/`); runs
    /// recovery (see the module docs).
    pub async fn open(
        dir: &Path,
        config: LogConfig,
        cache: Rc<TailCache>,
    ) -> Result<PartitionLog, StorageError> {
        io::create_dir_all(dir).await?;
        if !DISK_PRIMED.with(|p| p.get()) {
            prime_disk(dir.parent().unwrap_or(dir)).await?;
        }
        cleaner::finish_interrupted_swaps(dir).await?;
        let names = io::list_dir(dir).await?;
        let log_bases: std::collections::HashSet<i64> = names
            .iter()
            .filter_map(|n| file_names::parse_segment_file_name(n, LOG_EXT))
            .collect();
        // Temp files of interrupted atomic writes, and index files whose segment is gone (an
        // interrupted deletion), are garbage.
        let leftovers: Vec<String> = names
            .iter()
            .filter(|n| {
                file_names::is_tmp_file_name(n)
                    || file_names::parse_index_file_name(n).is_some_and(|b| !log_bases.contains(&b))
            })
            .cloned()
            .collect();
        if !leftovers.is_empty() {
            io::remove_files(dir, leftovers).await?;
        }
        let mut bases: Vec<i64> = names
            .iter()
            .filter_map(|n| file_names::parse_segment_file_name(n, LOG_EXT))
            .collect();
        bases.sort_unstable();
        let cp_data =
            io::read_small_file(&dir.join(checkpoint::FILE_NAME), checkpoint::FILE_BYTES_MAX)
                .await?;
        let cp = cp_data.as_deref().and_then(Checkpoint::decode);
        let interval = u64::from(config.index_interval_bytes);

        let mut segments: VecDeque<Segment> = VecDeque::new();
        let mut max_ts = (-1i64, -1i64);
        let mut changed = cp.is_none();
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let name = segment_file_name(base, LOG_EXT);
            let path = dir.join(&name);
            let is_last = i + 1 == bases.len();
            // Does this segment continue the previous one? A gap (a segment file deleted by
            // hand) is served as Kafka does: reads skip to the next batch. An overlap means
            // offsets would be served twice.
            if let Some(prev) = segments.back() {
                if prev.next_offset > base {
                    return Err(offline(
                        dir,
                        &name,
                        format!(
                            "it starts at offset {base} but the segment before it ends at {}",
                            prev.next_offset
                        ),
                    ));
                }
                if prev.next_offset < base {
                    tracing::warn!(
                        dir = %dir.display(),
                        missing_from = prev.next_offset,
                        missing_to = base,
                        "offsets missing between two segments (a segment file was removed?); \
                         reads skip to the next segment"
                    );
                }
            }
            let trusted = match cp {
                Some(c) => base < c.recovery_segment && !is_last,
                None => false,
            };
            let file = DataFile::open_rw(&path).await?;
            let file_len = file.size().await?;
            let mut seg = Segment::new(base, -1);
            if trusted {
                // Sealed and durable before the checkpoint was written: not rescanned. Only
                // its tail (from its last index entry) is read to check that the file still
                // ends where its last batch does.
                let next_base = bases[i + 1];
                seg.len = file_len;
                match load_indexes(dir, base, file_len, next_base - 1 - base).await? {
                    Some((oi, ti)) => {
                        seg.offset_index = oi;
                        seg.time_index = ti;
                        if let Some((t, o)) = seg.time_index.last() {
                            seg.max_timestamp = t;
                            seg.max_timestamp_offset = base + i64::from(o);
                        }
                        seg.sealed = true;
                        let from = seg
                            .offset_index
                            .entries
                            .last()
                            .map_or(0, |e| u64::from(e.1));
                        let mut scratch = Segment::new(base, -1);
                        let out =
                            scan_segment(&file, &mut scratch, from, base, file_len, interval, true)
                                .await?;
                        if out.valid_len != file_len {
                            return Err(damaged(dir, &name, out.valid_len, file_len));
                        }
                        seg.next_offset = out.next_offset;
                        // It becomes the active segment again if the one after it is an
                        // empty leftover of a roll: its next write rewrites this block.
                        seg.tail_block = out.tail_block;
                    }
                    None => {
                        tracing::warn!(dir = %dir.display(), base, "rebuilding missing or damaged index");
                        let out = scan_segment(&file, &mut seg, 0, base, file_len, interval, true)
                            .await?;
                        if out.valid_len != file_len {
                            return Err(damaged(dir, &name, out.valid_len, file_len));
                        }
                        seg.next_offset = out.next_offset;
                        seg.tail_block = out.tail_block;
                        seg.finish_time_index();
                    }
                }
            } else {
                let (start, expected) = match cp {
                    Some(c) if c.recovery_segment == base => {
                        if c.recovery_position > file_len {
                            // Bytes the checkpoint says were durable are gone.
                            return Err(damaged(dir, &name, file_len, c.recovery_position));
                        }
                        (c.recovery_position, c.recovery_offset)
                    }
                    _ => (0, base),
                };
                let mut seg_start = start;
                if start > 0 {
                    match load_indexes(dir, base, start, expected - 1 - base).await? {
                        Some((mut oi, mut ti)) => {
                            oi.truncate_to_position(start);
                            ti.truncate_to_offset(expected - base);
                            seg.offset_index = oi;
                            seg.time_index = ti;
                            if let Some((t, o)) = seg.time_index.last() {
                                seg.max_timestamp = t;
                                seg.max_timestamp_offset = base + i64::from(o);
                            }
                            let last_indexed = seg
                                .offset_index
                                .entries
                                .last()
                                .map_or(0, |e| u64::from(e.1));
                            seg.bytes_since_index = start - last_indexed;
                        }
                        None => seg_start = 0,
                    }
                }
                let expected = if seg_start == 0 { base } else { expected };
                let out = scan_segment(
                    &file, &mut seg, seg_start, expected, file_len, interval, !is_last,
                )
                .await?;
                if out.valid_len < start {
                    // The checkpoint promised durable batches up to `start`.
                    return Err(damaged(dir, &name, out.valid_len, start));
                }
                if out.valid_len != file_len && !is_last {
                    // A sealed segment is truncated to its last batch before the next one is
                    // created: anything else here is damage, not a torn write.
                    return Err(damaged(dir, &name, out.valid_len, file_len));
                }
                seg.len = out.valid_len;
                seg.next_offset = out.next_offset;
                seg.tail_block = out.tail_block;
                if let Some(t) = out.first_max_timestamp {
                    seg.roll_time_ms = t;
                }
                if out.log_max.0 > max_ts.0 {
                    max_ts = out.log_max;
                }
                if out.valid_len != file_len {
                    // The last segment only: a torn tail, zero padding of the last block or
                    // preallocated space. Cut it.
                    file.truncate(out.valid_len).await?;
                    file.sync().await?;
                    changed = true;
                }
                seg.finish_time_index();
            }
            seg.durable_len = seg.len;
            seg.written_len = seg.len;
            seg.written_tail_block = seg.tail_block.clone();
            seg.durable_next_offset = seg.next_offset;
            seg.preallocated_len = seg.len;
            if seg.max_timestamp > max_ts.0 {
                max_ts = (seg.max_timestamp, seg.max_timestamp_offset);
            }
            seg.file = Some(file);
            if seg.len == 0 && !is_last {
                // Sealed segments are never empty (the cleaner keeps their last batch).
                return Err(offline(dir, &name, "it is empty".to_string()));
            }
            if seg.len == 0 && !segments.is_empty() {
                // A freshly rolled segment that never received data: the previous segment
                // becomes the active one again, unless offsets are missing before this one
                // (then it stays, so that no offset below its base is ever given out again).
                if segments.back().is_some_and(|p| p.next_offset == base) {
                    drop(seg);
                    let mut names = Vec::new();
                    for ext in SEGMENT_EXTS {
                        names.push(segment_file_name(base, ext));
                    }
                    io::remove_files(dir, names).await?;
                    changed = true;
                    break;
                }
            }
            segments.push_back(seg);
            i += 1;
        }
        if let Some(c) = cp {
            // The recovery point is durable data: a log that ends below it lost its last
            // segment(s), and the offsets in between must not be given out again.
            let found_end = segments
                .back()
                .map_or(c.log_start_offset, |s| s.next_offset);
            if found_end < c.recovery_offset {
                return Err(offline(
                    dir,
                    &segment_file_name(c.recovery_segment, LOG_EXT),
                    format!(
                        "the log ends at offset {found_end}, below its recovery point {}: the \
                         last segment(s) are missing",
                        c.recovery_offset
                    ),
                ));
            }
        }
        let start_hint = cp.map_or(0, |c| c.log_start_offset);
        if segments.is_empty() {
            let base = start_hint.max(0);
            let path = dir.join(segment_file_name(base, LOG_EXT));
            let file = DataFile::open_rw(&path).await?;
            file.truncate(0).await?;
            io::sync_dir(dir).await?;
            let mut seg = Segment::new(base, -1);
            seg.file = Some(file);
            segments.push_back(seg);
            changed = true;
        }
        // The last segment is the active one: writable, durable, not sealed.
        let active_idx = segments.len() - 1;
        {
            let active = &mut segments[active_idx];
            active.sealed = false;
            if let Some(f) = &active.file {
                f.sync().await?;
            }
        }
        // Seal earlier segments recovery had to scan (a roll was interrupted).
        for seg in segments.iter_mut().take(active_idx) {
            if !seg.sealed {
                if let Some(f) = &seg.file {
                    f.truncate(seg.len).await?;
                    f.sync().await?;
                }
                write_indexes(
                    dir,
                    seg.base_offset,
                    seg.offset_index.encode(),
                    seg.time_index.encode(),
                )
                .await?;
                seg.sealed = true;
                changed = true;
            }
        }
        let first_base = segments.front().map_or(0, |s| s.base_offset);
        let log_end = segments.back().map_or(0, |s| s.next_offset);
        let log_start = start_hint.clamp(first_base, log_end);
        let active_base = segments[active_idx].base_offset;
        let checkpoint = Checkpoint {
            recovery_segment: active_base,
            recovery_position: 0,
            recovery_offset: active_base,
            log_start_offset: log_start,
            // Still true only while the log reaches that far (recovery may have cut it).
            producers_empty_at: cp
                .map(|c| c.producers_empty_at)
                .filter(|at| *at <= log_end)
                .unwrap_or(-1),
        };
        let checkpoint = match cp {
            // Keep a checkpoint that still describes the active segment's trusted prefix.
            Some(c)
                if !changed
                    && c.recovery_segment == active_base
                    && c.log_start_offset == log_start =>
            {
                c
            }
            _ => {
                io::write_file_atomic(&dir.join(checkpoint::FILE_NAME), checkpoint.encode())
                    .await?;
                checkpoint
            }
        };
        let cache_id = cache.register();
        let log = PartitionLog {
            shared: Rc::new(Shared {
                dir: dir.to_path_buf(),
                cache,
                cache_id,
                inner: RefCell::new(Inner {
                    config,
                    life: Life::Open,
                    log_start_offset: log_start,
                    log_end_offset: log_end,
                    high_watermark: log_end,
                    segments,
                    pending: VecDeque::new(),
                    pending_bytes: 0,
                    flushing: false,
                    change_waiters: Vec::new(),
                    max_timestamp: max_ts,
                    checkpoint,
                    meta_locked: false,
                    flush_count: 0,
                    producers: ProducerStateTable::new(),
                    roll_snapshot: None,
                    txn_index: TxnIndexes::default(),
                    modified: false,
                }),
            }),
        };
        // Segments wholly below the log start are garbage from an interrupted deletion.
        log.delete_segments_below_start().await?;
        log.rebuild_producer_state().await?;
        Ok(log)
    }

    /// `records` = one partition's record set from a Produce request: one or more magic-v2
    /// batches back to back. Validates every batch, assigns offsets by rewriting `baseOffset`
    /// in place, stamps LogAppendTime (fixing the CRC) when configured, appends, and resolves
    /// once the data is fdatasync'd (group commit). Either all batches are appended or none.
    pub async fn append(&self, records: Bytes, now_ms: i64) -> Result<AppendInfo, StorageError> {
        self.append_from(records, now_ms, true, None).await
    }

    /// [`PartitionLog::append`] of a transactional batch verified with the coordinator while
    /// the producer's marker count was `guard.1` ([`PartitionLog::marker_count`]): refused
    /// with [`StorageError::TransactionNotVerified`] if a marker arrived since.
    pub async fn append_verified(
        &self,
        records: Bytes,
        now_ms: i64,
        guard: (i64, u32),
    ) -> Result<AppendInfo, StorageError> {
        self.append_from(records, now_ms, true, Some(guard)).await
    }

    /// Markers applied so far for `producer_id` (the verification guard).
    pub fn marker_count(&self, producer_id: i64) -> u32 {
        self.shared
            .inner
            .borrow()
            .producers
            .marker_count(producer_id)
    }

    /// Append a transaction marker (a control batch) for `producer_id` at `epoch`, as the
    /// transaction coordinator does. Ends the producer's open transaction on this partition;
    /// an aborted one enters the aborted-transaction index. A marker older than the
    /// producer's epoch is refused (INVALID_PRODUCER_EPOCH).
    pub async fn append_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let marker =
            batch::encode_control_batch(producer_id, epoch, commit, coordinator_epoch, now_ms)
                .map_err(StorageError::InvalidRecord)?;
        self.append_from(marker, now_ms, false, None).await
    }

    /// The last stable offset: the first offset of the oldest open transaction, or the high
    /// watermark. read_committed fetches stop there.
    pub fn last_stable_offset(&self) -> i64 {
        let inner = self.shared.inner.borrow();
        inner
            .producers
            .first_unstable_offset()
            .map_or(inner.high_watermark, |o| o.min(inner.high_watermark))
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

    /// Every producer of this partition with its state (DescribeProducers).
    pub fn producers(&self) -> Vec<(i64, super::producer_state::ProducerEntry)> {
        let inner = self.shared.inner.borrow();
        inner
            .producers
            .iter()
            .map(|(id, e)| (*id, e.clone()))
            .collect()
    }

    async fn append_from(
        &self,
        records: Bytes,
        now_ms: i64,
        from_client: bool,
        guard: Option<(i64, u32)>,
    ) -> Result<AppendInfo, StorageError> {
        let shared = &*self.shared;
        let (max_message_bytes, ts_type, rules) = {
            let inner = shared.inner.borrow();
            if inner.life != Life::Open {
                return Err(StorageError::Closed);
            }
            (
                inner.config.max_message_bytes,
                inner.config.message_timestamp_type,
                super::records::RecordRules {
                    require_keys: inner.config.cleanup_compact,
                },
            )
        };
        // Walks every record (compressed batches as a bounded stream); no await before it, so
        // one decompression at a time per shard.
        let infos = batch::validate_records(&records, max_message_bytes, rules)?;
        let facts: Vec<BatchFacts> = infos
            .iter()
            .filter_map(|b| batch::header(&records[b.pos..]).map(BatchFacts::of))
            .collect();
        let markers: Vec<Option<bool>> = infos
            .iter()
            .map(|b| batch::control_type(&records[b.pos..b.pos + b.len]))
            .collect();
        if from_client && facts.iter().any(|f| f.control) {
            return Err(StorageError::InvalidRecord(
                "clients are not allowed to write control records".into(),
            ));
        }
        if facts.len() > 1 && facts.iter().any(BatchFacts::has_producer) {
            return Err(StorageError::InvalidRecord(
                "an idempotent or transactional record set must be exactly one batch".into(),
            ));
        }
        let set_len = records.len();
        // Backpressure: bounded unflushed bytes per log.
        loop {
            {
                let inner = shared.inner.borrow();
                if inner.life != Life::Open {
                    return Err(StorageError::Closed);
                }
                if inner.pending_bytes == 0 || inner.pending_bytes + set_len <= PENDING_BYTES_MAX {
                    break;
                }
            }
            wait_change(shared).await;
        }
        let mut buf = BytesMut::from(&records[..]);
        drop(records);
        // Producer checks run here, with no await before offsets are assigned below, so
        // appends on this partition are judged in offset order.
        if let Some((producer_id, markers)) = guard {
            if shared.inner.borrow().producers.marker_count(producer_id) != markers {
                return Err(StorageError::TransactionNotVerified(format!(
                    "a marker for producer {producer_id} arrived during verification"
                )));
            }
        }
        if let Some(f) = facts.first().filter(|f| f.has_producer()) {
            let check = shared.inner.borrow().producers.check(f);
            if let Check::Duplicate {
                first_offset,
                last_offset,
            } = check.map_err(producer_error)?
            {
                tracing::debug!(dir = %shared.dir.display(), producer_id = f.producer_id, first_offset, "duplicate batch");
                return self.await_duplicate(first_offset, last_offset).await;
            }
        }
        let slot: SlotRef = Rc::new(RefCell::new(Slot::default()));
        let (info, spawn_flusher) = {
            let mut inner = shared.inner.borrow_mut();
            let inner = &mut *inner;
            let offsets: i64 = infos.iter().map(|b| b.offset_count).sum();
            let leo = inner.log_end_offset;
            // Roll?
            let roll = {
                let active = inner
                    .segments
                    .back()
                    .expect("a log always has an active segment");
                let seg_bytes = inner.config.segment_bytes.min(i32::MAX as u64);
                active.len > 0
                    && (active.len + set_len as u64 > seg_bytes
                        || (active.roll_time_ms >= 0
                            && now_ms.saturating_sub(active.roll_time_ms)
                                >= inner.config.segment_ms)
                        || leo + offsets - active.base_offset > i64::from(i32::MAX))
            };
            if roll {
                inner.segments.push_back(Segment::new(leo, now_ms));
                inner.roll_snapshot = Some((leo, inner.producers.encode()));
            }
            let log_append_time = match ts_type {
                TimestampType::LogAppendTime => now_ms,
                TimestampType::CreateTime => -1,
            };
            let seg = inner.segments.back_mut().expect("active segment");
            if seg.roll_time_ms < 0 {
                // First append to this segment (or since a restart that found no timestamp).
                seg.roll_time_ms = now_ms;
            }
            let mut next = leo;
            let mut pending_batches = Vec::with_capacity(infos.len());
            for b in &infos {
                let slice = &mut buf[b.pos..b.pos + b.len];
                batch::set_base_offset(slice, next);
                batch::set_partition_leader_epoch(slice, LEADER_EPOCH);
                if ts_type == TimestampType::LogAppendTime {
                    batch::set_log_append_time(slice, now_ms);
                }
                let max_ts = if ts_type == TimestampType::LogAppendTime {
                    now_ms
                } else {
                    b.max_timestamp
                };
                pending_batches.push(PendingBatch {
                    pos_in_segment: seg.len + b.pos as u64,
                    base_offset: next,
                    len: b.len as u64,
                    last_offset: next + b.offset_count - 1,
                    max_timestamp: max_ts,
                    data_start: b.pos,
                });
                next += b.offset_count;
            }
            for ((f, pb), marker) in facts.iter().zip(&pending_batches).zip(&markers) {
                let done = inner
                    .producers
                    .apply(f, pb.base_offset, pb.max_timestamp, *marker);
                if let Some(d) = done.filter(|d| d.aborted) {
                    let lso = inner.producers.first_unstable_offset();
                    inner.txn_index.add(seg.base_offset, aborted_entry(d, lso));
                }
            }
            let data = buf.freeze();
            for pb in &pending_batches {
                shared.cache.insert(
                    shared.cache_id,
                    pb.base_offset,
                    pb.last_offset,
                    data.slice(pb.data_start..pb.data_start + pb.len as usize),
                );
            }
            seg.len += set_len as u64;
            seg.next_offset = next;
            let segment_base = seg.base_offset;
            inner.pending.push_back(Pending {
                segment_base,
                data,
                batches: pending_batches,
                end_offset: next,
                slot: slot.clone(),
            });
            inner.pending_bytes += set_len;
            inner.log_end_offset = next;
            let spawn = !inner.flushing;
            inner.flushing = true;
            (
                AppendInfo {
                    base_offset: leo,
                    last_offset: next - 1,
                    log_append_time_ms: log_append_time,
                    log_start_offset: inner.log_start_offset,
                },
                spawn,
            )
        };
        if spawn_flusher {
            let shared = self.shared.clone();
            crate::rt::spawn_local(flush_loop(shared)).detach();
        }
        match (WaitSlot { slot }).await {
            Ok(()) => {
                let log_start = shared.inner.borrow().log_start_offset;
                Ok(AppendInfo {
                    log_start_offset: log_start,
                    ..info
                })
            }
            Err(f) => Err(f.to_error()),
        }
    }

    /// The first offset of the log.
    pub fn log_start_offset(&self) -> i64 {
        self.shared.inner.borrow().log_start_offset
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.shared.inner.borrow().log_end_offset
    }

    /// End of the durable (fdatasync'd) prefix; reads never pass it.
    pub fn high_watermark(&self) -> i64 {
        self.shared.inner.borrow().high_watermark
    }

    /// Whole batches starting with the batch containing `offset`, up to `max_bytes` total; if
    /// `min_one_batch` the first batch is returned even if larger (Kafka's rule). Never past
    /// the high watermark. Offset outside `[log_start, high_watermark]` -> `OffsetOutOfRange`
    /// (offset == high watermark -> empty). Cached tail: `Bytes` clones; disk: one copy.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadData, StorageError> {
        self.read_upto(offset, max_bytes, min_one_batch, i64::MAX)
            .await
    }

    /// [`PartitionLog::read`], returning only batches that start below `end` (the last stable
    /// offset for read_committed fetches).
    pub async fn read_upto(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        end: i64,
    ) -> Result<ReadData, StorageError> {
        let shared = &*self.shared;
        let (file, start_pos, end_pos, hw, log_start, limit) = {
            let inner = shared.inner.borrow();
            if inner.life == Life::Closed {
                return Err(StorageError::Closed);
            }
            let hw = inner.high_watermark;
            let log_start = inner.log_start_offset;
            if offset < log_start || offset > hw {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start,
                    high_watermark: hw,
                });
            }
            let empty = ReadData {
                batches: Vec::new(),
                high_watermark: hw,
                log_start_offset: log_start,
            };
            let limit = hw.min(end);
            if offset >= limit {
                return Ok(empty);
            }
            if let Some(batches) =
                shared
                    .cache
                    .read(shared.cache_id, offset, limit, max_bytes, min_one_batch)
            {
                return Ok(ReadData { batches, ..empty });
            }
            let Some(mut si) = inner.segment_for(offset) else {
                return Ok(empty);
            };
            // Offsets missing between two segments (a removed segment file): answer with the
            // next segment's batches, as Kafka does.
            while inner.segments[si].durable_next_offset <= offset && si + 1 < inner.segments.len()
            {
                si += 1;
            }
            let seg = &inner.segments[si];
            let Some(file) = seg.file.clone() else {
                return Ok(empty);
            };
            let pos = if offset <= seg.base_offset {
                0
            } else {
                seg.offset_index.lookup(seg.rel(offset))
            };
            (file, u64::from(pos), seg.durable_len, hw, log_start, limit)
        };
        let interval = shared.inner.borrow().config.index_interval_bytes as usize;
        let batches = read_from_disk(
            &file,
            start_pos,
            end_pos,
            offset,
            limit,
            max_bytes,
            min_one_batch,
            interval,
        )
        .await?;
        Ok(ReadData {
            batches,
            high_watermark: hw,
            log_start_offset: log_start,
        })
    }

    /// Kafka ListOffsets by timestamp: the earliest offset whose record timestamp is `>= ts`,
    /// with that timestamp; `None` if there is none. Uses the time index, then looks inside
    /// the batch.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let mut offset = {
            let inner = self.shared.inner.borrow();
            if inner.life == Life::Closed {
                return Err(StorageError::Closed);
            }
            let Some(seg) = inner.segments.iter().find(|s| s.max_timestamp >= ts) else {
                return Ok(None);
            };
            let start = match seg.time_index.last_before(ts) {
                Some(rel) => seg.base_offset + i64::from(rel) + 1,
                None => seg.base_offset,
            };
            start.max(inner.log_start_offset)
        };
        let floor = offset;
        loop {
            let data = match self.read(offset, 1 << 20, true).await {
                Ok(d) => d,
                Err(StorageError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Some(last) = data.batches.last() else {
                return Ok(None);
            };
            for b in &data.batches {
                let Some(h) = batch::header(b) else {
                    return Err(StorageError::CorruptMessage("short batch in log".into()));
                };
                if h.max_timestamp() < ts || h.last_offset() < floor {
                    continue;
                }
                if let Some(found) = find_in_batch(b, ts, floor)? {
                    return Ok(Some(found));
                }
            }
            let Some(h) = batch::header(last) else {
                return Err(StorageError::CorruptMessage("short batch in log".into()));
            };
            offset = h.last_offset() + 1;
        }
    }

    /// (max timestamp, its offset) over durable data for ListOffsets MAX_TIMESTAMP; (-1, -1)
    /// if empty.
    pub fn max_timestamp(&self) -> (i64, i64) {
        self.shared.inner.borrow().max_timestamp
    }

    /// Delete whole segments past `retention.ms` / `retention.bytes` (never the active one),
    /// and segments wholly below the log start; moves the log start. Returns how many
    /// segments were deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<u64, StorageError> {
        let shared = &*self.shared;
        let _guard = lock_meta(shared).await;
        let new_start = {
            let inner = shared.inner.borrow();
            if inner.life != Life::Open {
                return Err(StorageError::Closed);
            }
            let cfg = &inner.config;
            let mut size: u64 = inner.segments.iter().map(|s| s.len).sum();
            let mut new_start = inner.log_start_offset;
            let n = inner.segments.len();
            for i in 0..n.saturating_sub(1) {
                let seg = &inner.segments[i];
                let next_base = inner.segments[i + 1].base_offset;
                if !seg.sealed {
                    break;
                }
                let below_start = next_base <= inner.log_start_offset;
                let by_time = cfg.cleanup_delete
                    && cfg.retention_ms >= 0
                    && seg.max_timestamp >= 0
                    && now_ms.saturating_sub(seg.max_timestamp) > cfg.retention_ms;
                let by_size = cfg.cleanup_delete
                    && cfg.retention_bytes >= 0
                    && size - seg.len >= cfg.retention_bytes as u64;
                if !(below_start || by_time || by_size) {
                    break;
                }
                size -= seg.len;
                new_start = new_start.max(next_base);
            }
            new_start
        };
        self.set_log_start_locked(new_start).await?;
        self.delete_segments_below_start_locked().await
    }

    /// DeleteRecords: move the log start offset to `offset` (`<=` high watermark; -1 means
    /// the high watermark), durably; returns the new log start.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        let shared = &*self.shared;
        let _guard = lock_meta(shared).await;
        let target = {
            let inner = shared.inner.borrow();
            if inner.life != Life::Open {
                return Err(StorageError::Closed);
            }
            let hw = inner.high_watermark;
            let target = if offset == -1 { hw } else { offset };
            if target < 0 || target > hw {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start: inner.log_start_offset,
                    high_watermark: hw,
                });
            }
            target
        };
        self.set_log_start_locked(target).await?;
        self.delete_segments_below_start_locked().await?;
        Ok(self.log_start_offset())
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

    /// Flush everything, write indexes and the recovery checkpoint, close files (clean
    /// shutdown). Appends after this fail with `Closed`; calling it again is a no-op.
    pub async fn close(&self) -> Result<(), StorageError> {
        let shared = &*self.shared;
        {
            let mut inner = shared.inner.borrow_mut();
            if inner.life != Life::Open {
                return Ok(());
            }
            inner.life = Life::Closing;
        }
        shared.wake();
        // Let the flusher drain what was accepted.
        loop {
            {
                let inner = shared.inner.borrow();
                if !inner.flushing && inner.pending.is_empty() {
                    break;
                }
            }
            wait_change(shared).await;
        }
        let result = self.close_files().await;
        shared.inner.borrow_mut().life = Life::Closed;
        shared.cache.unregister(shared.cache_id);
        shared.wake();
        result
    }

    async fn close_files(&self) -> Result<(), StorageError> {
        let shared = &*self.shared;
        let _guard = lock_meta(shared).await;
        if Self::unchanged_since_checkpoint(&shared.inner.borrow()) {
            // Nothing was written since the checkpoint on disk was: the files already say
            // what a full close would write (this makes shutting down idle partitions cheap).
            let mut inner = shared.inner.borrow_mut();
            for s in inner.segments.iter_mut() {
                s.file = None;
            }
            return Ok(());
        }
        let n = shared.inner.borrow().segments.len();
        for i in 0..n {
            let (file, len, oi, ti, base, sealed) = {
                let mut inner = shared.inner.borrow_mut();
                let seg = &mut inner.segments[i];
                seg.finish_time_index();
                (
                    seg.file.clone(),
                    seg.durable_len,
                    seg.offset_index.encode(),
                    seg.time_index.encode(),
                    seg.base_offset,
                    seg.sealed,
                )
            };
            if sealed {
                continue;
            }
            if let Some(f) = &file {
                f.truncate(len).await?;
                f.sync().await?;
            }
            write_indexes(&shared.dir, base, oi, ti).await?;
        }
        log_txn::persist_below(shared, i64::MAX).await?;
        let cp = {
            let mut inner = shared.inner.borrow_mut();
            let Some(active) = inner.segments.back() else {
                return Ok(());
            };
            // Everything accepted is durable now: the producer state covers exactly the log.
            // An empty one is recorded here rather than in a snapshot file (one write less per
            // partition at shutdown).
            let producers_empty_at = if inner.producers.is_empty() {
                active.durable_next_offset
            } else {
                -1
            };
            let cp = Checkpoint {
                recovery_segment: active.base_offset,
                recovery_position: active.durable_len,
                recovery_offset: active.durable_next_offset,
                log_start_offset: inner.log_start_offset,
                producers_empty_at,
            };
            inner.checkpoint = cp;
            for s in inner.segments.iter_mut() {
                s.file = None;
            }
            cp
        };
        io::write_file_atomic(&shared.dir.join(checkpoint::FILE_NAME), cp.encode()).await?;
        if cp.producers_empty_at >= 0 {
            return Ok(());
        }
        let state = shared.inner.borrow().producers.encode();
        producer_snapshot::write(&shared.dir, cp.recovery_offset, state).await
    }

    /// Whether the checkpoint on disk already describes the log exactly as a full close would
    /// leave it: no flush since open, the active segment's durable end is the recovery point,
    /// and the producer state is empty (recorded as such, or the log is empty).
    fn unchanged_since_checkpoint(inner: &Inner) -> bool {
        let Some(active) = inner.segments.back() else {
            return false;
        };
        let c = inner.checkpoint;
        !inner.modified
            && !active.sealed
            && c.recovery_segment == active.base_offset
            && c.recovery_position == active.durable_len
            && c.recovery_offset == active.durable_next_offset
            && c.log_start_offset == inner.log_start_offset
            && inner.producers.is_empty()
            && (c.producers_empty_at == active.durable_next_offset
                || inner.log_start_offset == inner.log_end_offset)
    }

    /// Answer a duplicate batch with its original offsets once they are durable.
    async fn await_duplicate(
        &self,
        first_offset: i64,
        last_offset: i64,
    ) -> Result<AppendInfo, StorageError> {
        let shared = &*self.shared;
        loop {
            {
                let inner = shared.inner.borrow();
                if inner.high_watermark > last_offset {
                    return Ok(AppendInfo {
                        base_offset: first_offset,
                        last_offset,
                        log_append_time_ms: -1,
                        log_start_offset: inner.log_start_offset,
                    });
                }
                if inner.life != Life::Open {
                    return Err(StorageError::Closed);
                }
                if inner.log_end_offset <= last_offset {
                    // The original failed to flush and was rolled back: the client retries.
                    return Err(StorageError::Io {
                        op: "append (duplicate of a failed write)",
                        source: std::io::Error::other("the original batch was not written"),
                    });
                }
            }
            wait_change(shared).await;
        }
    }

    /// Load the newest producer snapshot and replay the batches after it (module docs of
    /// [`producer_snapshot`]).
    async fn rebuild_producer_state(&self) -> Result<(), StorageError> {
        let (log_start, log_end, empty_at) = {
            let inner = self.shared.inner.borrow();
            (
                inner.log_start_offset,
                inner.high_watermark,
                inner.checkpoint.producers_empty_at,
            )
        };
        let (mut snapshot_offset, mut table) =
            producer_snapshot::load(&self.shared.dir, log_end).await?;
        if empty_at > snapshot_offset && empty_at <= log_end {
            // A clean close recorded an empty state there, newer than any snapshot.
            snapshot_offset = empty_at;
            table = ProducerStateTable::new();
        }
        if !log_txn::load_on_open(&self.shared).await? {
            // A damaged transaction index: rebuild everything from the log start.
            snapshot_offset = 0;
            table = ProducerStateTable::new();
        }
        let mut offset = snapshot_offset.max(log_start);
        log_txn::reset_from(&self.shared, offset).await?;
        while offset < log_end {
            let data = self.read(offset, SCAN_READ_BYTES, true).await?;
            if data.batches.is_empty() {
                break;
            }
            for b in &data.batches {
                let Some(h) = batch::header(b) else { break };
                let next = h.last_offset() + 1;
                if next <= offset {
                    continue;
                }
                let f = BatchFacts::of(h);
                let marker = if f.control {
                    batch::control_type(b)
                } else {
                    None
                };
                let done = table.apply(&f, h.base_offset(), h.max_timestamp(), marker);
                if let Some(d) = done.filter(|d| d.aborted) {
                    let mut inner = self.shared.inner.borrow_mut();
                    let seg = inner.segment_for(d.last_offset).unwrap_or(0);
                    let base = inner.segments[seg].base_offset;
                    let entry = aborted_entry(d, table.first_unstable_offset());
                    inner.txn_index.add(base, entry);
                }
                offset = next;
            }
        }
        if !table.is_empty() {
            tracing::debug!(dir = %self.shared.dir.display(), producers = table.len(), snapshot_offset, "producer state rebuilt");
        }
        self.shared.inner.borrow_mut().producers = table;
        let active = self
            .shared
            .inner
            .borrow()
            .segments
            .back()
            .map(|s| s.base_offset);
        log_txn::persist_below(&self.shared, active.unwrap_or(0)).await
    }

    /// Close and remove the partition directory and all its files.
    pub async fn delete(self) -> Result<(), StorageError> {
        let closed = self.close().await;
        if let Err(e) = &closed {
            tracing::warn!(dir = %self.shared.dir.display(), error = %e, "close before delete failed");
        }
        io::remove_dir_all(&self.shared.dir).await
    }

    /// Durably move the log start offset forward to `offset` (caller holds the meta lock).
    async fn set_log_start_locked(&self, offset: i64) -> Result<(), StorageError> {
        let shared = &*self.shared;
        let cp = {
            let inner = shared.inner.borrow();
            if offset <= inner.log_start_offset {
                return Ok(());
            }
            Checkpoint {
                log_start_offset: offset,
                ..inner.checkpoint
            }
        };
        io::write_file_atomic(&shared.dir.join(checkpoint::FILE_NAME), cp.encode()).await?;
        let mut inner = shared.inner.borrow_mut();
        inner.checkpoint.log_start_offset = offset;
        inner.log_start_offset = inner.log_start_offset.max(offset);
        shared.cache.evict_below(shared.cache_id, offset);
        Ok(())
    }

    async fn delete_segments_below_start(&self) -> Result<u64, StorageError> {
        let _guard = lock_meta(&self.shared).await;
        self.delete_segments_below_start_locked().await
    }

    /// Remove sealed segments that lie wholly below the log start (caller holds the meta lock).
    async fn delete_segments_below_start_locked(&self) -> Result<u64, StorageError> {
        let shared = &*self.shared;
        let doomed: Vec<i64> = {
            let mut inner = shared.inner.borrow_mut();
            let mut doomed = Vec::new();
            while inner.segments.len() > 1
                && inner.segments[0].sealed
                && inner.segments[1].base_offset <= inner.log_start_offset
            {
                if let Some(s) = inner.segments.pop_front() {
                    inner.txn_index.forget(s.base_offset);
                    doomed.push(s.base_offset);
                }
            }
            if !doomed.is_empty() {
                inner.recompute_max_timestamp();
            }
            doomed
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut names = Vec::new();
        for b in &doomed {
            for ext in SEGMENT_EXTS {
                names.push(segment_file_name(*b, ext));
            }
        }
        io::remove_files(&shared.dir, names).await?;
        Ok(doomed.len() as u64)
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

/// The first record of `b` at or after offset `floor` whose timestamp is `>= ts`.
fn find_in_batch(b: &[u8], ts: i64, floor: i64) -> Result<Option<(i64, i64)>, StorageError> {
    let Some(h) = batch::header(b) else {
        return Ok(None);
    };
    if h.is_log_append_time() {
        return Ok(Some((h.base_offset().max(floor), h.max_timestamp())));
    }
    // Compressed or not, the records are walked as a bounded stream (`storage::records`).
    let mut found = None;
    super::records::for_each_record(b, h, |r| {
        let offset = h.base_offset().wrapping_add(r.offset_delta);
        let time = h.base_timestamp().wrapping_add(r.timestamp_delta);
        if found.is_none() && offset >= floor && time >= ts {
            found = Some((offset, time));
        }
    })?;
    Ok(found)
}

/// Read whole batches from `file` in `[start, end)`, beginning with the one holding `offset`.
#[allow(clippy::too_many_arguments)]
async fn read_from_disk(
    file: &DataFile,
    start: u64,
    end: u64,
    offset: i64,
    high_watermark: i64,
    max_bytes: usize,
    min_one_batch: bool,
    index_interval: usize,
) -> Result<Vec<Bytes>, StorageError> {
    let mut out: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut pos = start;
    // First read: enough to skip from the index entry to the batch and fill max_bytes.
    let mut want = max_bytes.min(READ_BYTES_MAX) + index_interval + 64 * 1024;
    while pos < end {
        let len = want.min((end - pos) as usize);
        let buf = file.read(pos, len).await?;
        if buf.is_empty() {
            break;
        }
        let mut p = 0usize;
        let mut need: Option<usize> = None;
        while p < buf.len() {
            let total_len = match batch::framed_len(&buf[p..]) {
                None => {
                    need = Some(batch::HEADER_LEN);
                    break;
                }
                Some(Ok(t)) => t,
                Some(Err(e)) => return Err(e.into()),
            };
            if p + total_len > buf.len() {
                need = Some(total_len);
                break;
            }
            let Some(h) = batch::header(&buf[p..]) else {
                need = Some(batch::HEADER_LEN);
                break;
            };
            if h.base_offset() >= high_watermark {
                return Ok(out);
            }
            if h.last_offset() < offset {
                p += total_len;
                continue;
            }
            if total + total_len > max_bytes && !(out.is_empty() && min_one_batch) {
                return Ok(out);
            }
            out.push(buf.slice(p..p + total_len));
            total += total_len;
            p += total_len;
            if total >= max_bytes {
                return Ok(out);
            }
        }
        pos += p as u64;
        match need {
            Some(n) => {
                if pos + n as u64 > end {
                    if n > batch::HEADER_LEN || pos < end {
                        return Err(StorageError::CorruptMessage(format!(
                            "batch at position {pos} runs past the durable end {end}"
                        )));
                    }
                    break;
                }
                if !out.is_empty() && total + n > max_bytes {
                    return Ok(out);
                }
                want = if out.is_empty() {
                    n.max(max_bytes.min(READ_BYTES_MAX))
                } else {
                    (max_bytes - total).max(n)
                };
            }
            None => {
                want = if out.is_empty() {
                    max_bytes.min(READ_BYTES_MAX) + 64 * 1024
                } else {
                    (max_bytes - total).max(batch::HEADER_LEN)
                };
            }
        }
    }
    Ok(out)
}

/// fdatasyncs in flight per log at most: round N+1 is written while round N syncs.
pub const SYNCS_IN_FLIGHT_MAX: usize = 2;

/// What one flush round does, planned under the borrow and run without it.
struct FlushPlan {
    segment_base: i64,
    path: PathBuf,
    file: Option<DataFile>,
    write_pos: u64,
    tail_block: Vec<u8>,
    chunks: Vec<Pending>,
    bytes: u64,
    /// `written_len` of the segment when planned: where this round's data starts.
    start_len: u64,
    preallocated_len: u64,
    preallocate_step: u64,
    seal: Option<SealPlan>,
}

struct SealPlan {
    base: i64,
    file: Option<DataFile>,
    len: u64,
    offset_index: Vec<u8>,
    time_index: Vec<u8>,
}

/// A round whose data is written and whose fdatasync is in flight.
struct Round {
    plan: FlushPlan,
    new_tail_block: Vec<u8>,
    sync: crate::rt::JoinHandle<Result<(), StorageError>>,
}

/// The per-log flusher: runs while there is pending data (see the module docs). Rounds are
/// pipelined: while round N's fdatasync is in flight, round N+1 is written (up to
/// [`SYNCS_IN_FLIGHT_MAX`] syncs); rounds complete in order. A round that needs a new segment
/// (seal + create) waits until nothing is in flight.
async fn flush_loop(shared: Rc<Shared>) {
    let mut inflight: VecDeque<Round> = VecDeque::new();
    loop {
        let plan = {
            let mut inner = shared.inner.borrow_mut();
            match inner.pending.front() {
                None if inflight.is_empty() => {
                    inner.flushing = false;
                    drop(inner);
                    shared.wake();
                    return;
                }
                None => None,
                Some(front) => {
                    let same_segment = inflight
                        .back()
                        .is_none_or(|r| r.plan.segment_base == front.segment_base);
                    if inflight.len() < SYNCS_IN_FLIGHT_MAX && same_segment {
                        Some(plan_flush(&shared.dir, &mut inner))
                    } else {
                        None
                    }
                }
            }
        };
        match plan {
            Some(plan) => match run_write(&shared, &plan).await {
                Ok((file, preallocated_len, new_tail_block)) => {
                    record_written(&shared, &plan, &file, preallocated_len, &new_tail_block);
                    let sync_file = file.clone();
                    let sync = crate::rt::spawn_local(async move {
                        let started = std::time::Instant::now();
                        let synced = sync_file.sync().await;
                        crate::metrics::record_fsync(started.elapsed(), synced.is_ok());
                        synced
                    })
                    .detach();
                    inflight.push_back(Round {
                        plan,
                        new_tail_block,
                        sync,
                    });
                }
                Err(e) => {
                    // Earlier rounds may still become durable; settle them first, in order.
                    let mut failed = vec![plan];
                    let mut err = Some(e);
                    while let Some(r) = inflight.pop_front() {
                        settle(&shared, r, &mut failed, &mut err).await;
                    }
                    fail_rounds(&shared, failed, err);
                }
            },
            None => {
                if let Some(r) = inflight.pop_front() {
                    let mut failed = Vec::new();
                    let mut err = None;
                    settle(&shared, r, &mut failed, &mut err).await;
                    if err.is_some() {
                        while let Some(r) = inflight.pop_front() {
                            settle(&shared, r, &mut failed, &mut err).await;
                        }
                        fail_rounds(&shared, failed, err);
                    }
                }
            }
        }
        shared.wake();
    }
}

/// Await a round's fdatasync; on success (and no earlier failure) make it durable, else add it
/// to `failed`.
async fn settle(
    shared: &Shared,
    r: Round,
    failed: &mut Vec<FlushPlan>,
    err: &mut Option<StorageError>,
) {
    let synced = match r.sync.await {
        Some(res) => res,
        None => Err(StorageError::Io {
            op: "fdatasync segment",
            source: std::io::Error::other("fdatasync task cancelled"),
        }),
    };
    let result = match synced {
        Ok(()) if r.plan.file.is_none() && r.plan.segment_base > 0 => {
            // A new segment is durable: the sealed ones below need no scan on recovery.
            let _guard = lock_meta(shared).await;
            let cp = {
                let inner = shared.inner.borrow();
                Checkpoint {
                    recovery_segment: r.plan.segment_base,
                    recovery_position: 0,
                    recovery_offset: r.plan.segment_base,
                    log_start_offset: inner.log_start_offset,
                    producers_empty_at: inner.checkpoint.producers_empty_at,
                }
            };
            let res =
                io::write_file_atomic(&shared.dir.join(checkpoint::FILE_NAME), cp.encode()).await;
            if res.is_ok() {
                shared.inner.borrow_mut().checkpoint = cp;
                write_roll_snapshot(shared, r.plan.segment_base).await;
            }
            res
        }
        other => other,
    };
    match (result, err.is_some()) {
        (Ok(()), false) => make_durable(shared, r.plan, r.new_tail_block),
        (Ok(()), true) => failed.push(r.plan),
        (Err(e), _) => {
            failed.push(r.plan);
            err.get_or_insert(e);
        }
    }
}

fn plan_flush(dir: &Path, inner: &mut Inner) -> FlushPlan {
    inner.modified = true;
    let segment_base = inner
        .pending
        .front()
        .map(|p| p.segment_base)
        .expect("pending data");
    let mut chunks = Vec::new();
    let mut bytes = 0u64;
    while let Some(p) = inner.pending.front() {
        if p.segment_base != segment_base
            || (bytes > 0
                && bytes + p.data.len() as u64 > super::io_sizes::get().flush_bytes_max as u64)
        {
            break;
        }
        bytes += p.data.len() as u64;
        if let Some(p) = inner.pending.pop_front() {
            chunks.push(p);
        }
    }
    let si = inner
        .segment_index(segment_base)
        .expect("pending data has a segment");
    let seal = if si > 0 && inner.segments[si].file.is_none() {
        let prev = &mut inner.segments[si - 1];
        if prev.sealed {
            None
        } else {
            assert_eq!(
                prev.len, prev.durable_len,
                "sealing a segment with pending data"
            );
            prev.finish_time_index();
            Some(SealPlan {
                base: prev.base_offset,
                file: prev.file.clone(),
                len: prev.durable_len,
                offset_index: prev.offset_index.encode(),
                time_index: prev.time_index.encode(),
            })
        }
    } else {
        None
    };
    let seg = &inner.segments[si];
    assert!(seg.durable_len <= seg.written_len && seg.written_len + bytes <= seg.len);
    FlushPlan {
        segment_base,
        path: dir.join(segment_file_name(segment_base, LOG_EXT)),
        file: seg.file.clone(),
        write_pos: align_down(seg.written_len),
        tail_block: seg.written_tail_block.clone(),
        chunks,
        bytes,
        start_len: seg.written_len,
        preallocated_len: seg.preallocated_len,
        preallocate_step: super::io_sizes::get()
            .preallocate_step_bytes
            .min(inner.config.segment_bytes.max(DIRECT_IO_ALIGN)),
        seal,
    }
}

/// The I/O of a round before its fdatasync: seal the previous segment and create the file if
/// the round starts a segment, preallocate, write. Returns the file, its preallocated size and
/// the new partial tail block.
async fn run_write(
    shared: &Shared,
    plan: &FlushPlan,
) -> Result<(DataFile, u64, Vec<u8>), StorageError> {
    if let Some(seal) = &plan.seal {
        let _guard = lock_meta(shared).await;
        if let Some(f) = &seal.file {
            f.truncate(seal.len).await?;
            f.sync().await?;
        }
        write_indexes(
            &shared.dir,
            seal.base,
            seal.offset_index.clone(),
            seal.time_index.clone(),
        )
        .await?;
        let mut inner = shared.inner.borrow_mut();
        if let Some(i) = inner.segment_index(seal.base) {
            inner.segments[i].sealed = true;
        }
    }
    let mut preallocated_len = plan.preallocated_len;
    let file = match &plan.file {
        Some(f) => f.clone(),
        None => {
            let _guard = lock_meta(shared).await;
            let f = DataFile::open_rw(&plan.path).await?;
            // A leftover of a failed earlier attempt must not be mistaken for data.
            f.truncate(0).await?;
            preallocated_len = 0;
            io::sync_dir(&shared.dir).await?;
            f
        }
    };
    let new_len = plan.start_len + plan.bytes;
    if new_len > preallocated_len {
        // Grow geometrically from a small first step: an idle partition (of 10,000 on a node)
        // must not hold tens of MiB of disk, while a busy one soon preallocates full steps.
        let step = preallocated_len
            .max(PREALLOCATE_FIRST_BYTES)
            .min(plan.preallocate_step);
        let target = (preallocated_len + step).max(io::align_up(new_len));
        preallocated_len = preallocate_what_fits(&file, preallocated_len, target, new_len).await?;
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(plan.chunks.len() + 1);
    parts.push(&plan.tail_block);
    for c in &plan.chunks {
        parts.push(&c.data);
    }
    let write_bytes_max = super::io_sizes::get().write_bytes_max;
    file.write_padded(plan.write_pos, &parts, write_bytes_max)
        .await?;
    let tail_len = (new_len - align_down(new_len)) as usize;
    Ok((file, preallocated_len, last_bytes(&parts, tail_len)))
}

/// Preallocate `file` (now preallocated to `current`) to `target`; on a (nearly) full disk,
/// to just the `needed` bytes this round writes, and if even that does not fit, not at all (the
/// write then grows the file on demand, or fails with ENOSPC and the next round retries).
/// Returns the new preallocated size. So writes resume as soon as some space is free, not only
/// once a whole preallocation step is.
async fn preallocate_what_fits(
    file: &DataFile,
    current: u64,
    target: u64,
    needed: u64,
) -> Result<u64, StorageError> {
    let minimal = io::align_up(needed);
    for size in [target, minimal] {
        match file.preallocate(size).await {
            Ok(()) => return Ok(size),
            Err(e) if io::is_disk_full(&e) && size > minimal => continue,
            Err(e) if io::is_disk_full(&e) => {
                tracing::debug!(error = %e, "no space to preallocate; growing the file on demand");
                return Ok(current);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(current)
}

/// The last `n` bytes of the concatenation of `parts`.
fn last_bytes(parts: &[&[u8]], n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut need = n;
    for p in parts.iter().rev() {
        if need == 0 {
            break;
        }
        let take = need.min(p.len());
        out.splice(0..0, p[p.len() - take..].iter().copied());
        need -= take;
    }
    out
}

/// A round's data is written (its fdatasync not yet done): the next round starts after it.
fn record_written(
    shared: &Shared,
    plan: &FlushPlan,
    file: &DataFile,
    preallocated_len: u64,
    tail: &[u8],
) {
    let mut inner = shared.inner.borrow_mut();
    let si = inner
        .segment_index(plan.segment_base)
        .expect("written segment exists");
    let seg = &mut inner.segments[si];
    assert_eq!(
        seg.written_len, plan.start_len,
        "rounds are written in order"
    );
    seg.written_len = plan.start_len + plan.bytes;
    seg.written_tail_block = tail.to_vec();
    seg.file = Some(file.clone());
    seg.preallocated_len = preallocated_len;
}

/// A round's fdatasync succeeded: index its batches, advance the high watermark, ack.
fn make_durable(shared: &Shared, plan: FlushPlan, new_tail_block: Vec<u8>) {
    let mut inner = shared.inner.borrow_mut();
    let inner = &mut *inner;
    let interval = u64::from(inner.config.index_interval_bytes);
    let si = inner
        .segment_index(plan.segment_base)
        .expect("flushed segment exists");
    let seg = &mut inner.segments[si];
    assert_eq!(
        seg.durable_len, plan.start_len,
        "rounds become durable in order"
    );
    let new_len = plan.start_len + plan.bytes;
    seg.tail_block = new_tail_block;
    seg.durable_len = new_len;
    assert!(seg.durable_len <= seg.written_len && seg.written_len <= seg.len);
    let mut log_max = inner.max_timestamp;
    let mut hw = inner.high_watermark;
    let mut expect_pos = plan.start_len;
    for c in &plan.chunks {
        for b in &c.batches {
            assert_eq!(b.pos_in_segment, expect_pos, "batches are flushed in order");
            expect_pos += b.len;
            seg.index_batch(
                b.pos_in_segment,
                b.len,
                b.last_offset,
                b.max_timestamp,
                interval,
            );
            if b.max_timestamp > log_max.0 {
                let bytes = &c.data[b.data_start..b.data_start + b.len as usize];
                log_max = (b.max_timestamp, batch::offset_of_max_timestamp(bytes));
            }
        }
        seg.durable_next_offset = c.end_offset;
        hw = c.end_offset;
    }
    assert!(hw >= inner.high_watermark && hw <= inner.log_end_offset);
    inner.high_watermark = hw;
    inner.max_timestamp = log_max;
    inner.pending_bytes -= plan.bytes as usize;
    inner.flush_count += 1;
    for c in &plan.chunks {
        complete(&c.slot, Ok(()));
    }
}

/// Rounds failed: fail them and everything pending, and roll the log back to the high
/// watermark (see the module docs).
fn fail_rounds(shared: &Shared, rounds: Vec<FlushPlan>, err: Option<StorageError>) {
    let e = err.unwrap_or(StorageError::Io {
        op: "flush",
        source: std::io::Error::other("an earlier flush round failed"),
    });
    tracing::error!(dir = %shared.dir.display(), error = %e, "flush failed; rolling back to the high watermark");
    let failure = Failure::from_error(&e);
    let mut inner = shared.inner.borrow_mut();
    let inner = &mut *inner;
    let hw = inner.high_watermark;
    let mut failed: Vec<Pending> = rounds.into_iter().flat_map(|r| r.chunks).collect();
    failed.extend(inner.pending.drain(..));
    inner.pending_bytes = 0;
    inner.log_end_offset = hw;
    let mut orphans = Vec::new();
    while inner.segments.len() > 1 && inner.segments.back().is_some_and(|s| s.base_offset > hw) {
        if let Some(s) = inner.segments.pop_back() {
            inner.txn_index.forget(s.base_offset);
            for ext in SEGMENT_EXTS {
                orphans.push(segment_file_name(s.base_offset, ext));
            }
        }
    }
    if !orphans.is_empty() {
        // Best effort: a leftover would be ignored by recovery anyway (it does not continue
        // the log), unless offsets happened to line up again.
        let dir = shared.dir.clone();
        crate::rt::spawn_local(async move {
            if let Err(e) = io::remove_files(&dir, orphans).await {
                tracing::warn!(error = %e, "removing orphan segment failed");
            }
        })
        .detach();
    }
    for s in inner.segments.iter_mut() {
        s.len = s.durable_len;
        s.written_len = s.durable_len;
        s.written_tail_block = s.tail_block.clone();
        s.next_offset = s.durable_next_offset;
    }
    shared.cache.truncate_from(shared.cache_id, hw);
    inner.producers.truncate_from(hw);
    inner.txn_index.truncate_from(hw);
    for c in &failed {
        complete(&c.slot, Err(failure.clone()));
    }
}

/// The index entry of an aborted transaction; `first_unstable` is the first offset of the
/// oldest transaction still open after it (the LSO then, else the marker's offset + 1).
fn aborted_entry(
    d: super::producer_state::CompletedTxn,
    first_unstable: Option<i64>,
) -> AbortedTxn {
    AbortedTxn {
        producer_id: d.producer_id,
        first_offset: d.first_offset,
        last_offset: d.last_offset,
        last_stable_offset: first_unstable.unwrap_or(d.last_offset + 1),
    }
}

/// The storage error for a producer-state refusal.
fn producer_error(e: ProducerError) -> StorageError {
    match e {
        ProducerError::InvalidEpoch(m) => StorageError::InvalidProducerEpoch(m),
        ProducerError::OutOfOrder(m) => StorageError::OutOfOrderSequence(m),
        ProducerError::Invalid(m) => StorageError::InvalidRecord(m),
    }
}

/// Write the producer snapshot captured at the roll to `segment_base`, now durable. Best
/// effort: without it recovery replays from an older snapshot.
async fn write_roll_snapshot(shared: &Shared, segment_base: i64) {
    let data = {
        let mut inner = shared.inner.borrow_mut();
        match inner.roll_snapshot.take() {
            Some((base, data)) if base == segment_base => data,
            other => {
                inner.roll_snapshot = other;
                return;
            }
        }
    };
    // The snapshot must not hide index entries that are only in memory.
    if let Err(e) = log_txn::persist_below(shared, segment_base).await {
        tracing::warn!(dir = %shared.dir.display(), error = %e, "writing the transaction index failed");
        return;
    }
    if let Err(e) = producer_snapshot::write(&shared.dir, segment_base, data).await {
        tracing::warn!(dir = %shared.dir.display(), error = %e, "writing the producer snapshot failed");
    }
}
