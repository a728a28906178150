//! Record-level validation of v2 record batches, and bounded streaming decompression.
//!
//! [`batch::validate`] checks a batch as a whole (framing, magic, CRC-32C, counts). A valid
//! CRC says nothing about the records inside: a producer (or an attacker) can compute a CRC
//! over garbage. So, as Kafka's `LogValidator` does on append, [`walk_batch`] reads every
//! record of a batch and checks its structure:
//!
//! - the record length is a varint of at most 5 bytes, `>= 0`, and the record's fields fill
//!   exactly that many bytes;
//! - attributes (1 byte), timestamp delta (varlong, at most 10 bytes), offset delta (varint);
//! - key and value lengths are `-1` (null) or `0..=` the bytes left in the record;
//! - the header count is `0..=` half the bytes left (a header takes at least 2), every header
//!   key length is `0..=` the bytes left, every header value length `-1..=` the bytes left;
//! - exactly `recordsCount` records, then no trailing bytes.
//!
//! A structural fault is [`BatchError::CorruptMessage`] (CORRUPT_MESSAGE). Faults of one
//! record that Kafka lists in Produce's `record_errors` (a keyless record on a compacted topic;
//! an offset delta that is not the record's index, Kafka's "incremental offsets" rule) are
//! collected as [`RecordError`]s and refused together as [`BatchError::InvalidRecords`]
//! (INVALID_RECORD, with the list).
//!
//! # Compressed batches: streaming, bounded
//! A compressed batch's records are walked as they come out of the decoder, through one
//! [`DECOMPRESS_CHUNK_BYTES`] buffer; keys and values are skipped, never materialised.
//! Limits (memory bound of one decompression, which never yields, so one per shard at once):
//! - at most [`RECORD_BATCH_DECOMPRESSED_BYTES_MAX`] decompressed bytes per batch in total,
//!   else [`BatchError::RecordListTooLarge`] (RECORD_LIST_TOO_LARGE): a zstd bomb of 10 GB is
//!   refused after 64 MiB of decoding;
//! - zstd: window at most 2^[`ZSTD_WINDOW_LOG_MAX`] bytes (16 MiB; Kafka's producers use 4 MiB
//!   or less at their default levels); lz4: one frame block (at most 4 MiB) plus its input
//!   block; gzip: its 32 KiB window; snappy: one block, whose declared size is checked against
//!   the remaining budget before it is allocated (raw snappy is one block for the whole batch,
//!   at most ~21x its compressed size).
//!
//! So one decompression holds at most 16 MiB + 64 KiB + the decoder's small state (zstd, lz4,
//! gzip), or min(64 MiB, 21 x batch bytes) (raw snappy, 22 MiB for a 1 MiB batch).
//!
//! [`decompress_bounded`] is the same decoding into one buffer, for the cleaner (which rewrites
//! records and needs their bytes); it is bounded by the same total.
//!
//! No allocation per record: an uncompressed batch is walked in place; a compressed one
//! allocates its decoder and one chunk buffer per batch.

use std::io::Read;

use crate::batch::{self, BatchError, BatchHeader};
use crate::varint;

/// Most decompressed bytes accepted from one compressed batch (refused beyond).
pub const RECORD_BATCH_DECOMPRESSED_BYTES_MAX: u64 = 64 << 20;
/// Bytes of decompressed data held at once by a streaming walk.
pub const DECOMPRESS_CHUNK_BYTES: usize = 64 << 10;
/// Largest zstd window accepted: 2^24 bytes (16 MiB).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// Most record errors listed in one refusal (the batch fails whole either way).
pub const RECORD_ERRORS_LISTED_MAX: usize = 10_000;

/// Kafka's message for a keyless record on a compacted topic.
pub const MISSING_KEY: &str = "Compacted topic cannot accept message without key";
/// Kafka's message for a record whose offset delta is not its index in the batch.
pub const NON_INCREMENTAL_OFFSET: &str = "Inner record does not have incremental offsets";

/// What a walk checks beyond structure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordRules {
    /// Every record of a non-control batch must have a key (`cleanup.policy=compact`).
    pub require_keys: bool,
}

/// One record refused (Produce v8+ `record_errors`): its index in its batch and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// Index of the record in its batch.
    pub batch_index: i32,
    /// Kafka's message.
    pub message: &'static str,
}

