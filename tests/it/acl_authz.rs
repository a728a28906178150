//! ACLs and the authorizer (issue 15) against the real `freshet` binary, over raw protocol
//! requests so that every error code is checked exactly. Before SASL every connection is
//! `User:ANONYMOUS`; the scenarios vary the ACLs for it, `super_users` and
//! `allow_everyone_if_no_acl_found`.

use crate::common;

use bytes::Bytes;
use common::cluster::{ClusterOptions, TestCluster};
use common::{RawConn, TestBroker};
use freshet_protocol::batch::{encode_batch, Compression};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, BrokerId, CreateAclsRequest, CreateAclsResponse,
    CreateTopicsRequest, DeleteAclsRequest, DeleteTopicsRequest, DescribeAclsRequest,
    DescribeClusterRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    InitProducerIdRequest, MetadataRequest, MetadataResponse, OffsetCommitRequest, ProducerId,
    TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use std::time::Duration;

const ANON: &str = "User:ANONYMOUS";
// Kafka's codes (security::acl).
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const TXN_ID: i8 = 5;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const ALL: i8 = 2;
const READ: i8 = 3;
const WRITE: i8 = 4;
const DESCRIBE: i8 = 8;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn creation(rt: i8, name: &str, pt: i8, op: i8, perm: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(rt)
        .with_resource_name(s(name))
        .with_resource_pattern_type(pt)
        .with_principal(s(ANON))
        .with_host(s("*"))
        .with_operation(op)
        .with_permission_type(perm)
}

fn create_acls(conn: &mut RawConn, creations: Vec<AclCreation>) -> CreateAclsResponse {
    conn.request(3, &CreateAclsRequest::default().with_creations(creations))
        .expect("CreateAcls")
}

fn create_topic(conn: &mut RawConn, name: &str) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(1)
            .with_replication_factor(-1)]);
    let response = conn.request(7, &request).expect("CreateTopics");
    response.topics[0].error_code
}

fn one_record() -> Bytes {
    encode_batch(
        &[(None, Some(Bytes::from_static(b"v")), 1_700_000_000_000)],
        Compression::None,
    )
    .expect("batch")
}

fn produce(conn: &mut RawConn, topic: &str) -> i16 {
    common::produce_records(conn, 9, topic, 0, one_record()).error_code
}

fn fetch(conn: &mut RawConn, topic: &str) -> i16 {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = conn.request(12, &request).expect("Fetch");
    response.responses[0].partitions[0].error_code
}

fn metadata(conn: &mut RawConn, topics: Option<&[&str]>) -> MetadataResponse {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_include_topic_authorized_operations(true)
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(s(t)))))
                .collect()
        }));
    conn.request(12, &request).expect("Metadata")
}

fn heartbeat(conn: &mut RawConn, group: &str) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(s(group).into())
        .with_generation_id(1)
        .with_member_id(s("m"));
    conn.request(4, &request).expect("Heartbeat").error_code
}

fn find_group_coordinator(conn: &mut RawConn, group: &str) -> i16 {
    let request = FindCoordinatorRequest::default().with_key(s(group));
    conn.request(3, &request)
        .expect("FindCoordinator")
        .error_code
}

fn offset_commit(conn: &mut RawConn, group: &str, topic: &str) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(s(group).into())
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(0)])]);
    let response = conn.request(8, &request).expect("OffsetCommit");
    response.topics[0].partitions[0].error_code
}

fn consumer_heartbeat(conn: &mut RawConn, group: &str, topic: &str) -> i16 {
    use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(s(group).into())
        .with_member_id(s(&uuid::Uuid::new_v4().to_string()))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s(topic))]))
        .with_topic_partitions(Some(Vec::new()));
    conn.request(1, &request)
        .expect("ConsumerGroupHeartbeat")
        .error_code
}

