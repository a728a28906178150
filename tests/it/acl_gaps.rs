//! ACL checks Kafka makes that Freshet missed, and DeleteAcls as one metadata step (issue 15),
//! over raw protocol requests against the real binary so that each code is checked exactly.
//!
//! - Produce checks WRITE on the transactional id only for a request holding transactional
//!   batches (Kafka's `KafkaApis.handleProduceRequest`), and then also when no id is given.
//! - CreateTopics gives a new topic's layout and configs only to a caller with
//!   DESCRIBE_CONFIGS on it (Kafka's controller: otherwise `topic_config_error_code`
//!   TOPIC_AUTHORIZATION_FAILED, no configs, -1 partitions and replication factor).
//! - DeleteAcls matches and removes on the active controller in one step: a binding created
//!   through one node is removed by a DeleteAcls sent at once through another, and two
//!   concurrent DeleteAcls never both report the same binding.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::cluster::{ClusterOptions, TestCluster};
use common::{within, RawConn, TestBroker};
use freshet_protocol::batch::{encode_batch, Compression};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateTopicsRequest, CreateTopicsResponse, DeleteAclsRequest,
    DescribeAclsRequest, ProduceRequest, ProduceResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as RecordsCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};

const ANON: &str = "User:ANONYMOUS";
const TOPIC: i8 = 2;
const TXN_ID: i8 = 5;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const WRITE: i8 = 4;
const READ: i8 = 3;
const DESCRIBE_CONFIGS: i8 = 10;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
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

fn create_acl(conn: &mut RawConn, c: AclCreation) {
    let answer = conn
        .request(3, &CreateAclsRequest::default().with_creations(vec![c]))
        .expect("CreateAcls");
    assert_eq!(answer.results[0].error_code, 0, "{answer:?}");
}

/// One transactional batch of producer 1000 epoch 0.
fn transactional_batch() -> Bytes {
    let record = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 1000,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from_static(b"t")),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: RecordsCompression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &[record], &options).expect("encode batch");
    buf.freeze()
}

fn plain_batch() -> Bytes {
    encode_batch(
        &[(None, Some(Bytes::from_static(b"v")), 1_700_000_000_000)],
        Compression::None,
    )
    .expect("batch")
}

/// Produce v9 of `records` to `topic`/0 naming `transactional_id`: the partition's error.
fn produce(conn: &mut RawConn, topic: &str, transactional_id: Option<&str>, records: Bytes) -> i16 {
    let request: ProduceRequest = common::produce_request(topic, 0, records)
        .with_transactional_id(transactional_id.map(|t| TransactionalId(s(t))));
    let response: ProduceResponse = conn.request(9, &request).expect("Produce");
    response.responses[0].partition_responses[0].error_code
}

/// Authorizer on, everything allowed where no ACL exists; WRITE on transactional id `tx`
/// denied. A plain batch naming `tx` is appended (failed before: every partition
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED); a transactional batch naming `tx`, or naming no id,
/// is refused with it.
#[test]
fn produce_checks_the_transactional_id_only_for_transactional_batches() {
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start_with(
            1,
            &[
                "--authorizer",
                "on",
                "--allow-everyone-if-no-acl-found",
                "true",
            ],
        );
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        conn.set_read_timeout(Duration::from_secs(20));
        create_acl(&mut conn, creation(TXN_ID, "tx", LITERAL, WRITE, DENY));
        assert_eq!(create_topic(&mut conn, "plain").topics[0].error_code, 0);
        assert_eq!(produce(&mut conn, "plain", None, plain_batch()), 0);
        assert_eq!(
            produce(&mut conn, "plain", Some("tx"), plain_batch()),
            0,
            "a non-transactional batch is not checked against its transactional id"
        );
        let refused = ResponseError::TransactionalIdAuthorizationFailed.code();
        assert_eq!(
            produce(&mut conn, "plain", Some("tx"), transactional_batch()),
            refused
        );
        assert_eq!(
            produce(&mut conn, "plain", None, transactional_batch()),
            refused
        );
    });
}

fn create_topic(conn: &mut RawConn, name: &str) -> CreateTopicsResponse {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(2)
            .with_replication_factor(-1)]);
    conn.request(7, &request).expect("CreateTopics")
}

/// DESCRIBE_CONFIGS denied on topics prefixed `hidden`: CreateTopics v7 creates `hidden-1`
/// but answers its configs part TOPIC_AUTHORIZATION_FAILED with no configs and -1 partitions
/// and replication factor (failed before: the configs were given); `shown` gets them all.
#[test]
fn create_topics_gives_configs_only_with_describe_configs() {
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start_with(
            1,
            &[
                "--authorizer",
                "on",
                "--allow-everyone-if-no-acl-found",
                "true",
            ],
        );
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        conn.set_read_timeout(Duration::from_secs(20));
        create_acl(
            &mut conn,
            creation(TOPIC, "hidden", PREFIXED, DESCRIBE_CONFIGS, DENY),
        );
        let hidden = create_topic(&mut conn, "hidden-1");
        let t = &hidden.topics[0];
        assert_eq!(t.error_code, 0, "created: {t:?}");
        assert_eq!(
            t.topic_config_error_code,
            ResponseError::TopicAuthorizationFailed.code(),
            "{t:?}"
        );
        assert_eq!((t.num_partitions, t.replication_factor), (-1, -1));
        assert!(t.configs.as_ref().is_none_or(Vec::is_empty), "{t:?}");
        let shown = create_topic(&mut conn, "shown");
        let t = &shown.topics[0];
        assert_eq!((t.error_code, t.topic_config_error_code), (0, 0));
        assert_eq!((t.num_partitions, t.replication_factor), (2, 1));
        assert!(t.configs.as_ref().is_some_and(|c| !c.is_empty()));
    });
}

