//! Routing: which broker leads each partition, as every request path and answer reads it.
//!
//! The metadata says where a partition lives (`TopicMeta.assignment[p]`: replicas, leader,
//! leader epoch, ISR). A topic from before the cluster (a single-node data directory) has no
//! assignment: every partition of it is led by this node at epoch 0, its only replica and ISR.
//! [`assignment_of`] is the one place that reads an assignment with that fallback; everything
//! else (the shards' choice of partitions to open, the per-partition checks of Produce, Fetch,
//! ListOffsets, DeleteRecords and DescribeProducers, and the Metadata, DescribeTopicPartitions
//! and DescribeCluster answers) goes through it or through [`route`].
//!
//! Kafka's rule (`ReplicaManager.getPartitionOrError`): a partition this broker does not host
//! answers NOT_LEADER_OR_FOLLOWER when the metadata knows it (the client refreshes its metadata
//! and goes to the leader), UNKNOWN_TOPIC_OR_PARTITION when it does not.
//!
//! Brokers shown to clients: the registered unfenced ones; before any broker registered (a
//! single node whose quorum has not started, or a pre-cluster data directory), this node as
//! the configuration describes it. A leader that is fenced, or not registered while others
//! are, is shown as no leader (-1, LEADER_NOT_AVAILABLE) and such replicas as offline, as
//! Kafka shows a partition whose leader has no live endpoint.
//!
//! Pure functions of the metadata; no I/O.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;

use crate::config::BrokerConfig;
use crate::coordinator::metadata::{ClusterMetadata, PartitionAssignment, TopicMeta};

/// Where a request for one partition goes, seen from one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This broker leads it: serve it here.
    Local,
    /// The metadata has it, led by another broker (or by none: `leader` -1). Kafka's
    /// NOT_LEADER_OR_FOLLOWER, with `leader`/`leader_epoch` for KIP-951's `current_leader`.
    Remote { leader: i32, leader_epoch: i32 },
    /// Not in the metadata (no such topic, or the index is out of range).
    Unknown,
}

/// A broker as clients are told about it (Metadata, DescribeCluster, KIP-951 endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
    /// The listener the address is for (`""`: the first one): the other brokers of an answer
    /// are given at their address on the same listener.
    pub listener: String,
}

/// The assignment of partition `p` of `topic` (which must be < `topic.partitions`): the one in
/// the metadata, or, for a topic without one (pre-cluster), this node `local_node` as its only
/// replica, leader and ISR at epoch 0.
pub fn assignment_of(topic: &TopicMeta, p: i32, local_node: i32) -> PartitionAssignment {
    usize::try_from(p)
        .ok()
        .and_then(|i| topic.assignment.get(i))
        .cloned()
        .unwrap_or_else(|| PartitionAssignment {
            replicas: vec![local_node],
            leader: local_node,
            leader_epoch: 0,
            isr: vec![local_node],
            partition_epoch: 0,
            reassignment: None,
        })
}

/// Where a request for `topic`/`partition` goes on broker `local_node`.
pub fn route(metadata: &ClusterMetadata, local_node: i32, topic: &str, partition: i32) -> Route {
    match metadata.topics.get(topic) {
        Some(meta) => route_in(meta, local_node, partition),
        None => Route::Unknown,
    }
}

/// [`route`] within `meta`, a topic already looked up (a request naming many partitions of a
/// topic looks it up once). Reads the assignment in place, as [`assignment_of`] decides it
/// (without one, this node leads at epoch 0), without copying its replica lists.
pub fn route_in(meta: &TopicMeta, local_node: i32, partition: i32) -> Route {
    if partition < 0 || partition >= meta.partitions {
        return Route::Unknown;
    }
    match usize::try_from(partition)
        .ok()
        .and_then(|i| meta.assignment.get(i))
    {
        Some(a) if a.leader != local_node => Route::Remote {
            leader: a.leader,
            leader_epoch: a.leader_epoch,
        },
        _ => Route::Local,
    }
}

impl Route {
    /// The error a request for the partition gets on this broker (`None`: serve it).
    pub fn error(&self) -> Option<ResponseError> {
        match self {
            Route::Local => None,
            Route::Remote { .. } => Some(crate::error::not_leader_code()),
            Route::Unknown => Some(crate::error::unknown_partition_code()),
        }
    }

