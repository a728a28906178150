//! The cluster metadata log (`<data_dir>/internal/__cluster_metadata-0/`) and the migration
//! of a data directory that still has `cluster-metadata.json` (the format before the log),
//! driven against the real `freshet` binary.
//!
//! - A data directory in the old format (the JSON document written by
//!   `coordinator::store::save`, as the versions before the log did) starts with its topics,
//!   topic ids, partition counts, configs, cluster id, dynamic broker configs and producer-id
//!   block; the JSON is renamed `.migrated`, not deleted; committed offsets written after the
//!   migration survive a restart, and so does everything else.
//! - A crash during the migration's append (the log's segment created, the snapshot not
//!   landed) leaves an empty log after recovery: the JSON is migrated again.
//! - A crash between the migration's durable append and the rename (the JSON still there, the
//!   log already holding it) starts from the log, not the JSON, and finishes the rename.
//! - With `FRESHET_OLD_BIN` set to a broker binary from before the log, the old binary makes
//!   the data directory (topics, configs, committed offsets) and the new one must start on it.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{within, RawConn, TestBroker};
use freshet::coordinator::metadata::{ClusterMetadata, TopicMeta};
use freshet::coordinator::store;
use kafka_protocol::messages::{InitProducerIdRequest, MetadataRequest};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

fn metadata_log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("internal").join("__cluster_metadata-0")
}

/// Metadata v12 of every topic: (cluster id, name -> (topic id, partitions)).
fn topics(broker: &TestBroker) -> (String, BTreeMap<String, (uuid::Uuid, usize)>) {
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
    let response = conn
        .request(12, &MetadataRequest::default().with_topics(None))
        .expect("Metadata");
    let cluster_id = response
        .cluster_id
        .map(|s| s.to_string())
        .unwrap_or_default();
    let topics = response
        .topics
        .iter()
        .map(|t| {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            (name, (t.topic_id, t.partitions.len()))
        })
        .collect();
    (cluster_id, topics)
}

/// The value of config `name` of `resource` (DescribeConfigs through rdkafka).
fn config_value(
    broker: &TestBroker,
    resource: ResourceSpecifier<'_>,
    name: &str,
) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = common::client_config(broker)
        .create()
        .expect("admin client");
    let results = common::runtime()
        .block_on(admin.describe_configs([&resource], &AdminOptions::new()))
        .expect("DescribeConfigs");
    let config = results[0].as_ref().expect("described");
    config.get(name).and_then(|entry| entry.value.clone())
}

fn consumer(broker: &TestBroker, group: &str) -> BaseConsumer {
    common::client_config_with(
        broker,
        &[("group.id", group), ("enable.auto.commit", "false")],
    )
    .create()
    .expect("consumer")
}

