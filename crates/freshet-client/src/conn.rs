//! One blocking TCP connection to a Kafka broker: API version negotiation, request/response,
//! and pipelining.
//!
//! [`Connection::connect`] sends ApiVersions first (at v3, retrying at the version the broker
//! names when it answers UNSUPPORTED_VERSION in the v0 format, as Kafka clients do) and keeps the
//! broker's table, so every later request goes out at the highest version both sides speak.
//!
//! Pipelining: [`Connection::into_pipeline`] splits the socket into a [`PipelineWriter`] (sends
//! requests, numbering them with correlation ids) and a [`PipelineReader`] (reads the answers,
//! which Kafka sends in request order, and checks each correlation id). They share a bounded
//! queue of pending requests, so at most `inflight_max` requests are unanswered: the writer
//! blocks when the broker falls behind (backpressure, not growth). Each pending request carries
//! a caller's tag (e.g. the send times of the messages in a Produce request), given back with
//! its answer.
//!
//! Frames are read into one reused buffer; answers are handed out as slices of it.

use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::wire::Reader;
use super::{ClientError, Result};

/// Error code UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
/// The ApiVersions version tried first (Kafka 4.1 serves 0..=4; v3 is what Kafka's client sends).
const API_VERSIONS_VERSION: i16 = 3;

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `client.id` sent in every request header.
    pub client_id: String,
    /// Limit on connecting and on each blocking read or write.
    pub io_timeout: Duration,
    /// Largest response frame accepted; a larger one is a protocol error.
    pub frame_bytes_max: usize,
    /// Socket receive/send buffer size in bytes (0: the system default).
    pub socket_buffer_bytes: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            client_id: "freshet-client".to_string(),
            io_timeout: Duration::from_secs(30),
            frame_bytes_max: 256 << 20,
            socket_buffer_bytes: 0,
        }
    }
}

/// The broker's supported version range per API key.
#[derive(Debug, Clone, Default)]
pub struct BrokerVersions {
    ranges: Vec<(i16, i16, i16)>,
}

impl BrokerVersions {
    /// The broker's `(min, max)` for `key`, if it serves it.
    pub fn range(&self, key: ApiKey) -> Option<(i16, i16)> {
        self.ranges
            .iter()
            .find(|(k, _, _)| *k == key as i16)
            .map(|(_, min, max)| (*min, *max))
    }

    /// The highest version in `min..=max` that the broker serves too.
    pub fn pick(&self, key: ApiKey, min: i16, max: i16) -> Result<i16> {
        let unsupported = || ClientError::Unsupported {
            api: api_name(key),
            min,
            max,
        };
        let (broker_min, broker_max) = self.range(key).ok_or_else(unsupported)?;
        let version = max.min(broker_max);
        if version < min.max(broker_min) {
            return Err(unsupported());
        }
        Ok(version)
    }
}

fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::ApiVersions => "ApiVersions",
        _ => "an API",
    }
}

/// A connection to one broker, for request/response use.
pub struct Connection {
    addr: String,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    versions: BrokerVersions,
    options: ConnectOptions,
    next_correlation_id: i32,
    frame: Vec<u8>,
}

