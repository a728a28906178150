//! Partition log behaviour: append/read round trips, offset and time lookups, segment roll,
//! retention, DeleteRecords, validation errors, group commit, the tail cache, reopen.

use crate::storage_common as common;

use bytes::{Bytes, BytesMut};
use common::*;
use freshet::storage::{LogConfig, StorageError, TailCache, TimestampType};
use freshet_protocol::batch;
use kafka_protocol::records::Compression;
use std::rc::Rc;

fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// Appended batches come back byte for byte (but for the base offset and leader epoch), with
/// valid CRCs and the assigned offsets, from the cache and, after reopen, from disk.
#[test]
fn append_then_read_round_trips_from_cache_and_disk() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, small_segments(64 << 10), 8 << 20).await;
        let mut sent = Vec::new();
        let mut expected_base = 0;
        for i in 0..50 {
            let b = batch(1 + i % 7, 100 + i * 13, 1_000 + i as i64);
            let info = log.append(b.clone(), 5_000).await.expect("append");
            assert_eq!(info.base_offset, expected_base);
            assert_eq!(info.last_offset, expected_base + (i % 7) as i64);
            assert_eq!(info.log_append_time_ms, -1);
            expected_base = info.last_offset + 1;
            sent.push(b);
        }
        assert_eq!(log.log_end_offset(), expected_base);
        assert_eq!(log.high_watermark(), expected_base);
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), sent.len());
        for (g, s) in got.iter().zip(&sent) {
            assert_eq!(payload(g), payload(s));
        }
        assert!(log.segment_count() > 1, "64 KiB segments must have rolled");
        log.close().await.expect("close");

        // From disk only (no cache), after a clean close.
        let log = open(&dir, small_segments(64 << 10), 0).await;
        assert_eq!(log.high_watermark(), expected_base);
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), sent.len());
        for (g, s) in got.iter().zip(&sent) {
            assert_eq!(payload(g), payload(s));
        }
        // Reads starting inside a batch return the batch holding the offset.
        let data = log.read(3, 1 << 20, true).await.expect("read");
        let h = batch::header(&data.batches[0]).expect("header");
        assert!(h.base_offset() <= 3 && h.last_offset() >= 3);
        log.close().await.expect("close");
    });
}

/// A fresh data directory: produce, then fetch from disk (GLOMMIO.md pitfall 1).
#[test]
fn fresh_directory_produce_then_fetch_from_disk() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data_dir = tmp.path().to_path_buf();
    run(async move {
        freshet::storage::prime_disk(&data_dir)
            .await
            .expect("prime");
        let log = open(&data_dir.join("fresh-0"), LogConfig::default(), 0).await;
        log.append(batch(3, 10, 1), 1).await.expect("append");
        let data = log.read(0, 1 << 20, false).await.expect("read from disk");
        assert_eq!(data.batches.len(), 1);
        assert_eq!(data.high_watermark, 3);
        log.close().await.expect("close");
    });
}

/// max_bytes and min_one_batch follow Kafka's rule; offsets outside the log are refused.
#[test]
fn read_limits_and_out_of_range() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        for cache in [0usize, 8 << 20] {
            let d = dir.join(format!("c{cache}"));
            let log = open(&d, LogConfig::default(), cache).await;
            for _ in 0..5 {
                log.append(batch(2, 1000, 1), 1).await.expect("append");
            }
            let one = batch::header(&log.read(0, 1 << 20, true).await.expect("r").batches[0])
                .expect("h")
                .total_len() as usize;
            assert_eq!(
                log.read(0, one * 2, false).await.expect("r").batches.len(),
                2
            );
            assert_eq!(
                log.read(0, one * 2 + 10, false)
                    .await
                    .expect("r")
                    .batches
                    .len(),
                2
            );
            assert_eq!(log.read(0, 10, false).await.expect("r").batches.len(), 0);
            assert_eq!(log.read(0, 10, true).await.expect("r").batches.len(), 1);
            let at_hw = log.read(10, 1 << 20, true).await.expect("r");
            assert!(at_hw.batches.is_empty());
            assert_eq!(at_hw.high_watermark, 10);
            assert!(matches!(
                log.read(11, 100, true).await,
                Err(StorageError::OffsetOutOfRange { offset: 11, .. })
            ));
            assert!(matches!(
                log.read(-1, 100, true).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
            log.close().await.expect("close");
        }
    });
}

