//! Log compaction at the storage level: the latest value of every key survives with its
//! offset, older values and (after `delete.retention.ms`) tombstones go, compressed batches are
//! rewritten with their codec, a small offset map cleans in chunks, and a crash at any step of
//! the swap recovers to either the old or the cleaned log.

use crate::storage_common;

use bytes::Bytes;
use freshet::storage::cleaner::{self, LogCleanState, OffsetMap};
use freshet::storage::{LogConfig, PartitionLog};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
use std::collections::BTreeMap;
use std::path::Path;
use storage_common::{open, run};

const NOW: i64 = 1_000_000;

fn compact_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 512,
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

/// (offset, key, value) of every record served from `from`, reading as a consumer does.
async fn records(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let hw = log.high_watermark();
    while offset < hw {
        let data = log.read(offset, 1 << 20, true).await.expect("read");
        assert!(!data.batches.is_empty(), "no progress at offset {offset}");
        for b in data.batches {
            let h = cleaner::validate_stored(&b).expect("served batches are valid");
            offset = h.last_offset() + 1;
            let mut bytes = b.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                .expect("decodable batch");
            for r in set.records {
                out.push((
                    r.offset,
                    String::from_utf8(r.key.expect("keyed").to_vec()).expect("utf8"),
                    r.value
                        .map(|v| String::from_utf8(v.to_vec()).expect("utf8")),
                ));
            }
        }
    }
    out
}

/// Appends `rounds` updates of `keys` keys (value `k{key}-v{round}`), batches of 5 records
/// cycling through the codecs; key 3 gets a tombstone halfway and no writes after it. Returns every record
/// as appended, with its offset.
async fn fill(
    log: &PartitionLog,
    keys: usize,
    rounds: usize,
) -> Vec<(i64, String, Option<String>)> {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let mut all: Vec<(String, Option<String>)> = Vec::new();
    for round in 0..rounds {
        for k in 0..keys {
            if k == 3 && round >= rounds / 2 {
                continue;
            }
            let value = if k == 3 && round == rounds / 2 - 1 {
                None
            } else {
                Some(format!("k{k}-v{round}"))
            };
            all.push((format!("k{k}"), value));
        }
    }
    let mut out = Vec::new();
    for (i, chunk) in all.chunks(5).enumerate() {
        let recs: Vec<NewRecord> = chunk
            .iter()
            .map(|(k, v)| {
                (
                    Some(Bytes::from(k.clone())),
                    v.clone().map(Bytes::from),
                    NOW - 10_000 + i as i64,
                )
            })
            .collect();
        let b = encode_batch(&recs, codecs[i % codecs.len()]).expect("encode");
        let info = log.append(b, NOW).await.expect("append");
        for (j, (k, v)) in chunk.iter().enumerate() {
            out.push((info.base_offset + j as i64, k.clone(), v.clone()));
        }
    }
    out
}

/// The latest (offset, value) per key among `recs` below `end`.
fn latest(
    recs: &[(i64, String, Option<String>)],
    end: i64,
) -> BTreeMap<String, (i64, Option<String>)> {
    let mut m = BTreeMap::new();
    for (o, k, v) in recs.iter().filter(|r| r.0 < end) {
        m.insert(k.clone(), (*o, v.clone()));
    }
    m
}

async fn clean_until_done(log: &PartitionLog, map: &mut OffsetMap, now: i64) -> usize {
    let mut state = LogCleanState::default();
    let mut rounds = 0;
    while let Some(r) = log.clean(&mut state, map, now, false).await.expect("clean") {
        assert_eq!(r.groups_abandoned, 0);
        rounds += 1;
        assert!(rounds < 100, "cleaning does not converge");
        if state.first_dirty == Some(*log.segment_base_offsets().last().expect("active")) {
            break;
        }
    }
    rounds
}

