//! Hand-framed Fetch responses: record bytes go to the socket as they are, never copied.
//!
//! [`encode_fetch_response`] writes the framing (size prefix, response header, every field of
//! every version from 4 to 17) into one small buffer and returns it as pieces interleaved with the
//! record batches, which are the caller's `Bytes` (clones of a cache or read buffer: a reference
//! count, no copy). The server writes the pieces in order, e.g. with vectored writes.
//!
//! Wire shape by version (Kafka's FetchResponse.json):
//! - v4+: throttle time; per partition last_stable_offset and aborted_transactions (nullable).
//! - v5+: log_start_offset. v7+: top-level error_code and session_id (incremental fetch).
//! - v11+: preferred_read_replica (-1: none).
//! - v12+: flexible: compact strings/arrays/bytes, tagged-field sections (all empty here), and
//!   response header v1 (with its own empty tagged-field section).
//! - v13+: topic ids instead of names. v16+: node_endpoints (a tagged field, omitted when empty).
//! - v12+: a partition's `current_leader` (tagged field 1, KIP-951), sent when set: with
//!   NOT_LEADER_OR_FOLLOWER the client learns the new leader without a Metadata round trip,
//!   and (v16+) that leader's endpoint from `node_endpoints`.
//!
//! Records are never null: a partition without data gets empty records, as Kafka sends
//! (`MemoryRecords.EMPTY`), which every client handles.
//!
//! - v12+: a partition's `diverging_epoch` (tagged field 0), sent when set: the fetcher's
//!   `last_fetched_epoch` ends below its fetch offset on this leader (KIP-320 / KIP-595), so
//!   it must truncate to that epoch's end first.
//!
//! Not here yet: the `snapshot_id` tagged field (only needed with KRaft-style fetchers).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::frame::SIZE_PREFIX_BYTES;
use crate::ProtocolError;

/// Lowest Fetch version encoded (Kafka 4 removed 0-3).
pub const FETCH_VERSION_MIN: i16 = 4;
/// Highest Fetch version encoded (Kafka 4.1's highest stable version).
pub const FETCH_VERSION_MAX: i16 = 17;

/// A Fetch response, as the Fetch handler assembles it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchResponseParts {
    /// Throttle time, in milliseconds.
    pub throttle_time_ms: i32,
    /// Top-level error (v7+; must be 0 below v7).
    pub error_code: i16,
    /// Fetch session id (v7+; 0 = no session; must be 0 below v7).
    pub session_id: i32,
    /// Topics, in the order the client asked for them.
    pub topics: Vec<FetchTopic>,
    /// The endpoints of the leaders named in partitions' `current_leader` (v16+; KIP-951).
    pub node_endpoints: Vec<NodeEndpoint>,
}

/// A broker's endpoint in a Fetch response's `node_endpoints` (v16+).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeEndpoint {
    /// The broker's node id.
    pub node_id: i32,
    /// The broker's host.
    pub host: StrBytes,
    /// The broker's port.
    pub port: i32,
    /// The broker's rack, if any.
    pub rack: Option<StrBytes>,
}

/// One topic of a Fetch response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchTopic {
    /// Topic name, sent below v13.
    pub name: StrBytes,
    /// Topic id, sent from v13.
    pub topic_id: Uuid,
    /// Partitions, in request order.
    pub partitions: Vec<FetchPartition>,
}

/// One partition of a Fetch response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchPartition {
    /// Partition index.
    pub partition_index: i32,
    /// Partition error code (0 = none).
    pub error_code: i16,
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset.
    pub last_stable_offset: i64,
    /// Log start offset (v5+).
    pub log_start_offset: i64,
    /// Aborted transactions: `None` (null, what Kafka sends for READ_UNCOMMITTED) or a list
    /// (READ_COMMITTED, possibly empty).
    pub aborted_transactions: Option<Vec<AbortedTransaction>>,
    /// Record batches back to back, exactly as stored; sent without copying. May be empty.
    pub records: Vec<Bytes>,
    /// The leader (id, epoch) when this broker does not lead the partition (v12+ tagged field
    /// `current_leader`; `None` sends nothing).
    pub current_leader: Option<(i32, i32)>,
    /// (epoch, end offset) where the fetcher's log diverges from this one (v12+ tagged field
    /// `diverging_epoch`; `None` sends nothing).
    pub diverging_epoch: Option<(i32, i64)>,
    /// The broker the consumer should fetch this partition from instead (v11+
    /// `preferred_read_replica`, KIP-392; `None` sends -1).
    pub preferred_read_replica: Option<i32>,
}

