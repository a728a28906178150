//! DescribeQuorum (API 55, v0-v2): the metadata quorum, as `kafka-metadata-quorum describe`
//! shows it.
//!
//! The quorum's log is Kafka's `__cluster_metadata` partition 0. As Kafka's
//! `KafkaRaftClient.handleDescribeQuorumRequest` does:
//! - a request that does not ask for exactly that one partition gets
//!   UNKNOWN_TOPIC_OR_PARTITION on every partition it names;
//! - a node that does not lead the quorum answers NOT_LEADER_OR_FOLLOWER on that partition
//!   (the client asks the active controller instead);
//! - the leader answers its id, its epoch (the Raft term), the high watermark (the commit
//!   index), and every voter and observer with its log end offset and, from v1, when the
//!   leader last heard from it and when it was last caught up (the leader itself: now).
//!   v2 adds each voter's controller listeners (`nodes`) and error messages.
//!
//! The status comes from `Shard::quorum_status` on the coordinator shard, where the quorum
//! runs; the answer is built by the pure [`describe`]. Replica directory ids are not tracked
//! (nil, as Kafka sends for a replica without one).

use std::rc::Rc;

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};

use super::admin::AdminError;
use super::{decode, respond, str_bytes, Outcome};
use crate::cluster::{QuorumConfig, QuorumStatus, ReplicaStatus, Voter};
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

/// The metadata log's topic (Kafka's name for it).
pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// The metadata log's one partition.
pub const METADATA_PARTITION: i32 = 0;
/// The listener name voters' controller endpoints are reported under (Kafka's convention).
pub const CONTROLLER_LISTENER_NAME: &str = "CONTROLLER";

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeQuorumRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let version = request.api_version;
    // Kafka: DESCRIBE on the cluster, else the whole answer is CLUSTER_AUTHORIZATION_FAILED.
    if !super::authz::cluster_allowed(shard, &request, super::authz::Op::Describe) {
        let response = kafka_protocol::messages::DescribeQuorumResponse::default().with_error_code(
            kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code(),
        );
        return respond(&request, &response);
    }
    if !asks_for_the_metadata_partition(&body) {
        let response = partition_errors(version, &body, &AdminError::UnknownTopicOrPartition);
        return respond(&request, &response);
    }
    let status = match shard
        .invoke_on(COORDINATOR_SHARD, |s| async move { s.quorum_status() })
        .await
    {
        Ok(status) => status,
        Err(gone) => {
            return respond(
                &request,
                &singleton_error(version, &AdminError::ShardGone(gone)),
            )
        }
    };
    if status.leader_id != Some(shard.config.node_id) {
        return respond(
            &request,
            &singleton_error(version, &AdminError::NotQuorumLeader),
        );
    }
    // A configuration that does not parse never got the broker started; no voters then.
    let voters = QuorumConfig::from_broker_config(&shard.config)
        .map(|q| q.voters)
        .unwrap_or_default();
    respond(&request, &describe(version, &status, &voters, now_ms()))
}

/// Whether the request names exactly `__cluster_metadata` partition 0 (Kafka's
/// `RaftUtil.hasValidTopicPartition`).
pub fn asks_for_the_metadata_partition(body: &DescribeQuorumRequest) -> bool {
    match body.topics.as_slice() {
        [topic] => {
            topic.topic_name.0.as_str() == METADATA_TOPIC
                && topic.partitions.len() == 1
                && topic.partitions[0].partition_index == METADATA_PARTITION
        }
        _ => false,
    }
}

/// `error` on every partition the request names (Kafka's `getPartitionLevelErrorResponse`).
fn partition_errors(
    version: i16,
    body: &DescribeQuorumRequest,
    error: &AdminError,
) -> DescribeQuorumResponse {
    let topics = body
        .topics
        .iter()
        .map(|t| {
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| partition_error(version, p.partition_index, error))
                        .collect(),
                )
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_error_message(None)
        .with_topics(topics)
}

