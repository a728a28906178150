//! Opening a partition log: recovery from what is on disk, and [`prime_disk`].
//!
//! See [`crate::storage::checkpoint`] for the recovery point. On open, an interrupted cleaner
//! swap is completed first ([`cleaner::finish_interrupted_swaps`]) and leftovers of interrupted
//! atomic writes and deletions are removed. Segments below the recovery segment are trusted and
//! not rescanned (after a clean close that is every segment but the active one, whose recovery
//! point is its end): their index files are checked entry by entry (and rebuilt by a CRC scan
//! if missing or damaged), and only the tail from the last index entry (at most
//! `index.interval.bytes` plus one batch) is read, to check that the file still ends exactly
//! where a whole batch does. From the recovery point on, every batch is read back and checked:
//! framing, magic, CRC-32C, record count, and that its base offset continues the previous
//! batch. Only the *last* segment may end in a failure (a torn write, zero padding,
//! preallocated space): it is truncated there. Damage anywhere else (a sealed segment whose
//! batches do not reach its end, a segment shorter than the recovery point, an empty or
//! overlapping sealed segment) takes the partition *offline*: `open` fails with
//! [`StorageError::Io`] (KAFKA_STORAGE_ERROR for clients), the reason is logged with the
//! segment's name, and nothing is truncated or deleted, so no acknowledged record is lost and
//! no offset is ever given out twice; the operator decides. Offsets missing *between* segments
//! (a segment file removed by hand) are not damage: reads in the gap answer with the next
//! segment's batches, as Kafka does. A sealed segment cut exactly at a batch boundary looks the
//! same as such a gap and is served the same way. Sealed segments may have been rewritten by
//! the [`cleaner`] (offset gaps between batches, batches with fewer records than offsets): the
//! scan accepts forward gaps except in the last segment. The active segment is then
//! fdatasync'd, segments whose roll was interrupted are sealed, the high watermark is set to
//! the log end, and the producer state is rebuilt from its newest snapshot (see
//! [`producer_snapshot`]) by replaying the batches after it. The leader-epoch cache comes from
//! its file plus the epochs of the batches the scan read, and is checked against the log's last
//! batch; a missing, damaged or disagreeing file is rebuilt from the log (see `epochs`).

use super::segment::{load_indexes, write_indexes};
use super::SCAN_BATCH_BYTES_MAX;
use super::SCAN_READ_BYTES;
use super::{cleaner, epochs, txn, Inner, Life, PartitionLog, Segment, Shared};
use crate::storage::cache::TailCache;
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::file_names::{self, segment_file_name, LOG_EXT, SEGMENT_EXTS};
use crate::storage::io::{self, align_down, DataFile};
use crate::storage::leader_epoch::LeaderEpochCache;
use crate::storage::producer_state::{BatchFacts, ProducerStateTable};
use crate::storage::txn_index::TxnIndexes;
use crate::storage::{producer_snapshot, LogConfig, StorageError};
use bytes::Bytes;
use freshet_protocol::batch;
use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::rc::Rc;

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

/// What recovery learned about one segment.
struct ScanOutcome {
    valid_len: u64,
    next_offset: i64,
    first_max_timestamp: Option<i64>,
    tail_block: Vec<u8>,
    log_max: (i64, i64),
    /// (epoch, base offset) of each scanned batch whose leader epoch is above every earlier
    /// one's: what the leader-epoch cache may lack (see `epochs`).
    epoch_starts: Vec<(i32, i64)>,
}

/// Reads a segment file batch by batch, [`SCAN_READ_BYTES`] at a time.
pub(super) struct Scanner<'a> {
    pub(super) file: &'a DataFile,
    pub(super) file_len: u64,
    pub(super) buf: Bytes,
    pub(super) buf_pos: u64,
}

