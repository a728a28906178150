//! Dynamic broker configs: which broker configs AlterConfigs may change at run time, how they
//! are checked, and how they reach the topics.
//!
//! Follows Kafka's `DynamicBrokerConfig`. A dynamic broker config is set either for this node
//! (resource name = node id; source DYNAMIC_BROKER_CONFIG) or as the cluster-wide default
//! (resource name `""`; source DYNAMIC_DEFAULT_BROKER_CONFIG). Precedence, highest first:
//! per-broker dynamic, dynamic default, the broker's static setting, Kafka's default. They live
//! in the cluster metadata (`ClusterMetadata::broker_configs`), so they are persisted with it
//! and survive restarts.
//!
//! What Kafka accepts dynamically ([`is_dynamic`]):
//! - the log configs (each topic config's broker synonym, `log.retention.ms`,
//!   `log.cleanup.policy`, `message.max.bytes`, ...): **acted on**: a topic without its own
//!   override runs with the dynamic value ([`topic_defaults`]), as Kafka's `DynamicLogConfig`
//!   reconfigures every log;
//! - thread pools, log cleaner tuning, SASL/listener settings, connection limits, producer
//!   state settings ([`OTHER_DYNAMIC`]): accepted, persisted and described; Freshet has no such
//!   thread pools or security layer yet, so they change nothing else;
//! - names Kafka does not know (custom configs for plugins): accepted and stored, as Kafka's
//!   `DynamicConfig.Broker.validate` allows custom names; not described.
//!
//! Bounded: at most [`CONFIGS_PER_RESOURCE_MAX`] configs per resource, names and values of at
//! most [`CONFIG_BYTES_MAX`] bytes (INVALID_REQUEST beyond), since they live in the metadata.
//!
//! Refused as Kafka refuses them (INVALID_REQUEST, Kafka's messages): known static configs
//! ([`STATIC`]; "Cannot update these configs dynamically"), `ssl.*` security configs without a
//! listener prefix, per-broker configs (listener, SASL) set at the cluster default level, and
//! values of the wrong type.

use std::collections::BTreeMap;

use super::topic_config::{self, ConfigType};

/// The resource name of the cluster-wide dynamic defaults.
pub const DEFAULT_RESOURCE: &str = "";

/// The most dynamic configs one broker resource may hold. Kafka's own list has under 100;
/// the rest of the room is for custom names. They live in the metadata document, rewritten on
/// every metadata change, so they must stay small.
pub const CONFIGS_PER_RESOURCE_MAX: usize = 1000;
/// The longest name or value of a dynamic broker config, in bytes.
pub const CONFIG_BYTES_MAX: usize = 32 * 1024;

/// Each topic config's broker-level synonym (Kafka's `ServerTopicConfigSynonyms`, first name)
/// and whether Kafka's broker config of that name has a default of its own (those that do not,
/// such as `log.retention.ms`, default through another synonym like `log.retention.hours`,
/// which Kafka does not list among the topic config's synonyms). These broker names are the
/// dynamic log configs (Kafka's `DynamicLogConfig.ReconfigurableConfigs`).
pub const TOPIC_SYNONYMS: &[(&str, &str, bool)] = &[
    ("cleanup.policy", "log.cleanup.policy", true),
    ("compression.type", "compression.type", true),
    (
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        true,
    ),
    ("file.delete.delay.ms", "log.segment.delete.delay.ms", true),
    ("flush.messages", "log.flush.interval.messages", true),
    ("flush.ms", "log.flush.interval.ms", false),
    ("index.interval.bytes", "log.index.interval.bytes", true),
    (
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        true,
    ),
    ("max.message.bytes", "message.max.bytes", true),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
        true,
    ),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
        true,
    ),
    ("message.timestamp.type", "log.message.timestamp.type", true),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        true,
    ),
    (
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        true,
    ),
    ("min.insync.replicas", "min.insync.replicas", true),
    ("preallocate", "log.preallocate", true),
    ("retention.bytes", "log.retention.bytes", true),
    ("retention.ms", "log.retention.ms", false),
    ("segment.bytes", "log.segment.bytes", true),
    ("segment.index.bytes", "log.index.size.max.bytes", true),
    ("segment.jitter.ms", "log.roll.jitter.ms", false),
    ("segment.ms", "log.roll.ms", false),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        true,
    ),
];

