//! Latency math: the clock, the send schedule, and recording against the *intended* send time.
//!
//! Coordinated omission: a producer that waits for a stalled broker sends late, and if latency
//! were measured from the actual send the stall would hide in one slow sample while every
//! message that should have been sent during it looks fast. So a producer at a target rate has
//! a [`Schedule`]: message `k` is *intended* to go at `start + k / rate`, whatever happens.
//! Publish latency is `ack time - intended time` and end-to-end latency is
//! `consume time - intended time` (the intended time travels in the payload), so a stall shows
//! up in every message that should have gone out during it, as it would for a real application
//! producing at that rate. At max rate (no target) the intended time is when the message was
//! created, and throughput is the figure to read.
//!
//! Histograms are HdrHistograms of microseconds, 3 significant digits, 1 µs to
//! [`LATENCY_MAX_US`] (longer samples are clamped to it). Each recording thread keeps a local
//! histogram and adds it to a shared one every [`FLUSH_INTERVAL`], so threads do not contend per
//! sample. Samples intended before the end of the warm-up are dropped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency recorded, in µs (100 s); longer ones are clamped.
pub const LATENCY_MAX_US: u64 = 100_000_000;
/// How often a recording thread adds its samples to the shared histogram.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// An empty latency histogram (µs).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Nanoseconds since the Unix epoch, monotonic within the process (an `Instant` offset from
/// one wall-clock reading), so producer and consumer threads compare times exactly.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_unix_ns: u64,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock {
            origin: Instant::now(),
            origin_unix_ns: unix,
        }
    }

    /// Now, in ns since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.origin_unix_ns + self.origin.elapsed().as_nanos() as u64
    }

    /// The clock's start, in ns since the epoch.
    pub fn origin_ns(&self) -> u64 {
        self.origin_unix_ns
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The intended send times of one producer at a fixed rate.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_ns: u64,
    interval_ns: f64,
}

impl Schedule {
    /// `rate_per_s` messages per second from `start_ns`; `None` for max rate (`rate_per_s` 0).
    pub fn new(start_ns: u64, rate_per_s: f64) -> Option<Schedule> {
        (rate_per_s > 0.0).then(|| Schedule {
            start_ns,
            interval_ns: 1e9 / rate_per_s,
        })
    }

    /// When message `k` (from 0) is intended to be sent.
    pub fn intended_ns(&self, k: u64) -> u64 {
        self.start_ns + (k as f64 * self.interval_ns) as u64
    }
}

/// Records latencies (completion - intended) of one thread into a shared histogram.
pub struct Recorder {
    local: Histogram<u64>,
    shared: Arc<Mutex<Histogram<u64>>>,
    from_ns: u64,
    last_flush: Instant,
}

impl Recorder {
    /// A recorder adding to `shared`, ignoring samples intended before `from_ns` (warm-up).
    pub fn new(shared: Arc<Mutex<Histogram<u64>>>, from_ns: u64) -> Recorder {
        Recorder {
            local: new_histogram(),
            shared,
            from_ns,
            last_flush: Instant::now(),
        }
    }

    /// Records one message intended at `intended_ns` and completed at `done_ns`.
    pub fn record(&mut self, intended_ns: u64, done_ns: u64) {
        if intended_ns < self.from_ns {
            return;
        }
        let us = (done_ns.saturating_sub(intended_ns) / 1000).clamp(1, LATENCY_MAX_US);
        self.local.saturating_record(us);
    }

    /// Adds the local samples to the shared histogram if [`FLUSH_INTERVAL`] has passed.
    pub fn flush_if_due(&mut self) {
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush();
        }
    }

    /// Adds the local samples to the shared histogram now.
    pub fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.local.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.shared.lock() {
            // Same bounds on both sides: adding cannot fail.
            let _ = shared.add(&self.local);
        }
        self.local.reset();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The percentiles reported, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest sample.
    pub max: f64,
}

