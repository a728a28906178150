//! DescribeTopicPartitions (API 75, v0; KIP-966): topics and their partitions, a page at a
//! time.
//!
//! What Kafka 4.1 does (`DescribeTopicPartitionsRequestHandler`,
//! `KRaftMetadataCache.getTopicMetadataForDescribeTopicResponse`), done here from the metadata
//! alone (no I/O):
//! - An empty topic list means every topic; otherwise the named ones (duplicates once). Either
//!   way only names at or after the cursor's topic, in name order.
//! - A page holds at most `max(min(response_partition_limit,
//!   DESCRIBE_TOPIC_PARTITIONS_PARTITIONS_MAX), 1)` partitions. The cursor's topic starts at
//!   the cursor's partition, the others at 0. When a topic does not fit, the page ends with it
//!   (its first partitions) and `next_cursor` names its first partition left out; when the
//!   page is full before a topic, `next_cursor` names that topic at partition 0. A last page
//!   has no `next_cursor`.
//! - A named topic that does not exist: UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for
//!   an invalid name), with no partitions; such topics are not listed when all were asked for.
//! - A cursor with a negative partition, or (with a topic list) naming a topic not in the list:
//!   INVALID_REQUEST for every named topic, as Kafka's error response.
//! - Partitions as Metadata shows them (`shard::routing::partition_view`): leader (-1 when it
//!   is fenced), leader epoch, replicas, ISR, fenced replicas offline; no error code (Kafka
//!   sets none here). Eligible leader replicas (KIP-966's ELR) are not kept: empty lists.
//!
//! Bounds: the answer holds at most `DESCRIBE_TOPIC_PARTITIONS_PARTITIONS_MAX` partitions,
//! plus one entry per named topic (the request's own size bounds those).

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::metadata::ALL_TOPIC_OPERATIONS;
use super::{decode, respond, str_bytes, Outcome, AUTHORIZED_OPERATIONS_OMITTED};
use crate::coordinator::metadata::{validate_topic_name, ClusterMetadata};
use crate::protocol::header::ParsedRequest;
use crate::shard::{routing, Shard};

/// The most partitions one answer holds (Kafka's `max.request.partition.size.limit` default).
pub const DESCRIBE_TOPIC_PARTITIONS_PARTITIONS_MAX: i32 = 2000;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeTopicPartitionsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = build_response(&shard.metadata(), shard.config.node_id, &body);
    authorize_topics(shard, &request, &mut response, body.topics.is_empty());
    respond(&request, &response)
}

/// Kafka's authorization of the answer, with the authorizer on: topics the caller may not
/// DESCRIBE are left out when listing all, answered TOPIC_AUTHORIZATION_FAILED when named;
/// the authorized operations are the caller's.
fn authorize_topics(
    shard: &Shard,
    request: &ParsedRequest,
    response: &mut DescribeTopicPartitionsResponse,
    all: bool,
) {
    use super::authz;
    if !shard.config.authorizer {
        return;
    }
    let visible =
        |name: &str| authz::allowed(shard, request, authz::Op::Describe, authz::Res::Topic, name);
    if all {
        response
            .topics
            .retain(|t| t.name.as_ref().is_some_and(|n| visible(n.0.as_str())));
    }
    for t in response.topics.iter_mut() {
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
            continue;
        };
        if !visible(&name) {
            *t = missing_topic(&name);
            t.error_code = ResponseError::TopicAuthorizationFailed.code();
        } else if t.error_code == 0 {
            t.topic_authorized_operations =
                authz::operations(shard, request, authz::Res::Topic, &name);
        }
    }
}

