//! Issue 13's multi-process tests: 3 (and 5) real `freshet` processes on 127.0.0.1 under one
//! Raft metadata quorum (`common::cluster::TestCluster`), driven by librdkafka (rdkafka crate)
//! and raw protocol requests where the test needs to know exactly which node is asked.
//!
//! What they show: partitions spread over every broker with balanced leaders; produce and
//! consume work whichever broker a client bootstraps from; kill -9 of the active controller
//! elects another within seconds and CreateTopics works again; a killed broker is fenced and
//! unfenced when it returns; with a majority of voters down metadata changes are refused
//! (no split brain) while Metadata keeps answering; the quorum log survives kill -9 of every
//! node; a 5-voter quorum survives two losses and refuses changes at three; the CLI finds the
//! quorum's leader from any broker.
//!
//! The measurement of the closing note (20 failovers, fencing, CreateTopics latency) takes
//! minutes and is `#[ignore]`d: `cargo test --test it -- cluster::measure --ignored`.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{broker_bin, runtime, within, RawConn};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    describe_quorum_request, CreateTopicsRequest, DescribeQuorumRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

/// Bound on each 3-node test.
const TEST_LIMIT: Duration = Duration::from_secs(240);
/// Bound on the 5-node test.
const TEST_LIMIT_5_NODES: Duration = Duration::from_secs(300);
/// "Within seconds": from the controller's kill -9 to a new controller taking CreateTopics.
const FAILOVER_WITHIN: Duration = Duration::from_secs(15);
/// Session timeout the fencing test runs with (Kafka's `broker.session.timeout.ms`).
const SESSION_TIMEOUT_MS: u64 = 3_000;
/// From a broker's kill -9 to every survivor reporting it fenced (session timeout + slack).
const FENCED_WITHIN: Duration = Duration::from_secs(15);
/// How long topics take to appear on every node once created.
const PROPAGATION_WITHIN: Duration = Duration::from_secs(15);
/// CreateTopics' own timeout in the raw requests.
const CREATE_TIMEOUT_MS: i32 = 5_000;
/// Read timeout of raw connections that carry CreateTopics (longer than the request's).
const CREATE_READ_TIMEOUT: Duration = Duration::from_secs(20);

fn fast_fencing() -> ClusterOptions {
    ClusterOptions {
        settings: format!(
            "broker_session_timeout_ms = {SESSION_TIMEOUT_MS}\nbroker_heartbeat_interval_ms = 500\n"
        ),
        ..ClusterOptions::default()
    }
}

/// CreateTopics of `name` (`partitions`, replication factor 1) sent to `node`: the topic's
/// error code, or the I/O error if the node did not answer.
fn create_topic_on(
    cluster: &TestCluster,
    node: usize,
    name: &str,
    partitions: i32,
) -> Result<i16, String> {
    let mut conn = RawConn::connect(cluster.socket_addr(node))
        .map_err(|e| format!("node {node}: connect: {e}"))?;
    conn.set_read_timeout(CREATE_READ_TIMEOUT);
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(CREATE_TIMEOUT_MS)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let answer = conn
        .request(7, &request)
        .map_err(|e| format!("node {node}: CreateTopics: {e}"))?;
    Ok(answer.topics[0].error_code)
}

/// Creates `name` through `node`, retrying retriable refusals until `within` has passed.
fn create_topic_retrying(
    cluster: &TestCluster,
    node: usize,
    name: &str,
    partitions: i32,
    within: Duration,
) {
    cluster.wait_until(
        within,
        &format!("node {node} to create {name}"),
        || match create_topic_on(cluster, node, name, partitions)? {
            0 => Ok(()),
            code => Err(format!("node {node}: CreateTopics {name}: error {code}")),
        },
    )
}

/// Waits until `node`'s Metadata shows `topic` with `partitions` partitions, each with a
/// leader; returns partition -> leader.
fn leaders_seen_by(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
    partitions: usize,
) -> BTreeMap<i32, i32> {
    cluster.wait_until(
        PROPAGATION_WITHIN,
        &format!("node {node} to show {topic} with {partitions} led partitions"),
        || {
            let m = cluster
                .metadata(node)
                .map_err(|e| format!("node {node}: Metadata: {e}"))?;
            let t = m
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
                .ok_or_else(|| format!("node {node}: no {topic}"))?;
            let leaders: BTreeMap<i32, i32> = t
                .partitions
                .iter()
                .filter(|p| p.error_code == 0 && p.leader_id.0 >= 0)
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            if t.error_code != 0 || leaders.len() != partitions {
                return Err(format!(
                    "node {node}: {topic} error {}, leaders {leaders:?}",
                    t.error_code
                ));
            }
            Ok(leaders)
        },
    )
}

