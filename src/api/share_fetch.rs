//! ShareFetch (KIP-932, API key 78): acknowledges what the request carries, then acquires
//! records of the share session's partitions for the member, waiting up to `max_wait_ms` for
//! some. The session, the acknowledgements (written durably before the answer) and the
//! acquisition run on the coordinator shard (`shard::shares`); the records are read from the
//! partitions' owning shards and go out as whole batches, with the acquired offset ranges and
//! their delivery counts beside them (the client keeps only acquired records).
//!
//! As Kafka's `KafkaApis.handleShareFetchRequest`: READ on the group (else a top-level
//! GROUP_AUTHORIZATION_FAILED), READ on each topic (else TOPIC_AUTHORIZATION_FAILED for its
//! partitions); a missing group or member id, or acknowledgements in a request opening a
//! session (epoch 0), are INVALID_REQUEST; session errors are top-level.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::{ShareFetchRequest, ShareFetchResponse};
use uuid::Uuid;

use super::{decode, str_bytes, Outcome};
use crate::error::coordinator_gone_code;
use crate::protocol::header::ParsedRequest;
use crate::shard::shares::{
    fetch_records, AckBatch, FetchAsk, FetchedPartition, SessionCheck, SESSION_CLOSE_EPOCH,
    SESSION_OPEN_EPOCH,
};
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

/// What the coordinator shard answers.
struct Answer {
    error: Option<ResponseError>,
    acks: Vec<((Uuid, i32), Option<ResponseError>)>,
    fetched: BTreeMap<(Uuid, i32), FetchedPartition>,
    lock_ms: i64,
}

impl Answer {
    fn error(e: ResponseError) -> Answer {
        Answer {
            error: Some(e),
            acks: Vec::new(),
            fetched: BTreeMap::new(),
            lock_ms: 0,
        }
    }
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ShareFetchRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let top = |e: ResponseError| {
        let response = ShareFetchResponse::default().with_error_code(e.code());
        super::respond(&request, &response)
    };
    let (group, member) = match share_caller(
        shard,
        &request,
        body.group_id.as_ref().map(|g| &***g),
        body.member_id.as_deref(),
    ) {
        Ok(caller) => caller,
        Err(e) => return top(e),
    };
    let metadata = shard.metadata();
    let readable = |topic_id: Uuid| match metadata.topic_by_id(topic_id) {
        Some((name, _)) => super::authz::allowed(
            shard,
            &request,
            super::authz::Op::Read,
            super::authz::Res::Topic,
            name,
        ),
        // Unknown ids are answered UNKNOWN_TOPIC_ID by the fetch.
        None => true,
    };
    let mut denied: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    let mut added = Vec::new();
    let mut acks: Vec<((Uuid, i32), Vec<AckBatch>)> = Vec::new();
    for t in &body.topics {
        let ok = readable(t.topic_id);
        for p in &t.partitions {
            let tp = (t.topic_id, p.partition_index);
            if !ok {
                denied.insert(tp);
                continue;
            }
            added.push(tp);
            if !p.acknowledgement_batches.is_empty() {
                let batches = p
                    .acknowledgement_batches
                    .iter()
                    .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                    .collect();
                acks.push((tp, batches));
            }
        }
    }
    let forgotten: Vec<(Uuid, i32)> = body
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
        .collect();
    let epoch = body.share_session_epoch;
    if epoch == SESSION_OPEN_EPOCH && !acks.is_empty() {
        return top(ResponseError::InvalidRequest);
    }
    let requested: Vec<(Uuid, i32)> = added
        .iter()
        .copied()
        .chain(denied.iter().copied())
        .collect();
    let ask = FetchAsk {
        group,
        member,
        partitions: Vec::new(),
        max_wait_ms: i64::from(body.max_wait_ms.max(0)),
        max_records: body.max_records.max(1) as usize,
        // 0 (librdkafka's fetch.max.bytes=0) acquires nothing, as Kafka.
        max_bytes: body.max_bytes.max(0) as usize,
    };
    let answer = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            on_coordinator(c, ask, epoch, added, forgotten, acks).await
        })
        .await
        .unwrap_or_else(|_| Answer::error(coordinator_gone_code()));
    if let Some(e) = answer.error {
        return top(e);
    }
    let mut partitions: BTreeMap<(Uuid, i32), PartitionData> = BTreeMap::new();
    let leader = |topic_id: Uuid, p: i32| {
        let epoch = metadata
            .topic_by_id(topic_id)
            .and_then(|(_, m)| m.assignment.get(p as usize).map(|a| a.leader_epoch))
            .unwrap_or(0);
        LeaderIdAndEpoch::default()
            .with_leader_id(shard.config.node_id)
            .with_leader_epoch(epoch)
    };
    let entry = |partitions: &mut BTreeMap<(Uuid, i32), PartitionData>, tp: (Uuid, i32)| {
        partitions.entry(tp).or_insert_with(|| {
            PartitionData::default()
                .with_partition_index(tp.1)
                .with_current_leader(leader(tp.0, tp.1))
        });
    };
    for tp in requested {
        entry(&mut partitions, tp);
    }
    for tp in &denied {
        if let Some(p) = partitions.get_mut(tp) {
            p.error_code = ResponseError::TopicAuthorizationFailed.code();
        }
    }
    for (tp, error) in answer.acks {
        entry(&mut partitions, tp);
        if let Some(p) = partitions.get_mut(&tp) {
            p.acknowledge_error_code = crate::error::code(error);
        }
    }
    for (tp, fetched) in answer.fetched {
        if fetched.error.is_none() && fetched.acquired.is_empty() && !partitions.contains_key(&tp) {
            continue;
        }
        entry(&mut partitions, tp);
        let Some(p) = partitions.get_mut(&tp) else {
            continue;
        };
        p.error_code = crate::error::code(fetched.error);
        if !fetched.batches.is_empty() {
            let mut records = BytesMut::new();
            for b in &fetched.batches {
                records.extend_from_slice(b);
            }
            p.records = Some(records.freeze());
        } else {
            p.records = Some(Bytes::new());
        }
        p.acquired_records = fetched
            .acquired
            .iter()
            .map(|r| {
                AcquiredRecords::default()
                    .with_first_offset(r.first_offset)
                    .with_last_offset(r.last_offset)
                    .with_delivery_count(r.delivery_count)
            })
            .collect();
    }
    let mut topics: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
    for ((topic_id, _), p) in partitions {
        topics.entry(topic_id).or_default().push(p);
    }
    let response = ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(answer.lock_ms.min(i64::from(i32::MAX)) as i32)
        .with_error_message(None::<String>.map(str_bytes))
        .with_responses(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    ShareFetchableTopicResponse::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        );
    super::respond(&request, &response)
}