/// The facts of one record a walk reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordFacts {
    /// Index of the record in its batch.
    pub index: i32,
    /// Offset delta as stored.
    pub offset_delta: i64,
    /// Timestamp delta as stored.
    pub timestamp_delta: i64,
    /// True if the key is not null.
    pub has_key: bool,
}

fn corrupt(what: impl std::fmt::Display) -> BatchError {
    BatchError::CorruptMessage(format!("malformed record: {what}"))
}

/// Marks the error a decoder returns when its output would exceed the budget.
#[derive(Debug)]
struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompressed size limit reached")
    }
}

impl std::error::Error for OverLimit {}

fn too_large() -> BatchError {
    BatchError::RecordListTooLarge(format!(
        "a compressed batch decompresses to more than {RECORD_BATCH_DECOMPRESSED_BYTES_MAX} bytes"
    ))
}

fn decode_error(e: std::io::Error) -> BatchError {
    if e.get_ref().is_some_and(|inner| inner.is::<OverLimit>()) {
        return too_large();
    }
    BatchError::CorruptMessage(format!("cannot decompress batch: {e}"))
}

/// Bytes a walk reads records from.
trait Input {
    /// The next byte; `Err` at the end.
    fn byte(&mut self) -> Result<u8, BatchError>;
    /// Skips `n` bytes; `Err` if fewer are left.
    fn skip(&mut self, n: usize) -> Result<(), BatchError>;
    /// Bytes consumed so far.
    fn consumed(&self) -> u64;
    /// `Ok` if nothing is left.
    fn finish(&mut self) -> Result<(), BatchError>;
}

/// An uncompressed records section, walked in place.
struct SliceInput<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input for SliceInput<'_> {
    #[inline]
    fn byte(&mut self) -> Result<u8, BatchError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| corrupt("premature end of the batch"))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn skip(&mut self, n: usize) -> Result<(), BatchError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => {
                self.pos = end;
                Ok(())
            }
            _ => Err(corrupt("premature end of the batch")),
        }
    }

    #[inline]
    fn consumed(&self) -> u64 {
        self.pos as u64
    }

    fn finish(&mut self) -> Result<(), BatchError> {
        let left = self.data.len() - self.pos;
        if left != 0 {
            return Err(corrupt(format!("{left} bytes after the last record")));
        }
        Ok(())
    }
}

/// A decoder's output, read through one bounded chunk and counted against the budget.
struct StreamInput<R: Read> {
    reader: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    consumed: u64,
    produced: u64,
    max: u64,
}

impl<R: Read> StreamInput<R> {
    fn new(reader: R, max: u64) -> Self {
        StreamInput {
            reader,
            buf: vec![0u8; DECOMPRESS_CHUNK_BYTES].into_boxed_slice(),
            pos: 0,
            end: 0,
            consumed: 0,
            produced: 0,
            max,
        }
    }

    /// Refills the chunk; `Ok(false)` at the end of the stream.
    fn fill(&mut self) -> Result<bool, BatchError> {
        debug_assert!(self.pos == self.end);
        let n = loop {
            match self.reader.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(decode_error(e)),
            }
        };
        self.produced += n as u64;
        if self.produced > self.max {
            return Err(too_large());
        }
        self.pos = 0;
        self.end = n;
        Ok(n > 0)
    }
}

