//! FindCoordinator: every group's coordinator is this broker (one node; shard 0 does the
//! work, any shard answers).
//!
//! v0-3 ask for one key, v4+ for a batch (`coordinator_keys`). Key types GROUP (0) and
//! TRANSACTION (1) get this node; any other type is INVALID_REQUEST, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{decode, str_bytes, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

/// Kafka's coordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// (error, node id, host, port) for one key.
fn lookup(shard: &Shard, key_type: i8) -> (Option<ResponseError>, i32, String, i32) {
    match key_type {
        KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION => {
            let (host, port) = shard
                .config
                .advertised_host_port()
                .unwrap_or_else(|_| ("localhost".into(), 9092));
            (None, shard.config.node_id, host, port)
        }
        _ => (Some(ResponseError::InvalidRequest), -1, String::new(), -1),
    }
}

fn message(error: Option<ResponseError>) -> Option<String> {
    error.map(|_| "Unknown coordinator type".to_string())
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: FindCoordinatorRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = FindCoordinatorResponse::default();
    if request.api_version >= 4 {
        for key in &body.coordinator_keys {
            let (error, node, host, port) = lookup(shard, body.key_type);
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
        let (error, node, host, port) = lookup(shard, key_type);
        response.error_code = crate::error::code(error);
        response.error_message = message(error).map(str_bytes);
        response.node_id = BrokerId(node);
        response.host = str_bytes(host);
        response.port = port;
    }
    super::respond(&request, &response)
}
