//! Classic-group size limits over raw JoinGroup/SyncGroup against the real broker (issue 12,
//! item 10): `group_max_size` (Kafka's `group.max.size`) is a setting, unlimited by default,
//! and member ids handed out with MEMBER_ID_REQUIRED do not count against it (they have their
//! own bound, `GROUP_PENDING_MEMBERS_MAX`).

use crate::common;

use bytes::Bytes;
use common::{RawConn, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

/// JoinGroup v5: a first join without a member id gets MEMBER_ID_REQUIRED.
const JOIN_VERSION: i16 = 5;
const SYNC_VERSION: i16 = 3;

fn join(group: &str, member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0"))])
}

fn sync(group: &str, member_id: &str, generation: i32, assign_to: &[&str]) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_generation_id(generation)
        .with_assignments(
            assign_to
                .iter()
                .map(|m| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(m.to_string()))
                        .with_assignment(Bytes::from_static(b"a"))
                })
                .collect(),
        )
}

fn error(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}

/// A first join: MEMBER_ID_REQUIRED with the member id to use.
fn member_id(conn: &mut RawConn, group: &str) -> String {
    let r: JoinGroupResponse = conn.request(JOIN_VERSION, &join(group, "")).unwrap();
    assert_eq!(error(r.error_code), Some(ResponseError::MemberIdRequired));
    r.member_id.to_string()
}

/// Kafka does not count member ids handed out with MEMBER_ID_REQUIRED as members: more than
/// the old hard-coded 1,000 first joins all get their member id (the 1,001st used to get
/// GROUP_MAX_SIZE_REACHED). The ids not yet used are bounded per group
/// (`GROUP_PENDING_MEMBERS_MAX`, 10,000): beyond it a first join is told to retry
/// (COORDINATOR_LOAD_IN_PROGRESS), and the broker's memory stays bounded.
#[test]
fn pending_member_ids_do_not_count_as_members_and_are_bounded() {
    const PENDING_MAX: usize = 10_000;
    let broker = TestBroker::start(1);
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    let rss_before = broker.rss_bytes();
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..PENDING_MAX + 100 {
        let r: JoinGroupResponse = conn.request(JOIN_VERSION, &join("big", "")).unwrap();
        let expected = if i < PENDING_MAX {
            ResponseError::MemberIdRequired
        } else {
            ResponseError::CoordinatorLoadInProgress
        };
        assert_eq!(error(r.error_code), Some(expected), "first join {i}");
        if i < PENDING_MAX {
            assert!(
                ids.insert(r.member_id.to_string()),
                "every member id is new"
            );
        }
    }
    let grown = broker.rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 32 << 20,
        "{PENDING_MAX} pending member ids grew RSS by {grown} bytes"
    );
    println!(
        "RSS grew by {} KiB for {PENDING_MAX} pending ids",
        grown >> 10
    );
}

/// With `group_max_size = 2`, a third member is turned away with GROUP_MAX_SIZE_REACHED (and no
/// member id), as Kafka; the two members keep their group.
#[test]
fn group_max_size_turns_away_the_member_beyond_it() {
    let (_dir, config) =
        common::config_file("group_max_size = 2\ngroup_initial_rebalance_delay_ms = 0\n");
    let broker = TestBroker::start_with(1, &["--config", config.to_str().unwrap()]);
    let addr = broker.socket_addr();
    let (mut c1, mut c2, mut c3) = (
        RawConn::connect(addr).unwrap(),
        RawConn::connect(addr).unwrap(),
        RawConn::connect(addr).unwrap(),
    );
    let g = "capped";
    let m1 = member_id(&mut c1, g);
    let r: JoinGroupResponse = c1.request(JOIN_VERSION, &join(g, &m1)).unwrap();
    assert_eq!((error(r.error_code), r.generation_id), (None, 1));
    let s: SyncGroupResponse = c1.request(SYNC_VERSION, &sync(g, &m1, 1, &[&m1])).unwrap();
    assert_eq!(error(s.error_code), None);

    // The second member joins; the first rejoins; both are in generation 2.
    let m2 = member_id(&mut c2, g);
    let pending = c2.send(JOIN_VERSION, &join(g, &m2)).unwrap();
    let r1: JoinGroupResponse = c1.request(JOIN_VERSION, &join(g, &m1)).unwrap();
    let r2: JoinGroupResponse = c2
        .receive::<JoinGroupRequest>(JOIN_VERSION, pending)
        .unwrap();
    assert_eq!((error(r1.error_code), r1.generation_id), (None, 2));
    assert_eq!((error(r2.error_code), r2.generation_id), (None, 2));
    assert_eq!(r1.members.len(), 2);
    let s: SyncGroupResponse = c1
        .request(SYNC_VERSION, &sync(g, &m1, 2, &[&m1, &m2]))
        .unwrap();
    assert_eq!(error(s.error_code), None);

    // A third member is one too many.
    let r: JoinGroupResponse = c3.request(JOIN_VERSION, &join(g, "")).unwrap();
    assert_eq!(
        error(r.error_code),
        Some(ResponseError::GroupMaxSizeReached)
    );
    assert_eq!(r.member_id.as_str(), "");
    // The group is untouched: the second member syncs generation 2.
    let s: SyncGroupResponse = c2.request(SYNC_VERSION, &sync(g, &m2, 2, &[])).unwrap();
    assert_eq!(error(s.error_code), None);
    assert_eq!(&s.assignment[..], b"a");
}