impl<R: Read> Input for StreamInput<R> {
    #[inline]
    fn byte(&mut self) -> Result<u8, BatchError> {
        if self.pos == self.end && !self.fill()? {
            return Err(corrupt("premature end of the batch"));
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        self.consumed += 1;
        Ok(b)
    }

    fn skip(&mut self, mut n: usize) -> Result<(), BatchError> {
        while n > 0 {
            if self.pos == self.end && !self.fill()? {
                return Err(corrupt("premature end of the batch"));
            }
            let step = n.min(self.end - self.pos);
            self.pos += step;
            self.consumed += step as u64;
            n -= step;
        }
        Ok(())
    }

    fn consumed(&self) -> u64 {
        self.consumed
    }

    fn finish(&mut self) -> Result<(), BatchError> {
        if self.pos < self.end || self.fill()? {
            return Err(corrupt("bytes after the last record"));
        }
        Ok(())
    }
}

/// Reads a zigzag varint of at most `max_bytes` bytes.
#[inline]
fn varint<I: Input>(input: &mut I, max_bytes: u32, what: &str) -> Result<i64, BatchError> {
    let raw = varint::read_unsigned_from(
        max_bytes as usize,
        || input.byte(),
        || corrupt(format!("{what} is a varint longer than {max_bytes} bytes")),
    )?;
    Ok(varint::zigzag_decode(raw))
}

/// A varint that must fit in an i32 (Kafka's `readVarint`).
#[inline]
fn varint32<I: Input>(input: &mut I, what: &str) -> Result<i64, BatchError> {
    let v = varint(input, 5, what)?;
    if i32::try_from(v).is_err() {
        return Err(corrupt(format!("{what} {v} does not fit in 32 bits")));
    }
    Ok(v)
}

/// Walks `count` records from `input`, checking their structure; `on_record` sees each.
fn walk<I: Input>(
    input: &mut I,
    count: i32,
    mut on_record: impl FnMut(&RecordFacts),
) -> Result<(), BatchError> {
    for index in 0..count {
        let len = varint32(input, "record length")?;
        if len < 0 {
            return Err(corrupt(format!("record {index} has length {len}")));
        }
        let start = input.consumed();
        let end = start + len as u64;
        // Bytes of the record not read yet; `Err` if the fields went past its length.
        let left = |input: &I| -> Result<u64, BatchError> {
            end.checked_sub(input.consumed())
                .ok_or_else(|| corrupt(format!("record {index} is longer than its length {len}")))
        };
        let _attributes = input.byte()?;
        let timestamp_delta = varint(input, 10, "timestamp delta")?;
        let offset_delta = varint32(input, "offset delta")?;
        let key_len = varint32(input, "key length")?;
        let has_key = key_len >= 0;
        skip_bytes(input, key_len, left(input)?, index, "key")?;
        let value_len = varint32(input, "value length")?;
        skip_bytes(input, value_len, left(input)?, index, "value")?;
        let headers = varint32(input, "header count")?;
        if headers < 0 || headers as u64 > left(input)? / 2 {
            return Err(corrupt(format!(
                "record {index} has an invalid number of headers {headers}"
            )));
        }
        for _ in 0..headers {
            let key_len = varint32(input, "header key length")?;
            if key_len < 0 {
                return Err(corrupt(format!(
                    "record {index} has a negative header key length {key_len}"
                )));
            }
            skip_bytes(input, key_len, left(input)?, index, "header key")?;
            let value_len = varint32(input, "header value length")?;
            skip_bytes(input, value_len, left(input)?, index, "header value")?;
        }
        let rest = left(input)?;
        if rest != 0 {
            return Err(corrupt(format!(
                "record {index}: expected to read {len} bytes, read {}",
                len as u64 - rest
            )));
        }
        on_record(&RecordFacts {
            index,
            offset_delta,
            timestamp_delta,
            has_key,
        });
    }
    input.finish()
}

/// A varint of at most `max_bytes` bytes at `data[*pos..]`; `None` if malformed or cut.
#[inline(always)]
fn slice_varint(data: &[u8], pos: &mut usize, max_bytes: u32) -> Option<i64> {
    varint::read_zigzag_at(data, pos, max_bytes as usize).ok()
}

/// A varint that fits in an i32, at least `min`.
#[inline(always)]
fn slice_varint32(data: &[u8], pos: &mut usize, min: i64) -> Option<i64> {
    let v = slice_varint(data, pos, 5)?;
    (v >= min && v <= i64::from(i32::MAX)).then_some(v)
}

/// Skips a field of `len` bytes (-1: null) within `rec`.
#[inline(always)]
fn slice_skip(rec: &[u8], pos: &mut usize, len: i64) -> Option<()> {
    if len >= 0 {
        let end = pos.checked_add(len as usize)?;
        if end > rec.len() {
            return None;
        }
        *pos = end;
    }
    Some(())
}

/// [`walk`] of an uncompressed records section, the hot path: the same checks, without
/// error values (`None` on any fault; [`walk`] then says which).
fn walk_slice(data: &[u8], count: i32, on_record: &mut impl FnMut(&RecordFacts)) -> Option<()> {
    let mut pos = 0usize;
    for index in 0..count {
        let len = slice_varint32(data, &mut pos, 0)?;
        let end = pos.checked_add(len as usize)?;
        // Every field is read from the record's own bytes.
        let rec = data.get(..end)?;
        rec.get(pos)?;
        pos += 1; // attributes
        let timestamp_delta = slice_varint(rec, &mut pos, 10)?;
        let offset_delta = slice_varint32(rec, &mut pos, i64::from(i32::MIN))?;
        let key_len = slice_varint32(rec, &mut pos, -1)?;
        slice_skip(rec, &mut pos, key_len)?;
        let value_len = slice_varint32(rec, &mut pos, -1)?;
        slice_skip(rec, &mut pos, value_len)?;
        let headers = slice_varint32(rec, &mut pos, 0)?;
        if headers as usize > (end - pos) / 2 {
            return None;
        }
        for _ in 0..headers {
            let key_len = slice_varint32(rec, &mut pos, 0)?;
            slice_skip(rec, &mut pos, key_len)?;
            let value_len = slice_varint32(rec, &mut pos, -1)?;
            slice_skip(rec, &mut pos, value_len)?;
        }
        if pos != end {
            return None;
        }
        on_record(&RecordFacts {
            index,
            offset_delta,
            timestamp_delta,
            has_key: key_len >= 0,
        });
    }
    (pos == data.len()).then_some(())
}

/// Skips a length-prefixed field: `len` is -1 (null) or at most `left`.
#[inline]
fn skip_bytes<I: Input>(
    input: &mut I,
    len: i64,
    left: u64,
    index: i32,
    what: &str,
) -> Result<(), BatchError> {
    if len == -1 {
        return Ok(());
    }
    if len < -1 || len as u64 > left {
        return Err(corrupt(format!(
            "record {index} has {what} length {len} with {left} bytes left"
        )));
    }
    input.skip(len as usize)
}

/// A streaming decoder for `codec` over `data` (a batch's records section), or `Err` for an
/// unknown codec.
fn decoder<'a>(codec: i16, data: &'a [u8]) -> Result<Box<dyn Read + 'a>, BatchError> {
    Ok(match codec {
        1 => Box::new(flate2::read::MultiGzDecoder::new(data)),
        2 => Box::new(SnappyReader::new(data, RECORD_BATCH_DECOMPRESSED_BYTES_MAX)),
        3 => Box::new(lz4::Decoder::new(data).map_err(decode_error)?),
        4 => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data).map_err(decode_error)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(decode_error)?;
            Box::new(d)
        }
        c => {
            return Err(BatchError::InvalidRecord(format!(
                "unknown compression codec {c}"
            )))
        }
    })
}

