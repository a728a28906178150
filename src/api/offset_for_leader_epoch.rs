//! OffsetForLeaderEpoch (API 23, v2-4 as Kafka 4.1): for each partition and leader epoch, the
//! largest epoch at or below it that has data in this broker's log and where it ends (the
//! start offset of the next epoch, or the log end offset for the latest one), from the
//! partition's leader-epoch cache (`storage::leader_epoch`). A follower that was a leader
//! asks this to find the divergent suffix of its log before fetching; a consumer asks it to
//! validate its position after a leader change (KIP-320: a position past the returned end
//! offset means the log was truncated under it).
//!
//! As Kafka's `Partition.lastOffsetForLeaderEpoch`: the request's `current_leader_epoch` is
//! checked first (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH, `error::leader_epoch_code`); an
//! epoch the log knows nothing of gets error NONE with epoch -1 and offset -1. Clients
//! (`replica_id` -1, or absent before v3) are served by the leader only; a broker's request
//! (`replica_id` >= 0) is served wherever the partition is open (a follower's log too). A
//! partition another broker leads gets NOT_LEADER_OR_FOLLOWER, an unknown one
//! UNKNOWN_TOPIC_OR_PARTITION.
//!
//! Bounded: the answer has one small entry per requested partition; the request's size is
//! bounded by the connection's frame limit.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{decode, join_all, Outcome};
use crate::error::{leader_epoch_code, shard_gone_code};
use crate::protocol::header::ParsedRequest;
use crate::shard::{routing, Shard};

/// (error, leader epoch, end offset) for one partition.
type Answer = (Option<ResponseError>, i32, i64);

/// No answer: Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET.
const UNDEFINED: (i32, i64) = (
    crate::storage::leader_epoch::UNDEFINED_EPOCH,
    crate::storage::leader_epoch::UNDEFINED_EPOCH_OFFSET,
);

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: OffsetForLeaderEpochRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    // v3+ names the sender; earlier versions come from clients only.
    let from_broker = request.api_version >= 3 && body.replica_id.0 >= 0;
    let metadata = shard.metadata();
    let mut work: Vec<Pin<Box<dyn Future<Output = Answer>>>> = Vec::new();
    for topic in &body.topics {
        let name = topic.topic.0.to_string();
        for p in &topic.partitions {
            let route = routing::route(&metadata, shard.config.node_id, &name, p.partition);
            let error = match route {
                routing::Route::Local => None,
                routing::Route::Remote { .. } if from_broker => None,
                _ => route.error(),
            };
            if let Some(error) = error {
                work.push(Box::pin(
                    async move { (Some(error), UNDEFINED.0, UNDEFINED.1) },
                ));
                continue;
            }
            let (shard, name) = (shard.clone(), name.clone());
            let (index, current, epoch) = (p.partition, p.current_leader_epoch, p.leader_epoch);
            work.push(Box::pin(async move {
                let owner = shard.owner(&name, index);
                shard
                    .invoke_on(owner, move |owner| async move {
                        end_offset(&owner, &name, index, current, epoch)
                    })
                    .await
                    .unwrap_or_else(|e| (Some(shard_gone_code(&e)), UNDEFINED.0, UNDEFINED.1))
            }));
        }
    }
    let mut answers = join_all(work).await.into_iter();
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in &body.topics {
        let mut out = OffsetForLeaderTopicResult::default();
        out.topic = topic.topic.clone();
        for p in &topic.partitions {
            let (error, leader_epoch, end_offset) =
                answers.next().expect("one answer per partition");
            let mut part = EpochEndOffset::default();
            part.partition = p.partition;
            part.error_code = crate::error::code(error);
            part.leader_epoch = leader_epoch;
            part.end_offset = end_offset;
            if let Some(e) = error {
                crate::metrics::record_partition_error(request.api_key, e.code());
            }
            out.partitions.push(part);
        }
        response.topics.push(out);
    }
    super::respond(&request, &response)
}

/// One partition's answer, on its owner shard.
fn end_offset(shard: &Shard, topic: &str, index: i32, current: i32, epoch: i32) -> Answer {
    let Some(partition) = shard.partition(topic, index) else {
        let code =
            routing::absent_partition_code(&shard.metadata(), shard.config.node_id, topic, index);
        return (Some(code), UNDEFINED.0, UNDEFINED.1);
    };
    if let Some(error) = leader_epoch_code(current, partition.log.leader_epoch()) {
        return (Some(error), UNDEFINED.0, UNDEFINED.1);
    }
    let (epoch, offset) = partition
        .log
        .end_offset_for_epoch(epoch)
        .unwrap_or(UNDEFINED);
    (None, epoch, offset)
}
