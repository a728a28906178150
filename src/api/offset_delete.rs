//! OffsetDelete: removes a group's committed offsets (durably) for partitions its members do
//! not subscribe to (GROUP_SUBSCRIBED_TO_TOPIC otherwise); GROUP_ID_NOT_FOUND for an unknown
//! group, UNKNOWN_TOPIC_OR_PARTITION for partitions the broker does not have.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{authz, decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: OffsetDeleteRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let metadata = shard.metadata();
    let mut local: Vec<Option<ResponseError>> = Vec::new();
    let mut asked = Vec::new();
    for t in &body.topics {
        let known = metadata.topics.get(t.name.as_str());
        // Kafka: READ on each topic (and DELETE on the group, below).
        let denied = authz::refusal(shard, &request, authz::Op::Read, authz::Res::Topic, &t.name);
        for p in &t.partitions {
            if denied.is_some() {
                local.push(denied);
            } else if known
                .is_some_and(|k| p.partition_index >= 0 && p.partition_index < k.partitions)
            {
                local.push(None);
                asked.push((t.name.to_string(), p.partition_index));
            } else {
                local.push(Some(ResponseError::UnknownTopicOrPartition));
            }
        }
    }
    let group_id = body.group_id.to_string();
    let refused = authz::refusal(
        shard,
        &request,
        authz::Op::Delete,
        authz::Res::Group,
        &group_id,
    )
    .or_else(|| shard.not_coordinator(CoordinatorKind::Group, &group_id));
    if let Some(e) = refused {
        let response = OffsetDeleteResponse::default().with_error_code(e.code());
        return super::respond(&request, &response);
    }
    let answer = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            c.groups.delete_offsets(now_ms(), &group_id, asked).await
        })
        .await
        .unwrap_or(Err(coordinator_gone_code()));
    let mut response = OffsetDeleteResponse::default();
    let mut remote = match answer {
        Ok(errors) => errors.into_iter(),
        Err(e) => {
            response.error_code = e.code();
            return super::respond(&request, &response);
        }
    };
    let mut local = local.into_iter();
    for t in &body.topics {
        let mut topic = OffsetDeleteResponseTopic::default().with_name(t.name.clone());
        for p in &t.partitions {
            let error = match local.next().flatten() {
                Some(e) => Some(e),
                None => remote.next().flatten(),
            };
            topic.partitions.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(crate::error::code(error)),
            );
        }
        response.topics.push(topic);
    }
    super::respond(&request, &response)
}
