//! ElectLeaders (API 43, v0-v2): preferred and unclean leader elections, on request.
//!
//! What Kafka 4.1 does (`ControllerApis.handleElectLeaders`,
//! `ReplicationControlManager.electLeaders`), here through the metadata quorum:
//! - The election type: v0 has none (PREFERRED); v1+ PREFERRED (0) or UNCLEAN (1). Any other
//!   value is INVALID_REQUEST, as Kafka's error response: the top-level error (v1+) and every
//!   named partition.
//! - Named partitions are answered one by one, in request order, each with the result of
//!   `MetadataCommand::ElectLeader` (`coordinator::metadata`): NONE when a new leader was
//!   elected, ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
//!   ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION, with Kafka's messages.
//! - No partitions named (a null list) means every partition of every topic; the partitions
//!   whose election is not needed are left out of the answer, as Kafka does.
//! - The elections are one metadata change on the active controller (forwarded there from any
//!   broker, `Shard::change_metadata`), durable in the quorum and installed on this node when
//!   the answer goes out; `timeout_ms` is not used.
//!
//! Bound: one request elects at most [`ELECT_LEADERS_PARTITIONS_MAX`] partitions (Kafka's
//! `MAX_RECORDS_PER_USER_OP`); a request naming more (or, for all partitions, with more
//! needing an election) is refused whole with INVALID_REQUEST. The answer holds one entry per
//! named partition, so its size follows the request's, itself bounded by `request_bytes_max`.
//!
//! Not done yet: authorization (Kafka needs ALTER on the CLUSTER resource).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::{decode, respond, str_bytes, Outcome};
use crate::coordinator::metadata::{ClusterMetadata, Election, MetadataCommand, MetadataError};
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

/// The most partitions one ElectLeaders request may elect (Kafka's `MAX_RECORDS_PER_USER_OP`).
pub const ELECT_LEADERS_PARTITIONS_MAX: usize = 10_000;

/// One partition's answer: `Ok` (elected) or the refusal.
type PartitionOutcome = (String, i32, Result<(), MetadataError>);

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ElectLeadersRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let named: Option<Vec<(String, i32)>> = body.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect()
    });
    let election = match election_of(request.api_version, body.election_type) {
        Ok(election) => election,
        Err(why) => return respond(&request, &refused_whole(&named, &why)),
    };
    if named
        .as_ref()
        .is_some_and(|n| n.len() > ELECT_LEADERS_PARTITIONS_MAX)
    {
        let why = too_many();
        return respond(&request, &refused_whole(&named, &why));
    }
    let asked = named.clone();
    let outcomes = shard
        .invoke_on(COORDINATOR_SHARD, move |coordinator| {
            elect_on_coordinator(coordinator, named, election)
        })
        .await;
    let response = match outcomes {
        Ok(Ok(outcomes)) => answer(outcomes),
        Ok(Err(why)) => refused_whole(&asked, &why),
        Err(gone) => refused_whole(
            &asked,
            &MetadataError {
                code: ResponseError::UnknownServerError,
                message: format!("shard {} is gone", gone.0),
            },
        ),
    };
    respond(&request, &response)
}

/// The election a request asks for (v0: PREFERRED), or INVALID_REQUEST for an unknown type.
fn election_of(api_version: i16, election_type: i8) -> Result<Election, MetadataError> {
    match (api_version, election_type) {
        (0, _) | (_, 0) => Ok(Election::Preferred),
        (_, 1) => Ok(Election::Unclean),
        (_, other) => Err(MetadataError {
            code: ResponseError::InvalidRequest,
            message: format!("Unknown election type {other}"),
        }),
    }
}

fn too_many() -> MetadataError {
    MetadataError {
        code: ResponseError::InvalidRequest,
        message: format!(
            "A request may elect leaders for at most {ELECT_LEADERS_PARTITIONS_MAX} partitions."
        ),
    }
}

