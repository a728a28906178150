//! AlterShareGroupOffsets (KIP-932, API key 91, v0) and DeleteShareGroupOffsets (92, v0): set
//! the start offset of share partitions of an empty share group, or remove their state (the
//! next fetch starts them by `share_auto_offset_reset`), durably before the answer
//! (`shard::shares`). READ on the group (else GROUP_AUTHORIZATION_FAILED), READ on each topic
//! (else TOPIC_AUTHORIZATION_FAILED); GROUP_ID_NOT_FOUND for an unknown group and
//! NON_EMPTY_GROUP while it has members (top-level), UNKNOWN_TOPIC_OR_PARTITION for topics and
//! partitions that do not exist, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
use kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, DeleteShareGroupOffsetsRequest,
    DeleteShareGroupOffsetsResponse,
};

use super::{decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::error::coordinator_gone_code;
use crate::protocol::header::ParsedRequest;
use crate::shard::shares::ShareKey;
use crate::shard::{Shard, COORDINATOR_SHARD};

/// The group-level refusal (authorization, coordinator) of `group`.
fn refused(shard: &Rc<Shard>, request: &ParsedRequest, group: &str) -> Option<ResponseError> {
    super::authz::refusal(
        shard,
        request,
        super::authz::Op::Read,
        super::authz::Res::Group,
        group,
    )
    .or_else(|| shard.not_coordinator(CoordinatorKind::Group, group))
}

fn readable(shard: &Rc<Shard>, request: &ParsedRequest, topic: &str) -> bool {
    super::authz::allowed(
        shard,
        request,
        super::authz::Op::Read,
        super::authz::Res::Topic,
        topic,
    )
}

/// Runs `changes` on the coordinator shard.
async fn reset(
    shard: &Rc<Shard>,
    group: String,
    changes: Vec<(ShareKey, Option<i64>)>,
) -> Result<(), ResponseError> {
    shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            c.shares.reset(&group, changes).await
        })
        .await
        .unwrap_or_else(|_| Err(coordinator_gone_code()))
}

pub async fn alter(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: AlterShareGroupOffsetsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group = body.group_id.to_string();
    if let Some(e) = refused(shard, &request, &group) {
        let response = AlterShareGroupOffsetsResponse::default().with_error_code(e.code());
        return super::respond(&request, &response);
    }
    let metadata = shard.metadata();
    let mut changes = Vec::new();
    let mut topics = Vec::new();
    for t in &body.topics {
        let name = t.topic_name.to_string();
        let meta = metadata.topics.get(&name);
        let mut out = AlterShareGroupOffsetsResponseTopic::default()
            .with_topic_name(t.topic_name.clone())
            .with_topic_id(meta.map(|m| m.id).unwrap_or_default());
        for p in &t.partitions {
            let error = if !readable(shard, &request, &name) {
                Some(ResponseError::TopicAuthorizationFailed)
            } else {
                match meta {
                    Some(m) if (0..m.partitions).contains(&p.partition_index) => {
                        changes.push((
                            ShareKey {
                                group: group.clone(),
                                topic_id: m.id,
                                partition: p.partition_index,
                            },
                            Some(p.start_offset),
                        ));
                        None
                    }
                    _ => Some(ResponseError::UnknownTopicOrPartition),
                }
            };
            out.partitions.push(
                AlterShareGroupOffsetsResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(crate::error::code(error)),
            );
        }
        topics.push(out);
    }
    let response = match reset(shard, group, changes).await {
        Err(e) => AlterShareGroupOffsetsResponse::default().with_error_code(e.code()),
        Ok(()) => AlterShareGroupOffsetsResponse::default().with_responses(topics),
    };
    super::respond(&request, &response)
}

pub async fn delete(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DeleteShareGroupOffsetsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group = body.group_id.to_string();
    if let Some(e) = refused(shard, &request, &group) {
        let response = DeleteShareGroupOffsetsResponse::default().with_error_code(e.code());
        return super::respond(&request, &response);
    }
    let metadata = shard.metadata();
    let mut changes = Vec::new();
    let mut topics = Vec::new();
    for t in &body.topics {
        let name = t.topic_name.to_string();
        let meta = metadata.topics.get(&name);
        let error = if !readable(shard, &request, &name) {
            Some(ResponseError::TopicAuthorizationFailed)
        } else {
            match meta {
                Some(m) => {
                    changes.extend((0..m.partitions).map(|partition| {
                        let key = ShareKey {
                            group: group.clone(),
                            topic_id: m.id,
                            partition,
                        };
                        (key, None)
                    }));
                    None
                }
                None => Some(ResponseError::UnknownTopicOrPartition),
            }
        };
        topics.push(
            DeleteShareGroupOffsetsResponseTopic::default()
                .with_topic_name(t.topic_name.clone())
                .with_topic_id(meta.map(|m| m.id).unwrap_or_default())
                .with_error_code(crate::error::code(error)),
        );
    }
    let response = match reset(shard, group, changes).await {
        Err(e) => DeleteShareGroupOffsetsResponse::default().with_error_code(e.code()),
        Ok(()) => DeleteShareGroupOffsetsResponse::default().with_responses(topics),
    };
    super::respond(&request, &response)
}
