//! Partition reassignment (AlterPartitionReassignments 45 / ListPartitionReassignments 46,
//! `coordinator::reassignment`) and new replicas catching up from their leader, with 3 real
//! `freshet` processes (`common::cluster::TestCluster`) and raw protocol requests.
//!
//! - `rf1_to_rf3_new_replicas_start_at_the_leaders_log_start`: a replication factor 1
//!   partition with data, whose start was deleted (DeleteRecords), is reassigned to all three
//!   brokers; the new empty replicas are answered OFFSET_OUT_OF_RANGE, start their logs at the
//!   leader's log start (Kafka's `truncateFullyAndStartAt`), catch up, join the ISR, and the
//!   reassignment completes; every record is then read from each broker in turn as leader.
//! - `a_partition_moves_off_a_broker_and_a_stuck_move_is_listed_and_cancelled`: [0, 1] ->
//!   [1, 2] completes and deletes the replica on broker 0; a move to a stopped broker stays
//!   in progress, is listed (replicas, adding, removing) and cancelled back, through
//!   `freshet topic reassign`; Kafka's errors.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{runtime, within, RawConn};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    CreateTopicsRequest, ElectLeadersRequest, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

/// Bound on each test here.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// How long a metadata change takes to show everywhere, and a small catch-up to finish.
const PROPAGATION_WITHIN: Duration = Duration::from_secs(20);

fn options() -> ClusterOptions {
    ClusterOptions {
        settings: "broker_session_timeout_ms = 2000\nbroker_heartbeat_interval_ms = 300\n\
                   replica_fetch_backoff_ms = 500\n"
            .into(),
        ..ClusterOptions::default()
    }
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn conn(cluster: &TestCluster, node: usize) -> RawConn {
    let conn = RawConn::connect(cluster.socket_addr(node)).expect("connect");
    conn.set_read_timeout(Duration::from_secs(20));
    conn
}

/// CreateTopics of `topic` with one partition on `replicas`, retried until accepted.
fn create_on(cluster: &TestCluster, topic: &str, replicas: &[i32]) {
    cluster.wait_until(PROPAGATION_WITHIN, &format!("{topic} created"), || {
        let mut c = RawConn::connect(cluster.socket_addr(0)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Duration::from_secs(20));
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(
                        replicas.iter().copied().map(BrokerId).collect(),
                    )])]);
        let answer = c.request(7, &request).map_err(|e| e.to_string())?;
        match answer.topics[0].error_code {
            0 | 36 => Ok(()),
            code => Err(format!("CreateTopics {topic}: error {code}")),
        }
    })
}

/// AlterPartitionReassignments v1 of `topic`/`partition` to `target` (None: cancel) through
/// `node`: (top-level error, partition error, message).
fn reassign(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
) -> (i16, i16, Option<String>) {
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_allow_replication_factor_change(true)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    target.map(|t| t.iter().copied().map(BrokerId).collect()),
                )])]);
    let answer: AlterPartitionReassignmentsResponse = conn(cluster, node)
        .request(1, &request)
        .expect("AlterPartitionReassignments");
    assert!(answer.allow_replication_factor_change, "echoed");
    let p = &answer.responses[0].partitions[0];
    (
        answer.error_code,
        p.error_code,
        p.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// ListPartitionReassignments (all topics) through `node`: (topic, partition) -> (replicas,
/// adding, removing).
#[allow(clippy::type_complexity)]
fn list(
    cluster: &TestCluster,
    node: usize,
) -> BTreeMap<(String, i32), (Vec<i32>, Vec<i32>, Vec<i32>)> {
    let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000);
    let answer: ListPartitionReassignmentsResponse = conn(cluster, node)
        .request(0, &request)
        .expect("ListPartitionReassignments");
    assert_eq!(answer.error_code, 0);
    let ids = |l: &[BrokerId]| l.iter().map(|b| b.0).collect::<Vec<_>>();
    let mut out = BTreeMap::new();
    for t in &answer.topics {
        for p in &t.partitions {
            out.insert(
                (t.name.0.to_string(), p.partition_index),
                (
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                ),
            );
        }
    }
    out
}

