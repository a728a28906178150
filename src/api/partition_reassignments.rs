//! AlterPartitionReassignments (API 45, v0-1) and ListPartitionReassignments (API 46, v0):
//! moving partitions between brokers, as Kafka 4.1's `ControllerApis` /
//! `ReplicationControlManager` do, through the metadata quorum.
//!
//! - Alter: each named partition is one `MetadataCommand::AlterReassignment` (target replicas,
//!   or null to cancel), all in one metadata change on the active controller (forwarded there
//!   from any broker, `Shard::change_metadata`); each is answered with its own result: NONE,
//!   UNKNOWN_TOPIC_OR_PARTITION, NO_REASSIGNMENT_IN_PROGRESS, INVALID_REPLICA_ASSIGNMENT,
//!   INVALID_REPLICATION_FACTOR (v1's `allow_replication_factor_change` false and a list of
//!   another length; v0 always allows it), with Kafka's messages. The answer goes out once the
//!   change is durable in the quorum and installed here: new replicas then start following
//!   (`coordinator::reassignment` for the steps; completion comes later, with the ISR).
//!   `allow_replication_factor_change` is echoed (KIP-860: a client that asked false and got
//!   true back knows the broker ignored it). `timeout_ms` is not used.
//! - List: the partitions with a reassignment in progress (replicas, adding, removing), of
//!   the named partitions or, for a null list, of every topic; unknown topics and partitions
//!   are left out, as Kafka does.
//! - Authorization (Kafka's `KafkaApis`): ALTER on the CLUSTER for 45, DESCRIBE on the CLUSTER
//!   for 46, else CLUSTER_AUTHORIZATION_FAILED (45: top level and every named partition; 46:
//!   top level).
//!
//! Bounds: an Alter names at most [`REASSIGNMENT_PARTITIONS_MAX`] partitions (Kafka's
//! `MAX_RECORDS_PER_USER_OP`), else the whole request is refused with INVALID_REQUEST; its
//! answer has one entry per named partition. A List answers at most
//! [`REASSIGNMENT_PARTITIONS_MAX`] partitions too (reassignments in progress beyond that are
//! left out of a null-list answer), so neither answer outgrows what the request bounds.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{authz, decode, respond, str_bytes, Outcome};
use crate::coordinator::metadata::{ClusterMetadata, MetadataCommand, MetadataError};
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

/// The most partitions one request may reassign, or one answer may list (Kafka's
/// `MAX_RECORDS_PER_USER_OP`).
pub const REASSIGNMENT_PARTITIONS_MAX: usize = 10_000;

/// One partition's answer: `Ok` (accepted) or the refusal.
type PartitionOutcome = (String, i32, Result<(), MetadataError>);

/// AlterPartitionReassignments (see the module docs).
pub async fn handle_alter(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: AlterPartitionReassignmentsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    // v0 has no such field: it always allows a change (the field defaults to true).
    let allow_rf_change = request.api_version < 1 || body.allow_replication_factor_change;
    let commands: Vec<MetadataCommand> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| MetadataCommand::AlterReassignment {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    target: p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                    allow_replication_factor_change: allow_rf_change,
                })
        })
        .collect();
    let named: Vec<(String, i32)> = commands
        .iter()
        .filter_map(|c| match c {
            MetadataCommand::AlterReassignment {
                topic, partition, ..
            } => Some((topic.clone(), *partition)),
            _ => None,
        })
        .collect();
    let refusal = if !authz::cluster_allowed(shard, &request, authz::Op::Alter) {
        Some(MetadataError {
            code: ResponseError::ClusterAuthorizationFailed,
            message: "Cluster authorization failed.".into(),
        })
    } else if named.len() > REASSIGNMENT_PARTITIONS_MAX {
        Some(MetadataError {
            code: ResponseError::InvalidRequest,
            message: format!(
                "A request may reassign at most {REASSIGNMENT_PARTITIONS_MAX} partitions."
            ),
        })
    } else {
        None
    };
    if let Some(why) = refusal {
        let mut response = alter_answer(refused_each(&named, &why));
        response.error_code = why.code.code();
        response.error_message = Some(str_bytes(why.message));
        response.allow_replication_factor_change = allow_rf_change;
        return respond(&request, &response);
    }
    let results = if commands.is_empty() {
        Ok(Vec::new())
    } else {
        shard
            .invoke_on(COORDINATOR_SHARD, move |coordinator| async move {
                coordinator.change_metadata(commands, false).await
            })
            .await
    };
    let outcomes = match results {
        Ok(results) => named
            .into_iter()
            .zip(results)
            .map(|((t, p), r)| (t, p, r))
            .collect(),
        Err(gone) => refused_each(
            &named,
            &MetadataError {
                code: ResponseError::UnknownServerError,
                message: format!("shard {} is gone", gone.0),
            },
        ),
    };
    let mut response = alter_answer(outcomes);
    response.allow_replication_factor_change = allow_rf_change;
    respond(&request, &response)
}

fn refused_each(named: &[(String, i32)], why: &MetadataError) -> Vec<PartitionOutcome> {
    named
        .iter()
        .map(|(t, p)| (t.clone(), *p, Err(why.clone())))
        .collect()
}

