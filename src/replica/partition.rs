//! One replica of a partition as replication sees it: its [`Role`] (leader with its
//! followers' state, or follower of a broker at an epoch) and the rules that move its log's
//! high watermark, its role and its ISR. Each rule is a function of the role and the log
//! (`storage::PartitionLog`) alone, so the shard (`shard::replication`, `api::fetch`) and the
//! deterministic simulator (`tests/it/simulate_replication.rs`) run the same code:
//!
//! - [`assign_role`]: a metadata install's assignment makes the replica leader (Kafka's
//!   `makeLeader`: the epoch starts at the log end) or follower (its epochs come with its
//!   leader's batches);
//! - [`refresh_high_watermark`]: a leader's high watermark from its followers' offsets;
//! - [`record_follower_fetch`]: a follower's Fetch at an offset (its durable end);
//! - [`propose_isr_change`]: the AlterPartition a leader asks the quorum for now, if any;
//! - [`fetch_epoch_check`]: the leader's epoch and divergence checks of a Fetch;
//! - [`acks_all_outcome`]: whether an acks=all append is answered yet, and how.

use kafka_protocol::error::ResponseError;

use super::leader::LeaderState;
use crate::coordinator::metadata::{MetadataCommand, PartitionAssignment};
use crate::storage::PartitionLog;

/// A hosted partition's part in replication (see the module docs).
#[derive(Debug, Clone)]
pub enum Role {
    Leader(LeaderState),
    Follower { leader: i32, leader_epoch: i32 },
}

impl Role {
    /// The role a partition has when opened, before its first metadata (a follower of no one).
    pub const UNASSIGNED: Role = Role::Follower {
        leader: -1,
        leader_epoch: -1,
    };

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader(_))
    }

    /// The leader this replica follows, with its epoch.
    pub fn following(&self) -> Option<(i32, i32)> {
        match *self {
            Role::Follower {
                leader,
                leader_epoch,
            } => Some((leader, leader_epoch)),
            Role::Leader(_) => None,
        }
    }

    /// The ISR size as this leader knows it (0 when not leading).
    pub fn isr_len(&self) -> usize {
        match self {
            Role::Leader(s) => s.isr.len(),
            Role::Follower { .. } => 0,
        }
    }
}

/// Gives the replica of `log` on broker `node` its role in assignment `a` at `now_ms`: the
/// leader keeps its followers' state within one leader epoch; a new leader epoch starts at
/// the log end (Kafka's `makeLeader`); a follower learns the epoch only. Returns the broker
/// this replica now follows, if any.
pub fn assign_role(
    role: &mut Role,
    log: &PartitionLog,
    node: i32,
    a: &PartitionAssignment,
    now_ms: i64,
) -> Option<i32> {
    if a.leader == node {
        match role {
            Role::Leader(s) if s.leader_epoch == a.leader_epoch => s.update(a, now_ms),
            _ => {
                log.start_leader_epoch(a.leader_epoch);
                *role = Role::Leader(LeaderState::new(node, a, now_ms));
            }
        }
        None
    } else {
        // A follower's epochs come with its leader's batches.
        log.set_leader_epoch(a.leader_epoch);
        *role = Role::Follower {
            leader: a.leader,
            leader_epoch: a.leader_epoch,
        };
        (a.leader >= 0).then_some(a.leader)
    }
}

/// A leader's high watermark from its followers' offsets: `min(durable end, fetch offsets of
/// the maximal ISR)`, the durable end when it is alone in its ISR. It never moves back while
/// this broker leads (an ISR that grows keeps what readers saw), except for a partition just
/// opened (`fresh`): it starts from what its ISR has or from the high watermark its recovery
/// checkpoint recorded, whichever is higher. A follower's moves with its leader's answers
/// (`follower::append_and_advance`); one just opened starts from its checkpointed high
/// watermark (Kafka's `replication-offset-checkpoint`), not from its durable end, which may
/// hold a suffix that was never committed (a consumer fetching from this follower must not see
/// it before the leader's first answer truncates it). Returns whether the high watermark
/// readers see changed.
pub fn refresh_high_watermark(role: &Role, log: &PartitionLog, fresh: bool) -> bool {
    let hw = match role {
        Role::Leader(s) => s.high_watermark(log.durable_end()),
        Role::Follower { .. } if fresh => {
            return log.set_high_watermark(log.checkpointed_high_watermark());
        }
        Role::Follower { .. } => return false,
    };
    match hw {
        None => log.follow_durable_end(),
        Some(hw) if fresh => log.set_high_watermark(hw.max(log.checkpointed_high_watermark())),
        Some(hw) => log.set_high_watermark(hw.max(log.high_watermark())),
    }
}

