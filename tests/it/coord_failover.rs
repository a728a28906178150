//! Group coordinators fail over with their committed offsets (issue 14): three real `freshet`
//! processes, `__consumer_offsets` replicated (offsets_topic_replication_factor 3, the
//! default). An rdkafka consumer group commits offsets; the coordinator's broker is killed
//! (-9); another broker becomes the group's coordinator (FindCoordinator everywhere names it),
//! OffsetFetch there returns the committed offsets, and a new consumer of the group resumes
//! from them without reading a committed record again. Clients cannot produce to
//! `__consumer_offsets`.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{within, RawConn};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::OffsetFetchRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const GROUP: &str = "failover-group";
const TOPIC: &str = "failover-topic";
const PARTITIONS: i32 = 2;
const PER_PARTITION: usize = 10;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn conn(cluster: &TestCluster, node: usize) -> std::io::Result<RawConn> {
    RawConn::connect(cluster.socket_addr(node))
}

/// Waits until every node of `nodes` names the same coordinator for the group, other
/// than `not`, and returns it.
fn coordinator(cluster: &TestCluster, nodes: &[usize], not: Option<i32>) -> i32 {
    cluster.common_coordinator(nodes, 0, GROUP, not)
}

/// OffsetFetch v8 of the group's offsets of [`TOPIC`] on `node`, retried while the
/// coordinator loads: partition -> committed offset.
fn offset_fetch(cluster: &TestCluster, node: usize) -> BTreeMap<i32, i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request =
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(s(GROUP).into())
                .with_topics(None)]);
        let r = conn(cluster, node)
            .and_then(|mut c| c.request(8, &request))
            .expect("OffsetFetch");
        let group = &r.groups[0];
        if group.error_code == 0 {
            return group
                .topics
                .iter()
                .filter(|t| t.name.as_str() == TOPIC)
                .flat_map(|t| t.partitions.iter())
                .map(|p| (p.partition_index, p.committed_offset))
                .collect();
        }
        assert_eq!(
            group.error_code, COORDINATOR_LOAD_IN_PROGRESS,
            "OffsetFetch on the new coordinator"
        );
        assert!(Instant::now() < deadline, "the coordinator never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates [`TOPIC`] with three replicas through `nodes`.
fn create_topic(cluster: &TestCluster, nodes: &[usize]) {
    let topic = rdkafka::admin::NewTopic::new(
        TOPIC,
        PARTITIONS,
        rdkafka::admin::TopicReplication::Fixed(3),
    );
    cluster.create_topic_retrying(nodes, &topic);
}

fn consumer(cluster: &TestCluster, nodes: &[usize]) -> BaseConsumer {
    let mut config = cluster.client_config(nodes);
    for (k, v) in [
        ("group.id", GROUP),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("fetch.wait.max.ms", "100"),
        ("topic.metadata.refresh.interval.ms", "1000"),
    ] {
        config.set(k, v);
    }
    config.create().expect("consumer")
}

/// Polls `c` until `count` records are read (or the deadline): (partition, offset, value).
fn read(c: &BaseConsumer, count: usize, limit: Duration) -> Vec<(i32, i64, String)> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => println!("consumer: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn committed_offsets_survive_a_kill_9_of_the_group_coordinator() {
    within(TEST_LIMIT, || {
        // Two shards: the `__consumer_offsets` partitions' owners are not all the
        // coordinator shard (loads and writes cross shards).
        let options = ClusterOptions {
            shards: 2,
            settings: "broker_session_timeout_ms = 3000\n".into(),
            ..ClusterOptions::default()
        };
        let mut cluster = TestCluster::start(3, options);
        let all = [0, 1, 2];
        let old = coordinator(&cluster, &all, None);
        let others: Vec<usize> = all.iter().copied().filter(|&n| n != old as usize).collect();
        // Clients do not write the coordinators' topic (Kafka: INVALID_TOPIC_EXCEPTION).
        let mut raw = conn(&cluster, old as usize).expect("connect");
        let (code, _) = common::produce_values(&mut raw, "__consumer_offsets", [b"x".to_vec()]);
        assert_eq!(
            code, INVALID_TOPIC_EXCEPTION,
            "a client's produce to __consumer_offsets"
        );
        // The data itself is replicated too, so it is there after the kill.
        create_topic(&cluster, &others);
        let producer: ThreadedProducer<DefaultProducerContext> = cluster
            .client_config(&others)
            .set("acks", "all")
            .create()
            .expect("producer");
        for p in 0..PARTITIONS {
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

        // The first consumer reads half of each partition and commits where it stopped.
        let first = consumer(&cluster, &others);
        first.subscribe(&[TOPIC]).expect("subscribe");
        let got = read(
            &first,
            PARTITIONS as usize * PER_PARTITION,
            Duration::from_secs(60),
        );
        assert_eq!(
            got.len(),
            PARTITIONS as usize * PER_PARTITION,
            "the first consumer read everything"
        );
        let half = (PER_PARTITION / 2) as i64;
        let mut commit = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            commit
                .add_partition_offset(TOPIC, p, Offset::Offset(half))
                .unwrap();
        }
        first.commit(&commit, CommitMode::Sync).expect("commit");
        drop(first);

        cluster.kill9(old as usize);
        let new = coordinator(&cluster, &others, Some(old));
        let committed = offset_fetch(&cluster, new as usize);
        let expected: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, half)).collect();
        assert_eq!(
            committed, expected,
            "committed offsets on the new coordinator"
        );

        // A new member of the group resumes from the committed offsets.
        let second = consumer(&cluster, &others);
        second.subscribe(&[TOPIC]).expect("subscribe");
        let rest = PARTITIONS as usize * (PER_PARTITION - half as usize);
        let got = read(&second, rest, Duration::from_secs(60));
        assert_eq!(got.len(), rest, "read after the failover: {got:?}");
        for (p, offset, value) in &got {
            assert!(
                *offset >= half,
                "partition {p}: committed record {offset} ({value}) read again"
            );
        }
        let extra = read(&second, 1, Duration::from_secs(2));
        assert!(extra.is_empty(), "read more than was left: {extra:?}");
    });
}

