//! CreateTopics (v2-v7): new topics with their partition counts and config overrides.
//!
//! The request is checked and applied on the coordinator shard, against its current metadata,
//! in the order Kafka 4.1's controller (`ReplicationControlManager.createTopics`) checks:
//! the name (valid; not colliding with an existing topic by '.' versus '_'; not existing), the
//! configs (no null values; known names and valid values: INVALID_CONFIG), then the layout.
//! A topic may give its layout as a count and a replication factor (-1 for the broker
//! defaults: `num.partitions`, and 1) or as manual assignments (then both must be -1). Manual
//! replica lists are checked here against the registered brokers (the local node alone while
//! the metadata has no registered broker: the pre-quorum rule of `coordinator::metadata`);
//! the metadata state machine then checks the layout again on the controller and places the
//! partitions over the live brokers (a replication factor above the registered brokers is
//! INVALID_REPLICATION_FACTOR). A name given twice in
//! one request is refused (INVALID_REQUEST "Duplicate topic name.", listed after the others, as
//! `ControllerApis` does) and not created at all.
//!
//! Before any of that, as Kafka's controller, the request as a whole may ask for at most
//! [`PARTITIONS_PER_REQUEST_MAX`] partitions (else every topic gets POLICY_VIOLATION). Kafka's
//! internal topic names are refused (INVALID_REQUEST), and so are names under the broker's
//! reserved prefix `.freshet` (INVALID_TOPIC_EXCEPTION). The broker-wide cap
//! (`max_partitions_per_broker`) is checked for the whole request in `Shard::change_metadata`.
//!
//! `validate_only` runs every check and creates nothing. v5+ answers carry the partition
//! count, replication factor and every topic config with its value and source (as
//! DescribeConfigs would give them); v7+ the topic id (for `validate_only`, a fresh random id
//! that is never used, as Kafka does). `timeout_ms` is not used: creation is complete (durable
//! and published to every shard) when the answer goes out. With the authorizer on, the count,
//! replication factor and configs are given only to a caller with DESCRIBE_CONFIGS on the
//! topic; for any other the topic's `topic_config_error_code` is TOPIC_AUTHORIZATION_FAILED,
//! its configs are empty and the count and factor -1 (Kafka's controller).
//!
//! A topic that passes the checks takes its partitions from the client's
//! `controller_mutation_rate` (`crate::quota::MutationQuota`, KIP-599): from v6, a topic asked
//! for while the quota is exhausted gets THROTTLING_QUOTA_EXCEEDED; the answer carries the
//! throttle time and the connection is muted for it.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use uuid::Uuid;

use super::admin::{check_replica_list, duplicates, registered_or_local, AdminError};
use super::configs::{topic_config_entries, ConfigEntry};
use super::{decode, respond, str_bytes, Outcome};
use crate::config::BrokerConfig;
use crate::coordinator::metadata::{
    check_creatable_topic_name, validate_topic_name, ClusterMetadata, MetadataCommand,
    MetadataError,
};
use crate::coordinator::topic_config;
use crate::protocol::header::ParsedRequest;
use crate::quota::MutationQuota;
use crate::shard::{Shard, ShardGone, COORDINATOR_SHARD};

/// Replicas per partition when the request gives -1 (Kafka's `default.replication.factor`).
const DEFAULT_REPLICATION_FACTOR: i16 = 1;

/// One topic to create, as plain data that can cross to the coordinator shard.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// `(partition, brokers)` in request order.
    pub assignments: Vec<(i32, Vec<i32>)>,
    /// `(name, value)` in request order.
    pub configs: Vec<(String, Option<String>)>,
}

/// A topic that passed the request's checks: its layout and config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// Defaults filled in; with manual assignments, their replica count.
    pub replication_factor: i16,
    /// Manual replica lists by partition index (0, 1, ...), if the request gave them.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// What the answer says about a created (or validated) topic.
