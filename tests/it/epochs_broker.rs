//! Leader epochs through the real broker: produced batches carry the partition's leader epoch;
//! OffsetForLeaderEpoch (API 23) answers from the leader-epoch cache; Fetch, ListOffsets and
//! OffsetForLeaderEpoch refuse a stale `current_leader_epoch` with FENCED_LEADER_EPOCH and a
//! newer one with UNKNOWN_LEADER_EPOCH; a Fetch whose `last_fetched_epoch` ends below its offset
//! gets `diverging_epoch`; librdkafka's KIP-320 position validation finds a truncated log; on
//! a 3-node cluster a leader change moves the epoch stamped into new batches.
//!
//! A single broker at a leader epoch above 0 starts from a data directory holding metadata
//! (as `cluster_routing` does) in which its one partition is at leader epoch 3.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{RawConn, TestBroker};
use freshet::coordinator::metadata::{BrokerRegistration, ClusterMetadata, TopicMeta};
use freshet::coordinator::store;
use freshet_protocol::batch::{encode_batch, Compression};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "epochs";
/// The leader epoch of the partition in the test's metadata.
const EPOCH: i32 = 3;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A broker whose data directory holds metadata with topic `epochs` (one partition, led by
/// this node, node 0, at leader epoch [`EPOCH`]).
fn start_at_epoch() -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let mut m = ClusterMetadata {
        cluster_id: "epochs-test".into(),
        version: 3,
        ..Default::default()
    };
    m.brokers.insert(
        0,
        BrokerRegistration {
            node_id: 0,
            incarnation_id: uuid::Uuid::new_v4(),
            host: "127.0.0.1".into(),
            port: 1,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        },
    );
    // Through JSON, so fields later added with serde defaults need no change here.
    let assignment = serde_json::from_value(serde_json::json!({
        "replicas": [0], "leader": 0, "leader_epoch": EPOCH, "isr": [0]
    }))
    .expect("assignment");
    m.topics.insert(
        TOPIC.into(),
        TopicMeta {
            id: uuid::Uuid::new_v4(),
            partitions: 1,
            configs: BTreeMap::new(),
            internal: false,
            assignment: vec![assignment],
        },
    );
    store::save(&data_dir, &m).expect("write the metadata");
    (TestBroker::start_in(1, Some(data_dir), &[]), dir)
}

fn three_records() -> Bytes {
    let records: Vec<_> = (0..3)
        .map(|i| (None, Some(Bytes::from(format!("v{i}"))), 1_700_000_000_000))
        .collect();
    encode_batch(&records, Compression::None).expect("batch")
}

/// OffsetForLeaderEpoch `version` for (`topic`, partition 0): one entry per (current leader
/// epoch, asked epoch).
fn offset_for_leader_epoch(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    asks: &[(i32, i32)],
) -> Vec<EpochEndOffset> {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(if version >= 3 { -1 } else { -2 }))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(topic))
            .with_partitions(
                asks.iter()
                    .map(|&(current, epoch)| {
                        OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(current)
                            .with_leader_epoch(epoch)
                    })
                    .collect(),
            )]);
    let response = conn
        .request(version, &request)
        .expect("OffsetForLeaderEpoch");
    assert_eq!(response.topics.len(), 1);
    response.topics[0].partitions.clone()
}

fn answers(parts: &[EpochEndOffset]) -> Vec<(i16, i32, i64)> {
    parts
        .iter()
        .map(|p| (p.error_code, p.leader_epoch, p.end_offset))
        .collect()
}

/// Fetch v12 of partition 0 at `offset` with `current` leader epoch and `last_fetched` epoch.
fn fetch(conn: &mut RawConn, offset: i64, current: i32, last_fetched: i32) -> PartitionData {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(TOPIC))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(current)
                .with_last_fetched_epoch(last_fetched)
                .with_partition_max_bytes(1 << 20)])]);
    let response = conn.request(12, &request).expect("Fetch");
    response.responses[0].partitions[0].clone()
}

