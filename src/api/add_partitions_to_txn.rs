//! AddPartitionsToTxn: add partitions to a producer's open transaction, on the coordinator
//! shard (`shard::txns`), durably before the answer.
//!
//! v0-3 (clients) carry one transaction; v4-5 (Kafka's brokers verifying for each other) carry
//! a batch and are answered per transaction (`verify_only` checks membership without adding:
//! what a partition leader or a group coordinator on another node asks, KIP-890; a group
//! of the transaction counts as its `__consumer_offsets` partition).
//! Partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION and the others
//! OPERATION_NOT_ATTEMPTED, as Kafka answers; otherwise every partition gets the
//! coordinator's verdict.
//!
//! v4+ come only from brokers: as Kafka, a caller without CLUSTER_ACTION on the cluster gets
//! the response's top-level CLUSTER_AUTHORIZATION_FAILED and nothing is looked at.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::{authz, decode, Outcome};
use crate::coordinator::coordinator_key::{self, CoordinatorKind, GROUP_TOPIC};
use crate::protocol::header::ParsedRequest;
use crate::shard::{txns, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: AddPartitionsToTxnRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = AddPartitionsToTxnResponse::default();
    if request.api_version <= 3 {
        response.results_by_topic_v3_and_below = add_one(
            shard,
            &request,
            body.v3_and_below_transactional_id.to_string(),
            body.v3_and_below_producer_id.0,
            body.v3_and_below_producer_epoch,
            &body.v3_and_below_topics,
            false,
        )
        .await;
    } else if !authz::cluster_allowed(shard, &request, authz::Op::ClusterAction) {
        response.error_code = ResponseError::ClusterAuthorizationFailed.code();
    } else {
        for t in &body.transactions {
            let topic_results = add_one(
                shard,
                &request,
                t.transactional_id.to_string(),
                t.producer_id.0,
                t.producer_epoch,
                &t.topics,
                t.verify_only,
            )
            .await;
            response.results_by_transaction.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topic_results),
            );
        }
    }
    super::respond(&request, &response)
}

async fn add_one(
    shard: &Rc<Shard>,
    request: &ParsedRequest,
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let metadata = shard.metadata();
    let known = |name: &str, p: i32| {
        metadata
            .topics
            .get(name)
            .is_some_and(|t| p >= 0 && p < t.partitions)
    };
    let any_unknown = topics
        .iter()
        .any(|t| t.partitions.iter().any(|p| !known(t.name.as_str(), *p)));
    // Kafka: WRITE on the transactional id, then on each topic.
    let txn_denied = authz::refusal(
        shard,
        request,
        authz::Op::Write,
        authz::Res::TransactionalId,
        &transactional_id,
    );
    let denied =
        |name: &str| !authz::allowed(shard, request, authz::Op::Write, authz::Res::Topic, name);
    let any_denied = topics.iter().any(|t| denied(t.name.as_str()));
    let refused = txn_denied
        .or_else(|| shard.not_coordinator(CoordinatorKind::Transaction, &transactional_id));
    let verdict: Result<(), ResponseError> = if let Some(e) = refused {
        Err(e)
    } else if any_unknown || any_denied {
        Err(ResponseError::OperationNotAttempted)
    } else {
        let partitions: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
            .collect();
        // A group added with AddOffsetsToTxn counts as its `__consumer_offsets` partition
        // (what a group coordinator verifies before holding TxnOffsetCommit offsets).
        let group_partitions = metadata.topics.get(GROUP_TOPIC).map(|t| t.partitions);
        let group_partition =
            move |g: &str| group_partitions.map(|n| coordinator_key::partition_for(g, n));
        shard
            .invoke_on(COORDINATOR_SHARD, move |c| async move {
                if verify_only {
                    let state = c.txns.state.borrow();
                    let ok = state.get(&transactional_id).is_some_and(|m| {
                        m.producer_id == producer_id
                            && m.epoch == epoch
                            && partitions.iter().all(|p| {
                                m.partitions.contains(p)
                                    || m.groups.iter().any(|g| group_partition(g) == Some(p.1))
                                        && p.0 == GROUP_TOPIC
                            })
                    });
                    return if ok {
                        Ok(())
                    } else {
                        Err(ResponseError::InvalidTxnState)
                    };
                }
                txns::add(&c, &transactional_id, producer_id, epoch, partitions, None).await
            })
            .await
            .unwrap_or(Err(coordinator_gone_code()))
    };
    topics
        .iter()
        .map(|t| {
            let results = t
                .partitions
                .iter()
                .map(|p| {
                    let error = if txn_denied.is_some() {
                        txn_denied
                    } else if denied(t.name.as_str()) {
                        Some(ResponseError::TopicAuthorizationFailed)
                    } else if !known(t.name.as_str(), *p) {
                        Some(ResponseError::UnknownTopicOrPartition)
                    } else {
                        verdict.err()
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(crate::error::code(error))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}
