//! AlterClientQuotas (API 49, v0-1 as Kafka 4.1): sets or removes quota values of user /
//! client-id entities and of IP entities (KIP-612 `connection_creation_rate`, enforced at
//! accept by `security::conn_rate`).
//!
//! Each entry becomes one `MetadataCommand::AlterClientQuota`, applied on the coordinator shard
//! (or forwarded to the active controller) with one `change_metadata` call for the request:
//! durable in the metadata log, then installed on every shard, where Produce and Fetch read it
//! (`crate::quota`). An entry Kafka refuses gets its error (INVALID_REQUEST for an empty or
//! unknown entity type, a repeated type, an `ip` entity combined with another type or naming
//! no IP address, a key the entity type does not take, or a value that is not positive or not
//! whole for a byte or connection rate) and the other entries are applied. `validate_only`
//! checks without applying. A named IP is stored in its canonical text form (`::1` for
//! `0:0::1`, `a.b.c.d` for `::ffff:a.b.c.d`), the form accepted connections are looked up by.
//!
//! Bounds: the request is bounded by `request_bytes_max`; the metadata holds at most
//! `quota::QUOTA_ENTITIES_MAX` entities.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::EntityData as RequestEntity;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};

use super::{decode, respond, str_bytes, Outcome};
use crate::coordinator::metadata::{MetadataCommand, MetadataError};
use crate::protocol::header::ParsedRequest;
use crate::quota::{EntityName, QuotaEntity, ENTITY_CLIENT_ID, ENTITY_IP, ENTITY_USER};
use crate::shard::{Shard, COORDINATOR_SHARD};

/// AlterClientQuotas: one result per entry, in request order.
pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: AlterClientQuotasRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut results: Vec<Option<Result<(), MetadataError>>> = Vec::new();
    let mut commands = Vec::new();
    let mut slots = Vec::new();
    for (index, entry) in body.entries.iter().enumerate() {
        match entity_of(&entry.entity) {
            Ok(entity) => {
                let ops = entry
                    .ops
                    .iter()
                    .map(|op| (op.key.to_string(), (!op.remove).then_some(op.value)))
                    .collect();
                commands.push(MetadataCommand::AlterClientQuota { entity, ops });
                slots.push(index);
                results.push(None);
            }
            Err(why) => results.push(Some(Err(why))),
        }
    }
    if !commands.is_empty() {
        let validate_only = body.validate_only;
        let applied = shard
            .invoke_on(COORDINATOR_SHARD, move |coordinator| async move {
                coordinator.change_metadata(commands, validate_only).await
            })
            .await;
        match applied {
            Ok(applied) => {
                for (index, result) in slots.into_iter().zip(applied) {
                    results[index] = Some(result);
                }
            }
            Err(gone) => {
                for index in slots {
                    results[index] = Some(Err(MetadataError {
                        code: ResponseError::UnknownServerError,
                        message: format!("shard {} is gone", gone.0),
                    }));
                }
            }
        }
    }
    let entries = body
        .entries
        .iter()
        .zip(results)
        .map(|(entry, result)| {
            let (code, message) = match result.unwrap_or(Ok(())) {
                Ok(()) => (0, None),
                Err(e) => (crate::error::code(Some(e.code)), Some(str_bytes(e.message))),
            };
            EntryData::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_entity(
                    entry
                        .entity
                        .iter()
                        .map(|e| {
                            EntityData::default()
                                .with_entity_type(e.entity_type.clone())
                                .with_entity_name(e.entity_name.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    respond(
        &request,
        &AlterClientQuotasResponse::default().with_entries(entries),
    )
}

/// The entity an entry names, or Kafka's INVALID_REQUEST.
fn entity_of(parts: &[RequestEntity]) -> Result<QuotaEntity, MetadataError> {
    let invalid = |message: String| MetadataError {
        code: ResponseError::InvalidRequest,
        message,
    };
    let mut entity = QuotaEntity::new(None, None);
    for part in parts {
        let name = EntityName::from_wire(part.entity_name.as_deref());
        let slot = match part.entity_type.as_str() {
            ENTITY_USER => &mut entity.user,
            ENTITY_CLIENT_ID => &mut entity.client_id,
            ENTITY_IP => {
                let name = match name {
                    EntityName::Named(text) => match text.parse::<std::net::IpAddr>() {
                        Ok(std::net::IpAddr::V6(v6)) => EntityName::Named(
                            v6.to_ipv4_mapped()
                                .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
                        ),
                        Ok(v4) => EntityName::Named(v4.to_string()),
                        Err(_) => {
                            return Err(invalid(format!(
                                "{text} is not a valid IP or resolvable host."
                            )))
                        }
                    },
                    EntityName::Default => EntityName::Default,
                };
                if entity.ip.replace(name).is_some() {
                    return Err(invalid(format!(
                        "Duplicate {ENTITY_IP} entity in the client quota entity"
                    )));
                }
                continue;
            }
            other => {
                return Err(invalid(format!(
                    "Unhandled client quota entity type: {other}"
                )))
            }
        };
        if slot.replace(name).is_some() {
            return Err(invalid(format!(
                "Duplicate {} entity in the client quota entity",
                part.entity_type.as_str()
            )));
        }
    }
    crate::quota::check_entity(&entity).map_err(invalid)?;
    Ok(entity)
}
