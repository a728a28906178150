//! Describing a cluster and its topics in full, and topic configs: Metadata with replicas and
//! ISRs, DescribeCluster (falling back to Metadata on brokers without it; fenced brokers
//! included from v2), DescribeQuorum (the metadata quorum, from its leader), DescribeConfigs,
//! IncrementalAlterConfigs and ElectLeaders.
//!
//! Plain functions over a [`Connection`]; a resource's or the request's Kafka error fails the
//! call with [`ClientError::Kafka`] (the broker's message, when it gives one, is in the context).

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{describe_quorum_request, describe_quorum_response};
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeConfigsRequest, DescribeQuorumRequest,
    ElectLeadersRequest, IncrementalAlterConfigsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{ClientError, Connection, Result};

/// ConfigResource type of a topic.
pub const RESOURCE_TOPIC: i8 = 2;
/// ConfigResource type of a broker.
pub const RESOURCE_BROKER: i8 = 4;

/// A broker with its rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDescription {
    /// Kafka node id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// Fenced by the controller (DescribeCluster v2; `false` when the broker cannot say).
    pub fenced: bool,
}

/// A cluster: its id, controller and brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id, if the broker gives one.
    pub cluster_id: Option<String>,
    /// Controller node id (-1: unknown).
    pub controller_id: i32,
    /// Brokers, by node id.
    pub brokers: Vec<BrokerDescription>,
}

/// A partition with its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition index.
    pub partition: i32,
    /// Kafka error code.
    pub error_code: i16,
    /// Leader node id (-1: none).
    pub leader: i32,
    /// Leader epoch (-1: unknown).
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
}

/// A topic with its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Kafka error code (3: UNKNOWN_TOPIC_OR_PARTITION).
    pub error_code: i16,
    /// Topic id (nil before Metadata v10).
    pub topic_id: uuid::Uuid,
    /// Internal topic (e.g. `__consumer_offsets`).
    pub is_internal: bool,
    /// Partitions, by index.
    pub partitions: Vec<PartitionDescription>,
}

/// A Metadata answer in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataDescription {
    /// The cluster.
    pub cluster: ClusterDescription,
    /// Topics asked for (or all), by name.
    pub topics: Vec<TopicDescription>,
}

/// A config entry as DescribeConfigs gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name.
    pub name: String,
    /// Value (`None` for sensitive or unset values).
    pub value: Option<String>,
    /// Where the value comes from (Kafka's ConfigSource names, e.g. DYNAMIC_TOPIC_CONFIG).
    pub source: &'static str,
    /// Cannot be altered.
    pub read_only: bool,
    /// Sensitive (value hidden).
    pub is_sensitive: bool,
}

/// One IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    /// Set `name` to `value`.
    Set(String, String),
    /// Remove `name` (back to its default).
    Delete(String),
}

