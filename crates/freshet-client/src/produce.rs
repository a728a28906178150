//! Produce, framed by hand: the hot path of a producer.
//!
//! A Produce request is mostly record batches. [`ProduceBody`] writes the few framing bytes
//! (acks, timeout, topic names, partition indexes, length prefixes) into one small buffer and
//! keeps the batches as the `Bytes` they are, so the request goes to the socket with one
//! vectored write and the batches are never copied or re-encoded. Versions 3..=12 are framed
//! (v9+ flexible: compact lengths and tagged fields); v13 names topics by id and is not used.
//!
//! [`parse_produce_response`] reads the answer by hand too (one per request, but cheap to do
//! without the generic decoder's allocations).

use std::ops::Range;

use super::wire::{put_array_len, put_string, put_uvarint, Reader};
use super::{ClientError, Result};

/// Lowest Produce version framed here (Kafka 4 serves 3 and up).
pub const PRODUCE_VERSION_MIN: i16 = 3;
/// Highest Produce version framed here (v13 names topics by id).
pub const PRODUCE_VERSION_MAX: i16 = 12;
/// First flexible Produce version.
const PRODUCE_FLEXIBLE_MIN: i16 = 9;

/// One partition's records in a Produce request.
#[derive(Debug, Clone)]
pub struct PartitionRecords<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition index.
    pub partition: i32,
    /// One or more encoded record batches (v2).
    pub records: &'a [u8],
}

enum Piece<'a> {
    Small(Range<usize>),
    Batch(&'a [u8]),
}

/// An encoded Produce request body: framing bytes around the (borrowed) record batches,
/// unjoined.
pub struct ProduceBody<'a> {
    small: Vec<u8>,
    pieces: Vec<Piece<'a>>,
}

impl<'a> ProduceBody<'a> {
    /// Frames a Produce request at `version` (3..=12). Consecutive entries of `partitions`
    /// with the same topic are grouped under it (sort by topic to send each topic once).
    pub fn new(
        version: i16,
        acks: i16,
        timeout_ms: i32,
        partitions: &[PartitionRecords<'a>],
    ) -> ProduceBody<'a> {
        assert!(
            (PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX).contains(&version),
            "Produce v{version} is not framed here"
        );
        let flexible = version >= PRODUCE_FLEXIBLE_MIN;
        let mut body = ProduceBody {
            small: Vec::with_capacity(64 + 16 * partitions.len()),
            pieces: Vec::with_capacity(2 * partitions.len() + 1),
        };
        let mut start = 0;
        // transactional_id: null.
        if flexible {
            put_uvarint(&mut body.small, 0);
        } else {
            body.small.extend_from_slice(&(-1i16).to_be_bytes());
        }
        body.small.extend_from_slice(&acks.to_be_bytes());
        body.small.extend_from_slice(&timeout_ms.to_be_bytes());
        let groups: Vec<&[PartitionRecords<'_>]> =
            partitions.chunk_by(|a, b| a.topic == b.topic).collect();
        put_array_len(&mut body.small, groups.len(), flexible);
        for group in groups {
            put_string(&mut body.small, group[0].topic, flexible);
            put_array_len(&mut body.small, group.len(), flexible);
            for p in group {
                body.small.extend_from_slice(&p.partition.to_be_bytes());
                if flexible {
                    put_uvarint(&mut body.small, p.records.len() as u64 + 1);
                } else {
                    body.small
                        .extend_from_slice(&(p.records.len() as i32).to_be_bytes());
                }
                body.pieces.push(Piece::Small(start..body.small.len()));
                start = body.small.len();
                body.pieces.push(Piece::Batch(p.records));
                if flexible {
                    put_uvarint(&mut body.small, 0); // partition tagged fields
                }
            }
            if flexible {
                put_uvarint(&mut body.small, 0); // topic tagged fields
            }
        }
        if flexible {
            put_uvarint(&mut body.small, 0); // request tagged fields
        }
        body.pieces.push(Piece::Small(start..body.small.len()));
        body
    }

    /// The body as slices to write in order.
    pub fn slices(&self) -> Vec<&[u8]> {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Small(range) => &self.small[range.clone()],
                Piece::Batch(bytes) => bytes,
            })
            .collect()
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.slices().iter().map(|s| s.len()).sum()
    }

    /// True when the body is empty (never: a body has at least its fixed fields).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// One partition's answer in a Produce response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Kafka error code (0: none).
    pub error_code: i16,
    /// Offset given to the first record of the first batch.
    pub base_offset: i64,
    /// The broker's error message, if any.
    pub error_message: Option<String>,
}

