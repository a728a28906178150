//! Reading record batches on the consumer side, and Kafka's key partitioner.
//!
//! [`batches`] walks the record batches (v2) in a fetched record set; a trailing partial batch
//! (Kafka may cut the last batch at the size limit) ends the walk without an error.
//! [`Batch::for_each_record`] visits each record's offset, timestamp, key and value: an
//! uncompressed batch is walked in place (varints only, no allocation); a compressed one is
//! decoded with the `kafka-protocol` codec (which decompresses).
//!
//! [`BatchBuilder`] is the producer's hot path: it writes an uncompressed record batch straight
//! into a caller's reused buffer (each value may be given in pieces, so a payload is never
//! assembled first), with the same bytes [`freshet_protocol::batch::encode_batch`] produces;
//! compressed batches go through `encode_batch`.
//!
//! [`murmur2_partition`] is Kafka's default partitioner for keyed records (murmur2 of the key,
//! made positive, modulo the partition count), so keyed data lands where a Java or librdkafka
//! (`murmur2_random`) producer would put it.

use bytes::Bytes;

use super::{ClientError, Result};
use freshet_protocol::batch::{self as batch_format, HEADER_LEN, LOG_OVERHEAD};

/// One record batch (v2) inside a fetched record set.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    bytes: &'a [u8],
}

/// Walks the complete batches of `records`; errors on a batch that is not v2 or is malformed.
pub fn batches(records: &[u8]) -> impl Iterator<Item = Result<Batch<'_>>> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.len() < HEADER_LEN {
            return None;
        }
        let length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            rest = &[];
            return Some(Err(ClientError::Protocol(format!(
                "record batch length {length}"
            ))));
        }
        let total = LOG_OVERHEAD + length as usize;
        if total > rest.len() {
            return None; // partial trailing batch
        }
        let (bytes, tail) = rest.split_at(total);
        rest = tail;
        if bytes[16] != batch_format::MAGIC_V2 as u8 {
            rest = &[];
            return Some(Err(ClientError::Protocol(format!(
                "record batch magic {}",
                bytes[16]
            ))));
        }
        Some(Ok(Batch { bytes }))
    })
}

impl<'a> Batch<'a> {
    fn header(&self) -> &'a batch_format::BatchHeader {
        // `batches` checked the length, so the header view exists.
        batch_format::header(self.bytes).expect("batch holds a header")
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header().base_offset()
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> i64 {
        self.header().last_offset() + 1
    }

    /// Number of records.
    pub fn records_count(&self) -> i32 {
        self.header().records_count()
    }

    /// Compression codec id (0 none).
    pub fn compression(&self) -> i16 {
        self.header().compression()
    }

    /// True for control batches (transaction markers), which hold no user records.
    pub fn is_control(&self) -> bool {
        self.header().is_control()
    }

    /// True when the CRC-32C matches.
    pub fn crc_ok(&self) -> bool {
        batch_format::compute_crc(self.bytes) == self.header().crc()
    }

    /// Calls `f(offset, timestamp_ms, key, value)` for every record, in order.
    pub fn for_each_record(
        &self,
        mut f: impl FnMut(i64, i64, Option<&[u8]>, Option<&[u8]>),
    ) -> Result<()> {
        let header = self.header();
        if header.compression() != 0 {
            let mut bytes = Bytes::copy_from_slice(self.bytes);
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                .map_err(|e| ClientError::Protocol(format!("record batch: {e}")))?;
            for record in &set.records {
                f(
                    record.offset,
                    record.timestamp,
                    record.key.as_deref(),
                    record.value.as_deref(),
                );
            }
            return Ok(());
        }
        let base_offset = header.base_offset();
        let base_timestamp = header.base_timestamp();
        let mut pos = HEADER_LEN;
        let buf = self.bytes;
        for _ in 0..header.records_count() {
            let length = varlong(buf, &mut pos)?;
            let start = pos;
            let end = usize::try_from(length)
                .ok()
                .and_then(|l| start.checked_add(l))
                .filter(|&e| e <= buf.len())
                .ok_or_else(|| ClientError::Protocol(format!("record length {length}")))?;
            let record = &buf[..end];
            pos += 1; // attributes
            let timestamp_delta = varlong(record, &mut pos)?;
            let offset_delta = varlong(record, &mut pos)?;
            let key = bytes_field(record, &mut pos)?;
            let value = bytes_field(record, &mut pos)?;
            f(
                base_offset + offset_delta,
                base_timestamp + timestamp_delta,
                key,
                value,
            );
            pos = end; // headers are skipped
        }
        Ok(())
    }
}

/// A zigzag varlong at `*pos` in `buf`.
fn varlong(buf: &[u8], pos: &mut usize) -> Result<i64> {
    varint::read_zigzag_at(buf, pos, varint::VARLONG_BYTES_MAX).map_err(|e| match e {
        varint::VarintError::Truncated => ClientError::Protocol("truncated record".into()),
        varint::VarintError::TooLong => {
            ClientError::Protocol("varlong longer than 10 bytes".into())
        }
    })
}

/// A varint-length-prefixed byte field (-1: null).
fn bytes_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>> {
    let length = varlong(buf, pos)?;
    if length < 0 {
        return Ok(None);
    }
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| ClientError::Protocol(format!("record field length {length}")))?;
    let field = &buf[*pos..end];
    *pos = end;
    Ok(Some(field))
}

