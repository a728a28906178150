//! LeaveGroup: one member (v0-2) or a batch of members by member id or static instance id
//! (v3+), removed at once by the coordinator shard; the rest of the group rebalances.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::authz::{Op, Res};
use super::{decode, str_bytes, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: LeaveGroupRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let batched = request.api_version >= 3;
    let members: Vec<(String, Option<String>)> = if batched {
        body.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(body.member_id.to_string(), None)]
    };
    let group_id = body.group_id.to_string();
    let leaving = members.clone();
    if let Some(e) = super::authz::refusal(shard, &request, Op::Read, Res::Group, &group_id)
        .or_else(|| shard.not_coordinator(CoordinatorKind::Group, &group_id))
    {
        let response = LeaveGroupResponse::default().with_error_code(e.code());
        return super::respond(&request, &response);
    }
    let answer = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            c.groups.leave(now_ms(), &group_id, &leaving).await
        })
        .await;
    let (top, each) = answer.unwrap_or((Some(coordinator_gone_code()), Vec::new()));
    let mut response = LeaveGroupResponse::default();
    if batched {
        response.error_code = crate::error::code(top);
        if top.is_none() {
            response.members = members
                .into_iter()
                .zip(each)
                .map(|((member_id, instance), error)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member_id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_error_code(crate::error::code(error))
                })
                .collect();
        }
    } else {
        response.error_code = crate::error::code(top.or(each.into_iter().next().flatten()));
    }
    super::respond(&request, &response)
}
