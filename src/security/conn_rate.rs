//! Connection-creation rate limits (KIP-612), as Kafka's `ConnectionQuotas`:
//!
//! - **Broker-wide and per listener** (`max_connection_creation_rate`, per listener
//!   `listener_name.<l>.max_connection_creation_rate`): every new connection is recorded into
//!   the broker's rate and its listener's, at once; when a rate is over its limit the acceptor
//!   waits Kafka's throttle time (`(rate - limit) / limit x window`, at most one quota window,
//!   1 s) before it serves that connection and accepts the next one. Nothing is refused. The
//!   inter-broker listener (when there are several listeners) is not counted against the
//!   broker-wide rate, only against its own listener limit (Kafka's "protected listener").
//! - **Per IP** (the client-quota entity `ip`, key `connection_creation_rate`, a named IP or
//!   `<default>`; `quota::ip_connection_rate`): after the acceptor's wait, the connection is
//!   recorded into its address's rate; over the quota it is not served: its record is taken
//!   back from the IP, broker and listener rates and the socket is closed once the throttle
//!   time has passed (Kafka's `ConnectionThrottledException` and delayed close), so a client
//!   reconnecting in a loop is slowed.
//!
//! The rates are Kafka's `Rate` over `quota.window.num` (11) samples of 1 s
//! ([`crate::quota::WindowedRate`]), so a burst of about 10 s worth of the limit passes before
//! the first throttle. They live in one process-wide table behind a mutex ([`Limiter`]), taken
//! only when a connection is accepted and some limit applies: connections on every shard count
//! together, as on one Kafka broker. Each shard accepts on its own socket; so that the shards
//! of a listener wait as Kafka's one acceptor per listener does (one throttled connection after
//! another, not one per shard at a time), each listener has a gate: the time its last
//! throttled connection is served. A connection accepted before the gate waits for it, and a
//! throttled one is served its throttle time after the gate (so with S shards a wait is at most
//! S seconds, each of them at most one window).
//!
//! Bounds: at most [`IP_RATES_MAX`] addresses are tracked. An address whose rate has not been
//! recorded into for a whole quota window (11 s) holds no information (its rate is 0, as a
//! fresh one's), so such entries are dropped when the table is full and once a minute; when
//! the table is still full of addresses active in the last 11 s, a new address shares one
//! overflow rate (with its own quota), which throttles such addresses together rather than let
//! memory grow. Listener rates: one per configured listener.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::quota::{WindowedRate, QUOTA_WINDOW_NUM, QUOTA_WINDOW_SIZE_MS};

/// Addresses whose connection rate is tracked at most.
pub const IP_RATES_MAX: usize = 10_000;
/// Kafka's `maxThrottleTimeMs`: one quota window.
pub const THROTTLE_MS_MAX: u64 = QUOTA_WINDOW_SIZE_MS;
/// Kafka's default for `max.connection.creation.rate` and `connection_creation_rate`: no limit.
pub const UNLIMITED: u32 = i32::MAX as u32;
/// How often idle address rates are dropped even when the table is not full.
const PRUNE_INTERVAL_MS: u64 = 60_000;

/// The limits one listener's acceptor applies (from the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptLimits {
    /// The listener's name (for its rate and metrics).
    pub listener: String,
    /// `max_connection_creation_rate`, `None` when unlimited.
    pub broker: Option<f64>,
    /// `listener_name.<l>.max_connection_creation_rate`, `None` when unlimited.
    pub listener_rate: Option<f64>,
    /// The inter-broker listener of a broker with several listeners: not counted against the
    /// broker-wide limit.
    pub protected: bool,
}

impl AcceptLimits {
    /// From the configured values (`UNLIMITED` or more: no limit).
    pub fn new(listener: &str, broker: u32, listener_rate: u32, protected: bool) -> AcceptLimits {
        let limit = |v: u32| (v < UNLIMITED).then_some(f64::from(v));
        AcceptLimits {
            listener: listener.to_string(),
            broker: if protected { None } else { limit(broker) },
            listener_rate: limit(listener_rate),
            protected,
        }
    }

    /// Does any broker or listener limit apply?
    pub fn any(&self) -> bool {
        self.broker.is_some() || self.listener_rate.is_some()
    }
}

/// Kafka's throttle time for a rate over its limit: `(rate - limit) / limit x window`,
/// rounded, at most [`THROTTLE_MS_MAX`]; 0 within the limit.
fn throttle_ms(rate: &mut WindowedRate, limit: f64, now_ms: u64) -> u64 {
    let observed = rate.rate(now_ms);
    if observed <= limit {
        return 0;
    }
    crate::quota::throttle_time_ms(observed, limit, rate.window_ms(now_ms), 0).min(THROTTLE_MS_MAX)
}

