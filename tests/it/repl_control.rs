//! Issue 14, the controller's side of replication, against 3 real `freshet` processes
//! (`common::cluster::TestCluster`) and raw Kafka requests: replicated partitions in the
//! metadata (replicas, ISR, offline replicas), leader failover within the ISR with a new
//! leader epoch, ElectLeaders (API 43), the ISR change a partition leader sends the active
//! controller (AlterPartition, through the controller listener as a broker sends it),
//! controlled shutdown, and automatic leader balancing.
//!
//! These tests check metadata only: partitions do not copy data between brokers here.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{ClusterOptions, TestCluster};
use common::{within, RawConn};
use freshet::cluster::{ControllerRequest, ControllerResponse, ForwardedError};
use freshet::coordinator::metadata::MetadataCommand;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::metadata_response::MetadataResponsePartition;
use kafka_protocol::messages::{
    AlterConfigsRequest, BrokerId, CreateTopicsRequest, DescribeTopicPartitionsRequest,
    ElectLeadersRequest, ElectLeadersResponse, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Bound on each test (3 processes each; most finish in a few seconds).
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long metadata takes to reach every node, or a failover to happen (session timeout
/// of [`fast_fencing`] plus slack).
const WITHIN: Duration = Duration::from_secs(15);
const SESSION_TIMEOUT_MS: u64 = 3_000;

fn settings(extra: &str) -> ClusterOptions {
    ClusterOptions {
        settings: format!(
            "broker_session_timeout_ms = {SESSION_TIMEOUT_MS}\nbroker_heartbeat_interval_ms = 500\n{extra}"
        ),
        ..ClusterOptions::default()
    }
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// CreateTopics of `name` with `partitions` partitions and replication factor `rf` through
/// `node`: the topic's error code.
fn create(cluster: &TestCluster, node: usize, name: &str, partitions: i32, rf: i16) -> i16 {
    let mut conn = RawConn::connect(cluster.socket_addr(node)).expect("connect");
    conn.set_read_timeout(Duration::from_secs(20));
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)]);
    conn.request(7, &request).expect("CreateTopics").topics[0].error_code
}

/// The partitions of `topic` as `node`'s Metadata (v12) shows them, by index.
fn partitions(
    cluster: &TestCluster,
    node: usize,
    topic: &str,
) -> Result<Vec<MetadataResponsePartition>, String> {
    let mut conn = RawConn::connect(cluster.socket_addr(node)).map_err(|e| e.to_string())?;
    let request = MetadataRequest::default().with_topics(None);
    let m = conn
        .request(12, &request)
        .map_err(|e| format!("node {node}: Metadata: {e}"))?;
    let t = m
        .topics
        .into_iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| format!("node {node}: no {topic}"))?;
    let mut parts = t.partitions;
    parts.sort_by_key(|p| p.partition_index);
    Ok(parts)
}

/// (leader, leader epoch, replicas, ISR, offline replicas) of one partition.
type View = (i32, i32, Vec<i32>, Vec<i32>, Vec<i32>);

fn view(p: &MetadataResponsePartition) -> View {
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
    (
        p.leader_id.0,
        p.leader_epoch,
        ids(&p.replica_nodes),
        ids(&p.isr_nodes),
        ids(&p.offline_replicas),
    )
}

/// Waits until every node in `nodes` shows partition `p` of `topic` as `check` wants.
fn wait_partition(
    cluster: &TestCluster,
    nodes: &[usize],
    topic: &str,
    p: i32,
    what: &str,
    check: impl Fn(&View) -> bool,
) -> View {
    cluster.wait_until(WITHIN, what, || {
        let mut last = None;
        for &node in nodes {
            let parts = partitions(cluster, node, topic)?;
            let v = parts
                .get(p as usize)
                .map(view)
                .ok_or_else(|| format!("node {node}: no partition {p}"))?;
            if !check(&v) {
                return Err(format!("node {node}: {topic}-{p} is {v:?}"));
            }
            last = Some(v);
        }
        Ok(last.expect("some node"))
    })
}