/// Partition 0 of `topic` as `node`'s Metadata shows it: (leader, replicas, isr).
fn partition_seen_by(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
) -> Result<(i32, Vec<i32>, Vec<i32>), String> {
    let m = cluster.metadata(node).map_err(|e| e.to_string())?;
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or("no topic")?;
    let p = t.partitions.first().ok_or("no partition")?;
    Ok((
        p.leader_id.0,
        p.replica_nodes.iter().map(|b| b.0).collect(),
        p.isr_nodes.iter().map(|b| b.0).collect(),
    ))
}

/// Waits until every node shows `topic`/0 with these replicas, all in sync, led by `leader`.
fn wait_assignment(
    cluster: &TestCluster,
    topic: &str,
    replicas: &[i32],
    leader: Option<i32>,
    within: Duration,
) {
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    cluster.wait_until(
        within,
        &format!("{topic} on {replicas:?}, all in sync"),
        || {
            for node in cluster.running() {
                let (l, r, mut isr) = partition_seen_by(cluster, node, topic)?;
                isr.sort_unstable();
                if r != replicas || isr != sorted || leader.is_some_and(|want| want != l) || l < 0 {
                    return Err(format!(
                        "node {node}: leader {l} replicas {r:?} isr {isr:?}"
                    ));
                }
            }
            Ok(())
        },
    );
}

/// Reads `topic`/0 from the beginning through `nodes` until `expected` records arrived.
fn read_all(
    cluster: &TestCluster,
    nodes: &[usize],
    topic: &str,
    expected: usize,
) -> BTreeMap<i64, Vec<u8>> {
    let consumer = common::assign_only_consumer(cluster.client_config(nodes), "reassign-reader");
    common::assign_from_beginning(&consumer, topic, 0);
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + PROPAGATION_WITHIN;
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) =
            rdkafka::consumer::BaseConsumer::poll(&consumer, Duration::from_millis(200))
        {
            out.insert(m.offset(), m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

/// Produces `count` records with acks=all to `topic`/0: offset -> value.
fn produce(cluster: &TestCluster, topic: &str, count: usize) -> BTreeMap<i64, Vec<u8>> {
    let rt = runtime();
    let producer: FutureProducer = cluster
        .client_config(&[0, 1, 2])
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    let values: Vec<String> = (0..count).map(|i| format!("{topic}-record-{i}")).collect();
    let sends: Vec<_> = values
        .iter()
        .map(|v| {
            (
                v,
                producer.send(
                    FutureRecord::to(topic).partition(0).key("k").payload(v),
                    Duration::from_secs(20),
                ),
            )
        })
        .collect();
    let mut acked = BTreeMap::new();
    for (v, f) in sends {
        match rt.block_on(f) {
            Ok(d) => {
                acked.insert(d.offset, v.clone().into_bytes());
            }
            Err((e, _)) => cluster.fail(&format!("produce {v}: {e}")),
        }
    }
    acked
}

/// DeleteRecords (v2) of `topic`/0 below `offset` on `node` (its leader).
fn delete_records(cluster: &TestCluster, node: usize, topic: &str, offset: i64) {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::DeleteRecordsRequest;
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])]);
    let response = conn(cluster, node)
        .request(2, &request)
        .expect("DeleteRecords");
    assert_eq!(
        response.topics[0].partitions[0].error_code, 0,
        "DeleteRecords"
    );
}

/// ElectLeaders PREFERRED of `topic`/0 through `node`: the partition's error code.
fn elect_preferred(cluster: &TestCluster, node: usize, topic: &str) -> i16 {
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(name(topic))
            .with_partitions(vec![0])]));
    let answer = conn(cluster, node)
        .request(2, &request)
        .expect("ElectLeaders");
    answer.replica_election_results[0].partition_result[0].error_code
}

/// Every record of `acked` from `from` on reads back at its offset through `leader`, and
/// nothing below `from` (the log start).
fn check_reads(
    cluster: &TestCluster,
    leader: usize,
    topic: &str,
    acked: &BTreeMap<i64, Vec<u8>>,
    from: i64,
) {
    let expected: BTreeMap<i64, Vec<u8>> =
        acked.range(from..).map(|(k, v)| (*k, v.clone())).collect();
    let read = read_all(cluster, &[leader], topic, expected.len());
    if read != expected {
        cluster.fail(&format!(
            "broker {leader} as leader of {topic}: {} records read (first {:?}), {} expected from {from}",
            read.len(),
            read.keys().next(),
            expected.len()
        ));
    }
}