/// Per-listener counters for /metrics.
#[derive(Debug, Default, Clone, Copy)]
struct ListenerCounts {
    /// Connections the acceptor waited for (broker or listener rate).
    accept_throttled: u64,
    /// The waits' total, in milliseconds.
    accept_throttle_ms: u64,
    /// Connections closed for their address's rate.
    ip_throttled: u64,
    /// Their throttle times' total, in milliseconds.
    ip_throttle_ms: u64,
}

/// The process-wide connection rates. Pure: the caller passes the time.
#[derive(Debug, Default)]
pub struct Limiter {
    broker: Option<WindowedRate>,
    listeners: HashMap<String, WindowedRate>,
    ips: HashMap<IpAddr, WindowedRate>,
    /// The rate new addresses share while `ips` is full of active ones.
    overflow: Option<WindowedRate>,
    last_prune_ms: u64,
    /// Per listener: when its last throttled connection is served (ms).
    gates: HashMap<String, u64>,
    counts: BTreeMap<String, ListenerCounts>,
    /// Addresses that went to the overflow rate.
    overflowed: u64,
}

impl Limiter {
    /// Records a new connection on `limits.listener` into the broker-wide and listener rates
    /// (Kafka's `recordConnectionAndGetThrottleTimeMs`) and returns how long the acceptor
    /// waits before serving it: the longer of the two throttle times.
    pub fn record_accept(&mut self, limits: &AcceptLimits, now_ms: u64) -> u64 {
        let mut wait = 0;
        if let Some(limit) = limits.broker {
            let rate = self.broker.get_or_insert_with(|| WindowedRate::new(now_ms));
            rate.record(1.0, now_ms);
            wait = wait.max(throttle_ms(rate, limit, now_ms));
        }
        if let Some(limit) = limits.listener_rate {
            let rate = self
                .listeners
                .entry(limits.listener.clone())
                .or_insert_with(|| WindowedRate::new(now_ms));
            rate.record(1.0, now_ms);
            wait = wait.max(throttle_ms(rate, limit, now_ms));
        }
        if !limits.any() {
            return 0;
        }
        // Behind the connections of this listener that other shards are holding back.
        let gate = self.gates.get(&limits.listener).copied().unwrap_or(0);
        let start = gate.max(now_ms);
        if wait > 0 {
            self.gates.insert(limits.listener.clone(), start + wait);
        }
        let wait = start - now_ms + wait;
        if wait > 0 {
            let c = self.counts.entry(limits.listener.clone()).or_default();
            c.accept_throttled += 1;
            c.accept_throttle_ms += wait;
        }
        wait
    }

    /// Records a new connection of `ip` against its `connection_creation_rate` `quota`
    /// (Kafka's `recordIpConnectionMaybeThrottle`): `Ok` to serve it, or `Err(throttle_ms)`:
    /// over the quota, the connection is taken back from the IP, broker and listener rates and
    /// is to be closed after `throttle_ms`.
    pub fn record_ip(
        &mut self,
        limits: &AcceptLimits,
        ip: IpAddr,
        quota: f64,
        now_ms: u64,
    ) -> Result<(), u64> {
        let ip = crate::security::ip_limit::canonical(ip);
        if now_ms.saturating_sub(self.last_prune_ms) >= PRUNE_INTERVAL_MS {
            self.prune(now_ms);
        }
        if !self.ips.contains_key(&ip) && self.ips.len() >= IP_RATES_MAX {
            self.prune(now_ms);
        }
        let rate = if self.ips.contains_key(&ip) || self.ips.len() < IP_RATES_MAX {
            self.ips
                .entry(ip)
                .or_insert_with(|| WindowedRate::new(now_ms))
        } else {
            self.overflowed += 1;
            self.overflow
                .get_or_insert_with(|| WindowedRate::new(now_ms))
        };
        rate.record(1.0, now_ms);
        let throttle = throttle_ms(rate, quota, now_ms);
        if throttle == 0 {
            return Ok(());
        }
        rate.record(-1.0, now_ms);
        if limits.broker.is_some() {
            if let Some(broker) = &mut self.broker {
                broker.record(-1.0, now_ms);
            }
        }
        if limits.listener_rate.is_some() {
            if let Some(listener) = self.listeners.get_mut(&limits.listener) {
                listener.record(-1.0, now_ms);
            }
        }
        let c = self.counts.entry(limits.listener.clone()).or_default();
        c.ip_throttled += 1;
        c.ip_throttle_ms += throttle;
        Err(throttle)
    }