/// One dynamic broker config that is not a log config.
#[derive(Debug)]
pub struct DynamicDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    /// Kafka's default, when it has one (described as DEFAULT_CONFIG).
    pub default: Option<&'static str>,
    /// Settable only for one broker, not as the cluster default (Kafka's `PerBrokerConfigs`).
    pub per_broker: bool,
    /// The least value of a number.
    pub min: i64,
}

const fn def(
    name: &'static str,
    config_type: ConfigType,
    default: Option<&'static str>,
    per_broker: bool,
    min: i64,
) -> DynamicDef {
    DynamicDef {
        name,
        config_type,
        default,
        per_broker,
        min,
    }
}

/// Kafka's other dynamic broker configs (thread pools, log cleaner, listeners and SASL,
/// connection limits, producer state, metric reporters), with Kafka 4.1's defaults.
pub const OTHER_DYNAMIC: &[DynamicDef] = &[
    def("background.threads", ConfigType::Int, Some("10"), false, 1),
    def("num.io.threads", ConfigType::Int, Some("8"), false, 1),
    def("num.network.threads", ConfigType::Int, Some("3"), false, 1),
    def("num.replica.fetchers", ConfigType::Int, Some("1"), false, 1),
    def(
        "num.recovery.threads.per.data.dir",
        ConfigType::Int,
        Some("2"),
        false,
        1,
    ),
    def("log.cleaner.threads", ConfigType::Int, Some("1"), false, 0),
    def(
        "log.cleaner.dedupe.buffer.size",
        ConfigType::Long,
        Some("134217728"),
        false,
        0,
    ),
    def(
        "log.cleaner.io.buffer.size",
        ConfigType::Int,
        Some("524288"),
        false,
        0,
    ),
    def(
        "log.cleaner.io.buffer.load.factor",
        ConfigType::Double,
        Some("0.9"),
        false,
        0,
    ),
    def(
        "log.cleaner.io.max.bytes.per.second",
        ConfigType::Double,
        Some("1.7976931348623157E308"),
        false,
        0,
    ),
    def(
        "log.cleaner.backoff.ms",
        ConfigType::Long,
        Some("15000"),
        false,
        0,
    ),
    def(
        "max.connections",
        ConfigType::Int,
        Some("2147483647"),
        false,
        0,
    ),
    def(
        "max.connection.creation.rate",
        ConfigType::Int,
        Some("2147483647"),
        false,
        0,
    ),
    def(
        "metric.reporters",
        ConfigType::List,
        Some("org.apache.kafka.common.metrics.JmxReporter"),
        false,
        0,
    ),
    def(
        "producer.id.expiration.ms",
        ConfigType::Int,
        Some("86400000"),
        false,
        1,
    ),
    def(
        "transaction.partition.verification.enable",
        ConfigType::Boolean,
        Some("true"),
        false,
        0,
    ),
    def(
        "listener.security.protocol.map",
        ConfigType::String,
        Some("SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT"),
        true,
        0,
    ),
    def("principal.builder.class", ConfigType::String, None, true, 0),
    def(
        "sasl.mechanism.inter.broker.protocol",
        ConfigType::String,
        Some("GSSAPI"),
        true,
        0,
    ),
    def("sasl.jaas.config", ConfigType::String, None, true, 0),
    def(
        "sasl.enabled.mechanisms",
        ConfigType::List,
        Some("GSSAPI"),
        true,
        0,
    ),
    def(
        "sasl.kerberos.service.name",
        ConfigType::String,
        None,
        true,
        0,
    ),
    def(
        "sasl.kerberos.kinit.cmd",
        ConfigType::String,
        Some("/usr/bin/kinit"),
        true,
        0,
    ),
    def(
        "sasl.kerberos.ticket.renew.window.factor",
        ConfigType::Double,
        Some("0.8"),
        true,
        0,
    ),
    def(
        "sasl.kerberos.ticket.renew.jitter",
        ConfigType::Double,
        Some("0.05"),
        true,
        0,
    ),
    def(
        "sasl.kerberos.min.time.before.relogin",
        ConfigType::Long,
        Some("60000"),
        true,
        0,
    ),
    def(
        "sasl.kerberos.principal.to.local.rules",
        ConfigType::List,
        Some("DEFAULT"),
        true,
        0,
    ),
    def(
        "sasl.login.refresh.window.factor",
        ConfigType::Double,
        Some("0.8"),
        true,
        0,
    ),
    def(
        "sasl.login.refresh.window.jitter",
        ConfigType::Double,
        Some("0.05"),
        true,
        0,
    ),
    def(
        "sasl.login.refresh.min.period.seconds",
        ConfigType::Int,
        Some("60"),
        true,
        0,
    ),
    def(
        "sasl.login.refresh.buffer.seconds",
        ConfigType::Int,
        Some("300"),
        true,
        0,
    ),
];