/// ElectLeaders v2 for `topic`/`partitions` through `node`: (partition, error code) in
/// answer order, and the top-level error code.
fn elect(
    cluster: &TestCluster,
    node: usize,
    election_type: i8,
    topic: &str,
    partitions: &[i32],
) -> (Vec<(i32, i16)>, i16) {
    let mut conn = RawConn::connect(cluster.socket_addr(node)).expect("connect");
    conn.set_read_timeout(Duration::from_secs(20));
    let request = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions.to_vec())]));
    let answer: ElectLeadersResponse = conn.request(2, &request).expect("ElectLeaders");
    let results = answer
        .replica_election_results
        .iter()
        .flat_map(|r| {
            r.partition_result
                .iter()
                .map(|p| (p.partition_id, p.error_code))
        })
        .collect();
    (results, answer.error_code)
}

/// One call to the active controller on its controller listener, framed as a broker frames
/// it (docs/ARCHITECTURE.md, "Controller transport": `u32 BE length` + kind 2 + `u64 BE
/// correlation id` + JSON request; the answer is kind 3).
fn call_controller(
    cluster: &TestCluster,
    controller: usize,
    request: &ControllerRequest,
) -> ControllerResponse {
    let addr = cluster.controller_addr(controller);
    let mut stream = TcpStream::connect(&addr).expect("connect to the controller listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let json = serde_json::to_vec(request).unwrap();
    let mut frame = ((1 + 8 + json.len()) as u32).to_be_bytes().to_vec();
    frame.push(2);
    frame.extend_from_slice(&7u64.to_be_bytes());
    frame.extend_from_slice(&json);
    stream.write_all(&frame).unwrap();
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).expect("controller answer");
    assert_eq!(header[4], 3, "a response frame");
    let length = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; length - 1];
    stream.read_exact(&mut payload).unwrap();
    assert_eq!(payload[..8], 7u64.to_be_bytes());
    serde_json::from_slice(&payload[8..]).expect("a ControllerResponse")
}

/// The result of one AlterPartition sent to the active controller, as a partition leader
/// (repl-data's ISR change) sends it through `Shard::change_metadata`.
fn alter_partition(
    cluster: &TestCluster,
    controller: usize,
    command: MetadataCommand,
) -> Result<(), ForwardedError> {
    let request = ControllerRequest::Change {
        commands: vec![command],
        validate_only: false,
    };
    match call_controller(cluster, controller, &request) {
        ControllerResponse::Changed { mut results, .. } => results.remove(0),
        other => panic!("AlterPartition: unexpected answer {other:?}"),
    }
}

