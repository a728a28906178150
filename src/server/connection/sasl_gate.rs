//! A SASL listener's connection before it has authenticated (Kafka's
//! `SaslServerAuthenticator`): only ApiVersions, SaslHandshake and SaslAuthenticate are
//! served; any other request closes the connection, as Kafka does ("Unexpected Kafka request
//! ... during SASL handshake"). The handshake picks a mechanism (UNSUPPORTED_SASL_MECHANISM
//! with the enabled ones, then close, for another); each SaslAuthenticate token goes to the
//! connection's [`SaslServer`]. After a v0 handshake the tokens come raw (size-prefixed, no
//! request header) and are answered raw.
//!
//! A failed authentication is answered with SASL_AUTHENTICATION_FAILED and Kafka's message
//! after `connection_failed_authentication_delay_ms`, then the connection closes; it is logged
//! (peer, listener, mechanism, reason) and counted (`freshet_authentication_failures_total`).
//! Frames are at most [`crate::security::sasl::SASL_RECEIVE_BYTES_MAX`] until authenticated
//! (the caller's frame limit), so an unauthenticated client holds at most that much.

use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};

use super::{InFlight, Reservation, Session};
use crate::api::{self, str_bytes, Outcome};
use crate::protocol::frame::SIZE_PREFIX_BYTES;
use crate::protocol::header::{classify_request, parse_request_header, Disposition};
use crate::security::sasl::{HandshakeError, Step};
use crate::security::scram::{ScramCredential, ScramMechanism};
use crate::shard::Shard;

