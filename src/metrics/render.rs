//! The Prometheus text exposition format (version 0.0.4) for the gathered shard snapshots.
//!
//! Pure: snapshots in, text out. Per-shard series carry a `shard` label; per-partition traffic
//! is summed over the shards whose connections carried it; latency histograms are per API
//! (summed over shards). Label values are escaped as the format requires (`\\`, `\"`, `\n`).

use std::collections::BTreeMap;
use std::fmt::Write;

use kafka_protocol::messages::ApiKey;

use super::{
    HistogramSnapshot, PartitionCounters, ProduceStage, ShardSnapshot, LATENCY_BUCKETS_US,
};

/// Broker-wide values that are not per shard.
#[derive(Clone, Debug, Default)]
pub struct BrokerInfo {
    pub ready: bool,
    pub resident_memory_bytes: Option<u64>,
    pub uptime_seconds: f64,
    /// User + system CPU time of the broker process (issue 16).
    pub cpu: Option<super::procstat::CpuTimes>,
    /// CPU time per thread name (shards, helper threads).
    pub threads: Vec<(String, super::procstat::CpuTimes)>,
}

fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("Unknown{key}"),
    }
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, bound_us) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += h.buckets.get(i).copied().unwrap_or(0);
            let le = format!("{}", *bound_us as f64 / 1e6);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative);
        }
        let count = h.count();
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, count);
        self.sample(&format!("{name}_sum"), labels, h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, count);
    }

    /// One gauge or counter per shard.
    fn per_shard(
        &mut self,
        shards: &[ShardSnapshot],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&ShardSnapshot) -> u64,
    ) {
        self.header(name, kind, help);
        for s in shards {
            self.sample(name, &[("shard", &s.shard.to_string())], value(s));
        }
    }
}

/// Renders every metric of the broker, section by section.
pub fn render(info: &BrokerInfo, shards: &[ShardSnapshot]) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    render_process(&mut o, info, shards);
    render_cpu(&mut o, info);
    render_requests(&mut o, shards);
    render_produce_stages(&mut o, shards);
    render_connections(&mut o, shards);
    render_traffic(&mut o, shards);
    let partitions = render_storage(&mut o, shards);
    render_groups(&mut o, shards, &partitions);
    render_fetch_sessions(&mut o, shards);
    render_txn_markers(&mut o, shards);
    o.0
}

