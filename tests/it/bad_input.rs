//! Bad input over raw TCP (issue 3): garbage, absurd length prefixes, unknown API keys and
//! versions, truncated and stalled frames. Each time the broker must answer or close that one
//! connection, and keep serving every other connection, old and new.
//!
//! Every scenario runs with 1 shard and with 2 shards (connections are spread over shards by
//! SO_REUSEPORT, so several healthy connections are kept open to cover the bad connection's
//! own shard too).

use crate::common;

use std::io::{self, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{RawConn, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ListOffsetsRequest, MetadataRequest, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

/// How long the broker has to answer or close a connection that sent bad input.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(10);
/// Healthy connections kept open across the bad input (to cover every shard).
const HEALTHY_CONNECTIONS: usize = 4;
/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();

shard_scenarios! {
    garbage_bytes_close_only_that_connection => 60;
    length_prefix_of_2_gb_is_refused_without_allocating_it => 60;
    unknown_api_key_is_answered_or_closed => 60;
    known_api_key_with_unsupported_version_is_answered_or_closed => 60;
    api_versions_v99_gets_v0_shaped_unsupported_version_answer => 60;
    truncated_frames_close_only_that_connection => 60;
    stalled_partial_frames_do_not_block_other_connections => 60;
    abrupt_disconnects_leave_the_broker_serving => 60;
    pipelined_requests_are_answered_in_request_order => 60;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Verdict {
    /// The broker closed (or reset) the connection.
    Closed,
    /// The broker sent back a frame.
    Answered(Bytes),
}

/// Waits for the broker to answer or close `conn`; fails the test if it does neither in time.
fn verdict(conn: &mut RawConn) -> Verdict {
    conn.set_read_timeout(VERDICT_TIMEOUT);
    let start = Instant::now();
    match conn.read_frame() {
        Ok(None) => Verdict::Closed,
        Ok(Some(frame)) => Verdict::Answered(frame),
        Err(e) if is_closed(&e) => Verdict::Closed,
        Err(e) => panic!(
            "broker neither answered nor closed the connection within {:?}: {e}",
            start.elapsed()
        ),
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Writes `bytes`; a write that fails because the broker already closed is fine.
fn send_raw(conn: &mut RawConn, bytes: &[u8]) {
    match conn.stream.write_all(bytes) {
        Ok(()) => {}
        Err(e) if is_closed(&e) => {}
        Err(e) => panic!("write failed: {e}"),
    }
}

/// Correlation id of a response frame (the first 4 bytes of every response header).
fn correlation_id(frame: &Bytes) -> i32 {
    assert!(frame.len() >= 4, "response frame of {} bytes", frame.len());
    i32::from_be_bytes(frame[..4].try_into().unwrap())
}

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("freshet-tests"))
        .with_client_software_version(StrBytes::from_static_str("1.0"))
}

/// Checks that a connection can do ApiVersions and Metadata.
fn check_connection(conn: &mut RawConn, what: &str) {
    let versions = conn
        .request(3, &api_versions_request())
        .unwrap_or_else(|e| panic!("{what}: ApiVersions v3 failed: {e}"));
    assert_eq!(versions.error_code, 0, "{what}: ApiVersions error");
    let metadata = conn
        .request(9, &MetadataRequest::default().with_topics(None))
        .unwrap_or_else(|e| panic!("{what}: Metadata v9 failed: {e}"));
    assert!(
        !metadata.brokers.is_empty(),
        "{what}: no brokers in metadata"
    );
}

/// Connections opened before the bad input, checked again after it.
struct Healthy {
    conns: Vec<RawConn>,
}

impl Healthy {
    fn open(broker: &TestBroker) -> Healthy {
        let mut conns: Vec<RawConn> = (0..HEALTHY_CONNECTIONS)
            .map(|_| RawConn::connect(broker.socket_addr()).expect("connect"))
            .collect();
        for (i, c) in conns.iter_mut().enumerate() {
            check_connection(c, &format!("healthy connection {i} before"));
        }
        Healthy { conns }
    }

    /// The broker is alive, every old connection still works, and a new one does too.
    fn check(&mut self, broker: &mut TestBroker, after: &str) {
        assert!(
            broker.is_running(),
            "broker died after {after}\n{}",
            broker.log_tail()
        );
        for (i, c) in self.conns.iter_mut().enumerate() {
            check_connection(c, &format!("healthy connection {i} after {after}"));
        }
        let mut fresh = RawConn::connect(broker.socket_addr()).expect("connect after bad input");
        check_connection(&mut fresh, &format!("new connection after {after}"));
    }
}

/// A request header (v1: no tagged fields) for any key/version, followed by `body`.
fn frame_v1(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
    let client_id = b"freshet-tests";
    let mut payload = BytesMut::new();
    payload.put_i16(api_key);
    payload.put_i16(version);
    payload.put_i32(correlation_id);
    payload.put_i16(client_id.len() as i16);
    payload.put_slice(client_id);
    payload.put_slice(body);
    let mut frame = BytesMut::new();
    frame.put_i32(payload.len() as i32);
    frame.put(payload);
    frame.freeze()
}

/// Sends a bad frame; the broker must close, or answer with the right correlation id, in which
/// case the same connection must keep working (as Kafka's does when it answers).
fn expect_answer_or_close(
    broker: &mut TestBroker,
    healthy: &mut Healthy,
    what: &str,
    frame: &[u8],
    correlation: i32,
) {
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    send_raw(&mut conn, frame);
    match verdict(&mut conn) {
        Verdict::Closed => {}
        Verdict::Answered(f) => {
            assert_eq!(
                correlation_id(&f),
                correlation,
                "{what}: answer has the wrong correlation id"
            );
            check_connection(
                &mut conn,
                &format!("the connection that sent {what} and got an answer"),
            );
        }
    }
    healthy.check(broker, what);
}

fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

// Bytes that are not Kafka (HTTP, random noise, a TLS hello) get the connection closed.
fn garbage_bytes_close_only_that_connection(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let mut healthy = Healthy::open(&broker);
    let tls_client_hello = [
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ];
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("a TLS client hello", tls_client_hello.to_vec()),
        ("4 KiB of random bytes", pseudo_random_bytes(4096, 1)),
        // A plausible small length followed by noise: a frame whose header is garbage.
        ("a small frame of noise", {
            let mut v = 64i32.to_be_bytes().to_vec();
            v.extend(pseudo_random_bytes(64, 2));
            v
        }),
        ("a zero-length frame", 0i32.to_be_bytes().to_vec()),
    ];
    for (what, bytes) in garbage {
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        send_raw(&mut conn, &bytes);
        // Half-close so a broker waiting for the rest of a "frame" sees EOF.
        let _ = conn.stream.shutdown(Shutdown::Write);
        let v = verdict(&mut conn);
        if let Verdict::Answered(f) = &v {
            panic!(
                "{what}: broker answered garbage with a {} byte frame instead of closing",
                f.len()
            );
        }
        healthy.check(&mut broker, what);
    }
}

// Length prefixes of 2 GiB, negative, and above socket.request.max.bytes get the connection
// closed at once, with no attempt to allocate or read that much.
fn length_prefix_of_2_gb_is_refused_without_allocating_it(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let mut healthy = Healthy::open(&broker);
    let rss_before = broker.rss_bytes();
    for (what, len) in [
        ("a 2 GiB length prefix (i32::MIN)", 0x8000_0000u32),
        ("a 2 GiB - 1 length prefix", 0x7FFF_FFFF),
        ("a length prefix of -1", 0xFFFF_FFFF),
        (
            "a 256 MiB length prefix (above socket.request.max.bytes)",
            0x1000_0000,
        ),
    ] {
        // Several at once: a broker that allocated the claimed size would need gigabytes.
        let mut conns: Vec<RawConn> = (0..4)
            .map(|_| RawConn::connect(broker.socket_addr()).unwrap())
            .collect();
        for conn in &mut conns {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend(frame_v1(18, 0, 1, &[])[4..].iter());
            send_raw(conn, &bytes);
        }
        for conn in &mut conns {
            match verdict(conn) {
                Verdict::Closed => {}
                Verdict::Answered(f) => {
                    panic!("{what}: answered with {} bytes instead of closing", f.len())
                }
            }
        }
        healthy.check(&mut broker, what);
    }
    let rss_after = broker.rss_bytes();
    assert!(
        rss_after < rss_before + 256 * 1024 * 1024,
        "RSS grew from {} MiB to {} MiB after huge length prefixes",
        rss_before >> 20,
        rss_after >> 20
    );
}

// A request with an API key Kafka does not have gets an error answer or a closed connection.
fn unknown_api_key_is_answered_or_closed(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let mut healthy = Healthy::open(&broker);
    for key in [32000i16, 93, -1] {
        let frame = frame_v1(key, 0, 7, &[]);
        expect_answer_or_close(
            &mut broker,
            &mut healthy,
            &format!("unknown api key {key}"),
            &frame,
            7,
        );
    }
}

// A known API at a version nobody speaks (other than ApiVersions) gets an error answer or a
// closed connection.
fn known_api_key_with_unsupported_version_is_answered_or_closed(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let mut healthy = Healthy::open(&broker);
    for (key, version) in [
        (ApiKey::Metadata, 99i16),
        (ApiKey::Produce, 99),
        (ApiKey::Fetch, 200),
        (ApiKey::ListOffsets, -1),
    ] {
        let frame = frame_v1(key as i16, version, 9, &[0u8; 16]);
        expect_answer_or_close(
            &mut broker,
            &mut healthy,
            &format!("{key:?} v{version}"),
            &frame,
            9,
        );
    }
}

// ApiVersions at an unknown version gets Kafka's fallback answer: response header v0, a v0 body
// with UNSUPPORTED_VERSION and ApiVersions' own supported range; the connection stays open so the
// client can retry at a version from that range.
fn api_versions_v99_gets_v0_shaped_unsupported_version_answer(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let mut healthy = Healthy::open(&broker);
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    // As a newer client would send it: request header v2 (tagged fields) and a flexible body.
    let client_id = b"freshet-tests";
    let mut payload = BytesMut::new();
    payload.put_i16(ApiKey::ApiVersions as i16);
    payload.put_i16(99);
    payload.put_i32(4242);
    payload.put_i16(client_id.len() as i16);
    payload.put_slice(client_id);
    payload.put_u8(0); // header tagged fields
    payload.put_u8(14); // compact string "freshet-tests" (len + 1)
    payload.put_slice(b"freshet-tests");
    payload.put_u8(4); // compact string "1.0"
    payload.put_slice(b"1.0");
    payload.put_u8(0); // body tagged fields
    let mut frame = BytesMut::new();
    frame.put_i32(payload.len() as i32);
    frame.put(payload);
    send_raw(&mut conn, &frame);

    let mut answer = match verdict(&mut conn) {
        Verdict::Answered(f) => f,
        Verdict::Closed => panic!(
            "ApiVersions v99: connection closed instead of the v0 UNSUPPORTED_VERSION answer"
        ),
    };
    let header = ResponseHeader::decode(&mut answer, 0).expect("response header v0");
    assert_eq!(header.correlation_id, 4242);
    let body = ApiVersionsResponse::decode(&mut answer, 0).expect("ApiVersions v0 body");
    assert!(
        answer.is_empty(),
        "{} bytes after the v0 body: not v0-shaped",
        answer.len()
    );
    assert_eq!(body.error_code, UNSUPPORTED_VERSION);
    let api_versions = body
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .expect("the fallback answer lists ApiVersions");
    assert!(
        api_versions.min_version == 0 && api_versions.max_version >= 3,
        "ApiVersions range {api_versions:?}"
    );

    // The client retries on the same connection at the highest version both know. (Kafka lists
    // only ApiVersions itself in the fallback, since KIP-511; any other entry must agree with
    // the full answer.)
    let version = api_versions.max_version.min(4);
    let retry = conn
        .request(version, &api_versions_request())
        .expect("ApiVersions retry on the same connection");
    assert_eq!(retry.error_code, 0);
    for listed in &body.api_keys {
        let full = retry.api_keys.iter().find(|k| k.api_key == listed.api_key);
        assert_eq!(
            full.map(|k| (k.min_version, k.max_version)),
            Some((listed.min_version, listed.max_version)),
            "fallback and full answer disagree on api key {}",
            listed.api_key
        );
    }
    for key in [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
    ] {
        assert!(
            retry.api_keys.iter().any(|k| k.api_key == key as i16),
            "ApiVersions v{version} lacks {key:?}"
        );
    }
    healthy.check(&mut broker, "ApiVersions v99");
}

// Frames cut short (header, body, or the frame itself followed by EOF) get the connection closed
// or an error answer, never a hang or a crash.
fn truncated_frames_close_only_that_connection(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let mut healthy = Healthy::open(&broker);
    let metadata = RawConn::encode_request(
        12,
        5,
        &MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("some-topic"))))])),
    );

    // 1. The frame itself is cut: the length says more than is sent, then EOF.
    for cut in [1, 3, 4, 6, 10, metadata.len() - 1] {
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        send_raw(&mut conn, &metadata[..cut]);
        let _ = conn.stream.shutdown(Shutdown::Write);
        match verdict(&mut conn) {
            Verdict::Closed => {}
            Verdict::Answered(f) => panic!(
                "frame cut at {cut} bytes then EOF: answered with {} bytes",
                f.len()
            ),
        }
        healthy.check(
            &mut broker,
            &format!("a frame cut at {cut} of {} bytes", metadata.len()),
        );
    }

    // 2. Complete frames whose content is cut: a header cut short, a body cut short.
    let payload = &metadata[4..];
    for cut in [2, 5, 9, payload.len() - 3] {
        let mut frame = (cut as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload[..cut]);
        let what = format!(
            "a Metadata frame whose content is cut at {cut} of {} bytes",
            payload.len()
        );
        // Cut inside the correlation id: an answer cannot carry it, so only check for closing.
        if cut < 8 {
            let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
            send_raw(&mut conn, &frame);
            if let Verdict::Answered(f) = verdict(&mut conn) {
                panic!(
                    "{what}: answered with {} bytes although the header is incomplete",
                    f.len()
                );
            }
            healthy.check(&mut broker, &what);
        } else {
            expect_answer_or_close(&mut broker, &mut healthy, &what, &frame, 5);
        }
    }
}

