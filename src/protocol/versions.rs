//! The APIs Freshet serves, with the version ranges it advertises in ApiVersions.
//!
//! The table is the single source of truth: [`crate::protocol::header::classify_request`] uses it
//! to accept or refuse a request, and [`api_versions_response`] advertises exactly it. Adding an
//! API is one line here (plus its handler, and a pre-scan schema in
//! [`crate::protocol::codec`]; a test fails until both exist).
//!
//! The ranges are Kafka 4.1's (the kafka-protocol 0.18 crate is generated from Kafka 4.1's
//! message specs; `ApiKey::valid_versions()` agrees with every range here except Fetch, whose v18
//! is `latestVersionUnstable` in 4.1 and so not advertised by a 4.1 broker). Kafka 4.0 removed the
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

/// Every API the broker implements, in api-key order. Groups, offsets and transactions come later.
pub const SUPPORTED_APIS: &[ApiSupport] = &[
    api(ApiKey::Produce, 3, 13),
    api(ApiKey::Fetch, 4, 17),
    api(ApiKey::ListOffsets, 1, 10),
    api(ApiKey::Metadata, 0, 13),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::DescribeLogDirs, 1, 4),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DescribeCluster, 0, 2),
];

/// The `(min, max)` versions served for `api_key`, or `None` if the broker does not serve it.
pub fn supported_range(api_key: i16) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|a| a.key as i16 == api_key)
        .map(|a| (a.min, a.max))
}

/// The ApiVersions answer for a request of `version` (a supported one: for too-new versions the
/// server sends [`crate::protocol::header::unsupported_api_versions_frame`] instead).
///
/// Error NONE, throttle 0, every API of [`SUPPORTED_APIS`]. For v3+ Kafka also sends the
/// supported and finalized features; a broker without feature flags sends empty lists and
/// finalized-features epoch -1, which clients accept (they use features only for KIP-848 groups
/// and transactions v2, which we do not serve yet).
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
