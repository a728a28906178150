//! Leader epochs in the storage engine: appended batches carry the partition's leader epoch,
//! the leader-epoch cache answers Kafka's `endOffsetFor`, its `leader-epoch-checkpoint` file
//! (Kafka's text format) survives reopening and is rebuilt from the log when missing, damaged,
//! behind or ahead of the log; `truncate_to` drops the tail at a batch boundary with the epoch
//! cache, producer state and aborted-transaction index following, and recovery agrees with it.

use crate::storage_common;

use bytes::Bytes;
use freshet::storage::{LogConfig, PartitionLog, StorageError};
use std::path::Path;
use storage_common::{open, read_all, run};

const EPOCH_FILE: &str = "leader-epoch-checkpoint";

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

fn idempotent(pid: i64, seq: i32) -> Bytes {
    storage_common::producer_batch(pid, 0, seq, 5, false, None)
}

fn transactional(pid: i64, seq: i32) -> Bytes {
    storage_common::producer_batch(pid, 0, seq, 3, true, None)
}

/// The leader epoch of every batch served from `from` on.
async fn batch_epochs(log: &PartitionLog) -> Vec<i32> {
    read_all(log, log.log_start_offset())
        .await
        .iter()
        .map(|b| i32::from_be_bytes([b[12], b[13], b[14], b[15]]))
        .collect()
}

fn epoch_file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(EPOCH_FILE)).expect("leader-epoch-checkpoint")
}

/// Appends in epochs 0, 2 and 5 (starting at offsets 0, 15 and 30): returns the log end.
async fn three_epochs(log: &PartitionLog) -> i64 {
    for i in 0..3 {
        log.append(storage_common::batch(5, 300, 1_000 + i), 0)
            .await
            .unwrap();
    }
    log.set_leader_epoch(2);
    for i in 0..3 {
        log.append(storage_common::batch(5, 300, 2_000 + i), 0)
            .await
            .unwrap();
    }
    log.set_leader_epoch(5);
    for i in 0..2 {
        log.append(storage_common::batch(5, 300, 3_000 + i), 0)
            .await
            .unwrap();
    }
    log.log_end_offset()
}

/// Batches carry the epoch set on the log; the cache answers endOffsetFor as Kafka does; the
/// file is Kafka's format and is read back on open.
#[test]
fn appended_batches_carry_the_leader_epoch_and_the_cache_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(log.end_offset_for_epoch(0), None);
        let end = three_epochs(&log).await;
        assert_eq!(end, 40);
        assert!(log.segment_count() > 2, "the data spans several segments");
        assert_eq!(batch_epochs(&log).await, vec![0, 0, 0, 2, 2, 2, 5, 5]);
        assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 15), (5, 30)]);
        assert_eq!(log.latest_epoch(), Some(5));
        assert_eq!(log.end_offset_for_epoch(0), Some((0, 15)));
        assert_eq!(log.end_offset_for_epoch(1), Some((0, 15)));
        assert_eq!(log.end_offset_for_epoch(2), Some((2, 30)));
        assert_eq!(log.end_offset_for_epoch(4), Some((2, 30)));
        assert_eq!(log.end_offset_for_epoch(5), Some((5, 40)));
        assert_eq!(log.end_offset_for_epoch(6), None);
        assert_eq!(log.end_offset_for_epoch(-1), None);
        assert_eq!(log.epoch_for_offset(17), Some(2));
        log.close().await.unwrap();
        assert_eq!(epoch_file(&dir), "0\n3\n0 0\n2 15\n5 30\n");

        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 15), (5, 30)]);
        assert_eq!(log.leader_epoch(), 5, "stamps the latest epoch until told");
        log.append(storage_common::batch(1, 10, 4_000), 0)
            .await
            .unwrap();
        assert_eq!(*batch_epochs(&log).await.last().unwrap(), 5);
        log.close().await.unwrap();
    });
}

