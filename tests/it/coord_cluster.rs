//! Coordinators spread over a real 3-node cluster (three `freshet` processes, one metadata
//! quorum): every broker names the same coordinator for a group or a transactional id (the
//! leader of the key's `__consumer_offsets` / `__transaction_state` partition), keyed requests
//! on another broker get NOT_COORDINATOR (raw protocol), the internal topics stay out of an
//! all-topics Metadata, and one rdkafka consumer group whose two members bootstrap from
//! different brokers forms one group (disjoint assignments) and reads each message once. A
//! killed coordinator is fenced (COORDINATOR_NOT_AVAILABLE for its keys) until it returns.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{within, RawConn};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    HeartbeatRequest, InitProducerIdRequest, MetadataRequest, OffsetFetchRequest, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const UNKNOWN_MEMBER_ID: i16 = 25;
const GROUP: &str = "coord-group";
const TOPIC: &str = "coord-topic";
const PARTITIONS: i32 = 4;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Three nodes, all voters (`common::cluster`: free ports, every node registered).
fn start_cluster() -> TestCluster {
    TestCluster::start(3, ClusterOptions::default())
}

/// The nodes of `cluster`, as indices (= node ids).
fn nodes(cluster: &TestCluster) -> Vec<usize> {
    (0..cluster.len()).collect()
}

fn conn(cluster: &TestCluster, node: usize) -> RawConn {
    RawConn::connect(cluster.socket_addr(node)).expect("connect")
}

/// FindCoordinator v3 of one key on `broker`: (error, node id, port).
fn find(cluster: &TestCluster, node: usize, key_type: i8, key: &str) -> (i16, i32, i32) {
    let request = FindCoordinatorRequest::default()
        .with_key(s(key))
        .with_key_type(key_type);
    let r = conn(cluster, node)
        .request(3, &request)
        .expect("FindCoordinator");
    (r.error_code, r.node_id.0, r.port)
}

/// FindCoordinator v4 of several keys on `broker`: key -> (error, node id).
fn find_batch(
    cluster: &TestCluster,
    node: usize,
    key_type: i8,
    keys: &[String],
) -> BTreeMap<String, (i16, i32)> {
    let request = FindCoordinatorRequest::default()
        .with_key_type(key_type)
        .with_coordinator_keys(keys.iter().map(|k| s(k)).collect());
    let r = conn(cluster, node)
        .request(4, &request)
        .expect("FindCoordinator");
    r.coordinators
        .iter()
        .map(|c| (c.key.to_string(), (c.error_code, c.node_id.0)))
        .collect()
}

/// Waits until every broker names a coordinator for `key` (the first asks create the
/// internal topic), and returns what each named.
fn coordinator_everywhere(cluster: &TestCluster, key_type: i8, key: &str) -> Vec<(i32, i32)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answers: Vec<(i16, i32, i32)> = nodes(cluster)
            .into_iter()
            .map(|n| find(cluster, n, key_type, key))
            .collect();
        if answers.iter().all(|(e, _, _)| *e == 0) {
            return answers.iter().map(|(_, n, p)| (*n, *p)).collect();
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {key} on every broker: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn consumer(cluster: &TestCluster, node: usize) -> BaseConsumer {
    let mut config = cluster.client_config(&[node]);
    for (k, v) in [
        ("group.id", GROUP),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "500"),
        ("fetch.wait.max.ms", "100"),
        ("topic.metadata.refresh.interval.ms", "1000"),
    ] {
        config.set(k, v);
    }
    config.create().expect("consumer")
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// One group id and one transactional id name the same coordinator on every broker, keys
/// spread over more than one node, and keyed requests elsewhere get NOT_COORDINATOR.
#[test]
fn every_broker_names_the_same_coordinator_and_others_refuse_keyed_requests() {
    within(TEST_LIMIT, || {
        let cluster = start_cluster();
        for key_type in [0i8, 1] {
            let named = coordinator_everywhere(&cluster, key_type, GROUP);
            let (node, port) = named[0];
            assert!(
                named.iter().all(|n| *n == (node, port)),
                "key type {key_type}: {named:?}"
            );
            assert_eq!(
                i32::from(cluster.socket_addr(node as usize).port()),
                port,
                "the coordinator's own listener"
            );
        }
        // Batched (v4+): each key the same on every broker, and keys spread over the nodes.
        let keys: Vec<String> = (0..24).map(|i| format!("group-{i}")).collect();
        let answers: Vec<_> = nodes(&cluster)
            .into_iter()
            .map(|n| find_batch(&cluster, n, 0, &keys))
            .collect();
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
        assert!(
            answers[0].values().all(|(e, _)| *e == 0),
            "{:?}",
            answers[0]
        );
        let nodes: BTreeSet<i32> = answers[0].values().map(|(_, n)| *n).collect();
        assert!(nodes.len() > 1, "24 groups all on {nodes:?}");

        // Keyed requests on a broker that does not coordinate the key.
        let (coordinator, _) = coordinator_everywhere(&cluster, 0, GROUP)[0];
        let other = (coordinator as usize + 1) % cluster.len();
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(s(GROUP).into())
            .with_member_id(s("m"))
            .with_generation_id(1);
        let on_other = conn(&cluster, other).request(4, &heartbeat).unwrap();
        assert_eq!(on_other.error_code, NOT_COORDINATOR);
        let on_coordinator = conn(&cluster, coordinator as usize)
            .request(4, &heartbeat)
            .unwrap();
        assert_eq!(on_coordinator.error_code, UNKNOWN_MEMBER_ID);
        // OffsetFetch v8: per group.
        let here = answers[0]
            .iter()
            .find(|(_, (_, n))| *n == other as i32)
            .map(|(k, _)| k.clone())
            .expect("a group coordinated by the other broker");
        let fetch = OffsetFetchRequest::default().with_groups(
            [GROUP, here.as_str()]
                .iter()
                .map(|g| OffsetFetchRequestGroup::default().with_group_id(s(g).into()))
                .collect(),
        );
        let r = conn(&cluster, other).request(8, &fetch).unwrap();
        let codes: Vec<i16> = r.groups.iter().map(|g| g.error_code).collect();
        assert_eq!(codes, vec![NOT_COORDINATOR, 0]);
        // InitProducerId with a transactional id, on a broker that is not its coordinator.
        let (txn_coordinator, _) = coordinator_everywhere(&cluster, 1, GROUP)[0];
        let txn_other = (txn_coordinator as usize + 1) % cluster.len();
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(GROUP))))
            .with_transaction_timeout_ms(10_000);
        let r = conn(&cluster, txn_other).request(4, &init).unwrap();
        assert_eq!(r.error_code, NOT_COORDINATOR);
        let r = conn(&cluster, txn_coordinator as usize)
            .request(4, &init)
            .unwrap();
        assert_eq!(r.error_code, 0);

        // The internal topics are not listed unless asked for by name.
        let all = conn(&cluster, 0)
            .request(12, &MetadataRequest::default().with_topics(None))
            .unwrap();
        let names: Vec<String> = all
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("__")),
            "internal topics listed: {names:?}"
        );
    });
}