/// An rf=3 topic shows 3 replicas, all in sync, on every broker (raw Metadata v12 and
/// librdkafka's metadata). kill -9 of a partition's
/// leader: after fencing, the next in-sync replica in preference order leads at the next
/// leader epoch, the killed broker out of the ISR and offline. Restarted, it catches up and its
/// leader lets it back into the ISR (AlterPartition, checked against the partition epoch: a
/// stale one is refused); PREFERRED then moves the leadership back to it at leader epoch + 1.
#[test]
fn rf3_leader_kill9_fails_over_in_the_isr_and_preferred_election_moves_it_back() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, settings("auto_leader_rebalance_enable = false\n"));
        let controller = cluster.wait_controller(WITHIN, None);
        assert_eq!(create(&cluster, 0, "r3", 3, 3), 0, "CreateTopics rf=3");
        assert_eq!(
            create(&cluster, 0, "r4", 1, 4),
            ResponseError::InvalidReplicationFactor.code(),
            "more replicas than brokers"
        );
        let all = [0, 1, 2];
        let mut initial = Vec::new();
        for p in 0..3 {
            initial.push(wait_partition(
                &cluster,
                &all,
                "r3",
                p,
                "3 replicas, all in sync",
                |(leader, epoch, replicas, isr, offline)| {
                    let mut sorted = replicas.clone();
                    sorted.sort_unstable();
                    sorted == [0, 1, 2]
                        && isr == replicas
                        && *leader == replicas[0]
                        && *epoch == 0
                        && offline.is_empty()
                },
            ));
        }
        // librdkafka sees the same: 3 replicas and 3 in sync for every partition.
        let consumer: BaseConsumer = cluster
            .client_config(&[1])
            .set("group.id", "repl-control-metadata")
            .create()
            .expect("rdkafka consumer");
        let seen = consumer
            .fetch_metadata(Some("r3"), Duration::from_secs(10))
            .expect("rdkafka Metadata");
        let t = &seen.topics()[0];
        assert_eq!(t.partitions().len(), 3);
        for part in t.partitions() {
            let (mut replicas, mut isr) = (part.replicas().to_vec(), part.isr().to_vec());
            replicas.sort_unstable();
            isr.sort_unstable();
            assert_eq!((replicas, isr), (vec![0, 1, 2], vec![0, 1, 2]));
            assert_eq!(part.leader(), initial[part.id() as usize].0);
        }
        drop(consumer);
        // A partition led by a broker other than the active controller.
        let p = (0..3)
            .find(|&p| initial[p as usize].0 != controller as i32)
            .expect("3 partitions have 3 different leaders");
        let replicas = initial[p as usize].2.clone();
        let victim = replicas[0] as usize;
        let next = replicas[1];
        cluster.kill9(victim);
        let survivors: Vec<usize> = all.iter().copied().filter(|&n| n != victim).collect();
        let failed_over = wait_partition(
            &cluster,
            &survivors,
            "r3",
            p,
            "a new leader from the ISR",
            |(leader, epoch, _, isr, offline)| {
                *leader == next
                    && *epoch == 1
                    && !isr.contains(&(victim as i32))
                    && isr.len() == 2
                    && offline == &[victim as i32]
            },
        );
        eprintln!("r3-{p} after kill -9 of {victim}: {failed_over:?}");
        // DescribeTopicPartitions (KIP-966) shows the partition as Metadata does.
        let mut conn = RawConn::connect(cluster.socket_addr(survivors[0])).expect("connect");
        let request = DescribeTopicPartitionsRequest::default()
            .with_topics(vec![TopicRequest::default().with_name(topic_name("r3"))])
            .with_response_partition_limit(10);
        let described = conn.request(0, &request).expect("DescribeTopicPartitions");
        let q = described.topics[0]
            .partitions
            .iter()
            .find(|q| q.partition_index == p)
            .expect("the partition");
        let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
        assert_eq!(
            (
                q.leader_id.0,
                q.leader_epoch,
                ids(&q.replica_nodes),
                ids(&q.isr_nodes),
                ids(&q.offline_replicas)
            ),
            failed_over
        );

        cluster.restart(victim);
        let back = wait_partition(
            &cluster,
            &all,
            "r3",
            p,
            "the restarted broker online, back in the ISR once caught up",
            |(leader, epoch, _, isr, offline)| {
                *leader == next && *epoch == 1 && isr.len() == 3 && offline.is_empty()
            },
        );
        let (results, top) = elect(&cluster, victim, 0, "r3", &[99]);
        assert_eq!(top, 0);
        assert_eq!(
            results,
            vec![(99, ResponseError::UnknownTopicOrPartition.code())]
        );
        let other = (0..3).find(|&q| q != p).unwrap();
        let (results, _) = elect(&cluster, victim, 0, "r3", &[other]);
        assert_eq!(
            results,
            vec![(other, ResponseError::ElectionNotNeeded.code())]
        );
        let (results, _) = elect(&cluster, victim, 1, "r3", &[p]);
        assert_eq!(
            results,
            vec![(p, ResponseError::ElectionNotNeeded.code())],
            "UNCLEAN: the partition has a leader"
        );

        // The leader let the restarted replica back into the ISR (partition epoch 2: fencing
        // shrank the ISR once, the leader's AlterPartition grew it); a stale change is refused.
        let stale = MetadataCommand::AlterPartition {
            topic: "r3".into(),
            partition: p,
            leader_id: next,
            leader_epoch: 1,
            partition_epoch: 0,
            new_isr: back.3.clone(),
        };
        let controller = cluster.wait_controller(WITHIN, None);
        let stale = alter_partition(&cluster, controller, stale).unwrap_err();
        assert_eq!(
            stale.code,
            ResponseError::InvalidUpdateVersion.code(),
            "{stale:?}"
        );

        // `freshet topic elect-leaders` sends the PREFERRED election (ElectLeaders v2).
        let out = freshet_cli(
            &cluster,
            victim,
            &["topic", "elect-leaders", "r3", "-p", &p.to_string()],
        );
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("elected"), "{text}");
        wait_partition(
            &cluster,
            &all,
            "r3",
            p,
            "the preferred leader back at leader epoch 2",
            |(leader, epoch, replicas, isr, _)| {
                *leader == victim as i32 && *epoch == 2 && replicas[0] == *leader && isr.len() == 3
            },
        );
        // Every partition led by its preferred replica now: all not needed (exit 0); an
        // unknown partition fails (exit 1, its error named).
        let out = freshet_cli(&cluster, next as usize, &["topic", "elect-leaders", "r3"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .matches("not needed")
                .count(),
            3
        );
        let out = freshet_cli(
            &cluster,
            next as usize,
            &[
                "topic",
                "elect-leaders",
                "r3",
                "-p",
                "7",
                "--type",
                "unclean",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"));
    });
}

