//! Admin APIs: topics, configs, records, cluster and log-dir descriptions.
//!
//! [`handle`] dispatches to one module per API (`create_topics`, `delete_topics`,
//! `create_partitions`, `configs`, `delete_records`, `describe_cluster`, `describe_log_dirs`,
//! `describe_quorum`, `describe_topic_partitions`, `elect_leaders`, `partition_reassignments`).
//! This module also holds what they share: small helpers (duplicate detection, manual
//! replica-assignment checks, config resource types).
//!
//! Changes to cluster metadata always run on the coordinator shard through
//! `Shard::change_metadata`; descriptions read the local shard's metadata snapshot, which
//! every change has reached before it is acknowledged.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::ApiKey;

use super::{
    configs, create_partitions, create_topics, delete_records, delete_topics, describe_cluster,
    describe_log_dirs, describe_quorum, Outcome,
};
pub use crate::error::AdminError;
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

/// Dispatches an admin request (the API key and version were checked by `api::handle`).
pub async fn handle(shard: &Rc<Shard>, api_key: ApiKey, request: ParsedRequest) -> Outcome {
    match api_key {
        ApiKey::CreateTopics => create_topics::handle(shard, request).await,
        ApiKey::DeleteTopics => delete_topics::handle(shard, request).await,
        ApiKey::CreatePartitions => create_partitions::handle(shard, request).await,
        ApiKey::DescribeConfigs => configs::handle_describe(shard, request).await,
        ApiKey::AlterConfigs => configs::handle_alter(shard, request).await,
        ApiKey::IncrementalAlterConfigs => configs::handle_incremental_alter(shard, request).await,
        ApiKey::DeleteRecords => delete_records::handle(shard, request).await,
        ApiKey::DescribeCluster => describe_cluster::handle(shard, request).await,
        ApiKey::DescribeLogDirs => describe_log_dirs::handle(shard, request).await,
        ApiKey::DescribeQuorum => describe_quorum::handle(shard, request).await,
        ApiKey::DescribeTopicPartitions => {
            super::describe_topic_partitions::handle(shard, request).await
        }
        ApiKey::ElectLeaders => super::elect_leaders::handle(shard, request).await,
        ApiKey::AlterPartitionReassignments => {
            super::partition_reassignments::handle_alter(shard, request).await
        }
        ApiKey::ListPartitionReassignments => {
            super::partition_reassignments::handle_list(shard, request).await
        }
        // `classify_request` only lets through what `protocol::versions` lists, and every
        // listed API has a handler; a key that gets here is a table/dispatch mismatch.
        _ => Outcome::Close(format!("{api_key:?} is not implemented")),
    }
}

/// The names that occur more than once, in order of their first occurrence.
pub fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    let mut dup = Vec::new();
    for name in names {
        if !seen.insert(name) && !dup.contains(&name) {
            dup.push(name);
        }
    }
    dup
}

/// Checks one partition's manual replica list as Kafka's `validateManualPartitionAssignment`
/// does (`coordinator::metadata::check_replica_list`): not empty, only registered brokers
/// (`is_registered`, see [`registered_or_local`]), no broker twice, and as many replicas as
/// `replicas_expected` when given.
pub fn check_replica_list(
    brokers: &[i32],
    is_registered: impl Fn(i32) -> bool,
    replicas_expected: Option<usize>,
) -> Result<(), AdminError> {
    crate::coordinator::metadata::check_replica_list(brokers, is_registered, replicas_expected)
        .map_err(|e| AdminError::InvalidReplicaAssignment(e.message))
}

/// Whether a broker may hold a replica: one registered in `metadata`, or, while no broker is
/// registered (the pre-quorum rule of `coordinator::metadata`), this node only.
pub fn registered_or_local(
    metadata: &crate::coordinator::metadata::ClusterMetadata,
    node_id: i32,
) -> impl Fn(i32) -> bool + '_ {
    move |broker| {
        if metadata.brokers.is_empty() {
            broker == node_id
        } else {
            metadata.brokers.contains_key(&broker)
        }
    }
}

/// Config resource types (Kafka's `ConfigResource.Type` ids).
pub mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
    pub const BROKER_LOGGER: i8 = 8;
    pub const CLIENT_METRICS: i8 = 16;
    pub const GROUP: i8 = 32;

    /// Kafka's name for a known type other than TOPIC and BROKER, `None` for unknown ids.
    pub fn unsupported_name(id: i8) -> Option<&'static str> {
        match id {
            BROKER_LOGGER => Some("BROKER_LOGGER"),
            CLIENT_METRICS => Some("CLIENT_METRICS"),
            GROUP => Some("GROUP"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_reported_once_in_first_occurrence_order() {
        assert_eq!(duplicates(["a", "b", "a", "c", "b", "a"]), vec!["a", "b"]);
        assert!(duplicates(["a", "b"]).is_empty());
    }

    #[test]
    fn replica_lists_must_name_only_this_node_once() {
        let metadata = crate::coordinator::metadata::ClusterMetadata::default();
        let check = |brokers: &[i32], expected| {
            check_replica_list(brokers, registered_or_local(&metadata, 3), expected)
        };
        assert!(check(&[3], None).is_ok());
        assert!(check(&[3], Some(1)).is_ok());
        let message = |r: Result<(), AdminError>| r.unwrap_err().to_string();
        assert_eq!(
            message(check(&[], None)),
            "The manual partition assignment includes an empty replica list."
        );
        assert_eq!(
            message(check(&[3, 7], None)),
            "The manual partition assignment includes broker 7, but no such broker is registered."
        );
        assert_eq!(
            message(check(&[3, 3], None)),
            "The manual partition assignment includes the broker 3 more than once."
        );
        assert!(matches!(
            check(&[3], Some(2)),
            Err(AdminError::InvalidReplicaAssignment(_))
        ));
    }

    #[test]
    fn refusals_carry_kafkas_codes() {
        use kafka_protocol::error::ResponseError as E;
        let cases: Vec<(AdminError, E)> = vec![
            (AdminError::DuplicateTopicName, E::InvalidRequest),
            (
                AdminError::ReplicationFactorTooLarge {
                    factor: 3,
                    brokers: 1,
                },
                E::InvalidReplicationFactor,
            ),
            (AdminError::PartitionCountUnchanged(2), E::InvalidPartitions),
            (
                AdminError::InvalidReplicaAssignment(String::new()),
                E::InvalidReplicaAssignment,
            ),
            (
                AdminError::NotAListConfig {
                    op: "APPEND",
                    key: "retention.ms".into(),
                },
                E::InvalidConfig,
            ),
            (AdminError::DeletePolicy("t-0".into()), E::PolicyViolation),
            (AdminError::UnknownTopicId, E::UnknownTopicId),
            (
                AdminError::MismatchedEndpointType,
                E::MismatchedEndpointType,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(crate::error::admin_code(&error), code, "{error:?}");
        }
    }
}
