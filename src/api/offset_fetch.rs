//! OffsetFetch: committed offsets of one group (v1-7) or several (v8+), from the coordinator
//! shard's table. v9+ names the member: for a KIP-848 consumer group its epoch is checked
//! (UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH), as Kafka 4 does. A partition with no committed
//! offset gets offset -1 and no error, as Kafka answers; `topics: null` (v2+) asks for every
//! committed partition of the group. With `require_stable` (v7+, KIP-447) a partition whose
//! offset waits in an open transaction gets UNSTABLE_OFFSET_COMMIT, so a read_committed
//! consumer does not start from a stale offset.

use crate::error::coordinator_gone_code;
use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{authz, decode, str_bytes, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::coordinator::offsets::{CommittedOffset, OffsetKey};
use crate::protocol::header::ParsedRequest;
use crate::shard::groups::FetchedOffsets;
use crate::shard::{Shard, COORDINATOR_SHARD};

/// Per group: its id, the asked partitions (`None`: all) and, v9+, the member id and epoch.
type Asked = Vec<(
    String,
    Option<Vec<(String, Vec<i32>)>>,
    Option<(Option<String>, i32)>,
)>;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: OffsetFetchRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let version = request.api_version;
    let asked = asked_groups(&body, version);
    let require_stable = version >= 7 && body.require_stable;
    let groups: Vec<String> = asked.iter().map(|(g, _, _)| g.clone()).collect();
    let (answers, pending) = fetch_on_coordinator(shard, &request, asked, require_stable).await;
    let mut response = OffsetFetchResponse::default();
    let describable =
        |t: &str| authz::allowed(shard, &request, authz::Op::Describe, authz::Res::Topic, t);
    if version >= 8 {
        response.groups = groups_v8(&body, groups, answers, &pending);
        for (g, asked) in response.groups.iter_mut().zip(&body.groups) {
            authorize_topics!(g.topics, asked.topics.is_none(), describable);
        }
        return super::respond(&request, &response);
    }
    single_group(&body, version, groups, answers, &pending, &mut response);
    authorize_topics!(response.topics, body.topics.is_none(), describable);
    super::respond(&request, &response)
}

/// The groups asked: v8+ names several, earlier versions one.
fn asked_groups(body: &OffsetFetchRequest, version: i16) -> Asked {
    if version >= 8 {
        body.groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let member = (version >= 9)
                    .then(|| (g.member_id.as_ref().map(|m| m.to_string()), g.member_epoch));
                (g.group_id.to_string(), topics, member)
            })
            .collect()
    } else {
        let topics = body.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        vec![(body.group_id.to_string(), topics, None)]
    }
}

/// Each asked group's committed offsets from the coordinator shard, and (with
/// `require_stable`) the offsets waiting in open transactions.
/// Kafka's topic authorization of an OffsetFetch answer (DESCRIBE on each topic): a topic the
/// caller may not describe is left out of an all-topics answer, and its partitions answered
/// TOPIC_AUTHORIZATION_FAILED when named. (A macro: the v8+ and older topic types differ.)
macro_rules! authorize_topics {
    ($topics:expr, $all:expr, $describable:expr) => {
        if $all {
            $topics.retain(|t| $describable(t.name.as_str()));
        } else {
            for t in $topics
                .iter_mut()
                .filter(|t| !$describable(t.name.as_str()))
            {
                for p in t.partitions.iter_mut() {
                    p.committed_offset = -1;
                    p.committed_leader_epoch = -1;
                    p.metadata = Some(str_bytes(""));
                    p.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
            }
        }
    };
}
use authorize_topics;

async fn fetch_on_coordinator(
    shard: &Rc<Shard>,
    request: &ParsedRequest,
    asked: Asked,
    require_stable: bool,
) -> (
    Vec<Result<FetchedOffsets, ResponseError>>,
    HashSet<OffsetKey>,
) {
    // A group another node coordinates gets NOT_COORDINATOR (per group in v8+).
    let refused: Vec<Option<ResponseError>> = asked
        .iter()
        .map(|(group, _, _)| {
            authz::refusal(
                shard,
                request,
                authz::Op::Describe,
                authz::Res::Group,
                group,
            )
            .or_else(|| shard.not_coordinator(CoordinatorKind::Group, group))
        })
        .collect();
    shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            let answers = asked
                .into_iter()
                .zip(refused)
                .map(|((group, topics, member), refused)| match refused {
                    Some(e) => Err(e),
                    None => c.groups.fetch(&group, topics, member),
                })
                .collect();
            let pending = if require_stable {
                let mut keys = c.txns.state.borrow().pending_offsets();
                keys.extend(c.groups.pending.borrow().keys().cloned());
                keys
            } else {
                HashSet::new()
            };
            (answers, pending)
        })
        .await
        .unwrap_or_else(|_| (vec![Err(coordinator_gone_code())], HashSet::new()))
}

