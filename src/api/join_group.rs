//! JoinGroup: runs on the coordinator shard, where the answer may wait for the rebalance to
//! complete (see `coordinator::group`).

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::authz::{Op, Res};
use super::{decode, str_bytes, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::coordinator::group::JoinRequest;
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: JoinGroupRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let version = request.api_version;
    let join = JoinRequest {
        group_id: body.group_id.to_string(),
        member_id: body.member_id.to_string(),
        group_instance_id: body.group_instance_id.map(|s| s.to_string()),
        client_id: request.client_id_or_empty().to_string(),
        client_host: request.client_host.to_string(),
        session_timeout_ms: body.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            body.rebalance_timeout_ms
        } else {
            body.session_timeout_ms
        },
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = join.member_id.clone();
    if let Some(e) = super::authz::refusal(shard, &request, Op::Read, Res::Group, &join.group_id)
        .or_else(|| shard.not_coordinator(CoordinatorKind::Group, &join.group_id))
    {
        let response = JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(str_bytes(member_id))
            .with_protocol_name(Some(str_bytes("")));
        return super::respond(&request, &response);
    }
    let answer = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            c.groups.join(now_ms(), join).await
        })
        .await;
    let mut response = JoinGroupResponse::default();
    match answer {
        Ok(r) => {
            response.error_code = crate::error::code(r.error);
            response.generation_id = r.generation_id;
            response.protocol_type = r.protocol_type.map(str_bytes);
            response.protocol_name = if version >= 7 {
                r.protocol_name.map(str_bytes)
            } else {
                // Before v7 the field is not nullable.
                Some(str_bytes(r.protocol_name.unwrap_or_default()))
            };
            response.leader = str_bytes(r.leader);
            response.member_id = str_bytes(r.member_id);
            response.members = r
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(str_bytes))
                        .with_metadata(m.metadata)
                })
                .collect();
        }
        Err(_) => {
            response.error_code = coordinator_gone_code().code();
            response.generation_id = -1;
            response.member_id = str_bytes(member_id);
            response.protocol_name = Some(str_bytes(""));
        }
    }
    super::respond(&request, &response)
}