impl Scanner<'_> {
    /// The whole batch (by its framing only) at `pos`, or `None` if the file does not hold
    /// one there. `pos` never goes backwards between calls.
    pub(super) async fn batch_at(&mut self, pos: u64) -> Result<Option<Bytes>, StorageError> {
        let file_len = self.file_len;
        // Make sure the header of the batch at `pos` is buffered.
        let mut off = (pos - self.buf_pos) as usize;
        if off + batch::LOG_OVERHEAD > self.buf.len() {
            if pos + batch::LOG_OVERHEAD as u64 > file_len {
                return Ok(None);
            }
            let want = SCAN_READ_BYTES.min((file_len - pos) as usize);
            self.buf = self.file.read(pos, want).await?;
            self.buf_pos = pos;
            off = 0;
            if self.buf.len() < batch::LOG_OVERHEAD {
                return Ok(None);
            }
        }
        let total = match batch::framed_len(&self.buf[off..]) {
            Some(Ok(t)) if t <= SCAN_BATCH_BYTES_MAX => t,
            _ => return Ok(None),
        };
        if pos + total as u64 > file_len {
            return Ok(None);
        }
        if off + total > self.buf.len() {
            let want = total.max(SCAN_READ_BYTES.min((file_len - pos) as usize));
            self.buf = self.file.read(pos, want).await?;
            self.buf_pos = pos;
            off = 0;
            if self.buf.len() < total {
                return Ok(None);
            }
        }
        Ok(Some(self.buf.slice(off..off + total)))
    }
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
    let mut epoch_starts: Vec<(i32, i64)> = Vec::new();
    let mut scanner = Scanner {
        file,
        file_len,
        buf: Bytes::new(),
        buf_pos: pos,
    };
    while let Some(b) = scanner.batch_at(pos).await? {
        let total = b.len();
        let Ok(h) = cleaner::validate_stored(&b) else {
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
            log_max = (max_ts, batch::offset_of_max_timestamp(&b));
        }
        seg.index_batch(pos, total as u64, last, max_ts, interval);
        let epoch = h.partition_leader_epoch.get();
        if epoch >= 0 && epoch_starts.last().is_none_or(|(e, _)| epoch > *e) {
            epoch_starts.push((epoch, h.base_offset()));
        }
        expected = last + 1;
        pos += total as u64;
    }
    Ok(ScanOutcome {
        valid_len: pos,
        next_offset: expected,
        first_max_timestamp,
        tail_block: read_tail_block(file, pos).await?,
        log_max,
        epoch_starts,
    })
}

/// The durable bytes of the partial last block before `end`, for the next O_DIRECT rewrite.
pub(super) async fn read_tail_block(file: &DataFile, end: u64) -> Result<Vec<u8>, StorageError> {
    let block_start = align_down(end);
    if end == block_start {
        return Ok(Vec::new());
    }
    let t = file.read(block_start, (end - block_start) as usize).await?;
    if t.len() as u64 != end - block_start {
        return Err(StorageError::Io {
            op: "read segment tail block",
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
        });
    }
    Ok(t.to_vec())
}

/// The base offsets of the segment files in `dir`, ascending; removes temp files of
/// interrupted atomic writes, and index files whose segment is gone (an interrupted deletion).
async fn list_segments(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let names = io::list_dir(dir).await?;
    let log_bases: HashSet<i64> = names
        .iter()
        .filter_map(|n| file_names::parse_segment_file_name(n, LOG_EXT))
        .collect();
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
    let mut bases: Vec<i64> = log_bases.into_iter().collect();
    bases.sort_unstable();
    Ok(bases)
}

/// What the segment loop of recovery found.
struct Recovered {
    segments: VecDeque<Segment>,
    /// (max timestamp, its offset) over the recovered data.
    max_ts: (i64, i64),
    /// The files differ from what the checkpoint describes (or there is none).
    changed: bool,
    /// `ScanOutcome::epoch_starts` of every scanned segment, in log order.
    epoch_starts: Vec<(i32, i64)>,
}

