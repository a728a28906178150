//! What the broker says about a run (issue 16): `freshet bench` reads the broker's Prometheus
//! `/metrics` (Freshet's admin listener, `--broker-metrics`) before the run, when producing
//! ends and after the run, and reports from the differences:
//! - broker CPU seconds (`process_cpu_seconds_total`, the broker process alone) per GB
//!   produced and per GB consumed, with the bytes the broker itself counted
//!   (`freshet_shard_bytes_in_total` / `_out_total`) over the same interval;
//! - the server-side stages of a produce (`freshet_produce_stage_seconds`): count, mean and
//!   the bucket bounds that hold p50 and p99.
//!
//! The client's own cost (CPU from `getrusage`, how busy the busiest producer thread was, how
//! far producers fell behind their schedule) is measured by the run; [`client_verdict`] says
//! whether the client, not the broker, was the limit.
//!
//! Bounds: one scrape reads at most [`METRICS_RESPONSE_BYTES_MAX`] and waits at most
//! [`SCRAPE_TIMEOUT`]; a broker without the endpoint (or another Kafka broker) gives no CPU
//! figures, never a failed run.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

/// The admin listener `freshet start` opens by default.
pub const DEFAULT_BROKER_METRICS: &str = "http://127.0.0.1:9644/metrics";
/// Most bytes of one /metrics response read (a broker with many partitions has long ones).
pub const METRICS_RESPONSE_BYTES_MAX: u64 = 64 << 20;
/// Longest connect, and longest wait for each read, of one scrape.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Stage names, in the order of a produce; then `request`, the whole Produce request from
/// dispatch to the answer being ready (`freshet_request_latency_seconds{api="Produce"}`), which
/// also holds what is no stage (decoding, hops between shards, encoding).
pub const STAGES: [&str; 6] = [
    "queued",
    "validated",
    "written",
    "fdatasync",
    "answered",
    "request",
];
/// Index of `request` in [`STAGES`].
const REQUEST: usize = 5;

/// One stage's histogram as scraped: cumulative buckets `(le seconds, count)`, sum, count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageHistogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum_seconds: f64,
    pub count: f64,
}

/// What one scrape of /metrics gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// `process_cpu_seconds_total` (absent: not a broker that exports it).
    pub cpu_seconds: Option<f64>,
    /// Record bytes acknowledged to producers, all shards.
    pub bytes_in: f64,
    /// Record bytes sent to consumers, all shards.
    pub bytes_out: f64,
    /// Per stage, in [`STAGES`] order.
    pub stages: Vec<StageHistogram>,
}

/// A sample line: metric name, `(label, value)` pairs, value.
type SampleLine<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// `(name, labels, value)` of a sample line; `None` for comments and lines not of that form.
fn sample_line(line: &str) -> Option<SampleLine<'_>> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        None => (head, Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            // Label values here (shard numbers, stage names, bounds) hold no `,` or `"`.
            let labels = body
                .split(',')
                .filter(|l| !l.is_empty())
                .filter_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (name, labels)
        }
    };
    Some((name, labels, value))
}

fn label<'a>(labels: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Parses the text exposition format for what [`Scrape`] holds.
pub fn parse(text: &str) -> Scrape {
    let mut s = Scrape {
        stages: vec![StageHistogram::default(); STAGES.len()],
        ..Scrape::default()
    };
    for line in text.lines() {
        let Some((name, labels, value)) = sample_line(line) else {
            continue;
        };
        // A histogram series of one of STAGES: (stage index, bucket/sum/count suffix).
        let series = if let Some(suffix) = name.strip_prefix("freshet_produce_stage_seconds") {
            label(&labels, "stage")
                .and_then(|st| STAGES[..REQUEST].iter().position(|x| *x == st))
                .map(|i| (i, suffix))
        } else if let Some(suffix) = name.strip_prefix("freshet_request_latency_seconds") {
            (label(&labels, "api") == Some("Produce")).then_some((REQUEST, suffix))
        } else {
            None
        };
        if let Some((i, suffix)) = series {
            let h = &mut s.stages[i];
            match suffix {
                "_bucket" => {
                    let le = label(&labels, "le").and_then(|v| match v {
                        "+Inf" => Some(f64::INFINITY),
                        v => v.parse().ok(),
                    });
                    if let Some(le) = le {
                        h.buckets.push((le, value));
                    }
                }
                "_sum" => h.sum_seconds = value,
                "_count" => h.count = value,
                _ => {}
            }
            continue;
        }
        match name {
            "process_cpu_seconds_total" => s.cpu_seconds = Some(value),
            "freshet_shard_bytes_in_total" => s.bytes_in += value,
            "freshet_shard_bytes_out_total" => s.bytes_out += value,
            _ => {}
        }
    }
    s
}