/// Walks every record of one batch (already checked by [`batch::validate`] or
/// the broker cleaner's `validate_stored`), decompressing as a stream if needed, and reports each
/// record to `on_record`. Structural faults and the decompression limit are errors.
pub fn for_each_record(
    b: &[u8],
    h: &BatchHeader,
    on_record: impl FnMut(&RecordFacts),
) -> Result<(), BatchError> {
    let data = &b[batch::HEADER_LEN..];
    let count = h.records_count();
    if h.compression() == 0 {
        let mut on_record = on_record;
        if walk_slice(data, count, &mut on_record).is_some() {
            return Ok(());
        }
        // Malformed: walk again to say why (the records seen so far were already reported;
        // the batch is refused as a whole).
        return match walk(&mut SliceInput { data, pos: 0 }, count, |_| {}) {
            Err(e) => Err(e),
            Ok(()) => {
                debug_assert!(false, "the record walks disagree");
                Err(corrupt("malformed records"))
            }
        };
    }
    let mut input = StreamInput::new(
        decoder(h.compression(), data)?,
        RECORD_BATCH_DECOMPRESSED_BYTES_MAX,
    );
    walk(&mut input, count, on_record)
}

/// Validates the records of one batch (see the module docs). Record errors are appended to
/// `errors` (at most [`RECORD_ERRORS_LISTED_MAX`] in all); structural faults are returned.
pub fn walk_batch(
    b: &[u8],
    h: &BatchHeader,
    rules: RecordRules,
    errors: &mut Vec<RecordError>,
) -> Result<(), BatchError> {
    let require_keys = rules.require_keys && !h.is_control();
    let mut push = |batch_index, message| {
        if errors.len() < RECORD_ERRORS_LISTED_MAX {
            errors.push(RecordError {
                batch_index,
                message,
            });
        }
    };
    for_each_record(b, h, |r| {
        if require_keys && !r.has_key {
            push(r.index, MISSING_KEY);
        } else if r.offset_delta != i64::from(r.index) {
            push(r.index, NON_INCREMENTAL_OFFSET);
        }
    })
}