/// ListOffsets v9 of partition 0 for `timestamp` with `current` leader epoch.
fn list_offsets(conn: &mut RawConn, timestamp: i64, current: i32) -> ListOffsetsPartitionResponse {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(current)
                .with_timestamp(timestamp)])]);
    let response = conn.request(9, &request).expect("ListOffsets");
    response.topics[0].partitions[0].clone()
}

const FENCED: i16 = 74;
const UNKNOWN_EPOCH: i16 = 75;

/// On a partition at leader epoch 3: produced batches carry epoch 3; OffsetForLeaderEpoch
/// (v2-v4) answers Kafka's endOffsetFor; Fetch, ListOffsets and OffsetForLeaderEpoch check
/// current_leader_epoch (older: FENCED_LEADER_EPOCH, newer: UNKNOWN_LEADER_EPOCH, -1: none);
/// a fetcher whose last fetched epoch ends below its offset gets diverging_epoch.
#[test]
fn leader_epoch_checks_and_offset_for_leader_epoch_at_epoch_3() {
    assert_eq!(ResponseError::FencedLeaderEpoch.code(), FENCED);
    assert_eq!(ResponseError::UnknownLeaderEpoch.code(), UNKNOWN_EPOCH);
    let (broker, _dir) = start_at_epoch();
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
    // Leading at epoch 3 starts it at the log end, before any data (Kafka's makeLeader).
    let empty = offset_for_leader_epoch(&mut conn, 4, TOPIC, &[(-1, EPOCH), (-1, 1)]);
    assert_eq!(answers(&empty), vec![(0, EPOCH, 0), (0, 1, 0)]);
    for _ in 0..2 {
        let r = common::produce_records(&mut conn, 9, TOPIC, 0, three_records());
        assert_eq!(r.error_code, 0);
    }

    // The stored batches carry the partition's leader epoch (bytes 12..16).
    let data = fetch(&mut conn, 0, -1, -1);
    assert_eq!(data.error_code, 0);
    let records = data.records.expect("records");
    assert_eq!(records.len() % 2, 0);
    assert_eq!(
        &records[12..16],
        &EPOCH.to_be_bytes(),
        "first batch's epoch"
    );
    let second = records.len() / 2;
    assert_eq!(&records[second + 12..second + 16], &EPOCH.to_be_bytes());

    // OffsetForLeaderEpoch, every version Kafka 4.1 serves.
    for version in 2..=4 {
        let got = offset_for_leader_epoch(
            &mut conn,
            version,
            TOPIC,
            &[
                (-1, EPOCH),
                (-1, 2),
                (-1, 4),
                (-1, -1),
                (EPOCH, EPOCH),
                (2, EPOCH),
                (4, EPOCH),
            ],
        );
        assert_eq!(
            answers(&got),
            vec![
                (0, EPOCH, 6),
                (0, 2, 0),
                (0, -1, -1),
                (0, -1, -1),
                (0, EPOCH, 6),
                (FENCED, -1, -1),
                (UNKNOWN_EPOCH, -1, -1),
            ],
            "v{version}"
        );
    }
    let unknown = offset_for_leader_epoch(&mut conn, 4, "no-such-topic", &[(-1, 0)]);
    assert_eq!(answers(&unknown), vec![(3, -1, -1)]);

    // Fetch: the current leader epoch.
    assert_eq!(fetch(&mut conn, 0, EPOCH - 1, -1).error_code, FENCED);
    assert_eq!(fetch(&mut conn, 0, EPOCH + 1, -1).error_code, UNKNOWN_EPOCH);
    let ok = fetch(&mut conn, 0, EPOCH, -1);
    assert_eq!((ok.error_code, ok.high_watermark), (0, 6));
    assert!(!ok.records.unwrap_or_default().is_empty());
    // Fetch: the last fetched epoch. Epoch 3 ends at 6 here: a fetcher at 10 diverged.
    let diverged = fetch(&mut conn, 10, EPOCH, EPOCH);
    assert_eq!(diverged.error_code, 0);
    assert_eq!(
        (
            diverged.diverging_epoch.epoch,
            diverged.diverging_epoch.end_offset
        ),
        (EPOCH, 6)
    );
    assert!(diverged.records.unwrap_or_default().is_empty());
    // Epoch 2 (before any data here) ends at 0: a fetcher at 4 diverged, one at 0 did not.
    let diverged = fetch(&mut conn, 4, EPOCH, 2);
    assert_eq!(
        (
            diverged.diverging_epoch.epoch,
            diverged.diverging_epoch.end_offset
        ),
        (2, 0)
    );
    let fine = fetch(&mut conn, 0, EPOCH, 2);
    assert_eq!((fine.error_code, fine.diverging_epoch.epoch), (0, -1));
    assert!(!fine.records.unwrap_or_default().is_empty());
    // An epoch this log never had past its latest: its end is unknown.
    assert_eq!(
        fetch(&mut conn, 3, EPOCH, 7).error_code,
        1,
        "OFFSET_OUT_OF_RANGE"
    );

    // ListOffsets: the current leader epoch, and the epoch of the offset found.
    assert_eq!(list_offsets(&mut conn, -1, EPOCH - 1).error_code, FENCED);
    assert_eq!(
        list_offsets(&mut conn, -1, EPOCH + 1).error_code,
        UNKNOWN_EPOCH
    );
    let latest = list_offsets(&mut conn, -1, EPOCH);
    assert_eq!(
        (latest.error_code, latest.offset, latest.leader_epoch),
        (0, 6, EPOCH)
    );
    let earliest = list_offsets(&mut conn, -2, -1);
    assert_eq!(
        (earliest.error_code, earliest.offset, earliest.leader_epoch),
        (0, 0, EPOCH)
    );
}

