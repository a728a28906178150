//! Partition reassignment on the controller (Kafka's KIP-455 in KRaft: `ReplicationControlManager`
//! with `PartitionReassignmentReplicas` and `PartitionReassignmentRevert`). Pure: the functions
//! here take an assignment and return the next one; `coordinator::metadata` records it as one
//! `PartitionChanged` (the whole assignment, its [`Reassignment`] included), so replay stays
//! what it was.
//!
//! A reassignment to `target` runs in three steps, as Kafka's:
//! 1. Growth ([`start`]): the replicas become `target` followed by the current replicas not in
//!    it (so the preferred replica is `target[0]`); `adding` = target − current, `removing` =
//!    current − target; leader and ISR unchanged. New replicas open the partition as followers
//!    and fetch from the leader (from its log start: `shard::replication`).
//! 2. Catch-up: the leader adds each adding replica to the ISR once it reached the high
//!    watermark (AlterPartition, as for any follower).
//! 3. Completion ([`complete_if_ready`], after every AlterPartition and at the start): once every
//!    adding replica is in the ISR, the replicas become `target`, the ISR loses the removing
//!    replicas, and a leader that is being removed hands over to the first replica of
//!    `target` that is a live ISR member (leader epoch + 1). It waits while no such leader
//!    exists, or while the ISR would be left empty.
//!
//! Cancelling ([`revert`], also the first step of a new reassignment over one in progress):
//! the adding replicas leave the replicas and the ISR; if the ISR would be empty, only a topic
//! with `unclean.leader.election.enable` may take a live original replica as its ISR (Kafka's
//! rule), else the cancel is refused with INVALID_REPLICA_ASSIGNMENT.
//!
//! Invariants (checked by `ClusterMetadata::check_assignments`): `adding` and `removing` are
//! disjoint, non-empty together, and within the replicas; `replicas − removing` is the target.

use serde::{Deserialize, Serialize};

use super::metadata::{best_leader, PartitionAssignment};

/// A reassignment in progress (Kafka's `PartitionRecord.addingReplicas` / `removingReplicas`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// Replicas being added: in the replicas, to join the ISR before completion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    /// Replicas being removed: in the replicas until completion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
}

impl PartitionAssignment {
    /// The replicas once the reassignment in progress completes (the replicas when none is).
    pub fn target_replicas(&self) -> Vec<i32> {
        match &self.reassignment {
            Some(r) => self
                .replicas
                .iter()
                .copied()
                .filter(|b| !r.removing.contains(b))
                .collect(),
            None => self.replicas.clone(),
        }
    }

    /// Sets replicas, leader, ISR and reassignment as one change: leader epoch + 1 when the
    /// leader changes, partition epoch + 1 when anything does (as [`PartitionAssignment::change`]).
    pub fn change_replicas(
        &mut self,
        replicas: Vec<i32>,
        leader: i32,
        isr: Vec<i32>,
        reassignment: Option<Reassignment>,
    ) -> bool {
        let replicas_changed = replicas != self.replicas || reassignment != self.reassignment;
        self.replicas = replicas;
        self.reassignment = reassignment;
        let changed = self.change(leader, isr);
        if replicas_changed && !changed {
            self.partition_epoch = self.partition_epoch.saturating_add(1);
        }
        replicas_changed || changed
    }
}

/// `current` without its reassignment in progress (see the module docs): the adding replicas
/// gone from the replicas and the ISR, the leader kept if it stays an ISR member, else the
/// first live one in preference order. `Err` (Kafka's message) when no original replica is in
/// the ISR and `unclean_ok` is false. `current` itself when nothing is in progress.
pub fn revert(
    current: &PartitionAssignment,
    unclean_ok: bool,
    live: impl Fn(i32) -> bool,
) -> Result<PartitionAssignment, String> {
    let Some(r) = &current.reassignment else {
        return Ok(current.clone());
    };
    let replicas: Vec<i32> = current
        .replicas
        .iter()
        .copied()
        .filter(|b| !r.adding.contains(b))
        .collect();
    let mut isr: Vec<i32> = current
        .isr
        .iter()
        .copied()
        .filter(|b| !r.adding.contains(b))
        .collect();
    if isr.is_empty() {
        let any = replicas.iter().copied().find(|&b| live(b));
        match any {
            Some(b) if unclean_ok => isr = vec![b],
            _ => {
                return Err(
                    "Unable to revert partition assignment because it would require an \
                            unclean leader election."
                        .into(),
                )
            }
        }
    }
    let leader = if isr.contains(&current.leader) {
        current.leader
    } else {
        best_leader(&replicas, &isr, false, &live)
    };
    let mut next = current.clone();
    next.change_replicas(replicas, leader, isr, None);
    Ok(next)
}

/// `base` (no reassignment in progress) reassigned to `target`, a checked replica list: the
/// growth step, then [`complete_if_ready`] (a reassignment that only removes replicas, or
/// only reorders them, completes at once).
pub fn start(
    base: &PartitionAssignment,
    target: &[i32],
    live: impl Fn(i32) -> bool,
) -> PartitionAssignment {
    debug_assert!(base.reassignment.is_none());
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|b| !base.replicas.contains(b))
        .collect();
    let removing: Vec<i32> = base
        .replicas
        .iter()
        .copied()
        .filter(|b| !target.contains(b))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(removing.iter().copied());
    let reassignment =
        (!adding.is_empty() || !removing.is_empty()).then_some(Reassignment { adding, removing });
    let mut next = base.clone();
    next.change_replicas(replicas, base.leader, base.isr.clone(), reassignment);
    complete_if_ready(&mut next, live);
    next
}

