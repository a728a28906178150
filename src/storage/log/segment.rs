//! Segment lifecycle: when the active segment rolls, sealing the old one, creating and
//! preallocating the new file, and the index files of a segment.
//!
//! A segment is `<base offset, 20 digits>.log` (batches back to back, wire format) plus
//! `.index` and `.timeindex` (see [`crate::storage::index`]). The active segment is
//! preallocated in steps growing from [`PREALLOCATE_FIRST_BYTES`] to
//! [`super::PREALLOCATE_STEP_BYTES`] (less when the disk is full: a step shrinks to what the
//! round needs, and to nothing, the write growing the file, if even that does not fit, so
//! appends succeed again as soon as their own bytes fit). A segment rolls when the next record
//! set would pass `segment.bytes`, when it is `segment.ms` old, or when relative offsets would
//! overflow ([`Segment::must_roll`], decided by the append that assigns the offsets). At roll
//! the flusher *seals* the old segment ([`seal`]: truncate to its length, fdatasync, write its
//! index files atomically), creates the new file ([`create_file`]), fsyncs the directory and,
//! once the new segment's first round is durable, writes the recovery checkpoint; only then is
//! the new segment trusted to hold the log's end.

use super::{lock_meta, Segment, Shared, INDEX_FILE_BYTES_MAX, PREALLOCATE_FIRST_BYTES};
use crate::storage::file_names::{segment_file_name, INDEX_EXT, TIME_INDEX_EXT};
use crate::storage::index::{OffsetIndex, TimeIndex};
use crate::storage::io::{self, DataFile};
use crate::storage::{LogConfig, StorageError};
use std::path::Path;

/// What sealing a segment writes, captured under the borrow when the roll's round is planned.
pub(super) struct SealPlan {
    pub(super) base: i64,
    pub(super) file: Option<DataFile>,
    pub(super) len: u64,
    pub(super) offset_index: Vec<u8>,
    pub(super) time_index: Vec<u8>,
}

impl Segment {
    /// Whether a record set of `set_len` bytes whose offsets end (exclusive) at `offsets_end`
    /// must go into a new segment instead of this active one (`segment.bytes`, `segment.ms`,
    /// relative offsets that would overflow). An empty segment never rolls.
    pub(super) fn must_roll(
        &self,
        config: &LogConfig,
        set_len: u64,
        offsets_end: i64,
        now_ms: i64,
    ) -> bool {
        let seg_bytes = config.segment_bytes.min(i32::MAX as u64);
        self.len > 0
            && (self.len + set_len > seg_bytes
                || (self.roll_time_ms >= 0
                    && now_ms.saturating_sub(self.roll_time_ms) >= config.segment_ms)
                || offsets_end - self.base_offset > i64::from(i32::MAX))
    }
}

/// Seal a rolled-over segment: truncate it to its length, fdatasync it, write its index files
/// atomically, and mark it sealed.
pub(super) async fn seal(shared: &Shared, seal: &SealPlan) -> Result<(), StorageError> {
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
    Ok(())
}

/// Create (or empty) the file of a freshly rolled segment and make its name durable.
pub(super) async fn create_file(shared: &Shared, path: &Path) -> Result<DataFile, StorageError> {
    let _guard = lock_meta(shared).await;
    let f = DataFile::open_rw(path).await?;
    // A leftover of a failed earlier attempt must not be mistaken for data.
    f.truncate(0).await?;
    io::sync_dir(&shared.dir).await?;
    Ok(f)
}

/// Grow the preallocation of `file` (now `preallocated_len`) so that `new_len` bytes fit;
/// returns the new preallocated size.
pub(super) async fn grow_preallocation(
    file: &DataFile,
    preallocated_len: u64,
    step_max: u64,
    new_len: u64,
) -> Result<u64, StorageError> {
    // Grow geometrically from a small first step: an idle partition (of 10,000 on a node)
    // must not hold tens of MiB of disk, while a busy one soon preallocates full steps.
    let step = preallocated_len.max(PREALLOCATE_FIRST_BYTES).min(step_max);
    let target = (preallocated_len + step).max(io::align_up(new_len));
    preallocate_what_fits(file, preallocated_len, target, new_len).await
}

/// Load and check a segment's index files; `None` if missing or damaged.
pub(super) async fn load_indexes(
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

/// Write a segment's two index files, each atomically.
pub(super) async fn write_indexes(
    dir: &Path,
    seg_base: i64,
    oi: Vec<u8>,
    ti: Vec<u8>,
) -> Result<(), StorageError> {
    io::write_file_atomic(&dir.join(segment_file_name(seg_base, INDEX_EXT)), oi).await?;
    io::write_file_atomic(&dir.join(segment_file_name(seg_base, TIME_INDEX_EXT)), ti).await
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
