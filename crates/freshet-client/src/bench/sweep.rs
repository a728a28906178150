//! Capacity planning: `freshet bench sweep` raises the target rate step by step until a latency
//! objective fails, for each partition count (and, when it starts the brokers itself, each
//! shard count), and reports the highest rate that met it.
//!
//! A step passes when the chosen latency's p99 is within the objective, the producers reached
//! at least [`ACHIEVED_FRACTION_MIN`] of the target rate, and no message failed. Rates grow by
//! `factor` from `start_rate`; after the first failure one more step halfway between the last
//! pass and the failure refines the answer. Every step runs the workload afresh (new topics),
//! with its own warm-up.
//!
//! With `shard_counts`, the sweep starts `freshet start --shards N` itself (this executable, a
//! fresh data directory under `data_dir`, a free 127.0.0.1 port) for each N and stops it after,
//! removing that data directory;
//! otherwise it measures the broker at `bootstrap` as it is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plot::{line_chart, Chart, LineStyle, Series};
use super::run::run;
use super::workload::Workload;
use crate::{ConnectOptions, Connection};

/// A step must reach this fraction of its target rate to pass (the measured window includes
/// the wait for the last acknowledgements, so a short step never quite reaches 100%).
pub const ACHIEVED_FRACTION_MIN: f64 = 0.9;

/// Which latency the objective applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SloMetric {
    /// Intended send to acknowledgement.
    Publish,
    /// Intended send to consumption.
    E2e,
}

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The workload of every step (its rate is replaced).
    pub base: Workload,
    /// Partition counts to try.
    pub partition_counts: Vec<i32>,
    /// Shard counts to try (brokers started by the sweep); empty: the broker at `bootstrap`.
    pub shard_counts: Vec<usize>,
    /// Where started brokers keep their data.
    pub data_dir: PathBuf,
    /// First target rate, msg/s.
    pub start_rate: f64,
    /// Rate multiplier per step (> 1).
    pub factor: f64,
    /// Most steps per configuration.
    pub steps_max: usize,
    /// The objective: p99 of `metric` at most this many ms.
    pub slo_p99_ms: f64,
    /// The latency the objective applies to.
    pub metric: SloMetric,
}

/// One step of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// Broker shards (None: the broker as given).
    pub shards: Option<usize>,
    /// Partitions.
    pub partitions: i32,
    /// Target rate, msg/s.
    pub target_rate: f64,
    /// Acknowledged rate, msg/s.
    pub achieved_rate: f64,
    /// Acknowledged MB/s.
    pub achieved_mb_per_s: f64,
    /// p99 of the objective's latency, ms.
    pub p99_ms: f64,
    /// Whether the step met the objective.
    pub passed: bool,
}

/// The best sustainable rate of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct SweepBest {
    /// Broker shards (None: the broker as given).
    pub shards: Option<usize>,
    /// Partitions.
    pub partitions: i32,
    /// Highest target rate that passed, msg/s (0: none did).
    pub rate: f64,
    /// Its throughput in MB/s.
    pub mb_per_s: f64,
    /// Its p99, ms.
    pub p99_ms: f64,
}

/// The whole sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The objective, ms.
    pub slo_p99_ms: f64,
    /// The latency it applies to.
    pub metric: SloMetric,
    /// Every step.
    pub points: Vec<SweepPoint>,
    /// Per configuration, the best passing step.
    pub best: Vec<SweepBest>,
}

/// A broker started for the sweep; killed when dropped.
struct SpawnedBroker {
    child: Child,
    addr: String,
}

