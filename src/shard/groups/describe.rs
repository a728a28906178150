//! Group listing, description and deletion on the coordinator shard: ListGroups,
//! DescribeGroups, ConsumerGroupDescribe and DeleteGroups, with what they report.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;

use super::GroupCoordinator;
use crate::coordinator::group::GroupState;
use crate::coordinator::offsets::{OffsetChange, OffsetKey};

impl GroupCoordinator {
    /// ConsumerGroupDescribe of one group, or Kafka's GROUP_ID_NOT_FOUND message.
    pub fn consumer_describe(&self, group_id: &str) -> Result<ConsumerGroupDescription, String> {
        self.consumer.borrow_mut().tick(crate::shard::now_ms());
        let consumer = self.consumer.borrow();
        let Some(g) = consumer.group(group_id) else {
            return Err(if self.groups.borrow().group(group_id).is_some() {
                format!("Group {group_id} is not a consumer group.")
            } else {
                format!("Group {group_id} not found.")
            });
        };
        Ok(ConsumerGroupDescription {
            state: g.state_name(),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.clone(),
            members: g
                .members
                .values()
                .map(|m| m.describe(g.target.get(&m.member_id).cloned().unwrap_or_default()))
                .collect(),
        })
    }

    /// ListGroups: every group, including those known only by their committed offsets
    /// (reported Empty, as after a Kafka coordinator load).
    pub fn list(&self) -> Vec<ListedGroup> {
        let groups = self.groups.borrow();
        let mut out: BTreeMap<String, ListedGroup> = groups
            .groups()
            .map(|g| {
                (
                    g.group_id.clone(),
                    ListedGroup {
                        group_id: g.group_id.clone(),
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        state: g.state.name(),
                        group_type: "classic",
                    },
                )
            })
            .collect();
        for g in self.consumer.borrow().groups() {
            out.insert(
                g.group_id.clone(),
                ListedGroup {
                    group_id: g.group_id.clone(),
                    protocol_type: "consumer".into(),
                    state: g.state_name(),
                    group_type: "consumer",
                },
            );
        }
        for id in self.offsets.borrow().group_ids() {
            out.entry(id.clone()).or_insert_with(|| ListedGroup {
                group_id: id,
                protocol_type: String::new(),
                state: GroupState::Empty.name(),
                group_type: "classic",
            });
        }
        out.into_values().collect()
    }

    /// DescribeGroups of one group; `None` if the broker knows nothing of it.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        self.tick_group(group_id, crate::shard::now_ms());
        // A consumer group is not described here (Kafka: "is not a classic group").
        if self.consumer.borrow().group(group_id).is_some() {
            return None;
        }
        let groups = self.groups.borrow();
        let Some(g) = groups.group(group_id) else {
            return self
                .offsets
                .borrow()
                .has_group(group_id)
                .then(|| GroupDescription {
                    state: GroupState::Empty,
                    protocol_type: String::new(),
                    protocol_data: String::new(),
                    members: Vec::new(),
                });
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let stable_protocol = stable.then_some(protocol.as_str());
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            // Kafka gives the protocol and the members' metadata and assignment only when the
            // group is stable.
            protocol_data: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members_in_order()
                .into_iter()
                .map(|m| m.describe(stable_protocol))
                .collect(),
        })
    }

    /// DeleteGroups of one group: NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND if
    /// unknown; otherwise its committed offsets are deleted durably, then the group.
    pub async fn delete_group(&self, now_ms: i64, group_id: &str) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        self.tick_group(group_id, now_ms);
        if self.consumer.borrow().has_members(group_id) {
            return Err(ResponseError::NonEmptyGroup);
        }
        let known_consumer_group = self.consumer.borrow().group(group_id).is_some();
        let known_group = self.groups.borrow().group(group_id).is_some();
        if known_group {
            self.groups.borrow().check_deletable(group_id)?;
        } else if !known_consumer_group && !self.offsets.borrow().has_group(group_id) {
            return Err(ResponseError::GroupIdNotFound);
        }
        let tombstones: Vec<OffsetChange> = self
            .offsets
            .borrow()
            .of_group(group_id)
            .into_iter()
            .map(|((topic, partition), _)| {
                (
                    OffsetKey {
                        group: group_id.to_string(),
                        topic,
                        partition,
                    },
                    None,
                )
            })
            .collect();
        self.write_offsets(tombstones, now_ms).await?;
        // A member may have joined while the tombstones were written: then the group stays.
        let result = if known_consumer_group {
            self.consumer.borrow_mut().remove_if_empty(group_id)
        } else {
            match self.groups.borrow_mut().delete_group(group_id) {
                Ok(()) | Err(ResponseError::GroupIdNotFound) => Ok(()),
                Err(e) => Err(e),
            }
        };
        self.persist_groups().await;
        result
    }
}

/// What ConsumerGroupDescribe reports of a consumer group.
#[derive(Clone, Debug)]
pub struct ConsumerGroupDescription {
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberDescription>,
}

/// What ConsumerGroupDescribe reports of a member (shared with DescribeGroups' member
/// description through `coordinator::member`).
pub use crate::coordinator::member::{ConsumerMemberDescription, MemberDescription};

/// One row of ListGroups.
#[derive(Clone, Debug)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Kafka's state name for the group's type.
    pub state: &'static str,
    /// "classic" or "consumer".
    pub group_type: &'static str,
}

/// What DescribeGroups reports of a group.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_data: String,
    pub members: Vec<MemberDescription>,
}
