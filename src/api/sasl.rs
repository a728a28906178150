//! SaslHandshake and SaslAuthenticate on a listener without SASL, or after authentication.
//!
//! On a SASL listener the connection serves both itself until the client has authenticated
//! (`server::connection::sasl_gate`); they reach this module only on a PLAINTEXT or SSL listener
//! or on an authenticated connection when no re-authentication can begin there
//! (the session never expires: `connections_max_reauth_ms` = 0 and a credential without a
//! lifetime, unlike an OAUTHBEARER token; or less than a second after the last one, as Kafka).
//! Kafka answers both there (they reach `KafkaApis`) with ILLEGAL_SASL_STATE and no mechanisms.
//! Answering, rather than closing the connection, lets a client configured for SASL report an
//! authentication error naming its mechanism instead of a bare transport failure.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::{decode, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

/// SaslHandshake: ILLEGAL_SASL_STATE, no enabled mechanisms.
pub async fn handshake(_shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: SaslHandshakeRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    tracing::warn!(client_host = %request.client_host, mechanism = %body.mechanism.as_str(), "SASL handshake on a plaintext listener (a listener without SASL, or after authentication); answering ILLEGAL_SASL_STATE");
    let response = SaslHandshakeResponse::default()
        .with_error_code(crate::error::code(Some(ResponseError::IllegalSaslState)))
        .with_mechanisms(Vec::new());
    super::respond(&request, &response)
}

/// SaslAuthenticate: ILLEGAL_SASL_STATE, with a message saying why.
pub async fn authenticate(_shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    if let Err(outcome) = decode::<SaslAuthenticateRequest>(&request) {
        return outcome;
    }
    let response = SaslAuthenticateResponse::default()
        .with_error_code(crate::error::code(Some(ResponseError::IllegalSaslState)))
        .with_error_message(Some(str_bytes(
            "SaslAuthenticate on a listener without SASL, or after authentication",
        )));
    super::respond(&request, &response)
}