/// Parses a Produce response body of `version` (3..=12).
pub fn parse_produce_response(body: &[u8], version: i16) -> Result<Vec<ProducePartitionResponse>> {
    if !(PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX).contains(&version) {
        return Err(ClientError::Protocol(format!("Produce v{version}")));
    }
    let flexible = version >= PRODUCE_FLEXIBLE_MIN;
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    let topics = r.array_len(flexible)?.unwrap_or(0);
    for _ in 0..topics {
        let topic = r.string(flexible)?.unwrap_or("").to_string();
        let partitions = r.array_len(flexible)?.unwrap_or(0);
        for _ in 0..partitions {
            let partition = r.i32()?;
            let error_code = r.i16()?;
            let base_offset = r.i64()?;
            let _log_append_time_ms = r.i64()?;
            if version >= 5 {
                let _log_start_offset = r.i64()?;
            }
            let mut error_message = None;
            if version >= 8 {
                let record_errors = r.array_len(flexible)?.unwrap_or(0);
                for _ in 0..record_errors {
                    let _batch_index = r.i32()?;
                    let _message = r.string(flexible)?;
                    if flexible {
                        r.skip_tagged_fields()?;
                    }
                }
                error_message = r.string(flexible)?.map(str::to_string);
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
            out.push(ProducePartitionResponse {
                topic: topic.clone(),
                partition,
                error_code,
                base_offset,
                error_message,
            });
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
    }
    let _throttle_time_ms = r.i32()?;
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    /// The hand framing decodes with the generated decoder to the same request, at every version.
    #[test]
    fn hand_framed_produce_matches_the_generated_codec() {
        let batch = freshet_protocol::batch::encode_batch(
            &[(None, Some(Bytes::from_static(b"hello")), 7)],
            freshet_protocol::batch::Compression::None,
        )
        .expect("batch");
        let parts = [
            PartitionRecords {
                topic: "a",
                partition: 0,
                records: &batch,
            },
            PartitionRecords {
                topic: "a",
                partition: 3,
                records: &batch,
            },
            PartitionRecords {
                topic: "bb",
                partition: 1,
                records: &batch,
            },
        ];
        for version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX {
            let body = ProduceBody::new(version, -1, 1500, &parts);
            let joined: Vec<u8> = body.slices().concat();
            assert_eq!(joined.len(), body.len());
            let mut bytes = Bytes::from(joined);
            let decoded = ProduceRequest::decode(&mut bytes, version).expect("decodes");
            assert!(bytes.is_empty(), "v{version}: bytes left over");
            assert_eq!((decoded.acks, decoded.timeout_ms), (-1, 1500));
            assert_eq!(decoded.topic_data.len(), 2);
            assert_eq!(decoded.topic_data[0].partition_data.len(), 2);
            assert_eq!(decoded.topic_data[0].partition_data[1].index, 3);
            assert_eq!(
                decoded.topic_data[1].partition_data[0].records.as_ref(),
                Some(&batch)
            );
        }
    }

    #[test]
    fn produce_response_parses_at_every_version_and_truncation_is_an_error() {
        for version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX {
            let response =
                ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_responses(vec![PartitionProduceResponse::default()
                        .with_index(2)
                        .with_error_code(6)
                        .with_base_offset(42)])]);
            let mut buf = bytes::BytesMut::new();
            response.encode(&mut buf, version).expect("encode");
            let parsed = parse_produce_response(&buf, version).expect("parses");
            assert_eq!(
                (
                    parsed[0].partition,
                    parsed[0].error_code,
                    parsed[0].base_offset
                ),
                (2, 6, 42)
            );
            assert_eq!(parsed[0].topic, "t");
            for cut in 0..buf.len() {
                assert!(parse_produce_response(&buf[..cut], version).is_err());
            }
        }
    }
}
