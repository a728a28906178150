//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, for topics and this broker.
//!
//! **Topics.** Every Kafka topic config of `coordinator::topic_config` is described with its
//! effective value. Where it comes from follows Kafka's `ConfigHelper`: a topic override is
//! DYNAMIC_TOPIC_CONFIG; otherwise the broker-level synonym decides (`retention.ms` ->
//! `log.retention.ms`, ...): STATIC_BROKER_CONFIG when Freshet's broker setting differs from
//! Kafka's default, DEFAULT_CONFIG when it does not. Synonyms (when asked for) list those
//! sources in that order. Nothing is read-only or sensitive; documentation is null.
//! Alterations replace the override set (AlterConfigs) or apply SET/DELETE/APPEND/SUBTRACT
//! (IncrementalAlterConfigs; APPEND/SUBTRACT only on list configs, starting from the default
//! when there is no override, as Kafka's `ConfigurationControlManager` does) and go through
//! `MetadataCommand::SetConfigs` on the coordinator shard, which validates, persists, and
//! publishes them; every shard then hands the new settings to its partition logs.
//!
//! **The broker.** The resource name must be `""` (the cluster-wide dynamic defaults: described
//! as the dynamic defaults set, DYNAMIC_DEFAULT_BROKER_CONFIG, as Kafka does) or this node's
//! id. The broker's settings are described under Kafka's names: a dynamic config set for this
//! node is DYNAMIC_BROKER_CONFIG, one set as cluster default DYNAMIC_DEFAULT_BROKER_CONFIG;
//! otherwise STATIC_BROKER_CONFIG where Freshet's value differs from Kafka's default (and
//! always for listeners, log.dirs, node.id, process.roles), DEFAULT_CONFIG otherwise. Configs
//! Kafka updates dynamically are not read-only (see `coordinator::broker_config` for which,
//! and which Freshet acts on: the log configs become the defaults of every topic without its
//! own override, so topics describe them as their source too). Alterations of the broker
//! resource are checked as Kafka's `DynamicBrokerConfig` checks them (INVALID_REQUEST with
//! Kafka's message for static configs and the like) and go through
//! `MetadataCommand::SetBrokerConfigs`, persisted with the metadata.
//!
//! Other resource types (BROKER_LOGGER, CLIENT_METRICS, GROUP) are refused with
//! INVALID_REQUEST.
//!
//! Invariant: config alterations on the coordinator shard run one at a time (`ALTER_LOCK`), so
//! an incremental change computed from the current overrides is never lost to a concurrent
//! one.

use std::collections::BTreeMap;
use std::rc::Rc;

use glommio::sync::Semaphore;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::admin::{duplicates, resource_type, AdminError};
use super::{decode, respond, str_bytes, Outcome};
use crate::config::BrokerConfig;
use crate::coordinator::broker_config::{self, DEFAULT_RESOURCE, TOPIC_SYNONYMS};
use crate::coordinator::metadata::{
    validate_topic_name, ClusterMetadata, MetadataCommand, MetadataError,
};
use crate::coordinator::topic_config::{self, ConfigType, TOPIC_CONFIGS};
use crate::protocol::header::ParsedRequest;
use crate::shard::{Shard, ShardGone, COORDINATOR_SHARD};

