//! Transactions across the brokers of a real 3-node cluster (three `freshet` processes): a
//! librdkafka transactional producer writes to partitions led by every broker and sends
//! consumer offsets for a group whose coordinator is on another broker than its transaction
//! coordinator. Committing writes the markers on every leader (WriteTxnMarkers) and the group's
//! offsets on the group coordinator; aborting drops both. A read_committed consumer sees exactly
//! the committed records, and the group's committed offset appears only after the commit.
//! Also, raw WriteTxnMarkers answers per partition as Kafka does (not the leader, unknown
//! partition, a stale coordinator epoch).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{within, RawConn};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{MetadataRequest, ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TEST_LIMIT: Duration = Duration::from_secs(300);
const TXN_OP_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const TOPIC: &str = "txc-out";
pub(crate) const PARTITIONS: i32 = 6;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn conn(cluster: &TestCluster, node: usize) -> RawConn {
    RawConn::connect(cluster.socket_addr(node)).expect("connect")
}

/// The node coordinating `key` (key type 0 group, 1 transaction), once every broker names
/// the same one (the first asks create the internal topic).
fn coordinator(cluster: &TestCluster, key_type: i8, key: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answers: Vec<(i16, i32)> = (0..cluster.len())
            .map(|n| {
                let request = FindCoordinatorRequest::default()
                    .with_key(s(key))
                    .with_key_type(key_type);
                let r = conn(cluster, n)
                    .request(3, &request)
                    .expect("FindCoordinator");
                (r.error_code, r.node_id.0)
            })
            .collect();
        if answers.iter().all(|a| *a == (0, answers[0].1)) {
            return answers[0].1;
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {key}: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A transactional id and a group id whose coordinators are on different brokers.
fn ids_on_different_brokers(cluster: &TestCluster) -> (String, i32, String, i32) {
    let txn = "txc-txn-0".to_string();
    let txn_node = coordinator(cluster, 1, &txn);
    for i in 0..200 {
        let group = format!("txc-group-{i}");
        let group_node = coordinator(cluster, 0, &group);
        if group_node != txn_node {
            return (txn, txn_node, group, group_node);
        }
    }
    panic!("every group landed on the transaction coordinator {txn_node}");
}

/// Partition -> leader of `topic`, as node 0's Metadata says, once every partition has one.
fn leaders(cluster: &TestCluster, topic: &str) -> BTreeMap<i32, i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(s(topic)))),
        ]));
        let r = conn(cluster, 0).request(9, &request).expect("Metadata");
        let out: BTreeMap<i32, i32> = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        if out.len() == PARTITIONS as usize && out.values().all(|l| *l >= 0) {
            return out;
        }
        assert!(Instant::now() < deadline, "no leaders for {topic}: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn txn_producer(cluster: &TestCluster, transactional_id: &str) -> BaseProducer {
    let mut config = cluster.client_config(&[0, 1, 2]);
    config
        .set("transactional.id", transactional_id)
        .set("linger.ms", "2")
        .set("message.timeout.ms", "60000")
        .set("transaction.timeout.ms", "60000");
    let p: BaseProducer = config.create().expect("transactional producer");
    p.init_transactions(TXN_OP_TIMEOUT)
        .expect("init_transactions");
    p
}

/// Sends `count` values tagged `tag` to every partition and waits until all are delivered.
pub(crate) fn send_to_every_partition(p: &BaseProducer, tag: &str, count: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for partition in 0..PARTITIONS {
        for i in 0..count {
            let value = format!("{tag}-{partition}-{i:03}");
            let record = BaseRecord::<str, str>::to(TOPIC)
                .partition(partition)
                .payload(&value);
            p.send(record).map_err(|(e, _)| e).expect("enqueue");
            sent.push(value);
        }
    }
    p.flush(TXN_OP_TIMEOUT).expect("flush");
    sent
}