/// librdkafka's KIP-320 position validation: a consumer assigned offset 50 at leader epoch 0
/// of a partition whose epoch 0 ends at 10 asks OffsetForLeaderEpoch, finds the log truncated
/// below its position and moves to 10 (auto.offset.reset is not applied: it would have gone
/// to 0). Without OffsetForLeaderEpoch it would fetch at 50, get OFFSET_OUT_OF_RANGE and
/// reset to the earliest offset.
#[test]
fn rdkafka_consumer_validates_its_position_with_offset_for_leader_epoch() {
    let broker = TestBroker::start(1);
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
    assert_eq!(common::create_topic_raw(&mut conn, TOPIC, 1, &[]), 0);
    let (code, base) = common::produce_values(&mut conn, TOPIC, (0..10).map(|i| vec![i]));
    assert_eq!((code, base), (0, 0));

    let consumer: BaseConsumer = common::assign_only_consumer(
        common::client_config_with(&broker, &[("auto.offset.reset", "earliest")]),
        "kip-320",
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(50))
        .expect("tpl");
    // SAFETY: `tpl` holds exactly one element, which `elems` points to, and outlives the call.
    unsafe {
        rdkafka::bindings::rd_kafka_topic_partition_set_leader_epoch((*tpl.ptr()).elems, 0);
    }
    consumer.assign(&tpl).expect("assign");
    // Validation happens before any fetch: nothing may arrive (a reset to earliest would
    // deliver offset 0 here).
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consumer error");
            panic!(
                "a record at offset {} before any was produced at 10",
                m.offset()
            );
        }
    }
    let (code, base) = common::produce_values(&mut conn, TOPIC, (10..15).map(|i| vec![i]));
    assert_eq!((code, base), (0, 10));
    let got = common::poll_values(&consumer, 5, Duration::from_secs(20));
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (10..15).collect::<Vec<i64>>(),
        "the consumer continues at the end of epoch 0"
    );
    assert!(
        broker.requests_handled("OffsetForLeaderEpoch") >= 1.0,
        "the consumer validated its position"
    );
}

/// (leader, leader epoch) of `topic` partition 0 as `node`'s Metadata shows it.
fn leader_seen_by(
    cluster: &common::cluster::TestCluster,
    node: usize,
    topic: &str,
) -> Result<(i32, i32), String> {
    let m = cluster
        .metadata(node)
        .map_err(|e| format!("node {node}: Metadata: {e}"))?;
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| format!("node {node}: no {topic}"))?;
    let p = t
        .partitions
        .first()
        .ok_or_else(|| format!("node {node}: {topic} has no partitions"))?;
    Ok((p.leader_id.0, p.leader_epoch))
}