/// On the coordinator shard: the partitions to elect (the named ones, or those of every topic
/// that need an election), one metadata change for all, one outcome per partition.
async fn elect_on_coordinator(
    coordinator: Rc<Shard>,
    named: Option<Vec<(String, i32)>>,
    election: Election,
) -> Result<Vec<PartitionOutcome>, MetadataError> {
    let all = named.is_none();
    let partitions = match named {
        Some(named) => named,
        None => {
            let due = needing_election(&coordinator.metadata(), election);
            if due.len() > ELECT_LEADERS_PARTITIONS_MAX {
                return Err(too_many());
            }
            due
        }
    };
    let commands = partitions
        .iter()
        .map(|(topic, partition)| MetadataCommand::ElectLeader {
            topic: topic.clone(),
            partition: *partition,
            election,
        })
        .collect();
    let results = if partitions.is_empty() {
        Vec::new()
    } else {
        coordinator.change_metadata(commands, false).await
    };
    Ok(partitions
        .into_iter()
        .zip(results)
        .filter(|(_, r)| {
            // All partitions asked: those already as wanted are not listed (Kafka's rule).
            !(all && matches!(r, Err(e) if e.code == ResponseError::ElectionNotNeeded))
        })
        .map(|((topic, partition), r)| (topic, partition, r))
        .collect())
}

/// Every partition of every topic for which an election of `election` kind is needed (a
/// first replica that does not lead; no leader), in topic and partition order. Pure.
pub fn needing_election(metadata: &ClusterMetadata, election: Election) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for (name, topic) in &metadata.topics {
        for (index, a) in topic.assignment.iter().enumerate() {
            let needed = match election {
                Election::Preferred => a.replicas.first() != Some(&a.leader),
                Election::Unclean => a.leader == -1,
            };
            if needed {
                out.push((name.clone(), i32::try_from(index).unwrap_or(i32::MAX)));
            }
        }
    }
    out
}

/// The answer listing `outcomes`, grouped by topic in order of first appearance.
fn answer(outcomes: Vec<PartitionOutcome>) -> ElectLeadersResponse {
    let mut response = ElectLeadersResponse::default();
    for (topic, partition, result) in outcomes {
        let mut p = PartitionResult::default().with_partition_id(partition);
        if let Err(e) = result {
            p.error_code = e.code.code();
            p.error_message = Some(str_bytes(e.message));
        }
        let results = &mut response.replica_election_results;
        match results.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(r) => r.partition_result.push(p),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partition_result(vec![p]),
            ),
        }
    }
    response
}

/// Kafka's error response (`ElectLeadersRequest.getErrorResponse`): the top-level error, and
/// every named partition with it.
fn refused_whole(named: &Option<Vec<(String, i32)>>, why: &MetadataError) -> ElectLeadersResponse {
    let outcomes = named
        .iter()
        .flatten()
        .map(|(t, p)| (t.clone(), *p, Err(why.clone())))
        .collect();
    let mut response = answer(outcomes);
    response.error_code = why.code.code();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_types_follow_the_version() {
        assert_eq!(election_of(0, 1), Ok(Election::Preferred));
        assert_eq!(election_of(1, 0), Ok(Election::Preferred));
        assert_eq!(election_of(2, 1), Ok(Election::Unclean));
        assert_eq!(
            election_of(2, 7).unwrap_err().code,
            ResponseError::InvalidRequest
        );
    }

    /// Results are grouped by topic, in request order, with codes and messages; a refusal of
    /// the whole request gives every named partition its error and the top-level one.
    #[test]
    fn answers_group_partitions_by_topic() {
        let err = |code| MetadataError {
            code,
            message: "why".into(),
        };
        let response = answer(vec![
            ("a".into(), 1, Ok(())),
            ("b".into(), 0, Err(err(ResponseError::ElectionNotNeeded))),
            (
                "a".into(),
                0,
                Err(err(ResponseError::UnknownTopicOrPartition)),
            ),
        ]);
        assert_eq!(response.error_code, 0);
        let topics: Vec<(&str, Vec<(i32, i16)>)> = response
            .replica_election_results
            .iter()
            .map(|r| {
                (
                    r.topic.0.as_str(),
                    r.partition_result
                        .iter()
                        .map(|p| (p.partition_id, p.error_code))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            topics,
            vec![
                ("a", vec![(1, 0), (0, 3)]),
                ("b", vec![(0, ResponseError::ElectionNotNeeded.code())])
            ]
        );
        let whole = refused_whole(
            &Some(vec![("a".into(), 0), ("a".into(), 1)]),
            &err(ResponseError::InvalidRequest),
        );
        assert_eq!(whole.error_code, ResponseError::InvalidRequest.code());
        assert!(whole.replica_election_results[0]
            .partition_result
            .iter()
            .all(|p| p.error_code == ResponseError::InvalidRequest.code()));
        assert!(refused_whole(&None, &err(ResponseError::InvalidRequest))
            .replica_election_results
            .is_empty());
    }
}
