//! The log's side of replication (`storage::log::replica`): a follower's append of a leader's
//! batches (bytes, offsets and producer state kept; gaps, overlaps and damage refused), the
//! replicated high watermark (readers stop there; a follower's read stops at the durable end).

use crate::storage_common as common;

use bytes::{Bytes, BytesMut};
use common::*;
use freshet::storage::{LogConfig, PartitionLog, StorageError};
use freshet_protocol::batch;

/// Every batch of `log` from `from` up to its durable end, as a follower's fetch reads them.
async fn replica_read_all(log: &PartitionLog, from: i64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.durable_end() {
        let data = log
            .read_for_replica(offset, 1 << 20, true)
            .await
            .expect("read");
        assert!(!data.batches.is_empty(), "no progress at {offset}");
        for b in data.batches {
            offset = batch::header(&b).expect("header").last_offset() + 1;
            out.push(b);
        }
    }
    out
}

fn concat(batches: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    for b in batches {
        out.extend_from_slice(b);
    }
    out.freeze()
}

/// A follower's log holds the leader's batches byte for byte at the same offsets (leader
/// epoch, producer id, sequence and base offset included), also after a reopen from disk.
#[test]
fn replicated_batches_are_kept_byte_for_byte_at_their_offsets() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ldir, fdir) = (tmp.path().join("l-0"), tmp.path().join("f-0"));
    run(async move {
        let leader = open(&ldir, LogConfig::default(), 8 << 20).await;
        leader.append(batch(3, 20, 1_000), 1).await.expect("append");
        leader
            .append(producer_batch(42, 0, 0, 2, false, Some("k")), 2)
            .await
            .expect("append");
        leader.append(batch(1, 5, 2_000), 3).await.expect("append");
        let sent = replica_read_all(&leader, 0).await;
        assert_eq!(sent.len(), 3);

        let follower = open(&fdir, LogConfig::default(), 8 << 20).await;
        // Two fetches' worth: the first batch alone, then the other two together.
        let info = follower
            .append_replicated(sent[0].clone(), 10)
            .await
            .expect("first");
        assert_eq!((info.base_offset, info.last_offset), (0, 2));
        let info = follower
            .append_replicated(concat(&sent[1..]), 11)
            .await
            .expect("rest");
        assert_eq!((info.base_offset, info.last_offset), (3, 5));
        assert_eq!(follower.log_end_offset(), 6);
        assert_eq!(follower.durable_end(), 6);
        assert_eq!(replica_read_all(&follower, 0).await, sent);
        follower.close().await.expect("close");

        let follower = open(&fdir, LogConfig::default(), 0).await;
        assert_eq!(replica_read_all(&follower, 0).await, sent, "from disk");
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

/// A record set that starts below the log end (an overlap), whose batches go back in offsets,
/// or whose CRC is wrong is refused whole, and nothing is written.
#[test]
fn overlaps_and_bad_crcs_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ldir, fdir) = (tmp.path().join("l-0"), tmp.path().join("f-0"));
    run(async move {
        let leader = open(&ldir, LogConfig::default(), 8 << 20).await;
        for i in 0..3 {
            leader.append(batch(2, 10, i), 1).await.expect("append");
        }
        let sent = replica_read_all(&leader, 0).await;
        let follower = open(&fdir, LogConfig::default(), 8 << 20).await;

        let back = follower
            .append_replicated(concat(&[sent[1].clone(), sent[0].clone()]), 1)
            .await;
        assert!(
            matches!(back, Err(StorageError::CorruptMessage(_))),
            "{back:?}"
        );
        let mut damaged = BytesMut::from(&sent[0][..]);
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let bad = follower.append_replicated(damaged.freeze(), 1).await;
        assert!(
            matches!(bad, Err(StorageError::CorruptMessage(_))),
            "{bad:?}"
        );
        assert_eq!(follower.log_end_offset(), 0, "nothing written");

        follower
            .append_replicated(sent[0].clone(), 1)
            .await
            .expect("at the end");
        let overlap = follower.append_replicated(sent[0].clone(), 1).await;
        assert!(
            matches!(overlap, Err(StorageError::CorruptMessage(_))),
            "{overlap:?}"
        );
        assert_eq!(follower.log_end_offset(), 2);
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

/// The `.log` files of a partition directory, by base offset.
fn segment_bases(dir: &std::path::Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// A compacted leader's batches have forward offset gaps between them: a record set with a
/// gap inside it, and one that starts past the log end, are appended; each gap falls between
/// segments (the active segment stays contiguous), reads skip it, and a reopen (recovery)
/// keeps every batch. Overlaps stay refused, and so (known gap) does a record set past the
/// end of an empty log.
#[test]
fn forward_gaps_start_new_segments_and_survive_reopen() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ldir, fdir, edir) = (
        tmp.path().join("l-0"),
        tmp.path().join("f-0"),
        tmp.path().join("e-0"),
    );
    run(async move {
        let leader = open(&ldir, LogConfig::default(), 8 << 20).await;
        for i in 0..5 {
            leader.append(batch(2, 10, i), 1).await.expect("append");
        }
        // Offsets 0-1, 2-3, 4-5, 6-7, 8-9; the cleaned leader kept 0-1, 4-5 and 8-9.
        let sent = replica_read_all(&leader, 0).await;
        let kept = vec![sent[0].clone(), sent[2].clone(), sent[4].clone()];

        let follower = open(&fdir, LogConfig::default(), 8 << 20).await;
        let info = follower
            .append_replicated(concat(&kept[..2]), 1)
            .await
            .expect("a gap inside the record set");
        assert_eq!((info.base_offset, info.last_offset), (0, 5));
        let info = follower
            .append_replicated(kept[2].clone(), 2)
            .await
            .expect("a record set past the log end");
        assert_eq!((info.base_offset, info.last_offset), (8, 9));
        assert_eq!(follower.log_end_offset(), 10);
        assert_eq!(follower.durable_end(), 10);
        assert_eq!(replica_read_all(&follower, 0).await, kept);
        let overlap = follower.append_replicated(kept[2].clone(), 3).await;
        assert!(
            matches!(overlap, Err(StorageError::CorruptMessage(_))),
            "{overlap:?}"
        );
        follower.close().await.expect("close");
        assert_eq!(segment_bases(&fdir), [0, 4, 8], "one segment per gap");

        let follower = open(&fdir, LogConfig::default(), 0).await;
        assert_eq!(follower.log_end_offset(), 10, "recovered");
        assert_eq!(replica_read_all(&follower, 0).await, kept, "from disk");
        follower.close().await.expect("close");

        // Known gap: an empty log cannot start past its end (no empty sealed segment).
        let empty = open(&edir, LogConfig::default(), 8 << 20).await;
        let past = empty.append_replicated(concat(&kept[1..]), 1).await;
        assert!(
            matches!(past, Err(StorageError::CorruptMessage(_))),
            "{past:?}"
        );
        assert_eq!(empty.log_end_offset(), 0, "nothing written");
        empty.close().await.expect("close");
        let empty = open(&edir, LogConfig::default(), 0).await;
        assert_eq!(empty.log_end_offset(), 0, "still opens");
        empty.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

/// Producer state comes with the replicated batches: once the follower leads, a producer's
/// retry of a batch the old leader wrote is a duplicate answered with the original offsets,
/// and the next sequence continues.
#[test]
fn a_follower_detects_a_duplicate_after_it_becomes_leader() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ldir, fdir) = (tmp.path().join("l-0"), tmp.path().join("f-0"));
    run(async move {
        let leader = open(&ldir, LogConfig::default(), 8 << 20).await;
        leader.append(batch(1, 10, 5), 1).await.expect("plain");
        let first = producer_batch(7, 3, 0, 4, false, Some("k"));
        let original = leader.append(first.clone(), 2).await.expect("idempotent");
        assert_eq!(original.base_offset, 1);
        let sent = replica_read_all(&leader, 0).await;

        let follower = open(&fdir, LogConfig::default(), 8 << 20).await;
        follower
            .append_replicated(concat(&sent), 3)
            .await
            .expect("replicate");
        // The follower is now the leader; the producer retries its batch.
        let retry = follower.append(first, 4).await.expect("duplicate answered");
        assert_eq!(
            (retry.base_offset, retry.last_offset),
            (1, 4),
            "the original offsets"
        );
        assert_eq!(follower.log_end_offset(), 5, "nothing appended twice");
        let next = follower
            .append(producer_batch(7, 3, 4, 1, false, Some("k")), 5)
            .await
            .expect("next sequence");
        assert_eq!(next.base_offset, 5);
        let gap = follower
            .append(producer_batch(7, 3, 9, 1, false, Some("k")), 6)
            .await;
        assert!(
            matches!(gap, Err(StorageError::OutOfOrderSequence(_))),
            "{gap:?}"
        );
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

/// A follower that truncates its divergent suffix rebuilds its producer state from the whole
/// log it keeps, not only up to the high watermark its leader told it (found by the fault
/// suite: a follower's replay stopped at that high watermark, so after it became leader it
/// took a producer's retry of a batch it held above it for a new batch and wrote it twice).
#[test]
fn a_truncated_follower_still_knows_the_batches_above_its_high_watermark() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ldir, fdir) = (tmp.path().join("l-0"), tmp.path().join("f-0"));
    run(async move {
        let leader = open(&ldir, LogConfig::default(), 8 << 20).await;
        for seq in 0..4 {
            leader
                .append(producer_batch(7, 0, seq, 1, false, Some("k")), 1)
                .await
                .expect("idempotent");
        }
        // An aborted transaction at 4..=5, then another producer's batch at 6.
        leader
            .append(producer_batch(11, 0, 0, 1, true, Some("k")), 1)
            .await
            .expect("transactional");
        leader
            .append_marker(11, 0, false, 0, 1)
            .await
            .expect("abort marker");
        leader
            .append(producer_batch(9, 0, 0, 1, false, Some("k")), 1)
            .await
            .expect("another producer");
        let sent = replica_read_all(&leader, 0).await;
        let follower = open(&fdir, LogConfig::default(), 8 << 20).await;
        follower
            .append_replicated(concat(&sent), 2)
            .await
            .expect("replicate");
        // Its leader said the high watermark is 1; the batch at 6 turns out divergent.
        follower.set_high_watermark(1);
        follower.truncate_to(6).await.expect("truncate");
        assert_eq!(follower.log_end_offset(), 6);
        assert_eq!(
            follower.aborted_transactions(0, 6).await.expect("index"),
            vec![(11, 4)],
            "the aborted transaction above the high watermark is still known"
        );
        // Now the leader: the producer retries its batch of sequence 1 (offset 1), which
        // it holds above that high watermark.
        let retry = follower
            .append(producer_batch(7, 0, 1, 1, false, Some("k")), 4)
            .await
            .expect("duplicate answered");
        assert_eq!(retry.base_offset, 1, "the original offset");
        assert_eq!(follower.log_end_offset(), 6, "nothing appended twice");
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

/// With one replica the high watermark is the durable end; once replication sets it,
/// consumers' reads stop there (an offset between it and the durable end reads empty), a
/// follower's read goes on to the durable end, it never moves back and never passes the
/// durable end, and `follow_durable_end` returns to the single-replica rule.
#[test]
fn readers_stop_at_the_replicated_high_watermark() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, LogConfig::default(), 8 << 20).await;
        for i in 0..4 {
            log.append(batch(1, 10, i), 1).await.expect("append");
        }
        assert!(log.follows_durable_end());
        assert_eq!((log.high_watermark(), log.durable_end()), (4, 4));

        assert!(log.set_high_watermark(2), "moved down from the durable end");
        assert_eq!((log.high_watermark(), log.durable_end()), (2, 4));
        let data = log.read(0, 1 << 20, true).await.expect("read");
        assert_eq!(data.high_watermark, 2);
        assert_eq!(
            data.batches.len(),
            2,
            "consumers stop at the high watermark"
        );
        let between = log.read(3, 1 << 20, true).await.expect("read");
        assert!(between.batches.is_empty(), "past the high watermark: empty");
        let replica = log.read_for_replica(0, 1 << 20, true).await.expect("read");
        assert_eq!(
            replica.batches.len(),
            4,
            "followers read to the durable end"
        );
        assert_eq!(log.last_stable_offset(), 2);

        assert!(!log.set_high_watermark(1), "never back");
        assert_eq!(log.high_watermark(), 2);
        assert!(log.set_high_watermark(99));
        assert_eq!(log.high_watermark(), 4, "clamped to the durable end");
        log.append(batch(1, 10, 9), 1).await.expect("append");
        assert_eq!(log.durable_end(), 5);
        assert_eq!(log.high_watermark(), 4, "no longer follows the durable end");
        assert!(log.follow_durable_end());
        assert_eq!(log.high_watermark(), 5);
        log.close().await.expect("close");
    });
}

/// The high watermark readers saw is kept in the recovery checkpoint at a clean close (Kafka's
/// `replication-offset-checkpoint`): a reopened log reports it (a leader starts from it), and
/// a log cut below it by a truncation reports at most its new end.
#[test]
fn the_high_watermark_survives_a_clean_close() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("t-0");
    run(async move {
        let log = open(&dir, LogConfig::default(), 8 << 20).await;
        assert_eq!(log.checkpointed_high_watermark(), -1, "never written");
        for i in 0..6 {
            log.append(batch(1, 10, i), 1).await.expect("append");
        }
        log.set_high_watermark(4);
        log.close().await.expect("close");

        let log = open(&dir, LogConfig::default(), 8 << 20).await;
        assert_eq!(log.checkpointed_high_watermark(), 4);
        assert_eq!(
            log.high_watermark(),
            6,
            "not replicated until told: the durable end"
        );
        log.close().await.expect("close");

        let log = open(&dir, LogConfig::default(), 8 << 20).await;
        assert_eq!(
            log.checkpointed_high_watermark(),
            4,
            "a close with nothing written keeps the file: a lower bound"
        );
        log.truncate_to(3).await.expect("truncate");
        assert_eq!(
            log.checkpointed_high_watermark(),
            3,
            "capped by the new end"
        );
        log.close().await.expect("close");
        let log = open(&dir, LogConfig::default(), 8 << 20).await;
        assert_eq!(log.checkpointed_high_watermark(), 3);
        log.close().await.expect("close");
    });
}

/// Kafka's `truncateFullyAndStartAt`: a follower whose log ends below its leader's log start
/// (here a non-empty one, and an empty new replica) drops everything and starts again at the
/// leader's log start; the leader's batches from there are appended, the producer state and
/// epochs are those of the new batches only, and a reopen finds the same log.
#[test]
fn a_log_truncated_fully_starts_again_at_the_leaders_log_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ldir, fdir, edir) = (
        tmp.path().join("l-0"),
        tmp.path().join("f-0"),
        tmp.path().join("e-0"),
    );
    run(async move {
        let leader = open(&ldir, LogConfig::default(), 8 << 20).await;
        for i in 0..6 {
            leader.append(batch(2, 10, i), 1).await.expect("append");
        }
        let sent = replica_read_all(&leader, 0).await;
        // The leader's DeleteRecords removed offsets below 8.
        leader.delete_records(8).await.expect("delete records");
        let from_start = replica_read_all(&leader, 8).await;
        assert_eq!(from_start, sent[4..].to_vec());

        let follower = open(&fdir, LogConfig::default(), 8 << 20).await;
        follower
            .append_replicated(sent[0].clone(), 1)
            .await
            .expect("append");
        assert_eq!(follower.log_end_offset(), 2);
        for (log, dir) in [
            (&follower, &fdir),
            (&open(&edir, LogConfig::default(), 8 << 20).await, &edir),
        ] {
            log.truncate_fully_and_start_at(8, 5)
                .await
                .expect("truncate fully");
            assert_eq!(
                (
                    log.log_start_offset(),
                    log.log_end_offset(),
                    log.durable_end()
                ),
                (8, 8, 8)
            );
            assert!(log.epoch_entries().is_empty());
            assert_eq!(segment_bases(dir), [8]);
            let info = log
                .append_replicated(concat(&from_start), 6)
                .await
                .expect("the leader's batches from its log start");
            assert_eq!((info.base_offset, info.last_offset), (8, 11));
            assert_eq!(replica_read_all(log, 8).await, from_start);
            log.close().await.expect("close");
            let reopened = open(dir, LogConfig::default(), 0).await;
            assert_eq!(
                (reopened.log_start_offset(), reopened.log_end_offset()),
                (8, 12),
                "from disk"
            );
            assert_eq!(replica_read_all(&reopened, 8).await, from_start);
            reopened.close().await.expect("close");
        }
        leader.close().await.expect("close");
    });
}

