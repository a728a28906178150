//! Request headers, and what to do with requests whose key or version we do not serve.
//!
//! A request frame is `api_key INT16, api_version INT16, correlation_id INT32`, then (header v1+)
//! `client_id NULLABLE_STRING` (always the non-compact string, even in header v2, a quirk Kafka
//! keeps for ApiVersions fallback), then (header v2, flexible versions) a tagged-field section.
//! The header version follows from the api key and version (`ApiKey::request_header_version`).
//!
//! Parsing is total: a short or garbage frame gives a [`HeaderError`], never a panic. The body is
//! a zero-copy slice of the frame.
//!
//! # What Kafka 4.1 does (and what [`classify_request`] tells the server to do)
//!
//! Source of truth: Kafka's `SocketServer.Processor.parseRequestHeader`, `RequestHeader.parse`,
//! `ApiKeys.isVersionEnabled`, `RequestContext.parseRequest` / `apiVersion()`,
//! `ApiVersionsRequest.getErrorResponse` and `KafkaApis.handleApiVersionsRequest`.
//!
//! - **Unknown api key.** `RequestHeader.parse` fails (`ApiKeys.forId` throws), the processor
//!   logs "Closing socket connection ... due to invalid request" and closes the connection without
//!   an answer. Same for a header that cannot be parsed at all. → [`Disposition::Close`].
//! - **Known key, version out of range (any API but ApiVersions).** `parseRequestHeader` checks
//!   `apiVersionManager.isApiEnabled(key, version)`, which fails, and throws
//!   `InvalidRequestException("Received request api key X with version N which is not enabled")`:
//!   the connection is closed without an answer. The same holds for a known key the broker does
//!   not implement (not "in scope" for the broker listener). → [`Disposition::Close`].
//! - **ApiVersions with a version newer than the broker knows.** `isVersionEnabled` always accepts
//!   ApiVersions; `RequestContext` then skips parsing the body and treats it as v0, and the broker
//!   answers `UNSUPPORTED_VERSION` (35) in a **v0-shaped** body (error_code, api_keys; no throttle
//!   time) whose `api_keys` holds only ApiVersions' own supported range (KIP-511), with a v0
//!   response header. The client retries with the highest version in that range. The connection
//!   stays open. → [`Disposition::UnsupportedApiVersions`] and [`unsupported_api_versions_frame`].
//! - **ApiVersions v3+ with an invalid client software name/version** (KIP-511 regex) gets
//!   `INVALID_REQUEST` in a normal response of the request's version: [`api_versions_request_is_valid`].
//! - **A known, supported request whose body does not parse.** `RequestContext.parseRequest`
//!   throws `InvalidRequestException` and the connection is closed. The server does the same when
//!   [`crate::protocol::codec::decode_body`] fails.
//!
//! Kafka replaces a null client id by `""`; [`ParsedRequest::client_id`] keeps `None` so the
//! server can tell, and [`ParsedRequest::client_id_or_empty`] gives Kafka's view.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};

use crate::protocol::frame::SIZE_PREFIX_BYTES;
use crate::protocol::versions;

/// Bytes of `api_key`, `api_version` and `correlation_id`, present in every header version.
pub const HEADER_FIXED_BYTES: usize = 8;

/// A request header, parsed, and the request body after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    /// The api key as sent (always a key `ApiKey::try_from` knows).
    pub api_key: i16,
    /// The api version as sent (not checked against what we support: see [`classify_request`]).
    pub api_version: i16,
    /// The correlation id to echo in the response.
    pub correlation_id: i32,
    /// The client id; `None` when the client sent a null string (or header v0).
    pub client_id: Option<String>,
    /// The request header version: 1, or 2 for flexible versions (0 only for ControlledShutdown v0).
    pub header_version: i16,
    /// The request body: a zero-copy slice of the frame.
    pub body: Bytes,
}

impl ParsedRequest {
    /// The client id as Kafka sees it: a null client id is `""`.
    pub fn client_id_or_empty(&self) -> &str {
        self.client_id.as_deref().unwrap_or("")
    }

    /// The `ApiKey` of this request (always known, by construction).
    pub fn key(&self) -> ApiKey {
        ApiKey::try_from(self.api_key).expect("parse_request_header only yields known api keys")
    }
}

/// Why a request header could not be parsed. Every variant closes the connection (as Kafka does);
/// the ids, where present, are for the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than 8 bytes: not even api key, version and correlation id.
    #[error("request header truncated: {len} bytes")]
    Truncated {
        /// Length of the frame.
        len: usize,
    },
    /// An api key Kafka 4.1 does not define.
    #[error("unknown api key {api_key} (version {api_version}, correlation id {correlation_id})")]
    UnknownApiKey {
        /// The key as sent.
        api_key: i16,
        /// The version as sent.
        api_version: i16,
        /// The correlation id as sent.
        correlation_id: i32,
    },
    /// A known api key, but the rest of the header (client id, tagged fields) is malformed.
    #[error("malformed header of api key {api_key} v{api_version} (correlation id {correlation_id}): {reason}")]
    Malformed {
        /// The key as sent.
        api_key: i16,
        /// The version as sent.
        api_version: i16,
        /// The correlation id as sent.
        correlation_id: i32,
        /// What was wrong.
        reason: &'static str,
    },
}

impl HeaderError {
    /// The correlation id, when the first 8 bytes were there.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            HeaderError::Truncated { .. } => None,
            HeaderError::UnknownApiKey { correlation_id, .. }
            | HeaderError::Malformed { correlation_id, .. } => Some(*correlation_id),
        }
    }
}