/// Fail (offline) if segment `base` overlaps the one before it; warn about a gap.
fn check_continuity(
    dir: &Path,
    name: &str,
    prev: Option<&Segment>,
    base: i64,
) -> Result<(), StorageError> {
    // A gap (a segment file deleted by hand) is served as Kafka does: reads skip to the next
    // batch. An overlap means offsets would be served twice.
    let Some(prev) = prev else {
        return Ok(());
    };
    if prev.next_offset > base {
        return Err(offline(
            dir,
            name,
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
    Ok(())
}

/// A segment sealed and durable before the checkpoint was written (`next_base` is the base of
/// the segment after it): not rescanned. Only its tail (from its last index entry) is read to
/// check that the file still ends where its last batch does; missing or damaged index files
/// are rebuilt by a scan.
async fn recover_trusted(
    dir: &Path,
    name: &str,
    file: &DataFile,
    seg: &mut Segment,
    next_base: i64,
    file_len: u64,
    interval: u64,
) -> Result<(), StorageError> {
    let base = seg.base_offset;
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
                scan_segment(file, &mut scratch, from, base, file_len, interval, true).await?;
            if out.valid_len != file_len {
                return Err(damaged(dir, name, out.valid_len, file_len));
            }
            seg.next_offset = out.next_offset;
            // It becomes the active segment again if the one after it is an empty leftover
            // of a roll: its next write rewrites this block.
            seg.tail_block = out.tail_block;
        }
        None => {
            tracing::warn!(dir = %dir.display(), base, "rebuilding missing or damaged index");
            let out = scan_segment(file, seg, 0, base, file_len, interval, true).await?;
            if out.valid_len != file_len {
                return Err(damaged(dir, name, out.valid_len, file_len));
            }
            seg.next_offset = out.next_offset;
            seg.tail_block = out.tail_block;
            seg.finish_time_index();
        }
    }
    Ok(())
}

/// Where the scan of an untrusted segment starts: (file position, the offset expected there),
/// from the checkpoint's recovery point if it is this segment, with its index files loaded
/// into `seg` up to there; else the segment's start.
async fn scan_start(
    dir: &Path,
    name: &str,
    seg: &mut Segment,
    cp: Option<Checkpoint>,
    file_len: u64,
) -> Result<(u64, i64), StorageError> {
    let base = seg.base_offset;
    let (start, expected) = match cp {
        Some(c) if c.recovery_segment == base => {
            if c.recovery_position > file_len {
                // Bytes the checkpoint says were durable are gone.
                return Err(damaged(dir, name, file_len, c.recovery_position));
            }
            (c.recovery_position, c.recovery_offset)
        }
        _ => (0, base),
    };
    if start == 0 {
        return Ok((0, base));
    }
    let Some((mut oi, mut ti)) = load_indexes(dir, base, start, expected - 1 - base).await? else {
        return Ok((0, base));
    };
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
    Ok((start, expected))
}

/// A segment from the recovery point on: every batch is read back and checked; the last
/// segment is cut after its last good batch, any other must end exactly there.
#[allow(clippy::too_many_arguments)]
async fn recover_scanned(
    dir: &Path,
    name: &str,
    file: &DataFile,
    seg: &mut Segment,
    cp: Option<Checkpoint>,
    is_last: bool,
    file_len: u64,
    interval: u64,
    found: &mut Recovered,
) -> Result<(), StorageError> {
    // The checkpoint promised durable batches up to `promised`.
    let promised = match cp {
        Some(c) if c.recovery_segment == seg.base_offset => c.recovery_position,
        _ => 0,
    };
    let (start, expected) = scan_start(dir, name, seg, cp, file_len).await?;
    let out = scan_segment(file, seg, start, expected, file_len, interval, !is_last).await?;
    if out.valid_len < promised {
        return Err(damaged(dir, name, out.valid_len, promised));
    }
    if out.valid_len != file_len && !is_last {
        // A sealed segment is truncated to its last batch before the next one is created:
        // anything else here is damage, not a torn write.
        return Err(damaged(dir, name, out.valid_len, file_len));
    }
    seg.len = out.valid_len;
    seg.next_offset = out.next_offset;
    seg.tail_block = out.tail_block;
    if let Some(t) = out.first_max_timestamp {
        seg.roll_time_ms = t;
    }
    if out.log_max.0 > found.max_ts.0 {
        found.max_ts = out.log_max;
    }
    found.epoch_starts.extend(out.epoch_starts);
    if out.valid_len != file_len {
        // The last segment only: a torn tail, zero padding of the last block or preallocated
        // space. Cut it.
        file.truncate(out.valid_len).await?;
        file.sync().await?;
        found.changed = true;
    }
    seg.finish_time_index();
    Ok(())
}

/// Recover every segment of `bases` in order into `found` (see the module docs).
async fn recover_segments(
    dir: &Path,
    bases: &[i64],
    cp: Option<Checkpoint>,
    interval: u64,
    found: &mut Recovered,
) -> Result<(), StorageError> {
    for (i, &base) in bases.iter().enumerate() {
        let name = segment_file_name(base, LOG_EXT);
        let next_base = bases.get(i + 1).copied();
        let is_last = next_base.is_none();
        check_continuity(dir, &name, found.segments.back(), base)?;
        let file = DataFile::open_rw(&dir.join(&name)).await?;
        let file_len = file.size().await?;
        let mut seg = Segment::new(base, -1);
        match (cp, next_base) {
            (Some(c), Some(next_base)) if base < c.recovery_segment => {
                recover_trusted(dir, &name, &file, &mut seg, next_base, file_len, interval).await?;
            }
            _ => {
                recover_scanned(
                    dir, &name, &file, &mut seg, cp, is_last, file_len, interval, found,
                )
                .await?;
            }
        }
        seg.durable_len = seg.len;
        seg.written_len = seg.len;
        seg.written_tail_block = seg.tail_block.clone();
        seg.durable_next_offset = seg.next_offset;
        seg.preallocated_len = seg.len;
        if seg.max_timestamp > found.max_ts.0 {
            found.max_ts = (seg.max_timestamp, seg.max_timestamp_offset);
        }
        seg.file = Some(file);
        if seg.len == 0 && !is_last {
            // Sealed segments are never empty (the cleaner keeps their last batch).
            return Err(offline(dir, &name, "it is empty".to_string()));
        }
        // A freshly rolled segment that never received data: the previous segment becomes
        // the active one again, unless offsets are missing before this one (then it stays,
        // so that no offset below its base is ever given out again).
        if seg.len == 0 && found.segments.back().is_some_and(|p| p.next_offset == base) {
            drop(seg);
            let names = SEGMENT_EXTS
                .iter()
                .map(|ext| segment_file_name(base, ext))
                .collect();
            io::remove_files(dir, names).await?;
            found.changed = true;
            break;
        }
        found.segments.push_back(seg);
    }
    Ok(())
}

/// The recovery point is durable data: a log that ends below it lost its last segment(s),
/// and the offsets in between must not be given out again.
fn check_reaches_recovery_point(
    dir: &Path,
    cp: Option<Checkpoint>,
    segments: &VecDeque<Segment>,
) -> Result<(), StorageError> {
    let Some(c) = cp else {
        return Ok(());
    };
    let found_end = segments
        .back()
        .map_or(c.log_start_offset, |s| s.next_offset);
    if found_end < c.recovery_offset {
        return Err(offline(
            dir,
            &segment_file_name(c.recovery_segment, LOG_EXT),
            format!(
                "the log ends at offset {found_end}, below its recovery point {}: the last \
                 segment(s) are missing",
                c.recovery_offset
            ),
        ));
    }
    Ok(())
}

/// Make the recovered segments a log: create the first segment of an empty directory, make
/// the last segment the active one (writable, durable, not sealed) and seal earlier segments
/// recovery had to scan (a roll was interrupted).
async fn prepare_segments(
    dir: &Path,
    found: &mut Recovered,
    first_base: i64,
) -> Result<(), StorageError> {
    if found.segments.is_empty() {
        let path = dir.join(segment_file_name(first_base, LOG_EXT));
        let file = DataFile::open_rw(&path).await?;
        file.truncate(0).await?;
        io::sync_dir(dir).await?;
        let mut seg = Segment::new(first_base, -1);
        seg.file = Some(file);
        found.segments.push_back(seg);
        found.changed = true;
    }
    let active_idx = found.segments.len() - 1;
    {
        let active = &mut found.segments[active_idx];
        active.sealed = false;
        if let Some(f) = &active.file {
            f.sync().await?;
        }
    }
    for seg in found.segments.iter_mut().take(active_idx) {
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
            found.changed = true;
        }
    }
    Ok(())
}