/// A transaction marker's coordinator epoch is learned by every replica that appends it (and
/// by a replay of the log), not only by the leader that wrote it: a follower that becomes the
/// leader must fence a marker from an older transaction coordinator (one that lost its
/// partition but still retries; CI seed 1796675267459178565 saw a committed transaction's
/// records on one partition read as aborted, as a late abort marker of the transaction before
/// would make them).
#[test]
fn a_markers_coordinator_epoch_is_known_to_followers_and_after_a_reopen() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ldir, fdir) = (tmp.path().join("l-0"), tmp.path().join("f-0"));
    run(async move {
        let leader = open(&ldir, LogConfig::default(), 8 << 20).await;
        leader
            .append(producer_batch(42, 0, 0, 2, true, Some("k")), 1)
            .await
            .expect("transactional batch");
        leader
            .append_marker(42, 0, false, 9, 2)
            .await
            .expect("marker");
        assert_eq!(leader.marker_coordinator_epoch(42), 9);
        let sent = replica_read_all(&leader, 0).await;
        let follower = open(&fdir, LogConfig::default(), 8 << 20).await;
        follower
            .append_replicated(concat(&sent), 3)
            .await
            .expect("replicated");
        assert_eq!(
            follower.marker_coordinator_epoch(42),
            9,
            "the follower learned the coordinator epoch from the replicated marker"
        );
        follower.close().await.expect("close");
        let reopened = open(&fdir, LogConfig::default(), 8 << 20).await;
        assert_eq!(
            reopened.marker_coordinator_epoch(42),
            9,
            "and after a reopen"
        );
    });
}
