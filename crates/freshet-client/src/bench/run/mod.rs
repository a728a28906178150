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
//!
//! The run's parts, one module each: [`setup`] (topics, leaders, log ends), [`produce`] (the
//! offered load: producers and their answer readers), [`consume`] (consumers), [`measure`]
//! (sampling, phases, the summary) and [`result`] (what a run measured, for `report`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::broker_metrics::{self, Scrape};
use super::latency::{new_histogram, Clock};
use super::workload::Workload;
use crate::admin;
use crate::{ConnectOptions, Connection};
use freshet_protocol::batch::Compression;

mod consume;
mod measure;
mod produce;
mod result;
mod setup;

pub use measure::progress_latency;
pub use result::{Interval, RunResult, Sample, Summary, Throughput};

/// Errors kept for the summary (the first ones; the rest are counted).
const ERRORS_KEPT_MAX: usize = 20;
/// How often the progress line and the timeline are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

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
    /// The busiest producer thread's CPU share of its running time, in thousandths.
    producer_busy_max_permille: AtomicU64,
    /// The largest send lag (creation later than intended) seen after the warm-up, ns.
    send_lag_max_ns: AtomicU64,
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
    /// The broker's /metrics before the run (s since the clock's origin), and this process's
    /// CPU seconds then.
    broker_before: BrokerScrape,
    client_cpu_before: f64,
}

/// A scrape of the broker's /metrics and when it was taken (s on the run's clock).
type BrokerScrape = Result<(Scrape, f64), String>;

/// Reads the broker's /metrics now (`off`: not at all).
fn scrape_broker(w: &Workload, clock: &Clock) -> BrokerScrape {
    match w.broker_metrics.trim() {
        "" | "off" => Err("not read (--broker-metrics off)".to_string()),
        url => broker_metrics::scrape(url).map(|s| (s, clock.now_ns() as f64 / 1e9)),
    }
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
    let placement = setup::prepare(&w, &options, &clock)?;
    let ctx = Arc::new(Ctx::new(w, options, clock, placement)?);
    let (producers, consumers) = start_threads(&ctx)?;
    let result = measure::supervise(&ctx, producers, consumers, progress);
    let w = &ctx.workload;
    if w.delete_topics && w.topic.is_none() {
        if let Ok(mut conn) = Connection::connect(&w.bootstrap, &ctx.options) {
            let names: Vec<&str> = ctx.topics.iter().map(String::as_str).collect();
            let _ = admin::delete_topics(&mut conn, &names, 30_000);
        }
    }
    result
}

impl Ctx {
    /// The run's schedule (start, warm-up end, produce end) from now, and its shared state.
    fn new(
        w: Workload,
        options: ConnectOptions,
        clock: Clock,
        placement: setup::Placement,
    ) -> Result<Ctx, String> {
        let client_cpu_before = broker_metrics::process_cpu_seconds();
        let broker_before = scrape_broker(&w, &clock);
        let now = clock.now_ns();
        // Producers start a little later so every thread is up when the schedule begins.
        let start_ns = now + 100_000_000;
        let measure_from_ns = start_ns + (w.warmup_s * 1e9) as u64;
        let end_ns = if w.messages > 0 || w.backlog_mb > 0.0 {
            u64::MAX
        } else {
            measure_from_ns + (w.duration_s * 1e9) as u64
        };
        Ok(Ctx {
            compression: w.compression()?,
            filler: setup::random_bytes(w.message_bytes, clock.origin_ns()),
            workload: w,
            options,
            clock,
            topics: placement.topics,
            slots: placement.slots,
            start_offsets: placement.start_offsets,
            start_ns,
            measure_from_ns,
            end_ns,
            shared: Shared::new(),
            broker_before,
            client_cpu_before,
        })
    }
}

impl Shared {
    fn new() -> Shared {
        Shared {
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
            producer_busy_max_permille: AtomicU64::new(0),
            send_lag_max_ns: AtomicU64::new(0),
        }
    }
}

/// The threads of one kind (producers or consumers) of a run.
type Threads = Vec<JoinHandle<()>>;

/// Starts the consumer threads, then the producer threads: `(producers, consumers)`.
fn start_threads(ctx: &Arc<Ctx>) -> Result<(Threads, Threads), String> {
    let w = &ctx.workload;
    // If a thread cannot be started, the ones already running are told to stop.
    let mut consumers = Vec::new();
    for t in 0..ctx.topics.len() {
        for c in 0..w.consumers {
            let ctx2 = ctx.clone();
            let handle = spawn(format!("consumer-{t}-{c}"), move || {
                consume::consume(&ctx2, t, c)
            });
            consumers.push(stop_on_error(ctx, handle)?);
        }
    }
    let producer_count = ctx.topics.len() * w.producers;
    let mut producers = Vec::new();
    for t in 0..ctx.topics.len() {
        for p in 0..w.producers {
            let ctx2 = ctx.clone();
            let index = t * w.producers + p;
            let handle = spawn(format!("producer-{t}-{p}"), move || {
                produce::produce(&ctx2, t, index, producer_count)
            });
            producers.push(stop_on_error(ctx, handle)?);
        }
    }
    Ok((producers, consumers))
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
