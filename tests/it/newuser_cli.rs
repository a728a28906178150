//! What a new user meets first (issue 12, items 21 and 24), against the real `freshet` binary:
//! the broker list is `-b`, `--brokers` or `--bootstrap` for every command that talks to a
//! broker (admin CLI and bench), before or after the subcommand; `start --help` speaks of
//! settings, not of the code's types; a log written to a file carries no colour codes; the
//! bench's warm-up progress lines show no invented 0.00 ms latency; `freshet-bench-out/` is
//! git-ignored.

use crate::common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{broker_bin, within, TestBroker};

/// Bound on each test.
const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Runs `freshet ARGS` with no FRESHET_BROKERS in the environment (only the flags say where the
/// broker is); prints what it wrote.
fn freshet(args: &[&str]) -> Output {
    let output = Command::new(broker_bin())
        .args(args)
        .env_remove("FRESHET_BROKERS")
        .stdin(Stdio::null())
        .output()
        .expect("run freshet");
    eprintln!(
        "$ freshet {}\nexit {:?}\nstdout:\n{}stderr:\n{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every spelling of the broker list, before and after the subcommand, reaches the broker:
/// the admin commands and `bench` alike (a wrong one would try localhost:9092 and fail, or
/// fail to parse).
#[test]
fn broker_list_is_b_brokers_or_bootstrap_before_or_after_any_subcommand() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let addr = broker.addr();
        let a = addr.as_str();
        assert_ok(
            &freshet(&["-b", a, "topic", "create", "spellings", "-p", "1"]),
            "freshet -b ADDR topic create",
        );
        for args in [
            vec!["--brokers", a, "topic", "list"],
            vec!["--bootstrap", a, "topic", "list"],
            vec!["topic", "-b", a, "list"],
            vec!["topic", "list", "--bootstrap", a],
            vec!["topic", "list", "--brokers", a],
        ] {
            let output = freshet(&args);
            assert_ok(&output, &args.join(" "));
            assert!(
                String::from_utf8_lossy(&output.stdout).contains("spellings"),
                "{args:?} did not list the topic"
            );
        }
        assert_ok(
            &freshet(&["--bootstrap", a, "cluster", "info"]),
            "freshet --bootstrap ADDR cluster info",
        );
        let out = tempfile::tempdir().expect("tempdir");
        let dir = out.path().to_str().expect("utf-8 path");
        let bench_flags = [
            "--messages",
            "200",
            "--rate",
            "0",
            "--warmup",
            "0s",
            "--quiet",
            "--out",
            dir,
        ];
        for prefix in [
            vec!["-b", a, "bench"],
            vec!["--brokers", a, "bench"],
            vec!["bench", "-b", a],
            vec!["bench", "--brokers", a],
            vec!["bench", "--bootstrap", a],
        ] {
            let args: Vec<&str> = prefix.iter().chain(&bench_flags).copied().collect();
            assert_ok(&freshet(&args), &args.join(" "));
        }
        // The sweep's workload flags too.
        let args = [
            "-b",
            a,
            "bench",
            "sweep",
            "--partition-counts",
            "1",
            "--steps",
            "1",
            "--start-rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--slo-p99-ms",
            "100000",
            "--out",
            dir,
        ];
        assert_ok(&freshet(&args), "freshet -b ADDR bench sweep");
        // `start` listens; a broker list given to it is refused, not ignored.
        let output = freshet(&["-b", a, "start", "--data-dir", dir]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "start -b must be a usage error"
        );
    });
}

/// `freshet start --help` describes the TOML file by its keys, not by the internal type name.
#[test]
fn start_help_names_no_internal_type() {
    let output = freshet(&["start", "--help"]);
    assert_ok(&output, "freshet start --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--config"), "{help}");
    assert!(!help.contains("BrokerConfig"), "{help}");
}

/// Logs written to a file (as TestBroker does, and as `freshet start 2>broker.log` does) carry
/// no ANSI colour codes; colours are for a terminal only.
#[test]
fn broker_log_written_to_a_file_has_no_colour_codes() {
    within(TEST_LIMIT, || {
        let mut broker = TestBroker::start(1);
        broker.stop();
        let log = broker.log();
        assert!(log.contains("INFO"), "no log lines: {log}");
        assert!(
            !log.contains('\u{1b}'),
            "escape codes in a log file: {:?}",
            log.lines().next()
        );
    });
}

/// The bench's progress lines during the warm-up (whose latencies are not recorded) show no
/// latency figures rather than 0.00 ms; the measured seconds show real ones.
#[test]
fn bench_warm_up_progress_lines_print_no_zero_latency() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        let out = tempfile::tempdir().expect("tempdir");
        let addr = broker.addr();
        let args = [
            "bench",
            "--bootstrap",
            &addr,
            "--rate",
            "500",
            "--warmup",
            "2s",
            "--duration",
            "2s",
            "--out",
            out.path().to_str().expect("utf-8 path"),
        ];
        let output = freshet(&args);
        assert_ok(&output, "freshet bench");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
        let warm_up: Vec<&&str> = progress.iter().filter(|l| l.contains("warm-up")).collect();
        assert!(!warm_up.is_empty(), "no warm-up progress line:\n{stderr}");
        for line in &warm_up {
            let (_, latency) = line.split_once("| publish").expect("a publish column");
            assert!(
                !latency.contains("0.00"),
                "a warm-up line prints a latency of 0.00 ms: {line}"
            );
        }
        // Measured seconds carry figures (p50 of a loopback produce is never exactly 0).
        let measured: Vec<&&str> = progress.iter().filter(|l| l.contains(" run")).collect();
        assert!(
            measured.iter().any(|l| {
                let (_, latency) = l.split_once("| publish").unwrap_or_default();
                latency.chars().any(|c| c.is_ascii_digit())
            }),
            "no measured progress line with a latency:\n{stderr}"
        );
    });
}

/// The bench's default output directory is git-ignored, so a run in a checkout leaves
/// `git status` clean.
#[test]
fn bench_output_directory_is_git_ignored() {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new("git")
        .args(["check-ignore", "-q", "freshet-bench-out/summary.json"])
        .current_dir(root)
        .status();
    match status {
        Ok(s) if s.code() == Some(128) => {
            eprintln!("SKIPPED: {root} is not a git checkout")
        }
        Ok(s) => assert!(s.success(), "freshet-bench-out/ is not git-ignored"),
        Err(e) => eprintln!("SKIPPED: git not available ({e})"),
    }
}
