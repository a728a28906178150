//! Running one workload: topic setup, producer and consumer threads, sampling, the result.
//!
//! Threads (all plain OS threads with blocking sockets):
//! - per producer: one thread that creates messages on its [`Schedule`], batches them per
//!   partition (sent when `batch_bytes` is reached or after `linger_ms`), and writes Produce
//!   requests on one pipelined connection per partition leader; per such connection, one reader
//!   thread that reads the answers in order and records publish latency. At most `inflight`
//!   requests are unanswered per connection: the producer blocks (and falls behind its
//!   schedule, which the latency then shows) when the broker is slower than the target.
//! - per consumer: one thread fetching its partitions (one Fetch in flight per leader), walking
//!   the batches (CRC checked) and records, recording end-to-end latency from the send time in
//!   the first 8 bytes of each value.
//! - the calling thread samples the counters every second (progress line, throughput timeline,
//!   interval histograms for the HdrHistogram log), ends the produce phase, tells consumers
//!   where the logs end (ListOffsets), and waits for them to catch up.
//!
//! Message value layout: bytes 0..8 the intended send time (ns since the epoch, big-endian),
//! 8..16 the producer's sequence number, the rest random filler (incompressible).
//!
//! Counts: every acknowledged message must be consumed exactly once, from the log end before
//! the run to the log end after it; the summary says whether the counts match.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;
use serde::Serialize;

use super::latency::{new_histogram, percentiles, Clock, Percentiles, Recorder, Schedule};
use super::workload::{seconds, KeyDistribution, Workload};
use crate::admin::{self, NewTopic};
use crate::fetch::{
    fetch_request, parse_fetch_response, FetchPosition, FETCH_VERSION_MAX, FETCH_VERSION_MIN,
};
use crate::produce::{
    parse_produce_response, PartitionRecords, ProduceBody, PRODUCE_VERSION_MAX, PRODUCE_VERSION_MIN,
};
use crate::records::{batches, murmur2_partition, BatchBuilder};
use crate::{ConnectOptions, Connection, PipelineReader, PipelineWriter};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};

/// Errors kept for the summary (the first ones; the rest are counted).
const ERRORS_KEPT_MAX: usize = 20;
/// Keys cycled by [`KeyDistribution::RoundRobin`].
const ROUND_ROBIN_KEYS: u64 = 10_000;
/// How often the progress line and the timeline are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

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
    fn new(messages: u64, bytes: u64, seconds: f64) -> Throughput {
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

/// Counters and histograms shared by the threads of a run.
struct Shared {
    sent_msgs: AtomicU64,
    acked_msgs: AtomicU64,
    acked_bytes: AtomicU64,
    failed_msgs: AtomicU64,
    consumed_msgs: AtomicU64,
    consumed_bytes: AtomicU64,
    crc_errors: AtomicU64,
    producers_done: AtomicBool,
    stop: AtomicBool,
    /// Log end offsets after producing, per topic and partition; consumers stop there.
    end_offsets: Mutex<Option<Vec<Vec<i64>>>>,
    publish: Arc<Mutex<Histogram<u64>>>,
    e2e: Arc<Mutex<Histogram<u64>>>,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, message: String) {
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() < ERRORS_KEPT_MAX {
                errors.push(message);
            }
        }
    }
}

/// Where a partition lives.
#[derive(Debug, Clone)]
struct Slot {
    partition: i32,
    leader_addr: String,
}

/// Everything the threads of a run read.
struct Ctx {
    workload: Workload,
    options: ConnectOptions,
    clock: Clock,
    topics: Vec<String>,
    slots: Vec<Vec<Slot>>,
    start_offsets: Vec<Vec<i64>>,
    start_ns: u64,
    measure_from_ns: u64,
    /// Producers create no message intended at or after this (u64::MAX: count-bound).
    end_ns: u64,
    compression: Compression,
    filler: Bytes,
    shared: Shared,
}

