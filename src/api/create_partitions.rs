//! CreatePartitions (v0-v3): grow topics to a new partition count.
//!
//! Follows Kafka 4.1 (`ControllerApis.createPartitions`, `ReplicationControlManager`): a name
//! given twice is refused with INVALID_REQUEST "Duplicate topic name." (listed first) and not
//! changed; an unknown topic gets UNKNOWN_TOPIC_OR_PARTITION; a count equal to or below the
//! current one gets INVALID_PARTITIONS; manual assignments, when given, must cover exactly the
//! new partitions and name registered brokers (only this node while the metadata has no
//! registered broker: the pre-quorum rule of `coordinator::metadata`), once each, as many as
//! the topic's partitions have, else INVALID_REPLICA_ASSIGNMENT. The metadata state machine
//! checks them again on the controller and places the new partitions when none are given.
//! `validate_only` checks without changing anything. The change runs on the coordinator shard and every shard has opened the new
//! partitions when the answer goes out; `timeout_ms` is not used. New partitions count against
//! the client's `controller_mutation_rate` (`crate::quota::MutationQuota`; refused from v3
//! when exhausted).

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, TopicName};

use super::admin::{check_replica_list, duplicates, registered_or_local, AdminError};
use super::{decode, respond, str_bytes, Outcome};
use crate::coordinator::metadata::{ClusterMetadata, MetadataCommand};
use crate::protocol::header::ParsedRequest;
use crate::quota::MutationQuota;
use crate::shard::{Shard, ShardGone, COORDINATOR_SHARD};

/// One topic to grow, as plain data that can cross to the coordinator shard.
#[derive(Debug, Clone)]
pub struct Growth {
    pub name: String,
    pub count: i32,
    /// One broker list per new partition, if the client gave them.
    pub assignments: Option<Vec<Vec<i32>>>,
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: CreatePartitionsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let repeated: Vec<String> = duplicates(body.topics.iter().map(|t| t.name.0.as_str()))
        .into_iter()
        .map(str::to_string)
        .collect();
    let growths: Vec<Growth> = body
        .topics
        .iter()
        .filter(|t| !repeated.iter().any(|r| r.as_str() == t.name.0.as_str()))
        // Kafka: ALTER on the topic (refused ones answered below).
        .filter(|t| {
            super::authz::allowed(
                shard,
                &request,
                super::authz::Op::Alter,
                super::authz::Res::Topic,
                &t.name,
            )
        })
        .map(|t| Growth {
            name: t.name.0.to_string(),
            count: t.count,
            assignments: t.assignments.as_ref().map(|list| {
                list.iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            }),
        })
        .collect();
    let names: Vec<String> = growths.iter().map(|g| g.name.clone()).collect();
    let validate_only = body.validate_only;
    let quota = MutationQuota::new(
        &shard.metadata().client_quotas,
        &request.principal,
        request.client_id_or_empty(),
        request.api_key,
        request.api_version,
    );
    let (outcomes, throttle_ms) = match shard
        .invoke_on(COORDINATOR_SHARD, move |coordinator| {
            grow_on_coordinator(coordinator, growths, validate_only, quota)
        })
        .await
    {
        Ok((outcomes, quota)) => (outcomes, quota.throttle_ms()),
        Err(gone) => (
            names
                .iter()
                .map(|_| Err(AdminError::ShardGone(ShardGone(gone.0))))
                .collect(),
            0,
        ),
    };
    let mut response = CreatePartitionsResponse::default();
    response.throttle_time_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    let denied = body
        .topics
        .iter()
        .filter(|t| !repeated.iter().any(|r| r.as_str() == t.name.0.as_str()))
        .filter(|t| {
            !super::authz::allowed(
                shard,
                &request,
                super::authz::Op::Alter,
                super::authz::Res::Topic,
                &t.name,
            )
        })
        .map(|t| {
            (
                t.name.0.to_string(),
                Err(AdminError::Unauthorized(super::authz::Res::Topic)),
            )
        })
        .collect::<Vec<_>>();
    let duplicate_results = repeated
        .into_iter()
        .map(|name| (name, Err(AdminError::DuplicateTopicName)))
        .chain(denied);
    for (name, outcome) in duplicate_results.chain(names.into_iter().zip(outcomes)) {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = TopicName(str_bytes(name));
        if let Err(error) = outcome {
            result.error_code = error.code();
            result.error_message = error.message();
        }
        response.results.push(result);
    }
    super::throttle::throttled(respond(&request, &response), throttle_ms)
}

