//! Cluster metadata: the topics, their ids, partition counts and config overrides.
//!
//! [`ClusterMetadata`] is a plain value. The coordinator shard (shard 0) owns the authoritative
//! copy; it turns a [`MetadataCommand`] into a [`MetadataRecord`] with
//! [`ClusterMetadata::record_for`] (checks, and the choices such as a new topic's id) and
//! applies it with [`ClusterMetadata::replay`] (pure, total, deterministic: replaying the
//! metadata log's records rebuilds the same value); [`ClusterMetadata::apply`] does both. The
//! caller persists the records (`shard::metadata_log`) and then publishes the result; every
//! other shard holds an
//! `Arc<ClusterMetadata>` snapshot replaced as a whole on each change. A change therefore never
//! shows half-applied to anyone.
//!
//! Dynamic broker configs (AlterConfigs on the BROKER resource) are part of it too, by
//! resource name (a node id, or `""` for the cluster default); see `broker_config`.
//!
//! Invariants: topic names are valid Kafka topic names, and topics created through
//! [`MetadataCommand::CreateTopic`] are neither Kafka internal names nor under the broker's
//! reserved prefix ([`check_creatable_topic_name`]); every topic has >= 1 partition and a
//! non-nil topic id unique in the cluster; `version` grows by one with each applied command.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::invariants::{debug_check, ensure, Violation};
use super::{broker_config, topic_config};

/// The longest topic name Kafka accepts.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The most partitions one topic may have here (a guard against typos that would create
/// millions of files).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 100_000;

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: Uuid,
    pub partitions: i32,
    /// Config overrides set by CreateTopics / AlterConfigs; validated.
    pub configs: BTreeMap<String, String>,
    /// Internal topics are hidden from `Metadata` unless asked for by name.
    #[serde(default)]
    pub internal: bool,
    /// Where each partition lives, by partition index (`assignment[p]`). Empty only in
    /// metadata written before the cluster (single node): such topics are assigned to that
    /// node when its metadata moves into the quorum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignment: Vec<PartitionAssignment>,
}

/// Where one partition lives: its replicas (brokers, in preference order), its leader and
/// leader epoch, its in-sync replicas (Kafka's `PartitionRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    pub replicas: Vec<i32>,
    /// The broker that leads the partition, or -1 when none can (every replica fenced).
    pub leader: i32,
    /// Grows by one each time the leader changes.
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
}

/// One broker as registered with the quorum (Kafka's `RegisterBrokerRecord` and its fencing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    /// A new id per process start: a restarted broker registers again under a new one.
    pub incarnation_id: Uuid,
    /// The Kafka listener clients are sent to.
    pub host: String,
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// A fenced broker (heartbeats stopped, or shutting down) is not given to clients.
    pub fenced: bool,
}

/// The whole cluster's metadata as one value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// First producer id of the next block the coordinator may hand out. Ids below it may
    /// have been given to producers and are never given again.
    #[serde(default)]
    pub producer_id_block_next: i64,
    /// Dynamic broker configs by resource name (a node id, or `""` for the cluster-wide
    /// defaults); checked by `broker_config::check`. Empty sets are not kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The brokers registered with the quorum, by node id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub brokers: BTreeMap<i32, BrokerRegistration>,
}

/// The largest metadata record batch: one snapshot of the whole metadata must fit (the
/// metadata log's and the quorum's bound).
pub const METADATA_BATCH_BYTES_MAX: u32 = 64 << 20;

/// Producer ids are reserved durably in blocks of this many (as Kafka's AllocateProducerIds),
/// so that a restart never reuses an id and most InitProducerId calls write nothing.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A change to the metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetadataCommand {
    CreateTopic {
        name: String,
        partitions: i32,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: i32,
    },
    /// Replace all overrides (AlterConfigs semantics).
    SetConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Reserve the next block of producer ids.
    AllocateProducerIdBlock,
    /// Replace the dynamic broker configs of `resource` (a node id, or `""`).
    SetBrokerConfigs {
        resource: String,
        configs: BTreeMap<String, String>,
    },
}

