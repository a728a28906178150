//! A small Kafka-protocol client for one broker to call another over its Kafka listener:
//! one request, one answer (WriteTxnMarkers, AddPartitionsToTxn `verify_only`, and whatever
//! else a shard needs to ask another broker).
//!
//! [`BrokerClient::send`] encodes a request of any `kafka_protocol` type `R` at the version
//! given (request header v1/v2 as `R` says, this node's client id), writes it, reads the
//! answer's frame and decodes it as `R::Response`. The caller picks the version: brokers of
//! one cluster run the same Freshet, so no ApiVersions round trip is made.
//!
//! Connections are made as `super::inter_broker` says: on the inter-broker listener, with
//! its TLS and SASL (the broker's own credentials); a pooled connection whose SASL session
//! is about to end is dropped rather than reused.
//!
//! Ownership: a `BrokerClient` is `!Send` and belongs to the shard that created it (held in
//! an `Rc` by whoever sends, e.g. the transaction coordinator on the coordinator shard);
//! dropping it closes its idle connections. Any shard may make its own.
//!
//! Bounds ([`BrokerClientLimits`]):
//! - connecting is limited by `connect_timeout`, a whole exchange (connect, write, read) by
//!   the `timeout` the caller passes;
//! - an answer's frame is at most `frame_bytes_max`: the length prefix is checked before any
//!   of the body is read or allocated, and a larger one fails the call and drops the
//!   connection (memory per call: the encoded request plus at most `frame_bytes_max`);
//! - one call at a time per connection; at most `idle_connections_per_addr_max` idle
//!   connections kept per address, for at most [`ADDRS_POOLED_MAX`] addresses.
//!
//! Failures: a connection that fails (refused, reset, closed, timed out, a bad frame or a
//! correlation id that is not the call's) is dropped, never reused; the next call connects
//! again (the reconnect). A pooled connection that turns out closed before any byte of the
//! answer came back is retried once on a fresh connection, since the peer may have closed it
//! while idle; a request is therefore sent at most twice, and callers only send requests that
//! are safe to repeat (markers, verifications). Not here: retries after an error answer,
//! pipelining (a streaming fetcher keeps its own connection).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::inter_broker::Connected;

/// The most addresses whose idle connections are kept.
pub const ADDRS_POOLED_MAX: usize = 64;
/// The length prefix of a Kafka frame.
const LENGTH_BYTES: usize = 4;

/// The client's limits (module doc, "Bounds").
#[derive(Debug, Clone)]
pub struct BrokerClientLimits {
    pub connect_timeout: Duration,
    /// Largest answer frame accepted (after the length prefix).
    pub frame_bytes_max: usize,
    pub idle_connections_per_addr_max: usize,
}

impl Default for BrokerClientLimits {
    fn default() -> Self {
        BrokerClientLimits {
            connect_timeout: Duration::from_secs(5),
            frame_bytes_max: 16 << 20,
            idle_connections_per_addr_max: 2,
        }
    }
}

/// Why a call failed (no answer was decoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerClientError {
    #[error("resolving {addr}: {message}")]
    Resolve { addr: String, message: String },
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("talking to {addr}: {message}")]
    Io { addr: String, message: String },
    #[error("no answer from {addr} within {after_ms} ms")]
    Timeout { addr: String, after_ms: u64 },
    #[error("bad answer from {addr}: {message}")]
    BadAnswer { addr: String, message: String },
    #[error("encoding the request: {0}")]
    Encode(String),
}

/// The request/response client (module doc).
pub struct BrokerClient {
    client_id: String,
    limits: BrokerClientLimits,
    idle: RefCell<HashMap<String, Vec<Connected>>>,
    next_correlation_id: Cell<i32>,
}

impl BrokerClient {
    /// A client that names itself `client_id` in request headers.
    pub fn new(client_id: impl Into<String>, limits: BrokerClientLimits) -> BrokerClient {
        assert!(limits.frame_bytes_max > 0, "a frame limit");
        BrokerClient {
            client_id: client_id.into(),
            limits,
            idle: RefCell::new(HashMap::new()),
            next_correlation_id: Cell::new(0),
        }
    }

