//! The classic consumer-group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) as a
//! pure state machine owned by the coordinator shard (shard 0).
//!
//! [`Groups`] does no I/O and reads no clock: every call takes `now_ms`, and answers that Kafka
//! delays (a JoinGroup waits for the rebalance to complete, a follower's SyncGroup waits for the
//! leader's assignment) are returned later as [`Effect::Reply`] with the request id the caller
//! gave. The shard holds one one-shot channel per request id and completes it when the effect
//! comes out; [`Groups::tick`] (driven by a timer on shard 0) expires sessions and ends
//! rebalances whose timeout passed.
//!
//! A group's life, as Kafka's `ClassicGroup`:
//! `Empty` -(join)-> `PreparingRebalance` -(all known members rejoined, or rebalance timeout)->
//! `CompletingRebalance` -(leader's SyncGroup)-> `Stable` -(join with new metadata, leave,
//! expiry)-> `PreparingRebalance` ... When the last member goes the group is `Empty` again (its
//! committed offsets stay). `Dead` groups are removed from the map.
//!
//! Invariants: every member with `awaiting_join` has a parked JoinGroup and the group is
//! `PreparingRebalance`; `awaiting_sync` only in `CompletingRebalance`; the leader, when set, is
//! a member. Every parked request id is answered exactly once (by a reply, or with an error when
//! its member is removed).
//!
//! Timers: [`Groups::next_deadline_ms`] says when [`Groups::tick`] next has work, so the shard
//! can sleep until exactly then; [`Groups::tick_one`] brings one group up to date before it is
//! described or deleted.
//!
//! Limits: `group.max.size` ([`GroupConfig::group_max_size`], unlimited by default as Kafka)
//! counts members as Kafka's `acceptJoiningMember` does; member ids handed out with
//! MEMBER_ID_REQUIRED do not count, and are bounded per group by [`GROUP_PENDING_MEMBERS_MAX`].
//!
//! Durability: [`Groups::take_dirty`] names the groups whose snapshot changed (Kafka writes a
//! classic group's metadata when it becomes Stable or Empty; here also when members leave or
//! expire, so that a member whose leave was answered never comes back after a crash to hold
//! the next rebalance for its whole session); `shard::groups` writes [`ClassicGroupSnapshot`]s
//! to the offsets log and [`Groups::restore`] rebuilds them at start (a group with members
//! comes back Stable, or PreparingRebalance if it was rebalancing when written, each member
//! with a full session to heartbeat or rejoin, as after a Kafka coordinator load). A member
//! that was alive at the crash and never comes back still holds a rebalance until its session
//! ends, as in Kafka. The initial rebalance of a new group waits
//! `group.initial.rebalance.delay.ms`, extended while new members keep joining, up to the
//! rebalance timeout (Kafka's `InitialDelayedJoin`).
//!
//! Not yet: static members do not skip the rebalance when they rejoin with unchanged metadata
//! in a Stable group beyond what a normal known-member join does. KIP-848 consumer groups are
//! in [`super::consumer_group`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

use super::invariants::{debug_check, ensure, Violation};
use super::member::{MemberDescription, MemberIdentity};
use crate::config;

/// Caller-chosen id of a request whose answer may come later.
pub type RequestId = u64;

/// Member ids handed out with MEMBER_ID_REQUIRED and not yet used, per group. Kafka keeps them
/// unbounded (each expires after its session timeout); a bound keeps a flood of first joins
/// from growing one group's map without limit (each entry is a member id and a deadline,
/// about 200 bytes: at most ~2 MB per group). At the bound a first join is answered
/// COORDINATOR_LOAD_IN_PROGRESS (retriable: the client backs off and joins again), not
/// GROUP_MAX_SIZE_REACHED, which clients treat as fatal.
pub const GROUP_PENDING_MEMBERS_MAX: usize = 10_000;

