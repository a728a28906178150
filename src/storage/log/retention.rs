//! Retention: `retention.ms` / `retention.bytes`, DeleteRecords, and deleting what lies
//! below the log start.
//!
//! Only whole sealed segments are deleted, never the active one. The log start offset moves
//! first, durably (the recovery checkpoint records it), then the segments wholly below it are
//! removed under the metadata lock; a crash in between leaves segments below the log start,
//! which the next open deletes. Deleting the partition removes its directory.

use super::{lock_meta, Checkpoint, Life, PartitionLog};
use crate::storage::checkpoint;
use crate::storage::file_names::{segment_file_name, SEGMENT_EXTS};
use crate::storage::{io, StorageError};

impl PartitionLog {
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
            let hw = inner.visible_high_watermark();
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
        if inner.epochs.truncate_from_start(offset) {
            inner.epochs_dirty = true;
        }
        shared.cache.evict_below(shared.cache_id, offset);
        Ok(())
    }

    pub(super) async fn delete_segments_below_start(&self) -> Result<u64, StorageError> {
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