#[derive(Debug)]
struct Created {
    topic_id: Uuid,
    partitions: i32,
    replication_factor: i16,
    configs: Vec<ConfigEntry>,
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: CreateTopicsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let repeated: Vec<String> = duplicates(body.topics.iter().map(|t| t.name.0.as_str()))
        .into_iter()
        .map(str::to_string)
        .collect();
    // Kafka: CREATE on the cluster, or on each topic.
    let may_create_all = super::authz::cluster_allowed(shard, &request, super::authz::Op::Create);
    let (topics, denied): (Vec<NewTopic>, Vec<NewTopic>) = body
        .topics
        .iter()
        .filter(|t| !repeated.iter().any(|r| r.as_str() == t.name.0.as_str()))
        .map(new_topic)
        .partition(|t| {
            may_create_all
                || super::authz::allowed(
                    shard,
                    &request,
                    super::authz::Op::Create,
                    super::authz::Res::Topic,
                    &t.name,
                )
        });
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let validate_only = body.validate_only;
    let quota = MutationQuota::new(
        &shard.metadata().client_quotas,
        &request.principal,
        request.client_id_or_empty(),
        request.api_key,
        request.api_version,
    );
    let (outcomes, throttle_ms) = match shard
        .invoke_on(COORDINATOR_SHARD, move |coordinator| {
            create_on_coordinator(coordinator, topics, validate_only, quota)
        })
        .await
    {
        Ok((outcomes, quota)) => (outcomes, quota.throttle_ms()),
        Err(gone) => (
            names
                .iter()
                .map(|_| Err(AdminError::ShardGone(ShardGone(gone.0))))
                .collect(),
            0,
        ),
    };
    let mut response = CreateTopicsResponse::default();
    response.throttle_time_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    for (name, outcome) in names.into_iter().zip(outcomes) {
        let mut result = CreatableTopicResult::default();
        result.name = TopicName(str_bytes(name));
        match outcome {
            Ok(created) => {
                result.error_message = None;
                result.topic_id = created.topic_id;
                // Kafka (`ReplicationControlManager.createTopic`): the layout and configs
                // only with DESCRIBE_CONFIGS on the topic; without it the configs part is
                // TOPIC_AUTHORIZATION_FAILED and partitions/replication factor stay -1.
                if super::authz::allowed(
                    shard,
                    &request,
                    super::authz::Op::DescribeConfigs,
                    super::authz::Res::Topic,
                    &result.name.0,
                ) {
                    result.num_partitions = created.partitions;
                    result.replication_factor = created.replication_factor;
                    result.configs = Some(created.configs.into_iter().map(topic_config).collect());
                } else {
                    result.num_partitions = -1;
                    result.replication_factor = -1;
                    result.configs = Some(Vec::new());
                    result.topic_config_error_code = ResponseError::TopicAuthorizationFailed.code();
                }
            }
            Err(error) => {
                result.error_code = error.code();
                result.error_message = error.message();
            }
        }
        response.topics.push(result);
    }
    for topic in denied {
        let mut result = CreatableTopicResult::default();
        let error = AdminError::Unauthorized(super::authz::Res::Topic);
        result.name = TopicName(str_bytes(topic.name));
        result.error_code = error.code();
        result.error_message = error.message();
        response.topics.push(result);
    }
    for name in repeated {
        let mut result = CreatableTopicResult::default();
        let error = AdminError::DuplicateTopicName;
        result.name = TopicName(str_bytes(name));
        result.error_code = error.code();
        result.error_message = error.message();
        response.topics.push(result);
    }
    super::throttle::throttled(respond(&request, &response), throttle_ms)
}

/// A topic to create, as the request gives it.
fn new_topic(t: &CreatableTopic) -> NewTopic {
    NewTopic {
        name: t.name.0.to_string(),
        num_partitions: t.num_partitions,
        replication_factor: t.replication_factor,
        assignments: t
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|b| b.0).collect(),
                )
            })
            .collect(),
        configs: t
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect(),
    }
}

fn topic_config(entry: ConfigEntry) -> CreatableTopicConfigs {
    let mut out = CreatableTopicConfigs::default();
    out.name = str_bytes(entry.name);
    out.value = Some(str_bytes(entry.value));
    out.read_only = entry.read_only;
    out.config_source = entry.source;
    out.is_sensitive = false;
    out
}

