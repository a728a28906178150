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
//! most 5 bytes; and it estimates the memory the decoded message will take, which must stay
//! under [`decoded_memory_bytes_max`]. Only then does the crate decode it, inside
//! `catch_unwind` as a last line of defence. The pre-scan and the crate must then agree on the
//! bytes read, else the request is refused (a schema bug, never seen in the fuzz tests).
//! Trailing bytes after the message are ignored, as Kafka does.
//!
//! Encoding: [`encode_response`] writes size prefix, response header and body into one buffer
//! sized exactly by `compute_size`. ApiVersions responses always use header v0 (KIP-511).

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Encodable, Request};

use crate::frame::SIZE_PREFIX_BYTES;
use crate::{schema, ProtocolError};

fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Memory a decoded request may take, beyond its body, whatever its size.
pub const DECODED_MEMORY_BYTES_BASE: usize = 1 << 20;

/// Memory a decoded request may take per byte of its body. Real requests stay well below:
/// strings and records are slices of the body, the densest real arrays (partition lists of
/// Fetch, ListOffsets) cost 2-6 bytes of memory per wire byte, lists of 1-3 character topic
/// names about 10. Only degenerate bodies (millions of empty structs) reach the limit.
pub const DECODED_MEMORY_BYTES_PER_BODY_BYTE: usize = 16;

/// The most memory a decoded body of `body_len` bytes may take.
pub fn decoded_memory_bytes_max(body_len: usize) -> usize {
    DECODED_MEMORY_BYTES_BASE
        .saturating_add(body_len.saturating_mul(DECODED_MEMORY_BYTES_PER_BODY_BYTE))
}

/// Decodes a request body of type `T` at `version`. Never panics, and never allocates more than
/// [`decoded_memory_bytes_max`] of `body.len()`, whatever the bytes. The result shares `body`'s
/// memory for its strings and record bytes.
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
    let Some(layout) = schema::request_schema(T::KEY) else {
        // Every served API has a schema (a test checks it); refuse the rest rather than risk it.
        return Err(malformed(
            "no pre-scan schema for this request type".to_owned(),
        ));
    };
    let scan = schema::prescan(layout, &body, version).map_err(|e| malformed(e.to_string()))?;
    let memory_max = decoded_memory_bytes_max(body.len());
    if scan.memory_bytes > memory_max {
        return Err(malformed(format!(
            "would take {} bytes of memory decoded from {} bytes (limit {memory_max})",
            scan.memory_bytes,
            body.len()
        )));
    }
    let scanned = scan.wire_bytes;
    let body_len = body.len();
    let mut buf = body;
    let value = match catch_unwind(AssertUnwindSafe(|| T::decode(&mut buf, version))) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => return Err(malformed(e.to_string())),
        Err(_) => return Err(malformed("decoder panicked".to_owned())),
    };
    let decoded = body_len - buf.len();
    if decoded != scanned {
        // The schema and the crate disagree: a bug in schema_table, not bad input. Refuse the
        // request rather than trust either reading; tests assert this never happens.
        tracing::error!(
            message,
            version,
            scanned,
            decoded,
            "pre-scan schema out of step with decoder"
        );
        debug_assert_eq!(
            scanned, decoded,
            "{message} v{version}: pre-scan out of step with decoder"
        );
        return Err(malformed("pre-scan out of step with decoder".to_owned()));
    }
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::{MetadataResponse, ProduceRequest};
    use kafka_protocol::protocol::Decodable;

    /// Flexible responses get header v1 (with its tagged-field byte), older ones header v0.
    #[test]
    fn response_header_version_follows_the_api_version() {
        for (v, header_version) in [(8, 0), (9, 1), (13, 1)] {
            let body = MetadataResponse::default().with_cluster_id(None);
            let frame = encode_response(ApiKey::Metadata, v, -5, &body).unwrap();
            let mut buf = frame.clone();
            assert_eq!(buf.get_i32() as usize, frame.len() - 4);
            assert_eq!(
                ResponseHeader::decode(&mut buf, header_version)
                    .unwrap()
                    .correlation_id,
                -5
            );
            assert_eq!(MetadataResponse::decode(&mut buf, v).unwrap(), body);
            assert!(!buf.has_remaining());
        }
    }

    /// A version the message does not have is an error, not a panic.
    #[test]
    fn out_of_range_versions_are_refused() {
        let err = decode_body::<ProduceRequest>(Bytes::from_static(&[0; 32]), 2).unwrap_err();
        assert_eq!(
            err.error_code(),
            kafka_protocol::error::ResponseError::InvalidRequest
        );
        assert!(decode_body::<ProduceRequest>(Bytes::new(), 99).is_err());
    }

    /// Encoding errors (a field the version cannot carry) come back as errors.
    #[test]
    fn unencodable_responses_are_errors() {
        let body = kafka_protocol::messages::FetchResponse::default().with_session_id(7);
        assert!(encode_response(ApiKey::Fetch, 6, 1, &body).is_err());
        assert!(encode_response(ApiKey::Fetch, 7, 1, &body).is_ok());
    }
}
