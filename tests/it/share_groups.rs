//! Share groups (KIP-932) over raw requests against the real broker: ShareGroupHeartbeat and
//! ShareGroupDescribe as Kafka answers them, share-session epochs, malformed and out-of-place
//! acknowledgements answered with Kafka's codes (the connection stays open), ListGroups'
//! `share` type, and the in-flight bound `group_share_partition_max_record_locks`.

use crate::common;

use bytes::Bytes;
use common::{RawConn, TestBroker};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, GroupId, ListGroupsRequest, ShareAcknowledgeRequest, ShareFetchRequest,
    ShareFetchResponse, ShareGroupDescribeRequest, ShareGroupHeartbeatRequest,
    ShareGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A broker whose share partitions start at the earliest offset, with at most 100 in-flight
/// records each (Kafka's minimum for `group.share.partition.max.record.locks`).
fn broker() -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("freshet.toml");
    std::fs::write(
        &config,
        "share_auto_offset_reset = \"earliest\"\ngroup_share_partition_max_record_locks = 100\n",
    )
    .expect("config");
    let broker = TestBroker::start_with(1, &["--config", config.to_str().expect("path")]);
    (broker, dir)
}

/// Creates a one-partition topic with `records` records; returns its id.
fn topic_with_records(conn: &mut RawConn, name: &str, records: usize) -> Uuid {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(1)
            .with_replication_factor(-1)]);
    let response = conn.request(7, &request).expect("CreateTopics");
    assert_eq!(response.topics[0].error_code, 0);
    let batch: Vec<NewRecord> = (0..records)
        .map(|i| (None, Some(Bytes::from(format!("v{i}"))), 1_700_000_000_000))
        .collect();
    let batch = encode_batch(&batch, Compression::None).expect("batch");
    assert_eq!(
        common::produce_records(conn, 9, name, 0, batch).error_code,
        0
    );
    response.topics[0].topic_id
}

fn heartbeat(
    conn: &mut RawConn,
    member: &str,
    epoch: i32,
    topic: Option<&str>,
) -> ShareGroupHeartbeatResponse {
    let request = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("sg")))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_subscribed_topic_names(topic.map(|t| vec![TopicName(s(t))]));
    conn.request(1, &request).expect("ShareGroupHeartbeat")
}

fn share_fetch(
    conn: &mut RawConn,
    member: &str,
    epoch: i32,
    topic_id: Uuid,
    acks: Vec<AcknowledgementBatch>,
    max_records: i32,
) -> ShareFetchResponse {
    let request = ShareFetchRequest::default()
        .with_group_id(Some(GroupId(s("sg"))))
        .with_member_id(Some(s(member)))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_max_records(max_records)
        .with_batch_size(max_records)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition_index(0)
                .with_acknowledgement_batches(acks)])]);
    conn.request(1, &request).expect("ShareFetch")
}

fn ack(first: i64, last: i64, types: Vec<i8>) -> AcknowledgementBatch {
    AcknowledgementBatch::default()
        .with_first_offset(first)
        .with_last_offset(last)
        .with_acknowledge_types(types)
}

/// Acquired (first, last, delivery count) runs of the only partition of a ShareFetch answer.
fn acquired(r: &ShareFetchResponse) -> Vec<(i64, i64, i16)> {
    r.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .flat_map(|p| &p.acquired_records)
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect()
}

fn ack_error(r: &ShareFetchResponse) -> i16 {
    r.responses[0].partitions[0].acknowledge_error_code
}

