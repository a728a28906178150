//! Consumer-group admin requests: FindCoordinator, ListGroups, DescribeGroups, DeleteGroups,
//! OffsetFetch, and OffsetCommit as a "simple consumer" (generation -1, empty member id: what
//! `kafka-consumer-groups --reset-offsets` sends for an inactive group).
//!
//! Plain functions over a [`Connection`], returning plain structs. Group requests must go to the
//! group's coordinator ([`find_coordinator`] says which broker that is). Per-group and
//! per-partition errors are returned as Kafka codes for the caller to judge; a top-level error
//! fails the call with [`ClientError::Kafka`].
//!
//! Versions: the highest both sides speak, except OffsetFetch and OffsetCommit, capped at v9
//! (v10 names topics by id, which this client does not track).

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::admin::BrokerInfo;
use super::wire::Reader;
use super::{ClientError, Connection, Result};

/// Highest OffsetFetch / OffsetCommit version used (v10 names topics by id).
const OFFSETS_VERSION_MAX: i16 = 9;
/// FindCoordinator attempts while the coordinator is loading or not available yet.
const FIND_COORDINATOR_ATTEMPTS_MAX: u32 = 10;

/// A group as ListGroups lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// "consumer" for consumer groups; empty for groups that only commit offsets.
    pub protocol_type: String,
    /// State (v4+; empty before).
    pub state: String,
}

/// A member of a group as DescribeGroups describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id given by the coordinator.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// The member's client.id.
    pub client_id: String,
    /// The member's host as the broker saw it.
    pub client_host: String,
    /// Partitions assigned, per topic (decoded for protocol type "consumer"; else empty).
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A group as DescribeGroups describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// Kafka error code (69 GROUP_ID_NOT_FOUND for an unknown group at v6+).
    pub error_code: i16,
    /// The broker's message, if any.
    pub error_message: Option<String>,
    /// State: Empty, Stable, PreparingRebalance, CompletingRebalance, Dead.
    pub state: String,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// The chosen assignor (e.g. "range").
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// A committed offset as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Committed offset (-1: none).
    pub offset: i64,
    /// Commit metadata, if any.
    pub metadata: Option<String>,
    /// Kafka error code.
    pub error_code: i16,
}

/// The answer for one partition of an OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitResult {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Kafka error code (0: committed).
    pub error_code: i16,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn kafka(context: String, code: i16) -> ClientError {
    ClientError::Kafka { context, code }
}

/// The coordinator of `group`. Retries a few times while the broker answers
/// COORDINATOR_LOAD_IN_PROGRESS / COORDINATOR_NOT_AVAILABLE.
pub fn find_coordinator(conn: &mut Connection, group: &str) -> Result<BrokerInfo> {
    let range = ApiKey::FindCoordinator.valid_versions();
    let version = conn
        .versions()
        .pick(ApiKey::FindCoordinator, range.min, range.max)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = FindCoordinatorRequest::default().with_key_type(0);
        if version >= 4 {
            request.coordinator_keys = vec![str_bytes(group)];
        } else {
            request.key = str_bytes(group);
        }
        let response = conn.request_at(version, &request)?;
        let (code, node_id, host, port) = if version >= 4 {
            let c = response.coordinators.first().ok_or_else(|| {
                ClientError::Protocol("FindCoordinator: no coordinator in the answer".into())
            })?;
            (c.error_code, c.node_id.0, c.host.to_string(), c.port)
        } else {
            (
                response.error_code,
                response.node_id.0,
                response.host.to_string(),
                response.port,
            )
        };
        match code {
            0 => {
                return Ok(BrokerInfo {
                    node_id,
                    host,
                    port,
                })
            }
            // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE.
            14 | 15 if attempt < FIND_COORDINATOR_ATTEMPTS_MAX => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            code => {
                return Err(kafka(
                    format!("find the coordinator of group {group}"),
                    code,
                ))
            }
        }
    }
}

