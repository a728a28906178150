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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// A frame is returned only once all its bytes are there, and shares the buffer's memory.
    #[test]
    fn frame_is_taken_only_when_complete() {
        let bytes = framed(b"hello");
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(take_frame(&mut buf, 100), Ok(None), "after {i} bytes");
            buf.extend_from_slice(&[*b]);
        }
        let frame = take_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!(&frame[..], b"hello");
        assert!(buf.is_empty());
        assert_eq!(take_frame(&mut buf, 100), Ok(None));
    }

    /// Back-to-back frames come out one at a time, in order; an empty frame is a frame.
    #[test]
    fn pipelined_frames_come_out_in_order() {
        let mut buf = BytesMut::new();
        for p in [&b"a"[..], b"", b"ccc"] {
            buf.extend_from_slice(&framed(p));
        }
        buf.extend_from_slice(&[0, 0, 0, 9, 1]); // A partial fourth frame.
        assert_eq!(&take_frame(&mut buf, 100).unwrap().unwrap()[..], b"a");
        assert_eq!(&take_frame(&mut buf, 100).unwrap().unwrap()[..], b"");
        assert_eq!(&take_frame(&mut buf, 100).unwrap().unwrap()[..], b"ccc");
        assert_eq!(take_frame(&mut buf, 100), Ok(None));
        assert_eq!(buf.len(), 5);
    }

    /// A 2 GB length prefix is refused at once, without reserving anything, and the buffer is
    /// left as it was.
    #[test]
    fn two_gigabyte_prefix_is_refused_without_allocating() {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        let capacity = buf.capacity();
        let err = take_frame(&mut buf, REQUEST_BYTES_MAX_DEFAULT).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                size: i32::MAX as usize,
                max: REQUEST_BYTES_MAX_DEFAULT
            }
        );
        assert_eq!(buf.len(), 6);
        assert_eq!(buf.capacity(), capacity);
    }

    /// The limit is inclusive, as Kafka's `receiveSize > maxSize` check.
    #[test]
    fn size_equal_to_limit_is_accepted() {
        let mut buf = BytesMut::from(&framed(&[7; 10])[..]);
        assert_eq!(
            take_frame(&mut buf, 9),
            Err(FrameError::TooLarge { size: 10, max: 9 })
        );
        assert_eq!(take_frame(&mut buf, 10).unwrap().unwrap().len(), 10);
    }

    /// A negative size closes the connection.
    #[test]
    fn negative_size_is_invalid() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe, 1, 2][..]);
        assert_eq!(
            take_frame(&mut buf, 100),
            Err(FrameError::Invalid { size: -2 })
        );
    }

    proptest! {
        /// However a stream of frames is cut into reads, the same frames come out.
        #[test]
        fn any_read_chunking_yields_the_same_frames(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cuts in proptest::collection::vec(1usize..17, 1..64),
        ) {
            let stream: Vec<u8> = payloads.iter().flat_map(|p| framed(p)).collect();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut cut = cuts.iter().cycle();
            while pos < stream.len() {
                let n = (*cut.next().unwrap()).min(stream.len() - pos);
                buf.extend_from_slice(&stream[pos..pos + n]);
                pos += n;
                while let Some(f) = take_frame(&mut buf, 64).unwrap() {
                    out.push(f.to_vec());
                }
            }
            prop_assert_eq!(out, payloads);
            prop_assert!(buf.is_empty());
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..100) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = take_frame(&mut buf, max) {}
        }
    }
}
