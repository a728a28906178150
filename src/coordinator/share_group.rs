//! Share groups (KIP-932): membership by ShareGroupHeartbeat and the server-side assignment in
//! which several members may share a partition.
//!
//! Pure state machine (time and the topic metadata passed in), run by `shard::shares` on the
//! coordinator shard. As Kafka's `GroupMetadataManager.shareGroupHeartbeat`:
//! - Member epoch 0 joins (the client generates its member id; the subscribed topic names are
//!   required), -1 leaves, a positive epoch heartbeats and must equal the member's epoch
//!   (else FENCED_MEMBER_EPOCH; an unknown member gets UNKNOWN_MEMBER_ID and rejoins).
//! - Every change of membership, of a subscription or of the subscribed topics' partitions
//!   bumps the group epoch and recomputes the target assignment with [`simple_assignment`]
//!   (Kafka's `SimpleAssignor` balance rules: each partition is shared by
//!   `ceil(members / partitions)` members, each member gets an equal share of those slots).
//!   Share groups revoke nothing before reassigning (no partition is owned exclusively), so a
//!   member moves to the new assignment and the group epoch at its next heartbeat; the answer
//!   carries the assignment only when it changed (or on a join).
//! - A member that does not heartbeat for `group.share.session.timeout.ms` is removed by
//!   [`ShareGroups::expire`].
//!
//! Not done yet: stickiness (the assignment is recomputed from scratch, deterministic by member
//! id order), rack awareness, regex subscriptions (share groups have none in Kafka either),
//! persistence of membership (members rejoin after a restart; the groups themselves come back
//! with their share-partition state).
//!
//! Bounds: [`SHARE_GROUP_MEMBERS_MAX`] members per group (GROUP_MAX_SIZE_REACHED beyond),
//! [`SUBSCRIBED_TOPICS_MAX`] topic names per subscription.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use uuid::Uuid;

use crate::coordinator::metadata::TopicMeta;

/// Kafka's `group.share.max.size` default: members per share group.
pub const SHARE_GROUP_MEMBERS_MAX: usize = 200;
/// Topic names per subscription.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;
/// The member epoch of a join.
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// The only server assignor of share groups.
pub const SIMPLE_ASSIGNOR: &str = "simple";

/// Share-group settings (Kafka's broker configs of the same names).
#[derive(Clone, Copy, Debug)]
pub struct ShareGroupConfig {
    /// `group.share.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `group.share.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
}

/// A member's assignment: partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// A ShareGroupHeartbeat request.
#[derive(Clone, Debug)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub client_id: String,
    pub client_host: String,
}

/// A ShareGroupHeartbeat answer.
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatResponse {
    pub error: Option<ResponseError>,
    pub error_message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment when it changed (or on a join), else `None`.
    pub assignment: Option<Assignment>,
}

