//! The cleaner's I/O: reading a sealed segment batch by batch, writing the cleaned segment,
//! swapping it in crash-safely (step 4 of the module docs of [`super`]), and completing an
//! interrupted swap when a log is opened.
//!
//! Reads and writes go through [`DataFile`] (O_DIRECT) in [`CLEANER_IO_BYTES`] steps; a batch
//! read back is checked with [`validate_stored`] before the filter sees it, and a length
//! field past [`CLEANER_BATCH_BYTES_MAX`] is treated as corruption, so a damaged segment
//! fails the round with [`StorageError::CorruptMessage`] instead of allocating what it
//! claims. Memory: one read buffer and one write buffer of about [`CLEANER_IO_BYTES`] each
//! (or one batch, if larger).
//!
//! Crash safety: the `.cleaned` file is fdatasync'd before the rename to `.swap` (the commit
//! point); [`finish_interrupted_swaps`] deletes `.cleaned` files and completes `.swap` files
//! on open, so a crash at any step leaves either the old segments or the cleaned one, never
//! a mix that loses offsets.

use super::filter::{corrupt, validate_stored};
use super::{CLEANER_BATCH_BYTES_MAX, CLEANER_IO_BYTES};
use crate::storage::file_names::{
    self, segment_file_name, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT, TXN_INDEX_EXT,
};
use crate::storage::io::{self, align_down, DataFile};
use crate::storage::log::{lock_meta, txn, write_indexes, Life, Segment, Shared};
use crate::storage::StorageError;
use bytes::Bytes;
use freshet_protocol::batch;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Reading a segment batch by batch.

/// A sealed segment read batch by batch (each one CRC-checked).
pub(super) struct SegmentReader {
    file: DataFile,
    len: u64,
    pos: u64,
    buf: Bytes,
    buf_pos: u64,
}

impl SegmentReader {
    /// A reader of the first `len` bytes of `file`.
    pub(super) fn new(file: DataFile, len: u64) -> SegmentReader {
        SegmentReader {
            file,
            len,
            pos: 0,
            buf: Bytes::new(),
            buf_pos: 0,
        }
    }