/// (name, topic id, partition count) of every non-internal topic `node` lists.
fn topics_seen_by(cluster: &TestCluster, node: usize) -> BTreeSet<(String, String, usize)> {
    let m = cluster
        .metadata(node)
        .unwrap_or_else(|e| cluster.fail(&format!("node {node}: Metadata: {e}")));
    m.topics
        .iter()
        .filter(|t| !t.is_internal && t.error_code == 0)
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.topic_id.to_string(),
                t.partitions.len(),
            )
        })
        .collect()
}

/// The harness itself: every node gets its own Kafka, controller and admin ports and data
/// directory, the voter list names every controller port, and kill -9 / restart / SIGTERM
/// act on one node, which comes back on the same port with the same data directory.
#[test]
fn harness_gives_every_node_its_ports_dir_and_lifecycle() {
    within(TEST_LIMIT, || {
        let options = ClusterOptions {
            wait_for_cluster: false,
            ..fast_fencing()
        };
        let mut cluster = TestCluster::start(3, options);
        let mut ports = BTreeSet::new();
        for node in 0..3 {
            for addr in [
                cluster.kafka_addr(node),
                cluster.controller_addr(node),
                cluster.admin_addr(node),
            ] {
                assert!(ports.insert(addr.clone()), "{addr} given twice");
            }
            let voter = format!("{node}@{}", cluster.controller_addr(node));
            assert!(cluster.voters().split(',').any(|v| v == voter), "{voter}");
            cluster
                .metadata(node)
                .unwrap_or_else(|e| cluster.fail(&format!("node {node}: Metadata: {e}")));
            assert!(cluster.data_dir(node).is_dir(), "node {node} data dir");
        }
        assert_eq!(cluster.bootstrap().split(',').count(), 3);

        let pid = cluster.pid(1);
        cluster.kill9(1);
        cluster.wait_port_closed(1);
        assert_eq!(cluster.running(), [0, 2]);
        cluster.restart(1);
        assert_ne!(cluster.pid(1), pid, "a new process");
        cluster
            .metadata(1)
            .unwrap_or_else(|e| cluster.fail(&format!("node 1 after restart: {e}")));
        let status = cluster.stop(2);
        assert!(status.success(), "node 2 after SIGTERM: {status}");
        assert!(!cluster.is_running(2));
        assert!(cluster.log(1).contains("ready"), "{}", cluster.log_tail(1));
    });
}

/// A 12-partition topic is spread over all 3 brokers, 4 leaders each, and every node tells
/// the same leaders.
#[test]
fn twelve_partitions_spread_over_three_brokers_with_balanced_leaders() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, ClusterOptions::default());
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = cluster
            .client_config(&[0, 1, 2])
            .create()
            .expect("admin client");
        let topic =
            rdkafka::admin::NewTopic::new("spread", 12, rdkafka::admin::TopicReplication::Fixed(1));
        let options = rdkafka::admin::AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(15)));
        let created = runtime()
            .block_on(admin.create_topics([&topic], &options))
            .expect("CreateTopics");
        assert!(created[0].is_ok(), "{created:?}");
        let leaders = leaders_seen_by(&cluster, 0, "spread", 12);
        let mut per_broker: BTreeMap<i32, usize> = BTreeMap::new();
        for leader in leaders.values() {
            *per_broker.entry(*leader).or_default() += 1;
        }
        assert_eq!(
            per_broker,
            BTreeMap::from([(0, 4), (1, 4), (2, 4)]),
            "leaders {leaders:?}"
        );
        for node in 1..3 {
            assert_eq!(leaders_seen_by(&cluster, node, "spread", 12), leaders);
        }
    });
}

