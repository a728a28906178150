//! One cleaning round of a partition log (steps 1 to 5 of the module docs of [`super`]):
//! pick the cleanable segments, decide whether a round is due, build the offset map over the
//! dirty range, clean each group of segments through the pure [`filter`](super::filter) and
//! swap it in ([`swap`](super::swap)), then record the new first dirty offset.
//!
//! The round runs on the shard that owns the log, as a low-priority task; it yields between
//! batches. It reads a snapshot of the segment list and re-checks it under the log's metadata
//! lock before a swap (retention or a close meanwhile abandons that group, nothing else).

use super::filter::{corrupt, filter_batch, map_batch, FilterContext, Filtered};
use super::swap::{swap_in, CleanedWriter, SegmentReader};
use super::{OffsetMap, CLEANER_CHECKPOINT_FILE, PRODUCERS_TRACKED_MAX};
use crate::storage::io::{self, DataFile};
use crate::storage::log::{Life, PartitionLog, Shared};
use crate::storage::{checkpoint, LogConfig, StorageError};
use freshet_protocol::batch;
use std::collections::HashMap;
use std::path::Path;

/// What the shard's cleaner remembers about one log between rounds.
#[derive(Debug, Default, Clone)]
pub struct LogCleanState {
    /// First offset not yet cleaned; `None` until read from the checkpoint file.
    pub first_dirty: Option<i64>,
    /// Earliest delete horizon of tombstones kept by the last round.
    pub next_horizon_ms: Option<i64>,
}

/// What a round did.
#[derive(Debug, Default, Clone)]
pub struct CleanReport {
    /// Segments rewritten.
    pub segments_cleaned: usize,
    /// Segments they became.
    pub segments_written: usize,
    /// Bytes before and after.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Records read and kept.
    pub records_read: u64,
    /// Records kept.
    pub records_kept: u64,
    /// The new first dirty offset.
    pub first_dirty: i64,
    /// Groups not swapped in because the log changed meanwhile (retention, close).
    pub groups_abandoned: usize,
}

/// One sealed segment as the round saw it.
#[derive(Clone)]
struct SegSnap {
    base: i64,
    next_base: i64,
    file: DataFile,
    len: u64,
    max_timestamp: i64,
}

impl PartitionLog {
    /// Run one cleaning round if compaction is on and one is due (see the module docs).
    /// `Ok(None)`: nothing to do. `force`: clean even below `min.cleanable.dirty.ratio`.
    pub async fn clean(
        &self,
        state: &mut LogCleanState,
        map: &mut OffsetMap,
        now_ms: i64,
        force: bool,
    ) -> Result<Option<CleanReport>, StorageError> {
        let shared = &*self.shared;
        if !self.is_compacted() {
            return Ok(None);
        }
        let first_dirty = match state.first_dirty {
            Some(o) => o,
            None => read_checkpoint(&shared.dir).await?.unwrap_or(0),
        };
        let Some((config, segs, log_start)) = cleanable_segments(shared, now_ms) else {
            return Ok(None);
        };
        let Some(first_uncleanable) = segs.last().map(|s| s.next_base) else {
            return Ok(None);
        };
        let first_dirty = first_dirty.clamp(log_start, first_uncleanable);
        state.first_dirty = Some(first_dirty);
        let dirty: Vec<&SegSnap> = segs.iter().filter(|s| s.next_base > first_dirty).collect();
        let share = DirtyShare {
            dirty_bytes: dirty.iter().map(|s| s.len).sum(),
            total_bytes: segs.iter().map(|s| s.len).sum(),
            first_dirty_max_timestamp: dirty.first().map(|s| s.max_timestamp),
        };
        if !share.round_due(&config, state.next_horizon_ms, now_ms, force) {
            return Ok(None);
        }

        // 1. The offset map over the dirty range (stops at a batch boundary when full).
        let producer_last = build_offset_map(map, &dirty, first_dirty).await?;
        let end = map.latest_offset + 1;

        // 2. Group the segments below `end` and clean each group.
        let ctx = FilterContext {
            map,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
            producer_last: &producer_last,
        };
        let mut report = CleanReport {
            first_dirty: end,
            ..CleanReport::default()
        };
        let mut next_horizon: Option<i64> = None;
        let interval = u64::from(config.index_interval_bytes);
        for g in group_segments(&segs, end, config.segment_bytes) {
            clean_group(shared, &g, &ctx, interval, &mut report, &mut next_horizon).await?;
        }

        // 3. Remember where the dirty part starts now.
        if report.groups_abandoned == 0 {
            io::write_file_atomic(
                &shared.dir.join(CLEANER_CHECKPOINT_FILE),
                format!("{end}\n").into_bytes(),
            )
            .await?;
            state.first_dirty = Some(end);
        }
        state.next_horizon_ms = next_horizon;
        Ok(Some(report))
    }

