//! Helpers shared by the storage integration tests: an executor, record batch builders.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use freshet::storage::{LogConfig, PartitionLog, TailCache};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

/// Run `fut` on a fresh glommio executor sized for the 8 MiB memlock limit.
pub fn run<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .ring_depth(512)
        .make()
        .expect("glommio executor (memlock?)")
        .run(fut)
}

/// One magic-v2 batch of `n` records with `value_len`-byte values, timestamps
/// `ts, ts + 1, ...`, base offset 0 (as a producer sends it).
pub fn batch(n: usize, value_len: usize, ts: i64) -> Bytes {
    batch_with(n, value_len, |i| ts + i as i64, Compression::None)
}

/// A batch with per-record timestamps from `ts_of(i)` and the given compression.
pub fn batch_with(
    n: usize,
    value_len: usize,
    ts_of: impl Fn(usize) -> i64,
    compression: Compression,
) -> Bytes {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| {
            (
                Some(Bytes::from(format!("key-{i}"))),
                Some(Bytes::from(vec![(i % 251) as u8; value_len])),
                ts_of(i),
            )
        })
        .collect();
    encode_batch(&records, compression).expect("encode batch")
}

/// A batch from producer `pid`/`epoch` starting at sequence `seq`: `count` records with
/// 300-byte values and an optional key, timestamps from 1_700_000_000_000, base offset 0;
/// `transactional` sets the batch's transactional flag.
pub fn producer_batch(
    pid: i64,
    epoch: i16,
    seq: i32,
    count: usize,
    transactional: bool,
    key: Option<&str>,
) -> Bytes {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::from(vec![b'v'; 300])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: kafka_protocol::records::Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
    buf.freeze()
}

/// Concatenate batches into one produce record set.
pub fn record_set(batches: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    for b in batches {
        out.extend_from_slice(b);
    }
    out.freeze()
}

/// Open a log with a fresh cache of `cache_bytes`.
pub async fn open(dir: &Path, config: LogConfig, cache_bytes: usize) -> PartitionLog {
    PartitionLog::open(dir, config, TailCache::new(cache_bytes))
        .await
        .expect("open log")
}

/// Open with a shared cache.
pub async fn open_shared(dir: &Path, config: LogConfig, cache: Rc<TailCache>) -> PartitionLog {
    PartitionLog::open(dir, config, cache)
        .await
        .expect("open log")
}

/// The batch with its producer-controlled fields compared: everything from the CRC field on
/// except the CRC, attributes and maxTimestamp (which LogAppendTime may rewrite).
pub fn payload(b: &[u8]) -> &[u8] {
    &b[61..]
}

/// Read every batch of the log from `from` to the high watermark.
pub async fn read_all(log: &PartitionLog, from: i64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = from;
    let hw = log.high_watermark();
    while offset < hw {
        let data = log.read(offset, 1 << 20, true).await.expect("read");
        assert!(!data.batches.is_empty(), "no progress at offset {offset}");
        for b in data.batches {
            let h = freshet_protocol::batch::validate(&b).expect("served batches are valid");
            offset = h.last_offset() + 1;
            out.push(b);
        }
    }
    out
}
