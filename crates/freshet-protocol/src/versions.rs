//! The APIs Freshet serves, with the version ranges it advertises in ApiVersions.
//!
//! The table is the single source of truth: [`crate::header::classify_request`] uses it
//! to accept or refuse a request, and [`api_versions_response`] advertises exactly it. Adding an
//! API is one line here (plus its handler, and a pre-scan schema in
//! [`crate::codec`]; a test fails until both exist).
//!
//! The ranges are Kafka 4.1's (the kafka-protocol 0.18 crate is generated from Kafka 4.1's
//! message specs; `ApiKey::valid_versions()` agrees with every range here except Fetch, whose v18
//! is `latestVersionUnstable` in 4.1 and so not advertised by a 4.1 broker, and
//! ListTransactions, whose v2 regex filter Freshet does not serve). Kafka 4.0 removed the
//! old versions (KIP-896): Produce starts at 3, Fetch at 4, ListOffsets at 1, CreateTopics at 2,
//! DeleteTopics at 1, DescribeConfigs at 1, DescribeLogDirs at 1.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// One API the broker serves and the versions it advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSupport {
    /// The API.
    pub key: ApiKey,
    /// Lowest version served.
    pub min: i16,
    /// Highest version served.
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ApiSupport {
    ApiSupport { key, min, max }
}

/// Every API the broker implements, in api-key order.
pub const SUPPORTED_APIS: &[ApiSupport] = &[
    api(ApiKey::Produce, 3, 13),
    api(ApiKey::Fetch, 4, 17),
    api(ApiKey::ListOffsets, 1, 10),
    api(ApiKey::Metadata, 0, 13),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 6),
    api(ApiKey::ListGroups, 0, 5),
    // On SASL listeners served by the connection before authentication; elsewhere (and
    // after authentication) answered with ILLEGAL_SASL_STATE, as Kafka does.
    api(ApiKey::SaslHandshake, 0, 1),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::InitProducerId, 0, 5),
    // Kafka 4.1 serves v2-4 (KIP-896 removed v0-1).
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::AddPartitionsToTxn, 0, 5),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::EndTxn, 0, 5),
    // Broker to broker: a transaction coordinator's markers (v0 removed in Kafka 4.0).
    api(ApiKey::WriteTxnMarkers, 1, 1),
    api(ApiKey::TxnOffsetCommit, 0, 5),
    // ACLs (Kafka 4.1 serves v2-v3: KIP-896 removed v0-v1).
    api(ApiKey::DescribeAcls, 2, 3),
    api(ApiKey::CreateAcls, 2, 3),
    api(ApiKey::DeleteAcls, 2, 3),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::DescribeLogDirs, 1, 4),
    // As SaslHandshake.
    api(ApiKey::SaslAuthenticate, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteGroups, 0, 2),
    // Preferred and unclean leader elections, decided by the active controller.
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    // Partition reassignment (KIP-455), decided by the active controller.
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
    api(ApiKey::OffsetDelete, 0, 0),
    // Client quotas, stored in the metadata log (`quota`).
    api(ApiKey::DescribeClientQuotas, 0, 1),
    api(ApiKey::AlterClientQuotas, 0, 1),
    // SCRAM users (issue 15), in the metadata log.
    api(ApiKey::DescribeUserScramCredentials, 0, 0),
    api(ApiKey::AlterUserScramCredentials, 0, 0),
    // The metadata quorum (`__cluster_metadata` partition 0), answered by the active controller.
    api(ApiKey::DescribeQuorum, 0, 2),
    api(ApiKey::DescribeCluster, 0, 2),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::DescribeTransactions, 0, 0),
    // Kafka 4.1 serves v2 (a transactional id regex filter); not served yet.
    api(ApiKey::ListTransactions, 0, 1),
    api(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    api(ApiKey::ConsumerGroupDescribe, 0, 1),
    api(ApiKey::DescribeTopicPartitions, 0, 0),
    // Share groups (KIP-932): Kafka 4.2 serves v1 (v0 was early access).
    api(ApiKey::ShareGroupHeartbeat, 1, 1),
    api(ApiKey::ShareGroupDescribe, 1, 1),
    api(ApiKey::ShareFetch, 1, 1),
    api(ApiKey::ShareAcknowledge, 1, 1),
    // Between brokers: a share-partition leader to its share coordinator (the table is
    // sorted by api key).
    api(ApiKey::ReadShareGroupState, 0, 0),
    api(ApiKey::WriteShareGroupState, 0, 0),
    // Kafka 4.2 serves v0-1 (v1 adds the lag); the crate knows v0.
    api(ApiKey::DescribeShareGroupOffsets, 0, 0),
    api(ApiKey::AlterShareGroupOffsets, 0, 0),
    api(ApiKey::DeleteShareGroupOffsets, 0, 0),
];

