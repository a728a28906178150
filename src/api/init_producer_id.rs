//! InitProducerId: producer ids for idempotent and transactional producers.
//!
//! With a `transactional_id`, the transaction coordinator (`shard::txns`) answers: the id's
//! producer id with a bumped epoch (fencing older instances), after aborting a transaction the
//! previous instance left open.
//!
//! Ids come from the coordinator shard, reserved durably in blocks so none is reused after a
//! restart. Every call gets a fresh id with epoch 0 (Kafka bumps the epoch of a known id
//! instead; a fresh id is equally valid for a client, and Kafka does the same for producers
//! without a `transactional_id`). Sequences are checked per partition by the log
//! (`storage::producer_state`).

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{authz, decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{txns, Shard, COORDINATOR_SHARD};

/// Kafka: WRITE on the transactional id; without one (an idempotent producer),
/// IDEMPOTENT_WRITE on the cluster or WRITE on some topic (KIP-679).
fn authz_refusal(
    shard: &Shard,
    request: &ParsedRequest,
    transactional_id: Option<&str>,
) -> Option<kafka_protocol::error::ResponseError> {
    match transactional_id {
        Some(id) => authz::refusal(
            shard,
            request,
            authz::Op::Write,
            authz::Res::TransactionalId,
            id,
        ),
        None => {
            let allowed = authz::cluster_allowed(shard, request, authz::Op::IdempotentWrite)
                || authz::allowed_on_some(shard, request, authz::Op::Write, authz::Res::Topic);
            (!allowed).then_some(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed)
        }
    }
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: InitProducerIdRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = InitProducerIdResponse::default();
    let transactional_id = body.transactional_id.as_ref().map(|t| t.to_string());
    let timeout_ms = body.transaction_timeout_ms;
    let expected = (body.producer_id.0 >= 0).then_some((body.producer_id.0, body.producer_epoch));
    let refused = authz_refusal(shard, &request, transactional_id.as_deref()).or_else(|| {
        transactional_id
            .as_deref()
            .and_then(|id| shard.not_coordinator(CoordinatorKind::Transaction, id))
    });
    if let Some(e) = refused {
        response.error_code = e.code();
        response.producer_id = ProducerId(-1);
        response.producer_epoch = -1;
        return super::respond(&request, &response);
    }
    let allocated = shard
        .invoke_on(COORDINATOR_SHARD, move |coordinator| async move {
            match transactional_id {
                Some(id) => txns::init_producer_id(&coordinator, &id, timeout_ms, expected).await,
                None => coordinator
                    .allocate_producer_id()
                    .await
                    .map(|id| (id, 0))
                    .map_err(|e| e.code),
            }
        })
        .await;
    match allocated {
        Ok(Ok((id, epoch))) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = epoch;
        }
        Ok(Err(code)) => {
            response.error_code = code.code();
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
        }
        Err(_) => {
            response.error_code = coordinator_gone_code().code();
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
        }
    }
    super::respond(&request, &response)
}
