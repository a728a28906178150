//! The coordinator: cluster-wide state owned by one shard (shard 0).
//!
//! For now that is the cluster metadata (topics, partition counts, topic ids, config
//! overrides): [`metadata`] is the state machine (pure), [`store`] keeps it durable, and
//! [`topic_config`] knows Kafka's topic configs. Consumer groups, committed offsets, producer
//! ids and transactions join it in their issues.

pub mod group;
pub mod metadata;
pub mod offsets;
pub mod store;
pub mod topic_config;
