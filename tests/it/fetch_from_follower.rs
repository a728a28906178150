//! Fetch from follower (KIP-392, issue 14) against 3 real `freshet` processes in racks
//! RACK0..RACK2 with Kafka's `RackAwareReplicaSelector`: a real rdkafka consumer whose
//! `client.rack` is a follower's rack reads every record, and that follower served them (its
//! `freshet_partition_bytes_out_total`, which counts consumer reads only on a follower; the
//! leader's also counts its followers' replication fetches). And the leader's answer itself,
//! raw: `preferred_read_replica` names the in-rack follower, and a consumer's fetch sent to a
//! follower directly is served up to that follower's high watermark.

use crate::common;

use std::time::Duration;

use common::cluster::{ClusterOptions, TestCluster};
use common::{within, RawConn};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TEST_LIMIT: Duration = Duration::from_secs(90);
const WITHIN: Duration = Duration::from_secs(20);
const RECORDS: usize = 500;
const VALUE_BYTES: usize = 100;

fn options() -> ClusterOptions {
    ClusterOptions {
        racks: (0..3).map(|i| format!("RACK{i}")).collect(),
        settings: "replica_selector_class = \
                   \"org.apache.kafka.common.replica.RackAwareReplicaSelector\"\n\
                   broker_heartbeat_interval_ms = 300\nreplica_fetch_backoff_ms = 500\n"
            .into(),
        ..ClusterOptions::default()
    }
}

/// Creates `name` (1 partition, replication factor 3) and waits until node 0's Metadata shows
/// its leader with all three replicas in the ISR: (leader, replicas).
fn create_topic(cluster: &TestCluster, name: &str) -> (i32, Vec<i32>) {
    cluster.wait_until(WITHIN, &format!("{name} created"), || {
        let mut conn = RawConn::connect(cluster.socket_addr(0)).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Duration::from_secs(20));
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(1)
                .with_replication_factor(3)]);
        match conn.request(7, &request).map_err(|e| e.to_string())?.topics[0].error_code {
            0 | 36 => Ok(()),
            code => Err(format!("CreateTopics: error {code}")),
        }
    });
    cluster.wait_until(WITHIN, "a leader and a full ISR", || {
        let m = cluster.metadata(0).map_err(|e| e.to_string())?;
        let t = m
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .ok_or("no topic")?;
        let p = t.partitions.first().ok_or("no partition")?;
        if p.error_code != 0 || p.leader_id.0 < 0 || p.isr_nodes.len() != 3 {
            return Err(format!(
                "error {} leader {} isr {:?}",
                p.error_code, p.leader_id.0, p.isr_nodes
            ));
        }
        Ok((p.leader_id.0, p.replica_nodes.iter().map(|b| b.0).collect()))
    })
}

/// `freshet_partition_bytes_out_total` of `topic`/0 on `node` (0 when not listed).
fn bytes_out(cluster: &TestCluster, node: usize, topic: &str) -> u64 {
    let (_, text) = common::http_get(&cluster.admin_addr(node), "/metrics").expect("/metrics");
    let prefix = format!("freshet_partition_bytes_out_total{{topic=\"{topic}\",partition=\"0\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a counter"))
}

/// Fetch v12 of `topic`/0 at `offset` by a consumer in `rack`, sent to `node`.
fn fetch(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
    offset: i64,
    rack: &str,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    let mut conn = RawConn::connect(cluster.socket_addr(node)).expect("connect");
    conn.set_read_timeout(Duration::from_secs(10));
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_rack_id(StrBytes::from_string(rack.to_string()))
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let answer = conn.request(12, &request).expect("Fetch");
    answer.responses[0].partitions[0].clone()
}

fn produce(cluster: &TestCluster, topic: &str) {
    let producer: ThreadedProducer<DefaultProducerContext> = cluster
        .client_config(&[0, 1, 2])
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in 0..RECORDS {
        let value = format!("{i:0width$}", width = VALUE_BYTES);
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .payload(value.as_str())
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
}

#[test]
fn a_consumer_reads_from_the_follower_in_its_rack() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, options());
        let topic = "fff-rdkafka";
        let (leader, replicas) = create_topic(&cluster, topic);
        let follower = *replicas.iter().find(|&&r| r != leader).expect("a follower");
        produce(&cluster, topic);
        let consumer: BaseConsumer = cluster
            .client_config(&[0, 1, 2])
            .set("group.id", "fff")
            .set("enable.auto.commit", "false")
            .set("client.rack", format!("RACK{follower}"))
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let mut next = 0usize;
        let deadline = std::time::Instant::now() + WITHIN;
        while next < RECORDS {
            assert!(
                std::time::Instant::now() < deadline,
                "read {next} of {RECORDS}"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let want = format!("{next:0width$}", width = VALUE_BYTES);
                    assert_eq!(m.payload(), Some(want.as_bytes()), "offset {}", m.offset());
                    assert_eq!(m.offset(), next as i64);
                    next += 1;
                }
                Some(Err(e)) => panic!("consume error: {e}"),
                None => {}
            }
        }
        let served = bytes_out(&cluster, follower as usize, topic);
        assert!(
            served >= (RECORDS * VALUE_BYTES) as u64,
            "the follower {follower} (RACK{follower}) sent {served} record bytes; \
             the leader is {leader}"
        );
        let third = *replicas
            .iter()
            .find(|&&r| r != leader && r != follower)
            .expect("a third replica");
        assert_eq!(bytes_out(&cluster, third as usize, topic), 0);
    });
}

#[test]
fn the_leader_names_the_preferred_read_replica_and_a_follower_serves_up_to_its_high_watermark() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, options());
        let topic = "fff-raw";
        let (leader, replicas) = create_topic(&cluster, topic);
        let follower = *replicas.iter().find(|&&r| r != leader).expect("a follower");
        produce(&cluster, topic);
        // The leader, asked by a consumer in the follower's rack: no records, the follower.
        let p = fetch(
            &cluster,
            leader as usize,
            topic,
            0,
            &format!("RACK{follower}"),
        );
        assert_eq!(p.error_code, 0);
        assert_eq!(p.preferred_read_replica.0, follower);
        assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
        // In the leader's own rack, or with no rack: the leader reads.
        let own = fetch(
            &cluster,
            leader as usize,
            topic,
            0,
            &format!("RACK{leader}"),
        );
        assert_eq!(own.preferred_read_replica.0, -1);
        assert!(own.records.as_ref().is_some_and(|r| !r.is_empty()));
        // The follower serves a consumer once its high watermark has the records.
        let p = cluster.wait_until(WITHIN, "the follower's high watermark", || {
            let p = fetch(&cluster, follower as usize, topic, 0, "");
            if p.error_code == 0 && p.high_watermark == RECORDS as i64 {
                Ok(p)
            } else {
                Err(format!("error {} hw {}", p.error_code, p.high_watermark))
            }
        });
        assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()));
        // Past its log: OFFSET_OUT_OF_RANGE (the consumer goes back to the leader).
        let past = fetch(&cluster, follower as usize, topic, RECORDS as i64 + 10, "");
        assert_eq!(past.error_code, 1);
    });
}
