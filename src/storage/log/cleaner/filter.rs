//! The cleaner's pure part: what survives a cleaning round, and the rewritten batches.
//!
//! Everything here works on byte buffers and an [`OffsetMap`]: no I/O, no runtime, no clock
//! (the round passes `now_ms` in). [`filter_batch`] decides one stored batch (kept as it is,
//! rewritten with fewer records and the same base and last offset, or dropped) following the
//! rules of the module docs of [`super`]; [`map_batch`] is the offset map step for one batch;
//! [`validate_stored`] checks a stored batch (the log's recovery scan uses it too).
//!
//! Hostile bytes (a corrupt record inside a CRC-valid batch) give
//! [`StorageError::CorruptMessage`], never a panic. Memory per batch: the decompressed
//! records (bounded by `records::RECORD_BATCH_DECOMPRESSED_BYTES_MAX`), the kept records (no
//! larger) and the recompressed batch.

use super::{OffsetMap, ATTR_DELETE_HORIZON};
use crate::protocol::varint;
use crate::storage::StorageError;
use freshet_protocol::batch::{self, BatchHeader};
use freshet_protocol::records;
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------------
// Records: parsing the v2 record format without copying.

/// One record of a batch, viewed in place.
struct Rec<'a> {
    offset_delta: i64,
    timestamp_delta: i64,
    attributes: u8,
    key: Option<&'a [u8]>,
    has_value: bool,
    /// Bytes of the record after its timestamp delta (offset delta .. headers).
    after_timestamp: &'a [u8],
    /// The whole record including its length prefix.
    raw: &'a [u8],
}

pub(super) fn corrupt(what: &str) -> StorageError {
    StorageError::CorruptMessage(format!("malformed record: {what}"))
}

fn parse_records(data: &[u8], count: usize) -> Result<Vec<Rec<'_>>, StorageError> {
    let mut out = Vec::with_capacity(count.min(data.len() / 7 + 1));
    let mut pos = 0usize;
    for _ in 0..count {
        let start = pos;
        let len = varint::read_zigzag_at(data, &mut pos, 5).map_err(|_| corrupt("length"))?;
        let len = usize::try_from(len).map_err(|_| corrupt("negative length"))?;
        let body = pos;
        let end = body
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| corrupt("length past the batch"))?;
        let rec = &data[..end];
        let attributes = *rec.get(pos).ok_or_else(|| corrupt("attributes"))?;
        pos += 1;
        let timestamp_delta =
            varint::read_zigzag_at(rec, &mut pos, 10).map_err(|_| corrupt("timestamp"))?;
        let after_ts = pos;
        let offset_delta =
            varint::read_zigzag_at(rec, &mut pos, 5).map_err(|_| corrupt("offset delta"))?;
        let key_len =
            varint::read_zigzag_at(rec, &mut pos, 5).map_err(|_| corrupt("key length"))?;
        let key = if key_len < 0 {
            None
        } else {
            let k = pos + key_len as usize;
            if k > end {
                return Err(corrupt("key past the record"));
            }
            let key = &rec[pos..k];
            pos = k;
            Some(key)
        };
        let value_len =
            varint::read_zigzag_at(rec, &mut pos, 5).map_err(|_| corrupt("value length"))?;
        if pos > end || (value_len > 0 && pos + value_len as usize > end) {
            return Err(corrupt("value past the record"));
        }
        out.push(Rec {
            offset_delta,
            timestamp_delta,
            attributes,
            key,
            has_value: value_len >= 0,
            after_timestamp: &data[after_ts..end],
            raw: &data[start..end],
        });
        pos = end;
    }
    Ok(out)
}

fn codec_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::CorruptMessage(format!("cannot (de)compress batch: {e}"))
}

