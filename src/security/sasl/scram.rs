//! The server side of a SCRAM exchange (RFC 5802, Kafka's `ScramSaslServer`): client-first ->
//! server-first (nonce, salt, iterations) -> client-final (proof) -> server-final (server
//! signature). Channel binding is not supported (`n` or `y` only); Kafka's `tokenauth`
//! extension (delegation tokens) is refused; other extensions are ignored.
//!
//! Every message is bounded by the frame limit before authentication
//! ([`super::SASL_RECEIVE_BYTES_MAX`]); the proof is checked in constant time.

use base64::Engine;

use super::{CredentialLookup, Step};
use crate::security::scram::{constant_time_eq, random_bytes, ScramCredential, ScramMechanism};

/// Kafka's SCRAM failure message.
pub const INVALID_CREDENTIALS: &str = "Authentication failed: Invalid user credentials";
/// Random bytes in the server's part of the nonce.
const SERVER_NONCE_BYTES: usize = 24;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The server's state after its first message.
#[derive(Debug)]
pub struct ServerFirst {
    mechanism: ScramMechanism,
    user: String,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    nonce: String,
    /// The server-first message to send.
    pub message: String,
}

/// A SCRAM username (`=2C` is ',', `=3D` is '='; any other '=' is malformed).
fn decode_username(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl ServerFirst {
    /// Reads the client-first message and answers with the server-first one.
    pub fn start(
        mechanism: ScramMechanism,
        token: &[u8],
        lookup: CredentialLookup,
    ) -> Result<ServerFirst, String> {
        let malformed = || "Invalid SCRAM client first message".to_string();
        let text = std::str::from_utf8(token).map_err(|_| malformed())?;
        // gs2-header: cbind flag, authzid, then the bare message.
        let mut parts = text.splitn(3, ',');
        let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        if cbind != "n" && cbind != "y" {
            return Err("SCRAM channel binding is not supported".into());
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = Some(decode_username(v).ok_or_else(malformed)?);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v);
            } else if attr == "tokenauth=true" {
                return Err("Authentication failed: delegation tokens are not supported".into());
            } else if attr.starts_with("m=") {
                return Err(malformed());
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Err(malformed());
        };
        if user.is_empty() || client_nonce.is_empty() {
            return Err(malformed());
        }
        if let Some(a) = authzid.strip_prefix("a=") {
            if decode_username(a).as_deref() != Some(user.as_str()) {
                return Err(
                    "Authentication failed: Client requested an authorization id that is different from username"
                        .into(),
                );
            }
        } else if !authzid.is_empty() {
            return Err(malformed());
        }
        let credential = lookup(&user, mechanism).ok_or_else(|| INVALID_CREDENTIALS.to_string())?;
        let nonce = format!(
            "{client_nonce}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(random_bytes(SERVER_NONCE_BYTES))
        );
        let message = format!(
            "r={nonce},s={},i={}",
            b64().encode(&credential.salt),
            credential.iterations
        );
        Ok(ServerFirst {
            mechanism,
            user,
            credential,
            gs2_header: format!("{cbind},{authzid},"),
            client_first_bare: bare.to_string(),
            nonce,
            message,
        })
    }

    /// Reads the client-final message: checks binding, nonce and proof.
    pub fn finish(self, token: &[u8]) -> Step {
        let fail = |why: &str| Step::Failed(why.to_string());
        let Ok(text) = std::str::from_utf8(token) else {
            return fail("Invalid SCRAM client final message");
        };
        let Some(proof_at) = text.rfind(",p=") else {
            return fail("Invalid SCRAM client final message");
        };
        let without_proof = &text[..proof_at];
        let Ok(proof) = b64().decode(&text[proof_at + 3..]) else {
            return fail("Invalid SCRAM client final message");
        };
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        if binding != Some(b64().encode(self.gs2_header.as_bytes()).as_str()) {
            return fail("Invalid SCRAM client final message: channel binding does not match");
        }
        // Kafka's check (`ScramSaslServer`): the nonce ends with the server-first one. Older
        // librdkafka (2.0, kcat's) sends its client nonce again in front of it; the proof
        // covers the message as sent either way.
        if !nonce.is_some_and(|n| n.ends_with(self.nonce.as_str())) {
            return fail("Invalid SCRAM client final message: nonce does not match");
        }
        let m = self.mechanism;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.message
        );
        let client_signature = m.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return fail(INVALID_CREDENTIALS);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&m.hash(&client_key), &self.credential.stored_key) {
            return fail(INVALID_CREDENTIALS);
        }
        let server_signature = m.hmac(&self.credential.server_key, auth_message.as_bytes());
        Step::Done {
            response: format!("v={}", b64().encode(server_signature)).into_bytes(),
            principal: format!("User:{}", self.user),
            expires_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::sasl::SaslServer;

    /// A client's side of SCRAM, as RFC 5802 computes it.
    fn client_final(
        m: ScramMechanism,
        password: &str,
        first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        let salt = b64().decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let signature = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        let expected = m.hmac(&server_key, auth.as_bytes());
        (
            format!("{without_proof},p={}", b64().encode(proof)),
            format!("v={}", b64().encode(expected)).into_bytes(),
        )
    }

    fn users(user: &str, m: ScramMechanism) -> Option<ScramCredential> {
        (user == "al,ice").then(|| ScramCredential::new(m, "pw", 4096))
    }

    /// librdkafka 2.0 (kcat) sends its client nonce again in front of the combined one; Kafka
    /// accepts a final nonce that ends with the server-first nonce, and so does this.
    #[test]
    fn a_repeated_client_nonce_prefix_is_accepted_as_kafka_does() {
        let m = ScramMechanism::Sha256;
        let bare = "n=al=2Cice,r=cnonce";
        let first = ServerFirst::start(m, format!("n,,{bare}").as_bytes(), &users).unwrap();
        let server_first = first.message.clone();
        let (fin, _) = client_final(m, "pw", bare, &server_first);
        let fin = fin.replacen("r=", "r=cnonce", 1);
        let (without_proof, _) = fin.rsplit_once(",p=").unwrap();
        // The proof over the message as sent.
        let attrs: Vec<&str> = server_first.split(',').collect();
        let salt = b64().decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let salted = m.salted_password(b"pw", &salt, 4096);
        let client_key = m.hmac(&salted, b"Client Key");
        let auth = format!("{bare},{server_first},{without_proof}");
        let signature = m.hmac(&m.hash(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let fin = format!("{without_proof},p={}", b64().encode(proof));
        assert!(matches!(first.finish(fin.as_bytes()), Step::Done { .. }));
    }

    /// A full exchange for both mechanisms: the right password authenticates (and the server
    /// proves it knows the credential); a wrong one fails.
    #[test]
    fn full_exchange_authenticates_the_right_password_only() {
        for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            for (password, ok) in [("pw", true), ("wrong", false)] {
                let mut s = SaslServer::new(&[m.name().to_string()]);
                s.handshake(m.name(), 1).unwrap();
                let bare = "n=al=2Cice,r=fyko+d2lbbFgONRv9qkxdawL";
                let Step::Continue(first) = s.authenticate(format!("n,,{bare}").as_bytes(), &users)
                else {
                    panic!("no server-first");
                };
                let first = String::from_utf8(first).unwrap();
                assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
                let (fin, expected) = client_final(m, password, bare, &first);
                match s.authenticate(fin.as_bytes(), &users) {
                    Step::Done {
                        response,
                        principal,
                        ..
                    } => {
                        assert!(ok);
                        assert_eq!(principal, "User:al,ice");
                        assert_eq!(response, expected);
                    }
                    Step::Failed(why) => {
                        assert!(!ok);
                        assert_eq!(why, INVALID_CREDENTIALS);
                    }
                    Step::Continue(_) => panic!("continue after final"),
                }
            }
        }
    }

    /// Unknown users, channel binding, delegation tokens, malformed messages and a tampered
    /// nonce all fail without panicking.
    #[test]
    fn bad_client_messages_fail() {
        let m = ScramMechanism::Sha512;
        for first in [
            &b"n,,n=bob,r=abc"[..],
            b"p=tls-unique,,n=al=2Cice,r=abc",
            b"n,,n=al=2Cice,r=abc,tokenauth=true",
            b"n,,n=al=ice,r=abc",
            b"n,,r=abc",
            b"\xff\xfe",
            b"",
            b"n,a=bob,n=al=2Cice,r=abc",
        ] {
            assert!(ServerFirst::start(m, first, &users).is_err(), "{first:?}");
        }
        let first = ServerFirst::start(m, b"n,,n=al=2Cice,r=abc", &users).unwrap();
        assert!(matches!(
            first.finish(b"c=biws,r=abc,p=AAAA"),
            Step::Failed(_)
        ));
        let first = ServerFirst::start(m, b"n,,n=al=2Cice,r=abc", &users).unwrap();
        assert!(matches!(first.finish(b"no proof"), Step::Failed(_)));
        let first = ServerFirst::start(m, b"n,,n=al=2Cice,r=abc", &users).unwrap();
        let fin = format!("c=biws,r={}x,p=AAAA", first.nonce);
        assert!(matches!(first.finish(fin.as_bytes()), Step::Failed(why) if why.contains("nonce")));
    }
}