/// Runs the `freshet` CLI against `node`.
fn freshet_cli(cluster: &TestCluster, node: usize, args: &[&str]) -> std::process::Output {
    let out = Command::new(common::broker_bin())
        .args(args)
        .env("FRESHET_BROKERS", cluster.kafka_addr(node))
        .output()
        .expect("run freshet");
    eprintln!(
        "$ freshet {}\nexit {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// SIGTERM of a partition's leader: it stays up, answering, until the metadata it serves
/// shows another broker leading the partition (controlled shutdown), and only then stops.
/// Seen on one connection opened before the signal: the last Metadata answers it gets show
/// the new leader at leader epoch + 1.
#[test]
fn sigterm_hands_leadership_over_before_the_listener_closes() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(3, settings("auto_leader_rebalance_enable = false\n"));
        let controller = cluster.wait_controller(WITHIN, None);
        assert_eq!(create(&cluster, 0, "cs", 3, 3), 0);
        let all = [0, 1, 2];
        let mut leaders = Vec::new();
        for p in 0..3 {
            leaders.push(wait_partition(&cluster, &all, "cs", p, "in sync", |v| {
                v.3.len() == 3 && v.0 == v.2[0]
            }));
        }
        let p = (0..3)
            .find(|&p| leaders[p as usize].0 != controller as i32)
            .expect("a partition led by a broker that is not the controller");
        let victim = leaders[p as usize].0 as usize;
        let mut conn = RawConn::connect(cluster.socket_addr(victim)).expect("connect");
        let status = Command::new("kill")
            .args(["-TERM", &cluster.pid(victim).to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let signalled = Instant::now();
        let mut answers = Vec::new();
        let request = MetadataRequest::default().with_topics(None);
        while signalled.elapsed() < Duration::from_secs(20) {
            let Ok(m) = conn.request(12, &request) else {
                break;
            };
            let t = m
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "cs"))
                .map(|t| {
                    let mut parts = t.partitions.clone();
                    parts.sort_by_key(|q| q.partition_index);
                    view(&parts[p as usize])
                });
            answers.push((signalled.elapsed(), t));
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = cluster.stop(victim);
        assert!(status.success(), "exit status {status:?}");
        let last = answers.last().cloned();
        let moved = answers.iter().find(|(_, v)| {
            v.as_ref()
                .is_some_and(|v| v.0 != victim as i32 && v.0 >= 0 && v.1 == 1)
        });
        assert!(
            moved.is_some(),
            "the broker stopped answering before it showed cs-{p} led elsewhere: {} answers, \
             the last {last:?}\n{}",
            answers.len(),
            cluster.logs_tail()
        );
        eprintln!(
            "cs-{p} led elsewhere {:?} after SIGTERM, as the stopping broker said ({} answers)",
            moved.unwrap().0,
            answers.len()
        );
        // And the others agree, long before a session timeout.
        let survivors: Vec<usize> = all.iter().copied().filter(|&n| n != victim).collect();
        wait_partition(&cluster, &survivors, "cs", p, "a new leader", |v| {
            v.0 != victim as i32 && v.0 >= 0 && v.1 == 1 && !v.3.contains(&(victim as i32))
        });
    });
}

