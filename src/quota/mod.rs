//! Client quotas: Kafka's entity model, precedence and windowed-rate throttling.
//!
//! Quotas are kept in the cluster metadata (`ClusterMetadata::client_quotas`, changed by
//! AlterClientQuotas through `MetadataCommand::SetClientQuota`) as a map from a
//! [`QuotaEntity`] (a user, a client id, or both; each a name or `<default>`) to values of
//! the keys Kafka knows ([`QUOTA_KEYS`]).
//!
//! Enforcement, as Kafka's `ClientQuotaManager`:
//! - the quota that applies to a request of principal user `u` and client id `c` is found in
//!   Kafka's precedence order ([`applicable`]): `(u, c)`, `(u, <default>)`, `(u)`,
//!   `(<default>, c)`, `(<default>, <default>)`, `(<default>)`, `(c)`, `(<default> client)`;
//! - the clients that share it are those of the matched level: a user+client-id level gives
//!   each (user, client id) pair its own rate, a user level one rate per user, a client-id
//!   level one rate per client id ([`SensorKey`]);
//! - the rate is Kafka's `Rate` over a `SampledStat` of `quota.window.num` (11) samples of
//!   `quota.window.size.seconds` (1 s) each ([`WindowedRate`]); a request is recorded first,
//!   then, when the rate is above the quota, the throttle time is
//!   `(rate - quota) / quota * window`, capped at the whole window ([`throttle_time_ms`]);
//! - produce records the request's bytes, fetch the response's bytes;
//! - `request_percentage` (KIP-124): every request not exempt ([`exempt_from_request_quota`];
//!   a follower's Fetch too) records the time the shards spent polling its handler and its
//!   cross-shard jobs ([`busy`]: the analogue of Kafka's request-handler thread time; waits
//!   for a disk, a timer or a peer are not counted) as a percentage of one second
//!   ([`percent_of`]), so the quota is a percentage of one shard's time over the window;
//!   its throttle time is at most one window ([`REQUEST_THROTTLE_MS_MAX`], as Kafka). Produce and Fetch take the larger of
//!   their byte-rate and request throttle times (a Fetch over either is answered empty);
//! - `controller_mutation_rate` (KIP-599): CreateTopics, CreatePartitions and DeleteTopics take
//!   one token per partition created or deleted from a [`TokenBucket`] (burst: 10 s of the
//!   quota), topic by topic; at the versions where Kafka is strict (CreateTopics v6+,
//!   CreatePartitions v3+, DeleteTopics v5+) a topic asked for while the bucket is below zero
//!   is refused with THROTTLING_QUOTA_EXCEEDED, older versions are always served and only
//!   throttled ([`MutationQuota`]). It is enforced on the broker the client sends the request
//!   to (Kafka's KRaft controller enforces it on the forwarded request: one rate per cluster).
//!
//! The broker answers with `throttle_time_ms` and the connection stops reading its socket for
//! that long (`server::connection`). The rates live in one process-wide table behind a mutex
//! ([`Quotas`]) so that connections of one client on different shards share their quota, as
//! on one Kafka broker; it is touched only when some quota applies to the request.
//!
//! Bounds: at most [`SENSORS_MAX`] rates, holding at most [`SENSOR_NAME_BYTES_MAX`] of names,
//! are tracked (an idle one expires after [`SENSOR_IDLE_MS_MAX`]; when full, new entities share an overflow entry per quota type,
//! which throttles them together rather than letting memory grow); /metrics shows at most
//! [`METRIC_SERIES_MAX`] entities. Quota entities in the metadata are bounded by
//! [`QUOTA_ENTITIES_MAX`].

pub mod busy;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Kafka's `quota.window.num`: samples kept by a rate.
pub const QUOTA_WINDOW_NUM: usize = 11;
/// Kafka's `quota.window.size.seconds`, in milliseconds.
pub const QUOTA_WINDOW_SIZE_MS: u64 = 1000;
/// Rates tracked at most (one per entity that shares a quota, per quota type).
pub const SENSORS_MAX: usize = 10_000;
/// Bytes of user names and client ids the tracked rates may hold together (a client id may be
/// 32 KiB long: without this, [`SENSORS_MAX`] rates could hold 640 MiB of names).
pub const SENSOR_NAME_BYTES_MAX: usize = 4 << 20;
/// A rate not recorded into for this long is dropped (Kafka's sensor expiry: one hour).
pub const SENSOR_IDLE_MS_MAX: u64 = 3_600_000;
/// Entities shown in /metrics at most (the most throttled first).
pub const METRIC_SERIES_MAX: usize = 100;
/// Quota entities the metadata may hold.
pub const QUOTA_ENTITIES_MAX: usize = 100_000;

/// Entity types of the protocol.
pub const ENTITY_USER: &str = "user";
pub const ENTITY_CLIENT_ID: &str = "client-id";
pub const ENTITY_IP: &str = "ip";
/// How Kafka writes a default entity in paths and logs.
pub const DEFAULT_NAME: &str = "<default>";

/// Quota keys.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
/// KIP-612: new connections an IP address may open per second (IP entities only).
pub const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";
/// The keys an IP entity takes (Kafka's `QuotaConfig.ipConfigs`: an INT).
pub const IP_QUOTA_KEYS: [(&str, bool); 1] = [(CONNECTION_CREATION_RATE, true)];
/// The keys AlterClientQuotas accepts for user / client-id entities, and whether each must be
/// an integer (Kafka's LONG type; the others are DOUBLE).
pub const QUOTA_KEYS: [(&str, bool); 4] = [
    (PRODUCER_BYTE_RATE, true),
    (CONSUMER_BYTE_RATE, true),
    (REQUEST_PERCENTAGE, false),
    (CONTROLLER_MUTATION_RATE, false),
];

/// One component's name: a given name, or `<default>` (null on the wire).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    /// From the wire: null is the default.
    pub fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        }
    }

    /// To the wire: the default is null.
    pub fn to_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }
}

/// A quota entity: a user, a client id, or both; or an IP address alone (KIP-612,
/// `connection_creation_rate` only). Never empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EntityName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<EntityName>,
    /// An IP address in its canonical text form (`IpAddr`'s `Display`), or `<default>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<EntityName>,
}