    /// The leader (id, epoch) for KIP-951's `current_leader`, when another broker leads.
    pub fn current_leader(&self) -> Option<(i32, i32)> {
        match self {
            Route::Remote {
                leader,
                leader_epoch,
            } => Some((*leader, *leader_epoch)),
            _ => None,
        }
    }
}

/// The error for a partition that its owner shard does not have open: NOT_LEADER_OR_FOLLOWER
/// or UNKNOWN_TOPIC_OR_PARTITION when the metadata (which may have changed since the request
/// was checked) says so, else the partition is offline or being opened
/// (`error::partition_unavailable_code`).
pub fn absent_partition_code(
    metadata: &ClusterMetadata,
    local_node: i32,
    topic: &str,
    partition: i32,
) -> ResponseError {
    route(metadata, local_node, topic, partition)
        .error()
        .unwrap_or_else(crate::error::partition_unavailable_code)
}

/// Does broker `local_node` lead `topic`/`partition` (so it opens and serves it)?
pub fn leads(metadata: &ClusterMetadata, local_node: i32, topic: &str, partition: i32) -> bool {
    route(metadata, local_node, topic, partition) == Route::Local
}

/// Is broker `local_node` a replica of `topic`/`partition` (so it opens it, as leader or
/// follower)? The leader counts too (a leader outside its replica list cannot happen, but then
/// it must still open what it serves).
pub fn hosts(metadata: &ClusterMetadata, local_node: i32, topic: &str, partition: i32) -> bool {
    let Some(meta) = metadata.topics.get(topic) else {
        return false;
    };
    if partition < 0 || partition >= meta.partitions {
        return false;
    }
    // As `assignment_of`: without an assignment this node is the only replica.
    match usize::try_from(partition)
        .ok()
        .and_then(|i| meta.assignment.get(i))
    {
        Some(a) => a.leader == local_node || a.replicas.contains(&local_node),
        None => true,
    }
}

/// This broker as its configuration describes it (listener and rack).
pub fn local_endpoint(config: &BrokerConfig) -> BrokerEndpoint {
    let (host, port) = config
        .advertised_host_port()
        .unwrap_or_else(|_| ("localhost".into(), 9092));
    BrokerEndpoint {
        node_id: config.node_id,
        host,
        port,
        rack: (!config.broker_rack.is_empty()).then(|| config.broker_rack.clone()),
        fenced: false,
        listener: String::new(),
    }
}

/// This broker as clients that came in on listener `listener` must see it: that listener's
/// advertised address (the first listener's for an unknown or empty name).
pub fn local_endpoint_on(config: &BrokerConfig, listener: &str) -> BrokerEndpoint {
    let mut endpoint = local_endpoint(config);
    if let Ok((host, port)) = config.advertised_host_port_of(listener) {
        endpoint.host = host;
        endpoint.port = port;
    }
    endpoint.listener = listener.to_string();
    endpoint
}

/// The controller id clients are told (Metadata, DescribeCluster): the active controller as
/// this process knows it; with none known (a single node before its quorum starts, or an
/// election), this node, which forwards admin requests to the controller or answers
/// NOT_CONTROLLER, so clients retry (Kafka's KRaft brokers name a live broker, never -1:
/// KIP-590 forwarding).
pub fn controller_id(config: &BrokerConfig) -> i32 {
    crate::cluster::active_controller().unwrap_or(config.node_id)
}

/// Every registered broker (fenced ones too), by node id; `local` alone when none registered.
/// This broker's own entry (if registered) carries the listener and rack of its running
/// configuration, which its registration was made from: a registration written before a
/// restart on another port never sends clients to a stale address of the broker answering.
pub fn all_brokers(metadata: &ClusterMetadata, local: &BrokerEndpoint) -> Vec<BrokerEndpoint> {
    if metadata.brokers.is_empty() {
        return vec![local.clone()];
    }
    metadata
        .brokers
        .values()
        .map(|b| {
            if b.node_id == local.node_id {
                return BrokerEndpoint {
                    fenced: b.fenced,
                    ..local.clone()
                };
            }
            let (host, port) = b.endpoint_on(&local.listener);
            BrokerEndpoint {
                node_id: b.node_id,
                host: host.to_string(),
                port,
                rack: b.rack.clone(),
                fenced: b.fenced,
                listener: local.listener.clone(),
            }
        })
        .collect()
}

