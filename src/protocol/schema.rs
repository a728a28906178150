//! A pre-scan of request bodies against their wire layout, run before the `kafka-protocol` crate
//! decodes them, so that hostile lengths are rejected before the crate reserves memory for them.
//!
//! The layouts live in `schema_table` (generated from the crate's own decoders by
//! `schema_gen.py`, so the walk reads exactly the fields the crate reads, in the same order, with
//! the same version conditions). The walk allocates nothing and checks what Kafka's generated
//! Java readers check:
//! - an array count must not exceed the bytes left (every element takes at least one byte);
//!   this is the check the crate lacks, whose `Vec::with_capacity(count)` would otherwise abort
//!   the process on a 2^31 count;
//! - a string, bytes or tagged-field length must fit in the bytes left;
//! - a varint is at most 5 bytes;
//! - a known tagged field must be valid at the version (the crate rejects it otherwise).
//!
//! It is deliberately more lenient than the crate elsewhere (null markers on non-nullable fields,
//! UTF-8): the crate rejects those itself, without allocating. Nesting depth is bounded by the
//! schemas (no recursive message types), so the walk needs no depth limit; its time is linear in
//! the body size because every array element consumes at least one byte or fails.

use bytes::Buf;

use crate::protocol::header::read_uvarint;

pub(crate) use super::schema_table::request_schema;