/// An aborted transaction in a READ_COMMITTED Fetch response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AbortedTransaction {
    /// Producer id of the aborted transaction.
    pub producer_id: i64,
    /// First offset of the aborted transaction.
    pub first_offset: i64,
}

/// A framing buffer plus where the caller's record batches go between its bytes.
struct Framer {
    buf: BytesMut,
    flexible: bool,
    /// (offset in `buf` after which records are inserted, the records).
    inserts: Vec<(usize, Bytes)>,
}

impl Framer {
    fn uvarint(&mut self, v: u32) {
        crate::varint::put_unsigned(&mut self.buf, u64::from(v));
    }

    /// Array/compact-array length prefix for `n` elements (or null).
    fn array_len(&mut self, n: Option<usize>, what: &str) -> Result<(), String> {
        match (n, self.flexible) {
            (None, false) => self.buf.put_i32(-1),
            (None, true) => self.uvarint(0),
            (Some(n), false) => self
                .buf
                .put_i32(i32::try_from(n).map_err(|_| format!("{n} {what}"))?),
            (Some(n), true) => {
                self.uvarint(u32::try_from(n + 1).map_err(|_| format!("{n} {what}"))?)
            }
        }
        Ok(())
    }

    /// A compact nullable string (flexible versions only).
    fn compact_nullable_string(&mut self, s: Option<&str>) -> Result<(), String> {
        match s {
            None => self.uvarint(0),
            Some(s) => {
                let n = u32::try_from(s.len() + 1).map_err(|_| "string too long".to_owned())?;
                self.uvarint(n);
                self.buf.put_slice(s.as_bytes());
            }
        }
        Ok(())
    }

    fn string(&mut self, s: &str) -> Result<(), String> {
        if self.flexible {
            let n = u32::try_from(s.len() + 1).map_err(|_| "topic name too long".to_owned())?;
            self.uvarint(n);
        } else {
            let n = i16::try_from(s.len()).map_err(|_| "topic name too long".to_owned())?;
            self.buf.put_i16(n);
        }
        self.buf.put_slice(s.as_bytes());
        Ok(())
    }

    fn empty_tagged_fields(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }
}

/// Encodes a complete Fetch response frame for `version` (4..=17) as pieces to write in order:
/// framing bytes (a few `Bytes` slices of one buffer) interleaved with the record batches given,
/// which are cloned (reference counts), never copied. The pieces start with the 4-byte size
/// prefix and the response header (v1, flexible, from Fetch v12).
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    response: &FetchResponseParts,
) -> Result<Vec<Bytes>, ProtocolError> {
    let fail = |reason: String| ProtocolError::Encode {
        message: "FetchResponse",
        version,
        reason,
    };
    if !(FETCH_VERSION_MIN..=FETCH_VERSION_MAX).contains(&version) {
        return Err(fail("version not encodable".to_owned()));
    }
    if version < 7 && (response.error_code != 0 || response.session_id != 0) {
        return Err(fail("error_code and session_id need v7+".to_owned()));
    }
    let flexible = version >= 12;
    let capacity = framing_capacity(response);
    let mut f = Framer {
        buf: BytesMut::with_capacity(capacity),
        flexible,
        inserts: Vec::new(),
    };

    f.buf.put_i32(0); // Size prefix, patched below.
    f.buf.put_i32(correlation_id);
    f.empty_tagged_fields(); // Response header v1 for flexible versions.
    f.buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        f.buf.put_i16(response.error_code);
        f.buf.put_i32(response.session_id);
    }
    let mut records_total: usize = 0;
    f.array_len(Some(response.topics.len()), "topics")
        .map_err(fail)?;
    for topic in &response.topics {
        if version >= 13 {
            f.buf.put_slice(topic.topic_id.as_bytes());
        } else {
            f.string(&topic.name).map_err(fail)?;
        }
        f.array_len(Some(topic.partitions.len()), "partitions")
            .map_err(fail)?;
        for p in &topic.partitions {
            records_total += put_partition(&mut f, p, version).map_err(fail)?;
        }
        f.empty_tagged_fields(); // Topic tagged fields.
    }
    if version >= 16 && !response.node_endpoints.is_empty() {
        put_node_endpoints(&mut f, &response.node_endpoints).map_err(fail)?;
    } else {
        f.empty_tagged_fields(); // Response tagged fields (no node_endpoints).
    }

    let frame_len = f.buf.len() - SIZE_PREFIX_BYTES + records_total;
    let frame_len =
        i32::try_from(frame_len).map_err(|_| fail(format!("response of {frame_len} bytes")))?;
    f.buf[..SIZE_PREFIX_BYTES].copy_from_slice(&frame_len.to_be_bytes());
    let framing = f.buf.freeze();

    let pieces = interleave(framing, f.inserts);
    debug_assert_eq!(
        pieces.iter().map(Bytes::len).sum::<usize>(),
        SIZE_PREFIX_BYTES + frame_len as usize
    );
    Ok(pieces)
}

