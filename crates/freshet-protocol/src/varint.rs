//! Kafka's variable-length integers: the one codec of the workspace.
//!
//! Two encodings, both little-endian groups of 7 bits with the high bit set on every byte but
//! the last:
//! - **unsigned varints** (compact lengths, tag counts and sizes of flexible messages; Kafka's
//!   `ByteUtils.readUnsignedVarint`), at most [`VARINT_BYTES_MAX`] bytes for a 32-bit value;
//! - **zigzag varints and varlongs** (every field of a record in a v2 record batch; Kafka's
//!   `ByteUtils.readVarint` / `readVarlong`), at most [`VARINT_BYTES_MAX`] or
//!   [`VARLONG_BYTES_MAX`] bytes.
//!
//! Readers never panic on hostile input: a cut encoding is [`VarintError::Truncated`], one
//! longer than its limit [`VarintError::TooLong`]. Bits past the 64th (or, for the 32-bit
//! readers, past the 32nd) are dropped, as Kafka does. The slice readers return the value and
//! the bytes it took; [`read_unsigned_from`] is the same decoder over any byte source (a
//! streaming decompressor, a [`bytes::Buf`]), with the caller's own errors. Writers append to
//! any [`BufMut`] (a `Vec<u8>` or a `BytesMut`).
//!
//! Range checks beyond the encoding (a record length that must fit an `i32`, a non-negative
//! count) are the caller's: they differ from field to field.

use bytes::{Buf, BufMut};

/// Bytes of the longest varint of a 32-bit value.
pub const VARINT_BYTES_MAX: usize = 5;
/// Bytes of the longest varlong (a 64-bit value).
pub const VARLONG_BYTES_MAX: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    /// The input ended inside the varint.
    #[error("truncated varint")]
    Truncated,
    /// The varint has more bytes than its limit allows.
    #[error("varint longer than its limit")]
    TooLong,
}

/// Zigzag-decodes `raw` (0, -1, 1, -2, ... for 0, 1, 2, 3, ...).
#[inline(always)]
pub fn zigzag_decode(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// Zigzag-encodes `v`.
#[inline(always)]
pub fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Decodes an unsigned varint of at most `max_bytes` bytes (clamped to [`VARLONG_BYTES_MAX`])
/// from `next`, which yields the next byte or the caller's error for the end of the input;
/// `too_long` makes the error for an encoding longer than `max_bytes`.
#[inline(always)]
pub fn read_unsigned_from<E>(
    max_bytes: usize,
    mut next: impl FnMut() -> Result<u8, E>,
    too_long: impl FnOnce() -> E,
) -> Result<u64, E> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes.min(VARLONG_BYTES_MAX) {
        let b = next()?;
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(raw);
        }
    }
    Err(too_long())
}

/// An unsigned varint of at most `max_bytes` bytes at the start of `buf`: (value, bytes used).
#[inline(always)]
pub fn read_unsigned(buf: &[u8], max_bytes: usize) -> Result<(u64, usize), VarintError> {
    let mut used = 0;
    let raw = read_unsigned_from(
        max_bytes,
        || {
            let b = *buf.get(used).ok_or(VarintError::Truncated)?;
            used += 1;
            Ok(b)
        },
        || VarintError::TooLong,
    )?;
    Ok((raw, used))
}

/// An unsigned varint of a 32-bit value (at most 5 bytes, bits past the 32nd dropped, as
/// Kafka's `readUnsignedVarint`): (value, bytes used).
#[inline(always)]
pub fn read_uvarint(buf: &[u8]) -> Result<(u32, usize), VarintError> {
    let (raw, used) = read_unsigned(buf, VARINT_BYTES_MAX)?;
    Ok((raw as u32, used))
}

/// Takes an unsigned varint of a 32-bit value off the front of `buf`, as [`read_uvarint`];
/// `None` if it is cut or longer than 5 bytes (Kafka's "illegal varint").
#[inline]
pub fn get_uvarint(buf: &mut impl Buf) -> Option<u32> {
    read_unsigned_from(
        VARINT_BYTES_MAX,
        || {
            if buf.has_remaining() {
                Ok(buf.get_u8())
            } else {
                Err(())
            }
        },
        || (),
    )
    .ok()
    .map(|raw| raw as u32)
}

/// A zigzag varint of at most `max_bytes` bytes at the start of `buf`: (value, bytes used).
/// No range check: a 5-byte varint can hold more than an `i32`.
#[inline(always)]
pub fn read_zigzag(buf: &[u8], max_bytes: usize) -> Result<(i64, usize), VarintError> {
    let (raw, used) = read_unsigned(buf, max_bytes)?;
    Ok((zigzag_decode(raw), used))
}

