//! Decoding request bodies and encoding responses with the `kafka-protocol` crate, safely.
//!
//! # Why decoding needs a guard
//! kafka-protocol 0.18 decodes arrays as `Vec::with_capacity(n)` with `n` read from the wire
//! (`types::Array` takes an `i32`, `types::CompactArray` a varint up to `u32::MAX`). A 20-byte
//! request announcing 2^31 topics makes it reserve hundreds of GiB before the first element
//! fails to decode; the allocation fails and Rust *aborts* the whole broker (not a panic, so
//! `catch_unwind` cannot help). Strings and bytes are safe: they are sliced from the buffer after
//! a length check (`try_get_bytes`). Known upstream (kafka-protocol-rs PRs #152, #161, #200).
//!
//! So [`decode_body`] first walks the body with a schema of the message (see `schema`), which
//! checks what Kafka's own generated readers check: every array count fits in the bytes left
//! (each element costs at least one byte), every string and bytes length fits, varints are at
//! most 5 bytes. Only then does the crate decode it, inside `catch_unwind` as a last line of
//! defence. Trailing bytes after the message are ignored, as Kafka does.
//!
//! Encoding: [`encode_response`] writes size prefix, response header and body into one buffer
//! sized exactly by `compute_size`. ApiVersions responses always use header v0 (KIP-511).

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Encodable, Request};

use crate::protocol::frame::SIZE_PREFIX_BYTES;
use crate::protocol::{schema, ProtocolError};

fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Decodes a request body of type `T` at `version`. Never panics and never allocates more than a
/// small multiple of `body.len()`, whatever the bytes. The result shares `body`'s memory for its
/// strings and record bytes.
pub fn decode_body<T: Request>(body: Bytes, version: i16) -> Result<T, ProtocolError> {
    let message = short_name::<T>();
    let malformed = |reason: String| ProtocolError::Malformed {
        message,
        version,
        reason,
    };
    if !(T::VERSIONS.min..=T::VERSIONS.max).contains(&version) {
        return Err(malformed(format!("version not in {}", T::VERSIONS)));
    }
    match schema::request_schema(T::KEY) {
        Some(s) => schema::prescan(s, &body, version).map_err(|e| malformed(e.to_string()))?,
        // Every served API has a schema (tested); this is for the long tail, used by tests.
        None => {
            return Err(malformed(
                "no pre-scan schema for this request type".to_owned(),
            ))
        }
    }
    let mut buf = body;
    match catch_unwind(AssertUnwindSafe(|| T::decode(&mut buf, version))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(malformed(e.to_string())),
        Err(_) => Err(malformed("decoder panicked".to_owned())),
    }
}

/// Encodes a complete response frame: 4-byte size, response header (v0, or v1 with tagged fields
/// for flexible versions; always v0 for ApiVersions), then `body` at `api_version`.
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, ProtocolError> {
    let message = short_name::<T>();
    let fail = |reason: String| ProtocolError::Encode {
        message,
        version: api_version,
        reason,
    };
    let header_version = api_key.response_header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_len = header
        .compute_size(header_version)
        .map_err(|e| fail(e.to_string()))?;
    let body_len = body
        .compute_size(api_version)
        .map_err(|e| fail(e.to_string()))?;
    let frame_len = header_len + body_len;
    let frame_len_i32 =
        i32::try_from(frame_len).map_err(|_| fail(format!("response of {frame_len} bytes")))?;
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + frame_len);
    out.put_i32(frame_len_i32);
    header
        .encode(&mut out, header_version)
        .map_err(|e| fail(e.to_string()))?;
    body.encode(&mut out, api_version)
        .map_err(|e| fail(e.to_string()))?;
    // compute_size and encode are generated together; a mismatch is a bug in the crate.
    assert_eq!(
        out.len(),
        SIZE_PREFIX_BYTES + frame_len,
        "{message} v{api_version} size mismatch"
    );
    Ok(out.freeze())
}
