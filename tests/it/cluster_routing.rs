//! Routing in a cluster: a broker serves only the partitions it leads and sends clients to the
//! leader of the others, as Kafka does (NOT_LEADER_OR_FOLLOWER, KIP-951's current leader and
//! endpoints, Metadata/DescribeTopicPartitions/DescribeCluster from the assignments).
//!
//! Without a running cluster, a single real `freshet` binary shows it: its data directory starts
//! from metadata (a pre-quorum `cluster-metadata.json`, which a node migrates on its first
//! start) in which broker 1 (registered, never started) leads half of a topic's partitions.
//! The assertions that need several brokers are functions at the end of this file
//! ([`check_spread`], [`check_not_leader`]) for the cluster tests to call.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{RawConn, TestBroker};
use freshet::coordinator::metadata::{
    BrokerRegistration, ClusterMetadata, PartitionAssignment, TopicMeta,
};
use freshet::coordinator::store;
use freshet_protocol::batch::{encode_batch, Compression};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_producers_request::TopicRequest as ProducersTopic;
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DescribeClusterRequest, DescribeLogDirsRequest, DescribeProducersRequest,
    DescribeTopicPartitionsRequest, FetchRequest, FetchResponse, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "spread";
const PARTITIONS: i32 = 4;
/// The broker the test starts is node 0 (the default `node_id`).
const THIS_NODE: i32 = 0;
const OTHER_NODE: i32 = 1;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Partition `p`'s leader in the test's metadata: even ones here, odd ones on broker 1, each at
/// leader epoch 10 + p.
fn leader_of(p: i32) -> i32 {
    if p % 2 == 0 {
        THIS_NODE
    } else {
        OTHER_NODE
    }
}

/// Metadata with brokers 0 and 1 registered (1 at `other_port`, rack "r1") and topic `spread`
/// of 4 partitions led by [`leader_of`].
fn metadata(other_port: i32) -> ClusterMetadata {
    let mut m = ClusterMetadata {
        cluster_id: "routing-test".into(),
        version: 3,
        ..Default::default()
    };
    for (id, port, rack) in [(THIS_NODE, 1, None), (OTHER_NODE, other_port, Some("r1"))] {
        m.brokers.insert(
            id,
            BrokerRegistration {
                node_id: id,
                incarnation_id: uuid::Uuid::new_v4(),
                host: "127.0.0.1".into(),
                port,
                rack: rack.map(str::to_string),
                fenced: false,
                listeners: Vec::new(),
            },
        );
    }
    m.topics.insert(
        TOPIC.into(),
        TopicMeta {
            id: uuid::Uuid::new_v4(),
            partitions: PARTITIONS,
            configs: BTreeMap::new(),
            internal: false,
            assignment: (0..PARTITIONS)
                .map(|p| PartitionAssignment {
                    replicas: vec![leader_of(p)],
                    leader: leader_of(p),
                    leader_epoch: 10 + p,
                    isr: vec![leader_of(p)],
                    partition_epoch: 0,
                    reassignment: None,
                })
                .collect(),
        },
    );
    m
}

/// A broker started on a data directory holding [`metadata`] with brokers registered; returns it
/// with broker 1's port.
fn start_with_half_elsewhere() -> (TestBroker, tempfile::TempDir, i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let other_port = i32::from(common::free_port());
    let m = metadata(other_port);
    store::save(&data_dir, &m).expect("write the metadata");
    let broker = TestBroker::start_in(2, Some(data_dir), &[]);
    (broker, dir, other_port)
}

fn one_record() -> Bytes {
    encode_batch(
        &[(None, Some(Bytes::from_static(b"v")), 1_700_000_000_000)],
        Compression::None,
    )
    .expect("batch")
}

/// The id of `topic`, from a Metadata request.
fn topic_id(conn: &mut RawConn, topic: &str) -> uuid::Uuid {
    let request = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(name(topic))),
    ]));
    let response: MetadataResponse = conn.request(12, &request).expect("Metadata");
    response.topics[0].topic_id
}

/// A Fetch of `TOPIC` (by name, and by `id` for v13+) from offset 0.
fn fetch_request(id: uuid::Uuid, partitions: &[i32]) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(TOPIC))
            .with_topic_id(id)
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )])
}

