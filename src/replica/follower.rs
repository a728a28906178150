//! A follower's handling of its leader's Fetch answers, on its log alone (Kafka's
//! `AbstractFetcherThread` / `ReplicaFetcherThread` without the connection): where the next
//! Fetch starts ([`fetch_position`]), the append of the leader's batches unchanged and the
//! high watermark and log start that follow ([`append_and_advance`]), the truncation of a
//! divergent suffix ([`truncate_diverged`]) and the answer to OFFSET_OUT_OF_RANGE
//! ([`handle_out_of_range`]). The shard's fetchers (`shard::replication`) and the
//! deterministic simulator (`tests/it/simulate_replication.rs`) run these same functions;
//! the caller logs and decides what comes next.

use bytes::Bytes;

use crate::storage::{PartitionLog, StorageError};

/// Where a follower's next Fetch of a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    /// Its log end, which is durable: the next Fetch goes out only after the previous
    /// answer's appends are fdatasync'd (`append_replicated` returns then).
    pub fetch_offset: i64,
    /// The epoch of its last batch (-1: none), so that the leader answers a divergence.
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

/// The position of the next Fetch of `log`.
pub fn fetch_position(log: &PartitionLog) -> FetchPosition {
    FetchPosition {
        fetch_offset: log.log_end_offset(),
        last_fetched_epoch: log.latest_epoch().unwrap_or(-1),
        log_start_offset: log.log_start_offset(),
    }
}

/// What [`append_and_advance`] did.
#[derive(Debug, Default)]
pub struct Advanced {
    /// The append failed (nothing appended).
    pub append_error: Option<StorageError>,
    /// Moving the log start up to the leader's failed.
    pub log_start_error: Option<StorageError>,
    /// The high watermark readers see changed.
    pub hw_changed: bool,
}

/// A follower's append of its leader's `records` (whole batches, if any), then its high
/// watermark `min(leader_hw, durable end)`, then its log start moved up to the leader's (a
/// DeleteRecords or retention on the leader; Kafka's `maybeIncrementLogStartOffset`) when that
/// is within its high watermark. `following` tells whether the replica still follows (it is
/// asked again after each await: a role change in between stops the rest).
pub async fn append_and_advance(
    log: &PartitionLog,
    records: Bytes,
    (leader_hw, leader_log_start): (i64, i64),
    now_ms: i64,
    following: impl Fn() -> bool,
) -> Advanced {
    let mut out = Advanced::default();
    if !records.is_empty() && following() {
        if let Err(e) = log.append_replicated(records, now_ms).await {
            out.append_error = Some(e);
        }
    }
    if following() && leader_hw >= 0 && log.set_high_watermark(leader_hw) {
        out.hw_changed = true;
    }
    if following()
        && leader_log_start > log.log_start_offset()
        && leader_log_start <= log.high_watermark()
    {
        if let Err(e) = log.delete_records(leader_log_start).await {
            out.log_start_error = Some(e);
        }
    }
    out
}

/// Where a follower whose log diverged from its leader's truncates, the leader having
/// answered `diverging` = (epoch, end offset of that epoch there): as Kafka's
/// `AbstractFetcherThread.truncateOnFetchResponse`, the smaller of the two ends of that epoch
/// when it has the epoch too, else its own end of the largest epoch below it (the next fetch
/// goes on from there); within its log.
pub fn divergence_target(log: &PartitionLog, (epoch, leader_end): (i32, i64)) -> i64 {
    let target = match log.end_offset_for_epoch(epoch) {
        Some((own_epoch, own_end)) if own_epoch == epoch => own_end.min(leader_end),
        Some((_, own_end)) => own_end,
        None => log.high_watermark(),
    };
    target.min(log.log_end_offset()).max(log.log_start_offset())
}

/// Drops the divergent suffix ([`divergence_target`]); the high watermark never stays above
/// the new end. Returns the offset truncated to.
pub async fn truncate_diverged(
    log: &PartitionLog,
    diverging: (i32, i64),
) -> Result<i64, StorageError> {
    let target = divergence_target(log, diverging);
    log.truncate_to(target).await?;
    // The stored high watermark comes down to the new end with it.
    log.set_high_watermark(log.high_watermark());
    Ok(target)
}

/// What [`handle_out_of_range`] did.
#[derive(Debug)]
pub enum OutOfRange {
    /// The log ended below the leader's log start: it starts again there.
    StartedAt(i64),
    /// The log ended past what the leader has: truncated to this offset.
    TruncatedTo(i64),
    /// The leader answered OFFSET_OUT_OF_RANGE for an offset within its range: nothing done.
    Unexplained,
}

/// A follower answered OFFSET_OUT_OF_RANGE by its leader (Kafka's
/// `AbstractFetcherThread.handleOutOfRangeError` / `fetchOffsetAndTruncate`), with the
/// leader's log start and high watermark from that answer:
/// - its log ends below the leader's log start (a new replica of a partition whose start was
///   deleted, or one that was away while retention ran): the log is dropped and starts again
///   at the leader's log start (`PartitionLog::truncate_fully_and_start_at`);
/// - its log ends past what the leader has (no epoch to tell where they diverged): it is
///   truncated to the leader's high watermark (Kafka truncates to the leader's log end, which
///   the answer does not carry; the high watermark is at most that, so the follower fetches
///   again what it dropped, never less).
pub async fn handle_out_of_range(
    log: &PartitionLog,
    (leader_log_start, leader_hw): (i64, i64),
    now_ms: i64,
) -> Result<OutOfRange, StorageError> {
    let log_end = log.log_end_offset();
    if leader_log_start > log_end {
        log.truncate_fully_and_start_at(leader_log_start, now_ms)
            .await?;
        return Ok(OutOfRange::StartedAt(leader_log_start));
    }
    if leader_hw >= 0 && log_end > leader_hw {
        let target = leader_hw.max(log.log_start_offset());
        log.truncate_to(target).await?;
        log.set_high_watermark(log.high_watermark());
        return Ok(OutOfRange::TruncatedTo(target));
    }
    Ok(OutOfRange::Unexplained)
}