/// `error` on `__cluster_metadata` partition 0 (Kafka's `singletonErrorResponse`).
fn singleton_error(version: i16, error: &AdminError) -> DescribeQuorumResponse {
    DescribeQuorumResponse::default()
        .with_error_message(None)
        .with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
            .with_partitions(vec![partition_error(
                version,
                METADATA_PARTITION,
                error,
            )])])
}

fn partition_error(version: i16, partition: i32, error: &AdminError) -> PartitionData {
    let data = PartitionData::default()
        .with_error_message(None)
        .with_partition_index(partition)
        .with_error_code(error.code())
        .with_leader_id(BrokerId(-1))
        .with_leader_epoch(-1)
        .with_high_watermark(-1);
    if version >= 2 {
        data.with_error_message(error.message())
    } else {
        data
    }
}

/// The leader's answer for `status` (this node leads it) at `version`; `voters` give the
/// controller listeners of v2's `nodes`; `now_ms` is the leader's wall clock.
pub fn describe(
    version: i16,
    status: &QuorumStatus,
    voters: &[Voter],
    now_ms: i64,
) -> DescribeQuorumResponse {
    let leader = status
        .leader_id
        .expect("only the leader describes the quorum");
    assert!(
        status.voters.iter().any(|v| v.node_id == leader),
        "the leader {leader} is a voter"
    );
    let replica = |r: &ReplicaStatus| {
        // Kafka reports the leader as fetching and caught up now.
        let (fetch, caught_up) = if r.node_id == leader {
            (now_ms, now_ms)
        } else {
            (r.last_fetch_timestamp_ms, r.last_caught_up_timestamp_ms)
        };
        ReplicaState::default()
            .with_replica_id(BrokerId(r.node_id))
            .with_log_end_offset(r.log_end_offset)
            .with_last_fetch_timestamp(fetch)
            .with_last_caught_up_timestamp(caught_up)
    };
    let partition = PartitionData::default()
        .with_partition_index(METADATA_PARTITION)
        .with_error_code(0)
        .with_error_message(None)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(i32::try_from(status.term).unwrap_or(i32::MAX))
        .with_high_watermark(i64::try_from(status.commit_index).unwrap_or(i64::MAX))
        .with_current_voters(status.voters.iter().map(replica).collect())
        .with_observers(status.observers.iter().map(replica).collect());
    let mut response = DescribeQuorumResponse::default()
        .with_error_code(0)
        .with_error_message(None)
        .with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
            .with_partitions(vec![partition])]);
    if version >= 2 {
        response.nodes = status
            .voters
            .iter()
            .map(|v| {
                let listeners = voters
                    .iter()
                    .find(|c| c.node_id == v.node_id)
                    .and_then(|c| controller_listener(&c.addr))
                    .into_iter()
                    .collect();
                Node::default()
                    .with_node_id(BrokerId(v.node_id))
                    .with_listeners(listeners)
            })
            .collect();
    }
    response
}