/// The checkpoint the opened log starts from: the one on disk if it still describes the
/// active segment's trusted prefix and nothing changed, else a new one, written.
async fn settle_checkpoint(
    dir: &Path,
    cp: Option<Checkpoint>,
    changed: bool,
    active_base: i64,
    log_start: i64,
    log_end: i64,
) -> Result<Checkpoint, StorageError> {
    if let Some(c) = cp.filter(|c| {
        !changed && c.recovery_segment == active_base && c.log_start_offset == log_start
    }) {
        return Ok(c);
    }
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
        // Committed offsets: kept while the log reaches them.
        high_watermark: cp.map(|c| c.high_watermark.min(log_end)).unwrap_or(-1),
    };
    io::write_file_atomic(&dir.join(checkpoint::FILE_NAME), checkpoint.encode()).await?;
    Ok(checkpoint)
}

/// The state of a log recovered as `found`, between `log_start` and `log_end`.
fn new_inner(
    config: LogConfig,
    found: Recovered,
    checkpoint: Checkpoint,
    (log_start, log_end): (i64, i64),
    epochs: Option<LeaderEpochCache>,
) -> Inner {
    Inner {
        config,
        life: Life::Open,
        log_start_offset: log_start,
        log_end_offset: log_end,
        high_watermark: log_end,
        segments: found.segments,
        pending: VecDeque::new(),
        pending_bytes: 0,
        flushing: false,
        change_waiters: Vec::new(),
        max_timestamp: found.max_ts,
        checkpoint,
        meta_locked: false,
        flush_count: 0,
        producers: ProducerStateTable::new(),
        roll_snapshot: None,
        txn_index: TxnIndexes::default(),
        modified: false,
        leader_epoch: epochs
            .as_ref()
            .and_then(LeaderEpochCache::latest_epoch)
            .unwrap_or(0),
        epochs: epochs.unwrap_or_default(),
        epochs_dirty: false,
        epochs_soft: false,
        truncating: false,
        replicated_hw: None,
    }
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
        let bases = list_segments(dir).await?;
        let cp_data =
            io::read_small_file(&dir.join(checkpoint::FILE_NAME), checkpoint::FILE_BYTES_MAX)
                .await?;
        let cp = cp_data.as_deref().and_then(Checkpoint::decode);
        let interval = u64::from(config.index_interval_bytes);
        let mut found = Recovered {
            segments: VecDeque::new(),
            max_ts: (-1, -1),
            changed: cp.is_none(),
            epoch_starts: Vec::new(),
        };
        recover_segments(dir, &bases, cp, interval, &mut found).await?;
        check_reaches_recovery_point(dir, cp, &found.segments)?;
        let start_hint = cp.map_or(0, |c| c.log_start_offset);
        prepare_segments(dir, &mut found, start_hint.max(0)).await?;
        let first_base = found.segments.front().map_or(0, |s| s.base_offset);
        let log_end = found.segments.back().map_or(0, |s| s.next_offset);
        let log_start = start_hint.clamp(first_base, log_end);
        let active_base = found.segments.back().map_or(0, |s| s.base_offset);
        // The leader-epoch file first: the new recovery checkpoint may trust segments the
        // scan just read, whose epochs only the file will then remember.
        let epoch_cache =
            epochs::load_on_open(dir, &found.epoch_starts, log_start, log_end).await?;
        let epochs_loaded = epoch_cache.is_some();
        let checkpoint =
            settle_checkpoint(dir, cp, found.changed, active_base, log_start, log_end).await?;
        let cache_id = cache.register();
        let inner = new_inner(config, found, checkpoint, (log_start, log_end), epoch_cache);
        let log = PartitionLog {
            shared: Rc::new(Shared {
                dir: dir.to_path_buf(),
                cache,
                cache_id,
                inner: RefCell::new(inner),
            }),
        };
        // Segments wholly below the log start are garbage from an interrupted deletion.
        log.delete_segments_below_start().await?;
        log.rebuild_producer_state().await?;
        log.check_epochs_on_open(epochs_loaded).await?;
        Ok(log)
    }

    /// Load the newest producer snapshot and replay the batches after it (module docs of
    /// [`producer_snapshot`]).
    pub(super) async fn rebuild_producer_state(&self) -> Result<(), StorageError> {
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
        if !txn::load_on_open(&self.shared).await? {
            // A damaged transaction index: rebuild everything from the log start.
            snapshot_offset = 0;
            table = ProducerStateTable::new();
        }
        let mut offset = snapshot_offset.max(log_start);
        txn::reset_from(&self.shared, offset).await?;
        while offset < log_end {
            // Up to the durable end, not the high watermark readers see: a follower's
            // replicated high watermark may lag its log, and every batch it holds counts for
            // duplicate detection once it leads.
            let data = self.read_for_replica(offset, SCAN_READ_BYTES, true).await?;
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
                    batch::control_marker(b)
                } else {
                    None
                };
                let done = table.apply(&f, h.base_offset(), h.max_timestamp(), marker);
                if let Some(d) = done.filter(|d| d.aborted) {
                    let mut inner = self.shared.inner.borrow_mut();
                    let seg = inner.segment_for(d.last_offset).unwrap_or(0);
                    let base = inner.segments[seg].base_offset;
                    let entry = txn::aborted_entry(d, table.first_unstable_offset());
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
        txn::persist_below(&self.shared, active.unwrap_or(0)).await
    }
}
