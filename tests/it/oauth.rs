//! SASL/OAUTHBEARER from the wire (issue 15), raw protocol against the real binary with the
//! unsecured validator: SaslHandshake lists OAUTHBEARER; a valid token authenticates and its
//! `exp` bounds the session (KIP-368) even with `connections_max_reauth_ms` off; hostile first
//! messages (a token over the bound, bad Base64, bad JSON, missing or wrong claims, a
//! malformed GS2 header) fail as Kafka's `OAuthBearerSaslServer` fails them — the JSON error
//! challenge, then SASL_AUTHENTICATION_FAILED after the client's `\x01`, or at once for a
//! message that does not parse — and the broker keeps serving. Real clients (confluent-kafka,
//! unsecured and RS256-signed tokens, ACLs): tests/python/test_oauthbearer.py.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use kafka_protocol::messages::{
    ApiVersionsRequest, MetadataRequest, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::common::{self, free_port, within, RawConn};

/// A broker with PLAINTEXT (readiness) and SASL_PLAINTEXT offering OAUTHBEARER (unsecured
/// tokens) and PLAIN; killed on drop.
struct OAuthBroker {
    child: Child,
    plain: SocketAddr,
    sasl: SocketAddr,
    log: PathBuf,
}

impl OAuthBroker {
    fn start(dir: &Path) -> OAuthBroker {
        let (plain, sasl) = (free_port(), free_port());
        let config = format!(
            "listeners = [\"PLAINTEXT://127.0.0.1:{plain}\", \"SASL_PLAINTEXT://127.0.0.1:{sasl}\"]\n\
             data_dir = \"{data}\"\nshards = 1\nadmin_listen = \"off\"\n\
             sasl_enabled_mechanisms = [\"PLAIN\", \"OAUTHBEARER\"]\n\
             sasl_oauthbearer_unsecured_validator_enabled = true\n\
             connection_failed_authentication_delay_ms = 0\n",
            data = dir.join("data").display(),
        );
        std::fs::write(dir.join("freshet.toml"), config).unwrap();
        let args = vec![
            "start".to_string(),
            "--config".into(),
            dir.join("freshet.toml").display().to_string(),
        ];
        let log = dir.join("broker.log");
        let child = common::spawn_broker_process(&common::broker_bin(), &args, &log);
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let broker = OAuthBroker {
            child,
            plain: at(plain),
            sasl: at(sasl),
            log,
        };
        common::wait_until(Duration::from_secs(30), "the broker to answer", || {
            broker.plaintext_ok()
        });
        broker
    }

    fn plaintext_ok(&self) -> bool {
        RawConn::connect(self.plain)
            .and_then(|mut c| c.request(0, &ApiVersionsRequest::default()))
            .is_ok_and(|r| r.error_code == 0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OAuthBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", self.log());
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An unsecured JWT (alg none) with these claims.
fn unsecured(claims: &str) -> String {
    format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims.as_bytes()))
}

/// The RFC 7628 client first message for `token`.
fn first_message(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// SaslHandshake v1 OAUTHBEARER, then SaslAuthenticate v2 with `message`.
fn login(conn: &mut RawConn, message: Vec<u8>) -> SaslAuthenticateResponse {
    let hs = conn
        .request(
            1,
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str("OAUTHBEARER")),
        )
        .unwrap();
    assert_eq!(hs.error_code, 0);
    assert!(hs.mechanisms.iter().any(|m| m.as_str() == "OAUTHBEARER"));
    authenticate(conn, message)
}

fn authenticate(conn: &mut RawConn, message: Vec<u8>) -> SaslAuthenticateResponse {
    conn.request(
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(message)),
    )
    .unwrap()
}

/// A valid unsecured token authenticates with a session lifetime up to its `exp`; a token
/// expiring in 2 s ends the session then (the next request closes the connection) although
/// `connections_max_reauth_ms` is off.
#[test]
fn oauthbearer_token_authenticates_and_its_exp_bounds_the_session() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = OAuthBroker::start(dir.path());

        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let token = unsecured(&format!(
            r#"{{"sub":"alice","iat":{},"exp":{}}}"#,
            now_s(),
            now_s() + 3600
        ));
        let auth = login(&mut conn, first_message(&token));
        assert_eq!(auth.error_code, 0, "{:?}", auth.error_message);
        assert!(auth.auth_bytes.is_empty());
        assert!(
            (3_590_000..=3_600_000).contains(&auth.session_lifetime_ms),
            "{}",
            auth.session_lifetime_ms
        );
        let md = conn.request(12, &MetadataRequest::default()).unwrap();
        assert_eq!(md.brokers[0].port, i32::from(broker.sasl.port()));

        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let exp = now_s() + 2;
        let token = unsecured(&format!(r#"{{"sub":"alice","exp":{exp}}}"#));
        let auth = login(&mut conn, first_message(&token));
        assert_eq!(auth.error_code, 0);
        assert!(
            (0..=2_000).contains(&auth.session_lifetime_ms),
            "{}",
            auth.session_lifetime_ms
        );
        while now_s() <= exp {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        conn.send(12, &MetadataRequest::default()).unwrap();
        assert!(
            matches!(conn.read_frame(), Ok(None) | Err(_)),
            "the session ended at the token's exp"
        );
        common::wait_until(
            Duration::from_secs(10),
            "the broker to log the expired session",
            || broker.log().contains("SASL session expired"),
        );
    });
}