/// Group settings (Kafka's broker configs of the same names; defaults in [`crate::config`]).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `offsets.retention.minutes`, in milliseconds: committed offsets expire this long after
    /// their group became empty (or after their commit, see `offsets::Expiry`).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: i64,
    /// `group.max.size`: members per classic group; a join beyond it gets
    /// GROUP_MAX_SIZE_REACHED. Pending member ids (MEMBER_ID_REQUIRED) do not count, as in Kafka;
    /// they have their own bound, [`GROUP_PENDING_MEMBERS_MAX`].
    pub group_max_size: usize,
    /// `group.min.session.timeout.ms`: the shortest session a member may ask for.
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`: the longest session a member may ask for.
    pub session_timeout_ms_max: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: config::GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT,
            offsets_retention_ms: config::OFFSETS_RETENTION_MINUTES_DEFAULT * 60_000,
            offsets_retention_check_interval_ms:
                config::OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT,
            group_max_size: config::GROUP_MAX_SIZE_DEFAULT as usize,
            session_timeout_ms_min: config::GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT,
            session_timeout_ms_max: config::GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Kafka's classic group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, version-independent.
#[derive(Clone, Debug, Default)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a first join without a member id gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// One member as the leader sees it in its JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Non-empty for the leader only.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    fn error(error: ResponseError, member_id: &str) -> Self {
        JoinResponse {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request, version-independent.
#[derive(Clone, Debug, Default)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment (member id, assignment); empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: ResponseError) -> Self {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A delayed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Join(JoinResponse),
    Sync(SyncResponse),
}

/// What the shard must do after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Answer the parked request `request_id`.
    Reply {
        request_id: RequestId,
        response: Response,
    },
}

/// A member of a classic group.
#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// The leader's assignment for this member in the current generation.
    pub assignment: Bytes,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
    /// The member is removed when `now_ms` passes this without a heartbeat.
    heartbeat_deadline_ms: i64,
    /// Join order: the leader is the earliest member.
    seq: u64,
}

impl Member {
    /// The member's identity (what both group protocols share).
    pub fn identity(&self) -> MemberIdentity {
        MemberIdentity {
            member_id: self.member_id.clone(),
            instance_id: self.group_instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
        }
    }

    /// What DescribeGroups reports of the member: its metadata for the group's protocol and
    /// its assignment only while the group is Stable (`stable_protocol`), as Kafka.
    pub fn describe(&self, stable_protocol: Option<&str>) -> MemberDescription {
        MemberDescription {
            identity: self.identity(),
            metadata: stable_protocol.map_or_else(Bytes::new, |p| self.metadata_for(p)),
            assignment: if stable_protocol.is_some() {
                self.assignment.clone()
            } else {
                Bytes::new()
            },
        }
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// One classic group.
#[derive(Clone, Debug)]
pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry time.
    pending_members: BTreeMap<String, i64>,
    /// static instance id -> member id.
    static_members: HashMap<String, String>,
    /// PreparingRebalance: the join completes at this time at the latest.
    rebalance_deadline_ms: i64,
    /// PreparingRebalance from Empty: the join does not complete before this time.
    join_not_before_ms: i64,
    /// The initial rebalance's delay (ms) and what the rebalance timeout leaves after it, while
    /// that delay runs (Kafka's `InitialDelayedJoin`).
    initial_delay: Option<(i64, i64)>,
    /// A new member joined during the initial delay: the delay is extended once more.
    new_member_added: bool,
    /// When the group last changed state (Kafka's `currentStateTimestamp`); offsets of an
    /// Empty group expire relative to it.
    pub state_timestamp_ms: Option<i64>,
    next_seq: u64,
}

impl Group {
    fn new(group_id: &str) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            join_not_before_ms: 0,
            initial_delay: None,
            new_member_added: false,
            state_timestamp_ms: None,
            next_seq: 0,
        }
    }

    /// True when the group has no members (offsets may still exist).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members in join order.
    pub fn members_in_order(&self) -> Vec<&Member> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.seq);
        members
    }

    /// The invariants of one classic group (the module essay's, as code): a member is stored
    /// under its own id; the leader is a member and a group with members has one; parked joins
    /// only while `PreparingRebalance`, parked syncs only while `CompletingRebalance`, and no
    /// request id is parked twice; `Empty` has no members, `CompletingRebalance` and `Stable`
    /// have members, a generation and a protocol every member supports; the static-member map
    /// and the members' instance ids agree both ways; pending member ids are not members and
    /// stay within [`GROUP_PENDING_MEMBERS_MAX`]; join order numbers are unique.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let g = &self.group_id;
        ensure!(
            self.state != GroupState::Dead,
            "{g}: a Dead group is still in the map"
        );
        ensure!(
            self.generation_id >= 0,
            "{g}: generation {} < 0",
            self.generation_id
        );
        ensure!(
            self.leader.is_some() != self.members.is_empty(),
            "{g}: leader {:?} with {} members",
            self.leader,
            self.members.len()
        );
        if let Some(leader) = &self.leader {
            ensure!(
                self.members.contains_key(leader),
                "{g}: leader {leader} is not a member"
            );
        }
        match self.state {
            GroupState::Empty => {
                ensure!(self.members.is_empty(), "{g}: Empty with members")
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                ensure!(
                    !self.members.is_empty(),
                    "{g}: {} without members",
                    self.state.name()
                );
                ensure!(
                    self.generation_id > 0,
                    "{g}: {} in generation 0",
                    self.state.name()
                );
                let Some(protocol) = &self.protocol_name else {
                    return Err(Violation(format!(
                        "{g}: {} without a protocol",
                        self.state.name()
                    )));
                };
                for m in self.members.values() {
                    ensure!(
                        m.protocols.iter().any(|(name, _)| name == protocol),
                        "{g}: member {} does not support the group's protocol {protocol}",
                        m.member_id
                    );
                }
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
        let mut parked = BTreeSet::new();
        let mut seqs = BTreeSet::new();
        for (id, m) in &self.members {
            ensure!(
                *id == m.member_id,
                "{g}: member {} stored under {id}",
                m.member_id
            );
            ensure!(
                self.protocol_type.as_ref() == Some(&m.protocol_type),
                "{g}: member {id} has protocol type {} and the group {:?}",
                m.protocol_type,
                self.protocol_type
            );
            if let Some(r) = m.awaiting_join {
                ensure!(
                    self.state == GroupState::PreparingRebalance,
                    "{g}: member {id} has a parked join in {}",
                    self.state.name()
                );
                ensure!(parked.insert(r), "{g}: request {r} parked twice");
            }
            if let Some(r) = m.awaiting_sync {
                ensure!(
                    self.state == GroupState::CompletingRebalance,
                    "{g}: member {id} has a parked sync in {}",
                    self.state.name()
                );
                ensure!(parked.insert(r), "{g}: request {r} parked twice");
            }
            ensure!(
                m.seq > 0 && m.seq <= self.next_seq && seqs.insert(m.seq),
                "{g}: member {id} has join order {} (next {})",
                m.seq,
                self.next_seq
            );
            if let Some(instance) = &m.group_instance_id {
                ensure!(
                    self.static_members.get(instance) == Some(id),
                    "{g}: static member {id} ({instance}) is not in the static map"
                );
            }
            ensure!(
                !self.pending_members.contains_key(id),
                "{g}: {id} is both a member and a pending member id"
            );
        }
        for (instance, id) in &self.static_members {
            let Some(m) = self.members.get(id) else {
                return Err(Violation(format!(
                    "{g}: static {instance} -> {id}, not a member"
                )));
            };
            ensure!(
                m.group_instance_id.as_ref() == Some(instance),
                "{g}: static {instance} -> {id}, whose instance id is {:?}",
                m.group_instance_id
            );
        }
        ensure!(
            self.pending_members.len() <= GROUP_PENDING_MEMBERS_MAX,
            "{g}: {} pending member ids",
            self.pending_members.len()
        );
        Ok(())
    }

    /// Protocols every member supports, the one most members prefer first (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let members = self.members_in_order();
        let first = members.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in &members {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == name) {
                    v.0 += 1;
                }
            }
        }
        // Highest vote; ties go to the first member's preference (stable order of `votes`).
        let mut best: Option<(usize, &String)> = None;
        for (count, name) in votes {
            if best.is_none_or(|(b, _)| count > b) {
                best = Some((count, name));
            }
        }
        best.map(|(_, name)| name.clone())
    }

    /// Whether a join with `protocol_type` and `protocols` fits the group's members.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Topics the members subscribe to, from their consumer-protocol metadata; `None` if the
    /// group is not a consumer group or a subscription does not decode (then every topic
    /// counts as subscribed).
    pub fn subscribed_topics(&self) -> Option<std::collections::BTreeSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut topics = std::collections::BTreeSet::new();
        for m in self.members.values() {
            let mut buf = m.metadata_for(&protocol);
            if buf.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            bytes::Buf::advance(&mut buf, 2);
            let sub = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
            topics.extend(sub.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
    }

    /// Kafka's `acceptJoiningMember`: whether a join by `member_id` (empty: a new member) fits
    /// `group.max.size`. While rebalancing, members that rejoined count (the group may be above
    /// a lowered limit; the last to rejoin are turned away); otherwise the members do.
    fn accepts_joining_member(&self, member_id: &str, max_size: usize) -> bool {
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.members
                    .get(member_id)
                    .is_some_and(|m| m.awaiting_join.is_some())
                    || self
                        .members
                        .values()
                        .filter(|m| m.awaiting_join.is_some())
                        .count()
                        < max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members.contains_key(member_id) || self.members.len() < max_size
            }
        }
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }
}

/// Why an offset commit was refused by the group (see [`Groups::validate_offset_commit`]).
pub type CommitCheck = Result<(), ResponseError>;

/// All classic groups of the broker. Lives on the coordinator shard.
#[derive(Debug, Default)]
pub struct Groups {
    pub config: GroupConfig,
    groups: BTreeMap<String, Group>,
    /// Counter for generated member ids (with a random per-broker prefix, see `new`).
    member_counter: u64,
    member_id_salt: String,
    /// Groups whose durable snapshot changed since [`Groups::take_dirty`].
    dirty: BTreeSet<String>,
}

impl Groups {
    /// A coordinator with no groups; member ids are `<client id>-<salt>-<n>`.
    pub fn new(config: GroupConfig, member_id_salt: String) -> Groups {
        Groups {
            config,
            groups: BTreeMap::new(),
            member_counter: 0,
            member_id_salt,
            dirty: BTreeSet::new(),
        }
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Creates an Empty group if none exists (OffsetCommit of a simple consumer does).
    pub fn ensure_group(&mut self, group_id: &str) {
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        debug_check(|| self.check_transition(group_id, None));
    }

    /// Whether [`Groups::delete_group`] would succeed.
    pub fn check_deletable(&self, group_id: &str) -> Result<(), ResponseError> {
        match self.groups.get(group_id) {
            None => Err(ResponseError::GroupIdNotFound),
            Some(g) if !g.is_empty() || !g.pending_members.is_empty() => {
                Err(ResponseError::NonEmptyGroup)
            }
            Some(_) => Ok(()),
        }
    }

    /// Removes an empty group (DeleteGroups): NON_EMPTY_GROUP if it has members.
    pub fn delete_group(&mut self, group_id: &str) -> Result<(), ResponseError> {
        match self.groups.get(group_id) {
            None => Err(ResponseError::GroupIdNotFound),
            Some(g) if !g.is_empty() || !g.pending_members.is_empty() => {
                Err(ResponseError::NonEmptyGroup)
            }
            Some(_) => {
                self.groups.remove(group_id);
                self.dirty.insert(group_id.to_string());
                Ok(())
            }
        }
    }

    /// Runs `f` and marks `group_id` dirty if its durable state (Kafka persists a classic group
    /// when it becomes Stable or Empty) changed.
    /// Also checks the group's invariants after `f`, and that its generation did not go back.
    fn tracked<R>(&mut self, group_id: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let before = self.groups.get(group_id).map(persisted_key);
        let out = f(self);
        let after = self.groups.get(group_id).map(persisted_key);
        if needs_persisting(before, after) {
            self.dirty.insert(group_id.to_string());
        }
        debug_check(|| {
            self.check_transition(group_id, before.map(|(_, generation, _)| generation))
        });
        out
    }

    /// Every group's invariants ([`Group::check_invariants`]) and that each is stored under its
    /// own id. For the simulator and the proptests; debug builds check the groups a call
    /// touched after each call.
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

    /// One group's invariants after a transition, and that its generation did not go back
    /// (`generation_before`: before the transition, `None` if the group did not exist).
    fn check_transition(
        &self,
        group_id: &str,
        generation_before: Option<i32>,
    ) -> Result<(), Violation> {
        let Some(group) = self.groups.get(group_id) else {
            return Ok(());
        };
        ensure!(
            group.generation_id >= generation_before.unwrap_or(0),
            "{group_id}: generation went back from {generation_before:?} to {}",
            group.generation_id
        );
        group.check_invariants()
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
    pub fn snapshot(&self, group_id: &str) -> Option<ClassicGroupSnapshot> {
        let g = self.groups.get(group_id)?;
        Some(ClassicGroupSnapshot {
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol_name.clone(),
            generation_id: g.generation_id,
            leader: g.leader.clone(),
            state_timestamp_ms: g.state_timestamp_ms,
            rebalance_pending: matches!(
                g.state,
                GroupState::PreparingRebalance | GroupState::CompletingRebalance
            ),
            members: g
                .members_in_order()
                .into_iter()
                .map(|m| ClassicMemberSnapshot {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: m.protocol_type.clone(),
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, md)| (n.clone(), md.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        })
    }

    /// Rebuilds a group from its snapshot at startup, as Kafka's coordinator load: a group with
    /// members is Stable (PreparingRebalance if it was rebalancing after members left) and each
    /// member has a full session to heartbeat or rejoin.
    pub fn restore(&mut self, group_id: &str, snapshot: ClassicGroupSnapshot, now_ms: i64) {
        let mut group = Group::new(group_id);
        group.protocol_type = snapshot.protocol_type;
        group.protocol_name = snapshot.protocol_name;
        group.generation_id = snapshot.generation_id;
        group.state_timestamp_ms = snapshot.state_timestamp_ms;
        for m in snapshot.members {
            group.next_seq += 1;
            if let Some(instance) = &m.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let member = Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: m.protocol_type,
                protocols: m
                    .protocols
                    .into_iter()
                    .map(|(n, md)| (n, Bytes::from(md)))
                    .collect(),
                assignment: Bytes::from(m.assignment),
                awaiting_join: None,
                awaiting_sync: None,
                heartbeat_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                seq: group.next_seq,
            };
            group.members.insert(m.member_id, member);
        }
        group.leader = snapshot
            .leader
            .filter(|l| group.members.contains_key(l))
            .or_else(|| {
                group
                    .members_in_order()
                    .first()
                    .map(|m| m.member_id.clone())
            });
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else if snapshot.rebalance_pending || group.members.len() > self.config.group_max_size {
            // The members rejoin (their heartbeats get REBALANCE_IN_PROGRESS); those that do
            // not are dropped when their session or the rebalance timeout runs out. A group
            // above a lowered `group.max.size` rebalances too (Kafka), turning away the last
            // members to rejoin.
            group.rebalance_deadline_ms = now_ms + group.max_rebalance_timeout_ms();
            group.join_not_before_ms = now_ms;
            group.state_timestamp_ms = Some(now_ms);
            GroupState::PreparingRebalance
        } else {
            GroupState::Stable
        };
        self.groups.insert(group_id.to_string(), group);
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.member_counter += 1;
        format!(
            "{client_id}-{}-{}",
            self.member_id_salt, self.member_counter
        )
    }

    /// JoinGroup. The answer is always an [`Effect::Reply`] for `request_id`, now or later.
    pub fn join(&mut self, now_ms: i64, request_id: RequestId, req: JoinRequest) -> Vec<Effect> {
        let group_id = req.group_id.clone();
        self.tracked(&group_id, |g| g.join_inner(now_ms, request_id, req))
    }

    /// Why a JoinGroup is refused before its group is looked at: no group id, a session
    /// timeout out of range, or a member id for a group that does not exist.
    fn join_refusal(&self, req: &JoinRequest) -> Option<ResponseError> {
        if req.group_id.is_empty() {
            return Some(ResponseError::InvalidGroupId);
        }
        if req.session_timeout_ms < self.config.session_timeout_ms_min
            || req.session_timeout_ms > self.config.session_timeout_ms_max
        {
            return Some(ResponseError::InvalidSessionTimeout);
        }
        let known_member = !req.member_id.is_empty();
        let group_exists = self.groups.contains_key(&req.group_id);
        if known_member && !group_exists {
            return Some(ResponseError::UnknownMemberId);
        }
        None
    }

    fn join_inner(&mut self, now_ms: i64, request_id: RequestId, req: JoinRequest) -> Vec<Effect> {
        let mut effects = Vec::new();
        let reply = |effects: &mut Vec<Effect>, r: JoinResponse| {
            effects.push(Effect::Reply {
                request_id,
                response: Response::Join(r),
            })
        };
        if let Some(error) = self.join_refusal(&req) {
            reply(&mut effects, JoinResponse::error(error, &req.member_id));
            return effects;
        }
        let known_member = !req.member_id.is_empty();
        let new_id = if known_member {
            String::new()
        } else {
            self.new_member_id(&req.client_id)
        };
        let initial_delay = self.config.initial_rebalance_delay_ms;
        let max_size = self.config.group_max_size;
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id));
        if !group.accepts_joining_member(&req.member_id, max_size) {
            // Kafka: the member (if known) is removed and told the group is full.
            let known = group.members.contains_key(&req.member_id);
            group.pending_members.remove(&req.member_id);
            if known {
                remove_member(group, &req.member_id, &mut effects);
                after_removal(group, now_ms, &mut effects);
            }
            reply(
                &mut effects,
                JoinResponse::error(ResponseError::GroupMaxSizeReached, ""),
            );
            return effects;
        }
        if !group.supports(&req.protocol_type, &req.protocols) {
            reply(
                &mut effects,
                JoinResponse::error(ResponseError::InconsistentGroupProtocol, &req.member_id),
            );
            return effects;
        }
        if !known_member {
            join_new_member(
                group,
                now_ms,
                request_id,
                req,
                new_id,
                initial_delay,
                &mut effects,
            );
            return effects;
        }
        join_current_member(group, now_ms, request_id, req, initial_delay, &mut effects);
        effects
    }

    /// SyncGroup. The answer is always an [`Effect::Reply`] for `request_id`, now or later.
    pub fn sync(&mut self, now_ms: i64, request_id: RequestId, req: SyncRequest) -> Vec<Effect> {
        let group_id = req.group_id.clone();
        self.tracked(&group_id, |g| g.sync_inner(now_ms, request_id, req))
    }

    fn sync_inner(&mut self, now_ms: i64, request_id: RequestId, req: SyncRequest) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut reply = |r: SyncResponse| {
            effects.push(Effect::Reply {
                request_id,
                response: Response::Sync(r),
            })
        };
        if req.group_id.is_empty() {
            reply(SyncResponse::error(ResponseError::InvalidGroupId));
            return effects;
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            reply(SyncResponse::error(ResponseError::UnknownMemberId));
            return effects;
        };
        if let Err(e) = check_member(
            group,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            reply(SyncResponse::error(e));
            return effects;
        }
        if protocol_mismatch(group, &req) {
            reply(SyncResponse::error(
                ResponseError::InconsistentGroupProtocol,
            ));
            return effects;
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                reply(SyncResponse::error(ResponseError::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                reply(SyncResponse::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let member = group.members.get_mut(&req.member_id).expect("checked");
                member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                reply(SyncResponse {
                    error: None,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                });
            }
            GroupState::CompletingRebalance => {
                let member = group.members.get_mut(&req.member_id).expect("checked");
                member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                if let Some(old) = member.awaiting_sync.replace(request_id) {
                    // A repeated SyncGroup supersedes the earlier one.
                    effects.push(Effect::Reply {
                        request_id: old,
                        response: Response::Sync(SyncResponse::error(
                            ResponseError::RebalanceInProgress,
                        )),
                    });
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    complete_rebalance(group, req.assignments, now_ms, &mut effects);
                }
            }
        }
        effects
    }

    /// Heartbeat: answered at once (`None` is success).
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Option<ResponseError> {
        if group_id.is_empty() {
            return Some(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if let Err(e) = check_member(group, member_id, group_instance_id, generation_id) {
            return Some(e);
        }
        let member = group.members.get_mut(member_id).expect("checked");
        member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        debug_check(|| group.check_invariants());
        match group.state {
            GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => None,
        }
    }

    /// LeaveGroup of several members (v3+; older versions send one). Returns the group-level
    /// error, one error per member in request order, and the effects.
    #[allow(clippy::type_complexity)]
    pub fn leave(
        &mut self,
        now_ms: i64,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (
        Option<ResponseError>,
        Vec<Option<ResponseError>>,
        Vec<Effect>,
    ) {
        self.tracked(group_id, |g| g.leave_inner(now_ms, group_id, leaving))
    }

    #[allow(clippy::type_complexity)]
    fn leave_inner(
        &mut self,
        now_ms: i64,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (
        Option<ResponseError>,
        Vec<Option<ResponseError>>,
        Vec<Effect>,
    ) {
        let mut effects = Vec::new();
        if group_id.is_empty() {
            return (Some(ResponseError::InvalidGroupId), Vec::new(), effects);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return (Some(ResponseError::UnknownMemberId), Vec::new(), effects);
        };
        let mut errors = Vec::with_capacity(leaving.len());
        let mut removed_any = false;
        for (member_id, instance_id) in leaving {
            let target = match instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    None => {
                        errors.push(Some(ResponseError::UnknownMemberId));
                        continue;
                    }
                    Some(id) if !member_id.is_empty() && id != member_id => {
                        errors.push(Some(ResponseError::FencedInstanceId));
                        continue;
                    }
                    Some(id) => id.clone(),
                },
                None => member_id.clone(),
            };
            if group.pending_members.remove(&target).is_some() {
                errors.push(None);
                continue;
            }
            if !group.members.contains_key(&target) {
                errors.push(Some(ResponseError::UnknownMemberId));
                continue;
            }
            tracing::info!(group = %group.group_id, member = %target, "member leaves the classic group");
            remove_member(group, &target, &mut effects);
            removed_any = true;
            errors.push(None);
        }
        if removed_any {
            after_removal(group, now_ms, &mut effects);
        }
        (None, errors, effects)
    }

    /// Expires members and pending members whose session ran out, and completes rebalances
    /// whose time came.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for group in self.groups.values_mut() {
            let generation_before = group.generation_id;
            if tick_group(group, now_ms, &mut effects) {
                self.dirty.insert(group.group_id.clone());
            }
            debug_check(|| check_tick(group, generation_before));
        }
        effects
    }

    /// [`Groups::tick`] for one group: its timers are brought up to `now_ms` before it is
    /// described or deleted, so an answer never shows a member whose session already ended,
    /// however late the coordinator's timer runs.
    pub fn tick_one(&mut self, group_id: &str, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(group) = self.groups.get_mut(group_id) {
            let generation_before = group.generation_id;
            if tick_group(group, now_ms, &mut effects) {
                self.dirty.insert(group_id.to_string());
            }
            debug_check(|| check_tick(group, generation_before));
        }
        effects
    }

    /// The earliest time after `now_ms` at which [`Groups::tick`] has something to do: a
    /// session or a pending member id running out, a rebalance's initial delay or timeout
    /// ending. The coordinator's timer sleeps until exactly then (issue 12, item 18: expiry used
    /// to wait for the next 250 ms tick, which also did the persistence and compaction work).
    /// Times not after `now_ms` are left out: a tick at `now_ms` has dealt with them (an
    /// initial delay that ended while members are still rejoining stays in the past), and the
    /// timer must not wake every millisecond for them.
    pub fn next_deadline_ms(&self, now_ms: i64) -> Option<i64> {
        self.groups
            .values()
            .filter_map(|g| {
                let members = g
                    .members
                    .values()
                    .filter(|m| m.awaiting_join.is_none())
                    .map(|m| m.heartbeat_deadline_ms);
                let pending = g.pending_members.values().copied();
                let rebalance = (g.state == GroupState::PreparingRebalance)
                    .then_some([g.rebalance_deadline_ms, g.join_not_before_ms])
                    .into_iter()
                    .flatten();
                members
                    .chain(pending)
                    .chain(rebalance)
                    .filter(|t| *t > now_ms)
                    .min()
            })
            .min()
    }

    /// Forgets Empty groups for which `keep` says no (the coordinator keeps groups that still
    /// have committed offsets), so the map does not grow with every group id ever used.
    pub fn remove_empty_groups(&mut self, keep: impl Fn(&str) -> bool) {
        let dirty = &mut self.dirty;
        self.groups.retain(|id, g| {
            let stays = g.state != GroupState::Empty
                || !g.members.is_empty()
                || !g.pending_members.is_empty()
                || keep(id);
            if !stays {
                dirty.insert(id.clone());
            }
            stays
        });
    }

    /// Forgets every group `unloaded` names, without marking it for a write (its coordinator
    /// moved to another broker, which has its durable state: Kafka's `removeGroupsForPartition`),
    /// and returns the parked JoinGroup/SyncGroup requests of their members: the caller
    /// answers them (the client looks the coordinator up again).
    pub fn unload(&mut self, unloaded: impl Fn(&str) -> bool) -> Vec<RequestId> {
        let mut parked = Vec::new();
        self.groups.retain(|id, g| {
            if !unloaded(id) {
                return true;
            }
            for m in g.members.values() {
                parked.extend(m.awaiting_join);
                parked.extend(m.awaiting_sync);
            }
            false
        });
        self.dirty.retain(|id| !unloaded(id));
        parked
    }

    /// Kafka's checks of an OffsetCommit against the group (classic groups).
    pub fn validate_offset_commit(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> CommitCheck {
        let Some(group) = self.groups.get(group_id) else {
            // A simple consumer (generation -1) may commit to a group that does not exist yet.
            return if generation_id < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if generation_id < 0 && group.is_empty() {
            return Ok(());
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        check_member(group, member_id, group_instance_id, generation_id)
    }
}

/// One group's timers (see [`Groups::tick`]); true if its durable snapshot must be written.
fn tick_group(group: &mut Group, now_ms: i64, effects: &mut Vec<Effect>) -> bool {
    let before = persisted_key(group);
    group
        .pending_members
        .retain(|_, deadline| *deadline > now_ms);
    let expired: Vec<String> = group
        .members
        .values()
        .filter(|m| {
            // A member parked in a join is not expired: the rebalance timeout covers it.
            m.awaiting_join.is_none() && m.heartbeat_deadline_ms <= now_ms
        })
        .map(|m| m.member_id.clone())
        .collect();
    for id in &expired {
        tracing::info!(group = %group.group_id, member = %id, late_ms = now_ms - group.members[id].heartbeat_deadline_ms, "member session expired");
        remove_member(group, id, effects);
    }
    if !expired.is_empty() {
        after_removal(group, now_ms, effects);
    }
    if group.state == GroupState::PreparingRebalance {
        maybe_complete_join(group, now_ms, effects);
    }
    needs_persisting(Some(before), Some(persisted_key(group)))
}

/// A group's invariants after a tick, which may bump its generation but never lower it.
fn check_tick(group: &Group, generation_before: i32) -> Result<(), Violation> {
    ensure!(
        group.generation_id >= generation_before,
        "{}: a tick moved the generation back from {generation_before} to {}",
        group.group_id,
        group.generation_id
    );
    group.check_invariants()
}

/// What decides whether a group's durable snapshot changed: state, generation, member count.
fn persisted_key(g: &Group) -> (GroupState, i32, usize) {
    (g.state, g.generation_id, g.members.len())
}

/// Whether a change from `before` to `after` (`None`: no group) must be written: as Kafka, when
/// the group becomes Stable or Empty (or is gone); and whenever members left or expired, so
/// that a member whose LeaveGroup was answered does not come back after a crash and hold the
/// next rebalance until its session runs out (issue 12, item 9).
fn needs_persisting(
    before: Option<(GroupState, i32, usize)>,
    after: Option<(GroupState, i32, usize)>,
) -> bool {
    if before == after {
        return false;
    }
    match (before, after) {
        (_, None) => true,
        (_, Some((GroupState::Stable | GroupState::Empty, _, _))) => true,
        (Some((_, _, members_before)), Some((_, _, members_after))) => {
            members_after < members_before
        }
        (None, Some(_)) => false,
    }
}

/// What the offsets log keeps of a classic group (Kafka's `GroupMetadataValue`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicGroupSnapshot {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader: Option<String>,
    pub members: Vec<ClassicMemberSnapshot>,
    /// When the group last changed state.
    #[serde(default)]
    pub state_timestamp_ms: Option<i64>,
    /// The group was rebalancing when written (a member had left or expired): it comes back
    /// rebalancing, so its members rejoin instead of keeping the last generation's assignment.
    #[serde(default)]
    pub rebalance_pending: bool,
}

/// A member in a [`ClassicGroupSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// The member checks shared by SyncGroup, Heartbeat and OffsetCommit.
fn check_member(
    group: &Group,
    member_id: &str,
    group_instance_id: Option<&str>,
    generation_id: i32,
) -> Result<(), ResponseError> {
    if let Some(instance) = group_instance_id {
        match group.static_members.get(instance) {
            Some(id) if id != member_id => return Err(ResponseError::FencedInstanceId),
            _ => {}
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    if generation_id != group.generation_id {
        return Err(ResponseError::IllegalGeneration);
    }
    Ok(())
}

/// Answers a member's parked requests with `error` (it is being removed or replaced).
fn fence_parked(member: &mut Member, error: ResponseError, effects: &mut Vec<Effect>) {
    if let Some(id) = member.awaiting_join.take() {
        effects.push(Effect::Reply {
            request_id: id,
            response: Response::Join(JoinResponse::error(error, &member.member_id)),
        });
    }
    if let Some(id) = member.awaiting_sync.take() {
        effects.push(Effect::Reply {
            request_id: id,
            response: Response::Sync(SyncResponse::error(error)),
        });
    }
}

/// JoinGroup of a member without an id (Kafka's doNewMemberJoinGroup): a static member's new
/// incarnation replaces the old one; otherwise, when the client can, it is given an id to come
/// back with (KIP-394), or it joins now as `new_id`.
fn join_new_member(
    group: &mut Group,
    now_ms: i64,
    request_id: RequestId,
    req: JoinRequest,
    new_id: String,
    initial_delay: i64,
    effects: &mut Vec<Effect>,
) {
    let reply = |effects: &mut Vec<Effect>, r: JoinResponse| {
        effects.push(Effect::Reply {
            request_id,
            response: Response::Join(r),
        })
    };
    // A static member that rejoins without its member id replaces its old incarnation.
    if let Some(instance) = &req.group_instance_id {
        if let Some(old_id) = group.static_members.get(instance).cloned() {
            let Some(mut member) = group.members.remove(&old_id) else {
                unreachable!("static member map points at a member");
            };
            fence_parked(&mut member, ResponseError::FencedInstanceId, effects);
            member.member_id = new_id.clone();
            if group.leader.as_deref() == Some(&old_id) {
                group.leader = Some(new_id.clone());
            }
            group.members.insert(new_id.clone(), member);
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
            let mut req = req;
            req.member_id = new_id;
            join_known(group, now_ms, request_id, req, true, initial_delay, effects);
            return;
        }
    }
    if req.require_known_member_id && req.group_instance_id.is_none() {
        if group.pending_members.len() >= GROUP_PENDING_MEMBERS_MAX {
            reply(
                effects,
                JoinResponse::error(ResponseError::CoordinatorLoadInProgress, ""),
            );
            return;
        }
        group
            .pending_members
            .insert(new_id.clone(), now_ms + i64::from(req.session_timeout_ms));
        reply(
            effects,
            JoinResponse::error(ResponseError::MemberIdRequired, &new_id),
        );
        return;
    }
    let mut req = req;
    req.member_id = new_id;
    add_member(group, now_ms, request_id, req, initial_delay, effects);
}

/// JoinGroup of a member with an id (Kafka's doCurrentMemberJoinGroup): a pending member joins
/// now; a known one rejoins, unless another incarnation holds its instance id.
fn join_current_member(
    group: &mut Group,
    now_ms: i64,
    request_id: RequestId,
    req: JoinRequest,
    initial_delay: i64,
    effects: &mut Vec<Effect>,
) {
    let reply = |effects: &mut Vec<Effect>, r: JoinResponse| {
        effects.push(Effect::Reply {
            request_id,
            response: Response::Join(r),
        })
    };
    if group.pending_members.remove(&req.member_id).is_some() {
        add_member(group, now_ms, request_id, req, initial_delay, effects);
        return;
    }
    let Some(member) = group.members.get(&req.member_id) else {
        reply(
            effects,
            JoinResponse::error(ResponseError::UnknownMemberId, &req.member_id),
        );
        return;
    };
    if let Some(instance) = &req.group_instance_id {
        if member.group_instance_id.as_ref() != Some(instance) {
            reply(
                effects,
                JoinResponse::error(ResponseError::FencedInstanceId, &req.member_id),
            );
            return;
        }
    }
    join_known(
        group,
        now_ms,
        request_id,
        req,
        false,
        initial_delay,
        effects,
    );
}

/// Whether a SyncGroup names a protocol type or name other than the group's.
fn protocol_mismatch(group: &Group, req: &SyncRequest) -> bool {
    req.protocol_type
        .as_ref()
        .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
        || req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != group.protocol_name.as_ref())
}

/// The leader's SyncGroup: every member takes its assignment from `assignments`, the group is
/// Stable, and every member waiting in SyncGroup gets its answer.
fn complete_rebalance(
    group: &mut Group,
    assignments: Vec<(String, Bytes)>,
    now_ms: i64,
    effects: &mut Vec<Effect>,
) {
    let assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
    for m in group.members.values_mut() {
        m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
    }
    group.state = GroupState::Stable;
    group.state_timestamp_ms = Some(now_ms);
    for m in group.members.values_mut() {
        if let Some(id) = m.awaiting_sync.take() {
            effects.push(Effect::Reply {
                request_id: id,
                response: Response::Sync(SyncResponse {
                    error: None,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                }),
            });
        }
    }
}

fn add_member(
    group: &mut Group,
    now_ms: i64,
    request_id: RequestId,
    req: JoinRequest,
    initial_delay_ms: i64,
    effects: &mut Vec<Effect>,
) {
    assert!(!req.member_id.is_empty());
    if group.members.is_empty() {
        group.protocol_type = Some(req.protocol_type.clone());
    }
    group.next_seq += 1;
    if let Some(instance) = &req.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), req.member_id.clone());
    }
    let member = Member {
        member_id: req.member_id.clone(),
        group_instance_id: req.group_instance_id,
        client_id: req.client_id,
        client_host: req.client_host,
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        protocol_type: req.protocol_type,
        protocols: req.protocols,
        assignment: Bytes::new(),
        awaiting_join: Some(request_id),
        awaiting_sync: None,
        heartbeat_deadline_ms: now_ms + i64::from(req.session_timeout_ms),
        seq: group.next_seq,
    };
    if group.leader.is_none() {
        group.leader = Some(req.member_id.clone());
    }
    // Kafka: a member added while a rebalance that started from Empty is delayed.
    if group.state == GroupState::PreparingRebalance && group.initial_delay.is_some() {
        group.new_member_added = true;
    }
    group.members.insert(req.member_id, member);
    prepare_rebalance(group, now_ms, initial_delay_ms, effects);
    maybe_complete_join(group, now_ms, effects);
}

