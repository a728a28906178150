//! `freshet bench` and the client it is built on (issue 6), against the real `freshet` binary:
//! the bench produces and consumes a known number of messages and its counts match; its
//! outputs (JSON summary, HdrHistogram log, SVG charts) are written; a rate-limited run keeps
//! its rate; the sweep finds a rate; the client's admin, produce and fetch calls round-trip.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{broker_bin, within, TestBroker};
use freshet_client::admin::{self, NewTopic};
use freshet_client::fetch::{fetch_request, parse_fetch_response, FetchPosition};
use freshet_client::produce::{parse_produce_response, PartitionRecords, ProduceBody};
use freshet_client::records::batches;
use freshet_client::{ConnectOptions, Connection};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
use kafka_protocol::messages::ApiKey;

/// Bound on each test.
const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Runs `freshet bench ARGS --bootstrap ADDR --out DIR --quiet`; returns its output.
fn bench(broker: &TestBroker, out: &Path, args: &[&str]) -> Output {
    let output = Command::new(broker_bin())
        .arg("bench")
        .args(args)
        .args(["--bootstrap", &broker.addr(), "--quiet", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("run freshet bench");
    eprintln!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn summary(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary is JSON")
}

#[test]
fn bench_counts_match_at_max_rate_and_writes_its_reports() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        let out = tempfile::tempdir().expect("tempdir");
        let run = bench(
            &broker,
            out.path(),
            &[
                "--messages",
                "20000",
                "--rate",
                "0",
                "--partitions",
                "4",
                "--producers",
                "2",
                "--consumers",
                "2",
                "--message-size",
                "200",
            ],
        );
        assert!(run.status.success(), "bench failed");
        let s = summary(out.path());
        // Two producers on one topic, 10,000 each: every one acknowledged and consumed once.
        assert_eq!(s["acked_messages"], 20000);
        assert_eq!(s["expected_messages"], 20000);
        assert_eq!(s["consumed_messages"], 20000);
        assert_eq!(s["failed_messages"], 0);
        assert_eq!(s["counts_match"], true);
        assert_eq!(s["publish_latency_ms"]["count"], 20000);
        assert_eq!(s["e2e_latency_ms"]["count"], 20000);
        let p = &s["publish_latency_ms"];
        assert!(p["p50"].as_f64().unwrap() <= p["p99"].as_f64().unwrap());
        assert!(p["p99"].as_f64().unwrap() <= p["max"].as_f64().unwrap());
        let table = String::from_utf8_lossy(&run.stdout);
        assert!(
            table.contains("p99.99") && table.contains("counts match"),
            "{table}"
        );
        let hlog = std::fs::read_to_string(out.path().join("latency.hlog")).expect("hlog");
        assert!(hlog.starts_with("#freshet bench") && hlog.contains("Tag=publish,"));
        assert!(hlog.contains("Tag=e2e,"));
        for svg in ["latency.svg", "throughput.svg"] {
            let text = std::fs::read_to_string(out.path().join(svg)).expect("svg");
            // A run shorter than a sample interval has one throughput point (a dot).
            let drawn = text.contains("<polyline") || text.contains("<circle");
            assert!(drawn && text.ends_with("</svg>\n"), "{svg}");
        }
    });
}

#[test]
fn bench_backlog_with_keys_and_compression_consumes_everything() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        let out = tempfile::tempdir().expect("tempdir");
        let run = bench(
            &broker,
            out.path(),
            &[
                "--backlog-mb",
                "4",
                "--keys",
                "random",
                "--compression",
                "lz4",
                "--message-size",
                "512",
                "--partitions",
                "3",
                "--consumers",
                "2",
                "--rate",
                "0",
            ],
        );
        assert!(run.status.success(), "bench failed");
        let s = summary(out.path());
        let expected = (4e6f64 / 512.0).ceil() as u64;
        assert_eq!(s["acked_messages"], expected);
        assert_eq!(s["consumed_messages"], expected);
        assert_eq!(s["counts_match"], true);
        assert!(s["consume"]["mb_per_s"].as_f64().unwrap() > 0.0);
    });
}

