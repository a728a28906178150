//! Transaction coordinators fail over with their state (issue 14): three real `freshet`
//! processes, `__transaction_state` replicated (transaction_state_log_replication_factor 3,
//! min ISR 2, the defaults). An rdkafka transactional producer commits a transaction, then
//! opens another and writes to it; the transaction coordinator's broker (FindCoordinator key
//! type 1) is killed (-9). Another broker becomes the coordinator (every survivor names it),
//! loads the open transaction from its replica of the partition, and the same producer
//! commits it; an aborted transaction and one left open by a producer that a new producer
//! with the same transactional.id fences are never visible. A read_committed consumer sees
//! every committed record exactly once and nothing else.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::within;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

// The topic and the transactional producer of the cross-broker transaction tests.
use crate::txn_cluster::{send_to_every_partition as send, txn_producer, PARTITIONS, TOPIC};

const TEST_LIMIT: Duration = Duration::from_secs(300);
const TXN_OP_TIMEOUT: Duration = Duration::from_secs(60);
const TXN_ID: &str = "txf-txn";

/// Waits until every node of `nodes` names the same coordinator for the transactional id,
/// other than `not`, and returns it.
fn coordinator(cluster: &TestCluster, nodes: &[usize], not: Option<i32>) -> i32 {
    cluster.common_coordinator(nodes, 1, TXN_ID, not)
}

/// Creates [`TOPIC`] with three replicas (min ISR 2) through `nodes`.
fn create_topic(cluster: &TestCluster, nodes: &[usize]) {
    let topic = rdkafka::admin::NewTopic::new(
        TOPIC,
        PARTITIONS,
        rdkafka::admin::TopicReplication::Fixed(3),
    )
    .set("min.insync.replicas", "2");
    cluster.create_topic_retrying(nodes, &topic);
}

/// Every value a read_committed consumer reads from [`TOPIC`] on `nodes` up to each
/// partition's last stable offset, sorted (duplicates kept).
fn read_committed(cluster: &TestCluster, nodes: &[usize]) -> Vec<String> {
    let mut config = cluster.client_config(nodes);
    config
        .set("group.id", "txf-reader")
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
        if Instant::now() > deadline {
            cluster.fail(&format!("reading {TOPIC} timed out at {eof:?}: {out:?}"));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => println!("consumer: {e}"),
        }
    }
    out.sort();
    out
}

/// The test's scenario (module doc).
#[test]
fn an_open_transaction_survives_a_kill_9_of_its_coordinator() {
    within(TEST_LIMIT, || {
        // Two shards: a `__transaction_state` partition's owner is not always the coordinator
        // shard (loads and writes cross shards).
        let options = ClusterOptions {
            shards: 2,
            settings: "broker_session_timeout_ms = 3000\n".into(),
            ..ClusterOptions::default()
        };
        let mut cluster = TestCluster::start(3, options);
        let all = [0, 1, 2];
        let old = coordinator(&cluster, &all, None);
        let others: Vec<usize> = all.iter().copied().filter(|&n| n != old as usize).collect();
        println!("transaction coordinator: node {old}");
        create_topic(&cluster, &others);

        let p = txn_producer(&cluster, TXN_ID);
        p.begin_transaction().expect("begin 1");
        let first = send(&p, "c1", 5);
        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit 1");

        // An open transaction with records on every partition, then the coordinator dies.
        p.begin_transaction().expect("begin 2");
        let second = send(&p, "c2", 4);
        cluster.kill9(old as usize);
        let new = coordinator(&cluster, &others, Some(old));
        println!("new transaction coordinator: node {new}");
        let started = Instant::now();
        p.commit_transaction(TXN_OP_TIMEOUT)
            .unwrap_or_else(|e| cluster.fail(&format!("commit 2 after the kill: {e}")));
        println!("commit on the new coordinator took {:?}", started.elapsed());

        // Aborted on the new coordinator: never visible.
        p.begin_transaction().expect("begin 3");
        send(&p, "a3", 3);
        p.abort_transaction(TXN_OP_TIMEOUT).expect("abort 3");

        // Left open, then fenced by a new producer with the same transactional id: its
        // InitProducerId aborts it.
        p.begin_transaction().expect("begin 4");
        send(&p, "o4", 3);
        drop(p);
        let p2 = txn_producer(&cluster, TXN_ID);
        p2.begin_transaction().expect("begin 5");
        let fifth = send(&p2, "c5", 2);
        p2.commit_transaction(TXN_OP_TIMEOUT).expect("commit 5");

        let mut expected: Vec<String> = [first, second, fifth].concat();
        expected.sort();
        let read = read_committed(&cluster, &others);
        if read != expected {
            cluster.fail(&format!(
                "read_committed after the failover: {} records, expected {} (each committed one \
                 once, no aborted one): read {read:?}",
                read.len(),
                expected.len()
            ));
        }
        // The old coordinator comes back as a follower of the partition: the new one keeps
        // coordinating the id.
        cluster.restart(old as usize);
        assert_eq!(coordinator(&cluster, &all, Some(old)), new);
    })
}

