//! The server side of one connection's SASL authentication (Kafka's
//! `SaslServerAuthenticator`), as a pure state machine: the connection feeds it the
//! SaslHandshake mechanism and then each SaslAuthenticate token, and writes what it returns.
//!
//! States: waiting for a handshake; a mechanism chosen (its exchange in progress); done
//! (authenticated as a principal) or failed. A failure is final: the connection answers it
//! (after `connection_failed_authentication_delay_ms`) and closes, as Kafka does. Credentials
//! come from a lookup the caller gives (the metadata's SCRAM credentials); PLAIN is checked
//! against the user's stored SCRAM credential, so no password is ever stored.
//!
//! Re-authentication (KIP-368) starts a new `SaslServer` on the authenticated connection
//! (`server::connection::sasl_gate`).
//!
//! OAUTHBEARER (`security::oauth`, Kafka's `OAuthBearerSaslServer`): the client's first
//! message carries the token; a valid one authenticates at once (empty server token) with the
//! token's expiry as the credential's lifetime; a refused one is answered with the JSON error
//! as a challenge, the client sends `\x01`, and the exchange fails with that JSON as the
//! message. An authorization id other than the token's principal fails.
//!
//! Not done: GSSAPI, delegation tokens (a SCRAM `tokenauth` extension is refused).

pub mod client;
pub mod plain;
pub mod scram;

use std::rc::Rc;

use crate::security::oauth::{self, OAuthValidator};
use crate::security::scram::{ScramCredential, ScramMechanism};

/// Kafka's `sasl.server.max.receive.size` default: the largest frame accepted on a SASL
/// listener before the client has authenticated.
pub const SASL_RECEIVE_BYTES_MAX: usize = 524_288;

/// Looks up the stored credential of a user for a SCRAM mechanism.
pub type CredentialLookup<'a> = &'a dyn Fn(&str, ScramMechanism) -> Option<ScramCredential>;

/// A mechanism the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl Mechanism {
    /// From the SASL mechanism name.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "OAUTHBEARER" => Some(Mechanism::OAuthBearer),
            other => ScramMechanism::from_name(other).map(Mechanism::Scram),
        }
    }

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// What one step of the exchange gives the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this token; more are expected.
    Continue(Vec<u8>),
    /// Send this token: the client is authenticated as `principal` ("User:name").
    Done {
        response: Vec<u8>,
        principal: String,
        /// When the credential expires (wall clock, ms since the epoch): an OAUTHBEARER
        /// token's `exp` (KIP-368's credential lifetime); `None` for passwords.
        expires_ms: Option<i64>,
    },
    /// Refuse (SASL_AUTHENTICATION_FAILED with this message) and close.
    Failed(String),
}

/// Why a handshake was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The mechanism is not enabled (UNSUPPORTED_SASL_MECHANISM, with the enabled ones).
    UnsupportedMechanism,
    /// A handshake after the exchange began (ILLEGAL_SASL_STATE).
    IllegalState,
}

#[derive(Debug)]
enum State {
    AwaitingHandshake,
    Plain,
    ScramFirst(ScramMechanism),
    ScramFinal(Box<scram::ServerFirst>),
    OAuthInitial,
    /// The token was refused with this JSON challenge; the client's `\x01` ends it.
    OAuthRefused(String),
    Done,
    Failed,
}

/// One connection's SASL server.
#[derive(Debug)]
pub struct SaslServer {
    enabled: Vec<Mechanism>,
    state: State,
    /// The client asked for Kafka's SaslAuthenticate framing (handshake v1+); with v0 the
    /// tokens come raw (size-prefixed, no request header).
    pub authenticate_requests: bool,
    /// The mechanism the handshake chose.
    pub chosen: Option<Mechanism>,
    /// The listener's token validator (OAUTHBEARER enabled).
    oauth: Option<Rc<OAuthValidator>>,
}

impl SaslServer {
    /// A server offering `enabled` (names; unknown ones are ignored).
    pub fn new(enabled: &[String]) -> SaslServer {
        SaslServer {
            enabled: enabled
                .iter()
                .filter_map(|n| Mechanism::from_name(n))
                .collect(),
            state: State::AwaitingHandshake,
            authenticate_requests: true,
            chosen: None,
            oauth: None,
        }
    }

    /// The same, validating OAUTHBEARER tokens with `oauth` (without one, OAUTHBEARER is
    /// not offered).
    pub fn with_oauth(mut self, oauth: Option<Rc<OAuthValidator>>) -> SaslServer {
        if oauth.is_none() {
            self.enabled.retain(|m| *m != Mechanism::OAuthBearer);
        }
        self.oauth = oauth;
        self
    }