    /// Sends `body` at `version` to the broker listening on `addr` (`host:port`) and waits
    /// for its answer, at most `timeout` in all.
    pub async fn send<R: Request>(
        &self,
        addr: &str,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<R::Response, BrokerClientError> {
        let correlation_id = self.next_correlation_id.get();
        self.next_correlation_id
            .set(correlation_id.wrapping_add(1) & i32::MAX);
        let frame = encode_request(&self.client_id, version, correlation_id, body)?;
        let exchange = async {
            let answer = self.exchange_pooled(addr, &frame).await?;
            decode_response::<R>(answer, version, correlation_id).map_err(|message| {
                BrokerClientError::BadAnswer {
                    addr: addr.into(),
                    message,
                }
            })
        };
        within(timeout, exchange).await.unwrap_or_else(|| {
            Err(BrokerClientError::Timeout {
                addr: addr.into(),
                after_ms: timeout.as_millis() as u64,
            })
        })
    }

    /// One exchange, on an idle connection if there is one (retried once on a new
    /// connection if that one was closed while idle), else on a new one.
    async fn exchange_pooled(&self, addr: &str, frame: &[u8]) -> Result<Bytes, BrokerClientError> {
        // A connection whose SASL session is about to end is not reused (KIP-368).
        let pooled = loop {
            let next = self.idle.borrow_mut().get_mut(addr).and_then(Vec::pop);
            match next {
                Some(c) if c.expired() => continue,
                other => break other,
            }
        };
        if let Some(stream) = pooled {
            match exchange(stream, addr, frame, self.limits.frame_bytes_max).await {
                Ok((answer, stream)) => {
                    self.keep(addr, stream);
                    return Ok(answer);
                }
                Err((e, true)) => {
                    tracing::debug!(error = %e, "an idle connection was closed; connecting again")
                }
                Err((e, false)) => return Err(e),
            }
        }
        let stream = connect(addr, self.limits.connect_timeout).await?;
        let (answer, stream) = exchange(stream, addr, frame, self.limits.frame_bytes_max)
            .await
            .map_err(|(e, _)| e)?;
        self.keep(addr, stream);
        Ok(answer)
    }

    /// Keeps `stream` for the next call to `addr`, within the bounds.
    fn keep(&self, addr: &str, stream: Connected) {
        let mut idle = self.idle.borrow_mut();
        if !idle.contains_key(addr) && idle.len() >= ADDRS_POOLED_MAX {
            return;
        }
        let list = idle.entry(addr.to_string()).or_default();
        if list.len() < self.limits.idle_connections_per_addr_max {
            list.push(stream);
        }
    }

    /// Idle connections kept now (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

/// `fut`'s output, or `None` if `limit` passes first.
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        crate::rt::sleep(limit).await;
        None
    })
    .await
}