    /// The first dirty offset the cleaner has recorded (for tests and metrics).
    pub async fn cleaner_checkpoint(&self) -> Result<Option<i64>, StorageError> {
        read_checkpoint(&self.shared.dir).await
    }
}

impl PartitionLog {
    /// True if the topic's `cleanup.policy` includes `compact`.
    pub fn is_compacted(&self) -> bool {
        self.shared.inner.borrow().config.cleanup_compact
    }
}

/// The first dirty offset recorded in `dir`'s [`CLEANER_CHECKPOINT_FILE`]; `None` if there is
/// no such file or it does not hold a number.
async fn read_checkpoint(dir: &Path) -> Result<Option<i64>, StorageError> {
    let data = io::read_small_file(
        &dir.join(CLEANER_CHECKPOINT_FILE),
        checkpoint::FILE_BYTES_MAX,
    )
    .await?;
    Ok(data
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|s| s.trim().parse().ok()))
}

/// The log's config, its cleanable segments (sealed, below the recovery checkpoint's segment,
/// never the active one, up to the first younger than `min.compaction.lag.ms`) and its log
/// start offset; `None` if the log is not open or not compacted.
fn cleanable_segments(shared: &Shared, now_ms: i64) -> Option<(LogConfig, Vec<SegSnap>, i64)> {
    let inner = shared.inner.borrow();
    if inner.life != Life::Open || !inner.config.cleanup_compact {
        return None;
    }
    let cfg = inner.config.clone();
    let mut segs = Vec::new();
    let n = inner.segments.len();
    for i in 0..n.saturating_sub(1) {
        let s = &inner.segments[i];
        if !s.sealed || s.base_offset >= inner.checkpoint.recovery_segment {
            break;
        }
        if cfg.min_compaction_lag_ms > 0
            && s.max_timestamp > now_ms.saturating_sub(cfg.min_compaction_lag_ms)
        {
            break;
        }
        let Some(file) = s.file.clone() else {
            break;
        };
        segs.push(SegSnap {
            base: s.base_offset,
            next_base: inner.segments[i + 1].base_offset,
            file,
            len: s.durable_len,
            max_timestamp: s.max_timestamp,
        });
    }
    Some((cfg, segs, inner.log_start_offset))
}

/// The dirty part of the cleanable segments, as the due check needs it.
struct DirtyShare {
    dirty_bytes: u64,
    total_bytes: u64,
    /// Newest timestamp of the first dirty segment (`None`: nothing dirty; -1: no timestamps).
    first_dirty_max_timestamp: Option<i64>,
}

impl DirtyShare {
    /// Whether a round is due: dirty bytes and (`force`, or their share of the cleanable
    /// bytes reaches `min.cleanable.dirty.ratio`, or the first dirty segment is older than
    /// `max.compaction.lag.ms`), or a kept tombstone's delete horizon has passed.
    fn round_due(
        &self,
        config: &LogConfig,
        next_horizon_ms: Option<i64>,
        now_ms: i64,
        force: bool,
    ) -> bool {
        let ratio = if self.total_bytes == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / self.total_bytes as f64
        };
        let horizon_due = next_horizon_ms.is_some_and(|t| t <= now_ms);
        let lag_due = self
            .first_dirty_max_timestamp
            .is_some_and(|ts| ts >= 0 && now_ms.saturating_sub(ts) > config.max_compaction_lag_ms);
        (self.dirty_bytes > 0 && (force || ratio >= config.min_cleanable_dirty_ratio || lag_due))
            || horizon_due
    }
}

/// Step 1: fill `map` with the latest offset of every key of the `dirty` segments from
/// `first_dirty` on, stopping at the last whole batch mapped when the map is full; returns the
/// last offset of the newest batch seen per idempotent producer (at most
/// [`PRODUCERS_TRACKED_MAX`] producers). `map.latest_offset` ends at the last offset mapped.
async fn build_offset_map(
    map: &mut OffsetMap,
    dirty: &[&SegSnap],
    first_dirty: i64,
) -> Result<HashMap<i64, i64>, StorageError> {
    map.clear(first_dirty - 1);
    let mut producer_last: HashMap<i64, i64> = HashMap::new();
    'segments: for s in dirty {
        let mut reader = SegmentReader::new(s.file.clone(), s.len);
        while let Some(b) = reader.next_batch().await? {
            let Some(h) = batch::header(&b) else {
                break;
            };
            if h.last_offset() < first_dirty {
                continue;
            }
            if map.is_full() {
                break 'segments;
            }
            let pid = h.producer_id.get();
            if pid >= 0
                && (producer_last.len() < PRODUCERS_TRACKED_MAX || producer_last.contains_key(&pid))
            {
                producer_last.insert(pid, h.last_offset());
            }
            // A batch too large to decompress is left unmapped (and kept by the filter).
            if !map_batch(map, &b, h, first_dirty)? {
                continue;
            }
            map.latest_offset = map.latest_offset.max(h.last_offset());
            crate::rt::yield_if_needed().await;
        }
        map.latest_offset = map.latest_offset.max(s.next_base - 1);
    }
    Ok(producer_last)
}

