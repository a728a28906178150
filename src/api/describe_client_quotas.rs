//! DescribeClientQuotas (API 48, v0-1 as Kafka 4.1): the quotas of the entities a filter
//! matches, from this node's installed metadata (as Kafka answers from its metadata image).
//!
//! Filter, as Kafka's `ClientQuotasImage.describe`: each component names an entity type once;
//! MATCH_TYPE_EXACT (0) matches that name, MATCH_TYPE_DEFAULT (1) the `<default>` entity,
//! MATCH_TYPE_SPECIFIED (2) any entity of that type (default included); with `strict`, an
//! entity must have no other types. A malformed filter is INVALID_REQUEST for the whole
//! request; an unknown match type UNSUPPORTED_VERSION; an `ip` component may not be combined
//! with `user` or `client-id` ones (Kafka's message). IP entities (KIP-612) are listed with
//! their canonical address text.
//!
//! Bounds: the answer lists at most `quota::QUOTA_ENTITIES_MAX` entities (all the metadata
//! may hold).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::{decode, respond, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::quota::{EntityName, QuotaEntity, ENTITY_CLIENT_ID, ENTITY_IP, ENTITY_USER};
use crate::shard::Shard;

/// How a filter component matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    Exact(String),
    Default,
    Specified,
}

/// DescribeClientQuotas.
pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeClientQuotasRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let filter = match filter_of(&body) {
        Ok(filter) => filter,
        Err((code, message)) => {
            let response = DescribeClientQuotasResponse::default()
                .with_error_code(crate::error::code(Some(code)))
                .with_error_message(Some(str_bytes(message)))
                .with_entries(None);
            return respond(&request, &response);
        }
    };
    let metadata = shard.metadata();
    let entries = metadata
        .client_quotas
        .iter()
        .filter(|(entity, _)| matches(entity, &filter, body.strict))
        .map(|(entity, values)| {
            let mut parts = Vec::new();
            if let Some(u) = &entity.user {
                parts.push(entity_data(ENTITY_USER, u));
            }
            if let Some(c) = &entity.client_id {
                parts.push(entity_data(ENTITY_CLIENT_ID, c));
            }
            if let Some(i) = &entity.ip {
                parts.push(entity_data(ENTITY_IP, i));
            }
            EntryData::default().with_entity(parts).with_values(
                values
                    .iter()
                    .map(|(k, v)| {
                        ValueData::default()
                            .with_key(str_bytes(k.clone()))
                            .with_value(v.0)
                    })
                    .collect(),
            )
        })
        .collect();
    respond(
        &request,
        &DescribeClientQuotasResponse::default().with_entries(Some(entries)),
    )
}

fn entity_data(entity_type: &str, name: &EntityName) -> EntityData {
    EntityData::default()
        .with_entity_type(str_bytes(entity_type))
        .with_entity_name(name.to_wire().map(str_bytes))
}

/// The filter's components by entity type, or the error of the whole request.
fn filter_of(
    body: &DescribeClientQuotasRequest,
) -> Result<Vec<(String, Match)>, (ResponseError, String)> {
    let invalid = |m: String| (ResponseError::InvalidRequest, m);
    let mut filter: Vec<(String, Match)> = Vec::new();
    for c in &body.components {
        let entity_type = c.entity_type.to_string();
        if filter.iter().any(|(t, _)| *t == entity_type) {
            return Err(invalid(format!(
                "Entity type {entity_type} cannot appear more than once in the filter."
            )));
        }
        let m =
            match (c.match_type, &c._match) {
                (0, Some(name)) => Match::Exact(name.to_string()),
                (0, None) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                    ))
                }
                (1, None) => Match::Default,
                (1, Some(_)) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                            .into(),
                    ))
                }
                (2, None) => Match::Specified,
                (2, Some(_)) => return Err(invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                        .into(),
                )),
                (other, _) => {
                    return Err((
                        ResponseError::UnsupportedVersion,
                        format!("Unknown match type {other}"),
                    ))
                }
            };
        filter.push((entity_type, m));
    }
    let has = |t: &str| filter.iter().any(|(x, _)| x == t);
    if has(ENTITY_IP) && (has(ENTITY_USER) || has(ENTITY_CLIENT_ID)) {
        return Err(invalid("Invalid entity filter component combination, IP filter component should not be used with user or clientId filter component.".into()));
    }
    Ok(filter)
}

/// Does `entity` pass `filter` (Kafka's `ClientQuotasImage.matches`)?
fn matches(entity: &QuotaEntity, filter: &[(String, Match)], strict: bool) -> bool {
    let part = |t: &str| match t {
        ENTITY_USER => entity.user.as_ref(),
        ENTITY_CLIENT_ID => entity.client_id.as_ref(),
        ENTITY_IP => entity.ip.as_ref(),
        _ => None,
    };
    let types = usize::from(entity.user.is_some())
        + usize::from(entity.client_id.is_some())
        + usize::from(entity.ip.is_some());
    if strict && types != filter.len() {
        return false;
    }
    filter.iter().all(|(t, m)| match (part(t), m) {
        (None, _) => false,
        (Some(EntityName::Named(n)), Match::Exact(want)) => n == want,
        (Some(EntityName::Default), Match::Default) => true,
        (Some(_), Match::Specified) => true,
        _ => false,
    })
}