/// Two members of a one-partition topic both get partition 0; the group describes as Kafka's
/// (`simple` assignor, Stable, epochs); a stale epoch is fenced; ListGroups filters on `share`.
#[test]
fn heartbeat_and_describe_share_a_partition() {
    let (b, _dir) = broker();
    let mut conn = RawConn::connect(b.socket_addr()).expect("connect");
    let topic_id = topic_with_records(&mut conn, "hb", 1);
    let a = heartbeat(&mut conn, "member-a", 0, Some("hb"));
    assert_eq!((a.error_code, a.member_epoch), (0, 1));
    let assigned = a.assignment.expect("assignment on join").topic_partitions;
    assert_eq!(
        (assigned[0].topic_id, assigned[0].partitions.clone()),
        (topic_id, vec![0])
    );
    let bm = heartbeat(&mut conn, "member-b", 0, Some("hb"));
    assert_eq!((bm.error_code, bm.member_epoch), (0, 2));
    assert_eq!(
        bm.assignment.expect("assignment").topic_partitions[0].partitions,
        vec![0]
    );
    let fenced = heartbeat(&mut conn, "member-a", 7, None);
    assert_eq!(fenced.error_code, code(ResponseError::FencedMemberEpoch));
    let unknown = heartbeat(&mut conn, "member-z", 1, None);
    assert_eq!(unknown.error_code, code(ResponseError::UnknownMemberId));
    let no_topics = heartbeat(&mut conn, "member-c", 0, None);
    assert_eq!(no_topics.error_code, code(ResponseError::InvalidRequest));

    let described = conn
        .request(
            1,
            &ShareGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(s("sg")), GroupId(s("nope"))]),
        )
        .expect("ShareGroupDescribe");
    let g = &described.groups[0];
    assert_eq!(g.error_code, 0);
    assert_eq!(
        (g.group_state.as_str(), g.assignor_name.as_str()),
        ("Stable", "simple")
    );
    assert_eq!((g.group_epoch, g.members.len()), (2, 2));
    for m in &g.members {
        assert_eq!(m.assignment.topic_partitions[0].topic_name.as_str(), "hb");
    }
    assert_eq!(
        described.groups[1].error_code,
        code(ResponseError::GroupIdNotFound)
    );
    assert_eq!(described.groups[1].group_state.as_str(), "Dead");

    let listed = conn
        .request(
            5,
            &ListGroupsRequest::default().with_types_filter(vec![s("share")]),
        )
        .expect("ListGroups");
    let ids: Vec<(&str, &str)> = listed
        .groups
        .iter()
        .map(|g| (g.group_id.as_str(), g.group_type.as_str()))
        .collect();
    assert_eq!(ids, vec![("sg", "share")]);
    // Leaving: epoch -1 answered, the group shrinks.
    let left = heartbeat(&mut conn, "member-b", -1, None);
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
}

/// Share-session epochs (Kafka's ShareSessionCache) and malformed or misplaced
/// acknowledgements: each answered with Kafka's code, on the same connection.
#[test]
fn sessions_and_bad_acknowledgements_get_kafka_codes() {
    let (b, _dir) = broker();
    let mut conn = RawConn::connect(b.socket_addr()).expect("connect");
    let topic_id = topic_with_records(&mut conn, "acks", 5);
    // No session yet.
    let r = share_fetch(&mut conn, "m", 3, topic_id, vec![], 10);
    assert_eq!(r.error_code, code(ResponseError::ShareSessionNotFound));
    // Opening a session cannot acknowledge.
    let r = share_fetch(&mut conn, "m", 0, topic_id, vec![ack(0, 0, vec![1])], 10);
    assert_eq!(r.error_code, code(ResponseError::InvalidRequest));
    let r = share_fetch(&mut conn, "m", 0, topic_id, vec![], 2);
    assert_eq!(r.error_code, 0);
    assert_eq!(acquired(&r), vec![(0, 1, 1)]);
    assert!(r.responses[0].partitions[0]
        .records
        .as_ref()
        .is_some_and(|b| !b.is_empty()));
    // A wrong epoch.
    let r = share_fetch(&mut conn, "m", 5, topic_id, vec![], 2);
    assert_eq!(r.error_code, code(ResponseError::InvalidShareSessionEpoch));
    // Malformed acknowledgements: INVALID_REQUEST for the partition, nothing applied (each of
    // these fetches acquires one more record: offsets 2, 3, 4).
    let malformed = [
        ack(0, 1, vec![9]),
        ack(1, 0, vec![1]),
        ack(0, 1, vec![1, 1, 1]),
    ];
    for (epoch, bad) in (1..).zip(malformed) {
        let r = share_fetch(&mut conn, "m", epoch, topic_id, vec![bad], 1);
        assert_eq!(
            ack_error(&r),
            code(ResponseError::InvalidRequest),
            "epoch {epoch}"
        );
        let offset = i64::from(epoch) + 1;
        assert_eq!(acquired(&r), vec![(offset, offset, 1)]);
    }
    // Offsets this member does not hold: INVALID_RECORD_STATE.
    let r = share_fetch(&mut conn, "m", 4, topic_id, vec![ack(7, 7, vec![1])], 1);
    assert_eq!(ack_error(&r), code(ResponseError::InvalidRecordState));
    // ShareAcknowledge cannot open a session; it accepts what the member holds.
    let request = |epoch: i32| {
        ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(s("sg"))))
            .with_member_id(Some(s("m")))
            .with_share_session_epoch(epoch)
            .with_topics(vec![kafka_protocol::messages::share_acknowledge_request::AcknowledgeTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![kafka_protocol::messages::share_acknowledge_request::AcknowledgePartition::default()
                    .with_partition_index(0)
                    .with_acknowledgement_batches(vec![
                        kafka_protocol::messages::share_acknowledge_request::AcknowledgementBatch::default()
                            .with_first_offset(0)
                            .with_last_offset(1)
                            .with_acknowledge_types(vec![1]),
                    ])])])
    };
    let r = conn.request(1, &request(0)).expect("ShareAcknowledge");
    assert_eq!(r.error_code, code(ResponseError::InvalidShareSessionEpoch));
    let r = conn.request(1, &request(5)).expect("ShareAcknowledge");
    assert_eq!(
        (r.error_code, r.responses[0].partitions[0].error_code),
        (0, 0)
    );
    // Released records come back with a higher delivery count; accepted ones never.
    let r = share_fetch(&mut conn, "m", 6, topic_id, vec![ack(2, 4, vec![2])], 10);
    assert_eq!(ack_error(&r), 0);
    assert_eq!(acquired(&r), vec![(2, 4, 2)]);
    // No group or member id.
    let r: ShareFetchResponse = conn
        .request(1, &ShareFetchRequest::default().with_share_session_epoch(0))
        .expect("ShareFetch");
    assert_eq!(r.error_code, code(ResponseError::InvalidRequest));
}

