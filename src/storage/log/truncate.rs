//! [`PartitionLog::truncate_to`]: cut the log's tail, as Kafka's `UnifiedLog.truncateTo` does
//! for a follower whose log diverged from its leader's (found through the leader-epoch cache).
//!
//! The cut is at a batch boundary: every batch whose last offset is at or above the target is
//! dropped whole, so the new log end is the target or, when a batch straddles the target, that
//! batch's base offset. Everything that describes the dropped batches goes with them: whole
//! segments after the cut (their `.log`, indexes and `.txnindex`), the tail of the segment
//! holding the cut (which becomes the active one again), the tail cache, the leader-epoch
//! cache, the producer state and the aborted-transaction index (both rebuilt exactly as open
//! rebuilds them: from the newest producer snapshot at or below the new end, replaying the
//! batches after it), and the high watermark (never above the new end).
//!
//! Crash safety, step by step: appends are held back and the flusher drained first; then the
//! recovery checkpoint is moved to the start of the segment holding the cut (so a restart
//! trusts only segments that stay and CRC-scans the rest); then the in-memory log is cut
//! (readers never look past the new end, so files shrinking under them cannot surprise them);
//! then the doomed segments are removed newest first (a crash leaves a contiguous log); then
//! the cut segment is truncated and fdatasync'd; then the leader-epoch file is written. A
//! crash at any point recovers to a prefix of the old log that holds at least the truncated
//! one (the old log, the truncated one, or, for a crash among the removals, the segments not
//! yet removed), never to a log with a hole, and its epoch cache and producer state are those
//! of the batches it holds (the simulated-disk test crashes at every disk operation);
//! `truncate_to` resolves only once the truncated state is durable. An I/O error
//! midway is returned as it is: the files then hold more than the log in memory, which a
//! reopen (recovery) reconciles; the partition should be reopened before it is written again.
//!
//! The caller decides whether a truncation is allowed (a leader must never truncate below its
//! high watermark; a follower does when its leader says its log diverged).

use super::recover::{read_tail_block, Scanner};
use super::{epochs, lock_meta, wait_change, Checkpoint, Life, PartitionLog, Segment, Shared};
use crate::storage::file_names::{segment_file_name, LOG_EXT, SEGMENT_EXTS};
use crate::storage::io::{self, DataFile};
use crate::storage::producer_state::ProducerStateTable;
use crate::storage::txn_index::TxnIndexes;
use crate::storage::{checkpoint, StorageError};
use bytes::Bytes;

/// Clears the truncation flag (and wakes held-back appends) however `truncate_to` ends.
struct TruncatingGuard<'a> {
    shared: &'a Shared,
}

impl Drop for TruncatingGuard<'_> {
    fn drop(&mut self) {
        self.shared.inner.borrow_mut().truncating = false;
        self.shared.wake();
    }
}

/// Waits for the truncation flag (one truncation at a time; appends wait from then on, see
/// `wait_for_room`), then for what was accepted before to be durable (the cut must see only
/// durable data).
async fn hold_for_truncation(shared: &Shared) -> Result<TruncatingGuard<'_>, StorageError> {
    loop {
        {
            let mut inner = shared.inner.borrow_mut();
            if inner.life != Life::Open {
                return Err(StorageError::Closed);
            }
            if !inner.truncating {
                inner.truncating = true;
                break;
            }
        }
        wait_change(shared).await;
    }
    let guard = TruncatingGuard { shared };
    loop {
        {
            let inner = shared.inner.borrow();
            if inner.life != Life::Open {
                return Err(StorageError::Closed);
            }
            if !inner.flushing && inner.pending.is_empty() {
                break;
            }
        }
        wait_change(shared).await;
    }
    Ok(guard)
}

