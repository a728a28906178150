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
//! - [`record_follower_fetch`]: a follower's Fetch at an offset (its durable end), with its
//!   log start offset;
//! - [`delete_records_outcome`]: whether a DeleteRecords is answered yet (the low watermark);
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

/// What [`record_follower_fetch`] recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchRecorded {
    /// The fetch offset was recorded (then the caller refreshes the high watermark).
    pub offset: bool,
    /// The follower's log start offset changed (then DeleteRecords waiters look again).
    pub log_start: bool,
}

/// A follower `replica`'s Fetch at `offset` (its durable end) of a partition led here, with
/// the log start offset it reports (`log_start`, Kafka's Fetch `log_start_offset`; -1: not
/// sent, kept as reported). An offset past the durable end (a follower with a divergent
/// suffix, answered OFFSET_OUT_OF_RANGE) or below 0 is not recorded, nor its log start: it is
/// not data this leader has; nor is a broker that is not a follower.
pub fn record_follower_fetch(
    role: &mut Role,
    log: &PartitionLog,
    replica: i32,
    (offset, log_start): (i64, i64),
    now_ms: i64,
) -> FetchRecorded {
    if offset > log.durable_end() || offset < 0 {
        return FetchRecorded::default();
    }
    match role {
        Role::Leader(s) => FetchRecorded {
            offset: s.record_fetch(replica, offset, log.durable_end(), now_ms),
            log_start: s.record_log_start(replica, log_start),
        },
        Role::Follower { .. } => FetchRecorded::default(),
    }
}

/// A DeleteRecords up to `target` whose local part is done (the leader's log start moved):
/// `None` while the low watermark ([`LeaderState::low_watermark`] over the brokers `alive`
/// says are unfenced) is below `target`; then `Ok(low watermark)`; NOT_LEADER_OR_FOLLOWER once
/// this replica stopped leading (Kafka's `DelayedDeleteRecords.tryComplete`).
pub fn delete_records_outcome(
    role: &Role,
    log: &PartitionLog,
    target: i64,
    alive: impl Fn(i32) -> bool,
) -> Option<Result<i64, ResponseError>> {
    let Role::Leader(s) = role else {
        return Some(Err(crate::error::not_leader_code()));
    };
    let low_watermark = s.low_watermark(log.log_start_offset(), alive);
    (low_watermark >= target).then_some(Ok(low_watermark))
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
    if let Some(pending) = &s.pending {
        // A change whose outcome is not known (or accepted and not installed yet) is sent
        // again, unchanged, once its retry time came: the quorum may have applied it, so its
        // members keep counting for the high watermark until an install or a final refusal
        // ends it (Kafka's AlterPartitionManager retries; its `PendingExpandIsr` state stays).
        if s.resend_after_ms.is_none_or(|t| now_ms < t) {
            return None;
        }
        s.resend_after_ms = None;
        return Some(MetadataCommand::AlterPartition {
            topic: topic.to_string(),
            partition,
            leader_id: node,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            new_isr: pending.clone(),
        });
    }
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

/// The answer to an AlterPartition this leader proposed. A final refusal
/// ([`isr_refusal_is_final`]) ends the pending change, and no change is proposed again before
/// `retry_after_ms`. Any other answer (accepted, an outcome not known, a partition epoch that
/// moved meanwhile) leaves a change the install has not ended yet pending, so that its members
/// keep counting for the high watermark, and sends it again from `retry_after_ms` on.
pub fn isr_change_answered(role: &mut Role, refused_for_good: bool, retry_after_ms: i64) {
    if let Role::Leader(s) = role {
        if refused_for_good {
            s.pending = None;
            s.resend_after_ms = None;
            s.retry_after_ms = retry_after_ms;
        } else if s.pending.is_some() {
            s.resend_after_ms = Some(retry_after_ms);
        }
    }
}

/// Whether an AlterPartition refused with `code` was certainly not applied and nothing newer is
/// on its way that would end it: the controller judged it and said no (an ineligible replica,
/// a bad request). Not final: no controller reached or the call timed out (it may have been
/// applied), a stale partition or leader epoch (a newer assignment is applied and will be
/// installed here), storage or throttling errors.
pub fn isr_refusal_is_final(code: ResponseError) -> bool {
    !matches!(
        code,
        ResponseError::NotController
            | ResponseError::RequestTimedOut
            | ResponseError::InvalidUpdateVersion
            | ResponseError::FencedLeaderEpoch
            | ResponseError::KafkaStorageError
            | ResponseError::ThrottlingQuotaExceeded
            | ResponseError::UnknownServerError
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::metadata::PartitionAssignment;

    fn leading(isr: &[i32]) -> Role {
        let a = PartitionAssignment {
            replicas: vec![0, 1, 2],
            leader: 0,
            leader_epoch: 3,
            isr: isr.to_vec(),
            partition_epoch: 7,
            reassignment: None,
        };
        Role::Leader(LeaderState::new(0, &a, 0))
    }

    fn state(role: &Role) -> &LeaderState {
        match role {
            Role::Leader(s) => s,
            Role::Follower { .. } => panic!("not leading"),
        }
    }

    /// An ISR expansion whose answer is lost (or accepted but not installed yet) stays pending,
    /// so the joining member keeps holding the high watermark back, and is sent again after
    /// the retry time; only a final refusal or an install ends it.
    #[test]
    fn an_isr_change_of_unknown_outcome_stays_pending_and_is_sent_again() {
        let mut role = leading(&[0, 1]);
        if let Role::Leader(s) = &mut role {
            s.pending = Some(vec![0, 1, 2]);
        }
        isr_change_answered(&mut role, false, 1_000);
        let s = state(&role);
        assert_eq!(s.pending, Some(vec![0, 1, 2]), "still counts for the HW");
        assert_eq!(s.resend_after_ms, Some(1_000));
        assert_eq!(s.retry_after_ms, 0, "no back-off for new changes");

        // A final refusal ends it, with the back-off.
        isr_change_answered(&mut role, true, 2_000);
        let s = state(&role);
        assert_eq!((s.pending.clone(), s.resend_after_ms), (None, None));
        assert_eq!(s.retry_after_ms, 2_000);

        // Answered after an install ended it already: nothing pending, nothing re-sent.
        isr_change_answered(&mut role, false, 3_000);
        assert_eq!(state(&role).resend_after_ms, None);

        // An install with a new partition epoch ends a pending change and its re-send.
        let mut role = leading(&[0, 1]);
        if let Role::Leader(s) = &mut role {
            s.pending = Some(vec![0, 1, 2]);
            s.resend_after_ms = Some(5);
            s.update(
                &PartitionAssignment {
                    replicas: vec![0, 1, 2],
                    leader: 0,
                    leader_epoch: 3,
                    isr: vec![0, 1, 2],
                    partition_epoch: 8,
                    reassignment: None,
                },
                6,
            );
        }
        let s = state(&role);
        assert_eq!((s.pending.clone(), s.resend_after_ms), (None, None));
    }

    #[test]
    fn only_a_judged_refusal_of_an_isr_change_is_final() {
        for code in [
            ResponseError::IneligibleReplica,
            ResponseError::InvalidRequest,
            ResponseError::UnknownTopicOrPartition,
        ] {
            assert!(isr_refusal_is_final(code), "{code:?}");
        }
        for code in [
            ResponseError::NotController,
            ResponseError::RequestTimedOut,
            ResponseError::InvalidUpdateVersion,
            ResponseError::FencedLeaderEpoch,
        ] {
            assert!(!isr_refusal_is_final(code), "{code:?}");
        }
    }
}
