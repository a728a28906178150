//! The log's side of replication: a follower's append of its leader's batches, the read a
//! leader serves a follower, and the replicated high watermark.
//!
//! # High watermark
//! Two ends: the *durable end* (the local high watermark of one node: everything below it is
//! fdatasync'd here; the `high_watermark` field of `Inner`, moved by the flusher) and the *high
//! watermark* readers see. With one replica (and for a leader whose ISR is itself) they are
//! the same value: `replicated_hw` is `None` and the high watermark follows the durable end,
//! exactly as before replication existed. Once replication sets it
//! ([`PartitionLog::set_high_watermark`]: the leader from its ISR's fetch offsets, a follower
//! from its leader's answers), readers see `min(replicated_hw, durable end)`; the value only
//! moves forward while the durable end stays above it (a truncation below it lowers what
//! readers see with the durable end). [`PartitionLog::follow_durable_end`] returns to the
//! single-replica rule.
//!
//! # Follower append
//! [`PartitionLog::append_replicated`] appends a leader's batches unchanged: offsets, producer
//! ids, sequences, leader epochs and timestamps are the leader's. Each batch is checked before
//! anything is written: whole (length field), magic 2, CRC-32C, at least one record, no
//! overlap (a batch starting below the log end, or below the end of the batch before it, is
//! refused, never written). Producer state (idempotence) and the aborted
//! transaction index are updated as a leader's append updates them, without the sequence
//! checks (the leader made them), so a follower that becomes leader detects a retried batch as
//! a duplicate; the leader-epoch cache learns each batch whose epoch is above its latest
//! (Kafka's `maybeAssignEpochStartOffset`). Resolves once durable, like
//! [`PartitionLog::append`].
//!
//! # Offset gaps (compacted leaders)
//! A leader's cleaned segments have forward offset gaps between batches (the cleaner keeps
//! batch boundaries: never an overlap). The active segment must stay contiguous (recovery
//! treats a gap in the last segment as a torn tail), so a record set is split at its gaps and
//! a run that starts past the log end starts a new segment at its base offset; the gap then
//! lies between segments, which recovery accepts and reads skip. Cost: a follower catching up through a heavily
//! cleaned log gets one segment (files, a seal and an fdatasync) per gap it meets; a follower
//! in step with its leader meets none (the active segment is never cleaned).
//!
//! An empty active segment (an empty log, as a new replica's) cannot be sealed (recovery
//! refuses an empty sealed segment), so a record set starting past its end is refused; the
//! follower learns the leader's log start from the OFFSET_OUT_OF_RANGE answer instead and
//! starts its log there ([`PartitionLog::truncate_fully_and_start_at`], Kafka's
//! `truncateFullyAndStartAt`).

use super::append::{queue_decided, Checked};
use super::flush::{flush_loop, Slot, SlotRef, WaitSlot};
use super::{check, Life, PartitionLog, PendingBatch, Segment};
use crate::storage::producer_state::BatchFacts;
use crate::storage::{AppendInfo, ReadData, StorageError};
use bytes::{Bytes, BytesMut};
use freshet_protocol::batch::{self, BatchInfo};
use std::cell::RefCell;
use std::rc::Rc;

impl PartitionLog {
    /// Sets the replicated high watermark to `hw`, clamped to the durable end; it never moves
    /// back while the durable end stays above it. The first call (while the high watermark
    /// follows the durable end) starts from `min(hw, durable end)`, which may be lower: a
    /// replica's high watermark after it opens is what its leader says, not its own end.
    /// Returns whether the high watermark readers see changed.
    pub fn set_high_watermark(&self, hw: i64) -> bool {
        let changed = {
            let mut inner = self.shared.inner.borrow_mut();
            let before = inner.visible_high_watermark();
            let durable = inner.high_watermark;
            let wanted = hw.clamp(inner.log_start_offset.min(durable), durable);
            let next = match inner.replicated_hw {
                None => wanted,
                Some(old) => old.min(durable).max(wanted),
            };
            inner.replicated_hw = Some(next);
            inner.visible_high_watermark() != before
        };
        if changed {
            self.shared.wake();
        }
        changed
    }

    /// Returns to the single-replica rule: the high watermark is the durable end (a leader
    /// whose ISR is itself). Returns whether the high watermark readers see changed.
    pub fn follow_durable_end(&self) -> bool {
        let changed = {
            let mut inner = self.shared.inner.borrow_mut();
            let before = inner.visible_high_watermark();
            inner.replicated_hw = None;
            inner.visible_high_watermark() != before
        };
        if changed {
            self.shared.wake();
        }
        changed
    }

    /// The high watermark the recovery checkpoint recorded (at the last clean close or segment
    /// roll), at most the durable end; -1 if unknown. A leader just opened starts from it
    /// (Kafka's `replication-offset-checkpoint`).
    pub fn checkpointed_high_watermark(&self) -> i64 {
        let inner = self.shared.inner.borrow();
        inner.checkpoint.high_watermark.min(inner.high_watermark)
    }

