//! Reads: whole batches from the tail cache or the disk, and time lookups.
//!
//! Reads never pass the high watermark. Offsets covered by the tail cache are answered with
//! `Bytes` clones; others go to disk: the offset index gives a position at most
//! `index.interval.bytes` before the batch, and one read (copied once into `Bytes`, sliced per
//! batch) returns whole batches up to `max_bytes`, from one segment per call (as Kafka).
//! Offsets missing between two segments (a removed segment file) are answered with the next
//! segment's batches, as Kafka does.
//!
//! Every batch a disk read walks is checked right after the read (`check::batch_after_read`):
//! whole, offsets inside the segment's durable offsets and increasing; every batch it returns
//! also by its CRC-32C (`check::crc_after_read`). Damage is
//! answered with [`StorageError::CorruptMessage`]; the good batches before it are still
//! served, and the read that starts at the damaged batch gets the error. A length field above
//! [`SCAN_BATCH_BYTES_MAX`] is damage too, so one read buffers at most
//! `max(min(max_bytes, READ_BYTES_MAX) + index.interval.bytes + 64 KiB, SCAN_BATCH_BYTES_MAX)`
//! bytes whatever the disk holds.

use super::check::{self, ReadRequest};
use super::{Inner, Life, PartitionLog, READ_BYTES_MAX, SCAN_BATCH_BYTES_MAX};
use crate::storage::io::DataFile;
use crate::storage::{ReadData, StorageError};
use bytes::Bytes;
use freshet_protocol::batch;
use freshet_protocol::records;

/// Bytes read beyond `max_bytes` so that one read also covers the walk from the index entry
/// to the batch asked for.
const READ_SLACK_BYTES: usize = 64 * 1024;

/// Where a read is answered from, decided under the borrow.
enum Source {
    /// Answered without the disk (cache, empty, past the limit).
    Done(ReadData),
    /// Read from a segment file; the answer so far (no batches: high watermark, log start).
    Disk(DiskSpan, ReadData),
}

/// The part of a segment file a read walks, and what it must find there.
struct DiskSpan {
    file: DataFile,
    /// File position to start at (an offset index entry's, or 0).
    start: u64,
    /// The segment's durable end (bytes).
    end: u64,
    segment_base: i64,
    /// Offset after the segment's last durable batch.
    durable_next: i64,
    /// Last offset of the batch at `start`, when an index entry named it.
    first_last: Option<i64>,
    /// Batches starting at or past this offset are not returned (high watermark or `end`).
    limit: i64,
    index_interval: usize,
}

