//! The bodies of the `cargo fuzz` targets in `fuzz/`, kept in the library so that the normal
//! test suite runs every committed seed and every input that ever crashed a target
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) through exactly the same code.
//!
//! Each function takes arbitrary bytes and must return without panicking or aborting; the
//! `assert!`s inside state properties that must hold for any input (a failure is a bug the
//! fuzzer found). The targets:
//! - [`frames`]: a connection's byte stream: size-prefixed framing (`protocol::frame`), header
//!   parsing and classification (`protocol::header`), then the body decoder of the named API
//!   (`protocol::codec::decode_body`), frame after frame, as `server::connection` does.
//! - [`request_body`]: one body, `[api key, version as i8, body...]`, straight into the decoder
//!   (reaches deep decoder states faster than going through frames).
//! - [`record_batches`]: a produced record set: batch framing, header view, validation
//!   (`freshet_protocol::batch`), and the in-place rewrites the append path does to a valid set.
//! - [`record_mutations`]: records mutated *inside* a well-formed batch whose length and
//!   CRC-32C are then fixed (and which is recompressed with its codec), so that the input gets
//!   past the batch checks and reaches the record walk (`freshet_protocol::records`): the produce
//!   validation, the streaming decompression, the cleaner's decompression, record times.

use bytes::{Bytes, BytesMut};

use crate::protocol::any_request::decode_request_body;
use crate::protocol::frame::take_frame;
use crate::protocol::header::{
    api_versions_request_is_valid, classify_request, parse_request_header, Disposition,
};
use freshet_protocol::batch;

/// Frame size limit used by [`frames`] (small, so that the fuzzer meets the limit).
pub const FUZZ_FRAME_BYTES_MAX: usize = 1 << 20;

/// Largest batch accepted by [`record_batches`] (Kafka's default `max.message.bytes`).
pub const FUZZ_MESSAGE_BYTES_MAX: u32 = 1_048_588;

/// A connection's bytes: frames, headers, bodies.
pub fn frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let frame = match take_frame(&mut buf, FUZZ_FRAME_BYTES_MAX) {
            Ok(Some(frame)) => frame.freeze(),
            Ok(None) | Err(_) => return,
        };
        assert_eq!(before - buf.len(), frame.len() + 4, "framing lost bytes");
        let Ok(request) = parse_request_header(frame) else {
            continue;
        };
        match classify_request(request.api_key, request.api_version) {
            Disposition::Handle => {
                let decoded =
                    decode_request_body(request.api_key, request.api_version, request.body);
                if request.api_key == kafka_protocol::messages::ApiKey::ApiVersions as i16 {
                    if let Ok(()) = decoded {
                        let _ = api_versions_check(request.api_version);
                    }
                }
            }
            Disposition::UnsupportedApiVersions => {
                let answer =
                    crate::protocol::header::unsupported_api_versions_frame(request.correlation_id);
                assert!(answer.len() > 4);
            }
            Disposition::Close => {}
        }
    }
}

fn api_versions_check(version: i16) -> bool {
    let request = kafka_protocol::messages::ApiVersionsRequest::default();
    api_versions_request_is_valid(&request, version)
}

/// `[api key (0..=255), version (as i8), body...]` into the body decoder.
pub fn request_body(data: &[u8]) {
    let [key, version, body @ ..] = data else {
        return;
    };
    let _ = decode_request_body(
        i16::from(*key),
        i16::from(*version as i8),
        Bytes::copy_from_slice(body),
    );
}

/// A produced record set: validation, and for a valid set the append path's rewrites.
pub fn record_batches(data: &[u8]) {
    for (_, b) in batch::batches(data).flatten() {
        let _ = batch::validate(b);
        let _ = batch::record_times(b);
        let _ = batch::offset_of_max_timestamp(b);
    }
    let Ok(infos) = batch::validate_record_set(data, FUZZ_MESSAGE_BYTES_MAX) else {
        return;
    };
    // A valid set is tiled exactly by its batches...
    let mut end = 0;
    for info in &infos {
        assert_eq!(info.pos, end, "batches leave a gap");
        assert!(info.offset_count >= 1);
        end += info.len;
    }
    assert_eq!(end, data.len(), "batches do not cover the record set");
    // ... and the rewrites done at append (offsets, LogAppendTime) keep every batch valid.
    let mut copy = data.to_vec();
    for info in &infos {
        let b = &mut copy[info.pos..info.pos + info.len];
        batch::set_base_offset(b, 1_000_000);
        batch::set_partition_leader_epoch(b, 7);
        batch::set_log_append_time(b, 1_700_000_000_000);
        let h = batch::validate(b).expect("a rewritten valid batch stays valid");
        assert_eq!(h.base_offset(), 1_000_000);
        assert_eq!(h.last_offset(), 1_000_000 + info.offset_count - 1);
        assert_eq!(batch::offset_of_max_timestamp(b), 1_000_000);
    }
}

/// Interesting values for a mutated varint: nulls and negatives, the edges of i32, huge.
const VARINT_VALUES: [i64; 10] = [
    -2,
    -1,
    0,
    1,
    127,
    1 << 20,
    1 << 30,
    i32::MAX as i64,
    1 << 31,
    i64::MAX,
];