/// A follower `replica`'s Fetch at `offset` (its durable end) of a partition led here: returns
/// whether it was recorded (then the caller refreshes the high watermark). An offset past the
/// durable end (a follower with a divergent suffix, answered OFFSET_OUT_OF_RANGE) or below 0
/// is not recorded: it is not data this leader has; nor is a broker that is not a follower.
pub fn record_follower_fetch(
    role: &mut Role,
    log: &PartitionLog,
    replica: i32,
    offset: i64,
    now_ms: i64,
) -> bool {
    if offset > log.durable_end() || offset < 0 {
        return false;
    }
    match role {
        Role::Leader(s) => s.record_fetch(replica, offset, log.durable_end(), now_ms),
        Role::Follower { .. } => false,
    }
}

/// The ISR change this leader (broker `node`) asks for now, if any (Kafka's `maybeShrinkIsr` /
/// `maybeExpandIsr`), as the AlterPartition naming the partition epoch it knows; marks it
/// pending (one in flight per partition). `lag_time_max_ms` is `replica.lag.time.max.ms`.
pub fn propose_isr_change(
    role: &mut Role,
    log: &PartitionLog,
    (topic, partition): (&str, i32),
    node: i32,
    now_ms: i64,
    lag_time_max_ms: i64,
) -> Option<MetadataCommand> {
    let hw = log.high_watermark();
    let Role::Leader(s) = role else {
        return None;
    };
    // The start offset of this leader's epoch, so that a follower joins only once it has
    // this epoch's first batch (Kafka's `isFollowerInSync` with `leaderEpochStartOffsetOpt`);
    // an epoch the cache does not know (cannot happen once `start_leader_epoch` ran) asks for
    // the log end.
    let epoch_start = log
        .epoch_start_offset(s.leader_epoch)
        .unwrap_or_else(|| log.log_end_offset());
    let end = log.durable_end();
    let new_isr = s.isr_change(now_ms, lag_time_max_ms, hw, epoch_start, end)?;
    s.pending = Some(new_isr.clone());
    Some(MetadataCommand::AlterPartition {
        topic: topic.to_string(),
        partition,
        leader_id: node,
        leader_epoch: s.leader_epoch,
        partition_epoch: s.partition_epoch,
        new_isr,
    })
}

/// The answer to an AlterPartition this leader proposed: the pending change is over either
/// way (accepted: the install ended it already); a refused one is not proposed again before
/// `retry_after_ms`.
pub fn isr_change_answered(role: &mut Role, refused: bool, retry_after_ms: i64) {
    if let Role::Leader(s) = role {
        s.pending = None;
        if refused {
            s.retry_after_ms = retry_after_ms;
        }
    }
}

/// What the leader's checks of a Fetch decided (Kafka's `Partition.checkCurrentLeaderEpoch`
/// and, for a fetcher naming the epoch of its last fetched batch, the divergence check of
/// `Partition.readRecords`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchCheck {
    /// Read from the offset.
    Read,
    /// FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH.
    EpochError(ResponseError),
    /// That epoch's end is unknown here, or the offset is below the log start.
    OutOfRange,
    /// The fetcher's log diverged: (epoch, end offset of that epoch here), no records.
    Diverging(i32, i64),
}

/// The checks of a Fetch at `offset` naming `current_leader_epoch` and `last_fetched_epoch`
/// (each -1 when not given) against `log`.
pub fn fetch_epoch_check(
    log: &PartitionLog,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    offset: i64,
) -> FetchCheck {
    if let Some(error) = crate::error::leader_epoch_code(current_leader_epoch, log.leader_epoch()) {
        return FetchCheck::EpochError(error);
    }
    if last_fetched_epoch < 0 {
        return FetchCheck::Read;
    }
    let Some((epoch, end_offset)) = log.end_offset_for_epoch(last_fetched_epoch) else {
        return FetchCheck::OutOfRange;
    };
    if offset < log.log_start_offset() {
        return FetchCheck::OutOfRange;
    }
    if epoch < last_fetched_epoch || end_offset < offset {
        return FetchCheck::Diverging(epoch, end_offset);
    }
    FetchCheck::Read
}

/// acks=all after the durable local append of a batch ending at `last_offset`: `None` while
/// the high watermark `hw` has not passed it; then `Ok` with at least `min_insync` replicas
/// in the ISR (`isr_len`), else NOT_ENOUGH_REPLICAS_AFTER_APPEND (Kafka's
/// `checkEnoughReplicasReachOffset`); NOT_LEADER_OR_FOLLOWER once this broker stopped leading.
pub fn acks_all_outcome(
    role: &Role,
    hw: i64,
    last_offset: i64,
    min_insync: i32,
) -> Option<Result<(), ResponseError>> {
    if !role.is_leader() {
        return Some(Err(crate::error::not_leader_code()));
    }
    if hw > last_offset {
        if (role.isr_len() as i32) < min_insync {
            return Some(Err(ResponseError::NotEnoughReplicasAfterAppend));
        }
        return Some(Ok(()));
    }
    None
}
