//! The `freshet` process itself (issue 3): embedded defaults, refusing a second broker on the
//! same data directory or port, clean shutdown on SIGTERM and SIGINT, idle memory.

use crate::common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{broker_bin, free_port, signal, wait_timeout, within, RawConn, TestBroker};
use kafka_protocol::messages::MetadataRequest;

/// How long a refused second broker may take to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `freshet` with `args` in `cwd`; it must exit by itself within REFUSAL_TIMEOUT.
fn run_to_exit(args: &[String], cwd: &Path) -> Output {
    let mut child = Command::new(broker_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn freshet");
    if wait_timeout(&mut child, REFUSAL_TIMEOUT).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "second broker {args:?} still running after {REFUSAL_TIMEOUT:?} instead of refusing to start\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

/// Spawns `freshet start --listen ADDR --shards 2 --data-dir DIR/data` with stderr to DIR/stderr.log.
fn spawn_two_shard_broker(addr: std::net::SocketAddr, dir: &Path) -> std::process::Child {
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    Command::new(broker_bin())
        .args([
            "start",
            "--listen",
            &addr.to_string(),
            "--shards",
            "2",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stderr_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

fn metadata_works(addr: std::net::SocketAddr) -> bool {
    RawConn::connect(addr)
        .and_then(|mut c| c.request(9, &MetadataRequest::default().with_topics(None)))
        .map(|m| !m.brokers.is_empty())
        .unwrap_or(false)
}

// A second broker on a data directory that is in use exits non-zero and says why; the first
// one keeps working.
#[test]
fn second_broker_on_same_data_dir_exits_non_zero_with_a_clear_message() {
    within(Duration::from_secs(60), || {
        let mut first = TestBroker::start(1);
        let tmp = tempfile::tempdir().unwrap();
        let args: Vec<String> = [
            "start",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            &first.data_dir().display().to_string(),
            "--shards",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = run_to_exit(&args, tmp.path());
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            !out.status.success(),
            "second broker on the same data dir exited with {}",
            out.status
        );
        assert!(
            stderr.contains("lock") || stderr.contains("in use") || stderr.contains("already"),
            "stderr does not say the data directory is in use:\n{stderr}"
        );
        assert!(first.is_running());
        assert!(
            metadata_works(first.socket_addr()),
            "first broker stopped serving"
        );
        // And the refused broker did not take the first one's lock away: a clean restart works.
        first.restart();
    });
}

// A second broker on a port that is in use exits non-zero and says why (glommio's SO_REUSEPORT
// would otherwise let it share the port silently); the first one keeps working.
#[test]
fn second_broker_on_same_port_exits_non_zero_with_a_clear_message() {
    within(Duration::from_secs(60), || {
        let first = TestBroker::start(1);
        let tmp = tempfile::tempdir().unwrap();
        let args: Vec<String> = [
            "start",
            "--listen",
            &first.addr(),
            "--data-dir",
            &tmp.path().join("other-data").display().to_string(),
            "--shards",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = run_to_exit(&args, tmp.path());
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            !out.status.success(),
            "second broker on the same port exited with {}",
            out.status
        );
        assert!(
            stderr.contains("in use")
                || stderr.contains(&first.addr())
                || stderr.contains("already"),
            "stderr does not say the address is in use:\n{stderr}"
        );
        // Every new connection still reaches the first broker (none go to a half-started one).
        for _ in 0..20 {
            assert!(
                metadata_works(first.socket_addr()),
                "a connection to the port did not reach the first broker"
            );
        }
    });
}

// SIGTERM and SIGINT both stop the broker with exit status 0 within the stop timeout, also while
// clients are connected.
#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    within(Duration::from_secs(90), || {
        for (name, sig) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
            for shards in [1, 2] {
                let mut broker = TestBroker::start(shards);
                let mut idle = RawConn::connect(broker.socket_addr()).unwrap();
                assert!(metadata_works(broker.socket_addr()));
                let _ = idle
                    .request(9, &MetadataRequest::default().with_topics(None))
                    .unwrap();
                let start = Instant::now();
                let status = broker.stop_with(sig);
                assert!(
                    status.success(),
                    "{name} with {shards} shard(s): exit {status}\n{}",
                    broker.log_tail()
                );
                eprintln!("{name}, {shards} shard(s): exited in {:?}", start.elapsed());
                // The connection was closed by the broker.
                idle.set_read_timeout(Duration::from_secs(5));
                assert!(matches!(idle.read_frame(), Ok(None) | Err(_)));
                assert!(
                    TcpStream::connect(broker.socket_addr()).is_err(),
                    "port still accepting after exit"
                );
            }
        }
    });
}

// `freshet start` with no arguments runs a broker on localhost:9092 with ./freshet-data.
// 9092 need not be free (issue 12: a developer's own broker on 9092 failed this test): when
// another program holds it, the test checks the same default from the other side: `freshet
// start` stops at once with a non-zero exit naming localhost:9092, and serves nothing.
#[test]
fn start_with_embedded_defaults_listens_on_9092_with_data_in_cwd() {
    within(Duration::from_secs(60), || {
        let taken = std::net::TcpListener::bind("127.0.0.1:9092").is_err();
        let cwd = tempfile::tempdir().unwrap();
        let mut child = Command::new(broker_bin())
            .arg("start")
            .current_dir(cwd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + common::BROKER_READY_TIMEOUT;
        let addrs: Vec<std::net::SocketAddr> = vec![
            "127.0.0.1:9092".parse().unwrap(),
            "[::1]:9092".parse().unwrap(),
        ];
        let ready = loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                // Taken before the start (or by someone else in between): a clear refusal.
                assert!(
                    !status.success() && stderr.contains(":9092"),
                    "freshet start exited with {status} (9092 taken before: {taken}):\n{stderr}"
                );
                eprintln!("9092 is taken on this machine; freshet start refused it: {stderr}");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "freshet start not ready on localhost:9092 within {:?} (9092 taken before: {taken})",
                    common::BROKER_READY_TIMEOUT
                );
            }
            // While 9092 is someone else's, whatever answers there is not our broker: wait for
            // it to exit instead.
            if !taken {
                if let Some(a) = addrs.iter().find(|a| metadata_works(**a)) {
                    break *a;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            cwd.path().join("freshet-data").is_dir(),
            "no ./freshet-data created"
        );
        // Metadata advertises a localhost address on 9092.
        let md = RawConn::connect(ready)
            .unwrap()
            .request(9, &MetadataRequest::default().with_topics(None))
            .unwrap();
        assert_eq!(md.brokers.len(), 1);
        assert_eq!(md.brokers[0].port, 9092);
        signal(&child, libc::SIGTERM);
        let status =
            wait_timeout(&mut child, common::BROKER_STOP_TIMEOUT).expect("exit after SIGTERM");
        assert!(status.success());
    });
}

// An idle broker stays under 100 MiB of resident memory (issue 3's target), with 2 shards.
#[test]
fn idle_broker_uses_under_100_mib_rss() {
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start(2);
        // Not synchronization: "idle" is defined as 2 s after readiness with no client (the
        // timers and background tasks have run); there is no event to wait for.
        std::thread::sleep(Duration::from_secs(2));
        let rss = broker.rss_bytes();
        eprintln!("idle RSS with 2 shards: {} MiB", rss >> 20);
        assert!(rss < 100 * 1024 * 1024, "idle RSS {} MiB", rss >> 20);
    });
}

