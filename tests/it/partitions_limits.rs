//! Huge partition counts and a short descriptor supply must not take the broker down (issue 12
//! item 2), with the real binary: a CreateTopics of 100,000 partitions is refused whole and the
//! broker keeps serving; the broker-wide partition cap (`max_partitions_per_broker`) refuses
//! whole requests before anything is created; with RLIMIT_NOFILE far below the partition count
//! the partitions still open, take produce and fetch, and survive a restart, because idle
//! partitions hold no descriptor; out of descriptors, the accept loop turns clients away with a
//! prompt close instead of leaving them hanging, and recovers; a start that cannot listen exits
//! non-zero within seconds.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{broker_bin, free_port, signal, wait_timeout, within, RawConn, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, CreateTopicsResponse,
    MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Kafka's POLICY_VIOLATION error code.
const POLICY_VIOLATION: i16 = ResponseError::PolicyViolation.code();

fn topic(name: &str, partitions: i32) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
}

fn create_topics(
    conn: &mut RawConn,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> CreateTopicsResponse {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_validate_only(validate_only)
        .with_topics(topics);
    conn.request(7, &request).expect("CreateTopics answered")
}

/// Topic name -> partition count, from a Metadata request for all topics.
fn topic_partitions(addr: SocketAddr) -> std::collections::BTreeMap<String, usize> {
    let mut conn = RawConn::connect(addr).expect("connect");
    let response = conn
        .request(9, &MetadataRequest::default().with_topics(None))
        .expect("Metadata");
    response
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.partitions.len(),
            )
        })
        .collect()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// One CreateTopics asking for 100,000 partitions (the per-topic maximum) is refused with
// POLICY_VIOLATION as Kafka's controller refuses more than 10,000 partitions per request:
// nothing is created, no descriptor is spent, and the broker keeps serving.
#[test]
fn create_topics_of_100000_partitions_is_refused_and_the_broker_keeps_serving() {
    within(Duration::from_secs(120), || {
        let broker = TestBroker::start(2);
        let fds_before = open_fds(broker.pid());
        let rss_before = broker.rss_bytes();
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        let started = Instant::now();
        let response = create_topics(&mut conn, vec![topic("huge", 100_000)], false);
        let result = &response.topics[0];
        assert_eq!(result.error_code, POLICY_VIOLATION, "{result:?}");
        assert_eq!(
            result.error_message.as_deref(),
            Some("Excessively large number of partitions per request.")
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refusal took {:?}",
            started.elapsed()
        );
        // Two topics that together pass 10,000 are refused together, even the small one.
        let response = create_topics(
            &mut conn,
            vec![topic("small", 1), topic("big", 10_000)],
            false,
        );
        for result in &response.topics {
            assert_eq!(result.error_code, POLICY_VIOLATION, "{result:?}");
        }
        let topics = topic_partitions(broker.socket_addr());
        assert!(
            !topics.contains_key("huge") && !topics.contains_key("small"),
            "{topics:?}"
        );
        assert!(
            !broker.data_dir().join("huge-0").exists(),
            "a refused topic left files"
        );
        // Still serving: a normal topic is created and listed; no descriptors leaked.
        let response = create_topics(&mut conn, vec![topic("normal", 8)], false);
        assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0]);
        assert_eq!(
            topic_partitions(broker.socket_addr()).get("normal"),
            Some(&8)
        );
        assert!(
            open_fds(broker.pid()) < fds_before + 20,
            "descriptors grew from {fds_before} to {}",
            open_fds(broker.pid())
        );
        // Memory bound of the refusal: nothing per requested partition was allocated.
        assert!(
            broker.rss_bytes() < rss_before + (16 << 20),
            "RSS grew from {rss_before} to {}",
            broker.rss_bytes()
        );
    });
}

// The broker-wide cap: a request that would pass `max_partitions_per_broker` is refused whole
// (every topic of it, POLICY_VIOLATION, with a message naming the setting) before anything is
// created; CreatePartitions and validate_only are held to it too; below it all works.
#[test]
fn partition_cap_refuses_whole_requests_before_creating_anything() {
    within(Duration::from_secs(120), || {
        let (_dir, config) = common::config_file("max_partitions_per_broker = 20\n");
        let config = config.display().to_string();
        let broker = TestBroker::start_with(2, &["--config", &config]);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");

        let response = create_topics(&mut conn, vec![topic("a", 10)], false);
        assert_eq!(response.topics[0].error_code, 0);

        let response = create_topics(&mut conn, vec![topic("b", 4), topic("c", 7)], false);
        for result in &response.topics {
            assert_eq!(result.error_code, POLICY_VIOLATION, "{result:?}");
            let message = result.error_message.as_deref().unwrap_or_default();
            assert!(
                message.contains("max_partitions_per_broker is 20"),
                "{message}"
            );
        }
        let response = create_topics(&mut conn, vec![topic("b", 4), topic("c", 7)], true);
        for result in &response.topics {
            assert_eq!(
                result.error_code, POLICY_VIOLATION,
                "validate_only: {result:?}"
            );
        }
        let grow = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("a")))
                .with_count(21)
                .with_assignments(None)]);
        let response = conn.request(3, &grow).expect("CreatePartitions");
        assert_eq!(response.results[0].error_code, POLICY_VIOLATION);

        let topics = topic_partitions(broker.socket_addr());
        assert_eq!(topics.get("a"), Some(&10), "{topics:?}");
        assert!(!topics.contains_key("b") && !topics.contains_key("c"));
        for name in ["b-0", "c-0", "a-10"] {
            assert!(!broker.data_dir().join(name).exists(), "{name} was created");
        }
        // Up to the cap exactly is fine.
        let response = create_topics(&mut conn, vec![topic("b", 4), topic("c", 6)], false);
        assert!(
            response.topics.iter().all(|t| t.error_code == 0),
            "{response:?}"
        );
        assert_eq!(topic_partitions(broker.socket_addr()).len(), 3);
    });
}