/// Two members of one group bootstrap from two different brokers (neither of them, if it can
/// be helped, the coordinator): they join ONE group (disjoint assignments covering every
/// partition) and read each message once.
#[test]
fn one_group_over_two_bootstrap_brokers_reads_each_message_once() {
    within(TEST_LIMIT, || {
        let cluster = start_cluster();
        let (coordinator, _) = coordinator_everywhere(&cluster, 0, GROUP)[0];
        let others: Vec<usize> = (0..3).filter(|&i| i != coordinator as usize).collect();
        let topic = rdkafka::admin::NewTopic::new(
            TOPIC,
            PARTITIONS,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        common::create_topic_via_admin(&cluster.client_config(&[0]), &topic, &options);
        let members = [
            (others[0], consumer(&cluster, others[0])),
            (others[1], consumer(&cluster, others[1])),
        ];
        for (_, c) in &members {
            c.subscribe(&[TOPIC]).expect("subscribe");
        }
        // Until both hold a share: one generation of one group, partitions split.
        let deadline = Instant::now() + Duration::from_secs(90);
        let shares = loop {
            for (_, c) in &members {
                if let Some(Err(e)) = c.poll(Duration::from_millis(100)) {
                    println!("consumer: {e}");
                }
            }
            let shares: Vec<BTreeSet<i32>> = members.iter().map(|(_, c)| assigned(c)).collect();
            let both = shares.iter().all(|s| !s.is_empty());
            let total: usize = shares.iter().map(|s| s.len()).sum();
            if both && total == PARTITIONS as usize {
                break shares;
            }
            assert!(
                Instant::now() < deadline,
                "no shared assignment: {shares:?}"
            );
        };
        let union: BTreeSet<i32> = shares.iter().flatten().copied().collect();
        assert_eq!(union, (0..PARTITIONS).collect(), "{shares:?}");
        // Reading needs every broker's Metadata to name each partition's one leader (the
        // routing of this issue); until a node's Metadata lists the whole cluster, clients
        // read from whichever broker answered their last Metadata, and that is not tested.
        let listed = conn(&cluster, 0)
            .request(12, &MetadataRequest::default().with_topics(None))
            .unwrap()
            .brokers
            .len();
        if listed < cluster.len() {
            common::skip(
                "one_group_over_two_bootstrap_brokers_reads_each_message_once (reading)",
                "Metadata lists only the node asked (cluster routing not on this build)",
            );
            return;
        }
        // Each partition's messages go in through the broker its reader bootstrapped from.
        const PER_PARTITION: usize = 5;
        for ((bootstrap, _), share) in members.iter().zip(&shares) {
            let producer: ThreadedProducer<DefaultProducerContext> = cluster
                .client_config(&[*bootstrap])
                .set("acks", "all")
                .create()
                .expect("producer");
            for &p in share {
                for i in 0..PER_PARTITION {
                    let value = format!("p{p}-{i}");
                    producer
                        .send(
                            BaseRecord::<(), str>::to(TOPIC)
                                .partition(p)
                                .payload(&value),
                        )
                        .expect("send");
                }
            }
            producer.flush(Duration::from_secs(30)).expect("flush");
        }
        let expected = PARTITIONS as usize * PER_PARTITION;
        let mut seen: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.iter().map(Vec::len).sum::<usize>() < expected && Instant::now() < deadline {
            for (i, (_, c)) in members.iter().enumerate() {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    assert!(shares[i].contains(&m.partition()), "read outside its share");
                    let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                    seen[i].push(value);
                }
            }
        }
        // A little longer: a duplicate would show now.
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            for (i, (_, c)) in members.iter().enumerate() {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    seen[i].push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
                }
            }
        }
        let all: Vec<&String> = seen.iter().flatten().collect();
        let distinct: BTreeSet<&String> = all.iter().copied().collect();
        assert_eq!(all.len(), expected, "read {all:?}");
        assert_eq!(distinct.len(), expected, "a message read twice: {all:?}");
    });
}

