//! Metadata: brokers, topics, partitions and their leaders.
//!
//! Brokers are the registered unfenced ones (this node alone before any registered), each
//! partition's leader, leader epoch, replicas and ISR come from its assignment
//! (`shard::routing`: a pre-cluster topic is led by this node at epoch 0), a partition whose
//! leader is fenced or unregistered (or that has none) is shown leaderless with LEADER_NOT_AVAILABLE and its
//! fenced replicas offline, and controller_id is the active controller. Asking for topics that do
//! not exist creates them when both the request (`allow_auto_topic_creation`) and the broker
//! (`auto_create_topics`) allow it, with `default_partitions` partitions; the creation is
//! synchronous, so the answer already lists the new topic. Topics can be named or, from v10,
//! given by id. A partition led here whose log failed to open (damaged on disk) is shown
//! leaderless with LEADER_NOT_AVAILABLE and this node as its offline replica. Metadata v0 lists
//! only available replicas and ISR members (REPLICA_NOT_AVAILABLE when one is left out), as
//! Kafka does for v0.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::describe_cluster::all_cluster_operations;
use super::{authz, decode, str_bytes, Outcome, AUTHORIZED_OPERATIONS_OMITTED};
use crate::coordinator::metadata::{
    validate_topic_name, ClusterMetadata, MetadataCommand, TopicMeta,
};
use crate::protocol::header::ParsedRequest;
use crate::shard::{routing, Shard, COORDINATOR_SHARD};

/// The ACL operations Kafka supports on a TOPIC (`AclEntry.supportedOperations`): READ, WRITE,
/// CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS, as a bit field. With no
/// authorizer every client may do all of them.
pub const ALL_TOPIC_OPERATIONS: i32 =
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
    // Missing topics the caller may see but not create (Kafka: CREATE on the cluster or topic).
    let mut create_denied = HashSet::new();
    if allow_create {
        if let Some(topics) = &body.topics {
            let mut missing: Vec<String> = topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .filter(|n| !metadata.topics.contains_key(n) && validate_topic_name(n).is_ok())
                .collect();
            missing.retain(|n| may_create(shard, &request, n) || !create_denied.insert(n.clone()));
            if !missing.is_empty() {
                create_topics(shard, missing).await;
                metadata = shard.metadata();
            }
        }
    }
    let local = routing::local_endpoint_on(&shard.config, &request.listener);
    let controller_id = routing::controller_id(&shard.config);
    let mut response = build_response(
        &local,
        controller_id,
        &metadata,
        &body,
        request.api_version,
        &crate::shard::is_offline,
    );
    let all = body
        .topics
        .as_ref()
        .is_none_or(|t| t.is_empty() && request.api_version == 0);
    let named: HashSet<&str> = body
        .topics
        .iter()
        .flatten()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str()))
        .collect();
    authorize_topics(shard, &request, &mut response, all, &named, &create_denied);
    super::respond(&request, &response)
}

/// May the caller create topic `name` (CREATE on the cluster, or on the topic)?
fn may_create(shard: &Shard, request: &ParsedRequest, name: &str) -> bool {
    authz::cluster_allowed(shard, request, authz::Op::Create)
        || authz::allowed(shard, request, authz::Op::Create, authz::Res::Topic, name)
}

