//! Issue 16, against the real `freshet` binary: /metrics carries the broker's process CPU
//! (`process_cpu_seconds_total`, per-thread CPU) and the per-stage produce histograms, and
//! `freshet bench` reads them to print broker CPU seconds per GB produced and consumed, the
//! server-side produce stages and whether the client was the limit (table and JSON). No speed
//! is asserted: only that the figures are there and consistent with the run.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{broker_bin, metric_sum, metric_value, within, TestBroker};

const TEST_LIMIT: Duration = Duration::from_secs(180);
const STAGES: [&str; 5] = ["queued", "validated", "written", "fdatasync", "answered"];

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

fn metrics(broker: &TestBroker) -> String {
    let (status, text) = broker.admin_get("/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    text
}

#[test]
fn metrics_export_process_cpu_and_every_produce_stage() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        let before = metrics(&broker);
        let cpu_before = metric_value(&before, "process_cpu_seconds_total").expect("cpu series");
        assert!(metric_sum(&before, "freshet_thread_cpu_seconds_total") > 0.0);
        let out = tempfile::tempdir().expect("tempdir");
        let url = format!("http://{}/metrics", broker.admin_addr());
        let run = bench(
            &broker,
            out.path(),
            &[
                "--messages",
                "3000",
                "--rate",
                "0",
                "--partitions",
                "2",
                "--broker-metrics",
                &url,
            ],
        );
        assert!(run.status.success(), "bench failed");
        let after = metrics(&broker);
        let cpu_after = metric_value(&after, "process_cpu_seconds_total").unwrap();
        assert!(cpu_after > cpu_before, "{cpu_before} -> {cpu_after}");
        let user = metric_value(&after, "freshet_process_cpu_seconds_total{mode=\"user\"}");
        assert!(user.is_some_and(|u| u > 0.0 && u <= cpu_after));
        for stage in STAGES {
            let series = format!("freshet_produce_stage_seconds_count{{stage=\"{stage}\"}}");
            let n = metric_value(&after, &series).unwrap_or(0.0);
            assert!(n > 0.0, "{series} is {n}");
            let inf =
                format!("freshet_produce_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}}");
            assert_eq!(metric_value(&after, &inf), Some(n));
        }
    });
}

#[test]
fn bench_prints_broker_cpu_per_gb_stages_and_the_client_verdict() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(2);
        let out = tempfile::tempdir().expect("tempdir");
        let url = format!("http://{}/metrics", broker.admin_addr());
        let run = bench(
            &broker,
            out.path(),
            &[
                "--backlog-mb",
                "4",
                "--partitions",
                "2",
                "--rate",
                "0",
                "--broker-metrics",
                &url,
            ],
        );
        assert!(run.status.success(), "bench failed");
        let stdout = String::from_utf8_lossy(&run.stdout);
        let cpu_line = stdout
            .lines()
            .find(|l| l.starts_with("broker CPU: "))
            .expect("a broker CPU line");
        assert!(cpu_line.contains("s per GB produced"), "{cpu_line}");
        assert!(!cpu_line.contains("not available"), "{cpu_line}");
        assert!(!stdout.contains("warning: the broker at"), "{stdout}");
        for stage in STAGES.iter().chain(&["request"]) {
            assert!(
                stdout.lines().any(|l| l.starts_with(stage)),
                "no {stage} row in\n{stdout}"
            );
        }
        assert!(
            stdout.lines().any(|l| l.starts_with("client not the limit")
                || l.starts_with("client-limited")
                || l.starts_with("broker-limited")),
            "{stdout}"
        );
        let text = std::fs::read_to_string(out.path().join("summary.json")).unwrap();
        let s: serde_json::Value = serde_json::from_str(&text).unwrap();
        let b = &s["broker"];
        assert!(b["unavailable"].is_null(), "{b}");
        assert!(b["cpu_s_per_gb_produced"].as_f64().unwrap() > 0.0, "{b}");
        // A 4 MB drain may take less than one 10 ms CPU tick: present, not necessarily > 0.
        assert!(b["cpu_s_per_gb_consumed"].as_f64().unwrap() >= 0.0, "{b}");
        assert_eq!(b["mixed"], false);
        // The broker counted at least the value bytes the run wrote (4 MB) in, and out.
        assert!(
            b["produce_phase"]["gb_in"].as_f64().unwrap() >= 0.004,
            "{b}"
        );
        assert!(b["drain_phase"]["gb_out"].as_f64().unwrap() >= 0.004, "{b}");
        assert!(b["stages"][3]["count"].as_u64().unwrap() > 0, "{b}");
        assert!(s["client"]["cpu_seconds"].as_f64().unwrap() > 0.0);
        assert!(s["client_verdict"].as_str().is_some());
    });
}

#[test]
fn bench_without_a_metrics_endpoint_still_runs_and_says_so() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let out = tempfile::tempdir().expect("tempdir");
        let closed = format!("http://127.0.0.1:{}/metrics", common::free_port());
        let run = bench(
            &broker,
            out.path(),
            &[
                "--messages",
                "500",
                "--rate",
                "0",
                "--broker-metrics",
                &closed,
            ],
        );
        assert!(run.status.success(), "bench failed");
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(stdout.contains("broker CPU: not available"), "{stdout}");
    });
}
