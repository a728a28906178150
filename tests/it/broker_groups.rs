//! Consumer-group scenarios with real librdkafka consumers (the `rdkafka` crate; its bundled
//! librdkafka is 2.12, where the KIP-848 "consumer" group protocol is generally available).
//!
//! Each scenario starts its own real `freshet` broker. The consumers of one scenario are polled
//! round-robin from one thread (librdkafka heartbeats from its own threads), so the scenario
//! decides exactly when each member joins, commits and leaves.

use crate::common;
use common::runtime;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{RawConn, TestBroker};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, GroupId, ListGroupsRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Declares `#[test] fn name` running `scenario` within `secs` seconds.
macro_rules! scenarios {
    ($($name:ident => $scenario:ident, $secs:expr;)*) => {$(
        #[test]
        fn $name() {
            common::within(Duration::from_secs($secs), $scenario)
        }
    )*};
}

scenarios! {
    consumer_protocol_group_splits_moves_and_resumes_committed_offsets => kip848_split_move_resume, 150;
    consumer_protocol_new_partitions_are_assigned => kip848_new_partitions, 90;
    classic_member_leaving_moves_partitions_and_loses_nothing => classic_leave_moves, 120;
    consumer_protocol_group_survives_broker_kill_9 => kip848_survives_kill_9, 120;
    offsets_of_a_deleted_topic_are_dropped => deleted_topic_offsets_dropped, 90;
    consumer_protocol_regex_subscription_follows_new_topics => kip848_regex, 90;
    consumer_protocol_static_member_restart_keeps_its_partitions => kip848_static, 90;
}

fn client_config(broker: &TestBroker) -> ClientConfig {
    common::client_config_with(broker, &[("reconnect.backoff.max.ms", "500")])
}

fn admin(broker: &TestBroker) -> AdminClient<DefaultClientContext> {
    client_config(broker).create().expect("admin client")
}

fn create_topic(broker: &TestBroker, name: &str, partitions: i32) {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    common::create_topic_via_admin(&client_config(broker), &topic, &opts);
}

/// Produces `values` round-robin over `partitions` partitions and waits for every ack.
fn produce(broker: &TestBroker, topic: &str, partitions: i32, values: &[String]) {
    let p: FutureProducer = client_config(broker)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let futures: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            p.send_result(
                FutureRecord::<[u8], [u8]>::to(topic)
                    .partition(i as i32 % partitions)
                    .payload(v.as_bytes()),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue")
        })
        .collect();
    runtime().block_on(async {
        for f in futures {
            f.await.expect("delivery").expect("acknowledged");
        }
    });
}

/// Prints the client's rebalances and logs (shown when a test fails).
struct Ctx(usize);

impl rdkafka::ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        eprintln!("client {} {level:?} {fac}: {message}", self.0);
    }
}

impl rdkafka::consumer::ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Ctx>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        eprintln!("client {} rebalance: {rebalance:?}", self.0);
    }
}

static CLIENTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A group consumer: manual commits, reading from the start when nothing is committed.
fn group_consumer(broker: &TestBroker, group: &str, protocol: &str) -> BaseConsumer<Ctx> {
    let mut config = client_config(broker);
    config
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    if protocol == "classic" {
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.create_with_context(Ctx(n)).expect("group consumer")
}

fn assignment(c: &BaseConsumer<Ctx>) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer round-robin, counting each message value in `seen`, until `done`
/// says so (given the assignments) or `timeout` passes (then the test fails with `what`).
fn poll_until(
    consumers: &[&BaseConsumer<Ctx>],
    seen: &mut HashMap<String, usize>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&HashMap<String, usize>, &[BTreeSet<i32>]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        for c in consumers {
            while let Some(r) = c.poll(Duration::from_millis(20)) {
                match r {
                    Ok(m) => {
                        let v = String::from_utf8_lossy(m.payload().unwrap_or(b"")).to_string();
                        *seen.entry(v).or_default() += 1;
                    }
                    Err(e) => eprintln!("consumer error (retried by the client): {e}"),
                }
            }
        }
        let assignments: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assignment(c)).collect();
        if done(seen, &assignments) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: assignments {assignments:?}, {} distinct messages",
            seen.len()
        );
    }
}