    /// The enabled mechanisms' names, as SaslHandshake lists them.
    pub fn enabled_names(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|m| m.name()).collect()
    }

    /// Is a handshake still expected (nothing chosen yet)?
    pub fn awaiting_handshake(&self) -> bool {
        matches!(self.state, State::AwaitingHandshake)
    }

    /// SaslHandshake with `mechanism`, request version `version`.
    pub fn handshake(&mut self, mechanism: &str, version: i16) -> Result<(), HandshakeError> {
        if !self.awaiting_handshake() {
            self.state = State::Failed;
            return Err(HandshakeError::IllegalState);
        }
        let chosen = Mechanism::from_name(mechanism).filter(|m| {
            self.enabled.contains(m) && (*m != Mechanism::OAuthBearer || self.oauth.is_some())
        });
        let Some(chosen) = chosen else {
            self.state = State::Failed;
            return Err(HandshakeError::UnsupportedMechanism);
        };
        self.authenticate_requests = version >= 1;
        self.chosen = Some(chosen);
        self.state = match chosen {
            Mechanism::Plain => State::Plain,
            Mechanism::Scram(m) => State::ScramFirst(m),
            Mechanism::OAuthBearer => State::OAuthInitial,
        };
        Ok(())
    }

    /// The next client token. A token outside an exchange fails.
    pub fn authenticate(&mut self, token: &[u8], lookup: CredentialLookup) -> Step {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let (step, next) = match state {
            State::Plain => (plain::authenticate(token, lookup), State::Done),
            State::ScramFirst(m) => match scram::ServerFirst::start(m, token, lookup) {
                Ok(first) => (
                    Step::Continue(first.message.clone().into_bytes()),
                    State::ScramFinal(Box::new(first)),
                ),
                Err(why) => (Step::Failed(why), State::Failed),
            },
            State::ScramFinal(first) => (first.finish(token), State::Done),
            State::OAuthInitial => self.oauth_token(token),
            // Kafka: after the error challenge the client's \x01 ends the exchange with it.
            State::OAuthRefused(json) => (Step::Failed(json), State::Failed),
            State::AwaitingHandshake | State::Done | State::Failed => (
                Step::Failed("SaslAuthenticate outside a SASL exchange".into()),
                State::Failed,
            ),
        };
        self.state = match step {
            Step::Failed(_) => State::Failed,
            _ => next,
        };
        step
    }

    /// OAUTHBEARER: the client's first message.
    fn oauth_token(&self, message: &[u8]) -> (Step, State) {
        let Some(validator) = &self.oauth else {
            return (Step::Failed(oauth::MALFORMED_MESSAGE.into()), State::Failed);
        };
        let (authzid, token) = match oauth::parse_client_response(message) {
            Ok(parsed) => parsed,
            Err(why) => {
                tracing::warn!(reason = %why, "malformed OAUTHBEARER client message");
                return (Step::Failed(oauth::MALFORMED_MESSAGE.into()), State::Failed);
            }
        };
        match validator.validate(&token, oauth::now_ms()) {
            Ok(valid) if !authzid.is_empty() && authzid != valid.principal => (
                Step::Failed(format!(
                    "Authentication failed: Client requested an authorization id ({authzid}) that is different from the token's principal name ({})",
                    valid.principal
                )),
                State::Failed,
            ),
            Ok(valid) => (
                Step::Done {
                    response: Vec::new(),
                    principal: format!("User:{}", valid.principal),
                    expires_ms: Some(valid.expires_ms),
                },
                State::Done,
            ),
            Err(refused) => {
                tracing::warn!(reason = %refused.reason, "OAUTHBEARER token refused");
                let json = refused.json();
                (Step::Continue(json.clone().into_bytes()), State::OAuthRefused(json))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(user: &str, m: ScramMechanism) -> Option<ScramCredential> {
        (user == "alice").then(|| ScramCredential::new(m, "alice-secret", 4096))
    }

    /// The handshake offers only enabled mechanisms, and only once.
    #[test]
    fn handshake_accepts_enabled_mechanisms_once() {
        let mut s = SaslServer::new(&["PLAIN".into()]);
        assert_eq!(s.enabled_names(), ["PLAIN"]);
        assert_eq!(
            s.handshake("SCRAM-SHA-512", 1),
            Err(HandshakeError::UnsupportedMechanism)
        );
        let mut s = SaslServer::new(&["PLAIN".into()]);
        s.handshake("PLAIN", 0).unwrap();
        assert!(!s.authenticate_requests);
        assert_eq!(s.handshake("PLAIN", 1), Err(HandshakeError::IllegalState));
    }

    /// PLAIN: the right password authenticates as User:alice; a wrong one, an unknown user or
    /// a second token fails.
    #[test]
    fn plain_checks_the_password_against_the_scram_credential() {
        let mut s = SaslServer::new(&["PLAIN".into()]);
        s.handshake("PLAIN", 1).unwrap();
        match s.authenticate(b"\0alice\0alice-secret", &users) {
            Step::Done { principal, .. } => assert_eq!(principal, "User:alice"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.authenticate(b"x", &users), Step::Failed(_)));
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0bob\0alice-secret",
            b"garbage",
            b"mallory\0alice\0alice-secret",
        ] {
            let mut s = SaslServer::new(&["PLAIN".into()]);
            s.handshake("PLAIN", 1).unwrap();
            assert!(
                matches!(s.authenticate(bad, &users), Step::Failed(_)),
                "{bad:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever a client sends (any mechanism, any tokens), the server answers or fails;
        /// it never panics, and it authenticates no one without the password.
        #[test]
        fn hostile_tokens_never_panic_nor_authenticate(
            mechanism in proptest::sample::select(vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "X"]),
            first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            second in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            prefix in proptest::prelude::any::<bool>(),
        ) {
            let mut s = SaslServer::new(&["PLAIN".into(), "SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()]);
            let _ = s.handshake(mechanism, 1);
            // Sometimes a well-formed client-first, so the final message is reached.
            let first = if prefix { b"n,,n=alice,r=abc".to_vec() } else { first };
            for token in [first, second] {
                if let Step::Done { .. } = s.authenticate(&token, &users) {
                    proptest::prop_assert!(token.windows(12).any(|w| w == b"alice-secret"));
                }
            }
        }
    }

    fn unsecured_server() -> SaslServer {
        let mode = oauth::OAuthMode::Unsecured {
            principal_claim: "sub".into(),
            scope_claim: "scope".into(),
            required_scope: Vec::new(),
            clock_skew_ms: 0,
        };
        let validator = Rc::new(OAuthValidator::new(mode).unwrap());
        SaslServer::new(&["PLAIN".into(), "OAUTHBEARER".into()]).with_oauth(Some(validator))
    }

    fn bearer(authzid: &str, claims: &str) -> Vec<u8> {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!(
            "n,{authzid},\x01auth=Bearer {}.{}.\x01\x01",
            b64(br#"{"alg":"none"}"#),
            b64(claims.as_bytes())
        )
        .into_bytes()
    }

    /// OAUTHBEARER as Kafka's OAuthBearerSaslServer: a valid token authenticates with its
    /// expiry; a refused one gets the JSON challenge, then fails on the client's \x01; an
    /// authorization id that is not the principal fails; without a validator it is not
    /// offered.
    #[test]
    fn oauthbearer_exchange_as_kafka() {
        let exp = oauth::now_ms() / 1000 + 3600;
        let mut s = unsecured_server();
        assert_eq!(s.enabled_names(), ["PLAIN", "OAUTHBEARER"]);
        s.handshake("OAUTHBEARER", 1).unwrap();
        let good = format!(r#"{{"sub":"alice","exp":{exp}}}"#);
        assert_eq!(
            s.authenticate(&bearer("", &good), &users),
            Step::Done {
                response: Vec::new(),
                principal: "User:alice".into(),
                expires_ms: Some(exp * 1000),
            }
        );
        let mut s = unsecured_server();
        s.handshake("OAUTHBEARER", 1).unwrap();
        let expired = r#"{"sub":"alice","exp":1000}"#;
        assert_eq!(
            s.authenticate(&bearer("", expired), &users),
            Step::Continue(br#"{"status":"invalid_token"}"#.to_vec())
        );
        assert_eq!(
            s.authenticate(b"\x01", &users),
            Step::Failed(r#"{"status":"invalid_token"}"#.into())
        );
        let mut s = unsecured_server();
        s.handshake("OAUTHBEARER", 1).unwrap();
        assert!(matches!(
            s.authenticate(&bearer("a=bob", &good), &users),
            Step::Failed(m) if m.contains("authorization id (bob)")
        ));
        let mut s = unsecured_server();
        s.handshake("OAUTHBEARER", 1).unwrap();
        assert_eq!(
            s.authenticate(b"n,,garbage", &users),
            Step::Failed(oauth::MALFORMED_MESSAGE.into())
        );
        let mut s = SaslServer::new(&["OAUTHBEARER".into()]).with_oauth(None);
        assert!(s.enabled_names().is_empty());
        assert_eq!(
            s.handshake("OAUTHBEARER", 1),
            Err(HandshakeError::UnsupportedMechanism)
        );
    }

    #[test]
    fn a_token_before_the_handshake_fails() {
        let mut s = SaslServer::new(&["PLAIN".into()]);
        assert!(matches!(
            s.authenticate(b"\0alice\0alice-secret", &users),
            Step::Failed(_)
        ));
    }
}
