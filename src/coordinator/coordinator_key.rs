//! Which broker coordinates a consumer group or a transactional id (Kafka's rule), pure.
//!
//! On a single node the node itself coordinates everything (no internal topics). In a cluster
//! the coordinator of group G is the leader of partition `abs(hashCode(G)) % N` of
//! `__consumer_offsets`, and that of transactional id T the leader of partition
//! `abs(hashCode(T)) % M` of `__transaction_state` (Kafka's `GroupCoordinator.partitionFor`
//! and `TransactionStateManager.partitionFor`). `hashCode` is Java's `String.hashCode` (over
//! UTF-16 code units, i32 wrapping) and `abs` Kafka's `Utils.abs` (i32::MIN maps to 0).
//! N and M are the partition counts of the topics as they are in the metadata (the same on
//! every node), which the active controller created from `offsets_topic_num_partitions` /
//! `transaction_state_log_num_partitions` ([`MetadataCommand::CreateInternalTopic`]).
//!
//! Those partitions hold no data here: a coordinator's state stays in its node's own internal
//! logs (`internal/`), and shards open no partition logs for them.
//!
//! [`MetadataCommand::CreateInternalTopic`]: super::metadata::MetadataCommand::CreateInternalTopic

use kafka_protocol::error::ResponseError;

use super::metadata::{BrokerRegistration, ClusterMetadata};

/// Kafka's group metadata topic: its partition leaders are the group coordinators.
pub const GROUP_TOPIC: &str = "__consumer_offsets";
/// Kafka's transaction log topic: its partition leaders are the transaction coordinators.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";
/// Kafka's share-group state topic: its partition leaders are the share coordinators, which
/// keep the durable state of share partitions (KIP-932; key `group:topicId:partition`).
pub const SHARE_STATE_TOPIC: &str = "__share_group_state";

/// What a coordinator is looked up for (FindCoordinator's key type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorKind {
    /// A consumer group id (key type 0).
    Group,
    /// A transactional id (key type 1).
    Transaction,
    /// A share partition, `group:topicId:partition` (key type 2; used between brokers: a
    /// share-partition leader finds the share coordinator of its state).
    Share,
}

impl CoordinatorKind {
    /// The kind of FindCoordinator's `key_type`, if known.
    pub fn from_key_type(key_type: i8) -> Option<CoordinatorKind> {
        match key_type {
            0 => Some(CoordinatorKind::Group),
            1 => Some(CoordinatorKind::Transaction),
            _ => None,
        }
    }

    /// The internal topic whose partition leaders coordinate this kind.
    pub fn topic(self) -> &'static str {
        match self {
            CoordinatorKind::Group => GROUP_TOPIC,
            CoordinatorKind::Transaction => TRANSACTION_TOPIC,
            CoordinatorKind::Share => SHARE_STATE_TOPIC,
        }
    }
}

/// Whether `name` is one of the coordinators' internal topics (no partition logs, hidden).
pub fn is_coordinator_topic(name: &str) -> bool {
    name == GROUP_TOPIC || name == TRANSACTION_TOPIC || name == SHARE_STATE_TOPIC
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
pub fn java_hash_code(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Kafka's `Utils.abs`: the absolute value, with i32::MIN (which has none) mapped to 0.
pub fn kafka_abs(n: i32) -> i32 {
    if n == i32::MIN {
        0
    } else {
        n.abs()
    }
}

/// The partition (of `partitions`, at least 1) that `key` belongs to.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    kafka_abs(java_hash_code(key)) % partitions.max(1)
}

/// The broker coordinating `key` in a cluster's `metadata`: the unfenced registered leader
/// of its partition. COORDINATOR_NOT_AVAILABLE when the topic does not exist yet, the
/// partition has no leader (-1) or its leader is not an unfenced registered broker.
pub fn locate<'m>(
    metadata: &'m ClusterMetadata,
    kind: CoordinatorKind,
    key: &str,
) -> Result<&'m BrokerRegistration, ResponseError> {
    let unavailable = ResponseError::CoordinatorNotAvailable;
    let topic = metadata.topics.get(kind.topic()).ok_or(unavailable)?;
    let partition = partition_for(key, topic.partitions);
    let assignment = usize::try_from(partition)
        .ok()
        .and_then(|p| topic.assignment.get(p))
        .ok_or(unavailable)?;
    metadata
        .brokers
        .get(&assignment.leader)
        .filter(|b| !b.fenced)
        .ok_or(unavailable)
}

