//! Clean shutdown: drain the flusher, seal what is open, write the index files, the
//! aborted-transaction index, the recovery checkpoint (the active segment's durable end, so
//! the next open scans nothing) and the producer snapshot; then close the files. The
//! leader-epoch file is written first when it changed (see `epochs`).
//!
//! Shutting down an idle partition is cheap: when nothing changed since the checkpoint on disk
//! was written, nothing is written at all.

use super::segment::write_indexes;
use super::{epochs, lock_meta, txn, wait_change, Checkpoint, Inner, Life, PartitionLog, Shared};
use crate::storage::{checkpoint, io, producer_snapshot, StorageError};

impl PartitionLog {
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
        epochs::persist(shared).await?;
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
        txn::persist_below(shared, i64::MAX).await?;
        write_clean_checkpoint(shared).await
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
}

/// The last step of a clean close: everything accepted is durable and sealed where it must be;
/// write the recovery checkpoint at the active segment's durable end, then the producer
/// snapshot unless the producer state is empty (recorded in the checkpoint instead).
async fn write_clean_checkpoint(shared: &Shared) -> Result<(), StorageError> {
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
            high_watermark: inner.visible_high_watermark(),
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
