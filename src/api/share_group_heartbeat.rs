//! ShareGroupHeartbeat (KIP-932, API key 76): join, heartbeat and leave of a share-group member
//! in one request, answered at once by the coordinator shard's `coordinator::share_group` state
//! machine with the member's epoch and assignment. A member that leaves gives back the records
//! it holds (`shard::shares`).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};

use super::{decode, str_bytes, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::coordinator::share_group::{HeartbeatRequest, HeartbeatResponse, LEAVE_EPOCH};
use crate::error::coordinator_gone_code;
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ShareGroupHeartbeatRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let req = HeartbeatRequest {
        group_id: body.group_id.to_string(),
        member_id: body.member_id.to_string(),
        member_epoch: body.member_epoch,
        rack_id: body.rack_id.map(|s| s.to_string()),
        subscribed_topic_names: body
            .subscribed_topic_names
            .map(|names| names.iter().map(|n| n.to_string()).collect()),
        client_id: request.client_id_or_empty().to_string(),
        client_host: request.client_host.to_string(),
    };
    // Kafka: READ on the group, then DESCRIBE on every subscribed topic name.
    let refused = super::authz::refusal(
        shard,
        &request,
        super::authz::Op::Read,
        super::authz::Res::Group,
        &req.group_id,
    )
    .or_else(|| {
        let names = req.subscribed_topic_names.as_deref().unwrap_or_default();
        let describable = |n: &String| {
            super::authz::allowed(
                shard,
                &request,
                super::authz::Op::Describe,
                super::authz::Res::Topic,
                n,
            )
        };
        (!names.iter().all(describable)).then_some(ResponseError::TopicAuthorizationFailed)
    })
    .or_else(|| shard.not_coordinator(CoordinatorKind::Group, &req.group_id));
    if let Some(e) = refused {
        let response = ShareGroupHeartbeatResponse::default().with_error_code(e.code());
        return super::respond(&request, &response);
    }
    let answer = shard
        .invoke_on(
            COORDINATOR_SHARD,
            move |c| async move { heartbeat(&c, req) },
        )
        .await;
    let response = match answer {
        Err(_) => {
            ShareGroupHeartbeatResponse::default().with_error_code(coordinator_gone_code().code())
        }
        Ok(r) => ShareGroupHeartbeatResponse::default()
            .with_error_code(crate::error::code(r.error))
            .with_error_message(r.error_message.map(str_bytes))
            .with_member_id(r.member_id.map(str_bytes))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
            .with_assignment(r.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(topic, partitions)| {
                            TopicPartitions::default()
                                .with_topic_id(topic)
                                .with_partitions(partitions.into_iter().collect())
                        })
                        .collect(),
                )
            })),
    };
    super::respond(&request, &response)
}

/// On the coordinator shard (also the HTTP share streams' membership, `crate::http::share`):
/// a group id held by a classic or consumer group is not a share
/// group (GROUP_ID_NOT_FOUND, as Kafka).
pub(crate) fn heartbeat(c: &Shard, req: HeartbeatRequest) -> HeartbeatResponse {
    let refuse = |error: ResponseError, message: String| HeartbeatResponse {
        error: Some(error),
        error_message: Some(message),
        member_id: None,
        member_epoch: 0,
        heartbeat_interval_ms: 0,
        assignment: None,
    };
    let taken = c.groups.groups.borrow().group(&req.group_id).is_some()
        || c.groups.consumer.borrow().group(&req.group_id).is_some();
    if taken {
        return refuse(
            ResponseError::GroupIdNotFound,
            format!("Group {} is not a share group.", req.group_id),
        );
    }
    if !c.shares.is_loaded() {
        return refuse(ResponseError::CoordinatorLoadInProgress, String::new());
    }
    let metadata = c.metadata();
    let (group, member, leaving) = (
        req.group_id.clone(),
        req.member_id.clone(),
        req.member_epoch == LEAVE_EPOCH,
    );
    let mut groups = c.shares.groups.borrow_mut();
    let timings = crate::coordinator::group_config::share_group_timings(
        metadata.group_configs.get(&req.group_id),
        groups.defaults(),
    );
    let response = groups.heartbeat_with(now_ms(), &metadata.topics, req, timings);
    drop(groups);
    if leaving && response.error.is_none() {
        c.shares.member_leaving(&group, &member, now_ms());
    }
    response
}
