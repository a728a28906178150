//! DescribeConfigs (API key 32): the configs of topics and of this broker (or the
//! cluster-wide dynamic defaults), with their sources and, when asked for, synonyms. The
//! descriptions come from the catalogue ([`super::catalogue`]); this file decodes the
//! request, picks the resource, filters the asked keys and builds the response.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::catalogue::{
    absolute_data_dir, broker_config_entries, default_broker_entries, topic_config_entries_with,
    ConfigEntry, DynamicConfigs,
};
use super::unsupported_resource;
use crate::api::admin::{resource_type, AdminError};
use crate::api::{decode, respond, str_bytes, Outcome};
use crate::config::BrokerConfig;
use crate::coordinator::metadata::{validate_topic_name, ClusterMetadata};
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

/// DescribeConfigs: every resource answered in request order, with its configs or its error.
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
        // Kafka: DESCRIBE_CONFIGS on the topic, group or cluster.
        let denied = crate::api::authz::config_refusal(
            shard,
            &request,
            crate::api::authz::Op::DescribeConfigs,
            resource.resource_type,
            resource.resource_name.as_str(),
        );
        let described = match denied {
            Some(resource_type) => Err(AdminError::Unauthorized(resource_type)),
            None => describe_resource(
                &metadata,
                &shard.config,
                &kafka,
                &log_dir,
                resource.resource_type,
                resource.resource_name.as_str(),
            ),
        };
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
        // Any group id, with or without members (as Kafka): its dynamic configs
        // (DYNAMIC_GROUP_CONFIG), else the broker-wide values (DEFAULT_CONFIG).
        resource_type::GROUP => Ok(crate::coordinator::group_config::describe(
            metadata.group_configs.get(name),
            broker,
        )
        .into_iter()
        .map(|(name, value, dynamic, config_type)| ConfigEntry {
            name: name.to_string(),
            value,
            source: if dynamic {
                super::catalogue::source::DYNAMIC_GROUP_CONFIG
            } else {
                super::catalogue::source::DEFAULT_CONFIG
            },
            read_only: false,
            config_type,
            synonyms: Vec::new(),
        })
        .collect()),
        other => Err(unsupported_resource(other)),
    }
}

/// One described config as the response carries it (synonyms only when asked for).
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