// Settings from `--config FILE.toml` apply, and command-line flags override them.
#[test]
fn config_file_settings_apply_and_flags_override_them() {
    within(Duration::from_secs(60), || {
        let (dir, config) =
            common::config_file("default_partitions = 5\nauto_create_topics = true\nnode_id = 0\n");
        let config = config.display().to_string();
        for (extra, expected) in [(vec![], 5usize), (vec!["--default-partitions", "2"], 2)] {
            let mut args = vec!["--config", config.as_str()];
            args.extend(extra);
            let broker = TestBroker::start_with(1, &args);
            let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
            let md = conn
                .request(
                    9,
                    &MetadataRequest::default()
                        .with_topics(Some(vec![kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(kafka_protocol::messages::TopicName(
                                kafka_protocol::protocol::StrBytes::from_static_str("from-config"),
                            )))]))
                        .with_allow_auto_topic_creation(true),
                )
                .unwrap();
            // Auto-creation may answer LEADER_NOT_AVAILABLE first, as Kafka does; ask again.
            let partitions = if md.topics[0].partitions.len() == expected {
                expected
            } else {
                let md = conn
                    .request(9, &MetadataRequest::default().with_topics(None))
                    .unwrap();
                md.topics
                    .iter()
                    .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("from-config"))
                    .map(|t| t.partitions.len())
                    .unwrap_or(0)
            };
            assert_eq!(partitions, expected, "args {args:?}");
        }
        // A config file with an unknown key is refused with a message naming it.
        std::fs::write(dir.path().join("bad.toml"), "no_such_setting = 1\n").unwrap();
        let out = run_to_exit(
            &[
                "start".into(),
                "--config".into(),
                dir.path().join("bad.toml").display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{}", free_port()),
                "--data-dir".into(),
                dir.path().join("d").display().to_string(),
            ],
            dir.path(),
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no_such_setting"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

// A broker restarted right after kill -9 (as a supervisor would) starts, even though the dead
// process's listening socket may linger for a few milliseconds while its io_uring is torn down.
#[test]
fn restart_immediately_after_kill_9_under_produce_load_starts() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    within(Duration::from_secs(60), || {
        let mut broker = TestBroker::start(1);
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.addr())
            .set("linger.ms", "1")
            .set("message.timeout.ms", "10000")
            .create()
            .unwrap();
        // Keep appends and fdatasyncs in flight when the broker dies.
        let payload = vec![b'x'; 1000];
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            for _ in 0..100 {
                let _ = producer.send(BaseRecord::<(), [u8]>::to("load").payload(&payload[..]));
            }
            producer.poll(Duration::from_millis(1));
        }
        broker.kill9();
        broker.start_again();
        assert!(metadata_works(broker.socket_addr()));
        producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    });
}

