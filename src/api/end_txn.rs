//! EndTxn: commit or abort a producer's transaction. The coordinator shard makes the decision
//! durable, writes a marker to every partition of the transaction, applies committed offsets,
//! and answers when all of it is done (`shard::txns`).
//!
//! v5 (KIP-890, transactions v2) answers with the producer id and epoch; Freshet does not
//! advertise `transaction.version` 2, so clients use v1 semantics and those fields are -1.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::{authz, decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{txns, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: EndTxnRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let transactional_id = body.transactional_id.to_string();
    let (producer_id, epoch, commit) = (body.producer_id.0, body.producer_epoch, body.committed);
    // Kafka: WRITE on the transactional id.
    let refused = authz::refusal(
        shard,
        &request,
        authz::Op::Write,
        authz::Res::TransactionalId,
        &transactional_id,
    )
    .or_else(|| shard.not_coordinator(CoordinatorKind::Transaction, &transactional_id));
    let result = match refused {
        Some(e) => Err(e),
        None => shard
            .invoke_on(COORDINATOR_SHARD, move |c| async move {
                txns::end_txn(&c, &transactional_id, producer_id, epoch, commit).await
            })
            .await
            .unwrap_or(Err(coordinator_gone_code())),
    };
    // Before v2 a fenced producer is told INVALID_PRODUCER_EPOCH (it knows no PRODUCER_FENCED).
    let error = match result.err() {
        Some(ResponseError::ProducerFenced) if request.api_version < 2 => {
            Some(ResponseError::InvalidProducerEpoch)
        }
        other => other,
    };
    let response = EndTxnResponse::default()
        .with_error_code(crate::error::code(error))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    super::respond(&request, &response)
}
