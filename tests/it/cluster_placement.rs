//! Placement of partitions over registered brokers, through the real `freshet` binary.
//!
//! These tests give a single broker a data directory whose metadata (the legacy
//! `cluster-metadata.json`, migrated into the quorum's log at startup) already lists
//! registered brokers: the node itself (id 0) and three others, one of them fenced (with a
//! broker session long enough that the silent ones are not fenced during the test). CreateTopics and
//! CreatePartitions, sent with rdkafka and as raw requests, must then place partitions over the
//! unfenced brokers with balanced leaders, honour explicit replica assignments, and refuse
//! what Kafka refuses with Kafka's codes and messages. The decided assignments are read back
//! from the quorum's log after the broker stops. A second test pins the single-node
//! behaviour (the node registers itself): manual assignments name this node only.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{within, RawConn, TestBroker};
use freshet::coordinator::metadata::{BrokerRegistration, ClusterMetadata};
use freshet::coordinator::store;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::{BrokerId, CreatePartitionsRequest, CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

const TEST_LIMIT: Duration = Duration::from_secs(120);

const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;

fn registration(node_id: i32, fenced: bool) -> BrokerRegistration {
    BrokerRegistration {
        node_id,
        incarnation_id: uuid::Uuid::from_u128(node_id as u128 + 1),
        host: "127.0.0.1".into(),
        port: 1,
        rack: None,
        fenced,
        listeners: Vec::new(),
    }
}

/// A data directory whose metadata registers brokers 0, 1, 2 (unfenced) and 3 (fenced).
fn cluster_data_dir(parent: &Path) -> std::path::PathBuf {
    let data_dir = parent.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut metadata = ClusterMetadata {
        cluster_id: "placement-test".into(),
        ..ClusterMetadata::default()
    };
    for (id, fenced) in [(0, false), (1, false), (2, false), (3, true)] {
        metadata.brokers.insert(id, registration(id, fenced));
    }
    metadata.check_invariants().unwrap();
    store::save(&data_dir, &metadata).unwrap();
    data_dir
}

/// The metadata the broker persisted (read from the quorum's log once it has stopped).
fn persisted(data_dir: &Path) -> ClusterMetadata {
    let config = freshet::config::BrokerConfig {
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    };
    let quorum = freshet::cluster::QuorumConfig::from_broker_config(&config).unwrap();
    freshet::shard::controller::load_at_startup(&config, &quorum, ClusterMetadata::default)
        .expect("load the metadata quorum's log")
}

fn admin(broker: &TestBroker) -> AdminClient<DefaultClientContext> {
    common::client_config(broker)
        .create()
        .expect("admin client")
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// CreateTopics v7 of one topic given by its replica lists: (error code, message).
fn create_assigned(conn: &mut RawConn, topic: &str, lists: &[&[i32]]) -> (i16, String) {
    let topic = CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(
            lists
                .iter()
                .enumerate()
                .map(|(p, brokers)| {
                    CreatableReplicaAssignment::default()
                        .with_partition_index(p as i32)
                        .with_broker_ids(brokers.iter().map(|&b| BrokerId(b)).collect())
                })
                .collect(),
        );
    create_raw(conn, topic)
}

/// CreateTopics v7 of `topic` with a count and a replication factor: (error code, message).
fn create_counted(conn: &mut RawConn, topic: &str, partitions: i32, rf: i16) -> (i16, String) {
    create_raw(
        conn,
        CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(rf),
    )
}

fn create_raw(conn: &mut RawConn, topic: CreatableTopic) -> (i16, String) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![topic]);
    let response = conn.request(7, &request).expect("CreateTopics");
    let result = &response.topics[0];
    let message = result
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    (result.error_code, message)
}

/// CreatePartitions v3 of `topic` to `count` with the new partitions' replica lists.
fn grow_assigned(conn: &mut RawConn, topic: &str, count: i32, lists: &[&[i32]]) -> (i16, String) {
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name(topic))
            .with_count(count)
            .with_assignments(Some(
                lists
                    .iter()
                    .map(|brokers| {
                        CreatePartitionsAssignment::default()
                            .with_broker_ids(brokers.iter().map(|&b| BrokerId(b)).collect())
                    })
                    .collect(),
            ))]);
    let response = conn.request(3, &request).expect("CreatePartitions");
    let result = &response.results[0];
    let message = result
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    (result.error_code, message)
}

fn leaders(metadata: &ClusterMetadata, topic: &str) -> Vec<i32> {
    metadata.topics[topic]
        .assignment
        .iter()
        .map(|a| a.leader)
        .collect()
}