/// Checks and creates `topics` on the coordinator shard; one outcome per topic, in order,
/// and the request's controller mutation quota once it has recorded them (a topic that passes
/// the checks takes its partitions from the quota, as in Kafka's controller, also when
/// `validate_only`; refused: THROTTLING_QUOTA_EXCEEDED).
async fn create_on_coordinator(
    coordinator: Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
    mut quota: MutationQuota,
) -> (Vec<Result<Created, AdminError>>, MutationQuota) {
    let metadata = coordinator.metadata();
    let broker = coordinator.config.clone();
    if let Err(e) = check_request_partitions(&topics, broker.default_partitions) {
        return (
            topics.iter().map(|_| Err(e.clone().into())).collect(),
            quota,
        );
    }
    let mut planned: Vec<Result<Plan, AdminError>> = topics
        .iter()
        .map(|t| plan_topic(&metadata, &broker, t))
        .collect();
    for plan in planned.iter_mut() {
        let partitions = match plan {
            Ok(plan) => u64::try_from(plan.partitions).unwrap_or(0),
            Err(_) => continue,
        };
        if !quota.record(partitions) {
            *plan = Err(AdminError::ThrottlingQuotaExceeded);
        }
    }
    let (commands, command_of): (Vec<MetadataCommand>, Vec<usize>) = planned
        .iter()
        .enumerate()
        .filter_map(|(index, plan)| {
            let plan = plan.as_ref().ok()?;
            let command = MetadataCommand::CreateTopic {
                name: topics[index].name.clone(),
                partitions: plan.partitions,
                configs: plan.configs.clone(),
                replication_factor: plan.replication_factor,
                assignments: plan.assignments.clone(),
            };
            Some((command, index))
        })
        .unzip();
    if !commands.is_empty() {
        let applied = coordinator.change_metadata(commands, validate_only).await;
        for (index, result) in command_of.into_iter().zip(applied) {
            if let Err(e) = result {
                planned[index] = Err(e.into());
            }
        }
    }
    let after = coordinator.metadata();
    let kafka = BrokerConfig::default();
    let outcomes = topics
        .iter()
        .zip(planned)
        .map(|(topic, plan)| {
            let plan = plan?;
            let topic_id = if validate_only {
                Uuid::new_v4()
            } else {
                after.topics.get(&topic.name).map_or(Uuid::nil(), |t| t.id)
            };
            Ok(Created {
                topic_id,
                partitions: plan.partitions,
                replication_factor: plan.replication_factor,
                configs: topic_config_entries(&plan.configs, &broker, &kafka),
            })
        })
        .collect();
    (outcomes, quota)
}

/// Partitions one CreateTopics request may create at most (Kafka's controller
/// `MAX_PARTITIONS_PER_BATCH`); beyond it the whole request is refused.
pub const PARTITIONS_PER_REQUEST_MAX: u64 = 10_000;

/// Kafka's `validateTotalNumberOfPartitions`: the partitions the request asks for (defaults
/// filled in, invalid counts as 0) must not pass [`PARTITIONS_PER_REQUEST_MAX`], else every
/// topic of the request gets POLICY_VIOLATION and nothing is created.
fn check_request_partitions(
    topics: &[NewTopic],
    default_partitions: i32,
) -> Result<(), MetadataError> {
    let total: u64 = topics
        .iter()
        .map(|t| {
            if !t.assignments.is_empty() {
                t.assignments.len() as u64
            } else if t.num_partitions == -1 {
                u64::try_from(default_partitions).unwrap_or(0)
            } else {
                u64::try_from(t.num_partitions).unwrap_or(0)
            }
        })
        .sum();
    if total > PARTITIONS_PER_REQUEST_MAX {
        return Err(MetadataError {
            code: kafka_protocol::error::ResponseError::PolicyViolation,
            message: "Excessively large number of partitions per request.".into(),
        });
    }
    Ok(())
}