/// Every value of `TOPIC` a read_committed consumer reads up to each partition's end (its
/// last stable offset), sorted.
fn read_committed(cluster: &TestCluster) -> Vec<String> {
    let mut config = cluster.client_config(&[0, 1, 2]);
    config
        .set("group.id", "txc-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut eof = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "reading {TOPIC} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
    out.sort();
    out
}

fn sorted(parts: &[&[String]]) -> Vec<String> {
    let mut v: Vec<String> = parts.iter().flat_map(|p| p.iter().cloned()).collect();
    v.sort();
    v
}

/// The test's main scenario (module doc).
#[test]
fn transactions_span_brokers_with_offsets_on_another_coordinator() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, ClusterOptions::default());
        let (txn, txn_node, group, group_node) = ids_on_different_brokers(&cluster);
        println!("transaction {txn} on {txn_node}, group {group} on {group_node}");
        let topic = rdkafka::admin::NewTopic::new(
            TOPIC,
            PARTITIONS,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        common::create_topic_via_admin(&cluster.client_config(&[0]), &topic, &options);
        let led_by: BTreeSet<i32> = leaders(&cluster, TOPIC).into_values().collect();
        assert_eq!(
            led_by,
            BTreeSet::from([0, 1, 2]),
            "partitions on every broker"
        );

        let mut config = cluster.client_config(&[group_node as usize]);
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            // No require_stable (KIP-447): the committed offset as it is, not a wait for it.
            .set("isolation.level", "read_uncommitted");
        let group_consumer: BaseConsumer = config.create().expect("group consumer");
        let cgm = group_consumer.group_metadata().expect("group metadata");
        let committed = || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(TOPIC, 0);
            tpl.add_partition(TOPIC, 1);
            let got = group_consumer
                .committed_offsets(tpl, TXN_OP_TIMEOUT)
                .expect("committed offsets");
            got.elements()
                .iter()
                .map(|e| e.offset())
                .collect::<Vec<_>>()
        };
        let offsets = |a: i64, b: i64| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(TOPIC, 0, Offset::Offset(a))
                .unwrap();
            tpl.add_partition_offset(TOPIC, 1, Offset::Offset(b))
                .unwrap();
            tpl
        };

        let p = txn_producer(&cluster, &txn);
        // Committed: records on every broker, offsets on the group's coordinator.
        p.begin_transaction().unwrap();
        let first = send_to_every_partition(&p, "c1", 5);
        p.send_offsets_to_transaction(&offsets(3, 4), &cgm, TXN_OP_TIMEOUT)
            .expect("send offsets");
        assert_eq!(
            committed(),
            vec![Offset::Invalid, Offset::Invalid],
            "no committed offset before the commit"
        );
        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit");
        assert_eq!(committed(), vec![Offset::Offset(3), Offset::Offset(4)]);
        assert_eq!(read_committed(&cluster), sorted(&[&first]));

        // Aborted: neither the records nor the offsets.
        p.begin_transaction().unwrap();
        send_to_every_partition(&p, "a1", 4);
        p.send_offsets_to_transaction(&offsets(30, 40), &cgm, TXN_OP_TIMEOUT)
            .expect("send offsets");
        p.abort_transaction(TXN_OP_TIMEOUT).expect("abort");
        assert_eq!(committed(), vec![Offset::Offset(3), Offset::Offset(4)]);

        // Committed again after the abort: readers pass the aborted records.
        p.begin_transaction().unwrap();
        let second = send_to_every_partition(&p, "c2", 3);
        p.send_offsets_to_transaction(&offsets(7, 8), &cgm, TXN_OP_TIMEOUT)
            .expect("send offsets");
        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit");
        assert_eq!(committed(), vec![Offset::Offset(7), Offset::Offset(8)]);
        assert_eq!(read_committed(&cluster), sorted(&[&first, &second]));
    })
}

