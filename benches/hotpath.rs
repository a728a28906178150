//! Hot-path microbenchmarks (issue 6): the per-request CPU work of the produce and fetch paths,
//! measured in isolation with `std::time` (no framework), plus the durable segment append.
//!
//! - request decode: frame split + header parse + `Produce` v11 body decode (one 16 KiB record
//!   set), and a `Fetch` v15 request of 100 partitions;
//! - produce batch validation: framing, magic, record count, CRC-32C and the walk of every
//!   record (`storage::records`) of a 16 KiB batch (100 records; 700 small records; zstd,
//!   walked as it is decompressed) and of a 1 MiB record set of 64 batches;
//! - offset rewrite: `baseOffset` + leader epoch of the 64 batches of that set (what append
//!   does per batch), and the LogAppendTime stamp (which also recomputes the CRC);
//! - fetch framing: a Fetch v15 response of 100 partitions x 4 batches, framed around the
//!   batches without copying them;
//! - compaction: filtering a 16 KiB batch against the cleaner's offset map;
//! - segment append: `PartitionLog::append` of 1 KiB batches, durable (group-committed
//!   fdatasync), with 1 and with 64 appends in flight.
//!
//! `cargo bench --bench hotpath [-- --quick] [-- --dir PATH]` (or `FRESHET_BENCH_QUICK=1`,
//! `FRESHET_BENCH_DIR`). Each CPU benchmark reports the median of 5 runs of about 200 ms
//! (20 ms with `--quick`); the append benchmark runs for about 2 s per case (0.3 s).

use std::hint::black_box;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use freshet::protocol::codec::decode_body;
use freshet::protocol::fetch::{
    encode_fetch_response, FetchPartition, FetchResponseParts, FetchTopic,
};
use freshet::protocol::frame::take_frame;
use freshet::protocol::header::parse_request_header;
use freshet::storage::{LogConfig, PartitionLog, TailCache};
use freshet_protocol::batch::{self, encode_batch, Compression, NewRecord};
use kafka_protocol::messages::{
    fetch_request, produce_request, ApiKey, FetchRequest, ProduceRequest, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};

struct Settings {
    quick: bool,
    dir: PathBuf,
}

fn settings() -> Settings {
    let args: Vec<String> = std::env::args().collect();
    let quick =
        args.iter().any(|a| a == "--quick") || std::env::var_os("FRESHET_BENCH_QUICK").is_some();
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1).map(PathBuf::from))
        .or_else(|| std::env::var_os("FRESHET_BENCH_DIR").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    Settings { quick, dir }
}

/// Runs `f` (which does `ops` operations over `bytes` bytes per call) repeatedly; prints the
/// median time per operation and the throughput.
fn bench(s: &Settings, name: &str, ops: u64, bytes: u64, mut f: impl FnMut()) {
    let run_time = if s.quick {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(200)
    };
    // Warm up and size a run.
    let t = Instant::now();
    let mut calls = 0u64;
    while t.elapsed() < run_time / 4 {
        f();
        calls += 1;
    }
    let per_run = (calls * 4).max(1);
    let mut ns_per_op: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_run {
                f();
            }
            t.elapsed().as_nanos() as f64 / (per_run * ops) as f64
        })
        .collect();
    ns_per_op.sort_by(|a, b| a.total_cmp(b));
    let median = ns_per_op[2];
    let rate = if bytes > 0 {
        let gb_s = bytes as f64 / ops as f64 / median;
        format!("{gb_s:>8.2} GB/s")
    } else {
        String::new()
    };
    println!(
        "{name:<58} {:>10.0} ns/op {:>12.0} op/s {rate}",
        median,
        1e9 / median
    );
}

fn records(n: usize, value_len: usize) -> Vec<NewRecord> {
    (0..n)
        .map(|i| {
            (
                Some(Bytes::from(format!("key-{}", i % 50))),
                Some(Bytes::from(vec![(i % 251) as u8; value_len])),
                1_700_000_000_000 + i as i64,
            )
        })
        .collect()
}