/// Produce, Fetch, ListOffsets, DeleteRecords and DescribeProducers for a partition broker 1
/// leads get NOT_LEADER_OR_FOLLOWER (Produce v10+ and Fetch v12+ with the leader, v16 Fetch with
/// its endpoint); the partitions this broker leads are served; an index past the topic's end is
/// UNKNOWN_TOPIC_OR_PARTITION; only the led partitions were opened (have directories).
#[test]
fn partitions_led_elsewhere_answer_not_leader_or_follower() {
    let (broker, _dir, other_port) = start_with_half_elsewhere();
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    let id = topic_id(&mut conn, TOPIC);

    // Produce: served here for even partitions, refused with the leader for odd ones.
    for p in 0..PARTITIONS {
        let r = common::produce_records(&mut conn, 9, TOPIC, p, one_record());
        let want = if leader_of(p) == THIS_NODE {
            0
        } else {
            not_leader
        };
        assert_eq!(r.error_code, want, "Produce v9 p{p}");
    }
    let response: kafka_protocol::messages::ProduceResponse = conn
        .request(11, &common::produce_request(TOPIC, 1, one_record()))
        .expect("Produce v11");
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(p.error_code, not_leader);
    assert_eq!(
        (p.current_leader.leader_id.0, p.current_leader.leader_epoch),
        (OTHER_NODE, 11)
    );
    let endpoints: Vec<_> = response
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.host.to_string(), e.port, e.rack.clone()))
        .collect();
    assert_eq!(
        endpoints,
        vec![(
            OTHER_NODE,
            "127.0.0.1".to_string(),
            other_port,
            Some(StrBytes::from_static_str("r1"))
        )]
    );

    // Fetch: v11 without, v12+ with the current leader, v16+ with its endpoint.
    for version in [11, 12, 16, 17] {
        let response: FetchResponse = conn
            .request(version, &fetch_request(id, &[0, 1, 2, 3, 9]))
            .expect("Fetch");
        let parts = &response.responses[0].partitions;
        for part in parts {
            let p = part.partition_index;
            let want = match p {
                9 => ResponseError::UnknownTopicOrPartition.code(),
                p if leader_of(p) == THIS_NODE => 0,
                _ => not_leader,
            };
            assert_eq!(part.error_code, want, "Fetch v{version} p{p}");
            let leader = (
                part.current_leader.leader_id.0,
                part.current_leader.leader_epoch,
            );
            if want == not_leader && version >= 12 {
                assert_eq!(leader, (OTHER_NODE, 10 + p), "Fetch v{version} p{p}");
            } else {
                assert_eq!(leader, (-1, -1), "Fetch v{version} p{p}");
            }
        }
        if version >= 16 {
            let e = &response.node_endpoints;
            assert_eq!(e.len(), 1, "Fetch v{version}");
            assert_eq!((e[0].node_id.0, e[0].port), (OTHER_NODE, other_port));
        } else {
            assert!(response.node_endpoints.is_empty());
        }
    }
    // The even partitions hold the records produced above.
    let response: FetchResponse = conn
        .request(12, &fetch_request(id, &[0, 2]))
        .expect("Fetch");
    for part in &response.responses[0].partitions {
        assert_eq!((part.error_code, part.high_watermark), (0, 1));
    }

    // ListOffsets.
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(
                [0, 1, 9]
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )]);
    let response = conn.request(7, &request).expect("ListOffsets");
    let codes: Vec<(i32, i16, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code, p.offset))
        .collect();
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(
        codes,
        vec![(0, 0, 1), (1, not_leader, -1), (9, unknown, -1)]
    );

    // DeleteRecords.
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(
                [0, 1]
                    .iter()
                    .map(|p| {
                        DeleteRecordsPartition::default()
                            .with_partition_index(*p)
                            .with_offset(0)
                    })
                    .collect(),
            )]);
    let response = conn.request(2, &request).expect("DeleteRecords");
    let codes: Vec<i16> = response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0, not_leader]);

    // DescribeProducers.
    let request = DescribeProducersRequest::default().with_topics(vec![ProducersTopic::default()
        .with_name(name(TOPIC))
        .with_partition_indexes(vec![0, 1, 9])]);
    let response = conn.request(0, &request).expect("DescribeProducers");
    let codes: Vec<i16> = response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0, not_leader, unknown]);

    // DescribeLogDirs lists only what this broker hosts; only those have directories.
    let response = conn
        .request(4, &DescribeLogDirsRequest::default().with_topics(None))
        .expect("DescribeLogDirs");
    let hosted: Vec<i32> = response.results[0]
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
        .collect();
    assert_eq!(hosted, vec![0, 2]);
    for p in 0..PARTITIONS {
        let dir = broker.data_dir().join(format!("{TOPIC}-{p}"));
        assert_eq!(dir.exists(), leader_of(p) == THIS_NODE, "{}", dir.display());
    }
}