/// Readiness, shard count, uptime, resident memory.
fn render_process(o: &mut Out, info: &BrokerInfo, shards: &[ShardSnapshot]) {
    o.header(
        "freshet_ready",
        "gauge",
        "1 once every shard has opened its partitions and listens.",
    );
    o.sample("freshet_ready", &[], u8::from(info.ready));
    o.header(
        "freshet_shards",
        "gauge",
        "Shards (pinned executor threads).",
    );
    o.sample("freshet_shards", &[], shards.len());
    o.header(
        "freshet_uptime_seconds",
        "gauge",
        "Seconds since the broker process started.",
    );
    o.sample("freshet_uptime_seconds", &[], info.uptime_seconds);
    if let Some(rss) = info.resident_memory_bytes {
        o.header(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        o.sample("process_resident_memory_bytes", &[], rss);
    }
}

/// Process CPU (the Prometheus client convention's `process_cpu_seconds_total`: user +
/// system) and CPU per thread (issue 16).
fn render_cpu(o: &mut Out, info: &BrokerInfo) {
    if let Some(cpu) = info.cpu {
        o.header(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        o.sample("process_cpu_seconds_total", &[], cpu.total_seconds());
        o.header(
            "freshet_process_cpu_seconds_total",
            "counter",
            "CPU time of the broker process in seconds, by mode (user, system).",
        );
        o.sample(
            "freshet_process_cpu_seconds_total",
            &[("mode", "user")],
            cpu.user_seconds,
        );
        o.sample(
            "freshet_process_cpu_seconds_total",
            &[("mode", "system")],
            cpu.system_seconds,
        );
    }
    if !info.threads.is_empty() {
        o.header(
            "freshet_thread_cpu_seconds_total",
            "counter",
            "User and system CPU time in seconds, by thread name (shard threads, helper threads; threads of one name summed).",
        );
        for (name, t) in &info.threads {
            o.sample(
                "freshet_thread_cpu_seconds_total",
                &[("thread", name)],
                t.total_seconds(),
            );
        }
    }
}

/// The stages of a produce (issue 16), summed over shards.
fn render_produce_stages(o: &mut Out, shards: &[ShardSnapshot]) {
    o.header(
        "freshet_produce_stage_seconds",
        "histogram",
        "Time of each stage of a produce: queued (read to handler start), validated (append start to offsets assigned, per partition), written (to the file), fdatasync (to durable), answered (answer ready to written to the socket).",
    );
    for stage in ProduceStage::ALL {
        let mut h = HistogramSnapshot::default();
        for s in shards {
            if let Some(x) = s.produce_stages.get(stage as usize) {
                h.merge(x);
            }
        }
        o.histogram(
            "freshet_produce_stage_seconds",
            &[("stage", stage.name())],
            &h,
        );
    }
}

/// Requests per API and shard: counts, failures, latency, handler panics, partition errors.
// Long: a flat list of metric families, one after another, as they appear in the exposition.
fn render_requests(o: &mut Out, shards: &[ShardSnapshot]) {
    o.header(
        "freshet_requests_total",
        "counter",
        "Requests handled, by API and shard.",
    );
    for s in shards {
        let shard = s.shard.to_string();
        for (key, requests, _, _) in &s.apis {
            o.sample(
                "freshet_requests_total",
                &[("api", &api_name(*key)), ("shard", &shard)],
                requests,
            );
        }
    }
    o.header(
        "freshet_request_failures_total",
        "counter",
        "Requests that closed their connection (malformed, unsupported, unencodable), by API and shard.",
    );
    for s in shards {
        let shard = s.shard.to_string();
        for (key, _, failures, _) in &s.apis {
            o.sample(
                "freshet_request_failures_total",
                &[("api", &api_name(*key)), ("shard", &shard)],
                failures,
            );
        }
    }
    let mut latency: BTreeMap<i16, HistogramSnapshot> = BTreeMap::new();
    for s in shards {
        for (key, _, _, h) in &s.apis {
            latency.entry(*key).or_default().merge(h);
        }
    }
    o.header(
        "freshet_request_latency_seconds",
        "histogram",
        "Time from dispatch to the answer being ready, by API (long-poll waits included).",
    );
    for (key, h) in &latency {
        o.histogram(
            "freshet_request_latency_seconds",
            &[("api", &api_name(*key))],
            h,
        );
    }
    o.per_shard(
        shards,
        "freshet_handler_panics_total",
        "counter",
        "Request handlers that panicked (their connection was closed).",
        |s| s.handler_panics,
    );
    let mut errors: BTreeMap<(i16, i16), u64> = BTreeMap::new();
    for s in shards {
        for (k, v) in &s.partition_errors {
            *errors.entry(*k).or_default() += v;
        }
    }
    o.header(
        "freshet_partition_errors_total",
        "counter",
        "Partition-level error codes answered, by API and Kafka error code.",
    );
    for ((api, code), n) in &errors {
        o.sample(
            "freshet_partition_errors_total",
            &[("api", &api_name(*api)), ("error_code", &code.to_string())],
            n,
        );
    }
}

/// Connections and internal queues, per shard.
fn render_connections(o: &mut Out, shards: &[ShardSnapshot]) {
    o.per_shard(
        shards,
        "freshet_connections",
        "gauge",
        "Open client connections.",
        |s| s.connections,
    );
    o.per_shard(
        shards,
        "freshet_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        |s| s.connections_accepted,
    );
    o.per_shard(
        shards,
        "freshet_connections_refused_total",
        "counter",
        "Client connections refused as accepted (connections_per_shard_max, max_connections_per_ip, an IP over its connection_creation_rate quota).",
        |s| s.connections_refused,
    );
    o.per_shard(
        shards,
        "freshet_authentications_total",
        "counter",
        "Client authentications that succeeded (TLS handshakes on SSL listeners, SASL).",
        |s| s.authentications,
    );
    o.per_shard(
        shards,
        "freshet_authentication_failures_total",
        "counter",
        "Failed TLS handshakes and SASL authentications.",
        |s| s.authentication_failures,
    );
    let (tls, not_authorized) = shards.iter().fold((0, 0), |(a, b), s| {
        (a + s.controller_refused.0, b + s.controller_refused.1)
    });
    o.header(
        "freshet_controller_connections_refused_total",
        "counter",
        "Controller-listener connections (in or out) refused: TLS handshake failed, or the peer's principal neither a super user nor allowed CLUSTER_ACTION.",
    );
    o.sample(
        "freshet_controller_connections_refused_total",
        &[("reason", "tls_handshake")],
        tls,
    );
    o.sample(
        "freshet_controller_connections_refused_total",
        &[("reason", "not_authorized")],
        not_authorized,
    );
    o.per_shard(
        shards,
        "freshet_shard_queue_depth",
        "gauge",
        "Jobs waiting in the shard's cross-shard inbox.",
        |s| s.inbox_depth,
    );
    o.per_shard(
        shards,
        "freshet_inflight_request_bytes",
        "gauge",
        "Bytes of requests read on the shard and not yet answered.",
        |s| s.inflight_request_bytes,
    );
}

/// Data in and out, per shard (the connection's shard) and per partition.
fn render_traffic(o: &mut Out, shards: &[ShardSnapshot]) {
    type Pick = fn(&PartitionCounters) -> u64;
    let flows: [(&str, &str, Pick); 5] = [
        ("bytes_in", "Record bytes acknowledged to producers", |c| {
            c.bytes_in
        }),
        (
            "batches_in",
            "Record batches acknowledged to producers",
            |c| c.batches_in,
        ),
        ("records_in", "Records acknowledged to producers", |c| {
            c.records_in
        }),
        ("bytes_out", "Record bytes sent to consumers", |c| {
            c.bytes_out
        }),
        ("batches_out", "Record batches sent to consumers", |c| {
            c.batches_out
        }),
    ];
    let totals: Vec<PartitionCounters> = shards.iter().map(ShardSnapshot::traffic_total).collect();
    let mut by_partition: BTreeMap<(String, i32), PartitionCounters> = BTreeMap::new();
    for s in shards {
        for (k, c) in &s.traffic {
            by_partition.entry(k.clone()).or_default().add(c);
        }
    }
    for (what, help, pick) in flows {
        let name = format!("freshet_shard_{what}_total");
        o.header(
            &name,
            "counter",
            &format!("{help}, by the shard of the connection."),
        );
        for (s, t) in shards.iter().zip(&totals) {
            o.sample(&name, &[("shard", &s.shard.to_string())], pick(t));
        }
        let name = format!("freshet_partition_{what}_total");
        o.header(&name, "counter", &format!("{help}, by partition."));
        for ((topic, partition), c) in &by_partition {
            o.sample(
                &name,
                &[("topic", topic), ("partition", &partition.to_string())],
                pick(c),
            );
        }
    }
}

/// Storage per shard and per partition; returns the partitions sorted by topic and index.
// Long: a flat list of metric families, one after another, as they appear in the exposition.
fn render_storage<'a>(o: &mut Out, shards: &'a [ShardSnapshot]) -> Vec<&'a super::PartitionState> {
    o.per_shard(
        shards,
        "freshet_storage_size_bytes",
        "gauge",
        "Bytes of log segments of the partitions the shard owns.",
        |s| s.partitions.iter().map(|p| p.size_bytes).sum(),
    );
    o.per_shard(
        shards,
        "freshet_partitions",
        "gauge",
        "Partitions the shard owns and has open.",
        |s| s.partitions.len() as u64,
    );
    o.header(
        "freshet_fsync_latency_seconds",
        "histogram",
        "fdatasync latency of partition log flush rounds (one per group commit), by shard.",
    );
    for s in shards {
        o.histogram(
            "freshet_fsync_latency_seconds",
            &[("shard", &s.shard.to_string())],
            &s.fsync,
        );
    }
    o.per_shard(
        shards,
        "freshet_fsync_failures_total",
        "counter",
        "fdatasyncs of partition logs that failed.",
        |s| s.fsync_failures,
    );
    render_slow_disk(o, shards);
    let mut partitions: Vec<_> = shards.iter().flat_map(|s| &s.partitions).collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    type PickP = fn(&super::PartitionState) -> String;
    let gauges: [(&str, &str, &str, PickP); 5] = [
        (
            "freshet_partition_size_bytes",
            "gauge",
            "Bytes of the partition's log segments.",
            |p| p.size_bytes.to_string(),
        ),
        (
            "freshet_partition_high_watermark",
            "gauge",
            "High watermark (end of durable data).",
            |p| p.high_watermark.to_string(),
        ),
        (
            "freshet_partition_log_start_offset",
            "gauge",
            "Log start offset.",
            |p| p.log_start_offset.to_string(),
        ),
        (
            "freshet_partition_segments",
            "gauge",
            "Segments in the partition's log.",
            |p| p.segments.to_string(),
        ),
        (
            "freshet_partition_flushes_total",
            "counter",
            "Flush rounds (one fdatasync each) since the partition was opened.",
            |p| p.flushes.to_string(),
        ),
    ];
    for (name, kind, help, pick) in gauges {
        o.header(name, kind, help);
        for p in &partitions {
            o.sample(
                name,
                &[("topic", &p.topic), ("partition", &p.partition.to_string())],
                pick(p),
            );
        }
    }
    partitions
}

