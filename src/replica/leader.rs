//! A leader's view of its followers (Kafka's `Partition.scala` / `Replica.scala`): each
//! follower's fetch offset (a durable offset: followers ask for the next offset only once
//! their previous append is fdatasync'd), when it last caught up, the high watermark over the
//! ISR, and the ISR changes to ask the quorum for.
//!
//! Pure: no I/O and no clock of its own (callers pass `now_ms`), so every rule is a unit test.
//!
//! - `record_fetch` is Kafka's `updateFollowerFetchState`: a fetch at or past the leader's
//!   durable end at that time, or at or past the durable end seen at the follower's previous
//!   fetch, makes the follower caught up as of that fetch (`lastCaughtUpTimeMs`).
//! - `high_watermark` is `maybeIncrementLeaderHW`: the smallest fetch offset over the maximal
//!   ISR (the ISR plus a member whose joining is in flight), capped by the leader's durable end;
//!   `None` when the maximal ISR is the leader alone (then the high watermark is the durable
//!   end, the single-replica rule).
//! - `shrink` is `maybeShrinkIsr`: members not caught up for `replica_lag_time_max_ms`.
//! - `expand` is `maybeExpandIsr`: replicas outside the ISR whose fetch offset reached the
//!   high watermark and the start of the leader's epoch.
//!
//! One ISR change is in flight per partition at a time (`pending`); the ISR it proposes counts
//! for the high watermark as the maximal ISR until the quorum answers.
//!
//! - `preferred_read_replica` is `ReplicaManager.findPreferredReadReplica` with Kafka's
//!   `RackAwareReplicaSelector` (KIP-392): the follower a consumer in `client.rack` should
//!   fetch from.

use std::collections::BTreeMap;

use crate::coordinator::metadata::PartitionAssignment;

/// A follower as its leader knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The offset of its last fetch (durable on the follower), -1 before its first fetch.
    pub fetch_offset: i64,
    /// When it was last caught up with the leader (Kafka's `lastCaughtUpTimeMs`).
    pub last_caught_up_ms: i64,
    /// When it last fetched, and the leader's durable end then.
    pub last_fetch_ms: i64,
    pub last_fetch_leader_end: i64,
    /// The log start offset it reported in its last fetch (Kafka's `Replica.logStartOffset`,
    /// from the Fetch's `log_start_offset`), -1 before its first fetch.
    pub log_start_offset: i64,
}

/// One partition's leader state. Lives in the partition's role on its owner shard; built when
/// this broker becomes the leader, updated on each metadata install, dropped when it stops
/// leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    pub local: i32,
    pub leader_epoch: i32,
    /// The assignment's partition epoch: an ISR change must name it (AlterPartition).
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub followers: BTreeMap<i32, FollowerState>,
    /// The ISR proposed to the quorum and not yet answered.
    pub pending: Option<Vec<i32>>,
    /// No ISR change is proposed before this time (after a refused one).
    pub retry_after_ms: i64,
    /// The pending change is sent again from this time (its outcome was not known, or it was
    /// accepted and is not installed yet); `None`: not before an answer.
    pub resend_after_ms: Option<i64>,
}

impl LeaderState {
    /// Leading `assignment` as broker `local` from `now_ms`: ISR members count as caught up
    /// now (so none leaves before it could fetch), offsets unknown (Kafka's `makeLeader`).
    pub fn new(local: i32, assignment: &PartitionAssignment, now_ms: i64) -> LeaderState {
        let mut state = LeaderState {
            local,
            leader_epoch: assignment.leader_epoch,
            partition_epoch: assignment.partition_epoch,
            replicas: Vec::new(),
            isr: Vec::new(),
            followers: BTreeMap::new(),
            pending: None,
            retry_after_ms: 0,
            resend_after_ms: None,
        };
        state.update(assignment, now_ms);
        state
    }

