//! The config catalogue as DescribeConfigs (and CreateTopics v5+) reports it: every topic
//! config with its effective value, source and synonyms, this broker's settings under Kafka's
//! names, and the cluster-wide dynamic defaults. Pure: built from the cluster metadata and
//! the broker's config, no I/O.
//!
//! The definitions themselves (names, types, Kafka's defaults, validation) are tables in
//! `coordinator::topic_config` (`TOPIC_CONFIGS`) and `coordinator::broker_config`
//! (`TOPIC_SYNONYMS`, `OTHER_DYNAMIC`); this module adds the broker settings Freshet has of its
//! own ([`own_settings`]) and works out where each value comes from (see the module docs of
//! [`super`]).

use std::collections::BTreeMap;

use crate::config::BrokerConfig;
use crate::coordinator::broker_config::{self, DEFAULT_RESOURCE, TOPIC_SYNONYMS};
use crate::coordinator::metadata::ClusterMetadata;
use crate::coordinator::topic_config::{self, ConfigType, TOPIC_CONFIGS};

/// Where a config value comes from (Kafka's `DescribeConfigsResponse.ConfigSource` ids).
pub mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
    pub const DYNAMIC_GROUP_CONFIG: i8 = 8;
}

/// One described config: what DescribeConfigs and CreateTopics (v5+) report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub read_only: bool,
    /// Kafka's `ConfigType` id (DescribeConfigs v3+).
    pub config_type: i8,
    /// Where the value could come from, highest precedence first.
    pub synonyms: Vec<Synonym>,
}

/// One synonym of a described config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: String,
    pub source: i8,
}

fn topic_synonym(name: &str) -> Option<(&'static str, bool)> {
    TOPIC_SYNONYMS
        .iter()
        .find(|(topic, _, _)| *topic == name)
        .map(|&(_, broker, has_default)| (broker, has_default))
}

/// The dynamic broker configs that apply to this node: its own and the cluster defaults.
#[derive(Debug, Clone, Default)]
pub struct DynamicConfigs {
    pub node: BTreeMap<String, String>,
    pub default: BTreeMap<String, String>,
}

impl DynamicConfigs {
    /// Those of node `node_id` in `metadata`.
    pub fn of(metadata: &ClusterMetadata, node_id: i32) -> DynamicConfigs {
        let get = |name: &str| {
            metadata
                .broker_configs
                .get(name)
                .cloned()
                .unwrap_or_default()
        };
        DynamicConfigs {
            node: get(&node_id.to_string()),
            default: get(DEFAULT_RESOURCE),
        }
    }

    /// The dynamic synonyms of broker config `name`, highest precedence first.
    fn synonyms(&self, name: &str) -> Vec<Synonym> {
        let mut out = Vec::new();
        if let Some(value) = self.node.get(name) {
            out.push(Synonym {
                name: name.to_string(),
                value: value.clone(),
                source: source::DYNAMIC_BROKER_CONFIG,
            });
        }
        if let Some(value) = self.default.get(name) {
            out.push(Synonym {
                name: name.to_string(),
                value: value.clone(),
                source: source::DYNAMIC_DEFAULT_BROKER_CONFIG,
            });
        }
        out
    }
}

/// The description of every topic config for a topic with `overrides` and no dynamic broker
/// configs, sorted by name (CreateTopics' answer).
pub fn topic_config_entries(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
    kafka: &BrokerConfig,
) -> Vec<ConfigEntry> {
    topic_config_entries_with(overrides, &DynamicConfigs::default(), broker, kafka)
}

