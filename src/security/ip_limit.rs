//! Kafka's `max.connections.per.ip` and `max.connections.per.ip.overrides`: how many client
//! connections one IP address may hold open on this broker's Kafka listeners, all shards
//! together; a connection over the limit is closed as soon as it is accepted (Kafka logs
//! `TooManyConnectionsException` and closes it the same way).
//!
//! [`IpLimits`] is the parsed configuration (pure); [`IpCounts`] the open connections per
//! address (pure). The process holds one [`IpCounts`] behind a mutex, taken only for the
//! moment a connection is accepted or closed (never across an await); [`try_acquire`] returns
//! an [`IpSlot`] that gives its count back when dropped, so a connection's count follows it
//! whatever way it ends. Bound: one map entry per address with a connection open, so at most
//! the number of open connections (itself bounded by `connections_per_shard_max` per shard).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The limits: a default per address and overrides for some addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpLimits {
    default: u32,
    overrides: BTreeMap<IpAddr, u32>,
}

impl IpLimits {
    /// From `max_connections_per_ip` and `max_connections_per_ip_overrides` (Kafka's format,
    /// `address:count` separated by commas; an address is an IP, IPv6 in brackets or not).
    pub fn parse(default: u32, overrides: &str) -> Result<IpLimits, String> {
        let mut parsed = BTreeMap::new();
        for entry in overrides
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (host, count) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("`{entry}` is not address:count"))?;
            let host = host.trim().trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = host
                .parse()
                .map_err(|_| format!("`{host}` in `{entry}` is not an IP address"))?;
            let count: u32 = count
                .trim()
                .parse()
                .map_err(|_| format!("`{count}` in `{entry}` is not a connection count"))?;
            parsed.insert(ip, count);
        }
        if default == 0 && parsed.is_empty() {
            // Kafka's rule: 0 is only allowed with overrides (the listed addresses only).
            return Err("max_connections_per_ip may be 0 only with overrides".into());
        }
        Ok(IpLimits {
            default,
            overrides: parsed,
        })
    }

    /// The most connections `ip` may hold.
    pub fn limit_of(&self, ip: IpAddr) -> u32 {
        self.overrides
            .get(&canonical(ip))
            .copied()
            .unwrap_or(self.default)
    }
}

/// IPv4 clients reaching an IPv6 socket appear as `::ffff:a.b.c.d`: counted as `a.b.c.d`.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Open connections per address (addresses with none are not kept).
#[derive(Debug, Default)]
pub struct IpCounts {
    open: BTreeMap<IpAddr, u32>,
}

impl IpCounts {
    /// Counts one more connection of `ip` if it holds fewer than `limit`; false otherwise.
    pub fn acquire(&mut self, ip: IpAddr, limit: u32) -> bool {
        let ip = canonical(ip);
        let open = self.open.get(&ip).copied().unwrap_or(0);
        if open >= limit {
            return false;
        }
        self.open.insert(ip, open + 1);
        true
    }

    /// One connection of `ip` closed.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        let open = self.open.get(&ip).copied().unwrap_or(0);
        assert!(open > 0, "a release of {ip} without an acquire");
        if open == 1 {
            self.open.remove(&ip);
        } else {
            self.open.insert(ip, open - 1);
        }
    }

    /// Connections `ip` holds.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open.get(&canonical(ip)).copied().unwrap_or(0)
    }
}

static COUNTS: Mutex<IpCounts> = Mutex::new(IpCounts {
    open: BTreeMap::new(),
});

/// A counted connection of one address; dropping it gives the count back.
#[derive(Debug)]
pub struct IpSlot(IpAddr);

impl Drop for IpSlot {
    fn drop(&mut self) {
        COUNTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .release(self.0);
    }
}

/// Counts a new connection from `ip` against `limits`, process-wide; `None` when `ip` is at
/// its limit (the caller closes the connection).
pub fn try_acquire(limits: &IpLimits, ip: IpAddr) -> Option<IpSlot> {
    let mut counts = COUNTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // `then`, not `then_some`: a slot made eagerly and dropped on refusal would take the
    // lock this function holds.
    counts.acquire(ip, limits.limit_of(ip)).then(|| IpSlot(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn overrides_parse_as_kafka_writes_them() {
        let l = IpLimits::parse(5, "127.0.0.1:2, [::1]:7,10.0.0.1:0").unwrap();
        assert_eq!(l.limit_of(ip("127.0.0.1")), 2);
        assert_eq!(l.limit_of(ip("::1")), 7);
        assert_eq!(l.limit_of(ip("10.0.0.1")), 0);
        assert_eq!(l.limit_of(ip("10.0.0.2")), 5);
        assert_eq!(l.limit_of(ip("::ffff:127.0.0.1")), 2, "v4-mapped is v4");
        assert_eq!(IpLimits::parse(3, "").unwrap().limit_of(ip("1.2.3.4")), 3);
        for bad in ["127.0.0.1", "host:2", "127.0.0.1:-1", "127.0.0.1:x"] {
            assert!(IpLimits::parse(5, bad).is_err(), "{bad}");
        }
        assert!(IpLimits::parse(0, "").is_err());
        assert!(IpLimits::parse(0, "127.0.0.1:1").is_ok());
    }

    #[test]
    fn counts_stop_at_the_limit_and_come_back_on_release() {
        let mut c = IpCounts::default();
        let a = ip("127.0.0.1");
        assert!(c.acquire(a, 2));
        assert!(c.acquire(ip("::ffff:127.0.0.1"), 2));
        assert!(!c.acquire(a, 2));
        assert!(
            c.acquire(ip("127.0.0.2"), 2),
            "another address has its own count"
        );
        c.release(a);
        assert_eq!(c.open(a), 1);
        assert!(c.acquire(a, 2));
        c.release(a);
        c.release(a);
        assert_eq!(c.open(a), 0);
        assert!(
            !c.open.contains_key(&a),
            "no entry kept for an address without connections"
        );
        assert!(!c.acquire(a, 0));
    }

    #[test]
    #[should_panic(expected = "without an acquire")]
    fn a_release_without_an_acquire_is_a_bug() {
        IpCounts::default().release(ip("127.0.0.1"));
    }
}
