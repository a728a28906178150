//! ConsumerGroupDescribe (KIP-848, API key 69): a consumer group's state, epochs, assignor and
//! members with their current and target assignments (topic ids and names). A group the
//! coordinator does not know, or a classic group, gets GROUP_ID_NOT_FOUND, as Kafka 4 answers.

use crate::error::coordinator_gone_code;
use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};

use super::{decode, str_bytes, Outcome, AUTHORIZED_OPERATIONS_OMITTED};
use crate::coordinator::assignor;
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::groups::{ConsumerGroupDescription, ConsumerMemberDescription};
use crate::shard::{Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ConsumerGroupDescribeRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let ids: Vec<String> = body.group_ids.iter().map(|g| g.to_string()).collect();
    let answers = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            ids.iter()
                .map(|id| c.groups.consumer_describe(id))
                .collect::<Vec<_>>()
        })
        .await;
    let metadata = shard.metadata();
    let names: std::collections::HashMap<uuid::Uuid, &str> = metadata
        .topics
        .iter()
        .map(|(name, t)| (t.id, name.as_str()))
        .collect();
    let mut response = ConsumerGroupDescribeResponse::default();
    for (i, group_id) in body.group_ids.iter().enumerate() {
        let mut g = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
        // Kafka: DESCRIBE on the group; its authorized operations when asked.
        let refused = super::authz::refusal(
            shard,
            &request,
            super::authz::Op::Describe,
            super::authz::Res::Group,
            group_id,
        )
        .or_else(|| shard.not_coordinator(CoordinatorKind::Group, group_id));
        if refused.is_none() && body.include_authorized_operations {
            g.authorized_operations =
                super::authz::operations(shard, &request, super::authz::Res::Group, group_id);
        }
        match answers.as_ref().map(|a| a[i].clone()) {
            _ if refused.is_some() => g.error_code = crate::error::code(refused),
            Err(_) => g.error_code = coordinator_gone_code().code(),
            Ok(Err(message)) => {
                g.error_code = ResponseError::GroupIdNotFound.code();
                g.error_message = Some(str_bytes(message));
                g.group_state = str_bytes("Dead");
            }
            Ok(Ok(ConsumerGroupDescription {
                state,
                group_epoch,
                assignment_epoch,
                assignor,
                members,
            })) => {
                g.group_state = str_bytes(state);
                g.group_epoch = group_epoch;
                g.assignment_epoch = assignment_epoch;
                g.assignor_name = str_bytes(assignor);
                g.members = members.into_iter().map(|m| member(m, &names)).collect();
            }
        }
        response.groups.push(g);
    }
    super::respond(&request, &response)
}

/// An assignment with each topic's name (from its id; empty if unknown).
fn to_assignment(a: assignor::Assignment, names: &HashMap<uuid::Uuid, &str>) -> Assignment {
    Assignment::default().with_topic_partitions(
        a.into_iter()
            .map(|(topic, partitions)| {
                TopicPartitions::default()
                    .with_topic_id(topic)
                    .with_topic_name(TopicName(str_bytes(
                        names.get(&topic).copied().unwrap_or_default(),
                    )))
                    .with_partitions(partitions.into_iter().collect())
            })
            .collect(),
    )
}

/// One member as described.
fn member(m: ConsumerMemberDescription, names: &HashMap<uuid::Uuid, &str>) -> Member {
    Member::default()
        .with_member_id(str_bytes(m.identity.member_id))
        .with_instance_id(m.identity.instance_id.map(str_bytes))
        .with_rack_id(m.rack_id.map(str_bytes))
        .with_member_epoch(m.member_epoch)
        .with_client_id(str_bytes(m.identity.client_id))
        .with_client_host(str_bytes(m.identity.client_host))
        .with_subscribed_topic_names(
            m.subscribed_topic_names
                .into_iter()
                .map(|n| TopicName(str_bytes(n)))
                .collect(),
        )
        .with_subscribed_topic_regex(m.subscribed_topic_regex.map(str_bytes))
        .with_assignment(to_assignment(m.assignment, names))
        .with_target_assignment(to_assignment(m.target_assignment, names))
        // 1: the member uses the consumer protocol (0: classic).
        .with_member_type(1)
}