/// Kafka broker configs that are static (read-only): refused with "Cannot update these configs
/// dynamically". The ones Freshet describes, and other common ones; a name in neither list
/// nor dynamic is taken as a custom config, as Kafka does with names it does not know.
pub const STATIC: &[&str] = &[
    "advertised.listeners",
    "auto.create.topics.enable",
    "broker.id",
    "controller.listener.names",
    "controller.quorum.voters",
    "default.replication.factor",
    "delete.topic.enable",
    "group.initial.rebalance.delay.ms",
    "group.max.session.timeout.ms",
    "group.min.session.timeout.ms",
    "inter.broker.listener.name",
    "listeners",
    "log.dir",
    "log.dirs",
    "log.retention.check.interval.ms",
    "log.retention.hours",
    "log.retention.minutes",
    "log.roll.hours",
    "log.roll.jitter.hours",
    "node.id",
    "num.partitions",
    "offsets.retention.check.interval.ms",
    "offsets.retention.minutes",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "process.roles",
    "socket.receive.buffer.bytes",
    "socket.request.max.bytes",
    "socket.send.buffer.bytes",
    "transaction.state.log.num.partitions",
    "transaction.state.log.replication.factor",
];

/// The topic config whose broker synonym is `broker_name`, if it is a dynamic log config.
pub fn topic_name_of(broker_name: &str) -> Option<&'static str> {
    TOPIC_SYNONYMS
        .iter()
        .find(|(_, broker, _)| *broker == broker_name)
        .map(|&(topic, _, _)| topic)
}

/// The non-log dynamic config called `name`.
pub fn other_dynamic(name: &str) -> Option<&'static DynamicDef> {
    OTHER_DYNAMIC.iter().find(|d| d.name == name)
}

/// Whether Kafka updates broker config `name` dynamically.
pub fn is_dynamic(name: &str) -> bool {
    topic_name_of(name).is_some() || other_dynamic(name).is_some()
}

/// The checks on names that Kafka's `DynamicBrokerConfig.validateConfigs` makes, in its order:
/// the message of the first that fails.
pub fn check_names<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
    per_broker: bool,
) -> Result<(), String> {
    let fail = |what: &str, bad: Vec<&str>| {
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: {}", bad.join(", ")))
        }
    };
    fail(
        "Cannot update these configs dynamically",
        names.clone().filter(|n| STATIC.contains(n)).collect(),
    )?;
    fail(
        "These security configs can be dynamically updated only per-listener using the listener prefix",
        names.clone().filter(|n| n.starts_with("ssl.")).collect(),
    )?;
    if !per_broker {
        fail(
            "Cannot update these configs at default cluster level, broker id must be specified",
            names
                .filter(|n| {
                    other_dynamic(n).is_some_and(|d| d.per_broker)
                        || n.strip_prefix("listener.name.").is_some_and(|rest| {
                            rest.split_once('.').is_some_and(|(_, base)| {
                                !matches!(
                                    base,
                                    "max.connections"
                                        | "max.connection.creation.rate"
                                        | "num.network.threads"
                                )
                            })
                        })
                })
                .collect(),
        )?;
    }
    Ok(())
}

