//! A follower's connection to its leader's Kafka listener (the inter-broker listener, with its
//! TLS and SASL: `cluster::inter_broker`): inter-broker Fetch requests encoded and decoded with kafka-protocol (as Kafka's
//! `AbstractFetcherThread` sends them through its `BlockingSend`).
//!
//! One request at a time per connection; a response is read whole into one buffer bounded by
//! the caller's `response_bytes_max` plus [`RESPONSE_OVERHEAD_BYTES_MAX`] (a size field above
//! it closes the connection: the leader was asked for less). The shard passes
//! `replica_fetch_response_max_bytes + message_max_bytes + replica_fetch_max_bytes` (the asked
//! size plus a first batch returned whole), so one fetcher holds at most that much. Record bytes come out of the response as `Bytes` slices of that buffer,
//! never decoded: the follower appends them as they are.
//!
//! Fetch version 12 (flexible; topics by name; `replica_id`; `last_fetched_epoch` and
//! `current_leader_epoch` per partition; `diverging_epoch` in the answer). Not simulated: it
//! opens a socket, so it runs only on glommio (`rt::net`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::cluster::inter_broker::{self, BrokerStream};

/// The Fetch version followers send.
pub const FETCH_VERSION: i16 = 12;
/// Bytes of a response beyond its records that a follower accepts (headers of every partition).
pub const RESPONSE_OVERHEAD_BYTES_MAX: usize = 1 << 20;
/// The client id followers send.
const CLIENT_ID: &str = "freshet-replica-fetcher";

/// Why an inter-broker request failed; the fetcher reconnects after each.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// One connection to a leader. Owned by one fetcher task on one shard.
pub struct LeaderConnection {
    stream: BrokerStream,
    /// When the connection's SASL session must be replaced (KIP-368), if it has an end.
    renew_at: Option<std::time::Instant>,
    correlation_id: i32,
    buf: Vec<u8>,
}

impl LeaderConnection {
    /// Connects to the leader at `addr` (advertised as `host`) on the inter-broker listener,
    /// with its TLS and SASL (`cluster::inter_broker`), within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let security = inter_broker::current();
        let connected = inter_broker::connect(addr, host, timeout, &security)
            .await
            .map_err(|message| ClientError::Connect { addr, message })?;
        Ok(LeaderConnection {
            stream: connected.stream,
            renew_at: connected.renew_at,
            correlation_id: 0,
            buf: Vec::new(),
        })
    }

    /// Must the connection be replaced before the next request (its SASL session ends)?
    pub fn expired(&self) -> bool {
        self.renew_at
            .is_some_and(|at| std::time::Instant::now() >= at)
    }

    /// Sends `request` and reads its answer; a response above `response_bytes_max` plus
    /// [`RESPONSE_OVERHEAD_BYTES_MAX`] is refused (the connection must then be dropped).
    pub async fn fetch(
        &mut self,
        request: &FetchRequest,
        response_bytes_max: usize,
    ) -> Result<FetchResponse, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = encode_request(request, self.correlation_id)?;
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        let limit = response_bytes_max.saturating_add(RESPONSE_OVERHEAD_BYTES_MAX);
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await?;
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| (4..=limit).contains(s))
            .ok_or_else(|| {
                ClientError::Protocol(format!("response of {size} bytes (at most {limit})"))
            })?;
        self.buf.clear();
        self.buf.resize(size, 0);
        self.stream.read_exact(&mut self.buf).await?;
        decode_response(
            Bytes::from(std::mem::take(&mut self.buf)),
            self.correlation_id,
        )
    }
}

/// The size-prefixed frame of a Fetch request.
pub fn encode_request(request: &FetchRequest, correlation_id: i32) -> Result<Vec<u8>, ClientError> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(FETCH_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(
            &mut buf,
            ApiKey::Fetch.request_header_version(FETCH_VERSION),
        )
        .map_err(|e| ClientError::Protocol(format!("encode header: {e}")))?;
    request
        .encode(&mut buf, FETCH_VERSION)
        .map_err(|e| ClientError::Protocol(format!("encode fetch: {e}")))?;
    let size = i32::try_from(buf.len() - 4)
        .map_err(|_| ClientError::Protocol("request too large".into()))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.to_vec())
}

/// Decodes a Fetch response frame (without its size prefix), checking the correlation id.
pub fn decode_response(
    mut frame: Bytes,
    correlation_id: i32,
) -> Result<FetchResponse, ClientError> {
    use kafka_protocol::messages::ResponseHeader;
    let header = ResponseHeader::decode(
        &mut frame,
        ApiKey::Fetch.response_header_version(FETCH_VERSION),
    )
    .map_err(|e| ClientError::Protocol(format!("decode response header: {e}")))?;
    if header.correlation_id != correlation_id {
        return Err(ClientError::Protocol(format!(
            "correlation id {} in the response, expected {correlation_id}",
            header.correlation_id
        )));
    }
    FetchResponse::decode(&mut frame, FETCH_VERSION)
        .map_err(|e| ClientError::Protocol(format!("decode fetch response: {e}")))
}

/// The whole batches at the front of `records` (a leader's answer may end with a partial
/// batch when a size limit cut it, as Kafka's may): what a follower can append.
pub fn whole_batches(records: &Bytes) -> Bytes {
    let mut end = 0;
    for item in freshet_protocol::batch::batches(records) {
        match item {
            Ok((pos, b)) => end = pos + b.len(),
            Err(_) => break,
        }
    }
    records.slice(..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{BrokerId, ResponseHeader, TopicName};

    /// A request round-trips through kafka-protocol's decoder as a leader reads it, and a
    /// response frame decodes with its records as bytes; a wrong correlation id is refused.
    #[test]
    fn fetch_frames_round_trip() {
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(2);
        request.max_wait_ms = 500;
        let frame = encode_request(&request, 9).expect("encode");
        assert_eq!(
            i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let mut body = Bytes::from(frame[4..].to_vec());
        let header =
            RequestHeader::decode(&mut body, ApiKey::Fetch.request_header_version(12)).unwrap();
        assert_eq!((header.request_api_version, header.correlation_id), (12, 9));
        let back = FetchRequest::decode(&mut body, 12).expect("decode");
        assert_eq!(back.replica_id, BrokerId(2));

        let batch = freshet_protocol::batch::encode_batch(
            &[(None, Some(Bytes::from_static(b"v")), 1)],
            freshet_protocol::batch::Compression::None,
        )
        .unwrap();
        let mut p = PartitionData::default();
        p.high_watermark = 5;
        p.records = Some(batch.clone());
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        t.partitions.push(p);
        let mut response = FetchResponse::default();
        response.responses.push(t);
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(4)
            .encode(&mut out, ApiKey::Fetch.response_header_version(12))
            .unwrap();
        response.encode(&mut out, 12).unwrap();
        let out = out.freeze();
        let got = decode_response(out.clone(), 4).expect("decode");
        let records = got.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(records, batch);
        assert!(decode_response(out, 5).is_err(), "wrong correlation id");
    }

    /// A partial batch at the end of a record set is left for the next fetch.
    #[test]
    fn a_partial_last_batch_is_cut() {
        let batch = freshet_protocol::batch::encode_batch(
            &[(None, Some(Bytes::from_static(b"value")), 1)],
            freshet_protocol::batch::Compression::None,
        )
        .unwrap();
        let mut two = BytesMut::new();
        two.extend_from_slice(&batch);
        two.extend_from_slice(&batch[..batch.len() - 3]);
        assert_eq!(whole_batches(&two.freeze()), batch);
        assert!(whole_batches(&batch.slice(..10)).is_empty());
    }
}
