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
//!   [`crate::codec::decode_body`] fails.
//!
//! Kafka replaces a null client id by `""`; [`ParsedRequest::client_id`] keeps `None` so the
//! server can tell, and [`ParsedRequest::client_id_or_empty`] gives Kafka's view.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};

use crate::frame::SIZE_PREFIX_BYTES;
use crate::{varint, versions};

/// Bytes of `api_key`, `api_version` and `correlation_id`, present in every header version.
pub const HEADER_FIXED_BYTES: usize = 8;

/// Kafka's principal of a connection that has not authenticated (`KafkaPrincipal.ANONYMOUS`).
pub const ANONYMOUS_PRINCIPAL: &str = "User:ANONYMOUS";

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
    /// The client's address as Kafka reports it in group descriptions ("/127.0.0.1"); set by
    /// the connection (empty until then).
    pub client_host: std::rc::Rc<str>,
    /// Who sent it, in Kafka's principal form `Type:name` (`User:ANONYMOUS` on a connection
    /// that has not authenticated); set by the connection.
    pub principal: std::rc::Rc<str>,
    /// The name of the listener the request came in on (`PLAINTEXT`, `SASL_SSL`, ...; empty:
    /// the first listener), so Metadata advertises that listener; set by the connection.
    pub listener: std::rc::Rc<str>,
    /// How long the complete request waited for room in its shard's request budget before
    /// its handler started; a deadline the request carries (Produce `timeout_ms`) counts from
    /// its arrival, so the handler subtracts this. Set by the connection; zero until then.
    pub queued_for: std::time::Duration,
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
    /// A known api key, but the rest of the header (client id length, tagged fields) is malformed.
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
/// [`crate::frame::take_frame`], without its size prefix).
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
            // Kafka reads strings with `new String(bytes, UTF_8)`, which replaces invalid
            // sequences instead of failing; be as lenient with the client id.
            client_id = Some(String::from_utf8_lossy(&raw).into_owned());
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
        client_host: std::rc::Rc::from(""),
        principal: std::rc::Rc::from(ANONYMOUS_PRINCIPAL),
        listener: std::rc::Rc::from(""),
        queued_for: std::time::Duration::ZERO,
    })
}