/// Automatic leader balancing: with a check every second, a broker that comes back from
/// kill -9 and is let back into the ISR of the partitions it prefers gets their leadership
/// back without any request.
#[test]
fn automatic_leader_balancing_moves_leadership_back_to_preferred_replicas() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(
            3,
            settings(
                "leader_imbalance_check_interval_seconds = 1\nleader_imbalance_per_broker_percentage = 0\n",
            ),
        );
        let controller = cluster.wait_controller(WITHIN, None);
        assert_eq!(create(&cluster, 0, "ab", 3, 3), 0);
        let all = [0, 1, 2];
        let mut initial = Vec::new();
        for p in 0..3 {
            initial.push(wait_partition(&cluster, &all, "ab", p, "in sync", |v| {
                v.3.len() == 3 && v.0 == v.2[0]
            }));
        }
        let p = (0..3)
            .find(|&p| initial[p as usize].0 != controller as i32)
            .expect("a partition led by a broker that is not the controller");
        let victim = initial[p as usize].0;
        cluster.kill9(victim as usize);
        let survivors: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&n| n != victim as usize)
            .collect();
        let moved = wait_partition(&cluster, &survivors, "ab", p, "failover", |v| {
            v.0 >= 0 && v.0 != victim && v.1 == 1
        });
        assert!(!moved.3.contains(&victim), "out of the ISR: {moved:?}");
        cluster.restart(victim as usize);
        // Its leader lets it back into the ISR once it caught up (repl-data's AlterPartition);
        // then the balancer moves the leadership back.
        wait_partition(
            &cluster,
            &all,
            "ab",
            p,
            "the preferred leader back by automatic balancing",
            |v| v.0 == victim && v.1 == 2,
        );
    });
}

/// Unclean election honours the topic config, also when it is turned on after the partition
/// went leaderless: an rf=2 partition whose ISR is its leader alone has no leader once that
/// broker is killed (the other replica is out of sync); AlterConfigs
/// `unclean.leader.election.enable=true` on the topic, and within the controller's
/// `unclean_leader_election_interval_ms` the live replica leads, its ISR reset to it.
#[test]
fn unclean_election_follows_the_topic_config_turned_on_later() {
    within(TEST_LIMIT, || {
        let mut cluster = TestCluster::start(
            3,
            settings(
                "auto_leader_rebalance_enable = false\nunclean_leader_election_interval_ms = 300\n\
                 replica_lag_time_max_ms = 600\n",
            ),
        );
        let controller = cluster.wait_controller(WITHIN, None);
        let others: Vec<i32> = (0..3).filter(|&n| n != controller as i32).collect();
        let (x, y) = (others[0], others[1]);
        let mut conn = RawConn::connect(cluster.socket_addr(controller)).expect("connect");
        conn.set_read_timeout(Duration::from_secs(20));
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name("uc"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(vec![BrokerId(x), BrokerId(y)])])]);
        assert_eq!(
            conn.request(7, &request).expect("CreateTopics").topics[0].error_code,
            0
        );
        let all = [0, 1, 2];
        wait_partition(&cluster, &all, "uc", 0, "placed as asked", |v| {
            v.0 == x && v.2 == [x, y] && v.3 == [x, y]
        });
        // x's ISR shrinks to itself: y falls behind (paused past replica_lag_time_max_ms,
        // within the session timeout) and x's AlterPartition takes it out.
        // SAFETY: kill(2) on a running child of this test.
        let y_pid = cluster.pid(y as usize) as libc::pid_t;
        let pause = |sig| unsafe { libc::kill(y_pid, sig) };
        assert_eq!(pause(libc::SIGSTOP), 0);
        let awake = [controller, x as usize];
        wait_partition(&cluster, &awake, "uc", 0, "y out of the ISR", |v| {
            v.3 == [x]
        });
        cluster.kill9(x as usize);
        assert_eq!(pause(libc::SIGCONT), 0);
        let survivors = [controller, y as usize];
        wait_partition(
            &cluster,
            &survivors,
            "uc",
            0,
            "leaderless, not unclean",
            |v| v.0 == -1 && v.3 == [x],
        );
        // Still leaderless after several election intervals: the topic does not allow it.
        std::thread::sleep(Duration::from_millis(1_000));
        let still = partitions(&cluster, controller, "uc").expect("Metadata");
        assert_eq!(view(&still[0]).0, -1, "no unclean election while disabled");
        let alter =
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("uc"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("unclean.leader.election.enable"))
                    .with_value(Some(StrBytes::from_static_str("true")))])]);
        let answer = conn.request(2, &alter).expect("AlterConfigs");
        assert_eq!(answer.responses[0].error_code, 0);
        wait_partition(&cluster, &survivors, "uc", 0, "an unclean leader", |v| {
            v.0 == y && v.3 == [y] && v.1 == 2
        });
    });
}

