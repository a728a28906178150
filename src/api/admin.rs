//! Admin APIs (topics, configs, records, cluster and log-dir descriptions): being built.

use std::rc::Rc;

use kafka_protocol::messages::ApiKey;

use super::Outcome;
use crate::protocol::header::ParsedRequest;
use crate::shard::Shard;

pub async fn handle(_shard: &Rc<Shard>, api_key: ApiKey, _request: ParsedRequest) -> Outcome {
    Outcome::Close(format!("{api_key:?} is not implemented yet"))
}