/// WriteTxnMarkers v1 sent by hand to one broker: a partition it leads gets the marker
/// (NONE), one led elsewhere NOT_LEADER_OR_FOLLOWER, an unknown one
/// UNKNOWN_TOPIC_OR_PARTITION; a marker with a coordinator epoch older than the last one
/// written for that producer is TRANSACTION_COORDINATOR_FENCED, as Kafka answers.
#[test]
fn write_txn_markers_answers_per_partition() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, ClusterOptions::default());
        let topic = rdkafka::admin::NewTopic::new(
            TOPIC,
            PARTITIONS,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        common::create_topic_via_admin(&cluster.client_config(&[0]), &topic, &options);
        let leaders = leaders(&cluster, TOPIC);
        let mine = *leaders.iter().find(|(_, l)| **l == 0).expect("one on 0").0;
        let other = *leaders
            .iter()
            .find(|(_, l)| **l != 0)
            .expect("one elsewhere")
            .0;
        let marker = |coordinator_epoch: i32, partitions: Vec<i32>| {
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(4242))
                .with_producer_epoch(0)
                .with_transaction_result(true)
                .with_coordinator_epoch(coordinator_epoch)
                .with_topics(vec![
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partition_indexes(partitions),
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(s("txc-no-such-topic")))
                        .with_partition_indexes(vec![0]),
                ])])
        };
        let answer = |request: &WriteTxnMarkersRequest| -> BTreeMap<(String, i32), i16> {
            let r = conn(&cluster, 0)
                .request(1, request)
                .expect("WriteTxnMarkers");
            assert_eq!(r.markers.len(), 1);
            assert_eq!(r.markers[0].producer_id.0, 4242);
            r.markers[0]
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| ((t.name.to_string(), p.partition_index), p.error_code))
                })
                .collect()
        };
        let got = answer(&marker(5, vec![mine, other]));
        let expected = BTreeMap::from([
            ((TOPIC.to_string(), mine), 0),
            ((TOPIC.to_string(), other), 6),
            (("txc-no-such-topic".to_string(), 0), 3),
        ]);
        assert_eq!(got, expected);
        // Epoch 5 was written for producer 4242 there: epoch 4 is fenced, 5 again is fine.
        let got = answer(&marker(4, vec![mine]));
        assert_eq!(got[&(TOPIC.to_string(), mine)], 52, "{got:?}");
        let got = answer(&marker(5, vec![mine]));
        assert_eq!(got[&(TOPIC.to_string(), mine)], 0, "{got:?}");
    })
}

/// The leader of some of a transaction's partitions is killed (-9) before the commit: the
/// coordinator cannot write its markers, so the commit waits (EndTxn is answered
/// CONCURRENT_TRANSACTIONS, which the client retries) rather than completing without them;
/// once the broker is back the markers reach it and the commit completes, records and offsets
/// included.
#[test]
fn a_commit_waits_for_a_killed_leader_and_completes_when_it_returns() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, ClusterOptions::default());
        let (txn, txn_node, group, group_node) = ids_on_different_brokers(&cluster);
        let victim = (0..3).find(|n| *n != txn_node && *n != group_node).unwrap() as usize;
        let topic = rdkafka::admin::NewTopic::new(
            TOPIC,
            PARTITIONS,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        common::create_topic_via_admin(&cluster.client_config(&[0]), &topic, &options);
        let leaders = leaders(&cluster, TOPIC);
        assert!(leaders.values().any(|l| *l == victim as i32), "{leaders:?}");

        let mut config = cluster.client_config(&[group_node as usize]);
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted");
        let group_consumer: BaseConsumer = config.create().expect("group consumer");
        let cgm = group_consumer.group_metadata().expect("group metadata");
        let p = txn_producer(&cluster, &txn);
        p.begin_transaction().unwrap();
        let sent = send_to_every_partition(&p, "k1", 4);
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(TOPIC, 0, Offset::Offset(11))
            .unwrap();
        p.send_offsets_to_transaction(&offsets, &cgm, TXN_OP_TIMEOUT)
            .expect("send offsets");

        cluster.kill9(victim);
        let started = Instant::now();
        let committed = std::thread::scope(|scope| {
            let commit = scope.spawn(|| p.commit_transaction(TXN_OP_TIMEOUT));
            std::thread::sleep(Duration::from_secs(4));
            assert!(
                !commit.is_finished(),
                "the commit waits for the killed leader"
            );
            cluster.restart(victim);
            commit.join().expect("commit thread")
        });
        committed.expect("commit once the leader is back");
        println!("commit took {:?}", started.elapsed());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(TOPIC, 0);
        let got = group_consumer
            .committed_offsets(tpl, TXN_OP_TIMEOUT)
            .expect("committed offsets");
        assert_eq!(got.elements()[0].offset(), Offset::Offset(11));
        assert_eq!(read_committed(&cluster), sorted(&[&sent]));
    })
}