    /// Drops the address rates not recorded into for a whole quota window (their rate is 0).
    fn prune(&mut self, now_ms: u64) {
        let idle = QUOTA_WINDOW_NUM as u64 * QUOTA_WINDOW_SIZE_MS;
        self.ips
            .retain(|_, r| now_ms.saturating_sub(r.last_record_ms) < idle);
        if self
            .overflow
            .as_ref()
            .is_some_and(|r| now_ms.saturating_sub(r.last_record_ms) >= idle)
        {
            self.overflow = None;
        }
        self.last_prune_ms = now_ms;
    }

    /// Addresses tracked now.
    pub fn tracked_ips(&self) -> usize {
        self.ips.len()
    }

    /// The /metrics text (Prometheus exposition format).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        type Series = (&'static str, &'static str, fn(&ListenerCounts) -> u64);
        let series: [Series; 4] = [
            (
                "freshet_connection_accept_throttled_total",
                "Connections the acceptor waited for before serving (max_connection_creation_rate, broker-wide or per listener).",
                |c| c.accept_throttled,
            ),
            (
                "freshet_connection_accept_throttle_ms_total",
                "Milliseconds the acceptor waited for the connection creation rate.",
                |c| c.accept_throttle_ms,
            ),
            (
                "freshet_connection_ip_throttled_total",
                "Connections closed because their IP address was over its connection_creation_rate quota.",
                |c| c.ip_throttled,
            ),
            (
                "freshet_connection_ip_throttle_ms_total",
                "Throttle time of the connections closed for their IP's connection_creation_rate (each closed after it).",
                |c| c.ip_throttle_ms,
            ),
        ];
        for (name, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (listener, c) in &self.counts {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{}\"}} {}",
                    listener.replace('\\', "\\\\").replace('"', "\\\""),
                    value(c)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP freshet_connection_rate_tracked_ips IP addresses whose connection creation rate is tracked (at most {IP_RATES_MAX}).\n# TYPE freshet_connection_rate_tracked_ips gauge\nfreshet_connection_rate_tracked_ips {}",
            self.ips.len()
        );
        let _ = writeln!(
            out,
            "# HELP freshet_connection_rate_ip_overflow_total Connections of addresses counted in the shared overflow rate (the table of tracked addresses was full).\n# TYPE freshet_connection_rate_ip_overflow_total counter\nfreshet_connection_rate_ip_overflow_total {}",
            self.overflowed
        );
        out
    }
}

static LIMITER: Mutex<Option<Limiter>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Limiter) -> T) -> T {
    let mut guard = LIMITER.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Limiter::default))
}

/// [`Limiter::record_accept`] on the process-wide rates, now.
pub fn record_accept(limits: &AcceptLimits) -> u64 {
    let now = crate::quota::now_ms();
    with(|l| l.record_accept(limits, now))
}

/// [`Limiter::record_ip`] on the process-wide rates, now.
pub fn record_ip(limits: &AcceptLimits, ip: IpAddr, quota: f64) -> Result<(), u64> {
    let now = crate::quota::now_ms();
    with(|l| l.record_ip(limits, ip, quota, now))
}