/// The answer to `body` from `metadata`, as broker `node_id` sees it.
fn build_response(
    metadata: &ClusterMetadata,
    node_id: i32,
    body: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let all = body.topics.is_empty();
    let cursor = body
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    let from = cursor.as_ref().map_or("", |(name, _)| name.as_str());
    let names: BTreeSet<String> = if all {
        metadata
            .topics
            .keys()
            .filter(|n| n.as_str() >= from)
            .cloned()
            .collect()
    } else {
        body.topics
            .iter()
            .map(|t| t.name.0.to_string())
            .filter(|n| n.as_str() >= from)
            .collect()
    };
    let bad_cursor = cursor
        .as_ref()
        .is_some_and(|(name, p)| *p < 0 || (!all && !names.contains(name)));
    if bad_cursor {
        return invalid_request(body);
    }
    let limit = body
        .response_partition_limit
        .clamp(1, DESCRIBE_TOPIC_PARTITIONS_PARTITIONS_MAX);
    let mut response = DescribeTopicPartitionsResponse::default();
    let mut remaining = limit;
    for name in names {
        if remaining == 0 {
            response.next_cursor = Some(cursor_at(&name, 0));
            break;
        }
        let Some(topic) = metadata.topics.get(&name) else {
            if !all {
                response.topics.push(missing_topic(&name));
            }
            continue;
        };
        let start = match &cursor {
            Some((cursor_name, p)) if *cursor_name == name => *p,
            _ => 0,
        };
        let end = topic.partitions.min(start.saturating_add(remaining));
        let mut out = DescribeTopicPartitionsResponseTopic::default();
        out.name = Some(TopicName(str_bytes(name.clone())));
        out.topic_id = topic.id;
        out.is_internal = topic.internal;
        out.topic_authorized_operations = ALL_TOPIC_OPERATIONS;
        out.partitions = (start..end)
            .map(|p| partition(metadata, topic, p, node_id))
            .collect();
        remaining -= out.partitions.len() as i32;
        response.topics.push(out);
        if end < topic.partitions {
            response.next_cursor = Some(cursor_at(&name, end));
            break;
        }
    }
    response
}

fn partition(
    metadata: &ClusterMetadata,
    topic: &crate::coordinator::metadata::TopicMeta,
    p: i32,
    node_id: i32,
) -> DescribeTopicPartitionsResponsePartition {
    let view = routing::partition_view(metadata, topic, p, node_id);
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut out = DescribeTopicPartitionsResponsePartition::default();
    out.partition_index = p;
    out.leader_id = BrokerId(view.leader);
    out.leader_epoch = view.leader_epoch;
    out.replica_nodes = ids(&view.replicas);
    out.isr_nodes = ids(&view.isr);
    out.offline_replicas = ids(&view.offline_replicas);
    out.eligible_leader_replicas = Some(Vec::new());
    out.last_known_elr = Some(Vec::new());
    out
}

fn cursor_at(name: &str, partition: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(TopicName(str_bytes(name)))
        .with_partition_index(partition)
}

/// A named topic that does not exist.
fn missing_topic(name: &str) -> DescribeTopicPartitionsResponseTopic {
    let error = if validate_topic_name(name).is_ok() {
        ResponseError::UnknownTopicOrPartition
    } else {
        ResponseError::InvalidTopicException
    };
    let mut out = DescribeTopicPartitionsResponseTopic::default();
    out.error_code = error.code();
    out.name = Some(TopicName(str_bytes(name)));
    out.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    out
}

