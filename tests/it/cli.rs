//! The admin CLI (issue 7) against the real `freshet` broker: every command, run as the built
//! `freshet` binary, checked by its output and exit code, with at least one error per command
//! family (exit 1 with the Kafka error's name, 2 for usage, 3 for an unreachable broker).
//! What the CLI writes is cross-checked with librdkafka (rdkafka crate): records produced by the
//! CLI are read by rdkafka with the same keys and headers, and a group's offsets reset by
//! `freshet group seek` are where an rdkafka group consumer starts.

use crate::common;
use common::client_config;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{broker_bin, free_port, within, TestBroker};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;

/// Bound on each test.
const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Runs `freshet ARGS` against `broker` (via FRESHET_BROKERS) with `stdin`.
fn freshet(broker: &TestBroker, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(broker_bin())
        .args(args)
        .env("FRESHET_BROKERS", broker.addr())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run freshet");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let output = child.wait_with_output().expect("wait for freshet");
    eprintln!(
        "$ freshet {}\nexit {:?}\nstdout:\n{}stderr:\n{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command that must succeed; returns its stdout.
fn ok(broker: &TestBroker, args: &[&str], stdin: &str) -> String {
    let output = freshet(broker, args, stdin);
    assert_eq!(output.status.code(), Some(0), "freshet {args:?} failed");
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// Runs a command that must succeed with `--format json`; returns the document.
fn ok_json(broker: &TestBroker, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    serde_json::from_str(&ok(broker, &all, "")).expect("JSON on stdout")
}

/// Runs a command that must fail with `code`, naming `error` on stderr.
fn fails(broker: &TestBroker, args: &[&str], code: i32, error: &str) {
    let output = freshet(broker, args, "");
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code of freshet {args:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(error),
        "stderr of {args:?} lacks {error:?}: {stderr}"
    );
}

fn find<'a>(items: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    items
        .as_array()
        .expect("array")
        .iter()
        .find(|v| v[key] == value)
}

#[test]
fn topic_and_cluster_commands_with_their_errors() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        let port = broker.addr().rsplit(':').next().unwrap().to_string();

        let info = ok_json(&broker, &["cluster", "info"]);
        assert!(!info["cluster_id"].as_str().expect("cluster id").is_empty());
        assert_eq!(info["brokers"][0]["port"].to_string(), port);
        let table = ok(&broker, &["cluster", "info"], "");
        assert!(table.starts_with("CLUSTER-ID"), "{table}");
        assert!(table.contains(&port), "{table}");

        let created = ok(
            &broker,
            &[
                "topic",
                "create",
                "orders",
                "-p",
                "3",
                "-c",
                "retention.ms=3600000",
            ],
            "",
        );
        assert!(
            created.contains("orders") && created.contains("created"),
            "{created}"
        );
        // rdkafka sees what the CLI created.
        let consumer: BaseConsumer = client_config(&broker).create().expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some("orders"), Duration::from_secs(30))
            .expect("metadata");
        assert_eq!(metadata.topics()[0].partitions().len(), 3);
        fails(
            &broker,
            &["topic", "create", "orders"],
            1,
            "TOPIC_ALREADY_EXISTS",
        );
        fails(
            &broker,
            &["topic", "create", "x", "-c", "novalue"],
            2,
            "key=value",
        );

        let list = ok_json(&broker, &["topic", "list"]);
        assert_eq!(
            find(&list, "topic", "orders").expect("listed")["partitions"],
            3
        );
        let table = ok(&broker, &["topic", "list"], "");
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().eq(["orders", "3", "1"])),
            "{table}"
        );

        let described = ok_json(&broker, &["topic", "describe", "orders"]);
        let orders = &described[0];
        assert_eq!(orders["partitions"].as_array().unwrap().len(), 3);
        assert_eq!(orders["partitions"][2]["leader"], 0);
        assert_eq!(orders["partitions"][2]["high_watermark"], 0);
        let retention = find(&orders["configs"], "name", "retention.ms").expect("retention.ms");
        assert_eq!(retention["value"], "3600000");
        assert_eq!(retention["source"], "DYNAMIC_TOPIC_CONFIG");
        let table = ok(&broker, &["topic", "describe", "orders"], "");
        assert!(
            table.contains("HIGH-WATERMARK") && table.contains("retention.ms"),
            "{table}"
        );
        fails(
            &broker,
            &["topic", "describe", "missing"],
            1,
            "UNKNOWN_TOPIC_OR_PARTITION",
        );

        ok(
            &broker,
            &[
                "topic",
                "alter-config",
                "orders",
                "--set",
                "retention.ms=1000",
                "--set",
                "cleanup.policy=compact",
            ],
            "",
        );
        ok(
            &broker,
            &[
                "topic",
                "alter-config",
                "orders",
                "--delete",
                "cleanup.policy",
            ],
            "",
        );
        let configs = &ok_json(&broker, &["topic", "describe", "orders"])[0]["configs"];
        assert_eq!(
            find(configs, "name", "retention.ms").unwrap()["value"],
            "1000"
        );
        let policy = find(configs, "name", "cleanup.policy").unwrap();
        assert_eq!(
            (&policy["value"], &policy["source"]),
            (&Value::from("delete"), &Value::from("DEFAULT_CONFIG"))
        );
        fails(
            &broker,
            &[
                "topic",
                "alter-config",
                "orders",
                "--set",
                "no.such.config=1",
            ],
            1,
            "INVALID_CONFIG",
        );
        fails(&broker, &["topic", "alter-config", "orders"], 2, "--set");

        let deleted = ok_json(&broker, &["topic", "delete", "orders"]);
        assert_eq!(deleted[0]["error"], Value::Null);
        assert!(find(&ok_json(&broker, &["topic", "list"]), "topic", "orders").is_none());
        fails(
            &broker,
            &["topic", "delete", "orders"],
            1,
            "UNKNOWN_TOPIC_OR_PARTITION",
        );

        // Usage and connection failures.
        fails(
            &broker,
            &["topic", "frobnicate"],
            2,
            "unrecognized subcommand",
        );
        let unreachable = format!("127.0.0.1:{}", free_port());
        fails(
            &broker,
            &["cluster", "info", "-b", &unreachable],
            3,
            "no broker reachable",
        );
        let help = ok(&broker, &["topic", "--help"], "");
        assert!(
            help.contains("Exit codes") && help.contains("FRESHET_BROKERS"),
            "{help}"
        );
    });
}

