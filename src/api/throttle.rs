//! The quota hooks of the request handlers (`crate::quota` does the arithmetic).
//!
//! Every handler runs inside [`timed`] (`quota::busy`), which adds up the time the shards
//! spend polling it and its cross-shard jobs (the request-handler time of Kafka's request
//! quota, KIP-124; waits for a disk, a timer or a peer are not counted). After the handler, [`RequestQuota`] records that time
//! against the client's `request_percentage` and, over it, writes the throttle time into the
//! encoded answer (`throttle_time_ms` is the first field of the body for every API that has
//! one, but OffsetDelete, ApiVersions and Produce: [`throttle_offset`]) and mutes the
//! connection. Produce and Fetch record it themselves while they build their answer
//! ([`busy_so_far`]), as Kafka does, and take the larger of their two throttle times.
//!
//! Produce records the request's bytes before appending and answers with the throttle time;
//! Fetch records the response's bytes and, when that puts the client over its quota, answers
//! with an empty response carrying the throttle time and takes the bytes back off the rate
//! (Kafka's `getThrottledResponse` and `unrecordQuotaSensor`: what the client did not get does
//! not count). Either way the connection then stops reading for the throttle time
//! ([`Outcome::Throttled`], `server::connection`).

use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::protocol::fetch::FetchResponseParts;
use crate::protocol::header::ParsedRequest;
pub use crate::quota::busy::{busy_so_far, timed};
use crate::quota::{self, QuotaType, SensorKey};
use crate::shard::Shard;

/// Where `throttle_time_ms` is in the body of the answer to `api_key` at `version`, in bytes
/// from the start of the body; `None`: it has none there, or its handler sets it itself
/// (Produce and Fetch; ApiVersions is exempt). From the response schemas (kafka-protocol's
/// encoders): the first field from the version that has it, OffsetDelete's second.
pub fn throttle_offset(api_key: ApiKey, version: i16) -> Option<usize> {
    use ApiKey as K;
    let since = match api_key {
        K::Produce
        | K::Fetch
        | K::ApiVersions
        | K::SaslHandshake
        | K::SaslAuthenticate
        | K::WriteTxnMarkers
        | K::DescribeQuorum
        | K::Vote
        | K::BeginQuorumEpoch
        | K::EndQuorumEpoch
        | K::Envelope
        | K::CreateDelegationToken
        | K::RenewDelegationToken
        | K::ExpireDelegationToken
        | K::DescribeDelegationToken
        | K::InitializeShareGroupState
        | K::ReadShareGroupState
        | K::WriteShareGroupState
        | K::DeleteShareGroupState
        | K::ReadShareGroupStateSummary => return None,
        K::OffsetDelete => return Some(2),
        K::Metadata | K::OffsetCommit | K::OffsetFetch => 3,
        K::ListOffsets | K::JoinGroup => 2,
        K::FindCoordinator
        | K::Heartbeat
        | K::LeaveGroup
        | K::SyncGroup
        | K::DescribeGroups
        | K::ListGroups => 1,
        _ => 0,
    };
    (version >= since).then_some(0)
}

/// Writes `throttle_ms` into the `throttle_time_ms` of the encoded answer `pieces` (the first
/// piece holds the size prefix, the header and the start of the body), unless it already
/// says more; left as it is when the answer has no such field.
fn patch_throttle(pieces: &mut [Bytes], api_key: ApiKey, version: i16, throttle_ms: u64) {
    let Some(offset) = throttle_offset(api_key, version) else {
        return;
    };
    let header = if api_key.response_header_version(version) >= 1 {
        5 // correlation id, empty tagged fields
    } else {
        4
    };
    let at = 4 + header + offset;
    let Some(first) = pieces.first_mut() else {
        return;
    };
    let Some(current) = first.get(at..at + 4) else {
        return;
    };
    let current = i32::from_be_bytes([current[0], current[1], current[2], current[3]]);
    let wanted = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    if current >= wanted {
        return;
    }
    let mut copy = BytesMut::from(&first[..]);
    copy[at..at + 4].copy_from_slice(&wanted.to_be_bytes());
    *first = copy.freeze();
}

/// The request quota of one request (Kafka's `ClientRequestQuotaManager`), taken before its
/// handler runs: `None` from [`RequestQuota::of`] when none applies.
pub struct RequestQuota {
    quota: f64,
    sensor: SensorKey,
    api_key: ApiKey,
    version: i16,
}

