//! Damaged and missing segments on start-up (issue 12, item 6), against the real binary.
//!
//! A partition of 2,000 records over about ten small segments is written and the broker
//! stopped; then a file is damaged by hand and the broker started again:
//! - the 2nd segment's `.log` cut to half its size (after a clean stop, and after a stop whose
//!   recovery checkpoint is gone, as after a crash), or the last one cut below the length the
//!   clean stop recorded: the partition goes offline with a logged reason, produce and fetch
//!   answer KAFKA_STORAGE_ERROR, and every segment file is left as it was (nothing deleted, no
//!   offset written twice);
//! - the 3rd segment's `.log` deleted: a consumer reads every remaining record across the gap
//!   without hanging, and new records get offsets after the old end;
//! - a byte flipped inside a batch of the 2nd segment (not rescanned on start: it is sealed and
//!   trusted): Fetch at that batch answers CORRUPT_MESSAGE (the read-side check), the batches
//!   around it are served, and the broker keeps serving.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{RawConn, TestBroker};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{DeleteTopicsRequest, FetchRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;

const TOPIC: &str = "damaged-segments";
const RECORDS: usize = 2000;
const RECORDS_PER_BATCH: usize = 20;
const VALUE_BYTES: usize = 100;
/// About 10 batches of ~2.3 KB per segment: ~10 segments.
const SEGMENT_BYTES: &str = "24000";
/// Kafka's KAFKA_STORAGE_ERROR.
const KAFKA_STORAGE_ERROR: i16 = ResponseError::KafkaStorageError.code();
/// Kafka's LEADER_NOT_AVAILABLE.
const LEADER_NOT_AVAILABLE: i16 = ResponseError::LeaderNotAvailable.code();
/// Kafka's CORRUPT_MESSAGE.
const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();

fn value(seq: usize) -> Vec<u8> {
    let mut v = format!("record-{seq:06}-").into_bytes();
    v.resize(VALUE_BYTES, b'.');
    v
}

fn create_topic(conn: &mut RawConn) {
    let code = common::create_topic_raw(conn, TOPIC, 1, &[("segment.bytes", SEGMENT_BYTES)]);
    assert_eq!(code, 0, "CreateTopics");
}

/// Produces records `first..first + RECORDS_PER_BATCH` as one batch (acks=all): (error code,
/// base offset).
fn produce(conn: &mut RawConn, first: usize) -> (i16, i64) {
    common::produce_values(conn, TOPIC, (first..first + RECORDS_PER_BATCH).map(value))
}

/// One Fetch of partition 0 at `offset`: the partition's error code.
fn fetch_error(conn: &mut RawConn, offset: i64) -> i16 {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(64 * 1024)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(32 * 1024)])]);
    let response = conn.request(12, &request).expect("Fetch answered");
    response.responses[0].partitions[0].error_code
}

/// Metadata of partition 0: (error code, leader id, offline replicas).
fn partition_metadata(conn: &mut RawConn) -> (i16, i32, Vec<i32>) {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))]));
    let response = conn.request(12, &request).expect("Metadata answered");
    let p = &response.topics[0].partitions[0];
    (
        p.error_code,
        p.leader_id.0,
        p.offline_replicas.iter().map(|b| b.0).collect(),
    )
}

/// Starts a broker, writes the 2,000 records, stops it cleanly; returns it (stopped) and the
/// partition directory.
fn write_partition() -> (TestBroker, PathBuf) {
    let mut broker = TestBroker::start(1);
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    create_topic(&mut conn);
    for first in (0..RECORDS).step_by(RECORDS_PER_BATCH) {
        let (code, base) = produce(&mut conn, first);
        assert_eq!((code, base), (0, first as i64), "produce");
    }
    drop(conn);
    let status = broker.stop();
    assert!(status.success(), "clean stop: {status}");
    let dir = broker.data_dir().join(format!("{TOPIC}-0"));
    (broker, dir)
}

/// The segment `.log` files of `dir`, by base offset.
fn segments(dir: &Path) -> Vec<(i64, PathBuf)> {
    let mut out: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_string();
            let base = name.strip_suffix(".log")?.parse().ok()?;
            Some((base, path))
        })
        .collect();
    out.sort();
    out
}

/// Every file of `dir` and its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