/// The reported percentiles of `h` (µs samples), in ms.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p99_9: ms(h.value_at_quantile(0.999)),
        p99_99: ms(h.value_at_quantile(0.9999)),
        max: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A closed-loop sender (one request in flight, as a blocked producer) at `rate` msg/s for
    /// `count` messages, with service time `service(send_ns)`. Returns the histogram measured
    /// against intended times (what the bench records) and the one measured from actual send
    /// times (the coordinated-omission mistake).
    fn simulate(
        rate: f64,
        count: u64,
        service: impl Fn(u64) -> u64,
    ) -> (Histogram<u64>, Histogram<u64>) {
        let start = 1_000 * MS;
        let schedule = Schedule::new(start, rate).expect("a rate");
        let corrected = Arc::new(Mutex::new(new_histogram()));
        let mut recorder = Recorder::new(corrected.clone(), start);
        let mut naive = new_histogram();
        let mut free_at = start;
        for k in 0..count {
            let intended = schedule.intended_ns(k);
            let sent = intended.max(free_at);
            let done = sent + service(sent);
            free_at = done;
            recorder.record(intended, done);
            naive.record((done - sent) / 1000).expect("in range");
        }
        recorder.flush();
        let corrected = corrected.lock().expect("lock").clone();
        (corrected, naive)
    }

    #[test]
    fn steady_service_gives_the_service_time_at_every_percentile() {
        let (corrected, naive) = simulate(1000.0, 10_000, |_| MS / 2);
        let p = percentiles(&corrected);
        assert_eq!(p.count, 10_000);
        for v in [p.p50, p.p99, p.p99_99, p.max] {
            assert!((v - 0.5).abs() < 0.01, "{p:?}");
        }
        assert_eq!(percentiles(&naive).p99, p.p99);
    }

    /// A target rate above what a closed loop can serve (1000 msg/s, 2 ms each): measured
    /// against the schedule, latency grows through the run (the queue an application would
    /// see); measured from the actual sends it stays at 2 ms and hides the overload.
    #[test]
    fn an_unsustainable_rate_shows_as_growing_latency() {
        let (corrected, naive) = simulate(1000.0, 10_000, |_| 2 * MS);
        let p = percentiles(&corrected);
        assert!(p.p50 > 4_000.0 && p.max > 9_900.0, "{p:?}");
        assert!((percentiles(&naive).max - 2.0).abs() < 0.01);
    }

    /// A 2-second stall in a 10-second run at 1000 msg/s (service 0.5 ms otherwise): every
    /// message intended during the stall waits for its end, and the backlog takes 2 s more to
    /// drain, so 40% of the messages see 0..2 s and p90/p99 are over a second. Measured from
    /// the actual send times only one sample is slow and p99 looks fine.
    #[test]
    fn a_stall_shows_in_the_high_percentiles() {
        let stall_from = 1_000 * MS + 5_000 * MS;
        let (corrected, naive) = simulate(1000.0, 10_000, |sent| {
            if (stall_from..stall_from + MS).contains(&sent) {
                2_000 * MS
            } else {
                MS / 2
            }
        });
        let p = percentiles(&corrected);
        assert!((p.p50 - 0.5).abs() < 0.01, "median unaffected: {p:?}");
        assert!(p.p90 > 1_400.0, "p90 {p:?}");
        assert!(p.p99 > 1_900.0 && p.max >= 1_990.0, "{p:?}");
        let n = percentiles(&naive);
        assert!(n.p99 < 0.6, "the naive p99 hides the stall: {n:?}");
        assert!(n.max > 1_990.0, "but its max shows one slow sample: {n:?}");
    }

    #[test]
    fn warm_up_samples_are_dropped_and_values_are_clamped() {
        let shared = Arc::new(Mutex::new(new_histogram()));
        let mut r = Recorder::new(shared.clone(), 100 * MS);
        r.record(99 * MS, 200 * MS); // warm-up
        r.record(100 * MS, 100 * MS); // 0 µs: counted as 1 µs
        r.record(100 * MS, u64::MAX); // clamped
        drop(r);
        let h = shared.lock().expect("lock");
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= LATENCY_MAX_US * 999 / 1000);
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_histogram();
        for us in 1..=100_000 {
            h.record(us).expect("in range");
        }
        let p = percentiles(&h);
        let close = |got: f64, want: f64| (got - want).abs() / want < 0.002;
        assert!(
            close(p.p50, 50.0) && close(p.p90, 90.0) && close(p.p99, 99.0),
            "{p:?}"
        );
        assert!(close(p.p99_9, 99.9) && close(p.max, 100.0), "{p:?}");
    }
}
