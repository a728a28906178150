//! Fetch: the request through the generated codec (it is small), the response parsed by hand.
//!
//! A Fetch response is mostly record bytes. [`parse_fetch_response`] walks the framing and hands
//! out each partition's records as a slice of the response frame: no copy, no record decoding
//! (see [`super::records`] for walking the batches when the caller needs to). Versions 4..=12
//! are used (v13+ names topics by id).

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::wire::Reader;
use super::Result;

/// Lowest Fetch version used (Kafka 4 serves 4 and up).
pub const FETCH_VERSION_MIN: i16 = 4;
/// Highest Fetch version used (v13 names topics by id).
pub const FETCH_VERSION_MAX: i16 = 12;

/// Where to fetch one partition from.
#[derive(Debug, Clone)]
pub struct FetchPosition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// First offset wanted.
    pub offset: i64,
    /// Most record bytes wanted from this partition.
    pub partition_max_bytes: i32,
}

/// A sessionless (full) Fetch request for `positions`, read_uncommitted.
pub fn fetch_request(
    positions: &[FetchPosition],
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in positions {
        let partition = FetchPartition::default()
            .with_partition(p.partition)
            .with_current_leader_epoch(-1)
            .with_fetch_offset(p.offset)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(p.partition_max_bytes);
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == p.topic => t.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// One partition of a Fetch response.
#[derive(Debug, Clone)]
pub struct FetchedPartition<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition index.
    pub partition: i32,
    /// Kafka error code (0: none).
    pub error_code: i16,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// The partition's log start offset (-1 before v5).
    pub log_start_offset: i64,
    /// Record batches, as sent (the last one may be partial, as Kafka allows).
    pub records: &'a [u8],
}

/// A parsed Fetch response.
#[derive(Debug, Clone)]
pub struct FetchResponseView<'a> {
    /// Top-level error code (v7+; 0 before).
    pub error_code: i16,
    /// Every partition, in response order.
    pub partitions: Vec<FetchedPartition<'a>>,
}

/// Parses a Fetch response body of `version` (4..=12) without copying records.
pub fn parse_fetch_response(body: &[u8], version: i16) -> Result<FetchResponseView<'_>> {
    if !(FETCH_VERSION_MIN..=FETCH_VERSION_MAX).contains(&version) {
        return Err(super::ClientError::Protocol(format!("Fetch v{version}")));
    }
    let flexible = version >= 12;
    let mut r = Reader::new(body);
    let _throttle_time_ms = r.i32()?;
    let mut error_code = 0;
    if version >= 7 {
        error_code = r.i16()?;
        let _session_id = r.i32()?;
    }
    let mut partitions = Vec::new();
    let topics = r.array_len(flexible)?.unwrap_or(0);
    for _ in 0..topics {
        let topic = r.string(flexible)?.unwrap_or("");
        let count = r.array_len(flexible)?.unwrap_or(0);
        for _ in 0..count {
            let partition = r.i32()?;
            let partition_error = r.i16()?;
            let high_watermark = r.i64()?;
            let _last_stable_offset = r.i64()?;
            let log_start_offset = if version >= 5 { r.i64()? } else { -1 };
            let aborted = r.array_len(flexible)?.unwrap_or(0);
            for _ in 0..aborted {
                let _producer_id = r.i64()?;
                let _first_offset = r.i64()?;
                if flexible {
                    r.skip_tagged_fields()?;
                }
            }
            if version >= 11 {
                let _preferred_read_replica = r.i32()?;
            }
            let records = r.nullable_bytes(flexible)?.unwrap_or(&[]);
            if flexible {
                r.skip_tagged_fields()?;
            }
            partitions.push(FetchedPartition {
                topic,
                partition,
                error_code: partition_error,
                high_watermark,
                log_start_offset,
                records,
            });
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(FetchResponseView {
        error_code,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{FetchResponse, ProducerId};
    use kafka_protocol::protocol::Encodable;

    /// The hand parser agrees with the generated codec at every version, and a truncated
    /// response is an error, never a panic.
    #[test]
    fn fetch_response_parses_at_every_version() {
        let records = Bytes::from_static(b"0123456789abcdef");
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let response =
                FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("topic")))
                    .with_partitions(vec![
                        PartitionData::default()
                            .with_partition_index(1)
                            .with_high_watermark(99)
                            .with_log_start_offset(3)
                            .with_aborted_transactions(Some(vec![AbortedTransaction::default()
                                .with_producer_id(ProducerId(5))
                                .with_first_offset(6)]))
                            .with_records(Some(records.clone())),
                        PartitionData::default()
                            .with_partition_index(2)
                            .with_error_code(ResponseError::OffsetOutOfRange.code())
                            .with_records(None),
                    ])]);
            let mut buf = bytes::BytesMut::new();
            response.encode(&mut buf, version).expect("encode");
            let view = parse_fetch_response(&buf, version).expect("parses");
            assert_eq!(view.partitions.len(), 2);
            let p = &view.partitions[0];
            assert_eq!((p.topic, p.partition, p.high_watermark), ("topic", 1, 99));
            assert_eq!(p.records, &records[..]);
            if version >= 5 {
                assert_eq!(p.log_start_offset, 3);
            }
            assert_eq!(
                view.partitions[1].error_code,
                ResponseError::OffsetOutOfRange.code()
            );
            assert!(view.partitions[1].records.is_empty());
            for cut in 0..buf.len() {
                assert!(parse_fetch_response(&buf[..cut], version).is_err());
            }
        }
    }
}
