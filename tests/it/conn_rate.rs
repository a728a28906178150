//! Connection-creation rate limits (KIP-612) against the real binary, with real TCP
//! connections from 127.0.0.1 and a real rdkafka client:
//! - the client-quota entity `ip` (`connection_creation_rate`, a named IP and `<default>`) set
//!   with AlterClientQuotas and read back with DescribeClientQuotas: a burst of connections from
//!   127.0.0.1 over its rate has the excess closed (after Kafka's throttle time) while the
//!   connections opened before keep working and 127.0.0.2 (under the default) is served; an
//!   rdkafka producer and consumer from 127.0.0.1 are served once the burst has aged out;
//! - `max_connection_creation_rate` (broker-wide) and
//!   `listener_name.<l>.max_connection_creation_rate`: nothing is refused, the acceptor waits.

use crate::common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{within, RawConn, TestBroker};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, ApiVersionsRequest, DescribeClientQuotasRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const RATE_KEY: &str = "connection_creation_rate";

/// AlterClientQuotas v1 of one `ip` entity (`None`: `<default>`): `connection_creation_rate`
/// set to `rate`; (error code, message).
fn set_ip_rate(conn: &mut RawConn, ip: Option<&str>, rate: f64) -> (i16, String) {
    let request = AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
        .with_entity(vec![EntityData::default()
            .with_entity_type(StrBytes::from_static_str("ip"))
            .with_entity_name(ip.map(|i| StrBytes::from_string(i.to_string())))])
        .with_ops(vec![OpData::default()
            .with_key(StrBytes::from_static_str(RATE_KEY))
            .with_value(rate)])]);
    let answer = conn.request(1, &request).expect("AlterClientQuotas");
    let entry = &answer.entries[0];
    (
        entry.error_code,
        entry.error_message.as_deref().unwrap_or("").to_string(),
    )
}

/// Connects from `source` (an address of 127.0.0.0/8) to `to`.
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).expect("bind the source address");
    socket
        .connect_timeout(&to.into(), Duration::from_secs(10))
        .expect("connect");
    socket.into()
}

/// Sends ApiVersions on `stream` (connection already open); true if it is answered, false if
/// the broker closes the connection without an answer.
fn answered(stream: TcpStream) -> bool {
    use std::io::Write;
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let frame = RawConn::encode_request(0, 1, &ApiVersionsRequest::default());
    if stream.write_all(&frame).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => true,
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("neither answered nor closed within 20 s")
        }
        Err(_) => false,
    }
}

fn metrics(broker: &TestBroker) -> String {
    broker.admin_get("/metrics").expect("GET /metrics").1
}

// KIP-612 per-IP quotas: 127.0.0.1 limited to 2 connections a second (named), every other
// address to 1000 (`<default>`). A burst of 60 connections from 127.0.0.1 gets about 10 s worth
// of its rate (Kafka's Rate spans at least 10 windows: 20) served and the rest closed without
// an answer; the connection opened before the burst keeps working, 127.0.0.2 is served at once,
// and an rdkafka producer and consumer from 127.0.0.1 get through once the burst has aged out.
#[test]
fn an_ip_over_its_connection_creation_rate_is_closed_and_others_are_served() {
    within(Duration::from_secs(240), || {
        let broker = TestBroker::start(2);
        let addr = broker.socket_addr();
        let mut admin = RawConn::connect(addr).unwrap();
        assert_eq!(set_ip_rate(&mut admin, None, 1000.0), (0, String::new()));
        // Kafka's checks: an IP alone, an address, the IP key only, an INT.
        let (code, message) = set_ip_rate(&mut admin, Some("not-an-address"), 2.0);
        assert_eq!(code, 42, "{message}");
        let (code, message) = set_ip_rate(&mut admin, Some("127.0.0.1"), 2.5);
        assert_eq!(code, 42, "{message}");
        assert_eq!(
            set_ip_rate(&mut admin, Some("127.0.0.1"), 2.0),
            (0, String::new())
        );
        // DescribeClientQuotas: the named IP, in an ip filter.
        let described = admin
            .request(
                1,
                &DescribeClientQuotasRequest::default().with_components(vec![
                    ComponentData::default()
                        .with_entity_type(StrBytes::from_static_str("ip"))
                        .with_match_type(0)
                        .with_match(Some(StrBytes::from_static_str("127.0.0.1"))),
                ]),
            )
            .expect("DescribeClientQuotas");
        assert_eq!(described.error_code, 0);
        let entries = described.entries.expect("entries");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].entity[0].entity_type.as_str(), "ip");
        assert_eq!(entries[0].values[0].key.as_str(), RATE_KEY);
        assert_eq!(entries[0].values[0].value, 2.0);

        // The burst: 60 connections opened at once, then each asks ApiVersions.
        let started = Instant::now();
        let burst: Vec<TcpStream> = (0..60).map(|_| connect_from("127.0.0.1", addr)).collect();
        let served = burst.into_iter().map(answered).filter(|a| *a).count();
        eprintln!("burst: {served} of 60 served in {:?}", started.elapsed());
        assert!(
            (15..=21).contains(&served),
            "about 10 s x 2/s of the burst is served, the rest closed: {served} of 60\n{}",
            broker.log_tail()
        );
        admin
            .request(3, &ApiVersionsRequest::default())
            .expect("the connection opened before the burst keeps working");
        assert!(
            answered(connect_from("127.0.0.2", addr)),
            "another address (its default quota 1000/s) is served at once"
        );
        let text = metrics(&broker);
        let throttled = common::metric_sum(&text, "freshet_connection_ip_throttled_total");
        assert!(throttled >= 39.0, "{throttled}\n{text}");
        assert!(common::metric_sum(&text, "freshet_connection_ip_throttle_ms_total") > 0.0);
        assert!(common::metric_sum(&text, "freshet_connection_rate_tracked_ips") >= 2.0);

        // A real client from 127.0.0.1 is served once the burst has aged out (librdkafka
        // retries its closed connections with back-off).
        let topic = "conn-rate-ip";
        let config = common::client_config_with(
            &broker,
            &[
                ("reconnect.backoff.max.ms", "1000"),
                ("message.timeout.ms", "60000"),
            ],
        );
        let producer: BaseProducer = config.create().expect("producer");
        for i in 0..10 {
            producer
                .send(BaseRecord::<(), str>::to(topic).payload(&format!("m{i}")))
                .expect("enqueue");
        }
        producer
            .flush(Duration::from_secs(90))
            .unwrap_or_else(|e| panic!("flush: {e}\n{}", broker.log_tail()));
        let consumer: BaseConsumer = common::assign_only_consumer(config, "conn-rate-readers");
        common::assign_from_beginning(&consumer, topic, 0);
        let values = common::poll_values(&consumer, 10, Duration::from_secs(60));
        assert_eq!(values.len(), 10, "{}", broker.log_tail());
    });
}