/// Cuts segment `which` (an index into the sorted segments, negative from the end) to half,
/// starts the broker (after `prepare`), and checks that the partition is offline, nothing is
/// deleted or overwritten, and the log says why.
fn damaged_segment_goes_offline(which: isize, prepare: impl FnOnce(&Path)) {
    let (mut broker, dir) = write_partition();
    let segs = segments(&dir);
    assert!(segs.len() >= 8, "only {} segments", segs.len());
    let which = if which < 0 {
        segs.len() as isize + which
    } else {
        which
    } as usize;
    let (damaged_base, damaged) = segs[which].clone();
    // Half its size, plus a little so that the cut falls inside a batch (its batches are all
    // the same size: half would be a batch boundary, which looks like a removed segment).
    let len = std::fs::metadata(&damaged).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap()
        .set_len(len / 2 + 100)
        .unwrap();
    prepare(&dir);
    let later: BTreeMap<String, Vec<u8>> = snapshot(&dir)
        .into_iter()
        .filter(|(name, _)| name.ends_with(".log"))
        .collect();

    broker.start_again();
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    // Nothing is written at offsets that hold data: the partition refuses writes and reads.
    let (code, base) = produce(&mut conn, RECORDS);
    assert_eq!(
        code,
        KAFKA_STORAGE_ERROR,
        "produce into the damaged partition got base offset {base}\n{}",
        broker.log_tail()
    );
    assert_eq!(fetch_error(&mut conn, 1500), KAFKA_STORAGE_ERROR);
    assert_eq!(fetch_error(&mut conn, 0), KAFKA_STORAGE_ERROR);
    // Metadata shows it leaderless, this node as its offline replica.
    let (error, leader, offline) = partition_metadata(&mut conn);
    assert_eq!((error, leader), (LEADER_NOT_AVAILABLE, -1), "Metadata");
    assert_eq!(offline.len(), 1, "offline replicas");
    let log = broker.log();
    let name = format!("{damaged_base:020}.log");
    assert!(
        log.contains("offline") && log.contains(&name),
        "the log does not say which segment took the partition offline\n{}",
        broker.log_tail()
    );
    drop(conn);
    let status = broker.stop();
    assert!(status.success(), "clean stop: {status}");
    // Every segment file is still there, byte for byte (the damaged one as it was left).
    let after: BTreeMap<String, Vec<u8>> = snapshot(&dir)
        .into_iter()
        .filter(|(name, _)| name.ends_with(".log"))
        .collect();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        later.keys().collect::<Vec<_>>(),
        "segment files were deleted or added"
    );
    for (name, data) in &later {
        assert!(after[name] == *data, "{name} changed");
    }
}

#[test]
fn cut_sealed_segment_after_clean_stop_takes_the_partition_offline_and_deletes_nothing() {
    common::within(Duration::from_secs(120), || {
        damaged_segment_goes_offline(1, |_| {});
    });
}

#[test]
fn cut_sealed_segment_without_recovery_checkpoint_takes_the_partition_offline() {
    common::within(Duration::from_secs(120), || {
        // No checkpoint: recovery scans every segment, as after a crash with a lost checkpoint.
        damaged_segment_goes_offline(1, |dir| {
            std::fs::remove_file(dir.join("recovery-checkpoint")).unwrap();
        });
    });
}

#[test]
fn last_segment_shorter_than_its_clean_stop_length_takes_the_partition_offline() {
    common::within(Duration::from_secs(120), || {
        // The clean stop recorded where the active segment ends: bytes missing below that are
        // acknowledged records, not a torn write, and their offsets must not be given out again.
        damaged_segment_goes_offline(-1, |_| {});
    });
}

#[test]
fn consumer_reads_across_a_deleted_middle_segment() {
    common::within(Duration::from_secs(120), || {
        let (mut broker, dir) = write_partition();
        let segs = segments(&dir);
        assert!(segs.len() >= 8, "only {} segments", segs.len());
        let (gap_start, removed) = segs[2].clone();
        let gap_end = segs[3].0;
        std::fs::remove_file(&removed).unwrap();
        broker.start_again();

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.addr())
            .set("broker.address.family", "v4")
            .set("group.id", "gap-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        common::assign_from_beginning(&consumer, TOPIC, 0);
        let expected = RECORDS - (gap_end - gap_start) as usize;
        let got = common::poll_values(&consumer, expected, Duration::from_secs(30));
        assert_eq!(
            got.len(),
            expected,
            "consumer stopped at offset {:?} (gap [{gap_start}, {gap_end}))\n{}",
            got.keys().next_back(),
            broker.log_tail()
        );
        for (offset, v) in &got {
            assert!(!(gap_start..gap_end).contains(offset));
            assert!(
                *v == value(*offset as usize),
                "offset {offset} holds other bytes"
            );
        }
        // New records go after the old end.
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let (code, base) = produce(&mut conn, RECORDS);
        assert_eq!((code, base), (0, RECORDS as i64), "produce after the gap");
    });
}