/// `http://host:port/path` or `host:port` (path /metrics) → `(host:port, path)`.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.starts_with("https://") || url.starts_with("https://") {
        return Err(format!("{url}: only http:// is read"));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((host.to_string(), path.to_string()))
}

/// GETs `url` and parses it.
pub fn scrape(url: &str) -> Result<Scrape, String> {
    let (host, path) = split_url(url)?;
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).map_err(|e| format!("{url}: {e}"))?;
    stream
        .set_read_timeout(Some(SCRAPE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(SCRAPE_TIMEOUT)))
        .map_err(|e| format!("{url}: {e}"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut body = Vec::new();
    stream
        .take(METRICS_RESPONSE_BYTES_MAX)
        .read_to_end(&mut body)
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    Ok(parse(body))
}

/// Broker CPU over one phase of a run, with the bytes the broker counted in it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct PhaseCost {
    /// Wall-clock length, s.
    pub seconds: f64,
    /// Broker CPU seconds (user + system).
    pub cpu_seconds: f64,
    /// Record bytes acknowledged to producers, GB (10^9 bytes).
    pub gb_in: f64,
    /// Record bytes sent to consumers, GB.
    pub gb_out: f64,
}

impl PhaseCost {
    /// The broker's CPU and bytes between two scrapes `seconds` apart; `None` without CPU.
    pub fn between(before: &Scrape, after: &Scrape, seconds: f64) -> Option<PhaseCost> {
        Some(PhaseCost {
            seconds,
            cpu_seconds: (after.cpu_seconds? - before.cpu_seconds?).max(0.0),
            gb_in: (after.bytes_in - before.bytes_in).max(0.0) / 1e9,
            gb_out: (after.bytes_out - before.bytes_out).max(0.0) / 1e9,
        })
    }

    /// CPU cores the broker used on average.
    pub fn cores(&self) -> f64 {
        if self.seconds > 0.0 {
            self.cpu_seconds / self.seconds
        } else {
            0.0
        }
    }
}

/// CPU seconds per GB; `None` when no bytes moved.
pub fn cpu_per_gb(cpu_seconds: f64, gb: f64) -> Option<f64> {
    (gb > 0.0).then(|| cpu_seconds / gb)
}

/// One stage of a produce over the run (differences of the scrapes).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageSummary {
    pub stage: String,
    /// Stage timings recorded (per request, or per partition append).
    pub count: u64,
    pub mean_ms: f64,
    /// Upper bound of the bucket holding p50 / p99, ms (`None`: beyond the last bound).
    pub p50_le_ms: Option<f64>,
    pub p99_le_ms: Option<f64>,
}

/// The stages between two scrapes.
pub fn stage_summaries(before: &Scrape, after: &Scrape) -> Vec<StageSummary> {
    let empty = StageHistogram::default();
    STAGES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let a = after.stages.get(i).unwrap_or(&empty);
            let b = before.stages.get(i).unwrap_or(&empty);
            let count = (a.count - b.count).max(0.0);
            let bucket_delta: Vec<(f64, f64)> = a
                .buckets
                .iter()
                .map(|(le, n)| {
                    let was = b
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |(_, n)| *n);
                    (*le, (n - was).max(0.0))
                })
                .collect();
            let quantile = |q: f64| {
                let rank = (q * count).ceil().max(1.0);
                bucket_delta
                    .iter()
                    .find(|(_, n)| *n >= rank)
                    .and_then(|(le, _)| le.is_finite().then_some(le * 1e3))
            };
            StageSummary {
                stage: name.to_string(),
                count: count as u64,
                mean_ms: if count > 0.0 {
                    (a.sum_seconds - b.sum_seconds).max(0.0) / count * 1e3
                } else {
                    0.0
                },
                p50_le_ms: (count > 0.0).then(|| quantile(0.5)).flatten(),
                p99_le_ms: (count > 0.0).then(|| quantile(0.99)).flatten(),
            }
        })
        .collect()
}

