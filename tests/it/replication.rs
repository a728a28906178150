//! Issue 14's data path with 3 real `freshet` processes (`common::cluster::TestCluster`):
//! followers fetch from their leader, the high watermark moves over the ISR, acks=all is
//! answered once every in-sync replica has the batch on disk, and a leader's kill -9 loses
//! nothing it acknowledged.
//!
//! - `acks_all_records_survive_kill9_of_the_leader`: rdkafka produces with acks=all to a
//!   replication factor 3 partition; the leader is killed (-9) once every record is
//!   acknowledged; the new leader serves every acknowledged record at the offset it was
//!   acknowledged at (from the log start a DeleteRecords on the old leader set, which the
//!   followers took from their fetches), and takes acks=all produces again.
//! - `a_paused_follower_leaves_the_isr_and_acks_all_goes_on`: SIGSTOP of a follower, ISR
//!   shrink by AlterPartition after `replica_lag_time_max_ms`, and its return to the ISR.
//! - `a_restarted_leader_truncates_its_divergent_suffix_and_rejoins`: a killed leader's
//!   acks=1 suffix nobody else has is truncated when it comes back as a follower.
//! - `delete_records_waits_for_the_low_watermark_and_survives_kill9_of_the_leader`: with a
//!   follower paused (SIGSTOP, not fenced yet), DeleteRecords with a short `timeout_ms` is
//!   answered REQUEST_TIMED_OUT (the paused follower's log start holds the low watermark
//!   back); after SIGCONT it completes with the low watermark at the offset; after a kill -9
//!   of the leader the new leader's earliest offset (ListOffsets) is at or past it.
//! - `acks_all_below_min_insync_replicas_is_refused`: with `min.insync.replicas` = 3 and one
//!   follower down (fenced, so out of the ISR), Produce acks=all gets NOT_ENOUGH_REPLICAS and
//!   appends nothing; acks=1 still works; the consumer sees only what the ISR has.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{ClusterOptions, TestCluster};
use common::{runtime, within, RawConn};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

/// Bound on each test here.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long a topic takes to be created and led everywhere.
const PROPAGATION_WITHIN: Duration = Duration::from_secs(15);
/// From a leader's kill -9 to its partitions led elsewhere (session timeout + slack).
const FAILOVER_WITHIN: Duration = Duration::from_secs(15);

/// Fast fencing, so that a killed leader is replaced within seconds.
fn options() -> ClusterOptions {
    ClusterOptions {
        settings: "broker_session_timeout_ms = 2000\nbroker_heartbeat_interval_ms = 300\n\
                   replica_fetch_backoff_ms = 500\n"
            .into(),
        ..ClusterOptions::default()
    }
}

/// CreateTopics of `name` (one partition, replication factor 3, `configs`) through `node`,
/// retried until accepted.
fn create_replicated_topic(
    cluster: &TestCluster,
    node: usize,
    name: &str,
    configs: &[(&str, &str)],
) {
    cluster.wait_until(PROPAGATION_WITHIN, &format!("{name} created"), || {
        let mut conn = RawConn::connect(cluster.socket_addr(node)).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Duration::from_secs(20));
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(1)
                .with_replication_factor(3)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                )]);
        let answer = conn.request(7, &request).map_err(|e| e.to_string())?;
        match answer.topics[0].error_code {
            0 | 36 => Ok(()), // created, or TOPIC_ALREADY_EXISTS from an earlier try
            code => Err(format!("CreateTopics {name}: error {code}")),
        }
    })
}

/// Partition 0 of `topic` as `node`'s Metadata shows it: (leader, replicas, isr), once it has
/// a leader other than `not`.
fn leader_seen_by(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
    not: Option<i32>,
    within: Duration,
) -> (i32, Vec<i32>, Vec<i32>) {
    cluster.wait_until(
        within,
        &format!("node {node} to show a leader of {topic}"),
        || {
            let m = cluster.metadata(node).map_err(|e| e.to_string())?;
            let t = m
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
                .ok_or("no topic")?;
            let p = t.partitions.first().ok_or("no partition")?;
            let leader = p.leader_id.0;
            if p.error_code != 0 || leader < 0 || Some(leader) == not {
                return Err(format!("error {} leader {leader}", p.error_code));
            }
            Ok((
                leader,
                p.replica_nodes.iter().map(|b| b.0).collect(),
                p.isr_nodes.iter().map(|b| b.0).collect(),
            ))
        },
    )
}

