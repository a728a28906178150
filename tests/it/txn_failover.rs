//! Transaction coordinators fail over with their state (issue 14): three real `freshet`
//! processes, `__transaction_state` replicated (transaction_state_log_replication_factor 3,
//! min ISR 2, the defaults). An rdkafka transactional producer commits a transaction, then
//! opens another and writes to it; the transaction coordinator's broker (FindCoordinator key
//! type 1) is killed (-9). Another broker becomes the coordinator (every survivor names it),
//! loads the open transaction from its replica of the partition, and the same producer
//! commits it; an aborted transaction and one left open by a producer that a new producer
//! with the same transactional.id fences are never visible. A read_committed consumer sees
//! every committed record exactly once and nothing else.
//! Also: an old coordinator whose `__transaction_state` partition moves (ElectLeaders) while it
//! retries markers to a paused leader stops those rounds at once (its
//! `freshet_txn_marker_rounds` gauge), and the new coordinator completes the commit.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{within, RawConn};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{ElectLeadersRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
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

/// The partition of `__transaction_state` (of `partitions`) that `transactional_id` belongs
/// to: Kafka's `Utils.abs(id.hashCode()) % partitions`.
fn txn_partition(transactional_id: &str, partitions: i32) -> i32 {
    let hash = transactional_id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

/// `topic` as `node`'s Metadata (naming it; internal topics too) says.
fn topic_metadata(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
) -> Option<kafka_protocol::messages::metadata_response::MetadataResponseTopic> {
    let request = kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.into())))),
    ]));
    let metadata = RawConn::connect(cluster.socket_addr(node))
        .ok()?
        .request(12, &request)
        .ok()?;
    metadata
        .topics
        .into_iter()
        .find(|t| t.error_code == 0 && t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
}

/// (leader, replicas, ISR) of `topic`/`partition` as `node`'s Metadata says.
fn partition_state(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
    partition: i32,
) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let t = topic_metadata(cluster, node, topic)?;
    let p = t
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)?;
    Some((
        p.leader_id.0,
        p.replica_nodes.iter().map(|b| b.0).collect(),
        p.isr_nodes.iter().map(|b| b.0).collect(),
    ))
}