/// A well-formed batch's records, before mutation: `count` records with keys, values and
/// headers chosen by `shape`, encoded by the kafka-protocol crate (a client's encoder).
fn seed_records(count: usize, shape: u8) -> Option<Vec<u8>> {
    use kafka_protocol::records::{Record, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut headers = indexmap::IndexMap::new();
            for h in 0..usize::from(shape % 3) {
                headers.insert(
                    kafka_protocol::protocol::StrBytes::from_string(format!("h{h}")),
                    (shape & 8 == 0).then(|| Bytes::from(vec![h as u8; h + 1])),
                );
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000 + i as i64 * 7,
                key: (shape & 4 == 0 || i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (shape & 16 == 0).then(|| Bytes::from(vec![b'v'; i * 3])),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: kafka_protocol::records::Compression::None,
    };
    kafka_protocol::records::RecordBatchEncoder::encode(&mut buf, &records, &options).ok()?;
    Some(buf.to_vec())
}

/// Builds a batch from `data` and walks it. `data`: `[codec, count, shape, flags, ops...]`;
/// each op is 3 bytes `[kind, position, value]`: overwrite a byte, insert one, delete one,
/// or write one of [`VARINT_VALUES`] as a varint at the position of the records section
/// (positions wrap modulo its length). Flags: bit 0, require keys (a compacted topic); bit 1,
/// also change `recordsCount` by `value as i8` of the last op. The records are then
/// compressed with the codec and the batch's length and CRC-32C fixed, so the batch checks
/// pass and only the records are wrong.
pub fn record_mutations(data: &[u8]) -> Verdict {
    use crate::storage::cleaner;
    use freshet_protocol::records;
    let [codec, count, shape, flags, ops @ ..] = data else {
        return Verdict::Skipped;
    };
    let codec = i16::from(*codec % 5);
    let count = usize::from(*count % 8) + 1;
    let Some(seed) = seed_records(count, *shape) else {
        return Verdict::Skipped;
    };
    let mut recs = seed[batch::HEADER_LEN..].to_vec();
    let last_value = apply_ops(&mut recs, ops);
    let Ok(body) = cleaner::compress(codec, &recs) else {
        return Verdict::Skipped;
    };
    let mut b = seed[..batch::HEADER_LEN].to_vec();
    b.extend_from_slice(&body);
    let total = b.len();
    if let Some(h) = batch::header_mut(&mut b) {
        h.batch_length.set((total - batch::LOG_OVERHEAD) as i32);
        h.attributes.set(codec);
        if flags & 2 != 0 {
            let n = (count as i32)
                .saturating_add(i32::from(last_value as i8))
                .max(1);
            h.records_count.set(n);
            h.last_offset_delta.set(n - 1);
        }
    }
    batch::fix_crc(&mut b);
    let Ok(h) = batch::validate(&b) else {
        return Verdict::Skipped;
    };
    let expected = h.records_count();
    let rules = records::RecordRules {
        require_keys: flags & 1 != 0,
    };
    let verdict = batch::validate_records(&b, FUZZ_MESSAGE_BYTES_MAX, rules);
    let mut walked = 0i32;
    let walk = records::for_each_record(&b, h, |r| {
        assert_eq!(r.index, walked, "records are reported in order");
        walked += 1;
    });
    let bounded = records::decompress_bounded(&b, h);
    let _ = batch::record_times(&b);
    let _ = batch::offset_of_max_timestamp(&b);
    match verdict {
        Ok(infos) => {
            // Accepted: the walk agrees, every record is there, the cleaner can read it.
            assert_eq!(infos.len(), 1);
            assert!(walk.is_ok(), "validated records walk again");
            assert_eq!(walked, expected, "a valid batch has recordsCount records");
            assert!(bounded.is_ok(), "a valid batch decompresses");
            Verdict::Accepted
        }
        Err(batch::BatchError::InvalidRecords { errors, .. }) => {
            assert!(walk.is_ok(), "record errors come from well-formed records");
            assert!(!errors.is_empty());
            assert!(errors
                .iter()
                .all(|e| e.batch_index >= 0 && e.batch_index < expected));
            Verdict::RecordErrors
        }
        Err(_) => Verdict::Refused,
    }
}

/// Applies the 3-byte ops (at most 64) to the records section `recs`; returns the value of the
/// last one (0 if none).
fn apply_ops(recs: &mut Vec<u8>, ops: &[u8]) -> u8 {
    let mut last_value = 0u8;
    for op in ops.chunks_exact(3).take(64) {
        let (kind, value) = (op[0] % 4, op[2]);
        last_value = value;
        let pos = if recs.is_empty() {
            0
        } else {
            usize::from(op[1]) % recs.len()
        };
        match kind {
            0 if !recs.is_empty() => recs[pos] = value,
            1 => recs.insert(pos, value),
            2 if !recs.is_empty() => {
                recs.remove(pos);
            }
            3 => {
                let mut v = Vec::new();
                crate::protocol::varint::put_varlong(
                    &mut v,
                    VARINT_VALUES[usize::from(value) % VARINT_VALUES.len()],
                );
                let end = (pos + v.len()).min(recs.len());
                recs.splice(pos..end, v);
            }
            _ => {}
        }
    }
    last_value
}

/// What [`record_mutations`] saw (for tests that check the mutations reach every verdict).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The input did not make a batch.
    Skipped,
    /// The batch was accepted.
    Accepted,
    /// Refused with a list of record errors (INVALID_RECORD).
    RecordErrors,
    /// Refused whole (CORRUPT_MESSAGE...).
    Refused,
}

#[cfg(test)]
mod tests {
    //! Every committed seed and crash input of every fuzz target, through the target's body.
    use std::path::PathBuf;

    fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(kind)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .map(|p| {
                let bytes = std::fs::read(&p).expect("read fuzz input");
                (p, bytes)
            })
            .collect();
        out.sort();
        out
    }

    fn run(target: &str, body: fn(&[u8])) -> usize {
        let mut n = 0;
        for kind in ["seeds", "regressions"] {
            for (path, bytes) in inputs(kind, target) {
                let result = std::panic::catch_unwind(|| body(&bytes));
                assert!(result.is_ok(), "{} panics", path.display());
                n += 1;
            }
        }
        n
    }

    #[test]
    fn fuzz_seeds_and_regressions_of_frames_pass() {
        assert!(run("frames", super::frames) > 0, "no seeds for frames");
    }

    #[test]
    fn fuzz_seeds_and_regressions_of_request_body_pass() {
        assert!(run("request_body", super::request_body) > 0);
    }

    #[test]
    fn fuzz_seeds_and_regressions_of_record_batches_pass() {
        assert!(run("record_batches", super::record_batches) > 0);
    }

    /// The committed `record_batches` seeds are what the record-batch encoder makes (the
    /// request seeds are checked the same way in the protocol crate's `fuzz_tests`).
    /// `FRESHET_WRITE_FUZZ_SEEDS=1 cargo test --lib record_batch_fuzz_seed_corpus` rewrites them.
    #[test]
    fn record_batch_fuzz_seed_corpus_is_committed() {
        use bytes::Bytes;
        use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
        let record = |i: u8| -> NewRecord {
            (
                Some(Bytes::from(vec![b'k', i])),
                Some(Bytes::from(vec![i; 20])),
                1_700_000_000_000 + i64::from(i),
            )
        };
        let mut files = Vec::new();
        for (name, codec) in [
            ("none", Compression::None),
            ("gzip", Compression::Gzip),
            ("zstd", Compression::Zstd),
        ] {
            let one = encode_batch(&[record(1)], codec).expect("encode batch");
            let three =
                encode_batch(&[record(1), record(2), (None, None, 5)], codec).expect("batch");
            files.push((format!("one-{name}"), one.to_vec()));
            files.push((
                format!("two-batches-{name}"),
                [one.to_vec(), three.to_vec()].concat(),
            ));
        }
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/record_batches");
        let write = std::env::var_os("FRESHET_WRITE_FUZZ_SEEDS").is_some();
        for (name, bytes) in files {
            let path = root.join(&name);
            if write {
                std::fs::create_dir_all(&root).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let committed =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(
                    committed == bytes,
                    "{} is stale; run FRESHET_WRITE_FUZZ_SEEDS=1 cargo test --lib record_batch_fuzz_seed_corpus",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn fuzz_seeds_and_regressions_of_record_mutations_pass() {
        let body: fn(&[u8]) = |data| {
            super::record_mutations(data);
        };
        assert!(run("record_mutations", body) > 0);
    }

    /// Thousands of record-level mutations inside a valid CRC, from a fixed seed, go through
    /// the validator without a panic, and reach both verdicts and every codec.
    #[test]
    fn record_level_mutations_never_panic_the_validator() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut seen = std::collections::HashMap::new();
        let mut codecs = std::collections::HashSet::new();
        for i in 0..4_000u32 {
            let ops = (next() % 6) as usize;
            let mut input = vec![(i % 5) as u8, next() as u8, next() as u8, next() as u8];
            for _ in 0..ops * 3 {
                input.push(next() as u8);
            }
            let Ok(verdict) = std::panic::catch_unwind(|| super::record_mutations(&input)) else {
                panic!("record_mutations panics on {input:?}");
            };
            *seen.entry(verdict).or_insert(0u32) += 1;
            if verdict == super::Verdict::Refused {
                codecs.insert(input[0]);
            }
        }
        let (accepted, refused) = (
            seen.get(&super::Verdict::Accepted).copied().unwrap_or(0),
            seen.get(&super::Verdict::Refused).copied().unwrap_or(0),
        );
        eprintln!("verdicts of 4,000 mutations: {seen:?}");
        assert!(seen.contains_key(&super::Verdict::RecordErrors), "{seen:?}");
        assert_eq!(codecs.len(), 5, "refusals under every codec");
        assert!(accepted > 50 && refused > 1_000, "{seen:?}");
    }
}
