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

use super::latency::Percentiles;
use super::plot;
use super::run::{RunResult, Summary};

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
    out
}

/// The HdrHistogram interval log of a run (text, V2 deflate-compressed histograms).
pub fn hdr_log(result: &RunResult) -> Result<Vec<u8>, String> {
    let start_s = result.summary.started_unix_ms as f64 / 1000.0;
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("freshet bench: latency in microseconds; tags publish and e2e")
        .with_start_time(UNIX_EPOCH + Duration::from_secs_f64(start_s))
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| e.to_string())?;
    for (interval_start, length, publish, e2e) in &result.intervals {
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
