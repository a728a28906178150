//! `request_percentage` enforced on the wire (KIP-124), with raw protocol: a client over its
//! request quota gets `throttle_time_ms` in its answers (also in a flexible answer, where the
//! broker writes it into the encoded bytes) and the broker mutes its connection for that long:
//! the answer to the request sent right behind arrives a throttle time later. Removing the
//! quota ends it: answers carry 0 and come at once. A Fetch over it is answered empty with the
//! throttle time (Kafka's throttled fetch), a Produce is taken and answered with it.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{broker_bin, within, RawConn, TestBroker};
use freshet_protocol::batch::{encode_batch, Compression};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, MetadataRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The client id `RawConn` sends.
const CLIENT_ID: &str = "freshet-tests";

fn quota(broker: &TestBroker, args: &[&str]) {
    let out = Command::new(broker_bin())
        .arg("quota")
        .args(args)
        .env("FRESHET_BROKERS", broker.addr())
        .output()
        .expect("run freshet quota");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends two Metadata requests back to back; returns the first answer's throttle time and
/// how long after the first answer the second arrived.
fn pair(conn: &mut RawConn, version: i16) -> (i32, Duration, i32) {
    let body = MetadataRequest::default().with_topics(None);
    let first = conn.send(version, &body).unwrap();
    let second = conn.send(version, &body).unwrap();
    let a = conn.receive::<MetadataRequest>(version, first).unwrap();
    let answered = Instant::now();
    let b = conn.receive::<MetadataRequest>(version, second).unwrap();
    (a.throttle_time_ms, answered.elapsed(), b.throttle_time_ms)
}

#[test]
fn request_percentage_throttles_and_mutes_the_connection() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        conn.set_read_timeout(Duration::from_secs(30));
        // No quota: nothing throttled.
        for _ in 0..20 {
            let (t1, _, t2) = pair(&mut conn, 12);
            assert_eq!((t1, t2), (0, 0));
        }
        // 0.001% of a second (10 µs/s): a few requests use it up.
        quota(
            &broker,
            &["set", "--client-id", CLIENT_ID, "request_percentage=0.001"],
        );
        let mut seen = Vec::new();
        for version in [12, 4] {
            // v12 is flexible (the throttle time behind the header's tagged fields), v4 not.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                assert!(Instant::now() < deadline, "never throttled at v{version}");
                let (throttle, gap, _) = pair(&mut conn, version);
                if throttle > 0 {
                    // Kafka caps a request quota's throttle at one window.
                    assert!(throttle <= 1000, "{throttle}");
                    // Muted: the second request was not read before the throttle time ended.
                    let muted = Duration::from_millis(throttle as u64 * 9 / 10);
                    assert!(
                        gap >= muted,
                        "answered {gap:?} after a {throttle} ms throttle"
                    );
                    seen.push(throttle);
                    break;
                }
            }
        }
        let metrics = broker.admin_get("/metrics").unwrap().1;
        let series = format!(
            "freshet_quota_throttle_time_ms_total{{quota=\"request\",user=\"\",client_id=\"{CLIENT_ID}\"}}"
        );
        assert!(
            common::metric_value(&metrics, &series).unwrap_or(0.0) > 0.0,
            "{series} in {metrics}"
        );
        // The quota removed: answers carry no throttle time again.
        quota(
            &broker,
            &["remove", "--client-id", CLIENT_ID, "request_percentage"],
        );
        // The last throttle may still mute one answer.
        std::thread::sleep(Duration::from_millis(1100));
        for _ in 0..20 {
            let (t1, gap, t2) = pair(&mut conn, 12);
            assert_eq!((t1, t2), (0, 0));
            assert!(gap < Duration::from_millis(900), "{gap:?} without a quota");
        }
        println!("throttle times seen: {seen:?}");
    });
}

fn fetch(conn: &mut RawConn, topic: &str) -> FetchResponse {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    conn.request(12, &request).expect("Fetch")
}

fn has_records(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
}

#[test]
fn request_percentage_throttles_fetch_empty_and_produce() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        conn.set_read_timeout(Duration::from_secs(30));
        assert_eq!(common::create_topic_raw(&mut conn, "rq", 1, &[]), 0);
        let record = || {
            encode_batch(
                &[(None, Some(Bytes::from_static(b"v")), 1_700_000_000_000)],
                Compression::None,
            )
            .expect("batch")
        };
        assert_eq!(
            common::produce_records(&mut conn, 9, "rq", 0, record()).error_code,
            0
        );
        let first = fetch(&mut conn, "rq");
        assert!(has_records(&first) && first.throttle_time_ms == 0);
        quota(
            &broker,
            &["set", "--client-id", CLIENT_ID, "request_percentage=0.001"],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "Fetch never throttled");
            let response = fetch(&mut conn, "rq");
            if response.throttle_time_ms > 0 {
                assert!(response.throttle_time_ms <= 1000);
                assert!(
                    response.responses.is_empty(),
                    "a throttled fetch is answered empty"
                );
                break;
            }
            assert!(has_records(&response));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "Produce never throttled");
            let request = common::produce_request("rq", 0, record());
            let response: ProduceResponse = conn.request(9, &request).expect("Produce");
            assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
            if response.throttle_time_ms > 0 {
                assert!(response.throttle_time_ms <= 1000);
                break;
            }
        }
        quota(
            &broker,
            &["remove", "--client-id", CLIENT_ID, "request_percentage"],
        );
        std::thread::sleep(Duration::from_millis(1100));
        let response = fetch(&mut conn, "rq");
        assert_eq!(response.throttle_time_ms, 0);
        assert!(has_records(&response));
    });
}