/// The group and member ids of a ShareFetch or ShareAcknowledge, both present and not empty
/// (else INVALID_REQUEST), the group readable by the caller (else the authorizer's error).
pub(super) fn share_caller(
    shard: &Shard,
    request: &ParsedRequest,
    group_id: Option<&str>,
    member_id: Option<&str>,
) -> Result<(String, String), ResponseError> {
    let (Some(group), Some(member)) = (group_id, member_id) else {
        return Err(ResponseError::InvalidRequest);
    };
    if group.is_empty() || member.is_empty() {
        return Err(ResponseError::InvalidRequest);
    }
    if let Some(e) = super::authz::refusal(
        shard,
        request,
        super::authz::Op::Read,
        super::authz::Res::Group,
        group,
    ) {
        return Err(e);
    }
    Ok((group.to_string(), member.to_string()))
}

/// On the coordinator shard: the session, the acknowledgements, then the records.
async fn on_coordinator(
    c: Rc<Shard>,
    mut ask: FetchAsk,
    epoch: i32,
    added: Vec<(Uuid, i32)>,
    forgotten: Vec<(Uuid, i32)>,
    acks: Vec<((Uuid, i32), Vec<AckBatch>)>,
) -> Answer {
    if !c.shares.is_loaded() {
        return Answer::error(ResponseError::CoordinatorNotAvailable);
    }
    let partitions =
        match c
            .shares
            .check_session(&ask.group, &ask.member, epoch, true, &added, &forgotten)
        {
            SessionCheck::Refused(e) => return Answer::error(e),
            SessionCheck::Ok(partitions) => partitions,
        };
    let acks = c
        .shares
        .acknowledge(now_ms(), &ask.group, &ask.member, acks)
        .await;
    let lock_ms = c.shares.lock_duration_ms(&c.metadata(), &ask.group);
    if epoch == SESSION_CLOSE_EPOCH {
        c.shares.session_closed(&ask.group, &ask.member);
        return Answer {
            error: None,
            acks,
            fetched: BTreeMap::new(),
            lock_ms,
        };
    }
    ask.partitions = partitions;
    let fetched = fetch_records(&c, ask).await;
    Answer {
        error: None,
        acks,
        fetched,
        lock_ms,
    }
}
