//! What the two consumer-group protocols share about a member, and how each describes its
//! members to the describe APIs.
//!
//! A member of a classic group ([`super::group::Member`]) and one of a KIP-848 consumer group
//! ([`super::consumer_group::ConsumerMember`]) have one thing in common, their identity
//! ([`MemberIdentity`]: member id, static instance id, client id and host), which both
//! descriptions carry. The rest stays separate because the protocols differ: a classic member
//! carries the protocols it offered with their opaque metadata, the leader-computed assignment
//! as opaque bytes, the requests it has parked (JoinGroup, SyncGroup) and its join order; a
//! consumer-group member carries epochs, subscriptions (names and regex), partitions assigned
//! and pending revocation as topic ids, and server-side deadlines. One struct for both would
//! have half its fields meaningless for each kind, and the invariants of each state machine
//! would have to say which half.
//!
//! Descriptions: DescribeGroups answers classic groups only (a consumer group gets
//! GROUP_ID_NOT_FOUND, "is not a classic group", as in Kafka 4.1), with a
//! [`MemberDescription`]; ConsumerGroupDescribe answers consumer groups with a
//! [`ConsumerMemberDescription`]. The blocking client's `client::groups::MemberDescription`
//! is the client side of DescribeGroups (it decodes the assignment into topic partitions) and
//! stays in the client, which does not depend on the broker.

use bytes::Bytes;

use super::assignor::Assignment;

/// Who a member is: what both protocols keep and every description reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberIdentity {
    pub member_id: String,
    /// The static member's `group.instance.id`.
    pub instance_id: Option<String>,
    pub client_id: String,
    /// The member's host as the broker saw it.
    pub client_host: String,
}

/// What DescribeGroups reports of a classic group's member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub identity: MemberIdentity,
    /// The member's metadata for the group's protocol (empty unless the group is Stable).
    pub metadata: Bytes,
    /// The leader's assignment for the member (empty unless the group is Stable).
    pub assignment: Bytes,
}

/// What ConsumerGroupDescribe reports of a consumer group's member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerMemberDescription {
    pub identity: MemberIdentity,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target_assignment: Assignment,
}
