//! Kafka APIs: one file per API. Each decodes its request, routes the per-partition work to
//! the owning shards, and assembles the answer. Handlers do no disk I/O themselves.
//!
//! [`handle`] is the single entry point from a connection: it checks the API key and version
//! against the table in `protocol::versions` (unknown keys close the connection and unknown
//! ApiVersions versions get the v0-shaped UNSUPPORTED_VERSION answer, as Kafka does), then
//! dispatches. A request body that does not decode closes the connection, as Kafka does with
//! an `InvalidRequestException`; other connections are unaffected.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod admin;
pub mod alter_client_quotas;
pub mod api_versions;
pub mod authz;
pub mod configs;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_share_group_offsets;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod fetch_session;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_reassignments;
pub mod produce;
pub mod sasl;
pub mod share_acknowledge;
pub mod share_fetch;
pub mod share_group_describe;
pub mod share_group_heartbeat;
pub mod share_group_offsets;
pub mod share_group_state;
pub mod sync_group;
pub mod throttle;
pub mod txn_offset_commit;
pub mod user_scram_credentials;
pub mod write_txn_markers;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Encodable, Request, StrBytes};

use crate::protocol::codec::{decode_body, encode_response};
use crate::protocol::header::{
    classify_request, unsupported_api_versions_frame, Disposition, ParsedRequest,
};
use crate::shard::Shard;

/// Kafka's "authorized operations not requested" marker in Metadata and DescribeCluster.
pub const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// What the connection does with a request once handled.
pub enum Outcome {
    /// Write these pieces (a complete size-prefixed response) in order.
    Respond(Vec<Bytes>),
    /// Write nothing (Produce with acks=0).
    NoResponse,
    /// Close the connection after the responses queued before this one.
    Close(String),
    /// Write these pieces (none: Produce with acks=0), then stop reading the connection for
    /// `throttle_ms` (a client over its quota, `crate::quota`; Kafka mutes the channel).
    Throttled {
        pieces: Vec<Bytes>,
        throttle_ms: u64,
    },
}

/// Handles one request on the connection's shard, counts it (`crate::metrics`), and applies
/// the client's request quota to it (`throttle`).
pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let started = std::time::Instant::now();
    let api_key = request.api_key;
    let request_quota = throttle::RequestQuota::of(shard, &request);
    let (outcome, busy) = throttle::timed(dispatch(shard, request)).await;
    let outcome = match request_quota {
        Some(quota) => quota.apply(outcome, busy),
        None => outcome,
    };
    let failed = matches!(outcome, Outcome::Close(_));
    crate::metrics::record_request(api_key, started.elapsed(), failed);
    outcome
}

