//! The flusher: group commit of a log's pending appends.
//!
//! One flusher task per log (spawned by an append when pending data appears, exits when there
//! is none) loops: take everything pending for one segment, write it with O_DIRECT starting at
//! the aligned block that holds the durable end (the partial tail block is kept in memory and
//! rewritten, zero padded, as it grows), several 1 MiB writes in flight, then one `fdatasync`,
//! then advance the high watermark and complete every slot it covered. Appends that arrive
//! meanwhile gather for the next round, so one `fdatasync` covers many appends. Rounds are
//! pipelined: while round N's `fdatasync` runs, round N+1 is already written (at most
//! [`SYNCS_IN_FLIGHT_MAX`] syncs in flight); rounds complete strictly in order, so the high
//! watermark only moves forward over durable bytes. Rewriting the tail block of round N while
//! its sync runs is safe: the rewrite carries the same bytes for round N's part. A round that
//! starts a new segment (seal + create, see `segment`) waits until nothing is in flight; once
//! the new segment is durable the recovery checkpoint moves to it and the producer snapshot
//! captured at the roll is written.
//!
//! Right before a round is written, `check::round_before_write` asserts that its batches are
//! the ones the appends queued, in order (see `check`).
//!
//! If a write or sync fails (ENOSPC, EIO...), every pending append fails with
//! [`StorageError::Io`], the log end offset falls back to the high watermark, cached batches
//! above it are dropped, and the next append rewrites from the durable end. Indexes only ever
//! receive entries for durable batches, so nothing half-written is ever indexed or served.
//!
//! Completion: each append waits on its own [`Slot`]; the flusher completes it with `Ok` once
//! its bytes are durable or with the round's [`Failure`].

use super::segment::{self, SealPlan};
use super::{check, lock_meta, Inner, Pending, Shared, SYNCS_IN_FLIGHT_MAX};
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::file_names::{segment_file_name, LOG_EXT, SEGMENT_EXTS};
use crate::storage::io::{self, align_down, DataFile, DIRECT_IO_ALIGN};
use crate::storage::{io_sizes, producer_snapshot, StorageError};
use freshet_protocol::batch;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A cloneable description of an I/O failure, given to every append of a failed flush.
#[derive(Clone, Debug)]
pub(super) struct Failure {
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