/// Kafka's authorization of a Metadata answer, with the authorizer on: topics the caller may
/// not DESCRIBE are left out of an all-topics answer and answered TOPIC_AUTHORIZATION_FAILED
/// when named (by id: without the name); missing topics it may not create too; the authorized
/// operations asked for are the caller's.
fn authorize_topics(
    shard: &Shard,
    request: &ParsedRequest,
    response: &mut MetadataResponse,
    all: bool,
    named: &HashSet<&str>,
    create_denied: &HashSet<String>,
) {
    if !shard.config.authorizer {
        return;
    }
    if response.cluster_authorized_operations != AUTHORIZED_OPERATIONS_OMITTED {
        response.cluster_authorized_operations = authz::cluster_operations(shard, request);
    }
    let visible =
        |name: &str| authz::allowed(shard, request, authz::Op::Describe, authz::Res::Topic, name);
    if all {
        response
            .topics
            .retain(|t| t.name.as_ref().is_some_and(|n| visible(n.0.as_str())));
    }
    for t in response.topics.iter_mut() {
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
            continue;
        };
        let by_id = !all && !named.contains(name.as_str());
        let unknown = t.error_code == ResponseError::UnknownTopicOrPartition.code();
        if !visible(&name) || (unknown && create_denied.contains(&name)) {
            let (name, id) = if by_id {
                (None, t.topic_id)
            } else {
                (Some(name.as_str()), uuid::Uuid::nil())
            };
            *t = unknown_topic(name, id, ResponseError::TopicAuthorizationFailed);
        } else if t.topic_authorized_operations != AUTHORIZED_OPERATIONS_OMITTED {
            t.topic_authorized_operations =
                authz::operations(shard, request, authz::Res::Topic, &name);
        }
    }
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

/// Whether this node's log of a partition failed to open (`shard::is_offline`).
type IsOffline = dyn Fn(&str, i32) -> bool;

/// The Metadata answer from `metadata`, as broker `local` sees it (pure but for the
/// `is_offline` lookup of this node's partitions).
fn build_response(
    local: &routing::BrokerEndpoint,
    controller_id: i32,
    metadata: &ClusterMetadata,
    body: &MetadataRequest,
    version: i16,
    is_offline: &IsOffline,
) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    response.brokers = routing::live_brokers(metadata, local)
        .into_iter()
        .map(|b| {
            let mut out = MetadataResponseBroker::default();
            out.node_id = BrokerId(b.node_id);
            out.host = str_bytes(b.host);
            out.port = b.port;
            out.rack = b.rack.map(str_bytes);
            out
        })
        .collect();
    response.cluster_id = Some(str_bytes(metadata.cluster_id.clone()));
    response.controller_id = BrokerId(controller_id);
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
    let node_id = local.node_id;
    let known = |name: &str| known_topic(metadata, node_id, topic_operations, name, is_offline);
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
    if version == 0 {
        for p in response
            .topics
            .iter_mut()
            .flat_map(|t| t.partitions.iter_mut())
        {
            hide_unavailable_replicas(metadata, p);
        }
    }
    response
}

/// Metadata v0 lists only the replicas (and ISR members) whose brokers are available, and a
/// partition with a leader but such a replica gets REPLICA_NOT_AVAILABLE (Kafka's
/// `errorUnavailableEndpoints`, for v0 only; later versions list them all and name the
/// offline ones).
fn hide_unavailable_replicas(metadata: &ClusterMetadata, p: &mut MetadataResponsePartition) {
    let listed = (p.replica_nodes.len(), p.isr_nodes.len());
    p.replica_nodes
        .retain(|b| !routing::is_unavailable(metadata, b.0));
    p.isr_nodes
        .retain(|b| !routing::is_unavailable(metadata, b.0));
    if p.error_code == 0 && (p.replica_nodes.len(), p.isr_nodes.len()) != listed {
        p.error_code = ResponseError::ReplicaNotAvailable.code();
    }
}

/// A partition as its assignment places it; without a leader if the leader is fenced (or
/// there is none), or if it is led here and its log is offline.
fn partition_metadata(
    metadata: &ClusterMetadata,
    topic: &TopicMeta,
    node_id: i32,
    name: &str,
    index: i32,
    is_offline: &IsOffline,
) -> MetadataResponsePartition {
    let view = routing::partition_view(metadata, topic, index, node_id);
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut p = MetadataResponsePartition::default();
    p.partition_index = index;
    p.leader_epoch = view.leader_epoch;
    p.replica_nodes = ids(&view.replicas);
    if view.leader == node_id && is_offline(name, index) {
        // Its log is damaged on disk (see storage recovery): no leader, as Kafka shows a
        // partition whose leader's log directory is offline; this node's replica is offline
        // too, next to the replicas whose brokers are unavailable.
        p.error_code = ResponseError::LeaderNotAvailable.code();
        p.leader_id = BrokerId(-1);
        p.isr_nodes = ids(&view.isr);
        let mut offline = view.offline_replicas.clone();
        if !offline.contains(&node_id) {
            offline.push(node_id);
        }
        p.offline_replicas = ids(&offline);
    } else {
        if view.leader < 0 {
            p.error_code = ResponseError::LeaderNotAvailable.code();
        }
        p.leader_id = BrokerId(view.leader);
        p.isr_nodes = ids(&view.isr);
        p.offline_replicas = ids(&view.offline_replicas);
    }
    p
}

