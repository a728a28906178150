//! DeleteTopics (v1-v6): topics by name, and from v6 by topic id.
//!
//! Follows Kafka 4.1's `ControllerApis.deleteTopics`: an entry with neither a name nor an id,
//! or with both, is refused (INVALID_REQUEST); a name or id given twice is answered once with
//! INVALID_REQUEST ("Duplicate topic name." / "Duplicate topic id.") and not deleted; a name
//! that resolves to an id also given is refused. Unknown names get UNKNOWN_TOPIC_OR_PARTITION,
//! unknown ids UNKNOWN_TOPIC_ID. Deleted topics are answered with both their name and id (v6).
//! Answers follow request order (Kafka shuffles them; clients match by name or id).
//!
//! Resolution and deletion run on the coordinator shard. When the answer goes out the deletion
//! is durable in the metadata and every shard has dropped the topic's partitions (no request
//! finds them any more); their files are closed and removed afterwards in the background, one
//! partition at a time per shard, as Kafka deletes logs asynchronously. So a DeleteTopics of
//! 100 topics takes tens of milliseconds and does not hold up other admin requests; a topic
//! re-created under the same name waits only for its own old partitions' files to go.
//! `timeout_ms` is not used. Deleted partitions count against the client's
//! `controller_mutation_rate` (`crate::quota::MutationQuota`; refused from v5 when exhausted).

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::admin::AdminError;
use super::{decode, respond, str_bytes, Outcome};
use crate::coordinator::metadata::MetadataCommand;
use crate::protocol::header::ParsedRequest;
use crate::quota::MutationQuota;
use crate::shard::{Shard, ShardGone, COORDINATOR_SHARD};

/// One entry of the request after the checks that need no metadata.
#[derive(Debug)]
enum Slot {
    /// Delete the topic with this name.
    Name(String),
    /// Delete the topic with this id.
    Id(Uuid),
    /// Answered without looking: (name, id, why).
    Refused(Option<String>, Uuid, AdminError),
}

/// The answer for one entry: (name, id, outcome).
type Answer = (Option<String>, Uuid, Result<(), AdminError>);

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DeleteTopicsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut entries: Vec<(Option<String>, Uuid)> = body
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    entries.extend(
        body.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut slots = slots(entries);
    // Kafka: DELETE on each topic (one named by id: by the name it has).
    let metadata = shard.metadata();
    for slot in slots.iter_mut() {
        let (name, id) = match slot {
            Slot::Name(name) => (Some(name.clone()), Uuid::nil()),
            Slot::Id(id) => (metadata.topic_by_id(*id).map(|(n, _)| n.to_string()), *id),
            Slot::Refused(..) => continue,
        };
        let Some(topic) = name.clone() else { continue };
        if !super::authz::allowed(
            shard,
            &request,
            super::authz::Op::Delete,
            super::authz::Res::Topic,
            &topic,
        ) {
            let name = if id.is_nil() { name } else { None };
            *slot = Slot::Refused(name, id, AdminError::Unauthorized(super::authz::Res::Topic));
        }
    }
    let fallback: Vec<(Option<String>, Uuid)> = slots
        .iter()
        .map(|s| match s {
            Slot::Name(name) => (Some(name.clone()), Uuid::nil()),
            Slot::Id(id) => (None, *id),
            Slot::Refused(name, id, _) => (name.clone(), *id),
        })
        .collect();
    let quota = MutationQuota::new(
        &metadata.client_quotas,
        &request.principal,
        request.client_id_or_empty(),
        request.api_key,
        request.api_version,
    );
    let (answers, throttle_ms) = match shard
        .invoke_on(COORDINATOR_SHARD, move |coordinator| {
            delete_on_coordinator(coordinator, slots, quota)
        })
        .await
    {
        Ok((answers, quota)) => (answers, quota.throttle_ms()),
        Err(gone) => (
            fallback
                .into_iter()
                .map(|(name, id)| Some((name, id, Err(AdminError::ShardGone(ShardGone(gone.0))))))
                .collect(),
            0,
        ),
    };
    let mut response = DeleteTopicsResponse::default();
    response.throttle_time_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    for (name, id, outcome) in answers.into_iter().flatten() {
        let mut result = DeletableTopicResult::default();
        result.name = name.map(|n| TopicName(str_bytes(n)));
        result.topic_id = id;
        if let Err(error) = outcome {
            result.error_code = error.code();
            result.error_message = error.message();
        }
        response.responses.push(result);
    }
    super::throttle::throttled(respond(&request, &response), throttle_ms)
}