/// TxnOffsetCommit on a group coordinator whose transaction coordinator is another broker is
/// verified with that coordinator first (KIP-890): before AddOffsetsToTxn added the group it is
/// refused (INVALID_TXN_STATE, TRANSACTION_ABORTABLE from v4), after it accepted; an unknown
/// producer epoch is refused too.
#[test]
fn txn_offset_commit_is_verified_with_a_remote_transaction_coordinator() {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        AddOffsetsToTxnRequest, GroupId, InitProducerIdRequest, TransactionalId,
        TxnOffsetCommitRequest,
    };
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, ClusterOptions::default());
        let (txn, txn_node, group, group_node) = ids_on_different_brokers(&cluster);
        let topic = rdkafka::admin::NewTopic::new(
            TOPIC,
            PARTITIONS,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        common::create_topic_via_admin(&cluster.client_config(&[0]), &topic, &options);
        let mut coordinator = conn(&cluster, txn_node as usize);
        let init = coordinator
            .request(
                4,
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(s(&txn))))
                    .with_transaction_timeout_ms(60_000),
            )
            .expect("InitProducerId");
        assert_eq!(init.error_code, 0);
        let commit = |version: i16, epoch: i16| -> i16 {
            let request = TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s(&txn)))
                .with_group_id(GroupId(s(&group)))
                .with_producer_id(init.producer_id)
                .with_producer_epoch(epoch)
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5)])]);
            let r = conn(&cluster, group_node as usize)
                .request(version, &request)
                .expect("TxnOffsetCommit");
            r.topics[0].partitions[0].error_code
        };
        const INVALID_TXN_STATE: i16 = 48;
        const TRANSACTION_ABORTABLE: i16 = 120;
        assert_eq!(commit(3, init.producer_epoch), INVALID_TXN_STATE);
        assert_eq!(commit(4, init.producer_epoch), TRANSACTION_ABORTABLE);
        let added = coordinator
            .request(
                3,
                &AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TransactionalId(s(&txn)))
                    .with_producer_id(init.producer_id)
                    .with_producer_epoch(init.producer_epoch)
                    .with_group_id(GroupId(s(&group))),
            )
            .expect("AddOffsetsToTxn");
        assert_eq!(added.error_code, 0);
        assert_eq!(commit(3, init.producer_epoch), 0);
        assert_ne!(commit(3, init.producer_epoch + 1), 0, "another epoch");
    })
}