// SIGTERM that arrives as soon as the port accepts connections (a supervisor stopping a broker
// it just started) still gets a clean shutdown, not death by the default signal action.
#[test]
fn sigterm_right_after_the_port_opens_shuts_down_cleanly() {
    within(Duration::from_secs(90), || {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let mut child = spawn_two_shard_broker(addr, dir.path());
            let deadline = Instant::now() + common::BROKER_READY_TIMEOUT;
            while TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: port never opened"
                );
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "round {round}: broker exited during startup ({status}):\n{}",
                        stderr_log(dir.path())
                    );
                }
            }
            signal(&child, libc::SIGTERM);
            let status =
                wait_timeout(&mut child, common::BROKER_STOP_TIMEOUT).expect("exit after SIGTERM");
            assert!(
                status.success(),
                "round {round}: exit {status} after an early SIGTERM\n{}",
                stderr_log(dir.path())
            );
        }
    });
}

// A request on a connection accepted at the earliest moment (the port has just opened, other
// shards may still be starting) is served like any other: CreateTopics succeeds.
#[test]
fn requests_on_connections_accepted_during_startup_are_served() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    within(Duration::from_secs(90), || {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let mut child = spawn_two_shard_broker(addr, dir.path());
            let deadline = Instant::now() + common::BROKER_READY_TIMEOUT;
            // Several connections, so that some land on each shard (SO_REUSEPORT spreads them).
            let mut conns = Vec::new();
            while conns.len() < 8 {
                match RawConn::connect(addr) {
                    Ok(c) => conns.push(c),
                    Err(_) => {
                        assert!(
                            Instant::now() < deadline,
                            "round {round}: port never opened"
                        );
                        if let Some(status) = child.try_wait().unwrap() {
                            panic!(
                                "round {round}: broker exited during startup ({status}):\n{}",
                                stderr_log(dir.path())
                            );
                        }
                    }
                }
            }
            let mut ids = Vec::new();
            for (i, conn) in conns.iter_mut().enumerate() {
                let name = StrBytes::from_string(format!("early-{i}"));
                let request = CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(TopicName(name))
                        .with_num_partitions(4)
                        .with_replication_factor(1)]);
                ids.push(conn.send(7, &request).expect("send CreateTopics"));
            }
            let responses: Vec<_> = conns
                .iter_mut()
                .zip(ids)
                .map(|(conn, id)| conn.receive::<CreateTopicsRequest>(7, id))
                .collect();
            let _ = child.kill();
            let _ = child.wait();
            for (i, response) in responses.into_iter().enumerate() {
                let response = response.unwrap_or_else(|e| {
                    panic!("round {round}: CreateTopics on early connection {i}: {e}")
                });
                let result = &response.topics[0];
                assert_eq!(
                    result.error_code, 0,
                    "round {round}, connection {i}: CreateTopics error {:?}",
                    result.error_message
                );
            }
        }
    });
}