/// Disjoint, non-empty, and together every partition in `0..partitions`.
fn split_completely(assignments: &[BTreeSet<i32>], partitions: i32) -> bool {
    let total: usize = assignments.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
    assignments.iter().all(|a| !a.is_empty())
        && total == union.len()
        && union == (0..partitions).collect()
}

/// Commits the consumer's current positions (the next offset of each assigned partition)
/// synchronously: with the consumer protocol, OffsetCommit v9 carries the member epoch.
fn commit_positions(c: &BaseConsumer<Ctx>) {
    let positions = c.position().expect("positions");
    c.commit(&positions, CommitMode::Sync)
        .unwrap_or_else(|e| panic!("commit {positions:?}: {e}"));
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The consumer protocol (KIP-848), end to end: three members get disjoint assignments that
/// cover all six partitions and read every message once; each commits, then one leaves and its
/// partitions move to the other two, which read every later message (nothing lost, nothing
/// committed read again); a fresh member after everyone left resumes from the committed offsets.
fn kip848_split_move_resume() {
    let broker = TestBroker::start(2);
    let topic = "kip848";
    create_topic(&broker, topic, 6);
    let cs: Vec<BaseConsumer<Ctx>> = (0..3)
        .map(|_| group_consumer(&broker, "g848", "consumer"))
        .collect();
    for c in &cs {
        c.subscribe(&[topic]).expect("subscribe");
    }
    let mut seen = HashMap::new();
    let all: Vec<&BaseConsumer<Ctx>> = cs.iter().collect();
    poll_until(
        &all,
        &mut seen,
        Duration::from_secs(60),
        "three members to split six partitions",
        |_, a| split_completely(a, 6),
    );
    // Produced once the group is settled, so no partition moves with uncommitted reads.
    produce(&broker, topic, 6, &values("a", 600));
    poll_until(
        &all,
        &mut seen,
        Duration::from_secs(60),
        "the three members to read 600 messages",
        |seen, a| seen.len() == 600 && split_completely(a, 6),
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "a message was read twice before any commit or rebalance"
    );
    for c in &cs {
        commit_positions(c);
    }

    // The first member leaves; the others take its partitions and read what comes next.
    drop(all);
    let mut cs = cs;
    let leaver = cs.remove(0);
    leaver.unsubscribe();
    drop(leaver);
    let second = values("b", 300);
    produce(&broker, topic, 6, &second);
    let rest: Vec<&BaseConsumer<Ctx>> = cs.iter().collect();
    poll_until(
        &rest,
        &mut seen,
        Duration::from_secs(60),
        "two members to take over all partitions and read 300 more messages",
        |seen, a| seen.len() == 900 && split_completely(a, 6),
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "a committed message was read again after the rebalance"
    );
    for c in &cs {
        commit_positions(c);
    }
    describe_two_member_group(&broker, topic);
    drop(rest);
    drop(cs);

    // Everyone left: a new member resumes from the committed offsets, reading only new data.
    let third = values("c", 12);
    produce(&broker, topic, 6, &third);
    let fresh = group_consumer(&broker, "g848", "consumer");
    fresh.subscribe(&[topic]).expect("subscribe");
    let mut later = HashMap::new();
    poll_until(
        &[&fresh],
        &mut later,
        Duration::from_secs(60),
        "a new member to resume from the committed offsets",
        |seen, a| seen.len() >= 12 && a[0].len() == 6,
    );
    // An absence cannot be waited for: give any already-committed message that would be read
    // again 500 ms to arrive, then drain.
    std::thread::sleep(Duration::from_millis(500));
    poll_until(&[&fresh], &mut later, OP_TIMEOUT, "drain", |_, _| true);
    let expected: BTreeSet<String> = third.into_iter().collect();
    let got: BTreeSet<String> = later.keys().cloned().collect();
    assert_eq!(got, expected, "only messages after the commits are read");

    // After everyone left the group is Empty and still listed (its offsets stay).
    drop(fresh);
    let mut raw = RawConn::connect(broker.socket_addr()).expect("connect");
    let listed = raw
        .request(5, &ListGroupsRequest::default())
        .expect("ListGroups");
    let g = listed
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == "g848")
        .expect("g848 listed");
    assert_eq!(g.group_type.as_str(), "consumer");
    assert_eq!(g.protocol_type.as_str(), "consumer");
    assert_eq!(g.group_state.as_str(), "Empty");
}