/// A join by a member the group knows.
fn join_known(
    group: &mut Group,
    now_ms: i64,
    request_id: RequestId,
    req: JoinRequest,
    static_rejoin: bool,
    initial_delay_ms: i64,
    effects: &mut Vec<Effect>,
) {
    let member = group.members.get_mut(&req.member_id).expect("known member");
    member.heartbeat_deadline_ms = now_ms + i64::from(req.session_timeout_ms);
    let metadata_changed = member.protocols != req.protocols;
    member.protocols = req.protocols;
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.client_id = req.client_id;
    member.client_host = req.client_host;
    if let Some(old) = member.awaiting_join.replace(request_id) {
        // A repeated join supersedes the earlier one.
        effects.push(Effect::Reply {
            request_id: old,
            response: Response::Join(JoinResponse::error(
                ResponseError::RebalanceInProgress,
                &req.member_id,
            )),
        });
    }
    // Kafka rebalances when the leader of a stable group rejoins (it may see new topics), but
    // not when a static member merely restarts.
    let is_leader = group.leader.as_deref() == Some(req.member_id.as_str()) && !static_rejoin;
    match group.state {
        GroupState::PreparingRebalance => maybe_complete_join(group, now_ms, effects),
        GroupState::CompletingRebalance | GroupState::Stable
            if !(metadata_changed || is_leader && group.state == GroupState::Stable) =>
        {
            // Nothing changed: the member gets the current generation again (a lost answer).
            let member = group.members.get_mut(&req.member_id).expect("known member");
            member.awaiting_join = None;
            let response = join_response(group, &req.member_id);
            effects.push(Effect::Reply {
                request_id,
                response: Response::Join(response),
            });
        }
        _ => {
            prepare_rebalance(group, now_ms, initial_delay_ms, effects);
            maybe_complete_join(group, now_ms, effects);
        }
    }
}

