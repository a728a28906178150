//! Brokers authenticating to each other (issue 15, `inter_broker_listener_name`): a cluster
//! whose only listeners are SASL_PLAINTEXT, with the authorizer on and only the brokers' own
//! user (and an admin) in `super_users`, replicates and fails over; a client that is not a
//! broker cannot fetch as a replica.
//!
//! Three real `freshet` processes. The users (SCRAM-SHA-512 credentials) are written to node
//! 0's data directory with `freshet user create` before it starts; the brokers authenticate to
//! each other with SCRAM-SHA-512 as `broker` (`listener_name.sasl_plaintext.scram-sha-512.
//! sasl_jaas_config`), the test's clients with PLAIN (librdkafka here has no SCRAM).

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{runtime, within, RawConn};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use rdkafka::Message;

const TEST_LIMIT: Duration = Duration::from_secs(150);
const BROKER_PASSWORD: &str = "broker-secret";

fn create_user(data_dir: &Path, name: &str, password: &str) {
    std::fs::create_dir_all(data_dir).unwrap();
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

/// A secured 3-node cluster and where its clients connect.
struct Secured {
    cluster: TestCluster,
    /// The SASL_PLAINTEXT client listener's port of each node when the inter-broker listener
    /// is another one (SASL_SSL); `None`: clients use the one SASL_PLAINTEXT listener.
    client_ports: Option<Vec<u16>>,
}

impl std::ops::Deref for Secured {
    type Target = TestCluster;
    fn deref(&self) -> &TestCluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for Secured {
    fn deref_mut(&mut self) -> &mut TestCluster {
        &mut self.cluster
    }
}

impl Secured {
    fn bootstrap(&self, nodes: &[usize]) -> String {
        match &self.client_ports {
            None => self.cluster.bootstrap_of(nodes),
            Some(ports) => nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", ports[*n]))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    fn client_addr(&self, node: usize) -> std::net::SocketAddr {
        match &self.client_ports {
            None => self.cluster.socket_addr(node),
            Some(ports) => std::net::SocketAddr::from(([127, 0, 0, 1], ports[node])),
        }
    }
}

/// Three nodes, authorizer on; node 0 holds the bootstrap users. Without `pki`: SASL_PLAINTEXT
/// only. With `pki` (a directory holding `ca.pem`, `broker.pem`, `broker.key`): the
/// inter-broker listener is SASL_SSL (listed first: SCRAM-SHA-512 over TLS verified against
/// the CA) and clients use a second, SASL_PLAINTEXT listener `CLIENT`.
fn secured_cluster(users_dir: &Path, pki: Option<&Path>) -> Secured {
    create_user(users_dir, "broker", BROKER_PASSWORD);
    create_user(users_dir, "admin", "admin-secret");
    create_user(users_dir, "mallory", "mallory-secret");
    let inter = if pki.is_some() {
        "SASL_SSL"
    } else {
        "SASL_PLAINTEXT"
    };
    let lower = inter.to_ascii_lowercase();
    let mut settings = format!(
        "broker_session_timeout_ms = 2000\nbroker_heartbeat_interval_ms = 300\n\
         replica_fetch_backoff_ms = 500\n\
         authorizer = \"on\"\nsuper_users = \"User:broker;User:admin\"\n\
         sasl_enabled_mechanisms = [\"PLAIN\", \"SCRAM-SHA-512\"]\n\
         inter_broker_listener_name = \"{inter}\"\n\
         sasl_mechanism_inter_broker_protocol = \"SCRAM-SHA-512\"\n\
         listener_name.{lower}.scram-sha-512.sasl_jaas_config = \
         'org.apache.kafka.common.security.scram.ScramLoginModule required \
         username=\"broker\" password=\"{BROKER_PASSWORD}\";'\n"
    );
    let (node_settings, client_ports) = match pki {
        None => (
            vec!["listeners = [\"SASL_PLAINTEXT://127.0.0.1:{kafka_port}\"]\n".to_string(); 3],
            None,
        ),
        Some(dir) => {
            let d = dir.display();
            settings.push_str(&format!(
                "listener_security_protocol_map = [\"CLIENT:SASL_PLAINTEXT\"]\n\
                 ssl_certificate_file = \"{d}/broker.pem\"\nssl_key_file = \"{d}/broker.key\"\n\
                 ssl_ca_file = \"{d}/ca.pem\"\n"
            ));
            let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
            let nodes = ports
                .iter()
                .map(|p| {
                    format!(
                        "listeners = [\"SASL_SSL://127.0.0.1:{{kafka_port}}\", \"CLIENT://127.0.0.1:{p}\"]\n"
                    )
                })
                .collect();
            (nodes, Some(ports))
        }
    };
    let cluster = TestCluster::start(
        3,
        ClusterOptions {
            settings,
            node_settings,
            wait_for_cluster: false,
            data_dirs: [(0, users_dir.to_path_buf())].into(),
            ..ClusterOptions::default()
        },
    );
    Secured {
        cluster,
        client_ports,
    }
}

/// A librdkafka configuration logging in with PLAIN as `user`.
fn client(cluster: &Secured, nodes: &[usize], user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cluster.bootstrap(nodes))
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password);
    c
}

/// Partition 0 of `topic` as seen through `node`: (leader, isr).
fn partition_seen(cluster: &Secured, node: usize, topic: &str) -> Result<(i32, Vec<i32>), String> {
    let consumer: BaseConsumer = client(cluster, &[node], "admin", "admin-secret")
        .create()
        .map_err(|e| e.to_string())?;
    let m = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let t = m.topics().first().ok_or("no topic")?;
    let p = t.partitions().first().ok_or("no partition")?;
    if p.error().is_some() || p.leader() < 0 {
        return Err(format!("partition: {:?} leader {}", p.error(), p.leader()));
    }
    Ok((p.leader(), p.isr().to_vec()))
}

/// A raw connection to `node` logged in with PLAIN as `user`.
fn raw_login(cluster: &Secured, node: usize, user: &str, password: &str) -> RawConn {
    let mut conn = RawConn::connect(cluster.client_addr(node)).unwrap();
    conn.set_read_timeout(Duration::from_secs(10));
    let hs = conn
        .request(
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .unwrap();
    assert_eq!(hs.error_code, 0);
    let token = format!("\0{user}\0{password}");
    let auth = conn
        .request(
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(token)),
        )
        .unwrap();
    assert_eq!(auth.error_code, 0, "{user} logs in");
    conn
}

/// A follower's Fetch (v12, `replica_id` 1) of partition 0 of `topic`: its partition error.
fn replica_fetch_error(conn: &mut RawConn, topic: &str) -> i16 {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = 0;
    p.partition_max_bytes = 1 << 20;
    p.current_leader_epoch = -1;
    p.last_fetched_epoch = -1;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.into()));
    t.partitions.push(p);
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(1);
    request.max_wait_ms = 0;
    request.max_bytes = 1 << 20;
    request.topics.push(t);
    let answer = conn.request(12, &request).unwrap();
    answer.responses[0].partitions[0].error_code
}