/// One record of the cluster metadata log: a change as it was decided (ids chosen, blocks
/// counted), or the whole metadata. [`ClusterMetadata::replay`] applies it, purely and
/// deterministically, so replaying the log rebuilds exactly the metadata that was published.
/// A [`MetadataCommand`] becomes a record through [`ClusterMetadata::record_for`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// The whole metadata, version included: the first record of a new log, a migrated
    /// `cluster-metadata.json`, or a compaction.
    Snapshot {
        metadata: ClusterMetadata,
    },
    TopicCreated {
        name: String,
        topic: TopicMeta,
    },
    TopicDeleted {
        name: String,
    },
    PartitionsCreated {
        name: String,
        total: i32,
    },
    /// All overrides of a topic replaced (AlterConfigs semantics).
    TopicConfigsSet {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `next` are reserved (the new `producer_id_block_next`).
    ProducerIdBlockAllocated {
        next: i64,
    },
    /// The dynamic broker configs of `resource` replaced (empty: removed).
    BrokerConfigsSet {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    /// A broker registered (first start, or a restart under a new incarnation id); replaces
    /// any earlier registration of that node id.
    BrokerRegistered {
        registration: BrokerRegistration,
    },
    /// A broker's heartbeats stopped, or it is shutting down.
    BrokerFenced {
        node_id: i32,
    },
    /// A fenced broker heartbeats again.
    BrokerUnfenced {
        node_id: i32,
    },
}

/// Why a command was refused, as the Kafka error and message the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError {
    pub code: ResponseError,
    pub message: String,
}

impl MetadataError {
    fn new(code: ResponseError, message: impl Into<String>) -> Self {
        MetadataError {
            code,
            message: message.into(),
        }
    }
}