/// rf 1 -> 3 of a partition with data whose start was deleted: the new replicas start at the
/// leader's log start (they never stall on OFFSET_OUT_OF_RANGE), join the ISR, and the
/// reassignment completes; each broker then leads in turn and serves every record.
#[test]
fn rf1_to_rf3_new_replicas_start_at_the_leaders_log_start() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, options());
        create_on(&cluster, "grow", &[0]);
        wait_assignment(&cluster, "grow", &[0], Some(0), PROPAGATION_WITHIN);
        let acked = produce(&cluster, "grow", 200);
        assert_eq!(acked.len(), 200);
        delete_records(&cluster, 0, "grow", 50);

        assert_eq!(
            reassign(&cluster, 1, "grow", 0, Some(&[0, 1, 2])),
            (0, 0, None)
        );
        wait_assignment(&cluster, "grow", &[0, 1, 2], Some(0), PROPAGATION_WITHIN);
        assert!(list(&cluster, 2).is_empty(), "completed: nothing listed");

        check_reads(&cluster, 0, "grow", &acked, 50);
        // Broker 1, then 2, leads (a reorder completes at once; a preferred election follows).
        for (order, leader) in [([1, 2, 0], 1), ([2, 0, 1], 2)] {
            assert_eq!(reassign(&cluster, 0, "grow", 0, Some(&order)).1, 0);
            assert_eq!(elect_preferred(&cluster, 0, "grow"), 0);
            wait_assignment(&cluster, "grow", &order, Some(leader), PROPAGATION_WITHIN);
            check_reads(&cluster, leader as usize, "grow", &acked, 50);
        }
    });
}

/// [0, 1] -> [1, 2] completes and deletes broker 0's replica; a move to a stopped broker
/// stays in progress, is listed and cancelled back; Kafka's errors for the bad cases.
#[test]
fn a_partition_moves_off_a_broker_and_a_stuck_move_is_listed_and_cancelled() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, options());
        create_on(&cluster, "move", &[0, 1]);
        wait_assignment(&cluster, "move", &[0, 1], Some(0), PROPAGATION_WITHIN);
        let acked = produce(&cluster, "move", 50);
        let on_0 = cluster.data_dir(0).join("move-0");
        assert!(on_0.exists(), "broker 0 holds a replica");

        assert_eq!(
            reassign(&cluster, 2, "move", 0, Some(&[1, 2])),
            (0, 0, None)
        );
        wait_assignment(&cluster, "move", &[1, 2], Some(1), PROPAGATION_WITHIN);
        check_reads(&cluster, 1, "move", &acked, 0);
        cluster.wait_until(PROPAGATION_WITHIN, "broker 0's replica deleted", || {
            if on_0.exists() {
                Err(format!("{} still there", on_0.display()))
            } else {
                Ok(())
            }
        });

        // Errors as Kafka's.
        let (top, code, _) = reassign(&cluster, 0, "move", 0, None);
        assert_eq!((top, code), (0, 85), "NO_REASSIGNMENT_IN_PROGRESS");
        assert_eq!(
            reassign(&cluster, 0, "move", 0, Some(&[1, 9])).1,
            39,
            "INVALID_REPLICA_ASSIGNMENT"
        );
        assert_eq!(reassign(&cluster, 0, "move", 0, Some(&[1, 1])).1, 39);
        assert_eq!(
            reassign(&cluster, 0, "nope", 0, Some(&[1])).1,
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(reassign(&cluster, 0, "move", 4, Some(&[1])).1, 3);

        // A move to a stopped broker cannot finish: listed, then cancelled.
        cluster.stop(0);
        let out = freshet_cli(
            &cluster,
            1,
            &["topic", "reassign", "move", "-p", "0", "--replicas", "1,0"],
        );
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("started"));
        let key = ("move".to_string(), 0);
        cluster.wait_until(
            PROPAGATION_WITHIN,
            "the stuck move listed on every node",
            || {
                for node in [1, 2] {
                    let l = list(&cluster, node);
                    if l.get(&key) != Some(&(vec![1, 0, 2], vec![0], vec![2])) {
                        return Err(format!("node {node}: {l:?}"));
                    }
                }
                Ok(())
            },
        );
        std::thread::sleep(Duration::from_secs(1));
        let out = freshet_cli(&cluster, 2, &["topic", "reassign", "--list"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("move") && text.contains("1,0,2"),
            "still in progress: {text}"
        );
        let cancel = ["topic", "reassign", "move", "-p", "0", "--cancel"];
        let out = freshet_cli(&cluster, 2, &cancel);
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
        wait_assignment(&cluster, "move", &[1, 2], Some(1), PROPAGATION_WITHIN);
        assert!(list(&cluster, 1).is_empty());
        let out = freshet_cli(&cluster, 1, &cancel);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("NO_REASSIGNMENT_IN_PROGRESS"));
        check_reads(&cluster, 1, "move", &acked, 0);
    });
}

