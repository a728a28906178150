//! Producer state in the storage engine: idempotent appends are judged where offsets are
//! assigned, and the state survives reopening a log (from the close snapshot, from a roll
//! snapshot plus replay after a crash, and from a full replay when the snapshot is damaged).

use crate::storage_common;

use bytes::Bytes;
use freshet::storage::{LogConfig, PartitionLog, StorageError};
use std::path::Path;
use storage_common::{open, run};

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, count: usize) -> Bytes {
    batch_of(pid, epoch, seq, count, false)
}

fn batch_of(pid: i64, epoch: i16, seq: i32, count: usize, transactional: bool) -> Bytes {
    storage_common::producer_batch(pid, epoch, seq, count, transactional, None)
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

fn snapshots(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snapshot"))
        .collect();
    names.sort();
    names
}

/// Append batch `i` (3 records, sequence 3i) of producer 7 and return its base offset.
async fn append_seq(log: &PartitionLog, i: i32) -> Result<i64, StorageError> {
    log.append(idempotent_batch(7, 0, i * 3, 3), 0)
        .await
        .map(|info| info.base_offset)
}

/// Across segment rolls, a reopened log (crash: no close) still knows the producer: retries
/// of its last batches are duplicates and a gap is refused.
#[test]
fn producer_state_is_rebuilt_from_roll_snapshot_after_a_crash() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        {
            let log = open(&dir, small_segments(), 1 << 20).await;
            for i in 0..20 {
                assert_eq!(append_seq(&log, i).await.unwrap(), i64::from(i) * 3);
            }
            assert!(log.segment_count() > 3, "segments rolled");
            // Dropped without close: as after a crash, only roll snapshots exist.
        }
        let snaps = snapshots(&dir);
        assert_eq!(
            snaps.len(),
            1,
            "only the newest roll snapshot is kept: {snaps:?}"
        );
        assert_ne!(snaps[0], "00000000000000000000.snapshot");
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(append_seq(&log, 19).await.unwrap(), 57, "duplicate");
        assert_eq!(
            append_seq(&log, 15).await.unwrap(),
            45,
            "oldest cached duplicate"
        );
        assert!(matches!(
            append_seq(&log, 14).await,
            Err(StorageError::OutOfOrderSequence(_))
        ));
        assert!(matches!(
            append_seq(&log, 21).await,
            Err(StorageError::OutOfOrderSequence(_))
        ));
        assert_eq!(append_seq(&log, 20).await.unwrap(), 60);
        log.close().await.unwrap();
        assert_eq!(snapshots(&dir), vec!["00000000000000000063.snapshot"]);
    });
}

/// A damaged snapshot is ignored: the state is replayed from the whole log instead.
#[test]
fn damaged_snapshot_falls_back_to_a_full_replay() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        {
            let log = open(&dir, LogConfig::default(), 1 << 20).await;
            for i in 0..4 {
                append_seq(&log, i).await.unwrap();
            }
            log.close().await.unwrap();
        }
        let snap = dir.join("00000000000000000012.snapshot");
        let mut data = std::fs::read(&snap).unwrap();
        data[10] ^= 0xff;
        std::fs::write(&snap, data).unwrap();
        let log = open(&dir, LogConfig::default(), 1 << 20).await;
        assert_eq!(append_seq(&log, 3).await.unwrap(), 9, "duplicate");
        assert!(matches!(
            log.append(idempotent_batch(7, 0, 0, 1), 0).await,
            Err(StorageError::OutOfOrderSequence(_))
        ));
        // A lower epoch is fenced.
        log.append(idempotent_batch(7, 1, 0, 1), 0).await.unwrap();
        assert!(matches!(
            log.append(idempotent_batch(7, 0, 12, 1), 0).await,
            Err(StorageError::InvalidProducerEpoch(_))
        ));
    });
}

/// Appends of one producer issued back to back without awaiting are judged in offset order.
#[test]
fn concurrent_appends_of_one_producer_are_judged_in_order() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(&tmp.path().join("p-0"), LogConfig::default(), 1 << 20).await;
        use futures_lite::future::zip;
        let ((a, b), (c, d)) = zip(
            zip(append_seq(&log, 0), append_seq(&log, 1)),
            zip(append_seq(&log, 2), append_seq(&log, 3)),
        )
        .await;
        let offsets: Vec<i64> = [a, b, c, d].into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(offsets, vec![0, 3, 6, 9]);
        assert_eq!(log.high_watermark(), 12);
    });
}