/// The records section of one batch, decompressed if needed, holding at most
/// [`RECORD_BATCH_DECOMPRESSED_BYTES_MAX`] bytes ([`BatchError::RecordListTooLarge`] beyond).
pub fn decompress_bounded<'a>(
    b: &'a [u8],
    h: &BatchHeader,
) -> Result<std::borrow::Cow<'a, [u8]>, BatchError> {
    let data = &b[batch::HEADER_LEN..];
    if h.compression() == 0 {
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let max = RECORD_BATCH_DECOMPRESSED_BYTES_MAX;
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max as usize));
    let mut reader = decoder(h.compression(), data)?.take(max + 1);
    reader.read_to_end(&mut out).map_err(decode_error)?;
    if out.len() as u64 > max {
        return Err(too_large());
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Snappy as Kafka's producers write it: the xerial framing (a 16-byte header starting with
/// `\x82SNAPPY\0`, then blocks of `u32 length | raw snappy`), or one raw snappy block. Each
/// block's declared size is checked against the remaining budget before it is allocated.
struct SnappyReader<'a> {
    data: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    pos: usize,
    budget: u64,
}

/// The start of the xerial snappy framing header.
const SNAPPY_XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// Length of the xerial header (magic, version, compatible version).
const SNAPPY_XERIAL_HEADER_BYTES: usize = 16;

impl<'a> SnappyReader<'a> {
    fn new(data: &'a [u8], budget: u64) -> Self {
        let framed = data.starts_with(SNAPPY_XERIAL_MAGIC);
        let data = if framed {
            data.get(SNAPPY_XERIAL_HEADER_BYTES..).unwrap_or(&[])
        } else {
            data
        };
        SnappyReader {
            data,
            framed,
            block: Vec::new(),
            pos: 0,
            budget,
        }
    }

