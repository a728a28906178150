//! Connection-level abuse against the real binary (issue 12 items 5, 7, 11 and 14): slow
//! requests, idle connections, idle admin connections, SASL and TLS on the plaintext listener.
//!
//! Memory bounds stated and checked here (1 shard, debug build):
//! - a connection that announced a 1 MiB request and trickles it holds a read buffer of at most
//!   twice what it sent, at least 4 KiB: 300 of them add less than 32 MiB of RSS (measured
//!   ~4 MiB; before the fix ~270 MiB);
//! - an idle connection holds no read buffer: 2,000 of them add less than 16 MiB (8 KiB each,
//!   measured ~3 KiB; before the fix ~67 KiB each);
//! - connect-close cycles leave no memory behind: 10,000 of them add less than 16 MiB.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{within, RawConn, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;

/// Kafka's ILLEGAL_SASL_STATE error code.
const ILLEGAL_SASL_STATE: i16 = ResponseError::IllegalSaslState.code();
const MIB: u64 = 1024 * 1024;

/// Raises this process's open-file limit to its hard limit (the broker child inherits it).
fn raise_nofile_limit() -> u64 {
    let (_, hard) = common::nofile_limit();
    common::set_nofile_soft(hard);
    hard
}

/// A broker with 1 shard and the given TOML settings.
fn broker_with(settings: &str) -> (TestBroker, tempfile::TempDir) {
    let (dir, config) = common::config_file(settings);
    let broker = TestBroker::start_with(1, &["--config", config.to_str().unwrap()]);
    (broker, dir)
}

/// A new connection's ApiVersions round trip; panics if it does not answer within `limit`.
fn api_versions_within(broker: &TestBroker, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let mut conn = RawConn::connect_timeout(broker.socket_addr(), limit).unwrap();
    conn.set_read_timeout(limit);
    let answer = conn
        .request(0, &ApiVersionsRequest::default())
        .unwrap_or_else(|e| panic!("ApiVersions {what}: {e}\n{}", broker.log_tail()));
    assert_eq!(answer.error_code, 0);
    started.elapsed()
}