/// The description of every topic config for a topic with `overrides`, sorted by name.
/// `dynamic` are the dynamic broker configs in force; `kafka` is a broker with Kafka's
/// defaults (what STATIC_BROKER_CONFIG is measured against).
pub fn topic_config_entries_with(
    overrides: &BTreeMap<String, String>,
    dynamic: &DynamicConfigs,
    broker: &BrokerConfig,
    kafka: &BrokerConfig,
) -> Vec<ConfigEntry> {
    let mut entries: Vec<ConfigEntry> = TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let broker_value = topic_config::broker_default(def.name, broker);
            let kafka_value = topic_config::broker_default(def.name, kafka);
            let mut synonyms = Vec::new();
            if let Some(value) = overrides.get(def.name) {
                synonyms.push(Synonym {
                    name: def.name.to_string(),
                    value: value.clone(),
                    source: source::DYNAMIC_TOPIC_CONFIG,
                });
            }
            if let Some((broker_name, has_default)) = topic_synonym(def.name) {
                synonyms.extend(dynamic.synonyms(broker_name));
                if broker_value != kafka_value {
                    synonyms.push(Synonym {
                        name: broker_name.to_string(),
                        value: broker_value.clone(),
                        source: source::STATIC_BROKER_CONFIG,
                    });
                }
                if has_default {
                    synonyms.push(Synonym {
                        name: broker_name.to_string(),
                        value: kafka_value,
                        source: source::DEFAULT_CONFIG,
                    });
                }
            }
            ConfigEntry {
                name: def.name.to_string(),
                value: synonyms.first().map_or(broker_value, |s| s.value.clone()),
                source: synonyms
                    .first()
                    .map_or(source::DEFAULT_CONFIG, |s| s.source),
                read_only: false,
                config_type: def.config_type as i8,
                synonyms,
            }
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

/// The description of this broker's settings under Kafka's names, sorted by name.
/// `log_dir` is the data directory as an absolute path.
pub fn broker_config_entries(
    broker: &BrokerConfig,
    kafka: &BrokerConfig,
    dynamic: &DynamicConfigs,
    log_dir: &str,
) -> Vec<ConfigEntry> {
    let mut entries: Vec<ConfigEntry> = broker_settings(broker, kafka, dynamic, log_dir)
        .into_iter()
        .map(|setting| describe_broker_setting(setting, dynamic))
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.dedup_by(|a, b| a.name == b.name);
    entries
}

/// One broker setting under Kafka's name, before its sources are worked out.
struct BrokerSetting {
    name: String,
    config_type: ConfigType,
    /// Freshet's value.
    value: String,
    /// Kafka's default: `None` for settings every broker sets.
    kafka_default: Option<String>,
}

impl BrokerSetting {
    fn new(
        name: &str,
        config_type: ConfigType,
        value: String,
        kafka_default: Option<String>,
    ) -> BrokerSetting {
        BrokerSetting {
            name: name.to_string(),
            config_type,
            value,
            kafka_default,
        }
    }
}

/// The broker settings DescribeConfigs lists, unsorted: Freshet's own ([`own_settings`]), the
/// broker synonyms of the topic configs, and Kafka's other dynamic configs.
fn broker_settings(
    broker: &BrokerConfig,
    kafka: &BrokerConfig,
    dynamic: &DynamicConfigs,
    log_dir: &str,
) -> Vec<BrokerSetting> {
    let mut settings = own_settings(broker, kafka, log_dir);
    for &(topic_name, broker_name, _) in TOPIC_SYNONYMS {
        let Some(def) = topic_config::find(topic_name) else {
            continue;
        };
        settings.push(BrokerSetting::new(
            broker_name,
            def.config_type,
            topic_config::broker_default(topic_name, broker),
            Some(topic_config::broker_default(topic_name, kafka)),
        ));
    }
    // Kafka's other dynamic configs: Freshet has no setting of its own for them, so their
    // static value is Kafka's default (those without one are listed only when set).
    for def in broker_config::OTHER_DYNAMIC {
        let set = dynamic.node.contains_key(def.name) || dynamic.default.contains_key(def.name);
        if let Some(default) = def.default {
            settings.push(BrokerSetting::new(
                def.name,
                def.config_type,
                default.to_string(),
                Some(default.to_string()),
            ));
        } else if set {
            settings.push(BrokerSetting::new(
                def.name,
                def.config_type,
                String::new(),
                None,
            ));
        }
    }
    settings
}

/// The table of the broker settings Freshet has, under Kafka's names.
fn own_settings(broker: &BrokerConfig, kafka: &BrokerConfig, log_dir: &str) -> Vec<BrokerSetting> {
    use ConfigType::{Boolean, Int, List, Long, String as Str};
    let listener = |address: &str| format!("PLAINTEXT://{address}");
    let advertised = match broker.advertised_host_port() {
        Ok((host, port)) => listener(&format!("{host}:{port}")),
        Err(_) => listener(&broker.listen),
    };
    let node_id = broker.node_id.to_string();
    let row = BrokerSetting::new;
    vec![
        row("advertised.listeners", Str, advertised, None),
        row(
            "auto.create.topics.enable",
            Boolean,
            broker.auto_create_topics.to_string(),
            Some(kafka.auto_create_topics.to_string()),
        ),
        row("broker.id", Int, node_id.clone(), None),
        row(
            "default.replication.factor",
            Int,
            "1".into(),
            Some("1".into()),
        ),
        row("listeners", Str, listener(&broker.listen), None),
        row("log.dirs", Str, log_dir.to_string(), None),
        row(
            "log.retention.check.interval.ms",
            Long,
            broker.retention_check_interval_ms.to_string(),
            Some(kafka.retention_check_interval_ms.to_string()),
        ),
        row("node.id", Int, node_id, None),
        row(
            "num.partitions",
            Int,
            broker.default_partitions.to_string(),
            Some(kafka.default_partitions.to_string()),
        ),
        row("process.roles", List, "broker,controller".into(), None),
        row(
            "socket.request.max.bytes",
            Int,
            broker.request_bytes_max.to_string(),
            Some(kafka.request_bytes_max.to_string()),
        ),
        // Kafka's default for both is null: shown as "" from the default.
        row(
            "broker.rack",
            Str,
            broker.broker_rack.clone(),
            Some(String::new()),
        ),
        row(
            "replica.selector.class",
            Str,
            broker.replica_selector_class.clone(),
            Some(String::new()),
        ),
    ]
}

/// The description of one broker setting: dynamic synonyms first (this node, then the cluster
/// default), then the static value where it differs from Kafka's default, then the default.
fn describe_broker_setting(setting: BrokerSetting, dynamic: &DynamicConfigs) -> ConfigEntry {
    let BrokerSetting {
        name,
        config_type,
        value,
        kafka_default,
    } = setting;
    let mut synonyms = dynamic.synonyms(&name);
    let static_set = def_has_no_static_value(&name, &value, kafka_default.as_ref());
    if !static_set && kafka_default.as_ref() != Some(&value) {
        synonyms.push(Synonym {
            name: name.clone(),
            value: value.clone(),
            source: source::STATIC_BROKER_CONFIG,
        });
    }
    if let Some(default) = kafka_default {
        synonyms.push(Synonym {
            name: name.clone(),
            value: default,
            source: source::DEFAULT_CONFIG,
        });
    }
    ConfigEntry {
        source: synonyms[0].source,
        value: synonyms[0].value.clone(),
        read_only: !broker_config::is_dynamic(&name),
        name,
        config_type: config_type as i8,
        synonyms,
    }
}

/// Whether `name` is a dynamic-only config without a default that is described only because
/// it is set dynamically (it then has no static value to list).
fn def_has_no_static_value(name: &str, value: &str, kafka_default: Option<&String>) -> bool {
    kafka_default.is_none() && value.is_empty() && broker_config::other_dynamic(name).is_some()
}

/// The description of the cluster-wide dynamic defaults (resource `""`): what is set, as
/// Kafka describes that resource; names Kafka does not know are not described.
pub fn default_broker_entries(dynamic: &DynamicConfigs) -> Vec<ConfigEntry> {
    dynamic
        .default
        .iter()
        .filter_map(|(name, value)| {
            let config_type = match broker_config::topic_name_of(name) {
                Some(topic) => topic_config::find(topic)?.config_type,
                None => broker_config::other_dynamic(name)?.config_type,
            };
            let synonym = Synonym {
                name: name.clone(),
                value: value.clone(),
                source: source::DYNAMIC_DEFAULT_BROKER_CONFIG,
            };
            Some(ConfigEntry {
                name: name.clone(),
                value: value.clone(),
                source: source::DYNAMIC_DEFAULT_BROKER_CONFIG,
                read_only: false,
                config_type: config_type as i8,
                synonyms: vec![synonym],
            })
        })
        .collect()
}

/// The data directory as an absolute path (Kafka reports `log.dirs` entries that way).
pub fn absolute_data_dir(config: &BrokerConfig) -> String {
    std::path::absolute(&config.data_dir)
        .unwrap_or_else(|_| config.data_dir.clone())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::broker_config::string_map as map;

    /// Entries by name.
    fn names(entries: &[ConfigEntry]) -> std::collections::HashMap<&str, &ConfigEntry> {
        entries.iter().map(|e| (e.name.as_str(), e)).collect()
    }

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topic_sources_are_override_then_static_broker_then_default() {
        let kafka = BrokerConfig::default();
        let broker = BrokerConfig {
            log_retention_ms: 3_600_000,
            ..BrokerConfig::default()
        };
        let entries =
            topic_config_entries(&overrides(&[("segment.bytes", "1048576")]), &broker, &kafka);
        assert_eq!(entries.len(), TOPIC_CONFIGS.len());
        assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
        let by_name = names(&entries);

        let segment = by_name["segment.bytes"];
        assert_eq!(segment.value, "1048576");
        assert_eq!(segment.source, source::DYNAMIC_TOPIC_CONFIG);
        assert_eq!(
            segment
                .synonyms
                .iter()
                .map(|s| (s.name.as_str(), s.value.as_str(), s.source))
                .collect::<Vec<_>>(),
            vec![
                ("segment.bytes", "1048576", source::DYNAMIC_TOPIC_CONFIG),
                ("log.segment.bytes", "1073741824", source::DEFAULT_CONFIG),
            ]
        );

        let retention = by_name["retention.ms"];
        assert_eq!(retention.value, "3600000");
        assert_eq!(retention.source, source::STATIC_BROKER_CONFIG);
        assert_eq!(retention.synonyms[0].name, "log.retention.ms");

        let policy = by_name["cleanup.policy"];
        assert_eq!(policy.value, "delete");
        assert_eq!(policy.source, source::DEFAULT_CONFIG);
        assert_eq!(policy.config_type, ConfigType::List as i8);
        assert!(!policy.read_only);
    }

    #[test]
    fn every_topic_config_has_a_broker_synonym() {
        for def in TOPIC_CONFIGS {
            assert!(topic_synonym(def.name).is_some(), "{}", def.name);
        }
    }

    #[test]
    fn broker_settings_are_read_only_unless_dynamic_and_static_only_where_they_differ() {
        let kafka = BrokerConfig::default();
        let broker = BrokerConfig {
            default_partitions: 3,
            ..BrokerConfig::default()
        };
        let entries = broker_config_entries(&broker, &kafka, &DynamicConfigs::default(), "/data");
        let by_name = names(&entries);
        assert!(entries
            .iter()
            .all(|e| e.read_only != broker_config::is_dynamic(&e.name)));
        assert!(by_name["num.partitions"].read_only);
        assert!(!by_name["log.retention.ms"].read_only);
        assert_eq!(by_name["background.threads"].value, "10");
        assert_eq!(by_name["num.partitions"].value, "3");
        assert_eq!(
            by_name["num.partitions"].source,
            source::STATIC_BROKER_CONFIG
        );
        assert_eq!(by_name["message.max.bytes"].source, source::DEFAULT_CONFIG);
        assert_eq!(by_name["log.dirs"].value, "/data");
        assert_eq!(by_name["log.dirs"].source, source::STATIC_BROKER_CONFIG);
        assert_eq!(by_name["listeners"].value, "PLAINTEXT://localhost:9092");
        assert_eq!(by_name["node.id"].value, "0");
        assert_eq!(by_name["log.retention.ms"].value, "604800000");
    }

    #[test]
    fn broker_rack_and_replica_selector_are_described() {
        let kafka = BrokerConfig::default();
        let broker = BrokerConfig {
            broker_rack: "RACK2".into(),
            replica_selector_class: crate::config::RACK_AWARE_REPLICA_SELECTOR.into(),
            ..BrokerConfig::default()
        };
        let entries = broker_config_entries(&broker, &kafka, &DynamicConfigs::default(), "/data");
        let by_name = names(&entries);
        assert_eq!(by_name["broker.rack"].value, "RACK2");
        assert_eq!(by_name["broker.rack"].source, source::STATIC_BROKER_CONFIG);
        assert!(by_name["broker.rack"].read_only);
        assert_eq!(
            by_name["replica.selector.class"].value,
            crate::config::RACK_AWARE_REPLICA_SELECTOR
        );
        let unset = broker_config_entries(&kafka, &kafka, &DynamicConfigs::default(), "/data");
        assert_eq!(names(&unset)["broker.rack"].source, source::DEFAULT_CONFIG);
    }

    #[test]
    fn dynamic_broker_configs_rank_node_then_default_then_static() {
        let kafka = BrokerConfig::default();
        let broker = BrokerConfig {
            log_retention_ms: 3_600_000,
            ..BrokerConfig::default()
        };
        let dynamic = DynamicConfigs {
            node: map(&[("log.retention.ms", "2000")]),
            default: map(&[
                ("log.retention.ms", "1000"),
                ("log.cleanup.policy", "compact"),
                ("background.threads", "4"),
            ]),
        };
        let entries = broker_config_entries(&broker, &kafka, &dynamic, "/data");
        let by_name = names(&entries);
        let retention = by_name["log.retention.ms"];
        assert_eq!(retention.value, "2000");
        assert_eq!(retention.source, source::DYNAMIC_BROKER_CONFIG);
        assert_eq!(
            retention
                .synonyms
                .iter()
                .map(|s| s.source)
                .collect::<Vec<_>>(),
            vec![
                source::DYNAMIC_BROKER_CONFIG,
                source::DYNAMIC_DEFAULT_BROKER_CONFIG,
                source::STATIC_BROKER_CONFIG,
                source::DEFAULT_CONFIG
            ]
        );
        assert_eq!(by_name["background.threads"].value, "4");
        assert_eq!(
            by_name["background.threads"].source,
            source::DYNAMIC_DEFAULT_BROKER_CONFIG
        );

        let topic = topic_config_entries_with(&map(&[]), &dynamic, &broker, &kafka);
        let by_name = names(&topic);
        assert_eq!(by_name["retention.ms"].value, "2000");
        assert_eq!(
            by_name["retention.ms"].source,
            source::DYNAMIC_BROKER_CONFIG
        );
        assert_eq!(by_name["cleanup.policy"].value, "compact");
        assert_eq!(
            by_name["cleanup.policy"].source,
            source::DYNAMIC_DEFAULT_BROKER_CONFIG
        );

        let defaults = default_broker_entries(&dynamic);
        assert_eq!(
            defaults
                .iter()
                .map(|e| (e.name.as_str(), e.source))
                .collect::<Vec<_>>(),
            vec![
                ("background.threads", source::DYNAMIC_DEFAULT_BROKER_CONFIG),
                ("log.cleanup.policy", source::DYNAMIC_DEFAULT_BROKER_CONFIG),
                ("log.retention.ms", source::DYNAMIC_DEFAULT_BROKER_CONFIG),
            ]
        );
    }
}
