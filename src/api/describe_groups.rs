//! DescribeGroups: state, protocol and members of classic groups (metadata and assignments
//! only while the group is Stable, as Kafka). A group the broker does not know, or a KIP-848
//! consumer group or a share group ("is not a classic group"), is reported Dead (v0-5) or GROUP_ID_NOT_FOUND
//! (v6+), as Kafka 4.1 does.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{authz, decode, str_bytes, Outcome, AUTHORIZED_OPERATIONS_OMITTED};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeGroupsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let ids: Vec<String> = body.groups.iter().map(|g| g.to_string()).collect();
    let answers = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            ids.iter()
                .map(|id| {
                    let consumer_group = c.groups.consumer.borrow().group(id).is_some()
                        || c.shares.groups.borrow().group(id).is_some();
                    (c.groups.describe(id), consumer_group)
                })
                .collect::<Vec<_>>()
        })
        .await;
    let mut response = DescribeGroupsResponse::default();
    for (i, group_id) in body.groups.iter().enumerate() {
        let mut g = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
        // Kafka: DESCRIBE on the group; the authorized operations when asked (v3+).
        let refused = authz::refusal(
            shard,
            &request,
            authz::Op::Describe,
            authz::Res::Group,
            group_id,
        )
        .or_else(|| shard.not_coordinator(CoordinatorKind::Group, group_id));
        if refused.is_none() && request.api_version >= 3 && body.include_authorized_operations {
            g.authorized_operations =
                authz::operations(shard, &request, authz::Res::Group, group_id);
        }
        match answers.as_ref().map(|a| a[i].clone()) {
            // Kafka's `DescribeGroupsResponse.groupError`: the code, every other field empty.
            _ if refused.is_some() => g.error_code = crate::error::code(refused),
            Err(_) => g.error_code = coordinator_gone_code().code(),
            Ok((None, consumer_group)) => {
                g.group_state = str_bytes("Dead");
                if request.api_version >= 6 {
                    g.error_code = ResponseError::GroupIdNotFound.code();
                    g.error_message = Some(str_bytes(if consumer_group {
                        format!("Group {} is not a classic group.", &**group_id)
                    } else {
                        format!("Group {} not found.", &**group_id)
                    }));
                }
            }
            Ok((Some(d), _)) => {
                g.group_state = str_bytes(d.state.name());
                g.protocol_type = str_bytes(d.protocol_type);
                g.protocol_data = str_bytes(d.protocol_data);
                g.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(m.identity.member_id))
                            .with_group_instance_id(m.identity.instance_id.map(str_bytes))
                            .with_client_id(str_bytes(m.identity.client_id))
                            .with_client_host(str_bytes(m.identity.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
            }
        }
        response.groups.push(g);
    }
    super::respond(&request, &response)
}