/// A wire type, as the crate decodes it.
#[derive(Debug)]
pub(crate) enum Ty {
    /// 1 byte (int8, boolean).
    Int8,
    /// 2 bytes (int16, uint16).
    Int16,
    /// 4 bytes (int32, uint32).
    Int32,
    /// 8 bytes (int64, float64).
    Int64,
    /// 16 bytes.
    Uuid,
    /// int16 length (-1 = null), then bytes.
    String,
    /// uvarint length + 1 (0 = null), then bytes.
    CompactString,
    /// int32 length (-1 = null), then bytes (also records).
    Bytes,
    /// uvarint length + 1 (0 = null), then bytes.
    CompactBytes,
    /// int32 count (-1 = null), then elements.
    Array(&'static Ty),
    /// uvarint count + 1 (0 = null), then elements.
    CompactArray(&'static Ty),
    /// The fields of a struct, at the same version.
    Struct(&'static StructSchema),
}

/// A field present in versions `min..=max`.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) ty: Ty,
    pub(crate) min: i16,
    pub(crate) max: i16,
}

/// A known tagged field, valid in versions `min..=max`.
#[derive(Debug)]
pub(crate) struct Tagged {
    pub(crate) tag: u32,
    pub(crate) ty: Ty,
    pub(crate) min: i16,
    pub(crate) max: i16,
}

/// The layout of one message or struct.
#[derive(Debug)]
pub(crate) struct StructSchema {
    /// Name of the struct, for errors.
    pub(crate) name: &'static str,
    /// First version with a tagged-field section (flexible versions), `i16::MAX` if none.
    pub(crate) tagged_from: i16,
    /// Fields in wire order; several entries may share a name with disjoint versions.
    pub(crate) fields: &'static [Field],
    /// Known tagged fields.
    pub(crate) tagged: &'static [Tagged],
}

/// Why a body failed the pre-scan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("{0}: truncated")]
    Truncated(&'static str),
    #[error("{what}: array of {count} elements with only {left} bytes left")]
    ArrayTooLong {
        what: &'static str,
        count: u64,
        left: usize,
    },
    #[error("{0}: negative length")]
    NegativeLength(&'static str),
    #[error("{0}: malformed varint")]
    Varint(&'static str),
    #[error("{what}: tag {tag} is not valid at version {version}")]
    TagNotValid {
        what: &'static str,
        tag: u32,
        version: i16,
    },
}

/// Walks `body` as a `schema` message at `version`. Trailing bytes are allowed (Kafka ignores them).
pub(crate) fn prescan(
    schema: &'static StructSchema,
    body: &[u8],
    version: i16,
) -> Result<(), ScanError> {
    let mut buf = body;
    walk_struct(schema, &mut buf, version)
}

fn walk_struct(s: &'static StructSchema, buf: &mut &[u8], version: i16) -> Result<(), ScanError> {
    for f in s
        .fields
        .iter()
        .filter(|f| (f.min..=f.max).contains(&version))
    {
        walk(&f.ty, s.name, buf, version)?;
    }
    if version >= s.tagged_from {
        let count = read_uvarint(buf).ok_or(ScanError::Varint(s.name))?;
        for _ in 0..count {
            let tag = read_uvarint(buf).ok_or(ScanError::Varint(s.name))?;
            let size = read_uvarint(buf).ok_or(ScanError::Varint(s.name))? as usize;
            match s.tagged.iter().find(|t| t.tag == tag) {
                // Like the crate, a known tagged field is decoded from the stream, not the slice.
                Some(t) if (t.min..=t.max).contains(&version) => walk(&t.ty, s.name, buf, version)?,
                Some(_) => {
                    return Err(ScanError::TagNotValid {
                        what: s.name,
                        tag,
                        version,
                    })
                }
                None => skip(buf, size, s.name)?,
            }
        }
    }
    Ok(())
}

fn skip(buf: &mut &[u8], n: usize, what: &'static str) -> Result<(), ScanError> {
    if buf.len() < n {
        return Err(ScanError::Truncated(what));
    }
    buf.advance(n);
    Ok(())
}

fn walk(
    ty: &'static Ty,
    what: &'static str,
    buf: &mut &[u8],
    version: i16,
) -> Result<(), ScanError> {
    match ty {
        Ty::Int8 => skip(buf, 1, what),
        Ty::Int16 => skip(buf, 2, what),
        Ty::Int32 => skip(buf, 4, what),
        Ty::Int64 => skip(buf, 8, what),
        Ty::Uuid => skip(buf, 16, what),
        Ty::String => {
            let len = read_i16(buf, what)?;
            match len {
                -1 => Ok(()),
                n if n >= 0 => skip(buf, n as usize, what),
                _ => Err(ScanError::NegativeLength(what)),
            }
        }
        Ty::Bytes => {
            let len = read_i32(buf, what)?;
            match len {
                -1 => Ok(()),
                n if n >= 0 => skip(buf, n as usize, what),
                _ => Err(ScanError::NegativeLength(what)),
            }
        }
        Ty::CompactString | Ty::CompactBytes => {
            match read_uvarint(buf).ok_or(ScanError::Varint(what))? {
                0 => Ok(()),
                n => skip(buf, (n - 1) as usize, what),
            }
        }
        Ty::Array(elem) => {
            let count = read_i32(buf, what)?;
            match count {
                -1 => Ok(()),
                n if n >= 0 => walk_elements(elem, what, u64::from(n as u32), buf, version),
                _ => Err(ScanError::NegativeLength(what)),
            }
        }
        Ty::CompactArray(elem) => match read_uvarint(buf).ok_or(ScanError::Varint(what))? {
            0 => Ok(()),
            n => walk_elements(elem, what, u64::from(n - 1), buf, version),
        },
        Ty::Struct(s) => walk_struct(s, buf, version),
    }
}

fn walk_elements(
    elem: &'static Ty,
    what: &'static str,
    count: u64,
    buf: &mut &[u8],
    version: i16,
) -> Result<(), ScanError> {
    // Kafka: "Tried to allocate a collection of size N, but there are only M bytes remaining."
    if count > buf.len() as u64 {
        return Err(ScanError::ArrayTooLong {
            what,
            count,
            left: buf.len(),
        });
    }
    for _ in 0..count {
        let before = buf.len();
        walk(elem, what, buf, version)?;
        // An element that takes no bytes would let a count cost nothing; none exists in Kafka's
        // specs, and the count check above relies on it.
        assert!(buf.len() < before, "{what}: zero-length array element");
    }
    Ok(())
}

fn read_i16(buf: &mut &[u8], what: &'static str) -> Result<i16, ScanError> {
    if buf.len() < 2 {
        return Err(ScanError::Truncated(what));
    }
    Ok(buf.get_i16())
}

fn read_i32(buf: &mut &[u8], what: &'static str) -> Result<i32, ScanError> {
    if buf.len() < 4 {
        return Err(ScanError::Truncated(what));
    }
    Ok(buf.get_i32())
}
