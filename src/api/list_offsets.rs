//! ListOffsets: offsets by timestamp, and the earliest/latest/max-timestamp specials.
//!
//! Special timestamps, as Kafka defines them: -1 latest (the high watermark, or the last stable
//! offset for isolation level READ_COMMITTED), -2 earliest (log start), -3 the record
//! with the largest timestamp (v7+), -4 earliest local (v8+; all data is local, so the log
//! start), -5 latest tiered (v9+; nothing is tiered, so offset -1). A timestamp >= 0 finds the
//! earliest record with a timestamp at or after it; none gives offset -1.
//!
//! A partition that another broker leads gets NOT_LEADER_OR_FOLLOWER, an unknown one
//! UNKNOWN_TOPIC_OR_PARTITION (`shard::routing`), as Kafka's `ReplicaManager` answers. A
//! `current_leader_epoch` (v4+) other than the partition's gets FENCED_LEADER_EPOCH or
//! UNKNOWN_LEADER_EPOCH (`error::leader_epoch_code`). The answer's `leader_epoch` (v4+) is the
//! partition's current epoch for LATEST, else the epoch of the batch holding the offset (from
//! the leader-epoch cache; -1 when unknown), as Kafka answers.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{authz, decode, join_all, Outcome};
use crate::error::{leader_epoch_code, shard_gone_code, storage_code};
use crate::protocol::header::ParsedRequest;
use crate::shard::{routing, Shard};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// (error, timestamp, offset, leader epoch of the offset or -1) for one partition.
type Answer = (Option<ResponseError>, i64, i64, i32);

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ListOffsetsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let metadata = shard.metadata();
    let read_committed = body.isolation_level == 1;
    let mut work: Vec<Pin<Box<dyn Future<Output = Answer>>>> = Vec::new();
    for topic in &body.topics {
        let name = topic.name.0.to_string();
        // Kafka: DESCRIBE on the topic.
        let denied = authz::refusal(
            shard,
            &request,
            authz::Op::Describe,
            authz::Res::Topic,
            &name,
        );
        for p in &topic.partitions {
            let route = routing::route(&metadata, shard.config.node_id, &name, p.partition_index);
            if let Some(error) = denied.or_else(|| route.error()) {
                work.push(Box::pin(async move { (Some(error), -1, -1, -1) }));
                continue;
            }
            let (shard, name, index, ts) =
                (shard.clone(), name.clone(), p.partition_index, p.timestamp);
            let current = p.current_leader_epoch;
            work.push(Box::pin(async move {
                let owner = shard.owner(&name, index);
                shard
                    .invoke_on(owner, move |owner| {
                        lookup(owner, name, index, (ts, current), read_committed)
                    })
                    .await
                    .unwrap_or_else(|e| (Some(shard_gone_code(&e)), -1, -1, -1))
            }));
        }
    }
    let mut answers = join_all(work).await.into_iter();
    let mut response = ListOffsetsResponse::default();
    for topic in &body.topics {
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic.name.clone();
        for p in &topic.partitions {
            let (error, timestamp, offset, epoch) =
                answers.next().expect("one answer per partition");
            let mut part = ListOffsetsPartitionResponse::default();
            part.partition_index = p.partition_index;
            part.error_code = crate::error::code(error);
            part.timestamp = timestamp;
            part.offset = offset;
            // Leader epochs exist from v4; earlier versions must leave the default.
            if request.api_version >= 4 && error.is_none() && offset >= 0 {
                part.leader_epoch = epoch;
            }
            out.partitions.push(part);
        }
        response.topics.push(out);
    }
    super::respond(&request, &response)
}

/// One partition's answer on its owner: the `current_leader_epoch` check
/// (`error::leader_epoch_code`), the offset, and its leader epoch as Kafka gives it (the
/// partition's current epoch for LATEST, else the epoch of the batch holding the offset).
async fn lookup(
    shard: Rc<Shard>,
    topic: String,
    index: i32,
    (timestamp, current_epoch): (i64, i32),
    read_committed: bool,
) -> Answer {
    let Some(partition) = shard.partition(&topic, index) else {
        let metadata = shard.metadata();
        let code = routing::absent_partition_code(&metadata, shard.config.node_id, &topic, index);
        return (Some(code), -1, -1, -1);
    };
    let log = &partition.log;
    if let Some(error) = leader_epoch_code(current_epoch, log.leader_epoch()) {
        return (Some(error), -1, -1, -1);
    }
    let (error, ts, offset) = lookup_offset(shard, topic, index, timestamp, read_committed).await;
    let epoch = match timestamp {
        LATEST => log.leader_epoch(),
        _ => log.epoch_for_offset(offset).unwrap_or(-1),
    };
    (error, ts, offset, epoch)
}

async fn lookup_offset(
    shard: Rc<Shard>,
    topic: String,
    index: i32,
    timestamp: i64,
    read_committed: bool,
) -> (Option<ResponseError>, i64, i64) {
    let Some(partition) = shard.partition(&topic, index) else {
        let metadata = shard.metadata();
        let node_id = shard.config.node_id;
        return (
            Some(routing::absent_partition_code(
                &metadata, node_id, &topic, index,
            )),
            -1,
            -1,
        );
    };
    let log = &partition.log;
    match timestamp {
        LATEST if read_committed => (None, -1, log.last_stable_offset()),
        LATEST => (None, -1, log.high_watermark()),
        EARLIEST | EARLIEST_LOCAL => (None, -1, log.log_start_offset()),
        MAX_TIMESTAMP => {
            let (ts, offset) = log.max_timestamp();
            (None, ts, offset)
        }
        LATEST_TIERED => (None, -1, -1),
        ts if ts >= 0 => match log.offset_for_timestamp(ts).await {
            Ok(Some((offset, found_ts))) => (None, found_ts, offset),
            Ok(None) => (None, -1, -1),
            Err(e) => (Some(storage_code(&e)), -1, -1),
        },
        _ => (Some(ResponseError::InvalidRequest), -1, -1),
    }
}