/// Checks a topic name the way Kafka's `Topic.validate` does.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |why: &str| MetadataError::new(ResponseError::InvalidTopicException, why);
    if name.is_empty() {
        return Err(invalid("Topic name is illegal, it can't be empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("Topic name cannot be \".\" or \"..\""));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(invalid(
            "Topic name is illegal, it can't be longer than 249 characters",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(&format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Kafka's internal topics (`Topic.isInternal`, plus KRaft's metadata log): clients may not
/// create them. Freshet keeps its own under `<data_dir>/internal/`, outside the topics.
pub const INTERNAL_TOPIC_NAMES: [&str; 4] = [
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
    "__cluster_metadata",
];

/// Names starting with this are the broker's own files in the data directory (e.g. the disk
/// probe `.freshet-disk-probe-<n>`): no topic may start with it.
pub const RESERVED_TOPIC_PREFIX: &str = ".freshet";

/// Checks that a (valid) name may be created by a client: not one of Kafka's internal topics
/// (INVALID_REQUEST, as Kafka's `ControllerApis.createTopics` answers), not under the
/// broker's reserved prefix (INVALID_TOPIC_EXCEPTION).
pub fn check_creatable_topic_name(name: &str) -> Result<(), MetadataError> {
    if INTERNAL_TOPIC_NAMES.contains(&name) {
        return Err(MetadataError::new(
            ResponseError::InvalidRequest,
            format!("Creation of internal topic {name} is prohibited."),
        ));
    }
    if name.starts_with(RESERVED_TOPIC_PREFIX) {
        return Err(MetadataError::new(
            ResponseError::InvalidTopicException,
            format!(
                "Topic name \"{name}\" is reserved: names starting with \"{RESERVED_TOPIC_PREFIX}\" are the broker's own files."
            ),
        ));
    }
    Ok(())
}

fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), MetadataError> {
    for (name, value) in configs {
        topic_config::validate(name, value)
            .map_err(|e| MetadataError::new(ResponseError::InvalidConfig, e.0))?;
    }
    Ok(())
}

impl ClusterMetadata {
    /// Checks `command` against the current state without changing anything: what
    /// `validate_only` requests and the first step of [`Self::apply`] use.
    pub fn check(&self, command: &MetadataCommand) -> Result<(), MetadataError> {
        match command {
            MetadataCommand::CreateTopic {
                name,
                partitions,
                configs,
            } => {
                validate_topic_name(name)?;
                check_creatable_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(MetadataError::new(
                        ResponseError::TopicAlreadyExists,
                        format!("Topic '{name}' already exists."),
                    ));
                }
                if *partitions < 1 || *partitions > PARTITIONS_PER_TOPIC_MAX {
                    return Err(MetadataError::new(
                        ResponseError::InvalidPartitions,
                        format!("Number of partitions must be in [1, {PARTITIONS_PER_TOPIC_MAX}], got {partitions}."),
                    ));
                }
                validate_configs(configs)
            }
            MetadataCommand::DeleteTopic { name } => self.topic(name).map(|_| ()),
            MetadataCommand::CreatePartitions { name, total } => {
                let topic = self.topic(name)?;
                if *total <= topic.partitions {
                    return Err(MetadataError::new(
                        ResponseError::InvalidPartitions,
                        format!(
                            "Topic currently has {} partitions, which is higher than or equal to the requested {total}.",
                            topic.partitions
                        ),
                    ));
                }
                if *total > PARTITIONS_PER_TOPIC_MAX {
                    return Err(MetadataError::new(
                        ResponseError::InvalidPartitions,
                        format!("Number of partitions must be at most {PARTITIONS_PER_TOPIC_MAX}."),
                    ));
                }
                Ok(())
            }
            MetadataCommand::SetConfigs { name, configs } => {
                self.topic(name)?;
                validate_configs(configs)
            }
            MetadataCommand::SetBrokerConfigs { resource, configs } => {
                if resource != broker_config::DEFAULT_RESOURCE && resource.parse::<i32>().is_err() {
                    return Err(MetadataError::new(
                        ResponseError::InvalidRequest,
                        format!("Node id must be an integer, but it is: {resource}"),
                    ));
                }
                broker_config::check(resource, configs)
                    .map_err(|why| MetadataError::new(ResponseError::InvalidRequest, why))
            }
            MetadataCommand::AllocateProducerIdBlock => {
                if self.producer_id_block_next > i64::MAX - PRODUCER_ID_BLOCK_SIZE {
                    return Err(MetadataError::new(
                        ResponseError::UnknownServerError,
                        "producer ids exhausted",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Applies `command`, returning the new metadata; `self` is unchanged on error.
    /// In debug builds the result is checked against [`Self::check_transition_from`] (commands
    /// only: records read back from disk are input, replayed without the check).
    pub fn apply(&self, command: &MetadataCommand) -> Result<ClusterMetadata, MetadataError> {
        let next = self.replay(&self.record_for(command)?);
        debug_check(|| next.check_transition_from(self));
        Ok(next)
    }

    /// Checks `command` and decides it: the record that [`Self::replay`] applies (a new
    /// topic's id is chosen here).
    pub fn record_for(&self, command: &MetadataCommand) -> Result<MetadataRecord, MetadataError> {
        self.check(command)?;
        Ok(match command {
            MetadataCommand::CreateTopic {
                name,
                partitions,
                configs,
            } => MetadataRecord::TopicCreated {
                name: name.clone(),
                topic: TopicMeta {
                    id: self.fresh_topic_id(),
                    partitions: *partitions,
                    configs: configs.clone(),
                    internal: name.starts_with("__"),
                    // Placement over the registered brokers: the cluster issue's placement step.
                    assignment: Vec::new(),
                },
            },
            MetadataCommand::DeleteTopic { name } => {
                MetadataRecord::TopicDeleted { name: name.clone() }
            }
            MetadataCommand::CreatePartitions { name, total } => {
                MetadataRecord::PartitionsCreated {
                    name: name.clone(),
                    total: *total,
                }
            }
            MetadataCommand::SetConfigs { name, configs } => MetadataRecord::TopicConfigsSet {
                name: name.clone(),
                configs: configs.clone(),
            },
            MetadataCommand::AllocateProducerIdBlock => MetadataRecord::ProducerIdBlockAllocated {
                next: self.producer_id_block_next + PRODUCER_ID_BLOCK_SIZE,
            },
            MetadataCommand::SetBrokerConfigs { resource, configs } => {
                MetadataRecord::BrokerConfigsSet {
                    resource: resource.clone(),
                    configs: configs.clone(),
                }
            }
        })
    }

    /// The metadata after `record`: pure and total (a record read back from the log never
    /// fails to apply; one about a topic that is not there changes nothing but the version).
    /// A snapshot replaces everything; any other record adds one to the version.
    pub fn replay(&self, record: &MetadataRecord) -> ClusterMetadata {
        let mut next = self.clone();
        next.version += 1;
        match record {
            MetadataRecord::Snapshot { metadata } => return metadata.clone(),
            MetadataRecord::TopicCreated { name, topic } => {
                next.topics.insert(name.clone(), topic.clone());
            }
            MetadataRecord::TopicDeleted { name } => {
                next.topics.remove(name);
            }
            MetadataRecord::PartitionsCreated { name, total } => {
                if let Some(topic) = next.topics.get_mut(name) {
                    topic.partitions = *total;
                }
            }
            MetadataRecord::TopicConfigsSet { name, configs } => {
                if let Some(topic) = next.topics.get_mut(name) {
                    topic.configs = configs.clone();
                }
            }
            MetadataRecord::ProducerIdBlockAllocated { next: block_next } => {
                next.producer_id_block_next = next.producer_id_block_next.max(*block_next);
            }
            MetadataRecord::BrokerConfigsSet { resource, configs } => {
                if configs.is_empty() {
                    next.broker_configs.remove(resource);
                } else {
                    next.broker_configs
                        .insert(resource.clone(), configs.clone());
                }
            }
            MetadataRecord::BrokerRegistered { registration } => {
                next.brokers
                    .insert(registration.node_id, registration.clone());
            }
            MetadataRecord::BrokerFenced { node_id } => {
                if let Some(b) = next.brokers.get_mut(node_id) {
                    b.fenced = true;
                }
            }
            MetadataRecord::BrokerUnfenced { node_id } => {
                if let Some(b) = next.brokers.get_mut(node_id) {
                    b.fenced = false;
                }
            }
        }
        assert_eq!(next.version, self.version + 1);
        next
    }

    /// The invariants of the module essay, as code: topic names are valid Kafka names; every
    /// topic has 1..=[`PARTITIONS_PER_TOPIC_MAX`] partitions and a non-nil id unique in the
    /// cluster; the producer id block is not negative; no empty broker config set is kept.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let mut ids = std::collections::BTreeSet::new();
        for (name, t) in &self.topics {
            if let Err(e) = validate_topic_name(name) {
                return Err(Violation(format!("topic {name:?}: {}", e.message)));
            }
            ensure!(
                (1..=PARTITIONS_PER_TOPIC_MAX).contains(&t.partitions),
                "topic {name}: {} partitions",
                t.partitions
            );
            ensure!(!t.id.is_nil(), "topic {name}: nil topic id");
            ensure!(ids.insert(t.id), "topic {name}: id {} used twice", t.id);
        }
        ensure!(
            self.producer_id_block_next >= 0,
            "producer id block {}",
            self.producer_id_block_next
        );
        for (resource, configs) in &self.broker_configs {
            ensure!(
                !configs.is_empty(),
                "empty broker config set for {resource:?}"
            );
        }
        Ok(())
    }

    /// [`Self::check_invariants`] of `self`, the result of one command applied to `before`:
    /// the version grew by one, a topic that stays keeps its id and never loses partitions,
    /// and the producer id block never moves back (an id handed out is never handed out again).
    pub fn check_transition_from(&self, before: &ClusterMetadata) -> Result<(), Violation> {
        ensure!(
            self.version == before.version + 1,
            "version {} after {}",
            self.version,
            before.version
        );
        for (name, t) in &self.topics {
            if let Some(old) = before.topics.get(name) {
                ensure!(
                    t.id == old.id && t.partitions >= old.partitions,
                    "topic {name}: ({}, {} partitions) became ({}, {})",
                    old.id,
                    old.partitions,
                    t.id,
                    t.partitions
                );
            }
        }
        ensure!(
            self.producer_id_block_next >= before.producer_id_block_next,
            "producer id block moved back from {} to {}",
            before.producer_id_block_next,
            self.producer_id_block_next
        );
        self.check_invariants()
    }

    /// Partitions of all topics.
    pub fn partition_count(&self) -> u64 {
        self.topics
            .values()
            .map(|t| u64::try_from(t.partitions).unwrap_or(0))
            .sum()
    }

    /// The topic called `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn topic(&self, name: &str) -> Result<&TopicMeta, MetadataError> {
        self.topics.get(name).ok_or_else(|| {
            MetadataError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("This server does not host this topic: {name}"),
            )
        })
    }

    /// The topic with id `id`, with its name.
    pub fn topic_by_id(&self, id: Uuid) -> Option<(&str, &TopicMeta)> {
        self.topics
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(n, t)| (n.as_str(), t))
    }

    fn fresh_topic_id(&self) -> Uuid {
        loop {
            let id = Uuid::new_v4();
            if !id.is_nil() && !self.topics.values().any(|t| t.id == id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: i32) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            partitions,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn create_then_delete_topic_bumps_version_and_assigns_distinct_ids() {
        let m0 = ClusterMetadata::default();
        let m1 = m0.apply(&create("a", 3)).unwrap();
        let m2 = m1.apply(&create("b", 1)).unwrap();
        assert_eq!(m2.version, 2);
        assert_ne!(m2.topics["a"].id, m2.topics["b"].id);
        assert_eq!(
            m1.apply(&create("a", 1)).unwrap_err().code,
            ResponseError::TopicAlreadyExists
        );
        let m3 = m2
            .apply(&MetadataCommand::DeleteTopic { name: "a".into() })
            .unwrap();
        assert!(!m3.topics.contains_key("a"));
        assert_eq!(
            m3.apply(&MetadataCommand::DeleteTopic { name: "a".into() })
                .unwrap_err()
                .code,
            ResponseError::UnknownTopicOrPartition
        );
    }

    #[test]
    fn bad_names_partitions_and_configs_are_refused_with_kafka_errors() {
        let m = ClusterMetadata::default();
        for name in ["", ".", "..", "a b", "x/y", &"t".repeat(250)] {
            assert_eq!(
                m.check(&create(name, 1)).unwrap_err().code,
                ResponseError::InvalidTopicException
            );
        }
        assert_eq!(
            m.check(&create("t", 0)).unwrap_err().code,
            ResponseError::InvalidPartitions
        );
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "never".to_string());
        let cmd = MetadataCommand::CreateTopic {
            name: "t".into(),
            partitions: 1,
            configs,
        };
        assert_eq!(
            m.check(&cmd).unwrap_err().code,
            ResponseError::InvalidConfig
        );
    }

    /// The records of a sequence of commands, through their JSON and replayed from a
    /// snapshot of the start, give exactly the metadata that applying the commands gave.
    #[test]
    fn records_replay_to_the_applied_metadata() {
        let start = ClusterMetadata {
            cluster_id: "c".into(),
            ..ClusterMetadata::default()
        };
        let commands = [
            create("a", 2),
            create("b", 1),
            MetadataCommand::CreatePartitions {
                name: "a".into(),
                total: 4,
            },
            MetadataCommand::SetConfigs {
                name: "b".into(),
                configs: [("retention.ms".to_string(), "5".to_string())].into(),
            },
            MetadataCommand::AllocateProducerIdBlock,
            MetadataCommand::DeleteTopic { name: "a".into() },
        ];
        let mut applied = start.clone();
        let mut log = vec![MetadataRecord::Snapshot {
            metadata: start.clone(),
        }];
        for command in &commands {
            let record = applied.record_for(command).unwrap();
            applied = applied.replay(&record);
            log.push(record);
        }
        assert_eq!(applied.version, 6);
        assert_eq!(applied.producer_id_block_next, PRODUCER_ID_BLOCK_SIZE);
        let mut replayed = ClusterMetadata::default();
        for record in &log {
            let json = serde_json::to_vec(record).unwrap();
            let back: MetadataRecord = serde_json::from_slice(&json).unwrap();
            assert_eq!(&back, record);
            replayed = replayed.replay(&back);
        }
        assert_eq!(replayed, applied);
    }

    #[test]
    fn partitions_only_grow() {
        let m = ClusterMetadata::default().apply(&create("t", 2)).unwrap();
        let grow = |total| MetadataCommand::CreatePartitions {
            name: "t".into(),
            total,
        };
        assert_eq!(
            m.check(&grow(2)).unwrap_err().code,
            ResponseError::InvalidPartitions
        );
        assert_eq!(m.apply(&grow(5)).unwrap().topics["t"].partitions, 5);
    }

    fn command() -> impl proptest::strategy::Strategy<Value = MetadataCommand> {
        use proptest::prelude::*;
        // A few names, some invalid or reserved, so that refusals are exercised too.
        let name = prop_oneof![
            Just("a".to_string()),
            Just("b.c".to_string()),
            Just("d_e-1".to_string()),
            Just("bad name".to_string()),
            Just("__consumer_offsets".to_string()),
            Just(".freshet-x".to_string()),
        ];
        prop_oneof![
            (name.clone(), -1..5i32).prop_map(|(name, partitions)| MetadataCommand::CreateTopic {
                name,
                partitions,
                configs: BTreeMap::new()
            }),
            name.clone()
                .prop_map(|name| MetadataCommand::DeleteTopic { name }),
            (name.clone(), 0..8i32)
                .prop_map(|(name, total)| MetadataCommand::CreatePartitions { name, total }),
            (name, proptest::option::of(0..3u8)).prop_map(|(name, ms)| {
                MetadataCommand::SetConfigs {
                    name,
                    configs: ms
                        .map(|ms| ("retention.ms".to_string(), format!("{}", i32::from(ms) - 1)))
                        .into_iter()
                        .collect(),
                }
            }),
            Just(MetadataCommand::AllocateProducerIdBlock),
            (proptest::bool::ANY, proptest::bool::ANY).prop_map(|(node, set)| {
                MetadataCommand::SetBrokerConfigs {
                    resource: if node { "1".into() } else { String::new() },
                    configs: set
                        .then(|| ("log.retention.ms".to_string(), "1000".to_string()))
                        .into_iter()
                        .collect(),
                }
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random commands, accepted or refused, keep every invariant; an accepted one moves
        /// the version by exactly one and keeps ids and partition counts of the topics that
        /// stay; a refused one leaves the metadata as it was.
        #[test]
        fn random_commands_keep_the_invariants(
            commands in proptest::collection::vec(command(), 1..60)
        ) {
            let mut m = ClusterMetadata::default();
            for c in commands {
                match m.apply(&c) {
                    Ok(next) => {
                        if let Err(v) = next.check_transition_from(&m) {
                            proptest::prop_assert!(false, "{c:?}: {v}");
                        }
                        m = next;
                    }
                    Err(_) => {
                        proptest::prop_assert!(m.check(&c).is_err());
                    }
                }
                if let Err(v) = m.check_invariants() {
                    proptest::prop_assert!(false, "{v}");
                }
            }
        }
    }
}
