//! DescribeTransactions: the coordinator's view of each asked transactional id (state,
//! producer id and epoch, timeout, start time, partitions). Unknown ids get
//! TRANSACTIONAL_ID_NOT_FOUND.

use crate::error::coordinator_gone_code;
use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::{decode, str_bytes, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

/// What the coordinator says of one id: (state, timeout, start, producer id, epoch,
/// partitions), or its error.
type Described = Result<(String, i32, i64, i64, i16, Vec<(String, i32)>), ResponseError>;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeTransactionsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let ids: Vec<String> = body
        .transactional_ids
        .iter()
        .map(|t| t.to_string())
        .collect();
    let asked = ids.clone();
    let answers: Vec<Described> = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            let state = c.txns.state.borrow();
            asked
                .iter()
                .map(|id| {
                    let m = state
                        .get(id)
                        .ok_or(ResponseError::TransactionalIdNotFound)?;
                    Ok((
                        m.state.name().to_string(),
                        m.timeout_ms,
                        m.start_ms,
                        m.producer_id,
                        m.epoch,
                        m.partitions.iter().cloned().collect(),
                    ))
                })
                .collect()
        })
        .await
        .unwrap_or_else(|_| ids.iter().map(|_| Err(coordinator_gone_code())).collect());
    let mut response = DescribeTransactionsResponse::default();
    for (id, answer) in body.transactional_ids.iter().zip(answers) {
        let mut t = TransactionState::default().with_transactional_id(id.clone());
        // Kafka: DESCRIBE on the transactional id.
        let refused = super::authz::refusal(
            shard,
            &request,
            super::authz::Op::Describe,
            super::authz::Res::TransactionalId,
            id,
        )
        .or_else(|| shard.not_coordinator(CoordinatorKind::Transaction, id));
        let answer = match refused {
            Some(e) => Err(e),
            None => answer,
        };
        match answer {
            Err(e) => {
                t.error_code = e.code();
                t.producer_id = ProducerId(-1);
                t.producer_epoch = -1;
                t.transaction_start_time_ms = -1;
            }
            Ok((state, timeout_ms, start_ms, pid, epoch, partitions)) => {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, p) in partitions {
                    by_topic.entry(topic).or_default().push(p);
                }
                t.transaction_state = str_bytes(state);
                t.transaction_timeout_ms = timeout_ms;
                t.transaction_start_time_ms = start_ms;
                t.producer_id = ProducerId(pid);
                t.producer_epoch = epoch;
                t.topics = by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        TopicData::default()
                            .with_topic(TopicName(str_bytes(topic)))
                            .with_partitions(partitions)
                    })
                    .collect();
            }
        }
        response.transaction_states.push(t);
    }
    super::respond(&request, &response)
}