/// Markers end transactions in the log: the LSO waits at an open transaction's first offset,
/// an abort enters the aborted index, state survives a reopen, and a write verified before a
/// marker arrived is refused (the verification guard).
#[test]
fn markers_end_transactions_and_void_stale_verifications() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        {
            let log = open(&dir, LogConfig::default(), 1 << 20).await;
            log.append(idempotent_batch(1, 0, 0, 2), 0).await.unwrap();
            let guard = (9, log.marker_count(9));
            let info = log
                .append_verified(batch_of(9, 0, 0, 3, true), 0, guard)
                .await
                .unwrap();
            assert_eq!(info.base_offset, 2);
            assert_eq!(log.high_watermark(), 5);
            assert_eq!(log.last_stable_offset(), 2);
            let marker = log.append_marker(9, 0, false, 0, 0).await.unwrap();
            assert_eq!(marker.base_offset, 5);
            assert_eq!(log.last_stable_offset(), 6);
            assert_eq!(log.aborted_transactions(0, 6).await.unwrap(), vec![(9, 2)]);
            // A write verified before that marker is stale now.
            assert!(matches!(
                log.append_verified(batch_of(9, 0, 3, 1, true), 0, guard)
                    .await,
                Err(StorageError::TransactionNotVerified(_))
            ));
            // A marker older than the producer's epoch is refused.
            log.append_marker(9, 2, true, 0, 0).await.unwrap();
            assert!(matches!(
                log.append_marker(9, 1, true, 0, 0).await,
                Err(StorageError::InvalidProducerEpoch(_))
            ));
            // Clients may not write control batches.
            let control = freshet_protocol::batch::encode_control_batch(9, 2, true, 0, 0).unwrap();
            assert!(matches!(
                log.append(control, 0).await,
                Err(StorageError::InvalidRecord(_))
            ));
            // Leave a transaction open across the crash.
            let guard = (9, log.marker_count(9));
            log.append_verified(batch_of(9, 2, 0, 1, true), 0, guard)
                .await
                .unwrap();
            assert_eq!(log.last_stable_offset(), 7);
        }
        let log = open(&dir, LogConfig::default(), 1 << 20).await;
        assert_eq!(log.high_watermark(), 8);
        assert_eq!(
            log.last_stable_offset(),
            7,
            "open transaction rebuilt by replay"
        );
        assert_eq!(log.aborted_transactions(0, 8).await.unwrap(), vec![(9, 2)]);
        log.append_marker(9, 2, true, 0, 0).await.unwrap();
        assert_eq!(log.last_stable_offset(), 9);
        log.close().await.unwrap();
        let log = open(&dir, LogConfig::default(), 1 << 20).await;
        assert_eq!(log.last_stable_offset(), 9, "from the close snapshot");
        assert_eq!(log.aborted_transactions(0, 9).await.unwrap(), vec![(9, 2)]);
    });
}

/// A clean close with no producers writes no snapshot file (the checkpoint records the empty
/// state instead); producers that arrive after the next open are still rebuilt after a crash.
#[test]
fn empty_producer_state_is_recorded_in_the_checkpoint() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        {
            let log = open(&dir, LogConfig::default(), 1 << 20).await;
            log.append(storage_common::batch(5, 100, 0), 0)
                .await
                .unwrap();
            log.close().await.unwrap();
        }
        assert!(snapshots(&dir).is_empty(), "{:?}", snapshots(&dir));
        let cp = std::fs::read_to_string(dir.join("recovery-checkpoint")).unwrap();
        assert!(cp.contains("producers_empty_at 5"), "{cp}");
        {
            let log = open(&dir, LogConfig::default(), 1 << 20).await;
            assert_eq!(append_seq(&log, 0).await.unwrap(), 5);
            assert_eq!(append_seq(&log, 1).await.unwrap(), 8);
            // Dropped without close.
        }
        let log = open(&dir, LogConfig::default(), 1 << 20).await;
        assert_eq!(
            append_seq(&log, 1).await.unwrap(),
            8,
            "duplicate after the crash"
        );
        assert!(matches!(
            append_seq(&log, 3).await,
            Err(StorageError::OutOfOrderSequence(_))
        ));
    });
}
