//! IncrementalAlterConfigs (API key 44): SET, DELETE, APPEND and SUBTRACT on single configs
//! of each resource (a topic, or this broker's dynamic configs). Decoding and the response
//! live here; the checks and the alteration are the shared body in [`super::alter`].

use std::rc::Rc;

use kafka_protocol::messages::{
    incremental_alter_configs_response, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use super::alter::{alter, error_fields, preprocess};
use crate::api::{decode, respond, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

/// IncrementalAlterConfigs: every resource answered in request order, with its error or
/// success.
pub async fn handle_incremental_alter(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: IncrementalAlterConfigsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let resources = body
        .resources
        .into_iter()
        .map(|r| {
            let configs = r
                .configs
                .into_iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.map(|v| v.to_string()),
                        c.config_operation,
                    )
                })
                .collect();
            (r.resource_type, r.resource_name, configs)
        })
        .collect();
    let mut resources = preprocess(resources, true, shard.config.node_id);
    // Kafka: ALTER_CONFIGS on the topic, group or cluster.
    super::alter::refuse_unauthorized(&mut resources, |kind, name| {
        crate::api::authz::config_refusal(
            shard,
            &request,
            crate::api::authz::Op::AlterConfigs,
            kind,
            name,
        )
    });
    let mut response = IncrementalAlterConfigsResponse::default();
    for (kind, name, result) in alter(shard, resources, body.validate_only).await {
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = kind;
        out.resource_name = name;
        (out.error_code, out.error_message) = error_fields(&result);
        response.responses.push(out);
    }
    respond(&request, &response)
}