impl Connection {
    /// Connects to `addr` (host:port) and negotiates API versions.
    pub fn connect(addr: &str, options: &ConnectOptions) -> Result<Connection> {
        let socket_addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            ClientError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{addr} resolves to no address"),
            ))
        })?;
        let stream = TcpStream::connect_timeout(&socket_addr, options.io_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(options.io_timeout))?;
        stream.set_write_timeout(Some(options.io_timeout))?;
        if options.socket_buffer_bytes > 0 {
            set_socket_buffers(&stream, options.socket_buffer_bytes);
        }
        let reader = BufReader::with_capacity(64 << 10, stream.try_clone()?);
        let mut conn = Connection {
            addr: addr.to_string(),
            writer: stream,
            reader,
            versions: BrokerVersions::default(),
            options: options.clone(),
            next_correlation_id: 0,
            frame: Vec::new(),
        };
        conn.negotiate()?;
        Ok(conn)
    }

    fn negotiate(&mut self) -> Result<()> {
        let mut version = API_VERSIONS_VERSION;
        for _ in 0..2 {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("freshet"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let body = self
                .request_bytes(ApiKey::ApiVersions, version, &request)?
                .to_vec();
            let decoded =
                ApiVersionsResponse::decode(&mut bytes::Bytes::from(body.clone()), version);
            let response = match decoded {
                Ok(r) if r.error_code != UNSUPPORTED_VERSION => r,
                // Kafka answers an unsupported ApiVersions version in the v0 format.
                _ => ApiVersionsResponse::decode(&mut bytes::Bytes::from(body), 0)
                    .map_err(|e| ClientError::Protocol(format!("ApiVersions response: {e}")))?,
            };
            self.versions.ranges = response
                .api_keys
                .iter()
                .map(|a| (a.api_key, a.min_version, a.max_version))
                .collect();
            match response.error_code {
                0 => return Ok(()),
                UNSUPPORTED_VERSION => {
                    let (_, max) = self.versions.range(ApiKey::ApiVersions).unwrap_or((0, 0));
                    if max >= version {
                        break;
                    }
                    version = max.max(0);
                }
                code => {
                    return Err(ClientError::Kafka {
                        context: "ApiVersions".into(),
                        code,
                    })
                }
            }
        }
        Err(ClientError::Unsupported {
            api: "ApiVersions",
            min: 0,
            max: API_VERSIONS_VERSION,
        })
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The broker's API versions, as negotiated.
    pub fn versions(&self) -> &BrokerVersions {
        &self.versions
    }

    /// Sends `body` at the highest version both this crate's codec and the broker support,
    /// and waits for the answer.
    pub fn request<R: Request>(&mut self, body: &R) -> Result<R::Response> {
        let key = api_key_of::<R>()?;
        let range = key.valid_versions();
        let version = self.versions.pick(key, range.min, range.max)?;
        self.request_at(version, body)
    }

    /// Sends `body` at `version` and waits for the answer.
    pub fn request_at<R: Request>(&mut self, version: i16, body: &R) -> Result<R::Response> {
        let key = api_key_of::<R>()?;
        let mut bytes = bytes::Bytes::copy_from_slice(self.request_bytes(key, version, body)?);
        R::Response::decode(&mut bytes, version).map_err(|e| {
            ClientError::Protocol(format!("{} v{version} response: {e}", api_name(key)))
        })
    }

    /// Sends `body` at `version` and returns the raw response body (after the response
    /// header) as a slice of the connection's frame buffer, for hand parsing (e.g. Fetch).
    pub fn request_raw<R: Request>(&mut self, version: i16, body: &R) -> Result<&[u8]> {
        let key = api_key_of::<R>()?;
        self.request_bytes(key, version, body)
    }

    /// Sends an encoded request body and returns the response body (after its header).
    fn request_bytes<T: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &T,
    ) -> Result<&[u8]> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let encoded = encode_body(body, version)?;
        let head = request_head(
            key,
            version,
            correlation_id,
            &self.options.client_id,
            encoded.len(),
        )?;
        write_all_vectored(
            &mut self.writer,
            &mut [IoSlice::new(&head), IoSlice::new(&encoded)],
        )?;
        read_frame(
            &mut self.reader,
            &mut self.frame,
            self.options.frame_bytes_max,
        )?;
        let offset = check_response_header(&self.frame, key, version, correlation_id)?;
        Ok(&self.frame[offset..])
    }

    /// Splits the connection for pipelined use: at most `inflight_max` (>= 1) requests
    /// unanswered. Tags of type `T` travel with each request to its answer.
    pub fn into_pipeline<T>(self, inflight_max: usize) -> (PipelineWriter<T>, PipelineReader<T>) {
        assert!(inflight_max >= 1, "at least one request in flight");
        // The reader holds one pending request while it reads its answer, so the queue holds
        // one fewer.
        let (tx, rx) = sync_channel(inflight_max - 1);
        (
            PipelineWriter {
                stream: self.writer,
                pending: tx,
                versions: self.versions,
                client_id: self.options.client_id.clone(),
                next_correlation_id: self.next_correlation_id,
                head: Vec::with_capacity(256),
            },
            PipelineReader {
                reader: self.reader,
                pending: rx,
                frame: self.frame,
                frame_bytes_max: self.options.frame_bytes_max,
            },
        )
    }
}

/// A request sent and not answered yet.
struct Pending<T> {
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    tag: T,
}

/// The sending half of a pipelined connection.
pub struct PipelineWriter<T> {
    stream: TcpStream,
    pending: SyncSender<Pending<T>>,
    versions: BrokerVersions,
    client_id: String,
    next_correlation_id: i32,
    head: Vec<u8>,
}

impl<T> PipelineWriter<T> {
    /// The broker's API versions, as negotiated.
    pub fn versions(&self) -> &BrokerVersions {
        &self.versions
    }

