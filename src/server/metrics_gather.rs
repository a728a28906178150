//! The metrics gatherer: what a scrape reads from a shard's state (connections, queue depth,
//! partitions and their logs, groups and committed offsets on the coordinator shard), around
//! the leaf counters of [`crate::metrics`] ([`metrics::read_counters`]).
//!
//! Split from `metrics` (issue 11) so that the counters, which storage and the request path
//! record into, import nothing of the broker: the gatherer is the part that knows the shard.
//! Runs on each shard on behalf of a scrape (`server::admin`); bounded by
//! [`metrics::LAG_SERIES_MAX`] committed-offset series.

use crate::coordinator::group::GroupState;
use crate::metrics::{self, GroupsSnapshot, PartitionState, ShardSnapshot, LAG_SERIES_MAX};
use crate::shard::Shard;

/// Takes this shard's snapshot (runs on the shard, on behalf of a scrape). Also prunes the
/// counters of topics that no longer exist.
pub fn snapshot(shard: &Shard) -> ShardSnapshot {
    let metadata = shard.metadata();
    let mut out = ShardSnapshot {
        shard: shard.id,
        connections: shard.connections.get() as u64,
        inbox_depth: shard.router.inbox_depth(shard.id) as u64,
        inflight_request_bytes: shard.inflight_request_bytes(),
        ..ShardSnapshot::default()
    };
    {
        let sessions = shard.fetch_sessions.borrow();
        out.fetch_sessions = sessions.len() as u64;
        out.fetch_session_partitions = sessions.partitions_cached() as u64;
        out.fetch_session_evictions = sessions.evictions();
    }
    metrics::read_counters(&mut out, |topic| metadata.topics.contains_key(topic));
    for p in shard.partitions() {
        out.partitions.push(PartitionState {
            topic: p.topic.clone(),
            partition: p.index,
            size_bytes: p.log.size_bytes(),
            log_start_offset: p.log.log_start_offset(),
            high_watermark: p.log.high_watermark(),
            segments: p.log.segment_count() as u64,
            flushes: p.log.flush_count(),
        });
    }
    if shard.id == crate::shard::COORDINATOR_SHARD {
        out.groups = Some(groups_snapshot(shard));
        (out.txn_marker_rounds, out.txn_marker_rounds_abandoned) = shard.txns.marker_rounds();
    }
    out
}

fn groups_snapshot(shard: &Shard) -> GroupsSnapshot {
    let mut snap = GroupsSnapshot::default();
    let mut by_state: Vec<(&'static str, u64)> = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ]
    .iter()
    .map(|s| (s.name(), 0))
    .collect();
    // Classic states are always listed (at 0); KIP-848 groups add their own state names.
    for listed in shard.groups.list() {
        match by_state.iter_mut().find(|(n, _)| *n == listed.state) {
            Some(entry) => entry.1 += 1,
            None => by_state.push((listed.state, 1)),
        }
    }
    snap.by_state = by_state;
    snap.members = shard
        .groups
        .groups
        .borrow()
        .groups()
        .map(|g| g.members.len() as u64)
        .sum::<u64>()
        + shard
            .groups
            .consumer
            .borrow()
            .groups()
            .map(|g| g.members.len() as u64)
            .sum::<u64>();
    let offsets = shard.groups.offsets.borrow();
    snap.committed_offsets = offsets.len() as u64;
    for (key, value) in offsets.all_changes().into_iter().take(LAG_SERIES_MAX) {
        if let Some(v) = value {
            snap.committed
                .push((key.group, key.topic, key.partition, v.offset));
        }
    }
    snap
}