/// Handles one frame of a connection that has not authenticated yet. `Ok(Some(frame))`:
/// serve it as usual (ApiVersions); `Ok(None)`: answered here (the session may now be
/// authenticated: `session.sasl` is `None` then); `Err`: why the connection closes.
pub(super) async fn step(
    shard: &Rc<Shard>,
    session: &mut Session,
    frame: BytesMut,
    queue: &flume::Sender<InFlight>,
    peer: &str,
) -> Result<Option<BytesMut>, String> {
    let sasl = session.sasl.as_mut().expect("a session authenticating");
    if !sasl.awaiting_handshake() && !sasl.authenticate_requests {
        // After a v0 handshake: the frame (its size prefix taken off) is a raw token.
        let token = frame.to_vec();
        return match evaluate(shard, session, &token, peer) {
            Ok(response) => {
                answer(shard, queue, raw_token(&response), Duration::ZERO).await?;
                Ok(None)
            }
            Err(why) => {
                let delay = failure_delay(shard);
                answer(shard, queue, Outcome::Close(why.clone()), delay).await?;
                Err(why)
            }
        };
    }
    // The frame starts with the request header's api key.
    let api_key = (frame.len() >= 2).then(|| i16::from_be_bytes([frame[0], frame[1]]));
    if api_key == Some(ApiKey::ApiVersions as i16) {
        return Ok(Some(frame));
    }
    let request = parse_request_header(frame.freeze()).map_err(|e| {
        tracing::warn!(%peer, error = %e, "unparseable request header during SASL authentication; closing connection");
        format!("bad request header: {e}")
    })?;
    let key = request.key();
    let served = matches!(key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
        && classify_request(request.api_key, request.api_version) == Disposition::Handle;
    if !served {
        tracing::warn!(%peer, listener = %session.listener.name, api_key = request.api_key, api_version = request.api_version, "unexpected request during SASL authentication (the client is not configured for SASL?); closing connection");
        crate::metrics::record_authentication(false);
        return Err(format!(
            "unexpected request {} v{} during SASL handshake",
            request.api_key, request.api_version
        ));
    }
    if key == ApiKey::SaslHandshake {
        let body: SaslHandshakeRequest = decode(&request)?;
        let sasl = session.sasl.as_mut().expect("a session authenticating");
        let result = sasl.handshake(body.mechanism.as_str(), request.api_version);
        let mechanisms = sasl.enabled_names().into_iter().map(str_bytes).collect();
        let error = match result {
            Ok(()) => None,
            Err(HandshakeError::UnsupportedMechanism) => {
                Some(ResponseError::UnsupportedSaslMechanism)
            }
            Err(HandshakeError::IllegalState) => Some(ResponseError::IllegalSaslState),
        };
        let response = SaslHandshakeResponse::default()
            .with_error_code(crate::error::code(error))
            .with_mechanisms(mechanisms);
        answer(
            shard,
            queue,
            api::respond(&request, &response),
            Duration::ZERO,
        )
        .await?;
        return match error {
            None => Ok(None),
            Some(e) => {
                tracing::warn!(%peer, listener = %session.listener.name, mechanism = %body.mechanism.as_str(), error = ?e, "SASL handshake refused; closing connection");
                crate::metrics::record_authentication(false);
                answer(
                    shard,
                    queue,
                    Outcome::Close("SASL handshake refused".into()),
                    Duration::ZERO,
                )
                .await?;
                Err(format!("SASL handshake refused: {e:?}"))
            }
        };
    }
    let body: SaslAuthenticateRequest = decode(&request)?;
    if session
        .sasl
        .as_ref()
        .is_some_and(|s| s.awaiting_handshake())
    {
        // Kafka: SaslAuthenticate before SaslHandshake is ILLEGAL_SASL_STATE, then close.
        let response = SaslAuthenticateResponse::default()
            .with_error_code(crate::error::code(Some(ResponseError::IllegalSaslState)))
            .with_error_message(Some(str_bytes("SaslAuthenticate before SaslHandshake")));
        answer(
            shard,
            queue,
            api::respond(&request, &response),
            Duration::ZERO,
        )
        .await?;
        answer(
            shard,
            queue,
            Outcome::Close("SaslAuthenticate before SaslHandshake".into()),
            Duration::ZERO,
        )
        .await?;
        crate::metrics::record_authentication(false);
        return Err("SaslAuthenticate before SaslHandshake".into());
    }
    match evaluate(shard, session, &body.auth_bytes, peer) {
        Ok(token) => {
            let response = SaslAuthenticateResponse::default()
                .with_auth_bytes(Bytes::from(token))
                .with_session_lifetime_ms(0);
            answer(
                shard,
                queue,
                api::respond(&request, &response),
                Duration::ZERO,
            )
            .await?;
            Ok(None)
        }
        Err(why) => {
            let response = SaslAuthenticateResponse::default()
                .with_error_code(crate::error::code(Some(
                    ResponseError::SaslAuthenticationFailed,
                )))
                .with_error_message(Some(str_bytes(why.clone())));
            let delay = failure_delay(shard);
            answer(shard, queue, api::respond(&request, &response), delay).await?;
            answer(shard, queue, Outcome::Close(why.clone()), Duration::ZERO).await?;
            Err(why)
        }
    }
}

/// Feeds `token` to the session's SASL server: the token to send back (the session is
/// authenticated once the exchange is done), or why authentication failed (logged, counted).
fn evaluate(
    shard: &Rc<Shard>,
    session: &mut Session,
    token: &[u8],
    peer: &str,
) -> Result<Vec<u8>, String> {
    let metadata = shard.metadata();
    let lookup = |user: &str, m: ScramMechanism| {
        let stored = metadata.scram_credentials.get(user)?.get(m.name())?;
        Some(ScramCredential {
            salt: stored.salt.clone(),
            stored_key: stored.stored_key.clone(),
            server_key: stored.server_key.clone(),
            iterations: stored.iterations,
        })
    };
    let sasl = session.sasl.as_mut().expect("a session authenticating");
    match sasl.authenticate(token, &lookup) {
        Step::Continue(response) => Ok(response),
        Step::Done {
            response,
            principal,
        } => {
            tracing::debug!(%peer, %principal, listener = %session.listener.name, "SASL authentication done");
            crate::metrics::record_authentication(true);
            session.principal = Rc::from(principal);
            session.sasl = None;
            Ok(response)
        }
        Step::Failed(why) => {
            tracing::warn!(%peer, listener = %session.listener.name, reason = %why, "SASL authentication failed; closing connection");
            crate::metrics::record_authentication(false);
            Err(why)
        }
    }
}

fn failure_delay(shard: &Shard) -> Duration {
    Duration::from_millis(shard.config.connection_failed_authentication_delay_ms)
}

fn decode<T: kafka_protocol::protocol::Request>(
    request: &crate::protocol::header::ParsedRequest,
) -> Result<T, String> {
    api::decode::<T>(request).map_err(|_| {
        format!(
            "malformed {} v{} request during SASL authentication",
            request.api_key, request.api_version
        )
    })
}

/// A raw SASL token as sent after a v0 handshake: size-prefixed, nothing else.
fn raw_token(token: &[u8]) -> Outcome {
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + token.len());
    out.put_i32(token.len() as i32);
    out.put_slice(token);
    Outcome::Respond(vec![out.freeze()])
}

/// Queues `outcome` for the writer, `delay` from now.
async fn answer(
    shard: &Rc<Shard>,
    queue: &flume::Sender<InFlight>,
    outcome: Outcome,
    delay: Duration,
) -> Result<(), String> {
    let reservation = Reservation::acquire(shard, 1, false)
        .await
        .ok_or_else(|| "shard stopping".to_string())?;
    let answer = crate::rt::spawn_local(async move {
        if !delay.is_zero() {
            crate::rt::sleep(delay).await;
        }
        (outcome, None)
    })
    .detach();
    queue
        .send_async(InFlight {
            answer,
            reservation,
            gated: false,
        })
        .await
        .map_err(|_| "writer gone".to_string())
}