/// What the broker's /metrics said about a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BrokerReport {
    /// The URL read.
    pub url: String,
    /// Why there are no figures (the endpoint could not be read, or has no CPU series).
    pub unavailable: Option<String>,
    /// From the start of the run until every producer finished (live consumers included).
    pub produce_phase: Option<PhaseCost>,
    /// From then until the consumers finished (the drain; all of consuming with a backlog).
    pub drain_phase: Option<PhaseCost>,
    /// Broker CPU s per GB produced: the produce phase's CPU over its GB in.
    pub cpu_s_per_gb_produced: Option<f64>,
    /// Broker CPU s per GB consumed: the drain's CPU over its GB out with a backlog; else the
    /// whole run's CPU over its GB out.
    pub cpu_s_per_gb_consumed: Option<f64>,
    /// Producing and consuming ran together, so each figure above includes CPU of the other.
    pub mixed: bool,
    /// The broker counted far fewer bytes in than the run acknowledged: not the same broker.
    pub other_broker: bool,
    /// Server-side stages of a produce.
    pub stages: Vec<StageSummary>,
}

impl BrokerReport {
    /// The report from the three scrapes (start, producers done, end); `acked_bytes`: value
    /// bytes the run had acknowledged, to check that the scraped broker is the one loaded.
    pub fn from_scrapes(
        url: &str,
        scrapes: [&Result<(Scrape, f64), String>; 3],
        backlog: bool,
        acked_bytes: u64,
    ) -> BrokerReport {
        let mut r = BrokerReport {
            url: url.to_string(),
            ..BrokerReport::default()
        };
        let [start, mid, end] = scrapes;
        let (start, mid, end) = match (start, mid, end) {
            (Ok(s), Ok(m), Ok(e)) => (s, m, e),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                r.unavailable = Some(e.clone());
                return r;
            }
        };
        r.stages = stage_summaries(&start.0, &end.0);
        let produce = PhaseCost::between(&start.0, &mid.0, mid.1 - start.1);
        let drain = PhaseCost::between(&mid.0, &end.0, end.1 - mid.1);
        let (Some(produce), Some(drain)) = (produce, drain) else {
            r.unavailable = Some(format!("{url} has no process_cpu_seconds_total"));
            return r;
        };
        r.produce_phase = Some(produce);
        r.drain_phase = Some(drain);
        r.mixed = !backlog && produce.gb_out > 0.0;
        r.cpu_s_per_gb_produced = cpu_per_gb(produce.cpu_seconds, produce.gb_in);
        r.cpu_s_per_gb_consumed = if backlog {
            cpu_per_gb(drain.cpu_seconds, drain.gb_out)
        } else {
            cpu_per_gb(
                produce.cpu_seconds + drain.cpu_seconds,
                produce.gb_out + drain.gb_out,
            )
        };
        r.other_broker = (produce.gb_in + drain.gb_in) * 1e9 < acked_bytes as f64 * 0.5;
        r
    }
}

/// The client's own cost over a run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ClientCost {
    /// Wall-clock length of the run, s.
    pub seconds: f64,
    /// CPU of this process (user + system, getrusage), s.
    pub cpu_seconds: f64,
    /// CPUs this process may use.
    pub cpus: usize,
    /// The busiest producer thread's CPU time over its running time (1.0: a whole core).
    pub producer_thread_busy_max: f64,
    /// How far the busiest producer fell behind its schedule at worst after the warm-up
    /// (creating a message later than intended), ms; 0 at `--rate 0` (no schedule).
    pub send_lag_max_ms: f64,
}