/// Reads partition 0 of `topic` from the beginning through `nodes` until `expected` records
/// arrived or `timeout` passed: offset -> value.
fn read_all(
    cluster: &TestCluster,
    nodes: &[usize],
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> BTreeMap<i64, Vec<u8>> {
    let consumer = common::assign_only_consumer(cluster.client_config(nodes), "replication-reader");
    common::assign_from_beginning(&consumer, topic, 0);
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) =
            rdkafka::consumer::BaseConsumer::poll(&consumer, Duration::from_millis(200))
        {
            out.insert(m.offset(), m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

/// rdkafka produces with acks=all to a replication factor 3 partition; once every record is
/// acknowledged the leader is killed (-9); the new leader (a follower until then) serves every
/// acknowledged record at its acknowledged offset, and acks=all produces work on it.
#[test]
fn acks_all_records_survive_kill9_of_the_leader() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, options());
        create_replicated_topic(&cluster, 0, "durable", &[]);
        let (leader, replicas, isr) =
            leader_seen_by(&cluster, 0, "durable", None, PROPAGATION_WITHIN);
        assert_eq!(replicas.len(), 3, "replication factor 3: {replicas:?}");
        assert_eq!(isr.len(), 3, "every replica starts in sync: {isr:?}");

        let rt = runtime();
        let producer: FutureProducer = cluster
            .client_config(&[0, 1, 2])
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer");
        let mut acked: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let values: Vec<String> = (0..300).map(|i| format!("record-{i}")).collect();
        let sends: Vec<_> = values
            .iter()
            .map(|value| {
                let record = FutureRecord::to("durable")
                    .partition(0)
                    .key("k")
                    .payload(value);
                (value, producer.send(record, Duration::from_secs(20)))
            })
            .collect();
        for (value, f) in sends {
            match rt.block_on(f) {
                Ok(delivery) => {
                    acked.insert(delivery.offset, value.clone().into_bytes());
                }
                Err((e, _)) => cluster.fail(&format!("produce {value}: {e}")),
            }
        }
        assert_eq!(acked.len(), 300);
        // DeleteRecords below offset 10 on the leader: its followers move their log start
        // with the next fetch answer (within replica_fetch_wait_max_ms), so the new leader
        // starts at 10 too.
        delete_records(&cluster, leader as usize, "durable", 10);
        std::thread::sleep(Duration::from_secs(2));

        cluster.kill9(leader as usize);
        let survivors: Vec<usize> = (0..3).filter(|n| *n != leader as usize).collect();
        let (new_leader, _, _) = leader_seen_by(
            &cluster,
            survivors[0],
            "durable",
            Some(leader),
            FAILOVER_WITHIN,
        );
        assert_ne!(new_leader, leader);

        let read = read_all(
            &cluster,
            &survivors,
            "durable",
            acked.len() - 10,
            Duration::from_secs(20),
        );
        assert_eq!(
            read.keys().next(),
            Some(&10),
            "the new leader starts where DeleteRecords left the old one"
        );
        for (offset, value) in acked.range(10..) {
            match read.get(offset) {
                Some(v) if v == value => {}
                other => cluster.fail(&format!(
                    "acknowledged record at offset {offset} ({}) reads as {:?} on the new leader {new_leader} ({} of {} read)",
                    String::from_utf8_lossy(value),
                    other.map(|v| String::from_utf8_lossy(v).into_owned()),
                    read.len(),
                    acked.len()
                )),
            }
        }

        // The new leader takes acks=all produces (its remaining follower is in sync).
        let producer: FutureProducer = cluster
            .client_config(&survivors)
            .set("acks", "all")
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer");
        let delivery = rt
            .block_on(
                producer.send(
                    FutureRecord::to("durable")
                        .partition(0)
                        .key("k")
                        .payload("after"),
                    Duration::from_secs(20),
                ),
            )
            .unwrap_or_else(|(e, _)| cluster.fail(&format!("produce after failover: {e}")));
        assert_eq!(
            delivery.offset, 300,
            "continues after the acknowledged records"
        );
    });
}

/// DeleteRecords (v2) of `topic`/0 below `offset`, sent to `node` (its leader).
fn delete_records(cluster: &TestCluster, node: usize, topic: &str, offset: i64) {
    assert_eq!(
        delete_records_raw(cluster, node, topic, offset, 10_000),
        (0, offset),
        "DeleteRecords"
    );
}