// Connections that stop in the middle of a frame (slowloris) do not hold up anyone else.
fn stalled_partial_frames_do_not_block_other_connections(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let mut healthy = Healthy::open(&broker);
    let frame = RawConn::encode_request(3, 1, &api_versions_request());
    let mut stalled: Vec<RawConn> = (0..16)
        .map(|_| RawConn::connect(broker.socket_addr()).unwrap())
        .collect();
    for (i, conn) in stalled.iter_mut().enumerate() {
        // Half of them stop inside the length prefix, half inside the body.
        let cut = if i % 2 == 0 { 2 } else { frame.len() - 2 };
        send_raw(conn, &frame[..cut]);
    }
    let start = Instant::now();
    healthy.check(&mut broker, "16 connections stalled mid-frame");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "healthy requests took {:?} next to stalled ones",
        start.elapsed()
    );
    // Finishing a stalled frame later still gets it answered (the broker was just waiting).
    let mut late = stalled.pop().unwrap();
    send_raw(&mut late, &frame[frame.len() - 2..]);
    match verdict(&mut late) {
        Verdict::Answered(f) => assert_eq!(correlation_id(&f), 1),
        Verdict::Closed => panic!("a slow but valid request was dropped"),
    }
    drop(stalled);
    healthy.check(&mut broker, "the stalled connections were dropped");
}

