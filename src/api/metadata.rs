//! Metadata: brokers, topics, partitions and their leaders.
//!
//! This node leads every partition (single node; leader epoch 0). Asking for topics that do
//! not exist creates them when both the request (`allow_auto_topic_creation`) and the broker
//! (`auto_create_topics`) allow it, with `default_partitions` partitions; the creation is
//! synchronous, so the answer already lists the new topic. Topics can be named or, from v10,
//! given by id. A partition whose log failed to open (damaged on disk) is shown leaderless
//! with LEADER_NOT_AVAILABLE and this node as its offline replica.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::describe_cluster::all_cluster_operations;
use super::{decode, str_bytes, Outcome, AUTHORIZED_OPERATIONS_OMITTED};
use crate::coordinator::metadata::{validate_topic_name, ClusterMetadata, MetadataCommand};
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

/// The ACL operations Kafka supports on a TOPIC (`AclEntry.supportedOperations`): READ, WRITE,
/// CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS, as a bit field. With no
/// authorizer every client may do all of them.
const ALL_TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: MetadataRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    // v0 has no flag and always auto-creates; later versions say.
    let allow_create = shard.config.auto_create_topics
        && (request.api_version < 4 || body.allow_auto_topic_creation);
    let mut metadata = shard.metadata();
    if allow_create {
        if let Some(topics) = &body.topics {
            let missing: Vec<String> = topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .filter(|n| !metadata.topics.contains_key(n) && validate_topic_name(n).is_ok())
                .collect();
            if !missing.is_empty() {
                create_topics(shard, missing).await;
                metadata = shard.metadata();
            }
        }
    }
    let response = build_response(shard, &metadata, &body, request.api_version);
    super::respond(&request, &response)
}

/// Creates `names` with the broker's defaults on the coordinator shard. Failures (a race
/// with another creator, say) show up as the topic's state in the answer.
pub async fn create_topics(shard: &Rc<Shard>, names: Vec<String>) {
    let partitions = shard.config.default_partitions;
    let commands: Vec<MetadataCommand> = names
        .into_iter()
        .map(|name| MetadataCommand::CreateTopic {
            name,
            partitions,
            configs: BTreeMap::new(),
            replication_factor: 1,
            assignments: None,
        })
        .collect();
    let _ = shard
        .invoke_on(COORDINATOR_SHARD, move |coordinator| async move {
            coordinator.change_metadata(commands, false).await;
        })
        .await;
}

fn build_response(
    shard: &Shard,
    metadata: &ClusterMetadata,
    body: &MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let node_id = shard.config.node_id;
    let (host, port) = shard
        .config
        .advertised_host_port()
        .unwrap_or_else(|_| ("localhost".into(), 9092));
    let mut response = MetadataResponse::default();
    response.brokers = vec![{
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(node_id);
        b.host = str_bytes(host);
        b.port = port;
        b
    }];
    response.cluster_id = Some(str_bytes(metadata.cluster_id.clone()));
    response.controller_id = BrokerId(node_id);
    // Asked for in v8-v10 (later versions moved it to DescribeCluster).
    response.cluster_authorized_operations =
        if body.include_cluster_authorized_operations && (8..=10).contains(&version) {
            all_cluster_operations()
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        };
    let topic_operations = if body.include_topic_authorized_operations && version >= 8 {
        ALL_TOPIC_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let known = |name: &str| known_topic(metadata, node_id, topic_operations, name);
    response.topics = match &body.topics {
        // All topics. (v0 used an empty list for "all"; from v1 empty means none.)
        None => all_topics(metadata, &known),
        Some(list) if list.is_empty() && version == 0 => all_topics(metadata, &known),
        Some(list) => list
            .iter()
            .map(|requested| match &requested.name {
                Some(name) => {
                    let name = name.0.as_str();
                    if metadata.topics.contains_key(name) {
                        known(name)
                    } else if validate_topic_name(name).is_err() {
                        unknown_topic(
                            Some(name),
                            uuid::Uuid::nil(),
                            ResponseError::InvalidTopicException,
                        )
                    } else {
                        unknown_topic(
                            Some(name),
                            uuid::Uuid::nil(),
                            ResponseError::UnknownTopicOrPartition,
                        )
                    }
                }
                None => match metadata.topic_by_id(requested.topic_id) {
                    Some((name, _)) => known(name),
                    None => unknown_topic(None, requested.topic_id, ResponseError::UnknownTopicId),
                },
            })
            .collect(),
    };
    response
}

/// A partition as this (only) broker leads it, or without a leader if its log is offline.
fn partition_metadata(node_id: i32, name: &str, index: i32) -> MetadataResponsePartition {
    let mut p = MetadataResponsePartition::default();
    p.partition_index = index;
    p.leader_epoch = 0;
    p.replica_nodes = vec![BrokerId(node_id)];
    if crate::shard::is_offline(name, index) {
        // Its log is damaged on disk (see storage recovery): no leader, as Kafka shows a
        // partition whose only replica's log directory is offline.
        p.error_code = ResponseError::LeaderNotAvailable.code();
        p.leader_id = BrokerId(-1);
        p.offline_replicas = vec![BrokerId(node_id)];
    } else {
        p.leader_id = BrokerId(node_id);
        p.isr_nodes = vec![BrokerId(node_id)];
    }
    p
}

/// An existing topic, with its partitions.
fn known_topic(
    metadata: &ClusterMetadata,
    node_id: i32,
    topic_operations: i32,
    name: &str,
) -> MetadataResponseTopic {
    let topic = &metadata.topics[name];
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(str_bytes(name)));
    t.topic_id = topic.id;
    t.is_internal = topic.internal;
    t.partitions = (0..topic.partitions)
        .map(|index| partition_metadata(node_id, name, index))
        .collect();
    t.topic_authorized_operations = topic_operations;
    t
}

/// A topic asked for that is not there, with its error.
fn unknown_topic(
    name: Option<&str>,
    id: uuid::Uuid,
    error: ResponseError,
) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = error.code();
    t.name = name.map(|n| TopicName(str_bytes(n)));
    t.topic_id = id;
    t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    t
}

fn all_topics(
    metadata: &ClusterMetadata,
    known: &dyn Fn(&str) -> MetadataResponseTopic,
) -> Vec<MetadataResponseTopic> {
    metadata.topics.keys().map(|name| known(name)).collect()
}