/// Moves the group to PreparingRebalance (no-op if it already is).
fn prepare_rebalance(
    group: &mut Group,
    now_ms: i64,
    initial_delay_ms: i64,
    effects: &mut Vec<Effect>,
) {
    if group.state != GroupState::PreparingRebalance {
        tracing::info!(group = %group.group_id, from = group.state.name(), "classic group preparing a rebalance");
    }
    match group.state {
        GroupState::PreparingRebalance => return,
        GroupState::CompletingRebalance => {
            // Followers waiting for the assignment must rejoin.
            for m in group.members.values_mut() {
                if let Some(id) = m.awaiting_sync.take() {
                    effects.push(Effect::Reply {
                        request_id: id,
                        response: Response::Sync(SyncResponse::error(
                            ResponseError::RebalanceInProgress,
                        )),
                    });
                }
            }
        }
        _ => {}
    }
    if group.state == GroupState::Empty {
        group.join_not_before_ms = now_ms + initial_delay_ms;
        group.initial_delay = Some((
            initial_delay_ms,
            (group.max_rebalance_timeout_ms() - initial_delay_ms).max(0),
        ));
        group.new_member_added = false;
    } else {
        group.join_not_before_ms = now_ms;
        group.initial_delay = None;
    }
    group.rebalance_deadline_ms = now_ms + group.max_rebalance_timeout_ms();
    group.state = GroupState::PreparingRebalance;
    group.state_timestamp_ms = Some(now_ms);
}

