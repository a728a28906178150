//! The web console on the admin listener (issue 17): the page at `/`, and `/api/cluster`,
//! `/api/topics`, `/api/groups` showing what rdkafka created, produced and committed (sizes,
//! offsets, leader/ISR, lag), their caps, and the access rule (served like `/metrics` while
//! the authorizer is on, whose push listener refuses). The headless-browser test is
//! `tests/python/test_console_browser.py`.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{RawConn, TestBroker};
use kafka_protocol::messages::MetadataRequest;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// A broker with the HTTP push listener on.
pub struct Http {
    pub broker: TestBroker,
    pub http: String,
    pub http_port: u16,
    pub cluster: String,
    _config: tempfile::TempDir,
}

pub fn start(shards: usize, extra_toml: &str) -> Http {
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("freshet.toml");
    std::fs::write(&path, format!("http_listen = \"{port}\"\n{extra_toml}")).expect("config");
    let broker = TestBroker::start_with(shards, &["--config", path.to_str().unwrap()]);
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
    let cluster = conn
        .request(12, &MetadataRequest::default())
        .expect("Metadata")
        .cluster_id
        .expect("cluster id")
        .to_string();
    Http {
        broker,
        http: format!("127.0.0.1:{port}"),
        http_port: port,
        cluster,
        _config: dir,
    }
}

pub fn create_topics(broker: &TestBroker, names: &[String], partitions: i32) {
    let topics: Vec<_> = names
        .iter()
        .map(|n| {
            rdkafka::admin::NewTopic::new(n, partitions, rdkafka::admin::TopicReplication::Fixed(1))
        })
        .collect();
    let options = rdkafka::admin::AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(60)))
        .operation_timeout(Some(Duration::from_secs(60)));
    let admin: rdkafka::admin::AdminClient<_> = common::client_config_with(broker, &[])
        .create()
        .expect("admin");
    let results = common::runtime()
        .block_on(admin.create_topics(&topics, &options))
        .expect("CreateTopics");
    for r in results {
        r.expect("topic created");
    }
}

pub fn producer(broker: &TestBroker) -> BaseProducer {
    common::client_config_with(broker, &[])
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// Produces `values` to one partition and waits for them to be acknowledged.
pub fn produce(p: &BaseProducer, topic: &str, partition: i32, values: &[String]) {
    for v in values {
        p.send(
            BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .key("k")
                .payload(v),
        )
        .map_err(|(e, _)| e)
        .expect("send");
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// GETs `path` from the admin listener as JSON.
fn api(h: &Http, path: &str) -> Value {
    let (status, body) = h.broker.admin_get(path).expect("admin GET");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// One request on the push listener: the status code.
fn http_status(addr: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_console_shows_topics_offsets_and_group_lag_from_rdkafka() {
    common::within(Duration::from_secs(120), || {
        let h = start(2, "");
        create_topics(&h.broker, &["orders".to_string()], 3);
        let values: Vec<String> = (0..10).map(|i| format!("order-{i}")).collect();
        produce(&producer(&h.broker), "orders", 1, &values);
        // A group commits offset 4 of partition 1: lag 10 - 4.
        let c: BaseConsumer = common::client_config_with(&h.broker, &[])
            .set("group.id", "billing")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("orders", 1, Offset::Offset(4))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).expect("commit");

        let (status, page) = h.broker.admin_get("/").expect("GET /");
        assert_eq!(status, 200);
        assert!(page.contains("<title>Freshet console</title>"), "{page}");
        assert!(page.contains("/api/topics"));

        let cluster = api(&h, "/api/cluster");
        assert_eq!(cluster["cluster_id"], h.cluster.as_str());
        assert_eq!(cluster["shards"], 2);
        assert_eq!(cluster["http_listen"]["port"], h.http_port);
        assert_eq!(cluster["brokers"].as_array().unwrap().len(), 1);

        let topics = api(&h, "/api/topics");
        assert_eq!(topics["truncated"], false);
        let orders = topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "orders")
            .unwrap_or_else(|| panic!("orders not listed: {topics}"));
        assert_eq!(orders["partition_count"], 3);
        let parts = orders["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        let node = cluster["node_id"].clone();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p["partition"], i);
            assert_eq!(p["leader"], node);
            assert_eq!(p["isr"], serde_json::json!([node]));
            assert_eq!(p["log_start_offset"], 0);
            let end = if i == 1 { 10 } else { 0 };
            assert_eq!(p["high_watermark"], end, "{p}");
        }
        assert!(parts[1]["size_bytes"].as_u64().unwrap() > 10 * 7);
        assert_eq!(orders["size_bytes"], parts[1]["size_bytes"]);

        let groups = api(&h, "/api/groups");
        let billing = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group_id"] == "billing")
            .unwrap_or_else(|| panic!("billing not listed: {groups}"));
        assert_eq!(billing["lag"], 6, "{billing}");
        assert_eq!(billing["partitions"][0]["committed_offset"], 4);
        assert_eq!(billing["partitions"][0]["high_watermark"], 10);
        assert_eq!(groups["share_groups"], serde_json::json!([]));
        assert_eq!(h.broker.admin_get("/api/nothing").unwrap().0, 404);
    });
}

/// More topics than `CONSOLE_TOPICS_MAX` (200): the list stops there and says so.
#[test]
fn the_topic_list_is_capped_and_says_so() {
    common::within(Duration::from_secs(120), || {
        let h = start(1, "");
        let names: Vec<String> = (0..201).map(|i| format!("t{i:03}")).collect();
        create_topics(&h.broker, &names, 1);
        let topics = api(&h, "/api/topics");
        assert_eq!(topics["topics"].as_array().unwrap().len(), 200);
        assert_eq!(topics["topics_total"], 201);
        assert_eq!(topics["truncated"], true);
        assert_eq!(topics["topics"][0]["name"], "t000");
    });
}

/// The admin listener keeps `/metrics`' rule while the authorizer is on (served, names and
/// offsets only), and the live tail's listener refuses (no way around the ACLs to records).
#[test]
fn with_the_authorizer_on_the_console_is_served_as_metrics_and_the_tail_refused() {
    common::within(Duration::from_secs(60), || {
        let h = start(1, "authorizer = \"on\"\nsuper_users = \"User:ANONYMOUS\"\n");
        create_topics(&h.broker, &["secret".to_string()], 1);
        assert_eq!(h.broker.admin_get("/metrics").unwrap().0, 200);
        assert_eq!(api(&h, "/api/cluster")["authorizer"], true);
        let topics = api(&h, "/api/topics");
        assert!(topics.to_string().contains("secret"));
        let stream = format!(
            "/v3/clusters/{}/topics/secret/partitions/0/records/stream",
            h.cluster
        );
        assert_eq!(http_status(&h.http, &stream), 403);
    });
}