/// Produces one batch of three records to `topic`/0 through `node`: its base offset, or the
/// error code.
fn produce_through(
    cluster: &common::cluster::TestCluster,
    node: usize,
    topic: &str,
) -> Result<i64, String> {
    let mut conn = RawConn::connect(cluster.socket_addr(node)).map_err(|e| e.to_string())?;
    let r = common::produce_records(&mut conn, 9, topic, 0, three_records());
    match r.error_code {
        0 => Ok(r.base_offset),
        code => Err(format!("node {node}: Produce error {code}")),
    }
}

/// On 3 real brokers: the leader of a partition stops (SIGTERM: fenced, the partition has no
/// leader, epoch + 1) and comes back (it leads again, epoch + 1). Batches produced before carry
/// the first epoch, those produced after the new one; OffsetForLeaderEpoch says where the first
/// epoch ends; a client still at the first epoch is fenced.
#[test]
fn cluster_leader_change_moves_the_epoch_stamped_into_batches() {
    use common::cluster::{ClusterOptions, TestCluster};
    const WITHIN: Duration = Duration::from_secs(20);
    common::within(Duration::from_secs(60), || {
        let mut cluster = TestCluster::start(
            3,
            ClusterOptions {
                settings: "broker_session_timeout_ms = 3000\nbroker_heartbeat_interval_ms = 500\n"
                    .into(),
                ..ClusterOptions::default()
            },
        );
        let topic = "epochs-cluster";
        cluster.wait_until(WITHIN, "CreateTopics", || {
            let mut conn = RawConn::connect(cluster.socket_addr(0)).map_err(|e| e.to_string())?;
            match common::create_topic_raw(&mut conn, topic, 1, &[]) {
                0 | 36 => Ok(()),
                code => Err(format!("CreateTopics error {code}")),
            }
        });
        let (leader, first_epoch) = cluster.wait_until(WITHIN, "a leader", || {
            let (leader, epoch) = leader_seen_by(&cluster, 0, topic)?;
            if leader < 0 {
                return Err(format!("leader {leader}"));
            }
            leader_seen_by(&cluster, leader as usize, topic).and_then(|l| {
                if l == (leader, epoch) {
                    Ok(l)
                } else {
                    Err(format!("{l:?}"))
                }
            })
        });
        let node = leader as usize;
        let before = cluster.wait_until(WITHIN, "produce before", || {
            produce_through(&cluster, node, topic)
        });
        assert_eq!(before, 0);

        let status = cluster.stop(node);
        assert!(status.success(), "node {node} after SIGTERM: {status}");
        cluster.restart(node);
        let new_epoch =
            cluster.wait_until(
                WITHIN,
                "the leader back at a new epoch",
                || match leader_seen_by(&cluster, node, topic)? {
                    (l, e) if l == leader && e > first_epoch => Ok(e),
                    other => Err(format!("node {node} sees {other:?}")),
                },
            );
        let after = cluster.wait_until(WITHIN, "produce after", || {
            produce_through(&cluster, node, topic)
        });
        assert_eq!(after, 3);

        let mut conn = RawConn::connect(cluster.socket_addr(node)).expect("connect");
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(new_epoch)
                    .with_partition_max_bytes(1 << 20)])]);
        let data = conn.request(12, &request).expect("Fetch").responses[0].partitions[0].clone();
        assert_eq!(data.error_code, 0);
        let records = data.records.expect("records");
        let second = records.len() / 2;
        assert_eq!(&records[12..16], &first_epoch.to_be_bytes(), "batch before");
        assert_eq!(
            &records[second + 12..second + 16],
            &new_epoch.to_be_bytes(),
            "batch after"
        );
        assert!(new_epoch > 0);

        let got = offset_for_leader_epoch(
            &mut conn,
            4,
            topic,
            &[
                (-1, first_epoch),
                (new_epoch, new_epoch),
                (first_epoch, new_epoch),
            ],
        );
        assert_eq!(
            answers(&got),
            vec![(0, first_epoch, 3), (0, new_epoch, 6), (FENCED, -1, -1)]
        );
    });
}