/// A zigzag varint of at most `max_bytes` bytes at `buf[*pos..]` (a cursor over a record),
/// advancing `*pos` past it (on an error, `*pos` is unspecified); a `*pos` past the end is
/// [`VarintError::Truncated`].
#[inline(always)]
pub fn read_zigzag_at(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<i64, VarintError> {
    let raw = read_unsigned_from(
        max_bytes,
        || {
            let b = *buf.get(*pos).ok_or(VarintError::Truncated)?;
            *pos += 1;
            Ok(b)
        },
        || VarintError::TooLong,
    )?;
    Ok(zigzag_decode(raw))
}

/// A zigzag varlong (at most 10 bytes) at the start of `buf`: (value, bytes used).
#[inline(always)]
pub fn read_varlong(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    read_zigzag(buf, VARLONG_BYTES_MAX)
}

/// Appends `v` as an unsigned varint.
#[inline]
pub fn put_unsigned(out: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Appends `v` as a zigzag varint (the record format's varint and varlong).
#[inline]
pub fn put_varlong(out: &mut impl BufMut, v: i64) {
    put_unsigned(out, zigzag_encode(v));
}

/// Bytes [`put_unsigned`] writes for `v`.
#[inline]
pub fn unsigned_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes [`put_varlong`] writes for `v`.
#[inline]
pub fn varlong_len(v: i64) -> usize {
    unsigned_len(zigzag_encode(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i64::from(i32::MAX), &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i64::from(i32::MIN), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            put_varlong(&mut out, *v);
            assert_eq!(&out[..], *bytes, "{v}");
            assert_eq!(varlong_len(*v), bytes.len());
            assert_eq!(read_varlong(bytes), Ok((*v, bytes.len())));
        }
        let mut out = Vec::new();
        put_varlong(&mut out, i64::MIN);
        assert_eq!(out.len(), VARLONG_BYTES_MAX);
        assert_eq!(read_varlong(&out), Ok((i64::MIN, VARLONG_BYTES_MAX)));
    }

    #[test]
    fn truncated_and_overlong_are_errors() {
        assert_eq!(read_varlong(&[]), Err(VarintError::Truncated));
        assert_eq!(read_varlong(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(read_varlong(&[0xff; 11]), Err(VarintError::TooLong));
        assert_eq!(read_zigzag(&[0xff; 6], 5), Err(VarintError::TooLong));
        assert_eq!(read_uvarint(&[0x80; 5]), Err(VarintError::TooLong));
        assert_eq!(read_uvarint(&[0x80; 4]), Err(VarintError::Truncated));
        // A limit past 10 bytes is clamped, never a shift overflow.
        assert_eq!(read_unsigned(&[0x80; 20], 64), Err(VarintError::TooLong));
        // Bits past the 32nd are dropped by the 32-bit reader, as Kafka does.
        assert_eq!(
            read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
            Ok((u32::MAX, 5))
        );
        // The cursor form advances past the varint, and a cursor past the end is an error.
        let mut pos = 1;
        assert_eq!(
            read_zigzag_at(&[0x00, 0x80, 0x01, 0x07], &mut pos, 5),
            Ok(64)
        );
        assert_eq!(pos, 3);
        let mut pos = 9;
        assert_eq!(
            read_zigzag_at(&[0x00], &mut pos, 5),
            Err(VarintError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn varlongs_round_trip(v in any::<i64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            let len = out.len();
            prop_assert_eq!(len, varlong_len(v));
            out.extend_from_slice(&tail);
            prop_assert_eq!(read_varlong(&out), Ok((v, len)));
            for cut in 0..len {
                prop_assert_eq!(read_varlong(&out[..cut]), Err(VarintError::Truncated));
            }
        }

        #[test]
        fn unsigned_round_trip(v in any::<u32>()) {
            let mut out = bytes::BytesMut::new();
            put_unsigned(&mut out, u64::from(v));
            prop_assert_eq!(out.len(), unsigned_len(u64::from(v)));
            prop_assert_eq!(read_uvarint(&out), Ok((v, out.len())));
            let mut buf = out.freeze();
            prop_assert_eq!(get_uvarint(&mut buf), Some(v));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16), max in 0usize..16) {
            if let Ok((_, used)) = read_unsigned(&bytes, max) {
                prop_assert!((1..=max.min(VARLONG_BYTES_MAX).min(bytes.len())).contains(&used));
            }
        }
    }
}
