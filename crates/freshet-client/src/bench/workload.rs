//! A benchmark workload: what to create, how to produce and consume, for how long.
//!
//! The shape follows the OpenMessaging Benchmark's workloads: `topics` topics of `partitions`
//! partitions; per topic, `producers` producers and `consumers` consumers (each consumer reads
//! its share of the topic's partitions, assigned directly, no consumer group); a total target
//! `rate` in messages per second (0: as fast as possible); `warmup` then `duration`. A workload
//! is given by flags, or by a TOML (or JSON) file with the same keys, flags winning.
//!
//! With `backlog_mb` > 0 the run has two phases instead: producers write that many MB while
//! consumers wait, then consumers drain it (OMB's consumer backlog test); the drain rate is the
//! consume throughput of data the broker still holds (in Freshet's tail cache when it fits).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use freshet_protocol::batch::Compression;

/// How record keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// No key; each batch goes to the next partition in turn (Kafka's sticky partitioner).
    None,
    /// Keys cycle through 10,000 fixed keys; partition by murmur2 (Kafka's default partitioner).
    RoundRobin,
    /// A random 8-byte key per message; partition by murmur2.
    Random,
}

/// One benchmark workload. Units are in the names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Broker to bootstrap from, host:port.
    pub bootstrap: String,
    /// Topic names are `{topic_prefix}-{run id}-{i}`; with `topic` set, that one topic is used.
    pub topic_prefix: String,
    /// Use (and create if missing) this exact topic instead of fresh ones; never deleted.
    pub topic: Option<String>,
    /// Topics.
    pub topics: usize,
    /// Partitions per topic.
    pub partitions: i32,
    /// Replication factor of created topics (-1: the broker's default).
    pub replication_factor: i16,
    /// Producers per topic.
    pub producers: usize,
    /// Consumers per topic.
    pub consumers: usize,
    /// Value size in bytes (at least 16: the send time and a sequence number lead the value).
    pub message_bytes: usize,
    /// Key choice.
    pub key_distribution: KeyDistribution,
    /// Total target rate in messages per second over all producers; 0: as fast as possible.
    pub rate: f64,
    /// Measured time in seconds (after the warm-up).
    pub duration_s: f64,
    /// Warm-up in seconds (run, not measured).
    pub warmup_s: f64,
    /// Stop after this many messages in total (0: run for `duration_s`).
    pub messages: u64,
    /// Produce acks: 0, 1 or -1 (all).
    pub acks: i16,
    /// Compression: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// How long a partition's batch waits to fill before it is sent, in ms.
    pub linger_ms: f64,
    /// A batch is sent once its records hold this many bytes.
    pub batch_bytes: usize,
    /// Unanswered Produce requests per connection.
    pub inflight: usize,
    /// Produce/request timeout in ms.
    pub request_timeout_ms: i32,
    /// Fetch: longest wait for data, in ms.
    pub fetch_max_wait_ms: i32,
    /// Fetch: most bytes per response.
    pub fetch_max_bytes: i32,
    /// Fetch: most bytes per partition per response.
    pub fetch_partition_max_bytes: i32,
    /// Socket buffer size in bytes (0: system default).
    pub socket_buffer_bytes: usize,
    /// If > 0: produce this many MB first, then consume it (see module docs).
    pub backlog_mb: f64,
    /// Longest wait for consumers to catch up after producing ends, in seconds.
    pub drain_timeout_s: f64,
    /// Delete created topics at the end.
    pub delete_topics: bool,
    /// The broker's Prometheus endpoint, read before and after the run for its CPU per GB and
    /// produce stages (`off`: not read).
    pub broker_metrics: String,
}