/// Records produced with each broker alone as bootstrap (acks=all, to every partition) are
/// all read back by a consumer bootstrapping from that same broker.
#[test]
fn produce_and_consume_through_every_broker_as_bootstrap() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, ClusterOptions::default());
        create_topic_retrying(&cluster, 1, "every-bootstrap", 12, PROPAGATION_WITHIN);
        for node in 0..3 {
            leaders_seen_by(&cluster, node, "every-bootstrap", 12);
        }
        let mut sent: BTreeSet<String> = BTreeSet::new();
        let rt = runtime();
        for bootstrap in 0..3 {
            let producer: FutureProducer = cluster
                .client_config(&[bootstrap])
                .set("acks", "all")
                .set("message.timeout.ms", "20000")
                .create()
                .expect("producer");
            for i in 0..48 {
                let value = format!("via-{bootstrap}-{i}");
                let record = FutureRecord::to("every-bootstrap")
                    .partition(i % 12)
                    .key("k")
                    .payload(&value);
                rt.block_on(producer.send(record, Duration::from_secs(20)))
                    .unwrap_or_else(|(e, _)| {
                        cluster.fail(&format!("produce {value} via node {bootstrap}: {e}"))
                    });
                sent.insert(value);
            }
            let consumer = common::assign_only_consumer(
                cluster.client_config(&[bootstrap]),
                &format!("reader-{bootstrap}"),
            );
            let mut tpl = TopicPartitionList::new();
            for p in 0..12 {
                tpl.add_partition_offset("every-bootstrap", p, Offset::Beginning)
                    .expect("tpl");
            }
            consumer.assign(&tpl).expect("assign");
            let mut read: BTreeSet<String> = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while read.len() < sent.len() && Instant::now() < deadline {
                if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                    let m = m.unwrap_or_else(|e| {
                        cluster.fail(&format!("consume via node {bootstrap}: {e}"))
                    });
                    read.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into());
                }
            }
            if read != sent {
                cluster.fail(&format!(
                    "via node {bootstrap}: read {} of {} records; missing {:?}",
                    read.len(),
                    sent.len(),
                    sent.difference(&read).take(5).collect::<Vec<_>>()
                ));
            }
        }
    });
}

/// kill -9 of the active controller: the two others elect one of themselves and CreateTopics
/// sent to either works again within seconds.
#[test]
fn kill9_of_the_active_controller_elects_another_and_create_topics_works_again() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, ClusterOptions::default());
        create_topic_retrying(&cluster, 0, "before-failover", 3, PROPAGATION_WITHIN);
        let old = cluster.wait_controller(PROPAGATION_WITHIN, None);
        cluster.kill9(old);
        let killed_at = Instant::now();
        let new = cluster.wait_controller(FAILOVER_WITHIN, Some(old));
        let elected_after = killed_at.elapsed();
        let survivors = cluster.running();
        let asked = *survivors.iter().find(|&&n| n != new).expect("a follower");
        create_topic_retrying(
            &cluster,
            asked,
            "after-failover",
            3,
            FAILOVER_WITHIN.saturating_sub(killed_at.elapsed()),
        );
        eprintln!(
            "controller {old} killed: node {new} elected after {elected_after:?}, \
             CreateTopics through node {asked} worked after {:?}",
            killed_at.elapsed()
        );
        // Partitions the killed node led go offline once it is fenced (one replica in this
        // issue), so only the topics themselves are checked.
        for node in survivors {
            cluster.wait_until(
                PROPAGATION_WITHIN,
                &format!("node {node} to list both topics"),
                || {
                    let names: BTreeSet<String> = topics_seen_by(&cluster, node)
                        .into_iter()
                        .map(|(name, _, _)| name)
                        .collect();
                    if names.contains("before-failover") && names.contains("after-failover") {
                        Ok(())
                    } else {
                        Err(format!("node {node}: topics {names:?}"))
                    }
                },
            );
        }
    });
}

/// SIGSTOP of the active controller (its sockets stay open, unlike kill -9): the two others
/// elect one of themselves within seconds, while it is still paused.
#[test]
fn a_paused_controller_is_replaced_while_it_is_paused() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, ClusterOptions::default());
        create_topic_retrying(&cluster, 0, "before-pause", 3, PROPAGATION_WITHIN);
        let old = cluster.wait_controller(PROPAGATION_WITHIN, None);
        cluster.pause(old);
        let paused_at = Instant::now();
        let others: Vec<usize> = (0..3).filter(|&n| n != old).collect();
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cluster.wait_until(FAILOVER_WITHIN, "the others to elect a controller", || {
                let seen: Vec<Option<usize>> = others
                    .iter()
                    .map(|&n| cluster.controller_seen_by(n).ok().flatten())
                    .collect();
                match seen[..] {
                    [Some(a), Some(b)] if a == b && a != old => Ok(()),
                    _ => Err(format!("nodes {others:?} name {seen:?} (paused: {old})")),
                }
            })
        }));
        let elected_after = paused_at.elapsed();
        cluster.resume(old);
        if let Err(e) = waited {
            std::panic::resume_unwind(e);
        }
        eprintln!("controller {old} paused: another elected after {elected_after:?}");
    });
}

