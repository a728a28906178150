//! DescribeShareGroupOffsets (KIP-932, API key 90, v0): the start offset of each share
//! partition of a share group (-1 for a partition it has not started), from the coordinator
//! shard's share state (`shard::shares`). A null topic list means every share partition of the
//! group. DESCRIBE on the group (else GROUP_AUTHORIZATION_FAILED), DESCRIBE on each topic (else
//! TOPIC_AUTHORIZATION_FAILED); an unknown group is GROUP_ID_NOT_FOUND, as Kafka answers.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, TopicName,
};
use uuid::Uuid;

use super::{decode, str_bytes, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::error::coordinator_gone_code;
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

/// A group's share partitions with their start offsets, or `None` for an unknown group.
type Started = Option<BTreeMap<(Uuid, i32), i64>>;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeShareGroupOffsetsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let ids: Vec<String> = body.groups.iter().map(|g| g.group_id.to_string()).collect();
    let answers = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            ids.iter()
                .map(|id| {
                    c.shares.groups.borrow().group(id)?;
                    Some(
                        c.shares
                            .describe_partitions(id)
                            .into_iter()
                            .map(|(k, start, ..)| ((k.topic_id, k.partition), start))
                            .collect(),
                    )
                })
                .collect::<Vec<Started>>()
        })
        .await;
    let metadata = shard.metadata();
    let mut response = DescribeShareGroupOffsetsResponse::default();
    for (i, asked) in body.groups.iter().enumerate() {
        let group_id = asked.group_id.to_string();
        let mut g =
            DescribeShareGroupOffsetsResponseGroup::default().with_group_id(asked.group_id.clone());
        let refused = super::authz::refusal(
            shard,
            &request,
            super::authz::Op::Describe,
            super::authz::Res::Group,
            &group_id,
        )
        .or_else(|| shard.not_coordinator(CoordinatorKind::Group, &group_id));
        let started = match (&answers, refused) {
            (_, Some(e)) => {
                g.error_code = e.code();
                response.groups.push(g);
                continue;
            }
            (Err(_), None) => {
                g.error_code = coordinator_gone_code().code();
                response.groups.push(g);
                continue;
            }
            (Ok(a), None) => match &a[i] {
                None => {
                    g.error_code = ResponseError::GroupIdNotFound.code();
                    g.error_message = Some(str_bytes(format!("Group {group_id} not found.")));
                    response.groups.push(g);
                    continue;
                }
                Some(started) => started.clone(),
            },
        };
        // The topics asked, by name, with their partitions; null: every started one.
        let asked_topics: Vec<(String, Vec<i32>)> = match &asked.topics {
            Some(topics) => topics
                .iter()
                .map(|t| (t.topic_name.to_string(), t.partitions.clone()))
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for &(topic_id, p) in started.keys() {
                    if let Some((name, _)) = metadata.topic_by_id(topic_id) {
                        by_topic.entry(name.to_string()).or_default().push(p);
                    }
                }
                by_topic.into_iter().collect()
            }
        };
        for (name, partitions) in asked_topics {
            let mut t = DescribeShareGroupOffsetsResponseTopic::default()
                .with_topic_name(TopicName(str_bytes(name.clone())));
            let topic = metadata.topics.get(&name);
            let error = if !super::authz::allowed(
                shard,
                &request,
                super::authz::Op::Describe,
                super::authz::Res::Topic,
                &name,
            ) {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if topic.is_none() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else {
                None
            };
            if let Some(meta) = topic {
                t.topic_id = meta.id;
            }
            for p in partitions {
                let start = topic
                    .and_then(|m| started.get(&(m.id, p)).copied())
                    .unwrap_or(-1);
                t.partitions.push(
                    DescribeShareGroupOffsetsResponsePartition::default()
                        .with_partition_index(p)
                        .with_start_offset(if error.is_some() { -1 } else { start })
                        .with_leader_epoch(-1)
                        .with_error_code(crate::error::code(error)),
                );
            }
            g.topics.push(t);
        }
        response.groups.push(g);
    }
    super::respond(&request, &response)
}