impl PartitionLog {
    /// Kafka's `UnifiedLog.truncateFullyAndStartAt`: drop the whole log and start it again,
    /// empty, at `offset` (log start = log end = high watermark = `offset`; no epochs, no
    /// producer state, no aborted transactions). For a follower whose log ends below its
    /// leader's log start (the leader's retention, DeleteRecords or cleaner removed what the
    /// follower would fetch next). Resolves once durable.
    ///
    /// Crash safety: a checkpoint that trusts no segment is written first (recovery then scans
    /// whatever is left, and the old log start stays valid for an empty directory); then the
    /// producer snapshots and the epoch file go, then the segments newest first (a crash leaves
    /// a contiguous prefix of the old log); then the new empty segment at `offset` is created
    /// and the checkpoint naming it written. A crash at any point reopens either a prefix of
    /// the old log (the follower finds itself out of range again and repeats this) or the
    /// empty log at `offset`.
    pub async fn truncate_fully_and_start_at(
        &self,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        assert!(offset >= 0, "a log starts at a non-negative offset");
        let shared = &*self.shared;
        let _truncating = hold_for_truncation(shared).await?;
        let _meta = lock_meta(shared).await;
        let (bases, trust_nothing) = {
            let inner = shared.inner.borrow();
            let bases: Vec<i64> = inner.segments.iter().map(|s| s.base_offset).collect();
            let first = bases.first().copied().unwrap_or(inner.log_start_offset);
            let cp = Checkpoint {
                recovery_segment: first,
                recovery_position: 0,
                recovery_offset: first.min(inner.log_start_offset),
                log_start_offset: inner.log_start_offset,
                producers_empty_at: -1,
                high_watermark: -1,
            };
            (bases, cp)
        };
        io::write_file_atomic(
            &shared.dir.join(checkpoint::FILE_NAME),
            trust_nothing.encode(),
        )
        .await?;
        shared.inner.borrow_mut().checkpoint = trust_nothing;
        let mut others: Vec<String> = io::list_dir(&shared.dir)
            .await?
            .into_iter()
            .filter(|n| crate::storage::producer_snapshot::parse_name(n).is_some())
            .collect();
        others.push(crate::storage::leader_epoch::FILE_NAME.to_string());
        io::remove_files(&shared.dir, others).await?;
        for base in bases.iter().rev() {
            let names = SEGMENT_EXTS
                .iter()
                .map(|ext| segment_file_name(*base, ext))
                .collect();
            io::remove_files(&shared.dir, names).await?;
        }
        let path = shared.dir.join(segment_file_name(offset, LOG_EXT));
        let file = DataFile::open_rw(&path).await?;
        file.truncate(0).await?;
        file.sync().await?;
        io::sync_dir(&shared.dir).await?;
        let cp = Checkpoint {
            recovery_segment: offset,
            recovery_position: 0,
            recovery_offset: offset,
            log_start_offset: offset,
            producers_empty_at: -1,
            high_watermark: -1,
        };
        io::write_file_atomic(&shared.dir.join(checkpoint::FILE_NAME), cp.encode()).await?;
        {
            let mut inner = shared.inner.borrow_mut();
            let inner = &mut *inner;
            inner.segments.clear();
            let mut seg = Segment::new(offset, now_ms);
            seg.file = Some(file);
            inner.segments.push_back(seg);
            inner.log_start_offset = offset;
            inner.log_end_offset = offset;
            inner.high_watermark = offset;
            inner.replicated_hw = inner.replicated_hw.map(|_| offset);
            inner.max_timestamp = (-1, -1);
            inner.checkpoint = cp;
            inner.producers = ProducerStateTable::new();
            inner.roll_snapshot = None;
            inner.txn_index = TxnIndexes::default();
            inner.epochs.clear();
            inner.epochs_dirty = false;
            inner.epochs_soft = false;
            inner.modified = true;
        }
        shared.cache.truncate_from(shared.cache_id, i64::MIN);
        shared.wake();
        tracing::info!(dir = %shared.dir.display(), offset, "log truncated fully; it starts again at the offset");
        Ok(())
    }
}

/// Where the cut falls in the segment holding it.
struct Cut {
    /// Index of that segment.
    segment: usize,
    /// Byte position of the first dropped batch (the segment's new length).
    position: u64,
    /// The new log end offset.
    end_offset: i64,
    /// Largest timestamp (and the last offset of its batch) among the kept batches walked.
    walked_max: (i64, i64),
}