/// Opens `n` connections from 127.0.0.1 one after another, each answered (none refused); the
/// time they took.
fn sequential_connections(addr: SocketAddr, n: usize) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        assert!(
            answered(connect_from("127.0.0.1", addr)),
            "connection {i} closed: a connection rate limit never refuses"
        );
    }
    started.elapsed()
}

// KIP-612 broker-wide limit: max_connection_creation_rate = 2 lets 10 s worth (20) through at
// once, then the acceptor waits (up to 1 s a connection): 26 connections take over 3 s and
// none is refused; an rdkafka client is served after the burst. The listener's own limit
// (`listener_name.plaintext.max_connection_creation_rate`) does the same on its own.
#[test]
fn the_broker_and_listener_connection_rates_delay_the_acceptor() {
    within(Duration::from_secs(240), || {
        for settings in [
            "max_connection_creation_rate = 2\n",
            "[listener_name.plaintext]\nmax_connection_creation_rate = 2\n",
        ] {
            let (_dir, config) = common::config_file(settings);
            let broker = TestBroker::start_with(1, &["--config", config.to_str().unwrap()]);
            let took = sequential_connections(broker.socket_addr(), 26);
            eprintln!("{settings:?}: 26 connections in {took:?}");
            assert!(
                took >= Duration::from_secs(3),
                "{settings:?}: 26 connections in {took:?}, expected the acceptor to wait"
            );
            let text = metrics(&broker);
            let waited = common::metric_sum(&text, "freshet_connection_accept_throttled_total");
            assert!(waited >= 5.0, "{settings:?}: {waited}\n{text}");
            assert_eq!(
                common::metric_sum(&text, "freshet_connection_ip_throttled_total"),
                0.0
            );
            let producer: BaseProducer = common::client_config(&broker).create().expect("producer");
            producer
                .send(BaseRecord::<(), str>::to("conn-rate-broker").payload("after the burst"))
                .expect("enqueue");
            producer
                .flush(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("flush: {e}\n{}", broker.log_tail()));
        }
    });
}

// A limit of 0 is refused at start, naming the setting (Kafka refuses a rate <= 0 for a
// listener).
#[test]
fn a_zero_connection_creation_rate_stops_the_start() {
    for (settings, name) in [
        (
            "max_connection_creation_rate = 0\n",
            "max_connection_creation_rate",
        ),
        (
            "[listener_name.plaintext]\nmax_connection_creation_rate = 0\n",
            "listener_name.plaintext.max_connection_creation_rate",
        ),
    ] {
        let (_dir, config) = common::config_file(settings);
        let out = std::process::Command::new(common::broker_bin())
            .args(["start", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
            .args(["--config", config.to_str().unwrap()])
            .output()
            .expect("run freshet");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{stderr}");
    }
}