/// The segments below `end` in groups that each become one cleaned segment (Kafka's
/// `groupSegmentsBySize`): a group's bytes fit in `segment_bytes` and its offsets span at most
/// `i32::MAX` (relative offsets of the index).
fn group_segments(segs: &[SegSnap], end: i64, segment_bytes: u64) -> Vec<Vec<&SegSnap>> {
    let mut groups: Vec<Vec<&SegSnap>> = Vec::new();
    for s in segs.iter().filter(|s| s.base < end) {
        match groups.last_mut() {
            Some(g)
                if g.iter().map(|x| x.len).sum::<u64>() + s.len <= segment_bytes
                    && s.next_base - 1 - g[0].base <= i64::from(i32::MAX) =>
            {
                g.push(s)
            }
            _ => groups.push(vec![s]),
        }
    }
    groups
}

/// Step 2 for one group: filter its batches into a cleaned segment and swap it in; adds to
/// `report` and lowers `next_horizon` to the earliest delete horizon of the tombstones kept.
async fn clean_group(
    shared: &Shared,
    g: &[&SegSnap],
    ctx: &FilterContext<'_>,
    interval: u64,
    report: &mut CleanReport,
    next_horizon: &mut Option<i64>,
) -> Result<(), StorageError> {
    let base = g[0].base;
    let group_end = g.last().map_or(base, |s| s.next_base);
    let mut w = CleanedWriter::create(&shared.dir, base, interval).await?;
    for s in g {
        let mut reader = SegmentReader::new(s.file.clone(), s.len);
        while let Some(b) = reader.next_batch().await? {
            let h = batch::header(&b).ok_or_else(|| corrupt("short batch"))?;
            let last_of_group = h.last_offset() == group_end - 1;
            let (f, st) = filter_batch(&b, ctx, last_of_group)?;
            report.records_read += st.records_read;
            report.records_kept += st.records_kept;
            if let Some(t) = st.tombstone_horizon_ms {
                *next_horizon = Some(next_horizon.map_or(t, |n| n.min(t)));
            }
            match f {
                Filtered::Unchanged => w.append(&b).await?,
                Filtered::Rewritten(v) => w.append(&v).await?,
                Filtered::Dropped => {}
            }
            crate::rt::yield_if_needed().await;
        }
    }
    let new_seg = w.finish(group_end).await?;
    let before: u64 = g.iter().map(|s| s.len).sum();
    let after = new_seg.len;
    let bases: Vec<(i64, u64)> = g.iter().map(|s| (s.base, s.len)).collect();
    if swap_in(shared, &bases, group_end, new_seg).await? {
        report.segments_cleaned += g.len();
        report.segments_written += 1;
        report.bytes_before += before;
        report.bytes_after += after;
    } else {
        report.groups_abandoned += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(dirty_bytes: u64, total_bytes: u64, first_ts: Option<i64>) -> DirtyShare {
        DirtyShare {
            dirty_bytes,
            total_bytes,
            first_dirty_max_timestamp: first_ts,
        }
    }

    #[test]
    fn a_round_is_due_by_ratio_lag_force_or_tombstone_horizon() {
        let config = LogConfig {
            min_cleanable_dirty_ratio: 0.5,
            max_compaction_lag_ms: 1_000,
            ..LogConfig::default()
        };
        let now = 10_000;
        assert!(
            share(50, 100, Some(now)).round_due(&config, None, now, false),
            "ratio 0.5"
        );
        assert!(!share(49, 100, Some(now)).round_due(&config, None, now, false));
        assert!(
            share(1, 100, Some(now)).round_due(&config, None, now, true),
            "forced"
        );
        assert!(
            share(1, 100, Some(now - 1_001)).round_due(&config, None, now, false),
            "dirty data past max.compaction.lag.ms"
        );
        assert!(!share(1, 100, Some(now - 1_000)).round_due(&config, None, now, false));
        assert!(
            !share(1, 100, Some(-1)).round_due(&config, None, now, false),
            "no timestamp"
        );
        assert!(
            !share(0, 100, None).round_due(&config, None, now, true),
            "nothing dirty"
        );
        assert!(
            share(0, 100, None).round_due(&config, Some(now), now, false),
            "a kept tombstone's horizon has passed"
        );
        assert!(!share(0, 100, None).round_due(&config, Some(now + 1), now, false));
        assert!(
            !share(0, 0, None).round_due(&config, None, now, false),
            "empty log"
        );
    }
}