/// True if the broker has closed `stream` (EOF or reset), false if it is still open.
fn closed_by_broker(mut stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

// 300 clients each announce a 1 MiB request (300 MiB: more than the 256 MiB request budget)
// and send it one byte every 500 ms. Meanwhile new clients' ApiVersions answer within 2 s
// every time, the broker's RSS grows by less than 32 MiB, and every slow client is cut off
// once request_read_timeout_ms (3 s) has passed since its request began, although bytes kept
// coming.
#[test]
fn slow_large_requests_neither_lock_out_new_clients_nor_outlive_the_request_timeout() {
    within(Duration::from_secs(120), || {
        raise_nofile_limit();
        let (broker, _dir) = broker_with("request_read_timeout_ms = 3000\n");
        let baseline = broker.rss_bytes();
        let mut slow: Vec<TcpStream> = (0..300)
            .map(|_| {
                let mut s = TcpStream::connect(broker.socket_addr()).unwrap();
                s.write_all(&(1_048_576i32).to_be_bytes()).unwrap();
                s.write_all(&[0]).unwrap();
                s
            })
            .collect();
        let started = Instant::now();
        let mut next_trickle = started;
        let mut worst = Duration::ZERO;
        let mut peak = baseline;
        let mut probes = 0;
        while started.elapsed() < Duration::from_secs(9) {
            if Instant::now() >= next_trickle {
                next_trickle += Duration::from_millis(500);
                for s in &mut slow {
                    let _ = s.write(&[0]); // fails once the broker has closed it
                }
            }
            let took =
                api_versions_within(&broker, Duration::from_secs(2), "next to 300 slow requests");
            worst = worst.max(took);
            probes += 1;
            peak = peak.max(broker.rss_bytes());
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "{probes} ApiVersions next to 300 slow 1 MiB requests: worst {worst:?}; RSS {} -> peak {} MiB",
            baseline / MIB,
            peak / MIB
        );
        assert!(
            peak - baseline < 32 * MIB,
            "RSS grew by {} MiB with 300 slow requests (bound 32 MiB)",
            (peak - baseline) / MIB
        );
        let still_open = slow.iter().filter(|s| !closed_by_broker(s)).count();
        assert_eq!(
            still_open, 0,
            "{still_open} of 300 trickling requests still open 9 s after they began (request_read_timeout_ms = 3000)"
        );
        api_versions_within(&broker, Duration::from_secs(2), "after the slow clients");
    });
}

// Idle connections hold no read buffer: 2,000 of them (half never sent a byte, half sent one
// ApiVersions) add less than 16 MiB of RSS; closing them and 10,000 connect-close cycles
// afterwards leave less than 16 MiB behind.
#[test]
fn idle_connections_and_connect_close_cycles_hold_no_read_buffers() {
    within(Duration::from_secs(180), || {
        assert!(raise_nofile_limit() >= 4_500, "needs 4,500 open files");
        let (broker, _dir) = broker_with("");
        // Warm up the allocator with a few connections first, so the baseline is fair.
        for _ in 0..20 {
            api_versions_within(&broker, Duration::from_secs(10), "warm-up");
        }
        let baseline = broker.rss_bytes();
        const IDLE: usize = 2_000;
        let mut idle = Vec::with_capacity(IDLE);
        for i in 0..IDLE {
            let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
            if i % 2 == 1 {
                conn.request(0, &ApiVersionsRequest::default()).unwrap();
            }
            idle.push(conn);
        }
        // Every connection has been accepted (a request on the last one was answered).
        api_versions_within(&broker, Duration::from_secs(10), "next to idle connections");
        let with_idle = broker.rss_bytes();
        eprintln!(
            "{IDLE} idle connections: RSS {} -> {} MiB ({} bytes per connection)",
            baseline / MIB,
            with_idle / MIB,
            with_idle.saturating_sub(baseline) / IDLE as u64
        );
        assert!(
            with_idle.saturating_sub(baseline) < 16 * MIB,
            "{IDLE} idle connections took {} MiB (bound 16 MiB)",
            with_idle.saturating_sub(baseline) / MIB
        );
        drop(idle);
        let frame = RawConn::encode_request(0, 1, &ApiVersionsRequest::default());
        for i in 0..10_000 {
            let mut s = TcpStream::connect(broker.socket_addr()).unwrap();
            if i % 2 == 1 {
                s.write_all(&frame).unwrap();
                let mut size = [0u8; 4];
                s.read_exact(&mut size).unwrap();
                let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
                s.read_exact(&mut body).unwrap();
            }
        }
        api_versions_within(&broker, Duration::from_secs(10), "after the cycles");
        let after = broker.rss_bytes();
        eprintln!(
            "after closing them and 10,000 connect-close cycles: RSS {} MiB",
            after / MIB
        );
        assert!(
            after.saturating_sub(baseline) < 16 * MIB,
            "RSS grew by {} MiB over idle connections and 10,000 cycles (bound 16 MiB)",
            after.saturating_sub(baseline) / MIB
        );
    });
}

// With every admin slot (16) and more held by clients that connect and send nothing, /health
// and /ready still answer at once: a new connection closes the oldest idle one.
#[test]
fn admin_probes_answer_while_idle_clients_hold_every_admin_slot() {
    within(Duration::from_secs(60), || {
        let (broker, _dir) = broker_with("");
        let mut silent: Vec<TcpStream> = (0..32)
            .map(|_| TcpStream::connect(broker.admin_addr()).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        for round in 0..5 {
            let started = Instant::now();
            let health = broker.admin_get("/health");
            assert!(
                matches!(health, Ok((200, _))),
                "/health with 32 idle admin connections (round {round}): {health:?}"
            );
            let ready = broker.admin_get("/ready");
            assert!(
                matches!(ready, Ok((200, _))),
                "/ready with 32 idle admin connections (round {round}): {ready:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(1));
            // More idle clients arrive between probes.
            silent.push(TcpStream::connect(broker.admin_addr()).unwrap());
        }
        // Idle admin connections are closed quickly (2 s without a request head).
        std::thread::sleep(Duration::from_secs(3));
        let open = silent.iter().filter(|s| !closed_by_broker(s)).count();
        assert_eq!(
            open, 0,
            "{open} idle admin connections still open after 3 s"
        );
    });
}

// SaslHandshake and SaslAuthenticate on the plaintext listener get ILLEGAL_SASL_STATE (what
// Kafka's KafkaApis answers when no SASL authenticator sits in front of it), the handshake with
// no mechanisms; the connection stays usable, and ApiVersions advertises both APIs.
#[test]
fn sasl_requests_on_the_plaintext_listener_get_illegal_sasl_state() {
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let versions = conn.request(0, &ApiVersionsRequest::default()).unwrap();
        for key in [ApiKey::SaslHandshake, ApiKey::SaslAuthenticate] {
            assert!(
                versions.api_keys.iter().any(|k| k.api_key == key as i16),
                "{key:?} not advertised"
            );
        }
        for version in 0..=1 {
            let answer = conn
                .request(
                    version,
                    &SaslHandshakeRequest::default()
                        .with_mechanism(StrBytes::from_static_str("PLAIN")),
                )
                .unwrap_or_else(|e| panic!("SaslHandshake v{version}: {e}"));
            assert_eq!(answer.error_code, ILLEGAL_SASL_STATE);
            assert!(answer.mechanisms.is_empty(), "{:?}", answer.mechanisms);
        }
        for version in 0..=2 {
            let answer = conn
                .request(
                    version,
                    &SaslAuthenticateRequest::default()
                        .with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0secret")),
                )
                .unwrap_or_else(|e| panic!("SaslAuthenticate v{version}: {e}"));
            assert_eq!(answer.error_code, ILLEGAL_SASL_STATE);
        }
        let after = conn.request(0, &ApiVersionsRequest::default()).unwrap();
        assert_eq!(after.error_code, 0);
    });
}

// A TLS ClientHello on the plaintext listener is recognised from its first bytes: logged as a
// TLS handshake (not as a 369 MB request) and the connection closed.
#[test]
fn tls_client_hello_is_logged_as_such_and_closed() {
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start(1);
        let mut conn = TcpStream::connect(broker.socket_addr()).unwrap();
        // A TLS 1.2 record header (handshake, version 3.1, length 0x0105) and the start of a
        // ClientHello: read as a Kafka size, 369,295,621 bytes.
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x01, 0x05, 0x01, 0x00, 0x01, 0x01, 0x03, 0x03,
        ];
        hello.extend_from_slice(&[0x5a; 32]);
        conn.write_all(&hello).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(
            matches!(conn.read(&mut byte), Ok(0) | Err(_)),
            "connection not closed"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !broker
            .log()
            .contains("TLS handshake on a plaintext listener")
        {
            assert!(
                Instant::now() < deadline,
                "no TLS log line\n{}",
                broker.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!broker.log().contains("socket.request.max.bytes"));
        api_versions_within(&broker, Duration::from_secs(5), "after a TLS ClientHello");
    });
}