/// Where a config value comes from (Kafka's `DescribeConfigsResponse.ConfigSource` ids).
pub mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// IncrementalAlterConfigs operations (Kafka's `AlterConfigOp.OpType` ids).
mod op {
    pub const SET: i8 = 0;
    pub const DELETE: i8 = 1;
    pub const APPEND: i8 = 2;
    pub const SUBTRACT: i8 = 3;
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
    let listener = |address: &str| format!("PLAINTEXT://{address}");
    let advertised = match broker.advertised_host_port() {
        Ok((host, port)) => listener(&format!("{host}:{port}")),
        Err(_) => listener(&broker.listen),
    };
    // (name, type, Freshet's value, Kafka's default: None for settings every broker sets).
    let mut settings: Vec<(String, ConfigType, String, Option<String>)> = vec![
        (
            "advertised.listeners".into(),
            ConfigType::String,
            advertised,
            None,
        ),
        (
            "auto.create.topics.enable".into(),
            ConfigType::Boolean,
            broker.auto_create_topics.to_string(),
            Some(kafka.auto_create_topics.to_string()),
        ),
        (
            "broker.id".into(),
            ConfigType::Int,
            broker.node_id.to_string(),
            None,
        ),
        (
            "default.replication.factor".into(),
            ConfigType::Int,
            "1".into(),
            Some("1".into()),
        ),
        (
            "listeners".into(),
            ConfigType::String,
            listener(&broker.listen),
            None,
        ),
        (
            "log.dirs".into(),
            ConfigType::String,
            log_dir.to_string(),
            None,
        ),
        (
            "log.retention.check.interval.ms".into(),
            ConfigType::Long,
            broker.retention_check_interval_ms.to_string(),
            Some(kafka.retention_check_interval_ms.to_string()),
        ),
        (
            "node.id".into(),
            ConfigType::Int,
            broker.node_id.to_string(),
            None,
        ),
        (
            "num.partitions".into(),
            ConfigType::Int,
            broker.default_partitions.to_string(),
            Some(kafka.default_partitions.to_string()),
        ),
        (
            "process.roles".into(),
            ConfigType::List,
            "broker,controller".into(),
            None,
        ),
        (
            "socket.request.max.bytes".into(),
            ConfigType::Int,
            broker.request_bytes_max.to_string(),
            Some(kafka.request_bytes_max.to_string()),
        ),
    ];
    for &(topic_name, broker_name, _) in TOPIC_SYNONYMS {
        let Some(def) = topic_config::find(topic_name) else {
            continue;
        };
        settings.push((
            broker_name.to_string(),
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
            settings.push((
                def.name.to_string(),
                def.config_type,
                default.to_string(),
                Some(default.to_string()),
            ));
        } else if set {
            settings.push((def.name.to_string(), def.config_type, String::new(), None));
        }
    }
    let mut entries: Vec<ConfigEntry> = settings
        .into_iter()
        .map(|(name, config_type, value, kafka_default)| {
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
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.dedup_by(|a, b| a.name == b.name);
    entries
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

// ---------------------------------------------------------------------------------------------
// DescribeConfigs

pub async fn handle_describe(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeConfigsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let metadata = shard.metadata();
    let kafka = BrokerConfig::default();
    let log_dir = absolute_data_dir(&shard.config);
    let mut response = DescribeConfigsResponse::default();
    for resource in &body.resources {
        let described = describe_resource(
            &metadata,
            &shard.config,
            &kafka,
            &log_dir,
            resource.resource_type,
            resource.resource_name.as_str(),
        );
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        match described {
            Ok(entries) => {
                result.error_message = None;
                let wanted = |name: &str| match &resource.configuration_keys {
                    Some(keys) if !keys.is_empty() => keys.iter().any(|k| k.as_str() == name),
                    _ => true,
                };
                result.configs = entries
                    .into_iter()
                    .filter(|e| wanted(&e.name))
                    .map(|e| describe_entry(e, body.include_synonyms))
                    .collect();
            }
            Err(error) => {
                result.error_code = error.code();
                result.error_message = error.message();
            }
        }
        response.results.push(result);
    }
    respond(&request, &response)
}

/// The configs of one resource, or why it cannot be described.
fn describe_resource(
    metadata: &ClusterMetadata,
    broker: &BrokerConfig,
    kafka: &BrokerConfig,
    log_dir: &str,
    kind: i8,
    name: &str,
) -> Result<Vec<ConfigEntry>, AdminError> {
    match kind {
        resource_type::TOPIC => {
            validate_topic_name(name)?;
            let topic = metadata
                .topics
                .get(name)
                .ok_or(AdminError::UnknownTopicOrPartition)?;
            let dynamic = DynamicConfigs::of(metadata, broker.node_id);
            Ok(topic_config_entries_with(
                &topic.configs,
                &dynamic,
                broker,
                kafka,
            ))
        }
        resource_type::BROKER => {
            let dynamic = DynamicConfigs::of(metadata, broker.node_id);
            if name.is_empty() {
                return Ok(default_broker_entries(&dynamic));
            }
            let id: i32 = name
                .parse()
                .map_err(|_| AdminError::BrokerIdNotInteger(name.to_string()))?;
            if id != broker.node_id {
                return Err(AdminError::DescribeOtherBroker {
                    expected: broker.node_id,
                    received: name.to_string(),
                });
            }
            Ok(broker_config_entries(broker, kafka, &dynamic, log_dir))
        }
        other => Err(unsupported_resource(other)),
    }
}

fn unsupported_resource(kind: i8) -> AdminError {
    match resource_type::unsupported_name(kind) {
        Some(name) => AdminError::UnsupportedResourceType(name),
        None => AdminError::UnknownResourceType(kind),
    }
}

fn describe_entry(entry: ConfigEntry, include_synonyms: bool) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default();
    out.name = str_bytes(entry.name);
    out.value = Some(str_bytes(entry.value));
    out.read_only = entry.read_only;
    out.config_source = entry.source;
    out.is_sensitive = false;
    out.config_type = entry.config_type;
    out.documentation = None;
    if include_synonyms {
        out.synonyms = entry
            .synonyms
            .into_iter()
            .map(|s| {
                let mut synonym = DescribeConfigsSynonym::default();
                synonym.name = str_bytes(s.name);
                synonym.value = Some(str_bytes(s.value));
                synonym.source = s.source;
                synonym
            })
            .collect();
    }
    out
}

/// The data directory as an absolute path (Kafka reports `log.dirs` entries that way).
pub fn absolute_data_dir(config: &BrokerConfig) -> String {
    std::path::absolute(&config.data_dir)
        .unwrap_or_else(|_| config.data_dir.clone())
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// AlterConfigs and IncrementalAlterConfigs

/// One IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

/// What to do to one resource's configs.
#[derive(Debug, Clone)]
enum Change {
    /// AlterConfigs: these become the whole override set.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: these operations, one per key.
    Incremental(Vec<(String, AlterOp)>),
}

/// One config of an alter request as sent: (name, value, operation; SET for AlterConfigs).
type RawConfig = (String, Option<String>, i8);
/// One resource of an alter request as sent: (type, name, configs).
type RawResource = (i8, StrBytes, Vec<RawConfig>);

/// One resource of an alter request, after the checks that need no metadata.
struct AlterResource {
    kind: i8,
    name: StrBytes,
    /// The change, or why the resource is refused already.
    change: Result<Change, AdminError>,
}

/// Applies incremental operations to `current` overrides, as Kafka's
/// `ConfigurationControlManager.incrementalAlterConfigResource` does: SET replaces, DELETE
/// removes, APPEND adds the comma-separated values not present yet and SUBTRACT removes them
/// (both only on list configs, starting from `default_of(key)` when there is no override).
/// Values are validated later, on the whole result.
pub fn apply_incremental(
    current: &BTreeMap<String, String>,
    ops: &[(String, AlterOp)],
    is_list: &dyn Fn(&str) -> bool,
    default_of: &dyn Fn(&str) -> String,
) -> Result<BTreeMap<String, String>, AdminError> {
    let mut next = current.clone();
    for (key, operation) in ops {
        match operation {
            AlterOp::Set(value) => {
                next.insert(key.clone(), value.clone());
            }
            AlterOp::Delete => {
                next.remove(key);
            }
            AlterOp::Append(values) | AlterOp::Subtract(values) => {
                let append = matches!(operation, AlterOp::Append(_));
                if !is_list(key) {
                    return Err(AdminError::NotAListConfig {
                        op: if append { "APPEND" } else { "SUBTRACT" },
                        key: key.clone(),
                    });
                }
                let old = next.get(key).cloned().unwrap_or_else(|| default_of(key));
                let mut parts: Vec<String> = old
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
                for value in values.split(',').filter(|v| !v.is_empty()) {
                    if append {
                        if !parts.iter().any(|p| p == value) {
                            parts.push(value.to_string());
                        }
                    } else if let Some(at) = parts.iter().position(|p| p == value) {
                        parts.remove(at);
                    }
                }
                next.insert(key.clone(), parts.join(","));
            }
        }
    }
    Ok(next)
}

/// The checks Kafka's broker makes before the controller sees an alter request
/// (`ConfigAdminManager.preprocess`): each resource at most once, each key at most once, no
/// null values except for DELETE, known operations; broker resources are checked (and, all
/// broker configs being static here, refused unless empty) right away.
fn preprocess(resources: Vec<RawResource>, incremental: bool, node_id: i32) -> Vec<AlterResource> {
    let keys: Vec<String> = resources
        .iter()
        .map(|(kind, name, _)| format!("{kind}\u{0}{}", name.as_str()))
        .collect();
    let repeated = duplicates(keys.iter().map(String::as_str))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    resources
        .into_iter()
        .zip(keys)
        .map(|((kind, name, configs), key)| {
            let change = if repeated.contains(&key) {
                Err(AdminError::DuplicateResource)
            } else {
                check_resource(kind, name.as_str(), configs, incremental, node_id)
            };
            AlterResource { kind, name, change }
        })
        .collect()
}

fn check_resource(
    kind: i8,
    name: &str,
    configs: Vec<RawConfig>,
    incremental: bool,
    node_id: i32,
) -> Result<Change, AdminError> {
    if !duplicates(configs.iter().map(|(k, _, _)| k.as_str())).is_empty() {
        return Err(AdminError::DuplicateConfigKeys);
    }
    let null: Vec<&str> = configs
        .iter()
        .filter(|(_, value, operation)| {
            value.is_none() && !(incremental && *operation == op::DELETE)
        })
        .map(|(k, _, _)| k.as_str())
        .collect();
    if !null.is_empty() {
        return Err(AdminError::NullConfigValues(null.join(", ")));
    }
    let change = if incremental {
        let mut ops = Vec::with_capacity(configs.len());
        for (key, value, operation) in configs {
            let value = value.unwrap_or_default();
            ops.push((
                key,
                match operation {
                    op::SET => AlterOp::Set(value),
                    op::DELETE => AlterOp::Delete,
                    op::APPEND => AlterOp::Append(value),
                    op::SUBTRACT => AlterOp::Subtract(value),
                    other => return Err(AdminError::UnknownConfigOperation(other)),
                },
            ));
        }
        Change::Incremental(ops)
    } else {
        Change::Replace(
            configs
                .into_iter()
                .map(|(k, v, _)| (k, v.unwrap_or_default()))
                .collect(),
        )
    };
    match kind {
        resource_type::TOPIC => Ok(change),
        resource_type::BROKER => {
            if !name.is_empty() {
                let id: i32 = name
                    .parse()
                    .map_err(|_| AdminError::NodeIdNotInteger(name.to_string()))?;
                if id != node_id {
                    return Err(AdminError::AlterOtherBroker {
                        expected: node_id,
                        received: name.to_string(),
                    });
                }
            }
            let names: Vec<&str> = match &change {
                Change::Replace(configs) => configs.keys().map(String::as_str).collect(),
                Change::Incremental(ops) => ops.iter().map(|(k, _)| k.as_str()).collect(),
            };
            broker_config::check_names(names.iter().copied(), !name.is_empty())
                .map_err(AdminError::BrokerConfigRefused)?;
            Ok(change)
        }
        other => Err(unsupported_resource(other)),
    }
}

thread_local! {
    /// Serializes config alterations on the coordinator shard (see the module doc).
    static ALTER_LOCK: Rc<Semaphore> = Rc::new(Semaphore::new(1));
}

/// Runs the topic and broker changes on the coordinator shard: computes each resource's new
/// config set from the current one and applies them all with one `change_metadata` call.
async fn alter_on_coordinator(
    coordinator: Rc<Shard>,
    changes: Vec<(i8, String, Change)>,
    validate_only: bool,
) -> Vec<Result<(), AdminError>> {
    let lock = ALTER_LOCK.with(Rc::clone);
    let _permit = lock.acquire_permit(1).await;
    let metadata = coordinator.metadata();
    let broker = coordinator.config.clone();
    let mut results: Vec<Result<(), AdminError>> = Vec::with_capacity(changes.len());
    let mut commands = Vec::new();
    let mut command_of = Vec::new();
    for (index, (kind, name, change)) in changes.into_iter().enumerate() {
        let command = if kind == resource_type::BROKER {
            new_broker_configs(&metadata, &broker, &name, change)
                .map(|(resource, configs)| MetadataCommand::SetBrokerConfigs { resource, configs })
        } else {
            new_overrides(&metadata, &broker, &name, change)
                .map(|configs| MetadataCommand::SetConfigs { name, configs })
        };
        match command {
            Ok(command) => {
                commands.push(command);
                command_of.push(index);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if !commands.is_empty() {
        let applied = coordinator.change_metadata(commands, validate_only).await;
        for (index, result) in command_of.into_iter().zip(applied) {
            results[index] = result.map_err(AdminError::from);
        }
    }
    results
}

fn new_overrides(
    metadata: &ClusterMetadata,
    broker: &BrokerConfig,
    name: &str,
    change: Change,
) -> Result<BTreeMap<String, String>, AdminError> {
    if name.is_empty() {
        return Err(AdminError::DefaultTopicResource);
    }
    validate_topic_name(name)?;
    let topic = metadata
        .topics
        .get(name)
        .ok_or_else(|| AdminError::UnknownConfigTopic(name.to_string()))?;
    let dynamic = broker_config::topic_defaults(&metadata.broker_configs, broker.node_id);
    match change {
        Change::Replace(configs) => Ok(configs),
        Change::Incremental(ops) => apply_incremental(
            &topic.configs,
            &ops,
            &|key| topic_config::find(key).is_some_and(|d| d.config_type == ConfigType::List),
            &|key| {
                dynamic
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| topic_config::broker_default(key, broker))
            },
        ),
    }
}

/// The new dynamic config set of broker resource `name` (node id or `""`): `(resource key,
/// configs)`. APPEND/SUBTRACT start from the value in force (dynamic, else static).
fn new_broker_configs(
    metadata: &ClusterMetadata,
    broker: &BrokerConfig,
    name: &str,
    change: Change,
) -> Result<(String, BTreeMap<String, String>), AdminError> {
    // The node id as the metadata keys it ("00" and "0" are the same node).
    let resource = if name.is_empty() {
        DEFAULT_RESOURCE.to_string()
    } else {
        broker.node_id.to_string()
    };
    let current = metadata
        .broker_configs
        .get(&resource)
        .cloned()
        .unwrap_or_default();
    let configs = match change {
        Change::Replace(configs) => configs,
        Change::Incremental(ops) => {
            let in_force = broker_config::in_force(&metadata.broker_configs, broker.node_id);
            let kafka = BrokerConfig::default();
            let described = broker_config_entries(
                broker,
                &kafka,
                &DynamicConfigs::of(metadata, broker.node_id),
                "",
            );
            apply_incremental(
                &current,
                &ops,
                &|key| {
                    broker_config::topic_name_of(key)
                        .and_then(topic_config::find)
                        .map(|d| d.config_type)
                        .or_else(|| broker_config::other_dynamic(key).map(|d| d.config_type))
                        == Some(ConfigType::List)
                },
                &|key| {
                    in_force.get(key).cloned().unwrap_or_else(|| {
                        described
                            .iter()
                            .find(|e| e.name == key)
                            .map(|e| e.value.clone())
                            .unwrap_or_default()
                    })
                },
            )?
        }
    };
    broker_config::check(&resource, &configs).map_err(|why| {
        AdminError::from(MetadataError {
            code: kafka_protocol::error::ResponseError::InvalidRequest,
            message: why,
        })
    })?;
    Ok((resource, configs))
}

/// The shared body of both alter APIs: per resource, in request order, the error or success.
async fn alter(
    shard: &Rc<Shard>,
    resources: Vec<AlterResource>,
    validate_only: bool,
) -> Vec<(i8, StrBytes, Result<(), AdminError>)> {
    let mut changes = Vec::new();
    let mut slots = Vec::new();
    let mut outcomes: Vec<Option<Result<(), AdminError>>> = Vec::new();
    for (index, resource) in resources.iter().enumerate() {
        outcomes.push(None);
        match &resource.change {
            // An empty incremental change of a broker changes nothing: accepted at once, as
            // Kafka accepts it.
            Ok(Change::Incremental(ops))
                if resource.kind == resource_type::BROKER && ops.is_empty() =>
            {
                outcomes[index] = Some(Ok(()));
            }
            Ok(change) => {
                changes.push((resource.kind, resource.name.to_string(), change.clone()));
                slots.push(index);
            }
            Err(_) => {}
        }
    }
    if !changes.is_empty() {
        let answers = shard
            .invoke_on(COORDINATOR_SHARD, move |coordinator| {
                alter_on_coordinator(coordinator, changes, validate_only)
            })
            .await;
        match answers {
            Ok(answers) => {
                for (index, answer) in slots.into_iter().zip(answers) {
                    outcomes[index] = Some(answer);
                }
            }
            Err(gone) => {
                tracing::warn!(error = %gone, "config alteration not applied");
                for index in slots {
                    outcomes[index] = Some(Err(AdminError::ShardGone(ShardGone(gone.0))));
                }
            }
        }
    }
    resources
        .into_iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let result = match resource.change {
                Err(e) => Err(e),
                Ok(_) => outcome.expect("every accepted resource has an outcome"),
            };
            (resource.kind, resource.name, result)
        })
        .collect()
}

pub async fn handle_alter(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: AlterConfigsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let resources = body
        .resources
        .into_iter()
        .map(|r| {
            let configs = r
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string()), op::SET))
                .collect();
            (r.resource_type, r.resource_name, configs)
        })
        .collect();
    let resources = preprocess(resources, false, shard.config.node_id);
    let mut response = AlterConfigsResponse::default();
    for (kind, name, result) in alter(shard, resources, body.validate_only).await {
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = kind;
        out.resource_name = name;
        (out.error_code, out.error_message) = error_fields(&result);
        response.responses.push(out);
    }
    respond(&request, &response)
}

pub async fn handle_incremental_alter(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: IncrementalAlterConfigsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let resources = body
        .resources
        .into_iter()
        .map(|r| {
            let configs = r
                .configs
                .into_iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.map(|v| v.to_string()),
                        c.config_operation,
                    )
                })
                .collect();
            (r.resource_type, r.resource_name, configs)
        })
        .collect();
    let resources = preprocess(resources, true, shard.config.node_id);
    let mut response = IncrementalAlterConfigsResponse::default();
    for (kind, name, result) in alter(shard, resources, body.validate_only).await {
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = kind;
        out.resource_name = name;
        (out.error_code, out.error_message) = error_fields(&result);
        response.responses.push(out);
    }
    respond(&request, &response)
}