/// Checks one topic against the current metadata and the broker's settings, as Kafka's
/// controller does, and returns its layout and config overrides. Pure. What depends on the
/// live brokers beyond the manual lists (placement, the replication factor against the
/// brokers) is checked by the metadata state machine (`ClusterMetadata::check`).
pub fn plan_topic(
    metadata: &ClusterMetadata,
    broker: &BrokerConfig,
    topic: &NewTopic,
) -> Result<Plan, AdminError> {
    let name = topic.name.as_str();
    if metadata.topics.contains_key(name) {
        return Err(AdminError::TopicAlreadyExists(name.to_string()));
    }
    validate_topic_name(name)?;
    check_creatable_topic_name(name)?;
    if let Some(existing) = colliding_topic(metadata, name) {
        return Err(AdminError::TopicCollision {
            name: name.to_string(),
            existing: existing.to_string(),
        });
    }

    let null: Vec<&str> = topic
        .configs
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    if !null.is_empty() {
        return Err(AdminError::NullTopicConfigs(null.join(",")));
    }
    let configs: BTreeMap<String, String> = topic
        .configs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    for (key, value) in &configs {
        topic_config::validate(key, value).map_err(|e| AdminError::InvalidConfig(e.0))?;
    }

    if !topic.assignments.is_empty() {
        let lists = check_assignments(topic, metadata, broker.node_id)?;
        return Ok(Plan {
            partitions: i32::try_from(lists.len())
                .map_err(|_| AdminError::PartitionCountNotPositive)?,
            configs,
            replication_factor: i16::try_from(lists[0].len()).unwrap_or(i16::MAX),
            assignments: Some(lists),
        });
    }
    if topic.replication_factor < -1 || topic.replication_factor == 0 {
        return Err(AdminError::ReplicationFactorNotPositive);
    }
    if topic.num_partitions < -1 || topic.num_partitions == 0 {
        return Err(AdminError::PartitionCountNotPositive);
    }
    Ok(Plan {
        partitions: if topic.num_partitions == -1 {
            broker.default_partitions
        } else {
            topic.num_partitions
        },
        configs,
        replication_factor: if topic.replication_factor == -1 {
            DEFAULT_REPLICATION_FACTOR
        } else {
            topic.replication_factor
        },
        assignments: None,
    })
}

