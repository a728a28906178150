//! Property test: random sequences of appends, reads, time lookups, DeleteRecords, retention
//! and reopen (clean or not) against a simple model of the log. Every read must return whole
//! batches, starting with the one holding the offset, byte-identical to what was appended
//! (modulo the rewritten base offset), within max_bytes (Kafka's min-one-batch rule aside),
//! never past the high watermark; every acknowledged batch must survive reopen.

use crate::storage_common as common;

use common::*;
use freshet::storage::{LogConfig, StorageError};
use freshet_protocol::batch;
use kafka_protocol::records::Compression;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Record sets: per batch (records, value bytes).
    Append(Vec<(usize, usize)>),
    Read {
        at: u16,
        max_bytes: usize,
        min_one: bool,
    },
    Time {
        at: u16,
    },
    DeleteRecords {
        at: u16,
    },
    RetentionBytes {
        keep: u32,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((1usize..6, 0usize..2500), 1..4).prop_map(Op::Append),
        4 => (any::<u16>(), 1usize..20_000, any::<bool>())
            .prop_map(|(at, max_bytes, min_one)| Op::Read { at, max_bytes, min_one }),
        1 => any::<u16>().prop_map(|at| Op::Time { at }),
        1 => any::<u16>().prop_map(|at| Op::DeleteRecords { at }),
        1 => (0u32..60_000).prop_map(|keep| Op::RetentionBytes { keep }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

struct ModelBatch {
    base: i64,
    last: i64,
    bytes: bytes::Bytes,
}

fn pick(at: u16, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        return lo;
    }
    lo + (i64::from(at) % (hi - lo + 1))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in prop::collection::vec(op(), 1..40),
        segment_bytes in 4_000u64..40_000,
        index_interval in 100u32..5_000,
        cache_bytes in prop::sample::select(vec![0usize, 20_000, 8 << 20]),
    ) {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("p-0");
        let cfg = LogConfig {
            segment_bytes,
            index_interval_bytes: index_interval,
            ..LogConfig::default()
        };
        run(async move {
            let mut log = Some(open(&dir, cfg.clone(), cache_bytes).await);
            let mut model: Vec<ModelBatch> = Vec::new();
            let mut leo = 0i64;
            let mut log_start = 0i64;
            for op in ops {
                let l = log.as_ref().expect("open");
                match op {
                    Op::Append(spec) => {
                        let mut batches = Vec::new();
                        let mut next = leo;
                        for (n, v) in spec {
                            let first = next;
                            let b = batch_with(n, v, |i| 10 * (first + i as i64), Compression::None);
                            batches.push((next, next + n as i64 - 1, b));
                            next += n as i64;
                        }
                        let set = record_set(&batches.iter().map(|b| b.2.clone()).collect::<Vec<_>>());
                        let info = l.append(set, 1).await.expect("append");
                        assert_eq!(info.base_offset, leo);
                        assert_eq!(info.last_offset, next - 1);
                        for (base, last, b) in batches {
                            model.push(ModelBatch { base, last, bytes: b });
                        }
                        leo = next;
                    }
                    Op::Read { at, max_bytes, min_one } => {
                        let offset = pick(at, log_start, leo);
                        let data = l.read(offset, max_bytes, min_one).await.expect("read");
                        assert_eq!(data.high_watermark, leo);
                        assert_eq!(data.log_start_offset, log_start);
                        let total: usize = data.batches.iter().map(|b| b.len()).sum();
                        if offset == leo {
                            assert!(data.batches.is_empty());
                        } else if min_one {
                            assert!(!data.batches.is_empty());
                        }
                        if data.batches.len() > 1 || !min_one {
                            assert!(total <= max_bytes, "{total} > {max_bytes}");
                        }
                        let start = model.partition_point(|m| m.last < offset);
                        for (k, got) in data.batches.iter().enumerate() {
                            let want = &model[start + k];
                            let h = batch::validate(got).expect("valid batch");
                            assert_eq!((h.base_offset(), h.last_offset()), (want.base, want.last));
                            assert_eq!(payload(got), payload(&want.bytes));
                        }
                        // Nothing that fits was left out (a disk read stops at a segment end, as
                        // Kafka's does).
                        if let Some(next) = model.get(start + data.batches.len()) {
                            if !data.batches.is_empty() {
                                let bases = l.segment_base_offsets();
                                assert!(
                                    total + next.bytes.len() > max_bytes || bases.contains(&next.base),
                                    "read at {offset} stopped early"
                                );
                            }
                        }
                    }
                    Op::Time { at } => {
                        let target = 10 * pick(at, 0, leo + 2);
                        let got = l.offset_for_timestamp(target).await.expect("time lookup");
                        let o = ((target + 9) / 10).max(log_start);
                        let want = if o < leo { Some((o, 10 * o)) } else { None };
                        assert_eq!(got, want, "ts {target}");
                    }
                    Op::DeleteRecords { at } => {
                        let target = pick(at, 0, leo);
                        let got = l.delete_records(target).await.expect("delete records");
                        log_start = log_start.max(target);
                        assert_eq!(got, log_start);
                    }
                    Op::RetentionBytes { keep } => {
                        l.set_config(LogConfig { retention_bytes: i64::from(keep), ..cfg.clone() });
                        l.apply_retention(1).await.expect("retention");
                        l.set_config(cfg.clone());
                        let now = l.log_start_offset();
                        assert!(now >= log_start && now <= leo);
                        log_start = now;
                    }
                    Op::Reopen { clean } => {
                        let l = log.take().expect("open");
                        if clean {
                            l.close().await.expect("close");
                        }
                        drop(l);
                        let l = open(&dir, cfg.clone(), cache_bytes).await;
                        assert_eq!(l.high_watermark(), leo, "acknowledged data lost");
                        assert_eq!(l.log_start_offset(), log_start);
                        log = Some(l);
                    }
                }
            }
            let l = log.take().expect("open");
            if log_start < leo {
                let all = read_all(&l, log_start).await;
                let start = model.partition_point(|m| m.last < log_start);
                assert_eq!(all.len(), model.len() - start);
            }
            match l.read(leo + 1, 10, true).await {
                Err(StorageError::OffsetOutOfRange { .. }) => {}
                other => panic!("read past the end: {other:?}"),
            }
            l.close().await.expect("close");
        });
    }
}