#[test]
fn produce_and_consume_round_trip_keys_headers_and_formats() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        ok(&broker, &["topic", "create", "events", "-p", "3"], "");
        let lines: Vec<String> = (0..30).map(|i| format!("key-{i}:value {i}")).collect();
        let input = lines.join("\n") + "\nno key here\n";
        let summary: Value = serde_json::from_str(&ok(
            &broker,
            &[
                "produce",
                "events",
                "-K",
                ":",
                "-H",
                "source=cli",
                "-H",
                "n=1",
                "-z",
                "lz4",
                "--format",
                "json",
            ],
            &input,
        ))
        .expect("summary");
        assert_eq!(summary["records"], 31);

        // The CLI reads back every record with its key and headers.
        let out = ok(&broker, &["consume", "events", "--format", "json"], "");
        let records: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(records.len(), 31);
        let mut by_key: BTreeMap<String, &Value> = BTreeMap::new();
        for r in &records {
            assert_eq!(r["headers"]["source"], "cli");
            assert_eq!(r["headers"]["n"], "1");
            let key = r["key"].as_str().unwrap_or("<null>").to_string();
            by_key.insert(key, r);
        }
        assert_eq!(by_key["key-7"]["value"], "value 7");
        assert_eq!(by_key["<null>"]["value"], "no key here");
        // One key, one partition (murmur2): the same key again lands beside the first.
        let p7 = by_key["key-7"]["partition"].as_i64().unwrap().to_string();
        ok(
            &broker,
            &["produce", "events", "-K", ":", "--acks", "1"],
            "key-7:again\n",
        );
        let again = ok(
            &broker,
            &["consume", "events", "-p", &p7, "--format", "%k=%v\\n"],
            "",
        );
        assert!(again.lines().any(|l| l == "key-7=again"), "{again}");

        // librdkafka reads the same records, keys and headers, from the same partitions.
        let consumer: BaseConsumer = client_config(&broker)
            .set("group.id", "never-joins")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset("events", p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while seen < 32 && Instant::now() < deadline {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.expect("message");
            seen += 1;
            let key = m.key().map(|k| String::from_utf8_lossy(k).to_string());
            if key.as_deref() == Some("key-3") {
                let headers = m.headers().expect("headers");
                assert_eq!(m.payload(), Some(&b"value 3"[..]));
                assert_eq!(
                    m.partition() as i64,
                    by_key["key-3"]["partition"].as_i64().unwrap()
                );
                assert_eq!(headers.get(0).key, "source");
                assert_eq!(headers.get(0).value, Some(&b"cli"[..]));
            }
        }
        assert_eq!(seen, 32, "rdkafka read every record");

        // Records librdkafka produces are printed with the template placeholders.
        let producer: ThreadedProducer<DefaultProducerContext> =
            client_config(&broker).create().expect("producer");
        producer
            .send(
                BaseRecord::to("events")
                    .partition(1)
                    .key("rk")
                    .payload("from rdkafka")
                    .headers(rdkafka::message::OwnedHeaders::new().insert(
                        rdkafka::message::Header {
                            key: "h",
                            value: Some("v"),
                        },
                    )),
            )
            .map_err(|(e, _)| e)
            .expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
        let out = ok(
            &broker,
            &[
                "consume",
                "events",
                "-p",
                "1",
                "-o",
                "end",
                "--follow",
                "--timeout-ms",
                "1000",
            ],
            "",
        );
        assert_eq!(out, "", "from the end, nothing new within the timeout");
        let out = ok(
            &broker,
            &[
                "consume",
                "events",
                "-p",
                "1",
                "--format",
                "%t|%p|%o|%k|%v|%h\\n",
            ],
            "",
        );
        let last = out.lines().last().expect("a line");
        let fields: Vec<&str> = last.split('|').collect();
        assert_eq!(
            (fields[0], fields[1], fields[3], fields[4], fields[5]),
            ("events", "1", "rk", "from rdkafka", "h=v")
        );
        let last_offset: i64 = fields[2].parse().expect("offset");

        // -o OFFSET and -n COUNT.
        let out = ok(
            &broker,
            &[
                "consume",
                "events",
                "-p",
                "1",
                "-o",
                &last_offset.to_string(),
                "--format",
                "%o\\n",
            ],
            "",
        );
        assert_eq!(out, format!("{last_offset}\n"));
        let out = ok(
            &broker,
            &[
                "consume", "events", "-p", "1", "-o", "-1", "--format", "%v\\n",
            ],
            "",
        );
        assert_eq!(out, "from rdkafka\n", "-o -1: the last record");
        let out = ok(&broker, &["consume", "events", "-n", "5"], "");
        assert_eq!(out.lines().count(), 5);

        // --follow sees a record produced after it started.
        let fetches = broker.requests_handled("Fetch");
        let follower = Command::new(broker_bin())
            .args([
                "consume",
                "events",
                "-p",
                "2",
                "-o",
                "end",
                "--follow",
                "-n",
                "1",
                "--timeout-ms",
                "20000",
            ])
            .env("FRESHET_BROKERS", broker.addr())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("follower");
        // It reads the end offset first, then fetches: produce once it fetches.
        common::wait_until(
            Duration::from_secs(20),
            "the --follow consumer to start fetching",
            || broker.requests_handled("Fetch") > fetches,
        );
        ok(
            &broker,
            &["produce", "events", "-p", "2", "--acks", "0"],
            "late arrival\n",
        );
        let out = follower.wait_with_output().expect("follower exits");
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "late arrival\n");

        // Errors: unknown topic or partition (exit 1), bad flags (exit 2).
        fails(
            &broker,
            &["produce", "missing"],
            1,
            "UNKNOWN_TOPIC_OR_PARTITION",
        );
        fails(
            &broker,
            &["consume", "missing"],
            1,
            "UNKNOWN_TOPIC_OR_PARTITION",
        );
        fails(
            &broker,
            &["consume", "events", "-p", "9"],
            1,
            "UNKNOWN_TOPIC_OR_PARTITION",
        );
        fails(
            &broker,
            &["produce", "events", "-H", "nokeyvalue"],
            2,
            "key=value",
        );
        fails(
            &broker,
            &["consume", "events", "-o", "sometime"],
            2,
            "--offset",
        );
    });
}