/// The brokers clients may use: the registered unfenced ones; `local` alone when none
/// registered.
pub fn live_brokers(metadata: &ClusterMetadata, local: &BrokerEndpoint) -> Vec<BrokerEndpoint> {
    all_brokers(metadata, local)
        .into_iter()
        .filter(|b| !b.fenced)
        .collect()
}

/// The endpoint of broker `node_id` if it is registered and unfenced (or is `local` when none
/// registered): what KIP-951's `node_endpoints` lists for a new leader.
pub fn live_endpoint(
    metadata: &ClusterMetadata,
    local: &BrokerEndpoint,
    node_id: i32,
) -> Option<BrokerEndpoint> {
    live_brokers(metadata, local)
        .into_iter()
        .find(|b| b.node_id == node_id)
}

/// Is broker `node_id` unavailable to clients: fenced, or not registered while others are
/// (Kafka's `getAliveEndpoint` finds no endpoint)? Before any broker registered, none is.
pub fn is_unavailable(metadata: &ClusterMetadata, node_id: i32) -> bool {
    !metadata.brokers.is_empty() && metadata.brokers.get(&node_id).is_none_or(|b| b.fenced)
}

/// The partition as clients see it: the leader (-1 when none, or when the leader is
/// unavailable: fenced or unregistered), and the replicas that are offline (unavailable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

/// How Metadata and DescribeTopicPartitions show partition `p` of `topic`.
pub fn partition_view(
    metadata: &ClusterMetadata,
    topic: &TopicMeta,
    p: i32,
    local_node: i32,
) -> PartitionView {
    let a = assignment_of(topic, p, local_node);
    let leader = if a.leader >= 0 && is_unavailable(metadata, a.leader) {
        -1
    } else {
        a.leader
    };
    PartitionView {
        leader,
        leader_epoch: a.leader_epoch,
        offline_replicas: a
            .replicas
            .iter()
            .copied()
            .filter(|r| is_unavailable(metadata, *r))
            .collect(),
        replicas: a.replicas,
        isr: a.isr,
    }
}

