//! Share groups on 3 real nodes, raw requests: where each share API is answered (the group
//! coordinator for ShareGroupHeartbeat, the partition leader for ShareFetch and its
//! acknowledgements: NOT_COORDINATOR / NOT_LEADER_OR_FOLLOWER elsewhere), and the share
//! coordinator's inter-broker APIs (ReadShareGroupState / WriteShareGroupState): one node
//! serves a share partition's state, a write with an older leader epoch is fenced, a read
//! gives back what was written; an AlterShareGroupOffsets of the emptied group reaches the
//! partition leader's next fetch, and fences writes of older state epochs. The consumer-level behaviour (every record once, failover of a
//! partition leader and of the group coordinator) is `tests/python/test_share_cluster.py`.

use std::time::Duration;

use crate::common;

use common::cluster::{ClusterOptions, TestCluster};
use common::RawConn;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic,
};
use kafka_protocol::messages::{
    read_share_group_state_request, write_share_group_state_request, GroupId,
    ReadShareGroupStateRequest, ShareFetchRequest, ShareFetchResponse, ShareGroupHeartbeatRequest,
    TopicName, WriteShareGroupStateRequest,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn share_fetch(
    conn: &mut RawConn,
    epoch: i32,
    topic_id: Uuid,
    acks: Vec<AcknowledgementBatch>,
) -> ShareFetchResponse {
    share_fetch_as(conn, "sg", "member-a", epoch, topic_id, acks)
}

fn share_fetch_as(
    conn: &mut RawConn,
    group: &str,
    member: &str,
    epoch: i32,
    topic_id: Uuid,
    acks: Vec<AcknowledgementBatch>,
) -> ShareFetchResponse {
    let request = ShareFetchRequest::default()
        .with_group_id(Some(GroupId(s(group))))
        .with_member_id(Some(s(member)))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_max_records(10)
        .with_batch_size(10)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition_index(0)
                .with_acknowledgement_batches(acks)])]);
    conn.request(1, &request).expect("ShareFetch")
}

fn write_state(conn: &mut RawConn, topic_id: Uuid, leader_epoch: i32, start: i64) -> i16 {
    write_state_of(conn, "sg", topic_id, leader_epoch, start)
}

fn write_state_of(
    conn: &mut RawConn,
    group: &str,
    topic_id: Uuid,
    leader_epoch: i32,
    start: i64,
) -> i16 {
    let request = WriteShareGroupStateRequest::default()
        .with_group_id(s(group))
        .with_topics(vec![
            write_share_group_state_request::WriteStateData::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![
                    write_share_group_state_request::PartitionData::default()
                        .with_partition(0)
                        .with_leader_epoch(leader_epoch)
                        .with_start_offset(start)
                        .with_state_batches(vec![
                            write_share_group_state_request::StateBatch::default()
                                .with_first_offset(start)
                                .with_last_offset(start + 2)
                                .with_delivery_state(0)
                                .with_delivery_count(3),
                        ]),
                ]),
        ]);
    let r = conn.request(0, &request).expect("WriteShareGroupState");
    r.results[0].partitions[0].error_code
}