/// Kafka's name for a ConfigSource id.
pub fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Metadata for `topics` (`None`: every topic), with replicas, ISRs and the cluster id.
pub fn describe_topics(
    conn: &mut Connection,
    topics: Option<&[&str]>,
) -> Result<MetadataDescription> {
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
    let mut brokers: Vec<BrokerDescription> = response
        .brokers
        .iter()
        .map(|b| BrokerDescription {
            node_id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(|r| r.to_string()),
            fenced: false,
        })
        .collect();
    brokers.sort_by_key(|b| b.node_id);
    let mut out = MetadataDescription {
        cluster: ClusterDescription {
            cluster_id: response.cluster_id.as_ref().map(|c| c.to_string()),
            controller_id: response.controller_id.0,
            brokers,
        },
        topics: Vec::new(),
    };
    for t in &response.topics {
        let mut partitions: Vec<PartitionDescription> = t
            .partitions
            .iter()
            .map(|p| PartitionDescription {
                partition: p.partition_index,
                error_code: p.error_code,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                isr: p.isr_nodes.iter().map(|r| r.0).collect(),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        out.topics.push(TopicDescription {
            name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
            error_code: t.error_code,
            topic_id: t.topic_id,
            is_internal: t.is_internal,
            partitions,
        });
    }
    out.topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The cluster: DescribeCluster when the broker serves it, else Metadata.
pub fn describe_cluster(conn: &mut Connection) -> Result<ClusterDescription> {
    if conn.versions().range(ApiKey::DescribeCluster).is_none() {
        return Ok(describe_topics(conn, Some(&[]))?.cluster);
    }
    let version = conn.versions().pick(ApiKey::DescribeCluster, 0, 2)?;
    let mut request = DescribeClusterRequest::default().with_endpoint_type(1);
    if version >= 2 {
        request.include_fenced_brokers = true;
    }
    let response = conn.request_at(version, &request)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka {
            context: with_message("describe the cluster", &response.error_message),
            code: response.error_code,
        });
    }
    let mut brokers: Vec<BrokerDescription> = response
        .brokers
        .iter()
        .map(|b| BrokerDescription {
            node_id: b.broker_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(|r| r.to_string()),
            fenced: b.is_fenced,
        })
        .collect();
    brokers.sort_by_key(|b| b.node_id);
    Ok(ClusterDescription {
        cluster_id: Some(response.cluster_id.to_string()),
        controller_id: response.controller_id.0,
        brokers,
    })
}

/// The metadata log's topic and partition, as DescribeQuorum names them.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// One replica of the metadata log, as the quorum's leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumReplica {
    /// Kafka node id.
    pub node_id: i32,
    /// Its last known log end offset (-1: unknown).
    pub log_end_offset: i64,
    /// When the leader last heard from it (ms since the epoch, -1: unknown or before v1).
    pub last_fetch_timestamp_ms: i64,
    /// When it was last caught up with the leader (ms since the epoch, -1: unknown).
    pub last_caught_up_timestamp_ms: i64,
}

/// The metadata quorum (DescribeQuorum): its leader, epoch, high watermark and replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    /// The leader (the active controller), -1 if unknown.
    pub leader_id: i32,
    /// The leader epoch (the Raft term).
    pub leader_epoch: i32,
    /// The high watermark (the commit index).
    pub high_watermark: i64,
    /// The voters.
    pub voters: Vec<QuorumReplica>,
    /// Replicas that follow without voting.
    pub observers: Vec<QuorumReplica>,
    /// The voters' controller endpoints (`name://host:port`), by node id (v2; else empty).
    pub endpoints: Vec<(i32, Vec<String>)>,
}

impl QuorumDescription {
    /// How far `replica` is behind the leader's log end (Kafka's "Lag"); `None` when its
    /// log end or the leader's is unknown.
    pub fn lag(&self, replica: &QuorumReplica) -> Option<i64> {
        let leader_end = self
            .voters
            .iter()
            .find(|v| v.node_id == self.leader_id)?
            .log_end_offset;
        (leader_end >= 0 && replica.log_end_offset >= 0)
            .then(|| (leader_end - replica.log_end_offset).max(0))
    }

    /// The greatest lag of any voter (`None` if one is unknown).
    pub fn max_voter_lag(&self) -> Option<i64> {
        self.voters
            .iter()
            .map(|v| self.lag(v))
            .try_fold(0, |max, lag| lag.map(|l| max.max(l)))
    }
}