#[test]
fn deleting_an_offline_topic_removes_its_files_and_the_name_can_be_reused() {
    common::within(Duration::from_secs(120), || {
        let (mut broker, dir) = write_partition();
        let segs = segments(&dir);
        let (_, damaged) = segs[1].clone();
        let len = std::fs::metadata(&damaged).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&damaged)
            .unwrap()
            .set_len(len / 2 + 100)
            .unwrap();
        broker.start_again();
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        assert_eq!(produce(&mut conn, 0).0, KAFKA_STORAGE_ERROR);
        // The operator's decision: delete the topic. Its damaged files go with it.
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topic_names(vec![TopicName(StrBytes::from_static_str(TOPIC))]);
        let response = conn.request(4, &request).expect("DeleteTopics");
        assert_eq!(response.responses[0].error_code, 0, "DeleteTopics");
        let deadline = Instant::now() + Duration::from_secs(10);
        while dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !dir.exists(),
            "the offline partition's directory is still there"
        );
        // A new topic of that name starts empty and works.
        create_topic(&mut conn);
        assert_eq!(produce(&mut conn, 0), (0, 0), "produce into the new topic");
        assert_eq!(
            partition_metadata(&mut conn).0,
            0,
            "Metadata of the new topic"
        );
    });
}

#[test]
fn deleted_last_segment_takes_the_partition_offline_instead_of_reusing_offsets() {
    common::within(Duration::from_secs(120), || {
        let (mut broker, dir) = write_partition();
        let segs = segments(&dir);
        let (last_base, last) = segs[segs.len() - 1].clone();
        std::fs::remove_file(&last).unwrap();
        broker.start_again();
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let (code, base) = produce(&mut conn, RECORDS);
        assert_eq!(
            code, KAFKA_STORAGE_ERROR,
            "produce got base offset {base}: offsets {last_base}.. would be given out twice"
        );
        assert!(broker.log().contains("offline"), "{}", broker.log_tail());
    });
}

/// The checks above must not fire after an ordinary crash: kill -9 with produces in flight
/// while small segments roll, ten times over; each restart finds the partition online, with
/// every acknowledged record, and new offsets after them.
#[test]
fn kill_9_while_segments_roll_never_takes_the_partition_offline() {
    common::within(Duration::from_secs(180), || {
        let mut broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic(&mut conn);
        let mut next = 0usize;
        for cycle in 0..10 {
            for _ in 0..15 {
                let (code, base) = produce(&mut conn, next);
                assert_eq!(
                    code,
                    0,
                    "cycle {cycle}: produce refused\n{}",
                    broker.log_tail()
                );
                assert!(
                    base >= next as i64,
                    "cycle {cycle}: offset {base} given out again"
                );
                next = base as usize + RECORDS_PER_BATCH;
            }
            // Produces in flight when the broker dies.
            for i in 0..5 {
                let records: Vec<NewRecord> = (0..RECORDS_PER_BATCH)
                    .map(|j| (None, Some(Bytes::from(value(next + i * 100 + j))), 0))
                    .collect();
                let batch = encode_batch(&records, Compression::None).unwrap();
                let _ = conn.send(9, &common::produce_request(TOPIC, 0, batch));
            }
            broker.kill9();
            broker.start_again();
            conn = RawConn::connect(broker.socket_addr()).unwrap();
            assert!(
                !broker.log().contains("partition offline"),
                "cycle {cycle}\n{}",
                broker.log_tail()
            );
        }
        let (code, base) = produce(&mut conn, next);
        assert_eq!(code, 0);
        assert!(base >= next as i64);
        drop(conn);
        let segs = segments(&broker.data_dir().join(format!("{TOPIC}-0")));
        eprintln!("{} segments after 10 kill -9 cycles", segs.len());
    });
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_fetched_as_corrupt_message_not_served() {
    common::within(Duration::from_secs(120), || {
        let (mut broker, dir) = write_partition();
        let segs = segments(&dir);
        assert!(segs.len() >= 3, "only {} segments", segs.len());
        let (base, path) = segs[1].clone();
        let mut data = std::fs::read(&path).unwrap();
        // A byte of the records of the segment's first batch (CRC-covered; the header is 61
        // bytes).
        data[61 + 30] ^= 0x40;
        std::fs::write(&path, data).unwrap();
        broker.start_again();

        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        assert_eq!(
            fetch_error(&mut conn, base),
            CORRUPT_MESSAGE,
            "fetch of the damaged batch at {base}\n{}",
            broker.log_tail()
        );
        let next = base + RECORDS_PER_BATCH as i64;
        assert_eq!(fetch_error(&mut conn, next), 0, "fetch after the damage");
        assert_eq!(fetch_error(&mut conn, 0), 0, "fetch before the damage");
        let (code, first) = produce(&mut conn, RECORDS);
        assert_eq!(
            (code, first),
            (0, RECORDS as i64),
            "produce after the damage"
        );
        assert!(
            broker.log_tail().contains("corrupt batch read from disk"),
            "{}",
            broker.log_tail()
        );
    });
}