/// Consumer groups (coordinator shard): states, members, committed offsets, lag.
fn render_groups(o: &mut Out, shards: &[ShardSnapshot], partitions: &[&super::PartitionState]) {
    if let Some(groups) = shards.iter().find_map(|s| s.groups.as_ref()) {
        o.header(
            "freshet_groups",
            "gauge",
            "Consumer groups, by state (groups known only by committed offsets count as Empty).",
        );
        for (state, n) in &groups.by_state {
            o.sample("freshet_groups", &[("state", state)], n);
        }
        o.header(
            "freshet_group_members",
            "gauge",
            "Members of all consumer groups.",
        );
        o.sample("freshet_group_members", &[], groups.members);
        o.header(
            "freshet_committed_offsets",
            "gauge",
            "Committed offsets kept (all groups).",
        );
        o.sample("freshet_committed_offsets", &[], groups.committed_offsets);
        let hw: BTreeMap<(&str, i32), i64> = partitions
            .iter()
            .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
            .collect();
        o.header(
            "freshet_consumer_lag",
            "gauge",
            "High watermark minus the group's committed offset, by group and partition.",
        );
        for (group, topic, partition, offset) in &groups.committed {
            if let Some(hw) = hw.get(&(topic.as_str(), *partition)) {
                o.sample(
                    "freshet_consumer_lag",
                    &[
                        ("group", group),
                        ("topic", topic),
                        ("partition", &partition.to_string()),
                    ],
                    (hw - offset).max(0),
                );
            }
        }
    }
}