/// With one replica of `__consumer_offsets`, a coordinator whose broker is killed is fenced: the others answer COORDINATOR_NOT_AVAILABLE
/// for its keys (its partition has no leader) and NOT_COORDINATOR to its group's requests; once
/// it returns (unfenced, leader again) every broker names it again.
#[test]
fn a_fenced_coordinator_is_not_available_until_it_returns() {
    within(TEST_LIMIT, || {
        // One replica of `__consumer_offsets`: nothing to fail over to (with the default
        // three, `coord_failover` shows the coordinator moving with its offsets).
        let options = ClusterOptions {
            settings: "broker_session_timeout_ms = 3000\noffsets_topic_replication_factor = 1\n"
                .into(),
            ..ClusterOptions::default()
        };
        let mut cluster = TestCluster::start(3, options);
        let (coordinator, _) = coordinator_everywhere(&cluster, 0, GROUP)[0];
        let coordinator = coordinator as usize;
        cluster.kill9(coordinator);
        let others: Vec<usize> = (0..3).filter(|&n| n != coordinator).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answers: Vec<i16> = others
                .iter()
                .map(|&n| find(&cluster, n, 0, GROUP).0)
                .collect();
            if answers.iter().all(|&e| e == COORDINATOR_NOT_AVAILABLE) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the killed coordinator is still named: {answers:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(s(GROUP).into())
            .with_member_id(s("m"))
            .with_generation_id(1);
        for &n in &others {
            let r = conn(&cluster, n).request(4, &heartbeat).unwrap();
            assert_eq!(r.error_code, NOT_COORDINATOR, "node {n}");
        }
        cluster.restart(coordinator);
        let named = coordinator_everywhere(&cluster, 0, GROUP);
        assert!(
            named.iter().all(|(n, _)| *n == coordinator as i32),
            "{named:?}"
        );
    });
}

/// Idempotent producers' ids (InitProducerId without a transactional id) come from blocks each
/// broker reserves through the controller (Kafka's AllocateProducerIds). Three brokers reserving
/// blocks at the same moments must never hand out the same id: a broker takes the block its own
/// reservation got, not whatever the newest metadata says (the fault suite once saw two
/// brokers both give out id 1000, and one producer's records were fenced as out of order).
#[test]
fn brokers_reserving_producer_id_blocks_at_once_never_share_an_id() {
    const PER_CONNECTION: usize = 1_500;
    const CONNECTIONS_PER_NODE: usize = 8;
    within(TEST_LIMIT, || {
        let cluster = start_cluster();
        let addrs: Vec<_> = nodes(&cluster)
            .into_iter()
            .map(|n| cluster.socket_addr(n))
            .collect();
        let start =
            std::sync::Arc::new(std::sync::Barrier::new(addrs.len() * CONNECTIONS_PER_NODE));
        let mut threads = Vec::new();
        for addr in addrs {
            for _ in 0..CONNECTIONS_PER_NODE {
                let start = start.clone();
                threads.push(std::thread::spawn(move || {
                    let mut conn = RawConn::connect(addr).expect("connect");
                    conn.set_read_timeout(Duration::from_secs(30));
                    let init = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(60_000);
                    start.wait();
                    let mut ids = Vec::with_capacity(PER_CONNECTION);
                    for _ in 0..PER_CONNECTION {
                        let r = conn.request(4, &init).expect("InitProducerId");
                        assert_eq!(r.error_code, 0, "InitProducerId on {addr}");
                        ids.push(r.producer_id.0);
                    }
                    (addr, ids)
                }));
            }
        }
        let mut owner: BTreeMap<i64, std::net::SocketAddr> = BTreeMap::new();
        for t in threads {
            let (addr, ids) = t.join().expect("allocating thread");
            for id in ids {
                if let Some(first) = owner.insert(id, addr) {
                    panic!("producer id {id} was handed out by {first} and again by {addr}");
                }
            }
        }
        assert_eq!(owner.len(), 3 * CONNECTIONS_PER_NODE * PER_CONNECTION);
    });
}
