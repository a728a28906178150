//! Committed offsets APIs on the coordinator shard: OffsetCommit (member and generation
//! checks, then a durable write), OffsetFetch, OffsetDelete, and the deletion of the offsets
//! of deleted topics.

use kafka_protocol::error::ResponseError;

use super::GroupCoordinator;
use crate::coordinator::offsets::{self, CommittedOffset, OffsetKey};

impl GroupCoordinator {
    /// Deletes (durably) every committed offset of `topics` (they were deleted).
    pub async fn drop_topics(&self, topics: &[String], now_ms: i64) -> Result<(), ResponseError> {
        let changes = self.offsets.borrow().of_topics(topics);
        let changes = changes.into_iter().map(|key| (key, None)).collect();
        self.write_offsets(changes, now_ms).await
    }

    /// OffsetCommit of `entries` (topic, partition, value): Kafka's member and generation (or
    /// member epoch) checks, then a durable write. Returns one error per entry, or a
    /// group-level error for all of them.
    pub async fn commit(
        &self,
        now_ms: i64,
        who: &Committer,
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let Committer {
            group_id,
            member_id,
            group_instance_id,
            generation_id,
            api_version,
        } = who;
        let (group_id, member_id, group_instance_id) = (
            group_id.as_str(),
            member_id.as_str(),
            group_instance_id.as_deref(),
        );
        let (generation_id, api_version) = (*generation_id, *api_version);
        let consumer_check = self.consumer.borrow().validate_offset_commit(
            group_id,
            member_id,
            generation_id,
            api_version,
        );
        match consumer_check {
            Some(check) => check?,
            None => {
                self.groups.borrow().validate_offset_commit(
                    group_id,
                    member_id,
                    group_instance_id,
                    generation_id,
                )?;
                self.groups.borrow_mut().ensure_group(group_id);
            }
        }
        let mut errors = Vec::with_capacity(entries.len());
        let mut changes = Vec::with_capacity(entries.len());
        for (topic, partition, value) in entries {
            if value.metadata.len() > offsets::OFFSET_METADATA_BYTES_MAX {
                errors.push(Some(ResponseError::OffsetMetadataTooLarge));
                continue;
            }
            errors.push(None);
            changes.push((
                OffsetKey {
                    group: group_id.to_string(),
                    topic,
                    partition,
                },
                Some(value),
            ));
        }
        match self.write_offsets(changes, now_ms).await {
            Ok(()) => Ok(errors),
            Err(e) => Ok(errors.into_iter().map(|x| x.or(Some(e))).collect()),
        }
    }

    /// OffsetFetch for one group: the asked partitions (`None`: every committed one), each with
    /// its committed offset if any.
    pub fn fetch(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        member: Option<(Option<String>, i32)>,
    ) -> Result<FetchedOffsets, ResponseError> {
        if !self.is_loaded() {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        if let Some((member_id, member_epoch)) = member {
            self.consumer.borrow().validate_offset_fetch(
                group_id,
                member_id.as_deref(),
                member_epoch,
            )?;
        }
        let table = self.offsets.borrow();
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, table.get(group_id, &topic, p).cloned()))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut out: FetchedOffsets = Vec::new();
                for ((topic, partition), value) in table.of_group(group_id) {
                    match out.last_mut() {
                        Some((t, parts)) if *t == topic => parts.push((partition, Some(value))),
                        _ => out.push((topic, vec![(partition, Some(value))])),
                    }
                }
                out
            }
        })
    }

    /// OffsetDelete: removes committed offsets of partitions the group's members do not
    /// subscribe to. Returns one error per asked partition, or a group-level error.
    pub async fn delete_offsets(
        &self,
        now_ms: i64,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let subscribed = {
            let groups = self.groups.borrow();
            let consumer = self.consumer.borrow();
            match groups.group(group_id) {
                None if consumer.group(group_id).is_some() => {
                    consumer.group(group_id).map(|g| g.subscribed_topic_names())
                }
                None if !self.offsets.borrow().has_group(group_id) => {
                    return Err(ResponseError::GroupIdNotFound)
                }
                None => Some(Default::default()),
                Some(g) if g.is_empty() => Some(Default::default()),
                Some(g) => g.subscribed_topics(),
            }
        };
        let mut errors = Vec::with_capacity(partitions.len());
        let mut changes = Vec::new();
        for (topic, partition) in partitions {
            let in_use = subscribed.as_ref().is_none_or(|s| s.contains(&topic));
            if in_use {
                errors.push(Some(ResponseError::GroupSubscribedToTopic));
                continue;
            }
            errors.push(None);
            if self
                .offsets
                .borrow()
                .get(group_id, &topic, partition)
                .is_some()
            {
                changes.push((
                    OffsetKey {
                        group: group_id.to_string(),
                        topic,
                        partition,
                    },
                    None,
                ));
            }
        }
        self.write_offsets(changes, now_ms).await?;
        Ok(errors)
    }
}

/// The group and member fields of an OffsetCommit request.
#[derive(Clone, Debug)]
pub struct Committer {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The generation (classic groups) or member epoch (consumer groups); -1 for none.
    pub generation_id: i32,
    pub api_version: i16,
}

/// OffsetFetch's answer for one group: per topic, per partition, the committed offset if any.
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;