/// A missing, damaged, stale (behind the log) or ahead-of-the-log file is rebuilt on open
/// from the batches themselves: never a panic, never an offline partition.
#[test]
fn a_bad_epoch_file_is_rebuilt_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, small_segments(), 1 << 20).await;
        three_epochs(&log).await;
        log.close().await.unwrap();
        let good = epoch_file(&dir);
        let bad: [(&str, Option<&[u8]>); 6] = [
            ("missing", None),
            ("garbage", Some(b"\x00\xffnot a checkpoint")),
            ("wrong version", Some(b"1\n3\n0 0\n2 15\n5 30\n")),
            ("count mismatch", Some(b"0\n7\n0 0\n2 15\n")),
            ("behind the log", Some(b"0\n1\n0 0\n")),
            ("ahead of the log", Some(b"0\n4\n0 0\n2 15\n5 30\n9 1000\n")),
        ];
        for (what, content) in bad {
            match content {
                None => std::fs::remove_file(dir.join(EPOCH_FILE)).unwrap(),
                Some(c) => std::fs::write(dir.join(EPOCH_FILE), c).unwrap(),
            }
            let log = open(&dir, small_segments(), 1 << 20).await;
            assert_eq!(
                log.epoch_entries(),
                vec![(0, 0), (2, 15), (5, 30)],
                "{what}"
            );
            assert_eq!(log.leader_epoch(), 5, "{what}");
            log.close().await.unwrap();
            assert_eq!(epoch_file(&dir), good, "{what}: the file is written again");
        }
    });
}

/// A damaged batch in a sealed segment does not keep the partition offline when the epoch
/// file has to be rebuilt: the rest of that segment is skipped, the later epochs are found.
#[test]
fn a_damaged_batch_does_not_stop_the_epoch_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    // An index entry inside each segment: recovery checks a trusted segment from its last
    // entry on only, so the damage below it is found by reads alone.
    let config = LogConfig {
        index_interval_bytes: 1024,
        ..small_segments()
    };
    run(async move {
        let log = open(&dir, config.clone(), 1 << 20).await;
        three_epochs(&log).await;
        let bases = log.segment_base_offsets();
        log.close().await.unwrap();
        assert_eq!(bases[0], 0);
        assert!(bases.len() > 2 && bases[1] <= 15, "{bases:?}");
        // Damage the first segment's first batch (a record byte: its CRC no longer matches).
        let path = dir.join("00000000000000000000.log");
        let mut data = std::fs::read(&path).unwrap();
        data[100] ^= 0xff;
        std::fs::write(&path, data).unwrap();
        std::fs::remove_file(dir.join(EPOCH_FILE)).unwrap();
        let log = PartitionLog::open(
            &dir,
            small_segments(),
            freshet::storage::TailCache::new(1 << 20),
        )
        .await
        .expect("the partition stays online");
        assert_eq!(log.epoch_entries(), vec![(0, bases[1]), (2, 15), (5, 30)]);
        log.close().await.unwrap();
    });
}

/// The log start moving (DeleteRecords) moves the first epoch's start with it, as Kafka's
/// `truncateFromStart`.
#[test]
fn delete_records_cuts_the_epoch_cache_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, small_segments(), 1 << 20).await;
        three_epochs(&log).await;
        log.delete_records(20).await.unwrap();
        assert_eq!(log.epoch_entries(), vec![(2, 20), (5, 30)]);
        log.close().await.unwrap();
        assert_eq!(epoch_file(&dir), "0\n2\n2 20\n5 30\n");
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(log.epoch_entries(), vec![(2, 20), (5, 30)]);
        log.close().await.unwrap();
    });
}

/// A leader's epoch starts at the log end as soon as it leads (Kafka's makeLeader), before any
/// batch is written in it, even on an empty log.
#[test]
fn start_leader_epoch_records_the_epoch_at_the_log_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, small_segments(), 1 << 20).await;
        log.start_leader_epoch(4);
        assert_eq!(log.end_offset_for_epoch(4), Some((4, 0)));
        assert_eq!(log.end_offset_for_epoch(3), Some((3, 0)));
        log.append(storage_common::batch(2, 10, 1_000), 0)
            .await
            .unwrap();
        log.start_leader_epoch(6);
        log.start_leader_epoch(6);
        assert_eq!(log.epoch_entries(), vec![(4, 0), (6, 2)]);
        assert_eq!(log.end_offset_for_epoch(4), Some((4, 2)));
        assert_eq!(log.end_offset_for_epoch(6), Some((6, 2)));
        assert_eq!(batch_epochs(&log).await, vec![4]);
        log.close().await.unwrap();
        assert!(std::fs::read_to_string(dir.join(EPOCH_FILE))
            .unwrap()
            .ends_with("6 2\n"));
        // On open, an epoch without data at the log end goes (Kafka's truncateFromEnd to the
        // recovered end); leading again brings it back.
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(log.epoch_entries(), vec![(4, 0)]);
        log.start_leader_epoch(6);
        assert_eq!(log.epoch_entries(), vec![(4, 0), (6, 2)]);
        log.close().await.unwrap();
    });
}