/// Offsets sent to a transaction (TxnOffsetCommit) whose group coordinator is its
/// transaction coordinator live only in that coordinator's memory until the commit: when its
/// broker is killed (-9) with the transaction open, the new coordinator aborts the
/// transaction with a bumped epoch rather than let it commit without its offsets. The
/// producer's commit is refused (fenced), its records are never read, the group has no
/// committed offset; the transactional id goes on with a new producer.
#[test]
fn an_open_transaction_with_offsets_is_aborted_when_its_coordinator_dies() {
    within(TEST_LIMIT, || {
        let options = ClusterOptions {
            shards: 2,
            settings: "broker_session_timeout_ms = 3000\n".into(),
            ..ClusterOptions::default()
        };
        let mut cluster = TestCluster::start(3, options);
        let all = [0, 1, 2];
        let old = coordinator(&cluster, &all, None);
        let others: Vec<usize> = all.iter().copied().filter(|&n| n != old as usize).collect();
        let group = (0..200)
            .map(|i| format!("txf-group-{i}"))
            .find(|g| cluster.common_coordinator(&all, 0, g, None) == old)
            .expect("a group coordinated with the transaction");
        create_topic(&cluster, &others);
        let mut config = cluster.client_config(&others);
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false");
        let group_consumer: BaseConsumer = config.create().expect("group consumer");
        let cgm = group_consumer.group_metadata().expect("group metadata");

        let p = txn_producer(&cluster, TXN_ID);
        p.begin_transaction().expect("begin");
        send(&p, "lost", 3);
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(TOPIC, 0, Offset::Offset(9))
            .unwrap();
        p.send_offsets_to_transaction(&offsets, &cgm, TXN_OP_TIMEOUT)
            .expect("send offsets");
        cluster.kill9(old as usize);
        let new = coordinator(&cluster, &others, Some(old));
        println!("transaction coordinator {old} killed; new: {new}");
        let refused = p.commit_transaction(TXN_OP_TIMEOUT);
        assert!(
            refused.is_err(),
            "a commit that would lose its offsets is refused"
        );
        println!("commit after the kill: {refused:?}");
        drop(p);

        let p2 = txn_producer(&cluster, TXN_ID);
        p2.begin_transaction().expect("begin again");
        let kept = send(&p2, "kept", 2);
        p2.commit_transaction(TXN_OP_TIMEOUT).expect("commit again");
        let mut expected = kept;
        expected.sort();
        assert_eq!(read_committed(&cluster, &others), expected);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(TOPIC, 0);
        let committed = group_consumer
            .committed_offsets(tpl, TXN_OP_TIMEOUT)
            .expect("committed offsets");
        assert_eq!(committed.elements()[0].offset(), Offset::Invalid);
    })
}
