//! OffsetCommit: committed offsets of a classic group (or a simple consumer with generation
//! -1), checked against the group's generation and members (for a KIP-848 consumer group:
//! the member epoch, STALE_MEMBER_EPOCH if it is not the member's current one, as Kafka 4), written durably on the coordinator
//! shard (see `shard::groups`) and acknowledged once on disk.
//!
//! Partitions of topics this broker does not have get UNKNOWN_TOPIC_OR_PARTITION (checked
//! against this shard's metadata snapshot). `retention_time_ms` (v2-4) is ignored: offsets
//! expire by the broker's `offsets.retention.minutes` only (see `shard::groups`).

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{authz, decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::coordinator::metadata::ClusterMetadata;
use crate::coordinator::offsets::CommittedOffset;
use crate::protocol::header::ParsedRequest;
use crate::shard::groups::Committer;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: OffsetCommitRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let metadata = shard.metadata();
    let now = now_ms();
    // Kafka: READ on the group, then READ on each topic.
    let readable = |t: &str| authz::allowed(shard, &request, authz::Op::Read, authz::Res::Topic, t);
    let (decided, entries) = check_partitions(&body, now, &metadata, &readable);
    let group_id = body.group_id.to_string();
    let group_denied = authz::refusal(
        shard,
        &request,
        authz::Op::Read,
        authz::Res::Group,
        &group_id,
    );
    let answer: Result<Vec<Option<ResponseError>>, ResponseError> = if let Some(e) = group_denied {
        Err(e)
    } else if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else if let Some(e) = shard.not_coordinator(CoordinatorKind::Group, &group_id) {
        Err(e)
    } else if entries.is_empty() {
        Ok(Vec::new())
    } else {
        let who = Committer {
            group_id,
            member_id: body.member_id.to_string(),
            group_instance_id: body.group_instance_id.as_ref().map(|s| s.to_string()),
            generation_id: body.generation_id_or_member_epoch,
            api_version: request.api_version,
        };
        shard
            .invoke_on(COORDINATOR_SHARD, move |c| async move {
                c.groups.commit(now, &who, entries).await
            })
            .await
            .unwrap_or(Err(coordinator_gone_code()))
    };
    let mut coordinator_errors = match &answer {
        Ok(errors) => errors.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let mut response = OffsetCommitResponse::default();
    for (topic, row) in body.topics.iter().zip(decided) {
        let mut t = OffsetCommitResponseTopic::default().with_name(topic.name.clone());
        for (p, local) in topic.partitions.iter().zip(row) {
            let error = match (local, &answer) {
                (_, Err(e)) if group_denied.is_some() => Some(*e),
                (Some(e), _) => Some(e),
                (None, Err(e)) => Some(*e),
                (None, Ok(_)) => coordinator_errors.next().flatten(),
            };
            t.partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(crate::error::code(error)),
            );
        }
        response.topics.push(t);
    }
    super::respond(&request, &response)
}
/// Per topic, per partition: the error decided without the coordinator, or None.
type Decided = Vec<Vec<Option<ResponseError>>>;

/// Per partition: Some(error) decided here, or None = sent to the coordinator (with its entry).
fn check_partitions(
    body: &OffsetCommitRequest,
    now: i64,
    metadata: &ClusterMetadata,
    readable: &dyn Fn(&str) -> bool,
) -> (Decided, Vec<(String, i32, CommittedOffset)>) {
    let mut decided: Vec<Vec<Option<ResponseError>>> = Vec::new();
    let mut entries = Vec::new();
    for topic in &body.topics {
        let known = metadata.topics.get(topic.name.as_str());
        let mut row = Vec::new();
        let denied = !readable(topic.name.as_str());
        for p in &topic.partitions {
            if denied {
                row.push(Some(ResponseError::TopicAuthorizationFailed));
                continue;
            }
            if !known.is_some_and(|t| p.partition_index >= 0 && p.partition_index < t.partitions) {
                row.push(Some(ResponseError::UnknownTopicOrPartition));
                continue;
            }
            row.push(None);
            entries.push((
                topic.name.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
            ));
        }
        decided.push(row);
    }
    (decided, entries)
}