/// What one partition's answer carries, in both response shapes (v1-7 and v8+): the
/// committed offset, leader epoch and metadata (-1, -1, "" when none), or UNSTABLE_OFFSET_COMMIT
/// with offset -1 while a transaction's commit to it is pending (KIP-447: with require_stable,
/// a retriable error instead of a value that may be about to change).
struct Committed {
    offset: i64,
    epoch: i32,
    metadata: String,
    error_code: i16,
}

impl Committed {
    fn of(
        value: Option<CommittedOffset>,
        pending: &HashSet<OffsetKey>,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Committed {
        let (offset, epoch, metadata) = value.map_or((-1, -1, String::new()), |v| {
            (v.offset, v.leader_epoch, v.metadata)
        });
        let unstable = pending.contains(&OffsetKey {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
        });
        Committed {
            offset: if unstable { -1 } else { offset },
            epoch,
            metadata,
            error_code: if unstable {
                ResponseError::UnstableOffsetCommit.code()
            } else {
                0
            },
        }
    }
}

/// The v8+ answer: one entry per asked group.
fn groups_v8(
    body: &OffsetFetchRequest,
    groups: Vec<String>,
    answers: Vec<Result<FetchedOffsets, ResponseError>>,
    pending: &HashSet<OffsetKey>,
) -> Vec<OffsetFetchResponseGroup> {
    let mut groups = groups.into_iter();
    let mut out = Vec::new();
    for (g, answer) in body.groups.iter().zip(answers) {
        let group_id = groups.next().unwrap_or_default();
        let mut group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        match answer {
            Ok(topics) => {
                for (topic, parts) in topics {
                    let mut t = OffsetFetchResponseTopics::default()
                        .with_name(TopicName(str_bytes(topic.clone())));
                    for (p, value) in parts {
                        let c = Committed::of(value, pending, &group_id, &topic, p);
                        t.partitions.push(
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p)
                                .with_committed_offset(c.offset)
                                .with_committed_leader_epoch(c.epoch)
                                .with_metadata(Some(str_bytes(c.metadata)))
                                .with_error_code(c.error_code),
                        );
                    }
                    group.topics.push(t);
                }
            }
            Err(e) => group.error_code = e.code(),
        }
        out.push(group);
    }
    out
}

/// The v1-7 answer for the one group asked.
fn single_group(
    body: &OffsetFetchRequest,
    version: i16,
    groups: Vec<String>,
    answers: Vec<Result<FetchedOffsets, ResponseError>>,
    pending: &HashSet<OffsetKey>,
    response: &mut OffsetFetchResponse,
) {
    let mut groups = groups.into_iter();
    let answer = answers
        .into_iter()
        .next()
        .unwrap_or(Err(coordinator_gone_code()));
    let group_id = groups.next().unwrap_or_default();
    match answer {
        Ok(topics) => {
            for (topic, parts) in topics {
                let mut t = OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(topic.clone())));
                for (p, value) in parts {
                    let c = Committed::of(value, pending, &group_id, &topic, p);
                    t.partitions.push(
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(c.offset)
                            .with_committed_leader_epoch(c.epoch)
                            .with_metadata(Some(str_bytes(c.metadata)))
                            .with_error_code(c.error_code),
                    );
                }
                response.topics.push(t);
            }
        }
        Err(e) => {
            if version >= 2 {
                response.error_code = e.code();
            } else if let Some(topics) = &body.topics {
                // v1 has no top-level error: every asked partition carries it.
                for topic in topics {
                    let mut t = OffsetFetchResponseTopic::default().with_name(topic.name.clone());
                    for p in &topic.partition_indexes {
                        t.partitions.push(
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(-1)
                                .with_metadata(Some(str_bytes("")))
                                .with_error_code(e.code()),
                        );
                    }
                    response.topics.push(t);
                }
            }
        }
    }
}