/// Skips a tagged-field section (count, then `tag, size, bytes` each). The request header
/// defines no tagged fields, so all are skipped; each costs at least 2 bytes, which bounds the loop.
fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), &'static str> {
    let count = varint::get_uvarint(buf).ok_or("tagged field count malformed")?;
    for _ in 0..count {
        let _tag = varint::get_uvarint(buf).ok_or("tag malformed")?;
        let size = varint::get_uvarint(buf).ok_or("tagged field size malformed")? as usize;
        if buf.remaining() < size {
            return Err("tagged field truncated");
        }
        buf.advance(size);
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsResponse, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use proptest::prelude::*;

    fn encode_header(
        key: ApiKey,
        version: i16,
        client_id: Option<&'static str>,
        body: &[u8],
    ) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(77)
            .with_client_id(client_id.map(StrBytes::from_static_str));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        buf.extend_from_slice(body);
        buf.freeze()
    }

    /// Header v1 (non-flexible) and v2 (flexible) parse, with the body left as a slice.
    #[test]
    fn v1_and_v2_headers_parse() {
        for (key, version, hv) in [
            (ApiKey::Produce, 8, 1),
            (ApiKey::Metadata, 12, 2),
            (ApiKey::ApiVersions, 3, 2),
        ] {
            let frame = encode_header(key, version, Some("rdkafka"), b"BODY");
            let p = parse_request_header(frame.clone()).unwrap();
            assert_eq!(
                (p.api_key, p.api_version, p.correlation_id),
                (key as i16, version, 77)
            );
            assert_eq!(p.header_version, hv);
            assert_eq!(p.client_id.as_deref(), Some("rdkafka"));
            assert_eq!(&p.body[..], b"BODY");
            // Zero copy: the body points into the frame.
            assert_eq!(p.body.as_ptr(), frame[frame.len() - 4..].as_ptr());
        }
    }

    /// A null client id is kept as None; Kafka's view of it is "".
    #[test]
    fn null_client_id() {
        let p = parse_request_header(encode_header(ApiKey::Fetch, 12, None, b"")).unwrap();
        assert_eq!(p.client_id, None);
        assert_eq!(p.client_id_or_empty(), "");
    }

    /// A client id that is not UTF-8 is accepted with replacement characters, as Kafka does.
    #[test]
    fn non_utf8_client_id_is_accepted() {
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 2, 0xff, b'a', 9]);
        let p = parse_request_header(frame).unwrap();
        assert_eq!(p.client_id.as_deref(), Some("\u{fffd}a"));
        assert_eq!(&p.body[..], &[9]);
    }

    /// Unknown tagged fields in a v2 header are skipped.
    #[test]
    fn v2_header_tagged_fields_are_skipped() {
        let mut header = RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(12)
            .with_correlation_id(5);
        header
            .unknown_tagged_fields
            .insert(3, Bytes::from_static(b"abc"));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, 2).unwrap();
        buf.extend_from_slice(b"X");
        let p = parse_request_header(buf.freeze()).unwrap();
        assert_eq!(&p.body[..], b"X");
    }

    /// An unknown api key still yields key, version and correlation id for the log line.
    #[test]
    fn unknown_api_key_reports_ids() {
        let frame = Bytes::from_static(&[0x03, 0xe7, 0x00, 0x02, 0x00, 0x00, 0x00, 0x2a, 0xff]);
        assert_eq!(
            parse_request_header(frame),
            Err(HeaderError::UnknownApiKey {
                api_key: 999,
                api_version: 2,
                correlation_id: 42
            })
        );
    }

    /// Short and malformed headers are errors, not panics.
    #[test]
    fn truncated_headers_are_errors() {
        assert_eq!(
            parse_request_header(Bytes::new()),
            Err(HeaderError::Truncated { len: 0 })
        );
        assert_eq!(
            parse_request_header(Bytes::from_static(&[0; 7])),
            Err(HeaderError::Truncated { len: 7 })
        );
        let full = encode_header(ApiKey::Produce, 8, Some("client"), b"");
        for len in 8..full.len() {
            let err = parse_request_header(full.slice(..len)).unwrap_err();
            assert_eq!(err.correlation_id(), Some(77), "len {len}");
        }
    }

    /// Kafka 4.1's dispositions: handle, ApiVersions fallback, or close.
    #[test]
    fn classification_follows_kafka() {
        assert_eq!(
            classify_request(ApiKey::Produce as i16, 3),
            Disposition::Handle
        );
        assert_eq!(
            classify_request(ApiKey::Produce as i16, 2),
            Disposition::Close
        );
        assert_eq!(
            classify_request(ApiKey::Fetch as i16, 18),
            Disposition::Close
        );
        assert_eq!(
            classify_request(ApiKey::ApiVersions as i16, 4),
            Disposition::Handle
        );
        assert_eq!(
            classify_request(ApiKey::ApiVersions as i16, 5),
            Disposition::UnsupportedApiVersions
        );
        assert_eq!(
            classify_request(ApiKey::ApiVersions as i16, i16::MAX),
            Disposition::UnsupportedApiVersions
        );
        assert_eq!(
            classify_request(ApiKey::ShareGroupHeartbeat as i16, 0),
            Disposition::Close
        );
        assert_eq!(classify_request(999, 0), Disposition::Close);
    }

    /// The fallback answer is a v0 ApiVersions response with error 35 and ApiVersions' range.
    #[test]
    fn unsupported_api_versions_answer_is_v0_shaped() {
        let frame = unsupported_api_versions_frame(1234);
        let mut buf = frame.clone();
        assert_eq!(buf.get_i32() as usize, frame.len() - 4);
        let header = ResponseHeader::decode(&mut buf, 0).unwrap();
        assert_eq!(header.correlation_id, 1234);
        let body = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
        assert!(!buf.has_remaining());
        assert_eq!(
            body.error_code,
            kafka_protocol::error::ResponseError::UnsupportedVersion.code()
        );
        assert_eq!(body.api_keys.len(), 1);
        assert_eq!(
            (
                body.api_keys[0].api_key,
                body.api_keys[0].min_version,
                body.api_keys[0].max_version
            ),
            (18, 0, 4)
        );
    }

    /// KIP-511's client software name and version rule.
    #[test]
    fn api_versions_request_validation() {
        let req = |n: &'static str, v: &'static str| {
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str(n))
                .with_client_software_version(StrBytes::from_static_str(v))
        };
        assert!(api_versions_request_is_valid(
            &req("librdkafka", "2.12.1"),
            3
        ));
        assert!(api_versions_request_is_valid(
            &req("apache-kafka-java", "4.1.0"),
            4
        ));
        assert!(api_versions_request_is_valid(&req("a", "1"), 3));
        assert!(!api_versions_request_is_valid(&req("", "1"), 3));
        assert!(!api_versions_request_is_valid(&req("-x", "1"), 3));
        assert!(!api_versions_request_is_valid(&req("x", "1.0-"), 3));
        assert!(!api_versions_request_is_valid(&req("x y", "1"), 3));
        assert!(api_versions_request_is_valid(&req("", ""), 2));
    }

    proptest! {
        /// Any bytes give a header or an error, never a panic.
        #[test]
        fn garbage_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), key in 0i16..100) {
            let mut v = bytes;
            if v.len() >= 2 {
                v[..2].copy_from_slice(&key.to_be_bytes());
            }
            let _ = parse_request_header(Bytes::from(v));
        }
    }
}
