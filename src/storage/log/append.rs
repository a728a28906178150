//! Appends: validation, offset assignment, producer checks and backpressure.
//!
//! `append` validates every batch of the record set ([`batch::validate_records`]), copies
//! the set once into a new buffer, rewrites each `baseOffset` (and the leader epoch, and the
//! LogAppendTime with a CRC fix when the topic asks), assigns offsets at once, queues the
//! buffer as *pending*, caches its batches in the tail cache, and waits for its own completion
//! slot, which the flusher completes once the bytes are durable (see `flush`). Pending bytes
//! are bounded by [`PENDING_BYTES_MAX`]: appends beyond it wait. Right after its offsets are
//! assigned, each batch is checked against them (`check::batch_before_append`).
//!
//! Appended batches get `partitionLeaderEpoch` = the partition's leader epoch
//! ([`PartitionLog::set_leader_epoch`], from the metadata); the first batch of a new epoch
//! enters the leader-epoch cache (see `epochs`) where its offset is assigned. While a
//! truncation runs (`truncate`), appends wait before their offsets are assigned.
//!
//! Idempotence: a record set with a producer id must be one batch; it is judged by the log's
//! [`ProducerStateTable`](crate::storage::producer_state::ProducerStateTable) right before
//! offsets are assigned, with no await in between, so appends are judged in offset order. A
//! duplicate writes nothing and is answered with the original offsets once they are durable.
//! A failed flush forgets producer state above the high watermark. The table is written as a
//! snapshot at each roll and at close, and rebuilt on open (see
//! [`producer_snapshot`](crate::storage::producer_snapshot)). Abort markers feed the
//! per-segment aborted-transaction index (see `txn`).

use super::flush::{flush_loop, Slot, SlotRef, WaitSlot};
use super::PENDING_BYTES_MAX;
use super::{
    check, txn, wait_change, Inner, Life, PartitionLog, Pending, PendingBatch, Segment, Shared,
};
use crate::storage::producer_state::{BatchFacts, Check, ProducerError};
use crate::storage::{AppendInfo, StorageError, TimestampType};
use bytes::{Bytes, BytesMut};
use freshet_protocol::batch::{self, BatchInfo};
use freshet_protocol::records::RecordRules;
use std::cell::RefCell;
use std::rc::Rc;

/// A record set that passed validation, with what offset assignment needs of it.
pub(super) struct Checked {
    /// Position, length and offsets of each batch.
    pub(super) infos: Vec<BatchInfo>,
    /// Producer facts of each batch.
    pub(super) facts: Vec<BatchFacts>,
    /// Each batch's marker (`Some((commit, coordinator epoch))` for a control batch).
    pub(super) markers: Vec<Option<(bool, i32)>>,
    pub(super) ts_type: TimestampType,
}

impl PartitionLog {
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

    async fn append_from(
        &self,
        records: Bytes,
        now_ms: i64,
        from_client: bool,
        guard: Option<(i64, u32)>,
    ) -> Result<AppendInfo, StorageError> {
        let started = std::time::Instant::now();
        let checked = self.check_record_set(&records, from_client)?;
        self.wait_for_room(records.len()).await?;
        let buf = BytesMut::from(&records[..]);
        drop(records);
        // Producer checks run here, with no await before offsets are assigned below, so
        // appends on this partition are judged in offset order.
        if let Some((first_offset, last_offset)) = self.check_producer(&checked, guard)? {
            return self.await_duplicate(first_offset, last_offset).await;
        }
        let slot: SlotRef = Rc::new(RefCell::new(Slot::default()));
        let (info, spawn_flusher) = self.assign_offsets(buf, &checked, now_ms, slot.clone());
        let assigned = std::time::Instant::now();
        if spawn_flusher {
            let shared = self.shared.clone();
            crate::rt::spawn_local(flush_loop(shared)).detach();
        }
        let waited = (WaitSlot { slot: slot.clone() }).await;
        if from_client {
            record_stages(started, assigned, &slot.borrow());
        }
        match waited {
            Ok(()) => Ok(AppendInfo {
                log_start_offset: self.log_start_offset(),
                ..info
            }),
            Err(f) => Err(f.to_error()),
        }
    }