/// The `(min, max)` versions served for `api_key`, or `None` if the broker does not serve it.
pub fn supported_range(api_key: i16) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|a| a.key as i16 == api_key)
        .map(|a| (a.min, a.max))
}

/// The ApiVersions answer for a request of `version` (a supported one: for too-new versions the
/// server sends [`crate::header::unsupported_api_versions_frame`] instead).
///
/// Error NONE, throttle 0, every API of [`SUPPORTED_APIS`]. For v3+ Kafka also sends the
/// supported and finalized features; a broker without feature flags sends empty lists and
/// finalized-features epoch -1, which clients accept (librdkafka 2.12 uses the KIP-848 consumer
/// protocol from the ConsumerGroupHeartbeat entry alone, without the `group.version` feature;
/// transactions v2 are not served yet).
pub fn api_versions_response(version: i16) -> ApiVersionsResponse {
    assert!(version >= 0, "ApiVersions version {version}");
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min)
                .with_max_version(a.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_throttle_time_ms(0)
        .with_api_keys(api_keys)
        .with_supported_features(Vec::new())
        .with_finalized_features_epoch(-1)
        .with_finalized_features(Vec::new())
        .with_zk_migration_ready(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_response;
    use bytes::Buf;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Decodable;

    /// Every advertised range lies within what the crate (Kafka 4.1's specs) can decode, and the
    /// table is in api-key order without duplicates.
    #[test]
    fn table_is_within_the_crate_ranges_and_sorted() {
        for a in SUPPORTED_APIS {
            let valid = a.key.valid_versions();
            assert!(
                valid.min <= a.min && a.min <= a.max && a.max <= valid.max,
                "{:?}",
                a.key
            );
        }
        assert!(SUPPORTED_APIS
            .windows(2)
            .all(|w| (w[0].key as i16) < (w[1].key as i16)));
    }

    /// Kafka 4 baselines (KIP-896) and 4.1's highest stable versions of the main APIs.
    #[test]
    fn kafka_4_1_ranges() {
        assert_eq!(supported_range(ApiKey::Produce as i16), Some((3, 13)));
        assert_eq!(supported_range(ApiKey::Fetch as i16), Some((4, 17)));
        assert_eq!(supported_range(ApiKey::ListOffsets as i16), Some((1, 10)));
        assert_eq!(supported_range(ApiKey::Metadata as i16), Some((0, 13)));
        assert_eq!(supported_range(ApiKey::ApiVersions as i16), Some((0, 4)));
        assert_eq!(supported_range(ApiKey::JoinGroup as i16), Some((0, 9)));
        assert_eq!(
            supported_range(ApiKey::ConsumerGroupHeartbeat as i16),
            Some((0, 1))
        );
        assert_eq!(
            supported_range(ApiKey::ShareGroupHeartbeat as i16),
            Some((1, 1))
        );
        assert_eq!(supported_range(-1), None);
    }

    /// The ApiVersions answer round-trips at every version, with a v0 response header.
    #[test]
    fn api_versions_response_encodes_at_every_version() {
        for v in 0..=4 {
            let frame =
                encode_response(ApiKey::ApiVersions, v, 9, &api_versions_response(v)).unwrap();
            let mut buf = frame.clone();
            assert_eq!(buf.get_i32() as usize, frame.len() - 4);
            assert_eq!(
                ResponseHeader::decode(&mut buf, 0).unwrap().correlation_id,
                9
            );
            let body = ApiVersionsResponse::decode(&mut buf, v).unwrap();
            assert!(!buf.has_remaining(), "v{v}");
            assert_eq!(body.error_code, 0);
            assert_eq!(body.api_keys.len(), SUPPORTED_APIS.len());
            let fetch = body.api_keys.iter().find(|k| k.api_key == 1).unwrap();
            assert_eq!((fetch.min_version, fetch.max_version), (4, 17));
        }
    }
}
