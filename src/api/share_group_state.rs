//! ReadShareGroupState (84) and WriteShareGroupState (85): Kafka's inter-broker calls from a
//! share-partition leader to the share coordinator of a share partition's durable state
//! (`shard::shares::replicated`), served on this node's coordinator shard. As Kafka:
//! CLUSTER_ACTION on the cluster, else CLUSTER_AUTHORIZATION_FAILED for every partition.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    read_share_group_state_response as r, write_share_group_state_response as w,
    ReadShareGroupStateRequest, ReadShareGroupStateResponse, WriteShareGroupStateRequest,
    WriteShareGroupStateResponse,
};

use super::{authz, decode, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::shares::replicated::{serve_read, serve_write};
use crate::shard::{Shard, COORDINATOR_SHARD};

pub async fn read(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ReadShareGroupStateRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let refused = (!authz::cluster_allowed(shard, &request, authz::Op::ClusterAction))
        .then_some(ResponseError::ClusterAuthorizationFailed);
    let every = |e: ResponseError, body: &ReadShareGroupStateRequest| {
        let results = body
            .topics
            .iter()
            .map(|t| {
                r::ReadStateResult::default()
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                r::PartitionResult::default()
                                    .with_partition(p.partition)
                                    .with_error_code(e.code())
                                    .with_start_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect();
        ReadShareGroupStateResponse::default().with_results(results)
    };
    if let Some(e) = refused {
        return super::respond(&request, &every(e, &body));
    }
    let copy = body.clone();
    let response = shard
        .invoke_on(
            COORDINATOR_SHARD,
            move |c| async move { serve_read(&c, body) },
        )
        .await
        .unwrap_or_else(|_| every(crate::error::coordinator_gone_code(), &copy));
    super::respond(&request, &response)
}

pub async fn write(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: WriteShareGroupStateRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let refused = (!authz::cluster_allowed(shard, &request, authz::Op::ClusterAction))
        .then_some(ResponseError::ClusterAuthorizationFailed);
    let every = |e: ResponseError, body: &WriteShareGroupStateRequest| {
        let results = body
            .topics
            .iter()
            .map(|t| {
                w::WriteStateResult::default()
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                w::PartitionResult::default()
                                    .with_partition(p.partition)
                                    .with_error_code(e.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        WriteShareGroupStateResponse::default().with_results(results)
    };
    if let Some(e) = refused {
        return super::respond(&request, &every(e, &body));
    }
    let copy = body.clone();
    let response = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            serve_write(&c, body).await
        })
        .await
        .unwrap_or_else(|_| every(crate::error::coordinator_gone_code(), &copy));
    super::respond(&request, &response)
}