/// A DeleteAcls filter for the literal topic `name` (any principal, host, operation).
fn filter_for(name: Option<&str>) -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_type_filter(TOPIC)
        .with_resource_name_filter(name.map(s))
        .with_pattern_type_filter(if name.is_some() { LITERAL } else { 1 })
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1)
}

/// The names of the bindings one DeleteAcls reports removed.
fn delete_acls(conn: &mut RawConn, name: Option<&str>) -> Vec<String> {
    let request = DeleteAclsRequest::default().with_filters(vec![filter_for(name)]);
    let answer = conn.request(3, &request).expect("DeleteAcls");
    let result = &answer.filter_results[0];
    assert_eq!(result.error_code, 0, "{result:?}");
    result
        .matching_acls
        .iter()
        .map(|a| a.resource_name.to_string())
        .collect()
}

fn acl_count(conn: &mut RawConn) -> usize {
    let request = DescribeAclsRequest::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    let answer = conn.request(3, &request).expect("DescribeAcls");
    assert_eq!(answer.error_code, 0);
    answer.resources.iter().map(|r| r.acls.len()).sum()
}

/// Three nodes, the anonymous user a super user. (1) 40 times: CreateAcls through one node,
/// then at once DeleteAcls of that binding through another: each delete removes it (failed
/// before: a node that had not yet applied the creation matched nothing and the binding
/// stayed). (2) One thread creates 60 bindings through node 1 while two threads delete every
/// topic binding through nodes 0 and 2 over and over: at the end no binding is left and each
/// was reported removed exactly once.
#[test]
fn delete_acls_matches_and_removes_in_one_step_across_nodes() {
    within(Duration::from_secs(120), || {
        let cluster = TestCluster::start(
            3,
            ClusterOptions {
                settings: "authorizer = \"on\"\nsuper_users = \"User:ANONYMOUS\"\n".into(),
                ..ClusterOptions::default()
            },
        );
        let connect = |node: usize| {
            let c = RawConn::connect(cluster.socket_addr(node)).expect("connect");
            c.set_read_timeout(Duration::from_secs(20));
            c
        };
        let controller = cluster.wait_controller(Duration::from_secs(20), None);
        let others: Vec<usize> = (0..3).filter(|n| *n != controller).collect();
        let (mut creator, mut deleter) = (connect(others[0]), connect(others[1]));
        let mut missed = Vec::new();
        for i in 0..40 {
            let name = format!("seq-{i}");
            create_acl(&mut creator, creation(TOPIC, &name, LITERAL, READ, ALLOW));
            if delete_acls(&mut deleter, Some(&name)) != vec![name.clone()] {
                missed.push(name);
            }
        }
        cluster.wait_until(
            Duration::from_secs(10),
            "no binding left",
            || match acl_count(&mut connect(controller)) {
                0 => Ok(()),
                n => Err(format!(
                    "{n} bindings left; missed by their delete: {missed:?}"
                )),
            },
        );
        assert!(
            missed.is_empty(),
            "deletes that missed a created binding: {missed:?}"
        );

        let addrs: Vec<_> = (0..3).map(|n| cluster.socket_addr(n)).collect();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let creator = {
            let (addr, done) = (addrs[1], done.clone());
            std::thread::spawn(move || {
                let mut c = RawConn::connect(addr).expect("connect");
                c.set_read_timeout(Duration::from_secs(20));
                for i in 0..60 {
                    create_acl(
                        &mut c,
                        creation(TOPIC, &format!("par-{i}"), LITERAL, READ, ALLOW),
                    );
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let deleters: Vec<_> = [addrs[0], addrs[2]]
            .into_iter()
            .map(|addr| {
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut c = RawConn::connect(addr).expect("connect");
                    c.set_read_timeout(Duration::from_secs(20));
                    let mut removed = Vec::new();
                    loop {
                        let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                        removed.extend(delete_acls(&mut c, None));
                        if finished {
                            return removed;
                        }
                    }
                })
            })
            .collect();
        creator.join().expect("creator");
        let mut reports: BTreeMap<String, usize> = BTreeMap::new();
        for d in deleters {
            for name in d.join().expect("deleter") {
                *reports.entry(name).or_default() += 1;
            }
        }
        // What the deleters' last rounds may not have seen yet is removed now.
        for name in delete_acls(&mut connect(controller), None) {
            *reports.entry(name).or_default() += 1;
        }
        let twice: Vec<_> = reports.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "reported removed more than once: {twice:?}"
        );
        assert_eq!(
            reports.len(),
            60,
            "every binding reported removed once: {reports:?}"
        );
        assert_eq!(acl_count(&mut connect(controller)), 0);
    });
}