/// Runs `workload`; prints a progress line per second to stderr when `progress`.
pub fn run(workload: &Workload, progress: bool) -> Result<RunResult, String> {
    workload.validate()?;
    let w = workload.clone();
    let options = ConnectOptions {
        client_id: "freshet-bench".to_string(),
        io_timeout: Duration::from_millis((w.request_timeout_ms.max(1000) as u64) + 5_000),
        frame_bytes_max: (w.fetch_max_bytes as usize).max(1 << 20) + (16 << 20),
        socket_buffer_bytes: w.socket_buffer_bytes,
    };
    let clock = Clock::new();
    let mut bootstrap = Connection::connect(&w.bootstrap, &options)
        .map_err(|e| format!("connect to {}: {e}", w.bootstrap))?;
    let run_id = format!("{:08x}", (clock.origin_ns() / 1000) as u32);
    let topics: Vec<String> = match &w.topic {
        Some(t) => vec![t.clone()],
        None => (0..w.topics)
            .map(|i| format!("{}-{run_id}-{i}", w.topic_prefix))
            .collect(),
    };
    create_topics(&mut bootstrap, &w, &topics)?;
    let slots = wait_for_leaders(&mut bootstrap, &topics)?;
    let start_offsets = log_ends(&slots, &topics, &options)?;
    drop(bootstrap);

    let now = clock.now_ns();
    // Producers start a little later so every thread is up when the schedule begins.
    let start_ns = now + 100_000_000;
    let measure_from_ns = start_ns + (w.warmup_s * 1e9) as u64;
    let end_ns = if w.messages > 0 || w.backlog_mb > 0.0 {
        u64::MAX
    } else {
        measure_from_ns + (w.duration_s * 1e9) as u64
    };
    let filler = random_bytes(w.message_bytes, clock.origin_ns());
    let ctx = Arc::new(Ctx {
        compression: w.compression()?,
        workload: w.clone(),
        options,
        clock,
        topics: topics.clone(),
        slots,
        start_offsets,
        start_ns,
        measure_from_ns,
        end_ns,
        filler,
        shared: Shared {
            sent_msgs: AtomicU64::new(0),
            acked_msgs: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            failed_msgs: AtomicU64::new(0),
            consumed_msgs: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            crc_errors: AtomicU64::new(0),
            producers_done: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            end_offsets: Mutex::new(None),
            publish: Arc::new(Mutex::new(new_histogram())),
            e2e: Arc::new(Mutex::new(new_histogram())),
            errors: Mutex::new(Vec::new()),
        },
    });

    // If a thread cannot be started, the ones already running are told to stop.
    let shared_stop = ctx.clone();
    let mut consumers = Vec::new();
    for t in 0..ctx.topics.len() {
        for c in 0..w.consumers {
            let ctx = ctx.clone();
            let handle = spawn(format!("consumer-{t}-{c}"), move || consume(&ctx, t, c));
            consumers.push(stop_on_error(&shared_stop, handle)?);
        }
    }
    let producer_count = ctx.topics.len() * w.producers;
    let mut producers = Vec::new();
    for t in 0..ctx.topics.len() {
        for p in 0..w.producers {
            let ctx = ctx.clone();
            let index = t * w.producers + p;
            let handle = spawn(format!("producer-{t}-{p}"), move || {
                produce(&ctx, t, index, producer_count)
            });
            producers.push(stop_on_error(&shared_stop, handle)?);
        }
    }
    let result = supervise(&ctx, producers, consumers, progress);
    if w.delete_topics && w.topic.is_none() {
        if let Ok(mut conn) = Connection::connect(&w.bootstrap, &ctx.options) {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let _ = admin::delete_topics(&mut conn, &names, 30_000);
        }
    }
    result
}

fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    thread::Builder::new()
        .name(name.clone())
        .spawn(body)
        .map_err(|e| format!("spawn {name}: {e}"))
}

fn stop_on_error(
    ctx: &Ctx,
    handle: Result<JoinHandle<()>, String>,
) -> Result<JoinHandle<()>, String> {
    if handle.is_err() {
        ctx.shared.stop.store(true, Ordering::Relaxed);
    }
    handle
}