    /// Decodes the next block; `Ok(false)` when there is none.
    fn next_block(&mut self) -> std::io::Result<bool> {
        use std::io::{Error, ErrorKind};
        if self.data.is_empty() {
            return Ok(false);
        }
        let raw = if self.framed {
            let Some((len, rest)) = self.data.split_first_chunk::<4>() else {
                return Err(Error::new(ErrorKind::InvalidData, "truncated snappy block"));
            };
            let len = u32::from_be_bytes(*len) as usize;
            let Some(raw) = rest.get(..len) else {
                return Err(Error::new(ErrorKind::InvalidData, "truncated snappy block"));
            };
            self.data = &rest[len..];
            raw
        } else {
            std::mem::take(&mut self.data)
        };
        let n =
            snap::raw::decompress_len(raw).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        if n as u64 > self.budget {
            return Err(Error::other(OverLimit));
        }
        self.budget -= n as u64;
        self.block.clear();
        self.block.resize(n, 0);
        snap::raw::Decoder::new()
            .decompress(raw, &mut self.block)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        self.pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A zstd "decompression bomb" batch, for tests: `records` records of `value_bytes` zero bytes
/// each (no key), base offset 0, as concatenated zstd frames (the zeros compressed once, so it
/// is cheap to build: 10,240 records of 1 MiB take ~0.7 MB). `len`: pad the batch to exactly
/// this many bytes with a zstd skippable frame (it must leave room for the 8-byte frame).
pub fn zstd_bomb_batch(records: usize, value_bytes: usize, len: Option<usize>) -> Vec<u8> {
    let compress = |data: &[u8]| zstd::bulk::compress(data, 3).expect("zstd compress");
    let zeros = compress(&vec![0u8; value_bytes]);
    let mut body = Vec::new();
    let mut pending = Vec::new();
    for i in 0..records {
        let mut rec = vec![0u8, 0];
        varint::put_varlong(&mut rec, i as i64);
        varint::put_varlong(&mut rec, -1);
        varint::put_varlong(&mut rec, value_bytes as i64);
        varint::put_varlong(&mut pending, (rec.len() + value_bytes + 1) as i64);
        pending.extend_from_slice(&rec);
        body.extend_from_slice(&compress(&pending));
        body.extend_from_slice(&zeros);
        pending.clear();
        pending.push(0); // header count
    }
    body.extend_from_slice(&compress(&pending));
    let mut b = vec![0u8; batch::HEADER_LEN];
    b.extend_from_slice(&body);
    if let Some(len) = len {
        let pad = len
            .checked_sub(b.len() + 8)
            .expect("room for a skippable frame");
        b.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        b.extend_from_slice(&(pad as u32).to_le_bytes());
        b.resize(len, 0);
    }
    let total = b.len();
    let h = batch::header_mut(&mut b).expect("header");
    h.batch_length.set((total - batch::LOG_OVERHEAD) as i32);
    h.magic = batch::MAGIC_V2;
    h.attributes.set(4);
    h.last_offset_delta.set(records as i32 - 1);
    h.records_count.set(records as i32);
    h.producer_id.set(-1);
    h.producer_epoch.set(-1);
    h.base_sequence.set(-1);
    batch::fix_crc(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{encode_batch, Compression, NewRecord};
    use crate::varint::put_varlong;
    use bytes::Bytes;

    fn records(n: usize, keyed: impl Fn(usize) -> bool) -> Vec<NewRecord> {
        (0..n)
            .map(|i| {
                let key = keyed(i).then(|| Bytes::from(format!("k{i}")));
                (key, Some(Bytes::from(vec![i as u8; 40])), 1000 + i as i64)
            })
            .collect()
    }

    fn check(b: &[u8], rules: RecordRules) -> Result<Vec<RecordError>, BatchError> {
        let h = batch::validate(b)?;
        let mut errors = Vec::new();
        walk_batch(b, h, rules, &mut errors)?;
        Ok(errors)
    }

    /// One uncompressed batch of one record whose body after the length is `body`.
    fn raw_batch(records: &[Vec<u8>], count: i32) -> Vec<u8> {
        let mut b = vec![0u8; batch::HEADER_LEN];
        for body in records {
            put_varlong(&mut b, body.len() as i64);
            b.extend_from_slice(body);
        }
        let total = b.len();
        let h = batch::header_mut(&mut b).expect("header");
        h.batch_length.set((total - batch::LOG_OVERHEAD) as i32);
        h.magic = batch::MAGIC_V2;
        h.last_offset_delta.set(count - 1);
        h.records_count.set(count);
        h.producer_id.set(-1);
        h.producer_epoch.set(-1);
        h.base_sequence.set(-1);
        batch::fix_crc(&mut b);
        b
    }

    /// A record body: attributes, timestamp delta 0, offset delta, then `rest`.
    fn body(offset_delta: i64, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8, 0];
        put_varlong(&mut v, offset_delta);
        v.extend_from_slice(rest);
        v
    }

    fn varints(values: &[i64]) -> Vec<u8> {
        let mut v = Vec::new();
        for &x in values {
            put_varlong(&mut v, x);
        }
        v
    }

    #[test]
    fn well_formed_batches_of_every_codec_pass() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encode_batch(&records(50, |_| true), c).expect("encode");
            assert_eq!(
                check(&b, RecordRules { require_keys: true }).unwrap(),
                vec![]
            );
            let mut n = 0;
            let h = batch::validate(&b).unwrap();
            for_each_record(&b, h, |r| {
                assert_eq!(r.offset_delta, i64::from(r.index));
                n += 1;
            })
            .unwrap();
            assert_eq!(n, 50, "{c:?}");
        }
    }

    #[test]
    fn keyless_records_are_listed_for_compacted_topics() {
        for c in [Compression::None, Compression::Zstd] {
            let b = encode_batch(&records(100, |i| i % 10 != 3), c).expect("encode");
            assert_eq!(check(&b, RecordRules::default()).unwrap(), vec![]);
            let errors = check(&b, RecordRules { require_keys: true }).unwrap();
            let idx: Vec<i32> = errors.iter().map(|e| e.batch_index).collect();
            assert_eq!(idx, (0..10).map(|i| i * 10 + 3).collect::<Vec<_>>());
            assert!(errors.iter().all(|e| e.message == MISSING_KEY));
        }
    }