/// A replica that led for a moment noted its epoch at the log end without appending; told by
/// its next leader to truncate to that end, it drops the epoch anyway (Kafka's
/// `UnifiedLog.truncateTo` at or past the log end truncates the epoch cache), so its next fetch
/// names the last epoch it has data of (else it is told to truncate again, forever).
#[test]
fn truncating_at_the_log_end_drops_an_epoch_started_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, small_segments(), 1 << 20).await;
        log.start_leader_epoch(1);
        log.append(storage_common::batch(3, 10, 1_000), 0)
            .await
            .unwrap();
        log.start_leader_epoch(3);
        assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 3)]);
        assert_eq!(log.truncate_to(3).await.unwrap(), 3);
        assert_eq!(log.epoch_entries(), vec![(1, 0)]);
        assert_eq!(log.latest_epoch(), Some(1));
        assert_eq!(log.log_end_offset(), 3);
        log.close().await.unwrap();
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(log.epoch_entries(), vec![(1, 0)]);
        log.close().await.unwrap();
    });
}

/// An idle partition costs no epoch-file write: leading an empty log and closing it writes
/// nothing (the next leadership starts the epoch again).
#[test]
fn an_idle_empty_partition_writes_no_epoch_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(async move {
        for _ in 0..2 {
            let log = open(&dir, small_segments(), 1 << 20).await;
            log.start_leader_epoch(2);
            assert_eq!(log.end_offset_for_epoch(2), Some((2, 0)));
            log.close().await.unwrap();
            assert!(!dir.join(EPOCH_FILE).exists());
        }
    });
}

/// What a reopened log must agree on with the log before.
async fn state(log: &PartitionLog) -> String {
    let mut producers = log.producers();
    producers.sort_by_key(|(id, _)| *id);
    // Each batch by its base offset, length and CRC field.
    let batches: Vec<(i64, usize, u32)> = read_all(log, log.log_start_offset())
        .await
        .iter()
        .map(|b| {
            let base = i64::from_be_bytes(b[0..8].try_into().unwrap());
            (
                base,
                b.len(),
                u32::from_be_bytes(b[17..21].try_into().unwrap()),
            )
        })
        .collect();
    format!(
        "end {} hw {} epochs {:?} producers {:?} aborted {:?} batches {:?}",
        log.log_end_offset(),
        log.high_watermark(),
        log.epoch_entries(),
        producers,
        log.aborted_transactions(0, log.log_end_offset())
            .await
            .unwrap(),
        batches
    )
}

/// An idempotent producer (pid 7) and a transactional one (pid 9, aborted) over three epochs
/// and several segments; returns the base offsets of pid 7's batches by sequence / 5.
async fn producers_over_epochs(log: &PartitionLog) -> Vec<i64> {
    let mut bases = Vec::new();
    for seq in [0, 5, 10] {
        bases.push(log.append(idempotent(7, seq), 0).await.unwrap().base_offset);
    }
    log.set_leader_epoch(1);
    log.append(transactional(9, 0), 0).await.unwrap();
    log.append_marker(9, 0, false, 0, 0).await.unwrap();
    bases.push(log.append(idempotent(7, 15), 0).await.unwrap().base_offset);
    log.set_leader_epoch(2);
    for seq in [20, 25] {
        bases.push(log.append(idempotent(7, seq), 0).await.unwrap().base_offset);
    }
    log.append(transactional(9, 3), 0).await.unwrap();
    log.append_marker(9, 0, false, 0, 0).await.unwrap();
    bases.push(log.append(idempotent(7, 30), 0).await.unwrap().base_offset);
    bases
}