/// Checks and grows `growths` on the coordinator shard; a growth that passes the checks takes
/// its new partitions from the request's controller mutation `quota` first (refused:
/// THROTTLING_QUOTA_EXCEEDED), which is handed back with the results.
async fn grow_on_coordinator(
    coordinator: Rc<Shard>,
    growths: Vec<Growth>,
    validate_only: bool,
    mut quota: MutationQuota,
) -> (Vec<Result<(), AdminError>>, MutationQuota) {
    let metadata = coordinator.metadata();
    let node_id = coordinator.config.node_id;
    let mut results: Vec<Result<(), AdminError>> = growths
        .iter()
        .map(|g| check_growth(&metadata, node_id, g))
        .collect();
    for (growth, result) in growths.iter().zip(results.iter_mut()) {
        let current = metadata
            .topics
            .get(&growth.name)
            .map_or(0, |t| t.partitions);
        let added = u64::try_from(growth.count.saturating_sub(current)).unwrap_or(0);
        if result.is_ok() && !quota.record(added) {
            *result = Err(AdminError::ThrottlingQuotaExceeded);
        }
    }
    let (commands, command_of): (Vec<MetadataCommand>, Vec<usize>) = growths
        .iter()
        .enumerate()
        .filter(|(index, _)| results[*index].is_ok())
        .map(|(index, g)| {
            let command = MetadataCommand::CreatePartitions {
                name: g.name.clone(),
                total: g.count,
                assignments: g.assignments.clone(),
            };
            (command, index)
        })
        .unzip();
    if !commands.is_empty() {
        let applied = coordinator.change_metadata(commands, validate_only).await;
        for (index, result) in command_of.into_iter().zip(applied) {
            results[index] = result.map_err(AdminError::from);
        }
    }
    (results, quota)
}

/// Checks one growth against the current metadata, as Kafka's controller does. Pure.
pub fn check_growth(
    metadata: &ClusterMetadata,
    node_id: i32,
    growth: &Growth,
) -> Result<(), AdminError> {
    let topic = metadata
        .topics
        .get(&growth.name)
        .ok_or(AdminError::UnknownTopicOrPartition)?;
    if growth.count == topic.partitions {
        return Err(AdminError::PartitionCountUnchanged(topic.partitions));
    }
    if growth.count < topic.partitions {
        return Err(AdminError::PartitionCountDecrease {
            topic: growth.name.clone(),
            current: topic.partitions,
            requested: growth.count,
        });
    }
    if let Some(assignments) = &growth.assignments {
        let added = growth.count - topic.partitions;
        if assignments.len() != added as usize {
            return Err(AdminError::InvalidReplicaAssignment(format!(
                "Attempted to add {added} additional partition(s), but only {} assignment(s) were \
                 specified.",
                assignments.len()
            )));
        }
        let replicas = usize::try_from(topic.replication_factor()).unwrap_or(1);
        for brokers in assignments {
            check_replica_list(
                brokers,
                registered_or_local(metadata, node_id),
                Some(replicas),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::error::ResponseError as E;
    use std::collections::BTreeMap;

    fn metadata() -> ClusterMetadata {
        ClusterMetadata::default()
            .apply(&MetadataCommand::CreateTopic {
                name: "t".into(),
                partitions: 3,
                configs: BTreeMap::new(),
                replication_factor: 1,
                assignments: None,
            })
            .unwrap()
    }

    fn check(
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> Result<(), (i16, String)> {
        let growth = Growth {
            name: name.into(),
            count,
            assignments,
        };
        check_growth(&metadata(), 0, &growth).map_err(|e| (e.code(), e.to_string()))
    }

    #[test]
    fn partitions_only_grow_with_kafkas_messages() {
        assert_eq!(check("t", 5, None), Ok(()));
        assert_eq!(
            check("t", 3, None),
            Err((
                E::InvalidPartitions.code(),
                "Topic already has 3 partition(s).".into()
            ))
        );
        assert_eq!(
            check("t", 2, None),
            Err((
                E::InvalidPartitions.code(),
                "The topic t currently has 3 partition(s); 2 would not be an increase.".into()
            ))
        );
        assert_eq!(
            check("nope", 5, None).unwrap_err().0,
            E::UnknownTopicOrPartition.code()
        );
    }

    #[test]
    fn assignments_must_cover_the_new_partitions_on_this_node() {
        assert_eq!(check("t", 5, Some(vec![vec![0], vec![0]])), Ok(()));
        assert_eq!(
            check("t", 5, Some(vec![vec![0]])),
            Err((
                E::InvalidReplicaAssignment.code(),
                "Attempted to add 2 additional partition(s), but only 1 assignment(s) were \
                 specified."
                    .into()
            ))
        );
        assert_eq!(
            check("t", 4, Some(vec![vec![1]])).unwrap_err().0,
            E::InvalidReplicaAssignment.code()
        );
        assert_eq!(
            check("t", 4, Some(vec![vec![0, 0]])).unwrap_err().0,
            E::InvalidReplicaAssignment.code()
        );
    }
}