fn frame_of<R: Request + Encodable>(version: i16, body: &R) -> BytesMut {
    let key = ApiKey::try_from(R::KEY).expect("known key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, key.request_header_version(version))
        .expect("header");
    body.encode(&mut payload, version).expect("body");
    let mut frame = BytesMut::new();
    frame.put_i32(payload.len() as i32);
    frame.put(payload);
    frame
}

fn main() {
    let s = settings();
    println!(
        "# hot-path microbenchmarks (median of 5 runs{})",
        if s.quick { ", quick" } else { "" }
    );

    // --- request decode ---
    let batch16k = encode_batch(&records(100, 150), Compression::None).expect("batch");
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench-topic")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch16k.clone())),
            ])]);
    let produce_frame = frame_of(11, &produce);
    bench(
        &s,
        "decode Produce v11 (frame+header+body, 16 KiB records)",
        1,
        produce_frame.len() as u64,
        || {
            let mut buf = produce_frame.clone();
            let frame = take_frame(&mut buf, 100 << 20)
                .expect("frame")
                .expect("whole");
            let req = parse_request_header(frame.freeze()).expect("header");
            let body: ProduceRequest = decode_body(req.body, req.api_version).expect("body");
            black_box(body);
        },
    );
    let fetch = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(
            (0..10)
                .map(|t| {
                    fetch_request::FetchTopic::default()
                        .with_topic_id(uuid::Uuid::from_u128(t as u128 + 1))
                        .with_partitions(
                            (0..10)
                                .map(|p| {
                                    fetch_request::FetchPartition::default()
                                        .with_partition(p)
                                        .with_fetch_offset(1_000_000)
                                        .with_partition_max_bytes(1 << 20)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let fetch_frame = frame_of(15, &fetch);
    bench(
        &s,
        "decode Fetch v15 (frame+header+body, 100 partitions)",
        1,
        0,
        || {
            let mut buf = fetch_frame.clone();
            let frame = take_frame(&mut buf, 100 << 20)
                .expect("frame")
                .expect("whole");
            let req = parse_request_header(frame.freeze()).expect("header");
            let body: FetchRequest = decode_body(req.body, req.api_version).expect("body");
            black_box(body);
        },
    );

    // --- produce validation (CRC-32C) ---
    bench(
        &s,
        "validate 16 KiB batch (CRC-32C, 100 records walked)",
        1,
        batch16k.len() as u64,
        || {
            black_box(batch::validate_record_set(black_box(&batch16k), 1 << 20).expect("valid"));
        },
    );
    // The same batch, header and CRC-32C only: the cost of validation without the record walk.
    bench(
        &s,
        "validate 16 KiB batch, header and CRC-32C only",
        1,
        batch16k.len() as u64,
        || {
            black_box(batch::validate(black_box(&batch16k)).expect("valid"));
        },
    );
    // Record-level validation's worst case per byte: many small records.
    let small16k = encode_batch(&records(700, 4), Compression::None).expect("batch");
    bench(
        &s,
        "validate 16 KiB batch of 700 small records",
        1,
        small16k.len() as u64,
        || {
            black_box(batch::validate_record_set(black_box(&small16k), 1 << 20).expect("valid"));
        },
    );
    // A compressed batch: its records are walked as they are decompressed.
    let zstd16k = encode_batch(&records(100, 150), Compression::Zstd).expect("batch");
    bench(
        &s,
        "validate zstd batch of 16 KiB of records",
        1,
        batch16k.len() as u64,
        || {
            black_box(batch::validate_record_set(black_box(&zstd16k), 1 << 20).expect("valid"));
        },
    );
    let mut set = BytesMut::new();
    for _ in 0..64 {
        set.extend_from_slice(&batch16k);
    }
    let set = set.freeze();
    bench(
        &s,
        "validate 1 MiB record set of 64 batches (CRC-32C, records walked)",
        1,
        set.len() as u64,
        || {
            black_box(batch::validate_record_set(black_box(&set), 2 << 20).expect("valid"));
        },
    );

    // --- offset rewrite ---
    let infos = batch::validate_record_set(&set, 2 << 20).expect("valid");
    let mut buf = set.to_vec();
    bench(
        &s,
        "rewrite baseOffset+epoch, per batch (64-batch set)",
        64,
        0,
        || {
            let mut next = 1_000i64;
            for b in &infos {
                let slice = &mut buf[b.pos..b.pos + b.len];
                batch::set_base_offset(slice, next);
                batch::set_partition_leader_epoch(slice, 0);
                next += b.offset_count;
            }
            black_box(&buf);
        },
    );
    bench(
        &s,
        "stamp LogAppendTime + CRC, per 16 KiB batch",
        64,
        set.len() as u64,
        || {
            for b in &infos {
                batch::set_log_append_time(&mut buf[b.pos..b.pos + b.len], 1_700_000_000_000);
            }
            black_box(&buf);
        },
    );

    // --- fetch framing ---
    let small = encode_batch(&records(10, 100), Compression::None).expect("batch");
    let response = FetchResponseParts {
        topics: (0..10)
            .map(|t| FetchTopic {
                name: StrBytes::from_static_str("bench-topic"),
                topic_id: uuid::Uuid::from_u128(t as u128 + 1),
                partitions: (0..10)
                    .map(|p| FetchPartition {
                        partition_index: p,
                        high_watermark: 1_000_000,
                        last_stable_offset: 1_000_000,
                        log_start_offset: 0,
                        records: vec![small.clone(); 4],
                        ..FetchPartition::default()
                    })
                    .collect(),
            })
            .collect(),
        ..FetchResponseParts::default()
    };
    bench(
        &s,
        "frame Fetch v15 response (100 partitions x 4 batches)",
        1,
        0,
        || {
            black_box(encode_fetch_response(15, 7, black_box(&response)).expect("framed"));
        },
    );

    // --- compaction filter ---
    bench_cleaner(&s, &batch16k);

    // --- durable segment append ---
    for inflight in [1usize, 64] {
        bench_append(&s, inflight);
    }
}

fn bench_cleaner(s: &Settings, b: &Bytes) {
    use freshet::storage::cleaner::{filter_batch, FilterContext, OffsetMap};
    let map = OffsetMap::with_memory(1 << 20);
    let producers = std::collections::HashMap::new();
    let ctx = FilterContext {
        map: &map,
        now_ms: 0,
        delete_retention_ms: 0,
        producer_last: &producers,
    };
    bench(
        s,
        "compaction: filter a 16 KiB batch (all records kept)",
        1,
        b.len() as u64,
        || {
            black_box(filter_batch(black_box(b), &ctx, false).expect("filter"));
        },
    );
}

fn bench_append(s: &Settings, inflight: usize) {
    let tmp = tempfile::Builder::new()
        .prefix("freshet-hotpath-")
        .tempdir_in(&s.dir)
        .expect("temp dir");
    let dir = tmp.path().join("bench-0");
    let duration = if s.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    let batch = encode_batch(&records(8, 100), Compression::None).expect("batch");
    let ex = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .ring_depth(512)
        .make()
        .expect("executor (memlock?)");
    let (appends, elapsed, p50, p99) = ex.run(async move {
        let log = Rc::new(
            PartitionLog::open(&dir, LogConfig::default(), TailCache::new(64 << 20))
                .await
                .expect("open"),
        );
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..inflight {
            let (log, batch) = (log.clone(), batch.clone());
            tasks.push(glommio::spawn_local(async move {
                let mut lat = Vec::new();
                while start.elapsed() < duration {
                    let t = Instant::now();
                    log.append(batch.clone(), 1).await.expect("append");
                    lat.push(t.elapsed().as_micros() as u64);
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await);
        }
        let elapsed = start.elapsed();
        lat.sort_unstable();
        let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
        let out = (lat.len(), elapsed, pct(0.5), pct(0.99));
        if let Ok(log) = Rc::try_unwrap(log) {
            log.close().await.expect("close");
        }
        out
    });
    println!(
        "{:<58} {:>10.0} appends/s  p50 {} us  p99 {} us",
        format!("segment append, 1 KiB batch, durable, {inflight} in flight"),
        appends as f64 / elapsed.as_secs_f64(),
        p50,
        p99
    );
}