/// A broker killed with -9 is fenced once its session times out (Metadata stops listing it,
/// DescribeCluster says fenced) and unfenced when it comes back.
#[test]
fn killed_broker_is_fenced_and_unfenced_on_return() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, fast_fencing());
        let controller = cluster.wait_controller(PROPAGATION_WITHIN, None);
        let victim = (0..3).find(|&n| n != controller).expect("a non-controller");
        cluster.kill9(victim);
        let killed_at = Instant::now();
        let survivors = cluster.running();
        cluster.wait_until(FENCED_WITHIN, &format!("node {victim} to be fenced"), || {
            for &node in &survivors {
                let listed = cluster
                    .metadata(node)
                    .map_err(|e| format!("node {node}: Metadata: {e}"))?
                    .brokers
                    .iter()
                    .any(|b| b.node_id.0 == victim as i32);
                let fencing = cluster
                    .brokers_with_fencing(node)
                    .map_err(|e| format!("node {node}: DescribeCluster: {e}"))?;
                if listed || !fencing.contains(&(victim as i32, true)) {
                    return Err(format!(
                        "node {node}: Metadata lists {victim}: {listed}; DescribeCluster {fencing:?}"
                    ));
                }
            }
            Ok(())
        });
        eprintln!(
            "node {victim} fenced {:?} after kill -9",
            killed_at.elapsed()
        );
        cluster.restart(victim);
        cluster.wait_until(
            FENCED_WITHIN,
            &format!("node {victim} to be unfenced"),
            || {
                for node in 0..3 {
                    let fencing = cluster
                        .brokers_with_fencing(node)
                        .map_err(|e| format!("node {node}: DescribeCluster: {e}"))?;
                    if !fencing.contains(&(victim as i32, false)) {
                        return Err(format!("node {node}: DescribeCluster {fencing:?}"));
                    }
                }
                Ok(())
            },
        );
        cluster.wait_ready();
    });
}

/// With 2 of 3 voters down, the survivor refuses every CreateTopics (an error answer, never
/// a success: no split brain) for longer than an election takes, and still answers Metadata
/// with the topics it knows. Once the others return, changes work again.
#[test]
fn two_of_three_voters_down_refuse_changes_but_metadata_answers() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, ClusterOptions::default());
        create_topic_retrying(&cluster, 0, "kept", 2, PROPAGATION_WITHIN);
        let lone = cluster.wait_controller(PROPAGATION_WITHIN, None);
        leaders_seen_by(&cluster, lone, "kept", 2);
        for node in (0..3).filter(|&n| n != lone) {
            cluster.kill9(node);
        }
        let refused_since = Instant::now();
        let mut attempt = 0;
        // Longer than the leader needs to notice it lost the quorum (check_quorum) and than
        // any election: no change is ever accepted.
        while refused_since.elapsed() < Duration::from_secs(8) {
            attempt += 1;
            let name = format!("refused-{attempt}");
            match create_topic_on(&cluster, lone, &name, 1) {
                Ok(0) => cluster.fail(&format!(
                    "node {lone} alone accepted CreateTopics {name} (split brain)"
                )),
                Ok(code) => eprintln!("CreateTopics {name} refused with {code}"),
                Err(e) => cluster.fail(&format!("node {lone} did not answer: {e}")),
            }
            let topics = topics_seen_by(&cluster, lone);
            assert!(
                topics
                    .iter()
                    .any(|(name, _, parts)| name == "kept" && *parts == 2),
                "node {lone} lost topic kept: {topics:?}"
            );
        }
        assert!(attempt >= 2, "only {attempt} attempts");
        cluster.start_stopped();
        cluster.wait_ready();
        create_topic_retrying(&cluster, lone, "after-recovery", 1, FAILOVER_WITHIN);
    });
}

