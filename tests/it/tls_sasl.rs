//! TLS and SASL listeners from the wire (issue 15), with certificates made here by rcgen and a
//! rustls client: mutual TLS refuses expired and foreign client certificates and missing ones
//! when required, the certificate is reloaded without a restart, SASL's v0 raw tokens work, a
//! failed authentication is answered only after `connection_failed_authentication_delay_ms`,
//! and an oversized frame before authentication closes that connection. The broker keeps
//! serving others after each. (Real clients over TLS and SASL: tests/python/test_tls_sasl.py.)

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiVersionsRequest, MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::common::{self, free_port, within, RawConn};

/// A CA and the certificates it signs, as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
        }
    }

    /// Signs a certificate for `cn` (a server one for 127.0.0.1, or a client one), valid from
    /// `not_before` to `not_after` (years); writes `name.pem` and `name.key`.
    fn issue(&self, name: &str, cn: &str, server: bool, years: (i32, i32)) -> PathBuf {
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        // Written whole and renamed: a reloading broker never reads half a file.
        for (ext, text) in [("key", key.serialize_pem()), ("pem", cert.pem())] {
            let tmp = self.dir.join(format!("{name}.{ext}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.dir.join(format!("{name}.{ext}"))).unwrap();
        }
        self.dir.join(name)
    }
}

/// A broker with a PLAINTEXT listener (for readiness), SSL and SASL_PLAINTEXT; killed on drop.
struct SecureBroker {
    child: Child,
    plain: SocketAddr,
    ssl: SocketAddr,
    sasl: SocketAddr,
    log: PathBuf,
}

impl SecureBroker {
    fn start(dir: &Path, extra: &str) -> SecureBroker {
        let (plain, ssl, sasl) = (free_port(), free_port(), free_port());
        let config = format!(
            "listeners = [\"PLAINTEXT://127.0.0.1:{plain}\", \"SSL://127.0.0.1:{ssl}\", \"SASL_PLAINTEXT://127.0.0.1:{sasl}\"]\n\
             data_dir = \"{data}\"\nshards = 1\nadmin_listen = \"off\"\n\
             ssl_certificate_file = \"{d}/server.pem\"\nssl_key_file = \"{d}/server.key\"\n\
             ssl_ca_file = \"{d}/ca.pem\"\n{extra}",
            data = dir.join("data").display(),
            d = dir.display(),
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
        let broker = SecureBroker {
            child,
            plain: at(plain),
            ssl: at(ssl),
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

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", self.log());
        }
    }
}

fn tls_client(pki_dir: &Path, client: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki_dir.join("ca.pem")).unwrap())
        .unwrap();
    #[allow(deprecated)] // ring's provider, as the broker's
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain =
                vec![CertificateDer::from_pem_file(pki_dir.join(format!("{name}.pem"))).unwrap()];
            let key = PrivateKeyDer::from_pem_file(pki_dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    })
}

/// ApiVersions over TLS: Ok(the server certificate's DER) if answered, Err(why) if not.
fn tls_api_versions(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let frame = RawConn::encode_request(0, 1, &ApiVersionsRequest::default());
    tls.write_all(&frame).map_err(|e| e.to_string())?;
    let mut size = [0u8; 4];
    tls.read_exact(&mut size).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    tls.read_exact(&mut body).map_err(|e| e.to_string())?;
    if body[..4] != 1i32.to_be_bytes() || body[4..6] != [0, 0] {
        return Err(format!("unexpected answer {body:?}"));
    }
    let cert = tls.conn.peer_certificates().unwrap()[0].to_vec();
    Ok(cert)
}

