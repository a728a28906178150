//! ShareAcknowledge (KIP-932, API key 79): ACCEPT / RELEASE / REJECT (and GAP) of records a
//! member acquired, on its share session; answered only once the changed share-partition state
//! is durable in the share-state log (`shard::shares`). Epoch 0 cannot acknowledge
//! (INVALID_SHARE_SESSION_EPOCH); epoch -1 acknowledges, closes the session and releases what
//! the member still holds. Authorization as ShareFetch.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::share_acknowledge_response::{
    LeaderIdAndEpoch, PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};
use uuid::Uuid;

use super::{decode, Outcome};
use crate::error::coordinator_gone_code;
use crate::protocol::header::ParsedRequest;
use crate::shard::shares::{AckBatch, SessionCheck, SESSION_CLOSE_EPOCH};
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

type Acks = Vec<((Uuid, i32), Vec<AckBatch>)>;
type Answers = Result<Vec<((Uuid, i32), Option<ResponseError>)>, ResponseError>;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ShareAcknowledgeRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let top = |e: ResponseError| {
        let response = ShareAcknowledgeResponse::default().with_error_code(e.code());
        super::respond(&request, &response)
    };
    let (group, member) = match super::share_fetch::share_caller(
        shard,
        &request,
        body.group_id.as_ref().map(|g| &***g),
        body.member_id.as_deref(),
    ) {
        Ok(caller) => caller,
        Err(e) => return top(e),
    };
    let metadata = shard.metadata();
    let mut denied = Vec::new();
    // Partitions of topics the metadata does not have (deleted since their records were
    // acquired, or never there): Kafka's UNKNOWN_TOPIC_ID, nothing applied to share state a
    // deleted topic left behind.
    let mut unknown = Vec::new();
    let mut acks: Acks = Vec::new();
    for t in &body.topics {
        if metadata.topic_by_id(t.topic_id).is_none() {
            unknown.extend(t.partitions.iter().map(|p| (t.topic_id, p.partition_index)));
            continue;
        }
        let ok = metadata.topic_by_id(t.topic_id).is_none_or(|(name, _)| {
            super::authz::allowed(
                shard,
                &request,
                super::authz::Op::Read,
                super::authz::Res::Topic,
                name,
            )
        });
        for p in &t.partitions {
            let tp = (t.topic_id, p.partition_index);
            if !ok {
                denied.push(tp);
                continue;
            }
            let batches = p
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect();
            acks.push((tp, batches));
        }
    }
    let epoch = body.share_session_epoch;
    let answer: Answers = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            on_coordinator(c, group, member, epoch, acks).await
        })
        .await
        .unwrap_or_else(|_| Err(coordinator_gone_code()));
    let answers = match answer {
        Ok(a) => a,
        Err(e) => return top(e),
    };
    let mut topics: std::collections::BTreeMap<Uuid, Vec<PartitionData>> = Default::default();
    let leader = |topic_id: Uuid, p: i32| {
        let epoch = metadata
            .topic_by_id(topic_id)
            .and_then(|(_, m)| m.assignment.get(p as usize).map(|a| a.leader_epoch))
            .unwrap_or(0);
        LeaderIdAndEpoch::default()
            .with_leader_id(shard.config.node_id)
            .with_leader_epoch(epoch)
    };
    let denied = denied
        .into_iter()
        .map(|tp| (tp, Some(ResponseError::TopicAuthorizationFailed)))
        .chain(
            unknown
                .into_iter()
                .map(|tp| (tp, Some(ResponseError::UnknownTopicId))),
        );
    for ((topic_id, partition), error) in answers.into_iter().chain(denied) {
        topics.entry(topic_id).or_default().push(
            PartitionData::default()
                .with_partition_index(partition)
                .with_error_code(crate::error::code(error))
                .with_current_leader(leader(topic_id, partition)),
        );
    }
    let response = ShareAcknowledgeResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(topic_id, partitions)| {
                ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(topic_id)
                    .with_partitions(partitions)
            })
            .collect(),
    );
    super::respond(&request, &response)
}

async fn on_coordinator(
    c: Rc<Shard>,
    group: String,
    member: String,
    epoch: i32,
    acks: Acks,
) -> Answers {
    if !c.shares.is_loaded() {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    if let SessionCheck::Refused(e) =
        c.shares
            .check_session(&group, &member, epoch, false, &[], &[])
    {
        return Err(e);
    }
    let answers = c.shares.acknowledge(now_ms(), &group, &member, acks).await;
    if epoch == SESSION_CLOSE_EPOCH {
        c.shares.session_closed(&group, &member);
    }
    Ok(answers)
}