    /// The next whole batch, CRC-checked; `None` at the end of the segment.
    pub(super) async fn next_batch(&mut self) -> Result<Option<Bytes>, StorageError> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let mut off = (self.pos - self.buf_pos) as usize;
        if self.pos < self.buf_pos || off + batch::LOG_OVERHEAD > self.buf.len() {
            self.fill(CLEANER_IO_BYTES).await?;
            off = 0;
        }
        let total = match batch::framed_len(&self.buf[off..]) {
            Some(Ok(t)) if t <= CLEANER_BATCH_BYTES_MAX => t,
            _ => {
                return Err(StorageError::CorruptMessage(format!(
                    "bad batch framing at position {} of a sealed segment",
                    self.pos
                )))
            }
        };
        if self.pos + total as u64 > self.len {
            return Err(StorageError::CorruptMessage(format!(
                "batch at position {} runs past the segment end",
                self.pos
            )));
        }
        if off + total > self.buf.len() {
            self.fill(total.max(CLEANER_IO_BYTES)).await?;
            off = 0;
            if self.buf.len() < total {
                return Err(StorageError::CorruptMessage("short read of a batch".into()));
            }
        }
        let b = self.buf.slice(off..off + total);
        validate_stored(&b)?;
        self.pos += total as u64;
        Ok(Some(b))
    }

    async fn fill(&mut self, want: usize) -> Result<(), StorageError> {
        let n = want.min((self.len - self.pos) as usize);
        self.buf = self.file.read(self.pos, n).await?;
        self.buf_pos = self.pos;
        if self.buf.len() < batch::LOG_OVERHEAD.min(n) {
            return Err(StorageError::CorruptMessage(
                "short read of a segment".into(),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Writing a cleaned segment.

/// The cleaned segment being written to `<base>.log.cleaned`, with its indexes built as it
/// grows.
pub(super) struct CleanedWriter {
    file: DataFile,
    /// Bytes not yet written (everything past `written`).
    buf: Vec<u8>,
    /// Aligned bytes already written.
    written: u64,
    seg: Segment,
    interval: u64,
}

impl CleanedWriter {
    /// Create (or empty) the `.cleaned` file of a group starting at `base` in `dir`.
    /// `interval`: `index.interval.bytes` of the topic.
    pub(super) async fn create(
        dir: &Path,
        base: i64,
        interval: u64,
    ) -> Result<CleanedWriter, StorageError> {
        let file = DataFile::open_rw(&dir.join(file_names::cleaned_file_name(base))).await?;
        file.truncate(0).await?;
        Ok(CleanedWriter {
            file,
            buf: Vec::new(),
            written: 0,
            seg: Segment::new(base, -1),
            interval,
        })
    }

    /// Append one batch (kept or rewritten by the filter).
    pub(super) async fn append(&mut self, b: &[u8]) -> Result<(), StorageError> {
        let h = batch::header(b).ok_or_else(|| corrupt("short batch"))?;
        let pos = self.written + self.buf.len() as u64;
        let max_ts = h.max_timestamp();
        let last = h.last_offset();
        self.seg
            .index_batch(pos, b.len() as u64, last, max_ts, self.interval);
        self.seg.len = pos + b.len() as u64;
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CLEANER_IO_BYTES {
            let n = align_down(self.buf.len() as u64) as usize;
            self.file
                .write_padded(self.written, &[&self.buf[..n]], CLEANER_IO_BYTES)
                .await?;
            self.written += n as u64;
            self.buf.drain(..n);
        }
        Ok(())
    }

    /// Write the rest, cut the file to its length and fdatasync it: the sealed segment, to be
    /// swapped in. `next_offset`: the offset after the group.
    pub(super) async fn finish(self, next_offset: i64) -> Result<Segment, StorageError> {
        if !self.buf.is_empty() {
            self.file
                .write_padded(self.written, &[&self.buf], CLEANER_IO_BYTES)
                .await?;
        }
        self.file.truncate(self.seg.len).await?;
        self.file.sync().await?;
        let mut seg = self.seg;
        seg.finish_time_index();
        seg.file = Some(self.file);
        seg.durable_len = seg.len;
        seg.written_len = seg.len;
        seg.preallocated_len = seg.len;
        seg.next_offset = next_offset;
        seg.durable_next_offset = next_offset;
        seg.sealed = true;
        Ok(seg)
    }
}

/// Whether the segments `group` (base, length) are still in the log, sealed, at the lengths
/// the round read, and followed by the segment at `group_end` (retention, DeleteRecords or a
/// close may have changed the log while the group was cleaned). `base`: the group's first
/// base offset. Called under the log's metadata lock.
fn group_still_there(shared: &Shared, group: &[(i64, u64)], group_end: i64, base: i64) -> bool {
    let inner = shared.inner.borrow();
    inner.life == Life::Open
        && inner.segment_index(base).is_some_and(|i| {
            group.iter().enumerate().all(|(k, &(b, len))| {
                inner
                    .segments
                    .get(i + k)
                    .is_some_and(|s| s.base_offset == b && s.sealed && s.durable_len == len)
            }) && inner
                .segments
                .get(i + group.len())
                .is_some_and(|s| s.base_offset == group_end)
        })
}

/// Replace the segments `group` (base, length) by `new_seg` if they are still there: the
/// crash-safe swap of the module docs. `Ok(false)`: the log changed, nothing replaced.
pub(super) async fn swap_in(
    shared: &Shared,
    group: &[(i64, u64)],
    group_end: i64,
    new_seg: Segment,
) -> Result<bool, StorageError> {
    let base = new_seg.base_offset;
    let dir = &shared.dir;
    let log_name = segment_file_name(base, LOG_EXT);
    let cleaned_name = file_names::cleaned_file_name(base);
    let swap_name = file_names::swap_file_name(base);
    let _guard = lock_meta(shared).await;
    let still_there = group_still_there(shared, group, group_end, base);
    if !still_there {
        if let Err(e) = io::remove_files(dir, vec![cleaned_name]).await {
            tracing::warn!(dir = %dir.display(), error = %e, "removing an abandoned cleaned segment failed");
        }
        return Ok(false);
    }
    let oi = new_seg.offset_index.encode();
    let ti = new_seg.time_index.encode();
    // The aborted-transaction entries of the group go to the new segment's index first (a
    // superset until the swap: duplicates are ignored on read).
    let bases: Vec<i64> = group.iter().map(|&(b, _)| b).collect();
    let old_txn_indexes = txn::merge_for_swap(shared, &bases).await?;
    // Commit point: from here a crash completes the swap on open.
    io::rename_file(&dir.join(&cleaned_name), &dir.join(&swap_name)).await?;
    io::sync_dir(dir).await?;
    let mut old = old_txn_indexes;
    for &(b, _) in group {
        old.push(segment_file_name(b, INDEX_EXT));
        old.push(segment_file_name(b, TIME_INDEX_EXT));
        if b != base {
            old.push(segment_file_name(b, LOG_EXT));
        }
    }
    io::remove_files(dir, old).await?;
    io::rename_file(&dir.join(&swap_name), &dir.join(&log_name)).await?;
    if let Some(file) = &new_seg.file {
        // Its descriptor may be closed by the shard's file pool and reopened by name.
        file.renamed(&dir.join(&log_name));
    }
    io::sync_dir(dir).await?;
    write_indexes(dir, base, oi, ti).await?;
    let mut inner = shared.inner.borrow_mut();
    let i = inner
        .segment_index(base)
        .expect("segments cannot change while the metadata lock is held");
    for _ in 0..group.len() {
        inner.segments.remove(i);
    }
    inner.segments.insert(i, new_seg);
    inner.recompute_max_timestamp();
    drop(inner);
    shared.cache.evict_below(shared.cache_id, group_end);
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Recovery of an interrupted swap.

/// Last offset of the batches in a (committed, fully written) swap file, read through
/// `storage::io` (so recovery of an interrupted swap runs on the simulated disk too): one
/// header read per batch.
async fn swap_last_offset(path: &Path) -> Result<Option<i64>, StorageError> {
    let f = DataFile::open_read(path).await?;
    let len = f.size().await?;
    let mut pos = 0u64;
    let mut last = None;
    while pos + batch::HEADER_LEN as u64 <= len {
        let head = f.read(pos, batch::HEADER_LEN).await?;
        let Some(h) = batch::header(&head) else {
            break;
        };
        let total = h.total_len();
        if total < batch::HEADER_LEN as i64 || pos + total as u64 > len {
            break;
        }
        last = Some(h.last_offset());
        pos += total as u64;
    }
    Ok(last)
}

/// Called by [`PartitionLog::open`] before recovery: delete half-written `.cleaned` segments
/// and complete every committed `.swap` (remove the segments it replaces, rename it into
/// place). Index files of the replaced segments are removed; recovery rebuilds them.
pub async fn finish_interrupted_swaps(dir: &Path) -> Result<(), StorageError> {
    let names = io::list_dir(dir).await?;
    let cleaned: Vec<String> = names
        .iter()
        .filter(|n| file_names::is_cleaned_file_name(n))
        .cloned()
        .collect();
    if !cleaned.is_empty() {
        io::remove_files(dir, cleaned).await?;
    }
    let mut swaps: Vec<i64> = names
        .iter()
        .filter_map(|n| file_names::parse_swap_file_name(n))
        .collect();
    swaps.sort_unstable();
    for base in swaps {
        let swap_name = file_names::swap_file_name(base);
        let swap_path = dir.join(&swap_name);
        let last = swap_last_offset(&swap_path).await?;
        let Some(last) = last else {
            tracing::warn!(dir = %dir.display(), base, "empty swap segment discarded");
            io::remove_files(dir, vec![swap_name]).await?;
            continue;
        };
        let mut doomed = Vec::new();
        for n in &names {
            let Some((b, ext)) = file_names::parse_segment_member(n) else {
                continue;
            };
            // The base's `.txnindex` already holds the merged entries of the group.
            if b >= base && b <= last && !(b == base && (ext == LOG_EXT || ext == TXN_INDEX_EXT)) {
                doomed.push(n.clone());
            }
        }
        tracing::warn!(dir = %dir.display(), base, last, replaced = ?doomed, "completing an interrupted cleaner swap");
        io::remove_files(dir, doomed).await?;
        io::rename_file(&swap_path, &dir.join(segment_file_name(base, LOG_EXT))).await?;
        io::sync_dir(dir).await?;
    }
    Ok(())
}