fn maybe_complete_join(group: &mut Group, now_ms: i64, effects: &mut Vec<Effect>) {
    assert_eq!(group.state, GroupState::PreparingRebalance);
    // Kafka's InitialDelayedJoin: when the initial delay ends and members joined during it,
    // it is extended (by at most the initial delay), until the rebalance timeout is used up.
    if let Some((delay_ms, remaining_ms)) = group.initial_delay {
        if now_ms >= group.join_not_before_ms && group.new_member_added && remaining_ms > 0 {
            let initial_ms = delay_ms.max(0);
            let next_delay_ms = initial_ms.min(remaining_ms);
            group.new_member_added = false;
            group.join_not_before_ms += next_delay_ms;
            group.initial_delay = Some((next_delay_ms, (remaining_ms - delay_ms).max(0)));
            return;
        }
    }
    let timed_out = now_ms >= group.rebalance_deadline_ms;
    let ready = group.all_members_joined() && now_ms >= group.join_not_before_ms;
    if !ready && !timed_out {
        return;
    }
    group.initial_delay = None;
    // Members that did not rejoin in time are out.
    let missing: Vec<String> = group
        .members
        .values()
        .filter(|m| m.awaiting_join.is_none())
        .map(|m| m.member_id.clone())
        .collect();
    for id in missing {
        remove_member(group, &id, effects);
    }
    group.pending_members.clear();
    group.generation_id += 1;
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.state_timestamp_ms = Some(now_ms);
        // The protocol type stays (Kafka reports it for empty groups); a new member may bring
        // another one.
        group.protocol_name = None;
        group.leader = None;
        return;
    }
    group.protocol_name = group.select_protocol();
    group.state = GroupState::CompletingRebalance;
    group.state_timestamp_ms = Some(now_ms);
    tracing::info!(group = %group.group_id, generation = group.generation_id, members = group.members.len(), "classic group rebalanced");
    let ids: Vec<String> = group.members.keys().cloned().collect();
    for id in ids {
        let response = join_response(group, &id);
        let member = group.members.get_mut(&id).expect("member");
        member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        member.assignment = Bytes::new();
        let request_id = member.awaiting_join.take().expect("all members joined");
        effects.push(Effect::Reply {
            request_id,
            response: Response::Join(response),
        });
    }
}

fn join_response(group: &Group, member_id: &str) -> JoinResponse {
    let leader = group.leader.clone().unwrap_or_default();
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = if leader == member_id {
        group
            .members_in_order()
            .into_iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResponse {
        error: None,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader,
        member_id: member_id.to_string(),
        members,
    }
}

/// Removes a member, answering its parked requests with UNKNOWN_MEMBER_ID.
fn remove_member(group: &mut Group, member_id: &str, effects: &mut Vec<Effect>) {
    let Some(mut member) = group.members.remove(member_id) else {
        return;
    };
    fence_parked(&mut member, ResponseError::UnknownMemberId, effects);
    if let Some(instance) = &member.group_instance_id {
        if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
            group.static_members.remove(instance);
        }
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = group
            .members_in_order()
            .first()
            .map(|m| m.member_id.clone());
    }
}