    /// Each of the malformed records, inside a batch with a valid CRC, is refused.
    #[test]
    fn malformed_records_inside_a_valid_crc_are_corrupt() {
        let good = body(0, &varints(&[-1, 2, 7, 7, 0]));
        assert_eq!(
            check(
                &raw_batch(std::slice::from_ref(&good), 1),
                RecordRules::default()
            )
            .unwrap(),
            vec![]
        );
        let mut ten_byte_len = vec![0xffu8; 9];
        ten_byte_len.push(0x01);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("key length 2^31", {
                let mut v = vec![0u8, 0, 0];
                v.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10]); // zigzag(2^31)
                v.extend_from_slice(&varints(&[-1, 0]));
                v
            }),
            ("header count 2^30", body(0, &varints(&[-1, -1, 1 << 30]))),
            ("value length -2", body(0, &varints(&[-1, -2, 0]))),
            ("key past the record", body(0, &varints(&[50, -1, 0]))),
            (
                "negative header key",
                body(0, &varints(&[-1, -1, 1, -1, -1])),
            ),
            ("short record", body(0, &varints(&[-1, 2, 7]))),
            ("trailing byte in record", {
                let mut v = good.clone();
                v.push(0);
                v
            }),
        ];
        for (what, rec) in cases {
            let b = raw_batch(&[rec], 1);
            assert!(
                matches!(
                    check(&b, RecordRules::default()),
                    Err(BatchError::CorruptMessage(_))
                ),
                "{what}: {:?}",
                check(&b, RecordRules::default())
            );
        }
        // A record length given as a 10-byte varint.
        let mut b = raw_batch(std::slice::from_ref(&good), 1);
        b.truncate(batch::HEADER_LEN);
        b.extend_from_slice(&ten_byte_len);
        b.extend_from_slice(&good);
        let total = b.len();
        batch::header_mut(&mut b)
            .unwrap()
            .batch_length
            .set((total - batch::LOG_OVERHEAD) as i32);
        batch::fix_crc(&mut b);
        assert!(matches!(
            check(&b, RecordRules::default()),
            Err(BatchError::CorruptMessage(_))
        ));
        // Fewer records than the header's count; more bytes than the count's records.
        let b = raw_batch(std::slice::from_ref(&good), 2);
        assert!(matches!(
            check(&b, RecordRules::default()),
            Err(BatchError::CorruptMessage(_))
        ));
        let b = raw_batch(&[good.clone(), body(1, &varints(&[-1, -1, 0]))], 1);
        assert!(matches!(
            check(&b, RecordRules::default()),
            Err(BatchError::CorruptMessage(_))
        ));
        // An offset delta that is not the record's index is a record error.
        let b = raw_batch(&[good.clone(), body(5, &varints(&[-1, -1, 0]))], 2);
        assert_eq!(
            check(&b, RecordRules::default()).unwrap(),
            vec![RecordError {
                batch_index: 1,
                message: NON_INCREMENTAL_OFFSET
            }]
        );
    }

    fn zstd_bomb(records: usize) -> Vec<u8> {
        zstd_bomb_batch(records, 1 << 20, None)
    }

    #[test]
    fn decompression_bombs_are_refused_within_the_budget() {
        let small = zstd_bomb(8);
        assert_eq!(check(&small, RecordRules::default()).unwrap(), vec![]);
        let h = batch::validate(&small).unwrap();
        assert!(decompress_bounded(&small, h).unwrap().len() > 8 << 20);
        let bomb = zstd_bomb(200);
        assert!(bomb.len() < 20 << 10, "{} bytes", bomb.len());
        let padded = zstd_bomb_batch(200, 1 << 20, Some(100_000));
        assert_eq!(padded.len(), 100_000);
        assert!(matches!(
            check(&padded, RecordRules::default()),
            Err(BatchError::RecordListTooLarge(_))
        ));
        assert!(matches!(
            check(&bomb, RecordRules::default()),
            Err(BatchError::RecordListTooLarge(_))
        ));
        let h = batch::validate(&bomb).unwrap();
        assert!(matches!(
            decompress_bounded(&bomb, h),
            Err(BatchError::RecordListTooLarge(_))
        ));
    }

    #[test]
    fn snappy_blocks_are_checked_before_allocation() {
        // A raw snappy block declaring 4 GiB - 1 bytes.
        let data = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let mut r = SnappyReader::new(&data, RECORD_BATCH_DECOMPRESSED_BYTES_MAX);
        let e = r.read(&mut [0u8; 16]).unwrap_err();
        assert!(matches!(decode_error(e), BatchError::RecordListTooLarge(_)));
    }
}