/// ssl_client_auth = required: a certificate from the CA is served (its subject becomes the
/// principal); an expired one, one from another CA, or none is refused in the handshake; the
/// broker serves everyone else throughout.
#[test]
fn mutual_tls_refuses_expired_foreign_and_missing_client_certificates() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "test CA");
        pki.issue("server", "localhost", true, (2020, 2100));
        pki.issue("alice", "alice", false, (2020, 2100));
        pki.issue("expired", "old-alice", false, (2020, 2021));
        let other_dir = tempfile::tempdir().unwrap();
        let other = Pki::new(other_dir.path(), "another CA");
        other.issue("mallory", "mallory", false, (2020, 2100));
        std::fs::copy(
            other_dir.path().join("mallory.pem"),
            dir.path().join("mallory.pem"),
        )
        .unwrap();
        std::fs::copy(
            other_dir.path().join("mallory.key"),
            dir.path().join("mallory.key"),
        )
        .unwrap();
        let broker = SecureBroker::start(
            dir.path(),
            "ssl_client_auth = \"required\"\nlog_cleaner_enable = false\n",
        );
        let d = dir.path();
        tls_api_versions(broker.ssl, tls_client(d, Some("alice"))).expect("alice is served");
        for refused in [Some("expired"), Some("mallory"), None] {
            let answer = tls_api_versions(broker.ssl, tls_client(d, refused));
            assert!(answer.is_err(), "{refused:?} was served");
            assert!(
                broker.plaintext_ok(),
                "plaintext listener after {refused:?}"
            );
        }
        let log = broker.log();
        assert!(
            log.contains("certificate expired"),
            "expired certificate not logged as such"
        );
        assert!(
            log.contains("UnknownIssuer"),
            "foreign certificate not logged as such"
        );
        tls_api_versions(broker.ssl, tls_client(d, Some("alice"))).expect("alice after them");
    });
}

/// A certificate replaced on disk is served to new connections within a few seconds, without
/// a restart; a file that does not load keeps the previous certificate.
#[test]
fn the_server_certificate_is_reloaded_without_restart() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "test CA");
        pki.issue("server", "first", true, (2020, 2100));
        let broker = SecureBroker::start(dir.path(), "");
        let first = tls_api_versions(broker.ssl, tls_client(dir.path(), None)).unwrap();
        pki.issue("server", "second", true, (2020, 2100));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut second = first.clone();
        while second == first && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            second = tls_api_versions(broker.ssl, tls_client(dir.path(), None)).unwrap();
        }
        assert_ne!(second, first, "the new certificate was not served");
        assert!(broker.log().contains("TLS certificate reloaded"));
        std::fs::write(dir.path().join("server.pem"), "not a certificate").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let kept = tls_api_versions(broker.ssl, tls_client(dir.path(), None)).unwrap();
        assert_eq!(kept, second, "a broken file replaced the certificate");
    });
}

/// Creates user alice (SCRAM-SHA-512, password alice-secret) in a stopped node's data dir.
fn create_alice(data_dir: &Path) {
    create_user(data_dir, "alice", "alice-secret");
}

/// Creates a user (SCRAM-SHA-512) in a stopped node's data dir.
fn create_user(data_dir: &Path, name: &str, password: &str) {
    let out = std::process::Command::new(common::broker_bin())
        .args(["user", "create", "--data-dir"])
        .arg(data_dir)
        .args(["--name", name, "--password", password])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SASL/PLAIN after a v0 handshake (raw tokens, as old clients send) authenticates; a wrong
/// password through SaslAuthenticate is answered SASL_AUTHENTICATION_FAILED no sooner than
/// the configured delay, then the connection closes; a frame over 512 KiB before
/// authentication closes its connection; the broker serves others throughout.
#[test]
fn sasl_raw_tokens_failure_delay_and_frame_bound() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "test CA");
        pki.issue("server", "localhost", true, (2020, 2100));
        create_alice(&dir.path().join("data"));
        let broker = SecureBroker::start(
            dir.path(),
            "connection_failed_authentication_delay_ms = 700\n",
        );
        assert!(broker.log().contains("bootstrap SCRAM users stored"));
        assert!(!dir.path().join("data/scram-bootstrap.json").exists());

        // v0 handshake, then a raw PLAIN token answered with an empty raw token.
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let hs = conn
            .request(
                0,
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
            )
            .unwrap();
        assert_eq!(hs.error_code, 0);
        let token = b"\0alice\0alice-secret";
        let mut raw = (token.len() as i32).to_be_bytes().to_vec();
        raw.extend_from_slice(token);
        conn.stream.write_all(&raw).unwrap();
        let reply = conn.read_frame().unwrap().expect("a raw token answer");
        assert!(reply.is_empty());
        let md = conn.request(12, &MetadataRequest::default()).unwrap();
        assert_eq!(md.brokers[0].port, i32::from(broker.sasl.port()));

        // A wrong password (v1 handshake, SaslAuthenticate): error 58 after the delay.
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let hs = conn
            .request(
                1,
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
            )
            .unwrap();
        assert_eq!(hs.error_code, 0);
        let started = Instant::now();
        let auth = conn
            .request(
                2,
                &SaslAuthenticateRequest::default()
                    .with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0wrong")),
            )
            .unwrap();
        assert_eq!(auth.error_code, 58);
        assert!(
            started.elapsed() >= Duration::from_millis(650),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            conn.read_frame().unwrap(),
            None,
            "the connection stays open"
        );

        // SaslAuthenticate before any handshake: ILLEGAL_SASL_STATE (34), then closed.
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let auth = conn
            .request(
                2,
                &SaslAuthenticateRequest::default()
                    .with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0alice-secret")),
            )
            .unwrap();
        assert_eq!(auth.error_code, 34);
        assert_eq!(conn.read_frame().unwrap(), None);

        // 600 KiB announced before authentication: closed without reading it.
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        conn.stream
            .write_all(&(600 * 1024i32).to_be_bytes())
            .unwrap();
        conn.stream.write_all(&[0u8; 1024]).unwrap();
        assert!(matches!(conn.read_frame(), Ok(None) | Err(_)));
        assert!(broker.plaintext_ok());
        let md = RawConn::connect(broker.plain)
            .unwrap()
            .request(12, &MetadataRequest::default())
            .unwrap();
        assert_eq!(md.brokers[0].port, i32::from(broker.plain.port()));
    });
}

