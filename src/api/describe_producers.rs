//! DescribeProducers: the producers a partition knows (its producer state: epoch, last
//! sequence, last timestamp, open transaction's first offset), read on the owning shard.
//! A partition that another broker leads gets NOT_LEADER_OR_FOLLOWER, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{decode, join_all, Outcome};
use crate::error::shard_gone_code;
use crate::protocol::header::ParsedRequest;
use crate::shard::{routing, Shard};
use crate::storage::producer_state::ProducerEntry;

type Answer = Result<Vec<(i64, ProducerEntry)>, ResponseError>;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeProducersRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let metadata = shard.metadata();
    let mut work: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Answer>>>> = Vec::new();
    for t in &body.topics {
        for &p in &t.partition_indexes {
            // Kafka's `ReplicaManager.activeProducerState`: NOT_LEADER_OR_FOLLOWER for a
            // partition another broker leads, UNKNOWN_TOPIC_OR_PARTITION for an unknown one.
            let route = routing::route(&metadata, shard.config.node_id, t.name.as_str(), p);
            // Kafka: READ on the topic.
            let denied = super::authz::refusal(
                shard,
                &request,
                super::authz::Op::Read,
                super::authz::Res::Topic,
                &t.name,
            );
            if let Some(error) = denied.or_else(|| route.error()) {
                work.push(Box::pin(async move { Err(error) }));
                continue;
            }
            let name = t.name.to_string();
            let shard = shard.clone();
            work.push(Box::pin(async move {
                let owner = shard.owner(&name, p);
                shard
                    .invoke_on(owner, move |owner| async move {
                        owner
                            .partition(&name, p)
                            .map(|part| part.log.producers())
                            .ok_or_else(|| {
                                routing::absent_partition_code(
                                    &owner.metadata(),
                                    owner.config.node_id,
                                    &name,
                                    p,
                                )
                            })
                    })
                    .await
                    .unwrap_or_else(|e| Err(shard_gone_code(&e)))
            }));
        }
    }
    let mut answers = join_all(work).await.into_iter();
    let mut response = DescribeProducersResponse::default();
    for t in &body.topics {
        let mut topic = TopicResponse::default().with_name(t.name.clone());
        for &p in &t.partition_indexes {
            let mut part = PartitionResponse::default().with_partition_index(p);
            match answers.next().expect("one answer per partition") {
                Err(e) => part.error_code = e.code(),
                Ok(mut producers) => {
                    producers.sort_by_key(|(id, _)| *id);
                    part.active_producers = producers
                        .into_iter()
                        .map(|(id, e)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(id))
                                .with_producer_epoch(i32::from(e.epoch))
                                .with_last_sequence(e.batches.back().map_or(-1, |b| b.last_seq))
                                .with_last_timestamp(e.last_timestamp)
                                .with_coordinator_epoch(e.coordinator_epoch)
                                .with_current_txn_start_offset(e.txn_first_offset.unwrap_or(-1))
                        })
                        .collect();
                }
            }
            topic.partitions.push(part);
        }
        response.topics.push(topic);
    }
    super::respond(&request, &response)
}
