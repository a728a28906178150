//! The client side of a SASL exchange, for a broker authenticating to another broker
//! (`inter_broker_listener_name` on a SASL listener; Kafka's `SaslClientAuthenticator` with
//! the broker's own `listener.name.<name>.<mechanism>.sasl.jaas.config` credentials).
//!
//! A pure state machine: [`SaslClient::first`] gives the first token, [`SaslClient::next`]
//! takes each server token and gives the next one to send, or says the exchange is over.
//! Mechanisms: PLAIN (RFC 4616: one message) and SCRAM-SHA-256/512 (RFC 5802: client-first,
//! client-final with the proof, then the server's signature checked, so a server that does
//! not know the password is refused too). OAUTHBEARER and GSSAPI are not offered as a
//! broker's own mechanism.
//!
//! Also here: reading a JAAS line (`... required username="u" password="p";`) for its
//! `username` and `password` options ([`jaas_credentials`]).
//!
//! Bounds: every server token is at most the caller's frame limit (the connection reads it);
//! the state holds a few short strings.

use base64::Engine;

use crate::security::scram::{constant_time_eq, random_bytes, ScramMechanism};

/// Random bytes in the client's nonce.
const CLIENT_NONCE_BYTES: usize = 24;
/// The fewest PBKDF2 iterations a server may ask for (RFC 7677 / Kafka's minimum).
const SERVER_ITERATIONS_MIN: u32 = 4096;
/// The most PBKDF2 iterations a server may ask for (a hostile server must not make a broker
/// spin: Kafka's own maximum).
const SERVER_ITERATIONS_MAX: u32 = 16384;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A broker's own SASL mechanism and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"[hidden]")
            .finish()
    }
}

/// The mechanisms a broker can authenticate itself with.
pub const CLIENT_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug)]
enum State {
    Start,
    /// PLAIN sent its one message.
    PlainSent,
    /// SCRAM: client-first sent.
    ScramFirstSent {
        mechanism: ScramMechanism,
        client_first_bare: String,
        nonce: String,
    },
    /// SCRAM: client-final sent; the server's signature it must answer.
    ScramFinalSent {
        server_signature: Vec<u8>,
    },
    Done,
    Failed,
}

/// What the client does after a server token.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientStep {
    /// Send this token and wait for the server's next.
    Send(Vec<u8>),
    /// The exchange is complete (the server's last token checked).
    Done,
}

/// One exchange's client.
#[derive(Debug)]
pub struct SaslClient {
    credentials: ClientCredentials,
    state: State,
}