// Requests of every size from a few bytes to 300 KiB (small ones read together, large ones
// through growing buffers, frames split across reads at every kind of boundary), pipelined on
// one connection in odd-sized pieces, are all answered, in order.
#[test]
fn pipelined_requests_of_mixed_sizes_in_odd_pieces_are_all_answered_in_order() {
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let sizes = [
            0usize, 1, 100, 4_000, 5_000, 16_000, 17_000, 65_000, 70_000, 3, 300_000, 2, 33_000,
            129_000, 10, 250_000, 1, 0,
        ];
        let mut stream = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            // ApiVersions v3 carries a client software name of any length: a request of any
            // size that every broker answers.
            let name = "a".repeat(len.max(1));
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_string(name))
                .with_client_software_version(StrBytes::from_static_str("1"));
            stream.extend_from_slice(&RawConn::encode_request(3, i as i32 + 1, &request));
        }
        let writer_stream = conn.stream.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = writer_stream;
            for (n, piece) in stream.chunks(7_919).enumerate() {
                w.write_all(piece).unwrap();
                if n % 5 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        for (i, len) in sizes.iter().enumerate() {
            let answer = conn
                .receive::<ApiVersionsRequest>(3, i as i32 + 1)
                .unwrap_or_else(|e| panic!("answer {} (of a {len}-byte name): {e}", i + 1));
            assert_eq!(answer.error_code, 0, "answer {}", i + 1);
        }
        writer.join().unwrap();
    });
}