/// Writes one uncompressed record batch (v2, no producer id, CreateTime) into a buffer.
///
/// The base timestamp is the first record's (as Kafka's Java producer does; later records may
/// be earlier, their deltas are then negative).
pub struct BatchBuilder<'a> {
    buf: &'a mut Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl<'a> BatchBuilder<'a> {
    /// Starts a batch in `buf` (cleared; its capacity is reused).
    pub fn new(buf: &'a mut Vec<u8>) -> BatchBuilder<'a> {
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes so far.
    pub fn bytes_len(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record whose value is the concatenation of `value_parts`.
    pub fn push(&mut self, key: Option<&[u8]>, value_parts: &[&[u8]], timestamp: i64) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp - self.base_timestamp;
        let offset_delta = i64::from(self.count);
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let value_len: usize = value_parts.iter().map(|p| p.len()).sum();
        let body_len = 1
            + varlong_len(timestamp_delta)
            + varlong_len(offset_delta)
            + varlong_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varlong_len(value_len as i64)
            + value_len
            + 1;
        put_varlong(self.buf, body_len as i64);
        self.buf.push(0); // attributes
        put_varlong(self.buf, timestamp_delta);
        put_varlong(self.buf, offset_delta);
        put_varlong(self.buf, key_len);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        put_varlong(self.buf, value_len as i64);
        for part in value_parts {
            self.buf.extend_from_slice(part);
        }
        self.buf.push(0); // no headers
        self.count += 1;
    }

    /// Fills in the header and CRC; returns the batch's length. The batch must not be empty.
    pub fn finish(self) -> usize {
        assert!(self.count > 0, "a batch holds at least one record");
        let len = self.buf.len();
        let h = &mut self.buf[..HEADER_LEN];
        h[0..8].copy_from_slice(&0i64.to_be_bytes());
        h[8..12].copy_from_slice(&((len - LOG_OVERHEAD) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        h[16] = batch_format::MAGIC_V2 as u8;
        h[21..23].copy_from_slice(&0i16.to_be_bytes());
        h[23..27].copy_from_slice(&(self.count - 1).to_be_bytes());
        h[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        batch_format::fix_crc(self.buf);
        len
    }
}

use freshet_protocol::varint::{self, put_varlong, varlong_len};

pub use freshet_protocol::murmur2::murmur2;

/// The partition Kafka's default partitioner picks for `key` among `partitions` (> 0).
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_protocol::batch::{encode_batch, Compression, NewRecord};

    #[test]
    fn records_are_walked_in_plain_and_compressed_batches() {
        let records: Vec<NewRecord> = (0..5)
            .map(|i| {
                (
                    (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
                    Some(Bytes::from(vec![i as u8; 100 + i])),
                    1000 + i as i64,
                )
            })
            .collect();
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut set = encode_batch(&records, compression).expect("batch").to_vec();
            let second = set.clone();
            set.extend_from_slice(&second);
            set.extend_from_slice(&second[..30]); // partial trailing batch
            let mut seen = Vec::new();
            for batch in batches(&set) {
                let batch = batch.expect("well formed");
                assert!(batch.crc_ok());
                batch
                    .for_each_record(|offset, ts, key, value| {
                        seen.push((offset, ts, key.map(<[u8]>::to_vec), value.map(<[u8]>::len)))
                    })
                    .expect("records");
            }
            assert_eq!(seen.len(), 10, "{compression:?}");
            assert_eq!(seen[3], (3, 1003, None, Some(103)));
            assert_eq!(seen[4].2.as_deref(), Some(&b"k4"[..]));
        }
    }

    /// The builder writes exactly what the generic encoder writes.
    #[test]
    fn batch_builder_matches_encode_batch() {
        for n in [1usize, 2, 130] {
            let records: Vec<NewRecord> = (0..n)
                .map(|i| {
                    (
                        (i % 3 == 0).then(|| Bytes::from(format!("key{i}"))),
                        Some(Bytes::from(vec![(i % 251) as u8; 10 + i * 7])),
                        1_700_000_000_000 + (i as i64) * 3,
                    )
                })
                .collect();
            let expected = encode_batch(&records, Compression::None).expect("batch");
            let mut buf = Vec::new();
            let mut builder = BatchBuilder::new(&mut buf);
            for (key, value, ts) in &records {
                let value = value.as_ref().expect("value");
                let (a, b) = value.split_at(value.len() / 2);
                builder.push(key.as_deref(), &[a, b], *ts);
            }
            assert_eq!(builder.len(), n);
            let len = builder.finish();
            assert_eq!(len, buf.len());
            assert_eq!(&buf[..], &expected[..], "{n} records");
            assert!(freshet_protocol::batch::validate(&buf).is_ok());
        }
    }

    /// Garbage in a batch is an error, never a panic.
    #[test]
    fn corrupt_records_are_errors() {
        let records: Vec<NewRecord> = vec![(None, Some(Bytes::from_static(b"value")), 1)];
        let good = encode_batch(&records, Compression::None)
            .expect("batch")
            .to_vec();
        for i in HEADER_LEN..good.len() {
            for byte in [0x00, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = byte;
                for batch in batches(&bad).flatten() {
                    let _ = batch.for_each_record(|_, _, _, _| {});
                }
            }
        }
    }
}