// Clients that connect and vanish (clean close, reset, mid-request) leave the broker serving.
fn abrupt_disconnects_leave_the_broker_serving(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let mut healthy = Healthy::open(&broker);
    let metadata = RawConn::encode_request(9, 1, &MetadataRequest::default().with_topics(None));
    for i in 0..150 {
        let conn = RawConn::connect(broker.socket_addr()).unwrap();
        match i % 3 {
            0 => drop(conn),
            1 => {
                // Send a request and reset the connection before reading the answer.
                let mut conn = conn;
                send_raw(&mut conn, &metadata);
                socket_linger_zero(&conn);
                drop(conn);
            }
            _ => {
                // Pipeline several requests and close the write side without reading.
                let mut conn = conn;
                for _ in 0..5 {
                    send_raw(&mut conn, &metadata);
                }
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
        }
    }
    healthy.check(&mut broker, "150 abrupt disconnects");
}

/// Sets SO_LINGER to 0 so that closing the socket sends a RST.
fn socket_linger_zero(conn: &RawConn) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            conn.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

// Many requests written at once, mixing APIs and partitions owned by different shards, are
// answered one for one in the order they were sent.
fn pipelined_requests_are_answered_in_request_order(shards: usize) {
    let broker = TestBroker::start_with(shards, &["--default-partitions", "4"]);
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    // Create the topic through auto-creation on Metadata.
    let topic = || TopicName(StrBytes::from_static_str("pipelined"));
    let md = conn
        .request(
            9,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic()))
                ]))
                .with_allow_auto_topic_creation(true),
        )
        .expect("Metadata with auto-create");
    assert_eq!(md.topics.len(), 1);

    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..120i32 {
        let correlation = 1000 + i;
        let frame = match i % 3 {
            0 => RawConn::encode_request(3, correlation, &api_versions_request()),
            1 => RawConn::encode_request(
                9,
                correlation,
                &MetadataRequest::default().with_topics(None),
            ),
            _ => RawConn::encode_request(
                7,
                correlation,
                &ListOffsetsRequest::default()
                    .with_replica_id((-1).into())
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![ListOffsetsPartition::default()
                            .with_partition_index((i / 3) % 4)
                            .with_timestamp(-1)])]),
            ),
        };
        bytes.extend_from_slice(&frame);
        expected.push(correlation);
    }
    send_raw(&mut conn, &bytes);
    for (n, want) in expected.iter().enumerate() {
        let frame = conn
            .read_frame()
            .expect("read pipelined response")
            .expect("connection closed mid-pipeline");
        assert_eq!(correlation_id(&frame), *want, "response #{n} out of order");
    }
}