/// Turns the request's entries into slots, in request order: malformed entries are refused,
/// a repeated name or id is refused once (at its first occurrence) and dropped afterwards.
fn slots(entries: Vec<(Option<String>, Uuid)>) -> Vec<Slot> {
    let count_names = entries
        .iter()
        .filter(|(n, id)| n.is_some() && id.is_nil())
        .fold(std::collections::HashMap::new(), |mut m, (n, _)| {
            *m.entry(n.clone().unwrap_or_default()).or_insert(0) += 1;
            m
        });
    let count_ids = entries
        .iter()
        .filter(|(n, id)| n.is_none() && !id.is_nil())
        .fold(std::collections::HashMap::new(), |mut m, (_, id)| {
            *m.entry(*id).or_insert(0) += 1;
            m
        });
    let mut answered_names = HashSet::new();
    let mut answered_ids = HashSet::new();
    let mut slots = Vec::with_capacity(entries.len());
    for (name, id) in entries {
        match (name, id.is_nil()) {
            (None, true) => slots.push(Slot::Refused(None, id, AdminError::NoTopicNameOrId)),
            (Some(name), false) => {
                slots.push(Slot::Refused(Some(name), id, AdminError::TopicNameAndId))
            }
            (None, false) => {
                if count_ids[&id] == 1 {
                    slots.push(Slot::Id(id));
                } else if answered_ids.insert(id) {
                    slots.push(Slot::Refused(None, id, AdminError::DuplicateTopicId));
                }
            }
            (Some(name), true) => {
                if count_names[&name] == 1 {
                    slots.push(Slot::Name(name));
                } else if answered_names.insert(name.clone()) {
                    slots.push(Slot::Refused(
                        Some(name),
                        Uuid::nil(),
                        AdminError::DuplicateTopicName,
                    ));
                }
            }
        }
    }
    slots
}

/// Resolves and deletes on the coordinator shard. `None` marks a slot Kafka does not answer
/// separately (an id that a name in the same request also resolved to). Each topic to delete
/// takes its partitions from the request's controller mutation `quota` first (refused:
/// THROTTLING_QUOTA_EXCEEDED), which is handed back with the answers.
async fn delete_on_coordinator(
    coordinator: Rc<Shard>,
    slots: Vec<Slot>,
    mut quota: MutationQuota,
) -> (Vec<Option<Answer>>, MutationQuota) {
    let metadata = coordinator.metadata();
    let ids_given: HashSet<Uuid> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Id(id) => Some(*id),
            _ => None,
        })
        .collect();
    // Ids that a name also resolves to: refused on the name, not answered on the id.
    let mut shadowed = HashSet::new();
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(slots.len());
    // (slot, topic name, the id when the slot named the topic by id)
    let mut to_delete: Vec<(usize, String, Option<Uuid>)> = Vec::new();
    for slot in slots {
        let answer = match slot {
            Slot::Refused(name, id, error) => (name, id, Err(error)),
            Slot::Name(name) => match metadata.topics.get(&name) {
                None => (
                    Some(name),
                    Uuid::nil(),
                    Err(AdminError::UnknownTopicOrPartition),
                ),
                Some(topic) if ids_given.contains(&topic.id) => {
                    shadowed.insert(topic.id);
                    (Some(name), topic.id, Err(AdminError::NameMapsToSuppliedId))
                }
                Some(topic) => {
                    to_delete.push((answers.len(), name.clone(), None));
                    (Some(name), topic.id, Ok(()))
                }
            },
            Slot::Id(id) => match metadata.topic_by_id(id) {
                None => (None, id, Err(AdminError::UnknownTopicId)),
                Some((name, _)) => {
                    to_delete.push((answers.len(), name.to_string(), Some(id)));
                    (Some(name.to_string()), id, Ok(()))
                }
            },
        };
        answers.push(Some(answer));
    }
    // Drop the id entries shadowed by a name (their deletion too).
    let mut commands = Vec::new();
    let mut command_of = Vec::new();
    for (index, name, by_id) in to_delete {
        if by_id.is_some_and(|id| shadowed.contains(&id)) {
            answers[index] = None;
            continue;
        }
        let partitions = metadata
            .topics
            .get(&name)
            .map_or(0, |t| u64::try_from(t.partitions).unwrap_or(0));
        if !quota.record(partitions) {
            if let Some(answer) = answers[index].as_mut() {
                answer.2 = Err(AdminError::ThrottlingQuotaExceeded);
            }
            continue;
        }
        commands.push(MetadataCommand::DeleteTopic { name });
        command_of.push(index);
    }
    if !commands.is_empty() {
        let results = coordinator.change_metadata(commands, false).await;
        for (index, result) in command_of.into_iter().zip(results) {
            if let (Some(answer), Err(e)) = (answers[index].as_mut(), result) {
                answer.2 = Err(e.into());
            }
        }
    }
    (answers, quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(slots: &[Slot]) -> Vec<String> {
        slots
            .iter()
            .map(|s| match s {
                Slot::Name(n) => format!("name {n}"),
                Slot::Id(id) => format!("id {id}"),
                Slot::Refused(n, _, e) => format!("refused {} {e}", n.as_deref().unwrap_or("-")),
            })
            .collect()
    }

    #[test]
    fn malformed_and_repeated_entries_are_refused_once() {
        let id = Uuid::from_u128(7);
        let other = Uuid::from_u128(8);
        let entries = vec![
            (Some("a".to_string()), Uuid::nil()),
            (Some("b".to_string()), Uuid::nil()),
            (Some("a".to_string()), Uuid::nil()),
            (None, Uuid::nil()),
            (Some("c".to_string()), other),
            (None, id),
            (None, id),
            (Some("a".to_string()), Uuid::nil()),
        ];
        assert_eq!(
            describe(&slots(entries)),
            vec![
                "refused a Duplicate topic name.",
                "name b",
                "refused - Neither topic name nor id were specified.",
                "refused c You may not specify both topic name and topic id.",
                "refused - Duplicate topic id.",
            ]
        );
    }
}