impl HeartbeatResponse {
    fn error(error: ResponseError, message: impl Into<String>) -> HeartbeatResponse {
        HeartbeatResponse {
            error: Some(error),
            error_message: Some(message.into()),
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// One member of a share group.
#[derive(Clone, Debug)]
pub struct ShareMember {
    pub member_id: String,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: BTreeSet<String>,
    pub member_epoch: i32,
    pub assignment: Assignment,
    /// When the session ends without a heartbeat.
    deadline_ms: i64,
}

/// One share group.
#[derive(Clone, Debug, Default)]
pub struct ShareGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ShareMember>,
    /// The target assignment of [`Self::assignment_epoch`].
    target: BTreeMap<String, Assignment>,
}

impl ShareGroup {
    /// Kafka's share-group states: `Empty` without members, else `Stable`.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }

    /// Recomputes the target assignment; a change bumps the group epoch.
    fn reassign(&mut self, topics: &BTreeMap<String, TopicMeta>, force_epoch_bump: bool) {
        let target = simple_assignment(&self.members, topics);
        if force_epoch_bump || target != self.target {
            self.group_epoch += 1;
            self.assignment_epoch = self.group_epoch;
            self.target = target;
        }
    }
}

/// All share groups of this coordinator; see the module doc.
#[derive(Debug)]
pub struct ShareGroups {
    config: ShareGroupConfig,
    groups: BTreeMap<String, ShareGroup>,
}

/// The simple assignment: the subscribed partitions (every member's subscription), each shared
/// by `ceil(members / partitions)` members, handed round robin over members sorted by id, so
/// each member gets an equal share (at most one apart) and no partition goes to a member twice.
pub fn simple_assignment(
    members: &BTreeMap<String, ShareMember>,
    topics: &BTreeMap<String, TopicMeta>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    // Partitions by topic name, each with the members subscribed to that topic.
    let mut by_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for member in members.values() {
        for topic in &member.subscribed_topic_names {
            by_topic
                .entry(topic.as_str())
                .or_default()
                .push(member.member_id.as_str());
        }
    }
    // Members subscribed to the same topics are balanced together, topic by topic.
    for (topic, subscribers) in by_topic {
        let Some(meta) = topics.get(topic) else {
            continue;
        };
        let partitions = meta.partitions.max(0) as usize;
        if partitions == 0 || subscribers.is_empty() {
            continue;
        }
        let sharing = subscribers.len().div_ceil(partitions);
        for slot in 0..sharing * partitions {
            let partition = (slot % partitions) as i32;
            let member = subscribers[slot % subscribers.len()];
            if let Some(assignment) = out.get_mut(member) {
                assignment.entry(meta.id).or_default().insert(partition);
            }
        }
    }
    out.retain(|_, a| {
        a.retain(|_, ps| !ps.is_empty());
        true
    });
    out
}

impl ShareGroups {
    pub fn new(config: ShareGroupConfig) -> ShareGroups {
        ShareGroups {
            config,
            groups: BTreeMap::new(),
        }
    }

    pub fn group(&self, group_id: &str) -> Option<&ShareGroup> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &ShareGroup> {
        self.groups.values()
    }

    /// Makes sure an (empty) group exists: a group known from its share state after a restart.
    pub fn ensure(&mut self, group_id: &str) {
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| ShareGroup {
                group_id: group_id.to_string(),
                ..ShareGroup::default()
            });
    }

    /// Deletes an empty group (DeleteGroups): NON_EMPTY_GROUP while it has members,
    /// GROUP_ID_NOT_FOUND when unknown.
    pub fn delete(&mut self, group_id: &str) -> Result<(), ResponseError> {
        match self.groups.get(group_id) {
            None => Err(ResponseError::GroupIdNotFound),
            Some(g) if !g.members.is_empty() => Err(ResponseError::NonEmptyGroup),
            Some(_) => {
                self.groups.remove(group_id);
                Ok(())
            }
        }
    }

    /// The earliest session deadline of any member.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.groups
            .values()
            .flat_map(|g| g.members.values().map(|m| m.deadline_ms))
            .min()
    }