/// Malformed produce data is rejected with the Kafka error a Kafka broker would use, and a
/// record set with one bad batch appends nothing.
#[test]
fn validation_errors_reject_the_whole_record_set() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(
            &dir,
            LogConfig {
                max_message_bytes: 4096,
                ..LogConfig::default()
            },
            1 << 20,
        )
        .await;
        let good = batch(3, 10, 1);
        let mut bad_crc = BytesMut::from(&good[..]);
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        let r = log
            .append(record_set(&[good.clone(), bad_crc.freeze()]), 1)
            .await;
        assert!(matches!(r, Err(StorageError::CorruptMessage(_))), "{r:?}");

        let mut magic1 = BytesMut::from(&good[..]);
        magic1[16] = 1;
        let r = log.append(magic1.freeze(), 1).await;
        assert!(matches!(r, Err(StorageError::InvalidRecord(_))), "{r:?}");

        let r = log.append(good.slice(..good.len() - 5), 1).await;
        assert!(matches!(r, Err(StorageError::CorruptMessage(_))), "{r:?}");

        let r = log.append(good.slice(..30), 1).await;
        assert!(matches!(r, Err(StorageError::CorruptMessage(_))), "{r:?}");

        let mut count = BytesMut::from(&good[..]);
        count[57..61].copy_from_slice(&7i32.to_be_bytes());
        batch::fix_crc(&mut count);
        let r = log.append(count.freeze(), 1).await;
        assert!(matches!(r, Err(StorageError::InvalidRecord(_))), "{r:?}");

        let mut based = BytesMut::from(&good[..]);
        batch::set_base_offset(&mut based, 42);
        let r = log.append(based.freeze(), 1).await;
        assert!(matches!(r, Err(StorageError::InvalidRecord(_))), "{r:?}");

        let big = batch(1, 5000, 1);
        let r = log.append(big, 1).await;
        assert!(
            matches!(r, Err(StorageError::MessageTooLarge { max: 4096, .. })),
            "{r:?}"
        );
        let r = log.append(Bytes::new(), 1).await;
        assert!(matches!(r, Err(StorageError::CorruptMessage(_))), "{r:?}");

        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
        let info = log
            .append(record_set(&[good.clone(), good]), 1)
            .await
            .expect("ok");
        assert_eq!((info.base_offset, info.last_offset), (0, 5));
        log.close().await.expect("close");
    });
}

/// Concurrent appends share fdatasyncs (group commit) and each gets its own offsets.
#[test]
fn concurrent_appends_are_group_committed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = Rc::new(open(&dir, LogConfig::default(), 1 << 20).await);
        let n = 200;
        let mut tasks = Vec::new();
        for i in 0..n {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                log.append(batch(2, 200, i), 1).await.expect("append")
            }));
        }
        let mut infos = Vec::new();
        for t in tasks {
            infos.push(t.await);
        }
        infos.sort_by_key(|i| i.base_offset);
        for (k, info) in infos.iter().enumerate() {
            assert_eq!(info.base_offset, 2 * k as i64);
        }
        let syncs = log.flush_count();
        assert!(syncs < n as u64 / 4, "{syncs} fdatasyncs for {n} appends");
        assert_eq!(log.high_watermark(), 2 * n);
        log.close().await.expect("close");
    });
}

