//! A decompression bomb already on disk (written by a broker from before produce validation
//! bounded decompression) must not make the log cleaner take unbounded memory (issue 12,
//! item 1). The bomb (10,240 records of 1 MiB of zeros in one zstd batch, 10 GiB
//! decompressed) is put in a sealed segment of a compacted log in place of a batch of the
//! same size and offsets; the cleaner then runs over it. It must finish, keep the bomb batch
//! as it is (never delete data merely because it could not be read), compact the rest, and
//! the process's peak RSS must grow by less than [`CLEAN_RSS_GROWTH_BYTES_MAX`].

use crate::storage_common;

use bytes::Bytes;
use freshet::storage::cleaner::{LogCleanState, OffsetMap};
use freshet::storage::{LogConfig, PartitionLog};
use freshet_protocol::batch::{self, encode_batch, Compression, NewRecord};
use freshet_protocol::records::{zstd_bomb_batch, RECORD_BATCH_DECOMPRESSED_BYTES_MAX};
use std::time::Duration;
use storage_common::{open, run};

const NOW: i64 = 1_000_000;
const BOMB_RECORDS: usize = 10_240;
/// Stated bound for cleaning a compressed batch: the decompressed records (at most 64 MiB,
/// twice that while the buffer grows), the records kept and the recompressed batch.
const CLEAN_RSS_GROWTH_BYTES_MAX: u64 = 4 * RECORD_BATCH_DECOMPRESSED_BYTES_MAX;
/// Past this RSS the process aborts at once (a cleaner without the bound heads for 10 GiB).
const RSS_ABORT_BYTES: u64 = 2 << 30;

/// This process's `field` of /proc/self/status ("VmRSS", "VmHWM"), in bytes.
fn status_bytes(field: &str) -> u64 {
    crate::common::proc_status_bytes(std::process::id(), field).expect("field")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn keyed(prefix: &str, n: usize, value_bytes: usize) -> Bytes {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| {
            (
                Some(Bytes::from(format!("{prefix}{i}"))),
                Some(Bytes::from(vec![b'v'; value_bytes])),
                NOW,
            )
        })
        .collect();
    encode_batch(&records, Compression::None).expect("encode")
}

/// (base offset, records count, compression, keys of an uncompressed batch) of every batch.
async fn batches(log: &PartitionLog) -> Vec<(i64, i32, i16, Vec<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let data = log.read(offset, 1 << 20, true).await.expect("read");
        assert!(!data.batches.is_empty(), "no progress at {offset}");
        for b in data.batches {
            let h = freshet::storage::cleaner::validate_stored(&b).expect("valid");
            offset = h.last_offset() + 1;
            let mut keys = Vec::new();
            if h.compression() == 0 {
                let mut bytes = b.clone();
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                    .expect("decode");
                keys = set
                    .records
                    .iter()
                    .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or(b"")).into())
                    .collect();
            }
            out.push((h.base_offset(), h.records_count(), h.compression(), keys));
        }
    }
    out
}

#[test]
fn cleaner_keeps_a_bomb_on_disk_and_stays_within_its_memory_bound() {
    // Watchdog: a cleaner without the bound would decompress 10 GiB.
    std::thread::spawn(|| loop {
        if status_bytes("VmRSS") > RSS_ABORT_BYTES {
            eprintln!("RSS past {RSS_ABORT_BYTES} bytes while cleaning: aborting");
            std::process::abort();
        }
        std::thread::sleep(Duration::from_millis(10));
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("bombed-0");
    run(async move {
        // Segment 0: old values of k0..k4, then a placeholder batch of 10,240 keyed records;
        // later segments: new values of k0..k4 (the active one is never cleaned).
        let log = open(&dir, config(), 0).await;
        log.append(keyed("k", 5, 10), NOW).await.expect("append");
        let placeholder = keyed("p", BOMB_RECORDS, 70);
        let bomb_base = log
            .append(placeholder.clone(), NOW)
            .await
            .expect("append placeholder")
            .base_offset;
        while log.segment_count() < 3 {
            log.append(keyed("k", 5, 20_000), NOW)
                .await
                .expect("append");
        }
        log.close().await.expect("close");

        // Put the bomb in the placeholder's place: same length, offsets and timestamps.
        let seg0 = dir.join("00000000000000000000.log");
        let mut file = std::fs::read(&seg0).expect("read segment");
        let pos = batch::batches(&file)
            .flatten()
            .find(|(_, b)| batch::header(b).expect("header").base_offset() == bomb_base)
            .map(|(pos, _)| pos)
            .expect("placeholder in segment 0");
        let mut bomb = zstd_bomb_batch(BOMB_RECORDS, 1 << 20, Some(placeholder.len()));
        {
            let p = batch::header(&placeholder).expect("header");
            let (base_ts, max_ts) = (p.base_timestamp(), p.max_timestamp());
            let h = batch::header_mut(&mut bomb).expect("header");
            h.base_timestamp.set(base_ts);
            h.max_timestamp.set(max_ts);
        }
        batch::fix_crc(&mut bomb);
        batch::set_base_offset(&mut bomb, bomb_base);
        file[pos..pos + bomb.len()].copy_from_slice(&bomb);
        std::fs::write(&seg0, &file).expect("write segment");

        let log = open(&dir, config(), 0).await;
        let before = batches(&log).await;
        assert!(before
            .iter()
            .any(|b| b.0 == bomb_base && b.2 == 4 && b.1 == BOMB_RECORDS as i32));
        let hwm_before = status_bytes("VmHWM");
        let mut map = OffsetMap::with_memory(1 << 20);
        let mut state = LogCleanState::default();
        let t = std::time::Instant::now();
        let report = log
            .clean(&mut state, &mut map, NOW, true)
            .await
            .expect("the cleaner copes with the bomb")
            .expect("a round ran");
        let hwm_after = status_bytes("VmHWM");
        eprintln!(
            "clean round in {:?}: {report:?}; peak RSS {} -> {} KiB",
            t.elapsed(),
            hwm_before / 1024,
            hwm_after / 1024
        );
        assert!(
            hwm_after < hwm_before + CLEAN_RSS_GROWTH_BYTES_MAX,
            "peak RSS grew from {hwm_before} to {hwm_after} bytes"
        );
        let after = batches(&log).await;
        assert!(
            after
                .iter()
                .any(|b| b.0 == bomb_base && b.2 == 4 && b.1 == BOMB_RECORDS as i32),
            "the bomb batch is kept as it was"
        );
        assert!(
            !after
                .iter()
                .any(|b| b.3.contains(&"k0".to_string()) && b.0 == 0),
            "old values of k0..k4 were compacted away"
        );
        assert!(report.bytes_after < report.bytes_before);
        log.close().await.expect("close");
    });
}