/// A share partition never holds more than `group_share_partition_max_record_locks` records
/// in flight: 1000 records, a fetch for all of them gets 100; accepting them frees room.
#[test]
fn in_flight_records_are_bounded_by_the_lock_limit() {
    let (b, _dir) = broker();
    let mut conn = RawConn::connect(b.socket_addr()).expect("connect");
    let topic_id = topic_with_records(&mut conn, "bounded", 1000);
    let r = share_fetch(&mut conn, "m", 0, topic_id, vec![], 1000);
    assert_eq!(acquired(&r), vec![(0, 99, 1)]);
    let other = share_fetch(&mut conn, "other", 0, topic_id, vec![], 1000);
    assert_eq!(acquired(&other), vec![]);
    let r = share_fetch(&mut conn, "m", 1, topic_id, vec![ack(0, 99, vec![1])], 1000);
    assert_eq!(ack_error(&r), 0);
    assert_eq!(acquired(&r), vec![(100, 199, 1)]);
}

/// DescribeShareGroupOffsets v0: the start offset of each share partition (-1 before it is
/// started), all of the group's with a null topic list; unknown groups and topics get Kafka's
/// codes.
#[test]
fn describe_share_group_offsets_reports_start_offsets() {
    use kafka_protocol::messages::describe_share_group_offsets_request::{
        DescribeShareGroupOffsetsRequestGroup, DescribeShareGroupOffsetsRequestTopic,
    };
    use kafka_protocol::messages::DescribeShareGroupOffsetsRequest;
    let (b, _dir) = broker();
    let mut conn = RawConn::connect(b.socket_addr()).expect("connect");
    let topic_id = topic_with_records(&mut conn, "described", 10);
    let joined = heartbeat(&mut conn, "m", 0, Some("described"));
    assert_eq!(joined.error_code, 0);
    let r = share_fetch(&mut conn, "m", 0, topic_id, vec![], 4);
    assert_eq!(acquired(&r), vec![(0, 3, 1)]);
    let r = share_fetch(&mut conn, "m", 1, topic_id, vec![ack(0, 2, vec![1])], 0);
    assert_eq!(ack_error(&r), 0);
    let group = |id: &str, topics: Option<Vec<(&str, Vec<i32>)>>| {
        DescribeShareGroupOffsetsRequestGroup::default()
            .with_group_id(GroupId(s(id)))
            .with_topics(topics.map(|ts| {
                ts.into_iter()
                    .map(|(t, ps)| {
                        DescribeShareGroupOffsetsRequestTopic::default()
                            .with_topic_name(TopicName(s(t)))
                            .with_partitions(ps)
                    })
                    .collect()
            }))
    };
    let request = DescribeShareGroupOffsetsRequest::default().with_groups(vec![
        group("sg", None),
        group(
            "sg",
            Some(vec![("described", vec![0, 5]), ("missing", vec![0])]),
        ),
        group("nope", None),
    ]);
    let response = conn
        .request(0, &request)
        .expect("DescribeShareGroupOffsets");
    let all = &response.groups[0];
    assert_eq!(all.error_code, 0);
    assert_eq!(all.topics.len(), 1);
    assert_eq!(all.topics[0].topic_id, topic_id);
    let p = &all.topics[0].partitions[0];
    assert_eq!((p.partition_index, p.start_offset, p.error_code), (0, 3, 0));
    let named = &response.groups[1];
    let starts: Vec<(i32, i64)> = named.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.start_offset))
        .collect();
    assert_eq!(starts, vec![(0, 3), (5, -1)]);
    assert_eq!(
        named.topics[1].partitions[0].error_code,
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        response.groups[2].error_code,
        code(ResponseError::GroupIdNotFound)
    );
}

