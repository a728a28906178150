//! KIP-848 consumer groups (the "consumer" group protocol: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe) as a pure state machine owned by the coordinator shard (shard 0).
//!
//! [`ConsumerGroups`] does no I/O and reads no clock: every call takes `now_ms` and the topic
//! metadata it needs, and every heartbeat is answered at once (nothing is parked, unlike the
//! classic protocol). It follows Kafka's `GroupMetadataManager.consumerGroupHeartbeat` and
//! `CurrentAssignmentBuilder`:
//!
//! 1. The member is created or updated. The *group epoch* is bumped when the membership, a
//!    member's subscription (topic names or regex) or the subscribed topics' metadata (topic
//!    ids, partition counts: new partitions, created or deleted topics) change.
//! 2. When the group epoch is ahead of the *assignment epoch*, the server-side assignor
//!    (`uniform` or `range`, see [`super::assignor`]) computes a new *target assignment*.
//! 3. The member's current assignment is reconciled towards its target, incrementally: its
//!    partitions that are not in its target are first *pending revocation* (the member keeps
//!    its epoch, state `UnrevokedPartitions`) until a heartbeat reports them no longer owned;
//!    only then does its epoch move to the assignment epoch. A partition of the target that
//!    another member still owns (assigned or pending revocation) is not given yet
//!    (`UnreleasedPartitions`); it is given on a later heartbeat once released.
//!
//! Invariants (asserted): a partition is owned (assigned or pending revocation) by at most one
//! member: `owners` is exactly the union of the members' assigned and pending partitions.
//!
//! Timers, run by [`ConsumerGroups::tick`]: a member that does not heartbeat within the
//! session timeout (`group.consumer.session.timeout.ms`, broker side as in Kafka) is removed,
//! and one that does not revoke its partitions within its rebalance timeout is removed too
//! (fenced); both bump the group epoch and free the member's partitions.
//!
//! Fencing, as Kafka 4: a heartbeat with an epoch ahead of the member's, or behind it unless
//! it is the previous epoch with owned partitions inside the assignment (a lost answer), gets
//! FENCED_MEMBER_EPOCH; an unknown member UNKNOWN_MEMBER_ID; a static member whose instance
//! id is still held by a member that did not leave with epoch -2 UNRELEASED_INSTANCE_ID, and a
//! request naming another member's instance id FENCED_INSTANCE_ID.
//!
//! Durability: [`ConsumerGroups::take_dirty`] names the groups whose epochs, membership or a
//! member's assignment changed; `shard::groups` writes their [`ConsumerGroupSnapshot`] to the
//! offsets log before the heartbeat is answered (timeouts: from the tick) and
//! [`ConsumerGroups::restore`] rebuilds them at start.
//!
//! Known differences from Kafka: a heartbeat with a non-zero epoch for a group the coordinator
//! does not know gets UNKNOWN_MEMBER_ID (so the member rejoins) where Kafka answers
//! GROUP_ID_NOT_FOUND; regexes (RE2 syntax via `regex-lite`, full match, internal
//! topics excluded) are resolved synchronously when the metadata changes instead of in the
//! background; classic members cannot join a consumer group (no online migration): a classic
//! group must be empty to become a consumer group and vice versa; rack-aware assignment is not
//! done.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::assignor::{self, Assignment, AssignorMember, ASSIGNORS};
use super::invariants::{debug_check, ensure, Violation};
use super::member::{ConsumerMemberDescription, MemberIdentity};
use super::metadata::TopicMeta;

/// Members per consumer group (Kafka's `group.consumer.max.size` is unbounded by default; a
/// bound keeps one group from growing without limit).
pub const GROUP_MEMBERS_MAX: usize = 1_000;
/// The longest subscription regex accepted.
pub const REGEX_BYTES_MAX: usize = 1_024;
/// Topic names per subscription.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// The member epoch of a (re)join.
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member's temporary leave.
pub const STATIC_LEAVE_EPOCH: i32 = -2;
/// ConsumerGroupHeartbeat v1+: the client generates its member id.
const CLIENT_MEMBER_ID_VERSION: i16 = 1;

/// Consumer-group settings (Kafka's broker configs of the same names).
#[derive(Clone, Debug)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: crate::config::GROUP_CONSUMER_SESSION_TIMEOUT_MS_DEFAULT,
            heartbeat_interval_ms: crate::config::GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS_DEFAULT,
        }
    }
}

/// The topics as the coordinator knows them, and the metadata version they came with (a
/// changed version makes groups recompute their subscribed topics).
#[derive(Clone, Copy, Debug)]
pub struct TopicsView<'a> {
    pub version: u64,
    pub topics: &'a BTreeMap<String, TopicMeta>,
}

/// A member's reconciliation state (Kafka's `MemberState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

/// A ConsumerGroupHeartbeat request, version-independent.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// `None`: unchanged; `Some("")`: no regex.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns; `None`: not reported.
    pub owned: Option<Vec<(Uuid, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
}

/// A ConsumerGroupHeartbeat answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error: Option<ResponseError>,
    pub error_message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment when Kafka sends it (a join, owned partitions reported, or the
    /// assignment changed).
    pub assignment: Option<Assignment>,
}

