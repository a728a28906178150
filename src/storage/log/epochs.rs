//! The log's side of the leader-epoch cache ([`crate::storage::leader_epoch`]): the epoch
//! stamped into appended batches, the cache's updates where offsets are assigned, rolled back
//! or truncated, its file, and its recovery.
//!
//! When the file is written: before every recovery checkpoint that makes more of the log
//! trusted (a roll's, a clean close's, an open's), and after a truncation. So the file always
//! covers the log below the recovery point, and recovery only has to add the epochs of the
//! batches it scans anyway (from the recovery point on: `ScanOutcome::epoch_starts`). A missing
//! or damaged file (or one written by a broker that had none) is rebuilt by reading the batch
//! headers of the whole log, [`SCAN_READ_BYTES`] at a time, and written again; it never keeps
//! a partition offline (the rest of a segment with a damaged batch is skipped, with a
//! warning: the damage is the read path's to report). Entries above the recovered log end (their data
//! was not durable) are dropped on open, as are those below the log start.

use super::{Inner, PartitionLog, Shared, SCAN_READ_BYTES};
use crate::storage::leader_epoch::{self, LeaderEpochCache};
use crate::storage::{io, StorageError};
use freshet_protocol::batch;
use std::path::Path;

impl PartitionLog {
    /// The partition's current leader epoch, as the metadata says (the shard calls this on
    /// every metadata install): batches appended from producers from now on carry it, and
    /// clients' `current_leader_epoch` is checked against it. Until the first call, the latest
    /// epoch in the log (0 for an empty log). The metadata is the authority: an epoch going
    /// back is taken (and logged); it adds no entry to the epoch cache until it passes the
    /// latest one there.
    pub fn set_leader_epoch(&self, epoch: i32) {
        let mut inner = self.shared.inner.borrow_mut();
        if epoch < inner.leader_epoch {
            tracing::warn!(dir = %self.shared.dir.display(), epoch, current = inner.leader_epoch, "leader epoch going back");
        }
        inner.leader_epoch = epoch.max(0);
    }

    /// This broker leads the partition at `epoch` (Kafka's `Partition.makeLeader`):
    /// [`PartitionLog::set_leader_epoch`], and the epoch starts at the log end offset in the
    /// cache if it is above the latest one, before any batch is written in it (so
    /// OffsetForLeaderEpoch answers for it at once, even on an empty log). A follower calls
    /// `set_leader_epoch` alone: its epochs come with the leader's batches.
    pub fn start_leader_epoch(&self, epoch: i32) {
        self.set_leader_epoch(epoch);
        let mut inner = self.shared.inner.borrow_mut();
        let end = inner.log_end_offset;
        if inner.epochs.note_epoch_start(epoch, end) {
            // Written with the first batch of the epoch (`note_append`), not for an idle one.
            inner.epochs_soft = true;
        }
    }

    /// The epoch stamped into appended batches.
    pub fn leader_epoch(&self) -> i32 {
        self.shared.inner.borrow().leader_epoch
    }

