//! Size-prefixed framing of Kafka requests on a byte stream.
//!
//! Every Kafka request is an `INT32` big-endian size followed by that many bytes. This module
//! splits complete frames off the front of a connection's read buffer.
//!
//! Invariants:
//! - A size is checked against `max_request_bytes` (Kafka's `socket.request.max.bytes`) as soon
//!   as its 4 bytes arrive; nothing is ever allocated or reserved from an untrusted size. The
//!   caller's buffer only grows by what the peer actually sent.
//! - A negative or too-large size is a connection-level error: Kafka's `NetworkReceive` throws
//!   `InvalidReceiveException` and the `Selector` closes the connection without an answer, and so
//!   must the server. A size of 0 is accepted here (Kafka accepts it too) and then fails header
//!   parsing, which also closes the connection.
//!
//! Not done here: reading the socket, and choosing how much to read ahead.

use bytes::{Buf, BytesMut};

/// Kafka's default `socket.request.max.bytes`: 100 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 104_857_600;

/// Length of the size prefix in front of every request and response.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// Why a frame could not be taken; either way the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The size prefix announces more than `socket.request.max.bytes`.
    #[error("request of {size} bytes exceeds socket.request.max.bytes = {max}")]
    TooLarge {
        /// The announced size.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The size prefix is negative.
    #[error("invalid request size {size}")]
    Invalid {
        /// The announced size.
        size: i32,
    },
}

/// Splits one complete request frame (without its 4-byte size prefix) off the front of `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete; the caller reads more and calls again. On
/// `Ok(Some(frame))`, `buf` has lost exactly the prefix and the frame, and `frame` shares the
/// allocation (no copy). On error `buf` is left untouched and the connection must be closed.
pub fn take_frame(
    buf: &mut BytesMut,
    max_request_bytes: usize,
) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < SIZE_PREFIX_BYTES {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(FrameError::Invalid { size });
    }
    let size = size as usize;
    if size > max_request_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: max_request_bytes,
        });
    }
    if buf.len() - SIZE_PREFIX_BYTES < size {
        return Ok(None);
    }
    buf.advance(SIZE_PREFIX_BYTES);
    let frame = buf.split_to(size);
    assert_eq!(frame.len(), size);
    Ok(Some(frame))
}
