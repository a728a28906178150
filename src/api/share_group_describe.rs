//! ShareGroupDescribe (KIP-932, API key 77): a share group's state, epochs, assignor and
//! members with their assignments (topic ids and names). An unknown group gets
//! GROUP_ID_NOT_FOUND with state `Dead`, as Kafka answers.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::share_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName};

use super::{decode, str_bytes, Outcome, AUTHORIZED_OPERATIONS_OMITTED};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::coordinator::share_group::{ShareGroup, SIMPLE_ASSIGNOR};
use crate::error::coordinator_gone_code;
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ShareGroupDescribeRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let ids: Vec<String> = body.group_ids.iter().map(|g| g.to_string()).collect();
    let answers = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            let groups = c.shares.groups.borrow();
            ids.iter()
                .map(|id| groups.group(id).cloned())
                .collect::<Vec<Option<ShareGroup>>>()
        })
        .await;
    let metadata = shard.metadata();
    let names: HashMap<uuid::Uuid, &str> = metadata
        .topics
        .iter()
        .map(|(name, t)| (t.id, name.as_str()))
        .collect();
    let mut response = ShareGroupDescribeResponse::default();
    for (i, group_id) in body.group_ids.iter().enumerate() {
        let mut g = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
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
            Ok(None) => {
                g.error_code = ResponseError::GroupIdNotFound.code();
                g.error_message = Some(str_bytes(format!("Group {} not found.", group_id.0)));
                g.group_state = str_bytes("Dead");
            }
            Ok(Some(group)) => {
                g.group_state = str_bytes(group.state());
                g.group_epoch = group.group_epoch;
                g.assignment_epoch = group.assignment_epoch;
                g.assignor_name = str_bytes(SIMPLE_ASSIGNOR);
                g.members = group
                    .members
                    .into_values()
                    .map(|m| {
                        Member::default()
                            .with_member_id(str_bytes(m.member_id))
                            .with_rack_id(m.rack_id.map(str_bytes))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(str_bytes(m.client_id))
                            .with_client_host(str_bytes(m.client_host))
                            .with_subscribed_topic_names(
                                m.subscribed_topic_names
                                    .into_iter()
                                    .map(|n| TopicName(str_bytes(n)))
                                    .collect(),
                            )
                            .with_assignment(
                                Assignment::default().with_topic_partitions(
                                    m.assignment
                                        .into_iter()
                                        .map(|(topic, partitions)| {
                                            TopicPartitions::default()
                                                .with_topic_id(topic)
                                                .with_topic_name(TopicName(str_bytes(
                                                    names.get(&topic).copied().unwrap_or_default(),
                                                )))
                                                .with_partitions(partitions.into_iter().collect())
                                        })
                                        .collect(),
                                ),
                            )
                    })
                    .collect();
            }
        }
        response.groups.push(g);
    }
    super::respond(&request, &response)
}