fn commit(broker: &TestBroker, group: &str, topic: &str, partition: i32, offset: i64) {
    let c = consumer(broker, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn committed(broker: &TestBroker, group: &str, topic: &str, partition: i32) -> Offset {
    let c = consumer(broker, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c
        .committed_offsets(tpl, TIMEOUT)
        .expect("committed offsets");
    got.find_partition(topic, partition).unwrap().offset()
}

fn producer_id(broker: &TestBroker) -> i64 {
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
    let response = conn
        .request(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )
        .expect("InitProducerId");
    assert_eq!(response.error_code, 0);
    response.producer_id.0
}

/// The metadata a broker before the log would have written: two topics with ids, configs,
/// a cluster-wide dynamic broker config and producer ids handed out up to 7000.
fn legacy_metadata() -> ClusterMetadata {
    let mut metadata = ClusterMetadata {
        cluster_id: "LegacyClusterId0000001".into(),
        version: 42,
        producer_id_block_next: 7000,
        ..ClusterMetadata::default()
    };
    metadata.topics.insert(
        "orders".into(),
        TopicMeta {
            id: uuid::Uuid::from_bytes([7; 16]),
            partitions: 3,
            configs: [("retention.ms".to_string(), "123456789".to_string())].into(),
            internal: false,
            assignment: Vec::new(),
        },
    );
    metadata.topics.insert(
        "events".into(),
        TopicMeta {
            id: uuid::Uuid::from_bytes([8; 16]),
            partitions: 1,
            configs: BTreeMap::new(),
            internal: false,
            assignment: Vec::new(),
        },
    );
    metadata.broker_configs.insert(
        String::new(),
        [("log.retention.ms".to_string(), "3600000".to_string())].into(),
    );
    metadata
}

/// What the new broker must show of `legacy_metadata()`.
fn assert_legacy_topics(broker: &TestBroker) {
    let (cluster_id, topics) = topics(broker);
    assert_eq!(cluster_id, "LegacyClusterId0000001");
    assert_eq!(topics["orders"], (uuid::Uuid::from_bytes([7; 16]), 3));
    assert_eq!(topics["events"], (uuid::Uuid::from_bytes([8; 16]), 1));
    assert_eq!(
        config_value(broker, ResourceSpecifier::Topic("orders"), "retention.ms").as_deref(),
        Some("123456789")
    );
    // Producer ids below the persisted block mark are never handed out again.
    assert!(producer_id(broker) >= 7000);
}

/// An old-format data directory is migrated on start and everything in it survives, also a
/// restart after the migration; the JSON is kept as `.migrated`.
#[test]
fn json_metadata_is_migrated_into_the_log_and_survives_restarts() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        store::save(&data_dir, &legacy_metadata()).unwrap();

        let mut broker = TestBroker::start_in(1, Some(data_dir.clone()), &[]);
        assert_legacy_topics(&broker);
        assert!(!store::metadata_path(&data_dir).exists(), "JSON renamed");
        assert!(
            data_dir.join(store::METADATA_FILE_MIGRATED).exists(),
            "JSON kept"
        );
        assert!(metadata_log_dir(&data_dir).is_dir(), "metadata log created");
        commit(&broker, "g", "orders", 2, 17);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        assert_eq!(common::create_topic_raw(&mut conn, "after", 2, &[]), 0);
        drop(conn);

        for _ in 0..2 {
            broker.restart();
            assert_legacy_topics(&broker);
            assert_eq!(topics(&broker).1["after"].1, 2);
            assert_eq!(committed(&broker, "g", "orders", 2), Offset::Offset(17));
            assert!(!store::metadata_path(&data_dir).exists());
        }
    });
}

/// A crash after the migration's append and before the rename leaves both the JSON and the
/// log: the log wins (it may hold later changes) and the rename is finished.
#[test]
fn crash_between_migration_append_and_rename_starts_from_the_log() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        store::save(&data_dir, &legacy_metadata()).unwrap();
        let mut broker = TestBroker::start_in(1, Some(data_dir.clone()), &[]);
        assert_legacy_topics(&broker);
        broker.kill9();
        // The state of a crash right before the rename (a later change too, to tell them apart).
        std::fs::rename(
            data_dir.join(store::METADATA_FILE_MIGRATED),
            store::metadata_path(&data_dir),
        )
        .unwrap();
        let mut stale = legacy_metadata();
        stale.topics.remove("events");
        store::save(&data_dir, &stale).unwrap();

        broker.start_again();
        assert_legacy_topics(&broker);
        assert!(!store::metadata_path(&data_dir).exists(), "rename finished");
        assert!(data_dir.join(store::METADATA_FILE_MIGRATED).exists());
    });
}

/// A crash during the migration's append, before the snapshot was durable: the log's segment
/// exists but holds only preallocated zeros (or a torn tail, which recovery cuts the same
/// way). The log is empty after recovery, so the JSON is migrated again.
#[test]
fn crash_before_the_migration_append_landed_migrates_again() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let log_dir = metadata_log_dir(&data_dir);
        std::fs::create_dir_all(&log_dir).unwrap();
        store::save(&data_dir, &legacy_metadata()).unwrap();
        std::fs::write(log_dir.join("00000000000000000000.log"), vec![0u8; 8192]).unwrap();

        let mut broker = TestBroker::start_in(1, Some(data_dir.clone()), &[]);
        assert_legacy_topics(&broker);
        assert!(!store::metadata_path(&data_dir).exists());
        broker.restart();
        assert_legacy_topics(&broker);
    });
}

/// AlterConfigs (v2, raw) replacing `topic`'s overrides with `retention.ms` = `value`.
fn set_retention(conn: &mut RawConn, topic: &str, value: &str) {
    use kafka_protocol::messages::alter_configs_request as ac;
    use kafka_protocol::protocol::StrBytes;
    let request = kafka_protocol::messages::AlterConfigsRequest::default().with_resources(vec![
        ac::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![ac::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_string(value.to_string())))]),
    ]);
    let response = conn.request(2, &request).expect("AlterConfigs");
    assert_eq!(response.responses[0].error_code, 0);
}