impl Default for Workload {
    /// The default workload: short (5 s warm-up, 20 s measured), 1 topic of 4 partitions,
    /// 1 producer and 1 consumer, 1 KiB messages at 10,000 msg/s, acks=all.
    fn default() -> Self {
        Workload {
            bootstrap: "localhost:9092".to_string(),
            topic_prefix: "freshet-bench".to_string(),
            topic: None,
            topics: 1,
            partitions: 4,
            replication_factor: -1,
            producers: 1,
            consumers: 1,
            message_bytes: 1024,
            key_distribution: KeyDistribution::None,
            rate: 10_000.0,
            duration_s: 20.0,
            warmup_s: 5.0,
            messages: 0,
            acks: -1,
            compression: "none".to_string(),
            linger_ms: 1.0,
            batch_bytes: 128 * 1024,
            inflight: 5,
            request_timeout_ms: 30_000,
            fetch_max_wait_ms: 100,
            fetch_max_bytes: 64 << 20,
            fetch_partition_max_bytes: 8 << 20,
            socket_buffer_bytes: 0,
            backlog_mb: 0.0,
            drain_timeout_s: 60.0,
            delete_topics: true,
            broker_metrics: super::broker_metrics::DEFAULT_BROKER_METRICS.to_string(),
        }
    }
}

impl Workload {
    /// Reads a workload file: TOML, or JSON when the name ends in `.json`. Missing keys take
    /// the defaults.
    pub fn from_file(path: &Path) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
    }

    /// Checks the values; the message says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
        check(self.topics >= 1, "topics must be at least 1")?;
        check(self.partitions >= 1, "partitions must be at least 1")?;
        check(
            self.producers >= 1 || self.messages == 0,
            "messages needs producers",
        )?;
        check(
            self.message_bytes >= 16,
            "message size must be at least 16 bytes",
        )?;
        check(
            self.rate >= 0.0 && self.rate.is_finite(),
            "rate must be >= 0",
        )?;
        check(
            self.duration_s > 0.0 || self.messages > 0 || self.backlog_mb > 0.0,
            "give a duration, a message count or a backlog",
        )?;
        check(self.warmup_s >= 0.0, "warm-up must be >= 0")?;
        check([0, 1, -1].contains(&self.acks), "acks must be 0, 1 or -1")?;
        self.compression()?;
        check(self.linger_ms >= 0.0, "linger must be >= 0")?;
        check(self.batch_bytes >= 1, "batch size must be at least 1 byte")?;
        check(
            (1..=1024).contains(&self.inflight),
            "in-flight requests must be 1..=1024",
        )?;
        check(
            self.fetch_max_bytes > 0 && self.fetch_partition_max_bytes > 0,
            "fetch sizes must be > 0",
        )?;
        check(
            self.backlog_mb == 0.0 || (self.acks != 0 && self.producers > 0),
            "a backlog needs producers with acks 1 or -1",
        )?;
        Ok(())
    }

    /// The compression codec.
    pub fn compression(&self) -> Result<Compression, String> {
        match self.compression.as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "compression {other:?}: use none, gzip, snappy, lz4 or zstd"
            )),
        }
    }
}

/// Parses a duration: `500ms`, `10s`, `2m`, or a plain number of seconds. Returns seconds.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * scale)
        .ok_or_else(|| format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m)"))
}

/// A [`Duration`] from seconds (negative: zero).
pub fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_seconds("500ms"), Ok(0.5));
        assert_eq!(parse_seconds("10s"), Ok(10.0));
        assert_eq!(parse_seconds("2m"), Ok(120.0));
        assert_eq!(parse_seconds("7"), Ok(7.0));
        assert!(parse_seconds("ten").is_err());
        assert!(parse_seconds("-1s").is_err());
    }

    #[test]
    fn workload_files_take_defaults_for_missing_keys() {
        let w: Workload =
            toml::from_str("partitions = 16\nrate = 0\nkey_distribution = \"random\"")
                .expect("parses");
        assert_eq!(w.partitions, 16);
        assert_eq!(w.key_distribution, KeyDistribution::Random);
        assert_eq!(w.message_bytes, 1024);
        assert!(w.validate().is_ok());
        assert!(
            toml::from_str::<Workload>("partitons = 3").is_err(),
            "typos are refused"
        );
        let bad = Workload {
            message_bytes: 8,
            ..Workload::default()
        };
        assert!(bad.validate().is_err());
    }
}