/// Runs the `freshet` CLI against `node`.
fn freshet_cli(cluster: &TestCluster, node: usize, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(common::broker_bin())
        .args(args)
        .env("FRESHET_BROKERS", cluster.kafka_addr(node))
        .output()
        .expect("run freshet");
    eprintln!(
        "freshet {args:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Catch-up speed of a new replica: `FRESHET_CATCH_UP_MB` (default 200) MB produced to a
/// replication factor 1 partition on broker 0, then reassigned to [0, 1]; the time from the
/// AlterPartitionReassignments answer until broker 1 is in the ISR (the reassignment
/// completed), and the record payload bytes over it. Run:
/// `cargo build --release --bin freshet && FRESHET_BIN=target/release/freshet cargo test --test it -- --ignored reassign::measure --nocapture`.
#[test]
#[ignore = "a measurement (a minute or more): run with --ignored"]
fn measure_catch_up_of_a_new_replica() {
    within(Duration::from_secs(900), || {
        let mb: usize = std::env::var("FRESHET_CATCH_UP_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let cluster = TestCluster::start(3, options());
        create_on(&cluster, "catch-up", &[0]);
        wait_assignment(&cluster, "catch-up", &[0], Some(0), PROPAGATION_WITHIN);
        let rt = runtime();
        let producer: FutureProducer = cluster
            .client_config(&[0])
            .set("acks", "1")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("compression.type", "none")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.timeout.ms", "120000")
            .create()
            .expect("producer");
        let value = vec![b'x'; 1000];
        let records = mb * 1000;
        let started = Instant::now();
        let mut pending = std::collections::VecDeque::new();
        let await_one = |f: rdkafka::producer::DeliveryFuture| {
            if let Ok(Err((e, _))) = rt.block_on(f) {
                cluster.fail(&format!("produce: {e}"));
            }
        };
        for _ in 0..records {
            // Enqueued now (`send` would enqueue only when polled: one record per request).
            let mut record = FutureRecord::<(), _>::to("catch-up")
                .partition(0)
                .payload(&value);
            let f = loop {
                match producer.send_result(record) {
                    Ok(f) => break f,
                    Err((_, back)) => {
                        record = back;
                        if let Some(f) = pending.pop_front() {
                            await_one(f);
                        }
                    }
                }
            };
            pending.push_back(f);
            if pending.len() >= 20_000 {
                if let Some(f) = pending.pop_front() {
                    await_one(f);
                }
            }
        }
        for f in pending {
            await_one(f);
        }
        eprintln!("produced {mb} MB in {:?}", started.elapsed());
        // Record payload bytes (segment files are preallocated: their sizes say more).
        let bytes = (records * value.len()) as u64;
        let started = Instant::now();
        assert_eq!(reassign(&cluster, 0, "catch-up", 0, Some(&[0, 1])).1, 0);
        cluster.wait_until(Duration::from_secs(600), "broker 1 in sync", || {
            let (_, replicas, isr) = partition_seen_by(&cluster, 0, "catch-up")?;
            if replicas == [0, 1] && isr.contains(&1) {
                Ok(())
            } else {
                Err(format!("replicas {replicas:?} isr {isr:?}"))
            }
        });
        let took = started.elapsed();
        let mbps = bytes as f64 / 1e6 / took.as_secs_f64();
        println!(
            "catch-up: {:.1} MB of record payload in {:.2} s = {mbps:.0} MB/s (new replica from empty to in sync)",
            bytes as f64 / 1e6,
            took.as_secs_f64()
        );
    });
}