/// With brokers 0-2 registered and 3 fenced: 12 partitions get 4 leaders on each live broker
/// (none on the fenced one), explicit lists are kept as given, and refusals carry Kafka's
/// codes and messages (unknown broker, fenced broker, replication factor larger than the
/// brokers), and a replication factor of 2 is placed on two live brokers, both in sync.
#[test]
fn create_topics_and_partitions_place_over_the_registered_brokers() {
    within(TEST_LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = cluster_data_dir(dir.path());
        // Brokers 1 and 2 never heartbeat: a session longer than the test keeps them unfenced.
        let config = dir.path().join("broker.toml");
        std::fs::write(&config, "broker_session_timeout_ms = 3600000\n").unwrap();
        let config = config.to_str().unwrap().to_string();
        let mut broker =
            TestBroker::start_in(1, Some(data_dir.clone()), &["--config", config.as_str()]);
        let rt = common::runtime();
        let a = admin(&broker);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));

        let spread = NewTopic::new("spread", 12, TopicReplication::Fixed(1));
        let manual = NewTopic::new("manual", 2, TopicReplication::Variable(&[&[2], &[1]]));
        let results = rt
            .block_on(a.create_topics([&spread, &manual], &options))
            .expect("CreateTopics");
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let on_unknown = NewTopic::new("on-unknown", 1, TopicReplication::Variable(&[&[7]]));
        let rf2 = NewTopic::new("rf2", 1, TopicReplication::Fixed(2));
        let results = rt
            .block_on(a.create_topics([&on_unknown, &rf2], &options))
            .expect("CreateTopics");
        assert_eq!(
            results,
            vec![
                Err((
                    "on-unknown".to_string(),
                    RDKafkaErrorCode::InvalidReplicaAssignment
                )),
                Ok("rf2".to_string()),
            ]
        );

        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        assert_eq!(
            create_assigned(&mut conn, "on-unknown", &[&[7]]),
            (
                INVALID_REPLICA_ASSIGNMENT,
                "The manual partition assignment includes broker 7, but no such broker is \
                 registered."
                    .to_string()
            )
        );
        assert_eq!(
            create_assigned(&mut conn, "on-fenced", &[&[0], &[3]]),
            (
                INVALID_REPLICA_ASSIGNMENT,
                "All brokers specified in the manual partition assignment for partition 1 are \
                 fenced or in controlled shutdown."
                    .to_string()
            )
        );
        assert_eq!(
            create_counted(&mut conn, "rf5", 1, 5),
            (
                INVALID_REPLICATION_FACTOR,
                "Unable to replicate the partition 5 time(s): The target replication factor of 5 \
                 cannot be reached because only 4 broker(s) are registered."
                    .to_string()
            )
        );

        let grow = NewPartitions::new("manual", 4).assign(&[&[1], &[0]]);
        let results = rt
            .block_on(a.create_partitions([&grow], &options))
            .expect("CreatePartitions");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            grow_assigned(&mut conn, "manual", 6, &[&[9], &[0]]).0,
            INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            grow_assigned(&mut conn, "manual", 6, &[&[0], &[3]]),
            (
                INVALID_REPLICA_ASSIGNMENT,
                "All brokers specified in the manual partition assignment for partition 5 are \
                 fenced or in controlled shutdown."
                    .to_string()
            )
        );
        let placed = NewPartitions::new("spread", 15);
        let results = rt
            .block_on(a.create_partitions([&placed], &options))
            .expect("CreatePartitions");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        drop(conn);
        drop(a);

        broker.stop();
        let metadata = persisted(&data_dir);
        metadata.check_invariants().unwrap();
        let spread = leaders(&metadata, "spread");
        assert_eq!(spread.len(), 15);
        let mut counts = BTreeMap::new();
        for &leader in &spread[..12] {
            *counts.entry(leader).or_insert(0) += 1;
        }
        assert_eq!(
            counts,
            BTreeMap::from([(0, 4), (1, 4), (2, 4)]),
            "{spread:?}"
        );
        assert!(!spread.contains(&3), "no partition on the fenced broker");
        let mut added: Vec<i32> = spread[12..].to_vec();
        added.sort_unstable();
        assert_eq!(added, vec![0, 1, 2], "the 3 added partitions spread too");
        assert_eq!(leaders(&metadata, "manual"), vec![2, 1, 1, 0]);
        assert!(!metadata.topics.contains_key("on-unknown"));
        let rf2 = &metadata.topics["rf2"].assignment[0];
        assert_eq!(rf2.replicas.len(), 2, "{rf2:?}");
        assert!(
            !rf2.replicas.contains(&3),
            "no replica on the fenced broker"
        );
        assert_eq!(
            (rf2.isr.clone(), rf2.leader),
            (rf2.replicas.clone(), rf2.replicas[0])
        );
    });
}

/// A single node (registered by itself, the only broker): manual assignments may name this
/// node only (as before the cluster), and topics are placed on it.
#[test]
fn a_single_node_accepts_assignments_to_itself_only() {
    within(TEST_LIMIT, || {
        let mut broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        assert_eq!(
            create_assigned(&mut conn, "mine", &[&[0], &[0]]),
            (0, String::new())
        );
        assert_eq!(
            create_assigned(&mut conn, "elsewhere", &[&[1]]),
            (
                INVALID_REPLICA_ASSIGNMENT,
                "The manual partition assignment includes broker 1, but no such broker is \
                 registered."
                    .to_string()
            )
        );
        assert_eq!(
            create_counted(&mut conn, "rf3", 1, 3),
            (
                INVALID_REPLICATION_FACTOR,
                "Unable to replicate the partition 3 time(s): The target replication factor of 3 \
                 cannot be reached because only 1 broker(s) are registered."
                    .to_string()
            )
        );
        assert_eq!(grow_assigned(&mut conn, "mine", 3, &[&[0]]).0, 0);
        assert_eq!(
            grow_assigned(&mut conn, "mine", 4, &[&[2]]).0,
            INVALID_REPLICA_ASSIGNMENT
        );
        drop(conn);
        broker.stop();
        let metadata = persisted(broker.data_dir());
        assert_eq!(metadata.topics["mine"].partitions, 3);
        assert_eq!(
            metadata.brokers.keys().copied().collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(leaders(&metadata, "mine"), vec![0, 0, 0]);
    });
}