/// After cleaning, the cleaned part holds exactly the latest record of each key, at its
/// original offset; the active segment is untouched; tombstones stay until their horizon and
/// then go; reopening serves the same records.
#[test]
fn compaction_keeps_latest_value_per_key_at_its_offset() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c-0");
    run(async move {
        let log = open(&dir, compact_config(2048), 0).await;
        let appended = fill(&log, 10, 40).await;
        let segments_before = log.segment_count();
        assert!(segments_before > 5, "small segments must have rolled");
        let active = *log.segment_base_offsets().last().expect("active");
        let mut map = OffsetMap::with_memory(1 << 20);
        let mut state = LogCleanState::default();
        // Big groups: everything cleanable merges.
        log.set_config(compact_config(1 << 20));
        let report = log
            .clean(&mut state, &mut map, NOW, false)
            .await
            .expect("clean")
            .expect("a round was due");
        assert_eq!(report.first_dirty, active);
        assert!(report.bytes_after < report.bytes_before / 4, "{report:?}");
        assert!(log.segment_count() < segments_before);

        let check = |got: &[(i64, String, Option<String>)], tombstones_kept: bool| {
            let want = latest(&appended, active);
            let cleaned: Vec<_> = got.iter().filter(|r| r.0 < active).cloned().collect();
            let mut expect: Vec<_> = want
                .iter()
                .filter(|(_, (_, v))| tombstones_kept || v.is_some())
                .map(|(k, (o, v))| (*o, k.clone(), v.clone()))
                .collect();
            expect.sort();
            assert_eq!(cleaned, expect, "cleaned part = latest record per key");
            let tail: Vec<_> = appended.iter().filter(|r| r.0 >= active).cloned().collect();
            let got_tail: Vec<_> = got.iter().filter(|r| r.0 >= active).cloned().collect();
            assert_eq!(got_tail, tail, "the active segment is untouched");
        };
        let got = records(&log).await;
        check(&got, true);
        assert!(got
            .iter()
            .any(|r| r.1 == "k3" && r.2.is_none() && r.0 < active));

        // Before the horizon (now + 1000 ms) nothing changes; after it, the tombstone goes.
        assert!(log
            .clean(&mut state, &mut map, NOW + 500, false)
            .await
            .expect("clean")
            .is_none());
        log.clean(&mut state, &mut map, NOW + 1_000, false)
            .await
            .expect("clean")
            .expect("the horizon passed: a round is due");
        let got = records(&log).await;
        check(&got, false);
        log.close().await.expect("close");

        // Reopen (indexes from disk), then again with the indexes deleted (rebuilt by a scan
        // that accepts the cleaner's offset gaps).
        let log = open(&dir, compact_config(2048), 0).await;
        assert_eq!(records(&log).await, got);
        log.close().await.expect("close");
        for name in std::fs::read_dir(&dir).expect("dir") {
            let name = name.expect("entry").path();
            if name
                .extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
            {
                std::fs::remove_file(name).expect("rm index");
            }
        }
        let log = open(&dir, compact_config(2048), 0).await;
        assert_eq!(records(&log).await, got);
        // Reads starting in a gap get the next record, even across a cleaned segment's end.
        for (o, _, _) in got.iter().take(8) {
            let data = log.read(o - 1, 100, true).await.expect("read");
            let h = cleaner::validate_stored(&data.batches[0]).expect("valid");
            assert!(h.last_offset() >= o - 1);
        }
        log.close().await.expect("close");
    });
}