/// (running, abandoned) marker sends of `node`'s transaction coordinator, from its metrics.
fn marker_rounds(cluster: &TestCluster, node: usize) -> (f64, f64) {
    let (status, text) =
        common::http_get(&cluster.admin_addr(node), "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "GET /metrics: {text}");
    (
        common::metric_sum(&text, "freshet_txn_marker_rounds"),
        common::metric_sum(&text, "freshet_txn_marker_rounds_abandoned_total"),
    )
}

/// An old transaction coordinator stops its marker rounds when it loses its
/// `__transaction_state` partition (Kafka's `removeMarkersForTxnTopicPartition`). The
/// coordinator C of a committing transaction cannot reach the leader of the transaction's
/// partition (paused: every WriteTxnMarkers to it hangs until the 10 s call timeout, so
/// one round outlasts the move), then the id's `__transaction_state` partition moves to its
/// preferred replica (ElectLeaders). Before, C went on sending the markers (rounds of up to
/// 10 s each, 8 of them) after the move, fenced only by the coordinator epoch on the data
/// partition; now its `freshet_txn_marker_rounds` gauge falls to 0 within seconds of the
/// move and the abandon is counted. Once the leader is back, the new coordinator writes the
/// markers with its own epoch, the commit completes and read_committed sees the records.
#[test]
fn an_old_coordinator_stops_its_marker_rounds_when_its_partition_moves() {
    const ID: &str = "txf-moved";
    const OUT: &str = "txf-moved-out";
    within(TEST_LIMIT, || {
        let options = ClusterOptions {
            // A paused broker stays registered (its partitions keep it as their leader, so
            // markers to it hang rather than fail fast); a paused follower leaves the ISR of
            // `__transaction_state` quickly; leadership moves only when the test says.
            settings: "broker_session_timeout_ms = 120000\nreplica_lag_time_max_ms = 2000\n\
                       auto_leader_rebalance_enable = false\n"
                .into(),
            ..ClusterOptions::default()
        };
        let mut cluster = TestCluster::start(3, options);
        let all = [0, 1, 2];
        let preferred = cluster.common_coordinator(&all, 1, ID, None);
        let partitions = topic_metadata(&cluster, 0, "__transaction_state")
            .expect("__transaction_state exists")
            .partitions
            .len() as i32;
        let p = txn_partition(ID, partitions);
        // Leadership of p moves off its preferred replica: a controlled shutdown and a
        // restart of that broker.
        cluster.stop(preferred as usize);
        let others: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&n| n != preferred as usize)
            .collect();
        let old = cluster.common_coordinator(&others, 1, ID, Some(preferred));
        cluster.restart(preferred as usize);
        cluster.wait_until(
            Duration::from_secs(60),
            "the preferred replica back in the ISR",
            || {
                let state = partition_state(&cluster, old as usize, "__transaction_state", p);
                match &state {
                    Some((leader, replicas, isr))
                        if *leader == old
                            && replicas.first() == Some(&preferred)
                            && isr.contains(&preferred) =>
                    {
                        Ok(())
                    }
                    _ => Err(format!("(leader, replicas, isr) {state:?}")),
                }
            },
        );
        let target = (0..3).find(|n| *n != old && *n != preferred).unwrap();
        println!("id {ID}: partition {p}, coordinator {old}, preferred {preferred}, marker target {target}");

        let on_target = [target];
        let assignment: [&[i32]; 1] = [&on_target];
        let topic = rdkafka::admin::NewTopic::new(
            OUT,
            1,
            rdkafka::admin::TopicReplication::Variable(&assignment),
        );
        cluster.create_topic_retrying(&[old as usize], &topic);
        let p_out = crate::txn_cluster::txn_producer(&cluster, ID);
        p_out.begin_transaction().expect("begin");
        let mut sent = Vec::new();
        for i in 0..5 {
            let value = format!("moved-{i}");
            let record = rdkafka::producer::BaseRecord::<str, str>::to(OUT)
                .partition(0)
                .payload(&value);
            p_out.send(record).map_err(|(e, _)| e).expect("enqueue");
            sent.push(value);
        }
        p_out.flush(TXN_OP_TIMEOUT).expect("flush");

        cluster.pause(target as usize);
        let committed = std::thread::scope(|scope| {
            let commit = scope.spawn(|| p_out.commit_transaction(Duration::from_secs(120)));
            // C is sending the markers (to the paused leader).
            cluster.wait_until(
                Duration::from_secs(30),
                "marker rounds running on the coordinator",
                || {
                    let rounds = marker_rounds(&cluster, old as usize);
                    if rounds.0 >= 1.0 {
                        Ok(())
                    } else {
                        Err(format!("(running, abandoned) {rounds:?}"))
                    }
                },
            );
            let (_, abandoned_before) = marker_rounds(&cluster, old as usize);
            // The id's partition moves to its preferred replica.
            cluster.wait_until(
                Duration::from_secs(30),
                "the preferred leader elected",
                || {
                    let elect = || -> Option<(i16, i32)> {
                        let request = ElectLeadersRequest::default()
                            .with_election_type(0)
                            .with_timeout_ms(10_000)
                            .with_topic_partitions(Some(vec![TopicPartitions::default()
                                .with_topic(TopicName(StrBytes::from_string(
                                    "__transaction_state".into(),
                                )))
                                .with_partitions(vec![p])]));
                        let code = RawConn::connect(cluster.socket_addr(preferred as usize))
                            .ok()?
                            .request::<ElectLeadersRequest>(2, &request)
                            .ok()?
                            .replica_election_results
                            .first()?
                            .partition_result
                            .first()?
                            .error_code;
                        // 0, or ELECTION_NOT_NEEDED (84) once it is the leader.
                        let leader =
                            partition_state(&cluster, old as usize, "__transaction_state", p)?.0;
                        Some((code, leader))
                    };
                    match elect() {
                        Some((0 | 84, leader)) if leader == preferred => Ok(()),
                        other => Err(format!("(error code, leader) {other:?}")),
                    }
                },
            );
            let moved = Instant::now();
            // Within a few seconds (the metadata reaching C), its rounds stop.
            let stopped = loop {
                let (running, abandoned) = marker_rounds(&cluster, old as usize);
                if running == 0.0 && abandoned > abandoned_before {
                    break Some(moved.elapsed());
                }
                if moved.elapsed() > Duration::from_secs(5) {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let still = marker_rounds(&cluster, old as usize);
            cluster.resume(target as usize);
            (stopped, still, commit.join().expect("commit thread"))
        });
        let (stopped, still, commit) = committed;
        match stopped {
            Some(after) => {
                println!("the old coordinator's marker rounds stopped {after:?} after the move")
            }
            None => cluster.fail(&format!(
                "node {old} still sends markers 5 s after losing __transaction_state-{p} \
                 (running, abandoned): {still:?}"
            )),
        }
        commit.unwrap_or_else(|e| cluster.fail(&format!("commit on the new coordinator: {e}")));
        assert_eq!(
            cluster.common_coordinator(&all, 1, ID, None),
            preferred,
            "the id's coordinator is its preferred replica"
        );
        let mut config = cluster.client_config(&all);
        config
            .set("group.id", "txf-moved-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true");
        let consumer: BaseConsumer = config.create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(OUT, 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).expect("assign");
        let mut read = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "reading {OUT} timed out: {read:?}"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    read.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                _ => {}
            }
        }
        assert_eq!(read, sent, "read_committed after the move");
    })
}