/// SaslHandshake v1 PLAIN and SaslAuthenticate v2 as `user`.
fn plain_login(
    conn: &mut RawConn,
    user: &str,
    password: &str,
) -> kafka_protocol::messages::SaslAuthenticateResponse {
    let hs = conn
        .request(
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .unwrap();
    assert_eq!(hs.error_code, 0);
    let token = format!("\0{user}\0{password}");
    conn.request(
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(token)),
    )
    .unwrap()
}

/// KIP-368 with `connections_max_reauth_ms = 1500`: SaslAuthenticate answers that session
/// lifetime; a Metadata request after it without re-authentication closes the connection;
/// re-authenticating before it keeps the connection serving past the first lifetime; a
/// re-authentication as another user is refused with Kafka's message and closes.
#[test]
fn sasl_reauthentication_lifetime_expiry_and_same_principal() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "test CA");
        pki.issue("server", "localhost", true, (2020, 2100));
        create_alice(&dir.path().join("data"));
        create_user(&dir.path().join("data"), "bob", "bob-secret");
        let broker = SecureBroker::start(
            dir.path(),
            "connections_max_reauth_ms = 1500\nconnection_failed_authentication_delay_ms = 0\n",
        );
        let lifetime = Duration::from_millis(1500);

        // The lifetime is answered; after it, a Metadata request closes the connection.
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let auth = plain_login(&mut conn, "alice", "alice-secret");
        assert_eq!((auth.error_code, auth.session_lifetime_ms), (0, 1500));
        conn.request(12, &MetadataRequest::default()).unwrap();
        std::thread::sleep(lifetime + Duration::from_millis(300));
        conn.send(12, &MetadataRequest::default()).unwrap();
        assert!(
            matches!(conn.read_frame(), Ok(None) | Err(_)),
            "an expired session is closed"
        );
        // The log line is written by the logging thread, maybe just after the close.
        common::wait_until(
            Duration::from_secs(10),
            "the broker to log why it closed the expired session",
            || broker.log().contains("SASL session expired"),
        );

        // Re-authenticated before expiry: still serving past the first lifetime.
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let started = Instant::now();
        assert_eq!(
            plain_login(&mut conn, "alice", "alice-secret").error_code,
            0
        );
        std::thread::sleep(Duration::from_millis(1100));
        let again = plain_login(&mut conn, "alice", "alice-secret");
        assert_eq!((again.error_code, again.session_lifetime_ms), (0, 1500));
        std::thread::sleep(lifetime.saturating_sub(started.elapsed()) + Duration::from_millis(400));
        assert!(started.elapsed() > lifetime);
        let md = conn.request(12, &MetadataRequest::default()).unwrap();
        assert_eq!(md.brokers[0].port, i32::from(broker.sasl.port()));

        // Re-authentication as another user: refused, then closed.
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        assert_eq!(
            plain_login(&mut conn, "alice", "alice-secret").error_code,
            0
        );
        let bob = plain_login(&mut conn, "bob", "bob-secret");
        assert_eq!(bob.error_code, 58);
        assert_eq!(
            bob.error_message.as_deref(),
            Some("Cannot change principals during re-authentication from User.alice: User.bob")
        );
        assert!(matches!(conn.read_frame(), Ok(None) | Err(_)));

        // Re-authentication with another mechanism: the handshake is answered, the token
        // refused with Kafka's message, then closed.
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        assert_eq!(
            plain_login(&mut conn, "alice", "alice-secret").error_code,
            0
        );
        let hs = conn
            .request(
                1,
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-512")),
            )
            .unwrap();
        assert_eq!(hs.error_code, 0);
        let scram = conn
            .request(
                2,
                &SaslAuthenticateRequest::default()
                    .with_auth_bytes(bytes::Bytes::from_static(b"n,,n=alice,r=abcdef")),
            )
            .unwrap();
        assert_eq!(scram.error_code, 58);
        assert_eq!(
            scram.error_message.as_deref(),
            Some("SASL mechanism 'SCRAM-SHA-512' requested by client is not supported for re-authentication of mechanism 'PLAIN'")
        );
        assert!(matches!(conn.read_frame(), Ok(None) | Err(_)));
        assert!(broker.plaintext_ok());
    });
}