impl QuotaEntity {
    pub fn new(user: Option<EntityName>, client_id: Option<EntityName>) -> QuotaEntity {
        QuotaEntity {
            user,
            client_id,
            ip: None,
        }
    }

    /// The entity of one IP address (`Named`, canonical text) or of the default IP.
    pub fn of_ip(ip: EntityName) -> QuotaEntity {
        QuotaEntity {
            user: None,
            client_id: None,
            ip: Some(ip),
        }
    }

    /// The bytes of its names (for the metadata log's size estimates).
    pub fn name_bytes(&self) -> usize {
        [&self.user, &self.client_id, &self.ip]
            .into_iter()
            .flatten()
            .map(|n| n.to_wire().map_or(0, str::len))
            .sum()
    }
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |n: &EntityName| match n {
            EntityName::Default => DEFAULT_NAME.to_string(),
            EntityName::Named(s) => s.clone(),
        };
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push(format!("user={}", show(u)));
        }
        if let Some(c) = &self.client_id {
            parts.push(format!("client-id={}", show(c)));
        }
        if let Some(i) = &self.ip {
            parts.push(format!("ip={}", show(i)));
        }
        write!(f, "{}", parts.join(","))
    }
}

/// A quota value (Kafka's double). Equality is bitwise, so the metadata stays `Eq`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for QuotaValue {}

/// The quotas of every entity, as the metadata holds them (empty value sets are not kept).
pub type QuotaTable = BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>;

/// [`QuotaTable`] as a JSON list of `{entity, values}` (JSON map keys must be strings).
pub mod table_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{QuotaEntity, QuotaTable, QuotaValue};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        entity: QuotaEntity,
        values: BTreeMap<String, QuotaValue>,
    }

    pub fn serialize<S: Serializer>(table: &QuotaTable, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(table.iter().map(|(entity, values)| Entry {
            entity: entity.clone(),
            values: values.clone(),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<QuotaTable, D::Error> {
        let list = Vec::<Entry>::deserialize(deserializer)?;
        Ok(list.into_iter().map(|e| (e.entity, e.values)).collect())
    }
}

/// Why an AlterClientQuotas entry is refused (Kafka's INVALID_REQUEST), or `Ok` (Kafka's
/// `ClientQuotaControlManager.configKeysForEntityType`): not empty, an IP alone, a named IP an
/// IP address (Kafka also takes a host name and resolves it; the broker does no DNS here).
pub fn check_entity(entity: &QuotaEntity) -> Result<(), String> {
    if let Some(ip) = &entity.ip {
        if entity.user.is_some() || entity.client_id.is_some() {
            return Err(
                "Invalid quota entity combination, IP entity should not be combined with User or ClientId"
                    .into(),
            );
        }
        if let EntityName::Named(name) = ip {
            if name.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("{name} is not a valid IP or resolvable host."));
            }
        }
        return Ok(());
    }
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("Invalid empty client quota entity".into());
    }
    Ok(())
}

/// The keys an entity takes: `connection_creation_rate` (an INT) for an IP entity,
/// [`QUOTA_KEYS`] for user / client-id entities.
pub fn keys_of(entity: &QuotaEntity) -> &'static [(&'static str, bool)] {
    if entity.ip.is_some() {
        &IP_QUOTA_KEYS
    } else {
        &QUOTA_KEYS
    }
}

/// Kafka's `validateQuotaKeyValue`: a key of the entity's type, a positive value, integral
/// (and in range) for LONG and INT keys.
pub fn check_value(entity: &QuotaEntity, key: &str, value: f64) -> Result<(), String> {
    let Some((_, integral)) = keys_of(entity).iter().find(|(k, _)| *k == key) else {
        return Err(format!("Invalid configuration key {key}"));
    };
    if value.is_nan() || value <= 0.0 {
        return Err(format!("Quota {key} must be greater than 0"));
    }
    if *integral {
        if key == CONNECTION_CREATION_RATE && value > i32::MAX as f64 {
            return Err(format!("Proposed value for {key} is too large for an INT."));
        }
        if value > i64::MAX as f64 {
            return Err(format!("Proposed value for {key} is too large for a LONG."));
        }
        if value.fract() != 0.0 {
            return Err(format!("{key} must be a whole number."));
        }
    }
    Ok(())
}

/// The `connection_creation_rate` of `ip` (KIP-612): its own entity's, else the `<default>`
/// IP entity's, else `None` (unlimited), as Kafka's `ConnectionQuotas.connectionRateForIp`.
/// `ip` is looked up in canonical form (an IPv4-mapped IPv6 address as IPv4).
pub fn ip_connection_rate(quotas: &QuotaTable, ip: std::net::IpAddr) -> Option<f64> {
    if quotas.is_empty() {
        return None;
    }
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    let named = QuotaEntity::of_ip(EntityName::Named(ip.to_string()));
    let default = QuotaEntity::of_ip(EntityName::Default);
    [named, default]
        .iter()
        .find_map(|e| quotas.get(e).and_then(|v| v.get(CONNECTION_CREATION_RATE)))
        .map(|v| v.0)
}

/// Which clients share a rate: the user and client id of the quota level that matched (`""`
/// for a component that level does not have), as Kafka's metric tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SensorKey {
    pub user: String,
    pub client_id: String,
}

/// The quota of `key` that applies to `user` (the principal's name, e.g. `ANONYMOUS`) and
/// `client_id`, in Kafka's precedence order, and who shares it. `None`: unlimited. Pure.
pub fn applicable(
    quotas: &QuotaTable,
    user: &str,
    client_id: &str,
    key: &str,
) -> Option<(f64, SensorKey)> {
    use EntityName::{Default, Named};
    let u = || Named(user.to_string());
    let c = || Named(client_id.to_string());
    let levels: [(Option<EntityName>, Option<EntityName>); 8] = [
        (Some(u()), Some(c())),
        (Some(u()), Some(Default)),
        (Some(u()), None),
        (Some(Default), Some(c())),
        (Some(Default), Some(Default)),
        (Some(Default), None),
        (None, Some(c())),
        (None, Some(Default)),
    ];
    for (user_part, client_part) in levels {
        let sensor = SensorKey {
            user: if user_part.is_some() {
                user.to_string()
            } else {
                String::new()
            },
            client_id: if client_part.is_some() {
                client_id.to_string()
            } else {
                String::new()
            },
        };
        let entity = QuotaEntity::new(user_part, client_part);
        if let Some(value) = quotas.get(&entity).and_then(|v| v.get(key)) {
            return Some((value.0, sensor));
        }
    }
    None
}