/// `data` compressed with `codec` as Kafka's producers do (0: as is).
pub fn compress(codec: i16, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let mut out = BytesMut::new();
    match codec {
        0 => return Ok(data.to_vec()),
        1 => Gzip::compress(&mut out, |t: &mut BytesMut| {
            t.extend_from_slice(data);
            Ok(())
        })
        .map_err(codec_error)?,
        2 => Snappy::compress(&mut out, |t: &mut BytesMut| {
            t.extend_from_slice(data);
            Ok(())
        })
        .map_err(codec_error)?,
        3 => Lz4::compress(&mut out, |t: &mut BytesMut| {
            t.extend_from_slice(data);
            Ok(())
        })
        .map_err(codec_error)?,
        4 => Zstd::compress(&mut out, |t: &mut BytesMut| {
            t.extend_from_slice(data);
            Ok(())
        })
        .map_err(codec_error)?,
        c => {
            return Err(StorageError::InvalidRecord(format!(
                "unknown compression codec {c}"
            )))
        }
    }
    Ok(out.to_vec())
}

// ---------------------------------------------------------------------------------------------
// The per-batch decision (pure).

/// What the filter decided for one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Keep the batch byte for byte.
    Unchanged,
    /// Keep this rewritten batch (same base and last offset).
    Rewritten(Vec<u8>),
    /// Drop the batch.
    Dropped,
}

/// Inputs of the filter that do not change within a round.
pub struct FilterContext<'a> {
    /// Latest offset of every key of the dirty range.
    pub map: &'a OffsetMap,
    /// The cleaner's clock.
    pub now_ms: i64,
    /// `delete.retention.ms` of the topic.
    pub delete_retention_ms: i64,
    /// Last offset of the newest batch seen per idempotent producer id.
    pub producer_last: &'a HashMap<i64, i64>,
}

/// Counts of one batch's filtering.
#[derive(Debug, Default, Clone, Copy)]
pub struct FilterStats {
    /// Records read.
    pub records_read: u64,
    /// Records kept.
    pub records_kept: u64,
    /// Delete horizon of tombstones kept in the batch (when a later round can remove them).
    pub tombstone_horizon_ms: Option<i64>,
}

/// A header-only batch covering `h`'s offsets (Kafka's `writeEmptyHeader`).
fn empty_batch(h: &BatchHeader) -> Vec<u8> {
    let mut out = vec![0u8; batch::HEADER_LEN];
    out[..batch::HEADER_LEN].copy_from_slice(zerocopy::IntoBytes::as_bytes(h));
    if let Some(e) = batch::header_mut(&mut out) {
        e.batch_length
            .set((batch::HEADER_LEN - batch::LOG_OVERHEAD) as i32);
        let attrs = h.attributes() & !(batch::ATTR_COMPRESSION_MASK | ATTR_DELETE_HORIZON);
        e.attributes.set(attrs);
        e.base_timestamp.set(h.max_timestamp());
        e.records_count.set(0);
    }
    batch::fix_crc(&mut out);
    out
}

