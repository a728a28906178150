//! Paired assertions (TigerBeetle's style): data is checked right before it is written and
//! again right after it is read back.
//!
//! - Write side ([`batch_before_append`] when an append has assigned a batch its offsets,
//!   [`round_before_write`] right before a flush round goes to the disk): what we are about to
//!   write must be what we meant to write: the batch's base offset is the log end offset, its
//!   last offset is base + offsets - 1, offsets and positions continue the previous batch, the
//!   high watermark is at most the log end, and the CRC-32C matches the header. A violation is
//!   our own bug, so these are `assert!`s, on in release builds, except the CRC check, which
//!   reads every byte of every batch a second time on the produce hot path (the produce path
//!   has already verified each CRC once and only rewrites fields outside the CRC's range, or
//!   fixes the CRC with them): it is a `debug_assert!`, so every test run checks it.
//! - Read side ([`batch_after_read`] for every batch a disk read walks, [`crc_after_read`] for
//!   every batch it returns): what came back is what the caller asked for: whole (its length
//!   field matches the bytes), its CRC-32C matches, its offsets lie inside the segment's
//!   durable offsets, the first one ends where the offset index entry the read started from
//!   says, and they increase from batch to batch (so no batch is skipped or served twice
//!   because of a damaged offset). A violation is damage on the disk (input, not a bug): it is
//!   logged and answered with [`StorageError::CorruptMessage`] (CORRUPT_MESSAGE for the
//!   client), never a panic. Reads from the tail cache are not checked: those bytes never left
//!   memory and were checked on the write side. Recovery has its own read-side check: the CRC
//!   scan of `recover` (a failure there ends the scan, see its docs).

use super::Pending;
use crate::storage::StorageError;
use freshet_protocol::batch;
use std::path::Path;

/// Write side, at offset assignment: `b` (one whole batch) has just been stamped to start at
/// the log end offset and to cover `offset_count` offsets.
pub(super) fn batch_before_append(
    b: &[u8],
    log_end_offset: i64,
    offset_count: i64,
    high_watermark: i64,
) {
    let h = batch::header(b).expect("an appended batch has a whole header");
    assert_eq!(h.total_len(), b.len() as i64, "appended batch length field");
    assert_eq!(
        h.base_offset(),
        log_end_offset,
        "a batch is appended at the log end"
    );
    assert!(
        offset_count >= 1,
        "an appended batch covers at least one offset"
    );
    assert_eq!(
        h.last_offset(),
        log_end_offset + offset_count - 1,
        "appended batch last offset"
    );
    assert!(
        high_watermark <= log_end_offset,
        "high watermark {high_watermark} past the log end {log_end_offset}"
    );
    // Expensive (a second pass over the batch on the produce path): debug builds only.
    debug_assert_eq!(batch::compute_crc(b), h.crc(), "appended batch CRC-32C");
}

/// Write side, right before a flush round is written: its chunks' batches are whole, in
/// order, dense in offsets and positions from `start_len`, and lie between the high watermark
/// and the log end offset.
pub(super) fn round_before_write(
    chunks: &[Pending],
    start_len: u64,
    high_watermark: i64,
    log_end_offset: i64,
) {
    assert!(
        high_watermark <= log_end_offset,
        "high watermark {high_watermark} past the log end {log_end_offset}"
    );
    let mut pos = start_len;
    let mut next: Option<i64> = None;
    for c in chunks {
        assert_eq!(
            c.segment_base, chunks[0].segment_base,
            "a round writes one segment"
        );
        for pb in &c.batches {
            let b = &c.data[pb.data_start..pb.data_start + pb.len as usize];
            let h = batch::header(b).expect("a queued batch has a whole header");
            assert_eq!(h.total_len(), pb.len as i64, "queued batch length field");
            assert_eq!(h.base_offset(), pb.base_offset, "queued batch base offset");
            assert_eq!(h.last_offset(), pb.last_offset, "queued batch last offset");
            assert_eq!(
                pb.pos_in_segment, pos,
                "queued batches are contiguous on disk"
            );
            match next {
                Some(n) => assert_eq!(pb.base_offset, n, "queued batches are dense in offsets"),
                None => assert!(
                    pb.base_offset >= high_watermark,
                    "a round rewrites durable offsets below the high watermark {high_watermark}"
                ),
            }
            // Expensive (every byte again, right before the write): debug builds only.
            debug_assert_eq!(batch::compute_crc(b), h.crc(), "queued batch CRC-32C");
            pos += pb.len;
            next = Some(pb.last_offset + 1);
        }
        assert_eq!(
            Some(c.end_offset),
            next,
            "an append ends after its last batch"
        );
    }
    if let Some(n) = next {
        assert!(
            n <= log_end_offset,
            "a round ends at {n}, past the log end {log_end_offset}"
        );
    }
}

/// Where a disk read looks: the segment based at `segment_base` whose durable batches end
/// (exclusive) at offset `durable_next`, from the batch holding `offset`, starting at the
/// batch an offset index entry says ends at `first_last` (or at the segment's start).
#[derive(Clone, Copy, Debug)]
pub(super) struct ReadRequest<'a> {
    pub(super) dir: &'a Path,
    pub(super) segment_base: i64,
    pub(super) durable_next: i64,
    pub(super) first_last: Option<i64>,
    pub(super) offset: i64,
}