/// The user name of a principal `Type:name` (Kafka quotas use the name: `ANONYMOUS`).
pub fn user_of(principal: &str) -> &str {
    principal
        .split_once(':')
        .map_or(principal, |(_, name)| name)
}

/// One sample of a [`WindowedRate`].
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When the sample's window started (its first record, or its reset).
    start_ms: u64,
    value: f64,
}

/// Kafka's `Rate` over a `SampledStat`: [`QUOTA_WINDOW_NUM`] samples of
/// [`QUOTA_WINDOW_SIZE_MS`], the oldest reused when a new window starts. Pure arithmetic on
/// caller-given times (milliseconds of a monotonic clock).
#[derive(Debug, Clone)]
pub struct WindowedRate {
    samples: Vec<Sample>,
    current: usize,
    /// The last time recorded into (for expiry).
    pub last_record_ms: u64,
}

impl WindowedRate {
    pub fn new(now_ms: u64) -> WindowedRate {
        WindowedRate {
            samples: vec![Sample {
                start_ms: now_ms,
                value: 0.0,
            }],
            current: 0,
            last_record_ms: now_ms,
        }
    }

    /// Adds `value` at `now_ms` (Kafka's `SampledStat.record`).
    pub fn record(&mut self, value: f64, now_ms: u64) {
        self.last_record_ms = now_ms;
        if now_ms.saturating_sub(self.samples[self.current].start_ms) >= QUOTA_WINDOW_SIZE_MS {
            self.current = (self.current + 1) % QUOTA_WINDOW_NUM;
            let fresh = Sample {
                start_ms: now_ms,
                value: 0.0,
            };
            if self.current >= self.samples.len() {
                self.samples.push(fresh);
            } else {
                self.samples[self.current] = fresh;
            }
        }
        self.samples[self.current].value += value;
    }

    /// Resets samples older than the whole window (Kafka's `purgeObsoleteSamples`).
    fn purge(&mut self, now_ms: u64) {
        let expire_age = QUOTA_WINDOW_NUM as u64 * QUOTA_WINDOW_SIZE_MS;
        for s in &mut self.samples {
            if now_ms.saturating_sub(s.start_ms) >= expire_age {
                *s = Sample {
                    start_ms: now_ms,
                    value: 0.0,
                };
            }
        }
    }

    /// The window the rate is measured over (Kafka's `Rate.windowSize`): from the oldest
    /// sample to now, but at least `QUOTA_WINDOW_NUM - 1` full windows, and at least 1 ms.
    pub fn window_ms(&mut self, now_ms: u64) -> u64 {
        let mut elapsed = self.elapsed_ms(now_ms);
        let full = elapsed / QUOTA_WINDOW_SIZE_MS;
        let min_full = QUOTA_WINDOW_NUM as u64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * QUOTA_WINDOW_SIZE_MS;
        }
        elapsed.max(1)
    }

    /// The time the samples really span (from the oldest one to now, without the minimum).
    pub fn elapsed_ms(&mut self, now_ms: u64) -> u64 {
        self.purge(now_ms);
        let oldest = self
            .samples
            .iter()
            .map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        now_ms.saturating_sub(oldest)
    }

    /// The rate per second at `now_ms`.
    pub fn rate(&mut self, now_ms: u64) -> f64 {
        let window = self.window_ms(now_ms);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        total / (window as f64 / 1000.0)
    }
}

/// The throttle time for a rate `rate` above `quota` measured over `window_ms`, of which
/// `padding_ms` is the minimum-window padding of a young rate ([`WindowedRate::window_ms`]):
/// Kafka's `(rate - quota) / quota * window`, plus the padding, rounded, at most the whole
/// quota window ([`QUOTA_WINDOW_NUM`] x [`QUOTA_WINDOW_SIZE_MS`]); 0 when within the quota.
///
/// Kafka's formula is the time after which the rate is back at the quota if the window grows
/// with the clock; while the window is padded to its minimum it does not grow, and Kafka lets
/// a greedy client through about 23% over its quota in its first 10 s. Adding the padding makes the wait end exactly
/// when the rate is back at the quota; once the samples span the minimum window, the padding
/// is 0 and this is Kafka's throttle time.
pub fn throttle_time_ms(rate: f64, quota: f64, window_ms: u64, padding_ms: u64) -> u64 {
    if rate <= quota || quota <= 0.0 {
        return 0;
    }
    let max = QUOTA_WINDOW_NUM as u64 * QUOTA_WINDOW_SIZE_MS;
    let t = ((rate - quota) / quota * window_ms as f64).round();
    (t as u64).saturating_add(padding_ms).min(max)
}

/// Kafka's `TokenBucket` stat (KIP-599) for `controller_mutation_rate`: it holds at most a
/// burst of `(quota.window.num - 1) x quota.window.size.seconds x quota` tokens ([`burst`]),
/// starts full, refills at `quota` tokens a second, and a mutation takes one token per
/// partition (it may leave the bucket below zero). Pure arithmetic on caller-given times.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenBucket {
    tokens: f64,
    /// The last refill; `None`: never used (full).
    last_ms: Option<u64>,
}

/// The tokens a [`TokenBucket`] of `quota` per second holds at most.
pub fn burst(quota: f64) -> f64 {
    (QUOTA_WINDOW_NUM as f64 - 1.0) * (QUOTA_WINDOW_SIZE_MS as f64 / 1000.0) * quota
}

impl TokenBucket {
    fn refill(&mut self, quota: f64, now_ms: u64) {
        let full = burst(quota);
        self.tokens = match self.last_ms {
            None => full,
            Some(last) => {
                let elapsed_s = now_ms.saturating_sub(last) as f64 / 1000.0;
                (self.tokens + quota * elapsed_s).min(full)
            }
        };
        self.last_ms = Some(now_ms.max(self.last_ms.unwrap_or(0)));
    }

