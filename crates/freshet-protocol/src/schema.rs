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
//! It also estimates the memory the decoded message will take (array storage and unknown tagged
//! fields), so that [`crate::codec::decode_body`] can refuse a body that is cheap on
//! the wire but expensive decoded (e.g. millions of empty structs).
//!
//! It is deliberately more lenient than the crate elsewhere (null markers on non-nullable fields,
//! UTF-8): the crate rejects those itself, without allocating. Nesting depth is bounded by the
//! schemas (no recursive message types), so the walk needs no depth limit; its time is linear in
//! the body size because every array element consumes at least one byte or fails.

use bytes::Buf;

use crate::varint;

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
    /// A nullable struct: int8 1 then its fields, or any other int8 for null (the crate's
    /// `OptionStruct` decoder).
    OptionStruct(&'static StructSchema),
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
    /// `size_of` the crate's Rust struct: what one array element of it costs in memory.
    pub(crate) memory_bytes: usize,
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

/// What the pre-scan learnt about a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Bytes the message takes (the rest of the body is trailing bytes, which Kafka ignores).
    pub(crate) wire_bytes: usize,
    /// An upper estimate of the memory the crate allocates to decode it: array storage
    /// (`count * size_of(element)`) and unknown tagged fields. Strings, bytes and records are
    /// slices of the body and cost nothing.
    pub(crate) memory_bytes: usize,
}

/// Memory charged for each unknown tagged field (a `BTreeMap` entry, with node overhead).
const UNKNOWN_TAGGED_FIELD_MEMORY_BYTES: usize = 64;

/// Walks `body` as a `schema` message at `version`.
pub(crate) fn prescan(
    schema: &'static StructSchema,
    body: &[u8],
    version: i16,
) -> Result<Scan, ScanError> {
    let mut w = Walker {
        buf: body,
        version,
        memory_bytes: schema.memory_bytes,
    };
    w.walk_struct(schema)?;
    Ok(Scan {
        wire_bytes: body.len() - w.buf.len(),
        memory_bytes: w.memory_bytes,
    })
}

struct Walker<'a> {
    buf: &'a [u8],
    version: i16,
    memory_bytes: usize,
}

impl Walker<'_> {
    fn walk_struct(&mut self, s: &'static StructSchema) -> Result<(), ScanError> {
        let version = self.version;
        for f in s
            .fields
            .iter()
            .filter(|f| (f.min..=f.max).contains(&version))
        {
            self.walk(&f.ty, s.name)?;
        }
        if version >= s.tagged_from {
            let count = self.uvarint(s.name)?;
            for _ in 0..count {
                let tag = self.uvarint(s.name)?;
                let size = self.uvarint(s.name)? as usize;
                match s.tagged.iter().find(|t| t.tag == tag) {
                    // Like the crate, a known tagged field is decoded from the stream, not the slice.
                    Some(t) if (t.min..=t.max).contains(&version) => self.walk(&t.ty, s.name)?,
                    Some(_) => {
                        return Err(ScanError::TagNotValid {
                            what: s.name,
                            tag,
                            version,
                        })
                    }
                    None => {
                        self.skip(size, s.name)?;
                        self.memory_bytes = self
                            .memory_bytes
                            .saturating_add(UNKNOWN_TAGGED_FIELD_MEMORY_BYTES);
                    }
                }
            }
        }
        Ok(())
    }

    fn walk(&mut self, ty: &'static Ty, what: &'static str) -> Result<(), ScanError> {
        match ty {
            Ty::Int8 => self.skip(1, what),
            Ty::Int16 => self.skip(2, what),
            Ty::Int32 => self.skip(4, what),
            Ty::Int64 => self.skip(8, what),
            Ty::Uuid => self.skip(16, what),
            Ty::String => match self.i16(what)? {
                -1 => Ok(()),
                n if n >= 0 => self.skip(n as usize, what),
                _ => Err(ScanError::NegativeLength(what)),
            },
            Ty::Bytes => match self.i32(what)? {
                -1 => Ok(()),
                n if n >= 0 => self.skip(n as usize, what),
                _ => Err(ScanError::NegativeLength(what)),
            },
            Ty::CompactString | Ty::CompactBytes => match self.uvarint(what)? {
                0 => Ok(()),
                n => self.skip((n - 1) as usize, what),
            },
            Ty::Array(elem) => match self.i32(what)? {
                -1 => Ok(()),
                n if n >= 0 => self.walk_elements(elem, what, u64::from(n as u32)),
                _ => Err(ScanError::NegativeLength(what)),
            },
            Ty::CompactArray(elem) => match self.uvarint(what)? {
                0 => Ok(()),
                n => self.walk_elements(elem, what, u64::from(n - 1)),
            },
            Ty::Struct(s) => self.walk_struct(s),
            Ty::OptionStruct(s) => match self.i8(what)? {
                1 => self.walk_struct(s),
                _ => Ok(()),
            },
        }
    }

    fn walk_elements(
        &mut self,
        elem: &'static Ty,
        what: &'static str,
        count: u64,
    ) -> Result<(), ScanError> {
        // Kafka: "Tried to allocate a collection of size N, but there are only M bytes remaining."
        if count > self.buf.len() as u64 {
            return Err(ScanError::ArrayTooLong {
                what,
                count,
                left: self.buf.len(),
            });
        }
        let memory = (count as usize).saturating_mul(element_memory_bytes(elem));
        self.memory_bytes = self.memory_bytes.saturating_add(memory);
        for _ in 0..count {
            let before = self.buf.len();
            self.walk(elem, what)?;
            // A zero-byte element would let a count cost nothing; Kafka's specs have none, and
            // the count check above relies on it.
            assert!(self.buf.len() < before, "{what}: zero-length array element");
        }
        Ok(())
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), ScanError> {
        if self.buf.len() < n {
            return Err(ScanError::Truncated(what));
        }
        self.buf.advance(n);
        Ok(())
    }

    fn i8(&mut self, what: &'static str) -> Result<i8, ScanError> {
        if self.buf.is_empty() {
            return Err(ScanError::Truncated(what));
        }
        Ok(self.buf.get_i8())
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, ScanError> {
        if self.buf.len() < 2 {
            return Err(ScanError::Truncated(what));
        }
        Ok(self.buf.get_i16())
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, ScanError> {
        if self.buf.len() < 4 {
            return Err(ScanError::Truncated(what));
        }
        Ok(self.buf.get_i32())
    }

    fn uvarint(&mut self, what: &'static str) -> Result<u32, ScanError> {
        varint::get_uvarint(&mut self.buf).ok_or(ScanError::Varint(what))
    }
}

/// Memory one array element of type `ty` takes in the decoded message.
fn element_memory_bytes(ty: &Ty) -> usize {
    match ty {
        Ty::Int8 => 1,
        Ty::Int16 => 2,
        Ty::Int32 => 4,
        Ty::Int64 => 8,
        Ty::Uuid => 16,
        Ty::String | Ty::CompactString | Ty::Bytes | Ty::CompactBytes => {
            std::mem::size_of::<Option<bytes::Bytes>>()
        }
        Ty::Array(_) | Ty::CompactArray(_) => std::mem::size_of::<Option<Vec<u8>>>(),
        Ty::Struct(s) => s.memory_bytes,
        Ty::OptionStruct(s) => s.memory_bytes + std::mem::size_of::<usize>(),
    }
}