/// Whether the active controller may create the coordinators' topics now: every voter
/// (`voters`, node ids) has registered at least once, so the partitions spread over the whole
/// initial cluster rather than over whichever broker registered first, and one broker is
/// unfenced to place them on.
pub fn ready_to_create(metadata: &ClusterMetadata, voters: &[i32]) -> bool {
    voters.iter().all(|v| metadata.brokers.contains_key(v))
        && metadata.brokers.values().any(|b| !b.fenced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::metadata::MetadataCommand;
    use uuid::Uuid;

    /// Values of Java's `"...".hashCode()` (printed by a JVM, OpenJDK).
    #[test]
    fn java_hash_code_matches_the_jvm() {
        assert_eq!(java_hash_code(""), 0);
        assert_eq!(java_hash_code("a"), 97);
        assert_eq!(java_hash_code("abc"), 96354);
        assert_eq!(java_hash_code("hello"), 99_162_322);
        assert_eq!(java_hash_code("Hello, World!"), 1_498_789_909);
        // Wraps: "polygenelubricants".hashCode() is Integer.MIN_VALUE.
        assert_eq!(java_hash_code("polygenelubricants"), i32::MIN);
        assert_eq!(java_hash_code("test-group"), 627_841_412);
        // UTF-16 code units: a character outside the BMP counts as its two surrogates.
        assert_eq!(java_hash_code("é"), 233);
        assert_eq!(java_hash_code("😀"), 1_772_899);
    }

    #[test]
    fn kafka_abs_maps_min_to_zero() {
        assert_eq!(kafka_abs(i32::MIN), 0);
        assert_eq!(kafka_abs(-5), 5);
        assert_eq!(kafka_abs(7), 7);
        assert_eq!(kafka_abs(0), 0);
    }

    /// Kafka's `partitionFor` with 50 partitions.
    #[test]
    fn partition_choice_is_kafkas() {
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("a", 50), 47);
        assert_eq!(partition_for("hello", 50), 22);
        assert_eq!(partition_for("test-group", 50), 12);
        assert_eq!(partition_for("😀", 50), 49);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("abc", 1), 0);
        // A count of 0 (never in valid metadata) does not divide by zero.
        assert_eq!(partition_for("abc", 0), 0);
    }

    fn broker(node_id: i32) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            incarnation_id: Uuid::from_u128(node_id as u128 + 1),
            host: "127.0.0.1".into(),
            port: 9000 + node_id,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        }
    }

    fn cluster(ids: &[i32]) -> ClusterMetadata {
        ids.iter().fold(ClusterMetadata::default(), |m, &id| {
            m.apply(&MetadataCommand::RegisterBroker {
                registration: broker(id),
            })
            .unwrap()
        })
    }

    #[test]
    fn the_coordinator_is_the_leader_of_the_keys_partition() {
        let m = cluster(&[0, 1, 2]);
        assert!(ready_to_create(&m, &[0, 1, 2]));
        assert!(!ready_to_create(&m, &[0, 1, 2, 3]));
        assert_eq!(
            locate(&m, CoordinatorKind::Group, "g").unwrap_err(),
            ResponseError::CoordinatorNotAvailable
        );
        let m = m
            .apply(&MetadataCommand::CreateInternalTopic {
                name: GROUP_TOPIC.into(),
                partitions: 50,
                replication_factor: 1,
                min_insync_replicas: None,
            })
            .unwrap();
        let topic = &m.topics[GROUP_TOPIC];
        assert!(topic.internal);
        for key in ["", "a", "hello", "test-group", "polygenelubricants"] {
            let p = partition_for(key, 50) as usize;
            let node = locate(&m, CoordinatorKind::Group, key).unwrap().node_id;
            assert_eq!(node, topic.assignment[p].leader, "{key}");
        }
        // Spread over all three brokers.
        let mut leaders: Vec<i32> = topic.assignment.iter().map(|a| a.leader).collect();
        leaders.sort();
        leaders.dedup();
        assert_eq!(leaders, vec![0, 1, 2]);
        // The transaction topic is separate.
        assert_eq!(
            locate(&m, CoordinatorKind::Transaction, "t").unwrap_err(),
            ResponseError::CoordinatorNotAvailable
        );
        // A fenced leader: not available.
        let p = partition_for("hello", 50) as usize;
        let leader = topic.assignment[p].leader;
        let fenced = m
            .apply(&MetadataCommand::FenceBroker { node_id: leader })
            .unwrap();
        assert_eq!(
            locate(&fenced, CoordinatorKind::Group, "hello").unwrap_err(),
            ResponseError::CoordinatorNotAvailable
        );
    }

    /// The replication factor asked for, capped by the live brokers (Kafka's
    /// `offsets.topic.replication.factor` on a smaller cluster), and a compacted topic.
    #[test]
    fn internal_topics_are_replicated_up_to_the_live_brokers_and_compacted() {
        let m = cluster(&[0, 1, 2]);
        let three = m
            .apply(&MetadataCommand::CreateInternalTopic {
                name: GROUP_TOPIC.into(),
                partitions: 6,
                replication_factor: 3,
                min_insync_replicas: None,
            })
            .unwrap();
        let topic = &three.topics[GROUP_TOPIC];
        assert_eq!(topic.configs["cleanup.policy"], "compact");
        assert_eq!(topic.configs["segment.bytes"], "104857600");
        for a in &topic.assignment {
            let mut replicas = a.replicas.clone();
            replicas.sort();
            assert_eq!(replicas, vec![0, 1, 2]);
            assert_eq!(a.isr.len(), 3);
        }
        let two_live = m
            .apply(&MetadataCommand::FenceBroker { node_id: 2 })
            .unwrap()
            .apply(&MetadataCommand::CreateInternalTopic {
                name: GROUP_TOPIC.into(),
                partitions: 6,
                replication_factor: 3,
                min_insync_replicas: None,
            })
            .unwrap();
        for a in &two_live.topics[GROUP_TOPIC].assignment {
            assert_eq!(a.replicas.len(), 2);
            assert!(!a.replicas.contains(&2));
        }
        assert!(!three.topics[GROUP_TOPIC]
            .configs
            .contains_key("min.insync.replicas"));
        // `__transaction_state`: Kafka's `transaction.state.log.min.isr` as its
        // min.insync.replicas, at most its replicas.
        let txn = |m: &ClusterMetadata, min: i16| {
            m.apply(&MetadataCommand::CreateInternalTopic {
                name: TRANSACTION_TOPIC.into(),
                partitions: 3,
                replication_factor: 3,
                min_insync_replicas: Some(min),
            })
            .unwrap()
            .topics[TRANSACTION_TOPIC]
                .configs
                .clone()
        };
        assert_eq!(txn(&m, 2)["min.insync.replicas"], "2");
        assert_eq!(txn(&m, 2)["cleanup.policy"], "compact");
        assert_eq!(txn(&cluster(&[0]), 2)["min.insync.replicas"], "1");
    }

    #[test]
    fn internal_topics_are_created_only_by_the_internal_command() {
        let m = cluster(&[0]);
        // Clients still cannot create them.
        let err = m
            .apply(&MetadataCommand::CreateTopic {
                name: GROUP_TOPIC.into(),
                partitions: 50,
                configs: Default::default(),
                replication_factor: 1,
                assignments: None,
            })
            .unwrap_err();
        assert_eq!(err.code, ResponseError::InvalidRequest);
        // The internal command creates only the coordinators' topics, once.
        let err = m
            .apply(&MetadataCommand::CreateInternalTopic {
                name: "orders".into(),
                partitions: 3,
                replication_factor: 1,
                min_insync_replicas: None,
            })
            .unwrap_err();
        assert_eq!(err.code, ResponseError::InvalidRequest);
        let m = m
            .apply(&MetadataCommand::CreateInternalTopic {
                name: TRANSACTION_TOPIC.into(),
                partitions: 5,
                replication_factor: 1,
                min_insync_replicas: None,
            })
            .unwrap();
        let err = m
            .apply(&MetadataCommand::CreateInternalTopic {
                name: TRANSACTION_TOPIC.into(),
                partitions: 5,
                replication_factor: 1,
                min_insync_replicas: None,
            })
            .unwrap_err();
        assert_eq!(err.code, ResponseError::TopicAlreadyExists);
        // Without brokers (a single node) there is nothing to place them on.
        let err = ClusterMetadata::default()
            .apply(&MetadataCommand::CreateInternalTopic {
                name: GROUP_TOPIC.into(),
                partitions: 5,
                replication_factor: 1,
                min_insync_replicas: None,
            })
            .unwrap_err();
        assert_eq!(err.code, ResponseError::CoordinatorNotAvailable);
    }
}