impl ClientCost {
    /// CPU cores the client used on average.
    pub fn cores(&self) -> f64 {
        if self.seconds > 0.0 {
            self.cpu_seconds / self.seconds
        } else {
            0.0
        }
    }
}

/// A producer thread this busy (share of one core) is the limit of what it offers.
pub const THREAD_BUSY_LIMIT: f64 = 0.9;
/// Send lag beyond this, ms, means the offered load fell behind the schedule.
pub const SEND_LAG_LIMIT_MS: f64 = 100.0;

/// `(client_limited, the line saying why)`.
pub fn client_verdict(c: &ClientCost) -> (bool, String) {
    let cores = c.cores();
    let facts = format!(
        "client CPU {:.1} s over {:.1} s ({:.2} of {} cores), busiest producer thread {:.0}% busy, send lag max {:.1} ms",
        c.cpu_seconds,
        c.seconds,
        cores,
        c.cpus,
        c.producer_thread_busy_max * 100.0,
        c.send_lag_max_ms
    );
    if c.producer_thread_busy_max >= THREAD_BUSY_LIMIT {
        let line = format!(
            "client-limited: a producer thread used a whole core ({facts}); add --producers"
        );
        return (true, line);
    }
    if c.cpus > 0 && cores >= c.cpus as f64 * THREAD_BUSY_LIMIT {
        let line = format!("client-limited: the client used every core ({facts})");
        return (true, line);
    }
    if c.send_lag_max_ms > SEND_LAG_LIMIT_MS {
        let line = format!(
            "broker-limited: producers fell behind while waiting for answers, not for CPU ({facts})"
        );
        return (false, line);
    }
    (false, format!("client not the limit: {facts}"))
}

/// This process's CPU time (user + system), s.
pub fn process_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// The calling thread's CPU time (user + system), s.
pub fn thread_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_THREAD)
}

fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP process_cpu_seconds_total x\n\
        # TYPE process_cpu_seconds_total counter\n\
        process_cpu_seconds_total 12.5\n\
        freshet_shard_bytes_in_total{shard=\"0\"} 1000000000\n\
        freshet_shard_bytes_in_total{shard=\"1\"} 500000000\n\
        freshet_shard_bytes_out_total{shard=\"0\"} 250000000\n\
        freshet_produce_stage_seconds_bucket{stage=\"fdatasync\",le=\"0.001\"} 10\n\
        freshet_produce_stage_seconds_bucket{stage=\"fdatasync\",le=\"0.0025\"} 90\n\
        freshet_produce_stage_seconds_bucket{stage=\"fdatasync\",le=\"0.005\"} 100\n\
        freshet_produce_stage_seconds_bucket{stage=\"fdatasync\",le=\"+Inf\"} 100\n\
        freshet_produce_stage_seconds_sum{stage=\"fdatasync\"} 0.2\n\
        freshet_produce_stage_seconds_count{stage=\"fdatasync\"} 100\n\
        freshet_request_latency_seconds_bucket{api=\"Produce\",le=\"0.01\"} 4\n\
        freshet_request_latency_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 4\n\
        freshet_request_latency_seconds_count{api=\"Produce\"} 4\n\
        freshet_request_latency_seconds_count{api=\"Fetch\"} 9\n\
        garbage line {{{\n";

    #[test]
    fn scrape_text_parses_cpu_bytes_and_stages() {
        let s = parse(TEXT);
        assert_eq!(s.cpu_seconds, Some(12.5));
        assert_eq!(s.bytes_in, 1.5e9);
        assert_eq!(s.bytes_out, 2.5e8);
        assert_eq!(s.stages[3].count, 100.0);
        assert_eq!(s.stages[3].buckets.len(), 4);
        assert_eq!(s.stages[REQUEST].count, 4.0);
        assert_eq!(s.stages[REQUEST].buckets.len(), 2);
        assert_eq!(parse("").cpu_seconds, None);
    }

    #[test]
    fn stage_summary_takes_differences_and_bucket_bounds() {
        let before = parse("");
        let after = parse(TEXT);
        let st = &stage_summaries(&before, &after)[3];
        assert_eq!(st.stage, "fdatasync");
        assert_eq!(st.count, 100);
        assert!((st.mean_ms - 2.0).abs() < 1e-9);
        assert_eq!(st.p50_le_ms, Some(2.5));
        assert_eq!(st.p99_le_ms, Some(5.0));
        assert_eq!(stage_summaries(&after, &after)[3].count, 0);
    }

    #[test]
    fn cpu_per_gb_is_cpu_over_the_bytes_of_the_same_interval() {
        let at = |cpu: f64, bytes_in: f64, bytes_out: f64| Scrape {
            cpu_seconds: Some(cpu),
            bytes_in,
            bytes_out,
            ..Scrape::default()
        };
        // Backlog: 2 GB in for 3 CPU s, then 2 GB out for 1 CPU s.
        let s0 = Ok((at(10.0, 0.0, 0.0), 0.0));
        let s1 = Ok((at(13.0, 2e9, 0.0), 10.0));
        let s2 = Ok((at(14.0, 2e9, 2e9), 15.0));
        let r = BrokerReport::from_scrapes("u", [&s0, &s1, &s2], true, 1_900_000_000);
        assert_eq!(r.cpu_s_per_gb_produced, Some(1.5));
        assert_eq!(r.cpu_s_per_gb_consumed, Some(0.5));
        assert!(!r.mixed && !r.other_broker);
        assert_eq!(r.produce_phase.unwrap().cores(), 0.3);
        // Live consumers: consumed per GB carries the whole run's CPU; flagged as mixed.
        let s1 = Ok((at(13.0, 2e9, 1.5e9), 10.0));
        let r = BrokerReport::from_scrapes("u", [&s0, &s1, &s2], false, 1_900_000_000);
        assert!(r.mixed);
        assert_eq!(r.cpu_s_per_gb_consumed, Some(2.0));
        // The scraped broker saw none of the run's bytes: another broker.
        let r = BrokerReport::from_scrapes("u", [&s0, &s0, &s0], false, 1_000_000);
        assert!(r.other_broker);
        assert_eq!(r.cpu_s_per_gb_produced, None);
        // No endpoint: no figures, and why.
        let err = Err("refused".to_string());
        let r = BrokerReport::from_scrapes("u", [&s0, &err, &s2], false, 0);
        assert_eq!(r.unavailable.as_deref(), Some("refused"));
        assert_eq!(cpu_per_gb(1.0, 0.0), None);
    }

    #[test]
    fn verdict_names_the_client_only_when_it_is_the_limit() {
        let mut c = ClientCost {
            seconds: 10.0,
            cpu_seconds: 2.0,
            cpus: 4,
            producer_thread_busy_max: 0.3,
            send_lag_max_ms: 1.0,
        };
        assert!(client_verdict(&c).1.starts_with("client not the limit"));
        c.send_lag_max_ms = 500.0;
        let (limited, line) = client_verdict(&c);
        assert!(!limited && line.starts_with("broker-limited"), "{line}");
        c.producer_thread_busy_max = 0.95;
        let (limited, line) = client_verdict(&c);
        assert!(limited && line.starts_with("client-limited"), "{line}");
        c.producer_thread_busy_max = 0.5;
        c.cpu_seconds = 38.0;
        assert!(client_verdict(&c).0);
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9644/metrics").unwrap(),
            ("127.0.0.1:9644".into(), "/metrics".into())
        );
        assert_eq!(
            split_url("localhost:1").unwrap(),
            ("localhost:1".into(), "/metrics".into())
        );
        assert!(split_url("https://x/metrics").is_err());
        assert!(split_url("http:///metrics").is_err());
    }

    #[test]
    fn this_process_and_thread_have_cpu_time() {
        let t0 = thread_cpu_seconds();
        let started = std::time::Instant::now();
        let mut x = 1u64;
        while started.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_seconds() > t0);
        assert!(process_cpu_seconds() > 0.0);
    }
}