/// The listener of a voter's controller address `host:port` (`[v6]:port` too); none for a
/// single node's voter, which has no controller listener.
fn controller_listener(addr: &str) -> Option<Listener> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty()).then(|| {
        Listener::default()
            .with_name(str_bytes(CONTROLLER_LISTENER_NAME))
            .with_host(str_bytes(host))
            .with_port(port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_quorum_request;

    fn request(topics: &[(&str, &[i32])]) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(
            topics
                .iter()
                .map(|(name, partitions)| {
                    describe_quorum_request::TopicData::default()
                        .with_topic_name(TopicName(str_bytes(*name)))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|&p| {
                                    describe_quorum_request::PartitionData::default()
                                        .with_partition_index(p)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    fn status() -> QuorumStatus {
        let replica = |node_id, log_end_offset, at| ReplicaStatus {
            node_id,
            log_end_offset,
            last_fetch_timestamp_ms: at,
            last_caught_up_timestamp_ms: at,
        };
        QuorumStatus {
            leader_id: Some(2),
            term: 7,
            commit_index: 40,
            applied_index: 40,
            voters: vec![replica(1, 38, 900), replica(2, 41, 5), replica(3, -1, -1)],
            observers: vec![replica(9, 40, 950)],
        }
    }

    fn voters() -> Vec<Voter> {
        crate::cluster::parse_voters("1@127.0.0.1:19193,2@[::1]:19194,3@localhost:19195").unwrap()
    }

    /// Only `__cluster_metadata` partition 0, alone, is the quorum (Kafka's check).
    #[test]
    fn only_the_metadata_partition_is_described() {
        assert!(asks_for_the_metadata_partition(&request(&[(
            "__cluster_metadata",
            &[0]
        )])));
        for bad in [
            request(&[]),
            request(&[("__cluster_metadata", &[1])]),
            request(&[("__cluster_metadata", &[0, 0])]),
            request(&[("__cluster_metadata", &[])]),
            request(&[("orders", &[0])]),
            request(&[("__cluster_metadata", &[0]), ("__cluster_metadata", &[0])]),
        ] {
            assert!(!asks_for_the_metadata_partition(&bad), "{bad:?}");
        }
        let answer = partition_errors(
            2,
            &request(&[("orders", &[0, 3])]),
            &AdminError::UnknownTopicOrPartition,
        );
        assert_eq!(answer.error_code, 0);
        let partitions = &answer.topics[0].partitions;
        assert_eq!(partitions.len(), 2);
        assert!(partitions.iter().all(|p| p.error_code == 3));
        assert_eq!(partitions[1].partition_index, 3);
    }

    #[test]
    fn a_follower_says_not_leader() {
        let answer = singleton_error(1, &AdminError::NotQuorumLeader);
        assert_eq!(answer.topics[0].topic_name.0.as_str(), METADATA_TOPIC);
        assert_eq!(answer.topics[0].partitions[0].error_code, 6);
        let v2 = singleton_error(2, &AdminError::NotQuorumLeader);
        assert!(v2.topics[0].partitions[0].error_message.is_some());
    }

    /// The leader reports term, commit index and every replica; itself as caught up now.
    #[test]
    fn the_leader_describes_voters_and_observers() {
        let answer = describe(2, &status(), &voters(), 1_000);
        let p = &answer.topics[0].partitions[0];
        assert_eq!(
            (p.leader_id.0, p.leader_epoch, p.high_watermark),
            (2, 7, 40)
        );
        assert!(p.error_message.is_none() && answer.error_message.is_none());
        let ids: Vec<i32> = p.current_voters.iter().map(|r| r.replica_id.0).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(p.current_voters[0].log_end_offset, 38);
        assert_eq!(p.current_voters[0].last_fetch_timestamp, 900);
        assert_eq!(p.current_voters[1].last_fetch_timestamp, 1_000);
        assert_eq!(p.current_voters[1].last_caught_up_timestamp, 1_000);
        assert_eq!(p.current_voters[2].last_caught_up_timestamp, -1);
        assert_eq!(p.observers[0].replica_id.0, 9);
        let hosts: Vec<(i32, String, u16)> = answer
            .nodes
            .iter()
            .map(|n| {
                (
                    n.node_id.0,
                    n.listeners[0].host.to_string(),
                    n.listeners[0].port,
                )
            })
            .collect();
        assert_eq!(
            hosts,
            [
                (1, "127.0.0.1".to_string(), 19193),
                (2, "::1".to_string(), 19194),
                (3, "localhost".to_string(), 19195)
            ]
        );
        assert_eq!(answer.nodes[0].listeners[0].name.as_str(), "CONTROLLER");
    }

    /// Every version encodes (v0/v1 must not carry v2's nodes), and a single node's voter
    /// has no controller listener.
    #[test]
    fn every_version_encodes() {
        use kafka_protocol::protocol::Encodable;
        for version in 0..=2 {
            let answer = describe(version, &status(), &voters(), 1_000);
            let mut buf = bytes::BytesMut::new();
            answer.encode(&mut buf, version).expect("encodes");
            assert_eq!(answer.nodes.is_empty(), version < 2);
        }
        let single = crate::cluster::Voter {
            node_id: 2,
            addr: String::new(),
        };
        let answer = describe(2, &status(), &[single], 1_000);
        assert!(answer.nodes.iter().all(|n| n.listeners.is_empty()));
    }
}
