//! Kafka topic configs: their names, types, defaults, validation, and how they turn into the
//! storage engine's [`LogConfig`].
//!
//! A topic stores only its overrides (what CreateTopics/AlterConfigs set); everything else
//! takes the broker default, which in turn takes Kafka's default unless the broker config
//! changes it. The table below lists the topic configs Kafka 4.1 has. Those marked
//! `enforced: false` are accepted, stored and described so that tools which set them keep
//! working, but Freshet does not act on them yet.

use std::collections::BTreeMap;

use crate::config::BrokerConfig;
use crate::storage::{LogConfig, TimestampType};

/// The type of a config, as DescribeConfigs v3+ reports it (Kafka's `ConfigType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One topic config Kafka knows.
#[derive(Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    /// Allowed values for enumerated string configs (empty: any value of the type).
    pub choices: &'static [&'static str],
    /// Smallest allowed numeric value.
    pub min: i64,
    /// Whether Freshet acts on the value yet.
    pub enforced: bool,
}

const fn def(
    name: &'static str,
    config_type: ConfigType,
    choices: &'static [&'static str],
    min: i64,
    enforced: bool,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        config_type,
        choices,
        min,
        enforced,
    }
}

use ConfigType as T;

/// Kafka 4.1's topic configs (tiered-storage ones aside), in Kafka's alphabetical order.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        T::List,
        &["delete", "compact", "compact,delete", "delete,compact"],
        0,
        true,
    ),
    def(
        "compression.type",
        T::String,
        &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        0,
        false,
    ),
    def("delete.retention.ms", T::Long, &[], 0, true),
    def("file.delete.delay.ms", T::Long, &[], 0, false),
    def("flush.messages", T::Long, &[], 1, false),
    def("flush.ms", T::Long, &[], 0, false),
    def("index.interval.bytes", T::Int, &[], 0, true),
    def("max.compaction.lag.ms", T::Long, &[], 1, true),
    def("max.message.bytes", T::Int, &[], 0, true),
    def("message.timestamp.after.max.ms", T::Long, &[], 0, false),
    def("message.timestamp.before.max.ms", T::Long, &[], 0, false),
    def(
        "message.timestamp.type",
        T::String,
        &["CreateTime", "LogAppendTime"],
        0,
        true,
    ),
    def("min.cleanable.dirty.ratio", T::Double, &[], 0, true),
    def("min.compaction.lag.ms", T::Long, &[], 0, true),
    def("min.insync.replicas", T::Int, &[], 1, false),
    def("preallocate", T::Boolean, &[], 0, false),
    def("retention.bytes", T::Long, &[], -1, true),
    def("retention.ms", T::Long, &[], -1, true),
    def("segment.bytes", T::Int, &[], 14, true),
    def("segment.index.bytes", T::Int, &[], 4, false),
    def("segment.jitter.ms", T::Long, &[], 0, false),
    def("segment.ms", T::Long, &[], 1, true),
    def("unclean.leader.election.enable", T::Boolean, &[], 0, false),
];

