//! DescribeAcls (v2-v3, as Kafka 4.1): the ACL bindings one filter matches, grouped by
//! resource pattern.
//!
//! As Kafka's `AclApis.handleDescribeAcls`: without an authorizer the answer is
//! SECURITY_DISABLED; a caller without DESCRIBE on the cluster gets
//! CLUSTER_AUTHORIZATION_FAILED; a filter with an UNKNOWN element gets INVALID_REQUEST. The
//! bindings are read from the local shard's metadata snapshot (every change reached it before
//! it was acknowledged). The answer is bounded by `security::acl::ACLS_MAX` bindings.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};

use super::authz::{self, Op};
use super::{decode, respond, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::security::acl::{
    AclBindingFilter, AclOperation, AclPermission, PatternType, ResourceType,
};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeAclsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let error = |code: ResponseError, message: String| {
        let response = DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)));
        respond(&request, &response)
    };
    if !shard.config.authorizer {
        return error(
            ResponseError::SecurityDisabled,
            "No Authorizer is configured.".into(),
        );
    }
    if !authz::cluster_allowed(shard, &request, Op::Describe) {
        return error(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.".into(),
        );
    }
    let filter = AclBindingFilter {
        resource_type: ResourceType::from_code(body.resource_type_filter),
        resource_name: body.resource_name_filter.map(|s| s.to_string()),
        pattern_type: PatternType::from_code(body.pattern_type_filter),
        principal: body.principal_filter.map(|s| s.to_string()),
        host: body.host_filter.map(|s| s.to_string()),
        operation: AclOperation::from_code(body.operation),
        permission: AclPermission::from_code(body.permission_type),
    };
    if let Err(e) = filter.validate() {
        return error(ResponseError::InvalidRequest, e.0);
    }
    let metadata = shard.metadata();
    let mut resources: BTreeMap<(i8, &str, i8), Vec<AclDescription>> = BTreeMap::new();
    for acl in metadata.acls.iter().filter(|a| filter.matches(a)) {
        let key = (
            acl.resource_type.code(),
            acl.resource_name.as_str(),
            acl.pattern_type.code(),
        );
        resources.entry(key).or_default().push(
            AclDescription::default()
                .with_principal(str_bytes(acl.principal.clone()))
                .with_host(str_bytes(acl.host.clone()))
                .with_operation(acl.operation.code())
                .with_permission_type(acl.permission.code()),
        );
    }
    let mut response = DescribeAclsResponse::default();
    response.resources = resources
        .into_iter()
        .map(|((rt, name, pt), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt)
                .with_resource_name(str_bytes(name))
                .with_pattern_type(pt)
                .with_acls(acls)
        })
        .collect();
    respond(&request, &response)
}