/// Kafka's error response: every named topic with INVALID_REQUEST.
fn invalid_request(body: &DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let mut response = DescribeTopicPartitionsResponse::default();
    response.topics = body
        .topics
        .iter()
        .map(|t| {
            let mut out = DescribeTopicPartitionsResponseTopic::default();
            out.error_code = ResponseError::InvalidRequest.code();
            out.name = Some(t.name.clone());
            out.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
            out
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::routing::tests::three_brokers;
    use kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };

    fn request(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(TopicName(str_bytes(*t))))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                RequestCursor::default()
                    .with_topic_name(TopicName(str_bytes(t)))
                    .with_partition_index(p)
            }))
    }

    /// (topic, [partition indexes]) of an answer.
    type Page = Vec<(String, Vec<i32>)>;

    /// The topics of an answer, and its next cursor.
    fn pages(r: &DescribeTopicPartitionsResponse) -> (Page, Option<(String, i32)>) {
        let topics = r
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
                (
                    name,
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        let next = r
            .next_cursor
            .as_ref()
            .map(|c| (c.topic_name.to_string(), c.partition_index));
        (topics, next)
    }

    /// Every partition of 3 brokers' metadata exactly as assigned: leaders (the fenced one's
    /// shown as -1), epochs, replicas, ISR, offline replicas.
    #[test]
    fn partitions_are_described_as_assigned() {
        let m = three_brokers();
        let r = build_response(&m, 0, &request(&["spread"], 100, None));
        assert_eq!(r.topics.len(), 1);
        let t = &r.topics[0];
        assert_eq!((t.error_code, t.topic_id), (0, m.topics["spread"].id));
        assert_eq!(t.partitions.len(), 12);
        for (i, p) in t.partitions.iter().enumerate() {
            let i = i as i32;
            let owner = i % 3;
            let leader = if owner == 2 { -1 } else { owner };
            assert_eq!(p.leader_id.0, leader);
            assert_eq!(p.leader_epoch, i);
            assert_eq!(p.replica_nodes, vec![BrokerId(owner)]);
            assert_eq!(p.isr_nodes, vec![BrokerId(owner)]);
            let offline: Vec<BrokerId> = if owner == 2 {
                vec![BrokerId(2)]
            } else {
                vec![]
            };
            assert_eq!(p.offline_replicas, offline);
            assert_eq!(p.error_code, 0);
        }
        assert!(r.next_cursor.is_none());
    }

    /// Pages of 5 walk every topic in name order, each partition once, and the last page has
    /// no cursor.
    #[test]
    fn the_cursor_pages_through_every_partition_once() {
        let m = three_brokers();
        let mut seen = Vec::new();
        let mut cursor: Option<(String, i32)> = None;
        for _ in 0..10 {
            let c = cursor.as_ref().map(|(t, p)| (t.as_str(), *p));
            let r = build_response(&m, 0, &request(&[], 5, c));
            let (topics, next) = pages(&r);
            let count: usize = topics.iter().map(|(_, ps)| ps.len()).sum();
            assert!(count <= 5);
            for (t, ps) in topics {
                seen.extend(ps.into_iter().map(|p| (t.clone(), p)));
            }
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none());
        let mut want = vec![("__internal".to_string(), 0)];
        want.extend((0..2).map(|p| ("old".to_string(), p)));
        want.extend((0..12).map(|p| ("spread".to_string(), p)));
        assert_eq!(seen, want);
    }

    #[test]
    fn a_full_page_ends_before_the_next_topic() {
        let m = three_brokers();
        // "__internal" (1) + "old" (2) fill a page of 3 exactly: the cursor names "spread"-0.
        let (topics, next) = pages(&build_response(&m, 0, &request(&[], 3, None)));
        assert_eq!(topics.len(), 2);
        assert_eq!(next, Some(("spread".to_string(), 0)));
        // A limit of 0 or less still returns one partition, as Kafka does.
        let (topics, next) = pages(&build_response(&m, 0, &request(&["old"], 0, None)));
        assert_eq!(topics, vec![("old".to_string(), vec![0])]);
        assert_eq!(next, Some(("old".to_string(), 1)));
        // Never more than the broker's cap.
        assert_eq!(DESCRIBE_TOPIC_PARTITIONS_PARTITIONS_MAX, 2000);
    }

    #[test]
    fn missing_topics_and_bad_cursors_get_kafkas_errors() {
        let m = three_brokers();
        let r = build_response(&m, 0, &request(&["nope", "bad name!", "old"], 100, None));
        let codes: Vec<(String, i16)> = r
            .topics
            .iter()
            .map(|t| (t.name.as_ref().unwrap().to_string(), t.error_code))
            .collect();
        assert_eq!(
            codes,
            vec![
                (
                    "bad name!".to_string(),
                    ResponseError::InvalidTopicException.code()
                ),
                (
                    "nope".to_string(),
                    ResponseError::UnknownTopicOrPartition.code()
                ),
                ("old".to_string(), 0),
            ]
        );
        // The cursor's topic must be one of those named; its partition must not be negative.
        for r in [
            build_response(&m, 0, &request(&["old"], 100, Some(("spread", 0)))),
            build_response(&m, 0, &request(&["old"], 100, Some(("old", -1)))),
        ] {
            assert_eq!(r.topics.len(), 1);
            assert_eq!(r.topics[0].error_code, ResponseError::InvalidRequest.code());
        }
        // Asking for all topics lists no missing ones.
        let (topics, _) = pages(&build_response(&m, 0, &request(&[], 100, Some(("p", 0)))));
        assert_eq!(topics.len(), 1, "only 'spread' sorts after 'p'");
    }
}