/// kill -9 of all 3 nodes at once, then restart: the same topics (names, ids, partition
/// counts) on every node, each partition led.
#[test]
fn kill9_of_every_node_keeps_the_topics() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, ClusterOptions::default());
        for (node, name, partitions) in [(0, "a", 1), (1, "b", 4), (2, "c", 7)] {
            create_topic_retrying(&cluster, node, name, partitions, PROPAGATION_WITHIN);
        }
        for node in 0..3 {
            leaders_seen_by(&cluster, node, "c", 7);
        }
        let before = topics_seen_by(&cluster, 0);
        assert_eq!(before.len(), 3, "{before:?}");
        cluster.kill9_all();
        cluster.start_stopped();
        cluster.wait_ready();
        for node in 0..3 {
            for (name, _, partitions) in &before {
                leaders_seen_by(&cluster, node, name, *partitions);
            }
            assert_eq!(topics_seen_by(&cluster, node), before, "node {node}");
        }
    });
}

/// A 5-voter quorum: losing the controller and one more leaves 3 of 5, which elect a
/// controller and take changes; losing a third refuses changes while Metadata answers.
#[test]
fn five_voters_survive_two_losses_and_refuse_changes_at_three() {
    within(TEST_LIMIT_5_NODES, || {
        let mut cluster = TestCluster::start(5, ClusterOptions::default());
        create_topic_retrying(&cluster, 4, "five", 5, PROPAGATION_WITHIN);
        let first = cluster.wait_controller(PROPAGATION_WITHIN, None);
        let other = (0..5).find(|&n| n != first).expect("another node");
        cluster.kill9(first);
        cluster.kill9(other);
        let second = cluster.wait_controller(FAILOVER_WITHIN, Some(first));
        let asked = *cluster
            .running()
            .iter()
            .find(|&&n| n != second)
            .expect("a follower");
        create_topic_retrying(&cluster, asked, "with-three", 1, FAILOVER_WITHIN);
        cluster.kill9(second);
        let survivors = cluster.running();
        assert_eq!(survivors.len(), 2);
        let since = Instant::now();
        while since.elapsed() < Duration::from_secs(8) {
            for &node in &survivors {
                match create_topic_on(&cluster, node, "with-two", 1) {
                    Ok(0) => cluster.fail(&format!(
                        "node {node} accepted a change with 2 of 5 voters (split brain)"
                    )),
                    Ok(_) => {}
                    Err(e) => cluster.fail(&format!("node {node} did not answer: {e}")),
                }
                let topics = topics_seen_by(&cluster, node);
                assert!(
                    topics.iter().any(|(n, _, _)| n == "with-three"),
                    "node {node}: {topics:?}"
                );
            }
        }
        cluster.start_stopped();
        cluster.wait_ready();
        create_topic_retrying(&cluster, first, "with-five", 1, FAILOVER_WITHIN);
    });
}

/// DescribeQuorum on a follower is NOT_LEADER_OR_FOLLOWER (or forwarded); `freshet cluster quorum` and
/// `freshet cluster info` find the leader from any broker and show 3 voters, 3 unfenced
/// brokers.
#[test]
fn cluster_cli_finds_the_quorum_leader_from_any_broker() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(3, ClusterOptions::default());
        let leader = cluster.wait_controller(PROPAGATION_WITHIN, None);
        let follower = (0..3).find(|&n| n != leader).expect("a follower");
        let request = DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![
                    describe_quorum_request::PartitionData::default().with_partition_index(0)
                ]),
        ]);
        let mut conn = RawConn::connect(cluster.socket_addr(follower)).expect("connect");
        let answer = conn.request(2, &request).expect("DescribeQuorum");
        let p = &answer.topics[0].partitions[0];
        // KafkaRaftClient's answer on a non-leader; Kafka's brokers forward to the controller
        // instead, which answers as the leader: either is Kafka's behaviour.
        assert!(
            p.error_code == 6 || (p.error_code == 0 && p.leader_id.0 == leader as i32),
            "{answer:?}"
        );
        for bootstrap in 0..3 {
            let json = |args: &[&str]| -> Value {
                let output = Command::new(broker_bin())
                    .args(args)
                    .args(["--format", "json", "-b", &cluster.kafka_addr(bootstrap)])
                    .output()
                    .expect("run freshet");
                assert_eq!(
                    output.status.code(),
                    Some(0),
                    "freshet {args:?} via node {bootstrap}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                serde_json::from_slice(&output.stdout).expect("JSON")
            };
            let quorum = json(&["cluster", "quorum"]);
            assert_eq!(quorum["leader_id"], leader as i64, "{quorum}");
            assert_eq!(quorum["voters"].as_array().map(Vec::len), Some(3));
            let info = json(&["cluster", "info"]);
            assert_eq!(info["controller_id"], leader as i64);
            let brokers = info["brokers"].as_array().expect("brokers");
            assert_eq!(brokers.len(), 3, "{info}");
            assert!(brokers.iter().all(|b| b["fenced"] == false), "{info}");
            assert_eq!(info["quorum"]["leader_id"], leader as i64);
        }
    });
}

