//! The metadata quorum's durable raft log ([`RaftLog`], `cluster/raft_log.rs`) on the simulated
//! disk: what survives a reopen and a crash, the truncate-and-append rule on replay, compaction,
//! bootstrap, and a damaged journal refused with an error instead of a panic.

use freshet::cluster::raft_log::{self, RaftLog};
use freshet::coordinator::metadata::{ClusterMetadata, MetadataRecord};
use freshet::rt;
use freshet::shard::metadata_log::{MetadataCodec, METADATA_LOG_LIMITS};
use freshet::storage::internal_log::InternalLog;
use freshet::storage::io::sim::{self, SimDisk};
use freshet::storage::{StorageError, TailCache};
use raft::prelude::{Entry, HardState};
use raft::{GetEntriesContext, Storage};
use std::path::{Path, PathBuf};

const CACHE_BYTES: usize = 64 << 10;
/// Yields after powering off, so the old log's tasks run into the dead disk.
const DRAIN_YIELDS: usize = 200;

fn dir() -> PathBuf {
    raft_log::raft_log_dir(Path::new("/sim"))
}

fn metadata(cluster_id: &str) -> ClusterMetadata {
    ClusterMetadata {
        cluster_id: cluster_id.into(),
        ..ClusterMetadata::default()
    }
}

/// An entry at (`index`, `term`) holding one producer-id block record.
fn entry(index: u64, term: u64) -> Entry {
    let records = [MetadataRecord::ProducerIdBlockAllocated {
        next: index as i64 * 1000,
    }];
    let mut e = Entry {
        index,
        term,
        ..Entry::default()
    };
    e.data = raft_log::encode_records(&records).unwrap().into();
    e
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

async fn open(voters: &[i32]) -> Result<RaftLog, StorageError> {
    RaftLog::open(&dir(), TailCache::new(CACHE_BYTES), voters, || {
        metadata("single")
    })
    .await
}

fn all_entries(log: &RaftLog) -> Vec<Entry> {
    let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
    log.entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
}

/// Powers the disk off (if not yet), lets the old tasks fail, crashes it.
async fn crash(disk: &SimDisk) -> sim::CrashReport {
    if !disk.is_down() {
        disk.power_off_after(1);
    }
    for _ in 0..DRAIN_YIELDS {
        sim::yield_once().await;
    }
    disk.crash()
}

/// Entries and the hard state persisted before a close come back after a reopen, through
/// raft-rs's `Storage`; the applied metadata at open is the snapshot plus the committed
/// entries (not the uncommitted ones); a multi-voter journal starts at index 0 with the voters.
#[test]
fn entries_and_hard_state_survive_reopen() {
    rt::sim::run(1, async {
        let disk = SimDisk::new(1);
        let _installed = sim::install(&disk);
        let log = open(&[0, 1, 2]).await.unwrap();
        assert_eq!(log.indexes(), (0, 0));
        assert_eq!(log.voters(), vec![1, 2, 3]);
        assert_eq!(log.applied_at_open(), (0, ClusterMetadata::default()));
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        log.persist(None, entries.clone(), Some(hard_state(1, 2, 3)))
            .await
            .unwrap();
        assert_eq!(all_entries(&log), entries);
        log.close().await.unwrap();

        let log = open(&[0, 1, 2]).await.unwrap();
        assert_eq!(all_entries(&log), entries);
        let state = log.initial_state().unwrap();
        assert_eq!(state.hard_state, hard_state(1, 2, 3));
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(log.term(4).unwrap(), 1);
        assert_eq!(log.term(0).unwrap(), 0);
        let (index, applied) = log.applied_at_open();
        assert_eq!(index, 3);
        assert_eq!(applied.producer_id_block_next, 3000);
        assert_eq!(applied.version, 3);
        log.close().await.unwrap();
    });
}

/// A single voter's empty journal starts from a snapshot at index 1, term 1, holding the
/// metadata it is given (an existing single-node directory's); a reopen never asks again.
#[test]
fn single_node_bootstrap_keeps_the_existing_metadata() {
    rt::sim::run(2, async {
        let disk = SimDisk::new(2);
        let _installed = sim::install(&disk);
        let mut existing = metadata("old-cluster");
        existing.version = 41;
        existing.producer_id_block_next = 7000;
        let given = existing.clone();
        let log = RaftLog::open(&dir(), TailCache::new(CACHE_BYTES), &[0], move || given)
            .await
            .unwrap();
        assert_eq!(log.applied_at_open(), (1, existing.clone()));
        assert_eq!(log.indexes(), (1, 1));
        assert_eq!(log.term(1).unwrap(), 1);
        assert_eq!(log.voters(), vec![1]);
        log.close().await.unwrap();
        let log = RaftLog::open(&dir(), TailCache::new(CACHE_BYTES), &[0], || {
            panic!("the legacy metadata is read only for an empty journal")
        })
        .await
        .unwrap();
        assert_eq!(log.applied_at_open(), (1, existing));
        let snapshot = log.snapshot(0, 2).unwrap();
        assert_eq!(snapshot.get_metadata().index, 1);
        assert_eq!(
            raft_log::snapshot_metadata(&snapshot).unwrap().cluster_id,
            "old-cluster"
        );
        log.close().await.unwrap();
    });
}

/// Raft's truncate-and-append: entries at an index already in the log replace it and every
/// later entry, in memory at once and on replay after a reopen.
#[test]
fn a_conflicting_append_truncates_the_suffix_on_replay() {
    rt::sim::run(3, async {
        let disk = SimDisk::new(3);
        let _installed = sim::install(&disk);
        let log = open(&[0, 1, 2]).await.unwrap();
        let first: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        log.persist(None, first, Some(hard_state(1, 1, 2)))
            .await
            .unwrap();
        let second = vec![entry(3, 2), entry(4, 2)];
        log.persist(None, second, Some(hard_state(2, 3, 2)))
            .await
            .unwrap();
        let expect = vec![entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)];
        assert_eq!(all_entries(&log), expect);
        log.close().await.unwrap();
        let log = open(&[0, 1, 2]).await.unwrap();
        assert_eq!(all_entries(&log), expect);
        assert_eq!(log.last_index().unwrap(), 4);
        assert_eq!(log.initial_state().unwrap().hard_state, hard_state(2, 3, 2));
        log.close().await.unwrap();
    });
}

