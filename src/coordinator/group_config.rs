//! Per-group dynamic configs (Kafka's `GroupConfig`, the GROUP resource of
//! IncrementalAlterConfigs / AlterConfigs, KIP-848 and KIP-932): which names exist, which
//! Freshet applies, and the checks of a group's whole config set before it goes into the
//! metadata log (`MetadataCommand::SetGroupConfigs`). Pure.
//!
//! Kafka accepts configs for a group that does not exist yet (share clients set
//! `share.auto.offset.reset` before their first member joins), so the group name is not
//! checked against the coordinator. Names Kafka does not know are refused with Kafka's message
//! ("Unknown group config name: X", INVALID_CONFIG). Of Kafka's group configs Freshet applies
//! `share.auto.offset.reset` (where a share partition starts when the group first fetches it)
//! and accepts `share.isolation.level=read_uncommitted` (what its share fetches read); the
//! others (session timeouts, heartbeat intervals, the record lock duration,
//! `read_committed`) are refused with INVALID_CONFIG saying so, rather than stored and
//! silently ignored: the broker-wide `group_*` settings apply to every group.

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

/// Checks a group's whole config set as it would be stored: every name Kafka's, every value
/// one Freshet applies. `Err` is Kafka's INVALID_CONFIG message.
pub fn check(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in configs {
        if !KAFKA_NAMES.contains(&name.as_str()) {
            return Err(format!("Unknown group config name: {name}"));
        }
        match name.as_str() {
            SHARE_AUTO_OFFSET_RESET => {
                if !["latest", "earliest"].contains(&value.as_str()) {
                    return Err(format!(
                        "Invalid value {value} for configuration {name}: String must be one of: latest, earliest"
                    ));
                }
            }
            SHARE_ISOLATION_LEVEL => match value.as_str() {
                "read_uncommitted" => {}
                "read_committed" => {
                    return Err(format!(
                        "Invalid value {value} for configuration {name}: Freshet's share groups read uncommitted records only"
                    ))
                }
                _ => {
                    return Err(format!(
                        "Invalid value {value} for configuration {name}: String must be one of: read_committed, read_uncommitted"
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "{name} is not supported per group by Freshet: the broker-wide group settings apply to every group"
                ))
            }
        }
    }
    Ok(())
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
    fn unknown_names_get_kafkas_message_and_unapplied_ones_are_refused() {
        assert_eq!(
            check(&set(&[("retention.ms", "1")])).unwrap_err(),
            "Unknown group config name: retention.ms"
        );
        let e = check(&set(&[("share.record.lock.duration.ms", "15000")])).unwrap_err();
        assert!(e.contains("not supported per group"), "{e}");
        assert!(check(&set(&[(SHARE_ISOLATION_LEVEL, "read_uncommitted")])).is_ok());
        assert!(check(&set(&[(SHARE_ISOLATION_LEVEL, "read_committed")])).is_err());
        assert!(check(&set(&[(SHARE_ISOLATION_LEVEL, "x")])).is_err());
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