/// The group coordinator is killed (-9) and restarted between TxnOffsetCommit and the commit:
/// the offsets it held for the transaction survive (durable in its offsets log) and the
/// commit's marker commits them, as Kafka's transactional offset commits do.
#[test]
fn held_offsets_survive_a_group_coordinator_kill_9() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, ClusterOptions::default());
        let (txn, _, group, group_node) = ids_on_different_brokers(&cluster);
        let topic = rdkafka::admin::NewTopic::new(
            TOPIC,
            PARTITIONS,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        common::create_topic_via_admin(&cluster.client_config(&[0]), &topic, &options);
        leaders(&cluster, TOPIC);
        let group_config = |cluster: &TestCluster| {
            let mut config = cluster.client_config(&[0, 1, 2]);
            config
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_uncommitted");
            config
        };
        let cgm = {
            let c: BaseConsumer = group_config(&cluster).create().expect("group consumer");
            c.group_metadata().expect("group metadata")
        };
        let p = txn_producer(&cluster, &txn);
        p.begin_transaction().unwrap();
        let sent = send_to_every_partition(&p, "h1", 3);
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(TOPIC, 1, Offset::Offset(21))
            .unwrap();
        p.send_offsets_to_transaction(&offsets, &cgm, TXN_OP_TIMEOUT)
            .expect("send offsets");

        cluster.kill9(group_node as usize);
        cluster.restart(group_node as usize);
        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit");
        let reader: BaseConsumer = group_config(&cluster).create().expect("group consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(TOPIC, 1);
        let got = reader
            .committed_offsets(tpl, TXN_OP_TIMEOUT)
            .expect("committed offsets");
        assert_eq!(got.elements()[0].offset(), Offset::Offset(21));
        assert_eq!(read_committed(&cluster), sorted(&[&sent]));
    })
}

/// Transaction markers are written with acks=-1 (Kafka's WriteTxnMarkers): with a follower of
/// the transaction's partitions paused (so their in-sync replicas fall below
/// `min.insync.replicas` 2), the commit does not complete — before, each leader answered its
/// marker once written locally, and a marker only a deposed leader held was lost with it (the
/// fault suite's committed transaction read as aborted); once the follower is back, the
/// commit completes and read_committed sees the records.
#[test]
fn a_commit_waits_until_its_markers_are_on_the_in_sync_replicas() {
    within(TEST_LIMIT, || {
        let options = ClusterOptions {
            settings: "replica_lag_time_max_ms = 2000\n".into(),
            ..ClusterOptions::default()
        };
        let cluster = TestCluster::start(3, options);
        let topic = rdkafka::admin::NewTopic::new(
            TOPIC,
            PARTITIONS,
            rdkafka::admin::TopicReplication::Fixed(2),
        )
        .set("min.insync.replicas", "2");
        let admin_options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        common::create_topic_via_admin(&cluster.client_config(&[0]), &topic, &admin_options);
        leaders(&cluster, TOPIC);
        let txn = "txc-acks-all-markers";
        let p = txn_producer(&cluster, txn);
        let (_, coordinator) = cluster
            .find_coordinator(0, 1, txn)
            .expect("FindCoordinator");
        // A node other than the coordinator, and the partitions it follows but does not lead.
        let metadata = cluster.metadata(0).expect("metadata");
        let partitions_of = |node: i32| -> Vec<i32> {
            metadata
                .topics
                .iter()
                .filter(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.leader_id.0 != node && p.replica_nodes.iter().any(|r| r.0 == node))
                .map(|p| p.partition_index)
                .collect()
        };
        let (victim, followed) = (0..3)
            .filter(|n| *n != coordinator)
            .map(|n| (n, partitions_of(n)))
            .find(|(_, f)| !f.is_empty())
            .expect("a node following some partition");
        p.begin_transaction().unwrap();
        let mut sent = Vec::new();
        for &partition in &followed {
            let value = format!("acks-all-{partition}");
            let record = BaseRecord::<str, str>::to(TOPIC)
                .partition(partition)
                .payload(&value);
            p.send(record).map_err(|(e, _)| e).expect("enqueue");
            sent.push(value);
        }
        p.flush(TXN_OP_TIMEOUT).expect("flush");
        cluster.pause(victim as usize);
        let committed = std::thread::scope(|scope| {
            let commit = scope.spawn(|| p.commit_transaction(TXN_OP_TIMEOUT));
            std::thread::sleep(Duration::from_secs(6));
            let waited = !commit.is_finished();
            cluster.resume(victim as usize);
            (waited, commit.join().expect("commit thread"))
        });
        assert!(
            committed.0,
            "the commit completed while node {victim} (a follower of {followed:?}) was paused"
        );
        committed.1.expect("commit once the follower is back");
        sent.sort();
        assert_eq!(read_committed(&cluster), sent);
    })
}