/// Metadata, DescribeTopicPartitions and DescribeCluster describe the cluster as the metadata
/// has it: both registered brokers, each partition's leader, epoch, replicas and ISR.
#[test]
fn answers_describe_the_registered_brokers_and_assignments() {
    let (broker, _dir, other_port) = start_with_half_elsewhere();
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");

    let metadata: MetadataResponse = conn
        .request(12, &MetadataRequest::default().with_topics(None))
        .expect("Metadata");
    let b1 = metadata
        .brokers
        .iter()
        .find(|b| b.node_id.0 == OTHER_NODE)
        .expect("broker 1 listed");
    assert_eq!(
        (b1.host.as_str(), b1.port, b1.rack.as_deref()),
        ("127.0.0.1", other_port, Some("r1"))
    );
    let b0 = metadata
        .brokers
        .iter()
        .find(|b| b.node_id.0 == THIS_NODE)
        .expect("this broker listed");
    assert_eq!(
        b0.port,
        i32::from(broker.socket_addr().port()),
        "this broker at its running listener, not its (stale) registration"
    );
    check_spread(&metadata, TOPIC, PARTITIONS, &[THIS_NODE, OTHER_NODE]);
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(TOPIC))
        .unwrap();
    for p in &topic.partitions {
        assert_eq!(p.leader_id.0, leader_of(p.partition_index));
        assert_eq!(p.leader_epoch, 10 + p.partition_index);
    }

    // DescribeTopicPartitions, two partitions per page.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let request = DescribeTopicPartitionsRequest::default()
            .with_topics(vec![TopicRequest::default().with_name(name(TOPIC))])
            .with_response_partition_limit(2)
            .with_cursor(cursor.take());
        let response = conn.request(0, &request).expect("DescribeTopicPartitions");
        for t in &response.topics {
            assert_eq!(t.error_code, 0);
            for p in &t.partitions {
                assert_eq!(p.leader_id.0, leader_of(p.partition_index));
                assert_eq!(p.leader_epoch, 10 + p.partition_index);
                seen.push(p.partition_index);
            }
        }
        match response.next_cursor {
            Some(next) => {
                cursor = Some(
                    kafka_protocol::messages::describe_topic_partitions_request::Cursor::default()
                        .with_topic_name(next.topic_name)
                        .with_partition_index(next.partition_index),
                )
            }
            None => break,
        }
        assert!(seen.len() <= PARTITIONS as usize, "the cursor must advance");
    }
    assert_eq!(seen, (0..PARTITIONS).collect::<Vec<_>>());

    let cluster = conn
        .request(1, &DescribeClusterRequest::default())
        .expect("DescribeCluster");
    let ids: Vec<i32> = cluster.brokers.iter().map(|b| b.broker_id.0).collect();
    assert_eq!(ids, vec![THIS_NODE, OTHER_NODE]);
}

// ---- Assertions for the multi-broker cluster tests ----

/// Checks a Metadata answer of a cluster whose live brokers are `brokers`: it lists exactly
/// them; every partition of `topic` (`partitions` of them) has a live leader that is its only
/// replica and ISR member, no error and a leader epoch >= 0; leaders are balanced (no broker
/// leads more than one partition more than another). Returns partition -> leader.
pub fn check_spread(
    metadata: &MetadataResponse,
    topic: &str,
    partitions: i32,
    brokers: &[i32],
) -> BTreeMap<i32, i32> {
    let mut listed: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    listed.sort_unstable();
    let mut want: Vec<i32> = brokers.to_vec();
    want.sort_unstable();
    assert_eq!(listed, want, "brokers listed");
    let t = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))
        .unwrap_or_else(|| panic!("topic {topic} not in the Metadata answer"));
    assert_eq!(t.error_code, 0, "topic {topic}");
    assert_eq!(t.partitions.len(), partitions as usize, "topic {topic}");
    let mut leaders = BTreeMap::new();
    let mut led: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    for p in &t.partitions {
        let leader = p.leader_id.0;
        assert_eq!(p.error_code, 0, "{topic}-{}", p.partition_index);
        assert!(
            brokers.contains(&leader),
            "{topic}-{}: leader {leader}",
            p.partition_index
        );
        assert_eq!(
            p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![leader]
        );
        assert_eq!(
            p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![leader]
        );
        assert!(p.leader_epoch >= 0);
        *led.entry(leader).or_default() += 1;
        leaders.insert(p.partition_index, leader);
    }
    let (min, max) = (led.values().min().copied(), led.values().max().copied());
    assert!(
        max.unwrap_or(0) - min.unwrap_or(0) <= 1,
        "leaders unbalanced over {brokers:?}: {led:?}"
    );
    leaders
}

