//! What a run measured: throughput windows, the timeline, the JSON summary, and the result
//! with its histograms (what `report` and `plot` render).

use hdrhistogram::Histogram;
use serde::Serialize;

use super::super::broker_metrics::{BrokerReport, ClientCost};
use super::super::latency::Percentiles;
use super::super::workload::Workload;

/// Throughput over a window.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Throughput {
    /// Messages in the window.
    pub messages: u64,
    /// Value bytes in the window.
    pub bytes: u64,
    /// Window length.
    pub seconds: f64,
    /// Messages per second.
    pub msg_per_s: f64,
    /// MB (10^6 bytes) of values per second.
    pub mb_per_s: f64,
}

impl Throughput {
    pub(super) fn new(messages: u64, bytes: u64, seconds: f64) -> Throughput {
        let per_s = |v: u64| {
            if seconds > 0.0 {
                v as f64 / seconds
            } else {
                0.0
            }
        };
        Throughput {
            messages,
            bytes,
            seconds,
            msg_per_s: per_s(messages),
            mb_per_s: per_s(bytes) / 1e6,
        }
    }
}

/// One point of the throughput timeline (rates over the preceding interval).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the producers started.
    pub t_s: f64,
    /// Acknowledged messages per second.
    pub produce_msg_per_s: f64,
    /// Acknowledged MB per second.
    pub produce_mb_per_s: f64,
    /// Consumed messages per second.
    pub consume_msg_per_s: f64,
    /// Consumed MB per second.
    pub consume_mb_per_s: f64,
    /// Publish latency p99 in this interval, ms.
    pub publish_p99_ms: f64,
    /// End-to-end latency p99 in this interval, ms.
    pub e2e_p99_ms: f64,
}

/// What a run measured; serialized as the JSON summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The workload run.
    pub workload: Workload,
    /// Topics used.
    pub topic_names: Vec<String>,
    /// Start of the run, ms since the epoch.
    pub started_unix_ms: u64,
    /// Produce throughput (acknowledged) over the measured window.
    pub produce: Throughput,
    /// Consume throughput over the measured window (with a backlog: the drain).
    pub consume: Throughput,
    /// Publish latency (intended send to acknowledgement), ms.
    pub publish_latency_ms: Percentiles,
    /// End-to-end latency (intended send to consumption), ms.
    pub e2e_latency_ms: Percentiles,
    /// Messages sent.
    pub sent_messages: u64,
    /// Messages acknowledged (with acks=0: sent).
    pub acked_messages: u64,
    /// Messages whose Produce failed.
    pub failed_messages: u64,
    /// Messages between the log ends before and after the run.
    pub expected_messages: u64,
    /// Messages consumed.
    pub consumed_messages: u64,
    /// Batches whose CRC did not match.
    pub crc_errors: u64,
    /// Consumed == expected == acknowledged, and nothing failed.
    pub counts_match: bool,
    /// Throughput and p99 per second.
    pub timeline: Vec<Sample>,
    /// The first errors seen.
    pub errors: Vec<String>,
    /// What the broker's /metrics said: CPU per GB, the produce stages (issue 16).
    pub broker: BrokerReport,
    /// The client's own CPU and send lag.
    pub client: ClientCost,
    /// The client, not the broker, limited the run.
    pub client_limited: bool,
    /// The line saying whether the client was the limit, and why.
    pub client_verdict: String,
}

/// One sampling interval: start (s since the epoch), length (s), publish and e2e histograms.
pub type Interval = (f64, f64, Histogram<u64>, Histogram<u64>);

/// A run's summary plus its histograms.
pub struct RunResult {
    /// The summary.
    pub summary: Summary,
    /// Publish latency over the measured window (µs).
    pub publish: Histogram<u64>,
    /// End-to-end latency over the measured window (µs).
    pub e2e: Histogram<u64>,
    /// Per-second histograms.
    pub intervals: Vec<Interval>,
}