impl HeartbeatResponse {
    fn refused(error: ResponseError, message: String) -> Self {
        HeartbeatResponse {
            error: Some(error),
            error_message: Some(message),
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

type Refusal = (ResponseError, String);

/// A member of a consumer group.
#[derive(Clone, Debug)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub state: MemberState,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    session_deadline_ms: i64,
    /// While `UnrevokedPartitions`: the member is removed if it has not revoked by then.
    revocation_deadline_ms: Option<i64>,
}

impl ConsumerMember {
    /// The member's identity (what both group protocols share).
    pub fn identity(&self) -> MemberIdentity {
        MemberIdentity {
            member_id: self.member_id.clone(),
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
        }
    }

    /// What ConsumerGroupDescribe reports of the member, with its target assignment.
    pub fn describe(&self, target_assignment: Assignment) -> ConsumerMemberDescription {
        ConsumerMemberDescription {
            identity: self.identity(),
            rack_id: self.rack_id.clone(),
            member_epoch: self.member_epoch,
            subscribed_topic_names: self.subscribed_topic_names.clone(),
            subscribed_topic_regex: self.subscribed_topic_regex.clone(),
            assignment: self.assigned.clone(),
            target_assignment,
        }
    }

    fn new(member_id: String) -> ConsumerMember {
        ConsumerMember {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            state: MemberState::Stable,
            member_epoch: 0,
            previous_member_epoch: 0,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: 0,
            revocation_deadline_ms: None,
        }
    }
}

/// One consumer group.
#[derive(Clone, Debug)]
pub struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// instance id -> member id.
    static_members: BTreeMap<String, String>,
    /// Target assignment (of `assignment_epoch`) per member.
    pub target: BTreeMap<String, Assignment>,
    /// Who owns each partition (assigned or pending revocation).
    owners: HashMap<(Uuid, i32), String>,
    /// Existing subscribed topics: name -> (id, partitions).
    subscription: BTreeMap<String, (Uuid, i32)>,
    /// Resolved regexes: regex -> matching topic names.
    regexes: BTreeMap<String, BTreeSet<String>>,
    metadata_version: Option<u64>,
    /// The assignor that computed the target.
    pub assignor: String,
}

impl ConsumerGroup {
    fn new(group_id: &str) -> ConsumerGroup {
        ConsumerGroup {
            group_id: group_id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            target: BTreeMap::new(),
            owners: HashMap::new(),
            subscription: BTreeMap::new(),
            regexes: BTreeMap::new(),
            metadata_version: None,
            assignor: ASSIGNORS[0].to_string(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The invariants of one consumer group (the module essay's, as code): a member is stored
    /// under its own id; `owners` is exactly the union of the members' assigned and pending
    /// partitions, each partition owned once; a member is `UnrevokedPartitions` exactly when it
    /// has partitions pending revocation, and only then has a revocation deadline; the
    /// assignment epoch is not ahead of the group epoch, and no member's epoch is ahead of the
    /// assignment epoch (a static member that left temporarily has epoch -2); targets exist
    /// for members only; the static-member map points at members with that instance id.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let g = &self.group_id;
        ensure!(
            0 <= self.assignment_epoch && self.assignment_epoch <= self.group_epoch,
            "{g}: assignment epoch {} and group epoch {}",
            self.assignment_epoch,
            self.group_epoch
        );
        let mut owned = 0;
        for (id, m) in &self.members {
            ensure!(
                *id == m.member_id,
                "{g}: member {} stored under {id}",
                m.member_id
            );
            for (t, ps) in m.assigned.iter().chain(m.pending_revocation.iter()) {
                for p in ps {
                    owned += 1;
                    ensure!(
                        self.owners.get(&(*t, *p)) == Some(id),
                        "{g}: {t}/{p} held by {id} but owned by {:?}",
                        self.owners.get(&(*t, *p))
                    );
                }
            }
            let unrevoked = m.state == MemberState::UnrevokedPartitions;
            ensure!(
                unrevoked != m.pending_revocation.is_empty(),
                "{g}: member {id} is {:?} with {} topics pending revocation",
                m.state,
                m.pending_revocation.len()
            );
            ensure!(
                unrevoked == m.revocation_deadline_ms.is_some(),
                "{g}: member {id} is {:?} with revocation deadline {:?}",
                m.state,
                m.revocation_deadline_ms
            );
            ensure!(
                m.member_epoch <= self.assignment_epoch
                    && (m.member_epoch >= 0 || m.member_epoch == STATIC_LEAVE_EPOCH),
                "{g}: member {id} in epoch {} (assignment epoch {})",
                m.member_epoch,
                self.assignment_epoch
            );
            if let Some(instance) = &m.instance_id {
                ensure!(
                    self.static_members.get(instance) == Some(id),
                    "{g}: static member {id} ({instance}) is not in the static map"
                );
            }
        }
        // Each held partition matched its owner entry above, so equal counts mean no owner
        // entry without a holder and no partition held twice.
        ensure!(
            owned == self.owners.len(),
            "{g}: members hold {owned} partitions, owners has {}",
            self.owners.len()
        );
        for (instance, id) in &self.static_members {
            ensure!(
                self.members
                    .get(id)
                    .is_some_and(|m| m.instance_id.as_ref() == Some(instance)),
                "{g}: static {instance} -> {id}, not a member with that instance id"
            );
        }
        for id in self.target.keys() {
            ensure!(
                self.members.contains_key(id),
                "{g}: target for non-member {id}"
            );
        }
        Ok(())
    }

    /// Kafka's consumer group state: Empty, Assigning (a new target is due), Reconciling
    /// (members are moving to the target) or Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch != self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.member_epoch != self.assignment_epoch)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Topic names the members subscribe to (names and resolved regexes).
    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for m in self.members.values() {
            out.extend(member_topics(m, &self.regexes).cloned());
        }
        out
    }

    /// Sets a member's assignment, keeping `owners` in step.
    fn set_assignment(&mut self, member_id: &str, assigned: Assignment, pending: Assignment) {
        let member = self.members.get_mut(member_id).expect("member");
        for (t, ps) in member
            .assigned
            .iter()
            .chain(member.pending_revocation.iter())
        {
            for p in ps {
                let owner = self.owners.remove(&(*t, *p));
                assert_eq!(owner.as_deref(), Some(member_id), "owner of {t}/{p}");
            }
        }
        for (t, ps) in assigned.iter().chain(pending.iter()) {
            for p in ps {
                let previous = self.owners.insert((*t, *p), member_id.to_string());
                assert!(
                    previous.is_none(),
                    "{t}/{p} given to {member_id} while owned by {previous:?}"
                );
            }
        }
        member.assigned = assigned;
        member.pending_revocation = pending;
    }

    /// Removes a member and frees its partitions; bumps the group epoch.
    fn remove_member(&mut self, member_id: &str) {
        if !self.members.contains_key(member_id) {
            return;
        }
        self.set_assignment(member_id, Assignment::new(), Assignment::new());
        let member = self.members.remove(member_id).expect("member");
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.target.remove(member_id);
        self.group_epoch += 1;
    }

    /// Resolves regexes and subscribed topics against `topics`; true if they changed.
    fn refresh_subscription(&mut self, topics: TopicsView<'_>) -> bool {
        self.metadata_version = Some(topics.version);
        let mut regexes = BTreeMap::new();
        for m in self.members.values() {
            if let Some(regex) = &m.subscribed_topic_regex {
                if regexes.contains_key(regex) {
                    continue;
                }
                let matching = match compile_regex(regex) {
                    Ok(re) => topics
                        .topics
                        .iter()
                        .filter(|(name, meta)| !meta.internal && re.is_match(name))
                        .map(|(name, _)| name.clone())
                        .collect(),
                    Err(_) => BTreeSet::new(),
                };
                regexes.insert(regex.clone(), matching);
            }
        }
        self.regexes = regexes;
        let subscription: BTreeMap<String, (Uuid, i32)> = self
            .subscribed_topic_names()
            .into_iter()
            .filter_map(|name| {
                let meta = topics.topics.get(&name)?;
                Some((name, (meta.id, meta.partitions)))
            })
            .collect();
        let changed = subscription != self.subscription;
        self.subscription = subscription;
        changed
    }

    /// Computes the target assignment of the current group epoch.
    fn compute_target(&mut self) {
        let assignor = preferred_assignor(self.members.values());
        let members: Vec<AssignorMember<'_>> = self
            .members
            .values()
            .map(|m| AssignorMember {
                member_id: &m.member_id,
                topics: member_topics(m, &self.regexes)
                    .filter_map(|name| self.subscription.get(name).map(|(id, _)| *id))
                    .collect(),
            })
            .collect();
        let topics: BTreeMap<Uuid, i32> = self.subscription.values().copied().collect();
        let target = assignor::assign(assignor, &members, &topics, &self.target);
        self.target = target;
        self.assignment_epoch = self.group_epoch;
        self.assignor = assignor.to_string();
        tracing::info!(group = %self.group_id, epoch = self.group_epoch, assignor, "computed a new target assignment");
    }

    /// Kafka's `CurrentAssignmentBuilder`: moves `member_id` towards its target given the
    /// partitions it reports owning. Returns true if its assignment or epoch changed.
    fn reconcile(
        &mut self,
        member_id: &str,
        owned: Option<&[(Uuid, Vec<i32>)]>,
        now_ms: i64,
    ) -> bool {
        let member = &self.members[member_id];
        let reconciled =
            member.member_epoch == self.assignment_epoch && member.state == MemberState::Stable;
        if reconciled {
            return false;
        }
        let before = (
            member.member_epoch,
            member.state,
            member.assigned.clone(),
            member.pending_revocation.clone(),
        );
        let next_epoch = match member.state {
            MemberState::Stable | MemberState::UnreleasedPartitions => member.member_epoch,
            MemberState::UnrevokedPartitions => {
                if owns_any(owned, &member.pending_revocation) {
                    return false;
                }
                member.member_epoch + 1
            }
        };
        let current = member.assigned.clone();
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let (mut assigned, pending, to_assign, unreleased) =
            self.diff_assignment(member_id, &current, &target);
        let target_epoch = self.assignment_epoch;
        let (state, epoch) = if !pending.is_empty() {
            (MemberState::UnrevokedPartitions, next_epoch)
        } else {
            for (t, ps) in to_assign {
                assigned.entry(t).or_default().extend(ps);
            }
            let state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            (state, target_epoch)
        };
        self.set_assignment(member_id, assigned, pending);
        let member = self.members.get_mut(member_id).expect("member");
        if epoch != member.member_epoch {
            member.previous_member_epoch = member.member_epoch;
            member.member_epoch = epoch;
        }
        member.state = state;
        member.revocation_deadline_ms = (state == MemberState::UnrevokedPartitions).then(|| {
            member
                .revocation_deadline_ms
                .filter(|_| before.1 == MemberState::UnrevokedPartitions)
                .unwrap_or(now_ms + i64::from(member.rebalance_timeout_ms.max(0)))
        });
        let after = (
            member.member_epoch,
            member.state,
            member.assigned.clone(),
            member.pending_revocation.clone(),
        );
        if after != before {
            tracing::debug!(group = %self.group_id, member = member_id, epoch = member.member_epoch, state = ?member.state, "member reconciled");
        }
        after != before
    }

    /// The member's partitions split against its target: those it keeps, those it must revoke,
    /// and those it gets (only the ones no other member still owns: when some are, it has
    /// unreleased partitions).
    fn diff_assignment(
        &self,
        member_id: &str,
        current: &Assignment,
        target: &Assignment,
    ) -> (Assignment, Assignment, Assignment, bool) {
        let mut assigned = Assignment::new();
        let mut pending = Assignment::new();
        let mut to_assign = Assignment::new();
        let mut unreleased = false;
        let topic_ids: BTreeSet<Uuid> = target.keys().chain(current.keys()).copied().collect();
        let empty = BTreeSet::new();
        for t in topic_ids {
            let tgt = target.get(&t).unwrap_or(&empty);
            let cur = current.get(&t).unwrap_or(&empty);
            let keep: BTreeSet<i32> = cur.intersection(tgt).copied().collect();
            let revoke: BTreeSet<i32> = cur.difference(&keep).copied().collect();
            let mut add: BTreeSet<i32> = tgt.difference(&keep).copied().collect();
            let before_len = add.len();
            add.retain(|p| {
                self.owners
                    .get(&(t, *p))
                    .is_none_or(|owner| owner == member_id)
            });
            unreleased |= add.len() != before_len;
            if !keep.is_empty() {
                assigned.insert(t, keep);
            }
            if !revoke.is_empty() {
                pending.insert(t, revoke);
            }
            if !add.is_empty() {
                to_assign.insert(t, add);
            }
        }
        (assigned, pending, to_assign, unreleased)
    }
}

/// The topic names a member subscribes to (its names, then its regex's matches).
fn member_topics<'a>(
    m: &'a ConsumerMember,
    regexes: &'a BTreeMap<String, BTreeSet<String>>,
) -> impl Iterator<Item = &'a String> + 'a {
    let from_regex = m
        .subscribed_topic_regex
        .as_ref()
        .and_then(|r| regexes.get(r))
        .into_iter()
        .flatten();
    m.subscribed_topic_names.iter().chain(from_regex)
}

/// The assignor most members ask for, else the default (Kafka's `computePreferredServerAssignor`).
fn preferred_assignor<'a>(members: impl Iterator<Item = &'a ConsumerMember>) -> &'static str {
    let mut votes: BTreeMap<&'static str, usize> = BTreeMap::new();
    for m in members {
        if let Some(name) = &m.server_assignor {
            if let Some(known) = ASSIGNORS.iter().find(|a| **a == name.as_str()) {
                *votes.entry(known).or_default() += 1;
            }
        }
    }
    let mut best: Option<(&'static str, usize)> = None;
    for (name, count) in votes {
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((name, count));
        }
    }
    best.map(|(name, _)| name).unwrap_or(ASSIGNORS[0])
}