/// An offset map too small for the dirty range cleans it in several rounds, and the result
/// is the same: no latest value is lost.
#[test]
fn small_offset_map_cleans_in_chunks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c-0");
    run(async move {
        let log = open(&dir, compact_config(16 << 10), 0).await;
        let appended = fill(&log, 1500, 3).await;
        let active = *log.segment_base_offsets().last().expect("active");
        let mut map = OffsetMap::with_memory(0); // 1024 keys
        let rounds = clean_until_done(&log, &mut map, NOW).await;
        assert!(
            rounds >= 2,
            "1500 keys do not fit a 1024-key map in one round"
        );
        let got = records(&log).await;
        let want = latest(&appended, active);
        let cleaned: Vec<_> = got.iter().filter(|r| r.0 < active).cloned().collect();
        let mut seen = BTreeMap::new();
        for (o, k, v) in &cleaned {
            assert!(
                seen.insert(k.clone(), (*o, v.clone())).is_none(),
                "{k} twice"
            );
        }
        assert_eq!(seen, want);
        log.close().await.expect("close");
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A crash at each step of the swap: before the commit (a `.cleaned` file) the old log is
/// served; after it (a `.swap` file, with none, some or all of the old files removed, or
/// renamed into place without indexes) the cleaned log is served. No leftover files remain.
#[test]
fn crash_during_swap_recovers_old_or_cleaned_log() {
    let tmp = tempfile::tempdir().expect("tmp");
    let base_dir = tmp.path().to_path_buf();
    run(async move {
        let before = base_dir.join("before");
        let log = open(&before, compact_config(2048), 0).await;
        fill(&log, 10, 30).await;
        let old_segments = log.segment_base_offsets();
        log.close().await.expect("close");
        let log = open(&before, compact_config(2048), 0).await;
        let old_records = records(&log).await;
        log.close().await.expect("close");

        let after = base_dir.join("after");
        copy_dir(&before, &after);
        let log = open(&after, compact_config(1 << 20), 0).await;
        let mut map = OffsetMap::with_memory(1 << 20);
        let mut state = LogCleanState::default();
        log.clean(&mut state, &mut map, NOW, false)
            .await
            .expect("clean")
            .expect("due");
        let new_records = records(&log).await;
        let new_segments = log.segment_base_offsets();
        assert_eq!(
            new_segments.len(),
            2,
            "one cleaned group and the active segment"
        );
        log.close().await.expect("close");
        assert_ne!(old_records, new_records);
        let cleaned_base = new_segments[0];
        let cleaned_name = format!("{cleaned_base:020}.log");
        let cleaned_bytes = std::fs::read(after.join(&cleaned_name)).expect("cleaned segment");
        let group: Vec<i64> = old_segments
            .iter()
            .copied()
            .filter(|b| *b < new_segments[1])
            .collect();

        // (name of the crash state, files to write, files to remove, cleaned log expected)
        let n = group.len();
        let seg = |b: i64, ext: &str| format!("{b:020}.{ext}");
        let mut cases: Vec<(&str, Vec<String>, Vec<String>, bool)> = vec![
            (
                "cleaned file half written",
                vec![format!("{cleaned_name}.cleaned")],
                vec![],
                false,
            ),
            (
                "swap committed",
                vec![format!("{cleaned_name}.swap")],
                vec![],
                true,
            ),
        ];
        let mut some_removed = vec![seg(group[0], "index"), seg(group[0], "timeindex")];
        for b in &group[1..n / 2] {
            for ext in ["log", "index", "timeindex"] {
                some_removed.push(seg(*b, ext));
            }
        }
        cases.push((
            "swap committed, old files partly removed",
            vec![format!("{cleaned_name}.swap")],
            some_removed,
            true,
        ));
        let mut all_removed = vec![seg(group[0], "index"), seg(group[0], "timeindex")];
        for b in &group[1..] {
            for ext in ["log", "index", "timeindex"] {
                all_removed.push(seg(*b, ext));
            }
        }
        cases.push((
            "swap committed, all old files removed",
            vec![format!("{cleaned_name}.swap")],
            all_removed.clone(),
            true,
        ));
        cases.push((
            "renamed into place, no indexes yet",
            vec![cleaned_name.clone()],
            all_removed,
            true,
        ));

        for (i, (what, write, remove, cleaned)) in cases.into_iter().enumerate() {
            let dir = base_dir.join(format!("case-{i}"));
            copy_dir(&before, &dir);
            for w in &write {
                std::fs::write(dir.join(w), &cleaned_bytes).expect("write");
            }
            for r in &remove {
                std::fs::remove_file(dir.join(r)).expect("remove");
            }
            let log = open(&dir, compact_config(2048), 0).await;
            let got = records(&log).await;
            let want = if cleaned { &new_records } else { &old_records };
            assert_eq!(&got, want, "{what}");
            log.close().await.expect("close");
            let left: Vec<String> = names(&dir)
                .into_iter()
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                .collect();
            assert!(left.is_empty(), "{what}: leftovers {left:?}");
        }
    });
}

/// `cleanup.policy=compact` alone: retention never deletes segments.
#[test]
fn compact_only_topics_are_not_trimmed_by_retention() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c-0");
    run(async move {
        let cfg = LogConfig {
            retention_ms: 1,
            retention_bytes: 1,
            ..compact_config(2048)
        };
        let log = open(&dir, cfg.clone(), 0).await;
        fill(&log, 10, 10).await;
        let n = log.segment_count();
        assert_eq!(
            log.apply_retention(NOW + 10_000_000)
                .await
                .expect("retention"),
            0
        );
        assert_eq!(log.segment_count(), n);
        log.set_config(LogConfig {
            cleanup_delete: true,
            ..cfg
        });
        assert!(
            log.apply_retention(NOW + 10_000_000)
                .await
                .expect("retention")
                > 0
        );
        log.close().await.expect("close");
    });
}

/// Readers and appenders keep working while the cleaner rewrites and swaps segments under
/// them: every read returns valid batches (from the old or the new segment files), every
/// append succeeds, and the result is still the latest value per key.
#[test]
fn cleaning_while_reading_and_appending() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c-0");
    run(async move {
        let log = std::rc::Rc::new(open(&dir, compact_config(4096), 0).await);
        let appended = fill(&log, 20, 30).await;
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let reader = {
            let (log, stop) = (log.clone(), stop.clone());
            glommio::spawn_local(async move {
                let mut reads = 0u64;
                while !stop.get() {
                    let mut offset = log.log_start_offset();
                    let hw = log.high_watermark();
                    while offset < hw {
                        let data = log
                            .read(offset, 3000, true)
                            .await
                            .expect("read while cleaning");
                        for b in &data.batches {
                            let h = cleaner::validate_stored(b).expect("valid batch");
                            offset = h.last_offset() + 1;
                        }
                        reads += 1;
                        glommio::yield_if_needed().await;
                    }
                    glommio::executor().yield_now().await;
                }
                reads
            })
        };
        let writer = {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut out = Vec::new();
                for i in 0..40 {
                    let recs: Vec<NewRecord> = vec![(
                        Some(Bytes::from(format!("k{}", i % 20))),
                        Some(Bytes::from(format!("late-{i}"))),
                        NOW,
                    )];
                    let b = encode_batch(&recs, Compression::None).expect("encode");
                    let info = log.append(b, NOW).await.expect("append while cleaning");
                    out.push((
                        info.base_offset,
                        format!("k{}", i % 20),
                        Some(format!("late-{i}")),
                    ));
                    glommio::executor().yield_now().await;
                }
                out
            })
        };
        let mut map = OffsetMap::with_memory(0);
        for _ in 0..5 {
            let mut state = LogCleanState::default();
            log.clean(&mut state, &mut map, NOW, true)
                .await
                .expect("clean");
        }
        let late = writer.await;
        stop.set(true);
        let reads = reader.await;
        assert!(reads > 0);
        let mut all = appended;
        all.extend(late);
        let hw = log.high_watermark();
        let want = latest(&all, hw);
        let mut got = BTreeMap::new();
        for (o, k, v) in records(&log).await {
            got.insert(k, (o, v));
        }
        assert_eq!(
            got, want,
            "replaying the cleaned log gives the latest value of every key"
        );
        std::rc::Rc::try_unwrap(log)
            .ok()
            .expect("tasks done")
            .close()
            .await
            .expect("close");
    });
}

/// With a file pool of one descriptor per shard (issue 12 item 2b), the segment a cleaning
/// round swapped in (written as `<base>.log.cleaned`, renamed to `<base>.log`) is closed by
/// the pool as soon as another file is used, and reopened by its final name when read: every
/// key's latest value is still served.
#[test]
fn swapped_in_segments_reopen_by_their_final_name_through_the_file_pool() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c-0");
    run(async move {
        freshet::storage::io::set_open_files_max(1);
        let log = open(&dir, compact_config(2048), 0).await;
        let appended = fill(&log, 10, 40).await;
        let mut map = OffsetMap::with_memory(1 << 20);
        log.set_config(compact_config(1 << 20));
        assert!(clean_until_done(&log, &mut map, NOW).await > 0);
        let hw = log.high_watermark();
        // Reading the active segment takes the only descriptor from the cleaned one.
        log.read(hw - 1, 1 << 20, true)
            .await
            .expect("read the active segment");
        assert!(freshet::storage::io::open_files() <= 1);
        let got = records(&log).await;
        let values = |recs: &[(i64, String, Option<String>)]| {
            latest(recs, hw)
                .into_iter()
                .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(values(&got), values(&appended));
        log.close().await.expect("close");
    });
}
