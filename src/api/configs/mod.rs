//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, for topics, this broker and groups.
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
//! **Groups.** The alter APIs take a GROUP resource (any group id, existing or not, as Kafka):
//! its new config set is checked by `coordinator::group_config` (Kafka's names; of them
//! Freshet applies `share.auto.offset.reset`, see there) and stored with the metadata
//! (`MetadataCommand::SetGroupConfigs`). DescribeConfigs lists every Kafka group config: the
//! group's value (DYNAMIC_GROUP_CONFIG) or the broker-wide one (DEFAULT_CONFIG).
//!
//! Other resource types (BROKER_LOGGER, CLIENT_METRICS) are refused with INVALID_REQUEST.
//!
//! Invariant: config alterations on the coordinator shard run one at a time (`ALTER_LOCK`), so
//! an incremental change computed from the current overrides is never lost to a concurrent
//! one.
//!
//! # Files
//! - [`catalogue`]: what DescribeConfigs reports for each config (value, source, synonyms,
//!   type, read-only), for topics, this broker and the dynamic defaults. Pure.
//! - [`describe_configs`]: the DescribeConfigs handler.
//! - [`alter_configs`] and [`incremental_alter_configs`]: the two alter handlers (decoding and
//!   responses).
//! - [`alter`]: their shared body: Kafka's checks, the incremental operations, and the
//!   alteration on the coordinator shard.

pub mod alter;
pub mod alter_configs;
pub mod catalogue;
pub mod describe_configs;
pub mod incremental_alter_configs;

pub use alter::{apply_incremental, AlterOp};
pub use alter_configs::handle_alter;
pub use catalogue::{
    absolute_data_dir, broker_config_entries, default_broker_entries, source, topic_config_entries,
    topic_config_entries_with, ConfigEntry, DynamicConfigs, Synonym,
};
pub use describe_configs::handle_describe;
pub use incremental_alter_configs::handle_incremental_alter;

use super::admin::{resource_type, AdminError};

/// The error for a resource type neither DescribeConfigs nor the alter APIs handle here
/// (Kafka's names for the types it knows, the bare id otherwise).
fn unsupported_resource(kind: i8) -> AdminError {
    match resource_type::unsupported_name(kind) {
        Some(name) => AdminError::UnsupportedResourceType(name),
        None => AdminError::UnknownResourceType(kind),
    }
}