/// A static member (group.instance.id) of a consumer-protocol group that restarts leaves with
/// epoch -2 and its next incarnation takes over its partitions without a new group epoch.
fn kip848_static() {
    let broker = TestBroker::start(1);
    create_topic(&broker, "static848", 2);
    let start = |instance: &str| {
        let mut config = client_config(&broker);
        config
            .set("group.id", "static848")
            .set("group.protocol", "consumer")
            .set("group.instance.id", instance)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let c: BaseConsumer<Ctx> = config.create_with_context(Ctx(n)).expect("consumer");
        c.subscribe(&["static848"]).expect("subscribe");
        c
    };
    let a = start("instance-a");
    let b = start("instance-b");
    let mut seen = HashMap::new();
    poll_until(
        &[&a, &b],
        &mut seen,
        Duration::from_secs(30),
        "two static members to split two partitions",
        |_, x| split_completely(x, 2),
    );
    let a_parts = assignment(&a);
    let epoch = describe(&broker, "static848").group_epoch;
    drop(a);
    let a2 = start("instance-a");
    poll_until(
        &[&a2, &b],
        &mut seen,
        Duration::from_secs(30),
        "the restarted static member to get its partitions back",
        |_, x| x[0] == a_parts && split_completely(x, 2),
    );
    let g = describe(&broker, "static848");
    assert_eq!(
        g.group_epoch, epoch,
        "no rebalance for a static member's restart"
    );
    assert_eq!(g.members.len(), 2);
}

/// A regex subscription with the consumer protocol is resolved by the coordinator: matching
/// topics (and one created later) are assigned and consumed, others are not.
fn kip848_regex() {
    let broker = TestBroker::start(1);
    create_topic(&broker, "rx-a", 2);
    create_topic(&broker, "other", 1);
    let c = group_consumer(&broker, "regex-group", "consumer");
    c.subscribe(&["^rx-.*"]).expect("subscribe");
    let topics = |c: &BaseConsumer<Ctx>| -> BTreeSet<(String, i32)> {
        c.assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while topics(&c).len() != 2 {
        assert!(Instant::now() < deadline, "assignment {:?}", topics(&c));
        poll_until(&[&c], &mut seen, OP_TIMEOUT, "poll", |_, _| true);
    }
    assert_eq!(
        topics(&c),
        [("rx-a".to_string(), 0), ("rx-a".to_string(), 1)].into()
    );
    create_topic(&broker, "rx-b", 1);
    produce(&broker, "rx-b", 1, &values("x", 5));
    produce(&broker, "other", 1, &values("o", 5));
    poll_until(
        &[&c],
        &mut seen,
        Duration::from_secs(45),
        "the new matching topic to be assigned and read",
        |seen, _| seen.len() >= 5,
    );
    assert!(topics(&c).contains(&("rx-b".to_string(), 0)));
    assert!(seen.keys().all(|v| v.starts_with('x')), "{seen:?}");
    // librdkafka sends the regex itself (SubscribedTopicRegex): the coordinator resolved it.
    let g = describe(&broker, "regex-group");
    assert!(g.members[0].subscribed_topic_regex.is_some());
    assert!(g.members[0].subscribed_topic_names.is_empty());
}

/// Committed offsets of a topic go with the topic: after it is deleted and created again
/// under the same name, the group has no committed offset for it (also after a restart).
fn deleted_topic_offsets_dropped() {
    let mut broker = TestBroker::start(2);
    create_topic(&broker, "doomed", 2);
    produce(&broker, "doomed", 2, &values("d", 10));
    let committed = |broker: &TestBroker| -> Vec<Offset> {
        let c: BaseConsumer = client_config(broker)
            .set("group.id", "dropper")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("doomed", 0);
        tpl.add_partition("doomed", 1);
        let got = c.committed_offsets(tpl, OP_TIMEOUT).expect("OffsetFetch");
        got.elements().iter().map(|e| e.offset()).collect()
    };
    let c: BaseConsumer = client_config(&broker)
        .set("group.id", "dropper")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("doomed", 0, Offset::Offset(3))
        .unwrap();
    tpl.add_partition_offset("doomed", 1, Offset::Offset(4))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).expect("commit");
    drop(c);
    assert_eq!(committed(&broker), [Offset::Offset(3), Offset::Offset(4)]);
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    let deleted = runtime()
        .block_on(admin(&broker).delete_topics(&["doomed"], &opts))
        .expect("DeleteTopics");
    assert!(deleted[0].is_ok(), "{:?}", deleted[0]);
    create_topic(&broker, "doomed", 2);
    assert_eq!(committed(&broker), [Offset::Invalid, Offset::Invalid]);
    broker.restart();
    assert_eq!(committed(&broker), [Offset::Invalid, Offset::Invalid]);
}

