//! Mutual TLS on the controller listener (issue 15: `controller_listener_names = ["CONTROLLER"]`
//! with `listener_security_protocol_map = ["CONTROLLER:SSL"]`), on three real `freshet`
//! processes with certificates made here by rcgen (as `tls_sasl.rs` makes them): each node
//! has its own certificate (`CN=node-N`, a super user), the authorizer is on.
//!
//! - The cluster elects a controller, replicates an rf-3 topic with acks=all and survives
//!   kill -9 of the active controller, all over TLS.
//! - A plaintext connection to the controller port, a certificate from another CA (with a
//!   node's own subject) and a certificate from the cluster's CA whose principal is not a
//!   super user (nor allowed CLUSTER_ACTION) are refused: their heartbeat registering a
//!   broker and their metadata fetch get no answer, the metadata stays the same, the refusals
//!   are logged and counted in `/metrics`. The same frames with a node's certificate are
//!   answered (the frames themselves are good).

use crate::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{runtime, within};
use freshet::cluster::transport::{encode_call, CONTROLLER_FRAME_BYTES_MAX, KIND_REQUEST};
use freshet::cluster::{BrokerHeartbeat, ControllerRequest};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);
/// A fake broker id the refused peers try to register.
const INTRUDER_ID: i32 = 42;

/// A CA and the certificates it signs, as PEM files in `dir` (`<ca>.ca.pem`, `<name>.pem`,
/// `<name>.key`).
struct Pki {
    dir: PathBuf,
    name: String,
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
            name: name.into(),
            ca,
            key,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}.ca.pem", self.name))
    }

    /// A certificate for 127.0.0.1 (server and client use) with subject `CN=cn`, written as
    /// `<file>.pem` and `<file>.key`; returns their paths.
    fn issue(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
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
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&pem, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (pem, key_file)
    }
}

/// Three nodes whose controller listener is SSL; each presents its own certificate. The
/// Kafka listener stays PLAINTEXT (its clients are `User:ANONYMOUS`, a super user here, so
/// the test's clients and the replica fetchers need no ACLs); the authorizer is on, so the
/// controller listener admits only the nodes' principals.
fn ssl_cluster(pki: &Pki) -> TestCluster {
    let settings = format!(
        "broker_session_timeout_ms = 3000\nbroker_heartbeat_interval_ms = 300\n\
         replica_fetch_backoff_ms = 500\n\
         controller_listener_names = [\"CONTROLLER\"]\n\
         listener_security_protocol_map = [\"CONTROLLER:SSL\"]\n\
         ssl_ca_file = \"{}\"\n\
         authorizer = \"on\"\n\
         super_users = \"User:CN=node-0;User:CN=node-1;User:CN=node-2;User:ANONYMOUS\"\n",
        pki.ca_file().display()
    );
    let node_settings = (0..3)
        .map(|i| {
            let (pem, key) = pki.issue(&format!("node{i}"), &format!("node-{i}"));
            format!(
                "ssl_certificate_file = \"{}\"\nssl_key_file = \"{}\"\n",
                pem.display(),
                key.display()
            )
        })
        .collect();
    TestCluster::start(
        3,
        ClusterOptions {
            settings,
            node_settings,
            ..ClusterOptions::default()
        },
    )
}

/// The broker ids `node`'s Metadata lists.
fn brokers_seen_by(cluster: &TestCluster, node: usize) -> Result<BTreeSet<i32>, String> {
    let m = cluster.metadata(node).map_err(|e| e.to_string())?;
    Ok(m.brokers.iter().map(|b| b.node_id.0).collect())
}

