//! `request_percentage` enforced on the wire (KIP-124), with raw protocol: a client over its
//! request quota gets `throttle_time_ms` in its answers (also in a flexible answer, where the
//! broker writes it into the encoded bytes) and the broker mutes its connection for that long:
//! the answer to the request sent right behind arrives a throttle time later. Removing the
//! quota ends it: answers carry 0 and come at once.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{broker_bin, within, RawConn, TestBroker};
use kafka_protocol::messages::MetadataRequest;

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
