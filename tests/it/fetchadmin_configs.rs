//! Cluster-wide dynamic broker configs (issue 12, item 17), with raw IncrementalAlterConfigs and
//! DescribeConfigs requests against the real `freshet` binary (clients such as confluent-kafka
//! refuse a broker resource with the empty name that stands for the cluster default).
//!
//! Kafka accepts dynamic log configs at the default level, describes them with source
//! DYNAMIC_DEFAULT_BROKER_CONFIG (on the "" resource, on the node, and on every topic without
//! its own override), applies them to those topics, keeps them across restarts, and refuses
//! per-broker configs at that level.

use crate::common;

use std::time::Duration;

use common::{RawConn, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const BROKER: i8 = 4;
const TOPIC: i8 = 2;
const SET: i8 = 0;
const DELETE: i8 = 1;
const DYNAMIC_BROKER_CONFIG: i8 = 2;
const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// IncrementalAlterConfigs of one broker resource: (error code, message).
fn alter(conn: &mut RawConn, name: &str, ops: &[(&str, Option<&str>, i8)]) -> (i16, String) {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s(name))
            .with_configs(
                ops.iter()
                    .map(|(k, v, op)| {
                        AlterableConfig::default()
                            .with_name(s(k))
                            .with_value(v.map(s))
                            .with_config_operation(*op)
                    })
                    .collect(),
            ),
    ]);
    let response = conn.request(1, &request).unwrap();
    let r = &response.responses[0];
    (
        r.error_code,
        r.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

fn describe(conn: &mut RawConn, kind: i8, name: &str) -> DescribeConfigsResult {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(s(name))]);
    let mut response = conn.request(4, &request).unwrap();
    let result = response.results.remove(0);
    assert_eq!(result.error_code, 0, "{:?}", result.error_message);
    result
}

/// (value, source) of config `name` in a description.
fn entry(result: &DescribeConfigsResult, name: &str) -> (String, i8) {
    let e = result
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not described"));
    (
        e.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
        e.config_source,
    )
}

/// The error code a keyless record gets (0 when stored).
fn keyless_produce_code(broker: &TestBroker, topic: &str) -> i16 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("broker.address.family", "v4")
        .set("message.timeout.ms", "20000")
        .set("retries", "0")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let record = FutureRecord::<(), [u8]>::to(topic).payload(&b"no key"[..]);
    match rt.block_on(producer.send(record, Duration::from_secs(20))) {
        Ok(_) => 0,
        Err((e, _)) => e.rdkafka_error_code().map_or(-1, |c| c as i16),
    }
}

#[test]
fn cluster_default_log_configs_are_described_applied_and_persisted() {
    common::within(Duration::from_secs(120), || {
        let mut broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();

        let (code, message) = alter(
            &mut conn,
            "",
            &[
                ("log.cleanup.policy", Some("compact"), SET),
                ("log.retention.ms", Some("3600000"), SET),
            ],
        );
        assert_eq!(code, 0, "{message}");
        let (code, message) = alter(
            &mut conn,
            "",
            &[("sasl.kerberos.min.time.before.relogin", Some("58000"), SET)],
        );
        assert_eq!(code, INVALID_REQUEST);
        assert!(message.contains("broker id must be specified"), "{message}");
        let (code, message) = alter(&mut conn, "", &[("log.dirs", Some("/x"), SET)]);
        assert_eq!(code, INVALID_REQUEST);
        assert!(
            message.contains("Cannot update these configs dynamically"),
            "{message}"
        );

        let topic = "dyn-default";
        let created = conn
            .request(
                5,
                &CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(TopicName(s(topic)))
                        .with_num_partitions(2)
                        .with_replication_factor(1)]),
            )
            .unwrap();
        assert_eq!(created.topics[0].error_code, 0);

        let check = |conn: &mut RawConn, broker: &TestBroker| {
            let default = describe(conn, BROKER, "");
            let mut described: Vec<(String, String, i8)> = default
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                        c.config_source,
                    )
                })
                .collect();
            described.sort();
            assert_eq!(
                described,
                vec![
                    (
                        "log.cleanup.policy".to_string(),
                        "compact".to_string(),
                        DYNAMIC_DEFAULT_BROKER_CONFIG
                    ),
                    (
                        "log.retention.ms".to_string(),
                        "3600000".to_string(),
                        DYNAMIC_DEFAULT_BROKER_CONFIG
                    ),
                ]
            );
            let node = describe(conn, BROKER, "0");
            assert_eq!(
                entry(&node, "log.retention.ms"),
                ("3600000".to_string(), DYNAMIC_DEFAULT_BROKER_CONFIG)
            );
            let t = describe(conn, TOPIC, topic);
            assert_eq!(
                entry(&t, "cleanup.policy"),
                ("compact".to_string(), DYNAMIC_DEFAULT_BROKER_CONFIG)
            );
            assert_eq!(
                entry(&t, "retention.ms"),
                ("3600000".to_string(), DYNAMIC_DEFAULT_BROKER_CONFIG)
            );
            // Applied: the topic is compacted, so a record without a key is refused.
            assert_eq!(keyless_produce_code(broker, topic), INVALID_RECORD);
        };
        check(&mut conn, &broker);
        broker.restart();
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        check(&mut conn, &broker);

        // A node value wins over the default; deleting both returns to the static default.
        let (code, message) = alter(
            &mut conn,
            "0",
            &[("log.retention.ms", Some("7200000"), SET)],
        );
        assert_eq!(code, 0, "{message}");
        let t = describe(&mut conn, TOPIC, topic);
        assert_eq!(
            entry(&t, "retention.ms"),
            ("7200000".to_string(), DYNAMIC_BROKER_CONFIG)
        );
        assert_eq!(
            alter(&mut conn, "0", &[("log.retention.ms", None, DELETE)]).0,
            0
        );
        assert_eq!(
            alter(
                &mut conn,
                "",
                &[
                    ("log.retention.ms", None, DELETE),
                    ("log.cleanup.policy", None, DELETE)
                ]
            )
            .0,
            0
        );
        assert!(describe(&mut conn, BROKER, "").configs.is_empty());
        let t = describe(&mut conn, TOPIC, topic);
        assert_eq!(entry(&t, "cleanup.policy").0, "delete");
        assert_eq!(entry(&t, "retention.ms").0, "604800000");
        assert_eq!(keyless_produce_code(&broker, topic), 0);
    });
}
