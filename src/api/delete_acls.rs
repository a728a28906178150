//! DeleteAcls (v2-v3, as Kafka 4.1): removes the ACL bindings each filter matches and lists
//! them.
//!
//! As Kafka's `AclApis.handleDeleteAcls`: without an authorizer every filter gets
//! SECURITY_DISABLED; a caller without ALTER on the cluster gets CLUSTER_AUTHORIZATION_FAILED
//! for every filter; a filter with an UNKNOWN element gets INVALID_REQUEST. The filters go
//! to the active controller (`Shard::delete_acls_matching`), which finds each one's matches
//! and removes them in one metadata step, as Kafka's controller does: a binding created
//! before the delete was decided (through any node) is removed, and each removed binding is
//! listed by exactly one DeleteAcls.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};

use super::authz::{self, Op};
use super::{decode, respond, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::security::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermission, PatternType, ResourceType,
};
use crate::shard::{Shard, COORDINATOR_SHARD};

/// One filter's answer: the bindings it removed, or why it was refused.
type FilterOutcome = Result<Vec<AclBinding>, (ResponseError, String)>;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DeleteAclsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let refused = if !shard.config.authorizer {
        Some((
            ResponseError::SecurityDisabled,
            "No Authorizer is configured.",
        ))
    } else if !authz::cluster_allowed(shard, &request, Op::Alter) {
        Some((
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        ))
    } else {
        None
    };
    let filters: Vec<AclBindingFilter> = body
        .filters
        .iter()
        .map(|f| AclBindingFilter {
            resource_type: ResourceType::from_code(f.resource_type_filter),
            resource_name: f.resource_name_filter.as_ref().map(|s| s.to_string()),
            pattern_type: PatternType::from_code(f.pattern_type_filter),
            principal: f.principal_filter.as_ref().map(|s| s.to_string()),
            host: f.host_filter.as_ref().map(|s| s.to_string()),
            operation: AclOperation::from_code(f.operation),
            permission: AclPermission::from_code(f.permission_type),
        })
        .collect();
    let outcomes: Vec<FilterOutcome> = match refused {
        Some((code, message)) => filters
            .iter()
            .map(|_| Err((code, message.to_string())))
            .collect(),
        None => {
            let count = filters.len();
            shard
                .invoke_on(COORDINATOR_SHARD, move |c| {
                    delete_on_coordinator(c, filters)
                })
                .await
                .unwrap_or_else(|_| {
                    (0..count)
                        .map(|_| {
                            Err((
                                crate::error::coordinator_gone_code(),
                                "coordinator shard gone".to_string(),
                            ))
                        })
                        .collect()
                })
        }
    };
    let mut response = DeleteAclsResponse::default();
    response.filter_results = outcomes.into_iter().map(filter_result).collect();
    respond(&request, &response)
}

/// Removes each valid filter's matches in one metadata step on the active controller
/// (`Shard::delete_acls_matching`).
async fn delete_on_coordinator(
    coordinator: Rc<Shard>,
    filters: Vec<AclBindingFilter>,
) -> Vec<FilterOutcome> {
    coordinator
        .delete_acls_matching(filters)
        .await
        .into_iter()
        .map(|r| r.map_err(|e| (e.code, e.message)))
        .collect()
}

fn filter_result(outcome: FilterOutcome) -> DeleteAclsFilterResult {
    match outcome {
        Err((code, message)) => DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message))),
        Ok(acls) => DeleteAclsFilterResult::default().with_matching_acls(
            acls.into_iter()
                .map(|a| {
                    DeleteAclsMatchingAcl::default()
                        .with_resource_type(a.resource_type.code())
                        .with_resource_name(str_bytes(a.resource_name))
                        .with_pattern_type(a.pattern_type.code())
                        .with_principal(str_bytes(a.principal))
                        .with_host(str_bytes(a.host))
                        .with_operation(a.operation.code())
                        .with_permission_type(a.permission.code())
                })
                .collect(),
        ),
    }
}