    /// Validate the record set against the topic's settings and what its sender may write.
    fn check_record_set(
        &self,
        records: &Bytes,
        from_client: bool,
    ) -> Result<Checked, StorageError> {
        let (max_message_bytes, ts_type, rules) = {
            let inner = self.shared.inner.borrow();
            if inner.life != Life::Open {
                return Err(StorageError::Closed);
            }
            (
                inner.config.max_message_bytes,
                inner.config.message_timestamp_type,
                RecordRules {
                    require_keys: inner.config.cleanup_compact,
                },
            )
        };
        // Walks every record (compressed batches as a bounded stream); no await before it, so
        // one decompression at a time per shard.
        let infos = batch::validate_records(records, max_message_bytes, rules)?;
        let facts: Vec<BatchFacts> = infos
            .iter()
            .filter_map(|b| batch::header(&records[b.pos..]).map(BatchFacts::of))
            .collect();
        let markers: Vec<Option<(bool, i32)>> = infos
            .iter()
            .map(|b| batch::control_marker(&records[b.pos..b.pos + b.len]))
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
        Ok(Checked {
            infos,
            facts,
            markers,
            ts_type,
        })
    }

    /// Backpressure: wait until `set_len` more unflushed bytes fit under
    /// [`PENDING_BYTES_MAX`] (a set alone is always let through).
    pub(super) async fn wait_for_room(&self, set_len: usize) -> Result<(), StorageError> {
        let shared = &*self.shared;
        loop {
            {
                let inner = shared.inner.borrow();
                if inner.life != Life::Open {
                    return Err(StorageError::Closed);
                }
                // During a truncation, wait: it is cutting the files this append would extend.
                let room =
                    inner.pending_bytes == 0 || inner.pending_bytes + set_len <= PENDING_BYTES_MAX;
                if room && !inner.truncating {
                    return Ok(());
                }
            }
            wait_change(shared).await;
        }
    }

    /// The producer checks: a stale transaction verification is refused; a duplicate batch
    /// gives its original offsets `Some((first, last))`; `None` means append it.
    fn check_producer(
        &self,
        checked: &Checked,
        guard: Option<(i64, u32)>,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let inner = self.shared.inner.borrow();
        if let Some((producer_id, markers)) = guard {
            if inner.producers.marker_count(producer_id) != markers {
                return Err(StorageError::TransactionNotVerified(format!(
                    "a marker for producer {producer_id} arrived during verification"
                )));
            }
        }
        let Some(f) = checked.facts.first().filter(|f| f.has_producer()) else {
            return Ok(None);
        };
        match inner.producers.check(f).map_err(producer_error)? {
            Check::Duplicate {
                first_offset,
                last_offset,
            } => {
                tracing::debug!(dir = %self.shared.dir.display(), producer_id = f.producer_id, first_offset, "duplicate batch");
                Ok(Some((first_offset, last_offset)))
            }
            _ => Ok(None),
        }
    }