/// AlterShareGroupOffsets moves an empty share group's partition to a start offset (nothing in
/// flight, written durably: it holds across a restart); refused while the group has members;
/// DeleteShareGroupOffsets drops the state so the next fetch starts by the reset policy.
#[test]
fn alter_and_delete_share_group_offsets() {
    use kafka_protocol::messages::alter_share_group_offsets_request::{
        AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
    };
    use kafka_protocol::messages::delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic;
    use kafka_protocol::messages::{AlterShareGroupOffsetsRequest, DeleteShareGroupOffsetsRequest};
    let (mut b, _dir) = broker();
    let mut conn = RawConn::connect(b.socket_addr()).expect("connect");
    let topic_id = topic_with_records(&mut conn, "altered", 10);
    let alter = |start: i64, partition: i32| {
        AlterShareGroupOffsetsRequest::default()
            .with_group_id(GroupId(s("sg")))
            .with_topics(vec![AlterShareGroupOffsetsRequestTopic::default()
                .with_topic_name(TopicName(s("altered")))
                .with_partitions(vec![
                    AlterShareGroupOffsetsRequestPartition::default()
                        .with_partition_index(partition)
                        .with_start_offset(start),
                ])])
    };
    // No such share group yet.
    let r = conn
        .request(0, &alter(7, 0))
        .expect("AlterShareGroupOffsets");
    assert_eq!(r.error_code, code(ResponseError::GroupIdNotFound));
    // With a member: NON_EMPTY_GROUP.
    assert_eq!(heartbeat(&mut conn, "m", 0, Some("altered")).error_code, 0);
    let r = conn
        .request(0, &alter(7, 0))
        .expect("AlterShareGroupOffsets");
    assert_eq!(r.error_code, code(ResponseError::NonEmptyGroup));
    assert_eq!(heartbeat(&mut conn, "m", -1, None).error_code, 0);
    // Empty: moved to 7; an unknown partition is refused alone.
    let r = conn
        .request(0, &alter(7, 0))
        .expect("AlterShareGroupOffsets");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    let r = conn
        .request(0, &alter(7, 3))
        .expect("AlterShareGroupOffsets");
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        code(ResponseError::UnknownTopicOrPartition)
    );
    b.kill9();
    b.start_again();
    let mut conn = RawConn::connect(b.socket_addr()).expect("connect");
    let r = share_fetch(&mut conn, "m2", 0, topic_id, vec![], 100);
    assert_eq!(acquired(&r), vec![(7, 9, 1)]);
    let r = share_fetch(&mut conn, "m2", -1, topic_id, vec![], 100);
    assert_eq!(r.error_code, 0);
    // Delete: the share partition starts again from the earliest offset.
    let delete = DeleteShareGroupOffsetsRequest::default()
        .with_group_id(GroupId(s("sg")))
        .with_topics(vec![
            DeleteShareGroupOffsetsRequestTopic::default().with_topic_name(TopicName(s("altered"))),
            DeleteShareGroupOffsetsRequestTopic::default().with_topic_name(TopicName(s("nope"))),
        ]);
    let r = conn.request(0, &delete).expect("DeleteShareGroupOffsets");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(
        r.responses[1].error_code,
        code(ResponseError::UnknownTopicOrPartition)
    );
    let r = share_fetch(&mut conn, "m3", 0, topic_id, vec![], 100);
    assert_eq!(acquired(&r), vec![(0, 9, 1)]);
}

/// `freshet group describe` of a share group: each share partition's start offset, the log
/// end, and the lag between them (records not yet done: in flight or not delivered).
#[test]
fn cli_group_describe_shows_a_share_group() {
    let (b, _dir) = broker();
    let mut conn = RawConn::connect(b.socket_addr()).expect("connect");
    let topic_id = topic_with_records(&mut conn, "cli-share", 10);
    let r = share_fetch(&mut conn, "m", 0, topic_id, vec![], 4);
    assert_eq!(acquired(&r), vec![(0, 3, 1)]);
    let r = share_fetch(&mut conn, "m", 1, topic_id, vec![ack(0, 3, vec![1])], 0);
    assert_eq!(ack_error(&r), 0);
    let output = std::process::Command::new(common::broker_bin())
        .args(["group", "describe", "sg", "--format", "json"])
        .env("FRESHET_BROKERS", b.addr())
        .output()
        .expect("run freshet");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let g = &doc[0];
    assert_eq!(g["protocol_type"], "share");
    let p = &g["partitions"][0];
    assert_eq!(
        (p["topic"].as_str(), p["partition"].as_i64()),
        (Some("cli-share"), Some(0))
    );
    // Offsets 0-3 accepted; offset 4 acquired by the second fetch: start 4, end 10, lag 6.
    assert_eq!(p["committed_offset"], 4);
    assert_eq!(p["log_end_offset"], 10);
    assert_eq!(g["total_lag"], 6);
}
