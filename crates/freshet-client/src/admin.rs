//! Cluster and topic requests: Metadata, CreateTopics, DeleteTopics, ListOffsets.
//!
//! Plain functions over a [`Connection`], returning plain structs; each request goes out at the
//! highest version both the broker and the `kafka-protocol` codec speak. These are not on any
//! hot path. Errors per topic or partition are returned as Kafka codes for the caller to judge
//! (e.g. TOPIC_ALREADY_EXISTS is fine for a benchmark).

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsRequest,
    MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{ClientError, Connection, Result};

/// ListOffsets timestamp asking for the next offset to be written (the log end).
pub const LATEST: i64 = -1;
/// ListOffsets timestamp asking for the first offset kept.
pub const EARLIEST: i64 = -2;
/// Error code TOPIC_ALREADY_EXISTS.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;

/// A broker as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Kafka node id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
}

impl BrokerInfo {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A partition as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader node id (-1: none).
    pub leader: i32,
    /// Kafka error code.
    pub error_code: i16,
}

/// A topic as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Kafka error code (e.g. 3 UNKNOWN_TOPIC_OR_PARTITION).
    pub error_code: i16,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionInfo>,
}

/// A Metadata answer.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    /// Brokers of the cluster.
    pub brokers: Vec<BrokerInfo>,
    /// Controller node id.
    pub controller_id: i32,
    /// Topics asked for (or all).
    pub topics: Vec<TopicInfo>,
}

impl ClusterMetadata {
    /// The broker with `node_id`.
    pub fn broker(&self, node_id: i32) -> Option<&BrokerInfo> {
        self.brokers.iter().find(|b| b.node_id == node_id)
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// Metadata for `topics` (`None`: every topic). Never creates topics.
pub fn metadata(conn: &mut Connection, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
    let request = MetadataRequest::default()
        .with_topics(topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                })
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    let response = conn.request(&request)?;
    let mut out = ClusterMetadata {
        brokers: response
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                node_id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
            })
            .collect(),
        controller_id: response.controller_id.0,
        topics: Vec::new(),
    };
    for t in &response.topics {
        let mut partitions: Vec<PartitionInfo> = t
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                partition: p.partition_index,
                leader: p.leader_id.0,
                error_code: p.error_code,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        out.topics.push(TopicInfo {
            name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
            error_code: t.error_code,
            partitions,
        });
    }
    Ok(out)
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Partition count (-1: the broker's default).
    pub partitions: i32,
    /// Replication factor (-1: the broker's default).
    pub replication_factor: i16,
    /// Topic configs (`retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

/// The answer for one topic of a CreateTopics or DeleteTopics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    /// Topic name.
    pub name: String,
    /// Kafka error code (0: done).
    pub error_code: i16,
    /// The broker's message, if any.
    pub error_message: Option<String>,
}

/// Creates `topics`; returns each topic's result (errors included, not raised).
pub fn create_topics(
    conn: &mut Connection,
    topics: &[NewTopic],
    timeout_ms: i32,
) -> Result<Vec<TopicResult>> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                        .with_num_partitions(t.partitions)
                        .with_replication_factor(t.replication_factor)
                        .with_configs(
                            t.configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = conn.request(&request)?;
    Ok(response
        .topics
        .iter()
        .map(|t| TopicResult {
            name: t.name.0.to_string(),
            error_code: t.error_code,
            error_message: t.error_message.as_ref().map(|m| m.to_string()),
        })
        .collect())
}

/// Deletes the topics named `names`; returns each topic's result.
pub fn delete_topics(
    conn: &mut Connection,
    names: &[&str],
    timeout_ms: i32,
) -> Result<Vec<TopicResult>> {
    let range = ApiKey::DeleteTopics.valid_versions();
    let version = conn
        .versions()
        .pick(ApiKey::DeleteTopics, range.min, range.max)?;
    let topic_name = |n: &&str| TopicName(StrBytes::from_string(n.to_string()));
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
    if version >= 6 {
        request.topics = names
            .iter()
            .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
            .collect();
    } else {
        request.topic_names = names.iter().map(topic_name).collect();
    }
    let response = conn.request_at(version, &request)?;
    Ok(response
        .responses
        .iter()
        .map(|t| TopicResult {
            name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
            error_code: t.error_code,
            error_message: t.error_message.as_ref().map(|m| m.to_string()),
        })
        .collect())
}

/// The offset for `timestamp` ([`LATEST`], [`EARLIEST`] or a time in ms) of each of
/// `partitions` of `topic`, in the order asked. A partition's Kafka error fails the call.
pub fn list_offsets(
    conn: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<Vec<i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let response = conn.request(&request)?;
    partitions
        .iter()
        .map(|&p| {
            let answer = response
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|a| a.partition_index == p)
                .ok_or_else(|| {
                    ClientError::Protocol(format!("ListOffsets: no answer for {topic}-{p}"))
                })?;
            if answer.error_code != 0 {
                return Err(ClientError::Kafka {
                    context: format!("list offsets of {topic}-{p}"),
                    code: answer.error_code,
                });
            }
            Ok(answer.offset)
        })
        .collect()
}