/// Read side: check the framing and offsets of one batch `b` read from the disk at file
/// position `pos` (every batch the read walks, the ones it skips on the way to `offset` too),
/// after a batch whose last offset was `prev_last` (if any). Damage is logged and returned as
/// [`StorageError::CorruptMessage`]. The CRC is checked by [`crc_after_read`], on the batches
/// the read returns only: a damaged batch must not keep a reader from the batches after it.
pub(super) fn batch_after_read(
    req: &ReadRequest<'_>,
    b: &[u8],
    pos: u64,
    prev_last: Option<i64>,
) -> Result<(), StorageError> {
    let why = match batch::header(b) {
        None => Some("short batch".to_string()),
        Some(h) if h.total_len() != b.len() as i64 => Some(format!(
            "length field {} but {} bytes framed",
            h.total_len(),
            b.len()
        )),
        Some(h) if h.magic != batch::MAGIC_V2 => Some(format!("magic {}", h.magic)),
        Some(h) if h.last_offset() < h.base_offset() => Some(format!(
            "last offset {} below its base offset {}",
            h.last_offset(),
            h.base_offset()
        )),
        Some(h) if h.base_offset() < req.segment_base => Some(format!(
            "base offset {} below the segment's base {}",
            h.base_offset(),
            req.segment_base
        )),
        Some(h) if h.last_offset() >= req.durable_next => Some(format!(
            "last offset {} at or past the segment's durable end {}",
            h.last_offset(),
            req.durable_next
        )),
        Some(h) if prev_last.is_some_and(|p| h.base_offset() <= p) => Some(format!(
            "base offset {} does not follow the previous batch's last offset {}",
            h.base_offset(),
            prev_last.unwrap_or_default()
        )),
        Some(h) if prev_last.is_none() && req.first_last.is_some_and(|l| h.last_offset() != l) => {
            Some(format!(
                "last offset {} but the offset index says {}",
                h.last_offset(),
                req.first_last.unwrap_or_default()
            ))
        }
        Some(_) => None,
    };
    match why {
        None => Ok(()),
        Some(why) => Err(corrupt_read(req, pos, why)),
    }
}

/// Read side: the CRC-32C of a batch `b` (read at file position `pos`) about to be returned.
pub(super) fn crc_after_read(
    req: &ReadRequest<'_>,
    b: &[u8],
    pos: u64,
) -> Result<(), StorageError> {
    match batch::header(b) {
        Some(h) if batch::compute_crc(b) == h.crc() => Ok(()),
        _ => Err(corrupt_read(req, pos, "CRC-32C mismatch".to_string())),
    }
}

/// Log a read-side violation and make it the caller's error.
pub(super) fn corrupt_read(req: &ReadRequest<'_>, pos: u64, why: String) -> StorageError {
    tracing::error!(
        dir = %req.dir.display(),
        segment = req.segment_base,
        position = pos,
        offset = req.offset,
        "corrupt batch read from disk: {why}"
    );
    StorageError::CorruptMessage(format!(
        "batch at position {pos} of segment {} in {}: {why}",
        req.segment_base,
        req.dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-record control batch at base offset 0, as the log would hold it.
    fn marker() -> Vec<u8> {
        batch::encode_control_batch(7, 0, true, 0, 1_000)
            .expect("marker")
            .to_vec()
    }

    fn request(durable_next: i64) -> ReadRequest<'static> {
        ReadRequest {
            dir: Path::new("/nonexistent"),
            segment_base: 0,
            durable_next,
            first_last: None,
            offset: 0,
        }
    }

    /// The write side accepts a batch stamped at the log end.
    #[test]
    fn a_batch_stamped_at_the_log_end_passes() {
        batch_before_append(&marker(), 0, 1, 0);
    }

    /// A batch whose header does not start at the log end is our bug: the assertion fires.
    #[test]
    #[should_panic(expected = "a batch is appended at the log end")]
    fn a_batch_not_at_the_log_end_is_a_bug() {
        batch_before_append(&marker(), 5, 1, 0);
    }

    /// A high watermark past the log end is our bug: the assertion fires.
    #[test]
    #[should_panic(expected = "past the log end")]
    fn a_high_watermark_past_the_log_end_is_a_bug() {
        let mut b = marker();
        batch::set_base_offset(&mut b, 3);
        batch_before_append(&b, 3, 1, 4);
    }

    /// Damage read back from the disk is an error, never a panic: a flipped byte, a cut batch,
    /// a short header, offsets going backwards, offsets past the durable end, a batch that is
    /// not the one the index named.
    #[test]
    fn read_side_damage_is_an_error_not_a_panic() {
        let good = marker();
        let corrupt =
            |r: Result<(), StorageError>| matches!(r, Err(StorageError::CorruptMessage(_)));
        assert!(batch_after_read(&request(10), &good, 0, None).is_ok());
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(batch_after_read(&request(10), &flipped, 0, None).is_ok());
        assert!(crc_after_read(&request(10), &good, 0).is_ok());
        assert!(corrupt(crc_after_read(&request(10), &flipped, 0)));
        assert!(corrupt(batch_after_read(
            &request(10),
            &good[..last],
            0,
            None
        )));
        assert!(corrupt(batch_after_read(
            &request(10),
            &good[..10],
            0,
            None
        )));
        assert!(corrupt(batch_after_read(&request(10), &good, 0, Some(0))));
        assert!(corrupt(batch_after_read(&request(0), &good, 0, None)));
        let named_other = ReadRequest {
            first_last: Some(4),
            ..request(10)
        };
        assert!(corrupt(batch_after_read(&named_other, &good, 0, None)));
    }
}