/// The response's tagged-field section holding `node_endpoints` (tag 0).
fn put_node_endpoints(f: &mut Framer, endpoints: &[NodeEndpoint]) -> Result<(), String> {
    // The field is written into a buffer of its own first: its length precedes it.
    let mut field = Framer {
        buf: BytesMut::new(),
        flexible: true,
        inserts: Vec::new(),
    };
    field.array_len(Some(endpoints.len()), "node endpoints")?;
    for e in endpoints {
        field.buf.put_i32(e.node_id);
        field.compact_nullable_string(Some(&e.host))?;
        field.buf.put_i32(e.port);
        field.compact_nullable_string(e.rack.as_deref())?;
        field.empty_tagged_fields();
    }
    f.uvarint(1); // One tagged field.
    f.uvarint(0); // Tag 0: node_endpoints.
    let len = u32::try_from(field.buf.len()).map_err(|_| "node endpoints too long".to_owned())?;
    f.uvarint(len);
    f.buf.put_slice(&field.buf);
    Ok(())
}

/// Upper bound of the framing bytes, so the buffer never grows: fixed part, per topic (length
/// prefix, name or id, array prefix, tags), per partition (with a current leader), per aborted
/// transaction, per node endpoint.
fn framing_capacity(response: &FetchResponseParts) -> usize {
    let partitions: usize = response.topics.iter().map(|t| t.partitions.len()).sum();
    let names: usize = response.topics.iter().map(|t| t.name.len()).sum();
    let aborted: usize = response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.aborted_transactions.as_ref().map_or(0, Vec::len))
        .sum();
    let endpoints: usize = response
        .node_endpoints
        .iter()
        .map(|e| 32 + e.host.len() + e.rack.as_ref().map_or(0, |r| r.len()))
        .sum();
    32 + response.topics.len() * 32 + names + partitions * 96 + aborted * 17 + endpoints
}

/// One partition's fields; its records are noted in `f.inserts`. Returns its records' length.
fn put_partition(f: &mut Framer, p: &FetchPartition, version: i16) -> Result<usize, String> {
    f.buf.put_i32(p.partition_index);
    f.buf.put_i16(p.error_code);
    f.buf.put_i64(p.high_watermark);
    f.buf.put_i64(p.last_stable_offset);
    if version >= 5 {
        f.buf.put_i64(p.log_start_offset);
    }
    f.array_len(
        p.aborted_transactions.as_ref().map(Vec::len),
        "aborted transactions",
    )?;
    for a in p.aborted_transactions.iter().flatten() {
        f.buf.put_i64(a.producer_id);
        f.buf.put_i64(a.first_offset);
        f.empty_tagged_fields();
    }
    if version >= 11 {
        f.buf.put_i32(p.preferred_read_replica.unwrap_or(-1));
    }
    let len: usize = p.records.iter().map(Bytes::len).sum();
    if f.flexible {
        let n = u32::try_from(len).ok().and_then(|n| n.checked_add(1));
        f.uvarint(n.ok_or_else(|| format!("{len} record bytes"))?);
    } else {
        f.buf
            .put_i32(i32::try_from(len).map_err(|_| format!("{len} record bytes"))?);
    }
    for batch in p.records.iter().filter(|b| !b.is_empty()) {
        f.inserts.push((f.buf.len(), batch.clone()));
    }
    // Partition tagged fields, in tag order.
    let diverging = p.diverging_epoch.filter(|_| f.flexible);
    let leader = p.current_leader.filter(|_| f.flexible);
    if diverging.is_none() && leader.is_none() {
        f.empty_tagged_fields();
        return Ok(len);
    }
    f.uvarint(u32::from(diverging.is_some()) + u32::from(leader.is_some()));
    if let Some((epoch, end_offset)) = diverging {
        f.uvarint(0); // Tag 0: diverging_epoch.
        f.uvarint(13); // Its size: int32, int64 and an empty tagged-field section.
        f.buf.put_i32(epoch);
        f.buf.put_i64(end_offset);
        f.uvarint(0);
    }
    if let Some((leader_id, leader_epoch)) = leader {
        f.uvarint(1); // Tag 1: current_leader.
        f.uvarint(9); // Its size: two int32 and an empty tagged-field section.
        f.buf.put_i32(leader_id);
        f.buf.put_i32(leader_epoch);
        f.uvarint(0);
    }
    Ok(len)
}