/// truncate_to cuts at the batch boundary below the target, and everything derived from the
/// dropped batches goes: epochs, producer state (the producer's next sequence is the first
/// dropped one again), aborted transactions; the log then appends at the new end, and a
/// reopen (after a clean close and after a drop without close) finds exactly the same log.
#[test]
fn truncate_to_drops_the_tail_and_recovery_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, small_segments(), 1 << 20).await;
        let bases = producers_over_epochs(&log).await;
        let end_before = log.log_end_offset();
        assert!(log.segment_count() > 3, "{}", log.segment_count());
        let aborted_all = log.aborted_transactions(0, end_before).await.unwrap();
        assert_eq!(aborted_all.len(), 2);
        // Inside the batch of sequence 25 (epoch 2): that batch goes whole.
        let cut = bases[5];
        assert_eq!(log.truncate_to(cut + 2).await.unwrap(), cut);
        assert_eq!(log.log_end_offset(), cut);
        assert_eq!(log.high_watermark(), cut);
        assert_eq!(
            log.epoch_entries(),
            vec![(0, 0), (1, bases[3] - 4), (2, bases[4])]
        );
        assert_eq!(log.end_offset_for_epoch(2), Some((2, cut)));
        assert_eq!(
            log.aborted_transactions(0, cut).await.unwrap(),
            aborted_all[..1].to_vec()
        );
        assert_eq!(read_all(&log, 0).await.len(), 7, "7 batches below the cut");
        // At or past the end: nothing to do. Below the log start: refused.
        assert_eq!(log.truncate_to(cut).await.unwrap(), cut);
        assert_eq!(log.truncate_to(cut + 100).await.unwrap(), cut);
        let truncated = state(&log).await;
        log.close().await.unwrap();
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(
            state(&log).await,
            truncated,
            "recovery after a clean close agrees"
        );

        // The producer continues from the first dropped sequence, in epoch 3.
        log.set_leader_epoch(3);
        let again = log.append(idempotent(7, 25), 0).await.unwrap();
        assert_eq!(again.base_offset, cut, "not a duplicate of a dropped batch");
        assert!(matches!(
            log.append(idempotent(7, 35), 0).await,
            Err(StorageError::OutOfOrderSequence(_))
        ));
        assert_eq!(log.epoch_entries().last(), Some(&(3, cut)));

        // Cut whole segments away, then reopen without closing (as after a crash).
        let cut = bases[1];
        assert_eq!(log.truncate_to(cut).await.unwrap(), cut);
        assert_eq!(log.epoch_entries(), vec![(0, 0)]);
        assert!(log.aborted_transactions(0, cut).await.unwrap().is_empty());
        let truncated = state(&log).await;
        drop(log);
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(
            state(&log).await,
            truncated,
            "recovery after a crash agrees"
        );
        assert!(matches!(
            log.truncate_to(-1).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        log.close().await.unwrap();
    });
}

/// Truncating to the log start empties the log; appends then start there, epochs too.
#[test]
fn truncate_to_the_log_start_empties_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, small_segments(), 1 << 20).await;
        three_epochs(&log).await;
        log.delete_records(10).await.unwrap();
        assert!(matches!(
            log.truncate_to(5).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let end = log.truncate_to(10).await.unwrap();
        assert_eq!(end, 10);
        assert!(log.epoch_entries().is_empty());
        log.set_leader_epoch(7);
        let info = log
            .append(storage_common::batch(2, 10, 9_000), 0)
            .await
            .unwrap();
        assert_eq!(info.base_offset, 10);
        assert_eq!(log.epoch_entries(), vec![(7, 10)]);
        let before = state(&log).await;
        log.close().await.unwrap();
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(state(&log).await, before);
        log.close().await.unwrap();
    });
}