    /// Removes members whose session ended; returns them as (group, member).
    pub fn expire(
        &mut self,
        now_ms: i64,
        topics: &BTreeMap<String, TopicMeta>,
    ) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for group in self.groups.values_mut() {
            let before = group.members.len();
            group.members.retain(|id, m| {
                let keep = m.deadline_ms > now_ms;
                if !keep {
                    gone.push((group.group_id.clone(), id.clone()));
                }
                keep
            });
            if group.members.len() != before {
                group.reassign(topics, true);
            }
        }
        gone
    }

    /// The broker-wide settings (a group without its own `share.*` group configs).
    pub fn defaults(&self) -> ShareGroupConfig {
        self.config
    }

    /// ShareGroupHeartbeat with the broker-wide settings; see [`Self::heartbeat_with`].
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        topics: &BTreeMap<String, TopicMeta>,
        req: HeartbeatRequest,
    ) -> HeartbeatResponse {
        let config = self.config;
        self.heartbeat_with(now_ms, topics, req, config)
    }

    /// ShareGroupHeartbeat; see the module doc. `config`: the group's session timeout and
    /// heartbeat interval (its group configs, else the broker's; Kafka reads them per
    /// heartbeat, so a change applies from the member's next heartbeat).
    pub fn heartbeat_with(
        &mut self,
        now_ms: i64,
        topics: &BTreeMap<String, TopicMeta>,
        req: HeartbeatRequest,
        config: ShareGroupConfig,
    ) -> HeartbeatResponse {
        if let Err((error, message)) = validate(&req) {
            return HeartbeatResponse::error(error, message);
        }
        if req.member_epoch == LEAVE_EPOCH {
            let Some(group) = self.groups.get_mut(&req.group_id) else {
                return HeartbeatResponse::error(
                    ResponseError::GroupIdNotFound,
                    format!("Group {} not found.", req.group_id),
                );
            };
            if group.members.remove(&req.member_id).is_none() {
                return HeartbeatResponse::error(
                    ResponseError::UnknownMemberId,
                    format!(
                        "Member {} is not a member of group {}.",
                        req.member_id, req.group_id
                    ),
                );
            }
            group.reassign(topics, true);
            return HeartbeatResponse {
                error: None,
                error_message: None,
                member_id: Some(req.member_id),
                member_epoch: LEAVE_EPOCH,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
        }
        if req.member_epoch != JOIN_EPOCH {
            let known = self
                .groups
                .get(&req.group_id)
                .and_then(|g| g.members.get(&req.member_id));
            match known {
                None => {
                    return HeartbeatResponse::error(
                        ResponseError::UnknownMemberId,
                        format!(
                            "Member {} is not a member of group {}.",
                            req.member_id, req.group_id
                        ),
                    )
                }
                Some(m) if m.member_epoch != req.member_epoch => {
                    return HeartbeatResponse::error(
                        ResponseError::FencedMemberEpoch,
                        format!(
                            "The share group member has a member epoch ({}) different from the one known by the group coordinator ({}).",
                            req.member_epoch, m.member_epoch
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        self.ensure(&req.group_id);
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            unreachable!("ensured above");
        };
        let joining = req.member_epoch == JOIN_EPOCH;
        if joining
            && !group.members.contains_key(&req.member_id)
            && group.members.len() >= SHARE_GROUP_MEMBERS_MAX
        {
            return HeartbeatResponse::error(
                ResponseError::GroupMaxSizeReached,
                format!(
                    "The share group has reached its maximum capacity of {SHARE_GROUP_MEMBERS_MAX} members."
                ),
            );
        }
        let deadline_ms = now_ms.saturating_add(i64::from(config.session_timeout_ms));
        let mut changed = false;
        let member = group
            .members
            .entry(req.member_id.clone())
            .or_insert_with(|| {
                changed = true;
                ShareMember {
                    member_id: req.member_id.clone(),
                    rack_id: None,
                    client_id: String::new(),
                    client_host: String::new(),
                    subscribed_topic_names: BTreeSet::new(),
                    member_epoch: 0,
                    assignment: Assignment::new(),
                    deadline_ms,
                }
            });
        member.deadline_ms = deadline_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        if req.rack_id.is_some() {
            member.rack_id = req.rack_id;
        }
        if let Some(names) = req.subscribed_topic_names {
            let names: BTreeSet<String> = names.into_iter().collect();
            if names != member.subscribed_topic_names {
                member.subscribed_topic_names = names;
                changed = true;
            }
        }
        // Topics created or grown since the last assignment change it too.
        group.reassign(topics, changed);
        let epoch = group.assignment_epoch;
        let target = group
            .target
            .get(&req.member_id)
            .cloned()
            .unwrap_or_default();
        let Some(member) = group.members.get_mut(&req.member_id) else {
            unreachable!("inserted above");
        };
        let assignment = if joining || member.member_epoch != epoch || member.assignment != target {
            member.assignment = target.clone();
            member.member_epoch = epoch;
            Some(target)
        } else {
            None
        };
        HeartbeatResponse {
            error: None,
            error_message: None,
            member_id: Some(req.member_id),
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            assignment,
        }
    }
}

type Refusal = (ResponseError, String);

/// Kafka's `throwIfShareGroupHeartbeatRequestIsInvalid`.
fn validate(req: &HeartbeatRequest) -> Result<(), Refusal> {
    let invalid = |m: &str| Err((ResponseError::InvalidRequest, m.to_string()));
    if req.group_id.trim().is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if req.member_id.trim().is_empty() {
        return invalid("MemberId can't be empty.");
    }
    if req.rack_id.as_ref().is_some_and(|s| s.trim().is_empty()) {
        return invalid("RackId can't be empty.");
    }
    if req.member_epoch == JOIN_EPOCH {
        match &req.subscribed_topic_names {
            None => return invalid("SubscribedTopicNames must be set in first request."),
            Some(names) if names.is_empty() => {
                return invalid("SubscribedTopicNames must be set in first request.")
            }
            _ => {}
        }
    } else if req.member_epoch < LEAVE_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if req
        .subscribed_topic_names
        .as_ref()
        .is_some_and(|n| n.len() > SUBSCRIBED_TOPICS_MAX)
    {
        return invalid("Too many subscribed topic names.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: ShareGroupConfig = ShareGroupConfig {
        session_timeout_ms: 1000,
        heartbeat_interval_ms: 100,
    };

    fn topics(partitions: i32) -> (BTreeMap<String, TopicMeta>, Uuid) {
        let id = Uuid::from_u128(7);
        let meta = TopicMeta {
            id,
            partitions,
            configs: BTreeMap::new(),
            internal: false,
            assignment: Vec::new(),
        };
        (BTreeMap::from([("t".to_string(), meta)]), id)
    }

    fn hb(member: &str, epoch: i32, subscribe: bool) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            rack_id: None,
            subscribed_topic_names: subscribe.then(|| vec!["t".to_string()]),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    /// Two members of a one-partition topic both get the partition (shared); each gets a new
    /// epoch; the first sees the change at its next heartbeat; leaving and expiry shrink it.
    #[test]
    fn members_share_a_partition() {
        let (topics, id) = topics(1);
        let mut g = ShareGroups::new(CONFIG);
        let a = g.heartbeat(0, &topics, hb("a", 0, true));
        assert_eq!(a.error, None);
        assert_eq!(a.member_epoch, 1);
        let only_p0 = Assignment::from([(id, BTreeSet::from([0]))]);
        assert_eq!(a.assignment, Some(only_p0.clone()));
        let b = g.heartbeat(0, &topics, hb("b", 0, true));
        assert_eq!(
            (b.member_epoch, b.assignment.clone()),
            (2, Some(only_p0.clone()))
        );
        // a: same partitions, new epoch: the assignment is sent again with the epoch.
        let a = g.heartbeat(10, &topics, hb("a", 1, false));
        assert_eq!(a.member_epoch, 2);
        let a = g.heartbeat(20, &topics, hb("a", 2, false));
        assert_eq!((a.member_epoch, a.assignment), (2, None));
        // A stale epoch is fenced; an unknown member is told so.
        let stale = g.heartbeat(20, &topics, hb("a", 1, false));
        assert_eq!(stale.error, Some(ResponseError::FencedMemberEpoch));
        let unknown = g.heartbeat(20, &topics, hb("z", 3, false));
        assert_eq!(unknown.error, Some(ResponseError::UnknownMemberId));
        // b stops heartbeating: expired after the session timeout.
        assert_eq!(g.expire(999, &topics), vec![]);
        let _ = g.heartbeat(900, &topics, hb("a", 2, false));
        assert_eq!(g.expire(1000, &topics), vec![("g".into(), "b".into())]);
        let a = g.heartbeat(1000, &topics, hb("a", 2, false));
        assert_eq!((a.error, a.member_epoch), (None, 3));
        let left = g.heartbeat(1000, &topics, hb("a", -1, false));
        assert_eq!(left.member_epoch, -1);
        assert_eq!(g.group("g").unwrap().state(), "Empty");
        assert_eq!(g.delete("g"), Ok(()));
    }

    /// Joining needs a member id and a subscription.
    #[test]
    fn invalid_requests() {
        let (topics, _) = topics(1);
        let mut g = ShareGroups::new(CONFIG);
        let r = g.heartbeat(0, &topics, hb("", 0, true));
        assert_eq!(r.error, Some(ResponseError::InvalidRequest));
        let r = g.heartbeat(0, &topics, hb("a", 0, false));
        assert_eq!(r.error, Some(ResponseError::InvalidRequest));
        let r = g.heartbeat(0, &topics, hb("a", -2, true));
        assert_eq!(r.error, Some(ResponseError::InvalidRequest));
        assert!(g.group("g").is_none());
    }

    /// More partitions than members: each partition to one member, balanced; more members than
    /// partitions: each partition shared by ceil(members / partitions), no member twice.
    #[test]
    fn simple_assignment_balances() {
        let mut g = ShareGroups::new(CONFIG);
        let (four, _) = topics(4);
        g.heartbeat(0, &four, hb("a", 0, true));
        g.heartbeat(0, &four, hb("b", 0, true));
        let group = g.group("g").unwrap();
        let sizes: Vec<usize> = group
            .target
            .values()
            .map(|a| a.values().map(|s| s.len()).sum())
            .collect();
        assert_eq!(sizes, vec![2, 2]);
        let (two, _) = topics(2);
        for m in ["c", "d", "e"] {
            g.heartbeat(0, &two, hb(m, 0, true));
        }
        let group = g.group("g").unwrap();
        let mut per_partition = [0; 2];
        for a in group.target.values() {
            let total: usize = a.values().map(|s| s.len()).sum();
            assert!((1..=2).contains(&total));
            for ps in a.values() {
                for p in ps {
                    per_partition[*p as usize] += 1;
                }
            }
        }
        // 5 members, 2 partitions: each partition shared by 3.
        assert_eq!(per_partition, [3, 3]);
    }
}
