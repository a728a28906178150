//! Reporting a run: the percentile table printed at the end, and the files written to the
//! output directory:
//! - `summary.json`: the [`Summary`] (workload, throughput, percentiles, counts, timeline);
//! - `latency.hlog`: an HdrHistogram interval log (V2, compressed; one `publish` and one `e2e`
//!   histogram per second, values in microseconds), readable by HdrHistogram's
//!   `HistogramLogAnalyzer` and `hdr-plot`;
//! - `latency.svg`: latency by percentile; `throughput.svg`: throughput over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use super::broker_metrics::BrokerReport;
use super::latency::Percentiles;
use super::plot;
use super::run::{Interval, RunResult, Summary};

/// The human-readable report of a run.
pub fn table(summary: &Summary) -> String {
    let w = &summary.workload;
    let mut out = String::new();
    let rate = if w.rate > 0.0 {
        format!("{} msg/s", w.rate)
    } else {
        "max rate".to_string()
    };
    let length = if w.backlog_mb > 0.0 {
        format!("backlog of {} MB", w.backlog_mb)
    } else if w.messages > 0 {
        format!("{} messages", w.messages)
    } else {
        format!("{} s (+{} s warm-up)", w.duration_s, w.warmup_s)
    };
    let _ = writeln!(
        out,
        "workload: {} topic(s) x {} partition(s), {} producer(s) and {} consumer(s) per topic, {} B messages, {rate}, acks={}, compression {}, linger {} ms, batch {} B, {length}",
        w.topics, w.partitions, w.producers, w.consumers, w.message_bytes, w.acks, w.compression,
        w.linger_ms, w.batch_bytes
    );
    let _ = writeln!(
        out,
        "{:<12} {:>12} {:>10} {:>8}",
        "throughput", "msg/s", "MB/s", "s"
    );
    for (name, t) in [("produce", &summary.produce), ("consume", &summary.consume)] {
        let _ = writeln!(
            out,
            "{name:<12} {:>12.0} {:>10.1} {:>8.1}",
            t.msg_per_s, t.mb_per_s, t.seconds
        );
    }
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "latency ms", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "samples"
    );
    let row = |out: &mut String, name: &str, p: &Percentiles| {
        let _ = writeln!(
            out,
            "{name:<12} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>10}",
            p.p50, p.p90, p.p99, p.p99_9, p.p99_99, p.max, p.mean, p.count
        );
    };
    row(&mut out, "publish", &summary.publish_latency_ms);
    row(&mut out, "end-to-end", &summary.e2e_latency_ms);
    let _ = writeln!(
        out,
        "messages: sent {}, acknowledged {}, failed {}, expected {}, consumed {}, CRC errors {}: {}",
        summary.sent_messages,
        summary.acked_messages,
        summary.failed_messages,
        summary.expected_messages,
        summary.consumed_messages,
        summary.crc_errors,
        if summary.counts_match { "counts match" } else { "COUNTS DO NOT MATCH" }
    );
    for e in &summary.errors {
        let _ = writeln!(out, "error: {e}");
    }
    broker_lines(&mut out, &summary.broker);
    let _ = writeln!(out, "{}", summary.client_verdict);
    out
}

/// Broker CPU per GB and the server-side produce stages (issue 16).
fn broker_lines(out: &mut String, b: &BrokerReport) {
    if let Some(why) = &b.unavailable {
        let _ = writeln!(out, "broker CPU: not available ({why})");
        return;
    }
    let per_gb = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let cpu_total: f64 = [b.produce_phase, b.drain_phase]
        .iter()
        .flatten()
        .map(|p| p.cpu_seconds)
        .sum();
    let _ = writeln!(
        out,
        "broker CPU: {} s per GB produced, {} s per GB consumed (process CPU from {}){}{}",
        per_gb(b.cpu_s_per_gb_produced),
        per_gb(b.cpu_s_per_gb_consumed),
        b.url,
        if b.mixed {
            "; producing and consuming ran together, so each includes the other's CPU (--backlog-mb separates them)"
        } else {
            ""
        },
        if cpu_total < 1.0 {
            "; under 1 s of broker CPU in all, counted in 10 ms ticks: rough"
        } else {
            ""
        }
    );
    for (name, p) in [("produce", &b.produce_phase), ("drain", &b.drain_phase)] {
        if let Some(p) = p {
            let _ = writeln!(
                out,
                "broker CPU {name:<8} phase: {:.2} s CPU over {:.1} s ({:.2} cores), {:.3} GB in, {:.3} GB out",
                p.cpu_seconds,
                p.seconds,
                p.cores(),
                p.gb_in,
                p.gb_out
            );
        }
    }
    if b.other_broker {
        let _ = writeln!(
            out,
            "warning: the broker at {} counted under half of this run's bytes: is it the broker at --bootstrap?",
            b.url
        );
    }
    if b.stages.iter().all(|s| s.count == 0) {
        return;
    }
    let _ = writeln!(
        out,
        "{:<12} {:>10} {:>9} {:>9} {:>9}   (server-side produce stages; p50/p99: bucket bounds; request: dispatch to answer ready, all of it)",
        "stage ms", "count", "mean", "p50<=", "p99<="
    );
    for s in &b.stages {
        let bound = |v: Option<f64>| match v {
            _ if s.count == 0 => "-".to_string(),
            None => ">10000".to_string(),
            Some(v) => format!("{v}"),
        };
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>9.3} {:>9} {:>9}",
            s.stage,
            s.count,
            s.mean_ms,
            bound(s.p50_le_ms),
            bound(s.p99_le_ms)
        );
    }
}