/// Partitions (replicas) per broker in `metadata`, pre-cluster topics counted on
/// `local_node`: what `max_partitions_per_broker` bounds.
pub fn partitions_per_broker(metadata: &ClusterMetadata, local_node: i32) -> BTreeMap<i32, u64> {
    let mut counts = BTreeMap::new();
    for topic in metadata.topics.values() {
        if topic.assignment.is_empty() {
            *counts.entry(local_node).or_insert(0) += topic.partitions.max(0) as u64;
            continue;
        }
        for p in 0..topic.partitions {
            for r in assignment_of(topic, p, local_node).replicas {
                *counts.entry(r).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The first broker that a change from `previous` to `next` takes past `cap` partitions
/// (growing), as (partitions after, partitions before); `None` when every broker stays within
/// it or does not grow, or when `cap` is 0 (no cap).
pub fn cap_exceeded(
    previous: &ClusterMetadata,
    next: &ClusterMetadata,
    local_node: i32,
    cap: u64,
) -> Option<(u64, u64)> {
    if cap == 0 {
        return None;
    }
    let before = partitions_per_broker(previous, local_node);
    partitions_per_broker(next, local_node)
        .into_iter()
        .map(|(broker, after)| (after, before.get(&broker).copied().unwrap_or(0)))
        .find(|(after, before)| after > before && *after > cap)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A broker hosts the partitions it is a replica of (leader or not), and no others.
    #[test]
    fn replicas_host_their_partitions() {
        let mut m = ClusterMetadata::default();
        m.topics.insert(
            "r".into(),
            TopicMeta {
                id: uuid::Uuid::from_u128(3),
                partitions: 1,
                configs: Default::default(),
                internal: false,
                assignment: vec![PartitionAssignment {
                    replicas: vec![0, 1],
                    leader: 1,
                    leader_epoch: 2,
                    isr: vec![0, 1],
                    partition_epoch: 4,
                    reassignment: None,
                }],
            },
        );
        assert!(hosts(&m, 0, "r", 0), "a follower hosts it");
        assert!(hosts(&m, 1, "r", 0), "the leader hosts it");
        assert!(!hosts(&m, 2, "r", 0), "not a replica");
        assert!(!hosts(&m, 0, "r", 1), "no such partition");
        assert!(!leads(&m, 0, "r", 0));
    }
    use crate::coordinator::metadata::BrokerRegistration;

    /// 3 brokers (0, 1, 2; broker 2 fenced, brokers on racks a/b/c), topic "spread" of 12
    /// partitions led round robin (p -> broker p % 3, epoch p), a pre-cluster topic "old" of 2
    /// partitions, and an internal topic of one partition on broker 1.
    pub(crate) fn three_brokers() -> ClusterMetadata {
        let mut m = ClusterMetadata {
            cluster_id: "c1".into(),
            version: 7,
            ..Default::default()
        };
        for id in 0..3 {
            m.brokers.insert(
                id,
                BrokerRegistration {
                    node_id: id,
                    incarnation_id: uuid::Uuid::from_u128(id as u128 + 1),
                    host: format!("host{id}"),
                    port: 9000 + id,
                    rack: Some(["a", "b", "c"][id as usize].into()),
                    fenced: id == 2,
                    listeners: Vec::new(),
                },
            );
        }
        let spread = TopicMeta {
            id: uuid::Uuid::from_u128(100),
            partitions: 12,
            configs: Default::default(),
            internal: false,
            assignment: (0..12)
                .map(|p| PartitionAssignment {
                    replicas: vec![p % 3],
                    leader: p % 3,
                    leader_epoch: p,
                    isr: vec![p % 3],
                    partition_epoch: 0,
                    reassignment: None,
                })
                .collect(),
        };
        let old = TopicMeta {
            id: uuid::Uuid::from_u128(101),
            partitions: 2,
            configs: Default::default(),
            internal: false,
            assignment: Vec::new(),
        };
        let internal = TopicMeta {
            id: uuid::Uuid::from_u128(102),
            partitions: 1,
            configs: Default::default(),
            internal: true,
            assignment: vec![PartitionAssignment {
                replicas: vec![1],
                leader: 1,
                leader_epoch: 3,
                isr: vec![1],
                partition_epoch: 0,
                reassignment: None,
            }],
        };
        m.topics.insert("spread".into(), spread);
        m.topics.insert("old".into(), old);
        m.topics.insert("__internal".into(), internal);
        m
    }

    fn local(node_id: i32) -> BrokerEndpoint {
        BrokerEndpoint {
            node_id,
            host: "me".into(),
            port: 1,
            rack: None,
            fenced: false,
            listener: String::new(),
        }
    }

    #[test]
    fn pre_cluster_topics_are_led_here_at_epoch_0() {
        let m = three_brokers();
        let a = assignment_of(&m.topics["old"], 1, 5);
        assert_eq!(
            (a.replicas, a.leader, a.leader_epoch, a.isr),
            (vec![5], 5, 0, vec![5])
        );
        assert_eq!(route(&m, 5, "old", 1), Route::Local);
        assert_eq!(route(&m, 0, "old", 0), Route::Local);
    }

    #[test]
    fn each_broker_leads_its_third_and_is_sent_elsewhere_for_the_rest() {
        let m = three_brokers();
        for node in 0..3 {
            for p in 0..12 {
                let expected = if p % 3 == node {
                    Route::Local
                } else {
                    Route::Remote {
                        leader: p % 3,
                        leader_epoch: p,
                    }
                };
                assert_eq!(route(&m, node, "spread", p), expected, "node {node} p {p}");
                assert_eq!(leads(&m, node, "spread", p), p % 3 == node);
            }
        }
    }

    #[test]
    fn unknown_topics_and_indexes_are_unknown() {
        let m = three_brokers();
        assert_eq!(route(&m, 0, "nope", 0), Route::Unknown);
        assert_eq!(route(&m, 0, "spread", 12), Route::Unknown);
        assert_eq!(route(&m, 0, "spread", -1), Route::Unknown);
        assert_eq!(route(&m, 0, "old", 2), Route::Unknown);
    }

    #[test]
    fn fenced_leaders_are_shown_leaderless_with_their_replica_offline() {
        let m = three_brokers();
        let v = partition_view(&m, &m.topics["spread"], 2, 0);
        assert_eq!(v.leader, -1);
        assert_eq!(v.leader_epoch, 2);
        assert_eq!(v.replicas, vec![2]);
        assert_eq!(v.isr, vec![2]);
        assert_eq!(v.offline_replicas, vec![2]);
        let v = partition_view(&m, &m.topics["spread"], 4, 0);
        assert_eq!((v.leader, v.leader_epoch), (1, 4));
        assert!(v.offline_replicas.is_empty());
        // An unregistered leader is unavailable too, once brokers register at all.
        let mut m = three_brokers();
        m.brokers.remove(&1);
        let v = partition_view(&m, &m.topics["spread"], 4, 0);
        assert_eq!((v.leader, v.offline_replicas), (-1, vec![1]));
        m.brokers.clear();
        let v = partition_view(&m, &m.topics["spread"], 4, 0);
        assert_eq!((v.leader, v.offline_replicas), (1, vec![]));
    }

    #[test]
    fn live_brokers_are_the_unfenced_registered_ones_or_this_node_alone() {
        let m = three_brokers();
        let live: Vec<i32> = live_brokers(&m, &local(9))
            .iter()
            .map(|b| b.node_id)
            .collect();
        assert_eq!(live, vec![0, 1]);
        assert_eq!(all_brokers(&m, &local(9)).len(), 3);
        assert!(all_brokers(&m, &local(9))[2].fenced);
        assert_eq!(live_endpoint(&m, &local(9), 1).unwrap().host, "host1");
        // This broker's own entry is its running listener.
        assert_eq!(live_endpoint(&m, &local(1), 1), Some(local(1)));
        assert_eq!(live_endpoint(&m, &local(9), 2), None);
        let empty = ClusterMetadata::default();
        assert_eq!(live_brokers(&empty, &local(9)), vec![local(9)]);
        assert_eq!(live_endpoint(&empty, &local(9), 9), Some(local(9)));
    }

    #[test]
    fn other_brokers_are_given_on_the_listener_of_the_answer() {
        use crate::coordinator::metadata::ListenerEndpoint;
        let mut m = three_brokers();
        m.brokers.get_mut(&1).expect("broker 1").listeners = vec![
            ListenerEndpoint {
                name: "PLAINTEXT".into(),
                host: "host1".into(),
                port: 1001,
            },
            ListenerEndpoint {
                name: "SASL_SSL".into(),
                host: "public1".into(),
                port: 2001,
            },
        ];
        let on = |listener: &str| {
            let mut me = local(9);
            me.listener = listener.into();
            let b = live_endpoint(&m, &me, 1).expect("broker 1 is live");
            (b.host, b.port)
        };
        assert_eq!(on("SASL_SSL"), ("public1".into(), 2001));
        assert_eq!(on("PLAINTEXT"), ("host1".into(), 1001));
        // An unknown listener name, or a registration without listeners: the first address.
        let first = (m.brokers[&1].host.clone(), m.brokers[&1].port);
        assert_eq!(on("OTHER"), first);
        assert_eq!(on(""), first);
        let b0 = live_endpoint(&m, &local(9), 0).expect("broker 0");
        assert_eq!(
            (b0.host, b0.port),
            (m.brokers[&0].host.clone(), m.brokers[&0].port)
        );
    }

    #[test]
    fn partitions_are_counted_on_their_replicas() {
        let m = three_brokers();
        let counts = partitions_per_broker(&m, 0);
        // 4 of "spread" each, "old" (2) on the local node 0, the internal one on 1.
        assert_eq!(counts, BTreeMap::from([(0, 6), (1, 5), (2, 4)]));
    }

    #[test]
    fn the_cap_bounds_each_broker_not_the_cluster() {
        let before = three_brokers();
        let mut after = before.clone();
        // 15 partitions in all, at most 6 on one broker: within a cap of 6.
        assert_eq!(cap_exceeded(&before, &after, 0, 6), None);
        // One more partition on broker 1 (5 -> 6) is fine; on broker 0 (6 -> 7) it is not.
        let spread = after.topics.get_mut("spread").unwrap();
        spread.partitions = 13;
        spread.assignment.push(PartitionAssignment {
            replicas: vec![1],
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
            partition_epoch: 0,
            reassignment: None,
        });
        assert_eq!(cap_exceeded(&before, &after, 0, 6), None);
        let spread = after.topics.get_mut("spread").unwrap();
        spread.assignment[12].replicas = vec![0];
        assert_eq!(cap_exceeded(&before, &after, 0, 6), Some((7, 6)));
        assert_eq!(cap_exceeded(&before, &after, 0, 0), None);
        // A broker already past the cap that does not grow is not refused.
        assert_eq!(cap_exceeded(&after, &after, 0, 1), None);
    }
}
