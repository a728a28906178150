//! The shared body of AlterConfigs and IncrementalAlterConfigs (their handlers are
//! [`super::alter_configs`] and [`super::incremental_alter_configs`]): Kafka's broker-side
//! checks ([`preprocess`]), the incremental operations ([`apply_incremental`]), and the
//! alteration itself on the coordinator shard, where the new config sets are computed from
//! the current ones and applied with one `change_metadata` call (validated, persisted and
//! published there).
//!
//! Invariant: alterations on the coordinator shard run one at a time (`ALTER_LOCK`), so an
//! incremental change computed from the current overrides is never lost to a concurrent one.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::rt::sync::Semaphore;
use kafka_protocol::protocol::StrBytes;

use super::catalogue::{broker_config_entries, DynamicConfigs};
use super::unsupported_resource;
use crate::api::admin::{duplicates, resource_type, AdminError};
use crate::config::BrokerConfig;
use crate::coordinator::broker_config::{self, DEFAULT_RESOURCE};
use crate::coordinator::metadata::{
    validate_topic_name, ClusterMetadata, MetadataCommand, MetadataError,
};
use crate::coordinator::topic_config::{self, ConfigType};
use crate::shard::{Shard, ShardGone, COORDINATOR_SHARD};

/// IncrementalAlterConfigs operations (Kafka's `AlterConfigOp.OpType` ids).
pub(super) mod op {
    pub const SET: i8 = 0;
    pub const DELETE: i8 = 1;
    pub const APPEND: i8 = 2;
    pub const SUBTRACT: i8 = 3;
}

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
pub(super) type RawConfig = (String, Option<String>, i8);
/// One resource of an alter request as sent: (type, name, configs).
pub(super) type RawResource = (i8, StrBytes, Vec<RawConfig>);

/// One resource of an alter request, after the checks that need no metadata.
pub(super) struct AlterResource {
    kind: i8,
    name: StrBytes,
    /// The change, or why the resource is refused already.
    change: Result<Change, AdminError>,
}

/// Refuses (AdminError::Unauthorized) each resource `denied` names: the caller lacks
/// ALTER_CONFIGS on it (`api::authz::config_refusal`).
pub(super) fn refuse_unauthorized(
    resources: &mut [AlterResource],
    denied: impl Fn(i8, &str) -> Option<crate::security::acl::ResourceType>,
) {
    for r in resources.iter_mut() {
        if let Some(resource_type) = denied(r.kind, r.name.as_str()) {
            r.change = Err(AdminError::Unauthorized(resource_type));
        }
    }
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
pub(super) fn preprocess(
    resources: Vec<RawResource>,
    incremental: bool,
    node_id: i32,
) -> Vec<AlterResource> {
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

/// The change a resource's configs ask for: each key at most once, no null values except
/// for DELETE, known operations.
fn parse_change(configs: Vec<RawConfig>, incremental: bool) -> Result<Change, AdminError> {
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
    Ok(change)
}

/// The checks of one resource that need no metadata (its configs, then its type and name).
fn check_resource(
    kind: i8,
    name: &str,
    configs: Vec<RawConfig>,
    incremental: bool,
    node_id: i32,
) -> Result<Change, AdminError> {
    let change = parse_change(configs, incremental)?;
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
        // Names and values are checked on the whole new set (`group_config::check` and
        // `check_bounds`, in `new_group_configs`).
        resource_type::GROUP => Ok(change),
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
        } else if kind == resource_type::GROUP {
            new_group_configs(&metadata, &broker, &name, change).map(|configs| {
                MetadataCommand::SetGroupConfigs {
                    group: name,
                    configs,
                }
            })
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

/// The new dynamic config set of group `group` (no group config is a list; a deleted one
/// falls back to its default).
fn new_group_configs(
    metadata: &ClusterMetadata,
    broker: &BrokerConfig,
    group: &str,
    change: Change,
) -> Result<BTreeMap<String, String>, AdminError> {
    let configs = match change {
        Change::Replace(configs) => configs,
        Change::Incremental(ops) => apply_incremental(
            metadata
                .group_configs
                .get(group)
                .unwrap_or(&BTreeMap::new()),
            &ops,
            &|_| false,
            &|_| String::new(),
        )?,
    };
    // Within this broker's bounds (Kafka's `GroupConfig.validate` with the broker's
    // `GroupCoordinatorConfig` / `ShareGroupConfig`); the rest is checked again by the
    // metadata state machine.
    {
        use crate::coordinator::group_config::{check, check_bounds};
        check(&configs)
            .and_then(|()| check_bounds(&configs, broker))
            .map_err(|why| {
                AdminError::from(crate::coordinator::metadata::MetadataError {
                    code: kafka_protocol::error::ResponseError::InvalidConfig,
                    message: why,
                })
            })?;
    }
    let stored_only = crate::coordinator::group_config::not_applied(&configs);
    if !stored_only.is_empty() {
        tracing::warn!(
            group,
            configs = ?stored_only,
            "consumer-group configs stored but not applied per group yet (the broker-wide group_consumer_* settings apply)"
        );
    }
    Ok(configs)
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
pub(super) async fn alter(
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

/// `(error_code, error_message)` for a result: `(0, null)` on success.
pub(super) fn error_fields(result: &Result<(), AdminError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => (e.code(), e.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::admin::resource_type;
    use crate::api::str_bytes;

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
