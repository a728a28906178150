//! DescribeCluster (v0-v2): the cluster id, the controller and the brokers.
//!
//! A broker answers for endpoint type BROKER (1) only, as Kafka's
//! `AuthHelper.computeDescribeClusterResponse` does: CONTROLLER (2) gets
//! MISMATCHED_ENDPOINT_TYPE and unknown types UNSUPPORTED_ENDPOINT_TYPE (v1+; v0 has no such
//! field). The brokers are the registered unfenced ones, and from v2, when the request sets
//! `include_fenced_brokers` (KIP-1073), the fenced ones too with `is_fenced`; before any broker
//! registered, this node alone. The controller is the active controller
//! (`shard::routing::controller_id`). Without an authorizer every operation is allowed, so when asked for, the
//! cluster's authorized operations are all those Kafka defines on the CLUSTER resource.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::admin::AdminError;
use super::AUTHORIZED_OPERATIONS_OMITTED;
use super::{decode, respond, str_bytes, Outcome};
use crate::coordinator::metadata::ClusterMetadata;
use crate::protocol::header::ParsedRequest;
use crate::shard::{routing, Shard};

/// Endpoint types (Kafka's `EndpointType` ids).
const ENDPOINT_BROKER: i8 = 1;
const ENDPOINT_CONTROLLER: i8 = 2;

/// The ACL operations Kafka supports on the CLUSTER resource (`AclEntry.supportedOperations`),
/// by their `AclOperation` codes: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS, IDEMPOTENT_WRITE.
const CLUSTER_OPERATIONS: [u8; 7] = [5, 7, 8, 9, 10, 11, 12];

/// The authorized-operations bit field with every cluster operation allowed (also what
/// Metadata v8-v10 should report when asked for the cluster's authorized operations).
pub fn all_cluster_operations() -> i32 {
    CLUSTER_OPERATIONS
        .iter()
        .fold(0, |bits, op| bits | (1 << op))
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeClusterRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = DescribeClusterResponse::default();
    let refusal = match body.endpoint_type {
        ENDPOINT_BROKER => None,
        ENDPOINT_CONTROLLER => Some(AdminError::MismatchedEndpointType),
        other => Some(AdminError::UnsupportedEndpointType(other)),
    };
    if let Some(error) = refusal {
        response.error_code = error.code();
        response.error_message = error.message();
        return respond(&request, &response);
    }
    let local = routing::local_endpoint_on(&shard.config, &request.listener);
    let include_fenced = request.api_version >= 2 && body.include_fenced_brokers;
    response.brokers = brokers(&shard.metadata(), &local, include_fenced);
    response.cluster_id = str_bytes(shard.metadata().cluster_id.clone());
    response.controller_id = BrokerId(routing::controller_id(&shard.config));
    response.endpoint_type = ENDPOINT_BROKER;
    response.cluster_authorized_operations = if body.include_cluster_authorized_operations {
        super::authz::cluster_operations(shard, &request)
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    respond(&request, &response)
}

/// The brokers listed: the unfenced ones, and the fenced ones too when `include_fenced`.
fn brokers(
    metadata: &ClusterMetadata,
    local: &routing::BrokerEndpoint,
    include_fenced: bool,
) -> Vec<DescribeClusterBroker> {
    routing::all_brokers(metadata, local)
        .into_iter()
        .filter(|b| include_fenced || !b.fenced)
        .map(|b| {
            let mut out = DescribeClusterBroker::default();
            out.broker_id = BrokerId(b.node_id);
            out.host = str_bytes(b.host);
            out.port = b.port;
            out.rack = b.rack.map(str_bytes);
            out.is_fenced = b.fenced;
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::routing::tests::three_brokers;

    /// 3 registered brokers, 2 fenced: listed without it, or with it and `is_fenced` when the
    /// request asks for fenced brokers.
    #[test]
    fn fenced_brokers_are_listed_only_when_asked_for() {
        let metadata = three_brokers();
        let local = routing::local_endpoint(&crate::config::BrokerConfig::default());
        let listed = |include| {
            brokers(&metadata, &local, include)
                .into_iter()
                .map(|b| {
                    let rack = b.rack.map(|r| r.to_string());
                    (b.broker_id.0, b.host.to_string(), b.port, rack, b.is_fenced)
                })
                .collect::<Vec<_>>()
        };
        // This node (0, the default config) as configured, the others as registered.
        let live = vec![
            (0, local.host.clone(), local.port, None, false),
            (1, "host1".to_string(), 9001, Some("b".to_string()), false),
        ];
        assert_eq!(listed(false), live);
        let mut all = live;
        all.push((2, "host2".to_string(), 9002, Some("c".to_string()), true));
        assert_eq!(listed(true), all);
        let mut empty = metadata.clone();
        empty.brokers.clear();
        let alone = brokers(&empty, &local, true);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].broker_id.0, local.node_id);
    }

    #[test]
    fn every_cluster_operation_is_authorized() {
        // Bits 5, 7..=12: what a Kafka broker without an authorizer reports.
        assert_eq!(all_cluster_operations(), 0b1_1111_1010_0000);
    }
}
