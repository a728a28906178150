//! Per-group dynamic configs (Kafka's `GroupConfig`, the GROUP resource of
//! IncrementalAlterConfigs / AlterConfigs, KIP-848 and KIP-932): which names exist, which
//! Freshet applies, and the checks of a group's whole config set before it goes into the
//! metadata log (`MetadataCommand::SetGroupConfigs`). Pure.
//!
//! Kafka accepts configs for a group that does not exist yet (share clients set
//! `share.auto.offset.reset` before their first member joins), so the group name is not
//! checked against the coordinator. Names Kafka does not know are refused with Kafka's message
//! ("Unknown group config name: X", INVALID_CONFIG); values are checked in two steps as Kafka's
//! `GroupConfig.validate` checks them: [`check`] (names, types, the `ConfigDef` minimums, the
//! string values; run by the metadata state machine) and [`check_bounds`] (within the broker's
//! `group.consumer.min/max.*` bounds, Kafka's defaults 45000/60000 and 5000/15000, and its
//! `group_share_min/max_*` settings; the session timeout above the heartbeat interval; run by
//! the broker that takes the IncrementalAlterConfigs / AlterConfigs request).
//!
//! Applied per group, as Kafka's `GroupConfigManager` lookups do (the broker-wide `group_share_*`
//! setting when the group has none): `share.auto.offset.reset` (where a share partition starts
//! when the group first fetches it), `share.record.lock.duration.ms` (each acquisition's lock),
//! `share.session.timeout.ms` and `share.heartbeat.interval.ms` (membership, from the next
//! heartbeat), `share.isolation.level` (`read_committed`: share fetches acquire records below
//! the last stable offset only and skip aborted transactions' records). Stored and described
//! but not applied: `consumer.session.timeout.ms` and `consumer.heartbeat.interval.ms` (the
//! broker-wide `group_consumer_*` settings apply to every consumer group; logged when set).

use std::collections::BTreeMap;

/// Kafka's `share.auto.offset.reset`: `earliest` or `latest` (default: the broker's
/// `share_auto_offset_reset`).
pub const SHARE_AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
/// Kafka's `share.isolation.level`.
pub const SHARE_ISOLATION_LEVEL: &str = "share.isolation.level";

/// Kafka's group config names (`GroupConfig.configNames()`), Kafka 4.2.
pub const KAFKA_NAMES: &[&str] = &[
    "consumer.session.timeout.ms",
    "consumer.heartbeat.interval.ms",
    "share.session.timeout.ms",
    "share.heartbeat.interval.ms",
    "share.record.lock.duration.ms",
    SHARE_AUTO_OFFSET_RESET,
    SHARE_ISOLATION_LEVEL,
];

/// Kafka's defaults of the group configs that are integers, with their `ConfigDef` minimums:
/// (name, default, least value).
const INT_CONFIGS: &[(&str, i64, i64)] = &[
    ("consumer.session.timeout.ms", 45_000, 1),
    ("consumer.heartbeat.interval.ms", 5_000, 1),
    ("share.session.timeout.ms", 45_000, 1),
    ("share.heartbeat.interval.ms", 5_000, 1),
    ("share.record.lock.duration.ms", 30_000, 1_000),
];

/// Consumer-group bounds (Kafka's `group.consumer.min/max.session.timeout.ms` and
/// `group.consumer.min/max.heartbeat.interval.ms` defaults; not settings of Freshet).
const CONSUMER_BOUNDS: &[(&str, i64, i64)] = &[
    ("consumer.session.timeout.ms", 45_000, 60_000),
    ("consumer.heartbeat.interval.ms", 5_000, 15_000),
];

/// The names of a config set that are stored but not applied per group (see the module doc).
pub fn not_applied(configs: &BTreeMap<String, String>) -> Vec<&str> {
    configs
        .keys()
        .map(String::as_str)
        .filter(|n| CONSUMER_BOUNDS.iter().any(|(name, ..)| name == n))
        .collect()
}

/// The integer values of a config set, defaults filled in (`Err`: Kafka's message for a
/// value that is no INT).
fn int_values(configs: &BTreeMap<String, String>) -> Result<BTreeMap<&'static str, i64>, String> {
    let mut ints = BTreeMap::new();
    for &(name, default, _) in INT_CONFIGS {
        let value = match configs.get(name) {
            None => default,
            Some(v) => v.trim().parse::<i32>().map(i64::from).map_err(|_| {
                format!("Invalid value {v} for configuration {name}: Not a number of type INT")
            })?,
        };
        ints.insert(name, value);
    }
    Ok(ints)
}