/// Looks a topic config up by name.
pub fn find(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The value a topic has for `name` when it does not override it.
pub fn broker_default(name: &str, broker: &BrokerConfig) -> String {
    match name {
        "cleanup.policy" => "delete".into(),
        "compression.type" => "producer".into(),
        "delete.retention.ms" => "86400000".into(),
        "file.delete.delay.ms" => "60000".into(),
        "flush.messages" | "flush.ms" | "max.compaction.lag.ms" => i64::MAX.to_string(),
        "index.interval.bytes" => "4096".into(),
        "max.message.bytes" => broker.message_max_bytes.to_string(),
        "message.timestamp.after.max.ms" => "3600000".into(),
        "message.timestamp.before.max.ms" => i64::MAX.to_string(),
        "message.timestamp.type" => "CreateTime".into(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.compaction.lag.ms" => "0".into(),
        "min.insync.replicas" => "1".into(),
        "preallocate" | "unclean.leader.election.enable" => "false".into(),
        "retention.bytes" => broker.log_retention_bytes.to_string(),
        "retention.ms" => broker.log_retention_ms.to_string(),
        "segment.bytes" => broker.log_segment_bytes.to_string(),
        "segment.index.bytes" => "10485760".into(),
        "segment.jitter.ms" => "0".into(),
        "segment.ms" => broker.log_segment_ms.to_string(),
        _ => String::new(),
    }
}

/// Why a config value was refused; becomes INVALID_CONFIG with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

/// Checks one `name = value` pair against the table.
pub fn validate(name: &str, value: &str) -> Result<(), InvalidConfig> {
    let def =
        find(name).ok_or_else(|| InvalidConfig(format!("Unknown topic config name: {name}")))?;
    let bad = |why: &str| {
        InvalidConfig(format!(
            "Invalid value {value} for configuration {name}: {why}"
        ))
    };
    match def.config_type {
        T::Boolean => {
            if !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false") {
                return Err(bad("Expected value to be either true or false"));
            }
        }
        T::Int | T::Long => {
            let n: i64 = value.trim().parse().map_err(|_| bad("Not a number"))?;
            if def.config_type == T::Int && i32::try_from(n).is_err() {
                return Err(bad("Not a 32-bit integer"));
            }
            if n < def.min {
                return Err(bad(&format!("Value must be at least {}", def.min)));
            }
        }
        T::Double => {
            let x: f64 = value.trim().parse().map_err(|_| bad("Not a number"))?;
            if !(0.0..=1.0).contains(&x) {
                return Err(bad("Value must be in [0, 1]"));
            }
        }
        T::String | T::List => {
            if !def.choices.is_empty() && !def.choices.contains(&value.trim()) {
                return Err(bad(&format!(
                    "String must be one of: {}",
                    def.choices.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// The effective value of every topic config for a topic with these overrides:
/// `(name, value, is_override)`, in the table's order.
pub fn effective<'a>(
    overrides: &'a BTreeMap<String, String>,
    broker: &'a BrokerConfig,
) -> impl Iterator<Item = (&'static TopicConfigDef, String, bool)> + 'a {
    TOPIC_CONFIGS
        .iter()
        .map(move |d| match overrides.get(d.name) {
            Some(v) => (d, v.clone(), true),
            None => (d, broker_default(d.name, broker), false),
        })
}

/// The storage engine's settings for a topic with these overrides.
pub fn log_config(overrides: &BTreeMap<String, String>, broker: &BrokerConfig) -> LogConfig {
    let value = |name: &str| {
        overrides
            .get(name)
            .cloned()
            .unwrap_or_else(|| broker_default(name, broker))
    };
    // Values were validated when they were set; a default stands in for anything unreadable.
    let num = |name: &str, fallback: i64| value(name).trim().parse::<i64>().unwrap_or(fallback);
    let defaults = LogConfig::default();
    LogConfig {
        segment_bytes: num("segment.bytes", defaults.segment_bytes as i64).max(14) as u64,
        segment_ms: num("segment.ms", defaults.segment_ms),
        retention_ms: num("retention.ms", defaults.retention_ms),
        retention_bytes: num("retention.bytes", defaults.retention_bytes),
        max_message_bytes: num("max.message.bytes", defaults.max_message_bytes as i64)
            .clamp(0, i32::MAX as i64) as u32,
        index_interval_bytes: num("index.interval.bytes", defaults.index_interval_bytes as i64)
            .clamp(0, i32::MAX as i64) as u32,
        message_timestamp_type: if value("message.timestamp.type") == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        cleanup_delete: value("cleanup.policy").contains("delete"),
        cleanup_compact: value("cleanup.policy").contains("compact"),
        delete_retention_ms: num("delete.retention.ms", defaults.delete_retention_ms),
        min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio")
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(defaults.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: num("min.compaction.lag.ms", defaults.min_compaction_lag_ms),
        max_compaction_lag_ms: num("max.compaction.lag.ms", defaults.max_compaction_lag_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_has_a_valid_default() {
        let broker = BrokerConfig::default();
        for d in TOPIC_CONFIGS {
            let value = broker_default(d.name, &broker);
            assert!(!value.is_empty(), "{} has no default", d.name);
            validate(d.name, &value).unwrap_or_else(|e| panic!("{}: {e}", d.name));
        }
    }

    #[test]
    fn validation_rejects_bad_values_and_unknown_names() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("max.message.bytes", "99999999999").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("message.timestamp.type", "Whenever").is_err());
        assert!(validate("no.such.config", "1").is_err());
    }

    #[test]
    fn overrides_reach_the_log_config() {
        let broker = BrokerConfig::default();
        let mut overrides = BTreeMap::new();
        overrides.insert("segment.bytes".to_string(), "1048576".to_string());
        overrides.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let config = log_config(&overrides, &broker);
        assert_eq!(config.segment_bytes, 1_048_576);
        assert_eq!(config.message_timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(config.retention_ms, 604_800_000);
        assert!(config.cleanup_delete && !config.cleanup_compact);
        overrides.insert("cleanup.policy".to_string(), "compact".to_string());
        overrides.insert("min.cleanable.dirty.ratio".to_string(), "0.01".to_string());
        overrides.insert("delete.retention.ms".to_string(), "100".to_string());
        let config = log_config(&overrides, &broker);
        assert!(config.cleanup_compact && !config.cleanup_delete);
        assert_eq!(config.min_cleanable_dirty_ratio, 0.01);
        assert_eq!(config.delete_retention_ms, 100);
    }
}