/// More metadata changes than the log keeps before compacting: the log is compacted to one
/// snapshot (its directory stays small) and the last change survives a kill -9 and a restart.
#[test]
fn metadata_log_is_compacted_and_the_last_change_survives() {
    within(Duration::from_secs(240), || {
        let mut broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        assert_eq!(common::create_topic_raw(&mut conn, "c", 1, &[]), 0);
        // COMPACT_RECORDS_MIN is 1000 records.
        for i in 0..1100 {
            set_retention(&mut conn, "c", &(100_000 + i).to_string());
        }
        drop(conn);
        common::wait_until(TIMEOUT, "the metadata quorum's log to be compacted", || {
            broker.log().contains("metadata log compacted")
        });
        broker.kill9();
        broker.start_again();
        assert_eq!(
            config_value(&broker, ResourceSpecifier::Topic("c"), "retention.ms").as_deref(),
            Some("101099")
        );
        broker.restart();
        assert_eq!(
            config_value(&broker, ResourceSpecifier::Topic("c"), "retention.ms").as_deref(),
            Some("101099")
        );
    });
}

/// A new data directory starts with an empty metadata log holding its cluster id, and no
/// JSON document is written any more.
#[test]
fn new_data_directory_keeps_metadata_in_the_log_only() {
    within(Duration::from_secs(120), || {
        let mut broker = TestBroker::start(1);
        let (cluster_id, _) = topics(&broker);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        let configs = [("cleanup.policy", "compact")];
        assert_eq!(common::create_topic_raw(&mut conn, "t", 4, &configs), 0);
        drop(conn);
        let data_dir = broker.data_dir().to_path_buf();
        assert!(metadata_log_dir(&data_dir).is_dir());
        assert!(!store::metadata_path(&data_dir).exists());
        broker.kill9();
        broker.start_again();
        let (again, topics) = topics(&broker);
        assert_eq!(again, cluster_id);
        assert_eq!(topics["t"].1, 4);
        assert_eq!(
            config_value(&broker, ResourceSpecifier::Topic("t"), "cleanup.policy").as_deref(),
            Some("compact")
        );
    });
}

/// With `FRESHET_OLD_BIN` (a broker built before the metadata log): the old binary creates
/// topics, configs and committed offsets; the new binary starts on its data directory with
/// all of them, and again after a restart. Needs a binary built from before the metadata log,
/// so it is not part of the default run: `FRESHET_OLD_BIN=/path/to/old/freshet cargo test
/// --test it -- --ignored coord_metadata_log::data_directory_of_the_previous_binary`.
#[test]
#[ignore = "needs FRESHET_OLD_BIN, a broker binary from before the metadata log"]
fn data_directory_of_the_previous_binary_starts_with_everything() {
    let old_bin = std::env::var_os("FRESHET_OLD_BIN")
        .expect("FRESHET_OLD_BIN: a broker binary from before the metadata log");
    within(Duration::from_secs(180), move || {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut broker =
            TestBroker::start_bin_in(PathBuf::from(old_bin), 1, Some(data_dir.clone()), &[]);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        assert_eq!(
            common::create_topic_raw(&mut conn, "old", 3, &[("retention.ms", "987654")]),
            0
        );
        drop(conn);
        commit(&broker, "oldgroup", "old", 1, 33);
        let pid = producer_id(&broker);
        let (cluster_id, before) = topics(&broker);
        broker.stop();
        assert!(
            store::metadata_path(&data_dir).exists(),
            "the old binary writes JSON"
        );
        broker.set_bin(common::broker_bin());

        for _ in 0..2 {
            broker.start_again();
            let (id, after) = topics(&broker);
            assert_eq!(id, cluster_id);
            assert_eq!(after["old"], before["old"]);
            assert_eq!(
                config_value(&broker, ResourceSpecifier::Topic("old"), "retention.ms").as_deref(),
                Some("987654")
            );
            assert_eq!(committed(&broker, "oldgroup", "old", 1), Offset::Offset(33));
            assert!(producer_id(&broker) > pid);
            assert!(data_dir.join(store::METADATA_FILE_MIGRATED).exists());
            broker.stop();
        }
    });
}