/// Routing of the share APIs in a cluster, and the share coordinator's state APIs.
#[test]
fn share_apis_are_served_where_kafka_serves_them_and_state_writes_are_fenced() {
    let cluster = TestCluster::start(
        3,
        ClusterOptions {
            settings: "offsets_topic_num_partitions = 3\n\
                       share_coordinator_state_topic_num_partitions = 3\n\
                       share_auto_offset_reset = \"earliest\"\n"
                .into(),
            ..ClusterOptions::default()
        },
    );
    cluster.create_topic_retrying(
        &[0, 1, 2],
        &rdkafka::admin::NewTopic::new("sc", 1, rdkafka::admin::TopicReplication::Fixed(3)),
    );
    let (topic_id, leader) = cluster.wait_until(Duration::from_secs(30), "sc led", || {
        let md = cluster.metadata(0).map_err(|e| e.to_string())?;
        let t = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "sc"))
            .ok_or("no topic")?;
        let leader = t.partitions.first().map_or(-1, |p| p.leader_id.0);
        if leader < 0 {
            return Err(format!("leader {leader}"));
        }
        Ok((t.topic_id, leader as usize))
    });
    let other = (leader + 1) % 3;

    // ShareGroupHeartbeat: the group coordinator only.
    let coordinator = cluster.common_coordinator(&[0, 1, 2], 0, "sg", None) as usize;
    let not_coordinator = (coordinator + 1) % 3;
    let heartbeat = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("sg")))
        .with_member_id(s("member-a"))
        .with_member_epoch(0)
        .with_subscribed_topic_names(Some(vec![TopicName(s("sc"))]));
    let mut conn = RawConn::connect(cluster.socket_addr(not_coordinator)).expect("connect");
    let r = conn.request(1, &heartbeat).expect("heartbeat");
    assert_eq!(
        r.error_code,
        ResponseError::NotCoordinator.code(),
        "node {not_coordinator}"
    );
    let mut conn = RawConn::connect(cluster.socket_addr(coordinator)).expect("connect");
    let r = conn.request(1, &heartbeat).expect("heartbeat");
    assert_eq!(r.error_code, 0, "{r:?}");

    // ShareFetch and its acknowledgements: the partition leader only.
    let mut off_leader = RawConn::connect(cluster.socket_addr(other)).expect("connect");
    let r = share_fetch(&mut off_leader, 0, topic_id, vec![]);
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::NotLeaderOrFollower.code()
    );
    let acks = vec![AcknowledgementBatch::default()
        .with_first_offset(0)
        .with_last_offset(0)
        .with_acknowledge_types(vec![1])];
    let r = share_fetch(&mut off_leader, 1, topic_id, acks);
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(
        r.responses[0].partitions[0].acknowledge_error_code,
        ResponseError::NotLeaderOrFollower.code(),
        "an acknowledgement sent to a node that does not lead the partition"
    );
    // The leader serves it (and so its share coordinator gets the state topic created).
    let mut on_leader = RawConn::connect(cluster.socket_addr(leader)).expect("connect");
    let r = share_fetch(&mut on_leader, 0, topic_id, vec![]);
    assert_eq!(r.responses[0].partitions[0].error_code, 0, "{r:?}");

    // The share coordinator of (sg, sc, 0): the one node taking a write (others:
    // NOT_COORDINATOR); at a leader epoch above the partition leader's, which is fenced from
    // then on.
    let share_coordinator = cluster.wait_until(
        Duration::from_secs(30),
        "one share coordinator for sg/sc/0",
        || {
            let codes: Vec<i16> = (0..3)
                .map(|n| {
                    let mut c =
                        RawConn::connect(cluster.socket_addr(n)).map_err(|e| e.to_string())?;
                    Ok(write_state(&mut c, topic_id, 100, 7))
                })
                .collect::<Result<_, String>>()?;
            let ok: Vec<usize> = (0..3).filter(|&n| codes[n] == 0).collect();
            let refused = codes
                .iter()
                .filter(|&&c| c == ResponseError::NotCoordinator.code())
                .count();
            if ok.len() == 1 && refused == 2 {
                Ok(ok[0])
            } else {
                Err(format!("codes {codes:?}"))
            }
        },
    );
    let mut c = RawConn::connect(cluster.socket_addr(share_coordinator)).expect("connect");
    assert_eq!(
        write_state(&mut c, topic_id, 5, 9),
        ResponseError::FencedLeaderEpoch.code(),
        "a write with an older leader epoch"
    );
    let read = ReadShareGroupStateRequest::default()
        .with_group_id(s("sg"))
        .with_topics(vec![
            read_share_group_state_request::ReadStateData::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![
                    read_share_group_state_request::PartitionData::default()
                        .with_partition(0)
                        .with_leader_epoch(100),
                ]),
        ]);
    let r = c.request(0, &read).expect("ReadShareGroupState");
    let p = &r.results[0].partitions[0];
    assert_eq!((p.error_code, p.start_offset), (0, 7), "{r:?}");
    let batches: Vec<(i64, i64, i8, i16)> = p
        .state_batches
        .iter()
        .map(|b| {
            (
                b.first_offset,
                b.last_offset,
                b.delivery_state,
                b.delivery_count,
            )
        })
        .collect();
    assert_eq!(batches, vec![(7, 9, 0, 3)]);

    // AlterShareGroupOffsets of the empty group, on its group coordinator, reaches the share
    // coordinator (an admin write, not fenced by leader epochs).
    use kafka_protocol::messages::alter_share_group_offsets_request::{
        AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
    };
    let mut group_conn = RawConn::connect(cluster.socket_addr(coordinator)).expect("connect");
    let leave = heartbeat
        .with_member_epoch(-1)
        .with_subscribed_topic_names(None);
    assert_eq!(group_conn.request(1, &leave).expect("leave").error_code, 0);
    let alter = kafka_protocol::messages::AlterShareGroupOffsetsRequest::default()
        .with_group_id(GroupId(s("sg")))
        .with_topics(vec![AlterShareGroupOffsetsRequestTopic::default()
            .with_topic_name(TopicName(s("sc")))
            .with_partitions(vec![
                AlterShareGroupOffsetsRequestPartition::default()
                    .with_partition_index(0)
                    .with_start_offset(2),
            ])]);
    let r = group_conn
        .request(0, &alter)
        .expect("AlterShareGroupOffsets");
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(r.responses[0].partitions[0].error_code, 0, "{r:?}");
    let r = c.request(0, &read).expect("ReadShareGroupState");
    let p = &r.results[0].partitions[0];
    assert_eq!((p.error_code, p.start_offset), (0, 2), "{r:?}");
    assert!(p.state_batches.is_empty(), "{r:?}");
}