    /// Assign offsets at the log end (rolling the segment first if it must), queue the data
    /// for the flusher and cache it; returns what the append will answer and whether a
    /// flusher must be spawned. No await: offsets are assigned in one step.
    fn assign_offsets(
        &self,
        mut buf: BytesMut,
        checked: &Checked,
        now_ms: i64,
        slot: SlotRef,
    ) -> (AppendInfo, bool) {
        let shared = &*self.shared;
        let mut inner = shared.inner.borrow_mut();
        let inner = &mut *inner;
        let set_len = buf.len();
        let offsets: i64 = checked.infos.iter().map(|b| b.offset_count).sum();
        let leo = inner.log_end_offset;
        let active = inner
            .segments
            .back()
            .expect("a log always has an active segment");
        if active.must_roll(&inner.config, set_len as u64, leo + offsets, now_ms) {
            inner.segments.push_back(Segment::new(leo, now_ms));
            inner.roll_snapshot = Some((leo, inner.producers.encode()));
        }
        let hw = inner.high_watermark;
        let seg = inner.segments.back_mut().expect("active segment");
        if seg.roll_time_ms < 0 {
            // First append to this segment (or since a restart that found no timestamp).
            seg.roll_time_ms = now_ms;
        }
        let epoch = inner.leader_epoch;
        let pending_batches = stamp_batches(&mut buf, checked, (leo, epoch), hw, seg.len, now_ms);
        super::epochs::note_append(inner, epoch, leo);
        let next = leo + offsets;
        let spawn = queue_decided(shared, inner, checked, buf, pending_batches, next, slot);
        let info = AppendInfo {
            base_offset: leo,
            last_offset: next - 1,
            log_append_time_ms: match checked.ts_type {
                TimestampType::LogAppendTime => now_ms,
                TimestampType::CreateTime => -1,
            },
            log_start_offset: inner.log_start_offset,
        };
        (info, spawn)
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
}

/// Rewrite each batch of `buf` for the log: base offset from `leo` on, the leader `epoch`, and the
/// LogAppendTime when the topic asks; check each one right after (the write side of the
/// paired assertions). Returns the batches' metadata for the flusher, positioned after the
/// segment's `seg_len` bytes.
/// Issue 16: the validated, written and fdatasync stages of a client's append, from its own
/// timestamps and its round's (per append, never per record).
fn record_stages(started: std::time::Instant, assigned: std::time::Instant, slot: &Slot) {
    use crate::metrics::{record_produce_stage, ProduceStage};
    record_produce_stage(ProduceStage::Validated, assigned - started);
    if let (Some(written), Some(durable)) = (slot.written_at, slot.durable_at) {
        record_produce_stage(
            ProduceStage::Written,
            written.saturating_duration_since(assigned),
        );
        record_produce_stage(
            ProduceStage::Fdatasync,
            durable.saturating_duration_since(written),
        );
    }
}

fn stamp_batches(
    buf: &mut BytesMut,
    checked: &Checked,
    (leo, epoch): (i64, i32),
    high_watermark: i64,
    seg_len: u64,
    now_ms: i64,
) -> Vec<PendingBatch> {
    let log_append_time = checked.ts_type == TimestampType::LogAppendTime;
    let mut next = leo;
    let mut pending_batches = Vec::with_capacity(checked.infos.len());
    for b in &checked.infos {
        let slice = &mut buf[b.pos..b.pos + b.len];
        batch::set_base_offset(slice, next);
        batch::set_partition_leader_epoch(slice, epoch);
        if log_append_time {
            batch::set_log_append_time(slice, now_ms);
        }
        check::batch_before_append(slice, next, b.offset_count, high_watermark);
        pending_batches.push(PendingBatch {
            pos_in_segment: seg_len + b.pos as u64,
            base_offset: next,
            len: b.len as u64,
            last_offset: next + b.offset_count - 1,
            max_timestamp: if log_append_time {
                now_ms
            } else {
                b.max_timestamp
            },
            data_start: b.pos,
        });
        next += b.offset_count;
    }
    pending_batches
}

/// Apply each appended batch to the producer state; an aborted transaction enters the
/// aborted-transaction index of the active segment.
pub(super) fn apply_producers(
    inner: &mut Inner,
    checked: &Checked,
    pending_batches: &[PendingBatch],
) {
    let seg_base = inner
        .segments
        .back()
        .expect("a log always has an active segment")
        .base_offset;
    let batches = checked
        .facts
        .iter()
        .zip(pending_batches)
        .zip(&checked.markers);
    for ((f, pb), marker) in batches {
        let done = inner
            .producers
            .apply(f, pb.base_offset, pb.max_timestamp, *marker);
        if let Some(d) = done.filter(|d| d.aborted) {
            let lso = inner.producers.first_unstable_offset();
            inner.txn_index.add(seg_base, txn::aborted_entry(d, lso));
        }
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

/// Queues a record set whose offsets are decided (`pending_batches`, ending before `next`) at
/// the end of the active segment: producer state, the tail cache, the segment's length and end,
/// the pending queue and the log end. Returns whether a flusher must be spawned. Shared by a
/// producer's append (`assign_offsets`) and a follower's (`append_replicated`); no await.
pub(super) fn queue_decided(
    shared: &Shared,
    inner: &mut Inner,
    checked: &Checked,
    buf: BytesMut,
    pending_batches: Vec<PendingBatch>,
    next: i64,
    slot: SlotRef,
) -> bool {
    let set_len = buf.len();
    apply_producers(inner, checked, &pending_batches);
    let data = buf.freeze();
    for pb in &pending_batches {
        shared.cache.insert(
            shared.cache_id,
            pb.base_offset,
            pb.last_offset,
            data.slice(pb.data_start..pb.data_start + pb.len as usize),
        );
    }
    let seg = inner.segments.back_mut().expect("active segment");
    seg.len += set_len as u64;
    seg.next_offset = next;
    let segment_base = seg.base_offset;
    inner.pending.push_back(Pending {
        segment_base,
        data,
        batches: pending_batches,
        end_offset: next,
        slot,
    });
    inner.pending_bytes += set_len;
    inner.log_end_offset = next;
    let spawn = !inner.flushing;
    inner.flushing = true;
    spawn
}