/// Checks a group's whole config set as it would be stored: names, types, Kafka's `ConfigDef`
/// minimums and string values (the first half of Kafka's `GroupConfig.validate`; the bounds
/// of the broker are [`check_bounds`]). `Err` is Kafka's INVALID_CONFIG message.
pub fn check(configs: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(name) = configs.keys().find(|n| !KAFKA_NAMES.contains(&n.as_str())) {
        return Err(format!("Unknown group config name: {name}"));
    }
    let ints = int_values(configs)?;
    for &(name, _, least) in INT_CONFIGS {
        let value = ints[name];
        if value < least {
            return Err(format!(
                "Invalid value {value} for configuration {name}: Value must be at least {least}"
            ));
        }
    }
    if let Some(value) = configs.get(SHARE_AUTO_OFFSET_RESET) {
        if !["latest", "earliest"].contains(&value.as_str()) {
            return Err(format!(
                "Invalid value {value} for configuration {SHARE_AUTO_OFFSET_RESET}: String must be one of: latest, earliest"
            ));
        }
    }
    match configs.get(SHARE_ISOLATION_LEVEL).map(String::as_str) {
        None | Some("read_uncommitted") | Some("read_committed") => Ok(()),
        Some(value) => Err(format!(
            "Invalid value {value} for configuration {SHARE_ISOLATION_LEVEL}: String must be one of: read_committed, read_uncommitted"
        )),
    }
}

/// The second half of Kafka's `GroupConfig.validate`: each integer within the broker's bounds
/// (`group_share_min/max_*`, Kafka's consumer-group defaults) and each session timeout above
/// its heartbeat interval. Run after [`check`].
pub fn check_bounds(
    configs: &BTreeMap<String, String>,
    broker: &crate::config::BrokerConfig,
) -> Result<(), String> {
    let ints = int_values(configs)?;
    let share: [(&str, i64, i64); 3] = [
        (
            "share.session.timeout.ms",
            i64::from(broker.group_share_min_session_timeout_ms),
            i64::from(broker.group_share_max_session_timeout_ms),
        ),
        (
            "share.heartbeat.interval.ms",
            i64::from(broker.group_share_min_heartbeat_interval_ms),
            i64::from(broker.group_share_max_heartbeat_interval_ms),
        ),
        (
            "share.record.lock.duration.ms",
            broker.group_share_min_record_lock_duration_ms,
            broker.group_share_max_record_lock_duration_ms,
        ),
    ];
    for &(name, min, max) in CONSUMER_BOUNDS.iter().chain(share.iter()) {
        let value = ints[name];
        if value < min {
            return Err(format!("{name} must be greater than or equal to {min}"));
        }
        if value > max {
            return Err(format!("{name} must be less than or equal to {max}"));
        }
    }
    for prefix in ["consumer", "share"] {
        let session = ints[format!("{prefix}.session.timeout.ms").as_str()];
        let heartbeat = ints[format!("{prefix}.heartbeat.interval.ms").as_str()];
        if session <= heartbeat {
            return Err(format!(
                "{prefix}.session.timeout.ms must be greater than {prefix}.heartbeat.interval.ms"
            ));
        }
    }
    Ok(())
}

/// A group's integer config when set (stored values passed [`check`]).
fn int_of(group_configs: Option<&BTreeMap<String, String>>, name: &str) -> Option<i64> {
    group_configs?.get(name)?.trim().parse::<i64>().ok()
}

/// The share record lock duration of a group: its `share.record.lock.duration.ms`, else the
/// broker's `group_share_record_lock_duration_ms` (`default_ms`).
pub fn share_record_lock_duration_ms(
    group_configs: Option<&BTreeMap<String, String>>,
    default_ms: i64,
) -> i64 {
    int_of(group_configs, "share.record.lock.duration.ms").unwrap_or(default_ms)
}