/// The pieces to write: the framing bytes cut where records go, with the records in between.
fn interleave(framing: Bytes, inserts: Vec<(usize, Bytes)>) -> Vec<Bytes> {
    let mut pieces = Vec::with_capacity(2 * inserts.len() + 1);
    let mut start = 0;
    for (at, batch) in inserts {
        if at > start {
            pieces.push(framing.slice(start..at));
        }
        pieces.push(batch);
        start = at;
    }
    pieces.push(framing.slice(start..));
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    fn batch(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    fn sample(version: i16) -> FetchResponseParts {
        let aborted = Some(vec![
            AbortedTransaction {
                producer_id: 11,
                first_offset: 100,
            },
            AbortedTransaction {
                producer_id: 12,
                first_offset: 200,
            },
        ]);
        let p = |i, records, aborted_transactions| FetchPartition {
            partition_index: i,
            error_code: if i == 2 { 1 } else { 0 },
            high_watermark: 1000 + i64::from(i),
            last_stable_offset: 900 + i64::from(i),
            log_start_offset: 10 + i64::from(i),
            aborted_transactions,
            records,
            // KIP-951: the partition with an error names its leader (v12+ only).
            current_leader: (i == 2 && version >= 12).then_some((5, 7)),
            // A fetcher whose log diverged: partition 1 alone, partition 2 with a leader too.
            diverging_epoch: (i >= 1 && version >= 12).then_some((4, 500 + i64::from(i))),
            // KIP-392: partition 0 names a follower to fetch from.
            preferred_read_replica: (i == 0).then_some(3),
        };
        let new = version >= 7;
        FetchResponseParts {
            throttle_time_ms: 3,
            error_code: 0,
            session_id: if new { 77 } else { 0 },
            topics: vec![
                FetchTopic {
                    name: StrBytes::from_static_str("orders"),
                    topic_id: Uuid::from_u128(0x1234),
                    partitions: vec![
                        p(0, vec![batch(1, 61), batch(2, 130), batch(3, 7)], None),
                        p(1, vec![], Some(vec![])),
                        p(2, vec![], None),
                        p(3, vec![batch(4, 300)], aborted),
                    ],
                },
                FetchTopic {
                    name: StrBytes::from_static_str("empty"),
                    topic_id: Uuid::from_u128(9),
                    partitions: vec![],
                },
            ],
            node_endpoints: if version >= 16 {
                vec![
                    NodeEndpoint {
                        node_id: 5,
                        host: StrBytes::from_static_str("broker5.example"),
                        port: 19092,
                        rack: Some(StrBytes::from_static_str("rack-b")),
                    },
                    NodeEndpoint {
                        node_id: 6,
                        host: StrBytes::from_static_str("h6"),
                        port: 1,
                        rack: None,
                    },
                ]
            } else {
                Vec::new()
            },
        }
    }

    /// Decodes the concatenated pieces with the kafka-protocol crate.
    fn decode(version: i16, pieces: &[Bytes]) -> (i32, FetchResponse) {
        let whole: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let mut buf = Bytes::from(whole);
        let size = buf.get_i32() as usize;
        assert_eq!(size, buf.len(), "v{version}: size prefix");
        let header_version = ApiKey::Fetch.response_header_version(version);
        let header = ResponseHeader::decode(&mut buf, header_version).unwrap();
        let body = FetchResponse::decode(&mut buf, version).unwrap();
        assert!(!buf.has_remaining(), "v{version}: trailing bytes");
        (header.correlation_id, body)
    }

    /// For every version 4..=17 the hand-framed response decodes to the same fields, and the
    /// record bytes are the batches given, concatenated.
    #[test]
    fn every_version_decodes_with_the_crate() {
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let parts = sample(version);
            let pieces = encode_fetch_response(version, 4242, &parts).unwrap();
            let (correlation_id, body) = decode(version, &pieces);
            assert_eq!(correlation_id, 4242);
            assert_eq!(body.throttle_time_ms, 3);
            assert_eq!(body.error_code, 0);
            assert_eq!(body.session_id, parts.session_id);
            assert_eq!(body.responses.len(), parts.topics.len());
            let endpoints: Vec<_> = body
                .node_endpoints
                .iter()
                .map(|e| (e.node_id.0, e.host.to_string(), e.port, e.rack.clone()))
                .collect();
            let want_endpoints: Vec<_> = parts
                .node_endpoints
                .iter()
                .map(|e| (e.node_id, e.host.to_string(), e.port, e.rack.clone()))
                .collect();
            assert_eq!(endpoints, want_endpoints, "v{version}");
            for (t, want) in body.responses.iter().zip(&parts.topics) {
                if version >= 13 {
                    assert_eq!(t.topic_id, want.topic_id);
                } else {
                    assert_eq!(&*t.topic, &*want.name);
                }
                assert_eq!(t.partitions.len(), want.partitions.len());
                for (p, w) in t.partitions.iter().zip(&want.partitions) {
                    assert_eq!(p.partition_index, w.partition_index);
                    assert_eq!(p.error_code, w.error_code);
                    assert_eq!(p.high_watermark, w.high_watermark);
                    assert_eq!(p.last_stable_offset, w.last_stable_offset);
                    if version >= 5 {
                        assert_eq!(p.log_start_offset, w.log_start_offset);
                    }
                    let aborted = p.aborted_transactions.as_ref().map(|v| {
                        v.iter()
                            .map(|a| (a.producer_id.0, a.first_offset))
                            .collect::<Vec<_>>()
                    });
                    let want_aborted = w.aborted_transactions.as_ref().map(|v| {
                        v.iter()
                            .map(|a| (a.producer_id, a.first_offset))
                            .collect::<Vec<_>>()
                    });
                    assert_eq!(aborted, want_aborted, "v{version} p{}", w.partition_index);
                    let preferred = if version >= 11 {
                        w.preferred_read_replica.unwrap_or(-1)
                    } else {
                        -1
                    };
                    assert_eq!(p.preferred_read_replica.0, preferred, "v{version}");
                    let leader = (p.current_leader.leader_id.0, p.current_leader.leader_epoch);
                    assert_eq!(leader, w.current_leader.unwrap_or((-1, -1)), "v{version}");
                    let diverging = (p.diverging_epoch.epoch, p.diverging_epoch.end_offset);
                    assert_eq!(
                        diverging,
                        w.diverging_epoch.unwrap_or((-1, -1)),
                        "v{version}"
                    );
                    // Never null: empty partitions get empty records, as Kafka sends.
                    let records = p.records.as_ref().expect("records are never null");
                    let want_records: Vec<u8> =
                        w.records.iter().flat_map(|b| b.iter().copied()).collect();
                    assert_eq!(
                        &records[..],
                        &want_records[..],
                        "v{version} p{}",
                        w.partition_index
                    );
                }
            }
        }
    }

    /// Byte for byte, the pieces are what the crate's own encoder writes for the same response.
    #[test]
    fn bytes_match_the_crate_encoder() {
        use kafka_protocol::messages::fetch_response as fr;
        use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let parts = sample(version);
            let topics = parts
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let records: Vec<u8> =
                                p.records.iter().flat_map(|b| b.iter().copied()).collect();
                            fr::PartitionData::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(p.error_code)
                                .with_high_watermark(p.high_watermark)
                                .with_last_stable_offset(p.last_stable_offset)
                                .with_log_start_offset(if version >= 5 {
                                    p.log_start_offset
                                } else {
                                    -1
                                })
                                .with_aborted_transactions(p.aborted_transactions.as_ref().map(
                                    |v| {
                                        v.iter()
                                            .map(|a| {
                                                fr::AbortedTransaction::default()
                                                    .with_producer_id(ProducerId(a.producer_id))
                                                    .with_first_offset(a.first_offset)
                                            })
                                            .collect()
                                    },
                                ))
                                .with_preferred_read_replica(BrokerId(
                                    p.preferred_read_replica
                                        .filter(|_| version >= 11)
                                        .unwrap_or(-1),
                                ))
                                .with_records(Some(Bytes::from(records)))
                                .with_diverging_epoch(p.diverging_epoch.map_or_else(
                                    Default::default,
                                    |(epoch, end_offset)| {
                                        fr::EpochEndOffset::default()
                                            .with_epoch(epoch)
                                            .with_end_offset(end_offset)
                                    },
                                ))
                                .with_current_leader(p.current_leader.map_or_else(
                                    Default::default,
                                    |(id, epoch)| {
                                        fr::LeaderIdAndEpoch::default()
                                            .with_leader_id(BrokerId(id))
                                            .with_leader_epoch(epoch)
                                    },
                                ))
                        })
                        .collect();
                    let topic = fr::FetchableTopicResponse::default().with_partitions(partitions);
                    if version >= 13 {
                        topic.with_topic_id(t.topic_id)
                    } else {
                        topic.with_topic(TopicName(t.name.clone()))
                    }
                })
                .collect();
            let reference = FetchResponse::default()
                .with_throttle_time_ms(parts.throttle_time_ms)
                .with_error_code(parts.error_code)
                .with_session_id(parts.session_id)
                .with_responses(topics)
                .with_node_endpoints(
                    parts
                        .node_endpoints
                        .iter()
                        .map(|e| {
                            fr::NodeEndpoint::default()
                                .with_node_id(BrokerId(e.node_id))
                                .with_host(e.host.clone())
                                .with_port(e.port)
                                .with_rack(e.rack.clone())
                        })
                        .collect(),
                );
            let want = crate::encode_response(ApiKey::Fetch, version, 8, &reference).unwrap();
            let got: Vec<u8> = encode_fetch_response(version, 8, &parts)
                .unwrap()
                .iter()
                .flat_map(|p| p.iter().copied())
                .collect();
            assert_eq!(&got[..], &want[..], "v{version}");
        }
    }

    /// The record batches are the caller's buffers, not copies, and sit between framing pieces.
    #[test]
    fn record_batches_are_not_copied() {
        let parts = sample(17);
        let pieces = encode_fetch_response(17, 1, &parts).unwrap();
        let batches: Vec<&Bytes> = parts
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .flat_map(|p| &p.records)
            .collect();
        for b in &batches {
            assert!(
                pieces
                    .iter()
                    .any(|p| p.as_ptr() == b.as_ptr() && p.len() == b.len()),
                "batch copied"
            );
        }
        // Framing: one slice before each run of batches, and one at the end.
        assert_eq!(pieces.len(), batches.len() + 3);
    }

    /// A response without topics is one piece; an empty-records partition needs no extra piece.
    #[test]
    fn responses_without_records_are_one_piece() {
        for version in [4, 11, 12, 16, 17] {
            let mut parts = sample(version);
            parts.topics[0].partitions.retain(|p| p.records.is_empty());
            let pieces = encode_fetch_response(version, 1, &parts).unwrap();
            assert_eq!(pieces.len(), 1);
            decode(version, &pieces);
            assert_eq!(
                encode_fetch_response(version, 1, &FetchResponseParts::default())
                    .unwrap()
                    .len(),
                1
            );
        }
    }

    /// Versions outside 4..=17, and v7+ fields below v7, are refused.
    #[test]
    fn unencodable_requests_are_refused() {
        assert!(encode_fetch_response(3, 1, &FetchResponseParts::default()).is_err());
        assert!(encode_fetch_response(18, 1, &FetchResponseParts::default()).is_err());
        let parts = FetchResponseParts {
            session_id: 5,
            ..FetchResponseParts::default()
        };
        assert!(encode_fetch_response(6, 1, &parts).is_err());
        assert!(encode_fetch_response(7, 1, &parts).is_ok());
    }

    /// The top-level error and session id travel from v7.
    #[test]
    fn top_level_error_and_session() {
        let parts = FetchResponseParts {
            error_code: 70,
            session_id: 0,
            ..FetchResponseParts::default()
        };
        let (_, body) = decode(15, &encode_fetch_response(15, 1, &parts).unwrap());
        assert_eq!(body.error_code, 70);
    }
}
