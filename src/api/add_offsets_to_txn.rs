//! AddOffsetsToTxn: a consumer group's offsets will be committed with the producer's open
//! transaction (TxnOffsetCommit follows); recorded durably on the coordinator shard.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{authz, decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{txns, Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: AddOffsetsToTxnRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let transactional_id = body.transactional_id.to_string();
    let group = body.group_id.to_string();
    let (producer_id, epoch) = (body.producer_id.0, body.producer_epoch);
    // Kafka: WRITE on the transactional id, READ on the group.
    let refused = authz::refusal(
        shard,
        &request,
        authz::Op::Write,
        authz::Res::TransactionalId,
        &transactional_id,
    )
    .or_else(|| authz::refusal(shard, &request, authz::Op::Read, authz::Res::Group, &group))
    .or_else(|| shard.not_coordinator(CoordinatorKind::Transaction, &transactional_id));
    let result = if let Some(e) = refused {
        Err(e)
    } else if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        shard
            .invoke_on(COORDINATOR_SHARD, move |c| async move {
                txns::add(
                    &c,
                    &transactional_id,
                    producer_id,
                    epoch,
                    Vec::new(),
                    Some(group),
                )
                .await
            })
            .await
            .unwrap_or(Err(coordinator_gone_code()))
    };
    let response =
        AddOffsetsToTxnResponse::default().with_error_code(crate::error::code(result.err()));
    super::respond(&request, &response)
}
