//! Issue 18: a slow disk costs the requests that wait on it, and nothing else.
//!
//! The broker's writes are throttled to 1 MB/s with the kernel's block I/O throttle (cgroup v1
//! `blkio.throttle.write_bps_device`, or cgroup v2 `io.max` `wbps`) on the device that holds its
//! data directory, and producers keep more than that in flight. Meanwhile:
//! - ApiVersions and Metadata from a new connection answer within 100 ms (p99 of 100 tries);
//! - a consumer of data in the tail cache keeps reading;
//! - a produce with `timeout_ms` 2000 is answered within 3 s (success or REQUEST_TIMED_OUT);
//! - once the throttle is lifted, every acknowledged record is readable.
//!
//! Needs root and a block I/O throttle; without them the test says SKIPPED (see
//! `common::skip`). The simulated disk covers the timeout and backpressure parts without one
//! (`storage_slow` unit tests). `slow_disk_measure` (ignored) runs the same load longer and
//! prints the figures docs/PERFORMANCE.md quotes:
//! `cargo test --test it -- slow_disk::slow_disk_measure --ignored --nocapture`.

use crate::common;
use bytes::Bytes;
use common::{RawConn, TestBroker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, FetchRequest, MetadataRequest, ProduceRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Write rate the broker's data device is throttled to: a slow disk (the 1 MB/s) and
/// a stalled one (16 KB/s: nothing of the producers' 32 KiB requests completes).
const SLOW_WRITE_BYTES_PER_S: u64 = 1 << 20;
const STALLED_WRITE_BYTES_PER_S: u64 = 16 << 10;
/// A probe that gets no answer this soon has failed (and probing stops after a few).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_FAILURES_MAX: usize = 3;
/// Partitions of the topic the producers saturate.
const LOAD_PARTITIONS: i32 = 4;
/// Producer connections (spread over the partitions), and requests each keeps in flight:
/// 8 MiB in flight, 8 s of writes at the throttled rate.
const PRODUCERS: usize = 8;
const PRODUCER_PIPELINE: usize = 32;
/// One produce request's batch (32 KiB: a "small" request, which may use a shard's whole
/// request budget): records of this size, this many.
const LOAD_VALUE_BYTES: usize = 16 * 1024;
const LOAD_RECORDS_PER_BATCH: usize = 2;
/// The broker's budgets, scaled down with the load so that the producers can fill them:
/// requests in flight per shard, and produce requests in flight per shard.
const BROKER_CONFIG: &str = "inflight_request_bytes_per_shard_max = 2097152\n\
                             produce_inflight_bytes_per_shard_max = 2097152\n";
/// Records produced to the consumer's topic before the throttle (in the tail cache).
const CACHED_RECORDS: usize = 200;
/// ApiVersions + Metadata from new connections while the disk is saturated.
const PROBES: usize = 100;
const PROBE_P99_MAX: Duration = Duration::from_millis(100);
/// The produce whose timeout must be honoured.
const PRODUCE_TIMEOUT_MS: i32 = 2000;
const PRODUCE_ANSWER_MAX: Duration = Duration::from_secs(3);
/// REQUEST_TIMED_OUT.
const REQUEST_TIMED_OUT: i16 = 7;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// A cgroup whose writes to one block device are throttled; the broker is moved into it.
/// Dropping it moves the broker back and removes the group.
struct Throttle {
    dir: PathBuf,
    /// The root of the hierarchy (where processes go back to).
    root: PathBuf,
    device: String,
    v2: bool,
    pid: u32,
}

impl Throttle {
    /// Throttles `pid`'s writes to the device holding `data_dir` to `bytes_per_s`, or says why
    /// it cannot here.
    fn start(pid: u32, data_dir: &Path, bytes_per_s: u64) -> Result<Throttle, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root for a block I/O throttle".into());
        }
        let device = block_device_of(data_dir)?;
        let v1 = Path::new("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device");
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let (root, v2) = if v1.exists() {
            (PathBuf::from("/sys/fs/cgroup/blkio"), false)
        } else if std::fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|c| c == "io"))
        {
            let root = PathBuf::from("/sys/fs/cgroup");
            // The io controller must be enabled for the root's children.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+io");
            (root, true)
        } else {
            return Err("no block I/O throttle: neither cgroup v1 blkio nor cgroup v2 io".into());
        };
        let dir = root.join(format!("freshet-slow-disk-{}-{pid}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let throttle = Throttle {
            dir,
            root,
            device,
            v2,
            pid,
        };
        throttle.set(Some(bytes_per_s))?;
        std::fs::write(throttle.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving the broker into the throttled cgroup: {e}"))?;
        Ok(throttle)
    }

    /// Sets the write limit (`None`: no limit).
    fn set(&self, bytes_per_s: Option<u64>) -> Result<(), String> {
        let (file, rule) = if self.v2 {
            let limit = bytes_per_s.map_or("max".to_string(), |b| b.to_string());
            ("io.max", format!("{} wbps={limit}", self.device))
        } else {
            let limit = bytes_per_s.unwrap_or(0); // 0 removes the rule
            (
                "blkio.throttle.write_bps_device",
                format!("{} {limit}", self.device),
            )
        };
        std::fs::write(self.dir.join(file), &rule)
            .map_err(|e| format!("writing {rule:?} to {file}: {e}"))
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = self.set(None);
        let _ = std::fs::write(self.root.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// "major:minor" of the whole disk holding `path` (throttles apply to disks, not partitions).
fn block_device_of(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path)
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return Err(format!(
            "the data directory is on {major}:{minor}, which is not a block device (tmpfs, overlay?)"
        ));
    }
    let disk = if sys.join("partition").exists() {
        std::fs::read_to_string(sys.join("../dev"))
            .map_err(|e| format!("the disk of partition {major}:{minor}: {e}"))?
    } else {
        format!("{major}:{minor}")
    };
    Ok(disk.trim().to_string())
}

fn create_topic(addr: std::net::SocketAddr, topic: &str, partitions: i32) {
    let mut admin = RawConn::connect(addr).expect("connect");
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let created = admin.request(7, &create).expect("CreateTopics");
    assert_eq!(created.topics[0].error_code, 0, "create {topic}");
}

fn batch(records: usize, value_bytes: usize) -> Bytes {
    let value = Bytes::from(vec![b'x'; value_bytes]);
    let records: Vec<_> = (0..records)
        .map(|_| (None, Some(value.clone()), 1_700_000_000_000))
        .collect();
    freshet_protocol::batch::encode_batch(&records, freshet_protocol::batch::Compression::None)
        .expect("encode batch")
}

fn produce(topic: &str, partition: i32, batch: &Bytes, timeout_ms: i32) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch.clone()))])])
}