/// Checks that the broker at `addr` (which does not lead `topic`/`partition`) answers Produce
/// and Fetch for it with NOT_LEADER_OR_FOLLOWER naming `leader` (and its port in the endpoints).
pub fn check_not_leader(
    addr: std::net::SocketAddr,
    topic: &str,
    partition: i32,
    leader: i32,
    leader_port: i32,
) {
    let mut conn = RawConn::connect(addr).expect("connect");
    conn.set_read_timeout(Duration::from_secs(10));
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    let response: kafka_protocol::messages::ProduceResponse = conn
        .request(11, &common::produce_request(topic, partition, one_record()))
        .expect("Produce");
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(
        p.error_code, not_leader,
        "Produce {topic}-{partition} at {addr}"
    );
    assert_eq!(p.current_leader.leader_id.0, leader);
    assert!(response
        .node_endpoints
        .iter()
        .any(|e| e.node_id.0 == leader && e.port == leader_port));
    let id = topic_id(&mut conn, topic);
    let mut request = fetch_request(id, &[partition]);
    request.topics[0].topic = name(topic);
    let response: FetchResponse = conn.request(16, &request).expect("Fetch");
    let p = &response.responses[0].partitions[0];
    assert_eq!(
        p.error_code, not_leader,
        "Fetch {topic}-{partition} at {addr}"
    );
    assert_eq!(p.current_leader.leader_id.0, leader);
    assert!(response
        .node_endpoints
        .iter()
        .any(|e| e.node_id.0 == leader && e.port == leader_port));
}

/// `check_not_leader` against the single broker above (so the helper itself is tested).
#[test]
fn check_not_leader_accepts_a_broker_that_does_not_lead() {
    let (broker, _dir, other_port) = start_with_half_elsewhere();
    check_not_leader(broker.socket_addr(), TOPIC, 3, OTHER_NODE, other_port);
}

/// A transaction over a partition another broker leads is not committed without its marker:
/// here that broker never answers (it is only in the metadata), so the coordinator's
/// WriteTxnMarkers to it fail, EndTxn fails and the coordinator retries the plan, rather than
/// answering success with the transaction left open on the leader. (`txn_cluster` covers the
/// markers reaching a live leader.)
#[test]
fn end_txn_does_not_skip_the_marker_of_a_partition_led_elsewhere() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProducerId,
        TransactionalId,
    };
    let (broker, _dir, _) = start_with_half_elsewhere();
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
    conn.set_read_timeout(Duration::from_secs(20));
    let tid = TransactionalId(StrBytes::from_static_str("routing-txn"));
    let init = conn
        .request(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid.clone()))
                .with_transaction_timeout_ms(60_000),
        )
        .expect("InitProducerId");
    assert_eq!(init.error_code, 0);
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(tid.clone())
        .with_v3_and_below_producer_id(init.producer_id)
        .with_v3_and_below_producer_epoch(init.producer_epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![0, 1])]);
    let added = conn.request(3, &add).expect("AddPartitionsToTxn");
    let codes: Vec<i16> = added.results_by_topic_v3_and_below[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect();
    assert_eq!(
        codes,
        vec![0, 0],
        "Kafka's coordinator adds partitions wherever they are led"
    );
    let end = EndTxnRequest::default()
        .with_transactional_id(tid)
        .with_producer_id(ProducerId(init.producer_id.0))
        .with_producer_epoch(init.producer_epoch)
        .with_committed(true);
    let code = conn.request(3, &end).expect("EndTxn").error_code;
    assert_ne!(
        code, 0,
        "EndTxn must not succeed without the marker on partition 1"
    );
}

