//! The aborted-transaction index (`<base>.txnindex` per segment, Kafka's 34-byte entries):
//! written for sealed segments at a roll and for the active one at close, read back after a
//! reopen and after kill -9, removed with its segments, and rebuilt from the log when damaged
//! or missing for a replayed segment.

use crate::storage_common;

use bytes::Bytes;
use freshet::storage::{LogConfig, PartitionLog, TailCache};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use storage_common::{open, run};

const CHILD_ENV: &str = "FRESHET_TXN_INDEX_CHILD";

fn txn_batch(pid: i64, seq: i32, count: usize) -> Bytes {
    txn_batch_keyed(pid, seq, count, None)
}

fn txn_batch_keyed(pid: i64, seq: i32, count: usize, key: Option<&str>) -> Bytes {
    storage_common::producer_batch(pid, 0, seq, count, true, key)
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

/// Run `n` transactions of producer `pid` (3 records each); the odd ones are aborted.
/// Returns the (producer id, first offset) of the aborted ones.
async fn transactions(log: &PartitionLog, pid: i64, n: i32) -> Vec<(i64, i64)> {
    let mut aborted = Vec::new();
    for t in 0..n {
        let info = log.append(txn_batch(pid, t * 3, 3), 0).await.unwrap();
        let abort = t % 2 == 1;
        log.append_marker(pid, 0, !abort, 0, 0).await.unwrap();
        if abort {
            aborted.push((pid, info.base_offset));
        }
    }
    aborted
}

fn files(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

/// The entries of one file as (producer id, first offset, last offset), checking the layout.
fn entries(path: &Path) -> Vec<(i64, i64, i64)> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(data.len() % 34, 0, "whole 34-byte entries");
    data.chunks(34)
        .map(|c| {
            assert_eq!(&c[..2], &[0, 0], "version 0");
            let at = |i: usize| i64::from_be_bytes(c[i..i + 8].try_into().unwrap());
            (at(2), at(10), at(18))
        })
        .collect()
}

/// Sealed segments get their index at the roll, the active one at close; a reopen reads the
/// same aborted transactions, and fetch ranges only list those overlapping.
#[test]
fn index_is_written_per_segment_and_survives_reopen() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        let log = open(&dir, small_segments(), 1 << 20).await;
        let aborted = transactions(&log, 7, 20).await;
        assert_eq!(aborted.len(), 10);
        assert!(log.segment_count() > 3, "segments rolled");
        let hw = log.high_watermark();
        assert_eq!(log.aborted_transactions(0, hw).await.unwrap(), aborted);
        // Only [8, 12) is overlapped by the second aborted transaction (offsets 4..=7 + marker).
        assert_eq!(log.aborted_transactions(8, 9).await.unwrap(), vec![]);
        assert_eq!(log.aborted_transactions(5, 9).await.unwrap(), vec![(7, 4)]);
        let sealed = files(&dir, ".txnindex");
        assert!(!sealed.is_empty(), "sealed segments have index files");
        // Every file entry's marker lies in its segment.
        let bases = log.segment_base_offsets();
        for name in &sealed {
            let base: i64 = name[..20].parse().unwrap();
            let i = bases
                .iter()
                .position(|b| *b == base)
                .expect("segment exists");
            let end = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            for (pid, first, last) in entries(&dir.join(name)) {
                assert_eq!(pid, 7);
                assert!(first < last && last >= base && last < end, "{name}");
            }
        }
        log.close().await.unwrap();
        let all: usize = files(&dir, ".txnindex")
            .iter()
            .map(|n| entries(&dir.join(n)).len())
            .sum();
        assert_eq!(all, 10, "every abort is in a file after close");
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(log.aborted_transactions(0, hw).await.unwrap(), aborted);
        log.close().await.unwrap();
    });
}

/// DeleteRecords (and so retention) removes the index files with their segments.
#[test]
fn index_files_go_with_their_segments() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        let log = open(&dir, small_segments(), 1 << 20).await;
        let aborted = transactions(&log, 3, 12).await;
        log.close().await.unwrap();
        let log = open(&dir, small_segments(), 1 << 20).await;
        let before = files(&dir, ".txnindex");
        let cut = log.segment_base_offsets()[2];
        log.delete_records(cut).await.unwrap();
        let after = files(&dir, ".txnindex");
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        for name in &after {
            assert!(name[..20].parse::<i64>().unwrap() >= cut);
        }
        let hw = log.high_watermark();
        let left: Vec<(i64, i64)> = aborted.iter().copied().filter(|a| a.1 + 3 >= cut).collect();
        assert_eq!(log.aborted_transactions(cut, hw).await.unwrap(), left);
    });
}

