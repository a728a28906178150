//! DescribeCluster (v0-v2): the cluster id, the controller and the brokers.
//!
//! A broker answers for endpoint type BROKER (1) only, as Kafka's
//! `AuthHelper.computeDescribeClusterResponse` does: CONTROLLER (2) gets
//! MISMATCHED_ENDPOINT_TYPE and unknown types UNSUPPORTED_ENDPOINT_TYPE (v1+; v0 has no such
//! field). This single node is the only broker (never fenced, no rack) and acts as the
//! controller. Without an authorizer every operation is allowed, so when asked for, the
//! cluster's authorized operations are all those Kafka defines on the CLUSTER resource.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::admin::AdminError;
use super::AUTHORIZED_OPERATIONS_OMITTED;
use super::{decode, respond, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

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
    let config = &shard.config;
    let node_id = BrokerId(config.node_id);
    let (host, port) = config
        .advertised_host_port()
        .unwrap_or_else(|_| ("localhost".into(), 9092));
    let mut broker = DescribeClusterBroker::default();
    broker.broker_id = node_id;
    broker.host = str_bytes(host);
    broker.port = port;
    broker.rack = None;
    broker.is_fenced = false;
    response.brokers = vec![broker];
    response.cluster_id = str_bytes(shard.metadata().cluster_id.clone());
    response.controller_id = node_id;
    response.endpoint_type = ENDPOINT_BROKER;
    response.cluster_authorized_operations = if body.include_cluster_authorized_operations {
        all_cluster_operations()
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    respond(&request, &response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cluster_operation_is_authorized() {
        // Bits 5, 7..=12: what a Kafka broker without an authorizer reports.
        assert_eq!(all_cluster_operations(), 0b1_1111_1010_0000);
    }
}
