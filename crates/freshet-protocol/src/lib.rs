//! The Kafka wire protocol: framing, headers, message bodies, the ApiVersions table and the
//! hand-framed Fetch response. Pure code: no I/O, no runtime, no shared state.
//!
//! A request's way through this layer, driven by the connection loop in `server`:
//! 1. [`frame::take_frame`] splits a size-prefixed frame off the read buffer (limit:
//!    `socket.request.max.bytes`), never allocating from an untrusted size.
//! 2. [`header::parse_request_header`] reads key, version, correlation id and client id, leaving
//!    the body as a zero-copy slice; [`header::classify_request`] says whether to handle the
//!    request, answer the ApiVersions fallback, or close the connection, as Kafka 4.1 does.
//! 3. [`codec::decode_body`] decodes the body with the `kafka-protocol` crate, after a pre-scan
//!    that rejects hostile array lengths (the crate would reserve memory from them) and inside
//!    `catch_unwind` as a last resort: hostile input gives an error, never a panic or an abort.
//! 4. [`codec::encode_response`] frames a response (size prefix, header of the right version,
//!    body); Fetch responses go through [`fetch::encode_fetch_response`] instead, which frames
//!    them by hand into pieces so record bytes are never copied.
//!
//! Errors: [`frame::FrameError`] and [`header::HeaderError`] always end the connection;
//! [`ProtocolError`] covers bodies and encoding, and maps to a Kafka error code in one place
//! ([`ProtocolError::error_code`]).
//!
//! [`varint`] is the one codec of Kafka's varints (unsigned, zigzag varint and varlong) for the
//! protocol and for the record format in the broker.
//!
//! The record batch v2 format is here too, as bytes in and verdicts out: [`batch`] (the 61-byte
//! header viewed in place, CRC-32C, validation of a produced record set, in-place rewrites,
//! encoding) and [`records`] (walking every record of a batch, compressed ones as a bounded
//! stream). Their errors are [`BatchError`]s; the broker maps them to its storage error and to
//! Kafka codes in its `error` module.
//!
//! Not here yet: SASL framing, and request types beyond [`versions::SUPPORTED_APIS`].

pub mod any_request;
pub mod batch;
pub mod codec;
pub mod fetch;
pub mod frame;
#[cfg(test)]
mod fuzz_tests;
pub mod header;
pub mod murmur2;
pub mod records;
mod schema;
#[rustfmt::skip]
mod schema_table;
pub mod varint;
pub mod versions;

pub use batch::BatchError;
pub use codec::{decode_body, encode_response};
pub use fetch::{
    encode_fetch_response, AbortedTransaction, FetchPartition, FetchResponseParts, FetchTopic,
    NodeEndpoint,
};
pub use frame::{take_frame, FrameError};
pub use header::{classify_request, parse_request_header, Disposition, HeaderError, ParsedRequest};
pub use versions::{api_versions_response, supported_range};

use kafka_protocol::error::ResponseError;

/// An error decoding a request body or encoding a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not a valid encoding of the message at this version (truncated, bad lengths,
    /// bad UTF-8, trailing bytes, a version the message does not have). Kafka closes the
    /// connection on such a request (`InvalidRequestException` in `RequestContext.parseRequest`).
    #[error("malformed {message} v{version}: {reason}")]
    Malformed {
        /// The message type.
        message: &'static str,
        /// The version it was decoded at.
        version: i16,
        /// What was wrong.
        reason: String,
    },
    /// A response could not be encoded (a bug: a string or array too long for its type, or a
    /// field set that the version cannot carry).
    #[error("cannot encode {message} v{version}: {reason}")]
    Encode {
        /// The message type.
        message: &'static str,
        /// The version.
        version: i16,
        /// What was wrong.
        reason: String,
    },
}

impl ProtocolError {
    /// The Kafka error code for this error, where a response is sent at all.
    pub fn error_code(&self) -> ResponseError {
        match self {
            ProtocolError::Malformed { .. } => ResponseError::InvalidRequest,
            ProtocolError::Encode { .. } => ResponseError::UnknownServerError,
        }
    }
}
