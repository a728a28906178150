//! DescribeLogDirs (v1-v4): the data directory and the partitions in it.
//!
//! Freshet has one log directory, the data directory, reported as an absolute path (Kafka
//! reports `log.dirs` entries that way). Each shard lists the partitions it has open (those
//! this broker leads: `shard::routing`; nothing else is hosted here yet) with
//! their size on disk (`PartitionLog::size_bytes`); the offset lag is 0 (a leader's lag,
//! `max(high watermark - log end, 0)`, and nothing is ever a future replica here). Requested
//! topics and partitions filter the list (null: all; unknown ones are simply absent), and
//! topics left without partitions are omitted, as Kafka's `ReplicaManager.describeLogDirs`
//! does. v4 adds the file system's total and usable bytes (statvfs, run off the shard's
//! thread); if the directory cannot be examined the entry carries KAFKA_STORAGE_ERROR.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::admin::AdminError;
use super::configs::absolute_data_dir;
use super::{decode, respond, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

/// Requested partitions by topic; `None` means all.
type Filter = Option<HashMap<String, HashSet<i32>>>;

/// (topic, partition, size in bytes) of one open partition.
type PartitionSize = (String, i32, u64);

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeLogDirsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let filter: Arc<Filter> = Arc::new(body.topics.as_ref().map(|topics| {
        let mut wanted: HashMap<String, HashSet<i32>> = HashMap::new();
        for t in topics {
            wanted
                .entry(t.topic.0.to_string())
                .or_default()
                .extend(t.partitions.iter().copied());
        }
        wanted
    }));
    let mut sizes: Vec<PartitionSize> = Vec::new();
    let mut failure = None;
    // Kafka: DESCRIBE on the cluster (else CLUSTER_AUTHORIZATION_FAILED, v3+ at the top).
    if !super::authz::cluster_allowed(shard, &request, super::authz::Op::Describe) {
        let mut response = DescribeLogDirsResponse::default();
        response.error_code =
            kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code();
        return respond(&request, &response);
    }
    for answer in shard
        .invoke_on_all(move |s| async move { open_partition_sizes(&s, &filter) })
        .await
    {
        match answer {
            Ok(list) => sizes.extend(list),
            Err(gone) => failure = Some(AdminError::ShardGone(gone)),
        }
    }

    let log_dir = absolute_data_dir(&shard.config);
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(log_dir.clone());
    if let Some(error) = failure {
        result.error_code = error.code();
    } else {
        let dir = PathBuf::from(&log_dir);
        match crate::rt::spawn_blocking(move || crate::os::disk_space(&dir)).await {
            Ok((total, usable)) => {
                result.total_bytes = total;
                result.usable_bytes = usable;
                result.topics = group_by_topic(sizes);
            }
            Err(source) => {
                let error = AdminError::LogDir {
                    dir: log_dir,
                    source,
                };
                tracing::warn!(error = %error, "describing the log directory failed");
                result.error_code = error.code();
            }
        }
    }
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    respond(&request, &response)
}

/// The open partitions of this shard that the filter asks for, with their sizes.
fn open_partition_sizes(shard: &Shard, filter: &Filter) -> Vec<PartitionSize> {
    shard
        .partitions()
        .into_iter()
        .filter(|p| match filter {
            None => true,
            Some(wanted) => wanted
                .get(&p.topic)
                .is_some_and(|indexes| indexes.contains(&p.index)),
        })
        .map(|p| (p.topic.clone(), p.index, p.log.size_bytes()))
        .collect()
}

/// The response's topics, sorted by name, partitions sorted by index.
fn group_by_topic(sizes: Vec<PartitionSize>) -> Vec<DescribeLogDirsTopic> {
    let mut by_topic: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for (topic, index, size) in sizes {
        by_topic.entry(topic).or_default().push((index, size));
    }
    by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_unstable();
            let mut topic = DescribeLogDirsTopic::default();
            topic.name = TopicName(str_bytes(name));
            topic.partitions = partitions
                .into_iter()
                .map(|(index, size)| {
                    let mut p = DescribeLogDirsPartition::default();
                    p.partition_index = index;
                    p.partition_size = i64::try_from(size).unwrap_or(i64::MAX);
                    p.offset_lag = 0;
                    p.is_future_key = false;
                    p
                })
                .collect();
            topic
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_grouped_and_sorted() {
        let topics = group_by_topic(vec![
            ("b".into(), 1, 10),
            ("a".into(), 2, 20),
            ("b".into(), 0, 30),
        ]);
        let flat: Vec<(String, i32, i64)> = topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index, p.partition_size))
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                ("a".into(), 2, 20),
                ("b".into(), 0, 30),
                ("b".into(), 1, 10)
            ]
        );
    }
}