    pub(super) fn to_error(&self) -> StorageError {
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
pub(super) struct Slot {
    result: Option<Result<(), Failure>>,
    waker: Option<Waker>,
    /// When the append's round was written and made durable (issue 16's produce stages).
    pub(super) written_at: Option<std::time::Instant>,
    pub(super) durable_at: Option<std::time::Instant>,
}

pub(super) type SlotRef = Rc<RefCell<Slot>>;

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

/// Future of an append's completion slot.
pub(super) struct WaitSlot {
    pub(super) slot: SlotRef,
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
pub(super) async fn flush_loop(shared: Rc<Shared>) {
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
                    let dir = shared.dir.clone();
                    let sync = crate::rt::spawn_local(async move {
                        let started = std::time::Instant::now();
                        let synced = sync_file.sync().await;
                        let elapsed = started.elapsed();
                        if crate::metrics::record_fsync(elapsed, synced.is_ok()) {
                            log_slow_fsync(&dir, elapsed);
                        }
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
                    fail_after_settling(&shared, &mut inflight, vec![plan], Some(e)).await;
                }
            },
            None => {
                if let Some(r) = inflight.pop_front() {
                    let mut failed = Vec::new();
                    let mut err = None;
                    settle(&shared, r, &mut failed, &mut err).await;
                    if err.is_some() {
                        fail_after_settling(&shared, &mut inflight, failed, err).await;
                    }
                }
            }
        }
        shared.wake();
    }
}

/// At most one slow-fdatasync log line per shard per this interval.
const SLOW_FSYNC_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

thread_local! {
    /// When this shard last logged a slow fdatasync, and how many it has not logged since.
    static SLOW_FSYNC_LOG: std::cell::Cell<(Option<std::time::Instant>, u64)> =
        const { std::cell::Cell::new((None, 0)) };
}

/// Logs a slow fdatasync of the log in `dir` (counted by `metrics::record_fsync`), at most one
/// line per [`SLOW_FSYNC_LOG_INTERVAL`]: a saturated disk makes every sync slow.
fn log_slow_fsync(dir: &Path, elapsed: std::time::Duration) {
    let (last, not_logged) = SLOW_FSYNC_LOG.get();
    if last.is_some_and(|t| t.elapsed() < SLOW_FSYNC_LOG_INTERVAL) {
        SLOW_FSYNC_LOG.set((last, not_logged + 1));
        return;
    }
    tracing::warn!(dir = %dir.display(), elapsed_ms = elapsed.as_millis() as u64, slow_fsyncs_not_logged = not_logged, "slow fdatasync: the disk is saturated or failing; produces to this shard's partitions wait for it");
    SLOW_FSYNC_LOG.set((Some(std::time::Instant::now()), 0));
}

/// A round failed: settle the rounds still in flight (in order: earlier ones may still become
/// durable, later ones fail too), then fail every failed round and all pending data.
async fn fail_after_settling(
    shared: &Shared,
    inflight: &mut VecDeque<Round>,
    mut failed: Vec<FlushPlan>,
    mut err: Option<StorageError>,
) {
    while let Some(r) = inflight.pop_front() {
        settle(shared, r, &mut failed, &mut err).await;
    }
    fail_rounds(shared, failed, err);
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
                    high_watermark: inner.visible_high_watermark(),
                }
            };
            // The leader-epoch file first: the checkpoint makes the sealed segments trusted,
            // and recovery no longer rescans them for their epochs.
            let res = match super::epochs::persist(shared).await {
                Ok(()) => {
                    io::write_file_atomic(&shared.dir.join(checkpoint::FILE_NAME), cp.encode())
                        .await
                }
                Err(e) => Err(e),
            };
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
            || (bytes > 0 && bytes + p.data.len() as u64 > io_sizes::get().flush_bytes_max as u64)
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
        preallocate_step: io_sizes::get()
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
        segment::seal(shared, seal).await?;
    }
    let (file, mut preallocated_len) = match &plan.file {
        Some(f) => (f.clone(), plan.preallocated_len),
        None => (segment::create_file(shared, &plan.path).await?, 0),
    };
    let new_len = plan.start_len + plan.bytes;
    if new_len > preallocated_len {
        preallocated_len =
            segment::grow_preallocation(&file, preallocated_len, plan.preallocate_step, new_len)
                .await?;
    }
    {
        let inner = shared.inner.borrow();
        check::round_before_write(
            &plan.chunks,
            plan.start_len,
            inner.high_watermark,
            inner.log_end_offset,
        );
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(plan.chunks.len() + 1);
    parts.push(&plan.tail_block);
    for c in &plan.chunks {
        parts.push(&c.data);
    }
    let write_bytes_max = io_sizes::get().write_bytes_max;
    file.write_padded(plan.write_pos, &parts, write_bytes_max)
        .await?;
    let tail_len = (new_len - align_down(new_len)) as usize;
    Ok((file, preallocated_len, last_bytes(&parts, tail_len)))
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
    let now = std::time::Instant::now();
    for c in &plan.chunks {
        c.slot.borrow_mut().written_at = Some(now);
    }
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
    let now = std::time::Instant::now();
    for c in &plan.chunks {
        c.slot.borrow_mut().durable_at = Some(now);
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
    if inner.epochs.truncate_from_end(hw) {
        inner.epochs_dirty = true;
    }
    for c in &failed {
        complete(&c.slot, Err(failure.clone()));
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
    if let Err(e) = super::txn::persist_below(shared, segment_base).await {
        tracing::warn!(dir = %shared.dir.display(), error = %e, "writing the transaction index failed");
        return;
    }
    if let Err(e) = producer_snapshot::write(&shared.dir, segment_base, data).await {
        tracing::warn!(dir = %shared.dir.display(), error = %e, "writing the producer snapshot failed");
    }
}