/// Issue 18's series: slow fdatasyncs, produces that timed out, reactor stalls (count and
/// length), per shard.
fn render_slow_disk(o: &mut Out, shards: &[ShardSnapshot]) {
    o.per_shard(
        shards,
        "freshet_fsync_slow_total",
        "counter",
        "fdatasyncs of partition logs slower than 200 ms (a saturated or failing disk).",
        |s| s.fsync_slow,
    );
    o.per_shard(
        shards,
        "freshet_produce_timeouts_total",
        "counter",
        "Produce partitions answered with REQUEST_TIMED_OUT: not durable within the request's timeout_ms.",
        |s| s.produce_timeouts,
    );
    o.per_shard(
        shards,
        "freshet_reactor_stalls_total",
        "counter",
        "Times the shard did not get back to its reactor within 10 ms (a blocking call or a long loop on the shard).",
        |s| s.reactor_stalls.count(),
    );
    o.header(
        "freshet_reactor_stall_seconds",
        "histogram",
        "Length of each reactor stall, by shard.",
    );
    for s in shards {
        o.histogram(
            "freshet_reactor_stall_seconds",
            &[("shard", &s.shard.to_string())],
            &s.reactor_stalls,
        );
    }
}

/// Fetch sessions (KIP-227), per shard (Kafka's `NumIncrementalFetchSessions`,
/// `NumIncrementalFetchPartitionsCached`, `IncrementalFetchSessionEvictionsPerSec`).
fn render_fetch_sessions(o: &mut Out, shards: &[ShardSnapshot]) {
    o.per_shard(
        shards,
        "freshet_fetch_sessions",
        "gauge",
        "Incremental fetch sessions held (max_incremental_fetch_session_cache_slots).",
        |s| s.fetch_sessions,
    );
    o.per_shard(
        shards,
        "freshet_fetch_session_partitions",
        "gauge",
        "Partitions cached in fetch sessions (fetch_session_cache_partitions_max).",
        |s| s.fetch_session_partitions,
    );
    o.per_shard(
        shards,
        "freshet_fetch_session_evictions_total",
        "counter",
        "Fetch sessions evicted to make room for another, or closed for growing too large.",
        |s| s.fetch_session_evictions,
    );
}