/// A new connection to `broker` that was served, retried for up to 10 s (a connection just
/// closed by the client, such as the start-up probe's, may still count on the broker's side).
fn hold(broker: &TestBroker) -> RawConn {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = RawConn::connect(broker.socket_addr()).expect("connect");
        c.set_read_timeout(Duration::from_secs(5));
        if c.request(3, &ApiVersionsRequest::default()).is_ok() {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a new connection to `broker` is served: ApiVersions answered (false: the broker
/// closed it).
fn served(broker: &TestBroker) -> bool {
    let Ok(mut conn) = RawConn::connect(broker.socket_addr()) else {
        return false;
    };
    conn.set_read_timeout(Duration::from_secs(5));
    conn.request(3, &ApiVersionsRequest::default()).is_ok()
}

// Kafka's max.connections.per.ip: an address holding its limit of connections has further
// ones closed as they are accepted (over both shards), others are unaffected, and a closed
// connection gives its place back; max.connections.per.ip.overrides sets one address's own.
#[test]
fn connections_per_ip_are_limited_across_shards_and_overrides_win() {
    within(Duration::from_secs(60), || {
        let (dir, config) = common::config_file("max_connections_per_ip = 3\n");
        let broker = TestBroker::start_with(2, &["--config", config.to_str().unwrap()]);
        let mut held: Vec<RawConn> = (0..3).map(|_| hold(&broker)).collect();
        for _ in 0..4 {
            assert!(
                !served(&broker),
                "a 4th connection from 127.0.0.1 is closed"
            );
        }
        for c in &mut held {
            c.request(3, &ApiVersionsRequest::default())
                .expect("the held connections keep working");
        }
        drop(held.pop());
        common::wait_until(
            Duration::from_secs(10),
            "a closed connection to give its place back",
            || served(&broker),
        );
        let (_, metrics) = broker.admin_get("/metrics").expect("GET /metrics");
        assert!(common::metric_sum(&metrics, "freshet_connections_refused_total") >= 4.0);
        drop(broker);
        drop(dir);

        let (_dir, config) = common::config_file(
            "max_connections_per_ip = 100\nmax_connections_per_ip_overrides = \"127.0.0.1:1\"\n",
        );
        let broker = TestBroker::start_with(1, &["--config", config.to_str().unwrap()]);
        let _first = hold(&broker);
        assert!(
            !served(&broker),
            "the override (1) wins over the default (100)"
        );
    });
}

// A malformed override is refused at start with a message naming the setting.
#[test]
fn a_malformed_per_ip_override_stops_the_start() {
    let (_dir, config) = common::config_file("max_connections_per_ip_overrides = \"localhost\"\n");
    let out = std::process::Command::new(common::broker_bin())
        .args(["start", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .expect("run freshet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_connections_per_ip_overrides"),
        "{stderr}"
    );
}