/// An existing topic, with its partitions.
fn known_topic(
    metadata: &ClusterMetadata,
    node_id: i32,
    topic_operations: i32,
    name: &str,
    is_offline: &IsOffline,
) -> MetadataResponseTopic {
    let topic = &metadata.topics[name];
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(str_bytes(name)));
    t.topic_id = topic.id;
    t.is_internal = topic.internal;
    t.partitions = (0..topic.partitions)
        .map(|index| partition_metadata(metadata, topic, node_id, name, index, is_offline))
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
    // The coordinators' internal topics only when asked for by name.
    metadata
        .topics
        .keys()
        .filter(|name| !crate::coordinator::coordinator_key::is_coordinator_topic(name))
        .map(|name| known(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::routing::tests::three_brokers;

    fn node0() -> routing::BrokerEndpoint {
        routing::BrokerEndpoint {
            node_id: 0,
            host: "configured".into(),
            port: 1,
            rack: None,
            fenced: false,
            listener: String::new(),
        }
    }

    /// 3 brokers (2 fenced), 12 partitions spread: brokers, leaders, epochs, replicas, ISR and
    /// offline replicas exactly as the metadata has them, at every version.
    #[test]
    fn spread_partitions_are_described_as_assigned() {
        let metadata = three_brokers();
        // This node's log of "old"-1 is offline; "spread"-1 is not this node's to judge.
        let offline = |t: &str, p: i32| (t, p) == ("old", 1) || (t, p) == ("spread", 1);
        for version in [0, 1, 5, 9, 12, 13] {
            let r = build_response(
                &node0(),
                1,
                &metadata,
                &MetadataRequest::default().with_topics(None),
                version,
                &offline,
            );
            let brokers: Vec<_> = r
                .brokers
                .iter()
                .map(|b| (b.node_id.0, b.host.to_string(), b.port, b.rack.clone()))
                .collect();
            // This node (0) as configured, the other live one as registered.
            assert_eq!(
                brokers,
                vec![
                    (0, "configured".into(), 1, None),
                    (1, "host1".into(), 9001, Some(str_bytes("b"))),
                ]
            );
            assert_eq!(r.controller_id.0, 1);
            assert_eq!(r.cluster_id.as_deref(), Some("c1"));
            let spread = r
                .topics
                .iter()
                .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("spread"))
                .unwrap();
            assert_eq!(spread.partitions.len(), 12);
            for (i, p) in spread.partitions.iter().enumerate() {
                let i = i as i32;
                let owner = i % 3;
                assert_eq!(p.partition_index, i);
                assert_eq!(p.leader_epoch, i);
                // v0 lists available replicas only (broker 2 is fenced).
                let shown = if version == 0 && owner == 2 {
                    vec![]
                } else {
                    vec![BrokerId(owner)]
                };
                assert_eq!(p.replica_nodes, shown);
                assert_eq!(p.isr_nodes, shown);
                if owner == 2 {
                    assert_eq!(p.leader_id.0, -1, "p{i}: its leader is fenced");
                    assert_eq!(p.error_code, ResponseError::LeaderNotAvailable.code());
                    assert_eq!(p.offline_replicas, vec![BrokerId(2)]);
                } else {
                    assert_eq!(p.leader_id.0, owner);
                    assert_eq!(p.error_code, 0);
                    assert!(p.offline_replicas.is_empty());
                }
            }
            let old = r
                .topics
                .iter()
                .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("old"))
                .unwrap();
            let p0 = &old.partitions[0];
            assert_eq!((p0.leader_id.0, p0.leader_epoch, p0.error_code), (0, 0, 0));
            assert_eq!(p0.isr_nodes, vec![BrokerId(0)]);
            let p1 = &old.partitions[1];
            assert_eq!(p1.leader_id.0, -1);
            assert_eq!(p1.error_code, ResponseError::LeaderNotAvailable.code());
            assert_eq!(p1.offline_replicas, vec![BrokerId(0)]);
        }
    }

    /// A replicated partition (3 replicas, one on a fenced broker) shows all its replicas, its
    /// ISR and the fenced one offline; when this node leads it and its log here is offline,
    /// it is leaderless with this node's replica offline too, its ISR still shown.
    #[test]
    fn replicated_partitions_show_replicas_isr_and_offline_ones() {
        let mut metadata = three_brokers();
        let topic = TopicMeta {
            id: uuid::Uuid::from_u128(55),
            partitions: 2,
            configs: Default::default(),
            internal: false,
            assignment: (0..2)
                .map(|_| crate::coordinator::metadata::PartitionAssignment {
                    replicas: vec![0, 1, 2],
                    leader: 0,
                    leader_epoch: 4,
                    isr: vec![0, 1],
                    partition_epoch: 7,
                    reassignment: None,
                })
                .collect(),
        };
        metadata.topics.insert("r3".into(), topic);
        let offline = |t: &str, p: i32| (t, p) == ("r3", 1);
        let r = build_response(
            &node0(),
            1,
            &metadata,
            &MetadataRequest::default().with_topics(None),
            12,
            &offline,
        );
        let t = r
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("r3"))
            .unwrap();
        let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
        let (p0, p1) = (&t.partitions[0], &t.partitions[1]);
        assert_eq!((p0.error_code, p0.leader_id.0, p0.leader_epoch), (0, 0, 4));
        assert_eq!(p0.replica_nodes, ids(&[0, 1, 2]));
        assert_eq!(p0.isr_nodes, ids(&[0, 1]));
        assert_eq!(p0.offline_replicas, ids(&[2]), "broker 2 is fenced");
        assert_eq!(p1.error_code, ResponseError::LeaderNotAvailable.code());
        assert_eq!(p1.leader_id.0, -1);
        assert_eq!(p1.replica_nodes, ids(&[0, 1, 2]));
        assert_eq!(p1.isr_nodes, ids(&[0, 1]));
        assert_eq!(p1.offline_replicas, ids(&[2, 0]));
        // v0: the fenced replica is not listed, and says so with REPLICA_NOT_AVAILABLE.
        let r = build_response(
            &node0(),
            1,
            &metadata,
            &MetadataRequest::default().with_topics(None),
            0,
            &offline,
        );
        let t = r
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("r3"))
            .unwrap();
        let p0 = &t.partitions[0];
        assert_eq!(p0.error_code, ResponseError::ReplicaNotAvailable.code());
        assert_eq!(
            (p0.leader_id.0, p0.replica_nodes.clone()),
            (0, ids(&[0, 1]))
        );
        assert_eq!(p0.isr_nodes, ids(&[0, 1]));
        assert_eq!(
            t.partitions[1].error_code,
            ResponseError::LeaderNotAvailable.code()
        );
    }

    /// With no broker registered the answer is this node alone, leading everything, as a
    /// single node always answered.
    #[test]
    fn before_registration_this_node_is_the_only_broker() {
        let mut metadata = three_brokers();
        metadata.brokers.clear();
        let r = build_response(
            &node0(),
            0,
            &metadata,
            &MetadataRequest::default().with_topics(None),
            12,
            &|_, _| false,
        );
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(
            (
                r.brokers[0].node_id.0,
                r.brokers[0].host.as_str(),
                r.brokers[0].port
            ),
            (0, "configured", 1)
        );
        assert_eq!(r.controller_id.0, 0);
        let old = r
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("old"))
            .unwrap();
        assert!(old.partitions.iter().all(|p| p.leader_id.0 == 0
            && p.leader_epoch == 0
            && p.replica_nodes == vec![BrokerId(0)]));
    }
}