/// A share group's membership timings: its `share.session.timeout.ms` and
/// `share.heartbeat.interval.ms`, else the broker's (`defaults`).
pub fn share_group_timings(
    group_configs: Option<&BTreeMap<String, String>>,
    defaults: crate::coordinator::share_group::ShareGroupConfig,
) -> crate::coordinator::share_group::ShareGroupConfig {
    let int = |name: &str, default: i32| {
        int_of(group_configs, name)
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(default)
    };
    crate::coordinator::share_group::ShareGroupConfig {
        session_timeout_ms: int("share.session.timeout.ms", defaults.session_timeout_ms),
        heartbeat_interval_ms: int(
            "share.heartbeat.interval.ms",
            defaults.heartbeat_interval_ms,
        ),
    }
}

/// True when a share group reads committed records only (`share.isolation.level`).
pub fn share_read_committed(group_configs: Option<&BTreeMap<String, String>>) -> bool {
    group_configs
        .and_then(|c| c.get(SHARE_ISOLATION_LEVEL))
        .is_some_and(|v| v == "read_committed")
}

/// Kafka's `ConfigType` ids of the group configs (DescribeConfigs v3+).
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;

/// One group config as DescribeConfigs reports it: (name, value, set for this group, Kafka
/// `ConfigType` id). Every Kafka group config in Kafka's order; unset ones carry the
/// broker-wide value (`defaults`: the broker's `group_consumer_*`, `group_share_*` and
/// `share_auto_offset_reset`).
pub fn describe(
    configs: Option<&BTreeMap<String, String>>,
    defaults: &crate::config::BrokerConfig,
) -> Vec<(&'static str, String, bool, i8)> {
    let default_of = |name: &str| -> (String, i8) {
        match name {
            "consumer.session.timeout.ms" => (
                defaults.group_consumer_session_timeout_ms.to_string(),
                TYPE_INT,
            ),
            "consumer.heartbeat.interval.ms" => (
                defaults.group_consumer_heartbeat_interval_ms.to_string(),
                TYPE_INT,
            ),
            "share.session.timeout.ms" => (
                defaults.group_share_session_timeout_ms.to_string(),
                TYPE_INT,
            ),
            "share.heartbeat.interval.ms" => (
                defaults.group_share_heartbeat_interval_ms.to_string(),
                TYPE_INT,
            ),
            "share.record.lock.duration.ms" => (
                defaults.group_share_record_lock_duration_ms.to_string(),
                TYPE_INT,
            ),
            SHARE_AUTO_OFFSET_RESET => (defaults.share_auto_offset_reset.clone(), TYPE_STRING),
            _ => ("read_uncommitted".to_string(), TYPE_STRING),
        }
    };
    KAFKA_NAMES
        .iter()
        .map(|&name| {
            let (default, config_type) = default_of(name);
            match configs.and_then(|c| c.get(name)) {
                Some(value) => (name, value.clone(), true, config_type),
                None => (name, default, false, config_type),
            }
        })
        .collect()
}