/// Parses the request header at the front of `frame` (a frame from
/// [`crate::protocol::frame::take_frame`], without its size prefix).
pub fn parse_request_header(frame: Bytes) -> Result<ParsedRequest, HeaderError> {
    if frame.len() < HEADER_FIXED_BYTES {
        return Err(HeaderError::Truncated { len: frame.len() });
    }
    let mut buf = frame;
    let api_key = buf.get_i16();
    let api_version = buf.get_i16();
    let correlation_id = buf.get_i32();
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Err(HeaderError::UnknownApiKey {
            api_key,
            api_version,
            correlation_id,
        });
    };
    let malformed = |reason| HeaderError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let header_version = key.request_header_version(api_version);
    let mut client_id = None;
    if header_version >= 1 {
        if buf.remaining() < 2 {
            return Err(malformed("client id length truncated"));
        }
        let len = buf.get_i16();
        if len >= 0 {
            let len = len as usize;
            if buf.remaining() < len {
                return Err(malformed("client id truncated"));
            }
            let raw = buf.split_to(len);
            // Kafka decodes the client id as UTF-8 and fails on invalid input; be as strict.
            let s = std::str::from_utf8(&raw).map_err(|_| malformed("client id is not UTF-8"))?;
            client_id = Some(s.to_owned());
        } else if len != -1 {
            return Err(malformed("negative client id length"));
        }
    }
    if header_version >= 2 {
        skip_tagged_fields(&mut buf).map_err(malformed)?;
    }
    Ok(ParsedRequest {
        api_key,
        api_version,
        correlation_id,
        client_id,
        header_version,
        body: buf,
    })
}

/// Skips a tagged-field section (count, then `tag, size, bytes` each). The request header
/// defines no tagged fields, so all are skipped; each costs at least 2 bytes, which bounds the loop.
fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), &'static str> {
    let count = read_uvarint(buf).ok_or("tagged field count malformed")?;
    for _ in 0..count {
        let _tag = read_uvarint(buf).ok_or("tag malformed")?;
        let size = read_uvarint(buf).ok_or("tagged field size malformed")? as usize;
        if buf.remaining() < size {
            return Err("tagged field truncated");
        }
        buf.advance(size);
    }
    Ok(())
}

/// Reads an unsigned varint of at most 5 bytes (a u32), as Kafka's `ByteUtils.readUnsignedVarint`.
pub(crate) fn read_uvarint(buf: &mut impl Buf) -> Option<u32> {
    let mut value: u32 = 0;
    for i in 0..5 {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        // Bits past the 32nd are dropped, as Kafka (and the kafka-protocol crate) do.
        value |= u32::from(b & 0x7f).wrapping_shl(7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    // A sixth byte would be needed: Kafka rejects this as an illegal varint.
    None
}

/// What the server should do with a request whose header parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A supported api key and version: decode the body and handle it.
    Handle,
    /// ApiVersions at a version newer than ours: answer with
    /// [`unsupported_api_versions_frame`] and keep the connection open.
    UnsupportedApiVersions,
    /// A key we do not serve, or a version out of its range: log and close the connection
    /// without an answer, as Kafka does.
    Close,
}

/// Decides, as Kafka 4.1 does, whether a request is handled, answered with the ApiVersions
/// fallback, or ends the connection. See the module docs for the Kafka behaviour.
pub fn classify_request(api_key: i16, api_version: i16) -> Disposition {
    match versions::supported_range(api_key) {
        Some((min, max)) if (min..=max).contains(&api_version) => Disposition::Handle,
        // Kafka accepts any ApiVersions version in the header check, then answers too-new ones
        // with the v0 fallback. A negative version is also "not supported" there, and gets the
        // same answer.
        Some(_) if api_key == ApiKey::ApiVersions as i16 => Disposition::UnsupportedApiVersions,
        _ => Disposition::Close,
    }
}

/// The complete response frame (size prefix, v0 response header, v0 body) Kafka sends to an
/// ApiVersions request of a version it does not support: error UNSUPPORTED_VERSION and, in
/// `api_keys`, only ApiVersions' own supported range, so the client retries with a version we know.
pub fn unsupported_api_versions_frame(correlation_id: i32) -> Bytes {
    let (min, max) = versions::supported_range(ApiKey::ApiVersions as i16)
        .expect("ApiVersions is always in the versions table");
    // v0 body: error_code INT16, api_keys ARRAY(api_key INT16, min INT16, max INT16).
    let body_len = 2 + 4 + 6;
    let frame_len = 4 + body_len;
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + frame_len);
    out.extend_from_slice(&(frame_len as i32).to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    out.extend_from_slice(&35i16.to_be_bytes()); // UNSUPPORTED_VERSION
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    out.extend_from_slice(&min.to_be_bytes());
    out.extend_from_slice(&max.to_be_bytes());
    assert_eq!(out.len(), SIZE_PREFIX_BYTES + frame_len);
    out.freeze()
}

/// KIP-511 validation of an ApiVersions v3+ request, as Kafka's `ApiVersionsRequest.isValid`:
/// client software name and version must be non-empty and match
/// `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`. When false, answer `INVALID_REQUEST` (42) in a
/// response of the request's own version. Versions below 3 carry no such fields and are valid.
pub fn api_versions_request_is_valid(request: &ApiVersionsRequest, version: i16) -> bool {
    if version < 3 {
        return true;
    }
    fn valid(s: &str) -> bool {
        let b = s.as_bytes();
        let edge = |c: u8| c.is_ascii_alphanumeric();
        let inner = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.';
        match b {
            [] => false,
            [c] => edge(*c),
            [first, middle @ .., last] => {
                edge(*first) && edge(*last) && middle.iter().all(|c| inner(*c))
            }
        }
    }
    valid(&request.client_software_name) && valid(&request.client_software_version)
}
