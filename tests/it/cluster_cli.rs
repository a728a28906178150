//! DescribeQuorum (API 55) and `freshet cluster info` / `freshet cluster quorum` against a real
//! single-node `freshet`: the node is its own one-voter quorum and its leader, and its high
//! watermark grows with the metadata changes (one Raft entry each). Requests for
//! any other partition than `__cluster_metadata-0` get UNKNOWN_TOPIC_OR_PARTITION, as Kafka's
//! `KafkaRaftClient` answers. The multi-node behaviour (followers answering
//! NOT_LEADER_OR_FOLLOWER, the CLI finding the leader) is in `cluster`.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{broker_bin, create_topic_raw, within, RawConn, TestBroker};
use kafka_protocol::messages::{
    describe_quorum_request, ApiKey, ApiVersionsRequest, DescribeQuorumRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;

const TEST_LIMIT: Duration = Duration::from_secs(120);

fn quorum_request(topics: &[(&str, &[i32])]) -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(
        topics
            .iter()
            .map(|(name, partitions)| {
                describe_quorum_request::TopicData::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name.to_string())))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&p| {
                                describe_quorum_request::PartitionData::default()
                                    .with_partition_index(p)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// The single node describes itself as the quorum's leader at every version, in one epoch;
/// the high watermark grows with metadata changes; ApiVersions advertises v0-v2.
#[test]
fn describe_quorum_names_the_single_node_its_own_leader() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        let versions = conn
            .request(3, &ApiVersionsRequest::default())
            .expect("ApiVersions");
        let entry = versions
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::DescribeQuorum as i16)
            .expect("ApiVersions lists DescribeQuorum");
        assert_eq!((entry.min_version, entry.max_version), (0, 2));

        let asked = quorum_request(&[("__cluster_metadata", &[0])]);
        let before = conn.request(2, &asked).expect("DescribeQuorum v2");
        let hw_before = before.topics[0].partitions[0].high_watermark;
        let epoch = before.topics[0].partitions[0].leader_epoch;
        let mut hw_seen = hw_before;
        assert!(epoch >= 1, "{before:?}");
        assert_eq!(create_topic_raw(&mut conn, "quorum-hw", 1, &[]), 0);
        for version in 0..=2 {
            let answer = conn.request(version, &asked).expect("DescribeQuorum");
            assert_eq!(answer.error_code, 0, "v{version}");
            assert_eq!(answer.topics.len(), 1);
            assert_eq!(answer.topics[0].topic_name.0.as_str(), "__cluster_metadata");
            let p = &answer.topics[0].partitions[0];
            assert_eq!(p.error_code, 0, "v{version}");
            assert_eq!(
                (p.partition_index, p.leader_id.0, p.leader_epoch),
                (0, 0, epoch)
            );
            // The change is in; the broker's own registration records may land meanwhile.
            assert!(
                p.high_watermark > hw_before && p.high_watermark >= hw_seen,
                "v{version}: high watermark {} after {hw_before} (last seen {hw_seen})",
                p.high_watermark
            );
            hw_seen = p.high_watermark;
            assert_eq!(p.current_voters.len(), 1);
            let me = &p.current_voters[0];
            assert_eq!(me.replica_id.0, 0);
            assert!(me.log_end_offset >= p.high_watermark, "{p:?}");
            if version >= 1 {
                assert!(me.last_fetch_timestamp > 0 && me.last_caught_up_timestamp > 0);
            }
            assert!(p.observers.is_empty());
            if version >= 2 {
                assert_eq!(answer.nodes.len(), 1);
                assert_eq!(answer.nodes[0].node_id.0, 0);
                assert!(
                    answer.nodes[0].listeners.is_empty(),
                    "no controller listener"
                );
            }
        }
    });
}

/// Any other topic or partition, or more than one, is UNKNOWN_TOPIC_OR_PARTITION on every
/// partition named; the connection stays usable.
#[test]
fn describe_quorum_of_another_partition_is_unknown() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        let cases: [&[(&str, &[i32])]; 4] = [
            &[("orders", &[0, 1])],
            &[("__cluster_metadata", &[1])],
            &[("__cluster_metadata", &[0, 0])],
            &[("__cluster_metadata", &[0]), ("orders", &[0])],
        ];
        for topics in cases {
            let answer = conn
                .request(2, &quorum_request(topics))
                .expect("DescribeQuorum");
            assert_eq!(answer.error_code, 0, "{topics:?}");
            let codes: Vec<i16> = answer
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect();
            let named: usize = topics.iter().map(|(_, p)| p.len()).sum();
            assert_eq!(codes, vec![3; named], "{topics:?}");
        }
        let empty = conn
            .request(1, &quorum_request(&[]))
            .expect("DescribeQuorum");
        assert!(empty.topics.is_empty());
        let fine = conn
            .request(0, &quorum_request(&[("__cluster_metadata", &[0])]))
            .expect("still answering");
        assert_eq!(fine.topics[0].partitions[0].error_code, 0);
    });
}

fn freshet(broker: &TestBroker, args: &[&str]) -> String {
    let output = Command::new(broker_bin())
        .args(args)
        .env("FRESHET_BROKERS", broker.addr())
        .output()
        .expect("run freshet");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        output.status.code(),
        Some(0),
        "freshet {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn freshet_json(broker: &TestBroker, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    serde_json::from_str(&freshet(broker, &all)).expect("JSON on stdout")
}

/// `freshet cluster info` shows brokers with their fenced state and the quorum with lags;
/// `freshet cluster quorum` prints Kafka's --status and --replication tables.
#[test]
fn cluster_info_and_quorum_commands_show_the_quorum() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let info = freshet_json(&broker, &["cluster", "info"]);
        assert_eq!(info["brokers"][0]["fenced"], Value::Bool(false));
        assert_eq!(info["quorum"]["leader_id"], 0);
        assert!(info["quorum"]["leader_epoch"].as_i64() >= Some(1), "{info}");
        assert_eq!(info["quorum"]["voters"][0]["lag"], 0);
        assert_eq!(info["quorum_error"], Value::Null);
        let table = freshet(&broker, &["cluster", "info"]);
        for needle in ["STATE", "unfenced", "QUORUM-LEADER", "VOTER", "Leader"] {
            assert!(table.contains(needle), "{needle} missing from:\n{table}");
        }

        let quorum = freshet_json(&broker, &["cluster", "quorum"]);
        assert_eq!(quorum["leader_id"], 0);
        assert_eq!(quorum["max_follower_lag"], 0);
        let hw = quorum["high_watermark"].as_i64().expect("high watermark");
        assert!(
            quorum["voters"][0]["log_end_offset"].as_i64() >= Some(hw),
            "{quorum}"
        );
        assert_eq!(quorum["voters"][0]["status"], "Leader");
        assert_eq!(quorum["observers"], Value::Array(Vec::new()));
        let text = freshet(&broker, &["cluster", "quorum"]);
        for needle in [
            "LeaderId",
            "LeaderEpoch",
            "HighWatermark",
            "MaxFollowerLag",
            "CurrentVoters",
            "LOG-END-OFFSET",
            "LAST-CAUGHT-UP-TIMESTAMP",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    });
}