/// EndTxn and TxnOffsetCommit need WRITE on the transactional id, AddOffsetsToTxn READ on the
/// group, AddPartitionsToTxn WRITE on each topic (the others: OPERATION_NOT_ATTEMPTED).
fn transaction_apis_follow_the_acls(conn: &mut RawConn) {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, TxnOffsetCommitRequest,
    };
    let end = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s("tx-no")))
        .with_producer_id(ProducerId(1))
        .with_committed(true);
    assert_eq!(
        conn.request(3, &end).expect("EndTxn").error_code,
        code(ResponseError::TransactionalIdAuthorizationFailed)
    );
    let offsets = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("tx-ok")))
        .with_producer_id(ProducerId(1))
        .with_group_id(s("bad-1").into());
    assert_eq!(
        conn.request(3, &offsets)
            .expect("AddOffsetsToTxn")
            .error_code,
        code(ResponseError::GroupAuthorizationFailed)
    );
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s("tx-ok")))
        .with_v3_and_below_producer_id(ProducerId(1))
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("secret")))
                .with_partitions(vec![0]),
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("app-orders")))
                .with_partitions(vec![0]),
        ]);
    let added = conn.request(3, &add).expect("AddPartitionsToTxn");
    let codes: Vec<i16> = added
        .results_by_topic_v3_and_below
        .iter()
        .map(|t| t.results_by_partition[0].partition_error_code)
        .collect();
    assert_eq!(
        codes,
        [
            code(ResponseError::TopicAuthorizationFailed),
            code(ResponseError::OperationNotAttempted)
        ]
    );
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx-no")))
        .with_group_id(s("g-ok").into())
        .with_producer_id(ProducerId(1))
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s("app-orders")))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(0)])]);
    let committed = conn.request(3, &commit).expect("TxnOffsetCommit");
    assert_eq!(
        committed.topics[0].partitions[0].error_code,
        code(ResponseError::TransactionalIdAuthorizationFailed)
    );
}

fn init_producer_id(conn: &mut RawConn, transactional_id: Option<&str>) -> i16 {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|t| TransactionalId(s(t))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    conn.request(4, &request)
        .expect("InitProducerId")
        .error_code
}

fn delete_topic(conn: &mut RawConn, topic: &str) -> i16 {
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topic_names(vec![TopicName(s(topic))]);
    conn.request(5, &request).expect("DeleteTopics").responses[0].error_code
}

fn describe_all_acls(conn: &mut RawConn) -> kafka_protocol::messages::DescribeAclsResponse {
    let request = DescribeAclsRequest::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    conn.request(3, &request).expect("DescribeAcls")
}

fn start(args: &[&str]) -> (TestBroker, RawConn) {
    let broker = TestBroker::start_with(1, args);
    let conn = RawConn::connect(broker.socket_addr()).expect("connect");
    (broker, conn)
}

/// The default broker has no authorizer: everything is allowed as before, and the ACL APIs
/// answer SECURITY_DISABLED as Kafka without an authorizer does.
#[test]
fn without_an_authorizer_acl_apis_answer_security_disabled() {
    let (_broker, mut conn) = start(&[]);
    let created = create_acls(&mut conn, vec![creation(TOPIC, "t", LITERAL, READ, ALLOW)]);
    assert_eq!(
        created.results[0].error_code,
        code(ResponseError::SecurityDisabled)
    );
    assert_eq!(
        describe_all_acls(&mut conn).error_code,
        code(ResponseError::SecurityDisabled)
    );
    assert_eq!(create_topic(&mut conn, "open"), 0);
    assert_eq!(produce(&mut conn, "open"), 0);
    assert_eq!(fetch(&mut conn, "open"), 0);
}

/// Authorizer on, no ACLs, `allow_everyone_if_no_acl_found` false: the anonymous user may do
/// nothing and gets Kafka's authorization errors; as a super user it may do everything.
#[test]
fn with_no_acls_everything_is_denied_unless_super_user() {
    let (_broker, mut conn) = start(&["--authorizer", "on"]);
    assert_eq!(
        create_topic(&mut conn, "t"),
        code(ResponseError::TopicAuthorizationFailed)
    );
    assert!(metadata(&mut conn, None).topics.is_empty());
    let created = create_acls(&mut conn, vec![creation(TOPIC, "t", LITERAL, READ, ALLOW)]);
    assert_eq!(
        created.results[0].error_code,
        code(ResponseError::ClusterAuthorizationFailed)
    );
    assert_eq!(
        describe_all_acls(&mut conn).error_code,
        code(ResponseError::ClusterAuthorizationFailed)
    );
    assert_eq!(
        init_producer_id(&mut conn, None),
        code(ResponseError::ClusterAuthorizationFailed)
    );
    assert_eq!(
        heartbeat(&mut conn, "g"),
        code(ResponseError::GroupAuthorizationFailed)
    );

    let (_su, mut conn) = start(&[
        "--authorizer",
        "on",
        "--super-users",
        "User:admin;User:ANONYMOUS",
    ]);
    // A DENY of everything does not bind a super user.
    let created = create_acls(&mut conn, vec![creation(TOPIC, "*", LITERAL, ALL, DENY)]);
    assert_eq!(created.results[0].error_code, 0);
    assert_eq!(create_topic(&mut conn, "t"), 0);
    assert_eq!(produce(&mut conn, "t"), 0);
    assert_eq!(fetch(&mut conn, "t"), 0);
    assert_eq!(metadata(&mut conn, None).topics.len(), 1);
}