/// `name` as a SCRAM username (`,` is `=2C`, `=` is `=3D`).
fn encode_username(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl SaslClient {
    /// A client for `credentials` (its mechanism must be one of [`CLIENT_MECHANISMS`]).
    pub fn new(credentials: ClientCredentials) -> Result<SaslClient, String> {
        if !CLIENT_MECHANISMS.contains(&credentials.mechanism.as_str()) {
            return Err(format!(
                "a broker authenticates with {}, not {}",
                CLIENT_MECHANISMS.join(", "),
                credentials.mechanism
            ));
        }
        Ok(SaslClient {
            credentials,
            state: State::Start,
        })
    }

    /// The mechanism the SaslHandshake names.
    pub fn mechanism(&self) -> &str {
        &self.credentials.mechanism
    }

    /// The first token (PLAIN's whole message, SCRAM's client-first).
    pub fn first(&mut self) -> Vec<u8> {
        assert!(matches!(self.state, State::Start), "first token once");
        let c = &self.credentials;
        match ScramMechanism::from_name(&c.mechanism) {
            None => {
                self.state = State::PlainSent;
                format!("\0{}\0{}", c.username, c.password).into_bytes()
            }
            Some(mechanism) => {
                let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(random_bytes(CLIENT_NONCE_BYTES));
                let client_first_bare = format!("n={},r={nonce}", encode_username(&c.username));
                let token = format!("n,,{client_first_bare}").into_bytes();
                self.state = State::ScramFirstSent {
                    mechanism,
                    client_first_bare,
                    nonce,
                };
                token
            }
        }
    }

    /// Takes the server's answer to the last token sent.
    pub fn next(&mut self, server_token: &[u8]) -> Result<ClientStep, String> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let (step, next) = match state {
            State::PlainSent => (ClientStep::Done, State::Done),
            State::ScramFirstSent {
                mechanism,
                client_first_bare,
                nonce,
            } => {
                let (token, server_signature) =
                    self.scram_final(mechanism, &client_first_bare, &nonce, server_token)?;
                (
                    ClientStep::Send(token),
                    State::ScramFinalSent { server_signature },
                )
            }
            State::ScramFinalSent { server_signature } => {
                let text = std::str::from_utf8(server_token)
                    .map_err(|_| "the server's final SCRAM message is not UTF-8".to_string())?;
                if let Some(e) = text.strip_prefix("e=") {
                    return Err(format!("the server refused: {e}"));
                }
                let verifier = text
                    .strip_prefix("v=")
                    .and_then(|v| b64().decode(v).ok())
                    .ok_or_else(|| "malformed server-final SCRAM message".to_string())?;
                if !constant_time_eq(&verifier, &server_signature) {
                    return Err("the server's SCRAM signature is wrong".into());
                }
                (ClientStep::Done, State::Done)
            }
            State::Start | State::Done | State::Failed => {
                return Err("a server token outside the exchange".into())
            }
        };
        self.state = next;
        Ok(step)
    }

    /// Reads server-first and computes client-final and the server signature to expect.
    fn scram_final(
        &self,
        mechanism: ScramMechanism,
        client_first_bare: &str,
        client_nonce: &str,
        server_first: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let malformed = || "malformed server-first SCRAM message".to_string();
        let server_first = std::str::from_utf8(server_first).map_err(|_| malformed())?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = b64().decode(v).ok();
            } else if let Some(v) = attr.strip_prefix("i=") {
                iterations = v.parse::<u32>().ok();
            } else if attr.starts_with("m=") {
                return Err(malformed());
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(malformed());
        };
        if !nonce.starts_with(client_nonce) || nonce.len() == client_nonce.len() {
            return Err("the server's SCRAM nonce does not extend ours".into());
        }
        if !(SERVER_ITERATIONS_MIN..=SERVER_ITERATIONS_MAX).contains(&iterations) {
            return Err(format!("the server asks for {iterations} SCRAM iterations"));
        }
        let m = mechanism;
        let salted = m.salted_password(self.credentials.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c={},r={nonce}", b64().encode(b"n,,"));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        let server_signature = m.hmac(&server_key, auth_message.as_bytes());
        let token = format!("{without_proof},p={}", b64().encode(proof)).into_bytes();
        Ok((token, server_signature))
    }
}

/// The `username` and `password` options of a JAAS configuration line (Kafka's
/// `sasl.jaas.config`: `org.apache.kafka.common.security.scram.ScramLoginModule required
/// username="broker" password="secret";`). Values are quoted (`\"` and `\\` escaped) or bare.
pub fn jaas_credentials(text: &str) -> Result<(String, String), String> {
    let text = text.trim();
    let body = text
        .strip_suffix(';')
        .ok_or_else(|| "a JAAS configuration ends with ';'".to_string())?;
    let mut words = body.split_whitespace();
    let _module = words
        .next()
        .ok_or_else(|| "a JAAS configuration names a login module".to_string())?;
    let flag_at = body
        .find(char::is_whitespace)
        .ok_or_else(|| "a JAAS configuration has a control flag".to_string())?;
    let rest = body[flag_at..].trim_start();
    let (flag, mut rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !["required", "requisite", "sufficient", "optional"].contains(&flag) {
        return Err(format!("'{flag}' is no JAAS control flag"));
    }
    let (mut username, mut password) = (None, None);
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("a JAAS option without '=': {rest}"))?;
        let (value, after) = jaas_value(after.trim_start())?;
        match key.trim() {
            "username" => username = Some(value),
            "password" => password = Some(value),
            _ => {}
        }
        rest = after;
    }
    match (username, password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok((u, p)),
        _ => Err("a JAAS configuration needs username and password".into()),
    }
}

