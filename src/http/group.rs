//! Consumer-group positions for push streams: a stream opened with `?group=G` starts at G's
//! committed offset of the partition, and `POST /v3/clusters/{c}/consumer-groups/{G}/offsets`
//! with `{"topic_name":..,"partition_id":..,"offset":..}` commits a position (the offset of
//! the next record to read, Kafka's convention: after event `p:o`, commit `o + 1`).
//!
//! Both go through the group coordinator as OffsetFetch and OffsetCommit do
//! (`GroupCoordinator::fetch` / `commit` on the coordinator shard), so the offsets are the
//! group's ordinary committed offsets, seen by every Kafka client and tool. A commit is a
//! standalone one (no member, generation -1): Kafka refuses it while the group has members,
//! and so does this (409).

use std::rc::Rc;

use serde_json::Value;

use super::produce::HttpError;
use super::wire::error_body;
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::coordinator::offsets::CommittedOffset;
use crate::shard::groups::Committer;
use crate::shard::{Shard, COORDINATOR_SHARD};

/// The longest group id accepted (Kafka has no limit; this keeps a request small).
pub const GROUP_ID_BYTES_MAX: usize = 255;

pub(super) fn check_group(shard: &Shard, group: &str) -> Result<(), HttpError> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        return Err((400, 400, format!("bad group id {group:?}")));
    }
    if shard
        .not_coordinator(CoordinatorKind::Group, group)
        .is_some()
    {
        return Err((
            421,
            421,
            format!("this broker is not the coordinator of {group}"),
        ));
    }
    Ok(())
}

/// The group's committed offset of the partition, if it has one.
pub async fn committed(
    shard: &Rc<Shard>,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, HttpError> {
    check_group(shard, group)?;
    let (group, topic) = (group.to_string(), topic.to_string());
    let fetched = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            c.groups
                .fetch(&group, Some(vec![(topic, vec![partition])]), None)
                .map(|topics| {
                    topics
                        .into_iter()
                        .flat_map(|(_, parts)| parts)
                        .find_map(|(_, v)| v.map(|v| v.offset))
                })
        })
        .await
        .map_err(|_| (503, 503, "the group coordinator is stopping".to_string()))?;
    fetched.map_err(|e| (503, 503, format!("group coordinator: {e:?}")))
}

/// `POST .../consumer-groups/{group}/offsets`: the status and JSON body to answer with.
pub async fn commit_handler(
    shard: &Rc<Shard>,
    cluster: &str,
    group: &str,
    body: &[u8],
) -> (u16, String) {
    match commit(shard, cluster, group, body).await {
        Ok(answer) => (200, answer),
        Err((status, code, message)) => (status, error_body(code, &message)),
    }
}

async fn commit(
    shard: &Rc<Shard>,
    cluster: &str,
    group: &str,
    body: &[u8],
) -> Result<String, HttpError> {
    let metadata = shard.metadata();
    if cluster != metadata.cluster_id {
        return Err((404, 404, format!("Cluster {cluster} cannot be found.")));
    }
    check_group(shard, group)?;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| (400, 400, format!("bad JSON body: {e}")))?;
    let topic = v.get("topic_name").and_then(Value::as_str);
    let partition = v
        .get("partition_id")
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok());
    let offset = v.get("offset").and_then(Value::as_i64).filter(|o| *o >= 0);
    let (Some(topic), Some(partition), Some(offset)) = (topic, partition, offset) else {
        return Err((
            400,
            400,
            "the body needs topic_name, partition_id and a non-negative offset".to_string(),
        ));
    };
    let known = metadata
        .topics
        .get(topic)
        .is_some_and(|t| (0..t.partitions).contains(&partition));
    if !known {
        return Err((
            404,
            40402,
            format!("Partition {partition} of topic {topic} cannot be found."),
        ));
    }
    let now = crate::shard::now_ms();
    let who = Committer {
        group_id: group.to_string(),
        member_id: String::new(),
        group_instance_id: None,
        generation_id: -1,
        api_version: 8,
    };
    let value = CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: now,
    };
    let entries = vec![(topic.to_string(), partition, value)];
    let answer = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            c.groups.commit(now, &who, entries).await
        })
        .await
        .map_err(|_| (503, 503, "the group coordinator is stopping".to_string()))?;
    match answer.map(|errors| errors.into_iter().next().flatten()) {
        Ok(None) => Ok(serde_json::json!({
            "error_code": 200,
            "cluster_id": cluster,
            "consumer_group_id": group,
            "topic_name": topic,
            "partition_id": partition,
            "offset": offset,
        })
        .to_string()),
        Err(e) | Ok(Some(e)) => Err((409, 409, format!("the commit was refused: {e:?}"))),
    }
}