/// Filter one stored batch `b` (already CRC-checked). `last_of_group`: the batch ends the
/// group being cleaned and must be kept, if only empty.
pub fn filter_batch(
    b: &[u8],
    ctx: &FilterContext<'_>,
    last_of_group: bool,
) -> Result<(Filtered, FilterStats), StorageError> {
    let h = batch::header(b).ok_or_else(|| corrupt("short batch"))?;
    let mut stats = FilterStats::default();
    if h.is_control() {
        return Ok((Filtered::Unchanged, stats));
    }
    let retain_empty = last_of_group || last_of_producer(h, ctx);
    let count = usize::try_from(h.records_count()).unwrap_or(0);
    if count == 0 {
        // An empty batch kept by an earlier round.
        return Ok(if retain_empty {
            (Filtered::Unchanged, stats)
        } else {
            (Filtered::Dropped, stats)
        });
    }
    // Bounded decompression; a batch past the bound (a bomb written before the bound existed)
    // is kept as it is: never delete data merely because it could not be read.
    let data = match records::decompress_bounded(b, h) {
        Ok(data) => data,
        Err(batch::BatchError::RecordListTooLarge(e)) => {
            tracing::warn!(error = %e, "batch too large to clean, kept as it is");
            return Ok((Filtered::Unchanged, stats));
        }
        Err(e) => return Err(e.into()),
    };
    let records = parse_records(&data, count)?;
    stats.records_read = records.len() as u64;
    let horizon = (h.attributes() & ATTR_DELETE_HORIZON != 0).then(|| h.base_timestamp());
    let retain_deletes = horizon.is_none_or(|t| ctx.now_ms < t);
    let base = h.base_offset();
    let kept: Vec<&Rec<'_>> = records
        .iter()
        .filter(|r| survives(r, base, ctx.map, retain_deletes))
        .collect();
    stats.records_kept = kept.len() as u64;
    let has_tombstones = kept.iter().any(|r| !r.has_value);
    let set_horizon = has_tombstones && horizon.is_none();
    let new_horizon = if set_horizon {
        Some(ctx.now_ms.saturating_add(ctx.delete_retention_ms))
    } else {
        horizon
    };
    if has_tombstones {
        stats.tombstone_horizon_ms = new_horizon;
    }
    if kept.len() == records.len() && !set_horizon {
        return Ok((Filtered::Unchanged, stats));
    }
    if kept.is_empty() {
        return Ok(if retain_empty {
            (Filtered::Rewritten(empty_batch(h)), stats)
        } else {
            (Filtered::Dropped, stats)
        });
    }
    let new_base_ts = if set_horizon {
        new_horizon.unwrap_or(h.base_timestamp())
    } else {
        h.base_timestamp()
    };
    let out = rebuild_batch(b, h, &kept, data.len(), new_base_ts, set_horizon)?;
    Ok((Filtered::Rewritten(out), stats))
}

/// Whether `h` is the last batch of an idempotent producer as far as the round has seen (an
/// untracked producer counts as yes: keeping an empty batch is the safe side).
fn last_of_producer(h: &BatchHeader, ctx: &FilterContext<'_>) -> bool {
    let pid = h.producer_id.get();
    pid >= 0
        && ctx
            .producer_last
            .get(&pid)
            .is_none_or(|&l| l == h.last_offset())
}

/// Whether record `r` of a batch based at `base` survives: past the map, or the latest
/// offset of its key and either a value or a tombstone whose delete horizon has not passed.
fn survives(r: &Rec<'_>, base: i64, map: &OffsetMap, retain_deletes: bool) -> bool {
    let offset = base + r.offset_delta;
    if offset > map.latest_offset {
        return true;
    }
    let Some(key) = r.key else {
        return false;
    };
    offset >= map.get(key) && (r.has_value || retain_deletes)
}