/// The scenario for one principal: allowed to write and read one topic (prefix) and
/// use one group; everything else answered with Kafka's authorization errors (Produce, Fetch,
/// Metadata, groups, transactions, admin). ACLs survive a restart (metadata log).
#[test]
fn a_principal_can_do_exactly_what_its_acls_allow() {
    let (mut broker, mut conn) = start(&[
        "--authorizer",
        "on",
        "--allow-everyone-if-no-acl-found",
        "true",
    ]);
    // No ACL on anything yet: everyone may (allow_everyone_if_no_acl_found).
    assert_eq!(create_topic(&mut conn, "app-orders"), 0);
    assert_eq!(create_topic(&mut conn, "secret"), 0);
    let created = create_acls(
        &mut conn,
        vec![
            creation(TOPIC, "app-", PREFIXED, WRITE, ALLOW),
            creation(TOPIC, "app-", PREFIXED, READ, ALLOW),
            creation(TOPIC, "secret", LITERAL, ALL, DENY),
            creation(GROUP, "g-ok", PREFIXED, READ, ALLOW),
            creation(GROUP, "bad", PREFIXED, READ, DENY),
            creation(TXN_ID, "tx-no", LITERAL, WRITE, DENY),
            // An ACL on the cluster that grants no CREATE and no ALTER: from now on the
            // cluster resource has ACLs, so those are denied.
            creation(CLUSTER, "kafka-cluster", LITERAL, DESCRIBE, ALLOW),
            // Refused: the cluster resource has one name.
            creation(CLUSTER, "other", LITERAL, DESCRIBE, ALLOW),
        ],
    );
    let codes: Vec<i16> = created.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes[..7], [0; 7]);
    assert_eq!(codes[7], code(ResponseError::InvalidRequest));

    let check = |conn: &mut RawConn| {
        assert_eq!(produce(conn, "app-orders"), 0);
        assert_eq!(
            produce(conn, "secret"),
            code(ResponseError::TopicAuthorizationFailed)
        );
        assert_eq!(fetch(conn, "app-orders"), 0);
        assert_eq!(
            fetch(conn, "secret"),
            code(ResponseError::TopicAuthorizationFailed)
        );
        // Metadata: the denied topic is left out of "all topics", refused when named.
        let all = metadata(conn, None);
        let names: Vec<&str> = all
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str()))
            .collect();
        assert_eq!(names, ["app-orders"]);
        // READ and WRITE allowed, and the DESCRIBE they imply: bits 3, 4, 8.
        assert_eq!(
            all.topics[0].topic_authorized_operations,
            (1 << 3) | (1 << 4) | (1 << 8)
        );
        let named = metadata(conn, Some(&["secret"]));
        assert_eq!(
            named.topics[0].error_code,
            code(ResponseError::TopicAuthorizationFailed)
        );
        // Groups: the allowed group passes the authorizer (the member is unknown), the
        // denied prefix does not.
        assert_eq!(
            heartbeat(conn, "g-ok"),
            code(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            heartbeat(conn, "bad-1"),
            code(ResponseError::GroupAuthorizationFailed)
        );
        assert_eq!(
            find_group_coordinator(conn, "bad-1"),
            code(ResponseError::GroupAuthorizationFailed)
        );
        assert_eq!(offset_commit(conn, "g-ok", "app-orders"), 0);
        assert_eq!(
            offset_commit(conn, "g-ok", "secret"),
            code(ResponseError::TopicAuthorizationFailed)
        );
        assert_eq!(
            offset_commit(conn, "bad-1", "app-orders"),
            code(ResponseError::GroupAuthorizationFailed)
        );
        // KIP-848: subscribing to a topic the caller may not describe is refused.
        assert_eq!(
            consumer_heartbeat(conn, "g-ok-848", "secret"),
            code(ResponseError::TopicAuthorizationFailed)
        );
        assert_eq!(consumer_heartbeat(conn, "g-ok-848", "app-orders"), 0);
        assert_eq!(
            consumer_heartbeat(conn, "bad-1", "app-orders"),
            code(ResponseError::GroupAuthorizationFailed)
        );
        // Transactions: the denied transactional id; an idempotent producer may (WRITE on
        // some topic, KIP-679).
        assert_eq!(
            init_producer_id(conn, Some("tx-no")),
            code(ResponseError::TransactionalIdAuthorizationFailed)
        );
        assert_eq!(init_producer_id(conn, None), 0);
        transaction_apis_follow_the_acls(conn);
        // Admin: CREATE is no longer allowed on the cluster (it has an ACL now), DELETE on
        // the denied topic neither; the ACL APIs need ALTER on the cluster.
        assert_eq!(
            create_topic(conn, "app-new"),
            code(ResponseError::TopicAuthorizationFailed)
        );
        assert_eq!(
            delete_topic(conn, "secret"),
            code(ResponseError::TopicAuthorizationFailed)
        );
        let again = create_acls(conn, vec![creation(TOPIC, "x", LITERAL, READ, ALLOW)]);
        assert_eq!(
            again.results[0].error_code,
            code(ResponseError::ClusterAuthorizationFailed)
        );
        // DESCRIBE on the cluster is allowed: the ACLs can be listed.
        let described = describe_all_acls(conn);
        assert_eq!(described.error_code, 0);
        let count: usize = described.resources.iter().map(|r| r.acls.len()).sum();
        assert_eq!(count, 7);
        let cluster = conn
            .request(
                1,
                &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
            )
            .expect("DescribeCluster");
        assert_eq!(cluster.cluster_authorized_operations, 1 << 8);
    };
    check(&mut conn);
    broker.restart();
    let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
    check(&mut conn);
}