    /// The tokens left at `now_ms` (below zero: over the quota).
    pub fn tokens(&mut self, quota: f64, now_ms: u64) -> f64 {
        self.refill(quota, now_ms);
        self.tokens
    }

    /// Takes `value` tokens at `now_ms`.
    pub fn record(&mut self, quota: f64, value: f64, now_ms: u64) {
        self.refill(quota, now_ms);
        self.tokens = (self.tokens - value).min(burst(quota));
    }
}

/// The time until a bucket with `tokens` (below zero) refilling at `quota` a second is back at
/// zero, in ms (Kafka's `ControllerMutationQuotaManager.throttleTimeMs`); 0 at or above zero.
pub fn mutation_throttle_ms(tokens: f64, quota: f64) -> u64 {
    if tokens >= 0.0 || quota <= 0.0 {
        return 0;
    }
    (-tokens / quota * 1000.0).round() as u64
}

/// The versions from which a mutation over the quota is refused (THROTTLING_QUOTA_EXCEEDED)
/// rather than accepted and throttled after (KIP-599): CreateTopics v6, CreatePartitions v3,
/// DeleteTopics v5. `None`: not a controller mutation.
pub fn strict_mutation_since(api_key: i16) -> Option<i16> {
    match api_key {
        19 => Some(6),
        37 => Some(3),
        20 => Some(5),
        _ => None,
    }
}

/// One request's controller mutation quota (Kafka's `ControllerMutationQuota`): records the
/// partitions the request creates or deletes, topic by topic, and remembers the throttle time
/// its answer carries. Plain data, so it can go to the coordinator shard and back.
#[derive(Debug, Clone)]
pub struct MutationQuota {
    /// The quota and who shares it; `None`: no quota applies (unbounded).
    applies: Option<(f64, SensorKey)>,
    strict: bool,
    throttle_ms: u64,
    throttled_at_ms: u64,
}

impl MutationQuota {
    /// The quota of a request of `api_key` / `api_version` from `principal` / `client_id`.
    pub fn new(
        quotas: &QuotaTable,
        principal: &str,
        client_id: &str,
        api_key: i16,
        api_version: i16,
    ) -> MutationQuota {
        let strict = strict_mutation_since(api_key).is_some_and(|v| api_version >= v);
        let applies = if quotas.is_empty() {
            None
        } else {
            applicable(
                quotas,
                user_of(principal),
                client_id,
                CONTROLLER_MUTATION_RATE,
            )
        };
        MutationQuota {
            applies,
            strict,
            throttle_ms: 0,
            throttled_at_ms: 0,
        }
    }

    /// Records `partitions` created or deleted; `false`: refused (a strict quota already
    /// exhausted), the topic gets THROTTLING_QUOTA_EXCEEDED.
    pub fn record(&mut self, partitions: u64) -> bool {
        let Some((quota, sensor)) = &self.applies else {
            return true;
        };
        let now = now_ms();
        let (taken, throttle) = {
            let mut all = global().lock().unwrap_or_else(|p| p.into_inner());
            all.record_mutation(sensor.clone(), *quota, partitions as f64, self.strict, now)
        };
        if throttle > 0 {
            self.throttle_ms = throttle;
            self.throttled_at_ms = now;
        }
        taken
    }

    /// The throttle time the answer carries: the last one recorded, less the time since
    /// (Kafka's `AbstractControllerMutationQuota.throttleTime`).
    pub fn throttle_ms(&self) -> u64 {
        let since = now_ms().saturating_sub(self.throttled_at_ms);
        self.throttle_ms.saturating_sub(since)
    }
}

/// A request quota's throttle time at most: one quota window (Kafka's
/// `ClientRequestQuotaManager.maxThrottleTimeMs`).
pub const REQUEST_THROTTLE_MS_MAX: u64 = QUOTA_WINDOW_SIZE_MS;

/// Kafka's `nanosToPercentage`: handler time as a percentage of one second.
pub fn percent_of(busy: std::time::Duration) -> f64 {
    busy.as_nanos() as f64 * 100.0 / 1e9
}

/// Is a request of `api_key` exempt from the request quota (neither recorded nor throttled)?
/// As Kafka: SASL (Kafka's authenticator answers it before the request handlers),
/// WriteTxnMarkers (inter-broker, CLUSTER_ACTION) and ApiVersions (Kafka answers a connection's
/// first one in its authenticator; here every one is exempt, so that a client over its quota
/// can still learn the versions). A follower's Fetch is exempt too (`api::fetch` decides).
pub fn exempt_from_request_quota(api_key: i16) -> bool {
    matches!(api_key, 17 | 18 | 27 | 36)
}

/// Records `busy` (the time the shard spent handling a request) against the request quota of
/// `principal` / `client_id` in `quotas`, and returns the throttle time in ms (0: no quota, or
/// within it), at most [`REQUEST_THROTTLE_MS_MAX`].
pub fn record_request_time(
    quotas: &QuotaTable,
    principal: &str,
    client_id: &str,
    busy: std::time::Duration,
) -> u64 {
    record_and_throttle_ms(
        quotas,
        QuotaType::Request,
        principal,
        client_id,
        percent_of(busy),
    )
    .min(REQUEST_THROTTLE_MS_MAX)
}

/// The quota types enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaType {
    Produce,
    Fetch,
    Request,
    /// Partitions created or deleted (KIP-599), against a token bucket ([`TokenBucket`]).
    ControllerMutation,
}

impl QuotaType {
    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => PRODUCER_BYTE_RATE,
            QuotaType::Fetch => CONSUMER_BYTE_RATE,
            QuotaType::Request => REQUEST_PERCENTAGE,
            QuotaType::ControllerMutation => CONTROLLER_MUTATION_RATE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            QuotaType::Produce => "produce",
            QuotaType::Fetch => "fetch",
            QuotaType::Request => "request",
            QuotaType::ControllerMutation => "controller_mutation",
        }
    }
}