// Every shard comes up on every start: across many starts with 2 shards, each one reports
// "freshet ready" (all shards listening) within 10 s; a shard that dies at startup must not
// leave a half-working broker behind.
#[test]
fn every_shard_comes_up_on_every_start() {
    within(Duration::from_secs(120), || {
        let starts = 40;
        for round in 0..starts {
            let data = tempfile::tempdir().unwrap();
            let log_path = data.path().join("stderr.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(broker_bin())
                .args([
                    "start",
                    "--listen",
                    &format!("127.0.0.1:{}", free_port()),
                    "--shards",
                    "2",
                    "--data-dir",
                ])
                .arg(data.path().join("data"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let ready = loop {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                if text.contains("freshet ready on") {
                    break true;
                }
                if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", child.id()))
                .map(|dir| {
                    dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                        .map(|s| s.trim().to_string())
                        .collect()
                })
                .unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                ready,
                "start {round} of {starts}: not ready within 10 s; threads {threads:?}; stderr:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
    });
}

// A client that announces a request and then stalls is cut off after request_read_timeout_ms,
// and the shard memory reserved for its request is given back: with a 1 MiB request budget, a
// stalled 1 MiB announcement blocks other clients' requests only until the timeout. An idle
// connection is closed after connections_max_idle_ms.
#[test]
fn stalled_and_idle_connections_are_closed_and_release_the_request_budget() {
    use std::io::Write;
    within(Duration::from_secs(60), || {
        let (_dir, config) = common::config_file(
            "request_read_timeout_ms = 1000\nconnections_max_idle_ms = 2000\n\
             inflight_request_bytes_per_shard_max = 1048576\n",
        );
        let config = config.display().to_string();
        let broker = TestBroker::start_with(1, &["--config", config.as_str()]);

        // Announce 1 MiB (the whole budget), send 10 bytes of it, stall.
        let mut stalled = RawConn::connect(broker.socket_addr()).unwrap();
        stalled
            .stream
            .write_all(&(1_048_576i32).to_be_bytes())
            .unwrap();
        stalled.stream.write_all(&[0u8; 10]).unwrap();
        common::wait_until(
            Duration::from_secs(10),
            "the broker to reserve the stalled request's 1 MiB of budget",
            || {
                let (_, metrics) = broker.admin_get("/metrics").expect("GET /metrics");
                common::metric_sum(&metrics, "freshet_inflight_request_bytes") >= 1_000_000.0
            },
        );

        // Another client's request waits for the budget, then is served once the stalled
        // connection has been closed.
        let started = Instant::now();
        let mut healthy = RawConn::connect(broker.socket_addr()).unwrap();
        healthy.set_read_timeout(Duration::from_secs(10));
        healthy
            .request(9, &MetadataRequest::default().with_topics(None))
            .expect("metadata after the stalled client was cut off");
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(5),
            "budget not released: waited {waited:?}"
        );
        stalled.set_read_timeout(Duration::from_secs(5));
        assert!(
            matches!(stalled.read_frame(), Ok(None) | Err(_)),
            "stalled connection still open"
        );

        // An idle connection is closed by the broker after connections_max_idle_ms.
        let mut idle = RawConn::connect(broker.socket_addr()).unwrap();
        idle.set_read_timeout(Duration::from_secs(10));
        let started = Instant::now();
        assert!(matches!(idle.read_frame(), Ok(None) | Err(_)));
        let closed_after = started.elapsed();
        assert!(
            closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(8),
            "idle connection closed after {closed_after:?}"
        );
    });
}