/// Without `connections_max_reauth_ms` a SaslHandshake on an authenticated connection is
/// answered ILLEGAL_SASL_STATE, as Kafka's `KafkaApis`, and the session lasts.
#[test]
fn sasl_without_reauthentication_a_second_handshake_is_illegal() {
    within(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "test CA");
        pki.issue("server", "localhost", true, (2020, 2100));
        create_alice(&dir.path().join("data"));
        let broker = SecureBroker::start(dir.path(), "");
        let mut conn = RawConn::connect(broker.sasl).unwrap();
        let auth = plain_login(&mut conn, "alice", "alice-secret");
        assert_eq!((auth.error_code, auth.session_lifetime_ms), (0, 0));
        let hs = conn
            .request(
                1,
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
            )
            .unwrap();
        assert_eq!(hs.error_code, 34);
        conn.request(12, &MetadataRequest::default()).unwrap();
    });
}

/// What an open TLS connection costs the broker: 400 connections that completed the handshake
/// and one ApiVersions stay below 64 KiB of RSS each (rustls's buffers and the connection's
/// task), so `connections_per_shard_max` bounds TLS memory as it bounds plaintext memory.
#[test]
fn idle_tls_connections_have_bounded_memory() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "test CA");
        pki.issue("server", "localhost", true, (2020, 2100));
        let broker = SecureBroker::start(dir.path(), "");
        let config = tls_client(dir.path(), None);
        let open = |n: usize| -> Vec<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
            (0..n)
                .map(|_| {
                    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
                    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                    let sock = TcpStream::connect(broker.ssl).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    let frame = RawConn::encode_request(0, 1, &ApiVersionsRequest::default());
                    tls.write_all(&frame).unwrap();
                    let mut size = [0u8; 4];
                    tls.read_exact(&mut size).unwrap();
                    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
                    tls.read_exact(&mut body).unwrap();
                    tls
                })
                .collect()
        };
        let warm = open(20);
        let pid = broker.child.id();
        let before = common::proc_status_bytes(pid, "VmRSS").unwrap();
        const CONNECTIONS: u64 = 400;
        let conns = open(CONNECTIONS as usize);
        let after = common::proc_status_bytes(pid, "VmRSS").unwrap();
        let per_connection = after.saturating_sub(before) / CONNECTIONS;
        eprintln!("{CONNECTIONS} idle TLS connections: {per_connection} bytes of RSS each");
        assert!(
            per_connection < 64 * 1024,
            "{per_connection} bytes per TLS connection"
        );
        drop((warm, conns));
    });
}