/// Only SASL_PLAINTEXT listeners, the authorizer on, the brokers' user the only super user
/// besides an admin: an rf-3 topic is replicated to every broker (acks=all with
/// min.insync.replicas 3 succeeds), a leader's kill -9 moves leadership to a follower that has
/// every acknowledged record, a transaction over partitions led by different brokers commits
/// (its markers reach the leaders over SASL), and a non-broker user's replica Fetch is refused
/// (TOPIC_AUTHORIZATION_FAILED, as Kafka's KafkaApis answers a follower fetch without
/// CLUSTER_ACTION) while the broker user's is served.
#[test]
fn brokers_authenticate_to_each_other_on_a_sasl_only_cluster() {
    within(TEST_LIMIT, || {
        let users = tempfile::tempdir().unwrap();
        let secured = secured_cluster(&users.path().join("data0"), None);
        replicate_transact_and_fail_over(secured);
    });
}

/// The same over a SASL_SSL inter-broker listener (SCRAM-SHA-512 inside TLS, the brokers'
/// certificate verified against the cluster CA; made in the test with rcgen): replica
/// fetches, transaction markers and verifications all go over it, clients use a separate
/// SASL_PLAINTEXT listener (the rdkafka build here has no TLS).
#[test]
fn brokers_authenticate_to_each_other_over_a_sasl_ssl_inter_broker_listener() {
    within(TEST_LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        broker_pki(dir.path());
        let secured = secured_cluster(&dir.path().join("data0"), Some(dir.path()));
        // The inter-broker port speaks TLS only: a plaintext request there is not answered,
        // so the replication below went through TLS.
        let mut plain = RawConn::connect(secured.socket_addr(1)).unwrap();
        plain.set_read_timeout(Duration::from_secs(5));
        assert!(
            plain
                .request(3, &kafka_protocol::messages::ApiVersionsRequest::default())
                .is_err(),
            "plaintext on the SASL_SSL listener"
        );
        replicate_transact_and_fail_over(secured);
    });
}