/// One tracked rate and what it has cost its clients.
#[derive(Debug, Clone)]
struct Sensor {
    rate: WindowedRate,
    /// Everything recorded (bytes, or percent-of-a-second), for /metrics.
    recorded_total: f64,
    throttle_ms_total: u64,
    throttled_total: u64,
    /// The token bucket of a [`QuotaType::ControllerMutation`] rate (unused by the others).
    bucket: TokenBucket,
}

/// Every tracked rate, by quota type and sharing entity; bounded by [`SENSORS_MAX`].
#[derive(Debug, Default)]
pub struct Quotas {
    sensors: HashMap<(QuotaType, SensorKey), Sensor>,
    /// Bytes of the names in `sensors`' keys (bounded by [`SENSOR_NAME_BYTES_MAX`]).
    name_bytes: usize,
}

fn name_bytes(key: &SensorKey) -> usize {
    key.user.len() + key.client_id.len()
}

/// The entity that rates share once [`SENSORS_MAX`] are tracked.
fn overflow_key() -> SensorKey {
    SensorKey {
        user: "<overflow>".into(),
        client_id: "<overflow>".into(),
    }
}

impl Quotas {
    /// The tracked rate of `kind` for `sensor`, created if new (the overflow entry once
    /// [`SENSORS_MAX`] rates or [`SENSOR_NAME_BYTES_MAX`] of names are tracked).
    fn sensor_mut(&mut self, kind: QuotaType, sensor: SensorKey, now_ms: u64) -> &mut Sensor {
        let mut key = (kind, sensor);
        let full = |q: &Quotas, k: &SensorKey| {
            q.sensors.len() >= SENSORS_MAX || q.name_bytes + name_bytes(k) > SENSOR_NAME_BYTES_MAX
        };
        if !self.sensors.contains_key(&key) && full(self, &key.1) {
            self.expire(now_ms);
            if full(self, &key.1) {
                key = (kind, overflow_key());
            }
        }
        if !self.sensors.contains_key(&key) {
            self.name_bytes += name_bytes(&key.1);
        }
        self.sensors.entry(key).or_insert_with(|| Sensor {
            rate: WindowedRate::new(now_ms),
            recorded_total: 0.0,
            throttle_ms_total: 0,
            throttled_total: 0,
            bucket: TokenBucket::default(),
        })
    }

    /// Records `value` for the clients of `sensor` under `quota` at `now_ms`, and returns the
    /// throttle time in ms (Kafka's `recordAndGetThrottleTimeMs`).
    pub fn record(
        &mut self,
        kind: QuotaType,
        sensor: SensorKey,
        quota: f64,
        value: f64,
        now_ms: u64,
    ) -> u64 {
        let s = self.sensor_mut(kind, sensor, now_ms);
        s.rate.record(value, now_ms);
        s.recorded_total += value;
        let window = s.rate.window_ms(now_ms);
        let padding = window.saturating_sub(s.rate.elapsed_ms(now_ms));
        let rate = s.rate.rate(now_ms);
        let throttle = throttle_time_ms(rate, quota, window, padding);
        if throttle > 0 {
            s.throttle_ms_total += throttle;
            s.throttled_total += 1;
        }
        throttle
    }

    /// Records `permits` partition mutations of the clients of `sensor` under the
    /// `controller_mutation_rate` `quota` at `now_ms` (Kafka's `StrictControllerMutationQuota`
    /// and `PermissiveControllerMutationQuota`). Strict: refused (`false`) while the bucket is
    /// already below zero, with the time until it is back at zero; otherwise taken, however
    /// many (the bucket may go below zero: Kafka accepts a request that fits in what is left
    /// before the quota is exhausted, whatever its size). Permissive: always taken; the throttle time is
    /// the time until the bucket is back at zero.
    pub fn record_mutation(
        &mut self,
        sensor: SensorKey,
        quota: f64,
        permits: f64,
        strict: bool,
        now_ms: u64,
    ) -> (bool, u64) {
        let s = self.sensor_mut(QuotaType::ControllerMutation, sensor, now_ms);
        if strict {
            let tokens = s.bucket.tokens(quota, now_ms);
            if tokens < 0.0 {
                let throttle = mutation_throttle_ms(tokens, quota);
                s.throttle_ms_total += throttle;
                s.throttled_total += 1;
                return (false, throttle);
            }
        }
        s.bucket.record(quota, permits, now_ms);
        s.rate.record(permits, now_ms);
        s.recorded_total += permits;
        if strict {
            return (true, 0);
        }
        let throttle = mutation_throttle_ms(s.bucket.tokens(quota, now_ms), quota);
        if throttle > 0 {
            s.throttle_ms_total += throttle;
            s.throttled_total += 1;
        }
        (true, throttle)
    }

    /// Drops rates idle for [`SENSOR_IDLE_MS_MAX`].
    pub fn expire(&mut self, now_ms: u64) {
        self.sensors
            .retain(|_, s| now_ms.saturating_sub(s.rate.last_record_ms) < SENSOR_IDLE_MS_MAX);
        self.name_bytes = self.sensors.keys().map(|(_, k)| name_bytes(k)).sum();
    }

    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }

    /// The Prometheus text of the tracked rates: per quota type and entity, the throttle time
    /// and throttled responses in total, what was recorded in total (bytes, or percent of a
    /// second) and the current rate; at most [`METRIC_SERIES_MAX`] entities, the most throttled
    /// first.
    pub fn render(&mut self, now_ms: u64) -> String {
        use std::fmt::Write;
        let mut rows: Vec<_> = self.sensors.iter_mut().collect();
        rows.sort_by(|a, b| {
            b.1.throttle_ms_total
                .cmp(&a.1.throttle_ms_total)
                .then_with(|| a.0.cmp(b.0))
        });
        rows.truncate(METRIC_SERIES_MAX);
        let mut out = String::new();
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let families: [(&str, &str, &str); 4] = [
            (
                "freshet_quota_throttle_time_ms_total",
                "counter",
                "Throttle time given to clients over their quota, per quota type and entity.",
            ),
            (
                "freshet_quota_throttled_responses_total",
                "counter",
                "Responses with a non-zero throttle time, per quota type and entity.",
            ),
            (
                "freshet_quota_recorded_total",
                "counter",
                "Bytes (produce, fetch), percent of a second of handler time (request) or partitions created and deleted (controller_mutation) recorded against a quota.",
            ),
            (
                "freshet_quota_rate",
                "gauge",
                "Current rate against the quota (bytes/s, percent, or partitions/s), Kafka's windowed Rate.",
            ),
        ];
        for (i, (name, kind, help)) in families.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((q, key), s) in rows.iter_mut() {
                let value = match i {
                    0 => s.throttle_ms_total as f64,
                    1 => s.throttled_total as f64,
                    2 => s.recorded_total,
                    _ => s.rate.rate(now_ms),
                };
                let _ = writeln!(
                    out,
                    "{name}{{quota=\"{}\",user=\"{}\",client_id=\"{}\"}} {value}",
                    q.label(),
                    esc(&key.user),
                    esc(&key.client_id)
                );
            }
        }
        out
    }
}