/// DeleteRecords (v2) of `topic`/0 below `offset` with `timeout_ms`, sent to `node`:
/// (error code, low watermark).
fn delete_records_raw(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
    offset: i64,
    timeout_ms: i32,
) -> (i16, i64) {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::DeleteRecordsRequest;
    let mut conn = RawConn::connect(cluster.socket_addr(node)).expect("connect");
    conn.set_read_timeout(Duration::from_secs(30));
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])]);
    let response = conn.request(2, &request).expect("DeleteRecords");
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

/// ListOffsets "earliest" of `topic`/0 on `node`: (error code, offset).
fn earliest_offset(cluster: &TestCluster, node: usize, topic: &str) -> Result<(i16, i64), String> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::ListOffsetsRequest;
    let mut conn = RawConn::connect(cluster.socket_addr(node)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Duration::from_secs(10));
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let response = conn.request(5, &request).map_err(|e| e.to_string())?;
    let p = &response.topics[0].partitions[0];
    Ok((p.error_code, p.offset))
}

/// Kafka's `DelayedDeleteRecords`: DeleteRecords is answered only once the low watermark
/// (every replica on an unfenced broker has moved its log start, as its Fetches report) reached
/// the offset. A paused follower (not fenced: the session timeout is longer than the pause)
/// holds it back, so a short `timeout_ms` ends in REQUEST_TIMED_OUT (before: answered at
/// once, from the leader's own log start); after SIGCONT the same request completes; then a
/// kill -9 of the leader cannot bring the deleted records back: the new leader's earliest
/// offset is at or past the offset.
#[test]
fn delete_records_waits_for_the_low_watermark_and_survives_kill9_of_the_leader() {
    within(TEST_LIMIT, || {
        let options = ClusterOptions {
            settings: "broker_session_timeout_ms = 6000\nbroker_heartbeat_interval_ms = 300\n\
                       replica_fetch_backoff_ms = 500\n"
                .into(),
            ..ClusterOptions::default()
        };
        let mut cluster = TestCluster::start(3, options);
        create_replicated_topic(&cluster, 0, "trimmed", &[]);
        let (leader, replicas, _) =
            leader_seen_by(&cluster, 0, "trimmed", None, PROPAGATION_WITHIN);
        assert_eq!(replicas.len(), 3, "replication factor 3: {replicas:?}");
        let leader = leader as usize;
        for i in 0..20 {
            let value = format!("record-{i}");
            let (code, offset) = produce_raw(&cluster, leader, "trimmed", -1, &value);
            assert_eq!((code, offset), (0, i), "acks=all produce {i}");
        }
        let paused = (0..3).find(|n| *n != leader).expect("a follower");
        cluster.pause(paused);
        let (code, _) = delete_records_raw(&cluster, leader, "trimmed", 10, 1_500);
        cluster.resume(paused);
        assert_eq!(
            code, 7,
            "REQUEST_TIMED_OUT while the paused follower's log start is below 10"
        );
        assert_eq!(
            delete_records_raw(&cluster, leader, "trimmed", 10, 10_000),
            (0, 10),
            "after SIGCONT every replica's log start reaches 10"
        );

        cluster.kill9(leader);
        let survivors: Vec<usize> = (0..3).filter(|n| *n != leader).collect();
        let (new_leader, _, _) = leader_seen_by(
            &cluster,
            survivors[0],
            "trimmed",
            Some(leader as i32),
            FAILOVER_WITHIN,
        );
        let earliest = cluster.wait_until(
            FAILOVER_WITHIN,
            "the new leader answers ListOffsets",
            || match earliest_offset(&cluster, new_leader as usize, "trimmed")? {
                (0, offset) => Ok(offset),
                (code, _) => Err(format!("error {code}")),
            },
        );
        assert!(
            earliest >= 10,
            "the new leader {new_leader}'s log starts at {earliest}: deleted records came back"
        );
    });
}