    /// Whether the high watermark follows the durable end (one replica, or never set).
    pub fn follows_durable_end(&self) -> bool {
        self.shared.inner.borrow().replicated_hw.is_none()
    }

    /// A follower's read (the leader's side of an inter-broker Fetch): like
    /// [`PartitionLog::read`], but up to the durable end instead of the high watermark.
    pub async fn read_for_replica(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadData, StorageError> {
        self.read_within(offset, max_bytes, min_one_batch, i64::MAX, true)
            .await
    }

    /// Appends a leader's batches unchanged (see the module docs); `now_ms` starts the
    /// `segment.ms` clock of a new segment. Either all batches are appended or none.
    pub async fn append_replicated(
        &self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let runs = split_at_gaps(&records)?;
        let checked = runs
            .iter()
            .map(|run| self.check_replicated(run))
            .collect::<Result<Vec<_>, _>>()?;
        self.wait_for_room(records.len()).await?;
        drop(records);
        // No await from here to the last queue: a run after the first starts past the end the
        // one before it left, so only the first can be refused (and then nothing is queued).
        let mut slots = Vec::with_capacity(runs.len());
        let mut spawn_flusher = false;
        let mut first: Option<AppendInfo> = None;
        let mut last_offset = -1;
        for (run, checked) in runs.iter().zip(&checked) {
            let buf = BytesMut::from(&run[..]);
            let slot: SlotRef = Rc::new(RefCell::new(Slot::default()));
            let (info, spawn) = self.queue_replicated(buf, checked, now_ms, slot.clone())?;
            spawn_flusher |= spawn;
            slots.push(slot);
            last_offset = info.last_offset;
            first.get_or_insert(info);
        }
        drop(runs);
        if spawn_flusher {
            crate::rt::spawn_local(flush_loop(self.shared.clone())).detach();
        }
        for slot in slots {
            (WaitSlot { slot }).await.map_err(|f| f.to_error())?;
        }
        let first = first.expect("a record set has at least one run");
        Ok(AppendInfo {
            last_offset,
            log_start_offset: self.log_start_offset(),
            ..first
        })
    }

    /// Checks each batch of a leader's record set (whole, magic 2, CRC, offsets contiguous
    /// from one batch to the next); the position against the log end is checked when queued.
    fn check_replicated(&self, records: &Bytes) -> Result<Checked, StorageError> {
        let (max_message_bytes, ts_type) = {
            let inner = self.shared.inner.borrow();
            if inner.life != Life::Open {
                return Err(StorageError::Closed);
            }
            (
                inner.config.max_message_bytes,
                inner.config.message_timestamp_type,
            )
        };
        if records.is_empty() {
            return Err(StorageError::CorruptMessage("empty record set".into()));
        }
        let mut infos = Vec::new();
        let mut facts = Vec::new();
        let mut markers = Vec::new();
        let mut next: Option<i64> = None;
        for item in batch::batches(records) {
            let (pos, b) = item.map_err(|e| StorageError::CorruptMessage(e.to_string()))?;
            // The leader accepted it under its own limit; a batch far above ours is damage.
            let limit = (max_message_bytes as usize).max(super::SCAN_BATCH_BYTES_MAX);
            if b.len() > limit {
                return Err(StorageError::CorruptMessage(format!(
                    "replicated batch of {} bytes is above {limit}",
                    b.len()
                )));
            }
            let h = header_checked(b)?;
            if let Some(expected) = next {
                if h.base_offset() != expected {
                    return Err(StorageError::CorruptMessage(format!(
                        "replicated batch at offset {} does not continue at {expected}",
                        h.base_offset()
                    )));
                }
            }
            next = Some(h.last_offset() + 1);
            infos.push(BatchInfo {
                pos,
                len: b.len(),
                offset_count: i64::from(h.last_offset_delta.get()) + 1,
                max_timestamp: h.max_timestamp(),
            });
            facts.push(BatchFacts::of(h));
            markers.push(batch::control_marker(b));
        }
        Ok(Checked {
            infos,
            facts,
            markers,
            ts_type,
        })
    }

    /// Queues a checked leader's contiguous run of batches at the log end (refused if its
    /// first batch starts below it; one that starts past it starts a new segment there, see
    /// the module docs), applies its producer state and caches it; no await, as
    /// `assign_offsets`.
    fn queue_replicated(
        &self,
        buf: BytesMut,
        checked: &Checked,
        now_ms: i64,
        slot: SlotRef,
    ) -> Result<(AppendInfo, bool), StorageError> {
        let shared = &*self.shared;
        let mut inner = shared.inner.borrow_mut();
        let inner = &mut *inner;
        if inner.life != Life::Open {
            return Err(StorageError::Closed);
        }
        let log_end = inner.log_end_offset;
        let leo = batch::header(&buf).map_or(-1, |h| h.base_offset());
        if leo < log_end {
            return Err(StorageError::CorruptMessage(format!(
                "replicated record set starts at offset {leo}, below the log end {log_end}"
            )));
        }
        let set_len = buf.len();
        let offsets: i64 = checked.infos.iter().map(|b| b.offset_count).sum();
        let next = leo + offsets;
        let active = inner
            .segments
            .back()
            .expect("a log always has an active segment");
        if leo > log_end && active.len == 0 {
            // Sealed segments are never empty (recovery refuses one): see the module docs.
            return Err(StorageError::CorruptMessage(format!(
                "replicated record set starts at offset {leo}, past the end {log_end} of an \
                 empty active segment"
            )));
        }
        if leo > log_end || active.must_roll(&inner.config, set_len as u64, next, now_ms) {
            inner.segments.push_back(Segment::new(leo, now_ms));
            inner.roll_snapshot = Some((leo, inner.producers.encode()));
        }
        let durable = inner.high_watermark;
        let seg = inner.segments.back_mut().expect("active segment");
        if seg.roll_time_ms < 0 {
            seg.roll_time_ms = now_ms;
        }
        let mut pending_batches = Vec::with_capacity(checked.infos.len());
        let mut at = leo;
        for b in &checked.infos {
            check::batch_before_append(&buf[b.pos..b.pos + b.len], at, b.offset_count, durable);
            pending_batches.push(PendingBatch {
                pos_in_segment: seg.len + b.pos as u64,
                base_offset: at,
                len: b.len as u64,
                last_offset: at + b.offset_count - 1,
                max_timestamp: b.max_timestamp,
                data_start: b.pos,
            });
            at += b.offset_count;
        }
        // The epoch cache learns each batch whose partitionLeaderEpoch is above its latest.
        for (b, pb) in checked.infos.iter().zip(&pending_batches) {
            if let Some(h) = batch::header(&buf[b.pos..b.pos + b.len]) {
                super::epochs::note_append(inner, h.partition_leader_epoch.get(), pb.base_offset);
            }
        }
        let spawn = queue_decided(shared, inner, checked, buf, pending_batches, next, slot);
        let info = AppendInfo {
            base_offset: leo,
            last_offset: next - 1,
            // The leader's answer carries its append time; a follower's answers none.
            log_append_time_ms: -1,
            log_start_offset: inner.log_start_offset,
        };
        Ok((info, spawn))
    }
}

/// `records` cut where a batch starts past the end of the one before it (a cleaned leader's
/// gap): contiguous runs, in order. Damage is left to `check_replicated`, which refuses it.
fn split_at_gaps(records: &Bytes) -> Result<Vec<Bytes>, StorageError> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut next: Option<i64> = None;
    for item in batch::batches(records) {
        let (pos, b) = item.map_err(|e| StorageError::CorruptMessage(e.to_string()))?;
        let Some(h) = batch::header(b) else {
            break;
        };
        if next.is_some_and(|expected| h.base_offset() > expected) {
            runs.push(records.slice(start..pos));
            start = pos;
        }
        next = Some(
            h.base_offset()
                .saturating_add(i64::from(h.last_offset_delta.get()))
                .saturating_add(1),
        );
    }
    runs.push(records.slice(start..));
    Ok(runs)
}