/// After members left: rebalance the rest (or finish the rebalance in progress).
fn after_removal(group: &mut Group, now_ms: i64, effects: &mut Vec<Effect>) {
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(group, now_ms, 0, effects);
            maybe_complete_join(group, now_ms, effects);
        }
        GroupState::PreparingRebalance => maybe_complete_join(group, now_ms, effects),
        GroupState::Empty | GroupState::Dead => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;

    fn groups() -> Groups {
        Groups::new(
            GroupConfig {
                initial_rebalance_delay_ms: 0,
                ..GroupConfig::default()
            },
            "s".into(),
        )
    }

    fn join_req(member: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn join_reply(effects: &[Effect], id: RequestId) -> JoinResponse {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Reply {
                    request_id,
                    response: Response::Join(r),
                } if *request_id == id => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no join reply for {id} in {effects:?}"))
    }

    fn sync_reply(effects: &[Effect], id: RequestId) -> SyncResponse {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Reply {
                    request_id,
                    response: Response::Sync(r),
                } if *request_id == id => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no sync reply for {id} in {effects:?}"))
    }

    fn sync_req(member: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
        SyncRequest {
            group_id: "g".into(),
            member_id: member.into(),
            generation_id: generation,
            assignments,
            ..Default::default()
        }
    }

    /// Joins a new member the v4+ way (MEMBER_ID_REQUIRED, then the real join); returns its id
    /// and the effects of the second join.
    fn join_new(g: &mut Groups, now: i64, id: RequestId) -> (String, Vec<Effect>) {
        let first = g.join(now, id, join_req(""));
        let r = join_reply(&first, id);
        assert_eq!(r.error, Some(ResponseError::MemberIdRequired));
        let member = r.member_id;
        let effects = g.join(now, id + 1, join_req(&member));
        (member, effects)
    }

    /// One member: MEMBER_ID_REQUIRED, then generation 1 as leader, then its own assignment.
    #[test]
    fn single_member_joins_syncs_and_heartbeats() {
        let mut g = groups();
        let (m, effects) = join_new(&mut g, 0, 1);
        let r = join_reply(&effects, 2);
        assert_eq!(r.error, None);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.leader, m);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.members.len(), 1);
        assert_eq!(g.group("g").unwrap().state, GroupState::CompletingRebalance);
        let effects = g.sync(1, 3, sync_req(&m, 1, vec![(m.clone(), Bytes::from("a"))]));
        assert_eq!(sync_reply(&effects, 3).assignment, Bytes::from("a"));
        assert_eq!(g.group("g").unwrap().state, GroupState::Stable);
        assert_eq!(g.heartbeat(2, "g", &m, None, 1), None);
        assert_eq!(
            g.heartbeat(2, "g", &m, None, 0),
            Some(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat(2, "g", "nobody", None, 1),
            Some(ResponseError::UnknownMemberId)
        );
    }

    /// A member's description (DescribeGroups) carries its identity, and its metadata for the
    /// chosen protocol and its assignment only once the group is Stable.
    #[test]
    fn member_description_shows_metadata_and_assignment_only_when_stable() {
        let mut g = groups();
        let (m, _) = join_new(&mut g, 0, 1);
        let member = &g.group("g").unwrap().members[&m];
        let described = member.describe(None);
        assert_eq!(
            described.identity,
            MemberIdentity {
                member_id: m.clone(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
            }
        );
        assert_eq!(
            (described.metadata.len(), described.assignment.len()),
            (0, 0)
        );
        g.sync(1, 3, sync_req(&m, 1, vec![(m.clone(), Bytes::from("a"))]));
        let member = &g.group("g").unwrap().members[&m];
        let described = member.describe(Some("range"));
        assert_eq!(described.metadata, Bytes::from_static(b"m"));
        assert_eq!(described.assignment, Bytes::from("a"));
    }

    /// A second member joining a stable group starts a rebalance: the first member's heartbeat
    /// says REBALANCE_IN_PROGRESS, and the join completes once it rejoins.
    #[test]
    fn join_during_stable_rebalances_and_follower_waits_for_leader_sync() {
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        g.sync(0, 3, sync_req(&a, 1, vec![(a.clone(), Bytes::from("all"))]));
        let (b, effects) = join_new(&mut g, 10, 10);
        assert!(effects.is_empty(), "b waits for a to rejoin: {effects:?}");
        assert_eq!(
            g.heartbeat(20, "g", &a, None, 1),
            Some(ResponseError::RebalanceInProgress)
        );
        let effects = g.join(30, 12, join_req(&a));
        let ra = join_reply(&effects, 12);
        let rb = join_reply(&effects, 11);
        assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
        assert_eq!(ra.leader, a);
        assert_eq!(ra.members.len(), 2);
        assert!(rb.members.is_empty());
        // The follower syncs first and waits.
        assert!(g.sync(40, 13, sync_req(&b, 2, vec![])).is_empty());
        let effects = g.sync(
            50,
            14,
            sync_req(
                &a,
                2,
                vec![
                    (a.clone(), Bytes::from("p0")),
                    (b.clone(), Bytes::from("p1")),
                ],
            ),
        );
        assert_eq!(sync_reply(&effects, 13).assignment, Bytes::from("p1"));
        assert_eq!(sync_reply(&effects, 14).assignment, Bytes::from("p0"));
    }

    /// A member that does not rejoin within the rebalance timeout is dropped from the new
    /// generation.
    #[test]
    fn rebalance_timeout_drops_members_that_did_not_rejoin() {
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        g.sync(0, 3, sync_req(&a, 1, vec![]));
        let (b, effects) = join_new(&mut g, 100, 10);
        assert!(effects.is_empty());
        // a keeps heartbeating but never rejoins.
        for t in (5_000..=30_000).step_by(5_000) {
            assert_eq!(
                g.heartbeat(t, "g", &a, None, 1),
                Some(ResponseError::RebalanceInProgress)
            );
            assert!(g.tick(t).is_empty());
        }
        let effects = g.tick(100 + i64::from(REBALANCE));
        let rb = join_reply(&effects, 11);
        assert_eq!(rb.generation_id, 2);
        assert_eq!(rb.leader, b);
        assert_eq!(
            g.heartbeat(100 + i64::from(REBALANCE), "g", &a, None, 2),
            Some(ResponseError::UnknownMemberId)
        );
    }

    /// A member that stops heartbeating is expired; the rest rebalance without it.
    #[test]
    fn session_timeout_expires_member_and_triggers_rebalance() {
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        let (b, _) = join_new(&mut g, 0, 10);
        // a was alone in generation 1... complete: b joined while a was CompletingRebalance.
        let effects = g.join(1, 20, join_req(&a));
        assert_eq!(join_reply(&effects, 20).generation_id, 2);
        let effects = g.sync(1, 21, sync_req(&a, 2, vec![]));
        assert_eq!(sync_reply(&effects, 21).error, None);
        // b synced? it got its join answer with generation 2 too.
        assert_eq!(g.sync(2, 22, sync_req(&b, 2, vec![]))[0], {
            Effect::Reply {
                request_id: 22,
                response: Response::Sync(SyncResponse {
                    error: None,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    assignment: Bytes::new(),
                }),
            }
        });
        // Only a heartbeats.
        for t in (1_000..=12_000).step_by(1_000) {
            let e = g.heartbeat(t, "g", &a, None, g.group("g").unwrap().generation_id);
            assert!(
                e.is_none() || e == Some(ResponseError::RebalanceInProgress),
                "{e:?}"
            );
            g.tick(t);
        }
        let group = g.group("g").unwrap();
        assert!(!group.members.contains_key(&b));
        assert_eq!(group.state, GroupState::PreparingRebalance);
        let effects = g.join(12_500, 30, join_req(&a));
        let r = join_reply(&effects, 30);
        assert_eq!((r.generation_id, r.members.len()), (3, 1));
    }

    /// Members leaving (v3 batch) empties the group; a parked follower sync gets an error.
    #[test]
    fn leave_group_batch_empties_group() {
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        let (b, _) = join_new(&mut g, 0, 10);
        let effects = g.join(1, 20, join_req(&a));
        assert_eq!(join_reply(&effects, 20).generation_id, 2);
        assert!(g.sync(2, 21, sync_req(&b, 2, vec![])).is_empty());
        let (top, errors, effects) = g.leave(
            3,
            "g",
            &[(a.clone(), None), (b.clone(), None), ("x".into(), None)],
        );
        assert_eq!(top, None);
        assert_eq!(
            errors,
            vec![None, None, Some(ResponseError::UnknownMemberId)]
        );
        assert_eq!(
            sync_reply(&effects, 21).error,
            Some(ResponseError::UnknownMemberId)
        );
        let group = g.group("g").unwrap();
        assert_eq!(group.state, GroupState::Empty);
        assert_eq!(group.generation_id, 3);
        assert_eq!(group.protocol_type.as_deref(), Some("consumer"));
        g.remove_empty_groups(|_| true);
        assert_eq!(g.delete_group("g"), Ok(()));
        assert_eq!(g.delete_group("g"), Err(ResponseError::GroupIdNotFound));
        g.ensure_group("h");
        g.remove_empty_groups(|id| id != "h");
        assert!(
            g.group("h").is_none(),
            "an empty group without offsets is forgotten"
        );
    }

    /// A join with an unknown member id, or an incompatible protocol, is refused.
    #[test]
    fn fencing_and_protocol_errors() {
        let mut g = groups();
        let e = g.join(0, 1, join_req("ghost"));
        assert_eq!(
            join_reply(&e, 1).error,
            Some(ResponseError::UnknownMemberId)
        );
        let (a, _) = join_new(&mut g, 0, 2);
        let mut other = join_req("");
        other.protocols = vec![("roundrobin".into(), Bytes::new())];
        other.require_known_member_id = false;
        let e = g.join(0, 5, other);
        assert_eq!(
            join_reply(&e, 5).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        let mut bad = join_req(&a);
        bad.session_timeout_ms = 10;
        let e = g.join(0, 6, bad);
        assert_eq!(
            join_reply(&e, 6).error,
            Some(ResponseError::InvalidSessionTimeout)
        );
        assert_eq!(
            g.validate_offset_commit("g", &a, None, 7),
            Err(ResponseError::RebalanceInProgress)
        );
        g.sync(1, 7, sync_req(&a, 1, vec![]));
        assert_eq!(g.validate_offset_commit("g", &a, None, 1), Ok(()));
        assert_eq!(
            g.validate_offset_commit("g", &a, None, 7),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            g.validate_offset_commit("g", "", None, -1),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(g.validate_offset_commit("new", "", None, -1), Ok(()));
        assert_eq!(
            g.validate_offset_commit("new", "", None, 3),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(g.delete_group("g"), Err(ResponseError::NonEmptyGroup));
    }

    /// A static member that restarts (new join without member id, same instance id) takes over
    /// its old identity; the old member id is fenced.
    #[test]
    fn static_member_rejoin_replaces_old_incarnation() {
        let mut g = groups();
        let mut req = join_req("");
        req.group_instance_id = Some("i1".into());
        let e = g.join(0, 1, req.clone());
        let r = join_reply(&e, 1);
        assert_eq!(r.error, None, "static members skip MEMBER_ID_REQUIRED");
        let old = r.member_id;
        g.sync(
            0,
            2,
            sync_req(&old, 1, vec![(old.clone(), Bytes::from("x"))]),
        );
        let e = g.join(100, 3, req);
        let r = join_reply(&e, 3);
        assert_eq!(r.error, None);
        assert_ne!(r.member_id, old);
        assert_eq!(r.generation_id, 1, "unchanged metadata: no rebalance");
        assert_eq!(
            g.heartbeat(200, "g", &old, Some("i1"), 1),
            Some(ResponseError::FencedInstanceId)
        );
        let e = g.sync(
            200,
            4,
            SyncRequest {
                group_instance_id: Some("i1".into()),
                ..sync_req(&r.member_id, 1, vec![])
            },
        );
        assert_eq!(sync_reply(&e, 4).assignment, Bytes::from("x"));
    }

    /// The initial rebalance delay holds the first generation so that members starting together
    /// land in it.
    #[test]
    fn initial_delay_gathers_members() {
        let mut g = Groups::new(
            GroupConfig {
                initial_rebalance_delay_ms: 3_000,
                ..GroupConfig::default()
            },
            "s".into(),
        );
        let (_, e) = join_new(&mut g, 0, 1);
        assert!(e.is_empty());
        let (_, e) = join_new(&mut g, 1_000, 10);
        assert!(e.is_empty());
        assert!(g.tick(2_999).is_empty());
        // A member joined during the delay: Kafka extends it by another initial delay.
        assert!(g.tick(3_000).is_empty());
        let (_, e) = join_new(&mut g, 5_000, 20);
        assert!(e.is_empty());
        assert!(g.tick(6_000).is_empty(), "extended again");
        assert!(g.tick(8_999).is_empty());
        // Nobody joined in the last delay: the join completes.
        let e = g.tick(9_000);
        assert_eq!(join_reply(&e, 2).generation_id, 1);
        assert_eq!(join_reply(&e, 11).generation_id, 1);
        assert_eq!(join_reply(&e, 21).generation_id, 1);
    }

    /// The extensions of the initial delay stop when the rebalance timeout is used up, however
    /// many members keep joining.
    #[test]
    fn initial_delay_extensions_are_bounded_by_the_rebalance_timeout() {
        let mut g = Groups::new(
            GroupConfig {
                initial_rebalance_delay_ms: 3_000,
                ..GroupConfig::default()
            },
            "s".into(),
        );
        join_new(&mut g, 0, 1);
        let mut completed_at = None;
        for t in (100..40_000).step_by(100) {
            let mut effects = Vec::new();
            if t % 1_000 == 0 && completed_at.is_none() {
                effects = join_new(&mut g, t, 1_000 + t as u64).1;
            }
            effects.extend(g.tick(t));
            if !effects.is_empty() && completed_at.is_none() {
                completed_at = Some(t);
            }
        }
        let at = completed_at.expect("the join completed");
        // Rebalance timeout 30 s: at most 30 s of delays in all.
        assert!((27_000..=33_000).contains(&at), "completed at {at}");
    }

    /// Unanswered MEMBER_ID_REQUIRED ids expire and no longer block a rebalance.
    #[test]
    fn pending_member_expires() {
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        g.sync(0, 3, sync_req(&a, 1, vec![]));
        let e = g.join(10, 4, join_req(""));
        assert_eq!(
            join_reply(&e, 4).error,
            Some(ResponseError::MemberIdRequired)
        );
        let e = g.join(20, 5, join_req(&a));
        assert!(e.is_empty(), "waiting for the pending member");
        let e = g.tick(10 + i64::from(SESSION));
        assert_eq!(join_reply(&e, 5).generation_id, 2);
    }

    /// A member whose LeaveGroup was answered is written at once (not only when the group is
    /// Stable again), so a restart does not bring it back: the restored group is rebalancing and
    /// completes as soon as the remaining member rejoins, instead of waiting for the session of
    /// a member that is long gone (issue 12, item 9).
    #[test]
    fn a_member_that_left_before_a_crash_does_not_come_back() {
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        let (b, _) = join_new(&mut g, 0, 10);
        let e = g.join(1, 20, join_req(&a));
        assert_eq!(join_reply(&e, 20).generation_id, 2);
        g.sync(2, 21, sync_req(&a, 2, vec![]));
        g.sync(2, 22, sync_req(&b, 2, vec![]));
        assert_eq!(g.group("g").unwrap().state, GroupState::Stable);
        g.take_dirty();
        let (_, errors, _) = g.leave(3, "g", &[(b.clone(), None)]);
        assert_eq!(errors, vec![None]);
        assert_eq!(g.group("g").unwrap().state, GroupState::PreparingRebalance);
        assert_eq!(
            g.take_dirty(),
            vec!["g".to_string()],
            "the leave is persisted"
        );
        let snapshot = g.snapshot("g").unwrap();
        assert!(snapshot.rebalance_pending);
        assert_eq!(snapshot.members.len(), 1);

        // The broker restarts from that snapshot.
        let mut restarted = groups();
        restarted.restore("g", snapshot, 100_000);
        let group = restarted.group("g").unwrap();
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert!(!group.members.contains_key(&b));
        assert_eq!(
            restarted.heartbeat(100_001, "g", &a, None, 2),
            Some(ResponseError::RebalanceInProgress)
        );
        let e = restarted.join(100_002, 30, join_req(&a));
        let r = join_reply(&e, 30);
        assert_eq!((r.generation_id, r.members.len()), (3, 1), "no wait for b");

        // An expired member is persisted too.
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        let (b, _) = join_new(&mut g, 0, 10);
        g.join(1, 20, join_req(&a));
        g.sync(2, 21, sync_req(&a, 2, vec![]));
        g.take_dirty();
        for t in (1_000..=10_500).step_by(500) {
            g.heartbeat(t, "g", &a, None, 2);
            g.tick(t);
        }
        assert!(!g.group("g").unwrap().members.contains_key(&b));
        assert_eq!(g.take_dirty(), vec!["g".to_string()]);
    }

    /// `group.max.size` counts members, not the member ids handed out with MEMBER_ID_REQUIRED;
    /// a new member beyond it gets GROUP_MAX_SIZE_REACHED without a member id, as Kafka.
    #[test]
    fn group_max_size_counts_members_not_pending_ids() {
        let mut g = Groups::new(
            GroupConfig {
                initial_rebalance_delay_ms: 0,
                group_max_size: 2,
                ..GroupConfig::default()
            },
            "s".into(),
        );
        let (a, _) = join_new(&mut g, 0, 1);
        g.sync(0, 3, sync_req(&a, 1, vec![]));
        let mut pending = Vec::new();
        for id in 10..15 {
            let e = g.join(1, id, join_req(""));
            let r = join_reply(&e, id);
            assert_eq!(r.error, Some(ResponseError::MemberIdRequired));
            pending.push((r.member_id, None));
        }
        let (b, e) = join_new(&mut g, 2, 20);
        assert!(e.is_empty(), "b waits for a to rejoin");
        // The unused ids go away (they would hold the rebalance until they expire, as in Kafka).
        assert!(g.leave(2, "g", &pending).1.iter().all(Option::is_none));
        let e = g.join(3, 30, join_req(&a));
        assert_eq!(join_reply(&e, 30).members.len(), 2);
        g.sync(4, 31, sync_req(&a, 2, vec![]));
        let e = g.join(5, 40, join_req(""));
        let r = join_reply(&e, 40);
        assert_eq!(r.error, Some(ResponseError::GroupMaxSizeReached));
        assert_eq!(r.member_id, "");
        let group = g.group("g").unwrap();
        assert_eq!(group.state, GroupState::Stable);
        assert!(group.members.contains_key(&a) && group.members.contains_key(&b));
    }

    /// Member ids handed out and not yet used are bounded per group; beyond the bound a first
    /// join is told to retry (COORDINATOR_LOAD_IN_PROGRESS), and the group's members are not
    /// affected.
    #[test]
    fn pending_member_ids_are_bounded() {
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        g.sync(0, 3, sync_req(&a, 1, vec![]));
        for id in 0..GROUP_PENDING_MEMBERS_MAX as u64 {
            let e = g.join(1, 100 + id, join_req(""));
            assert_eq!(
                join_reply(&e, 100 + id).error,
                Some(ResponseError::MemberIdRequired)
            );
        }
        let e = g.join(1, 99, join_req(""));
        assert_eq!(
            join_reply(&e, 99).error,
            Some(ResponseError::CoordinatorLoadInProgress)
        );
        assert_eq!(g.heartbeat(2, "g", &a, None, 1), None);
        // Once they expire there is room again.
        g.heartbeat(i64::from(SESSION), "g", &a, None, 1);
        g.tick(1 + i64::from(SESSION));
        let e = g.join(2 + i64::from(SESSION), 98, join_req(""));
        assert_eq!(
            join_reply(&e, 98).error,
            Some(ResponseError::MemberIdRequired)
        );
    }

    /// The coordinator's timer can sleep until exactly the next deadline, and a group is
    /// brought up to date on its own before it is described or deleted (issue 12, item 18).
    #[test]
    fn next_deadline_is_the_earliest_session_end_and_tick_one_expires_on_time() {
        let mut g = groups();
        assert_eq!(g.next_deadline_ms(0), None);
        let (a, _) = join_new(&mut g, 0, 1);
        g.sync(0, 3, sync_req(&a, 1, vec![]));
        assert_eq!(g.next_deadline_ms(0), Some(i64::from(SESSION)));
        assert_eq!(g.heartbeat(1_234, "g", &a, None, 1), None);
        let deadline = 1_234 + i64::from(SESSION);
        assert_eq!(g.next_deadline_ms(1_234), Some(deadline));
        // A rebalance waiting for a member to rejoin: its start time (past) is not a deadline.
        let (b, _) = join_new(&mut g, 2_000, 10);
        assert_eq!(g.group("g").unwrap().state, GroupState::PreparingRebalance);
        assert_eq!(g.next_deadline_ms(2_001), Some(deadline));
        let e = g.join(2_002, 20, join_req(&a));
        assert_eq!(join_reply(&e, 20).generation_id, 2);
        g.leave(2_003, "g", &[(b, None)]);
        g.join(2_004, 21, join_req(&a));
        g.sync(2_005, 22, sync_req(&a, 3, vec![]));
        assert_eq!(g.heartbeat(1_234, "g", &a, None, 3), None);
        assert!(g.tick_one("g", deadline - 1).is_empty());
        assert_eq!(g.check_deletable("g"), Err(ResponseError::NonEmptyGroup));
        g.tick_one("g", deadline);
        assert_eq!(g.group("g").unwrap().state, GroupState::Empty);
        assert_eq!(g.check_deletable("g"), Ok(()));
        assert_eq!(g.next_deadline_ms(deadline), None);
    }

    /// The protocol is the one most members prefer among those all of them support.
    #[test]
    fn protocol_selection_follows_member_votes() {
        let mut g = groups();
        let with = |member: &str, protocols: &[&str]| JoinRequest {
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: false,
            ..join_req(member)
        };
        g.join(0, 1, with("", &["range", "roundrobin"]));
        g.join(0, 2, with("", &["roundrobin", "range"]));
        let e = g.join(0, 3, with("", &["roundrobin", "sticky", "range"]));
        // The first member's join completed alone; the others joined the next rebalance.
        let leader = g.group("g").unwrap().leader.clone().unwrap();
        let e2 = g.join(1, 4, with(&leader, &["range", "roundrobin"]));
        let all: Vec<Effect> = e.into_iter().chain(e2).collect();
        let r = join_reply(&all, 4);
        assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
        assert!(r
            .members
            .iter()
            .all(|m| m.metadata == Bytes::from_static(b"roundrobin")));
    }

    /// SyncGroup with another protocol than the group's is refused; heartbeats while the
    /// leader computes the assignment are fine.
    #[test]
    fn sync_checks_protocol_and_heartbeat_during_completing_rebalance() {
        let mut g = groups();
        let (a, _) = join_new(&mut g, 0, 1);
        assert_eq!(g.heartbeat(1, "g", &a, None, 1), None);
        let e = g.sync(
            1,
            5,
            SyncRequest {
                protocol_name: Some("roundrobin".into()),
                ..sync_req(&a, 1, vec![])
            },
        );
        assert_eq!(
            sync_reply(&e, 5).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        let e = g.sync(1, 6, sync_req(&a, 0, vec![]));
        assert_eq!(
            sync_reply(&e, 6).error,
            Some(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat(1, "", &a, None, 1),
            Some(ResponseError::InvalidGroupId)
        );
        assert_eq!(
            g.leave(1, "", &[(a.clone(), None)]).0,
            Some(ResponseError::InvalidGroupId)
        );
        let e = g.sync(1, 7, sync_req("nobody", 1, vec![]));
        assert_eq!(
            sync_reply(&e, 7).error,
            Some(ResponseError::UnknownMemberId)
        );
    }

    /// One step of a random client population against one classic group (two groups, so
    /// that state of one never leaks into the other).
    #[derive(Clone, Debug)]
    enum Op {
        /// A new member joins (`instance`: a static member; `old`: the v3 way, no
        /// MEMBER_ID_REQUIRED round trip), preferring protocol `proto`.
        JoinNew {
            group: u8,
            instance: Option<u8>,
            proto: u8,
            old: bool,
        },
        /// A member id seen before joins again (maybe with other protocols).
        JoinKnown {
            group: u8,
            member: u8,
            proto: u8,
        },
        /// SyncGroup by a known member with the current generation (or one off).
        Sync {
            group: u8,
            member: u8,
            stale: bool,
        },
        Heartbeat {
            group: u8,
            member: u8,
        },
        Leave {
            group: u8,
            member: u8,
        },
        /// Time passes (up to a bit more than a session) and the timer runs.
        Tick {
            ms: u32,
        },
        /// The coordinator writes a snapshot of a group and restores it (a restart).
        Restart {
            group: u8,
        },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..2u8, proptest::option::of(0..3u8), 0..3u8, any::<bool>()).prop_map(
                |(group, instance, proto, old)| Op::JoinNew {
                    group,
                    instance,
                    proto,
                    old
                }
            ),
            (0..2u8, any::<u8>(), 0..3u8).prop_map(|(group, member, proto)| Op::JoinKnown {
                group,
                member,
                proto
            }),
            (0..2u8, any::<u8>(), any::<bool>()).prop_map(|(group, member, stale)| Op::Sync {
                group,
                member,
                stale
            }),
            (0..2u8, any::<u8>()).prop_map(|(group, member)| Op::Heartbeat { group, member }),
            (0..2u8, any::<u8>()).prop_map(|(group, member)| Op::Leave { group, member }),
            (0..12_000u32).prop_map(|ms| Op::Tick { ms }),
            (0..2u8).prop_map(|group| Op::Restart { group }),
        ]
    }

    /// Protocol lists: 0 and 1 share "range", 2 supports only "sticky".
    fn protocols(proto: u8) -> Vec<(String, Bytes)> {
        let names: &[&str] = match proto {
            0 => &["range", "roundrobin"],
            1 => &["roundrobin", "range"],
            _ => &["sticky"],
        };
        names
            .iter()
            .map(|n| (n.to_string(), Bytes::from_static(b"m")))
            .collect()
    }

    /// The request ids a group holds parked.
    fn parked(g: &Groups) -> BTreeSet<RequestId> {
        g.groups()
            .flat_map(|group| group.members.values())
            .flat_map(|m| m.awaiting_join.into_iter().chain(m.awaiting_sync))
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random sequences of joins, syncs, heartbeats, leaves, timer ticks and restarts keep
        /// every invariant after every step; generations never go back; and every parked
        /// request is answered exactly once: the requests waiting for an answer are exactly
        /// the ones the groups hold parked, and no answer names a request twice or one never
        /// made.
        #[test]
        fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let mut g = Groups::new(
                GroupConfig {
                    initial_rebalance_delay_ms: 100,
                    group_max_size: 4,
                    ..GroupConfig::default()
                },
                "s".into(),
            );
            let group_ids = ["g0", "g1"];
            let mut now: i64 = 0;
            let mut next_request: RequestId = 0;
            let mut waiting: BTreeSet<RequestId> = BTreeSet::new();
            let mut seen: Vec<String> = Vec::new();
            let mut generations: BTreeMap<String, i32> = BTreeMap::new();
            for op in ops {
                let mut effects = Vec::new();
                match op {
                    Op::JoinNew { group, instance, proto, old } => {
                        next_request += 1;
                        waiting.insert(next_request);
                        effects = g.join(now, next_request, JoinRequest {
                            group_id: group_ids[group as usize].into(),
                            group_instance_id: instance.map(|i| format!("i{i}")),
                            protocols: protocols(proto),
                            require_known_member_id: !old,
                            ..join_req("")
                        });
                    }
                    Op::JoinKnown { group, member, proto } if !seen.is_empty() => {
                        next_request += 1;
                        waiting.insert(next_request);
                        let member = &seen[member as usize % seen.len()];
                        effects = g.join(now, next_request, JoinRequest {
                            group_id: group_ids[group as usize].into(),
                            protocols: protocols(proto),
                            ..join_req(member)
                        });
                    }
                    Op::Sync { group, member, stale } if !seen.is_empty() => {
                        next_request += 1;
                        waiting.insert(next_request);
                        let group_id = group_ids[group as usize];
                        let member = &seen[member as usize % seen.len()];
                        let generation = g.group(group_id).map_or(0, |x| x.generation_id)
                            + i32::from(stale);
                        let assignments = g.group(group_id).map_or(Vec::new(), |x| {
                            x.members.keys().map(|m| (m.clone(), Bytes::from_static(b"a"))).collect()
                        });
                        effects = g.sync(now, next_request, SyncRequest {
                            group_id: group_id.into(),
                            ..sync_req(member, generation, assignments)
                        });
                    }
                    Op::Heartbeat { group, member } if !seen.is_empty() => {
                        let group_id = group_ids[group as usize];
                        let member = &seen[member as usize % seen.len()];
                        let generation = g.group(group_id).map_or(0, |x| x.generation_id);
                        g.heartbeat(now, group_id, member, None, generation);
                    }
                    Op::Leave { group, member } if !seen.is_empty() => {
                        let member = seen[member as usize % seen.len()].clone();
                        effects = g.leave(now, group_ids[group as usize], &[(member, None)]).2;
                    }
                    Op::Tick { ms } => {
                        now += i64::from(ms);
                        effects = g.tick(now);
                    }
                    Op::Restart { group } => {
                        let group_id = group_ids[group as usize];
                        if let Some(snapshot) = g.snapshot(group_id) {
                            // Parked requests die with the connections of the old process.
                            let dropped: BTreeSet<RequestId> = g
                                .group(group_id)
                                .into_iter()
                                .flat_map(|x| x.members.values())
                                .flat_map(|m| m.awaiting_join.into_iter().chain(m.awaiting_sync))
                                .collect();
                            waiting.retain(|r| !dropped.contains(r));
                            g.restore(group_id, snapshot, now);
                        }
                    }
                    _ => {}
                }
                for e in &effects {
                    let Effect::Reply { request_id, response } = e;
                    proptest::prop_assert!(
                        waiting.remove(request_id),
                        "answer to request {request_id}, which is not waiting: {e:?}"
                    );
                    if let Response::Join(r) = response {
                        if !r.member_id.is_empty() && !seen.contains(&r.member_id) {
                            seen.push(r.member_id.clone());
                        }
                    }
                }
                if let Err(v) = g.check_invariants() {
                    proptest::prop_assert!(false, "{v}");
                }
                proptest::prop_assert_eq!(&waiting, &parked(&g));
                for group in g.groups() {
                    let before = generations.insert(group.group_id.clone(), group.generation_id);
                    proptest::prop_assert!(
                        before.unwrap_or(0) <= group.generation_id,
                        "generation of {} went back", group.group_id
                    );
                }
            }
        }
    }
}