/// A crash loses only what was not reported durable: for many seeds and crash points (a
/// power-off a random number of disk operations into a run of persists), every persist that
/// returned `Ok` is there after the crash and reopen, whatever was torn or lost after it, and
/// the reopen never fails. Some crash tears a write (the torn tail is cut by recovery).
#[test]
fn a_crash_loses_only_what_was_not_reported_durable() {
    let mut torn = 0;
    for seed in 0..40u64 {
        torn += rt::sim::run(seed, crash_run(seed));
    }
    assert!(
        torn > 0,
        "no crash tore a write: the test did not test torn tails"
    );
}

/// One crash run; returns the writes torn by its crash.
async fn crash_run(seed: u64) -> u64 {
    let disk = SimDisk::new(seed);
    let _installed = sim::install(&disk);
    let log = open(&[0, 1, 2]).await.unwrap();
    disk.power_off_after(5 + rt::sim::random_below(60));
    let mut durable: Vec<Entry> = Vec::new();
    let mut durable_hs = HardState::default();
    // The persist that failed: it may be on disk (whole: one batch) or not at all.
    let mut in_doubt = None;
    for round in 0..30u64 {
        // Every third round rewrites the last two entries in a new term (a conflict).
        let start = if round % 3 == 2 && durable.len() > 2 {
            durable.len() as u64 - 1
        } else {
            durable.len() as u64 + 1
        };
        let batch: Vec<Entry> = (start..start + 3).map(|i| entry(i, round + 1)).collect();
        let hs = hard_state(round + 1, 1, start.saturating_sub(1));
        if log
            .persist(None, batch.clone(), Some(hs.clone()))
            .await
            .is_err()
        {
            let mut after = durable.clone();
            after.truncate(start as usize - 1);
            after.extend(batch);
            in_doubt = Some((after, hs));
            break;
        }
        durable.truncate(start as usize - 1);
        durable.extend(batch);
        durable_hs = hs;
    }
    drop(log);
    let report = crash(&disk).await;
    let log = open(&[0, 1, 2]).await.expect("a crashed journal reopens");
    let back = all_entries(&log);
    let hs = log.initial_state().unwrap().hard_state;
    let whole = |entries: &Vec<Entry>, expected_hs: &HardState| {
        back == *entries && hs.term == expected_hs.term && hs.vote == expected_hs.vote
    };
    let kept_in_doubt = in_doubt.as_ref().is_some_and(|(e, h)| whole(e, h));
    assert!(
        whole(&durable, &durable_hs) || kept_in_doubt,
        "seed {seed}: the journal is neither what was durable nor that plus the failed \
         persist: {} entries back, {} durable, hard state {hs:?}",
        back.len(),
        durable.len()
    );
    log.close().await.unwrap();
    report.writes_torn
}