impl RequestQuota {
    /// The `request_percentage` quota that applies to `request`, if any (exempt APIs, and
    /// Produce and Fetch, which record it themselves, have none here).
    pub fn of(shard: &Shard, request: &ParsedRequest) -> Option<RequestQuota> {
        if matches!(request.api_key, 0 | 1) || quota::exempt_from_request_quota(request.api_key) {
            return None;
        }
        let metadata = shard.metadata();
        if metadata.client_quotas.is_empty() {
            return None;
        }
        let (quota, sensor) = quota::applicable(
            &metadata.client_quotas,
            quota::user_of(&request.principal),
            request.client_id_or_empty(),
            quota::REQUEST_PERCENTAGE,
        )?;
        Some(RequestQuota {
            quota,
            sensor,
            api_key: ApiKey::try_from(request.api_key).ok()?,
            version: request.api_version,
        })
    }

    /// Records the handler's `busy` time and, over the quota, throttles `outcome`: the
    /// answer carries the throttle time (the larger of it and one already there) and the
    /// connection is muted for it.
    pub fn apply(self, outcome: super::Outcome, busy: Duration) -> super::Outcome {
        use super::Outcome;
        let throttle_ms = {
            let mut all = quota::global().lock().unwrap_or_else(|p| p.into_inner());
            all.record(
                QuotaType::Request,
                self.sensor,
                self.quota,
                quota::percent_of(busy),
                quota::now_ms(),
            )
        }
        .min(quota::REQUEST_THROTTLE_MS_MAX);
        if throttle_ms == 0 {
            return outcome;
        }
        let (mut pieces, before) = match outcome {
            Outcome::Respond(pieces) => (pieces, 0),
            Outcome::Throttled {
                pieces,
                throttle_ms,
            } => (pieces, throttle_ms),
            Outcome::NoResponse => (Vec::new(), 0),
            close @ Outcome::Close(_) => return close,
        };
        patch_throttle(&mut pieces, self.api_key, self.version, throttle_ms);
        Outcome::Throttled {
            pieces,
            throttle_ms: throttle_ms.max(before),
        }
    }
}

/// The request quota's throttle time for a Produce or Fetch of `request`, recording the time
/// its handler has spent so far (0: no `request_percentage` applies).
pub fn request_throttle_so_far(quotas: &quota::QuotaTable, request: &ParsedRequest) -> u64 {
    if quotas.is_empty() {
        return 0;
    }
    quota::record_request_time(
        quotas,
        &request.principal,
        request.client_id_or_empty(),
        busy_so_far(),
    )
}

use super::Outcome;

/// `outcome`, followed by `throttle_ms` of muting when it is not 0.
pub fn throttled(outcome: Outcome, throttle_ms: u64) -> Outcome {
    if throttle_ms == 0 {
        return outcome;
    }
    match outcome {
        Outcome::Respond(pieces) => Outcome::Throttled {
            pieces,
            throttle_ms,
        },
        Outcome::NoResponse => Outcome::Throttled {
            pieces: Vec::new(),
            throttle_ms,
        },
        other => other,
    }
}