/// `n` acks=all records `{prefix}-{i}` to `topic` through `nodes`; panics unless every one
/// is acknowledged.
fn produce_all(cluster: &TestCluster, nodes: &[usize], topic: &str, prefix: &str, n: usize) {
    let producer: FutureProducer = cluster
        .client_config(nodes)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let rt = runtime();
    for i in 0..n {
        let value = format!("{prefix}-{i}");
        let sent = rt.block_on(
            producer.send(
                FutureRecord::<(), str>::to(topic)
                    .partition(0)
                    .payload(&value),
                Duration::from_secs(60),
            ),
        );
        if let Err((e, _)) = sent {
            cluster.fail(&format!("{value} not acknowledged: {e}"));
        }
    }
}

/// Every value in partition 0 of `topic`, read through `nodes`.
fn read_all(cluster: &TestCluster, nodes: &[usize], topic: &str, want: usize) -> BTreeSet<String> {
    let consumer: BaseConsumer = cluster
        .client_config(nodes)
        .set("group.id", "controller-tls-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            if let Some(v) = m.payload() {
                seen.insert(String::from_utf8_lossy(v).into_owned());
            }
        }
    }
    seen
}

/// Three nodes with an SSL controller listener: a controller is elected, an rf-3 topic
/// takes acks=all records, kill -9 of the active controller elects another and produce
/// (acks=all) goes on; every record acknowledged is read back; no node refused another.
#[test]
fn an_ssl_controller_listener_elects_replicates_and_survives_a_controller_kill9() {
    within(TEST_LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "cluster");
        let mut cluster = ssl_cluster(&pki);
        let topic =
            NewTopic::new("tls-rf3", 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2");
        cluster.create_topic_retrying(&[0, 1, 2], &topic);
        produce_all(&cluster, &[0, 1, 2], "tls-rf3", "before", 50);
        let old = cluster.wait_controller(FAILOVER_WITHIN, None);
        cluster.kill9(old);
        let new = cluster.wait_controller(FAILOVER_WITHIN, Some(old));
        let survivors = cluster.running();
        eprintln!("controller {old} killed; node {new} elected over TLS");
        produce_all(&cluster, &survivors, "tls-rf3", "after", 50);
        let seen = read_all(&cluster, &survivors, "tls-rf3", 100);
        assert_eq!(seen.len(), 100, "every acknowledged record is read back");
        for node in 0..3 {
            let log = cluster.log(node);
            assert!(
                log.contains("controller listener: SSL with client certificates required"),
                "node {node} runs the SSL controller listener"
            );
            assert!(
                !log.contains("not authorized"),
                "node {node} refused a node: {}",
                cluster.log_tail(node)
            );
        }
    });
}

/// A rustls client configuration trusting `ca`, presenting `(pem, key)`.
fn tls_client(ca: &Path, cert: &(PathBuf, PathBuf)) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    #[allow(deprecated)] // ring's provider, as the broker's
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_file(&cert.0).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&cert.1).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

/// The calls an intruder makes: register a broker, then fetch the whole metadata.
fn intruder_frames() -> Vec<u8> {
    let heartbeat = ControllerRequest::Heartbeat(BrokerHeartbeat {
        node_id: INTRUDER_ID,
        incarnation_id: uuid::Uuid::new_v4(),
        host: "127.0.0.1".into(),
        port: 1,
        rack: None,
        shutting_down: false,
        listeners: Vec::new(),
    });
    let fetch = ControllerRequest::FetchMetadata { version: 0 };
    let mut frames = encode_call(KIND_REQUEST, 1, &heartbeat, CONTROLLER_FRAME_BYTES_MAX).unwrap();
    frames.extend(encode_call(KIND_REQUEST, 2, &fetch, CONTROLLER_FRAME_BYTES_MAX).unwrap());
    frames
}

