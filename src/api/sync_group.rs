//! SyncGroup: runs on the coordinator shard; a follower's answer waits for the leader's
//! assignment (see `coordinator::group`).

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::authz::{Op, Res};
use super::{decode, str_bytes, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::coordinator::group::SyncRequest;
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: SyncGroupRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let sync = SyncRequest {
        group_id: body.group_id.to_string(),
        member_id: body.member_id.to_string(),
        group_instance_id: body.group_instance_id.map(|s| s.to_string()),
        generation_id: body.generation_id,
        protocol_type: body.protocol_type.map(|s| s.to_string()),
        protocol_name: body.protocol_name.map(|s| s.to_string()),
        assignments: body
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    if let Some(e) = super::authz::refusal(shard, &request, Op::Read, Res::Group, &sync.group_id)
        .or_else(|| shard.not_coordinator(CoordinatorKind::Group, &sync.group_id))
    {
        let response = SyncGroupResponse::default().with_error_code(e.code());
        return super::respond(&request, &response);
    }
    let answer = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            c.groups.sync(now_ms(), sync).await
        })
        .await;
    let mut response = SyncGroupResponse::default();
    match answer {
        Ok(r) => {
            response.error_code = crate::error::code(r.error);
            response.protocol_type = r.protocol_type.map(str_bytes);
            response.protocol_name = r.protocol_name.map(str_bytes);
            response.assignment = r.assignment;
        }
        Err(_) => response.error_code = coordinator_gone_code().code(),
    }
    super::respond(&request, &response)
}