/// The metadata quorum as `conn`'s broker answers DescribeQuorum. Only the quorum's leader
/// describes it: other nodes fail the call with NOT_LEADER_OR_FOLLOWER (6), and the caller asks
/// the active controller (DescribeCluster's `controller_id`).
pub fn describe_quorum(conn: &mut Connection) -> Result<QuorumDescription> {
    let request = DescribeQuorumRequest::default().with_topics(vec![
        describe_quorum_request::TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
            .with_partitions(vec![
                describe_quorum_request::PartitionData::default().with_partition_index(0)
            ]),
    ]);
    let response = conn.request(&request)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka {
            context: with_message("describe the quorum", &response.error_message),
            code: response.error_code,
        });
    }
    let partition = response
        .topics
        .iter()
        .filter(|t| t.topic_name.0.as_str() == METADATA_TOPIC)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == 0)
        .ok_or_else(|| ClientError::Protocol("DescribeQuorum: no __cluster_metadata-0".into()))?;
    if partition.error_code != 0 {
        return Err(ClientError::Kafka {
            context: with_message("describe the quorum", &partition.error_message),
            code: partition.error_code,
        });
    }
    let replicas = |states: &[describe_quorum_response::ReplicaState]| {
        let mut out: Vec<QuorumReplica> = states
            .iter()
            .map(|r| QuorumReplica {
                node_id: r.replica_id.0,
                log_end_offset: r.log_end_offset,
                last_fetch_timestamp_ms: r.last_fetch_timestamp,
                last_caught_up_timestamp_ms: r.last_caught_up_timestamp,
            })
            .collect();
        out.sort_by_key(|r| r.node_id);
        out
    };
    let mut endpoints: Vec<(i32, Vec<String>)> = response
        .nodes
        .iter()
        .map(|n| {
            let listeners = n
                .listeners
                .iter()
                .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
                .collect();
            (n.node_id.0, listeners)
        })
        .collect();
    endpoints.sort();
    Ok(QuorumDescription {
        leader_id: partition.leader_id.0,
        leader_epoch: partition.leader_epoch,
        high_watermark: partition.high_watermark,
        voters: replicas(&partition.current_voters),
        observers: replicas(&partition.observers),
        endpoints,
    })
}

fn with_message(context: &str, message: &Option<StrBytes>) -> String {
    match message
        .as_ref()
        .map(|m| m.as_str())
        .filter(|m| !m.is_empty())
    {
        Some(m) => format!("{context}: {m}"),
        None => context.to_string(),
    }
}

/// Every config of one resource (`resource_type`: [`RESOURCE_TOPIC`] or [`RESOURCE_BROKER`]).
pub fn describe_configs(
    conn: &mut Connection,
    resource_type: i8,
    name: &str,
) -> Result<Vec<ConfigEntry>> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None)]);
    let response = conn.request(&request)?;
    let result = response
        .results
        .first()
        .ok_or_else(|| ClientError::Protocol("DescribeConfigs: no result".into()))?;
    if result.error_code != 0 {
        return Err(ClientError::Kafka {
            context: with_message(
                &format!("describe the configs of {name}"),
                &result.error_message,
            ),
            code: result.error_code,
        });
    }
    let mut entries: Vec<ConfigEntry> = result
        .configs
        .iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c.value.as_ref().map(|v| v.to_string()),
            source: config_source_name(c.config_source),
            read_only: c.read_only,
            is_sensitive: c.is_sensitive,
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Applies `ops` to one resource's configs with IncrementalAlterConfigs.
pub fn alter_configs(
    conn: &mut Connection,
    resource_type: i8,
    name: &str,
    ops: &[AlterOp],
) -> Result<()> {
    let configs = ops
        .iter()
        .map(|op| match op {
            AlterOp::Set(k, v) => AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(v.clone()))),
            AlterOp::Delete(k) => AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1)
                .with_value(None),
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs),
    ]);
    let response = conn.request(&request)?;
    let result = response
        .responses
        .first()
        .ok_or_else(|| ClientError::Protocol("IncrementalAlterConfigs: no result".into()))?;
    if result.error_code != 0 {
        return Err(ClientError::Kafka {
            context: with_message(
                &format!("alter the configs of {name}"),
                &result.error_message,
            ),
            code: result.error_code,
        });
    }
    Ok(())
}

/// ElectLeaders' election type: the preferred (first) replica.
pub const ELECTION_PREFERRED: i8 = 0;
/// ElectLeaders' election type: any live replica of a leaderless partition.
pub const ELECTION_UNCLEAN: i8 = 1;