impl PartitionLog {
    /// Whole batches starting with the batch containing `offset`, up to `max_bytes` total; if
    /// `min_one_batch` the first batch is returned even if larger (Kafka's rule). Never past
    /// the high watermark. Offset outside `[log_start, durable end]` -> `OffsetOutOfRange`
    /// (offset at or past the high watermark -> empty). Cached tail: `Bytes` clones; disk: one copy.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadData, StorageError> {
        self.read_upto(offset, max_bytes, min_one_batch, i64::MAX)
            .await
    }

    /// [`PartitionLog::read`], returning only batches that start below `end` (the last stable
    /// offset for read_committed fetches).
    pub async fn read_upto(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        end: i64,
    ) -> Result<ReadData, StorageError> {
        self.read_within(offset, max_bytes, min_one_batch, end, false)
            .await
    }

    /// The reads' common body: batches from `offset` that start below `end` and below the
    /// high watermark readers see, or (`to_durable_end`: a follower's fetch) below the durable
    /// end.
    pub(super) async fn read_within(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        end: i64,
        to_durable_end: bool,
    ) -> Result<ReadData, StorageError> {
        let located = self.locate(offset, max_bytes, min_one_batch, end, to_durable_end)?;
        let (span, empty) = match located {
            Source::Done(data) => return Ok(data),
            Source::Disk(span, empty) => (span, empty),
        };
        let mut read = DiskRead {
            req: ReadRequest {
                dir: &self.shared.dir,
                segment_base: span.segment_base,
                durable_next: span.durable_next,
                first_last: span.first_last,
                offset,
            },
            limit: span.limit,
            max_bytes,
            min_one_batch,
            out: Vec::new(),
            total: 0,
            prev_last: None,
        };
        read.run(&span.file, span.start, span.end, span.index_interval)
            .await?;
        Ok(ReadData {
            batches: read.out,
            ..empty
        })
    }

    /// Decide under the borrow where a read is answered from: range checks, the tail cache,
    /// or the segment and file position to read (from the offset index). The range is
    /// `[log start, durable end]` (Kafka checks against the log end; between the high
    /// watermark and the durable end a consumer's read is empty).
    fn locate(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        end: i64,
        to_durable_end: bool,
    ) -> Result<Source, StorageError> {
        let shared = &*self.shared;
        let inner = shared.inner.borrow();
        if inner.life == Life::Closed {
            return Err(StorageError::Closed);
        }
        let durable_end = inner.high_watermark;
        let hw = inner.visible_high_watermark();
        let log_start = inner.log_start_offset;
        if offset < log_start || offset > durable_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark: hw,
            });
        }
        let empty = ReadData {
            batches: Vec::new(),
            high_watermark: hw,
            log_start_offset: log_start,
        };
        let limit = if to_durable_end { durable_end } else { hw }.min(end);
        if offset >= limit {
            return Ok(Source::Done(empty));
        }
        if let Some(batches) =
            shared
                .cache
                .read(shared.cache_id, offset, limit, max_bytes, min_one_batch)
        {
            return Ok(Source::Done(ReadData { batches, ..empty }));
        }
        match disk_span(&inner, offset, limit) {
            Some(span) => Ok(Source::Disk(span, empty)),
            None => Ok(Source::Done(empty)),
        }
    }

    /// Kafka ListOffsets by timestamp: the earliest offset whose record timestamp is `>= ts`,
    /// with that timestamp; `None` if there is none. Uses the time index, then looks inside
    /// the batch.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let mut offset = {
            let inner = self.shared.inner.borrow();
            if inner.life == Life::Closed {
                return Err(StorageError::Closed);
            }
            let Some(seg) = inner.segments.iter().find(|s| s.max_timestamp >= ts) else {
                return Ok(None);
            };
            let start = match seg.time_index.last_before(ts) {
                Some(rel) => seg.base_offset + i64::from(rel) + 1,
                None => seg.base_offset,
            };
            start.max(inner.log_start_offset)
        };
        let floor = offset;
        loop {
            let data = match self.read(offset, 1 << 20, true).await {
                Ok(d) => d,
                Err(StorageError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Some(last) = data.batches.last() else {
                return Ok(None);
            };
            for b in &data.batches {
                let Some(h) = batch::header(b) else {
                    return Err(StorageError::CorruptMessage("short batch in log".into()));
                };
                if h.max_timestamp() < ts || h.last_offset() < floor {
                    continue;
                }
                if let Some(found) = find_in_batch(b, ts, floor)? {
                    return Ok(Some(found));
                }
            }
            let Some(h) = batch::header(last) else {
                return Err(StorageError::CorruptMessage("short batch in log".into()));
            };
            offset = h.last_offset() + 1;
        }
    }
}

/// The segment and file position a disk read of `offset` starts at; `None` if no segment
/// holds it (or its file is not created yet).
fn disk_span(inner: &Inner, offset: i64, limit: i64) -> Option<DiskSpan> {
    let mut si = inner.segment_for(offset)?;
    // Offsets missing between two segments (a removed segment file): answer with the next
    // segment's batches, as Kafka does.
    while inner.segments[si].durable_next_offset <= offset && si + 1 < inner.segments.len() {
        si += 1;
    }
    let seg = &inner.segments[si];
    let file = seg.file.clone()?;
    // Start at the index entry below `offset`: the batch there ends at the entry's offset.
    let entry = if offset <= seg.base_offset {
        None
    } else {
        seg.offset_index.entry_at_or_before(seg.rel(offset))
    };
    let (pos, first_last) = match entry {
        Some((rel, pos)) => (pos, Some(seg.base_offset + i64::from(rel))),
        None => (0, None),
    };
    Some(DiskSpan {
        file,
        start: u64::from(pos),
        end: seg.durable_len,
        segment_base: seg.base_offset,
        durable_next: seg.durable_next_offset,
        first_last,
        limit,
        index_interval: inner.config.index_interval_bytes as usize,
    })
}

/// The first record of `b` at or after offset `floor` whose timestamp is `>= ts`.
fn find_in_batch(b: &[u8], ts: i64, floor: i64) -> Result<Option<(i64, i64)>, StorageError> {
    let Some(h) = batch::header(b) else {
        return Ok(None);
    };
    if h.is_log_append_time() {
        return Ok(Some((h.base_offset().max(floor), h.max_timestamp())));
    }
    // Compressed or not, the records are walked as a bounded stream (`storage::records`).
    let mut found = None;
    records::for_each_record(b, h, |r| {
        let offset = h.base_offset().wrapping_add(r.offset_delta);
        let time = h.base_timestamp().wrapping_add(r.timestamp_delta);
        if found.is_none() && offset >= floor && time >= ts {
            found = Some((offset, time));
        }
    })?;
    Ok(found)
}