/// Produce acks=all with a Produce v9 request of one `value` to `topic`/0 on `node`:
/// (error code, base offset).
fn produce_raw(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
    acks: i16,
    value: &str,
) -> (i16, i64) {
    let mut conn = RawConn::connect(cluster.socket_addr(node)).expect("connect");
    conn.set_read_timeout(Duration::from_secs(30));
    let batch = freshet_protocol::batch::encode_batch(
        &[(
            None,
            Some(Bytes::from(value.to_string())),
            1_700_000_000_000,
        )],
        freshet_protocol::batch::Compression::None,
    )
    .expect("batch");
    let request = common::produce_request(topic, 0, batch).with_acks(acks);
    let response: kafka_protocol::messages::ProduceResponse =
        conn.request(9, &request).expect("Produce");
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// With `min.insync.replicas` = 3 and one follower killed (fenced, so out of the ISR), acks=all
/// is refused with NOT_ENOUGH_REPLICAS (19) and appends nothing; acks=1 is still answered;
/// once the follower is back in the ISR... (the ISR grows back through AlterPartition: not in
/// this test).
#[test]
fn acks_all_below_min_insync_replicas_is_refused() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, options());
        create_replicated_topic(&cluster, 0, "strict", &[("min.insync.replicas", "3")]);
        let (leader, replicas, _) = leader_seen_by(&cluster, 0, "strict", None, PROPAGATION_WITHIN);
        let leader = leader as usize;
        let (code, base) = produce_raw(&cluster, leader, "strict", -1, "all-three");
        assert_eq!((code, base), (0, 0), "acks=all with the whole ISR");

        let follower = replicas
            .iter()
            .map(|r| *r as usize)
            .find(|r| *r != leader)
            .expect("a follower");
        cluster.kill9(follower);
        cluster.wait_until(FAILOVER_WITHIN, "the ISR to shrink", || {
            let (_, _, isr) = leader_seen_by(&cluster, leader, "strict", None, PROPAGATION_WITHIN);
            if isr.len() == 2 {
                Ok(())
            } else {
                Err(format!("isr {isr:?}"))
            }
        });
        let (code, _) = produce_raw(&cluster, leader, "strict", -1, "refused");
        assert_eq!(code, 19, "NOT_ENOUGH_REPLICAS");
        let (code, base) = produce_raw(&cluster, leader, "strict", 1, "acks-one");
        assert_eq!(
            (code, base),
            (0, 1),
            "acks=1 works; the refused record took no offset"
        );
        let survivors: Vec<usize> = (0..3).filter(|n| *n != follower).collect();
        let read = read_all(&cluster, &survivors, "strict", 2, Duration::from_secs(15));
        let values: Vec<&[u8]> = read.values().map(|v| v.as_slice()).collect();
        assert_eq!(values, [&b"all-three"[..], &b"acks-one"[..]]);
    });
}

/// Sends `sig` to `node`'s process.
fn signal_node(cluster: &TestCluster, node: usize, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process of this test that is still running (not reaped).
    let rc = unsafe { libc::kill(cluster.pid(node) as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill {sig} node {node}");
}

/// Waits until `leader`'s Metadata shows `topic`'s ISR with `len` members; returns it.
fn wait_isr_len(
    cluster: &TestCluster,
    leader: usize,
    topic: &str,
    len: usize,
    within: Duration,
) -> Vec<i32> {
    cluster.wait_until(
        within,
        &format!("the ISR of {topic} to have {len} members"),
        || {
            let (_, _, isr) = leader_seen_by(cluster, leader, topic, None, PROPAGATION_WITHIN);
            if isr.len() == len {
                Ok(isr)
            } else {
                Err(format!("isr {isr:?}"))
            }
        },
    )
}

/// A follower paused with SIGSTOP (not fenced: the session timeout is long) leaves the ISR
/// after `replica_lag_time_max_ms` through AlterPartition, so acks=all with
/// `min.insync.replicas` = 2 goes on with the two others; after SIGCONT it catches up and
/// joins the ISR again, and every acknowledged record is read back.
#[test]
fn a_paused_follower_leaves_the_isr_and_acks_all_goes_on() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(
            3,
            ClusterOptions {
                settings: "broker_session_timeout_ms = 30000\nbroker_heartbeat_interval_ms = 300\n\
                           replica_lag_time_max_ms = 1500\nreplica_fetch_backoff_ms = 500\n"
                    .into(),
                ..ClusterOptions::default()
            },
        );
        create_replicated_topic(&cluster, 0, "lagging", &[("min.insync.replicas", "2")]);
        let (leader, replicas, _) =
            leader_seen_by(&cluster, 0, "lagging", None, PROPAGATION_WITHIN);
        let leader = leader as usize;
        assert_eq!(
            produce_raw(&cluster, leader, "lagging", -1, "before"),
            (0, 0)
        );
        // A follower that is not the active controller (the quorum is not what this tests).
        let controller = cluster.controller_seen_by(leader).ok().flatten();
        let paused = replicas
            .iter()
            .map(|r| *r as usize)
            .find(|r| *r != leader && Some(*r) != controller)
            .expect("a follower that does not control");
        signal_node(&cluster, paused, libc::SIGSTOP);

        let started = Instant::now();
        let (code, base) = produce_raw(&cluster, leader, "lagging", -1, "while-paused");
        let waited = started.elapsed();
        if code != 0 {
            signal_node(&cluster, paused, libc::SIGCONT);
            cluster.fail(&format!(
                "acks=all while a follower is paused: error {code}"
            ));
        }
        assert_eq!(base, 1);
        let isr = wait_isr_len(&cluster, leader, "lagging", 2, Duration::from_secs(10));
        assert!(
            !isr.contains(&(paused as i32)),
            "the paused follower left: {isr:?}"
        );
        assert!(
            waited < Duration::from_secs(10),
            "answered once the ISR shrank, took {waited:?}"
        );
        let fenced = cluster
            .brokers_with_fencing(leader)
            .expect("DescribeCluster");
        assert!(
            fenced.iter().all(|(_, f)| !f),
            "nobody fenced: the ISR shrank by lag, {fenced:?}"
        );

        signal_node(&cluster, paused, libc::SIGCONT);
        wait_isr_len(&cluster, leader, "lagging", 3, Duration::from_secs(15));
        assert_eq!(
            produce_raw(&cluster, leader, "lagging", -1, "after"),
            (0, 2)
        );
        let read = read_all(&cluster, &[0, 1, 2], "lagging", 3, Duration::from_secs(15));
        let values: Vec<&[u8]> = read.values().map(|v| v.as_slice()).collect();
        assert_eq!(
            values,
            [&b"before"[..], &b"while-paused"[..], &b"after"[..]]
        );
    });
}