/// The group's state as `freshet group describe` says.
fn group_state(broker: &TestBroker, group: &str) -> String {
    ok_json(broker, &["group", "describe", group])[0]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn group_commands_describe_lag_seek_and_delete() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        ok(&broker, &["topic", "create", "jobs", "-p", "2"], "");
        let six: String = (0..6).map(|i| format!("p0-{i}\n")).collect();
        let four: String = (0..4).map(|i| format!("p1-{i}\n")).collect();
        ok(&broker, &["produce", "jobs", "-p", "0"], &six);
        ok(&broker, &["produce", "jobs", "-p", "1"], &four);

        // An rdkafka group member reads everything and commits.
        let group_consumer = || -> BaseConsumer {
            client_config(&broker)
                .set("group.id", "workers")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("session.timeout.ms", "10000")
                .set("fetch.wait.max.ms", "100")
                .create()
                .expect("group consumer")
        };
        let consumer = group_consumer();
        consumer.subscribe(&["jobs"]).expect("subscribe");
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while read < 10 {
            assert!(Instant::now() < deadline, "read {read} of 10");
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                m.expect("message");
                read += 1;
            }
        }
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");

        // While it is a member: listed, described with its partitions and no lag; seek and
        // delete are refused.
        let list = ok_json(&broker, &["group", "list"]);
        let listed = find(&list, "group", "workers").expect("listed");
        assert_eq!(listed["protocol_type"], "consumer");
        let table = ok(&broker, &["group", "list"], "");
        assert!(table.contains("workers"), "{table}");
        let described = &ok_json(&broker, &["group", "describe", "workers"])[0];
        assert_eq!(described["state"], "Stable");
        assert_eq!(described["members"].as_array().unwrap().len(), 1);
        assert_eq!(described["total_lag"], 0);
        let partitions = described["partitions"].as_array().unwrap();
        assert_eq!(partitions.len(), 2);
        assert_eq!(
            (
                &partitions[0]["committed_offset"],
                &partitions[0]["log_end_offset"]
            ),
            (&Value::from(6), &Value::from(6))
        );
        assert!(partitions[1]["member_id"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        let table = ok(&broker, &["group", "describe", "workers"], "");
        assert!(
            table.contains("LOG-END-OFFSET") && table.contains("Stable"),
            "{table}"
        );
        fails(
            &broker,
            &["group", "seek", "workers", "--to", "earliest"],
            1,
            "NON_EMPTY_GROUP",
        );
        fails(
            &broker,
            &["group", "delete", "workers"],
            1,
            "NON_EMPTY_GROUP",
        );

        // Once it leaves, the group is Empty and its offsets can be reset.
        consumer.unsubscribe();
        drop(consumer);
        common::wait_until(Duration::from_secs(30), "the group to become Empty", || {
            group_state(&broker, "workers") == "Empty"
        });
        let seek = ok_json(&broker, &["group", "seek", "workers", "--to", "earliest"]);
        assert_eq!(seek["partitions"].as_array().unwrap().len(), 2);
        assert_eq!(
            ok_json(&broker, &["group", "describe", "workers"])[0]["total_lag"],
            10
        );
        // A dry run changes nothing.
        let dry = ok_json(
            &broker,
            &["group", "seek", "workers", "--to", "latest", "--dry-run"],
        );
        assert_eq!(dry["partitions"][0]["new_offset"], 6);
        assert_eq!(
            ok_json(&broker, &["group", "describe", "workers"])[0]["total_lag"],
            10
        );
        // By offset (clamped to the log end) and by timestamp (the future: the end).
        ok(
            &broker,
            &[
                "group", "seek", "workers", "--to", "offset", "4", "-t", "jobs:0",
            ],
            "",
        );
        ok(
            &broker,
            &[
                "group", "seek", "workers", "--to", "offset", "99", "-t", "jobs:1",
            ],
            "",
        );
        let partitions =
            ok_json(&broker, &["group", "describe", "workers"])[0]["partitions"].clone();
        assert_eq!(
            (
                &partitions[0]["committed_offset"],
                &partitions[1]["committed_offset"]
            ),
            (&Value::from(4), &Value::from(4))
        );
        let future = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 3_600_000)
            .to_string();
        let seek = ok_json(
            &broker,
            &[
                "group",
                "seek",
                "workers",
                "--to",
                "timestamp",
                &future,
                "-t",
                "jobs:1",
            ],
        );
        assert_eq!(seek["partitions"][0]["new_offset"], 4);
        ok(
            &broker,
            &[
                "group",
                "seek",
                "workers",
                "--to",
                "timestamp",
                "0",
                "-t",
                "jobs:1",
            ],
            "",
        );
        ok(
            &broker,
            &[
                "group", "seek", "workers", "--to", "offset", "2", "-t", "jobs:1",
            ],
            "",
        );

        // An rdkafka member of the group starts where seek put it: jobs-0 at 4, jobs-1 at 2.
        let consumer = group_consumer();
        consumer.subscribe(&["jobs"]).expect("subscribe");
        let mut first: BTreeMap<i32, (i64, String)> = BTreeMap::new();
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while read < 4 {
            assert!(Instant::now() < deadline, "read {read} of 4 after the seek");
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("message");
                read += 1;
                first.entry(m.partition()).or_insert((
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or(b"")).to_string(),
                ));
            }
        }
        assert_eq!(first[&0], (4, "p0-4".to_string()));
        assert_eq!(first[&1], (2, "p1-2".to_string()));
        consumer.unsubscribe();
        drop(consumer);

        // Errors: unknown group, bad --to, no topics for a new group.
        fails(
            &broker,
            &["group", "describe", "nobody"],
            1,
            "GROUP_ID_NOT_FOUND",
        );
        fails(
            &broker,
            &["group", "seek", "workers", "--to", "soon"],
            2,
            "--to",
        );
        fails(
            &broker,
            &["group", "seek", "fresh", "--to", "earliest"],
            2,
            "--topic",
        );
        fails(
            &broker,
            &["group", "seek", "workers", "--to", "earliest", "-t", "nope"],
            1,
            "UNKNOWN_TOPIC_OR_PARTITION",
        );

        // Delete once Empty; then it is gone.
        common::wait_until(Duration::from_secs(30), "the group to become Empty", || {
            group_state(&broker, "workers") == "Empty"
        });
        let deleted = ok(&broker, &["group", "delete", "workers"], "");
        assert!(deleted.contains("deleted"), "{deleted}");
        fails(
            &broker,
            &["group", "describe", "workers"],
            1,
            "GROUP_ID_NOT_FOUND",
        );
        fails(
            &broker,
            &["group", "delete", "workers"],
            1,
            "GROUP_ID_NOT_FOUND",
        );
    });
}