/// One consumer stays up while its group's coordinator is killed (-9): it finds the new
/// coordinator, reads only what was produced after its last commit (nothing committed again),
/// and its next commit lands on the new coordinator (committed offsets only move forward).
#[test]
fn a_live_consumer_moves_to_the_new_coordinator_without_rereading() {
    within(TEST_LIMIT, || {
        let options = ClusterOptions {
            settings: "broker_session_timeout_ms = 3000\n".into(),
            ..ClusterOptions::default()
        };
        let mut cluster = TestCluster::start(3, options);
        let all = [0, 1, 2];
        let old = coordinator(&cluster, &all, None);
        let others: Vec<usize> = all.iter().copied().filter(|&n| n != old as usize).collect();
        create_topic(&cluster, &others);
        let produce = |cluster: &TestCluster, round: usize| {
            let producer: ThreadedProducer<DefaultProducerContext> = cluster
                .client_config(&others)
                .set("acks", "all")
                .set("message.timeout.ms", "60000")
                .create()
                .expect("producer");
            for p in 0..PARTITIONS {
                for i in 0..PER_PARTITION {
                    let value = format!("r{round}-p{p}-{i}");
                    producer
                        .send(
                            BaseRecord::<(), str>::to(TOPIC)
                                .partition(p)
                                .payload(&value),
                        )
                        .expect("send");
                }
            }
            producer.flush(Duration::from_secs(60)).expect("flush");
        };
        produce(&cluster, 0);
        let c = consumer(&cluster, &others);
        c.subscribe(&[TOPIC]).expect("subscribe");
        let total = PARTITIONS as usize * PER_PARTITION;
        let first = read(&c, total, Duration::from_secs(60));
        assert_eq!(first.len(), total, "round 0");
        c.commit_consumer_state(CommitMode::Sync)
            .expect("commit round 0");

        cluster.kill9(old as usize);
        let new = coordinator(&cluster, &others, Some(old));
        produce(&cluster, 1);
        // Until every new record is read: a rebalance on the new coordinator may deliver an
        // uncommitted one twice (at least once), but never a committed one.
        let mut second = Vec::new();
        let mut distinct = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while distinct.len() < total && Instant::now() < deadline {
            for record in read(&c, 1, Duration::from_millis(500)) {
                distinct.insert(record.2.clone());
                second.push(record);
            }
        }
        if !second.iter().all(|(_, _, v)| v.starts_with("r1-")) {
            cluster.fail(&format!("read a committed record again: {second:?}"));
        }
        assert_eq!(distinct.len(), total, "round 1: {second:?}");
        // The commit goes to the new coordinator (retried while the client moves over).
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = c.commit_consumer_state(CommitMode::Sync) {
            assert!(Instant::now() < deadline, "commit after the failover: {e}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let committed = offset_fetch(&cluster, new as usize);
        let expected: BTreeMap<i32, i64> = (0..PARTITIONS)
            .map(|p| (p, 2 * PER_PARTITION as i64))
            .collect();
        assert_eq!(
            committed, expected,
            "committed offsets on the new coordinator"
        );
    });
}