/// The acquired (first, last, delivery count) runs of a ShareFetch answer.
fn acquired(r: &ShareFetchResponse) -> Vec<(i64, i64, i16)> {
    r.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .flat_map(|p| &p.acquired_records)
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect()
}

/// AlterShareGroupOffsets of a group emptied on every node: the partition leader, which held
/// the share partition in memory, hands out records from the new start offset (it dropped its
/// copy when the group's last share session closed there, as Kafka's SharePartitionManager
/// does; before, its old copy stayed and its next write undid the change). A write carrying
/// an older state epoch than the admin change's is FENCED_STATE_EPOCH.
#[test]
fn an_offsets_reset_of_an_emptied_group_reaches_the_partition_leader() {
    use kafka_protocol::messages::alter_share_group_offsets_request::{
        AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
    };
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let cluster = TestCluster::start(
        3,
        ClusterOptions {
            settings: "offsets_topic_num_partitions = 3\n\
                       share_coordinator_state_topic_num_partitions = 3\n\
                       share_auto_offset_reset = \"earliest\"\n"
                .into(),
            ..ClusterOptions::default()
        },
    );
    cluster.create_topic_retrying(
        &[0, 1, 2],
        &rdkafka::admin::NewTopic::new("se", 1, rdkafka::admin::TopicReplication::Fixed(3)),
    );
    let (topic_id, leader) = cluster.wait_until(Duration::from_secs(30), "se led", || {
        let md = cluster.metadata(0).map_err(|e| e.to_string())?;
        let t = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "se"))
            .ok_or("no topic")?;
        let leader = t.partitions.first().map_or(-1, |p| p.leader_id.0);
        if leader < 0 {
            return Err(format!("leader {leader}"));
        }
        Ok((t.topic_id, leader as usize))
    });
    let producer: BaseProducer = cluster
        .client_config(&[0, 1, 2])
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..5 {
        producer
            .send(BaseRecord::<(), str>::to("se").payload(&format!("v{i}")))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    // A group coordinated away from the partition leader (else the reset changes the
    // leader's copy in place).
    let (group, coordinator) = (0..20)
        .map(|i| format!("sg{i}"))
        .find_map(|g| {
            let c = cluster.common_coordinator(&[0, 1, 2], 0, &g, None) as usize;
            (c != leader).then_some((g, c))
        })
        .expect("a group coordinated on another node");
    let group = group.as_str();
    let mut group_conn = RawConn::connect(cluster.socket_addr(coordinator)).expect("connect");
    let join = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s("member-a"))
        .with_member_epoch(0)
        .with_subscribed_topic_names(Some(vec![TopicName(s("se"))]));
    assert_eq!(group_conn.request(1, &join).expect("join").error_code, 0);
    // member-a acquires and accepts all five records (state: start 5).
    let mut on_leader = RawConn::connect(cluster.socket_addr(leader)).expect("connect");
    let got = cluster.wait_until(Duration::from_secs(30), "records acquired", || {
        let r = share_fetch_as(&mut on_leader, group, "member-a", 0, topic_id, vec![]);
        let got = acquired(&r);
        if got.is_empty() {
            share_fetch_as(&mut on_leader, group, "member-a", -1, topic_id, vec![]);
            return Err(format!("{r:?}"));
        }
        Ok(got)
    });
    assert_eq!(got, vec![(0, 4, 1)]);
    let accept = vec![AcknowledgementBatch::default()
        .with_first_offset(0)
        .with_last_offset(4)
        .with_acknowledge_types(vec![1])];
    let r = share_fetch_as(&mut on_leader, group, "member-a", 1, topic_id, accept);
    assert_eq!(
        r.responses[0].partitions[0].acknowledge_error_code, 0,
        "{r:?}"
    );
    // It closes its session and leaves: the group is empty.
    share_fetch_as(&mut on_leader, group, "member-a", -1, topic_id, vec![]);
    let leave = join.with_member_epoch(-1).with_subscribed_topic_names(None);
    assert_eq!(group_conn.request(1, &leave).expect("leave").error_code, 0);
    let alter = kafka_protocol::messages::AlterShareGroupOffsetsRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(vec![AlterShareGroupOffsetsRequestTopic::default()
            .with_topic_name(TopicName(s("se")))
            .with_partitions(vec![
                AlterShareGroupOffsetsRequestPartition::default()
                    .with_partition_index(0)
                    .with_start_offset(2),
            ])]);
    let r = group_conn
        .request(0, &alter)
        .expect("AlterShareGroupOffsets");
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(r.responses[0].partitions[0].error_code, 0, "{r:?}");
    // A new member gets the records from offset 2 again (first delivery since the reset).
    let got = cluster.wait_until(
        Duration::from_secs(30),
        "records from the new start",
        || {
            let r = share_fetch_as(&mut on_leader, group, "member-b", 0, topic_id, vec![]);
            let got = acquired(&r);
            share_fetch_as(&mut on_leader, group, "member-b", -1, topic_id, vec![]);
            if got.is_empty() {
                return Err(format!("{r:?}"));
            }
            Ok(got)
        },
    );
    assert_eq!(got, vec![(2, 4, 1)]);
    // The reset raised the state epoch: a write carrying the old one (0) is fenced, whatever
    // its leader epoch.
    let code = cluster.wait_until(Duration::from_secs(30), "the share coordinator", || {
        let codes: Vec<i16> = (0..3)
            .map(|n| {
                let mut c = RawConn::connect(cluster.socket_addr(n)).map_err(|e| e.to_string())?;
                Ok(write_state_of(&mut c, group, topic_id, 1000, 3))
            })
            .collect::<Result<_, String>>()?;
        codes
            .iter()
            .copied()
            .find(|&c| c != ResponseError::NotCoordinator.code())
            .ok_or(format!("codes {codes:?}"))
    });
    assert_eq!(code, ResponseError::FencedStateEpoch.code());
}
