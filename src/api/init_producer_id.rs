//! InitProducerId: producer ids for idempotent producers.
//!
//! Ids come from the coordinator shard, reserved durably in blocks so none is reused after a
//! restart. Every call gets a fresh id with epoch 0 (Kafka bumps the epoch of a known id
//! instead; a fresh id is equally valid for a client, and Kafka does the same for producers
//! without a `transactional_id`). Sequences are checked per partition by the log
//! (`storage::producer_state`).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{decode, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, COORDINATOR_SHARD};

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: InitProducerIdRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = InitProducerIdResponse::default();
    if body.transactional_id.is_some() {
        tracing::warn!("transactional producers are not supported yet");
        response.error_code = ResponseError::InvalidRequest.code();
        response.producer_id = ProducerId(-1);
        response.producer_epoch = -1;
        return super::respond(&request, &response);
    }
    let allocated = shard
        .invoke_on(COORDINATOR_SHARD, |coordinator| async move {
            coordinator.allocate_producer_id().await.map_err(|e| e.code)
        })
        .await;
    match allocated {
        Ok(Ok(id)) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Ok(Err(code)) => {
            response.error_code = code.code();
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
        }
        Err(_) => {
            response.error_code = ResponseError::CoordinatorNotAvailable.code();
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
        }
    }
    super::respond(&request, &response)
}
