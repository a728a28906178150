//! Decoding the body of any request, with its type chosen at run time from the api key.
//!
//! The server decodes each body as the type its handler expects; this entry point exists for
//! the fuzz targets (`fuzz/`) and their regression tests, which feed arbitrary (api key,
//! version, body) triples through exactly the same path ([`super::codec::decode_body`]: the
//! pre-scan, the memory bound, the crate's decoder under `catch_unwind`). It covers every
//! request type of the `kafka-protocol` crate, so an API gains fuzzing the day it gains a
//! pre-scan schema (types without one are refused by `decode_body` at once).

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Request;

use super::codec::decode_body;
use super::ProtocolError;

macro_rules! decode_by_key {
    ($key:expr, $version:expr, $body:expr; $($t:ident,)*) => {
        match $key {
            $(k if k == <$t as Request>::KEY => decode_body::<$t>($body, $version).map(|_| ()),)*
            _ => Err(ProtocolError::Malformed {
                message: "request",
                version: $version,
                reason: format!("unknown api key {}", $key),
            }),
        }
    };
}

/// Decodes `body` as the request type of `api_key` at `version` and drops the result.
/// Never panics or aborts, whatever the bytes (the property the fuzz targets check).
pub fn decode_request_body(api_key: i16, version: i16, body: Bytes) -> Result<(), ProtocolError> {
    decode_by_key!(api_key, version, body; ProduceRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, FindCoordinatorRequest, JoinGroupRequest, HeartbeatRequest, LeaveGroupRequest, SyncGroupRequest, DescribeGroupsRequest, ListGroupsRequest, SaslHandshakeRequest, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DeleteRecordsRequest, InitProducerIdRequest, OffsetForLeaderEpochRequest, AddPartitionsToTxnRequest, AddOffsetsToTxnRequest, EndTxnRequest, WriteTxnMarkersRequest, TxnOffsetCommitRequest, DescribeAclsRequest, CreateAclsRequest, DeleteAclsRequest, DescribeConfigsRequest, AlterConfigsRequest, AlterReplicaLogDirsRequest, DescribeLogDirsRequest, SaslAuthenticateRequest, CreatePartitionsRequest, CreateDelegationTokenRequest, RenewDelegationTokenRequest, ExpireDelegationTokenRequest, DescribeDelegationTokenRequest, DeleteGroupsRequest, ElectLeadersRequest, IncrementalAlterConfigsRequest, AlterPartitionReassignmentsRequest, ListPartitionReassignmentsRequest, OffsetDeleteRequest, DescribeClientQuotasRequest, AlterClientQuotasRequest, DescribeUserScramCredentialsRequest, AlterUserScramCredentialsRequest, VoteRequest, BeginQuorumEpochRequest, EndQuorumEpochRequest, DescribeQuorumRequest, AlterPartitionRequest, UpdateFeaturesRequest, EnvelopeRequest, FetchSnapshotRequest, DescribeClusterRequest, DescribeProducersRequest, BrokerRegistrationRequest, BrokerHeartbeatRequest, UnregisterBrokerRequest, DescribeTransactionsRequest, ListTransactionsRequest, AllocateProducerIdsRequest, ConsumerGroupHeartbeatRequest, ConsumerGroupDescribeRequest, ControllerRegistrationRequest, GetTelemetrySubscriptionsRequest, PushTelemetryRequest, AssignReplicasToDirsRequest, ListConfigResourcesRequest, DescribeTopicPartitionsRequest, ShareGroupHeartbeatRequest, ShareGroupDescribeRequest, ShareFetchRequest, ShareAcknowledgeRequest, AddRaftVoterRequest, RemoveRaftVoterRequest, UpdateRaftVoterRequest, InitializeShareGroupStateRequest, ReadShareGroupStateRequest, WriteShareGroupStateRequest, DeleteShareGroupStateRequest, ReadShareGroupStateSummaryRequest, DescribeShareGroupOffsetsRequest, AlterShareGroupOffsetsRequest, DeleteShareGroupOffsetsRequest, )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_requests_decode_and_unknown_keys_are_refused() {
        // Metadata v1: a topic array of length -1 (null) asks for all topics.
        let metadata = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
        assert!(decode_request_body(ApiKey::Metadata as i16, 1, metadata).is_ok());
        assert!(decode_request_body(9999, 0, Bytes::new()).is_err());
        assert!(decode_request_body(-1, 0, Bytes::new()).is_err());
    }
}