/// The groups this broker coordinates (ask every broker for a cluster's groups).
pub fn list_groups(conn: &mut Connection) -> Result<Vec<GroupListing>> {
    let response = conn.request(&ListGroupsRequest::default())?;
    if response.error_code != 0 {
        return Err(kafka("list groups".into(), response.error_code));
    }
    Ok(response
        .groups
        .iter()
        .map(|g| GroupListing {
            group_id: g.group_id.0.to_string(),
            protocol_type: g.protocol_type.to_string(),
            state: g.group_state.to_string(),
        })
        .collect())
}

/// Describes `groups` (send to their coordinator).
pub fn describe_groups(conn: &mut Connection, groups: &[&str]) -> Result<Vec<GroupDescription>> {
    let request = DescribeGroupsRequest::default()
        .with_groups(groups.iter().map(|g| GroupId(str_bytes(g))).collect());
    let response = conn.request(&request)?;
    Ok(response
        .groups
        .iter()
        .map(|g| {
            let protocol_type = g.protocol_type.to_string();
            let members = g
                .members
                .iter()
                .map(|m| {
                    // An assignment that does not parse (a custom assignor's format) is shown as none.
                    let assignment = if protocol_type == "consumer" {
                        parse_consumer_assignment(&m.member_assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    MemberDescription {
                        member_id: m.member_id.to_string(),
                        group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
                        client_id: m.client_id.to_string(),
                        client_host: m.client_host.to_string(),
                        assignment,
                    }
                })
                .collect();
            GroupDescription {
                group_id: g.group_id.0.to_string(),
                error_code: g.error_code,
                error_message: g.error_message.as_ref().map(|s| s.to_string()),
                state: g.group_state.to_string(),
                protocol_type,
                protocol: g.protocol_data.to_string(),
                members,
            }
        })
        .collect())
}

/// Parses a consumer protocol assignment (ConsumerProtocolAssignment, any version): the
/// partitions per topic; user data and later fields are ignored.
pub fn parse_consumer_assignment(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>> {
    let mut r = Reader::new(bytes);
    let _version = r.i16()?;
    let topics = r.array_len(false)?.unwrap_or(0);
    let mut out = Vec::with_capacity(topics);
    for _ in 0..topics {
        let topic = r.string(false)?.unwrap_or("").to_string();
        let count = r.array_len(false)?.unwrap_or(0);
        let mut partitions = Vec::with_capacity(count);
        for _ in 0..count {
            partitions.push(r.i32()?);
        }
        out.push((topic, partitions));
    }
    Ok(out)
}

/// Deletes `groups` (send to their coordinator); returns each group's error code.
pub fn delete_groups(conn: &mut Connection, groups: &[&str]) -> Result<Vec<(String, i16)>> {
    let request = DeleteGroupsRequest::default()
        .with_groups_names(groups.iter().map(|g| GroupId(str_bytes(g))).collect());
    let response = conn.request(&request)?;
    Ok(response
        .results
        .iter()
        .map(|r| (r.group_id.0.to_string(), r.error_code))
        .collect())
}

/// The offsets `group` committed: for `topics` (name, partitions), or every partition it
/// committed when `None`. Send to the group's coordinator.
pub fn offset_fetch(
    conn: &mut Connection,
    group: &str,
    topics: Option<&[(String, Vec<i32>)]>,
) -> Result<Vec<CommittedOffset>> {
    let range = ApiKey::OffsetFetch.valid_versions();
    let version = conn.versions().pick(
        ApiKey::OffsetFetch,
        range.min,
        range.max.min(OFFSETS_VERSION_MAX),
    )?;
    let request = offset_fetch_request(version, group, topics)?;
    let response = conn.request_at(version, &request)?;
    let mut out = committed_offsets(&response, version, group)?;
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// OffsetFetch `version` for `group`'s `topics` (`None`: every committed partition, v2+).
fn offset_fetch_request(
    version: i16,
    group: &str,
    topics: Option<&[(String, Vec<i32>)]>,
) -> Result<OffsetFetchRequest> {
    let mut request = OffsetFetchRequest::default();
    if version >= 8 {
        request.groups = vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_member_epoch(-1)
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|(name, partitions)| {
                        OffsetFetchRequestTopics::default()
                            .with_name(TopicName(str_bytes(name)))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect()
            }))];
    } else {
        request.group_id = GroupId(str_bytes(group));
        request.topics = match topics {
            Some(ts) => Some(
                ts.iter()
                    .map(|(name, partitions)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(str_bytes(name)))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect(),
            ),
            // v1 cannot ask for every partition.
            None if version < 2 => {
                return Err(ClientError::Unsupported {
                    api: "OffsetFetch (all partitions)",
                    min: 2,
                    max: OFFSETS_VERSION_MAX,
                })
            }
            None => None,
        };
    }
    Ok(request)
}

/// The group's committed offsets from an OffsetFetch answer of `version` (unsorted).
fn committed_offsets(
    response: &OffsetFetchResponse,
    version: i16,
    group: &str,
) -> Result<Vec<CommittedOffset>> {
    let context = || format!("fetch the offsets of group {group}");
    let mut out = Vec::new();
    if version >= 8 {
        let g = response
            .groups
            .iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| ClientError::Protocol("OffsetFetch: no answer for the group".into()))?;
        if g.error_code != 0 {
            return Err(kafka(context(), g.error_code));
        }
        for t in &g.topics {
            for p in &t.partitions {
                out.push(CommittedOffset {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p.metadata.as_ref().map(|m| m.to_string()),
                    error_code: p.error_code,
                });
            }
        }
    } else {
        if response.error_code != 0 {
            return Err(kafka(context(), response.error_code));
        }
        for t in &response.topics {
            for p in &t.partitions {
                out.push(CommittedOffset {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p.metadata.as_ref().map(|m| m.to_string()),
                    error_code: p.error_code,
                });
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` (topic, partition, offset) for `group` as a simple consumer (generation
/// -1, no member id): accepted by the coordinator only while the group has no members. Send to
/// the group's coordinator. Returns each partition's error code.
pub fn offset_commit(
    conn: &mut Connection,
    group: &str,
    offsets: &[(String, i32, i64)],
) -> Result<Vec<CommitResult>> {
    let range = ApiKey::OffsetCommit.valid_versions();
    let version = conn.versions().pick(
        ApiKey::OffsetCommit,
        range.min,
        range.max.min(OFFSETS_VERSION_MAX),
    )?;
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (topic, partition, offset) in offsets {
        let p = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(*offset)
            .with_committed_leader_epoch(-1)
            .with_committed_metadata(Some(StrBytes::from_static_str("")));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_retention_time_ms(-1)
        .with_topics(topics);
    let response = conn.request_at(version, &request)?;
    Ok(response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| CommitResult {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                error_code: p.error_code,
            })
        })
        .collect())
}

/// The start offset of each share partition of share group `group`
/// (DescribeShareGroupOffsets, every topic), as (topic, partition, start offset); `None` when
/// the broker knows no share group of that id.
pub fn describe_share_group_offsets(
    conn: &mut Connection,
    group: &str,
) -> Result<Option<Vec<(String, i32, i64)>>> {
    use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
    let request = kafka_protocol::messages::DescribeShareGroupOffsetsRequest::default()
        .with_groups(vec![DescribeShareGroupOffsetsRequestGroup::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(None)]);
    let response = conn.request(&request)?;
    let Some(g) = response.groups.first() else {
        return Ok(None);
    };
    match g.error_code {
        0 => {}
        // GROUP_ID_NOT_FOUND
        69 => return Ok(None),
        code => {
            return Err(ClientError::Kafka {
                code,
                context: format!("DescribeShareGroupOffsets {group}"),
            })
        }
    }
    Ok(Some(
        g.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic_name.to_string(), p.partition_index, p.start_offset))
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_assignment_parses_and_truncation_is_an_error() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes());
        buf.extend_from_slice(&3i16.to_be_bytes());
        buf.extend_from_slice(b"top");
        buf.extend_from_slice(&2i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&5i32.to_be_bytes());
        buf.extend_from_slice(&(-1i32).to_be_bytes()); // null user data
        assert_eq!(
            parse_consumer_assignment(&buf).expect("parses"),
            vec![("top".to_string(), vec![0, 5])]
        );
        for cut in 2..buf.len() - 4 {
            assert!(parse_consumer_assignment(&buf[..cut]).is_err(), "cut {cut}");
        }
    }
}