/// The process-wide rates (see the module doc).
pub fn global() -> &'static Mutex<Quotas> {
    static QUOTAS: OnceLock<Mutex<Quotas>> = OnceLock::new();
    QUOTAS.get_or_init(|| Mutex::new(Quotas::default()))
}

/// Milliseconds of a monotonic clock for the rates.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Records `value` for a request of `principal` / `client_id` against the quota of `kind` in
/// `quotas` (the metadata's), and returns the throttle time in ms (0: none configured, or
/// within it). The hook Produce and Fetch call.
pub fn record_and_throttle_ms(
    quotas: &QuotaTable,
    kind: QuotaType,
    principal: &str,
    client_id: &str,
    value: f64,
) -> u64 {
    if quotas.is_empty() {
        return 0;
    }
    let Some((quota, sensor)) = applicable(quotas, user_of(principal), client_id, kind.key())
    else {
        return 0;
    };
    let mut all = global().lock().unwrap_or_else(|p| p.into_inner());
    all.record(kind, sensor, quota, value, now_ms())
}

/// Takes `value` back off the rate [`record_and_throttle_ms`] recorded it into (a throttled
/// fetch answered empty: Kafka's `unrecordQuotaSensor`).
pub fn unrecord(
    quotas: &QuotaTable,
    kind: QuotaType,
    principal: &str,
    client_id: &str,
    value: f64,
) {
    let Some((_, sensor)) = applicable(quotas, user_of(principal), client_id, kind.key()) else {
        return;
    };
    let mut all = global().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = all.sensors.get_mut(&(kind, sensor)) {
        s.rate.record(-value, now_ms());
        s.recorded_total -= value;
    }
}

/// Does a quota apply to `request` (so that the connection handles it alone, and learns its
/// throttle before reading on, as Kafka's muted channel)? A Produce or Fetch under a byte
/// rate, a CreateTopics, CreatePartitions or DeleteTopics under `controller_mutation_rate`,
/// any request not exempt ([`exempt_from_request_quota`]) under `request_percentage`.
pub fn applies(quotas: &QuotaTable, request: &crate::protocol::header::ParsedRequest) -> bool {
    if quotas.is_empty() {
        return false;
    }
    let (user, client_id) = (user_of(&request.principal), request.client_id_or_empty());
    let has = |key: &str| applicable(quotas, user, client_id, key).is_some();
    let kind = match request.api_key {
        0 => Some(QuotaType::Produce),
        1 => Some(QuotaType::Fetch),
        key if strict_mutation_since(key).is_some() => Some(QuotaType::ControllerMutation),
        _ => None,
    };
    kind.is_some_and(|k| has(k.key()))
        || (!exempt_from_request_quota(request.api_key) && has(REQUEST_PERCENTAGE))
}