impl PartitionLog {
    /// Drop every batch at or above `offset` (see the module docs); returns the new log end
    /// offset. When `offset` is at or past the log end no batch goes, but epochs the cache
    /// starts at the log end go (Kafka's `UnifiedLog.truncateTo`: a broker that led an epoch
    /// and was deposed before appending in it keeps that epoch's start entry, which its new
    /// leader does not have; left there, the follower names it as its last fetched epoch and
    /// is answered the same divergence forever). `offset` below the log start is refused with
    /// [`StorageError::OffsetOutOfRange`]. Resolves once durable.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, StorageError> {
        let shared = &*self.shared;
        let _truncating = hold_for_truncation(shared).await?;
        let _meta = lock_meta(shared).await;
        let end = {
            let mut inner = shared.inner.borrow_mut();
            if offset < inner.log_start_offset {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start: inner.log_start_offset,
                    high_watermark: inner.high_watermark,
                });
            }
            if offset >= inner.log_end_offset {
                let end = inner.log_end_offset;
                if inner.epochs.truncate_from_end(end) {
                    inner.epochs_dirty = true;
                }
                Some(end)
            } else {
                None
            }
        };
        if let Some(end) = end {
            epochs::persist(shared).await?;
            return Ok(end);
        }
        let cut = find_cut(shared, offset).await?;
        self.apply_cut(&cut).await?;
        let end = cut.end_offset;
        tracing::info!(dir = %shared.dir.display(), offset, end, "log truncated");
        Ok(end)
    }

    /// The I/O and state changes of a truncation at `cut`, in the order of the module docs.
    async fn apply_cut(&self, cut: &Cut) -> Result<(), StorageError> {
        let shared = &*self.shared;
        let (file, doomed, cp) = {
            let inner = shared.inner.borrow();
            let seg = &inner.segments[cut.segment];
            let doomed: Vec<i64> = inner
                .segments
                .iter()
                .skip(cut.segment + 1)
                .map(|s| s.base_offset)
                .collect();
            let cp = Checkpoint {
                recovery_segment: seg.base_offset,
                recovery_position: 0,
                recovery_offset: seg.base_offset,
                log_start_offset: inner.log_start_offset,
                producers_empty_at: Some(inner.checkpoint.producers_empty_at)
                    .filter(|at| *at <= cut.end_offset)
                    .unwrap_or(-1),
                high_watermark: inner.checkpoint.high_watermark.min(cut.end_offset),
            };
            (seg.file.clone(), doomed, cp)
        };
        io::write_file_atomic(&shared.dir.join(checkpoint::FILE_NAME), cp.encode()).await?;
        shared.inner.borrow_mut().checkpoint = cp;
        let tail_block = match &file {
            Some(f) => read_tail_block(f, cut.position).await?,
            None => Vec::new(),
        };
        // Readers see the truncated log from here on, before its files shrink under them.
        self.cut_state(cut, doomed.len(), tail_block);
        // Newest first, one segment at a time: a crash leaves a contiguous log.
        for base in doomed.iter().rev() {
            let names = SEGMENT_EXTS
                .iter()
                .map(|ext| segment_file_name(*base, ext))
                .collect();
            io::remove_files(&shared.dir, names).await?;
        }
        if let Some(f) = &file {
            f.truncate(cut.position).await?;
            f.sync().await?;
        }
        epochs::persist(shared).await?;
        // Producer state and the aborted-transaction index, exactly as open rebuilds them.
        shared.inner.borrow_mut().txn_index = TxnIndexes::default();
        self.rebuild_producer_state().await
    }

    /// The in-memory side of the cut (no await: readers see the old log or the new one).
    fn cut_state(&self, cut: &Cut, doomed: usize, tail_block: Vec<u8>) {
        let shared = &*self.shared;
        let mut inner = shared.inner.borrow_mut();
        let inner = &mut *inner;
        for _ in 0..doomed {
            if let Some(s) = inner.segments.pop_back() {
                inner.txn_index.forget(s.base_offset);
            }
        }
        let seg = inner.segments.back_mut().expect("the cut segment stays");
        let rel_end = cut.end_offset - seg.base_offset;
        seg.offset_index.truncate_to_position(cut.position);
        seg.time_index.truncate_to_offset(rel_end);
        (seg.max_timestamp, seg.max_timestamp_offset) = match seg.time_index.last() {
            Some((t, o)) => (t, seg.base_offset + i64::from(o)),
            None => (-1, -1),
        };
        if cut.walked_max.0 > seg.max_timestamp {
            (seg.max_timestamp, seg.max_timestamp_offset) = cut.walked_max;
        }
        let last_indexed = seg
            .offset_index
            .entries
            .last()
            .map_or(0, |e| u64::from(e.1));
        seg.bytes_since_index = cut.position - last_indexed;
        seg.len = cut.position;
        seg.durable_len = cut.position;
        seg.written_len = cut.position;
        seg.preallocated_len = cut.position;
        seg.tail_block = tail_block.clone();
        seg.written_tail_block = tail_block;
        seg.next_offset = cut.end_offset;
        seg.durable_next_offset = cut.end_offset;
        seg.sealed = false;
        inner.log_end_offset = cut.end_offset;
        inner.high_watermark = inner.high_watermark.min(cut.end_offset);
        inner.recompute_max_timestamp();
        inner.modified = true;
        if inner
            .roll_snapshot
            .as_ref()
            .is_some_and(|(base, _)| *base > cut.end_offset)
        {
            inner.roll_snapshot = None;
        }
        shared.cache.truncate_from(shared.cache_id, cut.end_offset);
        if inner.epochs.truncate_from_end(cut.end_offset) {
            inner.epochs_dirty = true;
        }
        inner.producers.truncate_from(cut.end_offset);
        inner.txn_index.truncate_from(cut.end_offset);
    }
}

