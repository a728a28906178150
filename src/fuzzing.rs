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
//!   (`storage::batch`), and the in-place rewrites the append path does to a valid set.

use bytes::{Bytes, BytesMut};

use crate::protocol::any_request::decode_request_body;
use crate::protocol::frame::take_frame;
use crate::protocol::header::{
    api_versions_request_is_valid, classify_request, parse_request_header, Disposition,
};
use crate::storage::batch;

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
        use crate::storage::batch::{encode_batch, Compression, NewRecord};
        use bytes::Bytes;
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
}
