//! Mutual TLS on the controller transport (`secure.rs`), on real sockets with certificates
//! made here by rcgen: TLS nodes exchange raft messages and calls; a plaintext peer, a
//! certificate from another CA and a principal the admit check refuses are turned away on
//! the listener (counted, no call served); a server whose certificate's principal is not
//! admitted is refused by the caller.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

use super::*;
use crate::security::tls::{ClientAuth, Reloading, ReloadingClient, TlsFiles};

/// A CA and the certificates it signs, as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.ca.pem")), ca.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca,
            key,
        }
    }

    /// A certificate for 127.0.0.1 with subject `CN=cn`, for servers and clients alike: its
    /// TLS files, verified against this CA.
    fn issue(&self, ca_name: &str, cn: &str) -> TlsFiles {
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.key).unwrap();
        let (pem, key_file) = (
            self.dir.join(format!("{cn}.pem")),
            self.dir.join(format!("{cn}.key")),
        );
        std::fs::write(&pem, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TlsFiles {
            certificate: pem,
            key: key_file,
            ca: self.dir.join(format!("{ca_name}.ca.pem")),
            client_auth: ClientAuth::Required,
        }
    }
}

/// TLS settings from `files`, admitting only `User:CN=<name>` of `admitted`.
fn security(files: TlsFiles, admitted: &[&str]) -> TransportSecurity {
    let admitted: Vec<String> = admitted.iter().map(|n| format!("User:CN={n}")).collect();
    TransportSecurity {
        server: Reloading::new(files.clone()).unwrap(),
        client: ReloadingClient::new(files).unwrap(),
        admit: Rc::new(move |principal, _host| {
            if admitted.iter().any(|a| a == principal) {
                Ok(())
            } else {
                Err("not a node".into())
            }
        }),
        handshake_timeout: Duration::from_secs(2),
    }
}

const NODES: [&str; 2] = ["node-0", "node-1"];

/// Two TLS nodes: raft messages both ways, calls answered; nothing refused.
#[test]
fn tls_nodes_exchange_raft_messages_and_calls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    run(async {
        let addrs = [free_addr(), free_addr()];
        let a = ControllerTransport::with_security(
            0,
            voters(&addrs),
            test_limits(),
            Some(security(pki.issue("main", "node-0"), &NODES)),
        );
        let b = ControllerTransport::with_security(
            1,
            voters(&addrs),
            test_limits(),
            Some(security(pki.issue("main", "node-1"), &NODES)),
        );
        let (at_a, to_a) = collector();
        let (at_b, to_b) = collector();
        a.serve(addrs[0], to_a, answering(Some(1))).unwrap();
        b.serve(addrs[1], to_b, answering(Some(1))).unwrap();
        a.send_raft(append(0, 1, 1, 2));
        b.send_raft(append(1, 0, 2, 1));
        eventually("b has a's message", || at_b.borrow().len() == 1).await;
        eventually("a has b's message", || at_a.borrow().len() == 1).await;
        assert_eq!(at_b.borrow()[0], append(0, 1, 1, 2));
        let answer = a
            .call(
                &addrs[1].to_string(),
                heartbeat_request(0),
                Duration::from_secs(5),
            )
            .await;
        assert!(
            matches!(answer, Ok(ControllerResponse::HeartbeatAck { .. })),
            "{answer:?}"
        );
        for t in [&a, &b] {
            let s = t.stats();
            assert_eq!((s.tls_handshake_failures, s.peers_not_authorized), (0, 0));
        }
        a.stop().await;
        b.stop().await;
    });
}

/// A TLS listener refuses a plaintext caller, a certificate from another CA and one from its
/// CA whose principal is not admitted: each call fails, the refusal is counted, no call is
/// served and no raft message delivered; a node's call is served after them.
#[test]
fn the_tls_listener_refuses_plaintext_foreign_and_unadmitted_peers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let other = Pki::new(dir.path(), "other");
    run(async {
        let addrs = [free_addr(), free_addr()];
        let server = ControllerTransport::with_security(
            1,
            voters(&addrs),
            test_limits(),
            Some(security(pki.issue("main", "node-1"), &NODES)),
        );
        let (at_server, to_server) = collector();
        server
            .serve(addrs[1], to_server, answering(Some(1)))
            .unwrap();
        let target = addrs[1].to_string();
        let callers = [
            ("plaintext", None),
            ("another CA", Some(other.issue("other", "node-0"))),
            ("not admitted", Some(pki.issue("main", "mallory"))),
        ];
        for (what, files) in callers {
            let caller = ControllerTransport::with_security(
                0,
                voters(&addrs),
                test_limits(),
                files.map(|f| security(f, &["node-1"])),
            );
            caller.send_raft(append(0, 1, 1, 1));
            let answer = caller
                .call(&target, heartbeat_request(7), Duration::from_secs(3))
                .await;
            assert!(answer.is_err(), "{what}: {answer:?}");
            caller.stop().await;
        }
        let stats = server.stats();
        assert_eq!(stats.calls_served, 0, "{stats:?}");
        assert_eq!(stats.raft_received, 0, "{stats:?}");
        assert!(stats.tls_handshake_failures >= 2, "{stats:?}");
        assert!(stats.peers_not_authorized >= 1, "{stats:?}");
        assert!(at_server.borrow().is_empty());
        // A node is served.
        let node = ControllerTransport::with_security(
            0,
            voters(&addrs),
            test_limits(),
            Some(security(pki.issue("main", "node-0"), &NODES)),
        );
        let answer = node
            .call(&target, heartbeat_request(0), Duration::from_secs(5))
            .await;
        assert!(
            matches!(answer, Ok(ControllerResponse::HeartbeatAck { .. })),
            "{answer:?}"
        );
        assert_eq!(server.stats().calls_served, 1);
        node.stop().await;
        server.stop().await;
    });
}