/// A leader that acknowledged records with acks=1 while its followers were paused, then was
/// killed (-9), comes back as a follower of the new leader: its fetch names its last epoch, the
/// new leader answers with a diverging epoch, it truncates the suffix nobody else has and
/// catches up, so it joins the ISR again; the log everyone serves holds the new leader's
/// records at those offsets, not the lost acks=1 ones.
#[test]
fn a_restarted_leader_truncates_its_divergent_suffix_and_rejoins() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, options());
        create_replicated_topic(&cluster, 0, "diverge", &[]);
        let (leader, replicas, _) =
            leader_seen_by(&cluster, 0, "diverge", None, PROPAGATION_WITHIN);
        let old = leader as usize;
        assert_eq!(
            produce_raw(&cluster, old, "diverge", -1, "replicated"),
            (0, 0)
        );
        let followers: Vec<usize> = replicas
            .iter()
            .map(|r| *r as usize)
            .filter(|r| *r != old)
            .collect();
        for f in &followers {
            signal_node(&cluster, *f, libc::SIGSTOP);
        }
        // The first may still reach the followers (a fetch parked at the leader is answered
        // into their sockets); the second cannot: no follower asks again while paused.
        let first = produce_raw(&cluster, old, "diverge", 1, "acks-one-1");
        let lost = produce_raw(&cluster, old, "diverge", 1, "acks-one-lost");
        cluster.kill9(old);
        for f in &followers {
            signal_node(&cluster, *f, libc::SIGCONT);
        }
        assert_eq!(
            (first, lost),
            ((0, 1), (0, 2)),
            "acks=1 answered by the leader alone"
        );
        let (new_leader, _, _) = leader_seen_by(
            &cluster,
            followers[0],
            "diverge",
            Some(leader),
            FAILOVER_WITHIN,
        );
        let (code, base) = produce_raw(&cluster, new_leader as usize, "diverge", -1, "new-leader");
        assert_eq!(code, 0);
        assert!(
            base == 1 || base == 2,
            "the new leader writes where its log ends: {base}"
        );

        cluster.restart(old);
        wait_isr_len(
            &cluster,
            new_leader as usize,
            "diverge",
            3,
            Duration::from_secs(20),
        );
        assert_eq!(
            produce_raw(&cluster, new_leader as usize, "diverge", -1, "all-three"),
            (0, base + 1)
        );
        let expected: Vec<&[u8]> = if base == 2 {
            vec![b"replicated", b"acks-one-1", b"new-leader", b"all-three"]
        } else {
            vec![b"replicated", b"new-leader", b"all-three"]
        };
        let read = read_all(
            &cluster,
            &[0, 1, 2],
            "diverge",
            expected.len(),
            Duration::from_secs(15),
        );
        let values: Vec<&[u8]> = read.values().map(|v| v.as_slice()).collect();
        assert_eq!(
            values, expected,
            "the lost acks=1 record is gone everywhere"
        );
        assert!(
            cluster
                .log(old)
                .contains("diverged from its leader's: truncating"),
            "the old leader truncated"
        );
    });
}