/// The transaction coordinator's marker sends (coordinator shard; 0 on the others).
fn render_txn_markers(o: &mut Out, shards: &[ShardSnapshot]) {
    o.per_shard(
        shards,
        "freshet_txn_marker_rounds",
        "gauge",
        "Transaction ends whose markers are being written or retried now by this coordinator.",
        |s| s.txn_marker_rounds,
    );
    o.per_shard(
        shards,
        "freshet_txn_marker_rounds_abandoned_total",
        "counter",
        "Transaction ends whose marker retries stopped because this node lost the transaction's __transaction_state partition.",
        |s| s.txn_marker_rounds_abandoned,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{GroupsSnapshot, PartitionState};

    fn shard(id: usize) -> ShardSnapshot {
        ShardSnapshot {
            shard: id,
            apis: vec![(
                0,
                3,
                1,
                HistogramSnapshot {
                    buckets: vec![1, 2],
                    sum_us: 500,
                },
            )],
            traffic: vec![(
                ("t\"x".to_string(), 0),
                PartitionCounters {
                    bytes_in: 10,
                    batches_in: 1,
                    records_in: 2,
                    bytes_out: 4,
                    batches_out: 1,
                },
            )],
            partitions: vec![PartitionState {
                topic: "t\"x".into(),
                partition: id as i32,
                size_bytes: 100,
                log_start_offset: 0,
                high_watermark: 7,
                segments: 1,
                flushes: 2,
            }],
            groups: (id == 0).then(|| GroupsSnapshot {
                by_state: vec![("Stable", 1)],
                members: 2,
                committed_offsets: 1,
                committed: vec![("g".into(), "t\"x".into(), 0, 5)],
            }),
            produce_stages: vec![
                HistogramSnapshot {
                    buckets: vec![0, 0, 0, 1],
                    sum_us: 900,
                };
                crate::metrics::PRODUCE_STAGES
            ],
            ..ShardSnapshot::default()
        }
    }

    #[test]
    fn renders_sums_over_shards_cumulative_buckets_and_escaped_labels() {
        let text = render(
            &BrokerInfo {
                ready: true,
                cpu: Some(crate::metrics::procstat::CpuTimes {
                    user_seconds: 1.5,
                    system_seconds: 0.25,
                }),
                threads: vec![("freshet-shard-0".into(), Default::default())],
                ..BrokerInfo::default()
            },
            &[shard(0), shard(1)],
        );
        assert!(text.contains("freshet_ready 1\n"));
        assert!(text.contains("freshet_requests_total{api=\"Produce\",shard=\"1\"} 3\n"));
        assert!(text
            .contains("freshet_request_latency_seconds_bucket{api=\"Produce\",le=\"0.0001\"} 2\n"));
        assert!(text.contains(
            "freshet_request_latency_seconds_bucket{api=\"Produce\",le=\"0.00025\"} 6\n"
        ));
        assert!(text
            .contains("freshet_request_latency_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 6\n"));
        assert!(text.contains("freshet_request_latency_seconds_count{api=\"Produce\"} 6\n"));
        assert!(text
            .contains("freshet_partition_bytes_in_total{topic=\"t\\\"x\",partition=\"0\"} 20\n"));
        assert!(text.contains("freshet_shard_bytes_out_total{shard=\"0\"} 4\n"));
        assert!(text.contains("process_cpu_seconds_total 1.75\n"));
        assert!(text.contains("freshet_thread_cpu_seconds_total{thread=\"freshet-shard-0\"} 0\n"));
        assert!(text.contains(
            "freshet_produce_stage_seconds_bucket{stage=\"fdatasync\",le=\"0.001\"} 2\n"
        ));
        assert!(text.contains("freshet_produce_stage_seconds_count{stage=\"queued\"} 2\n"));
        assert!(
            text.contains("freshet_consumer_lag{group=\"g\",topic=\"t\\\"x\",partition=\"0\"} 2\n")
        );
        // Every sample line belongs to a declared metric.
        let declared: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            assert!(
                declared.contains(&name) || declared.contains(&base),
                "{line}"
            );
        }
    }
}