/// Time lookups: time index, then inside the batch; CreateTime uncompressed and compressed,
/// and LogAppendTime; MAX_TIMESTAMP; all again after reopen.
#[test]
fn offset_for_timestamp_and_max_timestamp() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let cfg = small_segments(16 << 10);
        let log = open(&dir, cfg.clone(), 1 << 20).await;
        assert_eq!(log.max_timestamp(), (-1, -1));
        assert_eq!(log.offset_for_timestamp(0).await.expect("ts"), None);
        // 40 batches of 10 records; record k (global) has timestamp 10_000 + 10 * k.
        for bi in 0..40i64 {
            let compression = if bi % 2 == 0 {
                Compression::None
            } else {
                Compression::Gzip
            };
            let b = batch_with(10, 300, |i| 10_000 + 10 * (bi * 10 + i as i64), compression);
            log.append(b, 1).await.expect("append");
        }
        let check = |log_ref: &freshet::storage::PartitionLog| {
            let _ = log_ref;
        };
        check(&log);
        for (ts, want) in [
            (0, Some((0, 10_000))),
            (10_000, Some((0, 10_000))),
            (10_001, Some((1, 10_010))),
            (12_345, Some((235, 12_350))),
            (13_990, Some((399, 13_990))),
            (13_991, None),
        ] {
            assert_eq!(
                log.offset_for_timestamp(ts).await.expect("ts"),
                want,
                "ts {ts}"
            );
        }
        assert_eq!(log.max_timestamp(), (13_990, 399));
        assert!(log.segment_count() > 2);
        log.close().await.expect("close");
        let log = open(&dir, cfg.clone(), 0).await;
        assert_eq!(
            log.offset_for_timestamp(12_345).await.expect("ts"),
            Some((235, 12_350))
        );
        assert_eq!(
            log.offset_for_timestamp(10_001).await.expect("ts"),
            Some((1, 10_010))
        );
        assert_eq!(log.max_timestamp().0, 13_990);
        // LogAppendTime stamps the batch and fixes the CRC.
        log.set_config(LogConfig {
            message_timestamp_type: TimestampType::LogAppendTime,
            ..cfg
        });
        let info = log.append(batch(5, 10, 1), 50_000).await.expect("append");
        assert_eq!(info.log_append_time_ms, 50_000);
        assert_eq!(log.max_timestamp(), (50_000, 400));
        assert_eq!(
            log.offset_for_timestamp(20_000).await.expect("ts"),
            Some((400, 50_000))
        );
        let data = log.read(400, 1 << 20, true).await.expect("read");
        let h = batch::validate(&data.batches[0]).expect("valid CRC after stamping");
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp(), 50_000);
        log.close().await.expect("close");
    });
}

/// Segments roll at segment.bytes and segment.ms; sealed segments have index files.
#[test]
fn segments_roll_by_size_and_time() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let cfg = LogConfig {
            segment_bytes: 10_000,
            segment_ms: 1_000,
            ..LogConfig::default()
        };
        let log = open(&dir, cfg, 1 << 20).await;
        for _ in 0..10 {
            log.append(batch(1, 3000, 1), 0).await.expect("append");
        }
        // ~3.1 KB per batch: 3 per 10 KB segment.
        assert_eq!(log.segment_count(), 4);
        log.append(batch(1, 10, 1), 500).await.expect("append");
        assert_eq!(log.segment_count(), 4);
        log.append(batch(1, 10, 1), 5_000).await.expect("append");
        assert_eq!(log.segment_count(), 5);
        log.close().await.expect("close");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("ls")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for base in [0, 3, 6, 9, 11] {
            for ext in ["log", "index", "timeindex"] {
                let n = format!("{base:020}.{ext}");
                assert!(names.contains(&n), "{n} missing from {names:?}");
            }
        }
        let len0 = std::fs::metadata(dir.join(format!("{:020}.log", 0)))
            .expect("stat")
            .len();
        assert!(
            len0 < 10_000 && len0 > 9_000,
            "sealed segment truncated: {len0}"
        );
    });
}

