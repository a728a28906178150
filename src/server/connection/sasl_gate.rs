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
//!
//! Re-authentication (KIP-368, Kafka's `connections.max.reauth.ms`): with
//! `connections_max_reauth_ms` > 0, or a credential that expires (an OAUTHBEARER token's
//! `exp`), a successful authentication answers the earlier of the two as
//! `session_lifetime_ms` (SaslAuthenticate v1+) and the session expires then. On the
//! authenticated connection a SaslHandshake begins a re-authentication (at most one a second,
//! as Kafka; another one reaches `api::sasl` and is answered ILLEGAL_SASL_STATE) through a new
//! [`SaslServer`]: same mechanism and same principal required (else SASL_AUTHENTICATION_FAILED
//! with Kafka's message, then close), and success starts a new session. Requests already
//! queued are answered in order. Any other request after the session expired closes the
//! connection (logged), as Kafka's `Processor` does; the check is made when a request arrives.

use std::rc::Rc;
use std::time::{Duration, Instant};

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
use crate::security::sasl::{HandshakeError, Mechanism, Step};
use crate::security::scram::{ScramCredential, ScramMechanism};
use crate::shard::Shard;

/// Kafka's `MIN_REAUTH_INTERVAL_ONE_SECOND_NANOS`: re-authentications at most this often.
const REAUTH_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// A connection's SASL session and re-authentication state (KIP-368).
#[derive(Debug, Default)]
pub(super) struct Reauth {
    /// When the session expires (`None`: never, `connections_max_reauth_ms` = 0).
    expires: Option<Instant>,
    /// The mechanism the session authenticated with.
    mechanism: Option<Mechanism>,
    /// When the last re-authentication began.
    last_begun: Option<Instant>,
    /// During a re-authentication: the principal it must authenticate again.
    previous: Option<Rc<str>>,
    /// The session lifetime SaslAuthenticate v1+ answers (0: none).
    lifetime_ms: i64,
}

/// Called for each frame of an authenticated connection: `Ok(true)` if it is a SaslHandshake
/// beginning a re-authentication (`session.sasl` is set then, the caller hands the frame to
/// [`step`]); `Ok(false)` serve it as usual; `Err`: the session expired, close.
pub(super) fn reauth_begins(
    session: &mut Session,
    frame: &BytesMut,
    peer: &str,
) -> Result<bool, String> {
    let Some(expires) = session.reauth.expires else {
        return Ok(false);
    };
    let now = Instant::now();
    let api_key = (frame.len() >= 2).then(|| i16::from_be_bytes([frame[0], frame[1]]));
    let reauth = &mut session.reauth;
    let too_soon = reauth
        .last_begun
        .is_some_and(|t| now.duration_since(t) < REAUTH_INTERVAL_MIN);
    if api_key == Some(ApiKey::SaslHandshake as i16) && !too_soon {
        tracing::debug!(%peer, principal = %session.principal, "SASL re-authentication begins");
        reauth.last_begun = Some(now);
        reauth.previous = Some(session.principal.clone());
        session.sasl = Some(session.listener.sasl_server());
        return Ok(true);
    }
    if now > expires {
        tracing::warn!(%peer, principal = %session.principal, listener = %session.listener.name, api_key = ?api_key, "request after the SASL session expired (connections_max_reauth_ms) without re-authentication; closing connection");
        crate::metrics::record_authentication(false);
        return Err("SASL session expired".into());
    }
    Ok(false)
}

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
            let lifetime_ms = match session.reauth.expires {
                // Authenticated just now: the whole session lies ahead (v1+ carries it).
                Some(_) if session.sasl.is_none() && request.api_version >= 1 => {
                    session.reauth.lifetime_ms
                }
                _ => 0,
            };
            let response = SaslAuthenticateResponse::default()
                .with_auth_bytes(Bytes::from(token))
                .with_session_lifetime_ms(lifetime_ms);
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
    let chosen = sasl.chosen;
    let step = match (&session.reauth.previous, session.reauth.mechanism, chosen) {
        // Kafka's REAUTH_BAD_MECHANISM: the handshake is answered, the token refused.
        (Some(_), Some(before), Some(now)) if before != now => Step::Failed(format!(
            "SASL mechanism '{}' requested by client is not supported for re-authentication of mechanism '{}'",
            now.name(),
            before.name()
        )),
        _ => sasl.authenticate(token, &lookup),
    };
    let step = match (step, &session.reauth.previous) {
        (Step::Done { principal, .. }, Some(before)) if *principal != **before => {
            Step::Failed(format!(
                "Cannot change principals during re-authentication from {}: {}",
                kafka_principal_text(before),
                kafka_principal_text(&principal)
            ))
        }
        (step, _) => step,
    };
    match step {
        Step::Continue(response) => Ok(response),
        Step::Done {
            response,
            principal,
            expires_ms,
        } => {
            let reauthenticated = session.reauth.previous.take().is_some();
            tracing::debug!(%peer, %principal, listener = %session.listener.name, reauthenticated, "SASL authentication done");
            crate::metrics::record_authentication(true);
            session.principal = Rc::from(principal);
            session.sasl = None;
            session.reauth.mechanism = chosen;
            let lifetime = session_lifetime_ms(
                shard.config.connections_max_reauth_ms,
                expires_ms,
                crate::security::oauth::now_ms(),
            );
            session.reauth.lifetime_ms = lifetime.map_or(0, |ms| ms as i64);
            session.reauth.expires = lifetime.map(|ms| Instant::now() + Duration::from_millis(ms));
            Ok(response)
        }
        Step::Failed(why) => {
            tracing::warn!(%peer, listener = %session.listener.name, reason = %why, "SASL authentication failed; closing connection");
            crate::metrics::record_authentication(false);
            Err(why)
        }
    }
}

/// The session's lifetime in ms (Kafka's `SaslServerAuthenticator`, KIP-368): the earlier of
/// `connections_max_reauth_ms` (when > 0) and the credential's expiry (an OAUTHBEARER token's
/// `exp`, wall-clock `expires_ms`); `None`: the session never expires.
fn session_lifetime_ms(reauth_ms: u64, expires_ms: Option<i64>, now_ms: i64) -> Option<u64> {
    let credential = expires_ms.map(|e| e.saturating_sub(now_ms).max(0) as u64);
    match (credential, reauth_ms > 0) {
        (None, false) => None,
        (None, true) => Some(reauth_ms),
        (Some(c), false) => Some(c),
        (Some(c), true) => Some(c.min(reauth_ms)),
    }
}

/// A principal as Kafka's re-authentication messages print it: `User.alice`.
fn kafka_principal_text(principal: &str) -> String {
    principal.replacen(':', ".", 1)
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

#[cfg(test)]
mod tests {
    use super::session_lifetime_ms;

    /// KIP-368: the earlier of the reauth setting and the token's expiry; neither, no expiry.
    #[test]
    fn session_lifetime_is_the_earlier_of_reauth_and_the_credential() {
        assert_eq!(session_lifetime_ms(0, None, 1_000), None);
        assert_eq!(session_lifetime_ms(5_000, None, 1_000), Some(5_000));
        assert_eq!(session_lifetime_ms(0, Some(61_000), 1_000), Some(60_000));
        assert_eq!(session_lifetime_ms(5_000, Some(61_000), 1_000), Some(5_000));
        assert_eq!(
            session_lifetime_ms(90_000, Some(61_000), 1_000),
            Some(60_000)
        );
        assert_eq!(session_lifetime_ms(0, Some(500), 1_000), Some(0));
    }
}