/// The consumer group as ConsumerGroupDescribe reports it (error if unknown).
fn describe(
    broker: &TestBroker,
    group: &'static str,
) -> kafka_protocol::messages::consumer_group_describe_response::DescribedGroup {
    let mut raw = RawConn::connect(broker.socket_addr()).expect("connect");
    let request = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_static_str(group))]);
    let response = raw.request(1, &request).expect("ConsumerGroupDescribe");
    response.groups.into_iter().next().expect("one group")
}

/// Group metadata is durable: after the broker is killed with SIGKILL and restarted, the
/// consumer group is there at once with the same epoch, members and assignments (members did
/// not have to rejoin), and the members go on consuming.
fn kip848_survives_kill_9() {
    let mut broker = TestBroker::start(2);
    let topic = "durable-group";
    create_topic(&broker, topic, 4);
    let cs: Vec<BaseConsumer<Ctx>> = (0..2)
        .map(|_| {
            let c = group_consumer(&broker, "durable", "consumer");
            c.subscribe(&[topic]).expect("subscribe");
            c
        })
        .collect();
    let all: Vec<&BaseConsumer<Ctx>> = cs.iter().collect();
    let mut seen = HashMap::new();
    poll_until(
        &all,
        &mut seen,
        Duration::from_secs(30),
        "two members to split four partitions",
        |_, a| split_completely(a, 4),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let g = describe(&broker, "durable");
        if g.group_state.as_str() == "Stable" || Instant::now() > deadline {
            break g;
        }
        poll_until(&all, &mut seen, OP_TIMEOUT, "poll", |_, _| true);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(before.group_state.as_str(), "Stable");
    // No grace period: a heartbeat that changed the group is answered after the write.
    broker.kill9();
    broker.start_again();
    let after = describe(&broker, "durable");
    assert_eq!(after.error_code, 0, "{:?}", after.error_message);
    assert_eq!(after.group_epoch, before.group_epoch);
    assert_eq!(after.assignment_epoch, before.assignment_epoch);
    let members =
        |g: &kafka_protocol::messages::consumer_group_describe_response::DescribedGroup| {
            g.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.member_epoch,
                        m.assignment.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
    assert_eq!(members(&after), members(&before));
    produce(&broker, topic, 4, &values("k", 40));
    poll_until(
        &all,
        &mut seen,
        Duration::from_secs(60),
        "the members to go on consuming after the restart",
        |seen, a| seen.len() == 40 && split_completely(a, 4),
    );
    assert_eq!(describe(&broker, "durable").group_epoch, before.group_epoch);
}

/// ConsumerGroupDescribe of a settled two-member group: Stable, both members at the group
/// epoch, their assignments disjoint and complete, named by topic id and name, and the client
/// host is the client's address.
fn describe_two_member_group(broker: &TestBroker, topic: &str) {
    let mut raw = RawConn::connect(broker.socket_addr()).expect("connect");
    let request = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_static_str("g848"))]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let g = loop {
        let response = raw.request(1, &request).expect("ConsumerGroupDescribe");
        let g = response.groups.into_iter().next().expect("one group");
        assert_eq!(g.error_code, 0, "{:?}", g.error_message);
        if g.group_state.as_str() == "Stable" || Instant::now() > deadline {
            break g;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert_eq!(g.group_epoch, g.assignment_epoch);
    assert_eq!(g.members.len(), 2);
    let mut partitions = BTreeSet::new();
    for m in &g.members {
        assert_eq!(m.member_epoch, g.group_epoch);
        assert_eq!(m.client_host.as_str(), "/127.0.0.1");
        assert_eq!(m.member_type, 1);
        assert_eq!(m.assignment, m.target_assignment);
        for tp in &m.assignment.topic_partitions {
            assert_eq!(tp.topic_name.as_str(), topic);
            for p in &tp.partitions {
                assert!(partitions.insert(*p), "partition {p} assigned twice");
            }
        }
    }
    assert_eq!(partitions, (0..6).collect());
}

/// Partitions added to a subscribed topic are assigned to the members of a consumer-protocol
/// group without any member rejoining (the coordinator sees the metadata change).
fn kip848_new_partitions() {
    let broker = TestBroker::start(1);
    let topic = "growing";
    create_topic(&broker, topic, 2);
    let cs: Vec<BaseConsumer<Ctx>> = (0..2)
        .map(|_| {
            let c = group_consumer(&broker, "grow", "consumer");
            c.subscribe(&[topic]).expect("subscribe");
            c
        })
        .collect();
    let all: Vec<&BaseConsumer<Ctx>> = cs.iter().collect();
    let mut seen = HashMap::new();
    poll_until(
        &all,
        &mut seen,
        Duration::from_secs(30),
        "two members to split two partitions",
        |_, a| split_completely(a, 2),
    );
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    runtime()
        .block_on(admin(&broker).create_partitions([&NewPartitions::new(topic, 6)], &opts))
        .expect("CreatePartitions");
    // librdkafka refreshes its metadata every topic.metadata.refresh.interval.ms (5 min by
    // default), but the coordinator hands out the new partitions by topic id on its own.
    let more = values("n", 60);
    produce(&broker, topic, 6, &more);
    poll_until(
        &all,
        &mut seen,
        Duration::from_secs(45),
        "six partitions split and 60 messages read",
        |seen, a| seen.len() == 60 && split_completely(a, 6),
    );
}

/// The classic protocol: a member that leaves hands its partitions to the remaining member,
/// which reads every message produced meanwhile; nothing committed before the change is read
/// twice. (A killed member is tested with a child process in
/// tests/python/test_confluent_kafka.py.)
fn classic_leave_moves() {
    let broker = TestBroker::start(2);
    let topic = "classic-moves";
    create_topic(&broker, topic, 4);
    let cs: Vec<BaseConsumer<Ctx>> = (0..2)
        .map(|_| {
            let c = group_consumer(&broker, "classic-g", "classic");
            c.subscribe(&[topic]).expect("subscribe");
            c
        })
        .collect();
    let all: Vec<&BaseConsumer<Ctx>> = cs.iter().collect();
    let mut seen = HashMap::new();
    poll_until(
        &all,
        &mut seen,
        Duration::from_secs(60),
        "two members to split four partitions",
        |_, a| split_completely(a, 4),
    );
    produce(&broker, topic, 4, &values("a", 400));
    poll_until(
        &all,
        &mut seen,
        Duration::from_secs(60),
        "two members to read 400 messages",
        |seen, a| seen.len() == 400 && split_completely(a, 4),
    );
    for c in &cs {
        commit_positions(c);
    }
    let mut cs = cs;
    let leaver = cs.remove(0);
    leaver.unsubscribe();
    drop(leaver);
    produce(&broker, topic, 4, &values("b", 200));
    let rest: Vec<&BaseConsumer<Ctx>> = cs.iter().collect();
    poll_until(
        &rest,
        &mut seen,
        Duration::from_secs(60),
        "the remaining member to take all partitions and read 200 more",
        |seen, a| seen.len() == 600 && split_completely(a, 4),
    );
    // The classic (eager) protocol revokes every partition in a rebalance, so the remaining
    // member may read again what it read but had not committed (the "b" messages); what was
    // committed before is never read again, and nothing is lost.
    let twice: BTreeSet<&String> = seen
        .iter()
        .filter(|(v, &n)| n > 1 && v.starts_with('a'))
        .map(|(v, _)| v)
        .collect();
    assert!(twice.is_empty(), "committed messages read again: {twice:?}");
}