fn create_topics(conn: &mut Connection, w: &Workload, topics: &[String]) -> Result<(), String> {
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            partitions: w.partitions,
            replication_factor: w.replication_factor,
            configs: Vec::new(),
        })
        .collect();
    let results = admin::create_topics(conn, &new, 30_000).map_err(|e| e.to_string())?;
    for r in results {
        if r.error_code != 0 && r.error_code != admin::TOPIC_ALREADY_EXISTS {
            return Err(format!(
                "create topic {}: error {} {}",
                r.name,
                r.error_code,
                r.error_message.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Polls Metadata until every partition of `topics` has a leader (or 30 s pass).
fn wait_for_leaders(conn: &mut Connection, topics: &[String]) -> Result<Vec<Vec<Slot>>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    loop {
        let md = admin::metadata(conn, Some(&names)).map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        for name in topics {
            let slots: Vec<Slot> = md
                .topic(name)
                .filter(|t| t.error_code == 0)
                .map(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| p.error_code == 0 && p.leader >= 0)
                        .filter_map(|p| {
                            md.broker(p.leader).map(|b| Slot {
                                partition: p.partition,
                                leader_addr: b.addr(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            all.push(slots);
        }
        let complete = all.iter().all(|s| !s.is_empty())
            && md.topics.iter().all(|t| {
                t.partitions
                    .iter()
                    .all(|p| p.leader >= 0 && p.error_code == 0)
            });
        if complete {
            return Ok(all);
        }
        if Instant::now() > deadline {
            return Err(format!("topics {topics:?} have no leaders after 30 s"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The log end offset of every partition, asked of each leader.
fn log_ends(
    slots: &[Vec<Slot>],
    topics: &[String],
    options: &ConnectOptions,
) -> Result<Vec<Vec<i64>>, String> {
    let mut out = Vec::new();
    for (t, topic_slots) in slots.iter().enumerate() {
        let mut offsets = vec![0i64; topic_slots.len()];
        let mut leaders: Vec<&str> = topic_slots.iter().map(|s| s.leader_addr.as_str()).collect();
        leaders.sort_unstable();
        leaders.dedup();
        for leader in leaders {
            let mut conn =
                Connection::connect(leader, options).map_err(|e| format!("{leader}: {e}"))?;
            let indexes: Vec<usize> = (0..topic_slots.len())
                .filter(|&i| topic_slots[i].leader_addr == leader)
                .collect();
            let partitions: Vec<i32> = indexes.iter().map(|&i| topic_slots[i].partition).collect();
            let ends = admin::list_offsets(&mut conn, &topics[t], &partitions, admin::LATEST)
                .map_err(|e| e.to_string())?;
            for (i, end) in indexes.into_iter().zip(ends) {
                offsets[i] = end;
            }
        }
        out.push(offsets);
    }
    Ok(out)
}

/// xorshift64* filler: incompressible, deterministic per run.
fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Sampling, phase changes and the result; runs on the calling thread.
fn supervise(
    ctx: &Arc<Ctx>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    progress: bool,
) -> Result<RunResult, String> {
    let w = &ctx.workload;
    let s = &ctx.shared;
    let clock = ctx.clock;
    let counters = || {
        (
            s.acked_msgs.load(Ordering::Relaxed),
            s.acked_bytes.load(Ordering::Relaxed),
            s.consumed_msgs.load(Ordering::Relaxed),
            s.consumed_bytes.load(Ordering::Relaxed),
        )
    };
    let mut publish_total = new_histogram();
    let mut e2e_total = new_histogram();
    let mut intervals = Vec::new();
    let mut timeline = Vec::new();
    let mut last = counters();
    let mut last_ns = clock.now_ns();
    // Without a warm-up the window opens when the schedule starts, before any message.
    let mut window_start: Option<(u64, (u64, u64, u64, u64))> =
        (ctx.measure_from_ns == ctx.start_ns).then_some((ctx.start_ns, (0, 0, 0, 0)));
    let mut produce_window: Option<Throughput> = None;
    let mut producers = Some(producers);
    let mut drain_from: Option<(u64, (u64, u64, u64, u64))> = None;
    let mut live_consume: Option<Throughput> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut next_sample = Instant::now() + SAMPLE_INTERVAL;
    let backlog = w.backlog_mb > 0.0;
    loop {
        thread::sleep(Duration::from_millis(20));
        let now_ns = clock.now_ns();
        if window_start.is_none() && now_ns >= ctx.measure_from_ns {
            window_start = Some((now_ns, counters()));
        }
        // End of the produce phase: every producer thread has finished (all acks in).
        let producers_finished = producers
            .as_ref()
            .is_some_and(|p| p.iter().all(|h| h.is_finished()));
        if producers_finished {
            for handle in producers.take().into_iter().flatten() {
                let _ = handle.join();
            }
            let now_ns = clock.now_ns();
            let now = counters();
            let (from_ns, from) = window_start.unwrap_or((ctx.start_ns, (0, 0, 0, 0)));
            let secs = now_ns.saturating_sub(from_ns) as f64 / 1e9;
            produce_window = Some(Throughput::new(now.0 - from.0, now.1 - from.1, secs));
            if !backlog {
                // Live consumers: their window is the producers' window.
                live_consume = Some(Throughput::new(now.2 - from.2, now.3 - from.3, secs));
            }
            let ends = log_ends(&ctx.slots, &ctx.topics, &ctx.options);
            match ends {
                Ok(ends) => {
                    if let Ok(mut slot) = s.end_offsets.lock() {
                        *slot = Some(ends);
                    }
                }
                Err(e) => {
                    s.error(format!("log end offsets after producing: {e}"));
                    s.stop.store(true, Ordering::Relaxed);
                }
            }
            if backlog {
                drain_from = Some((clock.now_ns(), counters()));
            }
            s.producers_done.store(true, Ordering::Relaxed);
            drain_deadline = Some(Instant::now() + seconds(w.drain_timeout_s));
        }
        if drain_deadline.is_some_and(|d| Instant::now() > d) && !s.stop.load(Ordering::Relaxed) {
            s.error(format!(
                "consumers did not catch up within {} s",
                w.drain_timeout_s
            ));
            s.stop.store(true, Ordering::Relaxed);
        }
        let consumers_finished = consumers.iter().all(|h| h.is_finished());
        let done = producers.is_none() && consumers_finished;
        if Instant::now() >= next_sample || done {
            next_sample += SAMPLE_INTERVAL;
            let now = counters();
            let now_ns = clock.now_ns();
            let secs = (now_ns.saturating_sub(last_ns) as f64 / 1e9).max(1e-9);
            let publish = take(&s.publish);
            let e2e = take(&s.e2e);
            let p_pub = percentiles(&publish);
            let p_e2e = percentiles(&e2e);
            let sample = Sample {
                t_s: now_ns.saturating_sub(ctx.start_ns) as f64 / 1e9,
                produce_msg_per_s: (now.0 - last.0) as f64 / secs,
                produce_mb_per_s: (now.1 - last.1) as f64 / secs / 1e6,
                consume_msg_per_s: (now.2 - last.2) as f64 / secs,
                consume_mb_per_s: (now.3 - last.3) as f64 / secs / 1e6,
                publish_p99_ms: p_pub.p99,
                e2e_p99_ms: p_e2e.p99,
            };
            if progress {
                let phase = if now_ns < ctx.measure_from_ns {
                    "warm-up"
                } else if producers.is_some() {
                    "run"
                } else {
                    "drain"
                };
                eprintln!(
                    "[{:6.1}s {phase:7}] produce {:9.0} msg/s {:8.1} MB/s | consume {:9.0} msg/s {:8.1} MB/s | publish {} | e2e {}",
                    sample.t_s,
                    sample.produce_msg_per_s,
                    sample.produce_mb_per_s,
                    sample.consume_msg_per_s,
                    sample.consume_mb_per_s,
                    progress_latency(&p_pub),
                    progress_latency(&p_e2e),
                );
            }
            if now_ns >= ctx.measure_from_ns {
                let _ = publish_total.add(&publish);
                let _ = e2e_total.add(&e2e);
                intervals.push((last_ns as f64 / 1e9, secs, publish.clone(), e2e.clone()));
            }
            // A last sliver of an interval (the run's end) would plot as a spurious drop.
            if secs >= 0.25 || timeline.is_empty() {
                timeline.push(sample);
            }
            last = now;
            last_ns = now_ns;
        }
        if done {
            break;
        }
    }
    for handle in consumers {
        let _ = handle.join();
    }
    let end_ns = clock.now_ns();
    let now = counters();
    let consume = match (live_consume, drain_from) {
        (Some(live), _) => live,
        (None, Some((from_ns, from))) => {
            let secs = end_ns.saturating_sub(from_ns) as f64 / 1e9;
            Throughput::new(now.2 - from.2, now.3 - from.3, secs)
        }
        (None, None) => Throughput::default(),
    };
    let expected: u64 = s
        .end_offsets
        .lock()
        .ok()
        .and_then(|e| e.clone())
        .map_or(0, |ends| {
            ends.iter()
                .zip(&ctx.start_offsets)
                .flat_map(|(e, st)| e.iter().zip(st).map(|(e, s)| (e - s).max(0) as u64))
                .sum()
        });
    let acked = s.acked_msgs.load(Ordering::Relaxed);
    let failed = s.failed_msgs.load(Ordering::Relaxed);
    let consumed = s.consumed_msgs.load(Ordering::Relaxed);
    let crc_errors = s.crc_errors.load(Ordering::Relaxed);
    let consumers_expected = w.consumers > 0;
    let counts_match = failed == 0
        && crc_errors == 0
        && expected == acked
        && (!consumers_expected || consumed == expected);
    let summary = Summary {
        workload: w.clone(),
        topic_names: ctx.topics.clone(),
        started_unix_ms: ctx.start_ns / 1_000_000,
        produce: produce_window.unwrap_or_default(),
        consume,
        publish_latency_ms: percentiles(&publish_total),
        e2e_latency_ms: percentiles(&e2e_total),
        sent_messages: s.sent_msgs.load(Ordering::Relaxed),
        acked_messages: acked,
        failed_messages: failed,
        expected_messages: expected,
        consumed_messages: consumed,
        crc_errors,
        counts_match,
        timeline,
        errors: s.errors.lock().map(|e| e.clone()).unwrap_or_default(),
    };
    Ok(RunResult {
        summary,
        publish: publish_total,
        e2e: e2e_total,
        intervals,
    })
}

/// A progress line's latency column: p50 and p99 of the second's samples, or "-" where the
/// second has none: the warm-up (whose samples are not recorded) or a drain after the last
/// acknowledgement. Never 0.00, which would read as a measured zero.
pub fn progress_latency(p: &Percentiles) -> String {
    if p.count == 0 {
        format!("p50 {:>7} p99 {:>8} ms", "-", "-")
    } else {
        format!("p50 {:7.2} p99 {:8.2} ms", p.p50, p.p99)
    }
}

fn take(shared: &Mutex<Histogram<u64>>) -> Histogram<u64> {
    match shared.lock() {
        Ok(mut h) => std::mem::replace(&mut *h, new_histogram()),
        Err(_) => new_histogram(),
    }
}

/// The messages of one partition in one Produce request, for the answer's bookkeeping.
struct TagPart {
    topic: usize,
    partition: i32,
    intended_ns: Vec<u64>,
    bytes: u64,
}

/// A partition's batch being filled.
#[derive(Default)]
struct Accumulator {
    intended_ns: Vec<u64>,
    keys: Vec<Option<Bytes>>,
    bytes: usize,
    first_ns: u64,
}

/// One pipelined connection to a partition leader.
struct ProducerConn {
    addr: String,
    writer: PipelineWriter<Vec<TagPart>>,
    reader: JoinHandle<()>,
    version: i16,
}

/// Producer `index` of `count`, writing topic `t`.
fn produce(ctx: &Arc<Ctx>, t: usize, index: usize, count: usize) {
    if let Err(e) = produce_inner(ctx, t, index, count) {
        ctx.shared.error(format!("producer {index}: {e}"));
    }
}

fn produce_inner(ctx: &Arc<Ctx>, t: usize, index: usize, count: usize) -> Result<(), String> {
    let w = &ctx.workload;
    let s = &ctx.shared;
    let slots = &ctx.slots[t];
    let mut conns: Vec<ProducerConn> = Vec::new();
    let mut conn_of = Vec::with_capacity(slots.len());
    for slot in slots {
        let existing = conns.iter().position(|c| c.addr == slot.leader_addr);
        let i = match existing {
            Some(i) => i,
            None => {
                let conn = Connection::connect(&slot.leader_addr, &ctx.options)
                    .map_err(|e| format!("{}: {e}", slot.leader_addr))?;
                let version = conn
                    .versions()
                    .pick(ApiKey::Produce, PRODUCE_VERSION_MIN, PRODUCE_VERSION_MAX)
                    .map_err(|e| e.to_string())?;
                let (writer, reader) = conn.into_pipeline(w.inflight);
                let reader_ctx = ctx.clone();
                let reader = spawn(format!("acks-{index}-{}", conns.len()), move || {
                    read_acks(&reader_ctx, reader)
                })?;
                conns.push(ProducerConn {
                    addr: slot.leader_addr.clone(),
                    writer,
                    reader,
                    version,
                });
                conns.len() - 1
            }
        };
        conn_of.push(i);
    }
    // This producer's share of the rate and of the message count.
    let rate = w.rate / count as f64;
    // Stagger producers within one interval so they do not send in lockstep.
    let offset_ns = if rate > 0.0 {
        (1e9 / rate * index as f64 / count as f64) as u64
    } else {
        0
    };
    let schedule = Schedule::new(ctx.start_ns + offset_ns, rate);
    let limit = if w.messages > 0 {
        w.messages / count as u64 + u64::from((index as u64) < w.messages % count as u64)
    } else if w.backlog_mb > 0.0 {
        let total = (w.backlog_mb * 1e6 / w.message_bytes as f64).ceil() as u64;
        total / count as u64 + u64::from((index as u64) < total % count as u64)
    } else {
        u64::MAX
    };
    let linger_ns = (w.linger_ms * 1e6) as u64;
    let mut accs: Vec<Accumulator> = slots.iter().map(|_| Accumulator::default()).collect();
    let mut bufs: Vec<Vec<u8>> = slots.iter().map(|_| Vec::new()).collect();
    // Keyless messages stick to one partition until its batch is sent (Kafka's sticky
    // partitioner), then move to the next.
    let mut sticky = index % slots.len();
    let mut sticky_used = false;
    let mut rng = ctx.clock.origin_ns() ^ ((index as u64 + 1) << 32) | 1;
    let mut k: u64 = 0;
    // Wait for the schedule's start.
    sleep_until(&ctx.clock, ctx.start_ns);
    let mut last_linger_check = 0u64;
    let mut now = ctx.clock.now_ns();
    while k < limit && !s.stop.load(Ordering::Relaxed) {
        // The clock is read every 16 messages, and whenever the schedule seems ahead: at max
        // rate a message's creation time is exact to within the few µs 16 messages take.
        if k.is_multiple_of(16) {
            now = ctx.clock.now_ns();
        }
        let intended = match schedule {
            Some(sch) => sch.intended_ns(k),
            None => now,
        };
        if intended > now {
            now = ctx.clock.now_ns();
        }
        if intended >= ctx.end_ns || (schedule.is_none() && now >= ctx.end_ns) {
            break;
        }
        if intended > now {
            // Ahead of schedule: send what lingered long enough, then sleep.
            let next_linger = send_ready(
                ctx, t, &mut accs, &mut bufs, &mut conns, &conn_of, now, linger_ns, false,
            )?;
            last_linger_check = now;
            advance_sticky(&accs, &mut sticky, &mut sticky_used);
            sleep_until(&ctx.clock, intended.min(next_linger));
            continue;
        }
        // Choose key and partition.
        let (key, slot) = match w.key_distribution {
            KeyDistribution::None => (None, sticky),
            KeyDistribution::RoundRobin => {
                let key = Bytes::from(format!("key-{}", k % ROUND_ROBIN_KEYS));
                let p = murmur2_partition(&key, slots.len() as i32) as usize;
                (Some(key), p)
            }
            KeyDistribution::Random => {
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                let key =
                    Bytes::copy_from_slice(&rng.wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes());
                let p = murmur2_partition(&key, slots.len() as i32) as usize;
                (Some(key), p)
            }
        };
        let acc = &mut accs[slot];
        if acc.intended_ns.is_empty() {
            acc.first_ns = now;
        }
        acc.bytes += w.message_bytes + key.as_ref().map_or(0, |k| k.len());
        acc.intended_ns.push(intended);
        acc.keys.push(key);
        k += 1;
        sticky_used |= slot == sticky;
        if acc.bytes >= w.batch_bytes || now.saturating_sub(last_linger_check) > 100_000 {
            send_ready(
                ctx, t, &mut accs, &mut bufs, &mut conns, &conn_of, now, linger_ns, false,
            )?;
            last_linger_check = now;
            if w.key_distribution == KeyDistribution::None {
                advance_sticky(&accs, &mut sticky, &mut sticky_used);
            }
        }
    }
    send_ready(
        ctx,
        t,
        &mut accs,
        &mut bufs,
        &mut conns,
        &conn_of,
        ctx.clock.now_ns(),
        0,
        true,
    )?;
    for conn in conns {
        drop(conn.writer);
        let _ = conn.reader.join();
    }
    Ok(())
}

/// Moves the sticky partition on once its batch has been sent.
fn advance_sticky(accs: &[Accumulator], sticky: &mut usize, used: &mut bool) {
    if *used && accs[*sticky].intended_ns.is_empty() {
        *sticky = (*sticky + 1) % accs.len();
        *used = false;
    }
}

/// Sends every batch that is full or has lingered `linger_ns` (all non-empty ones if `all`),
/// one Produce request per leader. Returns when the oldest remaining batch will be due.
/// `bufs[i]` is partition slot `i`'s reused encoding buffer.
#[allow(clippy::too_many_arguments)]
fn send_ready(
    ctx: &Ctx,
    t: usize,
    accs: &mut [Accumulator],
    bufs: &mut [Vec<u8>],
    conns: &mut [ProducerConn],
    conn_of: &[usize],
    now: u64,
    linger_ns: u64,
    all: bool,
) -> Result<u64, String> {
    let w = &ctx.workload;
    let mut next_due = u64::MAX;
    let mut per_conn: Vec<Vec<usize>> = vec![Vec::new(); conns.len()];
    for (i, acc) in accs.iter().enumerate() {
        if acc.intended_ns.is_empty() {
            continue;
        }
        let due = acc.first_ns + linger_ns;
        if all || acc.bytes >= w.batch_bytes || due <= now {
            per_conn[conn_of[i]].push(i);
        } else {
            next_due = next_due.min(due);
        }
    }
    for (c, indexes) in per_conn.into_iter().enumerate() {
        if indexes.is_empty() {
            continue;
        }
        let mut tags = Vec::with_capacity(indexes.len());
        let mut messages = 0u64;
        for &i in &indexes {
            let acc = std::mem::take(&mut accs[i]);
            encode(ctx, &acc, &mut bufs[i])?;
            messages += acc.intended_ns.len() as u64;
            tags.push(TagPart {
                topic: t,
                partition: ctx.slots[t][i].partition,
                bytes: (acc.intended_ns.len() * w.message_bytes) as u64,
                intended_ns: acc.intended_ns,
            });
        }
        let parts: Vec<PartitionRecords<'_>> = indexes
            .iter()
            .map(|&i| PartitionRecords {
                topic: &ctx.topics[t],
                partition: ctx.slots[t][i].partition,
                records: &bufs[i],
            })
            .collect();
        let conn = &mut conns[c];
        let body = ProduceBody::new(conn.version, w.acks, w.request_timeout_ms, &parts);
        let slices = body.slices();
        ctx.shared.sent_msgs.fetch_add(messages, Ordering::Relaxed);
        if w.acks == 0 {
            conn.writer
                .send_unanswered(ApiKey::Produce, conn.version, &slices)
                .map_err(|e| format!("send to {}: {e}", conn.addr))?;
            let bytes: u64 = tags.iter().map(|t| t.bytes).sum();
            ctx.shared.acked_msgs.fetch_add(messages, Ordering::Relaxed);
            ctx.shared.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            conn.writer
                .send(ApiKey::Produce, conn.version, &slices, tags)
                .map_err(|e| format!("send to {}: {e}", conn.addr))?;
        }
    }
    Ok(next_due)
}

/// Encodes one partition's accumulated messages as a record batch into `buf`: written in
/// place when uncompressed, through the generic encoder when compressed.
fn encode(ctx: &Ctx, acc: &Accumulator, buf: &mut Vec<u8>) -> Result<(), String> {
    let filler = &ctx.filler[16..ctx.workload.message_bytes];
    if ctx.compression == Compression::None {
        let mut builder = BatchBuilder::new(buf);
        for (seq, (&intended, key)) in acc.intended_ns.iter().zip(&acc.keys).enumerate() {
            builder.push(
                key.as_deref(),
                &[&intended.to_be_bytes(), &(seq as u64).to_be_bytes(), filler],
                (intended / 1_000_000) as i64,
            );
        }
        builder.finish();
        return Ok(());
    }
    let size = ctx.workload.message_bytes;
    let n = acc.intended_ns.len();
    let mut values = BytesMut::with_capacity(n * size);
    for (seq, &intended) in acc.intended_ns.iter().enumerate() {
        values.put_u64(intended);
        values.put_u64(seq as u64);
        values.extend_from_slice(filler);
    }
    let values = values.freeze();
    let records: Vec<NewRecord> = acc
        .intended_ns
        .iter()
        .enumerate()
        .map(|(i, &intended)| {
            (
                acc.keys[i].clone(),
                Some(values.slice(i * size..(i + 1) * size)),
                (intended / 1_000_000) as i64,
            )
        })
        .collect();
    let batch = encode_batch(&records, ctx.compression)?;
    buf.clear();
    buf.extend_from_slice(&batch);
    Ok(())
}

/// Reads Produce answers on one connection; records publish latency.
fn read_acks(ctx: &Ctx, mut reader: PipelineReader<Vec<TagPart>>) {
    let s = &ctx.shared;
    let mut recorder = Recorder::new(s.publish.clone(), ctx.measure_from_ns);
    loop {
        let answer = match reader.recv() {
            Ok(Some(answer)) => answer,
            Ok(None) => break,
            Err(e) => {
                s.error(format!("reading Produce answers: {e}"));
                s.stop.store(true, Ordering::Relaxed);
                break;
            }
        };
        let done_ns = ctx.clock.now_ns();
        match parse_produce_response(answer.body, answer.version) {
            Ok(responses) => {
                for part in answer.tag {
                    let response = responses.iter().find(|r| {
                        r.partition == part.partition && r.topic == ctx.topics[part.topic]
                    });
                    let n = part.intended_ns.len() as u64;
                    match response {
                        Some(r) if r.error_code == 0 => {
                            for &intended in &part.intended_ns {
                                recorder.record(intended, done_ns);
                            }
                            s.acked_msgs.fetch_add(n, Ordering::Relaxed);
                            s.acked_bytes.fetch_add(part.bytes, Ordering::Relaxed);
                        }
                        other => {
                            s.failed_msgs.fetch_add(n, Ordering::Relaxed);
                            s.error(match other {
                                Some(r) => format!(
                                    "produce to {}-{}: error {} ({}) {}",
                                    r.topic,
                                    r.partition,
                                    r.error_code,
                                    crate::error_name(r.error_code),
                                    r.error_message.clone().unwrap_or_default()
                                ),
                                None => format!(
                                    "produce to partition {}: no answer for it",
                                    part.partition
                                ),
                            });
                        }
                    }
                }
            }
            Err(e) => {
                let n: u64 = answer.tag.iter().map(|p| p.intended_ns.len() as u64).sum();
                s.failed_msgs.fetch_add(n, Ordering::Relaxed);
                s.error(format!("Produce answer: {e}"));
            }
        }
        recorder.flush_if_due();
    }
}

fn sleep_until(clock: &Clock, when_ns: u64) {
    let now = clock.now_ns();
    if when_ns > now {
        // Coarse sleep: lateness is charged to the latency, as it would be for an application.
        thread::sleep(Duration::from_nanos((when_ns - now).min(100_000_000)));
    }
}

/// Consumer `c` of topic `t`: fetches partitions `p` with `p % consumers == c`.
fn consume(ctx: &Arc<Ctx>, t: usize, c: usize) {
    if let Err(e) = consume_inner(ctx, t, c) {
        ctx.shared.error(format!("consumer {t}-{c}: {e}"));
    }
}

fn consume_inner(ctx: &Arc<Ctx>, t: usize, c: usize) -> Result<(), String> {
    let w = &ctx.workload;
    let s = &ctx.shared;
    let mine: Vec<usize> = (0..ctx.slots[t].len())
        .filter(|i| i % w.consumers == c)
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let mut leaders: Vec<String> = mine
        .iter()
        .map(|&i| ctx.slots[t][i].leader_addr.clone())
        .collect();
    leaders.sort();
    leaders.dedup();
    let mut conns = Vec::new();
    for leader in &leaders {
        let conn =
            Connection::connect(leader, &ctx.options).map_err(|e| format!("{leader}: {e}"))?;
        let version = conn
            .versions()
            .pick(ApiKey::Fetch, FETCH_VERSION_MIN, FETCH_VERSION_MAX)
            .map_err(|e| e.to_string())?;
        conns.push((conn, version));
    }
    let mut positions: Vec<i64> = mine.iter().map(|&i| ctx.start_offsets[t][i]).collect();
    let mut recorder = Recorder::new(s.e2e.clone(), ctx.measure_from_ns);
    if w.backlog_mb > 0.0 {
        while !s.producers_done.load(Ordering::Relaxed) && !s.stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
    }
    let mut ends: Option<Vec<i64>> = None;
    while !s.stop.load(Ordering::Relaxed) {
        if ends.is_none() && s.producers_done.load(Ordering::Relaxed) {
            ends = s
                .end_offsets
                .lock()
                .ok()
                .and_then(|e| e.as_ref().map(|e| mine.iter().map(|&i| e[t][i]).collect()));
        }
        if let Some(ends) = &ends {
            if positions.iter().zip(ends).all(|(p, e)| p >= e) {
                break;
            }
        }
        for (leader, (conn, version)) in leaders.iter().zip(conns.iter_mut()) {
            let wanted: Vec<usize> = (0..mine.len())
                .filter(|&j| &ctx.slots[t][mine[j]].leader_addr == leader)
                .filter(|&j| ends.as_ref().is_none_or(|e| positions[j] < e[j]))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let request = fetch_request(
                &wanted
                    .iter()
                    .map(|&j| FetchPosition {
                        topic: ctx.topics[t].clone(),
                        partition: ctx.slots[t][mine[j]].partition,
                        offset: positions[j],
                        partition_max_bytes: w.fetch_partition_max_bytes,
                    })
                    .collect::<Vec<_>>(),
                w.fetch_max_wait_ms,
                1,
                w.fetch_max_bytes,
            );
            let body = conn
                .request_raw(*version, &request)
                .map_err(|e| format!("fetch from {leader}: {e}"))?;
            let now_ns = ctx.clock.now_ns();
            let view = parse_fetch_response(body, *version).map_err(|e| e.to_string())?;
            if view.error_code != 0 {
                return Err(format!("fetch error {}", view.error_code));
            }
            for part in &view.partitions {
                let Some(j) = wanted
                    .iter()
                    .copied()
                    .find(|&j| ctx.slots[t][mine[j]].partition == part.partition)
                else {
                    continue;
                };
                if part.error_code != 0 {
                    s.error(format!(
                        "fetch {}-{}: error {} ({})",
                        part.topic,
                        part.partition,
                        part.error_code,
                        crate::error_name(part.error_code)
                    ));
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let (mut messages, mut bytes) = (0u64, 0u64);
                for batch in batches(part.records) {
                    let batch = batch.map_err(|e| e.to_string())?;
                    if batch.next_offset() <= positions[j] {
                        continue;
                    }
                    if !batch.crc_ok() {
                        s.crc_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if batch.is_control() {
                        positions[j] = batch.next_offset();
                        continue;
                    }
                    let from = positions[j];
                    batch
                        .for_each_record(|offset, _ts, _key, value| {
                            if offset < from {
                                return;
                            }
                            messages += 1;
                            if let Some(v) = value {
                                bytes += v.len() as u64;
                                if v.len() >= 8 {
                                    let mut sent = [0u8; 8];
                                    sent.copy_from_slice(&v[..8]);
                                    recorder.record(u64::from_be_bytes(sent), now_ns);
                                }
                            }
                        })
                        .map_err(|e| e.to_string())?;
                    positions[j] = batch.next_offset();
                }
                s.consumed_msgs.fetch_add(messages, Ordering::Relaxed);
                s.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            recorder.flush_if_due();
        }
    }
    Ok(())
}