/// Checks every name and value of a dynamic config set for `resource` (a node id, or
/// [`DEFAULT_RESOURCE`]): names as [`check_names`], values by their type.
pub fn check(resource: &str, configs: &BTreeMap<String, String>) -> Result<(), String> {
    if configs.len() > CONFIGS_PER_RESOURCE_MAX {
        return Err(format!(
            "Too many dynamic broker configs: {} (at most {CONFIGS_PER_RESOURCE_MAX} per resource)",
            configs.len()
        ));
    }
    if let Some((name, _)) = configs
        .iter()
        .find(|(k, v)| k.len() > CONFIG_BYTES_MAX || v.len() > CONFIG_BYTES_MAX)
    {
        let shown: String = name.chars().take(100).collect();
        return Err(format!(
            "Dynamic broker config {shown} is too long (names and values at most {CONFIG_BYTES_MAX} bytes)"
        ));
    }
    check_names(
        configs.keys().map(String::as_str),
        resource != DEFAULT_RESOURCE,
    )?;
    for (name, value) in configs {
        if let Some(topic) = topic_name_of(name) {
            topic_config::validate(topic, value).map_err(|e| {
                // Kafka names the broker config in the message.
                e.0.replace(
                    &format!("configuration {topic}:"),
                    &format!("configuration {name}:"),
                )
            })?;
        } else if let Some(def) = other_dynamic(name) {
            check_value(def, value)?;
        }
    }
    Ok(())
}

fn check_value(def: &DynamicDef, value: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!(
            "Invalid value {value} for configuration {}: {why}",
            def.name
        )
    };
    match def.config_type {
        ConfigType::Int | ConfigType::Long => {
            let n: i64 = value.trim().parse().map_err(|_| bad("Not a number"))?;
            if def.config_type == ConfigType::Int && i32::try_from(n).is_err() {
                return Err(bad("Not a 32-bit integer"));
            }
            if n < def.min {
                return Err(bad(&format!("Value must be at least {}", def.min)));
            }
        }
        ConfigType::Double => {
            value
                .trim()
                .parse::<f64>()
                .map_err(|_| bad("Not a number"))?;
        }
        ConfigType::Boolean => {
            if !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false") {
                return Err(bad("Expected value to be either true or false"));
            }
        }
        ConfigType::String | ConfigType::List => {}
    }
    Ok(())
}