    /// The latest epoch with data in the log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.shared.inner.borrow().epochs.latest_epoch()
    }

    /// Kafka's `UnifiedLog.endOffsetForEpoch`: the largest epoch <= `epoch` with data here and
    /// where it ends (the start of the next epoch, or the log end offset for the latest one);
    /// `None` when the log knows nothing of it (OffsetForLeaderEpoch then answers -1/-1).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let inner = self.shared.inner.borrow();
        let (e, offset) = inner.epochs.end_offset_for(epoch, inner.log_end_offset);
        (offset != leader_epoch::UNDEFINED_EPOCH_OFFSET).then_some((e, offset))
    }

    /// Where `epoch` starts in the log, if the cache has an entry for it (a leader's current
    /// epoch has one from `start_leader_epoch` on).
    pub fn epoch_start_offset(&self, epoch: i32) -> Option<i64> {
        let inner = self.shared.inner.borrow();
        inner
            .epochs
            .entries()
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    }

    /// The epoch of the batch holding `offset`, if the cache knows it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.shared.inner.borrow().epochs.epoch_for_offset(offset)
    }

    /// The cache's entries as (epoch, start offset), oldest first (for tests and tools).
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        let inner = self.shared.inner.borrow();
        inner
            .epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// A batch of `epoch` starts at `offset` in the log: recorded if `epoch` is above the
    /// latest one (the hook for appends of replicated batches, which keep the leader's epochs).
    pub fn note_epoch_start(&self, epoch: i32, offset: i64) {
        note(&mut self.shared.inner.borrow_mut(), epoch, offset);
    }

    /// The last step of open: the cache from the file must agree with the log's last batch
    /// (its epoch is the cache's epoch at its offset), else (a file left behind by a crash
    /// between writes, or written by hand) it is rebuilt from the log, as a missing or damaged
    /// one (`loaded` false) is. Costs one read of the last batch.
    pub(super) async fn check_epochs_on_open(&self, loaded: bool) -> Result<(), StorageError> {
        if loaded && self.epochs_agree_with_tail().await? {
            return Ok(());
        }
        if loaded {
            tracing::warn!(dir = %self.shared.dir.display(), "the leader-epoch checkpoint disagrees with the log's last batch: rebuilding it from the log");
        }
        self.rebuild_epochs_from_log().await?;
        let mut inner = self.shared.inner.borrow_mut();
        inner.leader_epoch = inner.epochs.latest_epoch().unwrap_or(0);
        Ok(())
    }

    /// Whether the epoch of the log's last batch is what the cache says for its offset.
    async fn epochs_agree_with_tail(&self) -> Result<bool, StorageError> {
        let (start, end) = {
            let inner = self.shared.inner.borrow();
            (inner.log_start_offset, inner.high_watermark)
        };
        if start >= end {
            return Ok(true);
        }
        let data = match self.read_for_replica(end - 1, 1, true).await {
            Ok(data) => data,
            Err(e @ StorageError::CorruptMessage(_)) => {
                // Damage is the read path's to report; the file is kept as it is.
                tracing::warn!(dir = %self.shared.dir.display(), error = %e, "cannot check the leader-epoch checkpoint against the last batch");
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let Some(h) = data.batches.first().and_then(|b| batch::header(b)) else {
            return Ok(true);
        };
        let epoch = h.partition_leader_epoch.get();
        let cached = self
            .shared
            .inner
            .borrow()
            .epochs
            .epoch_for_offset(h.base_offset());
        Ok(epoch < 0 || cached == Some(epoch))
    }

    /// Rebuild the cache from the batch headers of the whole log (its file was missing or
    /// damaged), then write the file.
    pub(super) async fn rebuild_epochs_from_log(&self) -> Result<(), StorageError> {
        let (mut offset, end) = {
            let inner = self.shared.inner.borrow();
            (inner.log_start_offset, inner.high_watermark)
        };
        let mut cache = LeaderEpochCache::new();
        while offset < end {
            let data = match self.read_for_replica(offset, SCAN_READ_BYTES, true).await {
                Ok(data) => data,
                Err(e @ StorageError::CorruptMessage(_)) => {
                    // Derived data: the rebuild goes on from the next segment and the
                    // partition stays online (the damage is the read path's to report).
                    tracing::warn!(dir = %self.shared.dir.display(), offset, error = %e, "leader-epoch rebuild skips the rest of a segment with a damaged batch");
                    match self
                        .segment_base_offsets()
                        .into_iter()
                        .find(|b| *b > offset)
                    {
                        Some(next) => {
                            offset = next;
                            continue;
                        }
                        None => break,
                    }
                }
                Err(e) => return Err(e),
            };
            if data.batches.is_empty() {
                break;
            }
            for b in &data.batches {
                let Some(h) = batch::header(b) else { break };
                cache.note_epoch_start(h.partition_leader_epoch.get(), h.base_offset());
                offset = offset.max(h.last_offset() + 1);
            }
        }
        tracing::info!(dir = %self.shared.dir.display(), entries = cache.entries().len(), "leader-epoch cache rebuilt from the log");
        {
            let mut inner = self.shared.inner.borrow_mut();
            inner.epochs = cache;
            inner.epochs_dirty = true;
        }
        persist(&self.shared).await
    }
}

/// Record the start of `epoch` at `offset` if it is above the latest epoch (Kafka's
/// `maybeAssignEpochStartOffset`).
pub(super) fn note(inner: &mut Inner, epoch: i32, offset: i64) {
    if inner.epochs.note_epoch_start(epoch, offset) {
        inner.epochs_dirty = true;
    }
}

/// A batch of `epoch` is appended at `offset`: [`note`], and an entry without data so far
/// now has some, so the file needs it.
pub(super) fn note_append(inner: &mut Inner, epoch: i32, offset: i64) {
    note(inner, epoch, offset);
    if inner.epochs_soft {
        inner.epochs_soft = false;
        inner.epochs_dirty = true;
    }
}

/// Write the cache's file if it changed since it was last written.
pub(super) async fn persist(shared: &Shared) -> Result<(), StorageError> {
    let data = {
        let mut inner = shared.inner.borrow_mut();
        if !inner.epochs_dirty {
            return Ok(());
        }
        inner.epochs_dirty = false;
        inner.epochs.encode()
    };
    let written = write(&shared.dir, data).await;
    if written.is_err() {
        shared.inner.borrow_mut().epochs_dirty = true;
    }
    written
}

/// Write the file (atomically: temp file, fdatasync, rename, directory fsync).
async fn write(dir: &Path, data: Vec<u8>) -> Result<(), StorageError> {
    io::write_file_atomic(&dir.join(leader_epoch::FILE_NAME), data).await
}

/// What open does with the file: the cache from it (entries past the recovered end dropped,
/// the epochs of the scanned batches added, cut at the log start), written back if that
/// changed it; `None` when it is missing or damaged and the log is not empty (then the log
/// rebuilds it from its batches once open).
pub(super) async fn load_on_open(
    dir: &Path,
    scanned: &[(i32, i64)],
    log_start: i64,
    log_end: i64,
) -> Result<Option<LeaderEpochCache>, StorageError> {
    let loaded = load_file(dir, scanned, log_start, log_end).await?;
    if let Some((cache, true)) = &loaded {
        write(dir, cache.encode()).await?;
    }
    Ok(loaded.map(|(cache, _)| cache))
}

/// [`load_on_open`] before the write: the cache and whether it differs from the file.
async fn load_file(
    dir: &Path,
    scanned: &[(i32, i64)],
    log_start: i64,
    log_end: i64,
) -> Result<Option<(LeaderEpochCache, bool)>, StorageError> {
    let data = io::read_small_file(
        &dir.join(leader_epoch::FILE_NAME),
        leader_epoch::FILE_BYTES_MAX,
    )
    .await?;
    let decoded = match data.as_deref().map(LeaderEpochCache::decode) {
        Some(Ok(cache)) => Some(cache),
        Some(Err(why)) => {
            tracing::warn!(dir = %dir.display(), why, "damaged leader-epoch checkpoint: rebuilding it from the log");
            None
        }
        None => None,
    };
    let Some(mut cache) = decoded else {
        if log_start < log_end {
            return Ok(None);
        }
        // An empty log: nothing to rebuild, and no file is needed until a batch is written.
        return Ok(Some((LeaderEpochCache::new(), data.is_some())));
    };
    let mut changed = cache.truncate_from_end(log_end);
    for &(epoch, offset) in scanned {
        changed |= cache.note_epoch_start(epoch, offset);
    }
    changed |= cache.truncate_from_start(log_start);
    Ok(Some((cache, changed)))
}