/// The body of both: rf-3 acks=all with min ISR 3, a transaction over 3 leaders, a non-broker's
/// replica Fetch refused, kill -9 of the leader with every acknowledged record read back.
fn replicate_transact_and_fail_over(mut cluster: Secured) {
    {
        // Every broker registered (through node 0, which also stored the users).
        cluster.wait_until(Duration::from_secs(40), "3 brokers over SASL", || {
            let consumer: BaseConsumer = client(&cluster, &[0], "admin", "admin-secret")
                .create()
                .map_err(|e| e.to_string())?;
            let m = consumer
                .fetch_metadata(None, Duration::from_secs(3))
                .map_err(|e| e.to_string())?;
            (m.brokers().len() == 3)
                .then_some(())
                .ok_or(format!("{} brokers", m.brokers().len()))
        });
        let rt = runtime();
        let admin: AdminClient<DefaultClientContext> =
            client(&cluster, &[0, 1, 2], "admin", "admin-secret")
                .create()
                .expect("admin");
        let topic =
            NewTopic::new("secured", 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "3");
        let created = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .expect("CreateTopics");
        assert!(created[0].is_ok(), "{created:?}");
        let (leader, isr) = cluster.wait_until(Duration::from_secs(20), "a leader", || {
            partition_seen(&cluster, 0, "secured")
        });
        assert_eq!(isr.len(), 3, "{isr:?}");

        let producer: FutureProducer = client(&cluster, &[0, 1, 2], "admin", "admin-secret")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer");
        let mut acked: BTreeMap<i64, String> = BTreeMap::new();
        for i in 0..100 {
            let value = format!("record-{i}");
            let record = FutureRecord::to("secured")
                .partition(0)
                .key("k")
                .payload(&value);
            match rt.block_on(producer.send(record, Duration::from_secs(20))) {
                Ok(d) => {
                    acked.insert(d.offset, value);
                }
                Err((e, _)) => cluster.fail(&format!(
                    "acks=all with 3 in-sync replicas over SASL: {value}: {e}"
                )),
            }
        }
        drop(producer);

        // A transaction over 3 partitions led across the brokers: its commit needs the
        // coordinator's markers (BrokerClient) to reach every partition leader over SASL.
        let txn_topic = NewTopic::new("secured-txn", 3, TopicReplication::Fixed(3));
        let created = rt
            .block_on(admin.create_topics([&txn_topic], &AdminOptions::new()))
            .expect("CreateTopics");
        assert!(created[0].is_ok(), "{created:?}");
        let txn: FutureProducer = client(&cluster, &[0, 1, 2], "admin", "admin-secret")
            .set("transactional.id", "secured-tx")
            .set("message.timeout.ms", "20000")
            .create()
            .expect("transactional producer");
        let txn_timeout = Duration::from_secs(30);
        txn.init_transactions(txn_timeout)
            .expect("init_transactions");
        txn.begin_transaction().expect("begin");
        for partition in 0..3 {
            let record = FutureRecord::to("secured-txn")
                .partition(partition)
                .key("k")
                .payload("in a transaction");
            if let Err((e, _)) = rt.block_on(txn.send(record, Duration::from_secs(20))) {
                cluster.fail(&format!("transactional send to {partition}: {e}"));
            }
        }
        if let Err(e) = txn.commit_transaction(txn_timeout) {
            cluster.fail(&format!("commit (markers over SASL): {e}"));
        }
        drop(txn);

        // A user who is not a broker cannot fetch as a replica; the broker user can.
        let mut mallory = raw_login(&cluster, leader as usize, "mallory", "mallory-secret");
        assert_eq!(
            replica_fetch_error(&mut mallory, "secured"),
            29,
            "TOPIC_AUTHORIZATION_FAILED"
        );
        let mut broker = raw_login(&cluster, leader as usize, "broker", BROKER_PASSWORD);
        assert_eq!(
            replica_fetch_error(&mut broker, "secured"),
            0,
            "a broker's fetch"
        );

        cluster.kill9(leader as usize);
        let survivors: Vec<usize> = (0..3).filter(|n| *n != leader as usize).collect();
        let (new_leader, _) =
            cluster.wait_until(
                Duration::from_secs(20),
                "a new leader",
                || match partition_seen(&cluster, survivors[0], "secured")? {
                    (l, _) if l == leader => Err("the old leader".to_string()),
                    seen => Ok(seen),
                },
            );
        assert!(survivors.contains(&(new_leader as usize)));
        let consumer: BaseConsumer = client(&cluster, &survivors, "admin", "admin-secret")
            .set("group.id", "reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        common::assign_from_beginning(&consumer, "secured", 0);
        let mut read: BTreeMap<i64, String> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while read.len() < acked.len() && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                read.insert(m.offset(), value);
            }
        }
        assert_eq!(
            read, acked,
            "every acknowledged record on the new leader {new_leader}"
        );
    }
}