/// A broker process started with RLIMIT_NOFILE = `nofile` (soft and hard, so the broker
/// cannot raise it), its stderr in `dir/broker.log`.
struct LimitedBroker {
    child: Option<Child>,
    addr: SocketAddr,
    args: Vec<String>,
    nofile: u64,
    log: std::path::PathBuf,
}

impl LimitedBroker {
    fn start(dir: &Path, shards: usize, nofile: u64) -> LimitedBroker {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let args = vec![
            "start".to_string(),
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--shards".into(),
            shards.to_string(),
            "--admin-listen".into(),
            "off".into(),
        ];
        let mut broker = LimitedBroker {
            child: None,
            addr,
            args,
            nofile,
            log: dir.join("broker.log"),
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        self.spawn_no_wait();
        self.wait_ready();
    }

    fn spawn_no_wait(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let nofile = self.nofile;
        let mut cmd = Command::new(broker_bin());
        cmd.args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: setrlimit and prctl are async-signal-safe; nothing else runs before exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("spawn freshet"));
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "broker exited during startup: {status}\n{}",
                    self.log_tail()
                );
            }
            if RawConn::connect(self.addr)
                .and_then(|mut c| c.request(9, &MetadataRequest::default().with_topics(None)))
                .is_ok_and(|m| !m.brokers.is_empty())
            {
                return;
            }
            assert!(Instant::now() < deadline, "not ready\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        self.stop_within(Duration::from_secs(60))
    }

    fn stop_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(&child, libc::SIGTERM);
        wait_timeout(&mut child, limit).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit within {limit:?} of SIGTERM\n{}", self.log_tail())
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for LimitedBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// With RLIMIT_NOFILE at 256, 2,000 partitions open, every one takes a record through a real
// producer and gives it back to a real consumer, the broker stays under its descriptor limit,
// and after a clean restart (which reopens all 2,000) the data is still there.
#[test]
fn two_thousand_partitions_work_with_256_open_files() {
    const PARTITIONS: i32 = 2_000;
    within(Duration::from_secs(600), || {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = LimitedBroker::start(dir.path(), 2, 256);
        let mut conn = RawConn::connect(broker.addr).expect("connect");
        conn.set_read_timeout(Duration::from_secs(300));
        let started = Instant::now();
        let response = create_topics(&mut conn, vec![topic("wide", PARTITIONS)], false);
        println!("created {PARTITIONS} partitions in {:?}", started.elapsed());
        assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0]);
        drop(conn);

        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", broker.addr.to_string())
            .set("linger.ms", "20")
            .set("message.timeout.ms", "60000")
            .create()
            .expect("producer");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let futures: Vec<_> = (0..PARTITIONS)
                .map(|p| {
                    let value = format!("value-{p}");
                    let record = FutureRecord::to("wide")
                        .partition(p)
                        .key("k")
                        .payload(&value);
                    producer.send_result(record).expect("enqueue")
                })
                .collect();
            for (p, f) in futures.into_iter().enumerate() {
                let delivered = f.await.expect("delivery future");
                if let Err((e, _)) = delivered {
                    panic!(
                        "produce to partition {p} failed: {e}\n{}",
                        broker.log_tail()
                    );
                }
            }
        });
        let fds = open_fds(broker.pid());
        assert!(fds < 256, "{fds} descriptors open");

        let read_back = |broker: &LimitedBroker, partitions: &[i32]| {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", broker.addr.to_string())
                .set("group.id", "assign-only")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "100")
                .create()
                .expect("consumer");
            let mut tpl = TopicPartitionList::new();
            for p in partitions {
                tpl.add_partition_offset("wide", *p, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&tpl).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.len() < partitions.len() {
                assert!(Instant::now() < deadline, "read back only {seen:?}");
                if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                    let message = message.expect("fetch");
                    let expected = format!("value-{}", message.partition());
                    assert_eq!(message.payload(), Some(expected.as_bytes()));
                    seen.insert(message.partition());
                }
            }
        };
        let sample: Vec<i32> = (0..PARTITIONS).step_by(97).collect();
        read_back(&broker, &sample);

        let started = Instant::now();
        let status = broker.stop();
        assert!(status.success(), "{status}\n{}", broker.log_tail());
        println!("stopped in {:?}", started.elapsed());
        let started = Instant::now();
        broker.spawn();
        println!("restarted in {:?}", started.elapsed());
        assert!(open_fds(broker.pid()) < 256);
        read_back(&broker, &[1, 999, 1998, 1999]);
        assert!(
            !broker.log_tail().contains("Too many open files"),
            "{}",
            broker.log_tail()
        );
    });
}

