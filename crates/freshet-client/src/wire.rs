//! Primitive Kafka wire encoding for the hand-framed messages: big-endian integers, unsigned
//! varints, compact and classic strings/arrays, tagged fields; and a bounds-checked reader.
//!
//! The reader never panics: every read checks the bytes left and returns
//! [`ClientError::Protocol`] when they run out or a length is negative or absurd.

use super::{ClientError, Result};
use freshet_protocol::varint;

/// Appends an unsigned varint (compact lengths, tag counts).
pub fn put_uvarint(buf: &mut Vec<u8>, v: u64) {
    varint::put_unsigned(buf, v);
}

/// Appends a string: compact (uvarint len+1) when `flexible`, else i16 length.
pub fn put_string(buf: &mut Vec<u8>, s: &str, flexible: bool) {
    if flexible {
        put_uvarint(buf, s.len() as u64 + 1);
    } else {
        buf.extend_from_slice(&(s.len() as i16).to_be_bytes());
    }
    buf.extend_from_slice(s.as_bytes());
}

/// Appends an array length: compact (uvarint n+1) when `flexible`, else i32.
pub fn put_array_len(buf: &mut Vec<u8>, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, n as u64 + 1);
    } else {
        buf.extend_from_slice(&(n as i32).to_be_bytes());
    }
}

/// A bounds-checked cursor over a response.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(ClientError::Protocol(format!(
                "truncated response: need {n} bytes at {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let slice = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// A big-endian i16.
    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// A big-endian i32.
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// A big-endian i64.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// An unsigned varint of at most 5 bytes (Kafka's lengths are 32-bit).
    pub fn uvarint(&mut self) -> Result<u32> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match varint::read_uvarint(rest) {
            Ok((value, used)) => {
                self.pos += used;
                Ok(value)
            }
            Err(varint::VarintError::Truncated) => {
                self.pos = self.buf.len();
                Err(ClientError::Protocol(format!(
                    "truncated response: need 1 bytes at {}, 0 left",
                    self.pos
                )))
            }
            Err(varint::VarintError::TooLong) => {
                self.pos += varint::VARINT_BYTES_MAX;
                Err(ClientError::Protocol("varint longer than 5 bytes".into()))
            }
        }
    }

    /// An array length (compact or i32); `None` for a null array.
    pub fn array_len(&mut self, flexible: bool) -> Result<Option<usize>> {
        let n = if flexible {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if n < 0 {
            return Ok(None);
        }
        // Every element takes at least one byte: a longer count is malformed.
        if n as usize > self.remaining() {
            return Err(ClientError::Protocol(format!("array of {n} elements")));
        }
        Ok(Some(n as usize))
    }

    /// A string (compact or i16-prefixed); `None` for null.
    pub fn string(&mut self, flexible: bool) -> Result<Option<&'a str>> {
        let n = if flexible {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i16()?)
        };
        if n < 0 {
            return Ok(None);
        }
        let bytes = self.bytes(n as usize)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ClientError::Protocol("string is not UTF-8".into()))
    }

    /// Nullable bytes (compact or i32-prefixed); `None` for null.
    pub fn nullable_bytes(&mut self, flexible: bool) -> Result<Option<&'a [u8]>> {
        let n = if flexible {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if n < 0 {
            return Ok(None);
        }
        self.bytes(n as usize).map(Some)
    }

    /// Skips a tagged-field section (flexible versions only).
    pub fn skip_tagged_fields(&mut self) -> Result<()> {
        let count = self.uvarint()?;
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()?;
            self.bytes(size as usize)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_truncation_is_an_error() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, v);
            assert_eq!(Reader::new(&buf).uvarint().expect("decodes") as u64, v);
            assert!(Reader::new(&buf[..buf.len() - 1]).uvarint().is_err());
        }
        assert!(Reader::new(&[0xff; 6]).uvarint().is_err());
        // A huge array count with few bytes behind it is refused, not allocated.
        let mut buf = Vec::new();
        put_uvarint(&mut buf, 1 << 30);
        assert!(Reader::new(&buf).array_len(true).is_err());
    }
}