/// Sends [`intruder_frames`] to `addr` (over TLS with `tls`, else plaintext) and reads what
/// comes back: `Ok(bytes answered)` (possibly none, then the connection was closed) or the
/// error that ended it.
fn intrude(addr: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Vec<u8>, String> {
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(sock),
        Some(config) => {
            let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
            let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
            Box::new(rustls::StreamOwned::new(conn, sock))
        }
    };
    stream
        .write_all(&intruder_frames())
        .map_err(|e| format!("write: {e}"))?;
    let _ = stream.flush();
    // Read until both answers came (5 bytes of header each at least) or the peer closes.
    let mut answered = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(answered),
            Ok(n) => {
                answered.extend_from_slice(&buf[..n]);
                if answers_in(&answered) >= 2 {
                    return Ok(answered);
                }
            }
            Err(e) if answered.is_empty() => return Err(format!("read: {e}")),
            Err(_) => return Ok(answered),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Whole frames in `bytes`.
fn answers_in(bytes: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while bytes.len() >= at + 4 {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if bytes.len() < at + 4 + len {
            break;
        }
        at += 4 + len;
        n += 1;
    }
    n
}

/// The value of `freshet_controller_connections_refused_total{reason=...}` on `node`.
fn refused_metric(cluster: &TestCluster, node: usize, reason: &str) -> u64 {
    let (_, body) = common::http_get(&cluster.admin_addr(node), "/metrics").unwrap();
    let prefix = format!("freshet_controller_connections_refused_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

/// A plaintext peer, a certificate from another CA (with a node's subject) and a
/// certificate from the cluster's CA whose principal is not a super user are refused by the
/// active controller's listener: no answer to their broker registration or metadata fetch,
/// the brokers stay {0, 1, 2}, each refusal is logged and counted. The same frames with a
/// node's certificate are answered.
#[test]
fn the_ssl_controller_listener_refuses_plaintext_foreign_and_non_super_user_peers() {
    within(TEST_LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "cluster");
        let other = Pki::new(dir.path(), "other");
        let cluster = ssl_cluster(&pki);
        let controller = cluster.wait_controller(FAILOVER_WITHIN, None);
        let addr = cluster.controller_addr(controller);
        let before = brokers_seen_by(&cluster, 0).unwrap();
        assert_eq!(before, BTreeSet::from([0, 1, 2]));
        let foreign = tls_client(&pki.ca_file(), &other.issue("foreign-node-0", "node-0"));
        let mallory = tls_client(&pki.ca_file(), &pki.issue("mallory", "mallory"));
        for (what, tls) in [
            ("plaintext", None),
            ("another CA", Some(foreign)),
            ("not a super user", Some(mallory)),
        ] {
            // Closed, or a TLS alert: no answer frame, nothing of the metadata.
            let answer = intrude(&addr, tls);
            if let Ok(bytes) = &answer {
                let text = String::from_utf8_lossy(bytes);
                assert!(
                    answers_in(bytes) == 0
                        && !text.contains("Heartbeat")
                        && !text.contains("Metadata"),
                    "{what}: answered {answer:?}"
                );
            }
            eprintln!("{what}: {answer:?}");
        }
        // Whatever the refused peers sent would have registered broker 42 within a
        // heartbeat round; it never does.
        std::thread::sleep(Duration::from_secs(2));
        for node in 0..3 {
            assert_eq!(
                brokers_seen_by(&cluster, node).unwrap(),
                before,
                "node {node}: the metadata is unchanged"
            );
        }
        assert!(refused_metric(&cluster, controller, "tls_handshake") >= 2);
        assert!(refused_metric(&cluster, controller, "not_authorized") >= 1);
        let log = cluster.log(controller);
        assert!(
            log.contains("controller listener: connection refused"),
            "{}",
            cluster.log_tail(controller)
        );
        assert!(
            log.contains("User:CN=mallory"),
            "the refused principal is named"
        );
        // The same frames from a node's certificate are answered: the refusals above were
        // the listener's, not bad frames.
        let node = tls_client(
            &pki.ca_file(),
            &(dir.path().join("node1.pem"), dir.path().join("node1.key")),
        );
        let answer = intrude(&addr, Some(node)).expect("a node is answered");
        assert_eq!(answers_in(&answer), 2, "two answers");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("HeartbeatAck"), "{text:.300}");
        assert!(text.contains("Metadata"), "{text:.300}");
    });
}
