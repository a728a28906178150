//! Measurement, on the calling thread: sampling the counters and histograms every
//! [`SAMPLE_INTERVAL`](super::SAMPLE_INTERVAL), the progress line, the end of the produce
//! phase (log ends for the consumers), the drain, and the summary.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::super::broker_metrics::{self, BrokerReport, ClientCost};
use super::super::latency::{new_histogram, percentiles, Percentiles};
use super::super::workload::seconds;
use super::result::{Interval, RunResult, Sample, Summary, Throughput};
use super::setup::log_ends;
use super::{scrape_broker, BrokerScrape, Ctx, Shared, SAMPLE_INTERVAL};

/// Counter values at one instant: acknowledged messages and bytes, consumed messages and bytes.
type Counts = (u64, u64, u64, u64);

fn counts(s: &Shared) -> Counts {
    (
        s.acked_msgs.load(Ordering::Relaxed),
        s.acked_bytes.load(Ordering::Relaxed),
        s.consumed_msgs.load(Ordering::Relaxed),
        s.consumed_bytes.load(Ordering::Relaxed),
    )
}

/// The phases of a run as the supervisor sees them: the measured window (after the warm-up,
/// until the producers finish), then the drain.
struct Phases {
    /// Start of the measured window and the counters then.
    window_start: Option<(u64, Counts)>,
    /// Produce throughput over the measured window, once the producers finished.
    produce_window: Option<Throughput>,
    /// Consume throughput over the same window (live consumers, no backlog).
    live_consume: Option<Throughput>,
    /// Start of the drain and the counters then (backlog runs: consumers start after it).
    drain_from: Option<(u64, Counts)>,
    /// Consumers that have not caught up by then are stopped.
    drain_deadline: Option<Instant>,
    /// The broker's /metrics when the producers finished.
    broker_mid: Option<BrokerScrape>,
}

/// The samples, per second and over the measured window.
struct Meter {
    progress: bool,
    publish_total: Histogram<u64>,
    e2e_total: Histogram<u64>,
    intervals: Vec<Interval>,
    timeline: Vec<Sample>,
    last: Counts,
    last_ns: u64,
    next_sample: Instant,
}

/// Sampling, phase changes and the result; runs on the calling thread.
pub(super) fn supervise(
    ctx: &Arc<Ctx>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    progress: bool,
) -> Result<RunResult, String> {
    let s = &ctx.shared;
    let mut meter = Meter {
        progress,
        publish_total: new_histogram(),
        e2e_total: new_histogram(),
        intervals: Vec::new(),
        timeline: Vec::new(),
        last: counts(s),
        last_ns: ctx.clock.now_ns(),
        next_sample: Instant::now() + SAMPLE_INTERVAL,
    };
    let mut phases = Phases {
        // Without a warm-up the window opens when the schedule starts, before any message.
        window_start: (ctx.measure_from_ns == ctx.start_ns).then_some((ctx.start_ns, (0, 0, 0, 0))),
        produce_window: None,
        live_consume: None,
        drain_from: None,
        drain_deadline: None,
        broker_mid: None,
    };
    let mut producers = Some(producers);
    loop {
        thread::sleep(Duration::from_millis(20));
        let now_ns = ctx.clock.now_ns();
        if phases.window_start.is_none() && now_ns >= ctx.measure_from_ns {
            phases.window_start = Some((now_ns, counts(s)));
        }
        // End of the produce phase: every producer thread has finished (all acks in).
        let producers_finished = producers
            .as_ref()
            .is_some_and(|p| p.iter().all(|h| h.is_finished()));
        if producers_finished {
            for handle in producers.take().into_iter().flatten() {
                let _ = handle.join();
            }
            end_produce_phase(ctx, &mut phases);
        }
        let late = phases.drain_deadline.is_some_and(|d| Instant::now() > d);
        if late && !s.stop.load(Ordering::Relaxed) {
            let timeout = ctx.workload.drain_timeout_s;
            s.error(format!("consumers did not catch up within {timeout} s"));
            s.stop.store(true, Ordering::Relaxed);
        }
        let consumers_finished = consumers.iter().all(|h| h.is_finished());
        let done = producers.is_none() && consumers_finished;
        if Instant::now() >= meter.next_sample || done {
            meter.sample(ctx, producers.is_some());
        }
        if done {
            break;
        }
    }
    for handle in consumers {
        let _ = handle.join();
    }
    Ok(summarize(ctx, meter, phases))
}