/// The batches of the log, and what its leader-epoch cache and producer 7's last sequence
/// must be for exactly those batches.
async fn derived(log: &PartitionLog) -> (Vec<Bytes>, Vec<(i32, i64)>, Option<i32>) {
    let batches = read_all(log, log.log_start_offset()).await;
    let mut epochs: Vec<(i32, i64)> = Vec::new();
    let mut last_seq = None;
    for b in &batches {
        let h = freshet_protocol::batch::header(b).expect("header");
        let epoch = h.partition_leader_epoch.get();
        if epochs.last().is_none_or(|(e, _)| epoch > *e) {
            epochs.push((epoch, h.base_offset()));
        }
        last_seq = Some(h.base_sequence.get() + h.last_offset_delta.get());
    }
    (batches, epochs, last_seq)
}

/// Ten batches of producer 7 over epochs 0, 1 and 2 on the simulated disk, in segments of
/// about two batches; returns the log and the base offset of the fourth batch.
async fn sim_log(dir: &Path) -> Result<(PartitionLog, i64), String> {
    let config = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir, config, freshet::storage::TailCache::new(1 << 20))
        .await
        .map_err(|e| format!("open: {e:?}"))?;
    let mut fourth = 0;
    for i in 0..10 {
        log.set_leader_epoch(match i {
            0..=3 => 0,
            4..=6 => 1,
            _ => 2,
        });
        let info = log
            .append(idempotent(7, i * 5), 0)
            .await
            .map_err(|e| format!("append {i}: {e:?}"))?;
        if i == 3 {
            fourth = info.base_offset;
        }
    }
    Ok((log, fourth))
}

/// A crash at every disk operation of a truncation (simulated disk: unsynced writes kept,
/// lost or torn): the reopened log is a prefix of the old one that holds at least the
/// truncated one, and its leader-epoch cache and producer state are exactly those of the
/// batches it holds; once truncate_to has returned, the log is the truncated one.
#[test]
fn a_crash_anywhere_in_truncate_to_recovers_a_consistent_log() {
    use freshet::storage::io::sim::{self, SimDisk};
    let mut completed = false;
    for crash_at in 1..=60u64 {
        let result: Result<bool, String> = freshet::rt::sim::run(crash_at, async move {
            let disk = SimDisk::new(crash_at);
            let _installed = sim::install(&disk);
            let dir = Path::new("/trunc/p-0");
            let (log, fourth) = sim_log(dir).await?;
            let (old, _, _) = derived(&log).await;
            disk.power_off_after(crash_at);
            let truncated = log.truncate_to(fourth + 2).await;
            let done = truncated.is_ok() && !disk.is_down();
            drop(log);
            disk.power_off_after(1);
            for _ in 0..200 {
                sim::yield_once().await;
            }
            disk.crash();
            let log = PartitionLog::open(
                dir,
                LogConfig {
                    segment_bytes: 4096,
                    index_interval_bytes: 1024,
                    ..LogConfig::default()
                },
                freshet::storage::TailCache::new(1 << 20),
            )
            .await
            .map_err(|e| format!("reopen: {e:?}"))?;
            let (batches, epochs, last_seq) = derived(&log).await;
            if batches.len() < 3 || batches[..] != old[..batches.len()] {
                return Err(format!(
                    "{} batches, not a prefix of the old log",
                    batches.len()
                ));
            }
            if done && batches.len() != 3 {
                return Err(format!(
                    "truncated, yet {} batches after a crash",
                    batches.len()
                ));
            }
            if log.epoch_entries() != epochs {
                return Err(format!(
                    "epochs {:?}, batches say {epochs:?}",
                    log.epoch_entries()
                ));
            }
            let seq = log
                .producers()
                .into_iter()
                .find(|(id, _)| *id == 7)
                .and_then(|(_, e)| e.batches.back().map(|b| b.last_seq));
            if seq != last_seq {
                return Err(format!(
                    "producer 7 at sequence {seq:?}, batches say {last_seq:?}"
                ));
            }
            log.close().await.map_err(|e| format!("close: {e:?}"))?;
            Ok(done)
        });
        match result {
            Ok(true) => {
                eprintln!("truncate_to finished with the disk up from crash point {crash_at} on");
                completed = true;
                break;
            }
            Ok(false) => {}
            Err(e) => panic!("crash at disk operation {crash_at} of truncate_to: {e}"),
        }
    }
    assert!(
        completed,
        "truncate_to never finished within 60 disk operations"
    );
}