impl SpawnedBroker {
    fn start(shards: usize, data_dir: &Path) -> Result<SpawnedBroker, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(exe)
            .args(["start", "--listen", &addr, "--shards", &shards.to_string()])
            .args(["--log", "warn", "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start broker: {e}"))?;
        let broker = SpawnedBroker { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        let options = ConnectOptions {
            io_timeout: Duration::from_secs(2),
            ..ConnectOptions::default()
        };
        while Connection::connect(&broker.addr, &options).is_err() {
            if Instant::now() > deadline {
                return Err(format!("broker on {} did not start in 30 s", broker.addr));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(broker)
    }
}

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the sweep; prints each step's outcome to stderr.
pub fn sweep(options: &SweepOptions) -> Result<SweepReport, String> {
    if options.factor <= 1.0 || options.start_rate <= 0.0 || options.steps_max == 0 {
        return Err("sweep needs --start-rate > 0, --factor > 1 and --steps >= 1".into());
    }
    let shard_counts: Vec<Option<usize>> = if options.shard_counts.is_empty() {
        vec![None]
    } else {
        options.shard_counts.iter().map(|&s| Some(s)).collect()
    };
    let mut points = Vec::new();
    let mut best = Vec::new();
    for shards in shard_counts {
        let dir = shards.map(|n| options.data_dir.join(format!("shards-{n}")));
        let broker = match (shards, &dir) {
            (Some(n), Some(dir)) => {
                let _ = std::fs::remove_dir_all(dir);
                Some(SpawnedBroker::start(n, dir)?)
            }
            _ => None,
        };
        for &partitions in &options.partition_counts {
            let mut workload = options.base.clone();
            workload.partitions = partitions;
            if let Some(b) = &broker {
                workload.bootstrap = b.addr.clone();
            }
            let mut last_pass: Option<SweepPoint> = None;
            let mut rate = options.start_rate;
            let mut refined = false;
            for _ in 0..options.steps_max {
                let point = step(&workload, options, shards, rate)?;
                points.push(point.clone());
                if point.passed {
                    last_pass = Some(point);
                    if refined {
                        break;
                    }
                    rate *= options.factor;
                } else {
                    let low = last_pass.as_ref().map_or(0.0, |p| p.target_rate);
                    if refined || low == 0.0 {
                        break;
                    }
                    refined = true;
                    rate = (low + rate) / 2.0;
                }
            }
            best.push(SweepBest {
                shards,
                partitions,
                rate: last_pass.as_ref().map_or(0.0, |p| p.target_rate),
                mb_per_s: last_pass.as_ref().map_or(0.0, |p| p.achieved_mb_per_s),
                p99_ms: last_pass.as_ref().map_or(0.0, |p| p.p99_ms),
            });
        }
        drop(broker);
        if let Some(dir) = dir {
            // The sweep's own data: gone with its broker.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    Ok(SweepReport {
        slo_p99_ms: options.slo_p99_ms,
        metric: options.metric,
        points,
        best,
    })
}

fn step(
    workload: &Workload,
    options: &SweepOptions,
    shards: Option<usize>,
    rate: f64,
) -> Result<SweepPoint, String> {
    let mut w = workload.clone();
    w.rate = rate;
    let result = run(&w, false)?;
    let s = &result.summary;
    let p99_ms = match options.metric {
        SloMetric::Publish => s.publish_latency_ms.p99,
        SloMetric::E2e => s.e2e_latency_ms.p99,
    };
    let passed = p99_ms <= options.slo_p99_ms
        && s.produce.msg_per_s >= ACHIEVED_FRACTION_MIN * rate
        && s.failed_messages == 0
        && s.errors.is_empty();
    eprintln!(
        "sweep: shards {} partitions {} target {:.0} msg/s: achieved {:.0} msg/s ({:.1} MB/s), p99 {:.2} ms: {}",
        shards.map_or("-".to_string(), |n| n.to_string()),
        w.partitions,
        rate,
        s.produce.msg_per_s,
        s.produce.mb_per_s,
        p99_ms,
        if passed { "pass" } else { "FAIL" }
    );
    Ok(SweepPoint {
        shards,
        partitions: w.partitions,
        target_rate: rate,
        achieved_rate: s.produce.msg_per_s,
        achieved_mb_per_s: s.produce.mb_per_s,
        p99_ms,
        passed,
    })
}

/// The sweep's table: the best sustainable rate per configuration.
pub fn table(report: &SweepReport) -> String {
    let mut out = String::new();
    let metric = match report.metric {
        SloMetric::Publish => "publish",
        SloMetric::E2e => "end-to-end",
    };
    let _ = writeln!(
        out,
        "highest sustainable rate with {metric} p99 <= {} ms:",
        report.slo_p99_ms
    );
    let _ = writeln!(
        out,
        "{:>7} {:>11} {:>14} {:>10} {:>9}",
        "shards", "partitions", "msg/s", "MB/s", "p99 ms"
    );
    for b in &report.best {
        let _ = writeln!(
            out,
            "{:>7} {:>11} {:>14.0} {:>10.1} {:>9.2}",
            b.shards.map_or("-".to_string(), |n| n.to_string()),
            b.partitions,
            b.rate,
            b.mb_per_s,
            b.p99_ms
        );
    }
    out
}

/// p99 by target rate, one line per configuration, with the objective dashed.
pub fn chart(report: &SweepReport) -> String {
    let mut series: Vec<Series> = Vec::new();
    for b in &report.best {
        let mut points: Vec<(f64, f64)> = report
            .points
            .iter()
            .filter(|p| p.shards == b.shards && p.partitions == b.partitions)
            .map(|p| (p.target_rate, p.p99_ms.min(4.0 * report.slo_p99_ms)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series {
            name: match b.shards {
                Some(n) => format!("{n} shard(s), {} partition(s)", b.partitions),
                None => format!("{} partition(s)", b.partitions),
            },
            points,
            style: LineStyle::Solid,
        });
    }
    line_chart(
        &Chart {
            title: "p99 latency by target rate (clipped at 4x the objective)",
            x_label: "target rate (msg/s)",
            y_label: "p99 latency (ms)",
            x_ticks: Vec::new(),
            threshold: Some((
                report.slo_p99_ms,
                format!("objective {} ms", report.slo_p99_ms),
            )),
        },
        &series,
    )
}