#[test]
fn bench_at_a_target_rate_keeps_the_rate() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let out = tempfile::tempdir().expect("tempdir");
        let run = bench(
            &broker,
            out.path(),
            &[
                "--rate",
                "2000",
                "--duration",
                "3s",
                "--warmup",
                "1s",
                "--acks",
                "1",
            ],
        );
        assert!(run.status.success(), "bench failed");
        let s = summary(out.path());
        let rate = s["produce"]["msg_per_s"].as_f64().unwrap();
        // The window ends with the last acknowledgement: allow for a slow tail.
        assert!((1500.0..=2200.0).contains(&rate), "produce rate {rate}");
        // Warm-up samples are left out.
        // Samples are counted by intended send time: exactly the 3 s after the warm-up.
        assert_eq!(s["publish_latency_ms"]["count"], 6000);
        assert_eq!(s["acked_messages"], 8000, "1 s warm-up + 3 s at 2000 msg/s");
        assert_eq!(s["counts_match"], true);
    });
}

#[test]
fn sweep_reports_the_highest_rate_meeting_the_objective() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let out = tempfile::tempdir().expect("tempdir");
        let output = Command::new(broker_bin())
            .args(["bench", "sweep", "--bootstrap", &broker.addr()])
            .args([
                "--partition-counts",
                "2",
                "--start-rate",
                "500",
                "--factor",
                "2",
            ])
            // 3 s steps: a step passes when its producers reach 90% of the target rate over a
            // window that also holds the wait for the last acknowledgement, so a 2 s step
            // failed on a busy machine when that wait (or a stall) took over 0.22 s.
            .args(["--steps", "2", "--duration", "3s", "--warmup", "0s"])
            .args(["--slo-p99-ms", "10000", "--out"])
            .arg(out.path())
            .output()
            .expect("run sweep");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("sweep.json")).expect("sweep.json"),
        )
        .expect("json");
        // On failure, say which step failed and why: each step's target and achieved rate,
        // p99 and verdict (the sweep's own lines on stderr say the same).
        let steps: Vec<String> = report["points"]
            .as_array()
            .map(|points| {
                points
                    .iter()
                    .map(|p| {
                        format!(
                            "target {} msg/s: achieved {:.0} msg/s (pass needs >= 90%), p99 {:.2} ms, {}",
                            p["target_rate"],
                            p["achieved_rate"].as_f64().unwrap_or(f64::NAN),
                            p["p99_ms"].as_f64().unwrap_or(f64::NAN),
                            if p["passed"] == true { "passed" } else { "FAILED" }
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let steps = steps.join("\n  ");
        assert_eq!(
            report["points"].as_array().map(Vec::len),
            Some(2),
            "expected 2 steps (500 and 1000 msg/s):\n  {steps}\n{stderr}"
        );
        for (i, point) in report["points"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            assert_eq!(
                point["passed"],
                true,
                "step {} ({} msg/s) failed:\n  {steps}\nsweep output:\n{stderr}",
                i + 1,
                point["target_rate"]
            );
        }
        assert_eq!(report["best"][0]["rate"], 1000.0, "{report}");
        assert!(stdout.contains("highest sustainable rate"), "{stdout}");
        let svg = std::fs::read_to_string(out.path().join("sweep.svg")).expect("svg");
        assert!(svg.contains("objective 10000 ms"));
    });
}

/// The client API a later admin CLI builds on: create, describe, produce (pipelined), fetch,
/// list offsets, delete.
#[test]
fn client_round_trips_admin_produce_and_fetch() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        let options = ConnectOptions::default();
        let mut conn = Connection::connect(&broker.addr(), &options).expect("connect");
        let created = admin::create_topics(
            &mut conn,
            &[NewTopic {
                name: "client-t".into(),
                partitions: 3,
                replication_factor: -1,
                configs: vec![("retention.ms".into(), "3600000".into())],
            }],
            10_000,
        )
        .expect("create");
        assert_eq!(created[0].error_code, 0, "{created:?}");
        let again = admin::create_topics(
            &mut conn,
            &[NewTopic {
                name: "client-t".into(),
                partitions: 3,
                replication_factor: -1,
                configs: vec![],
            }],
            10_000,
        )
        .expect("create again");
        assert_eq!(again[0].error_code, admin::TOPIC_ALREADY_EXISTS);
        let md = admin::metadata(&mut conn, Some(&["client-t"])).expect("metadata");
        assert_eq!(md.topic("client-t").map(|t| t.partitions.len()), Some(3));
        assert!(md
            .broker(md.topic("client-t").unwrap().partitions[0].leader)
            .is_some());

        // Pipelined produce: 10 requests of one batch per partition, 4 in flight.
        let version = conn
            .versions()
            .pick(ApiKey::Produce, 3, 12)
            .expect("produce version");
        let (mut writer, mut reader) = Connection::connect(&broker.addr(), &options)
            .expect("connect")
            .into_pipeline::<usize>(4);
        let acks = std::thread::spawn(move || {
            let mut answered = Vec::new();
            while let Some(answer) = reader.recv().expect("answer") {
                let parts = parse_produce_response(answer.body, answer.version).expect("parse");
                assert!(parts.iter().all(|p| p.error_code == 0), "{parts:?}");
                answered.push(answer.tag);
            }
            answered
        });
        for i in 0..10usize {
            let records: Vec<NewRecord> = (0..5)
                .map(|j| (None, Some(Bytes::from(format!("m{i}-{j}"))), 1000))
                .collect();
            let batch = encode_batch(&records, Compression::None).expect("batch");
            let parts: Vec<PartitionRecords> = (0..3)
                .map(|p| PartitionRecords {
                    topic: "client-t",
                    partition: p,
                    records: &batch,
                })
                .collect();
            let body = ProduceBody::new(version, -1, 10_000, &parts);
            writer
                .send(ApiKey::Produce, version, &body.slices(), i)
                .expect("send");
        }
        drop(writer);
        assert_eq!(acks.join().expect("reader"), (0..10).collect::<Vec<_>>());

        let ends = admin::list_offsets(&mut conn, "client-t", &[0, 1, 2], admin::LATEST)
            .expect("list offsets");
        assert_eq!(ends, vec![50, 50, 50]);
        let starts = admin::list_offsets(&mut conn, "client-t", &[0, 1, 2], admin::EARLIEST)
            .expect("list offsets");
        assert_eq!(starts, vec![0, 0, 0]);

        let fetch_version = conn
            .versions()
            .pick(ApiKey::Fetch, 4, 12)
            .expect("fetch version");
        let request = fetch_request(
            &[FetchPosition {
                topic: "client-t".into(),
                partition: 1,
                offset: 12,
                partition_max_bytes: 1 << 20,
            }],
            500,
            1,
            1 << 20,
        );
        let body = conn.request_raw(fetch_version, &request).expect("fetch");
        let view = parse_fetch_response(body, fetch_version).expect("parse fetch");
        let part = &view.partitions[0];
        assert_eq!((part.error_code, part.high_watermark), (0, 50));
        let mut values = Vec::new();
        for batch in batches(part.records) {
            let batch = batch.expect("batch");
            assert!(batch.crc_ok());
            batch
                .for_each_record(|offset, _, _, value| {
                    if offset >= 12 {
                        values.push(String::from_utf8_lossy(value.unwrap()).to_string());
                    }
                })
                .expect("records");
        }
        assert_eq!(values.len(), 38);
        assert_eq!(values[0], "m2-2");

        let deleted = admin::delete_topics(&mut conn, &["client-t"], 10_000).expect("delete");
        assert_eq!(deleted[0].error_code, 0, "{deleted:?}");
        let md = admin::metadata(&mut conn, Some(&["client-t"])).expect("metadata");
        assert_ne!(md.topic("client-t").map(|t| t.error_code), Some(0));
    });
}