    /// Sends a request whose body is the concatenation of `body` (written with one vectored
    /// write, without copying). Blocks while `inflight_max` requests are unanswered. Fails
    /// when the reader is gone.
    pub fn send(&mut self, key: ApiKey, version: i16, body: &[&[u8]], tag: T) -> Result<()> {
        let correlation_id = self.write(key, version, body)?;
        self.pending
            .send(Pending {
                key,
                version,
                correlation_id,
                tag,
            })
            .map_err(|_| {
                ClientError::Io(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the pipeline reader is gone",
                ))
            })
    }

    /// Sends a request the broker does not answer (Produce with acks=0).
    pub fn send_unanswered(&mut self, key: ApiKey, version: i16, body: &[&[u8]]) -> Result<()> {
        self.write(key, version, body).map(|_| ())
    }

    /// Encodes and sends a `kafka-protocol` request at `version`.
    pub fn send_request<R: Request>(&mut self, version: i16, body: &R, tag: T) -> Result<()> {
        let key = api_key_of::<R>()?;
        let encoded = encode_body(body, version)?;
        self.send(key, version, &[&encoded], tag)
    }

    fn write(&mut self, key: ApiKey, version: i16, body: &[&[u8]]) -> Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let body_len: usize = body.iter().map(|b| b.len()).sum();
        let head = request_head(key, version, correlation_id, &self.client_id, body_len)?;
        self.head.clear();
        self.head.extend_from_slice(&head);
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(body.len() + 1);
        slices.push(IoSlice::new(&self.head));
        slices.extend(
            body.iter()
                .filter(|b| !b.is_empty())
                .map(|b| IoSlice::new(b)),
        );
        write_all_vectored(&mut self.stream, &mut slices)?;
        Ok(correlation_id)
    }
}

/// The receiving half of a pipelined connection.
pub struct PipelineReader<T> {
    reader: BufReader<TcpStream>,
    pending: Receiver<Pending<T>>,
    frame: Vec<u8>,
    frame_bytes_max: usize,
}

/// One answer read from a pipeline.
pub struct Answer<'a, T> {
    /// The tag given with the request.
    pub tag: T,
    /// The request's API.
    pub key: ApiKey,
    /// The request's version.
    pub version: i16,
    /// The response body, after the response header.
    pub body: &'a [u8],
}

impl<T> PipelineReader<T> {
    /// Waits for the answer to the oldest unanswered request. `Ok(None)` once the writer has
    /// been dropped and every request it sent was answered.
    pub fn recv(&mut self) -> Result<Option<Answer<'_, T>>> {
        let Ok(pending) = self.pending.recv() else {
            return Ok(None);
        };
        read_frame(&mut self.reader, &mut self.frame, self.frame_bytes_max)?;
        let offset = check_response_header(
            &self.frame,
            pending.key,
            pending.version,
            pending.correlation_id,
        )?;
        Ok(Some(Answer {
            tag: pending.tag,
            key: pending.key,
            version: pending.version,
            body: &self.frame[offset..],
        }))
    }
}

fn api_key_of<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY).map_err(|_| ClientError::Protocol(format!("api key {}", R::KEY)))
}

fn encode_body<T: Encodable>(body: &T, version: i16) -> Result<BytesMut> {
    let mut buf = BytesMut::new();
    body.encode(&mut buf, version)
        .map_err(|e| ClientError::Protocol(format!("encode request v{version}: {e}")))?;
    Ok(buf)
}

/// The frame size prefix and request header for a body of `body_len` bytes.
fn request_head(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body_len: usize,
) -> Result<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(&mut buf, key.request_header_version(version))
        .map_err(|e| ClientError::Protocol(format!("encode header: {e}")))?;
    let size = buf.len() - 4 + body_len;
    let size = i32::try_from(size)
        .map_err(|_| ClientError::Protocol(format!("request of {size} bytes")))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.to_vec())
}

/// Checks the response header against the request; returns where the body starts.
fn check_response_header(
    frame: &[u8],
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<usize> {
    let mut r = Reader::new(frame);
    let got = r.i32()?;
    if got != correlation_id {
        return Err(ClientError::Protocol(format!(
            "correlation id {got} in the response, expected {correlation_id}"
        )));
    }
    if key.response_header_version(version) >= 1 {
        r.skip_tagged_fields()?;
    }
    Ok(frame.len() - r.remaining())
}

/// Reads one size-prefixed frame into `buf` (reused; its capacity is kept).
fn read_frame(reader: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> Result<()> {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if size < 4 || size as usize > max {
        return Err(ClientError::Protocol(format!(
            "response frame of {size} bytes (limit {max})"
        )));
    }
    let size = size as usize;
    buf.clear();
    buf.reserve(size);
    reader.take(size as u64).read_to_end(buf)?;
    if buf.len() != size {
        return Err(ClientError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a response",
        )));
    }
    Ok(())
}

fn write_all_vectored(stream: &mut TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn set_socket_buffers(stream: &TcpStream, bytes: usize) {
    // A failure only leaves the default size.
    let socket = socket2::SockRef::from(stream);
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
}