/// One replicated batch's header after the checks a leader's batch must pass here: length
/// field, magic, CRC-32C, a record count, a last offset delta not below the count's (the
/// leader's cleaner may leave gaps inside a batch).
fn header_checked(b: &[u8]) -> Result<&batch::BatchHeader, StorageError> {
    let Some(h) = batch::header(b) else {
        return Err(StorageError::CorruptMessage(
            "replicated batch shorter than its header".into(),
        ));
    };
    if h.total_len() != b.len() as i64 {
        return Err(StorageError::CorruptMessage(
            "replicated batch length field does not match".into(),
        ));
    }
    if h.magic != batch::MAGIC_V2 {
        return Err(StorageError::CorruptMessage(format!(
            "replicated batch magic {} is not 2",
            h.magic
        )));
    }
    let crc = batch::compute_crc(b);
    if crc != h.crc() {
        return Err(StorageError::CorruptMessage(format!(
            "replicated batch CRC-32C mismatch: stored {:#010x}, computed {crc:#010x}",
            h.crc()
        )));
    }
    let count = i64::from(h.records_count());
    let delta = i64::from(h.last_offset_delta.get());
    if count < 1 || delta < count - 1 || h.base_offset() < 0 {
        return Err(StorageError::CorruptMessage(format!(
            "replicated batch at offset {} has {count} records and last offset delta {delta}",
            h.base_offset()
        )));
    }
    Ok(h)
}