/// The Alter answer listing `outcomes`, grouped by topic in order of first appearance.
fn alter_answer(outcomes: Vec<PartitionOutcome>) -> AlterPartitionReassignmentsResponse {
    let mut response = AlterPartitionReassignmentsResponse::default().with_error_message(None);
    for (topic, partition, result) in outcomes {
        let mut p = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_message(None);
        if let Err(e) = result {
            p.error_code = e.code.code();
            p.error_message = Some(str_bytes(e.message));
        }
        let topics = &mut response.responses;
        match topics.iter_mut().find(|r| r.name.0.as_str() == topic) {
            Some(r) => r.partitions.push(p),
            None => topics.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    response
}

/// ListPartitionReassignments (see the module docs).
pub async fn handle_list(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ListPartitionReassignmentsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    if !authz::cluster_allowed(shard, &request, authz::Op::Describe) {
        let response = ListPartitionReassignmentsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
        return respond(&request, &response);
    }
    let named: Option<Vec<(String, Vec<i32>)>> = body.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let response = list_answer(&shard.metadata(), named.as_deref());
    respond(&request, &response)
}

/// The reassignments in progress among `named` (topic, partitions), or of every topic for
/// `None`, at most [`REASSIGNMENT_PARTITIONS_MAX`]. Pure.
pub fn list_answer(
    metadata: &ClusterMetadata,
    named: Option<&[(String, Vec<i32>)]>,
) -> ListPartitionReassignmentsResponse {
    let every: Vec<(String, Vec<i32>)>;
    let wanted: &[(String, Vec<i32>)] = match named {
        Some(named) => named,
        None => {
            every = metadata
                .topics
                .iter()
                .map(|(name, t)| (name.clone(), (0..t.partitions).collect()))
                .collect();
            &every
        }
    };
    let mut response = ListPartitionReassignmentsResponse::default().with_error_message(None);
    let mut listed = 0;
    for (topic, partitions) in wanted {
        let mut ongoing = Vec::new();
        for &index in partitions {
            let Some(a) = metadata.partition(topic, index) else {
                continue;
            };
            let Some(r) = &a.reassignment else {
                continue;
            };
            if listed >= REASSIGNMENT_PARTITIONS_MAX {
                break;
            }
            listed += 1;
            let ids = |l: &[i32]| l.iter().copied().map(BrokerId).collect::<Vec<_>>();
            ongoing.push(
                OngoingPartitionReassignment::default()
                    .with_partition_index(index)
                    .with_replicas(ids(&a.replicas))
                    .with_adding_replicas(ids(&r.adding))
                    .with_removing_replicas(ids(&r.removing)),
            );
        }
        if !ongoing.is_empty() {
            response.topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(topic.clone())))
                    .with_partitions(ongoing),
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::metadata::{BrokerRegistration, MetadataCommand};
    use std::collections::BTreeMap;

    fn cluster_with_topic() -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        for id in 0..3 {
            m = m
                .apply(&MetadataCommand::RegisterBroker {
                    registration: BrokerRegistration {
                        node_id: id,
                        incarnation_id: uuid::Uuid::from_u128(id as u128 + 1),
                        host: "127.0.0.1".into(),
                        port: 9092 + id,
                        rack: None,
                        fenced: false,
                        listeners: Vec::new(),
                    },
                })
                .unwrap();
        }
        m.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            partitions: 2,
            configs: BTreeMap::new(),
            replication_factor: 1,
            assignments: Some(vec![vec![0], vec![1]]),
        })
        .unwrap()
    }

    /// Only partitions with a reassignment in progress are listed, with their replicas,
    /// adding and removing; unknown topics and partitions are left out.
    #[test]
    fn the_list_shows_reassignments_in_progress_only() {
        let m = cluster_with_topic()
            .apply(&MetadataCommand::AlterReassignment {
                topic: "t".into(),
                partition: 1,
                target: Some(vec![2]),
                allow_replication_factor_change: true,
            })
            .unwrap();
        let all = list_answer(&m, None);
        assert_eq!(all.topics.len(), 1);
        let p = &all.topics[0].partitions;
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].partition_index, 1);
        assert_eq!(p[0].replicas, vec![BrokerId(2), BrokerId(1)]);
        assert_eq!(p[0].adding_replicas, vec![BrokerId(2)]);
        assert_eq!(p[0].removing_replicas, vec![BrokerId(1)]);
        let named = [("t".to_string(), vec![0, 7]), ("nope".to_string(), vec![0])];
        assert!(list_answer(&m, Some(&named)).topics.is_empty());
    }

    /// Alter answers group partitions by topic in request order, with codes and messages.
    #[test]
    fn alter_answers_group_by_topic() {
        let err = MetadataError {
            code: ResponseError::NoReassignmentInProgress,
            message: "none".into(),
        };
        let response = alter_answer(vec![
            ("a".into(), 1, Ok(())),
            ("b".into(), 0, Err(err)),
            ("a".into(), 0, Ok(())),
        ]);
        let got: Vec<(String, Vec<(i32, i16)>)> = response
            .responses
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.error_code))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), vec![(1, 0), (0, 0)]),
                ("b".to_string(), vec![(0, 85)])
            ]
        );
    }
}