/// Checks manual assignments (Kafka's rules, against the registered brokers, or only this
/// node before the quorum) and returns the replica lists by partition index.
fn check_assignments(
    topic: &NewTopic,
    metadata: &ClusterMetadata,
    node_id: i32,
) -> Result<Vec<Vec<i32>>, AdminError> {
    if topic.replication_factor != -1 {
        return Err(AdminError::AssignmentWithReplicationFactor);
    }
    if topic.num_partitions != -1 {
        return Err(AdminError::AssignmentWithPartitionCount);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut replicas: Option<usize> = None;
    for (partition, brokers) in &topic.assignments {
        if !seen.insert(*partition) {
            return Err(AdminError::InvalidReplicaAssignment(format!(
                "Found multiple manual partition assignments for partition {partition}"
            )));
        }
        check_replica_list(brokers, registered_or_local(metadata, node_id), replicas)?;
        replicas = Some(brokers.len());
    }
    let count = seen.len();
    if !seen.iter().copied().eq(0..count as i32) {
        return Err(AdminError::InvalidReplicaAssignment(
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    let mut lists: Vec<(i32, Vec<i32>)> = topic.assignments.clone();
    lists.sort_by_key(|(partition, _)| *partition);
    Ok(lists.into_iter().map(|(_, brokers)| brokers).collect())
}

/// An existing topic whose name equals `name` once '.' and '_' are treated alike (Kafka's
/// `Topic.hasCollisionChars` / `unifyCollisionChars`).
fn colliding_topic<'a>(metadata: &'a ClusterMetadata, name: &str) -> Option<&'a str> {
    let has_collision_chars = |n: &str| n.contains('.') || n.contains('_');
    if !has_collision_chars(name) {
        return None;
    }
    let unified = name.replace('.', "_");
    metadata.topics.keys().map(String::as_str).find(|existing| {
        *existing != name && has_collision_chars(existing) && existing.replace('.', "_") == unified
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::error::ResponseError as E;

    fn new_topic(name: &str, partitions: i32, factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: factor,
            assignments: Vec::new(),
            configs: Vec::new(),
        }
    }

    fn existing(names: &[&str]) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for name in names {
            metadata = metadata
                .apply(&MetadataCommand::CreateTopic {
                    name: name.to_string(),
                    partitions: 1,
                    configs: BTreeMap::new(),
                    replication_factor: 1,
                    assignments: None,
                })
                .unwrap();
        }
        metadata
    }

    /// The command a plan becomes, as `create_on_coordinator` builds it.
    fn command_of(name: &str, plan: Plan) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            partitions: plan.partitions,
            configs: plan.configs,
            replication_factor: plan.replication_factor,
            assignments: plan.assignments,
        }
    }

    /// The refusal of `topic` by the request's checks, or else by the metadata's check of
    /// its command (what the coordinator runs next).
    fn refusal_in(metadata: &ClusterMetadata, topic: &NewTopic) -> (i16, String) {
        let broker = BrokerConfig {
            default_partitions: 4,
            ..BrokerConfig::default()
        };
        let error = match plan_topic(metadata, &broker, topic) {
            Ok(plan) => AdminError::from(
                metadata
                    .check(&command_of(&topic.name, plan))
                    .expect_err("refused"),
            ),
            Err(error) => error,
        };
        (error.code(), error.to_string())
    }

    fn refusal(topic: &NewTopic) -> (i16, String) {
        refusal_in(&existing(&["taken", "a.b"]), topic)
    }

    #[test]
    fn defaults_fill_in_minus_one() {
        let broker = BrokerConfig {
            default_partitions: 4,
            ..BrokerConfig::default()
        };
        let plan = plan_topic(&existing(&[]), &broker, &new_topic("t", -1, -1)).unwrap();
        assert_eq!((plan.partitions, plan.replication_factor), (4, 1));
        assert!(plan.configs.is_empty() && plan.assignments.is_none());
        let plan = plan_topic(&existing(&[]), &broker, &new_topic("t", 7, 1)).unwrap();
        assert_eq!(plan.partitions, 7);
    }

    #[test]
    fn layout_refusals_use_kafkas_codes_and_messages() {
        assert_eq!(
            refusal(&new_topic("t", 1, 3)),
            (
                E::InvalidReplicationFactor.code(),
                "Unable to replicate the partition 3 time(s): The target replication factor of 3 \
                 cannot be reached because only 1 broker(s) are registered."
                    .to_string()
            )
        );
        assert_eq!(
            refusal(&new_topic("t", 1, 0)).0,
            E::InvalidReplicationFactor.code()
        );
        assert_eq!(
            refusal(&new_topic("t", 0, 1)).0,
            E::InvalidPartitions.code()
        );
        assert_eq!(
            refusal(&new_topic("t", -5, 1)).0,
            E::InvalidPartitions.code()
        );
        assert_eq!(
            refusal(&new_topic("taken", 1, 1)).0,
            E::TopicAlreadyExists.code()
        );
        assert_eq!(
            refusal(&new_topic("a b", 1, 1)).0,
            E::InvalidTopicException.code()
        );
        assert_eq!(
            refusal(&new_topic("a_b", 1, 1)),
            (
                E::InvalidTopicException.code(),
                "Topic 'a_b' collides with existing topic: a.b".to_string()
            )
        );
    }

    #[test]
    fn internal_and_reserved_names_are_refused_with_kafkas_codes() {
        assert_eq!(
            refusal(&new_topic("__consumer_offsets", 1, 1)),
            (
                E::InvalidRequest.code(),
                "Creation of internal topic __consumer_offsets is prohibited.".to_string()
            )
        );
        assert_eq!(
            refusal(&new_topic("__transaction_state", 1, 1)).0,
            E::InvalidRequest.code()
        );
        assert_eq!(
            refusal(&new_topic(".freshet-disk-probe", 1, 1)).0,
            E::InvalidTopicException.code()
        );
        let plan = plan_topic(
            &existing(&[]),
            &BrokerConfig::default(),
            &new_topic("_consumer_offsets", 1, 1),
        )
        .unwrap();
        assert_eq!(plan.partitions, 1);
    }

    #[test]
    fn a_request_of_more_than_10000_partitions_is_refused_whole() {
        let topics = vec![new_topic("a", 5_000, 1), new_topic("b", 5_000, 1)];
        assert!(check_request_partitions(&topics, 1).is_ok());
        let topics = vec![new_topic("a", 5_000, 1), new_topic("b", -1, 1)];
        assert!(check_request_partitions(&topics, 5_000).is_ok());
        assert_eq!(
            check_request_partitions(&topics, 5_001).unwrap_err(),
            MetadataError {
                code: E::PolicyViolation,
                message: "Excessively large number of partitions per request.".into()
            }
        );
        assert!(check_request_partitions(&[new_topic("a", 100_000, 1)], 1).is_err());
    }

    #[test]
    fn configs_are_validated_before_the_layout() {
        let mut topic = new_topic("t", 1, 5);
        topic.configs = vec![("retention.ms".into(), Some("soon".into()))];
        assert_eq!(refusal(&topic).0, E::InvalidConfig.code());
        topic.configs = vec![("retention.ms".into(), None), ("segment.ms".into(), None)];
        assert_eq!(
            refusal(&topic),
            (
                E::InvalidConfig.code(),
                "Null value not supported for topic configs: retention.ms,segment.ms".to_string()
            )
        );
        topic.configs = vec![("no.such".into(), Some("1".into()))];
        assert_eq!(
            refusal(&topic),
            (
                E::InvalidConfig.code(),
                "Unknown topic config name: no.such".to_string()
            )
        );
    }

    #[test]
    fn manual_assignments_on_this_node_are_accepted() {
        let mut topic = new_topic("t", -1, -1);
        topic.assignments = vec![(1, vec![0]), (0, vec![0]), (2, vec![0])];
        let plan = plan_topic(&existing(&[]), &BrokerConfig::default(), &topic).unwrap();
        assert_eq!(plan.partitions, 3);
        assert_eq!(plan.assignments, Some(vec![vec![0], vec![0], vec![0]]));
    }

    #[test]
    fn manual_assignments_follow_kafkas_rules() {
        let with = |partitions: i32, factor: i16, lists: Vec<(i32, Vec<i32>)>| {
            let mut topic = new_topic("t", partitions, factor);
            topic.assignments = lists;
            refusal(&topic)
        };
        assert_eq!(with(-1, 1, vec![(0, vec![0])]).0, E::InvalidRequest.code());
        assert_eq!(with(1, -1, vec![(0, vec![0])]).0, E::InvalidRequest.code());
        assert_eq!(
            with(-1, -1, vec![(0, vec![0]), (0, vec![0])]).1,
            "Found multiple manual partition assignments for partition 0"
        );
        assert_eq!(
            with(-1, -1, vec![(0, vec![1])]),
            (
                E::InvalidReplicaAssignment.code(),
                "The manual partition assignment includes broker 1, but no such broker is \
                 registered."
                    .to_string()
            )
        );
        assert_eq!(
            with(-1, -1, vec![(0, vec![0]), (2, vec![0])]).1,
            "partitions should be a consecutive 0-based integer sequence"
        );
    }

    /// In a cluster, manual lists are checked against the registered brokers (not this
    /// node's id) and a replication factor is checked against them by the metadata (up to
    /// the registered brokers, accepted).
    #[test]
    fn in_a_cluster_assignments_and_factors_follow_the_registered_brokers() {
        use crate::coordinator::metadata::BrokerRegistration;
        let mut metadata = existing(&[]);
        for node_id in [1, 2, 3] {
            metadata = metadata
                .apply(&MetadataCommand::RegisterBroker {
                    registration: BrokerRegistration {
                        node_id,
                        incarnation_id: Uuid::from_u128(node_id as u128),
                        host: "127.0.0.1".into(),
                        port: 9000 + node_id,
                        rack: None,
                        fenced: false,
                        listeners: Vec::new(),
                    },
                })
                .unwrap();
        }
        let mut topic = new_topic("t", -1, -1);
        topic.assignments = vec![(0, vec![3]), (1, vec![1])];
        let plan = plan_topic(&metadata, &BrokerConfig::default(), &topic).unwrap();
        assert_eq!(plan.assignments, Some(vec![vec![3], vec![1]]));
        metadata.check(&command_of("t", plan)).unwrap();
        topic.assignments = vec![(0, vec![0])];
        assert_eq!(
            refusal_in(&metadata, &topic),
            (
                E::InvalidReplicaAssignment.code(),
                "The manual partition assignment includes broker 0, but no such broker is \
                 registered."
                    .to_string()
            )
        );
        assert_eq!(
            refusal_in(&metadata, &new_topic("t", 1, 4)),
            (
                E::InvalidReplicationFactor.code(),
                "Unable to replicate the partition 4 time(s): The target replication factor of 4 \
                 cannot be reached because only 3 broker(s) are registered."
                    .to_string()
            )
        );
        // Replicated partitions: a factor up to the registered brokers is accepted.
        let plan = plan_topic(&metadata, &BrokerConfig::default(), &new_topic("t", 1, 3)).unwrap();
        metadata.check(&command_of("t", plan)).unwrap();
    }
}
