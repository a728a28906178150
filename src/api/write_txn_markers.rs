//! WriteTxnMarkers (API 27, v1 as Kafka 4.1): a transaction coordinator on another broker
//! asks this one to end a producer's transaction on the partitions it leads.
//!
//! Per marker, per partition, as Kafka's `KafkaApis.handleWriteTxnMarkersRequest` and
//! `ReplicaManager` answer: a partition this broker leads gets the COMMIT/ABORT control batch
//! (`shard::txns::write_local_marker`, on its owning shard) and NONE once the high watermark
//! passed it (Kafka appends markers with acks=-1: NOT_ENOUGH_REPLICAS below
//! `min.insync.replicas`, REQUEST_TIMED_OUT after 5 s, both sent again by the coordinator); a
//! `__consumer_offsets` partition it leads commits or drops the offsets its group coordinator
//! holds for the producer; a partition led by another broker is NOT_LEADER_OR_FOLLOWER, one
//! the metadata does not know UNKNOWN_TOPIC_OR_PARTITION; a marker whose coordinator epoch is
//! older than the last one written for that producer there is TRANSACTION_COORDINATOR_FENCED
//! (a coordinator that lost its partition). A marker for a producer epoch older than the
//! partition's is moot and answered NONE.
//!
//! Only brokers send it: as Kafka (`authorizeClusterOperation(CLUSTER_ACTION)`), a caller
//! without CLUSTER_ACTION on the cluster gets CLUSTER_AUTHORIZATION_FAILED on every partition
//! and nothing is written.
//!
//! Memory: the request is bounded by the connection's frame limit and its pre-scan; the
//! partitions of one request are written concurrently, at most one future each.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::{authz, decode, join_all, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::txns::{write_local_marker, Marker};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: WriteTxnMarkersRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = WriteTxnMarkersResponse::default();
    if !authz::cluster_allowed(shard, &request, authz::Op::ClusterAction) {
        response.markers = refused_markers(&body);
        return super::respond(&request, &response);
    }
    for m in &body.markers {
        let marker = Marker {
            producer_id: m.producer_id.0,
            epoch: m.producer_epoch,
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in &m.topics {
            let name = t.name.to_string();
            type Write = Pin<Box<dyn Future<Output = Result<(), ResponseError>>>>;
            let writes: Vec<Write> = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let (shard, name) = (shard.clone(), name.clone());
                    Box::pin(async move { write_local_marker(&shard, &name, p, marker).await })
                        as Write
                })
                .collect();
            let results = join_all(writes).await;
            let partitions = t
                .partition_indexes
                .iter()
                .zip(results)
                .map(|(p, r)| {
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(*p)
                        .with_error_code(crate::error::code(r.err()))
                })
                .collect();
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        response.markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    super::respond(&request, &response)
}

/// Every partition of `body` answered CLUSTER_AUTHORIZATION_FAILED (Kafka's
/// `WriteTxnMarkersRequest.getErrorResponse`).
fn refused_markers(body: &WriteTxnMarkersRequest) -> Vec<WritableTxnMarkerResult> {
    let code = ResponseError::ClusterAuthorizationFailed.code();
    body.markers
        .iter()
        .map(|m| {
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(*p)
                                .with_error_code(code)
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        })
        .collect()
}