/// The caller checks the server too: a listener whose certificate (from the CA) has a
/// principal the caller does not admit is refused before any call is written.
#[test]
fn a_caller_refuses_a_server_that_is_not_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    run(async {
        let addrs = [free_addr(), free_addr()];
        // The impostor admits everyone; the caller only node-1.
        let impostor = ControllerTransport::with_security(
            1,
            voters(&addrs),
            test_limits(),
            Some(security(pki.issue("main", "mallory"), &["node-0"])),
        );
        impostor
            .serve(addrs[1], collector().1, answering(Some(1)))
            .unwrap();
        let caller = ControllerTransport::with_security(
            0,
            voters(&addrs),
            test_limits(),
            Some(security(pki.issue("main", "node-0"), &["node-1"])),
        );
        let answer = caller
            .call(
                &addrs[1].to_string(),
                heartbeat_request(0),
                Duration::from_secs(3),
            )
            .await;
        assert!(
            matches!(&answer, Err(TransportError::Connect { message, .. }) if message.contains("not authorized")),
            "{answer:?}"
        );
        assert_eq!(caller.stats().peers_not_authorized, 1);
        assert_eq!(impostor.stats().calls_served, 0);
        caller.stop().await;
        impostor.stop().await;
    });
}

/// A peer that connects and never starts its handshake is closed at the handshake timeout
/// (here 2 s; the idle timeout is 5 s), counted as a failed handshake.
#[test]
fn a_silent_peer_is_closed_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    run(async {
        let addrs = [free_addr(), free_addr()];
        let server = ControllerTransport::with_security(
            1,
            voters(&addrs),
            test_limits(),
            Some(security(pki.issue("main", "node-1"), &NODES)),
        );
        server
            .serve(addrs[1], collector().1, answering(Some(1)))
            .unwrap();
        let mut silent = crate::rt::net::connect(addrs[1], Duration::from_secs(1))
            .await
            .unwrap();
        let started = crate::rt::now();
        let mut byte = [0u8; 1];
        let read = silent.read(&mut byte).await;
        let waited = started.elapsed();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(
            waited >= Duration::from_millis(1900) && waited < Duration::from_millis(4500),
            "closed after {waited:?}"
        );
        assert_eq!(server.stats().tls_handshake_failures, 1);
        server.stop().await;
    });
}

/// The principal is checked again for every frame: once the admit check says no (an ACL
/// removed), the open connection is closed at its next call, which is not served.
#[test]
fn a_revoked_principal_loses_its_open_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    run(async {
        let addrs = [free_addr(), free_addr()];
        let allowed = Rc::new(Cell::new(true));
        let mut server_security = security(pki.issue("main", "node-1"), &NODES);
        let flag = allowed.clone();
        server_security.admit = Rc::new(move |_, _| {
            if flag.get() {
                Ok(())
            } else {
                Err("revoked".into())
            }
        });
        let server = ControllerTransport::with_security(
            1,
            voters(&addrs),
            test_limits(),
            Some(server_security),
        );
        server
            .serve(addrs[1], collector().1, answering(Some(1)))
            .unwrap();
        let caller = ControllerTransport::with_security(
            0,
            voters(&addrs),
            test_limits(),
            Some(security(pki.issue("main", "node-0"), &NODES)),
        );
        let target = addrs[1].to_string();
        let first = caller
            .call(&target, heartbeat_request(0), Duration::from_secs(5))
            .await;
        assert!(
            matches!(first, Ok(ControllerResponse::HeartbeatAck { .. })),
            "{first:?}"
        );
        allowed.set(false);
        let second = caller
            .call(&target, heartbeat_request(0), Duration::from_secs(5))
            .await;
        assert!(second.is_err(), "{second:?}");
        let stats = server.stats();
        assert_eq!(stats.calls_served, 1, "{stats:?}");
        assert!(stats.peers_not_authorized >= 1, "{stats:?}");
        caller.stop().await;
        server.stop().await;
    });
}