/// Hostile first messages: each fails (never a panic, never an authentication), the broker
/// logs why and keeps serving. Invalid tokens get Kafka's JSON challenge and then
/// SASL_AUTHENTICATION_FAILED with it; unparseable messages fail at once.
#[test]
fn oauthbearer_hostile_tokens_fail_and_the_broker_keeps_serving() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = OAuthBroker::start(dir.path());
        let exp = now_s() + 3600;
        let json = r#"{"status":"invalid_token"}"#;
        let invalid_tokens = [
            // Bad Base64 in the claims (one symbol), bad JSON, a JSON array, missing sub, missing exp,
            // expired, a signature on an unsecured token, another alg, too few parts.
            format!("{}.A.", b64(br#"{"alg":"none"}"#)),
            format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(b"{\"sub\":")),
            format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(b"[1,2]")),
            unsecured(&format!(r#"{{"exp":{exp}}}"#)),
            unsecured(r#"{"sub":"alice"}"#),
            unsecured(r#"{"sub":"alice","exp":1000}"#),
            format!(
                "{}c2ln",
                unsecured(&format!(r#"{{"sub":"alice","exp":{exp}}}"#))
            ),
            format!(
                "{}.{}.",
                b64(br#"{"alg":"RS256"}"#),
                b64(format!(r#"{{"sub":"alice","exp":{exp}}}"#).as_bytes())
            ),
            b64(b"just one part"),
        ];
        for token in &invalid_tokens {
            let mut conn = RawConn::connect(broker.sasl).unwrap();
            let auth = login(&mut conn, first_message(token));
            assert_eq!(auth.error_code, 0, "{token}");
            assert_eq!(&auth.auth_bytes[..], json.as_bytes(), "{token}");
            let fail = authenticate(&mut conn, b"\x01".to_vec());
            assert_eq!(fail.error_code, 58, "{token}");
            assert_eq!(fail.error_message.as_deref(), Some(json));
            assert!(matches!(conn.read_frame(), Ok(None) | Err(_)));
        }
        // Messages that do not parse: a token over 64 KiB (inside the 512 KiB SASL frame
        // bound), a byte outside the token alphabet, no auth, a bad GS2 header, not UTF-8.
        let huge = unsecured(&format!(
            r#"{{"sub":"alice","exp":{exp},"pad":"{}"}}"#,
            "x".repeat(100 * 1024)
        ));
        let malformed = [
            first_message(&huge),
            first_message("a.b.c d"),
            b"n,,\x01host=x\x01\x01".to_vec(),
            b"p=x,,\x01auth=Bearer a.b.\x01\x01".to_vec(),
            b"n,,\x01auth=Bearer \xff\x01\x01".to_vec(),
            Vec::new(),
        ];
        for message in malformed {
            let mut conn = RawConn::connect(broker.sasl).unwrap();
            let auth = login(&mut conn, message);
            assert_eq!(auth.error_code, 58);
            assert_eq!(
                auth.error_message.as_deref(),
                Some("Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER")
            );
            assert!(matches!(conn.read_frame(), Ok(None) | Err(_)));
        }
        common::wait_until(Duration::from_secs(10), "the refusals logged", || {
            let log = broker.log();
            log.contains("OAUTHBEARER token refused") && log.contains("more than 65536")
        });
        // Still serving: plaintext and a valid OAUTHBEARER login.
        assert!(broker.plaintext_ok());
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let token = unsecured(&format!(r#"{{"sub":"alice","exp":{exp}}}"#));
        assert_eq!(login(&mut conn, first_message(&token)).error_code, 0);
        conn.request(12, &MetadataRequest::default()).unwrap();
    });
}

/// OAUTHBEARER enabled without a validator, or with a JWKS URL that is not a file or does
/// not load, stops the start naming the setting.
#[test]
fn oauthbearer_misconfiguration_stops_the_start() {
    within(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("", "sasl_oauthbearer_jwks_endpoint_url"),
            (
                "sasl_oauthbearer_jwks_endpoint_url = \"https://idp/jwks\"\n",
                "file://",
            ),
            (
                "sasl_oauthbearer_jwks_endpoint_url = \"file:///nonexistent/jwks.json\"\n",
                "/nonexistent/jwks.json",
            ),
        ];
        for (i, (extra, expected)) in cases.into_iter().enumerate() {
            let config = format!(
                "listeners = [\"SASL_PLAINTEXT://127.0.0.1:{}\"]\ndata_dir = \"{}\"\nshards = 1\n\
                 admin_listen = \"off\"\nsasl_enabled_mechanisms = [\"OAUTHBEARER\"]\n{extra}",
                free_port(),
                dir.path().join(format!("data{i}")).display()
            );
            let path = dir.path().join(format!("bad{i}.toml"));
            std::fs::write(&path, config).unwrap();
            let out = std::process::Command::new(common::broker_bin())
                .args(["start", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{text}");
            assert!(text.contains(expected), "case {i}: {text}");
        }
    });
}
