//! DeleteRecords (v0-v2): move partitions' log start offsets forward.
//!
//! Each partition is handled on its owning shard by `PartitionLog::delete_records`, which is
//! durable when it returns. Kafka 4.1's rules (`ReplicaManager.deleteRecordsOnLocalLog`,
//! `Partition.deleteRecordsOnLeader`, `UnifiedLog.maybeIncrementLogStartOffset`):
//! - an unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION;
//! - an internal topic: INVALID_TOPIC_EXCEPTION;
//! - a partition that another broker leads: NOT_LEADER_OR_FOLLOWER (`shard::routing`);
//! - a topic whose `cleanup.policy` lacks `delete`: POLICY_VIOLATION;
//! - offset -1 means the high watermark; any other negative offset, or one past the high
//!   watermark: OFFSET_OUT_OF_RANGE;
//! - an offset at or below the current log start changes nothing.
//!
//! Once the leader moved its own log start, the answer waits (Kafka's `DelayedDeleteRecords`)
//! until the partition's low watermark reaches the offset: the smallest log start offset over
//! the leader and every replica on an unfenced broker, in the ISR or not, as each follower
//! reports it in the `log_start_offset` of its Fetch (`Partition.lowWatermarkIfLeader`). The
//! answer's low watermark is that value (-1 on error). The wait is woken by the partition's
//! `hw_changed` signal (a follower's new log start, a metadata install) and bounded by the
//! request's `timeout_ms`: then REQUEST_TIMED_OUT, the records stay deleted on the leader (as
//! in Kafka). NOT_LEADER_OR_FOLLOWER if the leadership moves meanwhile. A partition with one
//! replica (or whose other replicas are all on fenced brokers) answers at once.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::admin::AdminError;
use super::{decode, join_all, respond, Outcome};
use crate::coordinator::metadata::{ClusterMetadata, TopicMeta};
use crate::coordinator::topic_config;
use crate::protocol::header::ParsedRequest;
use crate::shard::{routing, Shard};

/// DeleteRecords' "up to the high watermark" offset.
const HIGH_WATERMARK: i64 = -1;
/// The low watermark reported with an error.
const INVALID_LOW_WATERMARK: i64 = -1;

type Answer = Result<i64, AdminError>;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DeleteRecordsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let metadata = shard.metadata();
    let mut work: Vec<Pin<Box<dyn Future<Output = Answer>>>> = Vec::new();
    for topic in &body.topics {
        let name = topic.name.0.to_string();
        let meta = metadata.topics.get(&name);
        for p in &topic.partitions {
            let index = p.partition_index;
            let partition_name = format!("{name}-{index}");
            // Kafka: DELETE on the topic.
            let refused = super::authz::refusal(
                shard,
                &request,
                super::authz::Op::Delete,
                super::authz::Res::Topic,
                &name,
            )
            .map(|_| AdminError::Unauthorized(super::authz::Res::Topic))
            .or_else(|| refusal(shard, &metadata, meta, &name, index, &partition_name));
            if let Some(error) = refused {
                work.push(Box::pin(async move { Err(error) }));
                continue;
            }
            let (shard, name, offset) = (shard.clone(), name.clone(), p.offset);
            let timeout_ms = body.timeout_ms;
            work.push(Box::pin(async move {
                let owner = shard.owner(&name, index);
                shard
                    .invoke_on(owner, move |owner| {
                        delete_on_owner(owner, name, index, (offset, timeout_ms), partition_name)
                    })
                    .await
                    .unwrap_or_else(|gone| Err(AdminError::ShardGone(gone)))
            }));
        }
    }
    let mut answers = join_all(work).await.into_iter();
    let mut response = DeleteRecordsResponse::default();
    for topic in &body.topics {
        let mut out = DeleteRecordsTopicResult::default();
        out.name = topic.name.clone();
        for p in &topic.partitions {
            let answer = answers.next().expect("one answer per partition");
            let mut part = DeleteRecordsPartitionResult::default();
            part.partition_index = p.partition_index;
            match answer {
                Ok(low_watermark) => part.low_watermark = low_watermark,
                Err(error) => {
                    part.low_watermark = INVALID_LOW_WATERMARK;
                    part.error_code = error.code();
                }
            }
            out.partitions.push(part);
        }
        response.topics.push(out);
    }
    respond(&request, &response)
}