/// Compiles a subscription regex as Kafka matches it: the whole topic name.
fn compile_regex(regex: &str) -> Result<regex_lite::Regex, regex_lite::Error> {
    regex_lite::RegexBuilder::new(&format!("^(?:{regex})$"))
        .size_limit(1 << 20)
        .build()
}

/// Whether `owned` (as reported; `None`: unknown, so assume yes) contains any of `partitions`.
fn owns_any(owned: Option<&[(Uuid, Vec<i32>)]>, partitions: &Assignment) -> bool {
    let Some(owned) = owned else { return true };
    owned.iter().any(|(t, ps)| {
        partitions
            .get(t)
            .is_some_and(|set| ps.iter().any(|p| set.contains(p)))
    })
}

/// Whether every reported partition is in `assignment` (Kafka's `isSubset`).
fn is_subset(owned: Option<&[(Uuid, Vec<i32>)]>, assignment: &Assignment) -> bool {
    let Some(owned) = owned else { return false };
    owned.iter().all(|(t, ps)| {
        assignment
            .get(t)
            .is_some_and(|set| ps.iter().all(|p| set.contains(p)))
    })
}

/// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`, in its order.
fn validate(req: &HeartbeatRequest, version: i16) -> Result<(), Refusal> {
    let invalid = |m: &str| Err((ResponseError::InvalidRequest, m.to_string()));
    if (version >= CLIENT_MEMBER_ID_VERSION
        || req.member_epoch > 0
        || req.member_epoch == LEAVE_EPOCH)
        && req.member_id.trim().is_empty()
    {
        return invalid("MemberId can't be empty.");
    }
    if req.group_id.trim().is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if req
        .instance_id
        .as_ref()
        .is_some_and(|s| s.trim().is_empty())
    {
        return invalid("InstanceId can't be empty.");
    }
    if req.rack_id.as_ref().is_some_and(|s| s.trim().is_empty()) {
        return invalid("RackId can't be empty.");
    }
    if req.member_epoch == JOIN_EPOCH {
        if req.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if req.owned.as_ref().is_none_or(|o| !o.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
            return invalid(
                "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
            );
        }
    } else if req.member_epoch == STATIC_LEAVE_EPOCH {
        if req.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
    } else if req.member_epoch < STATIC_LEAVE_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if let Some(assignor) = &req.server_assignor {
        if !ASSIGNORS.contains(&assignor.as_str()) {
            return Err((
                ResponseError::UnsupportedAssignor,
                format!(
                    "ServerAssignor {assignor} is not supported. Supported assignors: {}.",
                    ASSIGNORS.join(", ")
                ),
            ));
        }
    }
    if let Some(regex) = &req.subscribed_topic_regex {
        if regex.len() > REGEX_BYTES_MAX || compile_regex(regex).is_err() {
            return Err((
                ResponseError::InvalidRegularExpression,
                format!("SubscribedTopicRegex `{regex}` is not a valid regular expression."),
            ));
        }
    }
    if req
        .subscribed_topic_names
        .as_ref()
        .is_some_and(|n| n.len() > SUBSCRIBED_TOPICS_MAX)
    {
        return invalid("Too many subscribed topics.");
    }
    Ok(())
}

/// Kafka's `throwIfConsumerGroupMemberEpochIsInvalid`.
fn check_epoch(
    member: &ConsumerMember,
    received: i32,
    owned: Option<&[(Uuid, Vec<i32>)]>,
) -> Result<(), Refusal> {
    if received > member.member_epoch
        || received < member.member_epoch
            && (received != member.previous_member_epoch || !is_subset(owned, &member.assigned))
    {
        let side = if received > member.member_epoch {
            "greater"
        } else {
            "smaller"
        };
        return Err((
            ResponseError::FencedMemberEpoch,
            format!(
                "The consumer group member has a {side} member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                member.member_epoch
            ),
        ));
    }
    Ok(())
}

/// What the offsets log keeps of a consumer group (Kafka writes the same facts as several
/// records: group epoch, member subscriptions, target and current assignments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroupSnapshot {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberSnapshot>,
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics' metadata the target was computed from (Kafka's
    /// `ConsumerGroupPartitionMetadata`), so a restart does not look like a metadata change.
    #[serde(default)]
    pub subscription: BTreeMap<String, (Uuid, i32)>,
    /// Resolved regexes: regex -> matching topic names.
    #[serde(default)]
    pub regexes: BTreeMap<String, BTreeSet<String>>,
}

/// A member in a [`ConsumerGroupSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub state: MemberState,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// What decides whether a group's durable snapshot changed after a heartbeat.
type PersistedKey = (
    i32,
    i32,
    usize,
    Option<(i32, MemberState, Assignment, Assignment)>,
);

fn persisted_key(group: Option<&ConsumerGroup>, member_id: &str) -> Option<PersistedKey> {
    let g = group?;
    Some((
        g.group_epoch,
        g.assignment_epoch,
        g.members.len(),
        g.members.get(member_id).map(|m| {
            (
                m.member_epoch,
                m.state,
                m.assigned.clone(),
                m.pending_revocation.clone(),
            )
        }),
    ))
}

/// All consumer groups of the broker. Lives on the coordinator shard.
#[derive(Debug, Default)]
pub struct ConsumerGroups {
    pub config: ConsumerGroupConfig,
    groups: BTreeMap<String, ConsumerGroup>,
    member_id_salt: u64,
    member_counter: u64,
    /// Groups whose durable snapshot changed since [`ConsumerGroups::take_dirty`].
    dirty: BTreeSet<String>,
}

impl ConsumerGroups {
    /// No groups; server-generated member ids (v0 clients) are uuids from `salt` and a counter.
    pub fn new(config: ConsumerGroupConfig, member_id_salt: u64) -> ConsumerGroups {
        ConsumerGroups {
            config,
            groups: BTreeMap::new(),
            member_id_salt,
            member_counter: 0,
            dirty: BTreeSet::new(),
        }
    }