/// The producers have finished: closes the measured window, asks the leaders where the logs
/// end now (where consumers stop) and opens the drain.
fn end_produce_phase(ctx: &Ctx, phases: &mut Phases) {
    let s = &ctx.shared;
    let backlog = ctx.workload.backlog_mb > 0.0;
    let now_ns = ctx.clock.now_ns();
    let now = counts(s);
    let (from_ns, from) = phases.window_start.unwrap_or((ctx.start_ns, (0, 0, 0, 0)));
    let secs = now_ns.saturating_sub(from_ns) as f64 / 1e9;
    phases.produce_window = Some(Throughput::new(now.0 - from.0, now.1 - from.1, secs));
    if !backlog {
        // Live consumers: their window is the producers' window.
        phases.live_consume = Some(Throughput::new(now.2 - from.2, now.3 - from.3, secs));
    }
    match log_ends(&ctx.slots, &ctx.topics, &ctx.options) {
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
        phases.drain_from = Some((ctx.clock.now_ns(), counts(s)));
    }
    phases.broker_mid = Some(scrape_broker(&ctx.workload, &ctx.clock));
    s.producers_done.store(true, Ordering::Relaxed);
    phases.drain_deadline = Some(Instant::now() + seconds(ctx.workload.drain_timeout_s));
}

impl Meter {
    /// One sample: the interval's rates and histograms into the timeline (and the totals once
    /// past the warm-up), and the progress line.
    fn sample(&mut self, ctx: &Ctx, producing: bool) {
        let s = &ctx.shared;
        self.next_sample += SAMPLE_INTERVAL;
        let now = counts(s);
        let now_ns = ctx.clock.now_ns();
        let last = self.last;
        let secs = (now_ns.saturating_sub(self.last_ns) as f64 / 1e9).max(1e-9);
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
        if self.progress {
            let phase = if now_ns < ctx.measure_from_ns {
                "warm-up"
            } else if producing {
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
            let _ = self.publish_total.add(&publish);
            let _ = self.e2e_total.add(&e2e);
            self.intervals.push((
                self.last_ns as f64 / 1e9,
                secs,
                publish.clone(),
                e2e.clone(),
            ));
        }
        // A last sliver of an interval (the run's end) would plot as a spurious drop.
        if secs >= 0.25 || self.timeline.is_empty() {
            self.timeline.push(sample);
        }
        self.last = now;
        self.last_ns = now_ns;
    }
}

/// The result of a run whose threads have all finished: throughput windows, latency
/// percentiles, and whether every acknowledged message was consumed exactly once.
fn summarize(ctx: &Ctx, meter: Meter, phases: Phases) -> RunResult {
    let w = &ctx.workload;
    let s = &ctx.shared;
    let end_ns = ctx.clock.now_ns();
    let now = counts(s);
    let consume = match (phases.live_consume, phases.drain_from) {
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
    let (broker, client) = costs(ctx, &phases, end_ns);
    let (client_limited, client_verdict) = broker_metrics::client_verdict(&client);
    let summary = Summary {
        workload: w.clone(),
        topic_names: ctx.topics.clone(),
        started_unix_ms: ctx.start_ns / 1_000_000,
        produce: phases.produce_window.unwrap_or_default(),
        consume,
        publish_latency_ms: percentiles(&meter.publish_total),
        e2e_latency_ms: percentiles(&meter.e2e_total),
        sent_messages: s.sent_msgs.load(Ordering::Relaxed),
        acked_messages: acked,
        failed_messages: failed,
        expected_messages: expected,
        consumed_messages: consumed,
        crc_errors,
        counts_match,
        timeline: meter.timeline,
        errors: s.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        broker,
        client,
        client_limited,
        client_verdict,
    };
    RunResult {
        summary,
        publish: meter.publish_total,
        e2e: meter.e2e_total,
        intervals: meter.intervals,
    }
}

/// The broker's cost (from its /metrics before, when producing ended, and now) and the
/// client's own.
fn costs(ctx: &Ctx, phases: &Phases, end_ns: u64) -> (BrokerReport, ClientCost) {
    let s = &ctx.shared;
    let end = scrape_broker(&ctx.workload, &ctx.clock);
    let missing = Err("producers did not finish".to_string());
    let mid = phases.broker_mid.as_ref().unwrap_or(&missing);
    let broker = BrokerReport::from_scrapes(
        &ctx.workload.broker_metrics,
        [&ctx.broker_before, mid, &end],
        ctx.workload.backlog_mb > 0.0,
        s.acked_bytes.load(Ordering::Relaxed),
    );
    let client = ClientCost {
        seconds: end_ns.saturating_sub(ctx.start_ns) as f64 / 1e9,
        cpu_seconds: (broker_metrics::process_cpu_seconds() - ctx.client_cpu_before).max(0.0),
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        producer_thread_busy_max: s.producer_busy_max_permille.load(Ordering::Relaxed) as f64
            / 1000.0,
        send_lag_max_ms: s.send_lag_max_ns.load(Ordering::Relaxed) as f64 / 1e6,
    };
    (broker, client)
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