/// Find the first batch whose last offset is at or above `offset` in the segment holding
/// `offset`, walking the durable batches from the offset index entry below it. The new end is
/// where the last kept batch ends (the segment's base if none is kept), which is also what
/// recovery would find there, gaps left by compaction included.
async fn find_cut(shared: &Shared, offset: i64) -> Result<Cut, StorageError> {
    let (segment, file, base, start, durable_len) = {
        let inner = shared.inner.borrow();
        let si = inner.segment_for(offset).expect("offset >= log start");
        let seg = &inner.segments[si];
        // `offset` may lie past this segment's offsets (a gap before the next one).
        let rel = u32::try_from(offset - seg.base_offset).unwrap_or(u32::MAX);
        let start = seg
            .offset_index
            .entry_at_or_before(rel)
            .map_or(0, |(_, pos)| u64::from(pos));
        (
            si,
            seg.file.clone(),
            seg.base_offset,
            start,
            seg.durable_len,
        )
    };
    let mut cut = Cut {
        segment,
        position: 0,
        end_offset: base,
        walked_max: (-1, -1),
    };
    let Some(file) = file else {
        // A segment without a file holds nothing.
        return Ok(cut);
    };
    if !walk_to_cut(&file, (start, None), durable_len, offset, &mut cut).await? {
        // The cut is the batch at the index entry: where the batch before it ends is known
        // only from the segment's start.
        cut.walked_max = (-1, -1);
        walk_to_cut(&file, (0, Some(base)), durable_len, offset, &mut cut).await?;
    }
    Ok(cut)
}

/// The walk of [`find_cut`] from byte `start.0`, where the previous batch ends at offset
/// `start.1` (if known): stops at the first batch ending at or above `offset` (the cut), or
/// at the end of the durable bytes (nothing of this segment is cut). Returns false if the
/// first batch is the cut and `start.1` is unknown.
async fn walk_to_cut(
    file: &DataFile,
    start: (u64, Option<i64>),
    durable_len: u64,
    offset: i64,
    cut: &mut Cut,
) -> Result<bool, StorageError> {
    let (mut pos, mut prev_end) = start;
    let mut scanner = Scanner {
        file,
        file_len: durable_len,
        buf: Bytes::new(),
        buf_pos: pos,
    };
    while pos < durable_len {
        let Some(b) = scanner.batch_at(pos).await? else {
            break;
        };
        let Some(h) = freshet_protocol::batch::header(&b) else {
            break;
        };
        if h.last_offset() >= offset {
            let Some(end) = prev_end else {
                return Ok(false);
            };
            cut.position = pos;
            cut.end_offset = end;
            return Ok(true);
        }
        if h.max_timestamp() > cut.walked_max.0 {
            cut.walked_max = (h.max_timestamp(), h.last_offset());
        }
        prev_end = Some(h.last_offset() + 1);
        pos += b.len() as u64;
    }
    match prev_end {
        Some(end) if pos == durable_len => {
            cut.position = durable_len;
            cut.end_offset = end;
            Ok(true)
        }
        // Durable bytes that are not whole batches: damage, not something to cut around.
        _ => Err(StorageError::CorruptMessage(format!(
            "truncation found no whole batch at byte {pos} of a segment of {durable_len} bytes"
        ))),
    }
}