    /// A new assignment of the partition this broker still leads: replicas and ISR from it;
    /// followers that stay keep their state; a pending change is over once the partition
    /// epoch moved (the quorum applied it, or another change won).
    pub fn update(&mut self, assignment: &PartitionAssignment, now_ms: i64) {
        if assignment.leader_epoch != self.leader_epoch {
            self.followers.clear();
        }
        if assignment.partition_epoch != self.partition_epoch
            || assignment.leader_epoch != self.leader_epoch
        {
            self.pending = None;
            self.resend_after_ms = None;
        }
        self.leader_epoch = assignment.leader_epoch;
        self.partition_epoch = assignment.partition_epoch;
        self.replicas = assignment.replicas.clone();
        self.isr = assignment.isr.clone();
        let isr = self.isr.clone();
        self.followers
            .retain(|id, _| assignment.replicas.contains(id));
        for &id in &assignment.replicas {
            if id == self.local {
                continue;
            }
            self.followers.entry(id).or_insert(FollowerState {
                fetch_offset: -1,
                last_caught_up_ms: if isr.contains(&id) { now_ms } else { 0 },
                last_fetch_ms: 0,
                last_fetch_leader_end: -1,
                log_start_offset: -1,
            });
        }
    }

    /// A fetch by `replica` at `offset` at `now_ms`, when the leader's durable end is
    /// `leader_end`. Returns false for a broker that is not a replica (nothing recorded).
    pub fn record_fetch(
        &mut self,
        replica: i32,
        offset: i64,
        leader_end: i64,
        now_ms: i64,
    ) -> bool {
        let Some(f) = self.followers.get_mut(&replica) else {
            return false;
        };
        if offset >= leader_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        } else if f.last_fetch_leader_end >= 0 && offset >= f.last_fetch_leader_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.fetch_offset = offset;
        f.last_fetch_ms = now_ms;
        f.last_fetch_leader_end = leader_end;
        true
    }

    /// The log start offset `replica` reported with its fetch (recorded with
    /// [`LeaderState::record_fetch`]). Returns whether it changed.
    pub fn record_log_start(&mut self, replica: i32, log_start: i64) -> bool {
        match self.followers.get_mut(&replica) {
            Some(f) if f.log_start_offset != log_start => {
                f.log_start_offset = log_start;
                true
            }
            _ => false,
        }
    }

    /// Kafka's `Partition.lowWatermarkIfLeader`: the smallest log start offset over the
    /// leader (`leader_log_start`) and every follower on a live (unfenced) broker, as each
    /// reported it in its last fetch (-1 when it has not fetched in this leader epoch; then
    /// the low watermark is -1). Followers in and out of the ISR count alike.
    pub fn low_watermark(&self, leader_log_start: i64, alive: impl Fn(i32) -> bool) -> i64 {
        self.followers
            .iter()
            .filter(|(id, _)| alive(**id))
            .map(|(_, f)| f.log_start_offset)
            .fold(leader_log_start, i64::min)
    }

    /// The ISR plus the members a pending change adds (Kafka's maximal ISR).
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut out = self.isr.clone();
        for id in self.pending.iter().flatten() {
            if !out.contains(id) {
                out.push(*id);
            }
        }
        out
    }

    /// The high watermark over the maximal ISR, at most `durable_end`; `None` when the leader
    /// is alone in it (the high watermark is then the durable end).
    pub fn high_watermark(&self, durable_end: i64) -> Option<i64> {
        let mut hw: Option<i64> = None;
        for id in self.maximal_isr() {
            if id == self.local {
                continue;
            }
            let offset = self.followers.get(&id).map_or(-1, |f| f.fetch_offset);
            hw = Some(hw.map_or(offset, |h| h.min(offset)));
        }
        hw.map(|h| h.min(durable_end))
    }

    /// Whether follower `f` counts as caught up at `now_ms` (Kafka's `Replica.isCaughtUp`):
    /// its fetch offset is the leader's durable end `leader_end`, or it was caught up within
    /// `lag_time_max_ms`.
    fn caught_up(f: &FollowerState, now_ms: i64, lag_time_max_ms: i64, leader_end: i64) -> bool {
        f.fetch_offset >= leader_end || now_ms - f.last_caught_up_ms <= lag_time_max_ms
    }

    /// ISR members (not the leader) not caught up (Kafka's `getOutOfSyncReplicas`): behind
    /// the leader's durable end `leader_end` and not caught up for longer than
    /// `lag_time_max_ms`. A silent follower of an idle partition, at the end, stays.
    pub fn lagging(&self, now_ms: i64, lag_time_max_ms: i64, leader_end: i64) -> Vec<i32> {
        self.isr
            .iter()
            .copied()
            .filter(|id| *id != self.local)
            .filter(|id| {
                self.followers
                    .get(id)
                    .is_none_or(|f| !Self::caught_up(f, now_ms, lag_time_max_ms, leader_end))
            })
            .collect()
    }

    /// Replicas outside the ISR whose fetch offset reached `high_watermark` and
    /// `epoch_start` (the first offset of the leader's epoch; Kafka's `isFollowerInSync`) and
    /// that are caught up by the rule `lagging` removes members by. Kafka expands the ISR only
    /// when a follower's fetch arrives; this check runs periodically, so without the last rule
    /// a silent follower (paused, cut off) whose last fetch offset equals a high watermark
    /// that stopped moving would be added back at once and removed again, over and over.
    pub fn caught_up_outside(
        &self,
        now_ms: i64,
        lag_time_max_ms: i64,
        high_watermark: i64,
        epoch_start: i64,
    ) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|id| *id != self.local && !self.isr.contains(id))
            .filter(|id| {
                self.followers.get(id).is_some_and(|f| {
                    f.fetch_offset >= high_watermark.max(epoch_start)
                        && now_ms - f.last_caught_up_ms <= lag_time_max_ms
                })
            })
            .collect()
    }

    /// The ISR change to propose now, if none is in flight: the lagging members removed
    /// (never the leader) or else the caught-up replicas added. `leader_end` is the leader's
    /// durable end.
    pub fn isr_change(
        &self,
        now_ms: i64,
        lag_time_max_ms: i64,
        high_watermark: i64,
        epoch_start: i64,
        leader_end: i64,
    ) -> Option<Vec<i32>> {
        if self.pending.is_some() || now_ms < self.retry_after_ms {
            return None;
        }
        let lagging = self.lagging(now_ms, lag_time_max_ms, leader_end);
        if !lagging.is_empty() {
            let isr: Vec<i32> = self
                .isr
                .iter()
                .copied()
                .filter(|id| !lagging.contains(id))
                .collect();
            return Some(isr);
        }
        let joining = self.caught_up_outside(now_ms, lag_time_max_ms, high_watermark, epoch_start);
        if !joining.is_empty() {
            let mut isr = self.isr.clone();
            isr.extend(joining);
            return Some(isr);
        }
        None
    }
}