/// The dynamic broker configs in force on node `node_id`: its own over the cluster defaults.
pub fn in_force(
    broker_configs: &BTreeMap<String, BTreeMap<String, String>>,
    node_id: i32,
) -> BTreeMap<String, String> {
    let mut out = broker_configs
        .get(DEFAULT_RESOURCE)
        .cloned()
        .unwrap_or_default();
    if let Some(own) = broker_configs.get(&node_id.to_string()) {
        out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

/// The dynamic log configs in force on node `node_id`, under their topic config names: the
/// defaults of every topic below its own overrides.
pub fn topic_defaults(
    broker_configs: &BTreeMap<String, BTreeMap<String, String>>,
    node_id: i32,
) -> BTreeMap<String, String> {
    in_force(broker_configs, node_id)
        .into_iter()
        .filter_map(|(k, v)| topic_name_of(&k).map(|t| (t.to_string(), v)))
        .collect()
}

/// A topic's configs as its log runs with them: its overrides over the dynamic log configs.
pub fn with_topic_defaults(
    overrides: &BTreeMap<String, String>,
    broker_configs: &BTreeMap<String, BTreeMap<String, String>>,
    node_id: i32,
) -> BTreeMap<String, String> {
    let mut out = topic_defaults(broker_configs, node_id);
    out.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// A config map from literal pairs (for the unit tests here and in `api::configs`).
#[cfg(test)]
pub(crate) fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::string_map as map;
    use super::*;

    #[test]
    fn kafka_s_dynamic_names_pass_and_static_ones_are_refused_with_its_messages() {
        let ok = map(&[
            ("background.threads", "4"),
            ("log.cleanup.policy", "compact"),
            ("log.retention.ms", "3600000"),
            ("my.plugin.setting", "anything"),
        ]);
        assert_eq!(check("", &ok), Ok(()));
        assert_eq!(check("0", &ok), Ok(()));
        assert_eq!(
            check("0", &map(&[("log.dirs", "/x"), ("num.io.threads", "2")])),
            Err("Cannot update these configs dynamically: log.dirs".into())
        );
        let relogin = map(&[("sasl.kerberos.min.time.before.relogin", "58000")]);
        assert_eq!(check("0", &relogin), Ok(()));
        assert_eq!(
            check("", &relogin),
            Err("Cannot update these configs at default cluster level, broker id must be specified: sasl.kerberos.min.time.before.relogin".into())
        );
        assert!(check("0", &map(&[("ssl.keystore.location", "/k")]))
            .unwrap_err()
            .starts_with("These security configs"));
    }

    #[test]
    fn custom_configs_are_bounded_in_count_and_size() {
        let many: BTreeMap<String, String> = (0..=CONFIGS_PER_RESOURCE_MAX)
            .map(|i| (format!("custom.{i}"), "1".to_string()))
            .collect();
        assert!(check("0", &many).unwrap_err().starts_with("Too many"));
        let long = map(&[("custom", &"x".repeat(CONFIG_BYTES_MAX + 1))]);
        assert!(check("0", &long).unwrap_err().contains("too long"));
        let fits = map(&[("custom", &"x".repeat(CONFIG_BYTES_MAX))]);
        assert_eq!(check("0", &fits), Ok(()));
    }

    #[test]
    fn values_are_checked_by_type() {
        assert_eq!(
            check("", &map(&[("background.threads", "0")])),
            Err(
                "Invalid value 0 for configuration background.threads: Value must be at least 1"
                    .into()
            )
        );
        assert_eq!(
            check("", &map(&[("log.retention.ms", "soon")])),
            Err("Invalid value soon for configuration log.retention.ms: Not a number".into())
        );
        assert!(check("", &map(&[("log.cleanup.policy", "shred")])).is_err());
    }

    #[test]
    fn node_values_win_over_defaults_and_topic_overrides_over_both() {
        let mut stored = BTreeMap::new();
        stored.insert(
            "".to_string(),
            map(&[
                ("log.retention.ms", "1000"),
                ("log.cleanup.policy", "compact"),
            ]),
        );
        stored.insert("0".to_string(), map(&[("log.retention.ms", "2000")]));
        stored.insert("7".to_string(), map(&[("log.retention.ms", "7000")]));
        assert_eq!(
            topic_defaults(&stored, 0),
            map(&[("cleanup.policy", "compact"), ("retention.ms", "2000")])
        );
        assert_eq!(
            with_topic_defaults(&map(&[("retention.ms", "5")]), &stored, 0),
            map(&[("cleanup.policy", "compact"), ("retention.ms", "5")])
        );
    }

    #[test]
    fn every_topic_config_has_a_broker_synonym() {
        for def in topic_config::TOPIC_CONFIGS {
            assert!(
                TOPIC_SYNONYMS.iter().any(|(t, _, _)| *t == def.name),
                "{}",
                def.name
            );
        }
    }
}
