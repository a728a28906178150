//! ListGroups: every group the coordinator shard knows, with Kafka's state (v4+) and type (v5+)
//! filters, matched case-insensitively as Kafka does: classic groups, KIP-848 consumer groups and
//! KIP-932 share groups (type and protocol type `share`).

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{decode, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ListGroupsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let listed = shard
        .invoke_on(COORDINATOR_SHARD, |c| async move {
            let mut listed = c.groups.list();
            listed.extend(c.shares.groups.borrow().groups().map(|g| {
                crate::shard::groups::ListedGroup {
                    group_id: g.group_id.clone(),
                    protocol_type: "share".into(),
                    state: g.state(),
                    group_type: "share",
                }
            }));
            listed
        })
        .await;
    let mut response = ListGroupsResponse::default();
    let Ok(listed) = listed else {
        response.error_code = coordinator_gone_code().code();
        return super::respond(&request, &response);
    };
    let states: Vec<String> = body
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = body.types_filter.iter().map(|s| s.to_lowercase()).collect();
    // Kafka: DESCRIBE on the cluster lists every group, else those the caller may DESCRIBE.
    let all = super::authz::cluster_allowed(shard, &request, super::authz::Op::Describe);
    for g in listed {
        if !all
            && !super::authz::allowed(
                shard,
                &request,
                super::authz::Op::Describe,
                super::authz::Res::Group,
                &g.group_id,
            )
        {
            continue;
        }
        if !states.is_empty() && !states.contains(&g.state.to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == g.group_type) {
            continue;
        }
        response.groups.push(
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type))
                .with_group_state(str_bytes(g.state))
                .with_group_type(str_bytes(g.group_type)),
        );
    }
    super::respond(&request, &response)
}
