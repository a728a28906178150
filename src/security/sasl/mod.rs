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
//! (`server::connection::sasl_gate`). Not done: GSSAPI, OAUTHBEARER, delegation tokens (a SCRAM
//! `tokenauth` extension is refused).

pub mod plain;
pub mod scram;

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
}

impl Mechanism {
    /// From the SASL mechanism name.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            other => ScramMechanism::from_name(other).map(Mechanism::Scram),
        }
    }

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
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
        }
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
        let chosen = Mechanism::from_name(mechanism).filter(|m| self.enabled.contains(m));
        let Some(chosen) = chosen else {
            self.state = State::Failed;
            return Err(HandshakeError::UnsupportedMechanism);
        };
        self.authenticate_requests = version >= 1;
        self.chosen = Some(chosen);
        self.state = match chosen {
            Mechanism::Plain => State::Plain,
            Mechanism::Scram(m) => State::ScramFirst(m),
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

    #[test]
    fn a_token_before_the_handshake_fails() {
        let mut s = SaslServer::new(&["PLAIN".into()]);
        assert!(matches!(
            s.authenticate(b"\0alice\0alice-secret", &users),
            Step::Failed(_)
        ));
    }
}