/// The closing-note figures, printed (not asserted beyond the bounds): time
/// from the controller's kill -9 to a new controller taking CreateTopics (p50/p99 of 20
/// trials), time from a broker's kill -9 to its fencing (default session timeout), and
/// CreateTopics latency on 1 node and on 3 (sent to the controller and to a follower).
/// Run: `cargo test --release --test it -- --ignored cluster::measure --nocapture`.
#[test]
#[ignore = "a measurement (minutes): run with --ignored"]
fn measure_failover_fencing_and_create_topics_latency() {
    within(Duration::from_secs(1200), || {
        let mut cluster = TestCluster::start(3, ClusterOptions::default());
        let mut failovers = Vec::new();
        for trial in 0..20 {
            let old = cluster.wait_controller(PROPAGATION_WITHIN, None);
            cluster.kill9(old);
            let killed_at = Instant::now();
            let new = cluster.wait_controller(FAILOVER_WITHIN, Some(old));
            create_topic_retrying(
                &cluster,
                new,
                &format!("failover-{trial}"),
                1,
                FAILOVER_WITHIN,
            );
            failovers.push(killed_at.elapsed());
            cluster.restart(old);
            cluster.wait_ready();
        }
        let controller = cluster.wait_controller(PROPAGATION_WITHIN, None);
        let victim = (0..3).find(|&n| n != controller).expect("a non-controller");
        cluster.kill9(victim);
        let killed_at = Instant::now();
        cluster.wait_until(Duration::from_secs(30), "the victim fenced", || {
            let fencing = cluster
                .brokers_with_fencing(controller)
                .map_err(|e| e.to_string())?;
            if fencing.contains(&(victim as i32, true)) {
                Ok(())
            } else {
                Err(format!("node {controller}: {fencing:?}"))
            }
        });
        let fenced_after = killed_at.elapsed();
        cluster.restart(victim);
        cluster.wait_ready();
        let follower = (0..3).find(|&n| n != controller).expect("a follower");
        let on_controller = create_latencies("via-controller", |name| {
            create_topic_on(&cluster, controller, name, 1)
        });
        let on_follower = create_latencies("via-follower", |name| {
            create_topic_on(&cluster, follower, name, 1)
        });
        drop(cluster);
        let single = common::TestBroker::start(1);
        let on_single = create_latencies("single", |name| {
            let mut conn = RawConn::connect(single.socket_addr()).map_err(|e| e.to_string())?;
            Ok(common::create_topic_raw(&mut conn, name, 1, &[]))
        });
        eprintln!(
            "controller failover (kill -9 to CreateTopics ok), 20 trials: {}\n\
             broker kill -9 to fenced (default session timeout): {fenced_after:?}\n\
             CreateTopics, 1 node: {}\n\
             CreateTopics, 3 nodes, to the controller: {}\n\
             CreateTopics, 3 nodes, to a follower: {}",
            percentiles(&mut failovers),
            percentiles(&mut on_single.clone()),
            percentiles(&mut on_controller.clone()),
            percentiles(&mut on_follower.clone()),
        );
    });
}

/// Latencies of 50 CreateTopics of new topics `{prefix}-{i}` (each must succeed).
fn create_latencies(
    prefix: &str,
    mut create: impl FnMut(&str) -> Result<i16, String>,
) -> Vec<Duration> {
    (0..50)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let started = Instant::now();
            assert_eq!(create(&name), Ok(0), "CreateTopics {name}");
            started.elapsed()
        })
        .collect()
}

/// "p50 X, p99 Y, max Z" of `samples`.
fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:?}, p99 {:?}, max {:?} ({} samples)",
        at(0.5),
        at(0.99),
        samples[samples.len() - 1],
        samples.len()
    )
}