/// DeleteAcls removes what its filter matches and lists it; with the cluster open to the
/// caller again the topic can be created.
#[test]
fn delete_acls_removes_the_matching_bindings() {
    let (broker, mut conn) = start(&[
        "--authorizer",
        "on",
        "--allow-everyone-if-no-acl-found",
        "true",
    ]);
    let created = create_acls(
        &mut conn,
        vec![
            creation(CLUSTER, "kafka-cluster", LITERAL, DESCRIBE, ALLOW),
            creation(TOPIC, "a", LITERAL, READ, ALLOW),
        ],
    );
    assert!(created.results.iter().all(|r| r.error_code == 0));
    // "a" has an ACL (no CREATE) and so has the cluster: refused. ("b" has none: allowed.)
    assert_eq!(
        create_topic(&mut conn, "a"),
        code(ResponseError::TopicAuthorizationFailed)
    );
    // Without ALTER on the cluster the caller cannot delete them...
    let filter = DeleteAclsFilter::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(CLUSTER)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    let request = DeleteAclsRequest::default().with_filters(vec![filter.clone()]);
    let refused = conn.request(3, &request).expect("DeleteAcls");
    assert_eq!(
        refused.filter_results[0].error_code,
        code(ResponseError::ClusterAuthorizationFailed)
    );
    // ...but a super user can (a second broker would be needed for two principals; the same
    // broker restarted with the anonymous user as super user).
    drop(conn);
    let mut broker = broker;
    broker.stop();
    let data_dir = broker.data_dir().to_path_buf();
    let su = TestBroker::start_in(
        1,
        Some(data_dir),
        &["--authorizer", "on", "--super-users", "User:ANONYMOUS"],
    );
    let mut conn = RawConn::connect(su.socket_addr()).expect("connect");
    let deleted = conn.request(3, &request).expect("DeleteAcls");
    assert_eq!(deleted.filter_results[0].error_code, 0);
    let matched = &deleted.filter_results[0].matching_acls;
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0].resource_name.as_str(), "kafka-cluster");
    let left = describe_all_acls(&mut conn);
    assert_eq!(left.resources.len(), 1);
    assert_eq!(left.resources[0].resource_name.as_str(), "a");
    // A filter with an UNKNOWN element is refused.
    let bad = DeleteAclsRequest::default().with_filters(vec![filter.with_operation(0)]);
    let refused = conn.request(3, &bad).expect("DeleteAcls");
    assert_eq!(
        refused.filter_results[0].error_code,
        code(ResponseError::InvalidRequest)
    );
}