    /// The groups whose durable snapshot changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Every group id (for a full snapshot at compaction).
    pub fn group_ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// The durable snapshot of a group; `None` if it is gone.
    pub fn snapshot(&self, group_id: &str) -> Option<ConsumerGroupSnapshot> {
        let g = self.groups.get(group_id)?;
        Some(ConsumerGroupSnapshot {
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.clone(),
            members: g
                .members
                .values()
                .map(|m| ConsumerMemberSnapshot {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_topic_names: m.subscribed_topic_names.clone(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    server_assignor: m.server_assignor.clone(),
                    state: m.state,
                    member_epoch: m.member_epoch,
                    previous_member_epoch: m.previous_member_epoch,
                    assigned: m.assigned.clone(),
                    pending_revocation: m.pending_revocation.clone(),
                })
                .collect(),
            target: g.target.clone(),
            subscription: g.subscription.clone(),
            regexes: g.regexes.clone(),
        })
    }

    /// Rebuilds a group from its snapshot at startup, as Kafka's coordinator load: every
    /// member gets a full session to heartbeat (and a full rebalance timeout to revoke).
    /// A snapshot in which two members own one partition is refused (the data is corrupt).
    pub fn restore(
        &mut self,
        group_id: &str,
        snapshot: ConsumerGroupSnapshot,
        now_ms: i64,
    ) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for m in &snapshot.members {
            for (t, ps) in m.assigned.iter().chain(m.pending_revocation.iter()) {
                for p in ps {
                    if !seen.insert((*t, *p)) {
                        return Err(format!("partition {t}/{p} owned twice"));
                    }
                }
            }
        }
        let mut group = ConsumerGroup::new(group_id);
        group.group_epoch = snapshot.group_epoch;
        group.assignment_epoch = snapshot.assignment_epoch;
        group.assignor = snapshot.assignor;
        group.target = snapshot.target;
        group.subscription = snapshot.subscription;
        group.regexes = snapshot.regexes;
        let session_ms = i64::from(self.config.session_timeout_ms);
        for m in snapshot.members {
            if let Some(instance) = &m.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let member = ConsumerMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id,
                rack_id: m.rack_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                subscribed_topic_names: m.subscribed_topic_names,
                subscribed_topic_regex: m.subscribed_topic_regex,
                server_assignor: m.server_assignor,
                state: m.state,
                member_epoch: m.member_epoch,
                previous_member_epoch: m.previous_member_epoch,
                assigned: Assignment::new(),
                pending_revocation: Assignment::new(),
                session_deadline_ms: now_ms + session_ms,
                revocation_deadline_ms: (m.state == MemberState::UnrevokedPartitions)
                    .then(|| now_ms + i64::from(m.rebalance_timeout_ms.max(0))),
            };
            group.members.insert(m.member_id.clone(), member);
            group.set_assignment(&m.member_id, m.assigned, m.pending_revocation);
        }
        self.groups.insert(group_id.to_string(), group);
        Ok(())
    }

    pub fn group(&self, group_id: &str) -> Option<&ConsumerGroup> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &ConsumerGroup> {
        self.groups.values()
    }

    /// Every group's invariants ([`ConsumerGroup::check_invariants`]) and that each is stored
    /// under its own id. For the simulator and the proptests; debug builds check the group a
    /// heartbeat touched after it, and every group after a tick.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        for (id, group) in &self.groups {
            ensure!(
                *id == group.group_id,
                "group {} stored under {id}",
                group.group_id
            );
            group.check_invariants()?;
        }
        Ok(())
    }

    /// ConsumerGroupHeartbeat (`version` is the request's API version).
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        version: i16,
        topics: TopicsView<'_>,
        req: HeartbeatRequest,
    ) -> HeartbeatResponse {
        let group_id = req.group_id.clone();
        let member_id = req.member_id.clone();
        let before = persisted_key(self.groups.get(&group_id), &member_id);
        let epochs_before = self.groups.get(&group_id).map(epochs);
        let response = match self.heartbeat_inner(now_ms, version, topics, req) {
            Ok(r) => r,
            Err((error, message)) => HeartbeatResponse::refused(error, message),
        };
        // v0 members learn their id from the answer.
        let member_id = response.member_id.as_deref().unwrap_or(&member_id);
        if persisted_key(self.groups.get(&group_id), member_id) != before {
            self.dirty.insert(group_id.clone());
        }
        debug_check(|| check_transition(self.groups.get(&group_id), epochs_before));
        response
    }

    fn heartbeat_inner(
        &mut self,
        now_ms: i64,
        version: i16,
        topics: TopicsView<'_>,
        mut req: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, Refusal> {
        validate(&req, version)?;
        if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(&req);
        }
        let joining = req.member_epoch == JOIN_EPOCH;
        let member_id = if req.member_id.is_empty() {
            self.member_counter += 1;
            Uuid::from_u64_pair(self.member_id_salt, self.member_counter).to_string()
        } else {
            req.member_id.clone()
        };
        if !self.groups.contains_key(&req.group_id) {
            if !joining {
                return Err((
                    ResponseError::UnknownMemberId,
                    format!("Consumer group {} not found.", req.group_id),
                ));
            }
            self.groups
                .insert(req.group_id.clone(), ConsumerGroup::new(&req.group_id));
        }
        let session_timeout_ms = i64::from(self.config.session_timeout_ms);
        let heartbeat_interval_ms = self.config.heartbeat_interval_ms;
        let group = self.groups.get_mut(&req.group_id).expect("group");
        // 0. Find, create or replace the member.
        let (mut bump, static_replaced) = admit_member(group, &req, &member_id, joining)?;
        // 1. Update the member; bump the group epoch if its subscription changed.
        let member = group.members.get_mut(&member_id).expect("member");
        let assigned_before = member.assigned.clone();
        bump |= update_member(member, &mut req);
        member.session_deadline_ms = now_ms + session_timeout_ms;
        if (bump || group.metadata_version != Some(topics.version))
            && group.refresh_subscription(topics)
        {
            bump = true;
        }
        if bump {
            group.group_epoch += 1;
        }
        // 2. A new target assignment when the group epoch moved.
        if group.group_epoch > group.assignment_epoch || static_replaced {
            group.compute_target();
        }
        // 3. Reconcile the member towards its target.
        let owned = req.owned.as_deref();
        group.reconcile(&member_id, owned, now_ms);
        let member = &group.members[&member_id];
        let send_assignment = owned.is_some() || joining || member.assigned != assigned_before;
        Ok(HeartbeatResponse {
            error: None,
            error_message: None,
            member_id: Some(member_id.clone()),
            member_epoch: member.member_epoch,
            heartbeat_interval_ms,
            assignment: send_assignment.then(|| member.assigned.clone()),
        })
    }

    /// A heartbeat with epoch -1 (leave) or -2 (static member's temporary leave).
    fn leave(&mut self, req: &HeartbeatRequest) -> Result<HeartbeatResponse, Refusal> {
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return Err((
                ResponseError::GroupIdNotFound,
                format!("Consumer group {} not found.", req.group_id),
            ));
        };
        let member_id = match &req.instance_id {
            None => {
                if !group.members.contains_key(&req.member_id) {
                    return Err((
                        ResponseError::UnknownMemberId,
                        format!(
                            "Member {} is not a member of group {}.",
                            req.member_id, group.group_id
                        ),
                    ));
                }
                req.member_id.clone()
            }
            Some(instance) => {
                let Some(id) = group.static_members.get(instance).cloned() else {
                    return Err((
                        ResponseError::UnknownMemberId,
                        format!("Instance id {instance} is unknown."),
                    ));
                };
                if id != req.member_id {
                    return Err((
                        ResponseError::FencedInstanceId,
                        format!(
                            "Static member {} with instance id {instance} was fenced by member {id}.",
                            req.member_id
                        ),
                    ));
                }
                id
            }
        };
        if req.member_epoch == STATIC_LEAVE_EPOCH {
            // The static member keeps its partitions for its next incarnation, until its
            // session expires.
            let member = group.members.get_mut(&member_id).expect("member");
            member.previous_member_epoch = member.member_epoch;
            member.member_epoch = STATIC_LEAVE_EPOCH;
            tracing::info!(group = %group.group_id, member = %member_id, "static member leaves temporarily");
        } else {
            tracing::info!(group = %group.group_id, member = %member_id, "member leaves the consumer group");
            group.remove_member(&member_id);
        }
        Ok(HeartbeatResponse {
            error: None,
            error_message: None,
            member_id: Some(member_id),
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Removes members whose session expired or who did not revoke in time.
    pub fn tick(&mut self, now_ms: i64) {
        for group in self.groups.values_mut() {
            let epochs_before = epochs(group);
            let expired: Vec<(String, &'static str)> = group
                .members
                .values()
                .filter_map(|m| {
                    if m.session_deadline_ms <= now_ms {
                        Some((m.member_id.clone(), "session expired"))
                    } else if m.revocation_deadline_ms.is_some_and(|d| d <= now_ms) {
                        Some((m.member_id.clone(), "did not revoke its partitions in time"))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, why) in expired {
                tracing::info!(group = %group.group_id, member = %id, why, "consumer group member removed");
                group.remove_member(&id);
                self.dirty.insert(group.group_id.clone());
            }
            debug_check(|| check_transition(Some(group), Some(epochs_before)));
        }
    }

    /// The earliest time after `now_ms` at which [`ConsumerGroups::tick`] has something to do
    /// (a session or a revocation deadline), so the coordinator can sleep until exactly then.
    pub fn next_deadline_ms(&self, now_ms: i64) -> Option<i64> {
        self.groups
            .values()
            .flat_map(|g| g.members.values())
            .flat_map(|m| std::iter::once(m.session_deadline_ms).chain(m.revocation_deadline_ms))
            .filter(|t| *t > now_ms)
            .min()
    }

    /// Forgets empty groups for which `keep` says no (groups with committed offsets stay).
    pub fn remove_empty_groups(&mut self, keep: impl Fn(&str) -> bool) {
        let dirty = &mut self.dirty;
        self.groups.retain(|id, g| {
            let stays = !g.members.is_empty() || keep(id);
            if !stays {
                dirty.insert(id.clone());
            }
            stays
        });
    }

    /// Forgets every group `unloaded` names, without marking it for a write (its coordinator
    /// moved to another broker, which has its durable state).
    pub fn unload(&mut self, unloaded: impl Fn(&str) -> bool) {
        self.groups.retain(|id, _| !unloaded(id));
        self.dirty.retain(|id| !unloaded(id));
    }

    /// Whether `group_id` is a consumer group with members.
    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups.get(group_id).is_some_and(|g| !g.is_empty())
    }

    /// Removes an empty group (DeleteGroups, or a classic group taking over the id).
    pub fn remove_if_empty(&mut self, group_id: &str) -> Result<(), ResponseError> {
        match self.groups.get(group_id) {
            Some(g) if !g.is_empty() => Err(ResponseError::NonEmptyGroup),
            _ => {
                if self.groups.remove(group_id).is_some() {
                    self.dirty.insert(group_id.to_string());
                }
                Ok(())
            }
        }
    }

    /// Kafka's `ConsumerGroup.validateOffsetCommit`; `None` if `group_id` is not a consumer group.
    pub fn validate_offset_commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        api_version: i16,
    ) -> Option<Result<(), ResponseError>> {
        let group = self.groups.get(group_id)?;
        // An admin client or a consumer without group management may commit to an empty group.
        if member_epoch < 0 && group.is_empty() {
            return Some(Ok(()));
        }
        let Some(member) = group.members.get(member_id) else {
            return Some(Err(ResponseError::UnknownMemberId));
        };
        if api_version < 9 {
            return Some(Err(ResponseError::UnsupportedVersion));
        }
        if member_epoch != member.member_epoch {
            return Some(Err(ResponseError::StaleMemberEpoch));
        }
        Some(Ok(()))
    }

    /// Kafka's `ConsumerGroup.validateOffsetFetch` (OffsetFetch v9+ names the member).
    pub fn validate_offset_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), ResponseError> {
        let Some(group) = self.groups.get(group_id) else {
            return Ok(());
        };
        let Some(member_id) = member_id else {
            return Ok(());
        };
        if member_epoch < 0 && member_id.is_empty() {
            return Ok(());
        }
        let Some(member) = group.members.get(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if member_epoch != member.member_epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }
}

/// A group's (group epoch, assignment epoch): neither ever goes back.
fn epochs(group: &ConsumerGroup) -> (i32, i32) {
    (group.group_epoch, group.assignment_epoch)
}

/// A group's invariants after a transition, and that its epochs did not go back
/// (`before`: `None` if the group did not exist).
fn check_transition(
    group: Option<&ConsumerGroup>,
    before: Option<(i32, i32)>,
) -> Result<(), Violation> {
    let Some(group) = group else {
        return Ok(());
    };
    let (group_epoch, assignment_epoch) = before.unwrap_or((0, 0));
    ensure!(
        group.group_epoch >= group_epoch && group.assignment_epoch >= assignment_epoch,
        "{}: epochs went back from {:?} to {:?}",
        group.group_id,
        before,
        epochs(group)
    );
    group.check_invariants()
}

/// Step 0 of a heartbeat: refuses a member past the group's cap, finds the member, adds it when it joins, or lets a static member's new
/// incarnation take over the old one. Returns (the group epoch must move, a static member was
/// replaced).
fn admit_member(
    group: &mut ConsumerGroup,
    req: &HeartbeatRequest,
    member_id: &str,
    joining: bool,
) -> Result<(bool, bool), Refusal> {
    if group.members.len() >= GROUP_MEMBERS_MAX && !group.members.contains_key(member_id) {
        return Err((
            ResponseError::GroupMaxSizeReached,
            format!(
                "The consumer group has reached its maximum capacity of {GROUP_MEMBERS_MAX} members."
            ),
        ));
    }
    match &req.instance_id {
        None => admit_dynamic(group, req, member_id, joining).map(|bump| (bump, false)),
        Some(instance) => admit_static(group, req, instance, member_id, joining),
    }
}

/// [`admit_member`] without an instance id. Returns whether the group epoch must move.
fn admit_dynamic(
    group: &mut ConsumerGroup,
    req: &HeartbeatRequest,
    member_id: &str,
    joining: bool,
) -> Result<bool, Refusal> {
    let owned = req.owned.as_deref();
    let mut bump = false;
    let exists = group.members.contains_key(member_id);
    match (exists, joining) {
        (false, true) => {
            tracing::info!(group = %group.group_id, member = %member_id, "member joins the consumer group");
            group.members.insert(
                member_id.to_string(),
                ConsumerMember::new(member_id.to_string()),
            );
            bump = true;
        }
        (false, false) => {
            return Err((
                ResponseError::UnknownMemberId,
                format!(
                    "Member {member_id} is not a member of group {}.",
                    group.group_id
                ),
            ))
        }
        (true, true) => rejoin(group, member_id),
        (true, false) => check_epoch(&group.members[member_id], req.member_epoch, owned)?,
    }
    Ok(bump)
}

/// [`admit_member`] with instance id `instance`. Returns (the group epoch must move, a static
/// member was replaced).
fn admit_static(
    group: &mut ConsumerGroup,
    req: &HeartbeatRequest,
    instance: &str,
    member_id: &str,
    joining: bool,
) -> Result<(bool, bool), Refusal> {
    let owned = req.owned.as_deref();
    let mut bump = false;
    let mut static_replaced = false;
    let existing = group.static_members.get(instance).cloned();
    match existing {
        None if joining => {
            if group.members.contains_key(member_id) {
                rejoin(group, member_id);
            } else {
                group.members.insert(
                    member_id.to_string(),
                    ConsumerMember::new(member_id.to_string()),
                );
                bump = true;
            }
            group
                .static_members
                .insert(instance.to_string(), member_id.to_string());
        }
        None => {
            return Err((
                ResponseError::UnknownMemberId,
                format!("Instance id {instance} is unknown."),
            ))
        }
        Some(old_id) if joining => {
            take_over_static(group, instance, &old_id, member_id)?;
            static_replaced = true;
        }
        Some(old_id) => {
            if old_id != member_id {
                return Err((
                    ResponseError::FencedInstanceId,
                    format!(
                        "Static member {member_id} with instance id {instance} was fenced by member {old_id}."
                    ),
                ));
            }
            check_epoch(&group.members[member_id], req.member_epoch, owned)?;
        }
    }
    Ok((bump, static_replaced))
}

/// A static member's new incarnation (`member_id`) takes over the old one (`old_id`), which must
/// have left with epoch -2: its partitions, target and subscription, with no new group epoch.
fn take_over_static(
    group: &mut ConsumerGroup,
    instance: &str,
    old_id: &str,
    member_id: &str,
) -> Result<(), Refusal> {
    let old = &group.members[old_id];
    if old.member_epoch != STATIC_LEAVE_EPOCH {
        return Err((
        ResponseError::UnreleasedInstanceId,
        format!(
            "Static member {member_id} with instance id {instance} cannot join the group because the instance id is owned by {old_id} member."
        ),
    ));
    }
    // The new incarnation takes over the old one's partitions and target.
    let assigned = old.assigned.clone();
    let old_member = old.clone();
    let target = group.target.get(old_id).cloned();
    let epoch = group.group_epoch;
    group.remove_member(old_id);
    group.group_epoch = epoch;
    // It inherits the old one's subscription too: no new group epoch.
    let mut member = old_member;
    member.member_id = member_id.to_string();
    member.member_epoch = 0;
    member.previous_member_epoch = 0;
    member.state = MemberState::Stable;
    member.revocation_deadline_ms = None;
    member.assigned = Assignment::new();
    member.pending_revocation = Assignment::new();
    group.members.insert(member_id.to_string(), member);
    group.set_assignment(member_id, assigned, Assignment::new());
    if let Some(target) = target {
        group.target.insert(member_id.to_string(), target);
    }
    group
        .static_members
        .insert(instance.to_string(), member_id.to_string());
    tracing::info!(group = %group.group_id, member = %member_id, instance = %instance, "static member rejoins the consumer group");
    Ok(())
}

/// Step 1 of a heartbeat: the member takes the request's fields. Returns whether its
/// subscription changed.
fn update_member(member: &mut ConsumerMember, req: &mut HeartbeatRequest) -> bool {
    let mut bump = false;
    if let Some(instance) = &req.instance_id {
        member.instance_id = Some(instance.clone());
    }
    if req.rack_id.is_some() {
        member.rack_id = req.rack_id.clone();
    }
    if req.rebalance_timeout_ms != -1 {
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    }
    if req.server_assignor.is_some() {
        member.server_assignor = req.server_assignor.clone();
    }
    if let Some(names) = req.subscribed_topic_names.take() {
        let mut names = names;
        names.sort_unstable();
        names.dedup();
        if names != member.subscribed_topic_names {
            member.subscribed_topic_names = names;
            bump = true;
        }
    }
    if let Some(regex) = req.subscribed_topic_regex.take() {
        let regex = Some(regex).filter(|r| !r.is_empty());
        if regex != member.subscribed_topic_regex {
            member.subscribed_topic_regex = regex;
            bump = true;
        }
    }
    member.client_id = std::mem::take(&mut req.client_id);
    member.client_host = std::mem::take(&mut req.client_host);
    bump
}

/// A member rejoins with epoch 0 under its known id: it has dropped its partitions (it was
/// fenced, or lost its join answer), so they are freed and it reconciles from scratch.
fn rejoin(group: &mut ConsumerGroup, member_id: &str) {
    group.set_assignment(member_id, Assignment::new(), Assignment::new());
    let member = group.members.get_mut(member_id).expect("member");
    member.member_epoch = 0;
    member.previous_member_epoch = 0;
    member.state = MemberState::Stable;
    member.revocation_deadline_ms = None;
    tracing::info!(group = %group.group_id, member = member_id, "member rejoins the consumer group");
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Uuid = Uuid::from_bytes([1; 16]);
    const T2: Uuid = Uuid::from_bytes([2; 16]);

    fn topics(list: &[(&str, Uuid, i32)]) -> BTreeMap<String, TopicMeta> {
        list.iter()
            .map(|(name, id, partitions)| {
                (
                    name.to_string(),
                    TopicMeta {
                        id: *id,
                        partitions: *partitions,
                        configs: BTreeMap::new(),
                        internal: false,
                        assignment: Vec::new(),
                    },
                )
            })
            .collect()
    }

    fn join(member: &str) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(vec!["a".into()]),
            owned: Some(Vec::new()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            ..Default::default()
        }
    }

    fn beat(member: &str, epoch: i32, owned: &Assignment) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(
                owned
                    .iter()
                    .map(|(t, ps)| (*t, ps.iter().copied().collect()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// A test client: keeps what the coordinator gave it, acknowledges revocations at once.
    struct Client {
        id: String,
        epoch: i32,
        owned: Assignment,
    }

    impl Client {
        fn step(&mut self, g: &mut ConsumerGroups, now: i64, view: TopicsView<'_>) {
            let req = if self.epoch == 0 {
                join(&self.id)
            } else {
                beat(&self.id, self.epoch, &self.owned)
            };
            let r = g.heartbeat(now, 1, view, req);
            assert_eq!(r.error, None, "{:?}", r.error_message);
            self.epoch = r.member_epoch;
            if let Some(a) = r.assignment {
                self.owned = a;
            }
        }
    }

    fn all_owned(clients: &[Client]) -> Vec<(Uuid, i32)> {
        let mut out: Vec<(Uuid, i32)> = clients
            .iter()
            .flat_map(|c| {
                c.owned
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn assert_disjoint(clients: &[Client]) {
        let all = all_owned(clients);
        let mut dedup = all.clone();
        dedup.dedup();
        assert_eq!(all, dedup, "a partition is owned by two clients at once");
    }

    #[test]
    fn first_member_gets_everything_at_join() {
        let t = topics(&[("a", T1, 3)]);
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
        let r = g.heartbeat(0, 1, view, join("m1"));
        assert_eq!(r.error, None);
        assert_eq!(r.member_epoch, 1);
        assert_eq!(r.member_id.as_deref(), Some("m1"));
        assert_eq!(r.assignment.unwrap()[&T1], [0, 1, 2].into());
        let group = g.group("g").unwrap();
        assert_eq!((group.group_epoch, group.assignment_epoch), (1, 1));
        assert_eq!(group.state_name(), "Stable");
        // v0: the coordinator generates the member id.
        let mut req = join("");
        req.group_id = "g2".into();
        let r = g.heartbeat(0, 0, view, req);
        assert_eq!(r.error, None);
        assert!(Uuid::parse_str(r.member_id.as_deref().unwrap()).is_ok());
    }

    /// The heart of KIP-848: a partition moves to a new member only after its previous owner
    /// acknowledged losing it, and the two never own it at the same time.
    #[test]
    fn partitions_are_revoked_before_they_move() {
        let t = topics(&[("a", T1, 4)]);
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
        let mut c1 = Client {
            id: "m1".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        c1.step(&mut g, 0, view);
        assert_eq!(c1.owned[&T1].len(), 4);
        // m2 joins: epoch 2, target splits 2/2, but m1 still owns everything.
        let r = g.heartbeat(1, 1, view, join("m2"));
        assert_eq!(r.member_epoch, 2);
        assert_eq!(r.assignment, Some(Assignment::new()), "nothing is free yet");
        assert_eq!(g.group("g").unwrap().state_name(), "Reconciling");
        assert_eq!(
            g.group("g").unwrap().members["m2"].state,
            MemberState::UnreleasedPartitions
        );
        // m1's heartbeat asks it to revoke two partitions; its epoch stays 1.
        let r = g.heartbeat(2, 1, view, beat("m1", 1, &c1.owned));
        assert_eq!(r.member_epoch, 1);
        let kept = r.assignment.unwrap();
        assert_eq!(kept[&T1].len(), 2);
        assert_eq!(
            g.group("g").unwrap().members["m1"].state,
            MemberState::UnrevokedPartitions
        );
        // A heartbeat of m1 that still reports them changes nothing.
        let r = g.heartbeat(3, 1, view, beat("m1", 1, &c1.owned));
        assert_eq!(r.member_epoch, 1);
        // m2 still gets nothing while m1 has not acknowledged.
        let r = g.heartbeat(3, 1, view, beat("m2", 2, &Assignment::new()));
        assert_eq!(r.assignment, Some(Assignment::new()));
        // m1 acknowledges: epoch 2.
        c1.owned = kept.clone();
        let r = g.heartbeat(4, 1, view, beat("m1", 1, &c1.owned));
        assert_eq!(r.member_epoch, 2);
        // Now m2 gets the released partitions.
        let r = g.heartbeat(5, 1, view, beat("m2", 2, &Assignment::new()));
        let got = r.assignment.unwrap();
        assert_eq!(got[&T1].len(), 2);
        assert!(got[&T1].is_disjoint(&kept[&T1]));
        assert_eq!(g.group("g").unwrap().state_name(), "Stable");
    }

    /// Three members joining and one leaving, driven in many interleavings: ownership is
    /// always disjoint, and once everyone heartbeats a few times it is complete and balanced.
    #[test]
    fn interleavings_keep_ownership_disjoint_and_converge() {
        let t = topics(&[("a", T1, 7), ("b", T2, 2)]);
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        for seed in 0..50u64 {
            let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
            let mut clients: Vec<Client> = (0..3)
                .map(|i| Client {
                    id: format!("m{i}"),
                    epoch: 0,
                    owned: Assignment::new(),
                })
                .collect();
            let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut joined = 1;
            for now in 0..60 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if now % 10 == 5 && joined < 3 {
                    joined += 1;
                }
                let i = (x >> 33) as usize % joined;
                if clients[i].epoch == 0 {
                    let mut r = join(&clients[i].id);
                    r.subscribed_topic_names = Some(vec!["a".into(), "b".into()]);
                    let resp = g.heartbeat(now, 1, view, r);
                    clients[i].epoch = resp.member_epoch;
                    clients[i].owned = resp.assignment.unwrap();
                } else {
                    clients[i].step(&mut g, now, view);
                }
                assert_disjoint(&clients[..joined]);
            }
            // m0 leaves; the others converge to own everything.
            let r = g.heartbeat(100, 1, view, {
                let mut r = beat("m0", clients[0].epoch, &clients[0].owned);
                r.member_epoch = LEAVE_EPOCH;
                r
            });
            assert_eq!(r.member_epoch, LEAVE_EPOCH);
            clients.remove(0);
            for now in 101..110 {
                for c in clients.iter_mut() {
                    c.step(&mut g, now, view);
                }
                assert_disjoint(&clients);
            }
            assert_eq!(all_owned(&clients).len(), 9, "seed {seed}");
            let counts: Vec<usize> = clients
                .iter()
                .map(|c| c.owned.values().map(BTreeSet::len).sum())
                .collect();
            assert!(counts.iter().all(|c| *c == 4 || *c == 5), "{counts:?}");
            assert_eq!(g.group("g").unwrap().state_name(), "Stable");
        }
    }

    #[test]
    fn fencing_errors() {
        let t = topics(&[("a", T1, 2)]);
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
        let r = g.heartbeat(0, 1, view, join("m1"));
        let owned = r.assignment.unwrap();
        // Epoch ahead of the member's.
        let r = g.heartbeat(1, 1, view, beat("m1", 5, &owned));
        assert_eq!(r.error, Some(ResponseError::FencedMemberEpoch));
        // Epoch 0 is a join, which must not report owned partitions.
        let r = g.heartbeat(1, 1, view, beat("m1", 0, &owned));
        assert_eq!(r.error, Some(ResponseError::InvalidRequest));
        let r = g.heartbeat(1, 1, view, beat("nobody", 1, &owned));
        assert_eq!(r.error, Some(ResponseError::UnknownMemberId));
        let mut r = beat("m1", 1, &owned);
        r.group_id = "other".into();
        assert_eq!(
            g.heartbeat(1, 1, view, r).error,
            Some(ResponseError::UnknownMemberId)
        );
        // Invalid requests.
        let mut r = join("m2");
        r.rebalance_timeout_ms = -1;
        assert_eq!(
            g.heartbeat(1, 1, view, r).error,
            Some(ResponseError::InvalidRequest)
        );
        let r = join("");
        assert_eq!(
            g.heartbeat(1, 1, view, r).error,
            Some(ResponseError::InvalidRequest),
            "v1 needs a member id"
        );
        let mut r = join("m2");
        r.server_assignor = Some("sticky".into());
        assert_eq!(
            g.heartbeat(1, 1, view, r).error,
            Some(ResponseError::UnsupportedAssignor)
        );
        let mut r = join("m2");
        r.subscribed_topic_regex = Some("(".into());
        assert_eq!(
            g.heartbeat(1, 1, view, r).error,
            Some(ResponseError::InvalidRegularExpression)
        );
        // A member that lost the answer bumping its epoch is accepted with the previous one.
        let r = g.heartbeat(2, 1, view, join("m2"));
        assert_eq!(r.member_epoch, 2);
        let r = g.heartbeat(3, 1, view, beat("m1", 1, &owned));
        let kept = r.assignment.unwrap();
        let r = g.heartbeat(4, 1, view, beat("m1", 1, &kept));
        assert_eq!(r.member_epoch, 2);
        let r = g.heartbeat(5, 1, view, beat("m1", 1, &kept));
        assert_eq!(r.error, None, "previous epoch, owned within assignment");
        assert_eq!(r.member_epoch, 2);
        let r = g.heartbeat(5, 1, view, beat("m1", 1, &owned));
        assert_eq!(r.error, Some(ResponseError::FencedMemberEpoch));
        // Rejoining with epoch 0 after being fenced starts over.
        let r = g.heartbeat(6, 1, view, join("m1"));
        assert_eq!(r.error, None);
    }

    #[test]
    fn static_members() {
        let t = topics(&[("a", T1, 2)]);
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
        let mut r = join("m1");
        r.instance_id = Some("i1".into());
        let owned = g.heartbeat(0, 1, view, r.clone()).assignment.unwrap();
        // Another member with the same instance id while m1 holds it.
        let mut r2 = join("m1b");
        r2.instance_id = Some("i1".into());
        assert_eq!(
            g.heartbeat(1, 1, view, r2.clone()).error,
            Some(ResponseError::UnreleasedInstanceId)
        );
        // m1b naming i1 with a non-zero epoch is fenced.
        let mut b = beat("m1b", 1, &owned);
        b.instance_id = Some("i1".into());
        assert_eq!(
            g.heartbeat(1, 1, view, b).error,
            Some(ResponseError::FencedInstanceId)
        );
        // m1 leaves temporarily; m1b takes over its partitions at once.
        let mut leave = beat("m1", 1, &owned);
        leave.instance_id = Some("i1".into());
        leave.member_epoch = STATIC_LEAVE_EPOCH;
        assert_eq!(
            g.heartbeat(2, 1, view, leave).member_epoch,
            STATIC_LEAVE_EPOCH
        );
        let epoch = g.group("g").unwrap().group_epoch;
        let r = g.heartbeat(3, 1, view, r2);
        assert_eq!(r.error, None);
        assert_eq!(r.assignment.unwrap(), owned);
        assert_eq!(g.group("g").unwrap().group_epoch, epoch, "no rebalance");
        assert!(!g.group("g").unwrap().members.contains_key("m1"));
    }

    #[test]
    fn session_and_revocation_timeouts_remove_members() {
        let t = topics(&[("a", T1, 2)]);
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        let config = ConsumerGroupConfig {
            session_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
        };
        let mut g = ConsumerGroups::new(config, 7);
        let owned = g.heartbeat(0, 1, view, join("m1")).assignment.unwrap();
        g.heartbeat(0, 1, view, join("m2"));
        // m1 is asked to revoke but never answers again: after its rebalance timeout (30 s)
        // ... its session (1 s) ends first.
        g.heartbeat(500, 1, view, beat("m1", 1, &owned));
        g.heartbeat(900, 1, view, beat("m2", 2, &Assignment::new()));
        g.tick(1_400);
        g.heartbeat(1_400, 1, view, beat("m2", 2, &Assignment::new()));
        g.tick(1_600);
        assert!(!g.group("g").unwrap().members.contains_key("m1"));
        let r = g.heartbeat(1_700, 1, view, beat("m2", 2, &Assignment::new()));
        assert_eq!(r.assignment.unwrap()[&T1].len(), 2, "m1's partitions freed");
        // Revocation timeout: m3 joins; m2 is asked to revoke and keeps heartbeating without
        // revoking: it is removed after its rebalance timeout.
        let mut config_join = join("m3");
        config_join.rebalance_timeout_ms = 2_000;
        let mut j2 = join("m2");
        j2.rebalance_timeout_ms = 2_000;
        let mut g = ConsumerGroups::new(
            ConsumerGroupConfig {
                session_timeout_ms: 60_000,
                heartbeat_interval_ms: 100,
            },
            7,
        );
        let owned = g.heartbeat(0, 1, view, j2).assignment.unwrap();
        g.heartbeat(0, 1, view, config_join);
        g.heartbeat(10, 1, view, beat("m2", 1, &owned));
        for now in (100..2_000).step_by(100) {
            g.heartbeat(now, 1, view, beat("m2", 1, &owned));
            g.tick(now);
        }
        assert!(g.group("g").unwrap().members.contains_key("m2"));
        g.tick(2_011);
        assert!(!g.group("g").unwrap().members.contains_key("m2"));
        let r = g.heartbeat(2_100, 1, view, beat("m2", 1, &owned));
        assert_eq!(r.error, Some(ResponseError::UnknownMemberId));
    }

    #[test]
    fn new_partitions_and_regex_subscriptions_trigger_reassignment() {
        let t = topics(&[("a", T1, 1), ("other", T2, 1)]);
        let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
        let mut r = join("m1");
        r.subscribed_topic_names = None;
        r.subscribed_topic_regex = Some("a.*".into());
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        let owned = g.heartbeat(0, 1, view, r).assignment.unwrap();
        assert_eq!(
            owned,
            [(T1, [0].into())].into(),
            "regex matches all of a name"
        );
        // The topic grows to 3 partitions: the next heartbeat sees it.
        let t2 = topics(&[
            ("a", T1, 3),
            ("other", T2, 1),
            ("ab", Uuid::from_bytes([3; 16]), 1),
        ]);
        let view2 = TopicsView {
            version: 2,
            topics: &t2,
        };
        let r = g.heartbeat(1, 1, view2, beat("m1", 1, &owned));
        assert_eq!(r.member_epoch, 2);
        let a = r.assignment.unwrap();
        assert_eq!(a[&T1], [0, 1, 2].into());
        assert_eq!(a[&Uuid::from_bytes([3; 16])], [0].into());
        assert!(!a.contains_key(&T2));
    }

    /// A group rebuilt from its snapshot carries on: same epochs, and the first heartbeat after
    /// the restart (with unchanged metadata) bumps nothing.
    #[test]
    fn snapshot_restore_carries_on() {
        let t = topics(&[("a", T1, 4)]);
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
        let o1 = g.heartbeat(0, 1, view, join("m1")).assignment.unwrap();
        g.heartbeat(1, 1, view, join("m2"));
        let o1 = g
            .heartbeat(2, 1, view, beat("m1", 1, &o1))
            .assignment
            .unwrap();
        g.heartbeat(3, 1, view, beat("m1", 1, &o1));
        let o2 = g
            .heartbeat(4, 1, view, beat("m2", 2, &Assignment::new()))
            .assignment
            .unwrap();
        assert_eq!(g.group("g").unwrap().state_name(), "Stable");
        let snapshot = g.snapshot("g").unwrap();
        let json = serde_json::to_vec(&snapshot).unwrap();
        let mut again = ConsumerGroups::new(ConsumerGroupConfig::default(), 8);
        again
            .restore("g", serde_json::from_slice(&json).unwrap(), 100)
            .unwrap();
        // A new broker process: the metadata version starts over.
        let view = TopicsView {
            version: 5,
            topics: &t,
        };
        let r = again.heartbeat(101, 1, view, beat("m2", 2, &o2));
        assert_eq!((r.error, r.member_epoch), (None, 2));
        let r = again.heartbeat(101, 1, view, beat("m1", 2, &o1));
        assert_eq!((r.error, r.member_epoch), (None, 2));
        let group = again.group("g").unwrap();
        assert_eq!((group.group_epoch, group.state_name()), (2, "Stable"));
        // Two members owning one partition: the snapshot is refused.
        let mut bad = snapshot.clone();
        bad.members[1].assigned = bad.members[0].assigned.clone();
        assert!(again.restore("h", bad, 0).is_err());
    }

    #[test]
    fn offset_commit_and_fetch_checks() {
        let t = topics(&[("a", T1, 1)]);
        let view = TopicsView {
            version: 1,
            topics: &t,
        };
        let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
        assert_eq!(g.validate_offset_commit("g", "m1", 1, 9), None);
        g.heartbeat(0, 1, view, join("m1"));
        assert_eq!(g.validate_offset_commit("g", "m1", 1, 9), Some(Ok(())));
        assert_eq!(
            g.validate_offset_commit("g", "m1", 0, 9),
            Some(Err(ResponseError::StaleMemberEpoch))
        );
        assert_eq!(
            g.validate_offset_commit("g", "m1", 1, 8),
            Some(Err(ResponseError::UnsupportedVersion))
        );
        assert_eq!(
            g.validate_offset_commit("g", "x", 1, 9),
            Some(Err(ResponseError::UnknownMemberId))
        );
        assert_eq!(
            g.validate_offset_commit("g", "", -1, 9),
            Some(Err(ResponseError::UnknownMemberId)),
            "an admin commit needs an empty group"
        );
        assert_eq!(g.validate_offset_fetch("g", None, -1), Ok(()));
        assert_eq!(g.validate_offset_fetch("g", Some("m1"), 1), Ok(()));
        assert_eq!(
            g.validate_offset_fetch("g", Some("m1"), 3),
            Err(ResponseError::StaleMemberEpoch)
        );
        let mut leave = beat("m1", 1, &Assignment::new());
        leave.member_epoch = LEAVE_EPOCH;
        g.heartbeat(1, 1, view, leave);
        assert_eq!(g.validate_offset_commit("g", "", -1, 9), Some(Ok(())));
        assert_eq!(g.group("g").unwrap().state_name(), "Empty");
    }

    /// One step of a random population of consumers (m0..m3; m2 and m3 static) of group "g".
    #[derive(Clone, Debug)]
    enum Op {
        /// The member heartbeats with its epoch and what it owns (`lost`: it reports nothing
        /// owned, as after a lost answer; `ahead`: an epoch one ahead, which is fenced).
        Beat { member: u8, lost: bool, ahead: bool },
        /// The member (re)joins with epoch 0, subscribing to "a" or to "a" and "b".
        Join { member: u8, both: bool },
        /// The member leaves (epoch -1, or -2 for a static member).
        Leave { member: u8 },
        /// Time passes and the timer runs.
        Tick { ms: u32 },
        /// Topic "a" grows to `partitions` partitions; "b" appears or disappears.
        Metadata { partitions: u8, b: bool },
        /// The group is written to a snapshot and restored (a restart).
        Restart,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..4u8, any::<bool>(), proptest::bool::weighted(0.05))
                .prop_map(|(member, lost, ahead)| Op::Beat { member, lost, ahead }),
            2 => (0..4u8, any::<bool>()).prop_map(|(member, both)| Op::Join { member, both }),
            1 => (0..4u8).prop_map(|member| Op::Leave { member }),
            1 => (0..50_000u32).prop_map(|ms| Op::Tick { ms }),
            1 => (0..3u8, any::<bool>()).prop_map(|(partitions, b)| Op::Metadata { partitions, b }),
            1 => Just(Op::Restart),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random heartbeats (current, lost, fenced), joins, leaves, timer ticks, metadata
        /// changes and restarts keep every invariant after every step, and the group and
        /// assignment epochs never go back.
        #[test]
        fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..150)) {
            let mut g = ConsumerGroups::new(ConsumerGroupConfig::default(), 7);
            // (epoch, owned) as each client believes.
            let mut clients: Vec<(i32, Assignment)> = vec![(0, Assignment::new()); 4];
            let mut now: i64 = 0;
            let mut a_partitions = 3;
            let mut with_b = false;
            let mut version = 1;
            let mut epochs_seen = (0, 0);
            for op in ops {
                let mut meta = vec![("a", T1, a_partitions)];
                if with_b {
                    meta.push(("b", T2, 2));
                }
                let t = topics(&meta);
                let view = TopicsView { version, topics: &t };
                let instance = |m: u8| (m >= 2).then(|| format!("i{m}"));
                match op {
                    Op::Beat { member, lost, ahead } => {
                        let (epoch, owned) = clients[member as usize].clone();
                        if epoch > 0 {
                            let mut req = beat(&format!("m{member}"), epoch + i32::from(ahead), &owned);
                            req.instance_id = instance(member);
                            if lost {
                                req.owned = None;
                            }
                            let r = g.heartbeat(now, 1, view, req);
                            let c = &mut clients[member as usize];
                            if r.error.is_some() {
                                *c = (0, Assignment::new());
                            } else {
                                c.0 = r.member_epoch;
                                if let Some(a) = r.assignment {
                                    c.1 = a;
                                }
                            }
                        }
                    }
                    Op::Join { member, both } => {
                        let mut req = join(&format!("m{member}"));
                        req.instance_id = instance(member);
                        if both {
                            req.subscribed_topic_names = Some(vec!["a".into(), "b".into()]);
                        }
                        let r = g.heartbeat(now, 1, view, req);
                        clients[member as usize] = match r.error {
                            None => (r.member_epoch, r.assignment.unwrap_or_default()),
                            Some(_) => (0, Assignment::new()),
                        };
                    }
                    Op::Leave { member } => {
                        let (epoch, owned) = clients[member as usize].clone();
                        let mut req = beat(&format!("m{member}"), epoch, &owned);
                        req.instance_id = instance(member);
                        req.member_epoch = if member >= 2 { STATIC_LEAVE_EPOCH } else { LEAVE_EPOCH };
                        g.heartbeat(now, 1, view, req);
                        clients[member as usize] = (0, Assignment::new());
                    }
                    Op::Tick { ms } => {
                        now += i64::from(ms);
                        g.tick(now);
                    }
                    Op::Metadata { partitions, b } => {
                        a_partitions += i32::from(partitions);
                        with_b = b;
                        version += 1;
                    }
                    Op::Restart => {
                        if let Some(snapshot) = g.snapshot("g") {
                            g.restore("g", snapshot, now).expect("own snapshot restores");
                        }
                    }
                }
                if let Err(v) = g.check_invariants() {
                    proptest::prop_assert!(false, "{v}");
                }
                if let Some(group) = g.group("g") {
                    let now_epochs = epochs(group);
                    proptest::prop_assert!(
                        now_epochs.0 >= epochs_seen.0 && now_epochs.1 >= epochs_seen.1,
                        "epochs went back from {epochs_seen:?} to {now_epochs:?}"
                    );
                    epochs_seen = now_epochs;
                }
            }
        }
    }
}