/// Batch `b` (header `h`) with only the records `kept`, recompressed with its codec: same
/// base and last offset, `baseTimestamp = new_base_ts` (record timestamp deltas re-based so
/// every record keeps its timestamp), the delete-horizon bit set if `set_horizon`, and a new
/// CRC. `body_bytes`: the decompressed size of the records (a capacity hint).
fn rebuild_batch(
    b: &[u8],
    h: &BatchHeader,
    kept: &[&Rec<'_>],
    body_bytes: usize,
    new_base_ts: i64,
    set_horizon: bool,
) -> Result<Vec<u8>, StorageError> {
    let old_base_ts = h.base_timestamp();
    let mut body = Vec::with_capacity(body_bytes);
    let mut max_ts = i64::MIN;
    for r in kept {
        let ts = old_base_ts.wrapping_add(r.timestamp_delta);
        max_ts = max_ts.max(ts);
        if new_base_ts == old_base_ts {
            body.extend_from_slice(r.raw);
        } else {
            let mut rec = Vec::with_capacity(r.raw.len() + 8);
            rec.push(r.attributes);
            varint::put_varlong(&mut rec, ts.wrapping_sub(new_base_ts));
            rec.extend_from_slice(r.after_timestamp);
            varint::put_varlong(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
    }
    let body = compress(h.compression(), &body)?;
    let mut out = Vec::with_capacity(batch::HEADER_LEN + body.len());
    out.extend_from_slice(&b[..batch::HEADER_LEN]);
    out.extend_from_slice(&body);
    let total = out.len();
    if let Some(e) = batch::header_mut(&mut out) {
        e.batch_length.set((total - batch::LOG_OVERHEAD) as i32);
        if set_horizon {
            e.attributes.set(h.attributes() | ATTR_DELETE_HORIZON);
        }
        e.base_timestamp.set(new_base_ts);
        if !h.is_log_append_time() {
            e.max_timestamp.set(max_ts);
        }
        e.records_count.set(kept.len() as i32);
    }
    batch::fix_crc(&mut out);
    Ok(out)
}

/// The offset map step for one stored batch `b` (header `h`, CRC-checked): put every keyed
/// record at or past `first_dirty` into `map` (a later offset of a key replaces an earlier
/// one). Control and empty batches map nothing. `Ok(false)`: the batch is too large to
/// decompress and was left unmapped (the filter then keeps it as it is). Does not move
/// `map.latest_offset`: the round does, for batches it counts as mapped.
pub fn map_batch(
    map: &mut OffsetMap,
    b: &[u8],
    h: &BatchHeader,
    first_dirty: i64,
) -> Result<bool, StorageError> {
    if h.is_control() || h.records_count() <= 0 {
        return Ok(true);
    }
    let data = match records::decompress_bounded(b, h) {
        Ok(data) => data,
        Err(batch::BatchError::RecordListTooLarge(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let count = usize::try_from(h.records_count()).unwrap_or(0);
    for r in parse_records(&data, count)? {
        let offset = h.base_offset() + r.offset_delta;
        if let Some(key) = r.key {
            if offset >= first_dirty {
                map.put(key, offset);
            }
        }
    }
    Ok(true)
}

/// Check a stored batch: framing, magic, CRC-32C, and a record count that fits its offsets
/// (a cleaned batch may hold fewer records than offsets, or none).
pub fn validate_stored(b: &[u8]) -> Result<&BatchHeader, StorageError> {
    let h = batch::header(b).ok_or_else(|| corrupt("short batch"))?;
    if h.total_len() != b.len() as i64 || h.magic != batch::MAGIC_V2 {
        return Err(StorageError::CorruptMessage("bad batch framing".into()));
    }
    if batch::compute_crc(b) != h.crc() {
        return Err(StorageError::CorruptMessage(
            "batch CRC-32C mismatch".into(),
        ));
    }
    let count = i64::from(h.records_count());
    let delta = i64::from(h.last_offset_delta.get());
    if count < 0 || delta < 0 || count > delta + 1 {
        return Err(StorageError::InvalidRecord(format!(
            "batch has {count} records for {} offsets",
            delta + 1
        )));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use freshet_protocol::batch::{encode_batch, Compression, NewRecord};

    fn rec(key: &str, value: Option<&str>, ts: i64) -> NewRecord {
        (
            Some(Bytes::copy_from_slice(key.as_bytes())),
            value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            ts,
        )
    }

    fn batch_at(base: i64, records: &[NewRecord], c: Compression) -> Vec<u8> {
        let mut b = encode_batch(records, c).expect("encode").to_vec();
        batch::set_base_offset(&mut b, base);
        b
    }

    fn decode(b: &[u8]) -> Vec<(i64, i64, Option<Bytes>, Option<Bytes>)> {
        let mut bytes = Bytes::copy_from_slice(b);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).expect("decode");
        set.records
            .into_iter()
            .map(|r| (r.offset, r.timestamp, r.key, r.value))
            .collect()
    }

    #[test]
    fn filter_keeps_latest_per_key_and_preserves_offsets() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch_at(
                100,
                &[
                    rec("a", Some("1"), 10),
                    rec("b", Some("1"), 11),
                    rec("a", Some("2"), 12),
                    rec("c", Some("1"), 13),
                ],
                c,
            );
            let mut map = OffsetMap::with_memory(1 << 20);
            map.clear(99);
            map.put(b"a", 102);
            map.put(b"b", 105); // overwritten later
            map.put(b"c", 103);
            map.latest_offset = 105;
            let producers = HashMap::new();
            let ctx = FilterContext {
                map: &map,
                now_ms: 1000,
                delete_retention_ms: 50,
                producer_last: &producers,
            };
            let (f, st) = filter_batch(&b, &ctx, false).expect("filter");
            let Filtered::Rewritten(out) = f else {
                panic!("expected a rewrite, got {f:?}");
            };
            assert_eq!((st.records_read, st.records_kept), (4, 2));
            let h = validate_stored(&out).expect("valid cleaned batch");
            assert_eq!((h.base_offset(), h.last_offset()), (100, 103));
            assert_eq!(h.compression(), c as i16, "same codec");
            assert_eq!(h.max_timestamp(), 13);
            let recs = decode(&out);
            assert_eq!(
                recs.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
                vec![(102, 12), (103, 13)]
            );
            assert_eq!(recs[0].3.as_deref(), Some(&b"2"[..]));
        }
    }

    #[test]
    fn tombstones_get_a_horizon_then_go() {
        let b = batch_at(
            0,
            &[
                rec("a", Some("1"), 10),
                rec("a", None, 20),
                rec("b", Some("x"), 30),
            ],
            Compression::None,
        );
        let mut map = OffsetMap::with_memory(1 << 20);
        map.clear(-1);
        map.put(b"a", 1);
        map.put(b"b", 2);
        map.latest_offset = 2;
        let producers = HashMap::new();
        let mut ctx = FilterContext {
            map: &map,
            now_ms: 1000,
            delete_retention_ms: 500,
            producer_last: &producers,
        };
        let (f, st) = filter_batch(&b, &ctx, false).expect("filter");
        let Filtered::Rewritten(once) = f else {
            panic!("expected a rewrite");
        };
        assert_eq!(st.tombstone_horizon_ms, Some(1500));
        let h = validate_stored(&once).expect("valid");
        assert_ne!(h.attributes() & ATTR_DELETE_HORIZON, 0);
        assert_eq!(h.base_timestamp(), 1500);
        let recs = decode(&once);
        assert_eq!(
            recs.iter()
                .map(|r| (r.0, r.1, r.3.is_none()))
                .collect::<Vec<_>>(),
            vec![(1, 20, true), (2, 30, false)],
            "timestamps survive the re-basing"
        );
        // Before the horizon: unchanged. After: the tombstone goes.
        ctx.now_ms = 1499;
        assert_eq!(
            filter_batch(&once, &ctx, false).expect("filter").0,
            Filtered::Unchanged
        );
        ctx.now_ms = 1500;
        let (f, st) = filter_batch(&once, &ctx, false).expect("filter");
        let Filtered::Rewritten(twice) = f else {
            panic!("expected a rewrite");
        };
        assert_eq!(st.tombstone_horizon_ms, None);
        let recs = decode(&twice);
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(validate_stored(&twice).expect("valid").last_offset(), 2);
    }

    #[test]
    fn emptied_batches_are_dropped_or_kept_empty() {
        let b = batch_at(
            10,
            &[rec("a", Some("1"), 5), rec("a", Some("2"), 6)],
            Compression::Gzip,
        );
        let mut map = OffsetMap::with_memory(1 << 20);
        map.clear(9);
        map.put(b"a", 50);
        map.latest_offset = 60;
        let producers = HashMap::new();
        let ctx = FilterContext {
            map: &map,
            now_ms: 0,
            delete_retention_ms: 0,
            producer_last: &producers,
        };
        assert_eq!(
            filter_batch(&b, &ctx, false).expect("filter").0,
            Filtered::Dropped
        );
        let (f, _) = filter_batch(&b, &ctx, true).expect("filter");
        let Filtered::Rewritten(e) = f else {
            panic!("expected an empty batch");
        };
        let h = validate_stored(&e).expect("valid empty batch");
        assert_eq!(
            (
                h.base_offset(),
                h.last_offset(),
                h.records_count(),
                h.compression()
            ),
            (10, 11, 0, 0)
        );
        assert!(
            batch::validate(&e).is_err(),
            "produce validation refuses empty batches"
        );
        // Records past the map are always kept.
        let mut map2 = OffsetMap::with_memory(1 << 20);
        map2.clear(9);
        map2.put(b"a", 50);
        map2.latest_offset = 10;
        let ctx2 = FilterContext { map: &map2, ..ctx };
        let (f, st) = filter_batch(&b, &ctx2, false).expect("filter");
        assert!(matches!(f, Filtered::Rewritten(_)));
        assert_eq!(st.records_kept, 1);
    }

    #[test]
    fn last_batch_of_an_idempotent_producer_is_kept_empty() {
        let mut b = batch_at(20, &[rec("a", Some("1"), 5)], Compression::None);
        if let Some(h) = batch::header_mut(&mut b) {
            h.producer_id.set(7);
            h.producer_epoch.set(0);
            h.base_sequence.set(3);
        }
        batch::fix_crc(&mut b);
        let mut map = OffsetMap::with_memory(1 << 20);
        map.clear(19);
        map.put(b"a", 90);
        map.latest_offset = 99;
        let mut producers = HashMap::new();
        producers.insert(7i64, 20i64);
        let producers = producers;
        let ctx = FilterContext {
            map: &map,
            now_ms: 0,
            delete_retention_ms: 0,
            producer_last: &producers,
        };
        let (f, _) = filter_batch(&b, &ctx, false).expect("filter");
        let Filtered::Rewritten(e) = f else {
            panic!("the producer's last batch must stay, empty");
        };
        let h = validate_stored(&e).expect("valid");
        assert_eq!(
            (
                h.records_count(),
                h.producer_id.get(),
                h.base_sequence.get()
            ),
            (0, 7, 3)
        );
        // A later batch of the same producer exists: this one can go.
        let mut later = HashMap::new();
        later.insert(7i64, 50i64);
        let ctx = FilterContext {
            producer_last: &later,
            ..ctx
        };
        assert_eq!(
            filter_batch(&b, &ctx, false).expect("filter").0,
            Filtered::Dropped
        );
    }

    #[test]
    fn keyless_records_are_refused_for_compacted_topics() {
        for c in [Compression::None, Compression::Zstd] {
            let keyed = batch_at(0, &[rec("a", Some("1"), 1), rec("b", None, 2)], c);
            let compacted = records::RecordRules { require_keys: true };
            assert!(batch::validate_records(&keyed, 1 << 20, compacted).is_ok());
            let keyless = batch_at(
                0,
                &[rec("a", Some("1"), 1), (None, Some(Bytes::from("v")), 3)],
                c,
            );
            let mut set = keyed.clone();
            set.extend_from_slice(&keyless);
            match batch::validate_records(&set, 1 << 20, compacted) {
                Err(batch::BatchError::InvalidRecords { errors, .. }) => {
                    assert_eq!(errors.len(), 1);
                    assert_eq!(errors[0].batch_index, 1);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    fn empty_map(latest_offset: i64) -> OffsetMap {
        let mut map = OffsetMap::with_memory(1 << 20);
        map.clear(latest_offset);
        map
    }

    #[test]
    fn map_batch_keeps_the_latest_offset_per_key_from_the_first_dirty_offset() {
        for c in [Compression::None, Compression::Lz4] {
            let b = batch_at(
                10,
                &[
                    rec("a", Some("1"), 1),
                    rec("b", Some("1"), 2),
                    rec("a", Some("2"), 3),
                ],
                c,
            );
            let h = validate_stored(&b).expect("valid");
            let mut map = empty_map(9);
            assert!(map_batch(&mut map, &b, h, 11).expect("map"));
            assert_eq!((map.get(b"a"), map.get(b"b"), map.len()), (12, 11, 2));
            assert_eq!(
                map.latest_offset, 9,
                "the round moves latest_offset, not map_batch"
            );
            let mut map = empty_map(11);
            assert!(map_batch(&mut map, &b, h, 12).expect("map"));
            assert_eq!(
                (map.get(b"a"), map.get(b"b")),
                (12, -1),
                "below first dirty"
            );
        }
    }

    #[test]
    fn map_batch_skips_control_batches() {
        let mut b = batch_at(0, &[rec("a", Some("1"), 1)], Compression::None);
        if let Some(h) = batch::header_mut(&mut b) {
            let attrs = h.attributes.get() | batch::ATTR_CONTROL;
            h.attributes.set(attrs);
        }
        batch::fix_crc(&mut b);
        let h = validate_stored(&b).expect("valid");
        let mut map = empty_map(-1);
        assert!(map_batch(&mut map, &b, h, 0).expect("map"));
        assert!(map.is_empty());
        let producers = HashMap::new();
        let ctx = FilterContext {
            map: &map,
            now_ms: 0,
            delete_retention_ms: 0,
            producer_last: &producers,
        };
        assert_eq!(
            filter_batch(&b, &ctx, false).expect("filter").0,
            Filtered::Unchanged,
            "control batches are kept as they are"
        );
    }

    /// A batch whose CRC is right but whose record lies about its length: the filter and the
    /// map step answer CorruptMessage instead of reading past the buffer.
    #[test]
    fn a_corrupt_record_in_a_crc_valid_batch_is_an_error_not_a_panic() {
        let good = batch_at(0, &[rec("a", Some("1"), 1)], Compression::None);
        for length in [0x7e_u8, 0x01, 0x00] {
            let mut b = good.clone();
            // The record's length varint (zigzag): 63, -1 and 0 bytes.
            b[batch::HEADER_LEN] = length;
            batch::fix_crc(&mut b);
            let h = validate_stored(&b).expect("framing and CRC still hold");
            let mut map = empty_map(-1);
            assert!(
                matches!(
                    map_batch(&mut map, &b, h, 0),
                    Err(StorageError::CorruptMessage(_))
                ),
                "record length byte {length:#x}"
            );
            let producers = HashMap::new();
            let ctx = FilterContext {
                map: &map,
                now_ms: 0,
                delete_retention_ms: 0,
                producer_last: &producers,
            };
            assert!(matches!(
                filter_batch(&b, &ctx, false),
                Err(StorageError::CorruptMessage(_))
            ));
        }
    }

    #[test]
    fn validate_stored_refuses_bad_crc_framing_and_counts() {
        let good = batch_at(
            5,
            &[rec("a", Some("1"), 1), rec("b", Some("2"), 2)],
            Compression::None,
        );
        assert!(validate_stored(&good).is_ok());
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            validate_stored(&flipped),
            Err(StorageError::CorruptMessage(_))
        ));
        assert!(
            validate_stored(&good[..good.len() - 1]).is_err(),
            "truncated"
        );
        assert!(
            validate_stored(&good[..10]).is_err(),
            "shorter than a header"
        );
        let mut too_many = good.clone();
        if let Some(h) = batch::header_mut(&mut too_many) {
            h.records_count.set(3);
        }
        batch::fix_crc(&mut too_many);
        assert!(matches!(
            validate_stored(&too_many),
            Err(StorageError::InvalidRecord(_))
        ));
    }
}