/// The completion step (see the module docs) if `a`'s reassignment is ready: every adding
/// replica in the ISR, an ISR left within the target, and a live leader in it. Returns
/// whether it completed.
pub fn complete_if_ready(a: &mut PartitionAssignment, live: impl Fn(i32) -> bool) -> bool {
    let Some(r) = &a.reassignment else {
        return false;
    };
    if !r.adding.iter().all(|b| a.isr.contains(b)) {
        return false;
    }
    let target = a.target_replicas();
    let isr: Vec<i32> = a
        .isr
        .iter()
        .copied()
        .filter(|b| target.contains(b))
        .collect();
    if isr.is_empty() {
        return false;
    }
    let leader = if isr.contains(&a.leader) {
        a.leader
    } else {
        best_leader(&target, &isr, false, &live)
    };
    if leader == -1 && a.leader != -1 {
        return false;
    }
    a.change_replicas(target, leader, isr, None);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionAssignment {
        PartitionAssignment {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 5,
            isr: isr.to_vec(),
            partition_epoch: 7,
            reassignment: None,
        }
    }

    /// Kafka's example: moving [1, 2, 3] to [1, 2, 4] grows to [1, 2, 4, 3], then completes
    /// when 4 joins the ISR, dropping 3; the leader stays, so its epoch does too.
    #[test]
    fn a_move_grows_then_completes_when_the_new_replica_is_in_sync() {
        let live = |_| true;
        let grown = start(&assignment(&[1, 2, 3], 1, &[1, 2]), &[1, 2, 4], live);
        assert_eq!(grown.replicas, vec![1, 2, 4, 3]);
        assert_eq!(
            grown.reassignment,
            Some(Reassignment {
                adding: vec![4],
                removing: vec![3]
            })
        );
        assert_eq!(
            (grown.leader, grown.leader_epoch, grown.partition_epoch),
            (1, 5, 8)
        );
        assert_eq!(grown.target_replicas(), vec![1, 2, 4]);
        let mut waiting = grown.clone();
        assert!(
            !complete_if_ready(&mut waiting, live),
            "4 is not in sync yet"
        );
        let mut ready = grown;
        ready.isr = vec![1, 2, 4];
        assert!(complete_if_ready(&mut ready, live));
        assert_eq!(ready.replicas, vec![1, 2, 4]);
        assert_eq!(ready.isr, vec![1, 2, 4]);
        assert_eq!(ready.reassignment, None);
        assert_eq!((ready.leader, ready.leader_epoch), (1, 5));
    }

    /// Removing the leader elects the first live in-sync replica of the target (epoch + 1);
    /// removing replicas only completes at once.
    #[test]
    fn removing_the_leader_hands_leadership_over() {
        let done = start(&assignment(&[1, 2, 3], 1, &[1, 2, 3]), &[3, 2], |b| b != 3);
        assert_eq!(done.reassignment, None);
        assert_eq!(done.replicas, vec![3, 2]);
        assert_eq!(done.isr, vec![2, 3]);
        assert_eq!(
            (done.leader, done.leader_epoch),
            (2, 6),
            "3 is fenced: 2 leads"
        );
        // No live leader in the target: it waits.
        let waiting = start(&assignment(&[1, 2], 1, &[1, 2]), &[2], |b| b == 1);
        assert!(waiting.reassignment.is_some());
        assert_eq!(waiting.leader, 1);
    }

    /// rf 1 -> 3: both new replicas must be in sync before it completes.
    #[test]
    fn increasing_the_replication_factor_waits_for_every_new_replica() {
        let mut a = start(&assignment(&[1], 1, &[1]), &[1, 2, 3], |_| true);
        assert_eq!(a.replicas, vec![1, 2, 3]);
        assert_eq!(a.reassignment.as_ref().unwrap().adding, vec![2, 3]);
        a.isr = vec![1, 2];
        assert!(!complete_if_ready(&mut a, |_| true));
        a.isr = vec![1, 2, 3];
        assert!(complete_if_ready(&mut a, |_| true));
        assert_eq!(
            (a.replicas.clone(), a.reassignment.clone()),
            (vec![1, 2, 3], None)
        );
    }

    /// Cancelling removes the adding replicas (from the ISR too); an ISR of adding replicas
    /// only is reverted only uncleanly.
    #[test]
    fn a_revert_drops_the_adding_replicas() {
        let mut a = start(&assignment(&[1, 2], 1, &[1, 2]), &[3, 4], |_| true);
        a.isr = vec![1, 2, 3];
        let back = revert(&a, false, |_| true).unwrap();
        assert_eq!(
            (back.replicas.clone(), back.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
        assert_eq!(back.reassignment, None);
        assert!(back.partition_epoch > a.partition_epoch);
        let mut only_new = a.clone();
        only_new.isr = vec![3];
        only_new.leader = 3;
        assert!(revert(&only_new, false, |_| true).is_err());
        let unclean = revert(&only_new, true, |b| b == 2).unwrap();
        assert_eq!((unclean.leader, unclean.isr), (2, vec![2]));
        assert!(unclean.leader_epoch > only_new.leader_epoch);
    }
}