fn fetch(topic: &str, partition: i32, offset: i64, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)])])
}

/// What the producers saw: acknowledged (partition, base offset, records) and other answers.
#[derive(Default)]
struct Produced {
    acked: Vec<(i32, i64, usize)>,
    timed_out: u64,
    errors: Vec<String>,
}

/// One producer connection keeping [`PRODUCER_PIPELINE`] requests in flight until `stop`.
fn producer(
    addr: std::net::SocketAddr,
    partition: i32,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Produced>>,
) {
    let data = batch(LOAD_RECORDS_PER_BATCH, LOAD_VALUE_BYTES);
    let mut conn = RawConn::connect(addr).expect("producer connect");
    conn.set_read_timeout(Duration::from_secs(60));
    let mut inflight = std::collections::VecDeque::new();
    loop {
        while !stop.load(Ordering::Relaxed) && inflight.len() < PRODUCER_PIPELINE {
            let req = produce("load", partition, &data, 30_000);
            match conn.send(9, &req) {
                Ok(id) => inflight.push_back(id),
                Err(e) => {
                    out.lock().unwrap().errors.push(format!("send: {e}"));
                    return;
                }
            }
        }
        let Some(id) = inflight.pop_front() else {
            return;
        };
        match conn.receive::<ProduceRequest>(9, id) {
            Ok(r) => {
                let p = &r.responses[0].partition_responses[0];
                let mut out = out.lock().unwrap();
                match p.error_code {
                    0 => out
                        .acked
                        .push((partition, p.base_offset, LOAD_RECORDS_PER_BATCH)),
                    REQUEST_TIMED_OUT => out.timed_out += 1,
                    code => out.errors.push(format!("produce error {code}")),
                }
            }
            Err(e) => {
                out.lock().unwrap().errors.push(format!("receive: {e}"));
                return;
            }
        }
    }
}