/// Writes a CA (`ca.pem`) and one certificate for every broker (`broker.pem`, `broker.key`:
/// CN=broker, 127.0.0.1, usable as server and client) into `dir`.
fn broker_pki(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        SanType,
    };
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "cluster CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    params.distinguished_name.push(DnType::CommonName, "broker");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("broker.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("broker.key"), key.serialize_pem()).unwrap();
}

/// The inter-broker listener is SSL with client certificates required (listed first, so a
/// broker connecting as before, in plaintext to the first listener, could not replicate);
/// clients use a second, plaintext listener. With the authorizer on and the brokers'
/// certificate principal `User:CN=broker` the super user, an rf-2 topic with
/// min.insync.replicas 2 takes acks=all produces: the follower fetched over TLS with its
/// certificate.
#[test]
fn brokers_replicate_over_an_mtls_inter_broker_listener() {
    within(Duration::from_secs(120), || {
        let pki = tempfile::tempdir().unwrap();
        broker_pki(pki.path());
        let d = pki.path().display();
        let settings = format!(
            "authorizer = \"on\"\nsuper_users = \"User:CN=broker\"\n\
             allow_everyone_if_no_acl_found = true\n\
             inter_broker_listener_name = \"SSL\"\nssl_client_auth = \"required\"\n\
             listener_security_protocol_map = [\"CLIENT:PLAINTEXT\"]\n\
             ssl_certificate_file = \"{d}/broker.pem\"\nssl_key_file = \"{d}/broker.key\"\n\
             ssl_ca_file = \"{d}/ca.pem\"\n"
        );
        let client_ports: Vec<u16> = (0..2).map(|_| common::free_port()).collect();
        let node_settings = client_ports
            .iter()
            .map(|p| {
                format!(
                    "listeners = [\"SSL://127.0.0.1:{{kafka_port}}\", \"CLIENT://127.0.0.1:{p}\"]\n"
                )
            })
            .collect();
        let cluster = TestCluster::start(
            2,
            ClusterOptions {
                settings,
                node_settings,
                wait_for_cluster: false,
                ..ClusterOptions::default()
            },
        );
        let bootstrap = client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let plain = || {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", &bootstrap);
            c
        };
        cluster.wait_until(Duration::from_secs(40), "2 brokers", || {
            let consumer: BaseConsumer = plain().create().map_err(|e| e.to_string())?;
            let m = consumer
                .fetch_metadata(None, Duration::from_secs(3))
                .map_err(|e| e.to_string())?;
            (m.brokers().len() == 2)
                .then_some(())
                .ok_or(format!("{} brokers", m.brokers().len()))
        });
        let rt = runtime();
        let admin: AdminClient<DefaultClientContext> = plain().create().expect("admin");
        let topic = NewTopic::new("tls-replicated", 1, TopicReplication::Fixed(2))
            .set("min.insync.replicas", "2");
        let created = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .expect("CreateTopics");
        assert!(created[0].is_ok(), "{created:?}");
        let producer: FutureProducer = plain()
            .set("acks", "all")
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer");
        for i in 0..50 {
            let value = format!("record-{i}");
            let record = FutureRecord::to("tls-replicated")
                .partition(0)
                .key("k")
                .payload(&value);
            if let Err((e, _)) = rt.block_on(producer.send(record, Duration::from_secs(20))) {
                cluster.fail(&format!(
                    "acks=all with the follower over mTLS: {value}: {e}"
                ));
            }
        }
    });
}
