//! ConsumerGroupHeartbeat (KIP-848, API key 68): join, heartbeat and leave of a consumer-group
//! member in one request, answered at once by the coordinator shard's
//! `coordinator::consumer_group` state machine with the member's epoch and assignment.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::{decode, str_bytes, Outcome};
use crate::coordinator::consumer_group::HeartbeatRequest;
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ConsumerGroupHeartbeatRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let version = request.api_version;
    let req = HeartbeatRequest {
        group_id: body.group_id.to_string(),
        member_id: body.member_id.to_string(),
        member_epoch: body.member_epoch,
        instance_id: body.instance_id.map(|s| s.to_string()),
        rack_id: body.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        subscribed_topic_names: body
            .subscribed_topic_names
            .map(|names| names.iter().map(|n| n.to_string()).collect()),
        subscribed_topic_regex: body.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: body.server_assignor.map(|s| s.to_string()),
        owned: body.topic_partitions.map(|tps| {
            tps.into_iter()
                .map(|tp| (tp.topic_id, tp.partitions))
                .collect()
        }),
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
        (!names.iter().all(describable))
            .then_some(kafka_protocol::error::ResponseError::TopicAuthorizationFailed)
    })
    .or_else(|| shard.not_coordinator(CoordinatorKind::Group, &req.group_id));
    if let Some(e) = refused {
        let response = ConsumerGroupHeartbeatResponse::default().with_error_code(e.code());
        return super::respond(&request, &response);
    }
    let answer = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            let metadata = c.metadata();
            c.groups
                .consumer_heartbeat(now_ms(), version, &metadata, req)
                .await
        })
        .await;
    let response = match answer {
        Err(_) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(coordinator_gone_code().code()),
        Ok(r) => ConsumerGroupHeartbeatResponse::default()
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