/// The /metrics text of the connection rates.
pub fn render_metrics() -> String {
    with(|l| l.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(broker: u32, listener: u32) -> AcceptLimits {
        AcceptLimits::new("PLAINTEXT", broker, listener, false)
    }

    /// Kafka's Rate measures over at least 10 full windows: a limit of 2/s lets a burst of 20
    /// through, then the acceptor waits, at most one window per connection (after the ones
    /// ahead of it).
    #[test]
    fn the_broker_rate_delays_after_ten_seconds_worth_of_burst() {
        let mut l = Limiter::default();
        let lim = limits(2, UNLIMITED);
        let waits: Vec<u64> = (0..25).map(|_| l.record_accept(&lim, 1_000)).collect();
        assert!(waits[..20].iter().all(|w| *w == 0), "{waits:?}");
        // 21 in 10 s at 2/s: (2.1 - 2) / 2 x 10 s = 500 ms; the next ones (at the same moment,
        // as from other shards) queue behind it, one window each at most.
        assert_eq!(waits[20], 500);
        assert!(
            waits[20..]
                .windows(2)
                .all(|w| w[1] > w[0] && w[1] - w[0] <= THROTTLE_MS_MAX),
            "{waits:?}"
        );
        // 12 s later the burst's samples are gone.
        assert_eq!(l.record_accept(&lim, 13_000), 0);
    }

    #[test]
    fn the_listener_limit_applies_alone_and_the_protected_listener_skips_the_broker_limit() {
        let mut l = Limiter::default();
        let lim = limits(UNLIMITED, 1);
        let waits: Vec<u64> = (0..12).map(|_| l.record_accept(&lim, 5)).collect();
        assert_eq!(waits.iter().filter(|w| **w > 0).count(), 2, "{waits:?}");
        // Accepted at the same moment (on other shards): each waits behind the one before, as
        // behind Kafka's one acceptor: 1000 ms, then 2000 ms, and one at 500 ms its own 1000 ms after
        // the gate at 2000 ms.
        let mut l = Limiter::default();
        for _ in 0..10 {
            assert_eq!(l.record_accept(&lim, 0), 0);
        }
        assert_eq!(l.record_accept(&lim, 0), 1000);
        assert_eq!(l.record_accept(&lim, 0), 2000);
        assert_eq!(
            l.record_accept(&lim, 500),
            2500,
            "throttled, behind the gate at 2000"
        );
        let inter = AcceptLimits::new("INTERNAL", 1, UNLIMITED, true);
        assert!(!inter.any(), "the broker-wide limit does not apply to it");
        assert_eq!(l.record_accept(&inter, 5), 0);
    }

    /// An address over its rate is refused with a throttle and taken back from every rate, so
    /// refused attempts do not keep it (or the broker) throttled; others are unaffected.
    #[test]
    fn an_ip_over_its_rate_is_refused_and_unrecorded() {
        let mut l = Limiter::default();
        let lim = limits(100, UNLIMITED);
        let a = ip("127.0.0.1");
        let mut served = 0;
        let mut refused = 0;
        for _ in 0..60 {
            assert_eq!(l.record_accept(&lim, 0), 0);
            match l.record_ip(&lim, a, 2.0, 0) {
                Ok(()) => served += 1,
                Err(t) => {
                    assert!(t > 0 && t <= THROTTLE_MS_MAX);
                    refused += 1;
                }
            }
        }
        assert_eq!((served, refused), (20, 40));
        // The broker rate counts the 20 served only (20 / 10 s), not the 40 refused.
        assert!((l.broker.as_mut().unwrap().rate(0) - 2.0).abs() < 1e-9);
        assert!(l.record_ip(&lim, ip("127.0.0.2"), 2.0, 0).is_ok());
        assert!(
            l.record_ip(&lim, ip("::ffff:127.0.0.1"), 2.0, 0).is_err(),
            "v4-mapped is the same address"
        );
        // A higher quota lets it through again.
        assert!(l.record_ip(&lim, a, 5.0, 0).is_ok());
        assert_eq!(l.counts["PLAINTEXT"].ip_throttled, 41);
        assert!(l
            .render()
            .contains("freshet_connection_ip_throttled_total{listener=\"PLAINTEXT\"} 41"));
    }

    /// The table of addresses is bounded: idle ones are dropped, and while it is full of
    /// active ones new addresses share the overflow rate.
    #[test]
    fn tracked_addresses_are_bounded() {
        let mut l = Limiter::default();
        let lim = limits(UNLIMITED, UNLIMITED);
        let nth = |i: usize| IpAddr::V6(std::net::Ipv6Addr::from(i as u128 + 1));
        for i in 0..IP_RATES_MAX {
            assert!(l.record_ip(&lim, nth(i), 1.0, 0).is_ok());
        }
        assert_eq!(l.tracked_ips(), IP_RATES_MAX);
        // Full of active addresses: the next ones share one rate (10 s at 1/s = 10).
        let results: Vec<bool> = (0..15)
            .map(|i| l.record_ip(&lim, nth(IP_RATES_MAX + i), 1.0, 100).is_ok())
            .collect();
        assert_eq!(results.iter().filter(|ok| **ok).count(), 10, "{results:?}");
        assert_eq!(l.tracked_ips(), IP_RATES_MAX);
        assert_eq!(l.overflowed, 15);
        // 11 s later the old ones are idle: dropped to make room.
        assert!(l
            .record_ip(&lim, nth(IP_RATES_MAX + 99), 1.0, 11_500)
            .is_ok());
        assert_eq!(l.tracked_ips(), 1);
    }
}
