//! AlterConfigs (API key 33): replaces the whole override set of each resource (a topic, or
//! this broker's dynamic configs). Decoding and the response live here; the checks and the
//! alteration are the shared body in [`super::alter`] (every config counts as a SET).

use std::rc::Rc;

use kafka_protocol::messages::{alter_configs_response, AlterConfigsRequest, AlterConfigsResponse};

use super::alter::{alter, error_fields, op, preprocess};
use crate::api::{decode, respond, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

/// AlterConfigs: every resource answered in request order, with its error or success.
pub async fn handle_alter(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: AlterConfigsRequest = match decode(&request) {
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
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string()), op::SET))
                .collect();
            (r.resource_type, r.resource_name, configs)
        })
        .collect();
    let mut resources = preprocess(resources, false, shard.config.node_id);
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
    let mut response = AlterConfigsResponse::default();
    for (kind, name, result) in alter(shard, resources, body.validate_only).await {
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = kind;
        out.resource_name = name;
        (out.error_code, out.error_message) = error_fields(&result);
        response.responses.push(out);
    }
    respond(&request, &response)
}