/// retention.bytes and retention.ms delete whole old segments, never the active one, and move
/// the log start; DeleteRecords moves it durably.
#[test]
fn retention_and_delete_records() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let cfg = LogConfig {
            segment_bytes: 10_000,
            ..LogConfig::default()
        };
        let log = open(&dir, cfg.clone(), 1 << 20).await;
        for i in 0..30 {
            log.append(batch(1, 3000, 1_000 * i), 0)
                .await
                .expect("append");
        }
        assert_eq!(log.segment_count(), 10);
        assert_eq!(log.apply_retention(30_000).await.expect("ret"), 0);
        // retention.ms: segments whose newest record is older than 10 s at t = 30 s.
        log.set_config(LogConfig {
            retention_ms: 10_000,
            ..cfg.clone()
        });
        let deleted = log.apply_retention(30_000).await.expect("ret");
        // Segment k holds timestamps 3k..3k+2 s; deleted while 30 - (3k+2) > 10 => k <= 5.
        assert_eq!(deleted, 6);
        assert_eq!(log.log_start_offset(), 18);
        assert!(matches!(
            log.read(5, 100, true).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // retention.bytes.
        log.set_config(LogConfig {
            retention_bytes: 7_000,
            ..cfg.clone()
        });
        let deleted = log.apply_retention(30_000).await.expect("ret");
        assert_eq!(deleted, 3);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_start_offset(), 27);
        // Never the active segment.
        assert_eq!(log.apply_retention(i64::MAX / 2).await.expect("ret"), 0);
        // DeleteRecords.
        assert_eq!(log.delete_records(28).await.expect("dr"), 28);
        assert_eq!(log.delete_records(5).await.expect("dr"), 28);
        assert!(matches!(
            log.delete_records(31).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let data = log.read(28, 1 << 20, true).await.expect("read");
        assert_eq!(
            batch::header(&data.batches[0]).expect("h").base_offset(),
            28
        );
        assert_eq!(data.log_start_offset, 28);
        log.close().await.expect("close");

        let log = open(&dir, cfg, 0).await;
        assert_eq!(log.log_start_offset(), 28);
        assert_eq!(log.high_watermark(), 30);
        assert_eq!(log.delete_records(-1).await.expect("dr"), 30);
        let data = log.read(30, 1 << 20, true).await.expect("read");
        assert!(data.batches.is_empty());
        let info = log.append(batch(1, 10, 1), 1).await.expect("append");
        assert_eq!((info.base_offset, info.log_start_offset), (30, 30));
        log.delete().await.expect("delete");
        assert!(!dir.exists());
    });
}

/// The per-shard tail cache stays within its budget across logs; reads past it go to disk.
#[test]
fn tail_cache_is_bounded_across_logs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let base = tmp.path().to_path_buf();
    run(async move {
        let cache = TailCache::new(256 << 10);
        let mut logs = Vec::new();
        for p in 0..4 {
            logs.push(
                open_shared(
                    &base.join(format!("t-{p}")),
                    LogConfig::default(),
                    cache.clone(),
                )
                .await,
            );
        }
        for round in 0..40 {
            for log in &logs {
                log.append(batch(4, 1000, round), 1).await.expect("append");
                assert!(cache.used_bytes() <= 256 << 10);
            }
        }
        for log in &logs {
            let all = read_all(log, 0).await;
            assert_eq!(all.len(), 40);
        }
        for log in &logs {
            log.close().await.expect("close");
        }
        assert_eq!(cache.used_bytes(), 0);
    });
}

/// After close, appends fail with Closed.
#[test]
fn closed_log_refuses_appends() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, LogConfig::default(), 1 << 20).await;
        log.append(batch(1, 1, 1), 1).await.expect("append");
        log.close().await.expect("close");
        log.close().await.expect("close twice");
        assert!(matches!(
            log.append(batch(1, 1, 1), 1).await,
            Err(StorageError::Closed)
        ));
    });
}
