//! Heartbeat: answered at once by the coordinator shard (REBALANCE_IN_PROGRESS tells a member
//! to rejoin).

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::authz::{Op, Res};
use super::{decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: HeartbeatRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.to_string();
    let member_id = body.member_id.to_string();
    let instance = body.group_instance_id.map(|s| s.to_string());
    let generation = body.generation_id;
    let refused = super::authz::refusal(shard, &request, Op::Read, Res::Group, &group_id)
        .or_else(|| shard.not_coordinator(CoordinatorKind::Group, &group_id));
    let answer = match refused {
        Some(e) => Ok(Some(e)),
        None => {
            shard
                .invoke_on(COORDINATOR_SHARD, move |c| async move {
                    c.groups.heartbeat(
                        now_ms(),
                        &group_id,
                        &member_id,
                        instance.as_deref(),
                        generation,
                    )
                })
                .await
        }
    };
    let error = answer.unwrap_or(Some(coordinator_gone_code()));
    let response = HeartbeatResponse::default().with_error_code(crate::error::code(error));
    super::respond(&request, &response)
}