/// One partition's election result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionResult {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// 0: elected; else the Kafka error (ELECTION_NOT_NEEDED: it already had the leader asked
    /// for).
    pub error_code: i16,
    /// The broker's message, if any.
    pub error_message: Option<String>,
}

/// ElectLeaders (v1+; v0 knows only PREFERRED) of `election_type` for `partitions` (topic,
/// partition indexes); `None`: every partition, the broker listing only those it elected or
/// could not. The request's top-level error fails the call.
pub fn elect_leaders(
    conn: &mut Connection,
    election_type: i8,
    partitions: Option<&[(String, Vec<i32>)]>,
    timeout_ms: i32,
) -> Result<Vec<ElectionResult>> {
    let min = if election_type == ELECTION_PREFERRED {
        0
    } else {
        1
    };
    let version = conn.versions().pick(ApiKey::ElectLeaders, min, 2)?;
    let request = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(timeout_ms)
        .with_topic_partitions(partitions.map(|list| {
            list.iter()
                .map(|(topic, indexes)| {
                    kafka_protocol::messages::elect_leaders_request::TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(indexes.clone())
                })
                .collect()
        }));
    let response = conn.request_at(version, &request)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka {
            context: "elect leaders".into(),
            code: response.error_code,
        });
    }
    Ok(response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(|p| ElectionResult {
                topic: t.topic.0.to_string(),
                partition: p.partition_id,
                error_code: p.error_code,
                error_message: p.error_message.as_ref().map(|m| m.to_string()),
            })
        })
        .collect())
}

/// One partition's reassignment result (AlterPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentResult {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// 0: accepted (the reassignment runs, or completed); else the Kafka error.
    pub error_code: i16,
    /// The broker's message, if any.
    pub error_message: Option<String>,
}

/// AlterPartitionReassignments (v0-1) of `partitions`: (topic, partition, target replicas, or
/// `None` to cancel the one in progress). Replication factor changes are allowed. The
/// request's top-level error fails the call.
pub fn alter_partition_reassignments(
    conn: &mut Connection,
    partitions: &[(String, i32, Option<Vec<i32>>)],
    timeout_ms: i32,
) -> Result<Vec<ReassignmentResult>> {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
    let version = conn
        .versions()
        .pick(ApiKey::AlterPartitionReassignments, 0, 1)?;
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for (topic, partition, target) in partitions {
        let p = ReassignablePartition::default()
            .with_partition_index(*partition)
            .with_replicas(
                target
                    .as_ref()
                    .map(|t| t.iter().copied().map(BrokerId).collect()),
            );
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_allow_replication_factor_change(true)
        .with_topics(topics);
    let response = conn.request_at(version, &request)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka {
            context: "alter partition reassignments".into(),
            code: response.error_code,
        });
    }
    Ok(response
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ReassignmentResult {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                error_code: p.error_code,
                error_message: p.error_message.as_ref().map(|m| m.to_string()),
            })
        })
        .collect())
}

/// A reassignment in progress (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The replicas now (the target ones first, then those being removed).
    pub replicas: Vec<i32>,
    /// Replicas being added.
    pub adding: Vec<i32>,
    /// Replicas being removed.
    pub removing: Vec<i32>,
}

/// ListPartitionReassignments (v0) of every topic. The top-level error fails the call.
pub fn list_partition_reassignments(
    conn: &mut Connection,
    timeout_ms: i32,
) -> Result<Vec<OngoingReassignment>> {
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    let version = conn
        .versions()
        .pick(ApiKey::ListPartitionReassignments, 0, 0)?;
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(None);
    let response = conn.request_at(version, &request)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka {
            context: "list partition reassignments".into(),
            code: response.error_code,
        });
    }
    let ids = |l: &[kafka_protocol::messages::BrokerId]| l.iter().map(|b| b.0).collect();
    Ok(response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| OngoingReassignment {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        })
        .collect())
}