// Out of descriptors (connections used them all), the accept loop turns a new client away
// with a prompt close instead of leaving it hanging, logs the failure a bounded number of
// times, and serves new clients again once descriptors are free.
#[test]
fn accept_turns_clients_away_when_out_of_descriptors_and_recovers() {
    within(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = LimitedBroker::start(dir.path(), 1, 64);
        let mut held = Vec::new();
        for _ in 0..80 {
            held.push(TcpStream::connect(broker.addr).expect("connect"));
        }
        // Wait until the broker has used up its descriptors on them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while open_fds(broker.pid()) < 63 {
            assert!(Instant::now() < deadline, "fds: {}", open_fds(broker.pid()));
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        let mut probe = TcpStream::connect(broker.addr).expect("connect probe");
        probe
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut buf = [0u8; 16];
        match probe.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("unexpected {n} bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "a client arriving while the broker is out of descriptors was left hanging \
                 for {:?} ({e}) instead of being closed",
                started.elapsed()
            ),
        }
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = RawConn::connect(broker.addr)
                .and_then(|mut c| c.request(0, &ApiVersionsRequest::default()))
                .is_ok_and(|r| r.error_code == 0);
            if answered {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not serving again\n{}",
                broker.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(&broker.log).unwrap_or_default();
        let failures = log.matches("accept failed").count();
        assert!(
            (1..=3).contains(&failures),
            "{failures} accept failure lines (want 1..=3, rate-limited)"
        );
        let _ = std::io::stdout().flush();
    });
}

// A start that cannot listen (the port is held by an ordinary listener without SO_REUSEPORT)
// exits non-zero within a few seconds and says why.
#[test]
fn a_start_that_cannot_listen_exits_non_zero_within_3_seconds() {
    within(Duration::from_secs(60), || {
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let mut child = Command::new(broker_bin())
            .args([
                "start",
                "--listen",
                &addr.to_string(),
                "--admin-listen",
                "off",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        let elapsed = started.elapsed();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let status = status.unwrap_or_else(|| panic!("still running after 20 s\n{stderr}"));
        assert!(!status.success(), "{status}");
        assert!(stderr.contains("cannot listen"), "{stderr}");
        assert!(
            elapsed < Duration::from_secs(3),
            "took {elapsed:?} to give up\n{stderr}"
        );
        drop(holder);
    });
}

// Shutdown cost of idle partitions (issue 12 item 12) and SIGTERM during startup (item 2d):
// 4,000 partitions, never written, stop within 10 s of SIGTERM; a SIGTERM while a restart is
// still opening them stops it within 10 s too, with status 0; the next start has them all.
#[test]
fn thousands_of_idle_partitions_stop_within_10_seconds_even_during_startup() {
    const PARTITIONS: i32 = 4_000;
    within(Duration::from_secs(600), || {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = LimitedBroker::start(dir.path(), 2, 20_000);
        let mut conn = RawConn::connect(broker.addr).expect("connect");
        conn.set_read_timeout(Duration::from_secs(300));
        let response = create_topics(
            &mut conn,
            vec![
                topic("idle-a", PARTITIONS / 2),
                topic("idle-b", PARTITIONS / 2),
            ],
            false,
        );
        assert!(
            response.topics.iter().all(|t| t.error_code == 0),
            "{response:?}"
        );
        drop(conn);
        let started = Instant::now();
        let status = broker.stop_within(Duration::from_secs(10));
        assert!(status.success(), "{status}");
        println!(
            "{PARTITIONS} idle partitions stopped in {:?}",
            started.elapsed()
        );

        // SIGTERM as soon as the restart has begun opening partitions.
        let log_before = std::fs::read_to_string(&broker.log)
            .unwrap_or_default()
            .len();
        broker.spawn_no_wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&broker.log).unwrap_or_default()[log_before..]
            .contains("starting freshet")
        {
            assert!(Instant::now() < deadline, "{}", broker.log_tail());
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        let status = broker.stop_within(Duration::from_secs(10));
        assert!(status.success(), "{status}\n{}", broker.log_tail());
        println!("stopped during startup in {:?}", started.elapsed());

        broker.spawn();
        let topics = topic_partitions(broker.addr);
        assert_eq!(topics.get("idle-a"), Some(&(PARTITIONS as usize / 2)));
        assert_eq!(topics.get("idle-b"), Some(&(PARTITIONS as usize / 2)));
        let status = broker.stop_within(Duration::from_secs(10));
        assert!(status.success(), "{status}");
    });
}
