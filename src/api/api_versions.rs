//! ApiVersions: which APIs and versions this broker speaks.
//!
//! The list comes from `protocol::versions`, the one table of what is implemented. A client
//! asking with a version newer than we know gets Kafka's fallback: a v0-shaped response with
//! UNSUPPORTED_VERSION and our list, from which it picks a version both sides know.

use std::rc::Rc;

use kafka_protocol::messages::ApiVersionsRequest;

use super::{decode, Outcome};
use crate::protocol::header::ParsedRequest;
use crate::protocol::versions::api_versions_response;
use crate::shard::Shard;

pub async fn handle(_shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    // The body (client software name/version, v3+) is informational only; decoding it still
    // rejects garbage the way Kafka does.
    if let Err(outcome) = decode::<ApiVersionsRequest>(&request) {
        return outcome;
    }
    let body = api_versions_response(request.api_version);
    super::respond(&request, &body)
}