/// Why records of partition `index` of topic `name` (`meta`: its metadata) cannot be deleted:
/// unknown, internal, or its cleanup.policy keeps them.
fn refusal(
    shard: &Shard,
    metadata: &ClusterMetadata,
    meta: Option<&TopicMeta>,
    name: &str,
    index: i32,
    partition_name: &str,
) -> Option<AdminError> {
    match meta {
        None => Some(AdminError::UnknownTopicOrPartition),
        Some(t) if t.internal => Some(AdminError::InternalTopicRecords(name.to_string())),
        Some(t) if index < 0 || index >= t.partitions => Some(AdminError::UnknownTopicOrPartition),
        Some(_) if !routing::leads(metadata, shard.config.node_id, name, index) => {
            Some(AdminError::NotLeaderOrFollower(partition_name.to_string()))
        }
        Some(t)
            if !deletes_records(
                &crate::coordinator::broker_config::with_topic_defaults(
                    &t.configs,
                    &metadata.broker_configs,
                    shard.config.node_id,
                ),
                &shard.config,
            ) =>
        {
            Some(AdminError::DeletePolicy(partition_name.to_string()))
        }
        Some(_) => None,
    }
}

/// Whether a topic with these overrides allows DeleteRecords (its `cleanup.policy` includes
/// `delete`, as Kafka's `LogConfig.delete` requires).
pub fn deletes_records(
    overrides: &std::collections::BTreeMap<String, String>,
    broker: &crate::config::BrokerConfig,
) -> bool {
    let policy = overrides
        .get("cleanup.policy")
        .cloned()
        .unwrap_or_else(|| topic_config::broker_default("cleanup.policy", broker));
    policy.split(',').any(|p| p.trim() == "delete")
}

/// Runs on the partition's owner: moves its log start to `offset`, waits up to `timeout_ms`
/// for the low watermark to reach it, and returns the low watermark.
async fn delete_on_owner(
    shard: Rc<Shard>,
    topic: String,
    index: i32,
    (offset, timeout_ms): (i64, i32),
    partition_name: String,
) -> Answer {
    let Some(partition) = shard.partition(&topic, index) else {
        // The leadership may have moved since the request was checked.
        if !routing::leads(&shard.metadata(), shard.config.node_id, &topic, index) {
            return Err(AdminError::NotLeaderOrFollower(partition_name));
        }
        return Err(AdminError::PartitionUnavailable(partition_name));
    };
    let log = &partition.log;
    let high_watermark = log.high_watermark();
    let target = if offset == HIGH_WATERMARK {
        high_watermark
    } else {
        offset
    };
    if target < 0 {
        return Err(AdminError::InvalidDeleteOffset {
            offset: target,
            partition: partition_name,
        });
    }
    if target > high_watermark {
        return Err(AdminError::DeleteOffsetAboveHighWatermark {
            offset: target,
            partition: partition_name,
            high_watermark,
        });
    }
    if target > log.log_start_offset() {
        log.delete_records(target).await?;
    }
    let limit = std::time::Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
    match crate::rt::timeout(limit, shard.await_low_watermark(&partition, target)).await {
        Some(Ok(low_watermark)) => Ok(low_watermark),
        Some(Err(_)) => Err(AdminError::NotLeaderOrFollower(partition_name)),
        None => Err(AdminError::DeleteRecordsTimedOut {
            offset: target,
            partition: partition_name,
            low_watermark: shard.low_watermark(&partition),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use std::collections::BTreeMap;

    #[test]
    fn only_topics_with_the_delete_policy_allow_deleting_records() {
        let broker = BrokerConfig::default();
        let policy = |p: &str| {
            let mut overrides = BTreeMap::new();
            overrides.insert("cleanup.policy".to_string(), p.to_string());
            deletes_records(&overrides, &broker)
        };
        assert!(deletes_records(&BTreeMap::new(), &broker));
        assert!(policy("delete"));
        assert!(policy("compact,delete"));
        assert!(!policy("compact"));
    }
}