/// One option value: `"quoted"` (with `\` escapes) or a bare word; and what follows it.
fn jaas_value(text: &str) -> Result<(String, &str), String> {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find(char::is_whitespace).unwrap_or(text.len());
        return Ok((text[..end].to_string(), &text[end..]));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &quoted[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e)) => value.push(e),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("an unterminated quoted JAAS value".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::sasl::{SaslServer, Step};
    use crate::security::scram::ScramCredential;

    fn creds(mechanism: &str, password: &str) -> ClientCredentials {
        ClientCredentials {
            mechanism: mechanism.into(),
            username: "broker,1".into(),
            password: password.into(),
        }
    }

    /// Runs `client` against the broker's own SASL server holding `stored` for the user:
    /// the principal it ends with, or why either side failed.
    fn exchange(mut client: SaslClient, stored: &str) -> Result<String, String> {
        let mechanism = client.mechanism().to_string();
        let lookup = |user: &str, m: ScramMechanism| {
            (user == "broker,1").then(|| ScramCredential::new(m, stored, 4096))
        };
        let mut server = SaslServer::new(std::slice::from_ref(&mechanism));
        server
            .handshake(&mechanism, 1)
            .map_err(|e| format!("{e:?}"))?;
        let mut token = client.first();
        loop {
            match server.authenticate(&token, &lookup) {
                Step::Continue(answer) => match client.next(&answer)? {
                    ClientStep::Send(t) => token = t,
                    ClientStep::Done => return Err("client done early".into()),
                },
                Step::Done {
                    response,
                    principal,
                    ..
                } => {
                    return match client.next(&response)? {
                        ClientStep::Done => Ok(principal),
                        ClientStep::Send(_) => Err("client wants more".into()),
                    }
                }
                Step::Failed(why) => return Err(why),
            }
        }
    }

    /// Each mechanism logs in against the broker's own server, and not with a wrong password.
    #[test]
    fn the_client_authenticates_against_the_server_state_machine() {
        for m in CLIENT_MECHANISMS {
            let ok = exchange(SaslClient::new(creds(m, "pw")).unwrap(), "pw");
            assert_eq!(ok, Ok("User:broker,1".to_string()), "{m}");
            let bad = exchange(SaslClient::new(creds(m, "wrong")).unwrap(), "pw");
            assert!(bad.is_err(), "{m}: {bad:?}");
        }
        assert!(SaslClient::new(creds("GSSAPI", "pw")).is_err());
    }

    /// A server that does not know the password (a forged server-final) is refused, as are
    /// malformed or hostile server-first messages.
    #[test]
    fn a_forged_or_hostile_server_is_refused() {
        let mut c = SaslClient::new(creds("SCRAM-SHA-256", "pw")).unwrap();
        let first = String::from_utf8(c.first()).unwrap();
        let nonce = first.rsplit("r=").next().unwrap().to_string();
        let salt = b64().encode(b"salt");
        let server_first = format!("r={nonce}xyz,s={salt},i=4096");
        assert!(matches!(
            c.next(server_first.as_bytes()),
            Ok(ClientStep::Send(_))
        ));
        let forged = format!("v={}", b64().encode([0u8; 32]));
        assert!(c.next(forged.as_bytes()).is_err());
        for hostile in [
            format!("r={nonce},s={salt},i=4096"),
            format!("r=other{nonce},s={salt},i=4096"),
            format!("r={nonce}x,s={salt},i=100000000"),
            format!("r={nonce}x,s=!!,i=4096"),
            "\u{ff}".to_string(),
            String::new(),
        ] {
            let mut c = SaslClient::new(creds("SCRAM-SHA-512", "pw")).unwrap();
            let first = String::from_utf8(c.first()).unwrap();
            let hostile = hostile.replace(&nonce, first.rsplit("r=").next().unwrap());
            assert!(c.next(hostile.as_bytes()).is_err(), "{hostile}");
        }
    }

    #[test]
    fn jaas_lines_give_username_and_password() {
        let line = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="s3 \"cr=t;";"#;
        assert_eq!(
            jaas_credentials(line),
            Ok(("broker".into(), "s3 \"cr=t;".into()))
        );
        assert_eq!(
            jaas_credentials("M required password=p username=u ;"),
            Ok(("u".into(), "p".into()))
        );
        for bad in [
            "",
            "M required username=\"u\" password=\"p\"",
            "M maybe username=u password=p;",
            "M required username=u;",
            "M required username=\"u password=p;",
        ] {
            assert!(jaas_credentials(bad).is_err(), "{bad}");
        }
    }
}