/// The HdrHistogram interval log of a run (text, V2 deflate-compressed histograms).
pub fn hdr_log(result: &RunResult) -> Result<Vec<u8>, String> {
    hdr_log_of(result.summary.started_unix_ms, &result.intervals)
}

/// The interval log of `intervals` (start in s since the epoch, length in s, publish, e2e),
/// with timestamps relative to `started_unix_ms` (the log's StartTime).
pub fn hdr_log_of(started_unix_ms: u64, intervals: &[Interval]) -> Result<Vec<u8>, String> {
    let start_s = started_unix_ms as f64 / 1000.0;
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("freshet bench: latency in microseconds; tags publish and e2e")
        .with_start_time(UNIX_EPOCH + Duration::from_secs_f64(start_s))
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| e.to_string())?;
    for (interval_start, length, publish, e2e) in intervals {
        let from = Duration::from_secs_f64((interval_start - start_s).max(0.0));
        let length = Duration::from_secs_f64(length.max(0.0));
        for (tag, h) in [("publish", publish), ("e2e", e2e)] {
            writer
                .write_histogram(h, from, length, Tag::new(tag))
                .map_err(|e| format!("{e:?}"))?;
        }
    }
    drop(writer);
    Ok(out)
}

/// Writes summary.json, latency.hlog, latency.svg and throughput.svg into `dir`.
pub fn write_outputs(dir: &Path, result: &RunResult) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let json = serde_json::to_vec_pretty(&result.summary).map_err(|e| e.to_string())?;
    let files = [
        ("summary.json", json),
        ("latency.hlog", hdr_log(result)?),
        (
            "latency.svg",
            plot::latency_by_percentile(
                "Latency by percentile",
                &[("publish", &result.publish), ("end-to-end", &result.e2e)],
            )
            .into_bytes(),
        ),
        (
            "throughput.svg",
            plot::throughput_over_time(&result.summary.timeline).into_bytes(),
        ),
    ];
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::Histogram;

    /// The log reads back with HdrHistogram's own parser: StartTime, tags, relative interval
    /// starts, and histograms with the samples written.
    #[test]
    fn hdr_log_reads_back() {
        let started_ms = 1_700_000_000_000u64;
        let mut intervals = Vec::new();
        for i in 0..3u64 {
            let mut publish = super::super::latency::new_histogram();
            let mut e2e = super::super::latency::new_histogram();
            for v in 1..=100 * (i + 1) {
                publish.record(v).expect("in range");
                e2e.record(v * 2).expect("in range");
            }
            intervals.push((1_700_000_000.0 + i as f64, 1.0, publish, e2e));
        }
        let log = hdr_log_of(started_ms, &intervals).expect("log");
        let mut start = None;
        let mut seen = Vec::new();
        for entry in IntervalLogIterator::new(&log) {
            match entry.expect("parses") {
                LogEntry::StartTime(t) => start = Some(t),
                LogEntry::BaseTime(_) => panic!("no BaseTime written"),
                LogEntry::Interval(h) => {
                    let bytes = base64_decode(h.encoded_histogram());
                    let hist: Histogram<u64> = Deserializer::new()
                        .deserialize(&mut &bytes[..])
                        .expect("histogram");
                    seen.push((
                        h.tag().map(|t| t.as_str().to_string()),
                        h.start_timestamp().as_secs(),
                        hist.len(),
                        hist.max(),
                    ));
                }
            }
        }
        assert_eq!(start.map(|t| t.as_secs()), Some(1_700_000_000));
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[0], (Some("publish".into()), 0, 100, 100));
        assert_eq!(seen[5].0.as_deref(), Some("e2e"));
        assert_eq!((seen[5].1, seen[5].2), (2, 300));
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
        let mut out = Vec::new();
        for chunk in clean.chunks(4) {
            let mut acc = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                acc |= u32::from(value(c)) << (18 - 6 * i);
            }
            let bytes = acc.to_be_bytes();
            out.extend_from_slice(&bytes[1..chunk.len()]);
        }
        out
    }
}