/// The cleaner merges the index files of the segments it swaps into the new segment's file:
/// aborted data is kept by compaction, and so are the entries that let consumers skip it.
#[test]
fn compaction_merges_the_index_files_of_the_segments_it_swaps() {
    use freshet::storage::cleaner::{LogCleanState, OffsetMap};
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c-0");
        let config = LogConfig {
            segment_bytes: 4096,
            cleanup_compact: true,
            cleanup_delete: false,
            min_cleanable_dirty_ratio: 0.0,
            ..LogConfig::default()
        };
        let log = open(&dir, config.clone(), 1 << 20).await;
        let mut aborted = Vec::new();
        let mut t = 0;
        let mut segments_before = 0;
        let mut map = OffsetMap::with_memory(1 << 20);
        // Round 1 cleans each segment alone; round 2 (with new dirty data) merges the small
        // results of round 1.
        for round in 0..2 {
            while t < 24 * (round + 1) {
                let key = format!("k{}", t % 3);
                let info = log
                    .append(txn_batch_keyed(4, t * 3, 3, Some(&key)), 0)
                    .await
                    .unwrap();
                let abort = t % 2 == 1;
                log.append_marker(4, 0, !abort, 0, 0).await.unwrap();
                if abort {
                    aborted.push((4, info.base_offset));
                }
                t += 1;
            }
            segments_before = log.segment_count();
            let mut state = LogCleanState::default();
            let r = log
                .clean(&mut state, &mut map, 1_000_000, true)
                .await
                .unwrap()
                .expect("a round ran");
            assert_eq!(r.groups_abandoned, 0);
        }
        let hw = log.high_watermark();
        assert!(
            log.segment_count() < segments_before,
            "segments were merged: {segments_before} -> {}",
            log.segment_count()
        );
        assert_eq!(log.aborted_transactions(0, hw).await.unwrap(), aborted);
        let bases = log.segment_base_offsets();
        for n in files(&dir, ".txnindex") {
            let base: i64 = n[..20].parse().unwrap();
            assert!(bases.contains(&base), "{n} has its segment");
        }
        log.close().await.unwrap();
        let log = open(&dir, config, 1 << 20).await;
        assert_eq!(log.aborted_transactions(0, hw).await.unwrap(), aborted);
        log.close().await.unwrap();
    });
}

/// A damaged index file makes recovery replay the log and write it again; a missing one of a
/// segment replayed after the snapshot is rebuilt too.
#[test]
fn damaged_or_missing_index_is_rebuilt() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        let log = open(&dir, small_segments(), 1 << 20).await;
        let aborted = transactions(&log, 5, 12).await;
        let hw = log.high_watermark();
        log.close().await.unwrap();
        let names = files(&dir, ".txnindex");
        let victim = dir.join(&names[0]);
        let good = std::fs::read(&victim).unwrap();
        std::fs::write(&victim, &good[..good.len() - 5]).unwrap();
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(log.aborted_transactions(0, hw).await.unwrap(), aborted);
        assert_eq!(std::fs::read(&victim).unwrap(), good, "rewritten whole");
        log.close().await.unwrap();
        // Without snapshots the whole log is replayed: every missing file comes back.
        for n in files(&dir, ".txnindex")
            .into_iter()
            .chain(files(&dir, ".snapshot"))
        {
            std::fs::remove_file(dir.join(n)).unwrap();
        }
        let log = open(&dir, small_segments(), 1 << 20).await;
        assert_eq!(log.aborted_transactions(0, hw).await.unwrap(), aborted);
        log.close().await.unwrap();
        assert_eq!(files(&dir, ".txnindex"), names);
    });
}

/// The child: transactions forever, printing `ABORT pid first` once an abort marker is durable.
#[test]
#[ignore = "child process of `acked_aborts_survive_kill_9`, which runs it with --ignored"]
fn txn_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Run by hand (--include-ignored) without the parent: nothing to do.
    };
    let dir = PathBuf::from(dir);
    run(async move {
        let log = PartitionLog::open(&dir, small_segments(), TailCache::new(1 << 20))
            .await
            .expect("child open");
        // A producer id per run, so the sequences start over.
        let pid = i64::from(std::process::id());
        for t in 0..i32::MAX / 3 {
            let info = log.append(txn_batch(pid, t * 3, 3), 0).await.unwrap();
            let abort = t % 2 == 1;
            log.append_marker(pid, 0, !abort, 0, 0).await.unwrap();
            if abort {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "ABORT {pid} {}", info.base_offset);
                let _ = out.flush();
            }
        }
    });
}

/// Every acknowledged abort is listed after kill -9, several times over.
#[test]
fn acked_aborts_survive_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(i64, i64)> = Vec::new();
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                "storage_txn_index::txn_child_entry",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.push(line);
            }
            lines
        });
        // Not synchronization: the child is killed at a different moment each round.
        std::thread::sleep(Duration::from_millis(400 + 150 * round));
        child.kill().expect("SIGKILL child");
        assert!(!child.wait().unwrap().success());
        for line in reader.join().unwrap() {
            let mut it = line.split_whitespace();
            if it.next() != Some("ABORT") {
                continue;
            }
            if let (Some(Ok(p)), Some(Ok(f))) =
                (it.next().map(str::parse), it.next().map(str::parse))
            {
                acked.push((p, f));
            }
        }
        let d = dir.clone();
        let want = acked.clone();
        run(async move {
            let log = PartitionLog::open(&d, small_segments(), TailCache::new(0))
                .await
                .expect("reopen");
            let got = log
                .aborted_transactions(0, log.high_watermark())
                .await
                .unwrap();
            for a in &want {
                assert!(got.contains(a), "acked abort {a:?} lost after kill -9");
            }
            // Leave no file damaged for the next round: every one parses.
            for n in files(&d, ".txnindex") {
                entries(&d.join(n));
            }
        });
    }
    assert!(acked.len() > 4, "the child made progress: {}", acked.len());
}