/// Frames `out` with `frame`, records its bytes against the client's fetch quota and the
/// handler's time against its request quota, and, over either, frames the empty throttled
/// response instead with the larger throttle time (Kafka's `handleFetchRequest`).
pub fn throttle_fetch(
    shard: &Rc<Shard>,
    request: &ParsedRequest,
    out: &mut FetchResponseParts,
    frame: impl Fn(&FetchResponseParts) -> Outcome,
) -> Outcome {
    let metadata = shard.metadata();
    let quotas = &metadata.client_quotas;
    let answer = frame(out);
    let Outcome::Respond(pieces) = &answer else {
        return answer;
    };
    if quotas.is_empty() {
        return answer;
    }
    let bytes: usize = pieces.iter().map(|p| p.len()).sum();
    let (principal, client_id) = (&request.principal, request.client_id_or_empty());
    let bandwidth_ms =
        quota::record_and_throttle_ms(quotas, QuotaType::Fetch, principal, client_id, bytes as f64);
    let request_ms = request_throttle_so_far(quotas, request);
    let throttle_ms = bandwidth_ms.max(request_ms);
    if throttle_ms == 0 {
        return answer;
    }
    quota::unrecord(quotas, QuotaType::Fetch, principal, client_id, bytes as f64);
    out.topics.clear();
    out.throttle_time_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    throttled(frame(out), throttle_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::encode_response;
    use kafka_protocol::messages as m;

    const SENTINEL: i32 = 0x0102_0304;

    /// The throttle time sits where [`throttle_offset`] says in what kafka-protocol encodes,
    /// for every shape of answer (first field, flexible headers, OffsetDelete's second field),
    /// and the patch writes it there.
    #[test]
    fn throttle_offset_matches_the_encoders() {
        macro_rules! check {
            ($key:expr, $ty:ty, $($v:expr),+) => {
                $(
                    let body = <$ty>::default().with_throttle_time_ms(SENTINEL);
                    let frame = encode_response($key, $v, 7, &body).unwrap();
                    let offset = throttle_offset($key, $v)
                        .unwrap_or_else(|| panic!("{:?} v{} has a throttle time", $key, $v));
                    let header = if $key.response_header_version($v) >= 1 { 5 } else { 4 };
                    let at = 4 + header + offset;
                    assert_eq!(
                        &frame[at..at + 4],
                        &SENTINEL.to_be_bytes(),
                        "{:?} v{}",
                        $key,
                        $v
                    );
                    let zero = encode_response($key, $v, 7, &<$ty>::default()).unwrap();
                    let mut pieces = vec![zero];
                    patch_throttle(&mut pieces, $key, $v, SENTINEL as u64);
                    assert_eq!(pieces[0], frame, "{:?} v{}", $key, $v);
                )+
            };
        }
        check!(ApiKey::Metadata, m::MetadataResponse, 3, 9, 12);
        check!(ApiKey::OffsetCommit, m::OffsetCommitResponse, 3, 8);
        check!(ApiKey::OffsetFetch, m::OffsetFetchResponse, 3, 6);
        check!(ApiKey::ListOffsets, m::ListOffsetsResponse, 2, 7);
        check!(ApiKey::JoinGroup, m::JoinGroupResponse, 2, 7);
        check!(ApiKey::FindCoordinator, m::FindCoordinatorResponse, 1, 4);
        check!(ApiKey::Heartbeat, m::HeartbeatResponse, 1, 4);
        check!(ApiKey::DescribeGroups, m::DescribeGroupsResponse, 1, 5);
        check!(ApiKey::CreateTopics, m::CreateTopicsResponse, 4, 7);
        check!(ApiKey::DeleteTopics, m::DeleteTopicsResponse, 4, 6);
        check!(ApiKey::CreatePartitions, m::CreatePartitionsResponse, 0, 3);
        check!(ApiKey::OffsetDelete, m::OffsetDeleteResponse, 0);
        check!(ApiKey::DescribeCluster, m::DescribeClusterResponse, 0, 1);
        check!(ApiKey::InitProducerId, m::InitProducerIdResponse, 1, 5);
        check!(
            ApiKey::ConsumerGroupHeartbeat,
            m::ConsumerGroupHeartbeatResponse,
            0
        );
        // Versions without the field, and APIs whose handlers set it: left alone.
        assert_eq!(throttle_offset(ApiKey::Metadata, 2), None);
        assert_eq!(throttle_offset(ApiKey::JoinGroup, 1), None);
        assert_eq!(throttle_offset(ApiKey::Produce, 9), None);
        assert_eq!(throttle_offset(ApiKey::ApiVersions, 3), None);
        let frame =
            encode_response(ApiKey::Metadata, 2, 7, &m::MetadataResponse::default()).unwrap();
        let mut pieces = vec![frame.clone()];
        patch_throttle(&mut pieces, ApiKey::Metadata, 2, 500);
        assert_eq!(pieces[0], frame);
    }

    /// A larger throttle time already in the answer is kept.
    #[test]
    fn patch_keeps_a_larger_throttle_time() {
        let body = m::CreateTopicsResponse::default().with_throttle_time_ms(5000);
        let frame = encode_response(ApiKey::CreateTopics, 7, 1, &body).unwrap();
        let mut pieces = vec![frame.clone()];
        patch_throttle(&mut pieces, ApiKey::CreateTopics, 7, 800);
        assert_eq!(pieces[0], frame);
    }
}