/// The /metrics text of the quota rates.
pub fn render_metrics() -> String {
    let mut all = global().lock().unwrap_or_else(|p| p.into_inner());
    all.render(now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;
    use EntityName::{Default, Named};

    fn table(entries: &[(Option<EntityName>, Option<EntityName>, f64)]) -> QuotaTable {
        entries
            .iter()
            .map(|(u, c, v)| {
                (
                    QuotaEntity::new(u.clone(), c.clone()),
                    [(PRODUCER_BYTE_RATE.to_string(), QuotaValue(*v))].into(),
                )
            })
            .collect()
    }

    fn n(s: &str) -> Option<EntityName> {
        Some(Named(s.into()))
    }

    /// Each of Kafka's eight levels wins over every level below it; the sharing entity
    /// follows the matched level.
    #[test]
    fn precedence_follows_kafka_order() {
        let all = vec![
            (n("alice"), n("app"), 1.0),
            (n("alice"), Some(Default), 2.0),
            (n("alice"), None, 3.0),
            (Some(Default), n("app"), 4.0),
            (Some(Default), Some(Default), 5.0),
            (Some(Default), None, 6.0),
            (None, n("app"), 7.0),
            (None, Some(Default), 8.0),
        ];
        for skip in 0..all.len() {
            let t = table(&all[skip..]);
            let (value, sensor) = applicable(&t, "alice", "app", PRODUCER_BYTE_RATE).unwrap();
            assert_eq!(value, (skip + 1) as f64, "levels from {skip}");
            let (u, c) = (&all[skip].0, &all[skip].1);
            assert_eq!(sensor.user, if u.is_some() { "alice" } else { "" });
            assert_eq!(sensor.client_id, if c.is_some() { "app" } else { "" });
        }
        // Another user and client id only match the defaults.
        let t = table(&all);
        assert_eq!(
            applicable(&t, "bob", "other", PRODUCER_BYTE_RATE)
                .unwrap()
                .0,
            5.0
        );
        assert_eq!(
            applicable(&t, "alice", "other", PRODUCER_BYTE_RATE)
                .unwrap()
                .0,
            2.0
        );
        assert_eq!(
            applicable(&t, "bob", "app", PRODUCER_BYTE_RATE).unwrap().0,
            4.0
        );
        // A quota of another key does not apply.
        assert!(applicable(&t, "alice", "app", CONSUMER_BYTE_RATE).is_none());
        assert!(applicable(&QuotaTable::new(), "a", "b", PRODUCER_BYTE_RATE).is_none());
        assert_eq!(user_of("User:ANONYMOUS"), "ANONYMOUS");
    }

    /// The rate is measured over at least 10 full windows at first, then over the samples held
    /// (11 windows at most), as Kafka's `Rate.windowSize`.
    #[test]
    fn windowed_rate_matches_kafka_rate() {
        let mut r = WindowedRate::new(0);
        r.record(10_000.0, 0);
        // 10 000 bytes over the minimum 10 s window.
        assert_eq!(r.window_ms(0), 10_000);
        assert_eq!(r.rate(0), 1000.0);
        // One sample per second for 20 s at 1000 B/s: the rate settles at 1000 B/s, the window
        // between 10 and 11 s.
        let mut r = WindowedRate::new(0);
        for s in 0..20u64 {
            r.record(1000.0, s * 1000);
        }
        let w = r.window_ms(19_500);
        assert!((10_000..=11_000).contains(&w), "{w}");
        let rate = r.rate(19_500);
        assert!((950.0..=1100.0).contains(&rate), "{rate}");
        // Idle for longer than the whole window: everything expires.
        assert_eq!(r.rate(40_000), 0.0);
    }

    #[test]
    fn throttle_time_is_kafkas_formula_capped() {
        assert_eq!(throttle_time_ms(1000.0, 1000.0, 10_000, 0), 0);
        assert_eq!(throttle_time_ms(500.0, 1000.0, 10_000, 5000), 0);
        // 20% over a 10 s window: 2 s (plus the padding of a young window).
        assert_eq!(throttle_time_ms(1200.0, 1000.0, 10_000, 0), 2000);
        assert_eq!(throttle_time_ms(1200.0, 1000.0, 10_000, 3000), 5000);
        // Far over: capped at the whole window.
        assert_eq!(throttle_time_ms(1e9, 1.0, 10_000, 0), 11_000);
    }

    /// A client sending as fast as it is allowed, waiting out each throttle time: the bytes it
    /// got through from `from_s` to `to_s` seconds, as a multiple of the quota's.
    fn greedy_client(from_s: u64, to_s: u64) -> f64 {
        let mut q = Quotas::default();
        let key = SensorKey {
            user: "u".into(),
            client_id: "c".into(),
        };
        let quota = 100_000.0;
        let (mut now, mut sent, batch) = (0u64, 0.0, 16_384.0);
        while now < to_s * 1000 {
            let t = q.record(QuotaType::Produce, key.clone(), quota, batch, now);
            if now >= from_s * 1000 {
                sent += batch;
            }
            now += t.max(1);
        }
        sent / (quota * (to_s - from_s) as f64)
    }

    /// A greedy client gets its quota within 10% over its first 10 s, its first 30 s and in
    /// the long run (Kafka's own formula alone lets about 23% through in the first 10 s).
    #[test]
    fn throttled_client_converges_to_quota() {
        for (from, to) in [(0, 10), (0, 30), (0, 60), (30, 120)] {
            let r = greedy_client(from, to);
            assert!((r - 1.0).abs() < 0.10, "{from}-{to} s: {r}");
        }
    }

    #[test]
    fn sensors_are_bounded_and_expire() {
        let mut q = Quotas::default();
        for i in 0..SENSORS_MAX + 50 {
            let key = SensorKey {
                user: String::new(),
                client_id: format!("c{i}"),
            };
            q.record(QuotaType::Fetch, key, 1e9, 1.0, 0);
        }
        assert_eq!(
            q.len(),
            SENSORS_MAX + 1,
            "the overflow entry is the only extra"
        );
        let text = q.render(0);
        let series = text
            .lines()
            .filter(|l| l.starts_with("freshet_quota_rate{"))
            .count();
        assert_eq!(series, METRIC_SERIES_MAX);
        q.expire(SENSOR_IDLE_MS_MAX + 1);
        assert!(q.is_empty());
        // Long client ids: their names stay within SENSOR_NAME_BYTES_MAX.
        let long = "c".repeat(32 * 1024);
        for i in 0..1000 {
            let key = SensorKey {
                user: String::new(),
                client_id: format!("{long}{i}"),
            };
            q.record(QuotaType::Fetch, key, 1e9, 1.0, 0);
        }
        assert!(q.name_bytes <= SENSOR_NAME_BYTES_MAX + 32);
        assert!(q.len() < 1000);
    }

    /// Kafka's TokenBucket: starts full at 10 s of the quota, refills at the quota, never
    /// above the burst; the throttle time is the time back to zero.
    #[test]
    fn token_bucket_is_kafkas() {
        assert_eq!(burst(2.0), 20.0);
        let mut b = TokenBucket::default();
        assert_eq!(b.tokens(2.0, 1000), 20.0);
        b.record(2.0, 25.0, 1000);
        assert_eq!(b.tokens(2.0, 1000), -5.0);
        assert_eq!(mutation_throttle_ms(-5.0, 2.0), 2500);
        assert_eq!(b.tokens(2.0, 2000), -3.0);
        assert_eq!(b.tokens(2.0, 3500), 0.0);
        assert_eq!(mutation_throttle_ms(0.0, 2.0), 0);
        // Idle for a long time: back to the burst, not beyond.
        assert_eq!(b.tokens(2.0, 100_000), 20.0);
    }

    fn key(c: &str) -> SensorKey {
        SensorKey {
            user: String::new(),
            client_id: c.into(),
        }
    }

    /// Strict (CreateTopics v6+...): a request is taken whatever its size while the bucket
    /// is not below zero, with no throttle; refused while it is, with the time back to zero.
    /// Permissive (older versions): always taken, throttled once below zero.
    #[test]
    fn strict_refuses_and_permissive_throttles() {
        let mut q = Quotas::default();
        // Quota 1 partition/s: burst 10.
        assert_eq!(q.record_mutation(key("s"), 1.0, 4.0, true, 0), (true, 0));
        assert_eq!(q.record_mutation(key("s"), 1.0, 30.0, true, 0), (true, 0));
        assert_eq!(
            q.record_mutation(key("s"), 1.0, 1.0, true, 0),
            (false, 24_000)
        );
        assert_eq!(
            q.record_mutation(key("s"), 1.0, 1.0, true, 20_000),
            (false, 4000)
        );
        assert_eq!(
            q.record_mutation(key("s"), 1.0, 1.0, true, 24_000),
            (true, 0)
        );
        let mut q = Quotas::default();
        assert_eq!(q.record_mutation(key("p"), 1.0, 10.0, false, 0), (true, 0));
        assert_eq!(
            q.record_mutation(key("p"), 1.0, 3.0, false, 0),
            (true, 3000)
        );
        assert_eq!(
            q.record_mutation(key("p"), 1.0, 3.0, false, 0),
            (true, 6000)
        );
        // Clients with their own entity do not share the bucket.
        assert_eq!(
            q.record_mutation(key("other"), 1.0, 10.0, true, 0),
            (true, 0)
        );
    }

    /// A request's quota: unbounded without a matching entity; strict from Kafka's versions.
    #[test]
    fn mutation_quota_per_request() {
        let table: QuotaTable = [(
            QuotaEntity::new(None, n("admin-mq")),
            [(CONTROLLER_MUTATION_RATE.to_string(), QuotaValue(0.5))].into(),
        )]
        .into();
        let mut free = MutationQuota::new(&table, "User:ANONYMOUS", "other", 19, 7);
        for _ in 0..100 {
            assert!(free.record(1000));
        }
        assert_eq!(free.throttle_ms(), 0);
        // Burst 5: the first request of 6 is taken, the next refused, ~2 s to wait.
        let mut strict = MutationQuota::new(&table, "User:ANONYMOUS", "admin-mq", 19, 6);
        assert!(strict.record(6));
        assert_eq!(strict.throttle_ms(), 0);
        assert!(!strict.record(1));
        let t = strict.throttle_ms();
        assert!((1000..=2000).contains(&t), "{t}");
        // CreateTopics v5 is permissive: taken, and throttled.
        let mut permissive = MutationQuota::new(&table, "User:ANONYMOUS", "admin-mq", 19, 5);
        assert!(permissive.record(2));
        assert!(permissive.throttle_ms() >= 4000);
        assert_eq!(strict_mutation_since(37), Some(3));
        assert_eq!(strict_mutation_since(20), Some(5));
        assert_eq!(strict_mutation_since(0), None);
    }

    #[test]
    fn request_time_is_a_percentage_of_a_second_capped_at_one_window() {
        assert_eq!(percent_of(std::time::Duration::from_millis(10)), 1.0);
        let table: QuotaTable = [(
            QuotaEntity::new(None, n("busy-rq")),
            [(REQUEST_PERCENTAGE.to_string(), QuotaValue(1.0))].into(),
        )]
        .into();
        // 1% of a second over the 10 s minimum window is 100 ms: 2 s is far over.
        let t = record_request_time(
            &table,
            "User:ANONYMOUS",
            "busy-rq",
            std::time::Duration::from_secs(2),
        );
        assert_eq!(t, REQUEST_THROTTLE_MS_MAX);
        assert_eq!(
            record_request_time(
                &table,
                "User:ANONYMOUS",
                "idle-rq",
                std::time::Duration::from_secs(2)
            ),
            0
        );
        assert!(exempt_from_request_quota(18) && exempt_from_request_quota(36));
        assert!(!exempt_from_request_quota(3));
    }

    #[test]
    fn values_are_checked_as_kafka_does() {
        let user = QuotaEntity::new(n("alice"), None);
        assert!(check_value(&user, PRODUCER_BYTE_RATE, 1024.0).is_ok());
        assert!(check_value(&user, PRODUCER_BYTE_RATE, 10.5).is_err());
        assert!(check_value(&user, PRODUCER_BYTE_RATE, 0.0).is_err());
        assert!(check_value(&user, REQUEST_PERCENTAGE, 12.5).is_ok());
        assert!(check_value(&user, "nope", 1.0).is_err());
        assert!(check_value(&user, CONNECTION_CREATION_RATE, 5.0).is_err());
        assert!(check_entity(&QuotaEntity::new(None, None)).is_err());
        // IP entities (KIP-612): alone, an IP address, connection_creation_rate only (an INT).
        let ip = QuotaEntity::of_ip(Named("127.0.0.1".into()));
        assert!(check_entity(&ip).is_ok());
        assert!(check_entity(&QuotaEntity::of_ip(Default)).is_ok());
        assert!(check_entity(&QuotaEntity::of_ip(Named("not-an-ip".into()))).is_err());
        let mixed = QuotaEntity {
            user: n("alice"),
            ..ip.clone()
        };
        assert!(check_entity(&mixed)
            .unwrap_err()
            .contains("IP entity should not be combined"));
        assert!(check_value(&ip, CONNECTION_CREATION_RATE, 5.0).is_ok());
        assert!(check_value(&ip, CONNECTION_CREATION_RATE, 2.5).is_err());
        assert!(check_value(&ip, CONNECTION_CREATION_RATE, 3e9)
            .unwrap_err()
            .contains("too large for an INT"));
        assert!(check_value(&ip, PRODUCER_BYTE_RATE, 5.0).is_err());
    }

    #[test]
    fn an_ip_takes_its_own_rate_else_the_default_ip_rate() {
        let mut t = QuotaTable::new();
        let rate = |v: f64| -> BTreeMap<String, QuotaValue> {
            [(CONNECTION_CREATION_RATE.to_string(), QuotaValue(v))].into()
        };
        let a: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(ip_connection_rate(&t, a), None);
        t.insert(QuotaEntity::new(n("alice"), None), rate(1.0));
        assert_eq!(
            ip_connection_rate(&t, a),
            None,
            "user quotas are not IP quotas"
        );
        t.insert(QuotaEntity::of_ip(Default), rate(5.0));
        t.insert(QuotaEntity::of_ip(Named("127.0.0.1".into())), rate(50.0));
        assert_eq!(ip_connection_rate(&t, a), Some(50.0));
        assert_eq!(
            ip_connection_rate(&t, "::ffff:127.0.0.1".parse().unwrap()),
            Some(50.0)
        );
        assert_eq!(ip_connection_rate(&t, b), Some(5.0));
    }
}