/// A disk read in progress: what was asked and the batches gathered so far.
struct DiskRead<'a> {
    req: ReadRequest<'a>,
    /// Batches starting at or past this offset are not returned (high watermark or LSO).
    limit: i64,
    max_bytes: usize,
    min_one_batch: bool,
    out: Vec<Bytes>,
    total: usize,
    /// Last offset of the last batch walked (checked or skipped).
    prev_last: Option<i64>,
}

/// What [`DiskRead::take`] ended on.
enum Next {
    /// The read is complete.
    Done,
    /// The buffer ended; the next batch needs this many bytes (if known).
    More(Option<usize>),
}

impl DiskRead<'_> {
    /// Read whole batches from `file` in `[start, end)`, beginning with the one holding the
    /// offset asked for.
    async fn run(
        &mut self,
        file: &DataFile,
        start: u64,
        end: u64,
        index_interval: usize,
    ) -> Result<(), StorageError> {
        let mut pos = start;
        // First read: enough to skip from the index entry to the batch and fill max_bytes.
        let mut want = self.max_bytes.min(READ_BYTES_MAX) + index_interval + READ_SLACK_BYTES;
        while pos < end {
            let len = want.min((end - pos) as usize);
            let buf = file.read(pos, len).await?;
            if buf.is_empty() {
                break;
            }
            let (used, next) = self.take(&buf, pos)?;
            pos += used as u64;
            let need = match next {
                Next::Done => return Ok(()),
                Next::More(need) => need,
            };
            match need {
                Some(n) => {
                    if pos + n as u64 > end {
                        if n > batch::HEADER_LEN || pos < end {
                            let why = format!("batch runs past the durable end {end}");
                            return self.damaged(pos, why);
                        }
                        break;
                    }
                    if !self.out.is_empty() && self.total + n > self.max_bytes {
                        return Ok(());
                    }
                    want = if self.out.is_empty() {
                        n.max(self.max_bytes.min(READ_BYTES_MAX))
                    } else {
                        (self.max_bytes - self.total).max(n)
                    };
                }
                None => {
                    want = if self.out.is_empty() {
                        self.max_bytes.min(READ_BYTES_MAX) + READ_SLACK_BYTES
                    } else {
                        (self.max_bytes - self.total).max(batch::HEADER_LEN)
                    };
                }
            }
        }
        Ok(())
    }

    /// Take the whole batches of `buf` (read at file position `pos`), checking each one
    /// right after the read; returns the bytes consumed and what comes next.
    fn take(&mut self, buf: &Bytes, pos: u64) -> Result<(usize, Next), StorageError> {
        let mut p = 0usize;
        while p < buf.len() {
            let total_len = match batch::framed_len(&buf[p..]) {
                None => return Ok((p, Next::More(Some(batch::HEADER_LEN)))),
                Some(Ok(t)) if t <= SCAN_BATCH_BYTES_MAX => t,
                Some(Ok(t)) => {
                    let why = format!("length field says {t} bytes");
                    return self.damaged(pos + p as u64, why).map(|()| (p, Next::Done));
                }
                Some(Err(e)) => {
                    return self
                        .damaged(pos + p as u64, e.to_string())
                        .map(|()| (p, Next::Done))
                }
            };
            if p + total_len > buf.len() {
                return Ok((p, Next::More(Some(total_len))));
            }
            let b = &buf[p..p + total_len];
            if let Err(e) = check::batch_after_read(&self.req, b, pos + p as u64, self.prev_last) {
                return self.after_damage(e).map(|()| (p, Next::Done));
            }
            let Some(h) = batch::header(b) else {
                return Ok((p, Next::More(Some(batch::HEADER_LEN))));
            };
            self.prev_last = Some(h.last_offset());
            if h.base_offset() >= self.limit {
                return Ok((p, Next::Done));
            }
            if h.last_offset() < self.req.offset {
                p += total_len;
                continue;
            }
            if self.total + total_len > self.max_bytes
                && !(self.out.is_empty() && self.min_one_batch)
            {
                return Ok((p, Next::Done));
            }
            if let Err(e) = check::crc_after_read(&self.req, b, pos + p as u64) {
                return self.after_damage(e).map(|()| (p, Next::Done));
            }
            self.out.push(buf.slice(p..p + total_len));
            self.total += total_len;
            p += total_len;
            if self.total >= self.max_bytes {
                return Ok((p, Next::Done));
            }
        }
        Ok((p, Next::More(None)))
    }

    /// Damage found at file position `pos` (logged by [`check::corrupt_read`]).
    fn damaged(&self, pos: u64, why: String) -> Result<(), StorageError> {
        self.after_damage(check::corrupt_read(&self.req, pos, why))
    }

    /// Serve the good batches before the damage; a read that starts at it gets the error.
    fn after_damage(&self, e: StorageError) -> Result<(), StorageError> {
        if self.out.is_empty() {
            Err(e)
        } else {
            Ok(())
        }
    }
}
