//! The handlers' one door to the authorizer: who the caller is (the request's principal and
//! the client's IP), the broker's authorizer settings (`BrokerConfig::authorizer`,
//! `super_users`, `allow_everyone_if_no_acl_found`) and the ACLs of the shard's current
//! metadata snapshot, given to the pure `security::authorizer`.
//!
//! Each handler asks here with the operation and resource Kafka's `KafkaApis` checks for its
//! API, and answers the refusal with [`crate::error::authorization_failed_code`] where Kafka
//! does. With the authorizer off (the default) every check is a field read and `true`.

use kafka_protocol::error::ResponseError;

use crate::protocol::header::ParsedRequest;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::{Authorizer, Caller};
use crate::shard::Shard;

pub use crate::security::acl::AclOperation as Op;
pub use crate::security::acl::ResourceType as Res;

/// The caller of `request`: its principal, and its IP address without the leading `/` of
/// `client_host`.
pub fn caller(request: &ParsedRequest) -> Caller<'_> {
    Caller {
        principal: &request.principal,
        host: request.client_host.trim_start_matches('/'),
    }
}

fn authorizer(shard: &Shard) -> Authorizer<'_> {
    Authorizer {
        enabled: shard.config.authorizer,
        super_users: &shard.config.super_users,
        allow_everyone_if_no_acl_found: shard.config.allow_everyone_if_no_acl_found,
    }
}

/// May the caller of `request` do `op` on `(resource_type, name)`?
pub fn allowed(
    shard: &Shard,
    request: &ParsedRequest,
    op: AclOperation,
    resource_type: ResourceType,
    name: &str,
) -> bool {
    let authorizer = authorizer(shard);
    if !authorizer.enabled {
        return true;
    }
    let metadata = shard.metadata();
    authorizer.authorize(&metadata.acls, caller(request), op, resource_type, name)
}

/// `None` when allowed, else the authorization error Kafka gives for that resource type.
pub fn refusal(
    shard: &Shard,
    request: &ParsedRequest,
    op: AclOperation,
    resource_type: ResourceType,
    name: &str,
) -> Option<ResponseError> {
    (!allowed(shard, request, op, resource_type, name))
        .then(|| crate::error::authorization_failed_code(resource_type))
}

/// May the caller do `op` on the cluster?
pub fn cluster_allowed(shard: &Shard, request: &ParsedRequest, op: AclOperation) -> bool {
    allowed(shard, request, op, ResourceType::Cluster, CLUSTER_NAME)
}

/// Kafka's `authorizeByResourceType`: may the caller do `op` on some resource of the type?
pub fn allowed_on_some(
    shard: &Shard,
    request: &ParsedRequest,
    op: AclOperation,
    resource_type: ResourceType,
) -> bool {
    let authorizer = authorizer(shard);
    if !authorizer.enabled {
        return true;
    }
    let metadata = shard.metadata();
    authorizer.authorize_by_resource_type(&metadata.acls, caller(request), op, resource_type)
}

/// The authorized-operations bit set of a resource for the caller (every supported operation
/// with the authorizer off, as Kafka without an authorizer).
pub fn operations(
    shard: &Shard,
    request: &ParsedRequest,
    resource_type: ResourceType,
    name: &str,
) -> i32 {
    let metadata = shard.metadata();
    authorizer(shard).authorized_operations(&metadata.acls, caller(request), resource_type, name)
}

/// The cluster's authorized operations as Metadata and DescribeCluster report them: 0 without
/// DESCRIBE on the cluster (Kafka), else the operations allowed.
pub fn cluster_operations(shard: &Shard, request: &ParsedRequest) -> i32 {
    if !cluster_allowed(shard, request, AclOperation::Describe) {
        return 0;
    }
    operations(shard, request, ResourceType::Cluster, CLUSTER_NAME)
}

/// The ACL resource behind a config resource (DescribeConfigs/AlterConfigs' resource type
/// ids): a topic is itself, a group itself, a broker or broker logger (or client metrics) the
/// cluster, as Kafka's `ConfigAdminManager` authorizes them.
pub fn config_resource(config_type: i8, name: &str) -> (ResourceType, &str) {
    use crate::api::admin::resource_type as config;
    match config_type {
        config::TOPIC => (ResourceType::Topic, name),
        config::GROUP => (ResourceType::Group, name),
        _ => (ResourceType::Cluster, CLUSTER_NAME),
    }
}

/// May the caller do `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on this config resource? `None`
/// if so, else the resource type whose authorization failed.
pub fn config_refusal(
    shard: &Shard,
    request: &ParsedRequest,
    op: AclOperation,
    config_type: i8,
    name: &str,
) -> Option<ResourceType> {
    let (resource_type, name) = config_resource(config_type, name);
    (!allowed(shard, request, op, resource_type, name)).then_some(resource_type)
}