/// `(error_code, error_message)` for a result: `(0, null)` on success.
fn error_fields(result: &Result<(), AdminError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => (e.code(), e.message()),
    }
}

/// Entries by name (tests).
#[cfg(test)]
fn names(entries: &[ConfigEntry]) -> std::collections::HashMap<&str, &ConfigEntry> {
    entries.iter().map(|e| (e.name.as_str(), e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_list(key: &str) -> bool {
        key == "cleanup.policy"
    }

    fn default_of(key: &str) -> String {
        if key == "cleanup.policy" {
            "delete".into()
        } else {
            String::new()
        }
    }

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn incremental_set_and_delete_touch_only_their_keys() {
        let current = overrides(&[("retention.ms", "1000"), ("segment.ms", "5000")]);
        let next = apply_incremental(
            &current,
            &[
                ("retention.ms".into(), AlterOp::Set("2000".into())),
                ("segment.ms".into(), AlterOp::Delete),
                ("flush.ms".into(), AlterOp::Delete),
            ],
            &is_list,
            &default_of,
        )
        .unwrap();
        assert_eq!(next, overrides(&[("retention.ms", "2000")]));
    }

    #[test]
    fn append_starts_from_the_default_and_skips_present_values() {
        let next = apply_incremental(
            &BTreeMap::new(),
            &[(
                "cleanup.policy".into(),
                AlterOp::Append("compact,delete".into()),
            )],
            &is_list,
            &default_of,
        )
        .unwrap();
        assert_eq!(next, overrides(&[("cleanup.policy", "delete,compact")]));
    }

    #[test]
    fn subtract_removes_values_and_may_leave_an_empty_list() {
        let current = overrides(&[("cleanup.policy", "delete,compact")]);
        let ops = [("cleanup.policy".into(), AlterOp::Subtract("delete".into()))];
        let next = apply_incremental(&current, &ops, &is_list, &default_of).unwrap();
        assert_eq!(next, overrides(&[("cleanup.policy", "compact")]));
        let ops = [("cleanup.policy".into(), AlterOp::Subtract("compact".into()))];
        let next = apply_incremental(&next, &ops, &is_list, &default_of).unwrap();
        assert_eq!(next, overrides(&[("cleanup.policy", "")]));
    }

    #[test]
    fn append_to_a_scalar_config_is_invalid_config() {
        let error = apply_incremental(
            &BTreeMap::new(),
            &[("retention.ms".into(), AlterOp::Append("1".into()))],
            &is_list,
            &default_of,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Can't APPEND to key retention.ms because its type is not LIST."
        );
        assert_eq!(
            error.code(),
            kafka_protocol::error::ResponseError::InvalidConfig.code()
        );
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
    fn preprocess_refuses_duplicates_nulls_and_static_broker_changes_as_kafka() {
        let res = |kind: i8, name: &str, configs: Vec<(&str, Option<&str>, i8)>| {
            (
                kind,
                str_bytes(name),
                configs
                    .into_iter()
                    .map(|(k, v, o)| (k.to_string(), v.map(str::to_string), o))
                    .collect::<Vec<_>>(),
            )
        };
        let out = preprocess(
            vec![
                res(
                    resource_type::TOPIC,
                    "a",
                    vec![("retention.ms", Some("1"), op::SET)],
                ),
                res(resource_type::TOPIC, "a", vec![]),
                res(
                    resource_type::TOPIC,
                    "b",
                    vec![("x", Some("1"), op::SET), ("x", Some("2"), op::SET)],
                ),
                res(resource_type::TOPIC, "c", vec![("x", None, op::SET)]),
                res(resource_type::TOPIC, "d", vec![("x", None, op::DELETE)]),
                res(resource_type::TOPIC, "e", vec![("x", Some("1"), 9)]),
                res(
                    resource_type::BROKER,
                    "0",
                    vec![("log.dirs", Some("/x"), op::SET)],
                ),
                res(
                    resource_type::BROKER,
                    "",
                    vec![("log.retention.ms", Some("1"), op::SET)],
                ),
                res(resource_type::BROKER, "7", vec![]),
                res(resource_type::BROKER, "x", vec![]),
                res(resource_type::BROKER_LOGGER, "0", vec![]),
                res(99, "0", vec![]),
            ],
            true,
            0,
        );
        let messages: Vec<String> = out
            .iter()
            .map(|r| match &r.change {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            })
            .collect();
        assert_eq!(
            messages,
            vec![
                "Each resource must appear at most once.",
                "Each resource must appear at most once.",
                "Error due to duplicate config keys",
                "Null value not supported for : x",
                "ok",
                "Unknown operations type 9",
                "Cannot update these configs dynamically: log.dirs",
                "ok",
                "Unexpected broker id, expected 0, but received 7",
                "Node id must be an integer, but it is: x",
                "Unsupported resource type: BROKER_LOGGER",
                "Unknown resource type 99",
            ]
        );
    }
}

#[cfg(test)]
mod dynamic_tests {
    use super::*;
    use crate::coordinator::broker_config::string_map as map;

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