/// Where a share group's new share partitions start: its `share.auto.offset.reset` when set,
/// else the broker's default (`broker_earliest`).
pub fn share_starts_at_earliest(
    group_configs: Option<&BTreeMap<String, String>>,
    broker_earliest: bool,
) -> bool {
    group_configs
        .and_then(|c| c.get(SHARE_AUTO_OFFSET_RESET))
        .map_or(broker_earliest, |v| v == "earliest")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn share_auto_offset_reset_takes_kafkas_two_values() {
        assert!(check(&set(&[(SHARE_AUTO_OFFSET_RESET, "earliest")])).is_ok());
        assert!(check(&set(&[(SHARE_AUTO_OFFSET_RESET, "latest")])).is_ok());
        let e = check(&set(&[(SHARE_AUTO_OFFSET_RESET, "none")])).unwrap_err();
        assert!(e.contains("String must be one of: latest, earliest"), "{e}");
        assert!(check(&BTreeMap::new()).is_ok());
    }

    #[test]
    fn unknown_names_get_kafkas_message_and_values_kafkas_checks() {
        assert_eq!(
            check(&set(&[("retention.ms", "1")])).unwrap_err(),
            "Unknown group config name: retention.ms"
        );
        // 0081's value, stored (not applied per group).
        let broker = crate::config::BrokerConfig::default();
        let both = |c: &BTreeMap<String, String>| check(c).and_then(|()| check_bounds(c, &broker));
        let session = set(&[("consumer.session.timeout.ms", "50000")]);
        assert!(both(&session).is_ok());
        assert_eq!(not_applied(&session), vec!["consumer.session.timeout.ms"]);
        assert!(both(&set(&[("share.record.lock.duration.ms", "15000")])).is_ok());
        let e = both(&set(&[("share.record.lock.duration.ms", "3000")])).unwrap_err();
        assert_eq!(
            e,
            "share.record.lock.duration.ms must be greater than or equal to 15000"
        );
        // Kafka's `ConfigDef` minimum holds whatever the broker's bounds.
        let e = check(&set(&[("share.record.lock.duration.ms", "999")])).unwrap_err();
        assert!(e.contains("Value must be at least 1000"), "{e}");
        // The broker's bounds are its settings (librdkafka's test cluster lowers the minimum).
        let lowered = crate::config::BrokerConfig {
            group_share_min_record_lock_duration_ms: 1_000,
            ..crate::config::BrokerConfig::default()
        };
        let short = set(&[("share.record.lock.duration.ms", "3000")]);
        assert!(check(&short)
            .and_then(|()| check_bounds(&short, &lowered))
            .is_ok());
        let e = both(&set(&[("consumer.session.timeout.ms", "x")])).unwrap_err();
        assert!(e.contains("Not a number"), "{e}");
        assert!(both(&set(&[("consumer.session.timeout.ms", "70000")])).is_err());
        // The session must outlast the heartbeat interval.
        let e = both(&set(&[
            ("share.session.timeout.ms", "45000"),
            ("share.heartbeat.interval.ms", "15000"),
        ]));
        assert!(e.is_ok());
        assert!(check(&set(&[(SHARE_ISOLATION_LEVEL, "read_uncommitted")])).is_ok());
        assert!(check(&set(&[(SHARE_ISOLATION_LEVEL, "read_committed")])).is_ok());
        assert!(check(&set(&[(SHARE_ISOLATION_LEVEL, "x")])).is_err());
        assert!(not_applied(&set(&[(SHARE_AUTO_OFFSET_RESET, "earliest")])).is_empty());
    }

    #[test]
    fn describe_lists_every_kafka_group_config_with_the_group_value_first() {
        let broker = crate::config::BrokerConfig::default();
        let group = set(&[(SHARE_AUTO_OFFSET_RESET, "earliest")]);
        let described = describe(Some(&group), &broker);
        assert_eq!(
            described.iter().map(|d| d.0).collect::<Vec<_>>(),
            KAFKA_NAMES.to_vec()
        );
        let reset = described
            .iter()
            .find(|d| d.0 == SHARE_AUTO_OFFSET_RESET)
            .unwrap();
        assert_eq!((reset.1.as_str(), reset.2), ("earliest", true));
        let session = described.iter().find(|d| d.0 == "share.session.timeout.ms");
        assert_eq!(
            session.map(|d| (d.1.clone(), d.2, d.3)),
            Some((broker.group_share_session_timeout_ms.to_string(), false, 3))
        );
    }

    #[test]
    fn applied_share_settings_fall_back_to_the_broker() {
        let defaults = crate::coordinator::share_group::ShareGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
        };
        let group = set(&[
            ("share.record.lock.duration.ms", "3000"),
            ("share.session.timeout.ms", "50000"),
            (SHARE_ISOLATION_LEVEL, "read_committed"),
        ]);
        assert_eq!(share_record_lock_duration_ms(Some(&group), 30_000), 3_000);
        assert_eq!(share_record_lock_duration_ms(None, 30_000), 30_000);
        let timings = share_group_timings(Some(&group), defaults);
        assert_eq!(
            (timings.session_timeout_ms, timings.heartbeat_interval_ms),
            (50_000, 5_000)
        );
        assert!(share_read_committed(Some(&group)));
        assert!(!share_read_committed(None));
    }

    #[test]
    fn the_group_setting_wins_over_the_broker_default() {
        let earliest = set(&[(SHARE_AUTO_OFFSET_RESET, "earliest")]);
        let latest = set(&[(SHARE_AUTO_OFFSET_RESET, "latest")]);
        assert!(share_starts_at_earliest(Some(&earliest), false));
        assert!(!share_starts_at_earliest(Some(&latest), true));
        assert!(share_starts_at_earliest(None, true));
        assert!(!share_starts_at_earliest(Some(&BTreeMap::new()), false));
    }
}