async fn dispatch(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    match classify_request(request.api_key, request.api_version) {
        Disposition::Handle => {}
        Disposition::UnsupportedApiVersions => {
            return Outcome::Respond(vec![unsupported_api_versions_frame(request.correlation_id)])
        }
        Disposition::Close => {
            return Outcome::Close(format!(
                "unsupported api key {} version {}",
                request.api_key, request.api_version
            ))
        }
    }
    let api_key = request.key();
    match api_key {
        ApiKey::ApiVersions => api_versions::handle(shard, request).await,
        ApiKey::Metadata => metadata::handle(shard, request).await,
        ApiKey::Produce => produce::handle(shard, request).await,
        ApiKey::Fetch => fetch::handle(shard, request).await,
        ApiKey::ListOffsets => list_offsets::handle(shard, request).await,
        ApiKey::InitProducerId => init_producer_id::handle(shard, request).await,
        ApiKey::FindCoordinator => find_coordinator::handle(shard, request).await,
        ApiKey::JoinGroup => join_group::handle(shard, request).await,
        ApiKey::SyncGroup => sync_group::handle(shard, request).await,
        ApiKey::Heartbeat => heartbeat::handle(shard, request).await,
        ApiKey::LeaveGroup => leave_group::handle(shard, request).await,
        ApiKey::OffsetCommit => offset_commit::handle(shard, request).await,
        ApiKey::OffsetFetch => offset_fetch::handle(shard, request).await,
        ApiKey::DescribeGroups => describe_groups::handle(shard, request).await,
        ApiKey::ListGroups => list_groups::handle(shard, request).await,
        ApiKey::DeleteGroups => delete_groups::handle(shard, request).await,
        ApiKey::OffsetDelete => offset_delete::handle(shard, request).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_group_heartbeat::handle(shard, request).await,
        ApiKey::ConsumerGroupDescribe => consumer_group_describe::handle(shard, request).await,
        ApiKey::AddPartitionsToTxn => add_partitions_to_txn::handle(shard, request).await,
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(shard, request).await,
        ApiKey::EndTxn => end_txn::handle(shard, request).await,
        ApiKey::TxnOffsetCommit => txn_offset_commit::handle(shard, request).await,
        ApiKey::DescribeProducers => describe_producers::handle(shard, request).await,
        ApiKey::DescribeTransactions => describe_transactions::handle(shard, request).await,
        ApiKey::ListTransactions => list_transactions::handle(shard, request).await,
        ApiKey::SaslHandshake => sasl::handshake(shard, request).await,
        ApiKey::SaslAuthenticate => sasl::authenticate(shard, request).await,
        ApiKey::DescribeUserScramCredentials => {
            user_scram_credentials::describe(shard, request).await
        }
        ApiKey::AlterUserScramCredentials => user_scram_credentials::alter(shard, request).await,
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(shard, request).await,
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(shard, request).await,
        ApiKey::DescribeClientQuotas => describe_client_quotas::handle(shard, request).await,
        ApiKey::AlterClientQuotas => alter_client_quotas::handle(shard, request).await,
        ApiKey::CreateAcls => create_acls::handle(shard, request).await,
        ApiKey::DescribeAcls => describe_acls::handle(shard, request).await,
        ApiKey::DeleteAcls => delete_acls::handle(shard, request).await,
        ApiKey::ShareGroupHeartbeat => share_group_heartbeat::handle(shard, request).await,
        ApiKey::ShareGroupDescribe => share_group_describe::handle(shard, request).await,
        ApiKey::ShareFetch => share_fetch::handle(shard, request).await,
        ApiKey::ShareAcknowledge => share_acknowledge::handle(shard, request).await,
        ApiKey::DescribeShareGroupOffsets => {
            describe_share_group_offsets::handle(shard, request).await
        }
        ApiKey::AlterShareGroupOffsets => share_group_offsets::alter(shard, request).await,
        ApiKey::DeleteShareGroupOffsets => share_group_offsets::delete(shard, request).await,
        ApiKey::ReadShareGroupState => share_group_state::read(shard, request).await,
        ApiKey::WriteShareGroupState => share_group_state::write(shard, request).await,
        _ => admin::handle(shard, api_key, request).await,
    }
}

/// Decodes the body of `request` as `T`, or says why the connection must close.
pub fn decode<T: Request>(request: &ParsedRequest) -> Result<T, Outcome> {
    decode_body::<T>(request.body.clone(), request.api_version).map_err(|e| {
        Outcome::Close(format!(
            "malformed {} v{} request: {e}",
            request.api_key, request.api_version
        ))
    })
}

/// Encodes `body` as the response to `request`.
pub fn respond<T: Encodable>(request: &ParsedRequest, body: &T) -> Outcome {
    let Ok(api_key) = ApiKey::try_from(request.api_key) else {
        return Outcome::Close("unknown api key".into());
    };
    match encode_response(api_key, request.api_version, request.correlation_id, body) {
        Ok(bytes) => Outcome::Respond(vec![bytes]),
        Err(e) => {
            tracing::error!(api_key = request.api_key, version = request.api_version, error = %e, "encoding response failed");
            Outcome::Close(format!("cannot encode response: {e}"))
        }
    }
}

/// A `StrBytes` from a `String`.
pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub use crate::rt::{first_of, join_all};
