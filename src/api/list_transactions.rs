//! ListTransactions: the coordinator's transactional ids, filtered by state names, producer
//! ids and (v1) minimum running time, as Kafka filters them. State names Kafka does not know
//! are echoed in `unknown_state_filters`. v2's `transactional_id_pattern` (a regular
//! expression) is not served: Freshet advertises v0-1.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::{decode, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

/// Kafka's transaction state names (`TransactionState`).
const STATE_NAMES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ListTransactionsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let states: Vec<String> = body.state_filters.iter().map(|s| s.to_string()).collect();
    let unknown: Vec<String> = states
        .iter()
        .filter(|s| !STATE_NAMES.contains(&s.as_str()))
        .cloned()
        .collect();
    let producers: Vec<i64> = body.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = if request.api_version >= 1 {
        body.duration_filter
    } else {
        -1
    };
    let listed = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            let now = now_ms();
            c.txns
                .state
                .borrow()
                .iter()
                .filter(|(_, m)| states.is_empty() || states.iter().any(|s| s == m.state.name()))
                .filter(|(_, m)| producers.is_empty() || producers.contains(&m.producer_id))
                .filter(|(_, m)| duration < 0 || now.saturating_sub(m.start_ms) >= duration)
                .map(|(id, m)| (id.clone(), m.producer_id, m.state.name().to_string()))
                .collect::<Vec<_>>()
        })
        .await;
    let mut response = ListTransactionsResponse::default();
    match listed {
        Ok(listed) => {
            // Kafka: only the transactional ids the caller may DESCRIBE.
            response.transaction_states = listed
                .into_iter()
                .filter(|(id, _, _)| {
                    super::authz::allowed(
                        shard,
                        &request,
                        super::authz::Op::Describe,
                        super::authz::Res::TransactionalId,
                        id,
                    )
                })
                .map(|(id, pid, state)| {
                    TransactionState::default()
                        .with_transactional_id(TransactionalId(str_bytes(id)))
                        .with_producer_id(ProducerId(pid))
                        .with_transaction_state(str_bytes(state))
                })
                .collect();
        }
        Err(_) => {
            response.error_code = coordinator_gone_code().code();
        }
    }
    response.unknown_state_filters = unknown.into_iter().map(str_bytes).collect();
    super::respond(&request, &response)
}