/// Compaction writes a snapshot of the applied metadata at the applied index: the journal
/// shrinks, the entries after the applied index stay, and a reopen rebuilds the same state
/// (snapshot, entries, hard state; a sole voter's commit index is its last index, so the
/// applied metadata at open has every entry); `snapshot()` serves the new snapshot.
#[test]
fn compaction_keeps_state() {
    rt::sim::run(4, async {
        let disk = SimDisk::new(4);
        let _installed = sim::install(&disk);
        let log = open(&[0]).await.unwrap();
        let mut applied = metadata("single");
        let total = raft_log::COMPACT_RECORDS_MIN as u64 + 200;
        for i in 2..=total {
            let commit = i.saturating_sub(5).max(1);
            log.persist(None, vec![entry(i, 1)], Some(hard_state(1, 1, commit)))
                .await
                .unwrap();
        }
        let applied_index = total - 5;
        for i in 2..=applied_index {
            applied = raft_log::apply_entry(&applied, &entry(i, 1)).unwrap();
        }
        assert!(log.journal_records() > raft_log::COMPACT_RECORDS_MIN);
        let before = all_entries(&log)[(applied_index - 1) as usize..].to_vec();
        assert!(log.compact_if_due(applied_index, &applied).await.unwrap());
        assert!(log.journal_records() < 10, "{}", log.journal_records());
        assert_eq!(log.indexes(), (applied_index, total));
        assert_eq!(all_entries(&log), before);
        let snapshot = log.snapshot(0, 2).unwrap();
        assert_eq!(snapshot.get_metadata().index, applied_index);
        assert_eq!(raft_log::snapshot_metadata(&snapshot).unwrap(), applied);
        assert!(!log.compact_if_due(applied_index, &applied).await.unwrap());
        let hs = log.initial_state().unwrap().hard_state;
        log.close().await.unwrap();

        let log = open(&[0]).await.unwrap();
        assert_eq!(log.indexes(), (applied_index, total));
        assert_eq!(all_entries(&log), before);
        // A sole voter's durable entries are all committed: the commit index read back is the
        // last index, and the applied metadata at open has every entry.
        let reopened = log.initial_state().unwrap().hard_state;
        assert_eq!((reopened.term, reopened.vote), (hs.term, hs.vote));
        assert_eq!(reopened.commit, total);
        let mut all = applied.clone();
        for i in applied_index + 1..=total {
            all = raft_log::apply_entry(&all, &entry(i, 1)).unwrap();
        }
        assert_eq!(log.applied_at_open(), (total, all));
        assert!(matches!(
            log.entries(2, 3, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        log.close().await.unwrap();
    });
}

/// A journal that is not a raft log (records of another codec), or whose records do not fit
/// together (an entry after a gap), fails the open with CorruptMessage: no panic.
#[test]
fn a_damaged_journal_is_an_error_not_a_panic() {
    rt::sim::run(5, async {
        let disk = SimDisk::new(5);
        let _installed = sim::install(&disk);
        let other = InternalLog::<MetadataCodec>::open(
            &dir(),
            METADATA_LOG_LIMITS,
            TailCache::new(CACHE_BYTES),
            |_| {},
        )
        .await
        .unwrap();
        let record = MetadataRecord::Snapshot {
            metadata: metadata("x"),
        };
        other.append(vec![record], 1, |_| {}).await.unwrap();
        other.close().await.unwrap();
        let opened = open(&[0, 1, 2]).await;
        assert!(
            matches!(opened, Err(StorageError::CorruptMessage(_))),
            "{:?}",
            opened.err()
        );
    });
    rt::sim::run(6, async {
        let disk = SimDisk::new(6);
        let _installed = sim::install(&disk);
        let log = open(&[0, 1, 2]).await.unwrap();
        log.close().await.unwrap();
        let journal = InternalLog::<raft_log::RaftCodec>::open(
            &dir(),
            raft_log::RAFT_LOG_LIMITS,
            TailCache::new(CACHE_BYTES),
            |_| {},
        )
        .await
        .unwrap();
        let gap = raft_log::RaftRecord::Entry(entry(7, 1));
        journal.append(vec![gap], 1, |_| {}).await.unwrap();
        journal.close().await.unwrap();
        let opened = open(&[0, 1, 2]).await;
        assert!(
            matches!(opened, Err(StorageError::CorruptMessage(_))),
            "{:?}",
            opened.err()
        );
    });
}

/// Runs `future` on a real glommio executor (the real disk), as the broker does.
fn on_real_disk<T: 'static>(future: impl std::future::Future<Output = T> + 'static) -> T {
    rt::run_on_new_executor(1 << 20, 64, future).expect("executor")
}

/// An existing single-node data directory (the legacy `__cluster_metadata` log, with a
/// topic) starts unchanged: the raft journal is bootstrapped from the legacy load, on the real
/// disk; once the journal exists the legacy log is never read again.
#[test]
fn a_legacy_single_node_directory_starts_unchanged() {
    use freshet::coordinator::metadata::MetadataCommand;
    use freshet::shard::metadata_log::{self, MetadataLog};
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().to_path_buf();
    let fresh = || metadata("legacy-cluster");
    let legacy = metadata_log::load_at_startup(&data_dir, fresh).unwrap();
    let command = MetadataCommand::CreateTopic {
        name: "orders".into(),
        partitions: 3,
        configs: Default::default(),
        replication_factor: 1,
        assignments: None,
    };
    let record = legacy.record_for(&command).unwrap();
    let with_topic = legacy.replay(&record);
    let (dir, after) = (data_dir.clone(), with_topic.clone());
    on_real_disk(async move {
        let log = MetadataLog::default();
        log.open(&dir, TailCache::new(CACHE_BYTES), &legacy)
            .await
            .unwrap();
        log.append(vec![record], &after).await.unwrap();
        log.close().await;
    });
    let dir = data_dir.clone();
    let load_legacy = move || {
        metadata_log::load_at_startup(&dir, || panic!("the legacy log is not empty")).unwrap()
    };
    let (index, loaded) = open_on_real_disk(&data_dir, load_legacy);
    assert_eq!((index, &loaded), (1, &with_topic));
    assert!(loaded.topics.contains_key("orders"));
    let (index, again) = open_on_real_disk(&data_dir, || {
        panic!("the legacy log is read only for an empty journal")
    });
    assert_eq!((index, again), (1, with_topic));
}

/// Opens a single voter's journal in `data_dir` on the real disk: its applied index and
/// metadata (bootstrapped with `legacy()` if empty).
fn open_on_real_disk(
    data_dir: &Path,
    legacy: impl FnOnce() -> ClusterMetadata + 'static,
) -> (u64, ClusterMetadata) {
    let data_dir = data_dir.to_path_buf();
    on_real_disk(async move {
        freshet::storage::prime_disk(&data_dir).await.unwrap();
        let dir = raft_log::raft_log_dir(&data_dir);
        let log = RaftLog::open(&dir, TailCache::new(CACHE_BYTES), &[0], legacy)
            .await
            .unwrap();
        let applied = log.applied_at_open();
        log.close().await.unwrap();
        applied
    })
}

/// The node driver on the real runtime and disk (glommio): a single node leads, a proposal is
/// applied, and after a stop the reopened journal holds it.
#[test]
fn a_single_node_on_the_real_disk_round_trips() {
    use freshet::cluster::node::{NodeSettings, QuorumNode};
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().to_path_buf();
    on_real_disk(async move {
        freshet::storage::prime_disk(&data_dir).await.unwrap();
        let dir = raft_log::raft_log_dir(&data_dir);
        let cache = TailCache::new(CACHE_BYTES);
        let log = RaftLog::open(&dir, cache.clone(), &[0], || metadata("real"))
            .await
            .unwrap();
        let settings = NodeSettings {
            tick_ms: 20,
            ..NodeSettings::default()
        };
        let node = QuorumNode::start(
            settings,
            log,
            std::rc::Rc::new(|_| {}),
            std::rc::Rc::new(|_| {}),
        )
        .await
        .unwrap();
        let deadline = rt::now() + std::time::Duration::from_secs(10);
        while !node.ready_to_propose() {
            assert!(rt::now() < deadline, "a single node leads within 10 s");
            rt::sleep(std::time::Duration::from_millis(5)).await;
        }
        let records = vec![MetadataRecord::ProducerIdBlockAllocated { next: 9000 }];
        let after = node.propose(records).await.unwrap();
        assert_eq!(after.producer_id_block_next, 9000);
        node.stop().await;
        let log = RaftLog::open(&dir, cache, &[0], || panic!("not empty"))
            .await
            .unwrap();
        let (_, applied) = log.applied_at_open();
        assert_eq!(applied.producer_id_block_next, 9000);
        assert_eq!(applied.cluster_id, "real");
        log.close().await.unwrap();
    });
}
