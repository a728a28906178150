//! The read side of the storage's paired assertions: a batch damaged on disk (bytes changed by
//! hand in a sealed segment of a closed log) is answered with `StorageError::CorruptMessage`,
//! never served and never a panic, while the batches around it are still served.

use crate::storage_common as common;

use common::*;
use freshet::storage::{LogConfig, ReadData, StorageError};
use freshet_protocol::batch;
use std::path::{Path, PathBuf};

/// Batches appended; ~1.1 KB each, so about 50 per 60 KiB segment.
const BATCHES: usize = 120;
/// Records per batch.
const RECORDS_PER_BATCH: usize = 4;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 60 << 10,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// A closed log of [`BATCHES`] batches over a few segments; returns the segment files, by
/// base offset.
fn write_log(dir: &Path) -> Vec<(i64, PathBuf)> {
    let d = dir.to_path_buf();
    run(async move {
        let log = open(&d, config(), 0).await;
        for i in 0..BATCHES {
            log.append(batch(RECORDS_PER_BATCH, 250, 1_000 + i as i64), 5_000)
                .await
                .expect("append");
        }
        log.close().await.expect("close");
    });
    let mut segs: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| {
            let path = e.expect("dir entry").path();
            let name = path.file_name()?.to_str()?.to_string();
            let base = name.strip_suffix(".log")?.parse().ok()?;
            Some((base, path))
        })
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "only {} segments", segs.len());
    segs
}

/// (file position, base offset, length) of each batch of a segment file.
fn batches_of(path: &Path) -> Vec<(usize, i64, usize)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + batch::HEADER_LEN <= bytes.len() {
        let h = batch::header(&bytes[pos..]).expect("header");
        let len = h.total_len() as usize;
        out.push((pos, h.base_offset(), len));
        pos += len;
    }
    out
}

/// Overwrite `bytes` at `pos` of the file at `path`.
fn damage(path: &Path, pos: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).expect("read segment");
    data[pos..pos + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).expect("write segment");
}

/// A read's outcome without the bytes: the base offsets it returned, or the error.
fn batches(r: Result<ReadData, StorageError>) -> Result<Vec<i64>, StorageError> {
    r.map(|d| {
        d.batches
            .iter()
            .filter_map(|b| batch::header(b).map(|h| h.base_offset()))
            .collect()
    })
}

/// Reopen the log (no tail cache: every read goes to the disk) and run `check` on it.
fn reopened<F, Fut>(dir: &Path, check: F)
where
    F: FnOnce(freshet::storage::PartitionLog) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let d = dir.to_path_buf();
    run(async move {
        let log = open(&d, config(), 0).await;
        check(log).await;
    });
}

/// A flipped byte inside a batch's records (CRC-covered) in a sealed segment: a read that
/// starts at that batch is CORRUPT_MESSAGE; a read from before it gets the good batches up to
/// it; the batch after it reads fine.
#[test]
fn flipped_record_byte_in_a_sealed_segment_is_corrupt_not_served() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    let segs = write_log(&dir);
    let in_seg = batches_of(&segs[0].1);
    // The third batch: far below the segment's last index entry, so opening the (trusted,
    // sealed) segment does not rescan it.
    let (pos, bad, _) = in_seg[2];
    let next = in_seg[3].1;
    let byte = std::fs::read(&segs[0].1).expect("read")[pos + batch::HEADER_LEN + 20];
    damage(&segs[0].1, pos + batch::HEADER_LEN + 20, &[byte ^ 0x40]);
    reopened(&dir, move |log| async move {
        match log.read(bad, 1 << 20, true).await {
            Err(StorageError::CorruptMessage(m)) => assert!(m.contains("CRC"), "{m}"),
            other => panic!("read of the damaged batch at {bad}: {:?}", batches(other)),
        }
        let before = log.read(0, 1 << 20, true).await.expect("read before");
        assert_eq!(
            before.batches.len(),
            2,
            "the two good batches before the damage"
        );
        for b in &before.batches {
            batch::validate(b).expect("served batches are valid");
        }
        let after = log.read(next, 1 << 20, true).await.expect("read after");
        assert!(!after.batches.is_empty());
        let h = batch::validate(&after.batches[0]).expect("valid");
        assert_eq!(h.base_offset(), next);
        log.close().await.expect("close");
    });
}

/// A damaged base offset (outside the CRC's range) pointing far past the log: the read that
/// reaches it is CORRUPT_MESSAGE instead of an empty answer that would stall a consumer at
/// that offset forever.
#[test]
fn damaged_base_offset_is_corrupt_not_an_empty_answer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    let segs = write_log(&dir);
    let in_seg = batches_of(&segs[1].1);
    let (pos, bad, _) = in_seg[2];
    damage(&segs[1].1, pos, &(1i64 << 40).to_be_bytes());
    reopened(&dir, move |log| async move {
        match log.read(bad, 1 << 20, true).await {
            Err(StorageError::CorruptMessage(m)) => assert!(m.contains("durable end"), "{m}"),
            other => panic!(
                "read at the damaged batch's offset {bad}: {:?}",
                batches(other)
            ),
        }
        log.close().await.expect("close");
    });
}

/// A base offset damaged to go backwards (the batch would repeat offsets already served):
/// CORRUPT_MESSAGE, not a batch served twice or skipped.
#[test]
fn base_offset_going_backwards_is_corrupt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    let segs = write_log(&dir);
    let in_seg = batches_of(&segs[1].1);
    let (pos, bad, _) = in_seg[3];
    let earlier = in_seg[1].1;
    damage(&segs[1].1, pos, &earlier.to_be_bytes());
    reopened(&dir, move |log| async move {
        // From the batch before it: that one is served, the damaged one ends the read.
        let data = log.read(earlier, 1 << 20, true).await;
        let data = data.expect("the good batches before the damage");
        assert!(!data.batches.is_empty());
        for b in &data.batches {
            let h = batch::validate(b).expect("valid");
            assert!(h.last_offset() < bad, "served past the damage");
        }
        match log.read(bad, 1 << 20, true).await {
            Err(StorageError::CorruptMessage(m)) => assert!(m.contains("previous batch"), "{m}"),
            other => panic!(
                "read at the damaged batch's offset {bad}: {:?}",
                batches(other)
            ),
        }
        log.close().await.expect("close");
    });
}

/// A damaged length field (2 GiB) is CORRUPT_MESSAGE too, without reading or allocating what
/// it claims: one read buffers at most `max(min(max_bytes, READ_BYTES_MAX) +
/// index.interval.bytes + 64 KiB, SCAN_BATCH_BYTES_MAX)` bytes, and never past the segment's
/// durable end. (The code before the read-side checks caught this one too: the batch ran past
/// the durable end.)
#[test]
fn damaged_length_field_is_corrupt_without_a_huge_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    let segs = write_log(&dir);
    let in_seg = batches_of(&segs[1].1);
    let (pos, bad, _) = in_seg[2];
    let first = segs[1].0;
    // The length field follows the 8-byte base offset.
    damage(&segs[1].1, pos + 8, &i32::MAX.to_be_bytes());
    reopened(&dir, move |log| async move {
        match log.read(bad, 1 << 20, true).await {
            Err(StorageError::CorruptMessage(_)) => {}
            other => panic!(
                "read at the damaged batch's offset {bad}: {:?}",
                batches(other)
            ),
        }
        let before = log.read(first, 1 << 20, true).await;
        assert_eq!(
            batches(before).expect("read before"),
            vec![in_seg[0].1, in_seg[1].1]
        );
        log.close().await.expect("close");
    });
}