impl LeaderState {
    /// Kafka's `findPreferredReadReplica` with `RackAwareReplicaSelector`, for a consumer in
    /// rack `client_rack` fetching at `fetch_offset`: candidates are the ISR followers whose
    /// fetch offset (their durable log end) reached `fetch_offset`, and the leader. Among those in the client's rack: the leader if it is one, else the
    /// one with the largest log end, then the one caught up most recently (then the lowest
    /// id). `None` (fetch from the leader) when the client names no rack, none is in its
    /// rack, or the choice is the leader. `rack_of` gives a broker's rack (`None`: no rack,
    /// or no live endpoint, which never matches). Kafka also requires the follower's log
    /// start <= `fetch_offset`; a leader does not know its followers' log starts here, and a
    /// follower whose log starts later answers OFFSET_OUT_OF_RANGE, on which the consumer goes
    /// back to the leader.
    pub fn preferred_read_replica(
        &self,
        client_rack: &str,
        fetch_offset: i64,
        now_ms: i64,
        rack_of: impl Fn(i32) -> Option<String>,
    ) -> Option<i32> {
        if client_rack.is_empty() {
            return None;
        }
        let in_rack = |id: i32| rack_of(id).as_deref() == Some(client_rack);
        if in_rack(self.local) {
            return None;
        }
        self.followers
            .iter()
            .filter(|(id, f)| {
                self.isr.contains(id) && f.fetch_offset >= fetch_offset && in_rack(**id)
            })
            // Largest log end, then the least time since caught up, then the lowest id.
            .max_by_key(|(id, f)| {
                (
                    f.fetch_offset,
                    std::cmp::Reverse(now_ms.saturating_sub(f.last_caught_up_ms)),
                    std::cmp::Reverse(**id),
                )
            })
            .map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leader 1 with followers 2 and 3 (ISR as given), 2 at offset 100 and 3 at 80.
    fn three_racks(isr: &[i32]) -> LeaderState {
        let a = PartitionAssignment {
            replicas: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            isr: isr.to_vec(),
            partition_epoch: 0,
            reassignment: None,
        };
        let mut s = LeaderState::new(1, &a, 0);
        s.record_fetch(2, 100, 100, 10);
        s.record_fetch(3, 80, 100, 10);
        s
    }

    fn rack(id: i32) -> Option<String> {
        (id != 4).then(|| format!("RACK{id}"))
    }

    #[test]
    fn the_preferred_read_replica_is_an_in_sync_follower_in_the_clients_rack() {
        let s = three_racks(&[1, 2, 3]);
        assert_eq!(s.preferred_read_replica("RACK2", 50, 20, rack), Some(2));
        assert_eq!(s.preferred_read_replica("RACK3", 80, 20, rack), Some(3));
        // Follower 3 does not have the offset yet: the leader serves.
        assert_eq!(s.preferred_read_replica("RACK3", 90, 20, rack), None);
        // The leader's own rack, no rack, an unknown rack: the leader.
        assert_eq!(s.preferred_read_replica("RACK1", 0, 20, rack), None);
        assert_eq!(s.preferred_read_replica("", 0, 20, rack), None);
        assert_eq!(s.preferred_read_replica("RACK9", 0, 20, rack), None);
        // Out of the ISR: not chosen, however caught up.
        let out = three_racks(&[1, 3]);
        assert_eq!(out.preferred_read_replica("RACK2", 50, 20, rack), None);
    }

    #[test]
    fn in_one_rack_the_most_caught_up_follower_is_preferred() {
        let s = three_racks(&[1, 2, 3]);
        let same = |_: i32| Some("A".to_string());
        // The leader in the rack wins outright.
        assert_eq!(s.preferred_read_replica("A", 0, 20, same), None);
        let followers_only = |id: i32| (id != 1).then(|| "A".to_string());
        assert_eq!(
            s.preferred_read_replica("A", 0, 20, followers_only),
            Some(2)
        );
    }

    fn assignment(isr: &[i32]) -> PartitionAssignment {
        PartitionAssignment {
            replicas: vec![0, 1, 2],
            leader: 0,
            leader_epoch: 3,
            isr: isr.to_vec(),
            partition_epoch: isr.len() as i32,
            reassignment: None,
        }
    }

    /// The high watermark is the smallest fetch offset of the ISR, capped by the leader's
    /// durable end; unknown offsets hold it at -1 (callers keep the old value).
    #[test]
    fn the_high_watermark_is_the_smallest_isr_fetch_offset() {
        let mut s = LeaderState::new(0, &assignment(&[0, 1, 2]), 100);
        assert_eq!(s.high_watermark(10), Some(-1), "nobody fetched yet");
        assert!(s.record_fetch(1, 7, 10, 101));
        assert_eq!(s.high_watermark(10), Some(-1));
        assert!(s.record_fetch(2, 9, 10, 102));
        assert_eq!(s.high_watermark(10), Some(7));
        assert_eq!(s.high_watermark(5), Some(5), "capped by the durable end");
        assert!(!s.record_fetch(4, 9, 10, 102), "not a replica");
        let alone = LeaderState::new(0, &assignment(&[0]), 100);
        assert_eq!(alone.high_watermark(10), None, "alone: the durable end");
    }

    /// A follower not caught up for longer than the lag time is proposed out of the ISR; a
    /// follower that fetches at the leader's end stays; the leader never leaves.
    #[test]
    fn a_lagging_follower_leaves_the_isr() {
        let mut s = LeaderState::new(0, &assignment(&[0, 1, 2]), 1_000);
        assert_eq!(
            s.isr_change(1_500, 1_000, 0, 0, 10),
            None,
            "within the lag time"
        );
        s.record_fetch(1, 10, 10, 1_900);
        s.record_fetch(2, 4, 10, 1_900);
        assert_eq!(s.isr_change(2_100, 1_000, 4, 0, 10), Some(vec![0, 1]));
        // Behind at each fetch, but at the end the leader had at its previous fetch: caught
        // up as of that previous fetch.
        s.record_fetch(2, 10, 12, 2_050);
        assert_eq!(s.followers[&2].last_caught_up_ms, 1_900);
        assert_eq!(s.isr_change(2_100, 1_000, 4, 0, 12), None);
        s.pending = Some(vec![0, 1]);
        assert_eq!(
            s.isr_change(9_000, 1_000, 4, 0, 12),
            None,
            "one change at a time"
        );
    }

    /// A replica outside the ISR joins once its fetch offset reaches the high watermark and
    /// the start of the leader's epoch; while the join is pending it counts for the high
    /// watermark, and an assignment ends the pending change.
    #[test]
    fn a_caught_up_follower_joins_the_isr() {
        let mut s = LeaderState::new(0, &assignment(&[0, 1]), 0);
        s.record_fetch(1, 20, 20, 10);
        s.record_fetch(2, 15, 20, 10);
        assert_eq!(
            s.isr_change(20, 30_000, 20, 0, 20),
            None,
            "below the high watermark"
        );
        s.record_fetch(2, 20, 20, 11);
        assert_eq!(
            s.isr_change(20, 30_000, 20, 25, 20),
            None,
            "below the epoch start"
        );
        let change = s.isr_change(20, 30_000, 20, 0, 20).expect("joins");
        assert_eq!(change, vec![0, 1, 2]);
        s.pending = Some(change);
        s.record_fetch(1, 30, 30, 12);
        assert_eq!(s.high_watermark(30), Some(20), "the joining member counts");
        s.update(&assignment(&[0, 1]), 13);
        assert!(
            s.pending.is_some(),
            "the same partition epoch: still pending"
        );
        s.update(&assignment(&[0, 1, 2]), 13);
        assert_eq!(s.pending, None, "a new partition epoch ends it");
        assert_eq!(s.followers[&1].fetch_offset, 30, "state kept");
    }

    /// A follower that stopped fetching (paused, cut off) of an idle partition, at the
    /// leader's end, stays in the ISR (Kafka's `isCaughtUp`); it leaves once records arrive
    /// that it does not fetch.
    #[test]
    fn a_silent_follower_at_the_end_of_an_idle_partition_stays() {
        let mut s = LeaderState::new(0, &assignment(&[0, 1, 2]), 0);
        s.record_fetch(1, 10, 10, 100);
        s.record_fetch(2, 10, 10, 100);
        // Only 1 fetches from now on.
        s.record_fetch(1, 10, 10, 50_000);
        assert_eq!(
            s.isr_change(50_000, 1_000, 10, 0, 10),
            None,
            "idle: nobody lags"
        );
        s.record_fetch(1, 12, 12, 50_100);
        assert_eq!(s.isr_change(50_200, 1_000, 12, 0, 12), Some(vec![0, 1]));
    }

    /// Once out of the ISR, a follower that does not fetch is not added back, even with its
    /// last fetch offset at a high watermark that stopped moving (the check runs
    /// periodically, not on fetches: without this, a paused follower flapped in and out of
    /// the ISR, each flap a metadata change); it joins again with its next fetch at the end.
    #[test]
    fn a_silent_follower_out_of_the_isr_is_not_added_back() {
        let mut s = LeaderState::new(0, &assignment(&[0, 1]), 0);
        s.record_fetch(1, 12, 12, 5_000);
        s.record_fetch(2, 12, 12, 100);
        assert_eq!(s.isr_change(5_000, 1_000, 12, 0, 12), None);
        s.record_fetch(1, 12, 12, 6_000);
        assert_eq!(
            s.isr_change(6_000, 1_000, 12, 0, 12),
            None,
            "silent since 100"
        );
        s.record_fetch(2, 12, 12, 6_100);
        assert_eq!(s.isr_change(6_200, 1_000, 12, 0, 12), Some(vec![0, 1, 2]));
    }

    /// The low watermark is the smallest log start over the leader and the followers on
    /// live brokers, in the ISR or not; one that has not fetched holds it at -1.
    #[test]
    fn the_low_watermark_is_the_smallest_live_replica_log_start() {
        let mut s = LeaderState::new(0, &assignment(&[0, 1]), 0);
        let all = |_: i32| true;
        assert_eq!(s.low_watermark(10, all), -1, "nobody fetched yet");
        assert!(s.record_log_start(1, 10));
        assert!(!s.record_log_start(1, 10), "unchanged");
        assert_eq!(s.low_watermark(10, all), -1, "2 (outside the ISR) counts");
        assert!(s.record_log_start(2, 4));
        assert_eq!(s.low_watermark(10, all), 4);
        assert_eq!(s.low_watermark(3, all), 3, "the leader counts");
        assert_eq!(
            s.low_watermark(10, |id| id != 2),
            10,
            "a fenced broker does not"
        );
        assert!(!s.record_log_start(7, 4), "not a replica");
        let alone = LeaderState::new(
            0,
            &PartitionAssignment {
                replicas: vec![0],
                ..assignment(&[0])
            },
            0,
        );
        assert_eq!(alone.low_watermark(10, all), 10);
    }
}
