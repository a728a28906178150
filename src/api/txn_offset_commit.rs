//! TxnOffsetCommit: consumer offsets sent inside a transaction, to the group's coordinator.
//! When the transaction coordinator is on the same node they are held with the transaction
//! (shard 0, durable in its Prepare record) and written to the offsets log only when it
//! commits; otherwise the group coordinator verifies the transaction with its coordinator and
//! holds them until the transaction's marker for the group's `__consumer_offsets` partition
//! commits or drops them (`shard::txns`, Kafka's pending transactional offsets). An abort
//! drops them.
//!
//! Checks: the group must have been added with AddOffsetsToTxn and the producer must own the
//! transaction (INVALID_TXN_STATE / INVALID_PRODUCER_ID_MAPPING / PRODUCER_FENCED otherwise);
//! from v3 a member id and generation are checked against the group as OffsetCommit does.
//! From v4 a group not added to the transaction is TRANSACTION_ABORTABLE (as Kafka answers),
//! INVALID_TXN_STATE before.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::{authz, decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::coordinator::metadata::ClusterMetadata;
use crate::coordinator::offsets::{CommittedOffset, OffsetKey, OFFSET_METADATA_BYTES_MAX};
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, txns, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: TxnOffsetCommitRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let metadata = shard.metadata();
    let now = now_ms();
    let group = body.group_id.to_string();
    let (mut local, mut offsets) = check_partitions(&body, &group, now, &metadata);
    let transactional_id = body.transactional_id.to_string();
    // Kafka: WRITE on the transactional id, READ on the group (both: every partition), READ
    // on each topic (its partitions only; the others are committed).
    let whole = authz::refusal(
        shard,
        &request,
        authz::Op::Write,
        authz::Res::TransactionalId,
        &transactional_id,
    )
    .or_else(|| authz::refusal(shard, &request, authz::Op::Read, authz::Res::Group, &group));
    if let Some(e) = whole {
        local.iter_mut().flatten().for_each(|p| *p = None);
        return super::respond(&request, &respond_per_partition(&body, local, Err(e)));
    }
    let denied = |t: &str| !authz::allowed(shard, &request, authz::Op::Read, authz::Res::Topic, t);
    for (t, row) in body.topics.iter().zip(local.iter_mut()) {
        if denied(t.name.as_str()) {
            row.iter_mut()
                .for_each(|p| *p = Some(ResponseError::TopicAuthorizationFailed));
        }
    }
    offsets.retain(|(key, _)| !denied(&key.topic));
    let (producer_id, epoch) = (body.producer_id.0, body.producer_epoch);
    let member = (request.api_version >= 3).then(|| {
        (
            body.member_id.to_string(),
            body.group_instance_id.as_ref().map(|s| s.to_string()),
            body.generation_id,
        )
    });
    let verdict: Result<(), ResponseError> = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else if let Some(e) = shard.not_coordinator(CoordinatorKind::Group, &group) {
        Err(e)
    } else {
        let txn_here = shard
            .not_coordinator(CoordinatorKind::Transaction, &transactional_id)
            .is_none();
        shard
            .invoke_on(COORDINATOR_SHARD, move |c| async move {
                if let Some((member_id, instance, generation)) = member {
                    // A simple producer sends no member (generation -1): nothing to check.
                    if generation >= 0 || !member_id.is_empty() {
                        c.groups.groups.borrow().validate_offset_commit(
                            &group,
                            &member_id,
                            instance.as_deref(),
                            generation,
                        )?;
                    }
                }
                if !txn_here {
                    return txns::hold_group_offsets(
                        &c,
                        transactional_id,
                        producer_id,
                        epoch,
                        &group,
                        offsets,
                    )
                    .await;
                }
                c.txns.state.borrow_mut().offset_commit(
                    &transactional_id,
                    producer_id,
                    epoch,
                    offsets,
                )
            })
            .await
            .unwrap_or(Err(coordinator_gone_code()))
    };
    // Kafka answers clients that know it (v4+) with TRANSACTION_ABORTABLE.
    let verdict = match verdict {
        Err(ResponseError::InvalidTxnState) if request.api_version >= 4 => {
            Err(ResponseError::TransactionAbortable)
        }
        other => other,
    };
    let response = respond_per_partition(&body, local, verdict);
    super::respond(&request, &response)
}
/// Per topic, per partition: the error decided without the coordinator, or None.
type Decided = Vec<Vec<Option<ResponseError>>>;

/// Per partition: Some(error) decided here (unknown partition, metadata too large), or None
/// with its offset to commit.
fn check_partitions(
    body: &TxnOffsetCommitRequest,
    group: &str,
    now: i64,
    metadata: &ClusterMetadata,
) -> (Decided, Vec<(OffsetKey, CommittedOffset)>) {
    let mut local: Vec<Vec<Option<ResponseError>>> = Vec::new();
    let mut offsets = Vec::new();
    for t in &body.topics {
        let topic = metadata.topics.get(t.name.as_str());
        let mut row = Vec::new();
        for p in &t.partitions {
            let meta = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            if !topic.is_some_and(|x| p.partition_index >= 0 && p.partition_index < x.partitions) {
                row.push(Some(ResponseError::UnknownTopicOrPartition));
            } else if meta.len() > OFFSET_METADATA_BYTES_MAX {
                row.push(Some(ResponseError::OffsetMetadataTooLarge));
            } else {
                row.push(None);
                offsets.push((
                    OffsetKey {
                        group: group.to_string(),
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                    },
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: meta,
                        commit_timestamp_ms: now,
                    },
                ));
            }
        }
        local.push(row);
    }
    (local, offsets)
}

/// The answer: each partition's own error, else the transaction coordinator's verdict.
fn respond_per_partition(
    body: &TxnOffsetCommitRequest,
    local: Vec<Vec<Option<ResponseError>>>,
    verdict: Result<(), ResponseError>,
) -> TxnOffsetCommitResponse {
    let mut response = TxnOffsetCommitResponse::default();
    for (t, row) in body.topics.iter().zip(local) {
        let mut topic = TxnOffsetCommitResponseTopic::default().with_name(t.name.clone());
        for (p, error) in t.partitions.iter().zip(row) {
            let error = error.or(verdict.err());
            topic.partitions.push(
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(crate::error::code(error)),
            );
        }
        response.topics.push(topic);
    }
    response
}
