//! Per-listener endpoints in a cluster (issue 15): every broker registers the advertised address
//! of each of its listeners, and a client is given the other brokers at their address on the
//! listener it came in on (Kafka's rule), not at their first listener's.
//!
//! Two real `freshet` processes, each with two plaintext listeners: `PLAINTEXT` (the harness's
//! Kafka port, used between brokers) and `EXTERNAL` (mapped to PLAINTEXT by
//! `listener_security_protocol_map`). librdkafka bootstrapped from node 0's EXTERNAL port must
//! see node 1 at node 1's EXTERNAL port; bootstrapped from PLAINTEXT, at its Kafka port.

use crate::common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// The brokers librdkafka's Metadata names, bootstrapped from `bootstrap` only.
fn brokers_seen_from(bootstrap: &str) -> BTreeMap<i32, u16> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "listeners")
        .create()
        .expect("rdkafka consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("Metadata");
    metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), u16::try_from(b.port()).expect("a port")))
        .collect()
}

#[test]
fn other_brokers_are_given_on_the_listener_the_client_came_in_on() {
    let probes: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    let external: Vec<u16> = probes
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    drop(probes);
    let node_settings = external
        .iter()
        .map(|port| {
            format!(
                "listeners = [\"PLAINTEXT://127.0.0.1:{{kafka_port}}\", \
                 \"EXTERNAL://127.0.0.1:{port}\"]\n\
                 listener_security_protocol_map = [\"EXTERNAL:PLAINTEXT\"]\n"
            )
        })
        .collect();
    let cluster = TestCluster::start(
        2,
        ClusterOptions {
            node_settings,
            ..ClusterOptions::default()
        },
    );
    let kafka_port = |node: usize| cluster.socket_addr(node).port();
    let want_external: BTreeMap<i32, u16> = [(0, external[0]), (1, external[1])].into();
    let want_plain: BTreeMap<i32, u16> = [(0, kafka_port(0)), (1, kafka_port(1))].into();
    // Registration is asynchronous (heartbeats): wait until node 1's listeners are known.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = brokers_seen_from(&format!("127.0.0.1:{}", external[0]));
    while seen != want_external && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        seen = brokers_seen_from(&format!("127.0.0.1:{}", external[0]));
    }
    assert_eq!(seen, want_external, "through node 0's EXTERNAL listener");
    assert_eq!(
        brokers_seen_from(&format!("127.0.0.1:{}", external[1])),
        want_external,
        "through node 1's EXTERNAL listener"
    );
    assert_eq!(
        brokers_seen_from(&cluster.kafka_addr(0)),
        want_plain,
        "through node 0's PLAINTEXT listener"
    );
}
