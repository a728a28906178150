//! FindCoordinator: on a single node every coordinator is this broker (shard 0 does the work,
//! any shard answers); in a cluster, the leader of the key's partition of Kafka's internal
//! topic (`shard::coordinators`), COORDINATOR_NOT_AVAILABLE while there is none.
//!
//! v0-3 ask for one key, v4+ for a batch (`coordinator_keys`), each key answered on its own.
//! Key types GROUP (0) and TRANSACTION (1) are known; any other type is INVALID_REQUEST, as
//! Kafka answers.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{authz, decode, str_bytes, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

/// Kafka's coordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

/// (error, node id, host, port) for one key; this broker as the request's listener
/// advertises it.
fn lookup(
    shard: &Shard,
    request: &ParsedRequest,
    key_type: i8,
    key: &str,
) -> (Option<ResponseError>, i32, String, i32) {
    let Some(kind) = CoordinatorKind::from_key_type(key_type) else {
        return (Some(ResponseError::InvalidRequest), -1, String::new(), -1);
    };
    // Kafka: DESCRIBE on the group or transactional id.
    let resource = match kind {
        CoordinatorKind::Group => authz::Res::Group,
        CoordinatorKind::Transaction => authz::Res::TransactionalId,
        CoordinatorKind::Share => authz::Res::Cluster,
    };
    if let Some(e) = authz::refusal(shard, request, authz::Op::Describe, resource, key) {
        return (Some(e), -1, String::new(), -1);
    }
    match shard.coordinator_endpoint(kind, key, &request.listener) {
        Ok((node, _, _)) if node == shard.config.node_id => {
            let local = crate::shard::routing::local_endpoint_on(&shard.config, &request.listener);
            (None, node, local.host, local.port)
        }
        Ok((node, host, port)) => (None, node, host, port),
        Err(e) => (Some(e), -1, String::new(), -1),
    }
}

/// Creates the internal topic `key_type` needs if the cluster has none yet (one attempt).
async fn prepare(shard: &Rc<Shard>, key_type: i8) {
    if let Some(kind) = CoordinatorKind::from_key_type(key_type) {
        shard.prepare_coordinators(kind).await;
    }
}

fn message(error: Option<ResponseError>) -> Option<String> {
    error.map(|e| match e {
        ResponseError::InvalidRequest => "Unknown coordinator type".to_string(),
        other => other.to_string(),
    })
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: FindCoordinatorRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = FindCoordinatorResponse::default();
    if request.api_version >= 4 {
        if !body.coordinator_keys.is_empty() {
            prepare(shard, body.key_type).await;
        }
        for key in &body.coordinator_keys {
            let (error, node, host, port) = lookup(shard, &request, body.key_type, key);
            response.coordinators.push(
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_error_code(crate::error::code(error))
                    .with_error_message(message(error).map(str_bytes)),
            );
        }
    } else {
        let key_type = if request.api_version == 0 {
            KEY_TYPE_GROUP
        } else {
            body.key_type
        };
        prepare(shard, key_type).await;
        let (error, node, host, port) = lookup(shard, &request, key_type, &body.key);
        response.error_code = crate::error::code(error);
        response.error_message = message(error).map(str_bytes);
        response.node_id = BrokerId(node);
        response.host = str_bytes(host);
        response.port = port;
    }
    super::respond(&request, &response)
}