/// Runs `freshet args...` against `broker`; (exit code, stdout, stderr).
fn cli(broker: &TestBroker, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::broker_bin())
        .args(args)
        .env("FRESHET_BROKERS", broker.addr())
        .output()
        .expect("run freshet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `freshet acl add|list|remove` against the real broker: the bindings added are listed (in
/// JSON too) and enforced, remove takes them away, and the broker's refusals are exit 1 with
/// Kafka's error name.
#[test]
fn freshet_acl_cli_adds_lists_and_removes() {
    let broker = TestBroker::start_with(
        1,
        &["--authorizer", "on", "--super-users", "User:ANONYMOUS"],
    );
    let (code, out, err) = cli(
        &broker,
        &[
            "acl",
            "add",
            "--topic",
            "logs-",
            "--pattern",
            "prefixed",
            "--principal",
            "User:alice",
            "--operation",
            "read",
            "--operation",
            "describe",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(
        &broker,
        &[
            "acl",
            "add",
            "--group",
            "g",
            "--principal",
            "User:bob",
            "--operation",
            "read",
            "--deny",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("DENY"), "{out}");
    let (code, out, _) = cli(&broker, &["acl", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.contains("PREFIXED") && out.contains("User:alice") && out.contains("logs-"),
        "{out}"
    );
    let (code, out, _) = cli(
        &broker,
        &[
            "acl",
            "list",
            "--topic",
            "logs-app",
            "--pattern",
            "match",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{out}");
    let (code, out, _) = cli(
        &broker,
        &[
            "acl",
            "remove",
            "--principal",
            "User:alice",
            "--operation",
            "read",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = cli(&broker, &["acl", "list", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{out}");
    // The broker refuses a principal without its type: exit 1, Kafka's error name.
    let (code, _, err) = cli(
        &broker,
        &[
            "acl",
            "add",
            "--cluster",
            "--principal",
            "alice",
            "--operation",
            "alter",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("INVALID_REQUEST"), "{err}");
    // Usage errors before connecting: exit 2.
    let (code, _, _) = cli(
        &broker,
        &["acl", "add", "--topic", "t", "--operation", "read"],
    );
    assert_eq!(code, 2);
}

/// Configs, group descriptions and listings, and the quorum follow the ACLs as in Kafka:
/// DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic, DESCRIBE on the group (with the caller's
/// authorized operations), ListGroups filtered by DESCRIBE, DescribeQuorum DESCRIBE on the
/// cluster.
#[test]
fn configs_groups_and_quorum_follow_the_acls() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        DescribeConfigsRequest, DescribeGroupsRequest, DescribeQuorumRequest,
        IncrementalAlterConfigsRequest,
    };
    const DESCRIBE_CONFIGS: i8 = 10;
    const ALTER_CONFIGS: i8 = 11;
    let (_broker, mut conn) = start(&[
        "--authorizer",
        "on",
        "--allow-everyone-if-no-acl-found",
        "true",
    ]);
    assert_eq!(create_topic(&mut conn, "cfg-ok"), 0);
    assert_eq!(create_topic(&mut conn, "cfg-no"), 0);
    let created = create_acls(
        &mut conn,
        vec![
            creation(TOPIC, "cfg-no", LITERAL, DESCRIBE_CONFIGS, DENY),
            creation(TOPIC, "cfg-no", LITERAL, ALTER_CONFIGS, DENY),
            creation(GROUP, "g-no", LITERAL, DESCRIBE, DENY),
            creation(GROUP, "g-ok", LITERAL, READ, ALLOW),
        ],
    );
    assert!(created.results.iter().all(|r| r.error_code == 0));
    let describe = |conn: &mut RawConn, topic: &str| {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(topic))
                .with_configuration_keys(None),
        ]);
        conn.request(4, &request).expect("DescribeConfigs").results[0].error_code
    };
    assert_eq!(describe(&mut conn, "cfg-ok"), 0);
    assert_eq!(
        describe(&mut conn, "cfg-no"),
        code(ResponseError::TopicAuthorizationFailed)
    );
    let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("cfg-no"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(s("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(s("1000")))]),
    ]);
    let altered = conn.request(1, &alter).expect("IncrementalAlterConfigs");
    assert_eq!(
        altered.responses[0].error_code,
        code(ResponseError::TopicAuthorizationFailed)
    );
    let groups = DescribeGroupsRequest::default()
        .with_groups(vec![s("g-no").into(), s("g-ok").into()])
        .with_include_authorized_operations(true);
    let described = conn.request(5, &groups).expect("DescribeGroups");
    assert_eq!(
        described.groups[0].error_code,
        code(ResponseError::GroupAuthorizationFailed)
    );
    assert_eq!(described.groups[1].error_code, 0);
    // READ allowed, and the DESCRIBE it implies: bits 3 and 8.
    assert_eq!(
        described.groups[1].authorized_operations,
        (1 << 3) | (1 << 8)
    );
    // The quorum: open while the cluster has no ACL, refused once DESCRIBE is denied.
    let quorum = DescribeQuorumRequest::default().with_topics(vec![
        kafka_protocol::messages::describe_quorum_request::TopicData::default()
            .with_topic_name(TopicName(s("__cluster_metadata")))
            .with_partitions(vec![
                kafka_protocol::messages::describe_quorum_request::PartitionData::default(),
            ]),
    ]);
    assert_eq!(
        conn.request(1, &quorum).expect("DescribeQuorum").error_code,
        0
    );
    let created = create_acls(
        &mut conn,
        vec![creation(CLUSTER, "kafka-cluster", LITERAL, DESCRIBE, DENY)],
    );
    assert_eq!(created.results[0].error_code, 0);
    assert_eq!(
        conn.request(1, &quorum).expect("DescribeQuorum").error_code,
        code(ResponseError::ClusterAuthorizationFailed)
    );
}

/// A follower's Fetch (`replica_id` >= 0) as broker `replica` of `topic`/0 from offset 0:
/// the partition's error code.
fn follower_fetch(conn: &mut RawConn, topic: &str, replica: i32) -> i16 {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(replica))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = conn.request(12, &request).expect("Fetch");
    response.responses[0].partitions[0].error_code
}

/// Partition 0 of `topic` as `node` shows it, once it has a leader: (leader, replicas).
fn replicated_leader(cluster: &TestCluster, node: usize, topic: &str) -> (i32, Vec<i32>) {
    cluster.wait_until(REPL_WITHIN, &format!("a leader of {topic}"), || {
        let m = cluster.metadata(node).map_err(|e| e.to_string())?;
        let t = m
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or("no topic")?;
        let p = t.partitions.first().ok_or("no partition")?;
        if p.error_code != 0 || p.leader_id.0 < 0 || p.replica_nodes.len() != 3 {
            return Err(format!("error {} leader {}", p.error_code, p.leader_id.0));
        }
        Ok((p.leader_id.0, p.replica_nodes.iter().map(|b| b.0).collect()))
    })
}

const REPL_WITHIN: Duration = Duration::from_secs(60);
const CLUSTER_ACTION: i8 = 9;

/// Issue 14: with the authorizer on, follower fetches (which move the high watermark),
/// WriteTxnMarkers and AddPartitionsToTxn v4+ need CLUSTER_ACTION on the cluster, as in
/// Kafka. While the cluster has ACLs but none grants it, a follower Fetch gets
/// TOPIC_AUTHORIZATION_FAILED, WriteTxnMarkers and AddPartitionsToTxn v4
/// CLUSTER_AUTHORIZATION_FAILED; once User:ANONYMOUS (the brokers' principal on a plaintext
/// listener) has it, a replication factor 3 topic with `min.insync.replicas` = 3 takes an
/// acks=all produce (so both followers replicate), and a replica id that is not a follower of
/// the partition gets NOT_LEADER_OR_FOLLOWER.
#[test]
fn follower_fetches_need_cluster_action() {
    common::within(Duration::from_secs(240), || {
        let cluster = TestCluster::start(
            3,
            ClusterOptions {
                settings: "authorizer = \"on\"\nallow_everyone_if_no_acl_found = true\n\
                           replica_fetch_backoff_ms = 200\n"
                    .into(),
                ..ClusterOptions::default()
            },
        );
        let mut conn = RawConn::connect(cluster.socket_addr(0)).expect("connect");
        conn.set_read_timeout(Duration::from_secs(40));
        // ACLs on the cluster, none of them CLUSTER_ACTION: no one may act as a broker.
        let created = create_acls(
            &mut conn,
            vec![
                creation(CLUSTER, "kafka-cluster", LITERAL, 7, ALLOW), // ALTER
                creation(CLUSTER, "kafka-cluster", LITERAL, 5, ALLOW), // CREATE
                creation(CLUSTER, "kafka-cluster", LITERAL, DESCRIBE, ALLOW),
            ],
        );
        assert!(created.results.iter().all(|r| r.error_code == 0));
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(s("guarded")))
                .with_num_partitions(1)
                .with_replication_factor(3)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(s("min.insync.replicas"))
                    .with_value(Some(s("3")))])]);
        let answer = conn.request(7, &request).expect("CreateTopics");
        assert_eq!(answer.topics[0].error_code, 0, "CreateTopics");
        let (leader, replicas) = replicated_leader(&cluster, 0, "guarded");
        let follower = *replicas.iter().find(|r| **r != leader).expect("a follower");
        let mut to_leader = RawConn::connect(cluster.socket_addr(leader as usize)).expect("leader");
        to_leader.set_read_timeout(Duration::from_secs(40));
        cluster.wait_until(REPL_WITHIN, "the cluster ACLs on the leader", || {
            match follower_fetch(&mut to_leader, "guarded", follower) {
                29 => Ok(()), // TOPIC_AUTHORIZATION_FAILED
                code => Err(format!("follower fetch error {code}")),
            }
        });
        let markers =
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(4242))
                .with_producer_epoch(0)
                .with_transaction_result(true)
                .with_coordinator_epoch(0)
                .with_topics(vec![WritableTxnMarkerTopic::default()
                    .with_name(TopicName(s("guarded")))
                    .with_partition_indexes(vec![0])])]);
        let answer = to_leader.request(1, &markers).expect("WriteTxnMarkers");
        assert_eq!(
            answer.markers[0].topics[0].partitions[0].error_code,
            code(ResponseError::ClusterAuthorizationFailed)
        );
        let add = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_producer_id(ProducerId(4242))
                .with_producer_epoch(0)
                .with_verify_only(true),
        ]);
        let answer = to_leader.request(4, &add).expect("AddPartitionsToTxn");
        assert_eq!(
            answer.error_code,
            code(ResponseError::ClusterAuthorizationFailed)
        );

        // The brokers' principal gets CLUSTER_ACTION: replication goes on.
        let created = create_acls(
            &mut conn,
            vec![creation(
                CLUSTER,
                "kafka-cluster",
                LITERAL,
                CLUSTER_ACTION,
                ALLOW,
            )],
        );
        assert_eq!(created.results[0].error_code, 0);
        cluster.wait_until(REPL_WITHIN, "an acks=all produce with min.insync 3", || {
            let mut conn = RawConn::connect(cluster.socket_addr(leader as usize))
                .map_err(|e| e.to_string())?;
            conn.set_read_timeout(Duration::from_secs(40));
            let request =
                common::produce_request("guarded", 0, one_record()).with_timeout_ms(5_000);
            let response: kafka_protocol::messages::ProduceResponse =
                conn.request(9, &request).map_err(|e| e.to_string())?;
            match response.responses[0].partition_responses[0].error_code {
                0 => Ok(()),
                code => Err(format!("produce error {code}")),
            }
        });
        // Not a replica of the partition, or the leader itself: refused, nothing recorded.
        for replica in [99, leader] {
            assert_eq!(
                follower_fetch(&mut to_leader, "guarded", replica),
                code(ResponseError::NotLeaderOrFollower),
                "replica id {replica}"
            );
        }
    });
}