/// ElectLeaders on a single node, as Kafka answers: a partition led by its only replica needs
/// no election (ELECTION_NOT_NEEDED), at v0 (preferred) as at v2; asking for every partition
/// lists none of those; an unknown election type is INVALID_REQUEST for the request and every
/// named partition; a request naming more than 10,000 partitions is refused whole, and the
/// broker keeps answering.
#[test]
fn elect_leaders_on_a_single_node_answers_as_kafka_and_bounds_the_request() {
    within(TEST_LIMIT, || {
        let broker = common::TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).expect("connect");
        let created = conn
            .request(
                7,
                &CreateTopicsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(topic_name("one"))
                        .with_num_partitions(2)
                        .with_replication_factor(1)]),
            )
            .expect("CreateTopics");
        assert_eq!(created.topics[0].error_code, 0);
        let named = |election_type: i8, partitions: Vec<i32>| {
            ElectLeadersRequest::default()
                .with_election_type(election_type)
                .with_timeout_ms(10_000)
                .with_topic_partitions(Some(vec![TopicPartitions::default()
                    .with_topic(topic_name("one"))
                    .with_partitions(partitions)]))
        };
        let codes = |r: &ElectLeadersResponse| -> Vec<(i32, i16)> {
            r.replica_election_results
                .iter()
                .flat_map(|t| {
                    t.partition_result
                        .iter()
                        .map(|p| (p.partition_id, p.error_code))
                })
                .collect()
        };
        let not_needed = ResponseError::ElectionNotNeeded.code();
        for version in [0, 1, 2] {
            let r = conn
                .request(version, &named(0, vec![0, 1]))
                .expect("ElectLeaders");
            assert_eq!(
                codes(&r),
                vec![(0, not_needed), (1, not_needed)],
                "v{version}"
            );
        }
        let r = conn
            .request(2, &named(1, vec![1]))
            .expect("ElectLeaders UNCLEAN");
        assert_eq!(codes(&r), vec![(1, not_needed)]);
        let all = conn
            .request(
                2,
                &ElectLeadersRequest::default()
                    .with_election_type(0)
                    .with_topic_partitions(None),
            )
            .expect("ElectLeaders of every partition");
        assert_eq!((all.error_code, codes(&all)), (0, vec![]));
        let invalid = ResponseError::InvalidRequest.code();
        let r = conn.request(2, &named(5, vec![0])).expect("bad type");
        assert_eq!((r.error_code, codes(&r)), (invalid, vec![(0, invalid)]));
        let r = conn
            .request(2, &named(0, (0..10_001).collect()))
            .expect("too many partitions");
        assert_eq!(r.error_code, invalid);
        assert_eq!(codes(&r).len(), 10_001);
        assert!(codes(&r).iter().all(|&(_, code)| code == invalid));
        let r = conn
            .request(2, &named(0, vec![0]))
            .expect("still answering");
        assert_eq!(codes(&r), vec![(0, not_needed)]);
    });
}