/// Resolves `addr` (`host:port`): an IP address at once, a name on the blocking pool.
async fn resolve(addr: &str) -> Result<SocketAddr, BrokerClientError> {
    if let Ok(ip) = addr.parse::<SocketAddr>() {
        return Ok(ip);
    }
    let name = addr.to_string();
    let found = crate::rt::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        name.to_socket_addrs().map(|mut all| all.next())
    })
    .await;
    let fail = |message: String| BrokerClientError::Resolve {
        addr: addr.into(),
        message,
    };
    match found {
        Ok(Some(ip)) => Ok(ip),
        Ok(None) => Err(fail("no address".into())),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Connects to `addr` as the inter-broker settings say (TLS, SASL: `super::inter_broker`).
async fn connect(addr: &str, timeout: Duration) -> Result<Connected, BrokerClientError> {
    let ip = resolve(addr).await?;
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let security = super::inter_broker::current();
    super::inter_broker::connect(ip, host, timeout, &security)
        .await
        .map_err(|message| BrokerClientError::Connect {
            addr: addr.into(),
            message,
        })
}

/// Writes `frame` on `stream` and reads one answer frame (its body, after the length).
/// On failure: the error, and whether no byte of an answer had come back.
async fn exchange(
    mut connected: Connected,
    addr: &str,
    frame: &[u8],
    frame_bytes_max: usize,
) -> Result<(Bytes, Connected), (BrokerClientError, bool)> {
    let stream = &mut connected.stream;
    let io = |e: std::io::Error| BrokerClientError::Io {
        addr: addr.into(),
        message: e.to_string(),
    };
    if let Err(e) = stream.write_all(frame).await {
        return Err((io(e), true));
    }
    if let Err(e) = stream.flush().await {
        return Err((io(e), true));
    }
    let mut length = [0u8; LENGTH_BYTES];
    if let Err(e) = stream.read_exact(&mut length).await {
        return Err((io(e), true));
    }
    let body_bytes = check_length(length, frame_bytes_max).map_err(|message| {
        let e = BrokerClientError::BadAnswer {
            addr: addr.into(),
            message,
        };
        (e, false)
    })?;
    let mut body = vec![0u8; body_bytes];
    if let Err(e) = stream.read_exact(&mut body).await {
        return Err((io(e), false));
    }
    Ok((Bytes::from(body), connected))
}

/// The body length a frame's length prefix announces, if within `frame_bytes_max` and not
/// too short to hold a response header.
pub fn check_length(prefix: [u8; LENGTH_BYTES], frame_bytes_max: usize) -> Result<usize, String> {
    let length = i32::from_be_bytes(prefix);
    match usize::try_from(length) {
        Ok(n) if n < 4 => Err(format!("a frame of {length} bytes")),
        Ok(n) if n <= frame_bytes_max => Ok(n),
        _ => Err(format!(
            "a frame of {length} bytes, over the limit of {frame_bytes_max}"
        )),
    }
}

fn encode_error(e: impl std::fmt::Display) -> BrokerClientError {
    BrokerClientError::Encode(e.to_string())
}

/// The whole frame of a request: length, header (v1 or v2 as `R` has it at `version`), body.
pub fn encode_request<R: Request>(
    client_id: &str,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Vec<u8>, BrokerClientError> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(encode_error)?;
    body.encode(&mut buf, version).map_err(encode_error)?;
    let length = i32::try_from(buf.len() - LENGTH_BYTES)
        .map_err(|_| BrokerClientError::Encode("a request over 2 GiB".into()))?;
    buf[..LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
    Ok(buf.to_vec())
}

/// Decodes an answer frame's body (after the length) to a request `R` of `version` sent
/// with `correlation_id`.
pub fn decode_response<R: Request>(
    mut body: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, String> {
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    let header = ResponseHeader::decode(&mut body, header_version)
        .map_err(|e| format!("response header: {e}"))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "the answer to request {}, expected {correlation_id}",
            header.correlation_id
        ));
    }
    let response = R::Response::decode(&mut body, version).map_err(|e| e.to_string())?;
    if body.has_remaining() {
        return Err(format!("{} bytes after the answer", body.remaining()));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker;
    use kafka_protocol::messages::write_txn_markers_response::WritableTxnMarkerResult;
    use kafka_protocol::messages::{
        ApiKey, ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
    };
    use std::io::{Read, Write};

    fn request() -> WriteTxnMarkersRequest {
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(7))
            .with_producer_epoch(3)
            .with_transaction_result(true)])
    }

    /// An answer frame to `correlation_id`, as a broker writes it (v1: flexible header).
    fn answer_frame(correlation_id: i32) -> Vec<u8> {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, 1)
            .unwrap();
        WriteTxnMarkersResponse::default()
            .with_markers(vec![
                WritableTxnMarkerResult::default().with_producer_id(ProducerId(7))
            ])
            .encode(&mut buf, 1)
            .unwrap();
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        frame
    }

    /// The request frame is what a broker's decoder reads back: header and body.
    #[test]
    fn request_frames_decode_as_kafka_requests() {
        let frame = encode_request("node-1", 1, 42, &request()).unwrap();
        let mut bytes = Bytes::from(frame);
        assert_eq!(bytes.get_i32() as usize, bytes.len());
        let header = RequestHeader::decode(&mut bytes, 2).unwrap();
        assert_eq!(header.request_api_key, ApiKey::WriteTxnMarkers as i16);
        assert_eq!(header.correlation_id, 42);
        assert_eq!(header.client_id.as_deref(), Some("node-1"));
        let body = WriteTxnMarkersRequest::decode(&mut bytes, 1).unwrap();
        assert_eq!(body, request());
    }

    /// Answers with another correlation id, trailing bytes or a bad length are refused.
    #[test]
    fn bad_answers_are_refused() {
        let good = Bytes::from(answer_frame(9)).slice(4..);
        let r = decode_response::<WriteTxnMarkersRequest>(good.clone(), 1, 9).unwrap();
        assert_eq!(r.markers[0].producer_id.0, 7);
        assert!(decode_response::<WriteTxnMarkersRequest>(good.clone(), 1, 10).is_err());
        let mut long = good.to_vec();
        long.push(0);
        assert!(decode_response::<WriteTxnMarkersRequest>(Bytes::from(long), 1, 9).is_err());
        assert!(check_length(100i32.to_be_bytes(), 99).is_err());
        assert!(check_length((-1i32).to_be_bytes(), 99).is_err());
        assert!(check_length(2i32.to_be_bytes(), 99).is_err());
        assert_eq!(check_length(99i32.to_be_bytes(), 99), Ok(99));
    }

    /// Over a real socket: a call is answered; after the peer closes the idle connection the
    /// next call reconnects; an answer over the frame limit fails the call without reading
    /// (or allocating) its body; a peer that never answers times out.
    #[test]
    fn calls_reconnect_and_bound_their_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peer = std::thread::spawn(move || {
            let read_request = |s: &mut std::net::TcpStream| -> i32 {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
                s.read_exact(&mut body).unwrap();
                i32::from_be_bytes(body[4..8].try_into().unwrap())
            };
            // 1: answered, then closed while idle. 2: answered on a new connection.
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let id = read_request(&mut s);
                s.write_all(&answer_frame(id)).unwrap();
                drop(s);
            }
            // 3: a length over the limit.
            let (mut s, _) = listener.accept().unwrap();
            read_request(&mut s);
            s.write_all(&(1i32 << 30).to_be_bytes()).unwrap();
            // 4: no answer at all.
            let (mut s2, _) = listener.accept().unwrap();
            read_request(&mut s2);
            std::thread::sleep(Duration::from_millis(600));
            drop((s, s2));
        });
        crate::rt::run_on_new_executor(1 << 20, 64, async move {
            let limits = BrokerClientLimits {
                frame_bytes_max: 1 << 20,
                ..BrokerClientLimits::default()
            };
            let client = BrokerClient::new("test", limits);
            let second = Duration::from_secs(5);
            for _ in 0..2 {
                let r = client.send(&addr, 1, &request(), second).await.unwrap();
                assert_eq!(r.markers[0].producer_id.0, 7);
                assert_eq!(client.idle_connections(), 1);
            }
            let e = client.send(&addr, 1, &request(), second).await.unwrap_err();
            assert!(matches!(e, BrokerClientError::BadAnswer { .. }), "{e}");
            assert_eq!(
                client.idle_connections(),
                0,
                "a failed connection is dropped"
            );
            let e = client
                .send(&addr, 1, &request(), Duration::from_millis(200))
                .await
                .unwrap_err();
            assert!(matches!(e, BrokerClientError::Timeout { .. }), "{e}");
        })
        .unwrap();
        peer.join().unwrap();
    }
}