/// A cluster's brokers, and the threads that started them: a broker dies with the thread that
/// started it (`PR_SET_PDEATHSIG`), so those threads wait until the cluster is dropped.
struct Cluster {
    brokers: Vec<TestBroker>,
    _starters: Vec<std::sync::mpsc::Sender<()>>,
}

/// Starts `n` brokers (node ids 0..n) as one cluster of `n` voters on free ports, in parallel
/// (each waits for the quorum, which needs the others, before it is ready).
fn start_cluster(n: usize) -> Cluster {
    let controller_ports: Vec<u16> = (0..n).map(|_| common::free_port()).collect();
    let voters = controller_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{i}@127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let starts: Vec<_> = controller_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let args = [
                "--node-id".to_string(),
                i.to_string(),
                "--controller-listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--controller-quorum-voters".to_string(),
                voters.clone(),
            ];
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let _ = started_tx.send(TestBroker::start_with(1, &args));
                // Until the cluster is dropped (the sender with it).
                let _ = release_rx.recv();
            });
            (started_rx, release_tx)
        })
        .collect();
    let mut cluster = Cluster {
        brokers: Vec::new(),
        _starters: Vec::new(),
    };
    for (started, release) in starts {
        cluster
            .brokers
            .push(started.recv().expect("a broker failed to start"));
        cluster._starters.push(release);
    }
    cluster
}

/// Three real brokers: a topic of 12 partitions created through one is spread over all three
/// with balanced leaders, every broker's Metadata says so, each broker sends clients to the
/// leader of the partitions it does not lead (NOT_LEADER_OR_FOLLOWER with the leader's id and
/// port), and producing with each broker as bootstrap reaches every partition.
#[test]
fn three_brokers_spread_a_topic_and_route_clients_to_its_leaders() {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    common::within(Duration::from_secs(120), || {
        let cluster = start_cluster(3);
        let brokers = &cluster.brokers;
        let ids = [0, 1, 2];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let topic = NewTopic::new(TOPIC, 12, TopicReplication::Fixed(1));
        common::create_topic_via_admin(&common::client_config(&brokers[1]), &topic, &options);

        let metadata_of = |b: &TestBroker| -> MetadataResponse {
            let mut conn = RawConn::connect(b.socket_addr()).expect("connect");
            conn.request(12, &MetadataRequest::default().with_topics(None))
                .expect("Metadata")
        };
        let mut leaders = BTreeMap::new();
        for b in brokers {
            common::wait_until(Duration::from_secs(20), "the topic on every broker", || {
                metadata_of(b).topics.iter().any(|t| {
                    t.name.as_ref().map(|n| n.as_str()) == Some(TOPIC) && t.partitions.len() == 12
                })
            });
            let seen = check_spread(&metadata_of(b), TOPIC, 12, &ids);
            if leaders.is_empty() {
                leaders = seen;
            } else {
                assert_eq!(seen, leaders, "every broker sees the same leaders");
            }
        }
        for (p, leader) in &leaders {
            let other = &brokers[((*leader + 1) % 3) as usize];
            let leader_port = i32::from(brokers[*leader as usize].socket_addr().port());
            check_not_leader(other.socket_addr(), TOPIC, *p, *leader, leader_port);
        }

        let rt = common::runtime();
        for (i, b) in brokers.iter().enumerate() {
            let producer: FutureProducer = common::client_config_with(b, &[("acks", "all")])
                .create()
                .expect("producer");
            for p in 0..12 {
                let value = format!("via{i}-p{p}");
                let record = FutureRecord::<(), str>::to(TOPIC)
                    .partition(p)
                    .payload(&value);
                rt.block_on(producer.send(record, Duration::from_secs(30)))
                    .unwrap_or_else(|e| panic!("produce to p{p} via broker {i}: {e:?}"));
            }
        }
        // Each partition's leader holds the three records sent to it (one per bootstrap).
        for (p, leader) in &leaders {
            let mut conn =
                RawConn::connect(brokers[*leader as usize].socket_addr()).expect("connect");
            let request = ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name(TOPIC))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(*p)
                        .with_timestamp(-1)])]);
            let response = conn.request(7, &request).expect("ListOffsets");
            let part = &response.topics[0].partitions[0];
            assert_eq!((part.error_code, part.offset), (0, 3), "{TOPIC}-{p}");
        }
    });
}
