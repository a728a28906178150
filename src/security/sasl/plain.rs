//! SASL PLAIN (RFC 4616): one token `authzid NUL authcid NUL password`, checked against the
//! user's stored SCRAM credential (SCRAM-SHA-512 first, then SCRAM-SHA-256), as Kafka's
//! `PlainSaslServer` checks it against its callback handler. An authorization id other than
//! the user's own is refused, as Kafka refuses it.

use super::{CredentialLookup, Step};
use crate::security::scram::ScramMechanism;

/// Kafka's PLAIN failure message.
pub const INVALID_CREDENTIALS: &str = "Authentication failed: Invalid username or password";

/// Checks one PLAIN token.
pub fn authenticate(token: &[u8], lookup: CredentialLookup) -> Step {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Failed("Invalid SASL/PLAIN response: expected 3 tokens".into());
    };
    let Ok(user) = std::str::from_utf8(user) else {
        return Step::Failed(INVALID_CREDENTIALS.into());
    };
    if user.is_empty() {
        return Step::Failed("Authentication failed: username not specified".into());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Step::Failed(
            "Authentication failed: Client requested an authorization id that is different from username"
                .into(),
        );
    }
    let ok = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|m| lookup(user, m).map(|c| (m, c)))
        .is_some_and(|(m, c)| c.matches_password(m, password));
    if ok {
        Step::Done {
            response: Vec::new(),
            principal: format!("User:{user}"),
            expires_ms: None,
        }
    } else {
        Step::Failed(INVALID_CREDENTIALS.into())
    }
}