/// Latency of ApiVersions then Metadata on a new connection (connect included in the first).
fn probe(addr: std::net::SocketAddr) -> Result<(Duration, Duration), String> {
    let started = Instant::now();
    let mut conn = RawConn::connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(PROBE_TIMEOUT);
    let versions = conn
        .request(3, &ApiVersionsRequest::default())
        .map_err(|e| format!("ApiVersions: {e}"))?;
    if versions.error_code != 0 {
        return Err(format!("ApiVersions error {}", versions.error_code));
    }
    let api_versions = started.elapsed();
    let started = Instant::now();
    conn.request(12, &MetadataRequest::default().with_topics(None))
        .map_err(|e| format!("Metadata: {e}"))?;
    Ok((api_versions, started.elapsed()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The figures of one run under a throttled disk.
struct Figures {
    api_versions: Vec<Duration>,
    metadata: Vec<Duration>,
    probe_errors: Vec<String>,
    cached_fetches: u64,
    cached_fetch_max: Duration,
    produce_answer: Duration,
    produce_code: Option<i16>,
    /// From /metrics once the throttle is lifted: (slow fdatasyncs, produce partitions timed
    /// out, reactor stalls), summed over shards.
    counters: (f64, f64, f64),
}

impl Figures {
    fn print(&self, label: &str) {
        let mut a = self.api_versions.clone();
        let mut m = self.metadata.clone();
        a.sort();
        m.sort();
        if a.is_empty() || m.is_empty() {
            eprintln!(
                "{label}: no probe answered; errors: {:?}",
                self.probe_errors
            );
            return;
        }
        eprintln!(
            "{label}: ApiVersions (new connection) p50 {:?} p99 {:?} max {:?}; Metadata p50 {:?} p99 {:?} max {:?}; \
             probe errors {}; cached fetches {} (slowest {:?}); produce timeout_ms={PRODUCE_TIMEOUT_MS} answered in {:?} with {:?}",
            percentile(&a, 0.5),
            percentile(&a, 0.99),
            a[a.len() - 1],
            percentile(&m, 0.5),
            percentile(&m, 0.99),
            m[m.len() - 1],
            self.probe_errors.len(),
            self.cached_fetches,
            self.cached_fetch_max,
            self.produce_answer,
            self.produce_code,
        );
    }
}

/// Runs the scenario with the disk throttled to `write_bytes_per_s`; `probe_rounds` rounds of
/// [`PROBES`] probes. `Err`: cannot run here.
fn run(write_bytes_per_s: u64, probe_rounds: usize) -> Result<Figures, String> {
    let label = format!("disk at {} KB/s", write_bytes_per_s >> 10);
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(config.path(), BROKER_CONFIG).expect("write config");
    let config_path = config.path().to_str().expect("utf-8 path").to_string();
    let mut broker = TestBroker::start_with(2, &["--config", &config_path]);
    let addr = broker.socket_addr();
    create_topic(addr, "cached", 1);
    create_topic(addr, "load", LOAD_PARTITIONS);
    create_topic(addr, "probe", 1);
    // Data for the consumer, durable and in the tail cache before the disk slows down.
    let small = batch(1, 1000);
    let mut admin = RawConn::connect(addr).expect("connect");
    for _ in 0..CACHED_RECORDS {
        let r = admin
            .request(9, &produce("cached", 0, &small, 30_000))
            .expect("produce cached");
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let throttle = Throttle::start(broker.pid(), broker.data_dir(), write_bytes_per_s)?;

    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(Mutex::new(Produced::default()));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|i| {
            let (stop, out) = (stop.clone(), produced.clone());
            std::thread::spawn(move || producer(addr, i as i32 % LOAD_PARTITIONS, stop, out))
        })
        .collect();
    // A consumer re-reading the cached data from the start, as fast as it is answered.
    let consumer = {
        let stop = stop.clone();
        std::thread::spawn(move || -> (u64, Duration, Option<String>) {
            let mut conn = RawConn::connect(addr).expect("consumer connect");
            let (mut fetches, mut slowest, mut offset) = (0u64, Duration::ZERO, 0i64);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = match conn.request(12, &fetch("cached", 0, offset, 64 * 1024)) {
                    Ok(r) => r,
                    Err(e) => return (fetches, slowest, Some(format!("fetch: {e}"))),
                };
                slowest = slowest.max(started.elapsed());
                let p = &r.responses[0].partitions[0];
                if p.error_code != 0 {
                    return (
                        fetches,
                        slowest,
                        Some(format!("fetch error {}", p.error_code)),
                    );
                }
                fetches += 1;
                let got = p.records.as_ref().map_or(0, |r| {
                    freshet_protocol::batch::batches(r)
                        .flatten()
                        .filter_map(|(_, b)| freshet_protocol::batch::header(b))
                        .map(|h| h.last_offset() + 1)
                        .max()
                        .unwrap_or(0)
                });
                offset = if got >= CACHED_RECORDS as i64 {
                    0
                } else {
                    got.max(offset)
                };
                std::thread::sleep(Duration::from_millis(10));
            }
            (fetches, slowest, None)
        })
    };
    // Let the producers fill whatever queues toward the disk there are.
    std::thread::sleep(Duration::from_secs(3));

    let mut figures = Figures {
        api_versions: Vec::new(),
        metadata: Vec::new(),
        probe_errors: Vec::new(),
        cached_fetches: 0,
        cached_fetch_max: Duration::ZERO,
        produce_answer: Duration::ZERO,
        produce_code: None,
        counters: (0.0, 0.0, 0.0),
    };
    // The produce with a 2 s timeout, on its own connection, while the probes run.
    let timed_produce = std::thread::spawn(move || {
        let mut conn = RawConn::connect(addr).expect("connect");
        conn.set_read_timeout(Duration::from_secs(60));
        let started = Instant::now();
        let r = conn.request(9, &produce("probe", 0, &batch(4, 1000), PRODUCE_TIMEOUT_MS));
        (
            started.elapsed(),
            r.ok()
                .map(|r| r.responses[0].partition_responses[0].error_code),
        )
    });
    for _ in 0..probe_rounds * PROBES {
        match probe(addr) {
            Ok((a, m)) => {
                figures.api_versions.push(a);
                figures.metadata.push(m);
            }
            Err(e) => {
                figures.probe_errors.push(e);
                if figures.probe_errors.len() >= PROBE_FAILURES_MAX {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (figures.produce_answer, figures.produce_code) = timed_produce.join().expect("produce");

    stop.store(true, Ordering::Relaxed);
    let (fetches, slowest, consumer_error) = consumer.join().expect("consumer");
    figures.cached_fetches = fetches;
    figures.cached_fetch_max = slowest;
    if let Some(e) = consumer_error {
        figures.probe_errors.push(format!("consumer: {e}"));
    }
    figures.print(&label);
    // Lift the throttle; the producers' last answers arrive.
    throttle.set(None)?;
    for p in producers {
        p.join().expect("producer");
    }
    drop(throttle);
    let produced = std::mem::take(&mut *produced.lock().unwrap());
    assert!(
        produced.errors.is_empty(),
        "producer errors: {:?}",
        produced.errors
    );
    assert!(!produced.acked.is_empty(), "no produce was acknowledged");
    eprintln!(
        "producers: {} batches of {} KiB acknowledged, {} timed out",
        produced.acked.len(),
        LOAD_RECORDS_PER_BATCH * LOAD_VALUE_BYTES / 1024,
        produced.timed_out
    );
    check_all_readable(addr, &produced.acked);
    let (_, metrics) = broker.admin_get("/metrics").expect("GET /metrics");
    figures.counters = (
        common::metric_sum(&metrics, "freshet_fsync_slow_total"),
        common::metric_sum(&metrics, "freshet_produce_timeouts_total"),
        common::metric_sum(&metrics, "freshet_reactor_stalls_total"),
    );
    eprintln!(
        "{label}: /metrics: slow fdatasyncs {}, produce timeouts {}, reactor stalls {}",
        figures.counters.0, figures.counters.1, figures.counters.2
    );
    broker.stop();
    Ok(figures)
}

/// Every acknowledged batch is readable at its offsets.
fn check_all_readable(addr: std::net::SocketAddr, acked: &[(i32, i64, usize)]) {
    let mut conn = RawConn::connect(addr).expect("connect");
    for partition in 0..LOAD_PARTITIONS {
        let want: std::collections::BTreeSet<i64> = acked
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .map(|(_, base, _)| *base)
            .collect();
        let Some(&last) = want.last() else { continue };
        let mut seen = std::collections::BTreeSet::new();
        let mut offset = 0;
        while offset <= last {
            let r = conn
                .request(12, &fetch("load", partition, offset, 4 << 20))
                .expect("fetch back");
            let p = &r.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "fetch back partition {partition}");
            let records = p.records.clone().unwrap_or_default();
            let mut next = offset;
            for (_, b) in freshet_protocol::batch::batches(&records).flatten() {
                let h = freshet_protocol::batch::header(b).expect("header");
                seen.insert(h.base_offset());
                next = next.max(h.last_offset() + 1);
            }
            assert!(
                next > offset,
                "no progress reading partition {partition} at {offset}"
            );
            offset = next;
        }
        let missing: Vec<_> = want.difference(&seen).collect();
        assert!(
            missing.is_empty(),
            "acknowledged batches missing from partition {partition}: {missing:?}"
        );
    }
}

/// Checks the bounds on one run's figures.
fn check(figures: &Figures) {
    assert!(
        figures.probe_errors.is_empty(),
        "probes failed: {:?}",
        figures.probe_errors
    );
    let mut a = figures.api_versions.clone();
    let mut m = figures.metadata.clone();
    a.sort();
    m.sort();
    assert!(
        percentile(&a, 0.99) <= PROBE_P99_MAX,
        "ApiVersions p99 {:?} over {PROBE_P99_MAX:?}",
        percentile(&a, 0.99)
    );
    assert!(
        percentile(&m, 0.99) <= PROBE_P99_MAX,
        "Metadata p99 {:?} over {PROBE_P99_MAX:?}",
        percentile(&m, 0.99)
    );
    assert!(
        figures.cached_fetches >= 20,
        "the consumer of cached data made only {} fetches",
        figures.cached_fetches
    );
    assert!(
        figures.produce_answer <= PRODUCE_ANSWER_MAX,
        "a produce with timeout_ms {PRODUCE_TIMEOUT_MS} was answered after {:?}",
        figures.produce_answer
    );
    assert!(
        matches!(figures.produce_code, Some(0) | Some(REQUEST_TIMED_OUT)),
        "a produce with timeout_ms {PRODUCE_TIMEOUT_MS} got {:?}",
        figures.produce_code
    );
}

/// Runs one scenario bounded in time, or reports it skipped; `None` if skipped.
fn run_or_skip(test: &str, write_bytes_per_s: u64, probe_rounds: usize) -> Option<Figures> {
    match common::within(Duration::from_secs(85), move || {
        run(write_bytes_per_s, probe_rounds)
    }) {
        Ok(f) => Some(f),
        Err(why) => {
            common::skip(test, &why);
            None
        }
    }
}

/// Issue 18's acceptance test with the disk at 1 MB/s (see the module docs).
#[test]
fn slow_disk_costs_only_the_writes() {
    let test = "slow_disk::slow_disk_costs_only_the_writes";
    if let Some(figures) = run_or_skip(test, SLOW_WRITE_BYTES_PER_S, 1) {
        check(&figures);
    }
}

/// The same with a disk that has all but stopped (16 KB/s): the produce budget fills and
/// stays full, yet requests that need no disk are answered at once and the produce with a 2 s
/// timeout gets REQUEST_TIMED_OUT in time.
#[test]
fn stalled_disk_costs_only_the_writes() {
    let test = "slow_disk::stalled_disk_costs_only_the_writes";
    if let Some(figures) = run_or_skip(test, STALLED_WRITE_BYTES_PER_S, 1) {
        check(&figures);
        assert_eq!(
            figures.produce_code,
            Some(REQUEST_TIMED_OUT),
            "nothing can be durable on a stalled disk"
        );
        assert!(
            figures.counters.1 >= 1.0,
            "freshet_produce_timeouts_total did not count the timed-out produce"
        );
    }
}

/// The longer measurement for docs/PERFORMANCE.md: 5 rounds of probes per disk speed.
#[test]
#[ignore]
fn slow_disk_measure() {
    let test = "slow_disk::slow_disk_measure";
    for (rate, label) in [
        (SLOW_WRITE_BYTES_PER_S, "500 probes, disk at 1 MB/s"),
        (STALLED_WRITE_BYTES_PER_S, "500 probes, disk at 16 KB/s"),
    ] {
        eprintln!("{label}:");
        if let Err(why) = run(rate, 5) {
            common::skip(test, &why);
        }
    }
}

/// The storage side of "the data, if it later becomes durable, stays", on the simulated disk
/// (no root needed): every fdatasync takes 5 s of virtual time, an append is given up after
/// 2 s (as the Produce handler gives up at `timeout_ms`), yet the flusher goes on, the batch
/// becomes durable and readable, and is still there after the log is closed and reopened.
#[test]
fn an_append_given_up_on_a_slow_simulated_disk_still_becomes_durable() {
    use freshet::rt;
    use freshet::storage::io::sim::{self, Op, SimDisk};
    use freshet::storage::LogConfig;
    use std::future::Future;
    use std::pin::Pin;
    use std::rc::Rc;
    rt::sim::run(18, async {
        let disk = SimDisk::new(18);
        let _installed = sim::install(&disk);
        let dir = Path::new("/sim/slow-0");
        let log = crate::storage_common::open(dir, LogConfig::default(), 1 << 20).await;
        disk.set_latency(Some(Rc::new(|op| {
            (op == Op::Sync).then(|| {
                Box::pin(rt::sleep(Duration::from_secs(5))) as Pin<Box<dyn Future<Output = ()>>>
            })
        })));
        let data = crate::storage_common::batch(3, 100, 1_700_000_000_000);
        let started = rt::now();
        let appended = rt::timeout(
            Duration::from_secs(2),
            log.append(data.clone(), 1_700_000_000_000),
        )
        .await;
        assert!(appended.is_none(), "the append finished before its sync");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2010),
            "given up after {waited:?}"
        );
        assert_eq!(log.high_watermark(), 0, "nothing durable yet");
        rt::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            log.high_watermark(),
            3,
            "the given-up append became durable"
        );
        disk.set_latency(None);
        let read = crate::storage_common::read_all(&log, 0).await;
        assert_eq!(read.len(), 1);
        assert_eq!(
            crate::storage_common::payload(&read[0]),
            crate::storage_common::payload(&data)
        );
        log.close().await.expect("close");
        drop(log);
        let log = crate::storage_common::open(dir, LogConfig::default(), 1 << 20).await;
        assert_eq!(log.high_watermark(), 3, "still there after a reopen");
    });
}
