//! CreateAcls (v2-v3, as Kafka 4.1): new ACL bindings, stored in the cluster metadata.
//!
//! As Kafka's `AclApis.handleCreateAcls`: without an authorizer every creation is refused with
//! SECURITY_DISABLED ("No Authorizer is configured."); a caller without ALTER on the cluster
//! gets CLUSTER_AUTHORIZATION_FAILED for every creation. Each binding is checked
//! (`AclBinding::validate`: INVALID_REQUEST with Kafka's message) and created through
//! `Shard::change_metadata` on the coordinator shard, one metadata command per binding, so a
//! refused binding does not stop the others. A binding that exists already is accepted and
//! changes nothing. The answer goes out once the bindings are durable and published.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};

use super::authz::{self, Op};
use super::{decode, respond, str_bytes, Outcome};
use crate::coordinator::metadata::MetadataCommand;
use crate::protocol::header::ParsedRequest;
use crate::security::acl::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};
use crate::shard::{Shard, COORDINATOR_SHARD};

/// The binding a creation asks for.
pub fn binding_of(c: &AclCreation) -> AclBinding {
    AclBinding {
        resource_type: ResourceType::from_code(c.resource_type),
        resource_name: c.resource_name.to_string(),
        pattern_type: PatternType::from_code(c.resource_pattern_type),
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: AclOperation::from_code(c.operation),
        permission: AclPermission::from_code(c.permission_type),
    }
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: CreateAclsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let refuse_all = |code: ResponseError, message: &str| {
        let mut response = CreateAclsResponse::default();
        response.results = body
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message)))
            })
            .collect();
        respond(&request, &response)
    };
    if !shard.config.authorizer {
        return refuse_all(
            ResponseError::SecurityDisabled,
            "No Authorizer is configured.",
        );
    }
    if !authz::cluster_allowed(shard, &request, Op::Alter) {
        return refuse_all(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        );
    }
    let commands: Vec<MetadataCommand> = body
        .creations
        .iter()
        .map(|c| MetadataCommand::CreateAcl { acl: binding_of(c) })
        .collect();
    let count = commands.len();
    let results = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            c.change_metadata(commands, false).await
        })
        .await;
    let mut response = CreateAclsResponse::default();
    response.results = match results {
        Ok(results) => results
            .into_iter()
            .map(|r| match r {
                Ok(()) => AclCreationResult::default(),
                Err(e) => AclCreationResult::default()
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(e.message))),
            })
            .collect(),
        Err(_) => (0..count)
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(crate::error::coordinator_gone_code().code())
            })
            .collect(),
    };
    respond(&request, &response)
}
